#!/usr/bin/env bash
# Run every test of oxfcgi: the lint gate, the Rust unit/property tests, then
# the Python test suite (protocol, WSGI conformance, real web servers in front
# of the server).
#
#   bash scripts/test.sh [extra pytest args...]
#
# Works on a fresh Debian 12 machine (root, apt, PyPI and crates.io reachable,
# Rust toolchain + CPython >= 3.10 + pip + maturin + pytest present). It:
#   1. installs the Debian packages the tests drive (nginx, Apache, lighttpd,
#      HAProxy, Caddy, H2O, spawners, curl, iproute2) if missing;
#   2. installs the Python test dependencies with pip;
#   3. builds the engine and installs the package (see "Package install" below);
#   4. the lint gate (scripts/lint.sh): rustfmt, clippy with and without the
#      python feature, ruff check + format, mypy --strict, the files generated
#      from the settings table; any finding fails the run;
#   5. runs `cargo test`, a fuzz smoke run (scripts/fuzz.sh: each target for
#      OXFCGI_FUZZ_SECONDS, default 20; any crash, hang or OOM fails), then
#      `python -m pytest -q -ra` (the docs' strict MkDocs build among them);
#   6. the release artifacts: scripts/build-wheels.sh (a manylinux2014 abi3
#      wheel through zig and an sdist, auditwheel, twine, an install into a venv
#      of Debian's python that answers a FastCGI request). OXFCGI_SKIP_WHEELS=1
#      skips it.
# It exits non-zero if the lint gate or either test run fails; pytest's "no
# tests collected" (exit status 5) counts as a failure.
#
# Package install: `pip install --no-deps --force-reinstall -e .` (an editable
# install) builds the engine with maturin (release profile; cargo reuses
# ./target between runs), writes it to python/oxfcgi/_oxfcgi.abi3.so and puts
# python/ on sys.path through a .pth file, replacing any earlier install. So
# `import oxfcgi` loads the Python code of this checkout and the engine built
# by this run; the script checks both (path and timestamp) before testing. The
# tests run with PYTHONPATH=<repo root>: the package lives under python/oxfcgi,
# so the repository root cannot shadow it (it only makes `tests.*` importable).
#
# Environment:
#   CI       passed through unchanged; CI=true turns a missing web server
#            binary into a test failure instead of a skip.
#   PYTHON   interpreter to use (default: python3).
#   OXFCGI_SKIP_INSTALL=1   skip steps 1-3 (test what is installed already).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"
PYTHON="${PYTHON:-python3}"

if [ -n "${CI+x}" ]; then
    export CI
fi

