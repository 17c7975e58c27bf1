//! The Ansible collection (`ansible-compat/`, `provision.fleet`) driving the real binary over real
//! SSH: ten simulated nodes (tests/common/netns.rs: each its own network namespace and address on
//! a bridge, hostname, overlay root and Debian `sshd`, key auth only), a real `ansible-playbook`
//! from ansible-core (the venv `.ci/run` makes) with 10 forks, and the manifest of
//! `tests/fixtures/ansible/fleet/` (derived from manifests/pyme-cluster.yaml and
//! lab-workstation.yaml, see its header) used both as the inventory (the collection's inventory
//! plugin) and as what every host applies.
//!
//! In order: the inventory graph and host vars; `--check --diff` on the fresh fleet shows the
//! diffs (the password redacted) and writes nothing on any node; an apply with one node given a
//! broken file (`/etc/PYME` a file, not a folder) fails that node alone, converges the nine others
//! and copies the binary to every host; once it is repaired, the next run changes only that node
//! and copies no binary; the run after changes nothing on any host; a manifest error fails every
//! host with its file:line:column and touches none, and so does a node the manifest does not know;
//! an unreachable host is reported unreachable. Everything is dropped at the end: no process,
//! mount namespace or interface is left.
//!
//! `ansible-test sanity` and `ansible-lint` of the collection are in tests/ansible_sanity.rs.
//!
//! Skipped (`SKIP ansible: <reason>`) without root, overlayfs, sshd/ssh/ssh-keygen, strip, or the
//! ansible venv (`target/ansible-venv`, made by `.ci/run`; or `$PROVISION_ANSIBLE_VENV`).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netns::{Lan, Node, in_mnt_ns, run_limited};

const NODES: usize = 10;
/// One playbook run over the fleet (about 20 s on 2 busy cores) is killed after this.
const RUN_LIMIT: Duration = Duration::from_secs(300);
const SECRET: &str = "Fleet-Test-Share-Pass-7d1";

fn venv() -> PathBuf {
    common::ansible_venv()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ansible")
}

/// The controller: keys, known_hosts, ansible.cfg, the collection on its path, a stripped copy
/// of the binary (the debug build is hundreds of MB), and a HOME of its own.
struct Controller {
    tmp: tempfile::TempDir,
    binary: PathBuf,
    limit: Duration,
}

impl Controller {
    fn new() -> Controller {
        Controller::with(NODES, None, RUN_LIMIT)
    }

    /// A controller running `forks` hosts at once, shipping `binary` (default: a stripped copy
    /// of the test's), each run killed after `limit`.
    fn with(forks: usize, binary: Option<PathBuf>, limit: Duration) -> Controller {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for d in [
            "home",
            "local",
            "cp",
            "collections/ansible_collections/provision",
        ] {
            std::fs::create_dir_all(t.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible-compat"),
            t.join("collections/ansible_collections/provision/fleet"),
        )
        .unwrap();
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(t.join("id_ed25519"));
        let (code, out, err) = run_limited(keygen, "ssh-keygen", RUN_LIMIT);
        assert_eq!(code, 0, "{out}{err}");
        let binary = binary.unwrap_or_else(|| {
            let binary = t.join("provision");
            let mut strip = Command::new("strip");
            strip
                .args(["--strip-debug", "-o"])
                .arg(&binary)
                .arg(env!("CARGO_BIN_EXE_provision"));
            let (code, out, err) = run_limited(strip, "strip", RUN_LIMIT);
            assert_eq!(code, 0, "{out}{err}");
            binary
        });
        let d = t.display();
        std::fs::write(
            t.join("ansible.cfg"),
            format!(
                "[defaults]
collections_path = {d}/collections
local_tmp = {d}/local
remote_user = root
private_key_file = {d}/id_ed25519
interpreter_python = /usr/bin/python3
forks = {forks}
host_key_checking = True
retry_files_enabled = False
timeout = 10
nocows = True

[inventory]
enable_plugins = provision.fleet.manifest, ini

[ssh_connection]
pipelining = True
control_path_dir = {d}/cp
ssh_args = -F /dev/null -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o ControlMaster=auto -o ControlPersist=60s
"
            ),
        )
        .unwrap();
        Controller { tmp, binary, limit }
    }

    fn public_key(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("id_ed25519.pub")).unwrap()
    }

