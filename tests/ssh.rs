//! The SSH kinds through the real binary on temporary roots: `ssh_key`, `authorized_keys` and
//! `known_hosts`. Each is planned (check mode writes nothing: the whole root is hashed), applied,
//! applied again (no change), and checked with OpenSSH's own tools: `ssh-keygen -y` derives the
//! public key from the private key provision made, and a real `sshd` (started by the test in a
//! private mount namespace, on 127.0.0.1 and a free port, with a host key of its own) is
//! scanned by `ssh-keyscan` and then connected to by `ssh` with `StrictHostKeyChecking=yes` and
//! the `known_hosts` provision wrote: the host key is accepted (the login itself is then refused,
//! as no key is offered), and a wrong pinned key is refused.
//!
//! A login with the key pair through `authorized_keys` needs the user on the machine sshd runs
//! on, so it is in tests/ipyparallel.rs, where every node has its own root and sshd.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, run};

const NODES: &str = "nodes:\n  - name: cl-0\n    address: 10.0.1.10\n    roles: [controller]\n  - name: cl-1\n    address: 10.0.1.11\n    roles: [engine]\n";

fn mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// plan writes nothing, apply changes, a second apply and plan change nothing: the first apply's
/// whole output (human, and --json --diff) for leak checks.
#[track_caller]
fn cycle(s: &Sandbox, m: &Path, node: &str) -> (String, String) {
    let m = m.to_str().unwrap();
    let before = s.snapshot();
    let plan = s.run(&["plan", m, "--node", node, "--detailed-exitcodes"]);
    plan.expect(2);
    assert_eq!(
        s.snapshot(),
        before,
        "plan wrote something:\n{}",
        plan.stdout
    );
    let first = s.run(&["apply", m, "--node", node, "--json", "--diff"]);
    first.expect(0);
    let report = first.json();
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    let second = s.run(&["apply", m, "--node", node, "--detailed-exitcodes"]);
    second.expect(0);
    let settled = s.snapshot();
    s.run(&["plan", m, "--node", node, "--detailed-exitcodes"])
        .expect(0);
    assert_eq!(s.snapshot(), settled);
    (
        format!("{}{}{}", plan.stdout, plan.stderr, first.stderr),
        first.stdout,
    )
}

#[test]
fn ssh_key_is_made_once_private_and_never_shown() {
    if !common::have_root("ssh_key_is_made_once_private_and_never_shown") {
        return;
    }
    let s = Sandbox::debian();
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}resources:\n  - user: {{name: ipp, uid: 2000, home: /home/ipp}}\n  - ssh_key: {{path: /home/ipp/.ssh/id_ed25519, owner: ipp}}\n"
        ),
    );
    let (human, json) = cycle(&s, &m, "cl-0");
    let private = s.path("/home/ipp/.ssh/id_ed25519");
    let public = s.path("/home/ipp/.ssh/id_ed25519.pub");
    assert_eq!(mode(&private), (0o600, 2000, 2000));
    assert_eq!(mode(&public), (0o644, 2000, 2000));
    assert_eq!(mode(&s.path("/home/ipp/.ssh")), (0o700, 2000, 2000));
    let key = std::fs::read_to_string(&private).unwrap();
    assert!(
        key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "an OpenSSH key"
    );
    // OpenSSH reads it (and would refuse a key others can read) and derives the same public key.
    let derived = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&private)
        .output()
        .unwrap();
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    let pub_text = std::fs::read_to_string(&public).unwrap();
    let two = |t: &str| t.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(
        two(&String::from_utf8_lossy(&derived.stdout)),
        two(&pub_text)
    );
    assert!(
        pub_text.starts_with("ssh-ed25519 ") && pub_text.trim_end().ends_with(" ipp@cl-0"),
        "{pub_text}"
    );
    // Nothing of the private key in any output, and no backup of it anywhere.
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for chunk in body
        .as_bytes()
        .chunks(16)
        .map(|c| String::from_utf8_lossy(c).into_owned())
    {
        assert!(
            !human.contains(&chunk) && !json.contains(&chunk),
            "private key text in the output"
        );
    }
    assert!(!json.contains("PRIVATE KEY") && !human.contains("PRIVATE KEY"));
    assert!(
        !s.path("/var/lib/provision/backups/home").exists(),
        "a backup of the key"
    );

    // Drift: a mode others can read is put back; a lost .pub is written again from the private
    // key; the private key itself is never replaced.
    std::fs::set_permissions(
        &private,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::remove_file(&public).unwrap();
    let fix = s.run(&["apply", m.to_str().unwrap(), "--node", "cl-0"]);
    fix.expect(0);
    assert!(fix.stdout.contains("mode 0644 → 0600"), "{}", fix.stdout);
    assert!(
        fix.stdout
            .contains("create public key /home/ipp/.ssh/id_ed25519.pub"),
        "{}",
        fix.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&private).unwrap(),
        key,
        "the key was replaced"
    );
    assert_eq!(
        two(&std::fs::read_to_string(&public).unwrap()),
        two(&pub_text)
    );
    assert_eq!(mode(&private), (0o600, 2000, 2000));
}

