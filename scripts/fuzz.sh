#!/usr/bin/env bash
# Fuzzes the wire decoder and the core's message handler (fuzz target `decode`, see
# fuzz/fuzz_targets/decode.rs) with cargo-fuzz / libFuzzer for SECONDS seconds (default 60).
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz if missing.
# The corpus grows in fuzz/corpus/decode (seeded from fuzz/seeds, valid frames of every kind);
# crashes land in fuzz/artifacts/decode. Prints executions, exec/s, coverage and findings.
# Exit status: 0 without findings, 1 with a crash, 2 on a setup error.
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked || exit 2
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
    exit 2
fi

corpus="fuzz/corpus/decode"
artifacts="fuzz/artifacts/decode"
mkdir -p "$corpus" "$artifacts"
cp -n fuzz/seeds/* "$corpus"/ 2>/dev/null || true
before_crashes=$(find "$artifacts" -type f | wc -l)
log="$(mktemp -t rumor-fuzz.XXXXXX.log)"

echo "fuzzing target decode for ${seconds}s: cargo +nightly fuzz run decode $corpus -- -max_total_time=$seconds"
status=0
cargo +nightly fuzz run decode "$corpus" -- -max_total_time="$seconds" -print_final_stats=1 \
    >"$log" 2>&1 || status=$?

# libFuzzer's final stats and last status line.
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
rate=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
after_crashes=$(find "$artifacts" -type f | wc -l)
echo "last status: ${last:-none}"
echo "executions: ${execs:-unknown}, exec/s: ${rate:-unknown}"
echo "coverage: $(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last") edges, features: $(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")"
echo "corpus: $(find "$corpus" -type f | wc -l) inputs"
echo "findings: $((after_crashes - before_crashes)) new file(s) in $artifacts"
echo "full log: $log"
if [ "$status" -ne 0 ] || [ "$after_crashes" -gt "$before_crashes" ]; then
    grep -E 'panicked|ERROR|SUMMARY|Test unit written' "$log" | head -n 20 || true
    exit 1
fi
