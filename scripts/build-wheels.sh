#!/usr/bin/env bash
# Build the release artifacts into OUTDIR and check them as a package index and a user would:
#
#   bash scripts/build-wheels.sh OUTDIR
#
# 1. an abi3 wheel for manylinux2014 (glibc 2.17) x86_64: maturin linking against the old glibc
#    through zig (`ziglang` from PyPI), stripped;
# 2. an sdist, and a wheel built from it with only Rust and maturin (no network, no git);
# 3. `auditwheel show`: the platform tag the wheel claims is one its symbols meet;
#    `twine check --strict`: the metadata and the package-index README render;
# 4. the wheel installed into a fresh venv made from Debian's /usr/bin/python3 with no Rust on
#    PATH, then a FastCGI request to `oxfcgi serve` answered, and `oxfcgi --version`.
#
# The tools go into OUTDIR/.tools (a venv), so nothing is installed system-wide. aarch64 and
# musllinux wheels need standard libraries this machine's toolchain lacks; the release workflow
# (.github/workflows/release.yml) builds them.
set -euo pipefail

out=${1:?usage: scripts/build-wheels.sh OUTDIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
tools=$out/.tools
say() { printf '==> %s\n' "$*"; }
fail() { printf 'build-wheels: %s\n' "$*" >&2; exit 1; }

say "tools (maturin, ziglang, auditwheel, twine) in $tools"
python3 -m venv "$tools"
"$tools/bin/pip" install -q "maturin>=1.16,<2" "ziglang>=0.13" "auditwheel>=6" "twine>=6"
export PATH=$tools/bin:$PATH
rm -f "$out"/oxfcgi-*.whl "$out"/oxfcgi-*.tar.gz

say "wheel: maturin build --release --zig --compatibility manylinux2014 --strip"
(cd "$root" && maturin build --release --zig --compatibility manylinux2014 --strip --out "$out")
wheel=$(ls "$out"/oxfcgi-*-cp310-abi3-manylinux*x86_64*.whl 2>/dev/null | head -n1)
[ -n "$wheel" ] || fail "no manylinux abi3 wheel in $out: $(ls "$out")"

say "sdist: maturin sdist"
(cd "$root" && maturin sdist --out "$out")
sdist=$(ls "$out"/oxfcgi-*.tar.gz | head -n1)

say "auditwheel show $(basename "$wheel")"
shown=$(auditwheel show "$wheel")
printf '%s\n' "$shown"
case $(basename "$wheel") in
    *manylinux_2_17*|*manylinux2014*) ;;
    *) fail "the wheel is not tagged manylinux2014 / manylinux_2_17" ;;
esac
printf '%s\n' "$shown" | grep -Eq 'manylinux_2_17_x86_64|manylinux2014_x86_64' ||
    fail "auditwheel does not confirm manylinux_2_17 for $(basename "$wheel")"
size=$(stat -c %s "$wheel")
[ "$size" -lt $((4 * 1024 * 1024)) ] || fail "the wheel is $size bytes: not stripped?"

say "twine check --strict"
twine check --strict "$wheel" "$sdist"

say "the sdist builds with only Rust and maturin (offline)"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -xzf "$sdist" -C "$build"
(cd "$build"/oxfcgi-* && CARGO_NET_OFFLINE=true maturin build --release --out "$build/from-sdist" >/dev/null 2>"$build/sdist.log") ||
    { tail -30 "$build/sdist.log"; fail "the sdist does not build"; }
ls "$build"/from-sdist/oxfcgi-*.whl >/dev/null

say "install into a venv of Debian's /usr/bin/python3, no Rust on PATH"
[ -x /usr/bin/python3 ] || fail "/usr/bin/python3 is missing (apt-get install python3 python3-venv)"
/usr/bin/python3 -m venv "$build/venv"
env -i PATH=/usr/bin:/bin HOME="$build" "$build/venv/bin/pip" install -q --no-index "$wheel"
env -i PATH=/usr/bin:/bin "$build/venv/bin/oxfcgi" --version
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$build/hello.py" <<'EOF'
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the wheel"]
EOF
(cd "$build" && exec env -i PATH=/usr/bin:/bin "$build/venv/bin/oxfcgi" serve hello:app --bind "127.0.0.1:$port") \
    >"$build/serve.log" 2>&1 &
server=$!
reply=""
for _ in $(seq 50); do
    if reply=$(env -i PATH=/usr/bin:/bin "$build/venv/bin/oxfcgi" request "127.0.0.1:$port" / 2>&1); then
        break
    fi
    sleep 0.2
done
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
case $reply in
    *"hello from the wheel"*) ;;
    *) cat "$build/serve.log"; fail "no FastCGI answer from the installed wheel: $reply" ;;
esac

say "ok: $(basename "$wheel") ($size bytes), $(basename "$sdist")"
