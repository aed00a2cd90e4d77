#!/usr/bin/env bash
# The lint gate: every check runs, any finding fails it (exit 1). scripts/test.sh runs it
# before the tests; run it alone while working:
#
#   bash scripts/lint.sh
#
# - Rust: cargo fmt --check (the crate and benches/loadgen), cargo clippy --all-targets
#   -D warnings without features (the pyo3-free core) and with --features python;
# - Python: ruff check and ruff format --check (configuration in pyproject.toml) over
#   python/, tests/, benches/, scripts/, examples/; mypy --strict over python/oxfcgi
#   ([tool.mypy] in pyproject.toml);
# - the files generated from the settings table are current
#   (scripts/generate-settings.py --check).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PY_PATHS=(python tests benches scripts examples)
failed=()

step() {
    local name="$1"
    shift
    printf -- '--> %s\n' "$name" >&2
    if ! "$@"; then
        failed+=("$name")
    fi
}

step "cargo fmt --check" cargo fmt --check
step "cargo fmt --check (benches/loadgen)" cargo fmt --check --manifest-path benches/loadgen/Cargo.toml
step "cargo fmt --check (fuzz)" cargo fmt --check --manifest-path fuzz/Cargo.toml
step "cargo clippy (no features)" cargo clippy --quiet --all-targets -- -D warnings
step "cargo clippy --features python" cargo clippy --quiet --all-targets --features python -- -D warnings
step "ruff check" "$PYTHON" -m ruff check "${PY_PATHS[@]}"
step "ruff format --check" "$PYTHON" -m ruff format --check "${PY_PATHS[@]}"
step "mypy --strict" "$PYTHON" -m mypy
step "generated from the settings table" "$PYTHON" scripts/generate-settings.py --check

if [ "${#failed[@]}" -ne 0 ]; then
    printf 'lint gate: FAILED: %s\n' "${failed[*]}" >&2
    exit 1
fi
echo "lint gate: all checks passed" >&2
