"""PYME's node server (PYMERuleNodeServer), started once zeroconf has found a rule server.

Installed by provision (manifests/pyme-cluster.yaml) and run with the PYME environment's python,
with PYMERuleNodeServer's own arguments. PYME's code runs unchanged; two things differ:

1. zeroconf asks its questions by multicast. PYME's node server looks the rule server up once, at
   start, after browsing for 1 s. python-zeroconf (0.32 and later) asks its first question with
   the unicast-response bit (QU), and the rule server's responder answers it by unicast to port
   5353 of the node. Every zeroconf process of the PYME user on a node shares that port
   (SO_REUSEPORT), and Linux gives a unicast datagram to one of them, picked by a hash that stays
   the same for the machine: when that is the data server's socket, the node server finds no rule
   server on any start. A multicast answer reaches every one of those sockets.

2. With `-a zeroconf` (PYME's default), it browses until a rule server is advertised, for at most
   PYME_NODESERVER_DISCOVERY_SECONDS (default 20), before PYME's node server starts. The rule
   server answers HTTP (what provision's wait_for checks) before its zeroconf advertisement is out,
   and PYME's own 1 s browse can miss it. PYME keeps one nameserver per protocol, so the node
   server gets this browser, with what it found.

See "Why the node server needs the launcher" in provision's README.
"""

import argparse
import os
import sys
import time

import zeroconf

_browser_init = zeroconf.ServiceBrowser.__init__


def _ask_by_multicast(self, *args, question_type=zeroconf.DNSQuestionType.QM, **kwargs):
    _browser_init(self, *args, question_type=question_type, **kwargs)


zeroconf.ServiceBrowser.__init__ = _ask_by_multicast


def wait_for_a_rule_server(seconds):
    """Browses zeroconf until a rule server is advertised or `seconds` pass: whether one was."""
    from PYME.cluster import distribution
    from PYME.misc import pyme_zeroconf

    ns = pyme_zeroconf.getNS("_pyme-taskdist")
    deadline = time.monotonic() + seconds
    while not distribution.getDistributorInfo(ns):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def main():
    args = argparse.ArgumentParser(add_help=False)
    args.add_argument("-a", "--advertisements", default="zeroconf")
    if args.parse_known_args()[0].advertisements == "zeroconf":
        raw = os.environ.get("PYME_NODESERVER_DISCOVERY_SECONDS", "20")
        try:
            seconds = float(raw)
        except ValueError:
            sys.exit(f"pyme-nodeserver: PYME_NODESERVER_DISCOVERY_SECONDS must be a number of "
                     f"seconds, not {raw!r}")
        if not wait_for_a_rule_server(seconds):
            print(f"pyme-nodeserver: no rule server advertised within {seconds:g} s",
                  file=sys.stderr, flush=True)

    from PYME.cluster.PYMERuleNodeServer import main as node_server

    sys.argv[0] = "PYMERuleNodeServer"
    return node_server()


if __name__ == "__main__":
    sys.exit(main())