#[test]
fn an_existing_key_is_adopted_and_an_unreadable_one_without_pub_fails_untouched() {
    let s = Sandbox::debian();
    let dir = s.path("/root/.ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "made-by-hand", "-f"])
        .arg(dir.join("id_ed25519"))
        .status()
        .unwrap();
    assert!(made.success());
    let key = std::fs::read(dir.join("id_ed25519")).unwrap();
    let public = std::fs::read(dir.join("id_ed25519.pub")).unwrap();
    std::fs::write(
        dir.join("old_key"),
        "-----BEGIN RSA PRIVATE KEY-----\nnot really\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("old_key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let m = s.manifest(
        "m.yaml",
        &format!("{NODES}resources:\n  - ssh_key: {{path: /root/.ssh/id_ed25519}}\n  - ssh_key: {{path: /root/.ssh/old_key}}\n"),
    );
    let before = s.snapshot();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "cl-0", "--json"]);
    out.expect(4);
    let report = out.json();
    let by_id = |id: &str| {
        report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        by_id("ssh_key:/root/.ssh/id_ed25519")["status"],
        "unchanged",
        "{report:#}"
    );
    let old = by_id("ssh_key:/root/.ssh/old_key");
    assert_eq!(old["status"], "failed");
    let e = old["error"].as_str().unwrap();
    assert!(
        e.contains("never replaces an existing key")
            && e.contains("ssh-keygen -y -f /root/.ssh/old_key"),
        "{e}"
    );
    assert!(
        !e.contains("not really"),
        "the key's content in the error: {e}"
    );
    // Nothing changed but the apply lock (provision's own state folder).
    let mut after = s.snapshot();
    after.retain(|p, _| !p.starts_with("var"));
    assert_eq!(after, before, "nothing changed");
    assert_eq!(std::fs::read(dir.join("id_ed25519")).unwrap(), key);
    assert_eq!(std::fs::read(dir.join("id_ed25519.pub")).unwrap(), public);
}

const HAND: &str = "# keys I added myself\r\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8wB2kdAXecP2En+FFhynp8Kw763NKChhw7o++oloSV me@laptop\n\nno-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAc7noc+JcCSrBNcVIGbuNorJ4kw8XROLaOvqoVqkanS backup";
const EXTRA: &str = "from=\"10.0.1.0/24\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAc7noc+JcCSrBNcVIGbuNorJ4kw8XROLaOvqoVqkanS admin@cl-0";

