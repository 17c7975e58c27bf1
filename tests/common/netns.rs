//! Simulated nodes for multi-node tests: each [`Node`] is a set of new mount, network, UTS and PID
//! namespaces with its own hostname and its own root, an overlay over `/` (every write lands in a
//! temporary upper layer) that everything in it runs `chroot`ed into. Nodes talk over a veth pair
//! made straight into two of them, or over a [`Lan`]: a bridge in a network namespace of its own,
//! where the test's own commands (an SSH client, ansible-playbook) run as the "controller". A node
//! can run a real Debian `sshd` on its address ([`Node::start_sshd`]): key auth only, its own
//! host key and config, no PAM.
//!
//! Nothing is left behind: dropping a node SIGKILLs every process in it and then its PID 1, which
//! takes its mounts, its network namespace and its end of every veth pair with it; dropping a
//! [`Lan`] kills every process in its network namespace (an SSH master connection left to
//! persist) and then the one holding it. If the test process itself is killed, the namespaces go
//! when their `sleep` holders end ([`HOLD_SECONDS`]). Every command a node runs for the test has a
//! time limit ([`run_limited`]). Traffic stays inside the namespaces: no interface is ever made in
//! the machine's own network namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The PATH every command in a node runs with.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A setup step (mounts, links, a key, sshd's start) is killed after this.
pub const SETUP_LIMIT: Duration = Duration::from_secs(90);
/// How long the `sleep` holding a node's or a LAN's namespaces lives: the latest they go away
/// when the test process is killed before it could drop them.
pub const HOLD_SECONDS: u32 = 3600;

/// The mount namespace of process `pid`.
pub fn mnt_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// The network namespace of process `pid`.
pub fn net_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// The command line of process `pid`, arguments joined by spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every process that is not a zombie.
pub fn live_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
        })
        .collect()
}

/// Live processes in mount namespace `ns`.
pub fn in_mnt_ns(ns: &Path) -> Vec<u32> {
    live_pids()
        .into_iter()
        .filter(|&p| mnt_ns(p).as_deref() == Some(ns))
        .collect()
}

/// Runs `cmd` (stdout and stderr piped), killing it after `limit`: exit code, stdout, stderr.
pub fn run_limited(mut cmd: Command, what: &str, limit: Duration) -> (i32, String, String) {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} ran past {limit:?} and was killed");
        }
    }
}

/// SIGKILLs every process `inside` lists, three rounds 100 ms apart (a process forked while the
/// first round ran is caught by the next).
pub fn kill_all(inside: impl Fn() -> Vec<u32>) {
    for _ in 0..3 {
        for pid in inside() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why nodes cannot be made here, if they cannot: not root, no overlayfs, or a tool missing.
pub fn unavailable(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, overlay mounts, veth); CI runs as root".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some("no overlayfs in /proc/filesystems".into());
    }
    for tool in ["ip", "unshare", "nsenter", "chroot"].iter().chain(tools) {
        if !PATH.split(':').any(|d| Path::new(d).join(tool).exists()) {
            return Some(format!("no {tool} in {PATH}"));
        }
    }
    None
}

/// Polls `f` every 250 ms until it gives `Ok`; after `limit`, fails the test with its last error
/// and the file `log` (an agent's log, say).
#[track_caller]
pub fn wait<T>(
    what: &str,
    limit: Duration,
    log: &Path,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!(
                "timed out ({limit:?}) waiting for {what}: {e}\n--- {}\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// What a node sees besides the machine's own files.
#[derive(Default)]
pub struct NodeOptions<'a> {
    /// Folders of the machine bound read-write at the same path inside the node (a shared cache).
    pub binds: &'a [&'a Path],
    /// Variables every [`Node::command`] gets, after PATH and NO_COLOR.
    pub env: &'a [(&'a str, &'a str)],
}

/// One node: new mount, network, UTS and PID namespaces (a `sleep` is their init); its root is an
/// overlay over `/` (writes land in a temporary upper layer) with /dev and /sys bound in, its own
/// /proc, a fresh /tmp, and the checkout and the test binary's folder bound read-only (so they are
/// there even when they live under /tmp). Everything runs `chroot`ed there. Its own PID namespace
/// keeps a process that looks for "every process of this root" (an agent ending its predecessor's
/// services) from finding another node's. Dropping it SIGKILLs every process in its namespaces,
/// then the init, which takes the mounts, the network namespace and its veth ends away.
pub struct Node {
    pub name: String,
    pub address: String,
    /// `unshare`, the parent of `init`.
    holder: Child,
    /// PID 1 of the node's PID namespace (as this test sees it): the target of every `nsenter`.
    pub init: u32,
    /// The node's mount namespace.
    pub ns: PathBuf,
    pub tmp: tempfile::TempDir,
    env: Vec<(String, String)>,
    /// `nsenter ... sshd -D`, once started.
    sshd: Option<Child>,
}

