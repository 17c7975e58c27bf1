//! `provision agent` with the real binary and real processes: services started in order gated on
//! readiness, stopped in reverse order on SIGTERM, no duplicate after a SIGKILLed agent restarts,
//! one agent per root, a changed config file restarting only its service, a broken manifest on
//! SIGHUP changing nothing. Every wait has a hard limit; Drop kills the agent and every process
//! that carries its root's marker.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;

const LIMIT: Duration = Duration::from_secs(30);

/// A tiny HTTP server: logs `start NAME PID`, waits DELAY, listens, logs `listen NAME PID`; on
/// SIGTERM logs `stop NAME PID` and exits.
const SERVER: &str = r#"import http.server, os, signal, sys, time
port, name, log, delay = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
def say(what):
    with open(log, "a") as f:
        f.write(f"{what} {name} {os.getpid()}\n")
def term(*_):
    say("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
say("start")
time.sleep(delay)
# Said before the bind, so it is in the log before any probe can see the port.
say("listen")
srv = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
srv.serve_forever()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    sb: Sandbox,
    ports: (u16, u16),
}

impl Setup {
    fn new() -> Setup {
        common::adopt_orphans();
        let sb = Sandbox::debian();
        // The service user must reach the script and the event log inside the sandbox.
        std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        sb.write("/opt/server.py", SERVER);
        Setup {
            sb,
            ports: (free_port(), free_port()),
        }
    }

    fn events_path(&self) -> String {
        self.sb.path("/srv/run/events").display().to_string()
    }

