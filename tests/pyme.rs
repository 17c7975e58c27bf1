//! PYME end to end, for real: `provision apply manifests/pyme-cluster-of-one.yaml` installs
//! python-microscopy from PyPI into a venv, `provision agent` brings up the cluster of one, and the
//! test talks to PYME's own HTTP API (a file PUT to the data server and read back, the rule
//! server's queues, the node server polling), SIGKILLs the rule server and sees the agent restart
//! it and the node server poll the new one (a task posted to the new rule server is run by the
//! node server's workers and handed in), then stops the agent with SIGTERM and checks that no PYME
//! process is left.
//!
//! Everything runs with the default root `/`, inside a private mount namespace in which overlayfs
//! covers every directory the manifest and the agent write (`/etc`, `/opt`, `/srv`, `/var`, and
//! `/root` for good measure): the real directories are the lower layers, the writes land in a
//! temporary upper layer, and the namespace disappears with its holder. The host is not touched;
//! the test checks that its account files are unchanged.
//!
//! The second test is the multi-node one: `master` and `node01` of manifests/pyme-cluster.yaml,
//! each with its own root (an overlay over `/`, `chroot`ed into), hostname and network namespace
//! (10.0.0.1 and 10.0.0.11 on a veth pair that exists only inside the two namespaces). The
//! worker's agent starts first: its node server waits for the master's rule server (the agent's
//! status says so, and no node server process runs); then the master's agent starts, and the
//! worker's node server starts, finds the master's rule server through zeroconf and polls it.
//! Both agents stop and leave no PYME process. The two tests run one after the other.
//!
//! Skipped (with `SKIP pyme: <reason>`) without root, overlayfs, `python3.11` in the system PATH
//! (and `ip`, `unshare`, `nsenter`, `chroot` for the two nodes) or PyPI. The pip cache lives in
//! `$CARGO_TARGET_TMPDIR/pyme-pip-cache` (or `$PYME_TEST_PIP_CACHE`) so a second run on the same
//! machine does not download or build again.
//!
//! Run: `cargo test --test pyme -- --nocapture` (prints the timings BENCHMARKS.md records; about
//! 6 minutes with the cache warm), or `bash bench/pyme.sh`.

mod common;

use common::netns::{Node, NodeOptions, PATH, cmdline, live_pids, mnt_ns, run_limited, wait};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The cold install is about 9 minutes on 2 busy cores.
const INSTALL_LIMIT: Duration = Duration::from_secs(25 * 60);
const BRINGUP_LIMIT: Duration = Duration::from_secs(3 * 60);
const STEP_LIMIT: Duration = Duration::from_secs(90);
/// The service user must be able to run the interpreter the venv links to, so only system
/// directories (a pyenv under root's 0700 home would not do).
/// The node server launcher of `manifests/pyme-cluster.yaml` (PYME's own, asking zeroconf by
/// multicast).
const LAUNCHER: &str = "/opt/pyme/libexec/pyme-nodeserver.py";
const COVERED: [&str; 5] = ["/etc", "/opt", "/srv", "/var", "/root"];
const PORTS: [u16; 3] = [15346, 15347, 15348];

/// pip's cache: `$PYME_TEST_PIP_CACHE` (an empty folder times a cold install: bench/pyme.sh), else
/// `$CARGO_TARGET_TMPDIR/pyme-pip-cache`, kept between runs.
fn pip_cache() -> PathBuf {
    std::env::var_os("PYME_TEST_PIP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyme-pip-cache"))
}

fn manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pyme-cluster-of-one.yaml")
}

/// Why the test cannot run here, if it cannot.
fn gate() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (users, chown, mount namespaces); CI runs as root".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some("no overlayfs in /proc/filesystems".into());
    }
    if !PATH
        .split(':')
        .any(|d| Path::new(d).join("python3.11").exists())
    {
        return Some(format!("no python3.11 in {PATH}"));
    }
    for d in COVERED {
        if !Path::new(d).is_dir() {
            return Some(format!(
                "{d} does not exist here and the test will not create it"
            ));
        }
    }
    if !pypi_reachable() {
        return Some("pypi.org:443 is not reachable".into());
    }
    let running = pyme_processes(None);
    if !running.is_empty() {
        return Some(format!("PYME processes already run here: {running:?}"));
    }
    for port in PORTS {
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
            return Some(format!("port {port} is in use"));
        }
    }
    None
}

fn pypi_reachable() -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = ("pypi.org", 443).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
}

fn sha(path: &str) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap_or_default());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Live processes whose command line names PYME, a task worker or the cluster manifest's node
/// server launcher (in mount namespace `ns`, or anywhere), with their command lines.
fn pyme_processes(ns: Option<&Path>) -> Vec<(u32, String)> {
    live_pids()
        .into_iter()
        .filter(|&pid| ns.is_none_or(|ns| mnt_ns(pid).as_deref() == Some(ns)))
        .map(|pid| (pid, cmdline(pid)))
        .filter(|(_, c)| c.contains("PYME") || c.contains("taskWorkerHTTP") || c.contains(LAUNCHER))
        .collect()
}

