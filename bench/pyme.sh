#!/usr/bin/env bash
# PYME bring-up timings, from tests/pyme.rs (real PYME from PyPI, real servers; as root, in
# namespaces with overlays, so the machine is not changed). Prints the test's timing lines.
#
#   bash bench/pyme.sh          # warm: pip cache in $CARGO_TARGET_DIR/tmp/pyme-pip-cache (~6 min)
#   bash bench/pyme.sh cold     # cluster of one from an empty pip cache: downloads and builds
#                               # everything (~10 min on 2 cores), then the warm two-node test
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = cold ]; then
  cache=$(mktemp -d)
  trap 'rm -rf "$cache"' EXIT
  PYME_TEST_PIP_CACHE=$cache cargo test --test pyme pyme_cluster_of_one -- --nocapture 2>&1 \
    | grep -E -A2 '^(pyme|SKIP|test result|thread .* panicked)'
  # What the cold run downloaded and built (so the figure is known to be cold).
  echo "pip cache after the cold run: $(du -sh "$cache" | cut -f1); wheels built here:"
  find "$cache" -name '*.whl' -printf '  %f\n'
  cargo test --test pyme pyme_worker -- --nocapture 2>&1 | grep -E -A2 '^(pyme|SKIP|test result|thread .* panicked)'
else
  cargo test --test pyme -- --nocapture 2>&1 | grep -E -A2 '^(pyme|SKIP|test result|thread .* panicked)'
fi
