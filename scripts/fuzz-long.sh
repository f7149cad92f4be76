#!/usr/bin/env bash
# The long fuzz runs (docs/security.md, "Fuzzing"): every target (or those
# named) for MEDIC_FUZZ_RUNS executions (10 million), niced, all at once,
# with the same bounds as scripts/test.sh's short runs. The grown corpora go
# in fuzz/target/long/TARGET (not committed), the logs in
# fuzz/target/long/TARGET.log; the last lines print each target's
# executions, exec/s, corpus size and crashes.
#
#   scripts/fuzz-long.sh                       # all six, 10M executions each
#   MEDIC_FUZZ_RUNS=1000000 scripts/fuzz-long.sh rules config
#   MEDIC_FUZZ_MAX_SECS=3600 scripts/fuzz-long.sh   # stop each after an hour
#   MEDIC_FUZZ_SANITIZER=address scripts/fuzz-long.sh   # under ASan (slower)
#
# The long runs build without a sanitizer by default (MEDIC_FUZZ_SANITIZER,
# `none`): medic forbids unsafe code, and without AddressSanitizer the YAML
# loaders run 3-10 times as many inputs a second, which is what makes 10
# million executions fit in an hour. The test command's short runs keep
# ASan, so the dependencies' unsafe code is still run under it.
set -uo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
runs=${MEDIC_FUZZ_RUNS:-10000000}
max_secs=${MEDIC_FUZZ_MAX_SECS:-0}
sanitizer=${MEDIC_FUZZ_SANITIZER:-none}
targets=("$@")
((${#targets[@]})) || targets=(alertmanager slack rules config exposition selector)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
cargo fuzz build --sanitizer="$sanitizer" || exit 1
out=fuzz/target/long
mkdir -p "$out"
for t in "${targets[@]}"; do
  mkdir -p "$out/$t"
  nice -n 19 cargo fuzz run --sanitizer="$sanitizer" "$t" "$out/$t" "fuzz/corpus/$t" -- \
    -max_len=65536 -timeout=10 -malloc_limit_mb=256 -rss_limit_mb=2048 \
    -runs="$runs" -max_total_time="$max_secs" -print_final_stats=1 \
    >"$out/$t.log" 2>&1 &
done
wait
status=0
for t in "${targets[@]}"; do
  log=$out/$t.log
  execs=$(grep -oE '^stat::number_of_executed_units: +[0-9]+' "$log" | grep -oE '[0-9]+$')
  rate=$(grep -oE '^stat::average_exec_per_sec: +[0-9]+' "$log" | grep -oE '[0-9]+$')
  crashes=$(ls fuzz/artifacts/"$t" 2>/dev/null | wc -l)
  corpus=$(ls "$out/$t" | wc -l)
  echo "$t: ${execs:-?} executions, ${rate:-?} exec/s, corpus $corpus new inputs, $crashes artifacts"
  grep -qE '^==[0-9]+== ERROR|^SUMMARY: libFuzzer' "$log" && status=1
done
exit $status
