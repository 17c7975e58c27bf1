#!/usr/bin/env bash
# The fleet's costs: N agents (default 100), each with its own root and its status API on its own
# loopback address (127.0.0.2 ..; n1 on 127.0.0.201), pulling one signed bundle over HTTPS from
# tests/fixtures/tls_server.py (python's http.server in TLS, a CA made here by openssl).
#   - time from publishing a new bundle to every agent converged (each agent's own timestamp of
#     its reconcile, minus the moment the new bundle was renamed into place);
#   - `provision status --cluster` wall time over all N nodes (10 runs);
#   - an agent's idle RSS and idle wake-ups (context switches of all its threads) with polling on.
# Nothing outside the temporary folder and 127.0.0.0/8 is touched; every agent is stopped at the
# end (SIGTERM), and the server is killed.
#
#   bash bench/fleet.sh                      # release binary (built first), 100 agents, poll 2s
#   N=20 POLL=5s BIN=target/debug/provision bash bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
POLL=${POLL:-2s}
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/provision"
fi
BIN=$(realpath "$BIN")
tmp=$(mktemp -d)
server=
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cd "$tmp"
mkdir -p pki site src/templates
(
  cd pki
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=bench CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr \
    -subj /CN=127.0.0.1 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile ext 2>/dev/null
)
"$BIN" bundle keygen key >/dev/null
addr() { if [ "$1" = 1 ]; then echo 127.0.0.201; else echo "127.0.0.$1"; fi; }
{
  echo "nodes:"
  for i in $(seq 1 "$N"); do echo "  - {name: n$i, address: $(addr "$i")}"; done
  echo "resources:"
  echo "  - file: {path: /etc/motd, template: templates/motd.tera}"
  echo "  - file: {path: /etc/fleet.conf, content: \"managed\\n\"}"
} > src/cluster.yaml
publish() {
  echo "$1 on {{ node.name }}" > src/templates/motd.tera
  "$BIN" bundle src -o site/.new.bundle --key key | grep -o 'sha256:[0-9a-f]*'
}
v1=$(publish v1)
mv site/.new.bundle site/cluster.bundle
python3 "$OLDPWD/tests/fixtures/tls_server.py" site pki/server.pem pki/server.key port 2>server.log &
server=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
url="https://127.0.0.1:$(cat port)/cluster.bundle"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2", 0)); print(s.getsockname()[1])')

for i in $(seq 1 "$N"); do
  mkdir -p "r$i"
  "$BIN" agent "$url" --node "n$i" --root "$tmp/r$i" --bundle-key key.pub --ca-file pki/ca.pem \
    --poll-interval "$POLL" --reconcile-interval 1h --status-listen "$(addr "$i"):$port" 2>"r$i.log" &
  pids+=($!)
done

python3 - "$BIN" "$N" "$port" "$v1" "${pids[*]}" "$POLL" <<'PY'
import json, os, statistics, subprocess, sys, time, urllib.request, datetime
binary, n, port, v1, pids, poll = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], [int(p) for p in sys.argv[5].split()], sys.argv[6]
addr = lambda i: "127.0.0.201" if i == 1 else f"127.0.0.{i}"
def status(i):
    try:
        return json.load(urllib.request.urlopen(f"http://{addr(i)}:{port}/status", timeout=2))
    except Exception:
        return None
def wait_all(hash_, limit=120):
    end = time.monotonic() + limit
    pending = set(range(1, n + 1))
    while pending and time.monotonic() < end:
        pending = {i for i in pending if not ((s := status(i)) and s["manifest"]["hash"] == hash_)}
        time.sleep(0.05)
    if pending:
        sys.exit(f"timed out: {len(pending)} agents did not converge to {hash_}")
t = time.monotonic()
wait_all(v1)
print(f"== {n} agents started and converged to the first bundle in {time.monotonic() - t:.1f} s (poll interval {poll})")

print("== publish a new bundle -> every agent converged (each agent's reconcile timestamp)")
src_motd = "src/templates/motd.tera"
open(src_motd, "w").write("v2 on {{ node.name }}\n")
out = subprocess.run([binary, "bundle", "src", "-o", "site/.new.bundle", "--key", "key"], capture_output=True, text=True, check=True).stdout
v2 = next(w for w in out.replace(",", " ").split() if w.startswith("sha256:"))
published = time.time()
os.rename("site/.new.bundle", "site/cluster.bundle")
wait_all(v2)
def ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
lat = sorted(ts(status(i)["last_reconcile"]["at"]) - published for i in range(1, n + 1))
print(f"median {statistics.median(lat):.2f} s, p90 {lat[int(len(lat) * 0.9) - 1]:.2f} s, max {lat[-1]:.2f} s (the poll interval with its ±25% jitter bounds it)")

print("== provision status --cluster over", n, "nodes, 10 runs (wall, ms)")
ws = []
for _ in range(10):
    t = time.perf_counter()
    r = subprocess.run([binary, "status", "--cluster", "src/cluster.yaml", "--port", str(port), "--json"], capture_output=True, text=True)
    ws.append((time.perf_counter() - t) * 1000)
    rows = json.loads(r.stdout)["nodes"]
    assert r.returncode == 0 and all(x["reachable"] and x["hash"] == v2 for x in rows), r.stdout[:500]
ws.sort()
print(f"median {statistics.median(ws):.0f} ms, min {ws[0]:.0f} ms, max {ws[-1]:.0f} ms; all {n} rows reachable with the new hash")

print("== idle agents with polling on: RSS and wake-ups over 20 s")
time.sleep(5)
def rss(pid):
    d = {}
    for l in open(f"/proc/{pid}/status"):
        k, _, v = l.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
            d[k] = int(v.split()[0])
    return d
def switches(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        for l in open(f"/proc/{pid}/task/{tid}/status"):
            if l.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(l.split()[1])
    return total
def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
sample = pids[:: max(1, n // 10)]
before = {p: (switches(p), cpu(p)) for p in sample}
time.sleep(20)
after = {p: (switches(p), cpu(p)) for p in sample}
r = [rss(p) for p in pids]
vm = sorted(x["VmRSS"] / 1000 for x in r)
print(f"VmRSS over {n} agents: median {statistics.median(vm):.1f} MB, max {vm[-1]:.1f} MB; one agent: " + ", ".join(f"{k} {v / 1000:.1f} MB" if k != "Threads" else f"{k} {v}" for k, v in r[0].items()))
w = [after[p][0] - before[p][0] for p in sample]
c = [(after[p][1] - before[p][1]) * 1000 / os.sysconf("SC_CLK_TCK") for p in sample]
print(f"wake-ups (context switches, all threads) in 20 s, {len(sample)} agents: median {statistics.median(w)}, max {max(w)}; CPU in 20 s: median {statistics.median(c):.0f} ms, max {max(c):.0f} ms")
server_log = open("server.log").read().splitlines()
print(f"server: {sum(' 304 ' in l for l in server_log)} answers 304, {sum(' 200 ' in l for l in server_log)} answers 200")
PY
