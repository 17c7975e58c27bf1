#!/usr/bin/env bash
# JupyterLab and Dask on a real single-node SLURM, from tests/jupyter_dask_slurm.rs (one simulated
# login node in namespaces, munged + slurmctld + slurmd started by the test, the pinned JupyterLab
# and dask-jobqueue venv .ci/run makes in target/jupyter-venv; as root, nothing on the machine
# changes). Prints, for each of RUNS runs: the apply (a venv from local wheels included),
# `provision agent` start to JupyterLab ready (GET /api/status answering with the token), and
# SLURMCluster() (with the Python imports) to the first and the second worker connected.
#
#   bash bench/jupyter-slurm.sh           # 3 runs
#   RUNS=5 bash bench/jupyter-slurm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for _ in $(seq "${RUNS:-3}"); do
  cargo test --test jupyter_dask_slurm -- --nocapture 2>&1 \
    | grep -E -A2 '^(jupyter_dask_slurm|SKIP|test result|thread .* panicked)'
done
