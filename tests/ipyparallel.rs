//! The ipyparallel shared-filesystem cluster, for real: manifests/ipyparallel-sharedfs.yaml,
//! unchanged, on five nodes (cl-0, the controller, and the engine hosts cl-1 to cl-4), each in its
//! own mount, network, UTS and PID namespaces with its own root (an overlay over `/`, `chroot`ed
//! into), hostname and address (10.0.1.10 to 10.0.1.14, on a bridge in a network namespace of its
//! own: nothing of it is in the machine's network), made by the shared helper tests/common/netns.rs. The home directory `/home/ipp` is one folder
//! of this machine bind-mounted into every node: the shared filesystem. Each engine host runs a
//! real `sshd` (the distribution's, with its own config and fresh host keys of the node's own).
//!
//! What it shows: `provision apply` on every node (ipyparallel from PyPI into the venv in the
//! shared home, the key pair, authorized_keys, known_hosts scanned from the engine hosts' sshd,
//! the profile); `provision agent` on cl-0 starts `ipcluster` as `ipp` and reports it ready only
//! once the controller has every engine registered; a real ipyparallel `Client` on cl-0 then sees
//! exactly the engines the manifest implies (2 on each engine host, by `socket.gethostname()` on
//! the engines) and runs a map over them; the connection file is mode 0600 and its key appears in
//! no report, log or status; killing one engine host's engines (SIGKILL), and then the controller,
//! shows the agent restarting ipcluster until all engines are back; a changed engine list handed to
//! the running agent by `apply` restarts ipcluster with the new one; SIGTERM to the agent stops
//! ipcluster, which stops every engine over SSH: no ipyparallel process is left on any node.
//!
//! Not covered: NFS itself. The shared home is a bind mount, so the same files are seen by every
//! node at once; NFS attribute caching, `root_squash` (root on the controller cannot write into
//! the home: apply would fail there) and file locking (SQLite's job store) behave differently.
//!
//! Skipped (with `SKIP ipyparallel: <reason>`) without root, overlayfs, sshd, ip, unshare,
//! nsenter, chroot, runuser, python3 or PyPI. The pip cache lives in
//! `$CARGO_TARGET_TMPDIR/ipp-pip-cache` (or `$IPP_TEST_PIP_CACHE`).
//!
//! Run: `cargo test --test ipyparallel -- --nocapture` (prints the timings BENCHMARKS.md records),
//! or `bash bench/ipyparallel.sh`.

mod common;

use common::netns::{Lan, Node, NodeOptions, PATH, cmdline, live_pids, run_limited, wait};

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const PROFILE: &str = "/home/ipp/.ipython/profile_sharedfs";
const INSTALL_LIMIT: Duration = Duration::from_secs(10 * 60);
const STEP_LIMIT: Duration = Duration::from_secs(90);
/// Engines start one after the other, several SSH round trips each, on a busy machine.
const BRINGUP_LIMIT: Duration = Duration::from_secs(6 * 60);
/// The manifest's engine hosts and engines per host.
const ENGINES: [(&str, &str, usize); 4] = [
    ("cl-1", "10.0.1.11", 2),
    ("cl-2", "10.0.1.12", 2),
    ("cl-3", "10.0.1.13", 2),
    ("cl-4", "10.0.1.14", 2),
];

/// How an engine's and the controller's command lines start (each engine has a nanny process
/// too, `-m ipyparallel.engine.nanny`, which tells the controller at once when its engine dies).
const ENGINE: &str = "/home/ipp/venv/bin/python -m ipyparallel.engine ";
const CONTROLLER: &str = "/home/ipp/venv/bin/python -m ipyparallel.controller";
const IPCLUSTER: &str = "/home/ipp/venv/bin/python /home/ipp/venv/bin/ipcluster start";

fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.get(stat.rfind(')').map_or(0, |i| i + 2)..)
        .and_then(|rest| rest.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The pid of host process `pid` in its own (innermost) PID namespace.
fn ns_pid(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/ipyparallel-sharedfs.yaml")
}

fn pip_cache() -> PathBuf {
    std::env::var_os("IPP_TEST_PIP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("ipp-pip-cache"))
}

/// Live ipyparallel processes (ipcluster, controller, engines) anywhere, with their command lines.
fn ipp_processes() -> Vec<(u32, String)> {
    live_pids()
        .into_iter()
        .map(|p| (p, cmdline(p)))
        .filter(|(_, c)| c.contains("ipcluster") || c.contains("ipyparallel."))
        .collect()
}

/// The node's processes whose command line starts with `prefix`.
fn pids_with(n: &Node, prefix: &str) -> Vec<u32> {
    n.inside()
        .into_iter()
        .filter(|&p| cmdline(p).starts_with(prefix))
        .collect()
}

/// The controller's main process: the one of its processes (it forks its schedulers) whose
/// parent is not one of them.
fn controller_main(n: &Node) -> Vec<u32> {
    let all = pids_with(n, CONTROLLER);
    all.iter()
        .copied()
        .filter(|&p| !all.contains(&ppid(p)))
        .collect()
}

/// A node of the manifest: the pip cache bound in, and the shared home (one folder of this
/// machine) at /home/ipp.
fn node(name: &str, address: &str, home: &Path) -> Node {
    let cache = pip_cache();
    let cache_env = cache.display().to_string();
    let n = Node::with(
        name,
        address,
        &NodeOptions {
            binds: &[cache.as_path()],
            env: &[("PIP_CACHE_DIR", cache_env.as_str())],
        },
    );
    n.host_sh(&format!(
        "mkdir -p '{root}/home/ipp' && mount --bind '{home}' '{root}/home/ipp'",
        root = n.root().display(),
        home = home.display()
    ));
    n
}

/// Why the test cannot run here, if it cannot.
fn gate() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, bridges, users, chroot); CI runs as root".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some("no overlayfs in /proc/filesystems".into());
    }
    for tool in [
        "sshd",
        "ssh",
        "ssh-keygen",
        "ssh-keyscan",
        "python3",
        "ip",
        "unshare",
        "nsenter",
        "chroot",
        "runuser",
    ] {
        if !PATH.split(':').any(|d| Path::new(d).join(tool).exists()) {
            return Some(format!("no {tool} in {PATH} (.ci/run installs it)"));
        }
    }
    if Path::new("/home/ipp").exists() {
        return Some("/home/ipp exists on this machine; the test will not shadow it".into());
    }
    let running = ipp_processes();
    if !running.is_empty() {
        return Some(format!(
            "ipyparallel processes already run here: {running:?}"
        ));
    }
    use std::net::ToSocketAddrs;
    let reachable = ("pypi.org", 443).to_socket_addrs().is_ok_and(|mut a| {
        a.any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
    });
    if !reachable {
        return Some("pypi.org:443 is not reachable".into());
    }
    None
}

/// A real ipyparallel Client on the controller, as ipp: how many engines, on which hosts (their
/// own `socket.gethostname()`), and a map over all of them.
const CLIENT_PY: &str = r#"
import collections, json, socket, sys
import ipyparallel
client = ipyparallel.Client(profile_dir=sys.argv[1], timeout=30)
hosts = client[:].apply_sync(socket.gethostname)
squares = client.load_balanced_view().map_sync(lambda x: x * x, range(64))
print(json.dumps({
    "engines": len(client.ids),
    "hosts": collections.Counter(hosts),
    "map_ok": squares == [x * x for x in range(64)],
}))
client.close()
"#;