    /// `TOOL ARGS` from the venv, on the LAN, with the controller's config and HOME: exit code,
    /// stdout, stderr.
    fn run(&self, lan: &Lan, tool: &str, args: &[&str]) -> (i32, String, String) {
        self.command(lan, tool, args, None)
    }

    fn command(
        &self,
        lan: &Lan,
        tool: &str,
        args: &[&str],
        tree: Option<&Path>,
    ) -> (i32, String, String) {
        let mut cmd = lan.command(venv().join("bin").join(tool).to_str().unwrap());
        let path = format!("{}:{}", venv().join("bin").display(), common::netns::PATH);
        cmd.args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.tmp.path().join("home"))
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_CONFIG", self.tmp.path().join("ansible.cfg"))
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("PROVISION_BINARY", &self.binary)
            .current_dir(self.tmp.path());
        if let Some(tree) = tree {
            // (ad-hoc `ansible` loads the callbacks enabled only with LOAD_CALLBACK_PLUGINS)
            cmd.env("ANSIBLE_CALLBACKS_ENABLED", "ansible.builtin.tree")
                .env("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
                .env("ANSIBLE_CALLBACK_TREE_DIR", tree);
        }
        run_limited(cmd, &format!("{tool} {args:?}"), self.limit)
    }

    /// `TOOL ARGS` with ansible-core's `tree` callback on: the result of each host's last task
    /// (as JSON), besides the exit code and output.
    fn results(&self, lan: &Lan, tool: &str, args: &[&str]) -> Outcome {
        let tree = tempfile::tempdir_in(self.tmp.path()).unwrap();
        let (code, out, err) = self.command(lan, tool, args, Some(tree.path()));
        let results = std::fs::read_dir(tree.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let text = std::fs::read_to_string(e.path()).unwrap();
                let json = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("{}: {err}: {text}", e.path().display()));
                (e.file_name().to_str().unwrap().to_owned(), json)
            })
            .collect();
        Outcome {
            code,
            results,
            out,
            err,
        }
    }

    /// `ansible-playbook site.yml` with the fleet manifest as the inventory.
    fn playbook(&self, lan: &Lan, extra: &[&str]) -> Outcome {
        let inventory = fixtures().join("fleet/cluster.yaml");
        let site = fixtures().join("site.yml");
        let binary = format!("provision_binary={}", self.binary.display());
        let mut args = vec![
            "-i",
            inventory.to_str().unwrap(),
            site.to_str().unwrap(),
            "-e",
            &binary,
        ];
        args.extend(extra);
        self.results(lan, "ansible-playbook", &args)
    }
}

/// What one run of an Ansible tool did.
struct Outcome {
    code: i32,
    /// Each host's (last) task result.
    results: BTreeMap<String, serde_json::Value>,
    out: String,
    err: String,
}

impl Outcome {
    #[track_caller]
    fn expect(&self, code: i32) -> &Outcome {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}\n--- results\n{:#?}",
            self.out, self.err, self.results
        );
        self
    }

    /// `KEY` (`ok`, `changed`, `failed`, `unreachable`) of `host` in the PLAY RECAP.
    fn recap(&self, host: &str, key: &str) -> Option<u32> {
        recap_count(&self.out, host, key)
    }
}

