//! The agent's outside: drift repair through inotify, the status API (loopback only by default, a
//! token off loopback), sd_notify to a real datagram socket, and the systemd unit written by
//! `install-agent`. The real binary, real sockets; every wait has a hard limit, and Drop kills the
//! agent and every process that carries its root's marker.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;

const LIMIT: Duration = Duration::from_secs(30);

struct Agent {
    child: Child,
    log: PathBuf,
    marker: String,
    root: PathBuf,
}

impl Agent {
    fn start(sb: &Sandbox, manifest: &Path, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        common::adopt_orphans();
        let log = sb.tmp.path().join("agent.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_provision"));
        cmd.args([
            "agent",
            manifest.to_str().unwrap(),
            "--node",
            "n1",
            "--root",
        ])
        .arg(sb.root())
        .args(["--reconcile-interval", "1h"])
        .args(extra)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("PROVISION_STATUS_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent {
            child: cmd.spawn().unwrap(),
            log,
            marker: format!("PROVISION_AGENT_ROOT={}", sb.root().display()),
            root: sb.root(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address the agent wrote once its status API listens.
    #[track_caller]
    fn status_addr(&mut self) -> String {
        let file = self.root.join("var/lib/provision/status.addr");
        self.until("the status address", |_| {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|s| s.ends_with('\n'))
        })
        .trim()
        .to_owned()
    }

    /// Polls `f` every 5 ms until it gives a value; fails after [`LIMIT`] or if the agent exits.
    #[track_caller]
    fn until<T>(&mut self, what: &str, mut f: impl FnMut(&mut Agent) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "agent exited ({s}) waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[track_caller]
    fn term(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in common::marked(&self.marker) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        common::reap_adopted();
    }
}

/// One GET; (status code, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

#[track_caller]
fn status(addr: &str) -> serde_json::Value {
    let (code, body) = get(addr, "/status", None).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

const FILES: &str = r#"nodes:
  - name: n1
    address: 10.0.0.1
resources:
  - file: {path: /etc/x.conf, content: "managed\n"}
  - file: {path: /etc/other/y.conf, content: "y\n", mode: "0640"}
"#;

#[test]
fn drift_on_a_managed_file_is_repaired_at_once_reported_and_does_not_loop() {
    let sb = Sandbox::empty();
    let m = sb.manifest("m.yaml", FILES);
    let sock_path = sb.tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut agent = Agent::start(
        &sb,
        &m,
        &["--status-listen", "127.0.0.1:0"],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut messages: Vec<String> = Vec::new();
    let recv = |messages: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        if let Ok(n) = notify.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    // sd_notify: READY=1 with a STATUS once the first reconcile is done.
    agent.until("READY=1", |_| {
        recv(&mut messages);
        messages
            .iter()
            .any(|m| m.starts_with("READY=1"))
            .then_some(())
    });
    let ready = messages.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=2 resources (2 changed, 0 failed, 0 skipped)"),
        "{messages:?}"
    );
    assert_eq!(sb.read("/etc/x.conf"), "managed\n");
    let addr = agent.status_addr();
    let first = status(&addr);
    assert_eq!(first["last_reconcile"]["cause"], "start");
    assert_eq!(
        first["drift"]["repairs_total"], 0,
        "the first apply is not drift"
    );

    // A hand edit, the way an editor without atomic save does it.
    let edited = Instant::now();
    std::fs::write(sb.path("/etc/x.conf"), "hand edit\n").unwrap();
    let latency = agent.until("the repair", |_| {
        (std::fs::read_to_string(sb.path("/etc/x.conf")).ok()? == "managed\n")
            .then(|| edited.elapsed())
    });
    eprintln!("drift repair latency: {latency:?}");
    assert!(latency < Duration::from_secs(5), "{latency:?}");
    let doc = agent.until("the drift in /status", |_| {
        let d = status(&addr);
        (d["drift"]["repairs_total"] == 1).then_some(d)
    });
    let ev = &doc["drift"]["events"][0];
    assert_eq!(ev["id"], "file:/etc/x.conf");
    assert_eq!(ev["changes"][0], "content changes (+1 -1 lines)");
    assert_eq!(ev["found_by"], "inotify");
    assert_eq!(ev["repaired"], true);
    assert!(
        agent
            .log()
            .contains("drift repaired: file:/etc/x.conf: content changes (+1 -1 lines)"),
        "{}",
        agent.log()
    );
    let (code, metrics) = get(&addr, "/metrics", None).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("\nprovision_drift_repairs_total 1\n"),
        "{metrics}"
    );

    // A mode change in another watched directory (a rename-based write by someone else).
    let y = sb.path("/etc/other/y.conf");
    std::fs::write(sb.path("/etc/other/.y.tmp"), "y\n").unwrap();
    std::fs::rename(sb.path("/etc/other/.y.tmp"), &y).unwrap();
    agent.until("y repaired", |_| {
        let d = status(&addr);
        (d["drift"]["repairs_total"] == 2).then_some(())
    });
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&y).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // Our own atomic writes do not loop: once repaired, the agent goes quiet.
    std::thread::sleep(Duration::from_millis(300));
    let before = status(&addr)["reconciles_total"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let after = status(&addr)["reconciles_total"].as_u64().unwrap();
    assert_eq!(
        before,
        after,
        "the agent keeps reconciling; log:\n{}",
        agent.log()
    );
    // Start, two repairs, at most one no-op look after each of the three writing reconciles.
    assert!(after <= 6, "{after} reconciles; log:\n{}", agent.log());

    // The watchdog was pinged at half of WATCHDOG_USEC, from the agent loop.
    for _ in 0..20 {
        recv(&mut messages);
    }
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 3, "{pings} watchdog pings: {messages:?}");

    assert_eq!(agent.term().code(), Some(0), "{}", agent.log());
    for _ in 0..10 {
        recv(&mut messages);
    }
    assert!(messages.iter().any(|m| m == "STOPPING=1"), "{messages:?}");
    assert!(!sb.path("/var/lib/provision/status.addr").exists());
}

/// This machine's first non-loopback IPv4 address, if it has one.
fn outside_address() -> Option<String> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
}

