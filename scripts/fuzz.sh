#!/usr/bin/env bash
# Fuzz the engine: the record decoder, the name-value decoder and the whole connection
# state machine (fuzz/fuzz_targets/), each for SECONDS (default 20), with libFuzzer through
# cargo-fuzz. Any crash, hang (libFuzzer's -timeout) or OOM fails the run; the input that
# caused it is kept under fuzz/artifacts/TARGET/ and the libFuzzer log says how to replay it.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# The committed corpus (fuzz/corpus/TARGET) seeds each run and is not modified: new inputs
# go to a temporary directory. cargo-fuzz's sanitizer flags need a nightly compiler; the
# machine's stable one accepts them with RUSTC_BOOTSTRAP=1. cargo-fuzz is installed from
# crates.io when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-20}"
shift || true
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    TARGETS=(record_decoder params_decoder connection)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz from crates.io" >&2
    cargo install --locked cargo-fuzz
fi

export RUSTC_BOOTSTRAP=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
cd fuzz
cargo fuzz build
for target in "${TARGETS[@]}"; do
    mkdir -p "$work/$target" "artifacts/$target"
    echo "==> fuzzing $target for ${SECONDS_EACH}s" >&2
    if ! cargo fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$work/$target.log" 2>&1; then
        echo "FAILED: $target found a crash, hang or OOM; the input is in fuzz/artifacts/$target/:" >&2
        tail -n 40 "$work/$target.log" >&2
        status=1
    else
        grep -E "^Done|stat::number_of_executed_units" "$work/$target.log" | head -2 >&2 || true
    fi
done
exit "$status"
