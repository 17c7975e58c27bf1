#!/usr/bin/env bash
# provision gpu without a GPU: the no-driver path (NVML's library fails to load), and rendering a
# saved report (--from-file) of the constructed 8-GPU fixture as a table, JSON and Prometheus text.
# On a machine with an NVIDIA GPU, run `hyperfine -N 'target/release/provision gpu --json'` too.
#
#   bash bench/gpu-report.sh            # builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/provision
fixture=tests/fixtures/gpu/dgx-h100-8gpu.json
# Exit 5 (no driver) and 4 (an unhealthy GPU in the fixture) are the expected outcomes here.
hyperfine -N --warmup 20 --runs 300 -i \
  "$bin gpu --json" \
  "$bin gpu --from-file $fixture" \
  "$bin gpu --from-file $fixture --json" \
  "$bin gpu --from-file $fixture --prometheus"