impl Node {
    /// A node with nothing but the machine's own files (and the checkout and binary).
    pub fn new(name: &str, address: &str) -> Node {
        Node::with(name, address, &NodeOptions::default())
    }

    pub fn with(name: &str, address: &str, options: &NodeOptions) -> Node {
        super::adopt_orphans();
        let tmp = tempfile::tempdir().unwrap();
        let holder = Command::new("unshare")
            .args(["-m", "-n", "-u", "-p", "-f", "--propagation", "private"])
            .args(["sleep", &HOLD_SECONDS.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let mine = mnt_ns(std::process::id()).unwrap();
        let started = Instant::now();
        let mut node = Node {
            name: name.to_owned(),
            address: address.to_owned(),
            holder,
            init: 0,
            ns: PathBuf::new(),
            tmp,
            env: options
                .env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            sshd: None,
        };
        let h = node.holder.id();
        (node.init, node.ns) = loop {
            assert!(node.holder.try_wait().unwrap().is_none(), "unshare failed");
            let init = std::fs::read_to_string(format!("/proc/{h}/task/{h}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(init) = init
                && cmdline(init).starts_with("sleep")
                && let Some(ns) = mnt_ns(init).filter(|ns| *ns != mine)
            {
                break (init, ns);
            }
            assert!(started.elapsed() < Duration::from_secs(10), "unshare");
            std::thread::sleep(Duration::from_millis(5));
        };
        let t = node.tmp.path().display().to_string();
        let mut binds = String::new();
        for dir in options.binds {
            std::fs::create_dir_all(dir).unwrap();
            let d = dir.display();
            binds.push_str(&format!(
                "mkdir -p '{t}/root{d}' && mount --bind '{d}' '{t}/root{d}'\n"
            ));
        }
        // The manifests and the binary are seen in the chroot where they are outside it, even
        // when they live under /tmp, which the node has its own of (a CI checkout under /tmp).
        let src = env!("CARGO_MANIFEST_DIR");
        let bin = Path::new(env!("CARGO_BIN_EXE_provision"))
            .parent()
            .unwrap()
            .display()
            .to_string();
        node.host_sh(&format!(
            "set -e
             mkdir -p {t}/root {t}/upper {t}/work {t}/tmp
             chmod 1777 {t}/tmp
             mount -t overlay overlay -o lowerdir=/,upperdir={t}/upper,workdir={t}/work {t}/root
             mount --rbind /dev {t}/root/dev
             mount -t proc proc {t}/root/proc
             mount --rbind /sys {t}/root/sys
             mount --bind {t}/tmp {t}/root/tmp
             {binds}
             for d in '{src}' '{bin}'; do
               mkdir -p \"{t}/root$d\"
               mount --bind \"$d\" \"{t}/root$d\"
               mount -o remount,bind,ro \"{t}/root$d\"
             done
             hostname {name}
             ip link set lo up"
        ));
        node
    }

    /// The node's root as this test's mount namespace sees the folder (empty: the overlay is
    /// mounted only in the node's namespace; see [`Node::path`]).
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// The upper layer: every file the node wrote or changed, and nothing else.
    pub fn upper(&self) -> PathBuf {
        self.tmp.path().join("upper")
    }

    /// Node path `p` (in the node's root) as a path this test can read and write, through the
    /// node's init: the node's view of its overlay.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/root{}/{}",
            self.init,
            self.root().display(),
            p.trim_start_matches('/')
        ))
    }

    /// Writes node path `p` with `mode` (creating its parents), as root.
    pub fn write(&self, p: &str, content: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("write {p} on {}: {e}", self.name));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.init)
    }

    /// A shell script in the node's namespaces, outside its chroot (mounts, links).
    #[track_caller]
    pub fn host_sh(&self, script: &str) {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "-m", "-n", "-u", "-p", "--"])
            .args(["sh", "-c", script]);
        let (code, out, err) = run_limited(cmd, "a setup script", SETUP_LIMIT);
        assert_eq!(code, 0, "{script}\n{out}{err}");
    }

    /// `program ARGS` in the node's namespaces and root (`nsenter` forks into the PID namespace
    /// and waits, exiting as the program did; see [`Node::pid_of`]). `net`: in the node's network
    /// namespace, else in the machine's (to reach a package registry).
    pub fn command(&self, net: bool, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "-m", "-u", "-p"]);
        if net {
            cmd.arg("-n");
        }
        cmd.arg("--")
            .arg("chroot")
            .arg(self.root())
            .args(["/bin/sh", "-c", "cd / && exec \"$@\"", "sh", program])
            .env_clear()
            .env("PATH", PATH)
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// A shell script in the node (its namespaces and root), killed after `limit`: its stdout;
    /// fails the test unless it exits 0.
    #[track_caller]
    pub fn sh(&self, script: &str, limit: Duration) -> String {
        let mut cmd = self.command(true, "sh");
        cmd.args(["-c", script]);
        let (code, out, err) = run_limited(cmd, &format!("{script} on {}", self.name), limit);
        assert_eq!(code, 0, "{script} on {}:\n{out}{err}", self.name);
        out
    }

    /// `provision ARGS` on this node, killed after `limit`.
    pub fn provision(&self, net: bool, args: &[&str], limit: Duration) -> (i32, String, String) {
        let mut cmd = self.command(net, env!("CARGO_BIN_EXE_provision"));
        cmd.args(args);
        run_limited(cmd, &format!("provision {args:?} on {}", self.name), limit)
    }

    /// `provision status --json`'s entry for service `name` on this node.
    pub fn service_status(&self, name: &str) -> Result<serde_json::Value, String> {
        let (code, out, err) = self.provision(true, &["status", "--json"], SETUP_LIMIT);
        if code != 0 {
            return Err(format!("provision status: {code} {err}"));
        }
        let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        json["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .ok_or_else(|| format!("no service {name} in {json}"))
    }

    /// The processes in the node's namespaces, its init and `unshare` (the holder) excepted.
    pub fn inside(&self) -> Vec<u32> {
        let keep = [self.init, self.holder.id()];
        in_mnt_ns(&self.ns)
            .into_iter()
            .filter(|p| !keep.contains(p))
            .collect()
    }

    /// The one process in the node whose command line starts with `prefix`.
    pub fn pid_of(&self, prefix: &str) -> Result<u32, String> {
        let found: Vec<u32> = self
            .inside()
            .into_iter()
            .filter(|&p| cmdline(p).starts_with(prefix))
            .collect();
        match found.as_slice() {
            [pid] => Ok(*pid),
            other => Err(format!("{prefix}: {other:?}")),
        }
    }

    /// A file the node wrote (from its upper layer); empty if it wrote none there.
    pub fn read(&self, p: &str) -> String {
        std::fs::read_to_string(self.upper().join(p.trim_start_matches('/'))).unwrap_or_default()
    }

    /// Starts Debian's OpenSSH server in the node, listening on the node's address, port 22:
    /// public-key authentication only, for root with `authorized_key` (a `.pub` line), a host key
    /// of its own made here, its own config file (no PAM, no password, no keyboard-interactive)
    /// under `/etc/ssh/provision-test/`. Returns once it listens, with the `known_hosts` line
    /// for its host key (`ADDRESS ssh-ed25519 AAAA...`). It is killed with the node.
    pub fn start_sshd(&mut self, authorized_key: &str) -> String {
        assert!(self.sshd.is_none(), "sshd already runs on {}", self.name);
        let dir = "/etc/ssh/provision-test";
        let key = self.tmp.path().join("ssh_host_ed25519_key");
        let mut keygen = Command::new("ssh-keygen");
        keygen
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("root@{}", self.name))
            .arg("-f")
            .arg(&key);
        let (code, out, err) = run_limited(keygen, "ssh-keygen", SETUP_LIMIT);
        assert_eq!(code, 0, "ssh-keygen: {out}{err}");
        let private = std::fs::read_to_string(&key).unwrap();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        self.write(&format!("{dir}/ssh_host_ed25519_key"), &private, 0o600);
        self.write(&format!("{dir}/authorized_keys"), authorized_key, 0o600);
        let config = format!(
            "# sshd for the test node {name}: key auth only, no PAM.
ListenAddress {address}:22
HostKey {dir}/ssh_host_ed25519_key
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
PidFile none
MaxStartups 200
MaxSessions 50
Subsystem sftp internal-sftp
",
            name = self.name,
            address = self.address
        );
        self.write(&format!("{dir}/sshd_config"), &config, 0o600);
        std::fs::set_permissions(
            self.path(dir),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        // Privilege separation needs its empty, root-owned directory.
        self.sh("mkdir -p /run/sshd && chmod 0755 /run/sshd", SETUP_LIMIT);
        let conf = format!("{dir}/sshd_config");
        let mut check = self.command(true, "/usr/sbin/sshd");
        check.args(["-t", "-f", &conf]);
        let (code, out, err) = run_limited(check, "sshd -t", SETUP_LIMIT);
        assert_eq!(code, 0, "sshd -t on {}: {out}{err}", self.name);
        let log = std::fs::File::create(self.tmp.path().join("sshd.log")).unwrap();
        let mut cmd = self.command(true, "/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f", &conf])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.sshd = Some(cmd.spawn().expect("start sshd"));
        let deadline = Instant::now() + SETUP_LIMIT;
        while !self.listens(22) {
            if let Some(st) = self.sshd.as_mut().unwrap().try_wait().unwrap() {
                panic!("sshd on {} exited ({st}):\n{}", self.name, self.sshd_log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd on {} does not listen:\n{}",
                self.name,
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut fields = public.split_whitespace();
        let (kind, blob) = (fields.next().unwrap(), fields.next().unwrap());
        format!("{} {kind} {blob}\n", self.address)
    }

    /// What sshd logged (`-e`: to stderr, kept in a file of the test).
    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("sshd.log")).unwrap_or_default()
    }

    /// Whether a TCP socket listens on the node's address (or any address), port `port`, in the
    /// node's network namespace (read from its `/proc/net/tcp`).
    pub fn listens(&self, port: u16) -> bool {
        let ip: std::net::Ipv4Addr = self.address.parse().expect("an IPv4 node address");
        // The kernel prints the address as the 32-bit value read in this machine's byte order.
        let mine = format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()));
        let any = format!("00000000:{port:04X}");
        std::fs::read_to_string(format!("/proc/{}/net/tcp", self.init))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && (f[1] == mine || f[1] == any) && f[3] == "0A"
            })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        kill_all(|| self.inside());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.init as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        if let Some(mut sshd) = self.sshd.take() {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        super::reap_adopted();
    }
}

