#!/usr/bin/env bash
# Bounded fuzzing of every target: `fuzz/run.sh [seconds-per-target]` (default 60).
# Needs the nightly toolchain; installs cargo-fuzz if it is missing. Prints the
# executions each target reached; exits non-zero if any target failed (a crash
# input is then under fuzz/artifacts/<target>/).
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
CARGO_FUZZ_VERSION="0.13.2"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# max_len per target: large enough for the seeds (a whole configuration or
# bundle with the repository's policies is ~6 KB), small enough to run fast.
declare -A MAX_LEN=(
    [classify]=1024
    [mask]=8192
    [config]=16384
    [approval_reply]=4096
    [bundle]=16384
)
TARGETS=(classify mask config approval_reply bundle)

# No sanitizer: the crate under test is safe Rust, so ASan finds nothing a
# panic would not, and costs half the speed on a small machine. Debug
# assertions on, so an arithmetic overflow is a crash too. Panics abort, and
# -rss_limit_mb / -malloc_limit_mb catch unbounded allocation.
FLAGS=(--sanitizer none --debug-assertions)
cargo "+$TOOLCHAIN" fuzz build "${FLAGS[@]}"

LOGS="$HERE/target/run-logs"
mkdir -p "$LOGS"
status=0
declare -A RESULT
for target in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    echo "== $target (${SECONDS_PER_TARGET}s, max_len ${MAX_LEN[$target]})"
    if cargo "+$TOOLCHAIN" fuzz run "${FLAGS[@]}" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$target]}" \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
        >"$LOGS/$target.log" 2>&1; then
        outcome=ok
    else
        outcome=FAILED
        status=1
        tail -n 40 "$LOGS/$target.log"
    fi
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$target.log" | tail -n 1)"
    if [ -z "$execs" ]; then
        execs="$(grep -o '^#[0-9]*' "$LOGS/$target.log" | tail -n 1 | tr -d '#')"
    fi
    RESULT[$target]="${execs:-?} executions, $outcome"
    echo "   ${RESULT[$target]} (log: $LOGS/$target.log)"
done

echo
echo "executions reached, ${SECONDS_PER_TARGET}s per target, $(date -u +%Y-%m-%d):"
for target in "${TARGETS[@]}"; do
    printf '%-15s %s\n' "$target" "${RESULT[$target]}"
done
exit "$status"
