#!/usr/bin/env bash
# Fuzzes every target of fuzz/ (or the ones named) for SECONDS each with libFuzzer, and prints one
# row per target: wall seconds, CPU-minutes (user + system, measured), executions, executions per second, corpus size, peak
# RSS and findings. The properties are provision::fuzzing (agent/fuzzing.rs).
#
#   bench/fuzz.sh [SECONDS] [TARGET...]       default 60 s per target, every target
#   FUZZ_PARALLEL=2 bench/fuzz.sh 900         two targets at a time (one core each)
#   FUZZ_SEED=1 FUZZ_RUNS=10000 bench/fuzz.sh 120
#                                             a repeatable run: libFuzzer's random seed fixed and
#                                             at most 10,000 inputs per target (CI's smoke)
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). Built without
# a sanitizer (provision has no unsafe code; a panic, a leak past -rss_limit_mb or a run past
# -timeout is what a finding is) and with debug assertions, so overflows panic.
# The corpus grows in fuzz/corpus/<target>/ (not committed); fuzz/seeds/<target>/ is read, never
# written. A finding is left in fuzz/artifacts/<target>/: copy it to fuzz/regressions/<target>/
# (tests/fuzz_corpus.rs replays those), fix the cause, and run again. Exit 1 if any target found
# something.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
parallel=${FUZZ_PARALLEL:-1}
rss_limit_mb=${FUZZ_RSS_LIMIT_MB:-1024}
timeout_s=${FUZZ_TIMEOUT_S:-10}
extra=()
if [ -n "${FUZZ_SEED:-}" ]; then extra+=(-seed="$FUZZ_SEED"); fi
if [ -n "${FUZZ_RUNS:-}" ]; then extra+=(-runs="$FUZZ_RUNS"); fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "bench/fuzz.sh needs the nightly toolchain and cargo-fuzz: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

flags=(-s none -a -O)
cargo +nightly fuzz build "${flags[@]}" >&2

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_one() {
  local target=$1
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  local before
  before=$(find "fuzz/artifacts/$target" -type f | wc -l)
  local start end rc=0
  start=$(date +%s.%N)
  # The seeds come second: libFuzzer writes new inputs only to the first folder.
  # GNU time gives the CPU seconds the fuzzer really had (user + system), whatever else ran.
  /usr/bin/time -f '%U %S' -o "$logs/$target.cpu" \
    cargo +nightly fuzz run "${flags[@]}" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" -timeout="$timeout_s" \
    -print_final_stats=1 $extra_str >"$logs/$target.log" 2>&1 || rc=$?
  local cpu
  cpu=$(tail -1 "$logs/$target.cpu" | awk '{print $1 + $2}')
  end=$(date +%s.%N)
  local after
  after=$(find "fuzz/artifacts/$target" -type f | wc -l)
  local execs rss corpus
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$logs/$target.log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(find "fuzz/corpus/$target" -type f | wc -l)
  awk -v t="$target" -v s="$start" -v e="$end" -v x="${execs:-0}" -v r="${rss:-?}" -v cpu="${cpu:-0}" \
      -v c="$corpus" -v f="$((after - before))" -v rc="$rc" 'BEGIN {
    w = e - s
    printf "%-18s %7.0f s %6.1f CPU-min %11d execs %8.0f /s %6d corpus %5s MB %3d findings%s\n",
      t, w, cpu / 60, x, (w > 0 ? x / w : 0), c, r, f, (rc == 0 ? "" : "  (exit " rc ")")
  }'
  if [ "$rc" != 0 ]; then
    echo "---- $target: the end of libFuzzer's output ----"
    tail -40 "$logs/$target.log"
    echo "---- finding(s) in fuzz/artifacts/$target/ ----"
    return 1
  fi
}
export -f run_one
export seconds rss_limit_mb timeout_s logs
export flags_str="${flags[*]}"
export extra_str="${extra[*]}"

echo "fuzzing ${#targets[@]} target(s) for ${seconds} s each${FUZZ_RUNS:+ or $FUZZ_RUNS inputs}${FUZZ_SEED:+, seed $FUZZ_SEED}, ${parallel} at a time ($(date -u +%FT%TZ), $(nproc) cores)"
status=0
if [ "$parallel" -gt 1 ]; then
  printf '%s\n' "${targets[@]}" |
    xargs -P "$parallel" -I{} bash -c 'flags=($flags_str); run_one "$1"' _ {} || status=1
else
  for t in "${targets[@]}"; do
    run_one "$t" || status=1
  done
fi
exit "$status"