/// The private mount namespace with the overlays; on drop, every process in it is SIGKILLed and
/// the holder with them, which takes every mount away.
struct Overlays {
    holder: Child,
    ns: PathBuf,
    tmp: tempfile::TempDir,
}

impl Overlays {
    fn new() -> Overlays {
        common::adopt_orphans();
        let tmp = tempfile::tempdir().unwrap();
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "3600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let mine = mnt_ns(std::process::id()).unwrap();
        let started = Instant::now();
        let ns = loop {
            assert!(holder.try_wait().unwrap().is_none(), "unshare -m failed");
            match mnt_ns(holder.id()) {
                Some(ns) if ns != mine => break ns,
                _ => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "unshare");
            std::thread::sleep(Duration::from_millis(5));
        };
        let o = Overlays { holder, ns, tmp };
        for dir in COVERED {
            let name = dir.trim_start_matches('/');
            let upper = o.tmp.path().join("upper").join(name);
            let work = o.tmp.path().join("work").join(name);
            std::fs::create_dir_all(&upper).unwrap();
            std::fs::create_dir_all(&work).unwrap();
            o.sh(&format!(
                "mount -t overlay overlay -o lowerdir={dir},upperdir={},workdir={} {dir}",
                upper.display(),
                work.display()
            ));
        }
        o
    }

    /// The upper layer's copy of node path `p` (what the namespace wrote there).
    fn upper(&self, p: &str) -> PathBuf {
        self.tmp
            .path()
            .join("upper")
            .join(p.trim_start_matches('/'))
    }

    #[track_caller]
    fn sh(&self, script: &str) {
        let status = self.command("sh").args(["-c", script]).status().unwrap();
        assert!(status.success(), "{script}: {status}");
    }

    /// `nsenter` into the namespace (it execs `program`, so the child's pid is the program's).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "--", program])
            .env_clear()
            .env("PATH", PATH)
            .env("NO_COLOR", "1")
            .env("PIP_CACHE_DIR", pip_cache());
        cmd
    }

    /// The processes in the namespace, the holder excepted.
    fn inside(&self) -> Vec<u32> {
        live_pids()
            .into_iter()
            .filter(|&p| p != self.holder.id() && mnt_ns(p).as_deref() == Some(&self.ns))
            .collect()
    }

    /// Runs `provision ARGS` in the namespace, killed after `limit`: exit code, stdout, stderr.
    fn provision(&self, args: &[&str], limit: Duration) -> (i32, String, String) {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_provision"));
        cmd.args(args);
        run_limited(cmd, &format!("provision {args:?}"), limit)
    }
}

impl Drop for Overlays {
    fn drop(&mut self) {
        common::netns::kill_all(|| self.inside());
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        common::reap_adopted();
    }
}

/// An HTTP request to 127.0.0.1 (method, port, path, body): status and body, or why not.
type Request<'a> = &'a dyn Fn(&str, u16, &str, &[u8]) -> Result<(u16, Vec<u8>), String>;

/// One HTTP/1.0 request to 127.0.0.1: status and body (gunzipped), or why not. It accepts gzip
/// like PYME's own clients (`requests`): PYME's rule and node servers fail on a client that does
/// not (they write a `str` to the socket).
fn http(method: &str, port: u16, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => return Err(e.to_string()),
            Err(_) => break,
        }
        // Stop at Content-Length: a keep-alive server need not close.
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| raw.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no header end")?;
    let status = String::from_utf8_lossy(&raw[..end])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    let body = &raw[end + 4..];
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if head.contains("content-encoding: gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("gzip: {e}"))?;
        return Ok((status, out));
    }
    Ok((status, body.to_vec()))
}

