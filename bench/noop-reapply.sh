#!/usr/bin/env bash
# No-op re-apply of the bundled example: apply once into a fresh sandbox root, then time repeated
# applies that find nothing to change. Reports the whole process wall time (hyperfine) and the
# engine's own figure (summary.duration_ms from --json).
#
#   bash bench/noop-reapply.sh            # builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/provision
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
manifest=manifests/pyme-cluster.yaml
"$bin" apply "$manifest" --node master --root "$root" >/dev/null
"$bin" apply "$manifest" --node master --root "$root" --detailed-exitcodes >/dev/null # must be a no-op (exit 0)

echo "== engine time of a no-op re-apply (summary.duration_ms, 200 runs)"
for _ in $(seq 200); do
  "$bin" apply "$manifest" --node master --root "$root" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["duration_ms"])'
done | python3 -c '
import statistics, sys
xs = sorted(float(l) for l in sys.stdin)
print(f"resources: 6, runs: {len(xs)}, median {statistics.median(xs):.3f} ms, p95 {xs[int(len(xs)*0.95)]:.3f} ms, min {xs[0]:.3f} ms")'

echo "== whole process (parse, validate, facts, lock, reconcile, report)"
if command -v hyperfine >/dev/null; then
  hyperfine -N --warmup 20 --runs 300 "$bin apply $manifest --node master --root $root"
else
  python3 - "$bin" "$manifest" "$root" <<'PY'
import statistics, subprocess, sys, time
bin, manifest, root = sys.argv[1:]
xs = []
for _ in range(300):
    t = time.perf_counter()
    subprocess.run([bin, "apply", manifest, "--node", "master", "--root", root], check=True, stdout=subprocess.DEVNULL)
    xs.append((time.perf_counter() - t) * 1000)
xs.sort()
print(f"runs: {len(xs)}, median {statistics.median(xs):.2f} ms, p95 {xs[int(len(xs)*0.95)]:.2f} ms, min {xs[0]:.2f} ms")
PY
fi