/// `KEY=N` of `host` in the PLAY RECAP of the default callback's output.
fn recap_count(out: &str, host: &str, key: &str) -> Option<u32> {
    let line = out
        .split("PLAY RECAP")
        .nth(1)?
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `(ok, changed, failed)` of `host` in the PLAY RECAP of the default callback's output.
fn recap(out: &str, host: &str) -> Option<(u32, u32, u32)> {
    let line = out
        .split("PLAY RECAP")
        .nth(1)?
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))?;
    let count = |key: &str| -> Option<u32> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.parse().ok())
    };
    Some((count("ok=")?, count("changed=")?, count("failed=")?))
}

/// Every entry of a node's upper layer (what it wrote), type, mode, owner and content hash, but
/// for what any SSH login touches: root's home (Ansible's `~/.ansible`, and whatever the login
/// shell's profile does there: this machine's root has a pyenv whose shims it rehashes), `/run`,
/// `/tmp`, and the login records in `/var/log`. The manifest writes none of these.
fn written(node: &Node) -> BTreeMap<PathBuf, String> {
    const NOISE: [&str; 6] = [
        "root",
        "run",
        "tmp",
        "var/log/wtmp",
        "var/log/btmp",
        "var/log/lastlog",
    ];
    common::snapshot_except(&node.upper(), |rel| {
        NOISE.iter().any(|n| rel.starts_with(n))
    })
}