#[test]
fn authorized_keys_keeps_every_hand_written_byte_and_takes_the_new_key() {
    if !common::have_root("authorized_keys_keeps_every_hand_written_byte_and_takes_the_new_key") {
        return;
    }
    let s = Sandbox::debian();
    s.write("/home/ipp/.ssh/authorized_keys", HAND);
    // The key comes after the authorized_keys in the manifest: the key file orders them.
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}resources:\n  - user: {{name: ipp, uid: 2000, home: /home/ipp}}\n  - authorized_keys:\n      path: /home/ipp/.ssh/authorized_keys\n      owner: ipp\n      key_files: [/home/ipp/.ssh/id_ed25519.pub]\n      keys: ['{EXTRA}']\n  - ssh_key: {{path: /home/ipp/.ssh/id_ed25519, owner: ipp}}\n"
        ),
    );
    let (_, json) = cycle(&s, &m, "cl-0");
    assert!(
        json.contains("+from=\\\"10.0.1.0/24\\\""),
        "the diff shows the block: {json}"
    );
    let text = s.read("/home/ipp/.ssh/authorized_keys");
    let pub_line = s.read("/home/ipp/.ssh/id_ed25519.pub");
    assert_eq!(
        text,
        format!(
            "{HAND}\n# BEGIN provision managed block: authorized keys (edits inside are overwritten)\n{}\n{EXTRA}\n# END provision managed block\n",
            pub_line.trim_end()
        )
    );
    assert_eq!(
        mode(&s.path("/home/ipp/.ssh/authorized_keys")),
        (0o600, 2000, 2000)
    );
    // A backup of the hand-written file was kept.
    let backups = s.path("/var/lib/provision/backups/home/ipp/.ssh");
    let kept: Vec<_> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), HAND);

    // A key dropped from the manifest leaves the block; a line edited by hand inside the block
    // is put back; the lines around it stay.
    let edited = text.replace(EXTRA, "ssh-ed25519 AAAA tampered");
    s.write(
        "/home/ipp/.ssh/authorized_keys",
        &format!("{edited}# after\n"),
    );
    let m2 = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}resources:\n  - user: {{name: ipp, uid: 2000, home: /home/ipp}}\n  - authorized_keys:\n      path: /home/ipp/.ssh/authorized_keys\n      owner: ipp\n      key_files: [/home/ipp/.ssh/id_ed25519.pub]\n  - ssh_key: {{path: /home/ipp/.ssh/id_ed25519, owner: ipp}}\n"
        ),
    );
    s.run(&["apply", m2.to_str().unwrap(), "--node", "cl-0"])
        .expect(0);
    assert_eq!(
        s.read("/home/ipp/.ssh/authorized_keys"),
        format!(
            "{HAND}\n# BEGIN provision managed block: authorized keys (edits inside are overwritten)\n{}\n# END provision managed block\n# after\n",
            pub_line.trim_end()
        )
    );
}

#[test]
fn authorized_keys_in_check_mode_waits_for_a_key_file_that_apply_would_make() {
    let s = Sandbox::debian();
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}resources:\n  - ssh_key: {{path: /root/.ssh/id_ed25519}}\n  - authorized_keys: {{path: /root/.ssh/authorized_keys, key_files: [/root/.ssh/id_ed25519.pub]}}\n"
        ),
    );
    let before = s.snapshot();
    let plan = s.run(&["plan", m.to_str().unwrap(), "--node", "cl-0", "--json"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("does not exist yet"),
        "{}",
        plan.stdout
    );
    assert_eq!(s.snapshot(), before);
    // Without the ssh_key, a missing key file fails the apply and writes nothing.
    let alone = s.manifest(
        "alone.yaml",
        &format!(
            "{NODES}resources:\n  - authorized_keys: {{path: /root/.ssh/authorized_keys, key_files: [/srv/none.pub]}}\n"
        ),
    );
    let out = s.run(&["apply", alone.to_str().unwrap(), "--node", "cl-0"]);
    out.expect(4);
    assert!(
        out.stdout.contains("key file /srv/none.pub does not exist"),
        "{}",
        out.stdout
    );
    assert!(!s.path("/root/.ssh").exists());
}

/// A real sshd on 127.0.0.1:`port` in a private mount namespace (its own /run), with a fresh
/// host key in `dir`; killed on drop.
struct Sshd {
    child: Child,
    _ns: common::Namespace,
    host_key: String,
}

