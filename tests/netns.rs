//! The simulated nodes of `tests/common/netns.rs` themselves: three nodes on a LAN, each with its
//! own hostname, root and sshd; a real `ssh` from the LAN's controller address reaches each one by
//! its address, with the node's own host key checked, and runs a command in the node's own root;
//! a password login is refused; nothing is left once they are dropped (no process, no mount
//! namespace, no interface on the machine).
//!
//! Skipped (`SKIP netns: <reason>`) without root, overlayfs, ip/unshare/nsenter/chroot, sshd or ssh.

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::{Lan, Node, cmdline, in_mnt_ns, run_limited};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn nodes_on_a_lan_answer_ssh_with_their_own_hostname_and_root_and_leave_nothing() {
    if let Some(why) = common::netns::unavailable(&["sshd", "ssh", "ssh-keygen"]) {
        eprintln!("SKIP netns: {why}");
        return;
    }
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let keygen = |name: &str| {
        let key = tmp.path().join(name);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key);
        let (code, out, err) = run_limited(c, "ssh-keygen", LIMIT);
        assert_eq!(code, 0, "{out}{err}");
        key
    };
    let key = keygen("id_ed25519");
    let stranger = keygen("id_stranger");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();

    let namespaces;
    {
        let mut lan = Lan::new("10.78.0.1", 24);
        let mut nodes: Vec<Node> = (1..=3)
            .map(|i| Node::new(&format!("sim{i:02}"), &format!("10.78.0.{}", 10 + i)))
            .collect();
        let mut known = String::new();
        for n in &mut nodes {
            lan.attach(n);
            known.push_str(&n.start_sshd(&public));
        }
        let known_hosts = tmp.path().join("known_hosts");
        std::fs::write(&known_hosts, &known).unwrap();
        namespaces = nodes.iter().map(|n| n.ns.clone()).collect::<Vec<_>>();
        // Each node keeps a file of its own in its own root.
        for n in &nodes {
            n.write("/etc/which-node", &format!("{}\n", n.name), 0o644);
        }
        let ssh = |address: &str, key: &std::path::Path, script: &str| {
            let mut c = lan.command("ssh");
            c.args(["-F", "/dev/null", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(key)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
                .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
                .args(["-o", "ConnectTimeout=10"])
                .arg(format!("root@{address}"))
                .arg(script);
            run_limited(c, &format!("ssh {address}"), LIMIT)
        };
        for n in &nodes {
            let (code, out, err) = ssh(&n.address, &key, "hostname; cat /etc/which-node");
            assert_eq!(code, 0, "ssh {}: {out}{err}\n{}", n.address, n.sshd_log());
            assert_eq!(out, format!("{0}\n{0}\n", n.name));
            // A write over SSH lands in the node's upper layer only.
            let (code, out, err) = ssh(&n.address, &key, "echo over-ssh > /etc/over-ssh");
            assert_eq!(code, 0, "{out}{err}");
            assert_eq!(n.read("/etc/over-ssh"), "over-ssh\n");
            assert!(!std::path::Path::new("/etc/over-ssh").exists());
        }
        // Key auth only: another key (and no password to give) is refused.
        let (code, _, err) = ssh(&nodes[0].address, &stranger, "true");
        assert_ne!(code, 0);
        assert!(err.contains("Permission denied"), "{err}");
        // sshd runs in the node's namespaces, listening on the node's address only.
        for n in &nodes {
            assert!(n.listens(22));
            let sshd: Vec<String> = n.inside().into_iter().map(cmdline).collect();
            assert!(
                sshd.iter()
                    .any(|c| c.starts_with("sshd: /usr/sbin/sshd -D -e -f")
                        && c.contains("[listener]")),
                "{sshd:?}"
            );
        }
        assert_eq!(
            std::fs::read_dir("/sys/class/net").unwrap().count(),
            host_ifaces,
            "no interface of the LAN on the machine"
        );
    }
    for ns in &namespaces {
        assert_eq!(in_mnt_ns(ns), Vec::<u32>::new(), "a process is left");
    }
    assert_eq!(
        std::fs::read_dir("/sys/class/net").unwrap().count(),
        host_ifaces
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
}
