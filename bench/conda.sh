#!/usr/bin/env bash
# conda_env from a local channel (tests/fixtures/conda-channel.py: feas-a needs feas-b), offline:
# the first apply (solve + install of 2 packages, package cache empty), then no-op re-applies
# (conda-meta/*.json read, no channel access), then the same env made by py-rattler (PyPI) as a
# reference when a venv with it is given.
#
#   bash bench/conda.sh                                   # builds the release binary first
#   PROVISION_BIN=/path/to/provision PY_RATTLER_VENV=/path/to/venv bash bench/conda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PROVISION_BIN:-}" ]; then
  cargo build --release --quiet
  PROVISION_BIN=$PWD/target/release/provision
fi
bin=$PROVISION_BIN
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 tests/fixtures/conda-channel.py "$work/channel"
printf 'nodes:\n  - {name: n1, address: 10.0.0.1}\nresources:\n  - conda_env: {prefix: /opt/envs/tiny, channels: [./channel], specs: [feas-a]}\n' > "$work/m.yaml"
mkdir -p "$work/root"
for i in 1 2 3 4 5; do
  rm -rf "$work/root"; mkdir -p "$work/root"
  "$bin" apply "$work/m.yaml" --node n1 --root "$work/root" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["summary"]["changed"] == 1; print(r["summary"]["duration_ms"])'
done | sort -n | awk '{a[NR]=$1} END {printf "create (engine time, empty cache) over %d runs: median %.1f ms, min %.1f, max %.1f\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
for _ in $(seq 50); do
  "$bin" apply "$work/m.yaml" --node n1 --root "$work/root" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["summary"]["changed"] == 0; print(r["summary"]["duration_ms"])'
done | sort -n | awk '{a[NR]=$1} END {printf "no-op re-apply (engine time) over %d runs: median %.3f ms, min %.3f, max %.3f\n", NR, a[int((NR+1)/2)], a[1], a[NR]}'
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 5 --runs 50 "'$bin' apply '$work/m.yaml' --node n1 --root '$work/root'"
fi
if [ -n "${PY_RATTLER_VENV:-}" ]; then
  cat > "$work/ref.py" <<'PY'
import asyncio, shutil, sys, time
import rattler
chan, prefix, cache = sys.argv[1:4]
async def main():
    t0 = time.perf_counter()
    recs = await rattler.solve(sources=["file://" + chan], specs=["feas-a"], platforms=["linux-64", "noarch"])
    t1 = time.perf_counter()
    await rattler.install(recs, prefix, cache_dir=cache)
    t2 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000
times = []
for i in range(5):
    shutil.rmtree(prefix, ignore_errors=True); shutil.rmtree(cache, ignore_errors=True)
    times.append(asyncio.run(main()))
tot = sorted(s + i for s, i in times)
print(f"py-rattler create (solve + install, empty cache) over 5 runs: median {tot[2]:.1f} ms, min {tot[0]:.1f}, max {tot[-1]:.1f}")
PY
  "$PY_RATTLER_VENV/bin/python" "$work/ref.py" "$work/channel" "$work/ref-prefix" "$work/ref-cache"
fi