/// What [`CLIENT_PY`] saw.
fn client(controller: &Node) -> Result<serde_json::Value, String> {
    let mut cmd = controller.command(true, "runuser");
    cmd.args([
        "-u",
        "ipp",
        "--",
        "/home/ipp/venv/bin/python",
        "-c",
        CLIENT_PY,
        PROFILE,
    ])
    .env("HOME", "/home/ipp");
    let (code, out, err) = run_limited(cmd, "an ipyparallel Client", STEP_LIMIT);
    if code != 0 {
        return Err(format!("{code}: {err}"));
    }
    serde_json::from_str(out.lines().last().unwrap_or_default()).map_err(|e| format!("{e}: {out}"))
}

/// The engines per host the manifest implies (`cores: 2` each), as the Client reports them.
fn expected_hosts(engines: &[(&str, &str, usize)]) -> serde_json::Value {
    let m: BTreeMap<&str, usize> = engines.iter().map(|(n, _, k)| (*n, *k)).collect();
    serde_json::to_value(m).unwrap()
}

/// The Client sees exactly `engines`, and the map over them is right.
fn all_engines(
    controller: &Node,
    engines: &[(&str, &str, usize)],
) -> Result<serde_json::Value, String> {
    let seen = client(controller)?;
    let total: usize = engines.iter().map(|e| e.2).sum();
    if seen["engines"] == total
        && seen["hosts"] == expected_hosts(engines)
        && seen["map_ok"] == true
    {
        Ok(seen)
    } else {
        Err(format!("{seen}"))
    }
}

/// The ipcluster service's status once it is ready again after a restart: `restarts` above
/// `before`.
fn ready_after(controller: &Node, before: u64) -> Result<serde_json::Value, String> {
    let s = controller.service_status("ipcluster")?;
    if s["state"] == "ready" && s["restarts"].as_u64().unwrap_or(0) > before {
        Ok(s)
    } else {
        Err(format!("{s}"))
    }
}

