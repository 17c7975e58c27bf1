//! Shared helpers for the integration tests: a sandbox root with realistic account and hosts
//! files, a runner for the real binary with a hard time limit, and a snapshot of a whole root so a
//! test can prove that nothing changed.
#![allow(dead_code)]

pub mod netns;
pub mod tls;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Every run of the binary is killed after this long; no test can hang CI.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);

pub const DEBIAN_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
pub const DEBIAN_GROUP: &str =
    "root:x:0:\ndaemon:x:1:\nbin:x:2:\nadm:x:4:\nvideo:x:44:\nrender:x:105:\nnogroup:x:65534:\n";
pub const DEBIAN_SHADOW: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
pub const DEBIAN_GSHADOW: &str =
    "root:*::\ndaemon:*::\nbin:*::\nadm:*::\nvideo:*::\nrender:*::\nnogroup:*::\n";
/// Debian 12's default /etc/hosts on a machine installed without a permanent address.
pub const DEBIAN_HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tmaster.example.org\tmaster\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";

/// A temporary folder with `root/` (the `--root`) and `work/` (manifests, templates).
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
}

impl Sandbox {
    /// An empty root.
    pub fn empty() -> Sandbox {
        let tmp = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        std::fs::create_dir_all(tmp.path().join("work")).unwrap();
        Sandbox { tmp }
    }

    /// A root with Debian's default account files and /etc/hosts.
    pub fn debian() -> Sandbox {
        let s = Sandbox::empty();
        s.write("/etc/passwd", DEBIAN_PASSWD);
        s.write("/etc/group", DEBIAN_GROUP);
        s.write("/etc/shadow", DEBIAN_SHADOW);
        s.write("/etc/gshadow", DEBIAN_GSHADOW);
        s.write("/etc/hosts", DEBIAN_HOSTS);
        s
    }

    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    pub fn work(&self) -> PathBuf {
        self.tmp.path().join("work")
    }

    /// The real path of node path `p`.
    pub fn path(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    /// Writes node path `p` (creating parents).
    pub fn write(&self, p: &str, content: &str) {
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[track_caller]
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("read {p}: {e}"))
    }

    /// Writes `work/<name>` and returns its path.
    pub fn manifest(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every entry under the root: type, mode, owner, and content hash (or link target).
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        snapshot(&self.root())
    }

    /// Runs `provision ARGS... --root <root>` inside the private mount namespace `ns`.
    pub fn run_in(&self, ns: &Namespace, args: &[&str], env: &[(&str, &str)]) -> Run {
        let root = self.root().to_str().unwrap().to_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--root", &root]);
        ns.run(&all, env)
    }

    /// Runs `provision ARGS... --root <root>` for commands that take a root.
    pub fn run(&self, args: &[&str]) -> Run {
        let root = self.root();
        let mut all: Vec<&str> = args.to_vec();
        let root = root.to_str().unwrap().to_owned();
        all.push("--root");
        all.push(&root);
        run(&all)
    }
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot_except(root, |_| false)
}

/// [`snapshot`] without the entries (and what is below them) whose path relative to `root`
/// `skip` picks. Special files (an overlay's whiteouts) show as their mode and device.
pub fn snapshot_except(root: &Path, skip: impl Fn(&Path) -> bool) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if skip(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_file() {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("file {hex}")
            } else {
                format!("special {:o} rdev {}", meta.mode(), meta.rdev())
            };
            out.insert(
                rel,
                format!(
                    "{what} mode={:o} uid={} gid={}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
            );
        }
    }
    out
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The `--json` report.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// Runs the real binary with `args`, colour off, killed after [`TIME_LIMIT`].
pub fn run(args: &[&str]) -> Run {
    run_with_env(args, &[])
}

pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_command(Command::new(env!("CARGO_BIN_EXE_provision")), args, env)
}

fn run_command(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Run {
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("PROVISION_NODE")
        .env_remove("PROVISION_ROOT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn provision");
    let pid = child.id();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(out) => break out.expect("wait for provision"),
            Err(_) if started.elapsed() > TIME_LIMIT => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                panic!("provision {args:?} ran past {TIME_LIMIT:?} and was killed");
            }
            Err(_) => {}
        }
    };
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Whether this process may give files to other users. Tests that create users with homes or
/// set owners call this first and, without root, print why they skip instead of passing silently.
pub fn have_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!(
            "SKIP {test}: needs root to chown files to the users it creates (CI runs as root; \
             run `sudo cargo test` to cover it)"
        );
    }
    root
}

