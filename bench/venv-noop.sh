#!/usr/bin/env bash
# No-op re-apply of 5 virtual environments (python3.11 -m venv, offline: each lists pip's own
# packages as requirements, already there). A re-apply reads pyvenv.cfg, two stats and the
# *.dist-info names of site-packages per environment, and runs no python and no pip.
#
#   bash bench/venv-noop.sh                       # builds the release binary first
#   PROVISION_BIN=/path/to/provision bash bench/venv-noop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PROVISION_BIN:-}" ]; then
  cargo build --release --quiet
  PROVISION_BIN=$PWD/target/release/provision
fi
bin=$PROVISION_BIN
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  printf 'nodes:\n  - {name: n1, address: 10.0.0.1}\nresources:\n'
  for i in 1 2 3 4 5; do
    printf '  - venv: {path: /opt/envs/e%s, python: python3.11, pip: [{packages: ["pip>=20", "setuptools"]}]}\n' "$i"
  done
} > "$work/m.yaml"
mkdir -p "$work/root"
time "$bin" apply "$work/m.yaml" --node n1 --root "$work/root" >/dev/null
"$bin" apply "$work/m.yaml" --node n1 --root "$work/root" --detailed-exitcodes >/dev/null
for _ in $(seq 50); do
  "$bin" apply "$work/m.yaml" --node n1 --root "$work/root" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["duration_ms"])'
done | sort -n | awk '{a[NR]=$1} END {printf "engine time over %d runs: median %.3f ms, min %.3f ms, max %.3f ms\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
hyperfine -N --warmup 10 --runs 100 "'$bin' apply '$work/m.yaml' --node n1 --root '$work/root'"
