#!/usr/bin/env bash
# ipyparallel shared-home cluster bring-up, from tests/ipyparallel.rs (five nodes in namespaces,
# real sshd on the engine hosts, ipyparallel from PyPI; as root, nothing on the machine changes).
# Prints: `provision agent` start on the controller to all 8 engines registered (the agent's
# readiness check, a real Client), the recoveries, and with IPP_BENCH=1 the floor: the same
# cluster started by hand with `ipcluster start`, timed with the same check.
#
#   bash bench/ipyparallel.sh        # pip cache in $CARGO_TARGET_DIR/tmp/ipp-pip-cache
set -euo pipefail
cd "$(dirname "$0")/.."
IPP_BENCH=1 cargo test --test ipyparallel -- --nocapture 2>&1 \
  | grep -E -A2 '^(ipyparallel|SKIP|test result|thread .* panicked)'