#[test]
fn a_fleet_of_ten_converges_over_ssh_from_one_playbook() {
    if let Some(why) = common::netns::unavailable(&["sshd", "ssh", "ssh-keygen", "strip"]) {
        eprintln!("SKIP ansible: {why}");
        return;
    }
    if !venv().join("bin/ansible-playbook").exists() {
        eprintln!(
            "SKIP ansible: no ansible-core venv at {} (.ci/run makes it; or set PROVISION_ANSIBLE_VENV)",
            venv().display()
        );
        return;
    }
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let ctl = Controller::new();
    let namespaces;
    {
        let mut lan = Lan::new("10.79.0.1", 24);
        let key = ctl.public_key();
        let mut nodes: Vec<Node> = (1..=NODES)
            .map(|i| Node::new(&format!("node{i:02}"), &format!("10.79.0.{}", 10 + i)))
            .collect();
        let mut known = String::new();
        for n in &mut nodes {
            lan.attach(n);
            known.push_str(&n.start_sshd(&key));
        }
        std::fs::write(ctl.tmp.path().join("known_hosts"), known).unwrap();
        namespaces = nodes.iter().map(|n| n.ns.clone()).collect::<Vec<_>>();
        let manifest = fixtures().join("fleet/cluster.yaml");
        let manifest = manifest.to_str().unwrap();
        let site = fixtures().join("site.yml");
        let site = site.to_str().unwrap();
        let binary = format!("provision_binary={}", ctl.binary.display());

        // The manifest as the inventory: nodes are hosts at their addresses, roles are groups.
        let (code, out, err) = ctl.run(&lan, "ansible-inventory", &["-i", manifest, "--graph"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("@master:\n  |  |--node01\n"),
            "the master group: {out}"
        );
        let workers = out.split("@worker:").nth(1).unwrap_or_default();
        assert_eq!(workers.matches("|--node").count(), NODES, "{out}");
        let (code, out, err) = ctl.run(
            &lan,
            "ansible-inventory",
            &["-i", manifest, "--host", "node03"],
        );
        assert_eq!(code, 0, "{out}{err}");
        let vars: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(vars["ansible_host"], "10.79.0.13");
        assert_eq!(vars["provision_node"], "node03");
        assert_eq!(vars["greeting"], "Hello", "the node's own var wins");
        assert_eq!(vars["pyme_num_workers"], 8);
        assert_eq!(vars["pyme_data_root"], "/data/pyme", "the cluster's vars");

        // --check --diff on the fresh fleet: the diffs, and nothing written on any node.
        let check = |limit: &[&str]| {
            let mut args = vec!["-i", manifest, site, "-e", &binary, "--check", "--diff"];
            args.extend(limit);
            ctl.run(&lan, "ansible-playbook", &args)
        };
        let before: Vec<_> = nodes.iter().map(written).collect();
        let (code, out, err) = check(&[]);
        assert_eq!(code, 0, "check run:\n{out}\n{err}");
        assert!(
            out.contains("+10.79.0.11\tnode01.cluster.lan node01")
                && out.contains("+10.79.0.20\tnode10.cluster.lan node10"),
            "the /etc/hosts diff: {out}"
        );
        assert!(
            out.contains("+Hello to node03 (worker) of the pyme cluster."),
            "{out}"
        );
        assert!(
            out.contains("+credentials file /etc/provision/credentials/lab-projects: present"),
            "the credentials file: {out}"
        );
        assert!(!out.contains(SECRET) && !err.contains(SECRET));
        for i in 1..=NODES {
            assert_eq!(
                recap(&out, &format!("node{i:02}")),
                Some((1, 1, 0)),
                "node{i:02} would change: {out}"
            );
        }
        let after: Vec<_> = nodes.iter().map(written).collect();
        for (n, (b, a)) in nodes.iter().zip(before.iter().zip(&after)) {
            assert_eq!(b, a, "check mode wrote on {}", n.name);
            assert!(!n.upper().join("var/lib/provision").exists());
        }

        // One node with a broken file: /etc/PYME is a file there, so its PYME config cannot be
        // written. That node fails alone; the others converge; every host gets the binary.
        nodes[4].write("/etc/PYME", "not a folder\n", 0o644);
        let run = ctl.playbook(&lan, &[]);
        run.expect(2);
        assert_eq!(run.results.len(), NODES, "{:#?}", run.results);
        for (host, r) in &run.results {
            assert_eq!(r["binary_copied"], true, "{host}: {r}");
            let copied = r["files_copied"].as_array().unwrap().len();
            assert_eq!(
                copied, 5,
                "manifest, nodes, motd, password, source: {host}: {r}"
            );
            if host == "node05" {
                let msg = r["msg"].as_str().unwrap();
                assert!(
                    msg.contains("file:/etc/PYME/config.yaml failed"),
                    "the failure is named: {msg}"
                );
                assert_eq!(r["summary"]["failed"], 1, "{r}");
                assert_eq!(run.recap(host, "failed"), Some(1), "{}", run.out);
            } else {
                assert_eq!(r["changed"], true, "{host}: {r}");
                assert_eq!(r["summary"]["failed"], 0, "{host}: {r}");
                assert_eq!(run.recap(host, "failed"), Some(0), "{}", run.out);
                assert_eq!(run.recap(host, "changed"), Some(1), "{}", run.out);
            }
            assert!(!r.to_string().contains(SECRET), "{host}: {r}");
        }
        // What a converged node holds: its hosts block, its config, the credentials (0600), the
        // launcher copied from outside the manifest's folder, the binary and the manifest.
        let n2 = &nodes[1];
        assert!(
            n2.read("/etc/hosts")
                .contains("10.79.0.13\tnode03.cluster.lan node03")
        );
        assert!(
            n2.read("/etc/PYME/config.yaml")
                .contains("dataserver-root: \"/data/pyme\"")
        );
        assert!(
            nodes[2]
                .read("/etc/PYME/config.yaml")
                .contains("nodeserver-num_workers: 8")
        );
        assert!(
            n2.read("/opt/pyme/libexec/pyme-nodeserver.py")
                .contains("PYMERuleNodeServer")
        );
        assert_eq!(
            n2.read("/etc/motd"),
            "Welcome to node02 (worker) of the pyme cluster.\n"
        );
        assert!(nodes[0].read("/etc/motd").contains("PYME rule server"));
        let creds = n2.upper().join("etc/provision/credentials/lab-projects");
        assert_eq!(std::fs::metadata(&creds).unwrap().mode() & 0o777, 0o600);
        assert!(std::fs::read_to_string(&creds).unwrap().contains(SECRET));
        assert!(
            n2.read("/etc/fstab")
                .contains("//fileserver.lab.example/projects/microscopy")
        );
        let remote = n2.upper().join("var/lib/provision/ansible");
        assert_eq!(std::fs::metadata(&remote).unwrap().mode() & 0o777, 0o700);
        let copied_secret = remote.join("manifest/tests/fixtures/ansible/fleet/secrets/lab-share");
        assert_eq!(
            std::fs::metadata(&copied_secret).unwrap().mode() & 0o777,
            0o600
        );
        assert!(
            remote
                .join("manifest/manifests/pyme/nodeserver.py")
                .is_file()
        );
        assert_eq!(
            std::fs::read(remote.join("bin/provision")).unwrap(),
            std::fs::read(&ctl.binary).unwrap()
        );
        // The broken node wrote nothing of what failed.
        assert_eq!(nodes[4].read("/etc/PYME"), "not a folder\n");

        // Repaired, the next run changes that node alone, and copies nothing anywhere.
        nodes[4].sh("rm /etc/PYME", Duration::from_secs(30));
        let run = ctl.playbook(&lan, &[]);
        run.expect(0);
        assert_eq!(run.results.len(), NODES);
        for (host, r) in &run.results {
            assert_eq!(r["binary_copied"], false, "{host}: {r}");
            assert_eq!(r["files_copied"], serde_json::json!([]), "{host}: {r}");
            assert_eq!(r["changed"], host == "node05", "{host}: {r}");
        }
        assert!(
            nodes[4]
                .read("/etc/PYME/config.yaml")
                .contains("dataserver-root")
        );

        // The run after: changed=0 on every host, and still nothing copied.
        let run = ctl.playbook(&lan, &[]);
        run.expect(0);
        assert_eq!(run.results.len(), NODES);
        for (host, r) in &run.results {
            assert_eq!(r["changed"], false, "{host}: {r}");
            assert_eq!(r["binary_copied"], false, "{host}: {r}");
            assert_eq!(r["summary"]["changed"], 0, "{host}: {r}");
            assert_eq!(r["exit_code"], 0, "{host}: {r}");
            assert_eq!(run.recap(host, "ok"), Some(1), "{}", run.out);
            assert_eq!(run.recap(host, "changed"), Some(0), "{}", run.out);
        }
        // The host keeps its binary's SHA-1 beside it, so a no-op run does not read the binary.
        let bin = "/var/lib/provision/ansible/bin/provision";
        let record: serde_json::Value =
            serde_json::from_str(&nodes[2].read(&format!("{bin}.sha1"))).unwrap();
        let ours = nodes[2].sh(&format!("sha1sum {bin}"), Duration::from_secs(60));
        assert_eq!(
            record["sha1"].as_str(),
            ours.split_whitespace().next(),
            "{record}"
        );
        // A binary changed on the host in place, its size and mtime (to the nanosecond) put back:
        // the ctime still differs from the record's, so the binary is read again, found to differ
        // and copied again, on that host alone.
        nodes[2].sh(
            &format!(
                "touch -r {bin} /tmp/was && printf X | dd of={bin} bs=1 seek=4096 conv=notrunc status=none && touch -r /tmp/was {bin}"
            ),
            Duration::from_secs(30),
        );
        let run = ctl.playbook(&lan, &[]);
        run.expect(0);
        for (host, r) in &run.results {
            assert_eq!(r["binary_copied"], host == "node03", "{host}: {r}");
            assert_eq!(r["files_copied"], serde_json::json!([]), "{host}: {r}");
            assert_eq!(r["summary"]["changed"], 0, "{host}: {r}");
        }
        assert_eq!(
            std::fs::read(nodes[2].upper().join(&bin[1..])).unwrap(),
            std::fs::read(&ctl.binary).unwrap()
        );

        // Drift in a secret: the check run on that node says the credentials would change,
        // redacted, and neither the old content nor the password shows; nothing is written.
        // The apply after repairs it and reports no secret either.
        let creds7 = "/etc/provision/credentials/lab-projects";
        nodes[6].write(creds7, "username=alice\npassword=Drifted-Old-Pass\n", 0o600);
        let drifted = written(&nodes[6]);
        let (code, out, err) = check(&["--limit", "node07"]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains(&format!("+{creds7}: changed (<redacted>)")),
            "the redacted credentials change: {out}"
        );
        for secret in [SECRET, "Drifted-Old-Pass"] {
            assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
        }
        assert_eq!(recap(&out, "node07"), Some((1, 1, 0)), "{out}");
        assert_eq!(written(&nodes[6]), drifted, "check mode wrote on node07");
        let run = ctl.playbook(&lan, &["--limit", "node07", "--diff"]);
        run.expect(0);
        let r = &run.results["node07"];
        assert_eq!(r["changed"], true, "{r}");
        let shown = format!("{r}{}{}", run.out, run.err);
        assert!(
            !shown.contains(SECRET) && !shown.contains("Drifted"),
            "{shown}"
        );
        assert!(nodes[6].read(creds7).contains(SECRET));

        // A manifest error: every host fails with file:line:column, before any is touched.
        let converged: Vec<_> = nodes.iter().map(written).collect();
        let bad = ctl.tmp.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "nodes:\n  - {name: node01, address: 10.79.0.11}\nresources:\n  - file: {path: etc/motd, content: x}\n",
        )
        .unwrap();
        let args = format!("manifest={} binary={}", bad.display(), ctl.binary.display());
        let adhoc = |hosts: &str, args: &str| {
            ctl.results(
                &lan,
                "ansible",
                &[
                    "-i",
                    manifest,
                    hosts,
                    "-m",
                    "provision.fleet.provision",
                    "-a",
                    args,
                ],
            )
        };
        let run = adhoc("all", &args);
        run.expect(2);
        assert_eq!(run.results.len(), NODES);
        let bad_at = format!("{}:4:", bad.display());
        for (host, r) in &run.results {
            let msg = r["msg"].as_str().unwrap_or_default();
            assert!(
                msg.contains(&bad_at) && msg.contains("is not an absolute path"),
                "{host}: {msg}"
            );
            assert!(msg.contains("nothing was touched"), "{msg}");
        }
        // A node the manifest does not know.
        let args = format!(
            "manifest={manifest} binary={} node=nosuch",
            ctl.binary.display()
        );
        let run = adhoc("node02", &args);
        run.expect(2);
        let r = &run.results["node02"];
        let msg = r["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("node 'nosuch' is not in") && msg.contains("node01, node02"),
            "{r}"
        );
        let converged_after: Vec<_> = nodes.iter().map(written).collect();
        assert_eq!(converged, converged_after, "the failed runs wrote nothing");

        // A host nobody answers for (an address on the test's own LAN): unreachable.
        let ghosts = ctl.tmp.path().join("ghosts.ini");
        std::fs::write(
            &ghosts,
            "ghost ansible_host=10.79.0.99 provision_node=node01\n",
        )
        .unwrap();
        let args = format!("manifest={manifest} binary={}", ctl.binary.display());
        let run = ctl.results(
            &lan,
            "ansible",
            &[
                "-i",
                ghosts.to_str().unwrap(),
                "ghost",
                "-m",
                "provision.fleet.provision",
                "-a",
                &args,
            ],
        );
        run.expect(4);
        let r = &run.results["ghost"];
        assert_eq!(r["unreachable"], true, "{r}");
        assert!(
            r["msg"].as_str().unwrap_or_default().contains("10.79.0.99"),
            "{r}"
        );
    }
    for ns in &namespaces {
        assert_eq!(in_mnt_ns(ns), Vec::<u32>::new(), "a process is left");
    }
    assert_eq!(
        std::fs::read_dir("/sys/class/net").unwrap().count(),
        host_ifaces,
        "an interface is left"
    );
}