fn put_and_get(name: &str) -> Result<(), String> {
    let data = format!("hello from provision's PYME test, {name}\n").into_bytes();
    let path = format!("/provision-test/{name}");
    let (code, body) = http("PUT", 15348, &path, &data)?;
    if code != 200 {
        return Err(format!(
            "PUT {path}: {code} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let (code, body) = http("GET", 15348, &path, b"")?;
    if code != 200 || body != data {
        return Err(format!(
            "GET {path}: {code} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

fn queues() -> Result<(), String> {
    let (code, body) = http("GET", 15346, "/distributor/queues", b"")?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if code == 200 && json["ok"] == true {
        Ok(())
    } else {
        Err(format!("{code} {json}"))
    }
}

/// Posts to the rule server a rule `rule` of one task released at once, a recipe task with an
/// empty recipe (PYME's `taskWorkerHTTP` runs it; a worker that fails it hands it in as failed,
/// which proves the round trip as well); an error unless the rule server answers 200.
fn post_rule(rule: &str) -> Result<(), String> {
    post_rule_with(&http, rule)
}

/// [`post_rule`] through `request` (`http`, or a node's own).
fn post_rule_with(request: Request, rule: &str) -> Result<(), String> {
    let template = serde_json::json!({
        "id": "{{ruleID}}~{{taskID}}",
        "type": "recipe",
        "taskdef": {"recipe": "[]"},
        "inputs": {},
    });
    let body = serde_json::json!({"template": template.to_string()}).to_string();
    match request(
        "POST",
        15346,
        &format!("/add_integer_id_rule?max_tasks=1&release_start=0&release_end=1&ruleID={rule}"),
        body.as_bytes(),
    )? {
        (200, _) => Ok(()),
        (code, body) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
    }
}

/// The rule server's info on `rule` once its one task came back (completed or failed) and none
/// runs; an error (the info so far) before, or when the rule server does not know the rule.
fn handed_in(rule: &str) -> Result<serde_json::Value, String> {
    handed_in_with(&http, rule)
}

/// [`handed_in`] through `request`.
fn handed_in_with(request: Request, rule: &str) -> Result<serde_json::Value, String> {
    let (code, body) = request("GET", 15346, "/distributor/queues", b"")?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let info = &json["result"][rule];
    let n = |k: &str| info[k].as_u64();
    match (
        code,
        n("tasksPosted"),
        n("tasksCompleted"),
        n("tasksFailed"),
        n("tasksRunning"),
    ) {
        (200, Some(1), Some(c), Some(f), Some(0)) if c + f == 1 => Ok(info.clone()),
        _ => Err(format!("{code} {json}")),
    }
}

fn polling() -> Result<(), String> {
    let (code, body) = http("GET", 15347, "/node/status", b"")?;
    is_polling(code, &body)
}

/// Whether a node server's `GET /node/status` answer says it polls: status 200 and a JSON object
/// whose `Polling` is the boolean `true` and whose `nQueued` is a count.
fn is_polling(code: u16, body: &[u8]) -> Result<(), String> {
    let json: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "{code}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    })?;
    let polling = json.get("Polling").and_then(serde_json::Value::as_bool);
    let queued = json.get("nQueued").and_then(serde_json::Value::as_u64);
    match (code, polling, queued) {
        (200, Some(true), Some(_)) => Ok(()),
        _ => Err(format!("{code} {json}")),
    }
}

#[test]
fn is_polling_reads_the_json_not_the_text() {
    assert!(is_polling(200, br#"{"Polling":true,"nQueued":0}"#).is_ok());
    assert!(is_polling(200, br#"{"Polling": true, "nQueued": 3}"#).is_ok());
    assert!(is_polling(200, br#"{"Polling":false,"nQueued":0}"#).is_err());
    assert!(is_polling(200, br#"{"Polling":"true","nQueued":0}"#).is_err());
    assert!(is_polling(200, br#"{"Polling":true}"#).is_err());
    assert!(is_polling(200, br#"{"note":"\"Polling\":true","nQueued":0}"#).is_err());
    assert!(is_polling(500, br#"{"Polling":true,"nQueued":0}"#).is_err());
    assert!(is_polling(200, b"Polling: true").is_err());
}

/// The pid of the one process (in the namespace) whose command line contains `what`.
fn one_pid(ns: &Path, what: &str) -> Result<u32, String> {
    let found: Vec<_> = pyme_processes(Some(ns))
        .into_iter()
        .filter(|(_, c)| c.contains(what))
        .collect();
    match found.as_slice() {
        [(pid, _)] => Ok(*pid),
        other => Err(format!("{what}: {other:?}")),
    }
}

/// The two PYME tests run one after the other: each installs PYME and runs its servers.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn pyme_cluster_of_one_installs_runs_restarts_and_stops_clean() {
    let _serial = serial();
    if let Some(why) = gate() {
        eprintln!("SKIP pyme: {why}");
        return;
    }
    let host_files = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hosts"];
    let before: Vec<String> = host_files.iter().map(|f| sha(f)).collect();
    let host_pyme =
        ["/opt/pyme", "/srv/pyme", "/var/lib/pyme", "/root/.PYME"].map(|p| Path::new(p).exists());

    {
        let o = Overlays::new();
        let m = manifest();
        let m = m.to_str().unwrap();
        let apply = ["apply", m, "--node", "pyme-one", "--json"];

        // Install: users, directories, the venv with PYME from PyPI, the config.
        let t = Instant::now();
        let (code, out, err) = o.provision(&apply, INSTALL_LIMIT);
        let install = t.elapsed();
        assert_eq!(code, 0, "first apply\n--- stdout\n{out}\n--- stderr\n{err}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["summary"]["failed"], 0, "{out}");
        println!(
            "pyme: first apply (install) {:.1}s, {} changed",
            install.as_secs_f64(),
            report["summary"]["changed"]
        );
        assert!(o.upper("/opt/pyme/venv/bin/PYMEDataServer").exists());
        assert!(
            o.upper("/etc/passwd").exists(),
            "the pyme user went to the overlay"
        );

        // A second apply changes nothing.
        let t = Instant::now();
        let (code, out, err) = o.provision(&apply, STEP_LIMIT);
        let again = t.elapsed();
        assert_eq!(
            code, 0,
            "second apply\n--- stdout\n{out}\n--- stderr\n{err}"
        );
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            report["summary"]["changed"], 0,
            "second apply changed something: {out}"
        );
        println!("pyme: second apply (no-op) {:.2}s", again.as_secs_f64());

        // The agent brings the cluster up.
        let log = o.tmp.path().join("agent.log");
        let started = Instant::now();
        let mut agent = o
            .command(env!("CARGO_BIN_EXE_provision"))
            .args([
                "agent",
                m,
                "--node",
                "pyme-one",
                "--reconcile-interval",
                "1h",
            ])
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait("the data server round trip", BRINGUP_LIMIT, &log, || {
            put_and_get("hello.txt")
        });
        wait("the rule server's queues", BRINGUP_LIMIT, &log, queues);
        wait("the node server polling", BRINGUP_LIMIT, &log, polling);
        let polled = started.elapsed();
        // The agent's own view: every service passed its readiness check.
        for service in [
            "pyme-dataserver",
            "pyme-ruleserver",
            "pyme-nodeserver",
            "pyme-clusterui",
        ] {
            let line = format!("service={service} event=Ready");
            wait(&line, BRINGUP_LIMIT, &log, || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&line) {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            });
        }
        println!(
            "pyme: agent start to node server polling {:.1}s",
            polled.as_secs_f64()
        );
        let bringup = started.elapsed();
        println!(
            "pyme: agent start to every service ready {:.1}s",
            bringup.as_secs_f64()
        );

        // SIGKILL the rule server: the agent starts a new one, and the node server polls it: a task
        // posted to the new one is run and handed in.
        let old = wait("one rule server", STEP_LIMIT, &log, || {
            one_pid(&o.ns, "PYMERuleServer")
        });
        let node = one_pid(&o.ns, "PYMERuleNodeServer").unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(old as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        let new = wait("a new rule server", STEP_LIMIT, &log, || {
            one_pid(&o.ns, "PYMERuleServer").and_then(|p| {
                if p == old {
                    Err("still the old one".into())
                } else {
                    Ok(p)
                }
            })
        });
        wait("the new rule server's queues", STEP_LIMIT, &log, queues);
        wait("the node server polling again", STEP_LIMIT, &log, polling);
        let answering = killed.elapsed();
        // `Polling: true` is what PYME's node server reports from its start, whether or not it
        // reaches a rule server, and the rule server logs no requests. The proof that the node
        // server polls the new rule server is a task round trip through it: a rule posted to the
        // new rule server (it lives only in that process's memory) gets its task handed in only
        // when the node server has fetched `/task_advertisements`, won the task with
        // `/bid_on_tasks`, run it on a worker and posted `/handin`, all to the new rule server.
        let rule = format!("provision-test-{new}");
        post_rule(&rule).unwrap_or_else(|e| panic!("posting {rule}: {e}"));
        let info = wait(
            "the node server to run the new rule server's task",
            STEP_LIMIT,
            &log,
            || {
                handed_in(&rule).map_err(|e| {
                    let text =
                        std::fs::read_to_string(o.upper("/var/log/provision/pyme-nodeserver.log"))
                            .unwrap_or_default();
                    let mut from = text.len().saturating_sub(4000);
                    while !text.is_char_boundary(from) {
                        from += 1;
                    }
                    format!("{e}\n--- node server log (end)\n{}", &text[from..])
                })
            },
        );
        assert_eq!(
            one_pid(&o.ns, "PYMERuleServer").unwrap(),
            new,
            "the rule server that took the task back is the new one"
        );
        assert_eq!(
            one_pid(&o.ns, "PYMERuleNodeServer").unwrap(),
            node,
            "the node server that ran the task is the one from before the rule server's restart"
        );
        println!(
            "pyme: rule server {old} SIGKILLed, {new} answering after {:.1}s; a task posted to it \
             run by the node server and handed in after {:.1}s: {info}",
            answering.as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        wait(
            "the data server still round trips",
            STEP_LIMIT,
            &log,
            || put_and_get("again.txt"),
        );
        // The node server's task workers (`/bin/sh -c python -m PYME.cluster.taskWorkerHTTP` and
        // its python), which must go with it at the end.
        let workers = wait("the node server's task workers", STEP_LIMIT, &log, || {
            let n = pyme_processes(Some(&o.ns))
                .into_iter()
                .filter(|(_, c)| c.contains("taskWorkerHTTP"))
                .count();
            if n > 0 { Ok(n) } else { Err("none yet".into()) }
        });
        println!("pyme: {workers} task worker processes");
        // clusterUI (Django) answers on 127.0.0.1:9000.
        let (code, _) = wait("clusterUI", STEP_LIMIT, &log, || {
            http("GET", 9000, "/", b"")
        });
        println!("pyme: clusterUI GET / -> {code}");
        let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
        for line in agent_log.lines().filter(|l| l.contains("event=")) {
            println!("  {line}");
        }

        // SIGTERM: the agent stops every service and exits 0; no PYME process is left.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait("the agent to exit", STEP_LIMIT, &log, || {
            agent
                .try_wait()
                .unwrap()
                .ok_or_else(|| "running".to_owned())
        });
        let agent_log = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "agent log:\n{agent_log}");
        let left = pyme_processes(None);
        assert!(
            left.is_empty(),
            "left behind: {left:?}\nagent log:\n{agent_log}"
        );
        assert_eq!(
            o.inside(),
            Vec::<u32>::new(),
            "processes left in the namespace"
        );
        // PYME wrote its ~/.PYME into the pyme user's home, in the overlay.
        assert!(o.upper("/var/lib/pyme/.PYME").exists());
    }

    // The host saw none of it.
    let after: Vec<String> = host_files.iter().map(|f| sha(f)).collect();
    assert_eq!(before, after, "the host's account files changed");
    let host_pyme_after =
        ["/opt/pyme", "/srv/pyme", "/var/lib/pyme", "/root/.PYME"].map(|p| Path::new(p).exists());
    assert_eq!(host_pyme, host_pyme_after);
    assert!(pyme_processes(None).is_empty());
}

// ------------------------------------------------------------------------------------------------
// Two nodes on one machine: manifests/pyme-cluster.yaml's `master` and `node01`, each in its own
// mount, network and UTS namespaces, as the manifest has them (10.0.0.1 and 10.0.0.11, hostnames
// `master` and `node01`), joined by a veth pair that exists only inside the two namespaces.

/// An HTTP GET from inside a network namespace (run by python3.11 there, which accepts gzip as
/// PYME's clients do): status and body.
/// An HTTP request in python (in a node's network namespace): `METHOD URL [BODY]`; prints the
/// status, a newline and the (gunzipped) body.
const REQUEST_PY: &str = r#"
import gzip, sys, urllib.error, urllib.request
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(sys.argv[2], data=data, method=sys.argv[1], headers={"Accept-Encoding": "gzip"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        sys.stdout.write("%d\n" % r.status)
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
except urllib.error.HTTPError as e:
    sys.stdout.write("%d\n" % e.code)
except Exception as e:
    sys.stderr.write("%s" % e)
    sys.exit(1)
"#;

/// What the PYME nodes add to a [`Node`]: their HTTP requests.
impl Node {
    /// GET `http://127.0.0.1:PORT/PATH` inside the node's network namespace.
    fn get(&self, port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
        self.request("GET", port, path, b"")
    }

    /// `METHOD http://127.0.0.1:PORT/PATH` with `body`, inside the node's network namespace.
    fn request(
        &self,
        method: &str,
        port: u16,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns()))
            .args(["--", "python3.11", "-c", REQUEST_PY, method])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .args((method != "GET").then(|| String::from_utf8_lossy(body).into_owned()))
            .env_clear()
            .env("PATH", PATH);
        let (code, out, err) = run_limited(cmd, method, Duration::from_secs(30));
        if code != 0 {
            return Err(err);
        }
        let (status, body) = out.split_once('\n').ok_or("no status")?;
        let status = status.trim().parse().map_err(|_| "no status")?;
        Ok((status, body.as_bytes().to_vec()))
    }
}

fn cluster_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pyme-cluster.yaml")
}

/// Why the two-node test cannot run here, if it cannot.
fn gate_nodes() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, veth, users); CI runs as root".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return Some("no overlayfs in /proc/filesystems".into());
    }
    for tool in [
        "python3.11",
        "ip",
        "unshare",
        "nsenter",
        "chroot",
        "runuser",
    ] {
        if !PATH.split(':').any(|d| Path::new(d).join(tool).exists()) {
            return Some(format!("no {tool} in {PATH}"));
        }
    }
    if !pypi_reachable() {
        return Some("pypi.org:443 is not reachable".into());
    }
    let running = pyme_processes(None);
    if !running.is_empty() {
        return Some(format!("PYME processes already run here: {running:?}"));
    }
    None
}

/// Whether the agent log at `log` has a line with every one of `words`.
fn logged(log: &Path, words: &[&str]) -> Result<(), String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if text.lines().any(|l| words.iter().all(|w| l.contains(w))) {
        Ok(())
    } else {
        Err(format!("no line with {words:?} yet"))
    }
}

/// A zeroconf browse for rule servers, printing the seconds it took and what it found: with
/// argument `pyme`, PYME's own 1 s browse (what its node server does at start); with `launcher`,
/// the manifest's node server launcher's (questions by multicast, until one is found or 20 s).
const BROWSE_PY: &str = r#"
import runpy, sys, time
t = time.monotonic()
if sys.argv[1] == "launcher":
    runpy.run_path("/opt/pyme/libexec/pyme-nodeserver.py", run_name="probe")["wait_for_a_rule_server"](20)
from PYME.misc import pyme_zeroconf
from PYME.cluster import distribution
ns = pyme_zeroconf.getNS("_pyme-taskdist")
found = list(distribution.getDistributorInfo(ns).values())
print("%.2f %s" % (time.monotonic() - t, found))
"#;

// Each run makes new namespaces. Without the manifest's launcher the worker's node server missed
// the rule server on every start in about half of them (README, "Known problem"): PYME browses
// zeroconf for 1 s, python-zeroconf's first question asks for a unicast answer, and Linux hands
// that to one of the node's `pyme` zeroconf sockets sharing port 5353 (SO_REUSEPORT), picked by a
// hash fixed per network namespace. The test checks the launcher's browse inside the worker's
// namespace and prints how PYME's own browse fares there, so each run says which case it was.
#[test]
fn pyme_worker_waits_for_the_masters_rule_server_then_polls_it() {
    let _serial = serial();
    if let Some(why) = gate_nodes() {
        eprintln!("SKIP pyme two nodes: {why}");
        return;
    }
    let host_files = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hosts"];
    let before: Vec<String> = host_files.iter().map(|f| sha(f)).collect();
    let host_ifaces = std::fs::read_dir("/sys/class/net").unwrap().count();
    let host_data = Path::new("/data").exists();
    let bin = env!("CARGO_BIN_EXE_provision");
    let m = cluster_manifest();
    let m = m.to_str().unwrap();

    {
        let cache = pip_cache();
        let cache_env = cache.display().to_string();
        let options = NodeOptions {
            binds: &[&cache],
            env: &[("PIP_CACHE_DIR", &cache_env)],
        };
        let master = Node::with("master", "10.0.0.1", &options);
        let worker = Node::with("node01", "10.0.0.11", &options);
        // The cluster network: a veth pair made straight into the two namespaces.
        let mut ip = Command::new("ip");
        ip.args(["link", "add", "pyme0", "netns"])
            .arg(master.init.to_string())
            .args(["type", "veth", "peer", "name", "pyme0", "netns"])
            .arg(worker.init.to_string());
        let (code, out, err) = run_limited(ip, "ip link add", STEP_LIMIT);
        assert_eq!(code, 0, "ip link add: {out}{err}");
        for n in [&master, &worker] {
            n.host_sh(&format!(
                "ip addr add {}/24 dev pyme0 && ip link set pyme0 up && ip route add 224.0.0.0/4 dev pyme0",
                n.address
            ));
        }
        assert_eq!(
            std::fs::read_dir("/sys/class/net").unwrap().count(),
            host_ifaces,
            "the veth pair is only in the nodes' namespaces"
        );

        // Install each node (in the machine's network, where PyPI is), then re-apply: no-op.
        for n in [&master, &worker] {
            let apply = ["apply", m, "--node", &n.name, "--json"];
            let t = Instant::now();
            let (code, out, err) = n.provision(false, &apply, INSTALL_LIMIT);
            let install = t.elapsed();
            assert_eq!(
                code, 0,
                "apply on {}\n--- stdout\n{out}\n--- stderr\n{err}",
                n.name
            );
            let report: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(report["summary"]["failed"], 0, "{out}");
            let t = Instant::now();
            let (code, out, err) = n.provision(false, &apply, STEP_LIMIT);
            let again = t.elapsed();
            assert_eq!(code, 0, "re-apply on {}\n{out}\n{err}", n.name);
            let report: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(report["summary"]["changed"], 0, "re-apply changed: {out}");
            println!(
                "pyme two nodes: {} apply (install) {:.1}s, no-op re-apply {:.2}s",
                n.name,
                install.as_secs_f64(),
                again.as_secs_f64()
            );
            // The hosts fix: every node's name resolves to its cluster address.
            let hosts = n.read("/etc/hosts");
            assert!(
                hosts.contains("10.0.0.1\tmaster.cluster.lan master")
                    && hosts.contains("10.0.0.11\tnode01.cluster.lan node01"),
                "{hosts}"
            );
        }
        // Only the master has clusterUI's and the rule server's motd; no GPU settings on either.
        assert!(master.read("/etc/motd").contains("rule server"));
        assert!(!worker.read("/etc/motd").contains("rule server"));

        // The worker's agent first: its data server runs, its node server waits for the master.
        let wlog = worker.tmp.path().join("agent.log");
        let mut wagent = worker.command(true, bin);
        wagent
            .args(["agent", m, "--node", "node01", "--reconcile-interval", "1h"])
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&wlog).unwrap());
        let mut wagent = wagent.spawn().unwrap();
        wait(
            "the worker's data server",
            BRINGUP_LIMIT,
            &wlog,
            || match worker.get(15348, "/__status")? {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {}", String::from_utf8_lossy(&body))),
            },
        );
        let waiting = |what: &str| {
            let s = worker.service_status("pyme-nodeserver")?;
            let detail = s["detail"].as_str().unwrap_or_default();
            if s["state"] == "waiting"
                && detail.contains("http://10.0.0.1:15346/distributor/queues")
            {
                let nodeservers: Vec<_> = pyme_processes(Some(&worker.ns))
                    .into_iter()
                    .filter(|(_, c)| c.contains(LAUNCHER))
                    .collect();
                assert!(nodeservers.is_empty(), "{what}: {nodeservers:?}");
                Ok(detail.to_owned())
            } else {
                Err(format!("{s}"))
            }
        };
        let detail = wait(
            "the worker's node server waiting",
            BRINGUP_LIMIT,
            &wlog,
            || waiting("a node server runs while waiting"),
        );
        wait("the agent's `waiting for` line", STEP_LIMIT, &wlog, || {
            logged(
                &wlog,
                &[
                    "service=pyme-nodeserver",
                    "waiting for GET http://10.0.0.1:15346",
                ],
            )
        });
        println!("pyme two nodes: worker's pyme-nodeserver: {detail}");
        // Several wait_for attempts (every 2 s) later it still waits, and still no node server.
        std::thread::sleep(Duration::from_secs(7));
        waiting("a node server started without the master").unwrap();
        assert!(logged(&wlog, &["service=pyme-nodeserver", "wait_for passed"]).is_err());

        // Then the master's agent: once its rule server answers, the worker's node server starts,
        // finds the master's rule server (zeroconf across the veth) and polls it.
        let mlog = master.tmp.path().join("agent.log");
        let mut magent = master.command(true, bin);
        magent
            .args(["agent", m, "--node", "master", "--reconcile-interval", "1h"])
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&mlog).unwrap());
        let mut magent = magent.spawn().unwrap();
        let started = Instant::now();
        wait("the master's rule server", BRINGUP_LIMIT, &mlog, || {
            let (code, body) = master.get(15346, "/distributor/queues")?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if code == 200 && json["ok"] == true {
                Ok(())
            } else {
                Err(format!("{code} {json}"))
            }
        });
        let master_ready = Instant::now();
        wait(
            "the worker's node server polling",
            BRINGUP_LIMIT,
            &wlog,
            || {
                let (code, body) = worker.get(15347, "/node/status")?;
                is_polling(code, &body)
            },
        );
        let polled = master_ready.elapsed();
        // It found the master's rule server (PYME prints what it found: `[]` would be none).
        let found = wait(
            "the worker's node server ready",
            BRINGUP_LIMIT,
            &wlog,
            || {
                let s = worker.service_status("pyme-nodeserver")?;
                if s["state"] == "ready" {
                    Ok(worker.read("/var/log/provision/pyme-nodeserver.log"))
                } else {
                    let log = worker.read("/var/log/provision/pyme-nodeserver.log");
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    Err(format!(
                        "{s}; the node server's log, last lines first: {tail:?}"
                    ))
                }
            },
        );
        let ready = master_ready.elapsed();
        assert!(
            found.contains("['http://10.0.0.1:15346/']"),
            "the worker's node server log:\n{found}"
        );
        logged(&wlog, &["service=pyme-nodeserver", "wait_for passed"]).unwrap();
        // The master's own node server polls its rule server too.
        wait(
            "the master's node server polling",
            BRINGUP_LIMIT,
            &mlog,
            || {
                let (code, body) = master.get(15347, "/node/status")?;
                is_polling(code, &body)
            },
        );
        println!(
            "pyme two nodes: master agent start to its rule server answering {:.1}s; then to the worker's node server polling {:.1}s, and Ready in the worker's agent (it found the master's rule server) {:.1}s",
            (master_ready - started).as_secs_f64(),
            polled.as_secs_f64(),
            ready.as_secs_f64()
        );

        // Discovery where it failed: in the worker's namespace, as `pyme`, while the data server,
        // the node server and its task workers all listen on port 5353, the launcher's browse
        // finds the master's rule server every time. PYME's own 1 s browse is shown for
        // comparison: whether it misses depends on this run's namespaces (the hash), and on
        // whether the record was multicast in the last second (the responder then holds its
        // answer back for up to a second).
        let browse = |how: &str| {
            let mut cmd = worker.command(true, "runuser");
            cmd.args([
                "-u",
                "pyme",
                "--",
                "/opt/pyme/venv/bin/python",
                "-c",
                BROWSE_PY,
                how,
            ])
            .env("HOME", "/home/pyme")
            .env("TMPDIR", "/home/pyme/tmp");
            let (code, out, err) = run_limited(cmd, "a zeroconf browse", STEP_LIMIT);
            assert_eq!(code, 0, "browse ({how}): {out}{err}");
            let last = out.lines().last().unwrap_or_default().to_owned();
            let (secs, found) = last.split_once(' ').unwrap_or(("", ""));
            (secs.to_owned(), found == "['http://10.0.0.1:15346/']")
        };
        let (mut launcher, mut pyme_own) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (secs, found) = browse("launcher");
            assert!(
                found,
                "the launcher's browse on the worker found nothing in {secs} s"
            );
            launcher.push(secs);
            let (secs, found) = browse("pyme");
            pyme_own.push(if found {
                format!("found in {secs} s")
            } else {
                "missed".into()
            });
        }
        println!(
            "pyme two nodes: on the worker, the launcher's browse found the master's rule server after {} s; PYME's own 1 s browse: {}",
            launcher.join(", "),
            pyme_own.join(", ")
        );

        // The worker's node server polls the master's rule server for real: with the master's own
        // node server stopped (SIGSTOP), a task posted to the master's rule server is fetched,
        // bid on, run and handed in by the worker's. The master's agent is stopped for that
        // while too, so that its liveness check cannot replace the stopped node server.
        let master_node = one_pid(&master.ns, LAUNCHER).unwrap();
        let master_agent = master.pid_of(&format!("{bin} agent")).unwrap();
        let signal = |pid: u32, sig| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
        };
        signal(master_agent, nix::sys::signal::Signal::SIGSTOP);
        signal(master_node, nix::sys::signal::Signal::SIGSTOP);
        let on_master =
            |m: &str, port: u16, path: &str, body: &[u8]| master.request(m, port, path, body);
        let rule = format!("provision-two-nodes-{master_node}");
        let posted = Instant::now();
        post_rule_with(&on_master, &rule)
            .unwrap_or_else(|e| panic!("posting {rule} to the master: {e}"));
        let info = wait(
            "the worker's node server to run the master's task",
            STEP_LIMIT,
            &wlog,
            || {
                handed_in_with(&on_master, &rule).map_err(|e| {
                    let log = worker.read("/var/log/provision/pyme-nodeserver.log");
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    format!("{e}; the worker's node server log, last lines first: {tail:?}")
                })
            },
        );
        let round_trip = posted.elapsed();
        let stat = std::fs::read_to_string(format!("/proc/{master_node}/stat")).unwrap();
        assert!(
            stat[stat.rfind(')').unwrap() + 2..].starts_with('T'),
            "the master's node server stayed stopped while the task ran: {stat}"
        );
        assert_eq!(one_pid(&master.ns, LAUNCHER).unwrap(), master_node);
        signal(master_node, nix::sys::signal::Signal::SIGCONT);
        // nsenter, the agent's parent, stopped itself when the agent stopped (util-linux does),
        // and would never reap it: it goes on too.
        signal(magent.id(), nix::sys::signal::Signal::SIGCONT);
        signal(master_agent, nix::sys::signal::Signal::SIGCONT);
        println!(
            "pyme two nodes: with the master's node server stopped, a task posted to the master's rule server was run by the worker and handed in after {:.1}s: {info}",
            round_trip.as_secs_f64()
        );
        for (name, log) in [("worker", &wlog), ("master", &mlog)] {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text
                .lines()
                .filter(|l| l.contains("event=") || l.contains("wait"))
            {
                println!("  {name}: {line}");
            }
        }

        // Stop both agents (worker first): each exits 0 and leaves no PYME process.
        for (n, agent, log) in [(&worker, &mut wagent, &wlog), (&master, &mut magent, &mlog)] {
            let pid = n.pid_of(&format!("{bin} agent")).unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let status = wait("the agent to exit", STEP_LIMIT, log, || {
                agent
                    .try_wait()
                    .unwrap()
                    .ok_or_else(|| "running".to_owned())
            });
            let text = std::fs::read_to_string(log).unwrap_or_default();
            assert_eq!(status.code(), Some(0), "{} agent log:\n{text}", n.name);
            let left = pyme_processes(Some(&n.ns));
            assert!(left.is_empty(), "{} left {left:?}\n{text}", n.name);
            assert_eq!(
                n.inside(),
                Vec::<u32>::new(),
                "processes left on {}",
                n.name
            );
        }
        assert!(pyme_processes(None).is_empty());
    }

    let after: Vec<String> = host_files.iter().map(|f| sha(f)).collect();
    assert_eq!(before, after, "the host's account files changed");
    assert_eq!(Path::new("/data").exists(), host_data, "/data on the host");
    assert_eq!(
        std::fs::read_dir("/sys/class/net").unwrap().count(),
        host_ifaces
    );
    assert!(pyme_processes(None).is_empty());
}