log() { printf '\n==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# --------------------------------------------------------------------------------
# 1. Debian packages: the web servers and spawners the tests drive (nginx with Debian's
#    /etc/nginx/fastcgi_params, Apache + mod_fcgid, lighttpd, HAProxy, Caddy, H2O),
#    iproute2 for the multi-host tests' network namespaces, curl.
install_debian_packages() {
    # Real servers and spawners the integration tests drive, plus Debian's own
    # python3 (Apache runs apps as www-data, which cannot enter /root).
    local wanted=(nginx curl apache2 libapache2-mod-fcgid lighttpd spawn-fcgi libfcgi-bin fcgiwrap mercurial
                  haproxy caddy h2o iproute2 python3 python3-venv systemd)
    local missing=() pkg
    for pkg in "${wanted[@]}"; do
        if [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" != installed ]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: ${missing[*]} missing and apt-get is not available;" \
            "tests that need them will be skipped (or fail when CI=true)" >&2
        return 0
    fi
    log "installing Debian packages: ${missing[*]}"
    # The tests start their own nginx instances on free ports. Keep the package's
    # maintainer scripts from starting the system service (no systemd here, and a
    # daemon on port 80 is of no use to us): a policy-rc.d that answers 101
    # ("action forbidden") makes invoke-rc.d skip the start. Only add one if the
    # machine has none, and remove it again afterwards.
    local policy=/usr/sbin/policy-rc.d created_policy=""
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        created_policy=1
    fi
    local rc=0
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends "${missing[@]}"
    } || rc=$?
    if [ -n "$created_policy" ]; then
        as_root rm -f "$policy"
    fi
    if [ "$rc" -ne 0 ]; then
        echo "error: apt-get install ${missing[*]} failed ($rc)" >&2
        return "$rc"
    fi
}

# --------------------------------------------------------------------------------
# 2 + 3. Python test dependencies, then the package itself (fresh engine build).
MATURIN_OK_PY='
import re, subprocess, sys
out = subprocess.run([sys.executable, "-m", "maturin", "--version"],
                     capture_output=True, text=True).stdout
major, minor = map(int, re.search(r"(\d+)\.(\d+)", out).groups())
sys.exit(0 if major == 1 and minor >= 16 else 1)
'

CHECK_IMPORT_PY='
import os, sys
import oxfcgi, oxfcgi._oxfcgi as engine
root = os.path.realpath(os.environ["PYTHONPATH"])
package_dir = os.path.realpath(os.path.dirname(oxfcgi.__file__))
engine_file = os.path.realpath(engine.__file__)
version = getattr(oxfcgi, "__version__", "?")
print(f"oxfcgi {version} from {package_dir}")
print(f"engine {engine_file}")
problems = []
if package_dir != os.path.join(root, "python", "oxfcgi"):
    problems.append(f"oxfcgi is imported from {package_dir}, not from {root}/python/oxfcgi")
if os.path.getmtime(engine_file) < int(os.environ["OXFCGI_BUILD_STAMP"]) - 2:
    problems.append(f"{engine_file} is older than this build")
if problems:
    sys.exit("error: " + "; ".join(problems))
'

install_python_packages() {
    log "installing Python test dependencies"
    "$PYTHON" -m pip install -q \
        "pytest>=8" "pytest-timeout>=2.3" "flask>=3" "django>=4.2" "hypothesis>=6" "psutil>=5.9" "mypy>=1.10" \
        "fastapi>=0.110" "quart>=0.19" "mkdocs-material>=9.5" "pyyaml>=6" \
        "ruff>=0.6" "typing-extensions>=4.7"

    log "building the engine and installing oxfcgi (pip install --no-deps --force-reinstall -e .)"
    local isolation=()
    # Use the preinstalled maturin when it satisfies pyproject's build requirement
    # (saves fetching it into an isolated build env on every run).
    if "$PYTHON" -c "$MATURIN_OK_PY" >/dev/null 2>&1; then
        isolation=(--no-build-isolation)
    fi
    local stamp
    stamp="$(date +%s)"
    "$PYTHON" -m pip install "${isolation[@]}" --no-deps --force-reinstall -e "$ROOT"

    # `import oxfcgi` from another directory, as the tests' server subprocesses do
    # (PYTHONPATH=ROOT), must load this checkout and the engine built just now.
    (cd / && PYTHONPATH="$ROOT" OXFCGI_BUILD_STAMP="$stamp" "$PYTHON" -c "$CHECK_IMPORT_PY")
}

if [ "${OXFCGI_SKIP_INSTALL:-0}" != 1 ]; then
    install_debian_packages
    install_python_packages
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# --------------------------------------------------------------------------------
# 4. The lint gate, then 5. the tests: all run; any failing fails the script.
status=0

log "lint gate (scripts/lint.sh)"
lint_status=0
PYTHON="$PYTHON" bash "$ROOT/scripts/lint.sh" || lint_status=$?
if [ "$lint_status" -ne 0 ]; then
    echo "lint gate failed (exit $lint_status)" >&2
    status=1
fi

log "cargo test"
cargo_status=0
cargo test || cargo_status=$?
if [ "$cargo_status" -ne 0 ]; then
    echo "cargo test failed (exit $cargo_status)" >&2
    status=1
fi

log "fuzz smoke run (scripts/fuzz.sh ${OXFCGI_FUZZ_SECONDS:-20})"
fuzz_status=0
bash "$ROOT/scripts/fuzz.sh" "${OXFCGI_FUZZ_SECONDS:-20}" || fuzz_status=$?
if [ "$fuzz_status" -ne 0 ]; then
    echo "fuzzing failed (exit $fuzz_status)" >&2
    status=1
fi

log "python -m pytest -q -ra $*"
pytest_status=0
"$PYTHON" -m pytest -q -ra "$@" || pytest_status=$?
case "$pytest_status" in
    0) ;;
    5) echo "pytest collected no tests (exit 5): counted as a failure" >&2; status=1 ;;
    *) echo "pytest failed (exit $pytest_status)" >&2; status=1 ;;
esac

wheels_status=skipped
if [ "${OXFCGI_SKIP_WHEELS:-}" != 1 ]; then
    log "release artifacts (scripts/build-wheels.sh)"
    wheels_status=0
    wheels_dir=$(mktemp -d)
    bash "$ROOT/scripts/build-wheels.sh" "$wheels_dir" || wheels_status=$?
    rm -rf "$wheels_dir"
    if [ "$wheels_status" -ne 0 ]; then
        echo "building or checking the wheel failed (exit $wheels_status)" >&2
        status=1
    fi
fi

if [ "$status" -eq 0 ]; then
    log "all tests passed"
else
    log "FAILED: lint exit $lint_status, cargo test exit $cargo_status, fuzz exit $fuzz_status, pytest exit $pytest_status, wheels exit $wheels_status"
fi
exit "$status"