#[test]
fn the_status_api_answers_on_loopback_only_and_provision_status_prints_it() {
    let sb = Sandbox::debian();
    let with_service = common::have_root("the_status_api_answers (the service part)");
    let service = if with_service {
        "  - user: {name: svc, system: true, create_home: false}\n  - service: {name: sleeper, command: [sleep, \"600\"], user: svc}\n"
    } else {
        ""
    };
    let m = sb.manifest("m.yaml", &format!("{FILES}{service}"));
    let mut agent = Agent::start(&sb, &m, &["--status-listen", "127.0.0.1:0"], &[]);
    let addr = agent.status_addr();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let port = addr.rsplit(':').next().unwrap();
    match outside_address() {
        Some(ip) => {
            let outside = format!("{ip}:{port}");
            let tried =
                TcpStream::connect_timeout(&outside.parse().unwrap(), Duration::from_secs(2));
            assert!(tried.is_err(), "the status API answered on {outside}");
        }
        None => eprintln!(
            "SKIP the outside-address check: this machine has no non-loopback IPv4 address"
        ),
    }
    assert_eq!(get(&addr, "/health", None).unwrap(), (200, "ok\n".into()));
    assert_eq!(get(&addr, "/nope", None).unwrap().0, 404);

    if with_service {
        let doc = agent.until("sleeper ready", |_| {
            let d = status(&addr);
            (d["services"][0]["state"] == "ready").then_some(d)
        });
        let svc = &doc["services"][0];
        assert_eq!(svc["name"], "sleeper");
        assert!(svc["pid"].as_u64().is_some(), "{svc}");
        assert_eq!(svc["restarts"], 0);
        let (_, metrics) = get(&addr, "/metrics", None).unwrap();
        for line in [
            "provision_services_ready 1",
            "provision_service_restarts_total{service=\"sleeper\"} 0",
            "provision_drift_repairs_total 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
        }
        assert!(
            metrics.contains("\nprovision_last_reconcile_timestamp_seconds 1"),
            "{metrics}"
        );
    }

    let root = sb.root().display().to_string();
    let table = common::run(&["status", "--root", &root]);
    table.expect(0);
    assert!(
        table.stdout.starts_with("node n1 (agent pid "),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("(start): "), "{}", table.stdout);
    assert!(
        table.stdout.contains("drift repairs: 0"),
        "{}",
        table.stdout
    );
    if with_service {
        assert!(table.stdout.contains("\nSERVICE  "), "{}", table.stdout);
        assert!(
            table.stdout.contains("\nsleeper  ready (pid "),
            "{}",
            table.stdout
        );
    }
    let json = common::run(&["status", "--listen", &addr, "--json"]);
    json.expect(0);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["node"], "n1");

    assert_eq!(agent.term().code(), Some(0), "{}", agent.log());
    let gone = common::run(&["status", "--listen", &addr]);
    gone.expect(3);
    assert!(
        gone.stderr.contains("no provision agent answers"),
        "{}",
        gone.stderr
    );
}