#[test]
fn ipyparallel_cluster_over_ssh_on_a_shared_home() {
    if let Some(why) = gate() {
        eprintln!("SKIP ipyparallel: {why}");
        return;
    }
    let host_files = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hosts"];
    let before: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let bin = env!("CARGO_BIN_EXE_provision");
    let m = manifest();
    let m = m.to_str().unwrap();

    {
        // The shared home, as the file server has it: owned by ipp (uid 2000 in the manifest).
        let home = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(home.path(), Some(2000), Some(2000)).unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o750),
        )
        .unwrap();
        let controller = node("cl-0", "10.0.1.10", home.path());
        let engines: Vec<Node> = ENGINES
            .iter()
            .map(|(n, address, _)| node(n, address, home.path()))
            .collect();
        // The cluster network: a bridge in a namespace of its own, every node on it.
        let mut lan = Lan::new("10.0.1.1", 24);
        for n in std::iter::once(&controller).chain(&engines) {
            lan.attach(n);
        }
        assert_eq!(
            std::fs::read_dir("/sys/class/net").unwrap().count(),
            host_ifaces
        );

        let mut sshds: Vec<Child> = Vec::new();
        // Engine hosts first: the account and /etc/hosts; then their sshd, with host keys of
        // their own (the overlay has this machine's: replaced), as at a node's first boot.
        for n in &engines {
            let apply = ["apply", m, "--node", &n.name, "--json"];
            let (code, out, err) = n.provision(true, &apply, STEP_LIMIT);
            assert_eq!(code, 0, "apply on {}\n{out}\n{err}", n.name);
            let (code, out, _) = n.provision(true, &apply, STEP_LIMIT);
            assert_eq!(code, 0);
            let report: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(
                report["summary"]["changed"], 0,
                "re-apply on {}: {out}",
                n.name
            );
            n.sh(
                "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && mkdir -p -m 0755 /run/sshd",
                STEP_LIMIT,
            );
            let log = std::fs::File::create(n.tmp.path().join("sshd.log")).unwrap();
            sshds.push(
                n.command(true, "/usr/sbin/sshd")
                    .args(["-D", "-e"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            );
        }
        for (name, address, _) in ENGINES {
            wait(
                &format!("sshd on {name}"),
                STEP_LIMIT,
                Path::new("/dev/null"),
                || {
                    let out = controller.sh(
                        &format!("ssh-keyscan -T 2 {address} 2>/dev/null || true"),
                        STEP_LIMIT,
                    );
                    if out.contains("ssh-ed25519") {
                        Ok(())
                    } else {
                        Err(out)
                    }
                },
            );
        }

        // The controller: in the machine's network, pip reaches PyPI but no engine host answers
        // ssh-keyscan (known_hosts fails, ipcluster is skipped); in the cluster network, the rest.
        let apply = ["apply", m, "--node", "cl-0", "--json"];
        let t = Instant::now();
        let (code, out, err) = controller.provision(false, &apply, INSTALL_LIMIT);
        let install = t.elapsed();
        let report: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}\n{err}"));
        assert_eq!(code, 4, "{out}\n{err}");
        let failed: Vec<&str> = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"] == "failed" || r["status"] == "skipped")
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            failed,
            [
                "known_hosts:/home/ipp/.ssh/known_hosts",
                "service:ipcluster"
            ],
            "{report:#}"
        );
        let (code, out, err) = controller.provision(true, &apply, STEP_LIMIT);
        assert_eq!(code, 0, "{out}\n{err}");
        let (code, out, _) = controller.provision(true, &apply, STEP_LIMIT);
        assert_eq!(code, 0);
        let again: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(again["summary"]["changed"], 0, "re-apply changed: {out}");
        println!(
            "ipyparallel: controller apply (venv with ipyparallel from PyPI) {:.1}s",
            install.as_secs_f64()
        );
        let known = std::fs::read_to_string(home.path().join(".ssh/known_hosts")).unwrap();
        for (name, address, _) in ENGINES {
            assert!(
                known.contains(&format!("{name},{name}.cluster.lan,{address} ssh-ed25519 ")),
                "{known}"
            );
        }
        assert!(
            controller
                .read("/etc/hosts")
                .contains("10.0.1.11\tcl-1.cluster.lan cl-1")
        );

        // The agent: ipcluster is ready only when every engine is registered.
        let log = controller.tmp.path().join("agent.log");
        let mut agent = controller.command(true, bin);
        agent
            .args(["agent", m, "--node", "cl-0", "--reconcile-interval", "1h"])
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let started = Instant::now();
        let mut agent = agent.spawn().unwrap();
        let status = wait("ipcluster ready", BRINGUP_LIMIT, &log, || {
            let s = controller.service_status("ipcluster")?;
            if s["state"] == "ready" {
                Ok(s)
            } else {
                Err(format!("{s}"))
            }
        });
        let bringup = started.elapsed();
        let seen = all_engines(&controller, &ENGINES).unwrap();
        println!(
            "ipyparallel: agent start to ipcluster ready (8 engines registered) {:.1}s; the Client saw {seen}",
            bringup.as_secs_f64()
        );
        // The pid the agent reports (in cl-0's PID namespace) is the start script's, and
        // ipcluster runs under it, as ipp.
        let ipcluster = pids_with(&controller, IPCLUSTER);
        assert_eq!(ipcluster.len(), 1, "{ipcluster:?}");
        let mut up = ipcluster[0];
        while up > 1 && Some(ns_pid(up)) != status["pid"].as_u64() {
            up = ppid(up);
        }
        assert!(
            cmdline(up).contains("/usr/local/lib/provision/ipcluster-start"),
            "{status}: {}",
            cmdline(up)
        );
        let uid = std::fs::metadata(format!("/proc/{}", ipcluster[0]))
            .unwrap()
            .uid();
        assert_eq!(uid, 2000, "ipcluster runs as ipp");
        // Each engine runs on its host as ipp, and the controller on cl-0.
        for (n, (_, _, k)) in engines.iter().zip(ENGINES) {
            let mine = pids_with(n, ENGINE);
            assert_eq!(mine.len(), k, "engines on {}: {mine:?}", n.name);
            for p in mine {
                let uid = std::fs::metadata(format!("/proc/{p}")).unwrap().uid();
                assert_eq!(uid, 2000, "engine {p} on {} runs as ipp", n.name);
            }
        }
        assert_eq!(controller_main(&controller).len(), 1);

        // The connection file is ipp's alone, and its key is in nothing provision shows.
        let client_json = home
            .path()
            .join(".ipython/profile_sharedfs/security/ipcontroller-client.json");
        let meta = std::fs::metadata(&client_json).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, 2000));
        let connection: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&client_json).unwrap()).unwrap();
        let key = connection["key"].as_str().unwrap().to_owned();
        assert!(key.len() >= 16, "{connection}");
        let (_, status_out, _) = controller.provision(true, &["status", "--json"], STEP_LIMIT);
        let (_, plan_out, _) =
            controller.provision(true, &["plan", m, "--node", "cl-0"], STEP_LIMIT);
        for (what, text) in [
            ("the agent log", std::fs::read_to_string(&log).unwrap()),
            (
                "the ipcluster log",
                controller.read("/var/log/provision/ipcluster.log"),
            ),
            ("provision status", status_out),
            ("provision plan", plan_out),
            ("the apply reports", format!("{report}{again}")),
        ] {
            assert!(!text.contains(&key), "the client key is in {what}");
        }

        // One engine host's engines die: the liveness check counts 6 of 8, and the agent
        // restarts ipcluster until all 8 are back.
        let restarts = status["restarts"].as_u64().unwrap();
        let victims = pids_with(&engines[1], ENGINE);
        assert_eq!(victims.len(), 2);
        let killed = Instant::now();
        // Only the engines: each one's nanny tells the controller at once.
        for p in &victims {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        }
        let status = wait(
            "ipcluster restarted after cl-2's engines died",
            BRINGUP_LIMIT,
            &log,
            || ready_after(&controller, restarts),
        );
        let recovered = killed.elapsed();
        let seen = all_engines(&controller, &ENGINES).unwrap();
        println!(
            "ipyparallel: cl-2's engines killed to all 8 registered again {:.1}s",
            recovered.as_secs_f64()
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("service=ipcluster"),
            "the agent logged it"
        );
        let _ = seen;

        // The controller dies: ipcluster stops its engines and exits; the agent starts it again.
        let restarts = status["restarts"].as_u64().unwrap();
        let old = controller_main(&controller);
        assert_eq!(old.len(), 1);
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let status = wait(
            "ipcluster restarted after its controller died",
            BRINGUP_LIMIT,
            &log,
            || ready_after(&controller, restarts),
        );
        let recovered = killed.elapsed();
        all_engines(&controller, &ENGINES).unwrap();
        let new = controller_main(&controller);
        assert!(new.len() == 1 && new != old, "{old:?} → {new:?}");
        println!(
            "ipyparallel: controller killed to all 8 registered again {:.1}s",
            recovered.as_secs_f64()
        );

        // A new engine list (cl-4 with one core), handed to the running agent by apply: the
        // profile changes and ipcluster restarts with 7 engines.
        let restarts = status["restarts"].as_u64().unwrap();
        let text = std::fs::read_to_string(manifest()).unwrap();
        let changed = text.replace(
            "  - name: cl-4\n    address: 10.0.1.14\n    roles: [engine]\n    cores: 2\n",
            "  - name: cl-4\n    address: 10.0.1.14\n    roles: [engine]\n    cores: 1\n",
        );
        assert_ne!(changed, text);
        std::fs::write(controller.tmp.path().join("tmp/ipp-changed.yaml"), changed).unwrap();
        let (code, out, err) = controller.provision(
            true,
            &["apply", "/tmp/ipp-changed.yaml", "--node", "cl-0"],
            BRINGUP_LIMIT,
        );
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("ipcluster_config.py"), "{out}");
        let fewer = [ENGINES[0], ENGINES[1], ENGINES[2], ("cl-4", "10.0.1.14", 1)];
        wait(
            "ipcluster restarted with the new engine list",
            BRINGUP_LIMIT,
            &log,
            || ready_after(&controller, restarts),
        );
        all_engines(&controller, &fewer).unwrap();
        assert_eq!(pids_with(&engines[3], ENGINE).len(), 1);

        // SIGTERM: the agent stops ipcluster (SIGINT), which stops every engine over SSH.
        let agent_pid = pids_with(&controller, &format!("{bin} agent"));
        assert_eq!(agent_pid.len(), 1);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent_pid[0] as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let exit = wait("the agent to exit", STEP_LIMIT, &log, || {
            agent
                .try_wait()
                .unwrap()
                .ok_or_else(|| "running".to_owned())
        });
        assert_eq!(
            exit.code(),
            Some(0),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        let left: Vec<(u32, String)> = ipp_processes();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(
            !home
                .path()
                .join(".ipython/profile_sharedfs/security/cluster-.json")
                .exists(),
            "ipcluster's cluster file was removed"
        );
        for n in std::iter::once(&controller).chain(&engines) {
            let rest: Vec<String> = n
                .inside()
                .into_iter()
                .map(cmdline)
                .filter(|c| !c.contains("sshd"))
                .collect();
            assert!(rest.is_empty(), "processes left on {}: {rest:?}", n.name);
        }

        // The floor, for bench/ipyparallel.sh only (IPP_BENCH=1): the same cluster (the
        // manifest's 8 engines again) started by hand with `ipcluster start` as ipp, timed to
        // every engine registered by the same check the agent uses.
        if std::env::var_os("IPP_BENCH").is_some() {
            let (code, out, err) = controller.provision(true, &apply, STEP_LIMIT);
            assert_eq!(code, 0, "{out}\n{err}");
            let mut by_hand = controller.command(true, "runuser");
            by_hand
                .args(["-u", "ipp", "--", "/home/ipp/venv/bin/ipcluster", "start"])
                .arg(format!("--profile-dir={PROFILE}"))
                .env("HOME", "/home/ipp")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let started = Instant::now();
            let mut by_hand = by_hand.spawn().unwrap();
            wait("ipcluster started by hand", BRINGUP_LIMIT, &log, || {
                let mut check = controller.command(true, "runuser");
                check
                    .args(["-u", "ipp", "--", "/home/ipp/venv/bin/python"])
                    .args([
                        "/usr/local/lib/provision/ipyparallel_engines_registered.py",
                        PROFILE,
                    ])
                    .env("HOME", "/home/ipp");
                match run_limited(check, "the engines check", STEP_LIMIT) {
                    (0, _, _) => Ok(()),
                    (_, out, err) => Err(format!("{out}{err}")),
                }
            });
            println!(
                "ipyparallel: by hand, `ipcluster start` to 8 engines registered {:.1}s",
                started.elapsed().as_secs_f64()
            );
            let _ = by_hand.kill();
            let _ = by_hand.wait();
            for n in std::iter::once(&controller).chain(&engines) {
                for p in n.inside() {
                    if cmdline(p).contains("ipyparallel") || cmdline(p).contains("ipcluster") {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        for mut sshd in sshds {
            let _ = sshd.kill();
            let _ = sshd.wait();
        }
    }

    assert!(ipp_processes().is_empty());
    let after: Vec<Vec<u8>> = host_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    assert!(
        before == after,
        "the machine's account or hosts files changed"
    );
    assert_eq!(
        std::fs::read_dir("/sys/class/net").unwrap().count(),
        host_ifaces
    );
    assert!(!Path::new("/home/ipp").exists());
}