/// A private mount namespace for tests that mount (`unshare -m --propagation private`), held open
/// by a `sleep` so several runs of the binary see the same mount table. Nothing mounted in it is
/// visible outside, and it disappears with the holder: on drop, or after 10 minutes at most if the
/// test process itself is killed.
pub struct Namespace {
    holder: std::process::Child,
}

impl Namespace {
    /// `None`, with a printed reason, where the test cannot make one (not root, or namespaces
    /// forbidden).
    pub fn new(test: &str) -> Option<Namespace> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIP {test}: needs root to mount inside a private mount namespace (CI runs as root; \
                 run `sudo cargo test` to cover it)"
            );
            return None;
        }
        let mut holder = match Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("SKIP {test}: cannot run unshare: {e}");
                return None;
            }
        };
        let mine = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = format!("/proc/{}/ns/mnt", holder.id());
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = holder.try_wait() {
                eprintln!(
                    "SKIP {test}: unshare -m failed ({status}); mount namespaces are not allowed here"
                );
                return None;
            }
            if std::fs::read_link(&theirs).is_ok_and(|ns| ns != mine) {
                return Some(Namespace { holder });
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "unshare did not start"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pid of the process holding the namespace (for `nsenter -t`).
    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The namespace's mount table.
    pub fn mountinfo(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", self.holder.id())).unwrap()
    }

    /// The mountinfo lines whose mount point is `real_target`.
    pub fn mounts_at(&self, real_target: &Path) -> Vec<String> {
        let t = real_target.to_str().unwrap().replace(' ', "\\040");
        self.mountinfo()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(t.as_str()))
            .map(str::to_owned)
            .collect()
    }

    /// Runs the binary in the namespace.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new("nsenter");
        let pid = self.holder.id().to_string();
        cmd.args(["-t", &pid, "-m", "--", env!("CARGO_BIN_EXE_provision")]);
        run_command(cmd, args, env)
    }

    /// Runs a shell command in the namespace (to mount or unmount behind the agent's back).
    #[track_caller]
    pub fn sh(&self, script: &str) {
        let pid = self.holder.id().to_string();
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-m", "--", "sh", "-c", script])
            .status()
            .unwrap();
        assert!(status.success(), "{script}: {status}");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Makes this test process the "child subreaper" of everything it starts: a process orphaned by
/// a killed agent or server comes back to the test instead of to PID 1. A CI runner that is PID 1
/// of its container may take such a stray exit for its own command's, and the test must end what
/// it started anyway. Call [`reap_group`] or [`reap_adopted`] once the orphans are killed.
pub fn adopt_orphans() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// `(pid, state, ppid, pgrp)` of every process, from `/proc/PID/stat`.
fn process_table() -> Vec<(i32, char, i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        Some((pid, state, ppid, pgrp))
    })
    .collect()
}

