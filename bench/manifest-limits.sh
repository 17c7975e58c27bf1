#!/usr/bin/env bash
# The worst cases under the manifest input limits (agent/manifest/limits.rs): for each limit, a
# manifest just under it (accepted, or refused only for an unrelated reason) and one past it
# (refused, naming the limit), each run through `provision validate` under GNU time. Prints wall
# seconds, peak RSS and the first line of the answer.
#
#   bench/manifest-limits.sh [PROVISION_BINARY]     default target/release/provision
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/provision}
if [ ! -x "$bin" ]; then
  echo "no $bin: cargo build --release (or give the binary to measure)" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" <<'PY'
import os, sys
w = sys.argv[1]
node = "nodes:\n  - name: n0\n    address: 10.0.0.1\n"
def put(name, text):
    with open(os.path.join(w, name), "w") as f:
        f.write(text)

# A billion laughs: 9 levels of 10 aliases each (10^9 strings if expanded).
lol = ["vars:", '  l0: &l0 "lol"']
for i in range(1, 10):
    lol.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i-1}"] * 10) + "]")
put("billion-laughs.yaml", "\n".join(lol) + "\n" + node)

# One file just under 4 MiB (comments, then a real manifest), and one just over.
pad = "# " + "x" * 77 + "\n"
n = (4 * 1024 * 1024 - 200) // len(pad)
put("file-under-4mib.yaml", pad * n + node)
put("file-over-4mib.yaml", pad * (n + 100) + node)

# 249,000 YAML values in one list (under 250,000), and 260,000 (over).
def values(k):
    return "vars:\n  v: [" + ", ".join(["1"] * k) + "]\n" + node
put("values-under.yaml", values(249_000))
put("values-over.yaml", values(260_000))

# Nesting 31 levels under 1,000-byte keys with 100,000 values at the bottom (the location
# index's worst case under the depth limit), and 40 levels (over the depth limit).
def deep(levels, k):
    key = "k" * 1000
    t = "vars:\n  x: " + ("{" + key + ": ") * levels
    t += "{" + ", ".join(f"a{i}: b" for i in range(k)) + "}" + "}" * levels + "\n"
    return t + node
put("deep-long-keys.yaml", deep(29, 100_000))
put("depth-over.yaml", deep(40, 10))

# 10,000 nodes with a file resource each (both at their limit), and 10,001 nodes.
def many(k):
    t = "nodes:\n" + "".join(f"  - name: n{i}\n    address: 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}\n" for i in range(k))
    t += "resources:\n" + "".join(f"  - file: {{path: /etc/f{i}, content: x, nodes: [n{i}]}}\n" for i in range(min(k, 10_000)))
    return t
put("nodes-10000.yaml", many(10_000))
put("nodes-10001.yaml", many(10_001))
# 10,000 nodes and 10,000 resources that apply to every node.
put("everywhere-10000.yaml", "nodes:\n" + "".join(f"  - name: n{i}\n    address: 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}\n" for i in range(10_000))
    + "resources:\n" + "".join(f"  - file: {{path: /etc/f{i}, content: x}}\n" for i in range(10_000)))

# A 1 MiB string repeated by 15 aliases (just under 16 MiB of text) and by 20 (over).
def text(k):
    return "vars:\n  big: &b " + "a" * (1 << 20) + "\n  list: [" + ", ".join(["*b"] * k) + "]\n" + node
put("alias-text-under.yaml", text(14))
put("alias-text-over.yaml", text(20))

# Four included files of just under 4 MiB each (16 MiB in all, under), and five (over).
for i in range(5):
    put(f"part{i}.yaml", pad * n)
put("includes-16mib.yaml", "include: [part0.yaml, part1.yaml, part2.yaml]\n" + pad * (n - 200) + node)
put("includes-over.yaml", "include: [part0.yaml, part1.yaml, part2.yaml, part3.yaml, part4.yaml]\n" + node)
PY

printf '%-24s %9s %8s %6s  %s\n' case size wall_s rss_MB "first line of the answer"
for f in ${LIMITS_CASES:-billion-laughs file-under-4mib file-over-4mib values-under values-over deep-long-keys \
         depth-over nodes-10000 everywhere-10000 nodes-10001 alias-text-under alias-text-over includes-16mib \
         includes-over}; do
  path="$work/$f.yaml"
  size=$(du -h --apparent-size "$path" | cut -f1)
  /usr/bin/time -f '%e %M' -o "$work/time" "$bin" validate "$path" >"$work/out" 2>&1 || true
  read -r wall rss_kb < <(tail -1 "$work/time")
  first=$(head -1 "$work/out" | sed "s|$work/||g" | cut -c1-110)
  printf '%-24s %9s %8s %6d  %s\n' "$f" "$size" "$wall" "$((rss_kb / 1024))" "$first"
done
