#!/usr/bin/env bash
# Cost against manifest size: validate and plan a generated cluster of N nodes (default 1000),
# each node with its own hosts entry, one shared set of resources and 50 role-scoped files.
#
#   bash bench/scale.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
cargo build --release --quiet
bin=target/release/provision
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$n" "$work/cluster.yaml" <<'PY'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
lines = ["cluster: {domain: cluster.lan}", "vars: {pyme_data_root: /data/pyme}", "nodes:"]
for i in range(n):
    role = "master" if i == 0 else "worker"
    lines.append(f"  - {{name: node{i:04d}, address: 10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}, roles: [{role}]}}")
lines.append("resources:")
lines.append("  - hosts: {loopback_hostname: remove}")
lines.append("  - user: {name: pyme, system: true}")
lines.append("  - directory: {path: /data/pyme, owner: pyme, group: pyme}")
lines.append("  - file: {path: /etc/PYME/config.yaml, template: pyme/config.yaml.tera}")
for j in range(50):
    lines.append(f"  - file: {{path: /etc/app/{j}.conf, content: \"x={j}\\n\", roles: [worker]}}")
open(out, "w").write("\n".join(lines) + "\n")
PY
# Unique addresses matter (duplicates are an error): check the generated file first.
"$bin" validate "$work/cluster.yaml"
mkdir -p "$work/root"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 50 \
    "$bin validate $work/cluster.yaml" \
    "$bin plan $work/cluster.yaml --node node0001 --root $work/root"
else
  for cmd in "validate $work/cluster.yaml" "plan $work/cluster.yaml --node node0001 --root $work/root"; do
    python3 - "$bin" "$cmd" <<'PY'
import statistics, subprocess, sys, time
bin, cmd = sys.argv[1], sys.argv[2].split()
xs = []
for _ in range(50):
    t = time.perf_counter()
    subprocess.run([bin] + cmd, stdout=subprocess.DEVNULL, check=True)
    xs.append((time.perf_counter() - t) * 1000)
print(f"{cmd[0]}: median {statistics.median(xs):.2f} ms, min {min(xs):.2f} ms over {len(xs)} runs")
PY
  done
fi
