#!/usr/bin/env bash
# The provision collection against the same work written with Ansible's own modules
# (bench/ansible/native.yml: lineinfile, blockinfile, group, user, file, template, copy), over N
# simulated nodes (tests/common/netns.rs: network namespaces on a bridge, overlay roots, a real
# sshd each), first run and no-op run, side by side. Wall time of ansible-playbook, and the peak
# resident memory of everything on the controller's side (ansible-playbook, its forks, ssh).
# Each approach gets a fresh fleet. As root; needs the ansible venv `.ci/run` makes
# (target/ansible-venv).
#
#   bash bench/ansible.sh              # 10 and 50 nodes, 10 forks, the release binary
#   bash bench/ansible.sh 10,100 20    # node counts, forks
#   PROVISION_BENCH_BINARY=debug bash bench/ansible.sh   # the debug build, stripped (no release build)
#   ANSIBLE_BENCH_ONLY=provision bash bench/ansible.sh   # one side only (provision or native)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-10,50}
forks=${2:-10}
if [ "${PROVISION_BENCH_BINARY:-}" = debug ]; then
  unset PROVISION_BENCH_BINARY
elif [ -z "${PROVISION_BENCH_BINARY:-}" ]; then
  cargo build --release --quiet
  export PROVISION_BENCH_BINARY="$PWD/target/release/provision"
fi
ANSIBLE_BENCH_NODES=$sizes ANSIBLE_BENCH_FORKS=$forks \
  cargo test --test ansible bench_ -- --ignored --nocapture 2>&1 \
  | grep -E -A2 '^(ansible bench|SKIP|test result|thread .* panicked)'
