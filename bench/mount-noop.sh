#!/usr/bin/env bash
# No-op re-apply of 20 tmpfs mounts (in fstab and mounted), inside a private mount namespace so
# nothing is mounted on this machine. Each re-apply reads fstab once per mount and
# /proc/self/mountinfo, and changes nothing. Needs root (mount namespaces).
#
#   sudo bash bench/mount-noop.sh       # builds the release binary first
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/provision
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  printf 'nodes:\n  - {name: n1, address: 10.0.0.1}\nresources:\n'
  for i in $(seq -w 1 20); do
    printf '  - mount: {target: /mnt/t%s, source: t%s, fstype: tmpfs, options: [size=1m]}\n' "$i" "$i"
  done
} > "$work/m.yaml"
mkdir -p "$work/root/etc"
unshare -m --propagation private bash -c "
  '$bin' apply '$work/m.yaml' --node n1 --root '$work/root' >/dev/null
  '$bin' apply '$work/m.yaml' --node n1 --root '$work/root' --detailed-exitcodes >/dev/null
  hyperfine -N --warmup 20 --runs 200 \"'$bin' apply '$work/m.yaml' --node n1 --root '$work/root'\"
"
