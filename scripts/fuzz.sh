#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for a bounded time (not part of CI).
#
#   archive  any bytes as a downloaded archive: splitter + envelope check, and
#            the first line as a provider file name
#   statement  any bytes as one statement of the provider's SQL: the classifier
#            (PostgreSQL's parser, the DDL rules) and a DDL row of an archive
#   trigger  any bytes as a trigger-directory file: request, answer, outcome,
#            series list, file name
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
#
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
#        FUZZ_JOBS=2 scripts/fuzz.sh 300 archive
# A crash stops the script and leaves its input in fuzz/artifacts/<target>/;
# turn it into a unit test in shared/ once fixed. Corpora grow in fuzz/corpus/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(archive statement trigger)
fi
jobs=()
if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then
    jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz with a nightly toolchain is needed: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    seeds=("seeds/$target")
    if [ "$target" = archive ]; then
        # The archive fixtures of the tests (real Slony-I 2.2.11 output, pre-2.2 files).
        seeds+=(../tests/fixtures/slony-2.2.11 ../tests/fixtures/pre-2.2)
    fi
    echo "== fuzzing $target for ${seconds}s"
    cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        "${jobs[@]}" -print_final_stats=1
done
