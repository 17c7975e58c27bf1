#!/usr/bin/env bash
# The conda examples (manifests/jupyterlab-slurm.yaml, manifests/dask-pangeo.yaml) applied from the
# local channel of stand-ins that tests/conda_examples.rs uses (tests/fixtures/conda-channel.py
# --examples; CONDA_CHANNEL_ALIAS points conda-forge and bioconda at it, pip reads local wheels):
# the first apply into an empty root (package cache empty), then a no-op re-apply, on the login
# node (envs, kernels) and a compute node (envs only), RUNS times each.
#
#   bash bench/conda-examples.sh                       # builds the release binary first
#   PROVISION_BIN=/path/to/provision RUNS=3 bash bench/conda-examples.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PROVISION_BIN:-}" ]; then
  cargo build --release --quiet
  PROVISION_BIN=$PWD/target/release/provision
fi
runs=${RUNS:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 tests/fixtures/conda-channel.py --examples "$work/channels"
export CONDA_CHANNEL_ALIAS="file://$work/channels" PIP_NO_INDEX=1 PIP_FIND_LINKS="$work/channels/wheels"
for example in jupyterlab-slurm dask-pangeo; do
  for node in login01 cn01; do
    for i in $(seq "$runs"); do
      rm -rf "$work/root"; mkdir -p "$work/root/etc"
      printf 'root:x:0:0:root:/root:/bin/bash\n' > "$work/root/etc/passwd"
      printf 'root:x:0:\n' > "$work/root/etc/group"
      printf 'root:*:19000:0:99999:7:::\n' > "$work/root/etc/shadow"
      printf 'root:*::\n' > "$work/root/etc/gshadow"
      first=$( { /usr/bin/time -f "%e s wall, %M KB max RSS" "$PROVISION_BIN" apply "manifests/$example.yaml" --node "$node" --root "$work/root" --json > "$work/first.json"; } 2>&1 | tail -1)
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["summary"]["failed"] == 0, r["summary"]' "$work/first.json"
      again=$( { /usr/bin/time -f "%e s wall, %M KB max RSS" "$PROVISION_BIN" apply "manifests/$example.yaml" --node "$node" --root "$work/root" --json > "$work/again.json"; } 2>&1 | tail -1)
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["summary"]["changed"] == 0, r["summary"]' "$work/again.json"
      echo "$example $node run $i: first apply $first; no-op re-apply $again"
    done
  done
done