#[test]
fn a_status_api_off_loopback_needs_a_token_file_and_then_the_token() {
    let sb = Sandbox::empty();
    let m = sb.manifest("m.yaml", FILES);
    let root = sb.root().display().to_string();
    let before = sb.snapshot();
    let run = common::run(&[
        "agent",
        m.to_str().unwrap(),
        "--node",
        "n1",
        "--root",
        &root,
        "--status-listen",
        "0.0.0.0:0",
    ]);
    run.expect(1);
    assert!(
        run.stderr.contains("not a loopback address") && run.stderr.contains("--status-token-file"),
        "{}",
        run.stderr
    );
    assert_eq!(sb.snapshot(), before, "a refused agent touched the root");

    let token = sb.work().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let mut agent = Agent::start(
        &sb,
        &m,
        &[
            "--status-listen",
            "0.0.0.0:0",
            "--status-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    let port = agent.status_addr().rsplit(':').next().unwrap().to_owned();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(get(&addr, "/status", None).unwrap().0, 401);
    assert_eq!(get(&addr, "/metrics", Some("wrong")).unwrap().0, 401);
    let (code, body) = get(&addr, "/status", Some("s3cret-token")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("s3cret"), "the token leaked into /status");
    let cli = common::run(&[
        "status",
        "--listen",
        &addr,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    cli.expect(0);
    assert_eq!(agent.term().code(), Some(0), "{}", agent.log());
}

/// What a client that sends its request one byte at a time got.
struct Trickled {
    /// Bytes of the request it had sent when the answer came.
    sent: usize,
    answer: String,
}

/// Sends `request` one byte at a time, waiting up to 100 ms for an answer after each (so the
/// whole request takes seconds); stops sending once an answer comes, and reads it to the end.
fn trickle(addr: &str, request: &[u8]) -> Trickled {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answer = Vec::new();
    let mut sent = 0;
    let mut buf = [0u8; 4096];
    while answer.is_empty() && sent < request.len() {
        if s.write_all(&request[sent..=sent]).is_err() {
            break;
        }
        sent += 1;
        match s.read(&mut buf) {
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_end(&mut answer);
    Trickled {
        sent,
        answer: String::from_utf8_lossy(&answer).into_owned(),
    }
}

#[test]
fn a_client_trickling_its_request_is_cut_off_and_others_are_answered_meanwhile() {
    let sb = Sandbox::empty();
    let m = sb.manifest("m.yaml", FILES);
    let mut agent = Agent::start(&sb, &m, &["--status-listen", "127.0.0.1:0"], &[]);
    let addr = agent.status_addr();
    agent.until("the first reconcile", |_| {
        get(&addr, "/status", None)
            .ok()
            .filter(|(code, body)| *code == 200 && body.contains("\"reconciles_total\": 1"))
    });
    // 60 bytes at one per 100 ms would take 6 s; the head must be whole 2 s after the connect.
    let request = b"GET /status HTTP/1.1\r\nHost: x\r\nUser-Agent: trickle/1.0 x\r\n\r\n";
    assert_eq!(request.len(), 60);
    let (tx, rx) = std::sync::mpsc::channel();
    let tricklers: Vec<_> = (0..3)
        .map(|_| {
            let (addr, tx) = (addr.clone(), tx.clone());
            std::thread::spawn(move || {
                let got = trickle(&addr, request);
                let _ = tx.send(());
                got
            })
        })
        .collect();
    // Each trickler's thread sends its first byte at once; answers to other clients must not
    // wait for them (one accept loop answering in turn would hold every request behind them).
    std::thread::sleep(Duration::from_millis(300));
    for path in ["/health", "/status", "/metrics"] {
        let (code, body) = get(&addr, path, None).unwrap();
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert!(
        rx.try_recv().is_err(),
        "a trickling client was answered before the normal requests came back"
    );
    for t in tricklers {
        let got = t.join().unwrap();
        assert!(
            got.answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "the trickling client got: {:?}",
            got.answer
        );
        assert!(
            got.sent < request.len(),
            "the trickling client sent its whole request ({} bytes) before it was cut off",
            got.sent
        );
    }

    // A head over the limit is refused without waiting for its end.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = format!("GET /status HTTP/1.1\r\nX-Fill: {}", "a".repeat(20 * 1024));
    let _ = s.write_all(big.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 431 "),
        "an oversized head got: {answer:?}"
    );
    assert_eq!(get(&addr, "/health", None).unwrap(), (200, "ok\n".into()));
    assert_eq!(agent.term().code(), Some(0), "{}", agent.log());
}

#[test]
fn install_agent_writes_and_enables_a_unit_systemd_accepts() {
    let sb = Sandbox::empty();
    let m = sb.manifest("cluster.yaml", FILES);
    let root = sb.root().display().to_string();
    let first = common::run(&[
        "install-agent",
        m.to_str().unwrap(),
        "--root",
        &root,
        "--node",
        "n1",
    ]);
    first.expect(0);
    assert!(first.stdout.starts_with("wrote "), "{}", first.stdout);
    let unit = sb.read("/etc/systemd/system/provision-agent.service");
    let exec = format!(
        "ExecStart={} agent {} --node n1",
        env!("CARGO_BIN_EXE_provision"),
        m.display()
    );
    for line in [
        exec.as_str(),
        "Type=notify",
        "Restart=always",
        "After=network-online.target",
        "Wants=network-online.target",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
    }
    let link = sb.path("/etc/systemd/system/multi-user.target.wants/provision-agent.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/systemd/system/provision-agent.service")
    );
    let again = common::run(&[
        "install-agent",
        m.to_str().unwrap(),
        "--root",
        &root,
        "--node",
        "n1",
    ]);
    again.expect(0);
    assert!(again.stdout.starts_with("unchanged "), "{}", again.stdout);
    assert!(again.stdout.contains("already enabled"), "{}", again.stdout);

    let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(sb.path("/etc/systemd/system/provision-agent.service"))
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
    else {
        eprintln!(
            "SKIP systemd-analyze verify: systemd-analyze is not installed (apt-get install systemd)"
        );
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("provision-agent.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