/// A network for nodes: a bridge (`lan0`) in a network namespace of its own, holding the
/// controller's address; each node [`attach`](Lan::attach)ed gets a veth pair, one end (`eth0`)
/// in the node with the node's address, the other on the bridge. Commands of the test run on the
/// LAN with [`Lan::command`]. Nothing of it is in the machine's own network namespace.
pub struct Lan {
    holder: Child,
    /// The controller's address (the bridge's), e.g. `10.77.0.1`.
    pub address: String,
    prefix: u8,
    attached: usize,
}

impl Lan {
    /// A LAN whose bridge has `address/prefix` (the controller's address on it).
    pub fn new(address: &str, prefix: u8) -> Lan {
        super::adopt_orphans();
        let mut holder = Command::new("unshare")
            .args(["-n", "sleep", &HOLD_SECONDS.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare -n");
        let mine = net_ns(std::process::id()).unwrap();
        let started = Instant::now();
        loop {
            assert!(holder.try_wait().unwrap().is_none(), "unshare -n failed");
            if cmdline(holder.id()).starts_with("sleep")
                && net_ns(holder.id()).is_some_and(|ns| ns != mine)
            {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "unshare -n");
            std::thread::sleep(Duration::from_millis(5));
        }
        let lan = Lan {
            holder,
            address: address.to_owned(),
            prefix,
            attached: 0,
        };
        lan.sh(&format!(
            "set -e
             ip link set lo up
             ip link add lan0 type bridge
             ip addr add {address}/{prefix} dev lan0
             ip link set lan0 up"
        ));
        lan
    }

    /// `/proc/PID/ns/net` of the LAN's namespace.
    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.holder.id())
    }