impl Sshd {
    fn start(test: &str, dir: &Path, port: u16) -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            eprintln!(
                "SKIP {test}: no /usr/sbin/sshd (apt-get install openssh-server; .ci/run does)"
            );
            return None;
        }
        let ns = common::Namespace::new(test)?;
        let key = dir.join("host_ed25519");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(ok.success());
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile none\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                key.display()
            ),
        )
        .unwrap();
        // sshd wants its privilege separation folder: a tmpfs /run of the namespace's own.
        ns.sh("mount -t tmpfs tmpfs /run && mkdir -m 0755 /run/sshd");
        let child = Command::new("nsenter")
            .args([
                "-t",
                &ns.pid().to_string(),
                "-m",
                "--",
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        Some(Sshd {
            child,
            _ns: ns,
            host_key: public
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ssh` to 127.0.0.1:`port` trusting only `known_hosts` (and offering no key): its stderr.
fn ssh_with(known_hosts: &Path, host: &str, port: u16) -> String {
    let out = Command::new("ssh")
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentityFile=none",
        ])
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "ConnectTimeout=10",
            "-p",
        ])
        .arg(port.to_string())
        .arg(format!("nobody@{host}"))
        .arg("true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn known_hosts_scanned_once_is_trusted_by_ssh_and_a_wrong_pinned_key_is_refused() {
    let test = "known_hosts_scanned_once_is_trusted_by_ssh_and_a_wrong_pinned_key_is_refused";
    let s = Sandbox::debian();
    let port = free_port();
    let Some(sshd) = Sshd::start(test, s.tmp.path(), port) else {
        return;
    };
    s.write(
        "/root/.ssh/known_hosts",
        "|1|hashed= ssh-ed25519 AAAA-left-alone\n",
    );
    let manifest = |extra: &str| {
        format!(
            "cluster: {{domain: cluster.lan}}\nnodes:\n  - {{name: cl-0, address: 10.0.1.10, roles: [controller]}}\n  - {{name: local, address: 127.0.0.1, roles: [engine], aliases: [engine-a]}}\nresources:\n  - known_hosts:\n      path: /root/.ssh/known_hosts\n      host_roles: [engine]\n      port: {port}\n{extra}"
        )
    };
    let m = s.manifest("m.yaml", &manifest("      scan: true\n"));
    cycle(&s, &m, "cl-0");
    let file = s.path("/root/.ssh/known_hosts");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("|1|hashed= ssh-ed25519 AAAA-left-alone\n# BEGIN provision managed block: cluster host keys"), "{text}");
    let names =
        format!("[local]:{port},[local.cluster.lan]:{port},[engine-a]:{port},[127.0.0.1]:{port}");
    assert!(
        text.contains(&format!("\n{names} {}\n", sshd.host_key)),
        "the scanned ed25519 key:\n{text}"
    );
    assert!(
        !text.contains("10.0.1.10"),
        "the controller is not listed: {text}"
    );
    assert_eq!(mode(&file).0, 0o644);
    // OpenSSH accepts the host by address and by name: the login is refused after the host key
    // check, not at it.
    let said = ssh_with(&file, "127.0.0.1", port);
    assert!(
        said.contains("Permission denied") && !said.contains("Host key verification failed"),
        "{said}"
    );

    // Scanned once: with sshd gone, the block is kept as it is and nothing is scanned.
    drop(sshd);
    s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "cl-0",
        "--detailed-exitcodes",
    ])
    .expect(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // A pinned key replaces what was scanned; ssh then refuses the real host.
    let dir2 = s.tmp.path().join("other");
    std::fs::create_dir_all(&dir2).unwrap();
    let Some(sshd2) = Sshd::start(test, &dir2, port) else {
        return;
    };
    let wrong = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8wB2kdAXecP2En+FFhynp8Kw763NKChhw7o++oloSV";
    let m = s.manifest(
        "m.yaml",
        &manifest(&format!("      keys:\n        local: ['{wrong}']\n")),
    );
    s.run(&["apply", m.to_str().unwrap(), "--node", "cl-0"])
        .expect(0);
    let said = ssh_with(&file, "127.0.0.1", port);
    assert!(
        said.contains("Host key verification failed")
            || said.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{said}"
    );
    assert_ne!(sshd2.host_key, wrong);

    // A node that does not answer fails the resource and writes nothing.
    drop(sshd2);
    let m = s.manifest("m.yaml", &manifest("      scan: true\n"));
    std::fs::write(&file, "").unwrap();
    let before = s.snapshot();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "cl-0"]);
    out.expect(4);
    assert!(
        out.stdout
            .contains("ssh-keyscan read no host key from local (127.0.0.1:"),
        "{}",
        out.stdout
    );
    assert_eq!(s.snapshot(), before);
}

#[test]
fn the_schema_knows_the_ssh_kinds() {
    let out = run(&["schema"]);
    out.expect(0);
    for kind in [
        "ssh_key",
        "authorized_keys",
        "known_hosts",
        "host_roles",
        "key_files",
        "cores",
    ] {
        assert!(
            out.stdout.contains(&format!("\"{kind}\"")),
            "{kind} not in the schema"
        );
    }
}
