#!/usr/bin/env bash
# The agent killed with SIGKILL at random moments while it supervises four PYME-like servers and
# repairs drift (tests/agent_crash.rs), for many rounds: after each restart every service must
# run exactly once under the new agent, every managed file must be whole and no temporary file
# left. Needs root (the servers run as a system user the manifest creates); everything lives in a
# temporary root.
#
#   bash bench/agent-crash.sh                      # 200 rounds, a fresh seed
#   ROUNDS=500 RUNS=3 bash bench/agent-crash.sh    # 3 runs of 500 rounds, each its own seed
#   SEED=1234 ROUNDS=200 bash bench/agent-crash.sh # replay a run that failed
#
# Each run prints its seed, the time per round, and how many kills left files to repair, left
# services running and landed while an agent was starting. The last line counts failed runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PROVISION_CRASH_ROUNDS="${ROUNDS:-200}"
if [ -n "${SEED:-}" ]; then
  export PROVISION_CRASH_SEED="$SEED"
fi
runs=${RUNS:-1}
cargo test --quiet --test agent_crash --no-run
failed=0
for i in $(seq 1 "$runs"); do
  echo "== run $i of $runs: $PROVISION_CRASH_ROUNDS rounds"
  log=$(mktemp)
  start=$(date +%s.%N)
  keep=no
  if cargo test --quiet --test agent_crash an_agent_killed_at_random_moments -- --nocapture >"$log" 2>&1; then
    grep -E "rounds, seed|first start|rounds in" "$log" || true
  else
    failed=$((failed + 1))
    grep -E "rounds, seed" "$log" || true
    grep -A3 "panicked" "$log" | cut -c1-600 || true
    echo "whole output, with both agents' logs: $log"
    keep=yes
  fi
  echo "wall: $(echo "$(date +%s.%N) - $start" | bc) s"
  if [ "$keep" = no ]; then rm -f "$log"; fi
done
echo "== $failed of $runs runs failed"
[ "$failed" -eq 0 ]