// ------------------------------------------------------------------------------------------------
// The benchmark (bench/ansible.sh; ignored by `cargo test`): the fleet manifest's work over N
// simulated nodes, first run and no-op run, once with the provision collection and once written
// with Ansible's own modules (bench/ansible/native.yml), each on a fresh fleet.

/// The sum of VmRSS (KiB) of `pids`.
fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .sum()
}

/// Runs `f`, sampling every 50 ms the resident memory of everything on the LAN (the controller:
/// ansible, its forks, ssh): wall time, peak of the sum (KiB), and what `f` gave.
fn measured<T>(lan: &Lan, f: impl FnOnce() -> T) -> (Duration, u64, T) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let started = std::time::Instant::now();
    let (peak, out) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(&lan.inside()));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        let out = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (sampler.join().unwrap(), out)
    });
    (started.elapsed(), peak, out)
}

/// The fleet fixture for `n` nodes in `dir`, laid out as in the repository (the launcher's
/// `source:` reaches `manifests/pyme/` by a relative path): the top manifest's path.
fn fleet_tree(dir: &Path, n: usize) -> PathBuf {
    let fleet = dir.join("tests/fixtures/ansible/fleet");
    std::fs::create_dir_all(fleet.join("secrets")).unwrap();
    std::fs::create_dir_all(dir.join("manifests/pyme")).unwrap();
    for f in ["cluster.yaml", "motd.tera", "secrets/lab-share"] {
        std::fs::copy(fixtures().join("fleet").join(f), fleet.join(f)).unwrap();
    }
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pyme/nodeserver.py"),
        dir.join("manifests/pyme/nodeserver.py"),
    )
    .unwrap();
    let mut nodes = String::from("nodes:\n");
    for i in 1..=n {
        let roles = if i == 1 {
            "[master, worker]"
        } else {
            "[worker]"
        };
        nodes.push_str(&format!(
            "  - {{name: node{i:03}, address: {}, roles: {roles}}}\n",
            bench_address(i)
        ));
    }
    std::fs::write(fleet.join("nodes.yaml"), nodes).unwrap();
    fleet.join("cluster.yaml")
}