    /// Connects `node` to the bridge: its `eth0` gets the node's address.
    pub fn attach(&mut self, node: &Node) {
        self.attached += 1;
        let port = format!("port{}", self.attached);
        let mut ip = Command::new("ip");
        ip.args(["link", "add", &port, "netns"])
            .arg(self.holder.id().to_string())
            .args(["type", "veth", "peer", "name", "eth0", "netns"])
            .arg(node.init.to_string());
        let (code, out, err) = run_limited(ip, "ip link add", SETUP_LIMIT);
        assert_eq!(code, 0, "ip link add for {}: {out}{err}", node.name);
        self.sh(&format!(
            "ip link set {port} master lan0 && ip link set {port} up"
        ));
        node.host_sh(&format!(
            "ip addr add {}/{} dev eth0 && ip link set eth0 up",
            node.address, self.prefix
        ));
    }

    /// `program` in the LAN's network namespace (the machine's mount namespace and files).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns()))
            .arg("--")
            .arg(program);
        cmd
    }

    #[track_caller]
    fn sh(&self, script: &str) {
        let mut cmd = self.command("sh");
        cmd.args(["-c", script]);
        let (code, out, err) = run_limited(cmd, "a LAN setup script", SETUP_LIMIT);
        assert_eq!(code, 0, "{script}\n{out}{err}");
    }
}

impl Lan {
    /// The processes in the LAN's network namespace (an SSH client's master connection left to
    /// persist, say), the holder excepted.
    pub fn inside(&self) -> Vec<u32> {
        let ns = net_ns(self.holder.id());
        live_pids()
            .into_iter()
            .filter(|&p| p != self.holder.id() && ns.is_some() && net_ns(p) == ns)
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        kill_all(|| self.inside());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
