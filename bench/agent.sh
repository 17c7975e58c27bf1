#!/usr/bin/env bash
# The agent's running costs: drift repair latency (inotify), idle RSS with 2 services running, and
# crash-to-restart latency of a supervised service. Needs root (the services run as a system
# user the manifest creates); everything lives in a temporary root, nothing under the real /etc.
#
#   bash bench/agent.sh                                   # release binary (built first)
#   BIN=/work/target-daemon2/debug/provision bash bench/agent.sh   # any other binary
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/provision"
fi
tmp=$(mktemp -d)
chmod 755 "$tmp"
agent=
cleanup() {
  [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
root=$tmp/root
mkdir -p "$root/etc" "$tmp/run" && chmod 777 "$tmp/run"
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' > "$root/etc/shadow"
printf 'root:*::\n' > "$root/etc/gshadow"
cat > "$tmp/m.yaml" <<YAML
nodes:
  - name: n1
    address: 10.0.0.1
resources:
  - user: {name: svc, system: true, create_home: false}
  - file: {path: /etc/x.conf, content: "managed\n"}
  - service:
      name: one
      command: [sh, -c, 'date +%s.%N >> $tmp/run/one.starts; exec sleep 100000']
      user: svc
  - service:
      name: two
      command: [sleep, "100000"]
      user: svc
YAML
"$BIN" agent "$tmp/m.yaml" --node n1 --root "$root" --status-listen 127.0.0.1:0 2>"$tmp/agent.log" &
agent=$!
python3 - "$root" "$tmp" "$agent" <<'PY'
import json, os, signal, statistics, sys, time, urllib.request
root, tmp, agent = sys.argv[1], sys.argv[2], int(sys.argv[3])
def wait(f, what, limit=30):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = f()
        if v: return v
        time.sleep(0.001)
    sys.exit(f"timed out: {what}")
addr_file = f"{root}/var/lib/provision/status.addr"
addr = wait(lambda: os.path.exists(addr_file) and open(addr_file).read().strip(), "status API")
def status():
    return json.load(urllib.request.urlopen(f"http://{addr}/status", timeout=5))
wait(lambda: sum(s["state"] == "ready" for s in status()["services"]) == 2, "2 services ready")

print("== drift repair latency (hand edit of a managed file -> content back), 50 edits")
path = f"{root}/etc/x.conf"
xs = []
for i in range(50):
    t = time.perf_counter()
    with open(path, "w") as f: f.write(f"hand edit {i}\n")
    wait(lambda: open(path).read() == "managed\n", "repair")
    xs.append((time.perf_counter() - t) * 1000)
    time.sleep(0.05)
xs.sort()
print(f"median {statistics.median(xs):.1f} ms, p95 {xs[int(len(xs)*0.95)]:.1f} ms, min {xs[0]:.1f} ms, max {xs[-1]:.1f} ms")
print("drift repairs reported:", status()["drift"]["repairs_total"])

print("== idle RSS (2 services running), after 5 s quiet")
time.sleep(5)
rss = [l for l in open(f"/proc/{agent}/status") if l.startswith(("VmRSS", "VmHWM", "RssAnon", "RssFile"))]
print(" ".join(l.split(":")[0] + " " + " ".join(l.split()[1:]) for l in rss))
t0 = os.times()
stat = lambda: [int(x) for x in open(f"/proc/{agent}/stat").read().rsplit(")", 1)[1].split()[11:13]]
a = stat(); time.sleep(10); b = stat()
print(f"CPU while idle: {(sum(b) - sum(a)) / os.sysconf('SC_CLK_TCK') * 1000 / 10:.2f} ms per second")

print("== crash-to-restart latency (SIGKILL of service one -> its next start), 3 crashes, each after a healthy run (> 10 s)")
starts = f"{tmp}/run/one.starts"
xs = []
for i in range(3):
    pid = wait(lambda: next((s["pid"] for s in status()["services"] if s["name"] == "one" and s["state"] == "ready"), None), "one ready")
    n = len(open(starts).read().split())
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    wait(lambda: len(open(starts).read().split()) > n, "restart")
    xs.append((float(open(starts).read().split()[-1]) - t) * 1000)
    time.sleep(11)  # a healthy run again, so the next restart is a first restart (no backoff)
print("first restarts (ms):", " ".join(f"{x:.1f}" for x in xs))
PY
