#!/bin/bash
# PYME's zeroconf discovery in fresh pairs of network namespaces: how often PYME's own 1 s browse
# (what its node server does at start) misses a rule server advertised on the other namespace
# while a second zeroconf process runs beside the browser, and how often the browse of the
# cluster manifest's node server launcher (manifests/pyme/nodeserver.py: questions by multicast)
# does. See "Why the node server needs the launcher" in the README.
#
#   PY=/opt/pyme/venv/bin/python bash bench/pyme-zeroconf.sh [PAIRS] [TRIES]
#
# PY: a python with PYME and zeroconf (0.35 to 0.99) installed. Needs root (ip netns). Each pair
# gets new namespaces, hence a new hash for Linux's SO_REUSEPORT choice. Leaves nothing behind.
set -euo pipefail
PY=${PY:?set PY to a python with PYME installed}
PAIRS=${1:-10}
TRIES=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for n in $(ip netns list | awk '/^pzc[mw][0-9]/ {print $1}'); do ip netns del "$n"; done
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/master.py" <<'PY'
import socket, sys, threading, time
from PYME.misc import pyme_zeroconf
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.0.1", 15346))
s.listen(50)
def accept():
    while True:
        s.accept()[0].close()
threading.Thread(target=accept, daemon=True).start()
pyme_zeroconf.getNS("_pyme-taskdist").register_service("PYMERuleServer-master", "10.0.0.1", 15346)
time.sleep(3600)
PY
cat > "$work/other.py" <<'PY'
import time
from PYME.misc import pyme_zeroconf
pyme_zeroconf.getNS("_pyme-http")
time.sleep(3600)
PY
cat > "$work/browse.py" <<'PY'
import runpy, sys
if sys.argv[1] == "launcher":
    runpy.run_path(sys.argv[2], run_name="probe")
from PYME.misc import pyme_zeroconf
from PYME.cluster import distribution
import zeroconf
ns = pyme_zeroconf.getNS("_pyme-taskdist")
print(zeroconf.__version__, "found" if distribution.getDistributorInfo(ns) else "missed")
PY

own_missed=0; launcher_missed=0; bad_pairs=0; version=
for i in $(seq 1 "$PAIRS"); do
  m=pzcm$i; w=pzcw$i
  ip netns add $m; ip netns add $w
  ip link add pzc0 netns $m type veth peer name pzc0 netns $w
  ip -n $m addr add 10.0.0.1/24 dev pzc0; ip -n $w addr add 10.0.0.11/24 dev pzc0
  for n in $m $w; do
    ip -n $n link set lo up; ip -n $n link set pzc0 up
    ip -n $n route add 224.0.0.0/4 dev pzc0
  done
  ip netns exec $m "$PY" "$work/master.py" >/dev/null 2>&1 & pids+=($!)
  ip netns exec $w "$PY" "$work/other.py" >/dev/null 2>&1 & pids+=($!)
  sleep 3
  own=0; launcher=0
  for t in $(seq 1 "$TRIES"); do
    r=$(ip netns exec $w timeout 60 "$PY" "$work/browse.py" pyme 2>/dev/null | tail -1)
    version=${r% *}; [ "${r#* }" = found ] || own=$((own + 1))
    r=$(ip netns exec $w timeout 60 "$PY" "$work/browse.py" launcher "$here/manifests/pyme/nodeserver.py" 2>/dev/null | tail -1)
    [ "${r#* }" = found ] || launcher=$((launcher + 1))
  done
  echo "pair $i: PYME's own browse missed $own of $TRIES, the launcher's $launcher of $TRIES"
  own_missed=$((own_missed + own)); launcher_missed=$((launcher_missed + launcher))
  [ $own -eq 0 ] || bad_pairs=$((bad_pairs + 1))
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  ip netns del $m; ip netns del $w
done
echo "zeroconf $version, $PAIRS pairs x $TRIES tries: PYME's own browse missed $own_missed (in $bad_pairs pairs), the launcher's missed $launcher_missed"