/// Reaps, for up to 5 s, this process's children that `adopted` picks, until none is left. Only
/// zombies are reaped, so a live child is waited for, never signalled.
fn reap_where(adopted: impl Fn(i32, i32) -> bool) {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children: Vec<(i32, char)> = process_table()
            .into_iter()
            .filter(|&(pid, _, ppid, pgrp)| ppid == me && adopted(pid, pgrp))
            .map(|(pid, state, ..)| (pid, state))
            .collect();
        if children.is_empty() || Instant::now() >= deadline {
            return;
        }
        for (pid, state) in children {
            if state == 'Z' {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reaps the adopted members of process group `pgid` (its leader must be waited for first, by
/// whoever holds its `Child`).
pub fn reap_group(pgid: i32) {
    reap_where(|pid, pgrp| pgrp == pgid && pid != pgid);
}

/// Reaps every adopted child outside this test's own process group. Only for test binaries that
/// start all their direct children in the test's group (the agent under test, `kill`, `unshare`),
/// so that everything outside it was adopted: services of a killed agent and their children.
pub fn reap_adopted() {
    let own = nix::unistd::getpgrp().as_raw();
    reap_where(|_, pgrp| pgrp != own);
}

/// `provision agent` for a sandbox, with its status API on a free loopback port and its log in
/// the sandbox; killed on drop if a test did not stop it.
pub struct RunningAgent {
    child: std::process::Child,
    log: PathBuf,
    addr_file: PathBuf,
}

impl RunningAgent {
    /// `[PREFIX...] provision agent MANIFEST --node NODE --root ROOT`, periodic reconcile 1 h
    /// (so whatever it repairs, drift found it). `prefix` runs it elsewhere, e.g. `nsenter -t
    /// PID -m --`. Adopts orphans, so services of an agent killed here come back to the test.
    pub fn start(sb: &Sandbox, manifest: &Path, node: &str, prefix: &[&str]) -> RunningAgent {
        let root = sb.root();
        let args = [
            "agent",
            manifest.to_str().unwrap(),
            "--node",
            node,
            "--root",
            root.to_str().unwrap(),
            "--reconcile-interval",
            "1h",
        ];
        RunningAgent::start_args(sb, &args, prefix)
    }

    /// `[PREFIX...] provision ARGS...`, the status API on a free loopback port unless ARGS say
    /// `--status-listen`, the log in the sandbox (`agent.log`).
    pub fn start_args(sb: &Sandbox, args: &[&str], prefix: &[&str]) -> RunningAgent {
        adopt_orphans();
        let log = sb.tmp.path().join("agent.log");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_provision"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_provision")),
        };
        let child = cmd
            .args(args)
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start provision agent");
        RunningAgent {
            child,
            log,
            addr_file: sb.path("/var/lib/provision/status.addr"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET PATH` on the status API: the whole answer (status line, headers, body), or `None`
    /// while the agent has not written its address or does not answer.
    pub fn get(&self, path: &str) -> Option<String> {
        use std::io::{Read, Write};
        let addr = std::fs::read_to_string(&self.addr_file).ok()?;
        if !addr.ends_with('\n') {
            return None;
        }
        let mut c = std::net::TcpStream::connect(addr.trim()).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        c.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// The body of `GET PATH` as JSON.
    pub fn json(&self, path: &str) -> Option<serde_json::Value> {
        let answer = self.get(path)?;
        serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()
    }

    /// `/status`, once the first reconcile is done.
    pub fn status(&self) -> Option<serde_json::Value> {
        self.json("/status")
            .filter(|s| s["reconciles_total"].as_u64() >= Some(1))
    }

    /// Drift events of `/status` that name resource `id`.
    pub fn drift_for(&self, id: &str) -> usize {
        self.status().map_or(0, |s| {
            s["drift"]["events"]
                .as_array()
                .map_or(0, |e| e.iter().filter(|d| d["id"] == id).count())
        })
    }

    /// Polls `f` until it holds; fails with the agent's log after `limit`, or if the agent exits.
    #[track_caller]
    pub fn until(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&RunningAgent) -> bool) {
        let deadline = Instant::now() + limit;
        while !f(self) {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "the agent exited ({st}) waiting for {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM; the agent must exit 0 within 30 s.
    #[track_caller]
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "the agent stopped with {st}:\n{}", self.log());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to `limit`) until another process holds an exclusive flock on `lock`: until the file
/// can no longer be locked shared by anyone else.
pub fn wait_until_locked(lock: &Path, limit: Duration) {
    let deadline = Instant::now() + limit;
    while nix::fcntl::Flock::lock(
        std::fs::File::open(lock).unwrap(),
        nix::fcntl::FlockArg::LockSharedNonblock,
    )
    .is_ok()
    {
        assert!(Instant::now() < deadline, "flock did not take the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Live processes whose environment carries `marker` (e.g. `PROVISION_AGENT_ROOT=<root>`, which
/// every service of an agent for that root inherits).
pub fn marked(marker: &str) -> Vec<i32> {
    process_table()
        .into_iter()
        .filter(|&(_, state, ..)| state != 'Z')
        .filter_map(|(pid, ..)| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|&b| b == 0)
                .any(|kv| kv == marker.as_bytes())
                .then_some(pid)
        })
        .collect()
}

/// The venv with the pinned ansible-core and ansible-lint that `.ci/run` makes for the Ansible
/// collection's tests: `$PROVISION_ANSIBLE_VENV`, else `ansible-venv` in the target folder.
pub fn ansible_venv() -> PathBuf {
    std::env::var_os("PROVISION_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("ansible-venv")
        })
}