    /// Service `a` (1 s before it listens) and `b` after it; `a` is after a config file.
    fn manifest(&self, config: &str, b_extra: &str) -> std::path::PathBuf {
        let script = self.sb.path("/opt/server.py").display().to_string();
        let events = self.events_path();
        let (pa, pb) = self.ports;
        self.sb.manifest(
            "m.yaml",
            &format!(
                r#"nodes:
  - name: n1
    address: 10.0.0.1
resources:
  - user: {{name: svc, system: true, create_home: false}}
  - directory: {{path: /srv/run, owner: svc, mode: "0755"}}
  - file: {{path: /etc/a.conf, content: "{config}\n"}}
  - service:
      name: a
      command: [python3, {script}, "{pa}", a, {events}, "1"]
      user: svc
      after: [file:/etc/a.conf, directory:/srv/run]
      readiness: {{tcp: "127.0.0.1:{pa}", interval: 50ms}}
      stop: {{grace: 5s}}
  - service:
      name: b
      command: [python3, {script}, "{pb}", b, {events}, "0"]
      user: svc
      after: [service:a]
      readiness: {{http: {{url: "http://127.0.0.1:{pb}/"}}, interval: 50ms}}
      stop: {{grace: 5s}}{b_extra}
"#
            ),
        )
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.events_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, mut f: impl FnMut(&[String]) -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !f(&self.events()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn agent(&self, manifest: &std::path::Path) -> Agent {
        let log = self
            .sb
            .tmp
            .path()
            .join(format!("agent-{}.log", free_port()));
        let child = Command::new(env!("CARGO_BIN_EXE_provision"))
            .args([
                "agent",
                manifest.to_str().unwrap(),
                "--node",
                "n1",
                "--root",
            ])
            .arg(self.sb.root())
            .args(["--reconcile-interval", "1h"])
            .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child,
            log,
            marker: format!("PROVISION_AGENT_ROOT={}", self.sb.root().display()),
        }
    }

    /// The pids of live processes whose events say `listen NAME`, last first.
    fn pid_of(&self, name: &str) -> Vec<i32> {
        self.events()
            .iter()
            .rev()
            .filter_map(|l| {
                let mut it = l.split(' ');
                (it.next() == Some("listen") && it.next() == Some(name))
                    .then(|| it.next()?.parse().ok())
                    .flatten()
            })
            .collect()
    }
}

struct Agent {
    child: Child,
    log: std::path::PathBuf,
    marker: String,
}

impl Agent {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to [`LIMIT`] for `done`; on timeout, fails with `what` and the agent's log.
    #[track_caller]
    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + LIMIT;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[track_caller]
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Live processes carrying this root's marker.
    fn marked(&self) -> Vec<i32> {
        common::marked(&self.marker)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.marked() {
            let _ = Command::new("kill")
                .args(["-9", &format!("-{pid}")])
                .status();
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        common::reap_adopted();
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
}

fn kinds(events: &[String]) -> Vec<String> {
    events
        .iter()
        .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn services_start_in_order_gated_on_readiness_and_stop_in_reverse() {
    if !common::have_root("services_start_in_order") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    let mut agent = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    // a sleeps 1 s before it listens: b must not have been spawned before a was ready.
    assert_eq!(
        kinds(&s.events()),
        ["start a", "listen a", "start b", "listen b"],
        "log:\n{}",
        agent.log()
    );
    let pids = [s.pid_of("a")[0], s.pid_of("b")[0]];
    agent.signal("TERM");
    let status = agent.wait_exit();
    assert_eq!(status.code(), Some(0), "log:\n{}", agent.log());
    let stops: Vec<String> = kinds(&s.events())
        .into_iter()
        .filter(|k| k.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop b", "stop a"], "log:\n{}", agent.log());
    assert!(pids.iter().all(|&p| !alive(p)), "{pids:?} still alive");
    assert_eq!(agent.marked(), Vec::<i32>::new());
}

#[test]
fn a_sigkilled_agent_restarted_leaves_no_duplicate() {
    if !common::have_root("a_sigkilled_agent_restarted") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    let mut first = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let old = [s.pid_of("a")[0], s.pid_of("b")[0]];
    first.signal("KILL");
    first.wait_exit();
    assert!(old.iter().all(|&p| alive(p)), "the orphans are still there");
    let mut second = s.agent(&m);
    s.wait_for("b listening again", |e| {
        e.iter().filter(|l| l.starts_with("listen b")).count() == 2
    });
    assert!(
        old.iter().all(|&p| !alive(p)),
        "old services {old:?} survived"
    );
    let new = [s.pid_of("a")[0], s.pid_of("b")[0]];
    assert!(new.iter().all(|&p| alive(p)));
    // Exactly one python per service: the two new group leaders (and nothing else) are marked.
    let mut marked = second.marked();
    marked.sort();
    let mut want = new.to_vec();
    want.sort();
    assert_eq!(marked, want, "log:\n{}", second.log());
    assert!(
        second.log().contains("left by an earlier agent"),
        "{}",
        second.log()
    );
    second.signal("TERM");
    assert_eq!(second.wait_exit().code(), Some(0));
}

#[test]
fn a_second_agent_on_the_same_root_refuses() {
    if !common::have_root("a_second_agent_on_the_same_root_refuses") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    let mut first = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let root = s.sb.root().display().to_string();
    let run = common::run(&[
        "agent",
        m.to_str().unwrap(),
        "--node",
        "n1",
        "--root",
        &root,
    ]);
    run.expect(1);
    assert!(
        run.stderr.contains("another provision agent"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&first.child.id().to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(
        kinds(&s.events()).len(),
        4,
        "the second agent started something"
    );
    first.signal("TERM");
    assert_eq!(first.wait_exit().code(), Some(0));
}

#[test]
fn a_changed_config_file_restarts_only_its_service_and_a_broken_manifest_changes_nothing() {
    if !common::have_root("a_changed_config_file_restarts_only_its_service") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    let mut agent = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let (a1, b1) = (s.pid_of("a")[0], s.pid_of("b")[0]);

    // A broken manifest: logged with its location, nothing restarted, the config file kept.
    std::fs::write(&m, "nodes:\n  - name: n1\n    address: nope\n").unwrap();
    agent.signal("HUP");
    agent.wait_until("the refusal", || {
        agent.log().contains("keeping the running one")
    });
    assert!(agent.log().contains("m.yaml:3:14"), "{}", agent.log());
    assert!(alive(a1) && alive(b1));
    assert_eq!(s.sb.read("/etc/a.conf"), "v1\n");

    // The config file a is after changes: a restarts, b keeps its pid.
    s.manifest("v2", "");
    agent.signal("HUP");
    s.wait_for("a listening again", |e| {
        e.iter().filter(|l| l.starts_with("listen a")).count() == 2
    });
    assert_eq!(s.sb.read("/etc/a.conf"), "v2\n");
    assert!(!alive(a1));
    assert!(alive(b1), "b restarted too; log:\n{}", agent.log());
    assert_eq!(s.pid_of("b"), [b1]);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    assert_eq!(agent.marked(), Vec::<i32>::new());
}

/// The manifest of [`Setup::manifest`] under another file name, with an optional third service
/// `c` (no dependencies) on its own port.
fn manifest_as(s: &Setup, name: &str, config: &str, with_c: Option<u16>) -> std::path::PathBuf {
    manifest_c_after(s, name, config, with_c, "directory:/srv/run")
}

/// As [`manifest_as`], with `c` after `c_after`.
fn manifest_c_after(
    s: &Setup,
    name: &str,
    config: &str,
    with_c: Option<u16>,
    c_after: &str,
) -> std::path::PathBuf {
    let extra = with_c.map_or_else(String::new, |port| {
        let script = s.sb.path("/opt/server.py").display().to_string();
        format!(
            r#"
  - service:
      name: c
      command: [python3, {script}, "{port}", c, {}, "0"]
      user: svc
      after: [{c_after}]
      readiness: {{tcp: "127.0.0.1:{port}", interval: 50ms}}
      stop: {{grace: 5s}}"#,
            s.events_path()
        )
    });
    let m = s.manifest(config, &extra);
    let named = m.with_file_name(name);
    std::fs::rename(&m, &named).unwrap();
    named
}

fn apply(s: &Setup, manifest: &std::path::Path, extra: &[&str]) -> common::Run {
    let root = s.sb.root().display().to_string();
    let mut args = vec![
        "apply",
        manifest.to_str().unwrap(),
        "--node",
        "n1",
        "--root",
        &root,
    ];
    if !extra.contains(&"--agent-timeout") {
        args.extend(["--agent-timeout", "30s"]);
    }
    args.extend_from_slice(extra);
    common::run_with_env(&args, &[("PROVISION_STATUS_LISTEN", "127.0.0.1:0")])
}

#[test]
fn apply_hands_a_changed_manifest_to_the_running_agent_and_its_services_follow() {
    if !common::have_root("apply_hands_a_changed_manifest_to_the_running_agent") {
        return;
    }
    let s = Setup::new();
    let m = manifest_as(&s, "v1.yaml", "v1", None);
    let mut agent = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let (a1, b1) = (s.pid_of("a")[0], s.pid_of("b")[0]);
    let pid = agent.child.id().to_string();

    // Another file: a's config changes and a new service c comes.
    let port_c = free_port();
    let v2 = manifest_as(&s, "v2.yaml", "v2", Some(port_c));
    let run = apply(&s, &v2, &[]);
    run.expect(0);
    eprintln!("{}", run.stdout);
    assert!(
        run.stdout.contains("changed file:/etc/a.conf"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("started service:c"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("restarted service:a: file:/etc/a.conf changed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "provision agent (pid {pid}) applied: {}",
            v2.display()
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("generation 2"), "{}", run.stdout);
    assert!(!run.stdout.contains("service:b"), "{}", run.stdout);
    // The agent answered once a (1 s before it listens) and c were ready again: by the time
    // apply returns they listen, and apply says so.
    let events = s.events();
    assert_eq!(
        events.iter().filter(|l| l.starts_with("listen a")).count(),
        2,
        "{events:?}"
    );
    assert!(
        events.iter().any(|l| l.starts_with("listen c")),
        "{events:?}"
    );
    for (line, svc) in [
        ("started service:c, now ready (pid ", "c"),
        (
            "restarted service:a: file:/etc/a.conf changed, now ready (pid ",
            "a",
        ),
    ] {
        let pid = s.pid_of(svc)[0];
        assert!(
            run.stdout.contains(&format!("{line}{pid})")),
            "{}",
            run.stdout
        );
    }
    assert_eq!(s.sb.read("/etc/a.conf"), "v2\n");
    assert!(!alive(a1), "the old a is still running");
    assert!(alive(b1), "b restarted too; log:\n{}", agent.log());
    assert_eq!(s.pid_of("b"), [b1]);
    let (a2, c1) = (s.pid_of("a")[0], s.pid_of("c")[0]);

    // c leaves the manifest: it stops, a and b keep their pids.
    let v3 = manifest_as(&s, "v3.yaml", "v2", None);
    let run = apply(&s, &v3, &["--json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["generation"], 3, "{json}");
    assert_eq!(json["applied"], true);
    assert_eq!(
        json["services"]["stopped"],
        serde_json::json!(["c"]),
        "{json}"
    );
    assert_eq!(json["changed"], 0, "{json}");
    assert_eq!(json["service_states"], serde_json::json!([]), "{json}");
    assert!(
        s.events().iter().any(|l| l == &format!("stop c {c1}")),
        "{:?}",
        s.events()
    );
    // The answer comes once the supervisor was told; c's exit follows within its grace.
    agent.wait_until("c to stop", || !alive(c1));
    assert!(alive(a2) && alive(b1), "log:\n{}", agent.log());
    assert!(
        !s.sb.path("/var/lib/provision/apply.request").exists(),
        "the agent left the request"
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    assert_eq!(agent.marked(), Vec::<i32>::new());
}

#[test]
fn a_kept_service_whose_after_changed_restarts_alone_and_stops_in_the_new_order() {
    if !common::have_root("a_kept_service_whose_after_changed_restarts_alone") {
        return;
    }
    let s = Setup::new();
    let port_c = free_port();
    let v1 = manifest_as(&s, "v1.yaml", "v1", Some(port_c));
    let mut agent = s.agent(&v1);
    s.wait_for("b and c listening", |e| {
        e.iter().any(|l| l.starts_with("listen b")) && e.iter().any(|l| l.starts_with("listen c"))
    });
    let (a1, b1, c1) = (s.pid_of("a")[0], s.pid_of("b")[0], s.pid_of("c")[0]);

    // c is now after b: only c restarts, and the answer comes once it is ready again.
    let v2 = manifest_c_after(&s, "v2.yaml", "v1", Some(port_c), "service:b");
    let run = apply(&s, &v2, &[]);
    run.expect(0);
    let c2 = s.pid_of("c")[0];
    assert_ne!(c1, c2);
    assert!(
        run.stdout.contains(&format!(
            "restarted service:c: what it is after changed, now ready (pid {c2})"
        )),
        "{}",
        run.stdout
    );
    assert!(!alive(c1));
    assert_eq!(
        (s.pid_of("a"), s.pid_of("b")),
        (vec![a1], vec![b1]),
        "a or b restarted"
    );
    assert!(alive(a1) && alive(b1), "log:\n{}", agent.log());

    // SIGTERM stops in reverse dependency order of the new manifest: c (after b) first.
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    let stops: Vec<String> = s
        .events()
        .into_iter()
        .filter(|l| l.starts_with("stop "))
        .collect();
    assert_eq!(
        stops,
        [
            format!("stop c {c1}"),
            format!("stop c {c2}"),
            format!("stop b {b1}"),
            format!("stop a {a1}")
        ],
        "log:\n{}",
        agent.log()
    );
    assert_eq!(agent.marked(), Vec::<i32>::new());
}

#[test]
fn apply_with_a_broken_manifest_sends_nothing_to_the_agent() {
    if !common::have_root("apply_with_a_broken_manifest_sends_nothing_to_the_agent") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    let mut agent = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let (a1, b1) = (s.pid_of("a")[0], s.pid_of("b")[0]);
    let bad =
        s.sb.manifest("bad.yaml", "nodes:\n  - name: n1\n    address: nope\n");
    let result = s.sb.path("/var/lib/provision/apply.result");
    // The start's answer, written once a and b are ready.
    agent.wait_until("the start answer", || result.exists());
    let before = std::fs::read_to_string(&result).unwrap();
    let run = apply(&s, &bad, &[]);
    run.expect(1);
    assert!(run.stderr.contains("bad.yaml:3:14"), "{}", run.stderr);
    // Nothing was sent: no request, no SIGHUP, no new answer, same processes, same config.
    assert!(!s.sb.path("/var/lib/provision/apply.request").exists());
    assert!(!agent.log().contains("SIGHUP"), "{}", agent.log());
    assert_eq!(std::fs::read_to_string(&result).unwrap(), before);
    assert!(alive(a1) && alive(b1));
    assert_eq!(kinds(&s.events()).len(), 4, "{:?}", s.events());
    assert_eq!(s.sb.read("/etc/a.conf"), "v1\n");
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
}

/// An agent `apply --start-agent` started: not our child (apply's), but adopted by this test
/// once apply exits. Drop kills it and everything carrying its root's marker.
struct Detached {
    pid: i32,
    marker: String,
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        // A service it forked just before dying carries the marker only once it has exec'd: wait
        // for the agent to be gone, then look twice.
        let deadline = Instant::now() + LIMIT;
        while alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(100));
            for pid in common::marked(&self.marker) {
                let _ = Command::new("kill")
                    .args(["-9", &format!("-{pid}")])
                    .status();
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        common::reap_adopted();
    }
}

#[test]
fn apply_start_agent_starts_a_detached_agent_whose_services_come_up() {
    if !common::have_root("apply_start_agent_starts_a_detached_agent") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    // Without an agent and without --start-agent: everything but the services, and the hint.
    let run = apply(&s, &m, &[]);
    run.expect(0);
    assert!(
        run.stdout.contains("no provision agent runs for") && run.stdout.contains("--start-agent"),
        "{}",
        run.stdout
    );
    assert!(s.events().is_empty(), "apply started a service");

    let run = apply(&s, &m, &["--start-agent"]);
    run.expect(0);
    let pid: i32 = run
        .stdout
        .split("started provision agent (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in:\n{}", run.stdout));
    let agent = Detached {
        pid,
        marker: format!("PROVISION_AGENT_ROOT={}", s.sb.root().display()),
    };
    assert!(
        run.stdout.contains("status API http://127.0.0.1:"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("started service:a"), "{}", run.stdout);
    assert!(alive(pid), "the agent is gone after apply exited");
    // A session of its own: apply's terminal and process group signals do not reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let session: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(session, pid);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    let log = s.sb.read("/var/log/provision/agent.log");
    assert!(log.contains("agent ready"), "{log}");
    // A second --start-agent finds it running and hands the manifest over instead.
    let again = apply(&s, &m, &["--start-agent"]);
    again.expect(0);
    assert!(
        again
            .stdout
            .contains(&format!("provision agent (pid {pid}) applied")),
        "{}",
        again.stdout
    );

    let pids = [s.pid_of("a")[0], s.pid_of("b")[0]];
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.iter().all(|&p| !alive(p)), "{pids:?} still alive");
    assert_eq!(common::marked(&agent.marker), Vec::<i32>::new());
    let stops: Vec<String> = kinds(&s.events())
        .into_iter()
        .filter(|k| k.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop b", "stop a"]);
}

#[test]
fn apply_says_which_agent_did_not_answer_and_what_to_do() {
    if !common::have_root("apply_says_which_agent_did_not_answer") {
        return;
    }
    let s = Setup::new();
    let m = s.manifest("v1", "");
    // A lock holder that ignores SIGHUP and never answers: a hung agent, as apply sees it.
    let lock = s.sb.path("/var/lib/provision/agent.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    let mut holder = Command::new("sh")
        // --no-fork: sleep itself holds the lock, so killing this pid leaves nothing behind.
        .args(["-c", "trap '' HUP; exec flock --no-fork \"$0\" sleep 60"])
        .arg(&lock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    common::wait_until_locked(&lock, LIMIT);
    std::fs::write(&lock, format!("{pid}\n")).unwrap();
    let run = apply(&s, &m, &["--agent-timeout", "300ms"]);
    let _ = holder.kill();
    let _ = holder.wait();
    common::reap_adopted();
    run.expect(1);
    assert!(
        run.stderr.contains(&format!(
            "the provision agent (pid {pid}) did not answer within 300ms"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("kill -TERM {pid}")),
        "{}",
        run.stderr
    );
    // Nothing was applied locally instead, and no service started.
    assert!(!s.sb.path("/etc/a.conf").exists());
    assert!(s.events().is_empty());
}

/// An agent kills only the leftovers of its own node: a process marked for the same root but
/// seeing another `/` (a chroot or container sharing this process list, here an overlay of `/`)
/// belongs to another agent and is left alone, while a marked process of this `/` is killed.
#[test]
fn leftovers_seen_from_another_root_are_not_this_agents() {
    if !common::have_root("leftovers_seen_from_another_root_are_not_this_agents") {
        return;
    }
    let s = Setup::new();
    let root = s.sb.root().display().to_string();
    let marker = format!("PROVISION_AGENT_ROOT={root}");
    let t = s.sb.tmp.path().join("other");
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let t = t.display().to_string();
    // Both marked sleeps lead sessions (so groups) of their own, as services do, under a
    // `setsid --wait` that stays this test's unmarked child in its group: the test waits on that,
    // so no other test's reaping of adopted processes can take the exit status it waits for.
    let mut elsewhere = Command::new("setsid")
        .args(["--fork", "--wait", "env", &marker])
        .args(["unshare", "-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t overlay overlay -o lowerdir=/,upperdir={t}/upper,workdir={t}/work {t}/merged && exec chroot {t}/merged sleep 600"
        ))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut here = Command::new("setsid")
        .args(["--fork", "--wait", "env", &marker, "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let chrooted = |pid: i32| {
        std::fs::read_link(format!("/proc/{pid}/root"))
            .is_ok_and(|r| r != std::path::Path::new("/"))
    };
    loop {
        let m = common::marked(&marker);
        if m.len() == 2 && m.iter().filter(|&&p| chrooted(p)).count() == 1 {
            break;
        }
        assert!(
            elsewhere.try_wait().unwrap().is_none(),
            "the overlay chroot did not start"
        );
        assert!(Instant::now() < deadline, "the marked sleeps did not start");
        std::thread::sleep(Duration::from_millis(10));
    }

    let m = s.manifest("v1", "");
    let mut agent = s.agent(&m);
    s.wait_for("b listening", |e| {
        e.iter().any(|l| l.starts_with("listen b"))
    });
    // The one of this root was killed before any service started; the other is alive.
    let deadline = Instant::now() + LIMIT;
    while here.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "log:\n{}", agent.log());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        elsewhere.try_wait().unwrap().is_none(),
        "the other root's process was killed; log:\n{}",
        agent.log()
    );
    assert!(
        agent.log().contains("left by an earlier agent"),
        "{}",
        agent.log()
    );
    agent.signal("TERM");
    assert_eq!(agent.wait_exit().code(), Some(0));
    for pid in common::marked(&marker) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = elsewhere.wait();
    let _ = here.wait();
}
