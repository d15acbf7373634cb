#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz and libFuzzer) for SECONDS each (default 60), one
# after the other, and prints each one's executions and coverage (libFuzzer's final `cov:` and
# `ft:`) and corpus size. New inputs that add coverage go into fuzz/corpus/<target>/ (commit them
# after `cargo fuzz cmin <target>` keeps them small); every crash, hang or out-of-memory input is
# copied into fuzz/regressions/<target>/, which `cargo test` replays, and the script exits 1.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (sanitizers) and cargo-fuzz: both installed here when missing.
# CARGO_TARGET_DIR is honoured (default fuzz/target). FUZZ_JOBS runs that many targets at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-60}
shift || true

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
target_dir=${CARGO_TARGET_DIR:-$root/fuzz/target}
export CARGO_TARGET_DIR=$target_dir
cargo +nightly fuzz build --fuzz-dir fuzz

# Leaks of third-party C code the engine cannot free (see the file).
export LSAN_OPTIONS="suppressions=$root/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
logs=$(mktemp -d)
run() {
  local target=$1 log=$logs/$1.log
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  # -rss_limit_mb also limits one allocation (malloc_limit_mb defaults to it): an input that
  # allocates without bound is reported as an out-of-memory crash. -timeout: a hang.
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || true
}
jobs=${FUZZ_JOBS:-1}
for target in "${targets[@]}"; do
  run "$target" &
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
done
wait

status=0
printf '%-14s %12s %8s %8s %8s %10s %s\n' target executions exec/s cov ft corpus crashes
for target in "${targets[@]}"; do
  log=$logs/$target.log
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  last=$(grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  found=0
  for artifact in fuzz/artifacts/"$target"/*; do
    [ -f "$artifact" ] || continue
    mkdir -p "fuzz/regressions/$target"
    cp "$artifact" "fuzz/regressions/$target/"
    found=$((found + 1))
  done
  rm -rf "fuzz/artifacts/$target"
  if [ "$found" -gt 0 ] || grep -q '^==[0-9]*==ERROR\|^SUMMARY: libFuzzer' "$log"; then
    status=1
    echo "--- $target: see fuzz/regressions/$target/; the end of its log:" >&2
    tail -30 "$log" >&2
  fi
  printf '%-14s %12s %8s %8s %8s %10s %s\n' "$target" "${execs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$corpus" "$found"
done
rm -rf "$logs"
exit $status