fn bench_address(i: usize) -> String {
    format!("10.80.{}.{}", i / 200, 10 + i % 200)
}

/// A fresh fleet of `n` nodes on a LAN, with sshd, for `ctl`.
fn fleet(ctl: &Controller, n: usize) -> (Lan, Vec<Node>) {
    let mut lan = Lan::new("10.80.3.1", 16);
    let key = ctl.public_key();
    let mut nodes = Vec::new();
    let mut known = String::new();
    for i in 1..=n {
        let mut node = Node::new(&format!("node{i:03}"), &bench_address(i));
        lan.attach(&node);
        known.push_str(&node.start_sshd(&key));
        nodes.push(node);
    }
    std::fs::write(ctl.tmp.path().join("known_hosts"), known).unwrap();
    (lan, nodes)
}

/// Every host of a run ok, and `changed` (Some: exactly 1 or 0 changed tasks; None: any).
#[track_caller]
fn all_ok(out: &str, n: usize, changed: Option<bool>) {
    for i in 1..=n {
        let host = format!("node{i:03}");
        assert_eq!(recap_count(out, &host, "failed"), Some(0), "{host}: {out}");
        assert_eq!(
            recap_count(out, &host, "unreachable"),
            Some(0),
            "{host}: {out}"
        );
        match changed {
            Some(true) => assert!(
                recap_count(out, &host, "changed") > Some(0),
                "{host}: {out}"
            ),
            Some(false) => assert_eq!(recap_count(out, &host, "changed"), Some(0), "{host}: {out}"),
            None => {}
        }
    }
}

#[test]
#[ignore = "a benchmark: bash bench/ansible.sh"]
fn bench_provision_collection_against_native_modules() {
    if let Some(why) = common::netns::unavailable(&["sshd", "ssh", "ssh-keygen", "strip"]) {
        eprintln!("SKIP ansible bench: {why}");
        return;
    }
    let sizes: Vec<usize> = std::env::var("ANSIBLE_BENCH_NODES")
        .unwrap_or_else(|_| "10".into())
        .split(',')
        .map(|n| n.trim().parse().expect("ANSIBLE_BENCH_NODES: numbers"))
        .collect();
    let forks: usize = std::env::var("ANSIBLE_BENCH_FORKS")
        .map(|f| f.parse().expect("ANSIBLE_BENCH_FORKS: a number"))
        .unwrap_or(10);
    let binary = std::env::var_os("PROVISION_BENCH_BINARY").map(PathBuf::from);
    // ANSIBLE_BENCH_ONLY=provision (or native): one side only, to measure a change to one.
    let only = std::env::var("ANSIBLE_BENCH_ONLY").ok();
    println!(
        "ansible bench: binary {}, forks {forks}, pipelining on",
        binary
            .as_deref()
            .map_or("the test's (debug, stripped)".into(), |b| b
                .display()
                .to_string())
    );
    let limit = Duration::from_secs(30 * 60);
    let native = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/ansible/native.yml");
    let site = fixtures().join("site.yml");
    for n in sizes {
        let ctl = Controller::with(forks, binary.clone(), limit);
        let manifest = fleet_tree(&ctl.tmp.path().join("tree"), n);
        let manifest = manifest.to_str().unwrap().to_owned();
        let bin = format!("provision_binary={}", ctl.binary.display());
        let fleet_dir = format!(
            "fleet_dir={} launcher={}",
            Path::new(&manifest).parent().unwrap().display(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("manifests/pyme/nodeserver.py")
                .display()
        );
        let mut row = Vec::new();
        for (what, playbook, extra) in [
            ("provision", site.to_str().unwrap(), bin.as_str()),
            ("native", native.to_str().unwrap(), fleet_dir.as_str()),
        ] {
            if only.as_deref().is_some_and(|o| o != what) {
                continue;
            }
            let t = std::time::Instant::now();
            let (lan, nodes) = fleet(&ctl, n);
            let setup = t.elapsed();
            let args = ["-i", manifest.as_str(), playbook, "-e", extra];
            let (first, first_peak, (code, out, err)) =
                measured(&lan, || ctl.run(&lan, "ansible-playbook", &args));
            assert_eq!(code, 0, "{what} first run over {n}:\n{out}\n{err}");
            all_ok(&out, n, Some(true));
            let (noop, noop_peak, (code, out, err)) =
                measured(&lan, || ctl.run(&lan, "ansible-playbook", &args));
            assert_eq!(code, 0, "{what} no-op run over {n}:\n{out}\n{err}");
            all_ok(&out, n, Some(false));
            println!(
                "ansible bench: {n} nodes, {what}: first run {:.1} s (controller peak {} MiB), no-op run {:.1} s (peak {} MiB); fleet setup {:.1} s",
                first.as_secs_f64(),
                first_peak / 1024,
                noop.as_secs_f64(),
                noop_peak / 1024,
                setup.as_secs_f64()
            );
            row.push((first, noop));
            drop(nodes);
            drop(lan);
        }
        if row.len() < 2 {
            let (first, noop) = row[0];
            println!(
                "ansible bench: {n} nodes: per host, first run {:.0} ms, no-op run {:.0} ms",
                first.as_secs_f64() * 1000.0 / n as f64,
                noop.as_secs_f64() * 1000.0 / n as f64
            );
            continue;
        }
        println!(
            "ansible bench: {n} nodes: no-op run native/provision {:.1}x, first run {:.1}x; provision no-op per host {:.0} ms, native {:.0} ms",
            row[1].1.as_secs_f64() / row[0].1.as_secs_f64(),
            row[1].0.as_secs_f64() / row[0].0.as_secs_f64(),
            row[0].1.as_secs_f64() * 1000.0 / n as f64,
            row[1].1.as_secs_f64() * 1000.0 / n as f64
        );
    }
}
