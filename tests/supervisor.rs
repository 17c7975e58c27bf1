//! The supervisor with real processes: identities, process groups, logs, probes against real
//! listeners, start order, restarts, the breaker, liveness, ordered stop. Every wait has a hard
//! limit, and each test checks that none of its processes is left.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Uid;
use provision::supervisor::logfile::numbered;
use provision::supervisor::process::group_members;
use provision::supervisor::{
    BackoffConfig, Check, ConfigError, EventKind, Exit, Identity, LogConfig, Probe, Process,
    ProcessSpec, RestartPolicy, ServiceSpec, SpawnError, State, StopConfig, Supervisor,
};

const LIMIT: Duration = Duration::from_secs(20);

/// Services run as `nobody` when the tests run as root (never as root), else as the tester.
fn identity() -> Option<Identity> {
    Uid::effective().is_root().then(|| Identity {
        user: "nobody".into(),
        uid: 65534,
        gid: 65534,
        groups: vec![],
        home: "/nonexistent".into(),
    })
}

/// A temporary folder any service user may write to.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

fn sh(name: &str, script: &str, dir: &Path) -> ProcessSpec {
    // Workers whose shell dies first come back to this test (which reaps them when it kills
    // their group), not to PID 1: a CI runner that is PID 1 may take their exit for its own.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    ProcessSpec {
        name: name.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("D".into(), dir.display().to_string())],
        cwd: Some("/".into()),
        identity: identity(),
        allow_root: false,
        umask: None,
        log: LogConfig {
            path: dir.join(format!("{name}.log")),
            max_bytes: 1 << 20,
            keep: 2,
        },
        stop: StopConfig {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(2),
        },
    }
}

fn service(process: ProcessSpec, after: &[&str]) -> ServiceSpec {
    ServiceSpec {
        process,
        after: after.iter().map(|s| s.to_string()).collect(),
        readiness: None,
        ready_timeout: Duration::from_secs(10),
        liveness: None,
        liveness_failures: 2,
        backoff: BackoffConfig {
            base: Duration::from_millis(100),
            ..BackoffConfig::default()
        },
        wait_for: Vec::new(),
        wait_timeout: Duration::from_secs(10),
    }
}

#[track_caller]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Live processes whose command line contains `arg` as a whole argument.
fn alive_with(arg: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            (state != 'Z' && cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())).then_some(pid)
        })
        .collect()
}

#[track_caller]
fn assert_none_left(markers: &[&str]) {
    for m in markers {
        wait_until(&format!("no process with `{m}`"), || {
            alive_with(m).is_empty()
        });
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------- process

#[test]
fn runs_as_its_user_with_groups_home_and_umask() {
    if !Uid::effective().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let dir = open_dir();
    let mut spec = sh(
        "ident",
        "id -u; id -g; id -G; echo \"home=$HOME user=$USER\"; umask; pwd",
        dir.path(),
    );
    spec.identity = Some(Identity {
        groups: vec![44, 105],
        ..identity().unwrap()
    });
    spec.umask = Some(0o027);
    spec.cwd = Some(dir.path().to_path_buf());
    let mut p = Process::spawn(&spec).unwrap();
    wait_until("exit", || p.try_exit().is_some());
    assert_eq!(p.try_exit(), Some(Exit::Code(0)));
    let log = dir.path().join("ident.log");
    wait_until("log", || read(&log).lines().count() >= 6);
    let text = read(&log);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "65534", "{text}");
    assert_eq!(lines[1], "65534", "{text}");
    let groups: Vec<&str> = lines[2].split_whitespace().collect();
    assert!(groups.contains(&"44") && groups.contains(&"105"), "{text}");
    assert!(!groups.contains(&"0"), "root group kept: {text}");
    assert_eq!(lines[3], "home=/nonexistent user=nobody");
    assert_eq!(lines[4], "0027");
    assert_eq!(lines[5], dir.path().display().to_string());
}

#[test]
fn refuses_root_unless_allowed() {
    let dir = open_dir();
    let mut spec = sh("rooty", "exec sleep 3001", dir.path());
    spec.identity = Some(Identity {
        user: "root".into(),
        uid: 0,
        gid: 0,
        groups: vec![],
        home: "/root".into(),
    });
    let err = Process::spawn(&spec).unwrap_err();
    assert!(matches!(err, SpawnError::Root(_)), "{err}");
    assert!(err.to_string().contains("allow_root: true"), "{err}");
    if Uid::effective().is_root() {
        // Running as the agent itself would be root too.
        spec.identity = None;
        assert!(matches!(Process::spawn(&spec), Err(SpawnError::Root(_))));
        spec.allow_root = true;
        let mut p = Process::spawn(&spec).unwrap();
        assert_eq!(p.stop(&spec.stop), Exit::Signal(Signal::SIGTERM as i32));
    }
    assert_none_left(&["3001"]);
}

#[test]
fn stop_kills_the_whole_group_after_the_grace_period() {
    let dir = open_dir();
    // The shell and its children ignore SIGTERM: only the SIGKILL after the grace ends them.
    let mut spec = sh(
        "stubborn",
        "trap '' TERM; sleep 3002 & sleep 3003 & wait",
        dir.path(),
    );
    spec.stop.grace = Duration::from_millis(300);
    let mut p = Process::spawn(&spec).unwrap();
    let pgid = p.pgid();
    wait_until("three group members", || group_members(pgid).len() >= 3);
    let t = Instant::now();
    let exit = p.stop(&spec.stop);
    let took = t.elapsed();
    assert_eq!(exit, Exit::Signal(Signal::SIGKILL as i32));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(group_members(pgid).is_empty(), "{:?}", group_members(pgid));
    assert_none_left(&["3002", "3003"]);
}

#[test]
fn stop_is_quick_when_the_group_obeys_the_signal() {
    let dir = open_dir();
    let mut spec = sh("polite", "sleep 3004 & sleep 3005 & wait", dir.path());
    spec.stop.grace = Duration::from_secs(10);
    let mut p = Process::spawn(&spec).unwrap();
    let pgid = p.pgid();
    wait_until("three group members", || group_members(pgid).len() >= 3);
    let t = Instant::now();
    assert_eq!(p.stop(&spec.stop), Exit::Signal(Signal::SIGTERM as i32));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_none_left(&["3004", "3005"]);
}

#[test]
fn dropping_a_process_kills_its_group_and_a_crash_takes_its_workers() {
    let dir = open_dir();
    let p = Process::spawn(&sh("dropped", "sleep 3006 & exec sleep 3007", dir.path())).unwrap();
    wait_until("both sleeps", || {
        alive_with("3006").len() == 1 && alive_with("3007").len() == 1
    });
    drop(p);
    assert_none_left(&["3006", "3007"]);
    // The leader exits and leaves a worker behind: the worker goes too.
    let mut p = Process::spawn(&sh("crashy", "sleep 3008 & exit 4", dir.path())).unwrap();
    wait_until("exit", || p.try_exit().is_some());
    assert_eq!(p.try_exit(), Some(Exit::Code(4)));
    assert_none_left(&["3008"]);
}

#[test]
fn output_goes_to_a_rotated_log() {
    let dir = open_dir();
    let mut spec = sh(
        "chatty",
        "i=0; while [ $i -lt 200 ]; do echo \"line $i of the chatty service.....\"; i=$((i+1)); done; echo err >&2",
        dir.path(),
    );
    spec.log.max_bytes = 2000;
    spec.log.keep = 2;
    let log = spec.log.path.clone();
    let mut p = Process::spawn(&spec).unwrap();
    wait_until("exit", || p.try_exit().is_some());
    wait_until("last line", || read(&log).contains("err\n"));
    let current = read(&log);
    assert!(current.contains("line 199 "), "{current}");
    for path in [log.clone(), numbered(&log, 1), numbered(&log, 2)] {
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > 0 && len <= 2000, "{}: {len}", path.display());
    }
    assert!(!numbered(&log, 3).exists());
    assert!(read(&numbered(&log, 1)).ends_with("....\n"));
}

// ---------------------------------------------------------------- probes

/// A one-request-at-a-time HTTP responder on a free loopback port; it answers every request.
fn http_server(status: u16, body: &'static str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let path_ok = req.starts_with(b"GET /health HTTP/1.");
            let (code, text) = if path_ok { (status, body) } else { (404, "no") };
            let _ = write!(
                s,
                "HTTP/1.0 {code} X\r\nContent-Type: text/plain\r\n\r\n{text}"
            );
        }
    });
    addr
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const T: Duration = Duration::from_secs(2);

#[test]
fn tcp_probe() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    assert_eq!(Check::Tcp { addr }.run(T, 0), Ok(()));
    let closed = format!("127.0.0.1:{}", free_port());
    let err = Check::Tcp { addr: closed }.run(T, 0).unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn http_probe_checks_status_and_body() {
    let addr = http_server(200, "{\"ok\": true, \"ready\": 1}");
    let http = |path: &str, status, body: Option<&str>| Check::Http {
        url: format!("http://{addr}{path}"),
        status,
        body_contains: body.map(str::to_string),
        token_file: None,
    };
    assert_eq!(http("/health", 200, None).run(T, 0), Ok(()));
    assert_eq!(http("/health", 200, Some("\"ok\": true")).run(T, 0), Ok(()));
    let err = http("/health", 200, Some("nope")).run(T, 0).unwrap_err();
    assert!(err.contains("does not contain \"nope\""), "{err}");
    let err = http("/other", 200, None).run(T, 0).unwrap_err();
    assert!(err.contains("status 404, expected 200"), "{err}");
    assert_eq!(http("/other", 404, None).run(T, 0), Ok(()));
    // https is probed too (tests/fleet.rs has one against a real TLS server); here: nothing
    // listens, and the error says so.
    let err = Check::Http {
        url: format!("https://127.0.0.1:{}/", free_port()),
        status: 200,
        body_contains: None,
        token_file: None,
    }
    .run(T, 0)
    .unwrap_err();
    assert!(err.contains("refused"), "{err}");
}

#[test]
fn http_probe_gives_up_on_a_silent_server_within_its_timeout() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts (the kernel does) but never answers.
    let t = Instant::now();
    let err = Check::Http {
        url: format!("http://{addr}/health"),
        status: 200,
        body_contains: None,
        token_file: None,
    }
    .run(Duration::from_millis(300), 0)
    .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(err.contains("GET"), "{err}");
    drop(l);
}

#[test]
fn file_command_and_log_line_probes() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ready");
    let file = Check::File { path: f.clone() };
    assert!(file.run(T, 0).is_err());
    std::fs::write(&f, "").unwrap();
    assert_eq!(file.run(T, 0), Ok(()));

    let cmd = |p: &str, args: &[&str]| Check::Command {
        program: p.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(cmd("true", &[]).run(T, 0), Ok(()));
    assert!(cmd("false", &[]).run(T, 0).unwrap_err().contains("failed"));
    let t = Instant::now();
    let err = cmd("sleep", &["3009"])
        .run(Duration::from_millis(200), 0)
        .unwrap_err();
    assert!(err.contains("did not finish"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_none_left(&["3009"]);

    let log = dir.path().join("svc.log");
    std::fs::write(&log, "old run: Serving on 8080\n").unwrap();
    let start = std::fs::metadata(&log).unwrap().len();
    let line = Check::LogLine {
        path: log.clone(),
        contains: "Serving on".into(),
    };
    assert_eq!(line.run(T, 0), Ok(()));
    assert!(
        line.run(T, start).is_err(),
        "an old run's line must not count"
    );
    std::fs::write(&log, "old run: Serving on 8080\nnew: Serving on 8080\n").unwrap();
    assert_eq!(line.run(T, start), Ok(()));
}

// ---------------------------------------------------------------- supervisor

fn file_probe(path: PathBuf) -> Option<Probe> {
    Some(Probe {
        check: Check::File { path },
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
    })
}

fn events_of(sup: &Supervisor, name: &str) -> Vec<(EventKind, Instant)> {
    sup.events()
        .into_iter()
        .filter(|e| e.service == name)
        .map(|e| (e.kind, e.at))
        .collect()
}

fn spawned_at(sup: &Supervisor, name: &str) -> Vec<Instant> {
    events_of(sup, name)
        .into_iter()
        .filter_map(|(k, at)| matches!(k, EventKind::Spawned { .. }).then_some(at))
        .collect()
}

fn state(sup: &Supervisor, name: &str) -> State {
    sup.status()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .state
}

#[test]
fn dependents_start_when_their_dependency_is_ready_not_when_it_is_spawned() {
    let dir = open_dir();
    let d = dir.path();
    let mut rule = service(
        sh(
            "rule",
            "sleep 0.5; touch \"$D/rule-ready\"; exec sleep 3011",
            d,
        ),
        &[],
    );
    rule.readiness = file_probe(d.join("rule-ready"));
    // Listed first, so only the dependency can hold it back.
    let node = service(sh("node", "exec sleep 3012", d), &["rule"]);
    let sup = Supervisor::start(vec![node, rule]).unwrap();
    wait_until("rule starting", || {
        matches!(state(&sup, "rule"), State::Starting { .. })
    });
    assert_eq!(state(&sup, "node"), State::Waiting { on: "rule".into() });
    wait_until("node ready", || {
        matches!(state(&sup, "node"), State::Ready { .. })
    });
    let rule_ready = events_of(&sup, "rule")
        .into_iter()
        .find_map(|(k, at)| (k == EventKind::Ready).then_some(at))
        .unwrap();
    let rule_spawned = spawned_at(&sup, "rule")[0];
    let node_spawned = spawned_at(&sup, "node")[0];
    assert!(node_spawned >= rule_ready);
    // The rule's own half second of start-up lies between: its Spawned event is stamped just
    // after the fork, so a slow parent can stamp it a little after the child began to sleep.
    let gap = node_spawned - rule_spawned;
    assert!(gap >= Duration::from_millis(400), "{gap:?}");
    eprintln!(
        "rule spawned→ready {:?}, ready→node spawned {:?}",
        rule_ready - rule_spawned,
        node_spawned - rule_ready
    );
    drop(sup);
    assert_none_left(&["3011", "3012"]);
}

#[test]
fn a_crash_is_restarted_at_once() {
    let dir = open_dir();
    let d = dir.path();
    let script = "if [ -e \"$D/crashed\" ]; then exec sleep 3021; fi; touch \"$D/crashed\"; exit 3";
    let sup = Supervisor::start(vec![service(sh("crash", script, d), &[])]).unwrap();
    wait_until("second run", || spawned_at(&sup, "crash").len() == 2);
    wait_until("ready", || {
        matches!(state(&sup, "crash"), State::Ready { .. })
    });
    let status = sup.status().remove(0);
    assert_eq!(status.restarts, 1);
    assert_eq!(status.last_exit, Some(Exit::Code(3)));
    let crashed_file = std::fs::metadata(d.join("crashed"))
        .unwrap()
        .modified()
        .unwrap();
    let second = spawned_at(&sup, "crash")[1];
    let second_wall = SystemTime::now() - second.elapsed();
    let latency = second_wall.duration_since(crashed_file).unwrap_or_default();
    let detected = events_of(&sup, "crash")
        .into_iter()
        .find_map(|(k, at)| (k == EventKind::Exited(Exit::Code(3))).then_some(at))
        .unwrap();
    eprintln!(
        "crash-to-restart latency: {latency:?} (from the crash's last file write); exit seen→respawn {:?}",
        second - detected
    );
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    drop(sup);
    assert_none_left(&["3021"]);
}

#[test]
fn repeated_crashes_back_off_and_the_breaker_trips_and_is_reported() {
    let dir = open_dir();
    let mut crash = service(sh("loop", "exit 1", dir.path()), &[]);
    crash.backoff = BackoffConfig {
        policy: RestartPolicy::Always,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(5),
        jitter: 0.2,
        healthy_after: Duration::from_secs(10),
        start_limit: 4,
        start_window: Duration::from_secs(60),
    };
    let sup = Supervisor::start(vec![crash]).unwrap();
    wait_until("failed", || {
        matches!(state(&sup, "loop"), State::Failed { .. })
    });
    let spawns = spawned_at(&sup, "loop");
    assert_eq!(spawns.len(), 4);
    let gaps: Vec<Duration> = spawns.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between starts: {gaps:?}");
    assert!(gaps[0] < Duration::from_secs(2), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(80), "{gaps:?}");
    assert!(gaps[2] >= Duration::from_millis(160), "{gaps:?}");
    let shown = state(&sup, "loop").to_string();
    assert!(shown.starts_with("failing, gave up at 20"), "{shown}");
    assert!(
        shown.contains("4 starts within 60s, last exit status 1"),
        "{shown}"
    );
    // It stays given up.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(spawned_at(&sup, "loop").len(), 4);
    assert!(
        events_of(&sup, "loop")
            .iter()
            .any(|(k, _)| matches!(k, EventKind::GaveUp(_)))
    );
}

#[test]
fn a_clean_exit_under_on_failure_stays_down() {
    let dir = open_dir();
    let mut once = service(sh("once", "exit 0", dir.path()), &[]);
    once.backoff.policy = RestartPolicy::OnFailure;
    let sup = Supervisor::start(vec![once]).unwrap();
    wait_until("exited", || {
        state(&sup, "once")
            == State::Exited {
                exit: Exit::Code(0),
            }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(spawned_at(&sup, "once").len(), 1);
}

#[test]
fn a_hung_service_is_restarted_by_its_liveness_probe() {
    let dir = open_dir();
    let port = free_port();
    // Ready, but never answers on the port its liveness probe watches.
    let mut hung = service(sh("hung", "exec sleep 3031", dir.path()), &[]);
    hung.liveness = Some(Probe {
        check: Check::Tcp {
            addr: format!("127.0.0.1:{port}"),
        },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
    });
    hung.liveness_failures = 2;
    let sup = Supervisor::start(vec![hung]).unwrap();
    wait_until("a restart", || spawned_at(&sup, "hung").len() >= 2);
    let events = events_of(&sup, "hung");
    let first_pid = events
        .iter()
        .find_map(|(k, _)| match k {
            EventKind::Spawned { pid } => Some(*pid),
            _ => None,
        })
        .unwrap();
    assert!(
        events
            .iter()
            .any(|(k, _)| matches!(k, EventKind::Hung(why) if why.contains("refused"))),
        "{events:?}"
    );
    wait_until("old pid gone", || {
        !Path::new(&format!("/proc/{first_pid}")).exists()
            || alive_with("3031").iter().all(|p| *p as u32 != first_pid)
    });
    drop(sup);
    assert_none_left(&["3031"]);
}

#[test]
fn a_service_never_ready_is_killed_and_retried() {
    let dir = open_dir();
    let mut slow = service(sh("slow", "exec sleep 3032", dir.path()), &[]);
    slow.readiness = file_probe(dir.path().join("never"));
    slow.ready_timeout = Duration::from_millis(200);
    let sup = Supervisor::start(vec![slow]).unwrap();
    wait_until("a retry", || spawned_at(&sup, "slow").len() >= 2);
    assert!(
        events_of(&sup, "slow")
            .iter()
            .any(|(k, _)| matches!(k, EventKind::NotReady(_)))
    );
    drop(sup);
    assert_none_left(&["3032"]);
}

#[test]
fn stop_runs_in_reverse_dependency_order_and_leaves_nothing() {
    let dir = open_dir();
    let d = dir.path();
    let mut sup = Supervisor::start(vec![
        service(sh("c", "sleep 3043 & exec sleep 3044", d), &["b"]),
        service(sh("a", "exec sleep 3041", d), &[]),
        service(sh("b", "exec sleep 3042", d), &["a"]),
    ])
    .unwrap();
    wait_until("all ready", || {
        sup.status()
            .iter()
            .all(|s| matches!(s.state, State::Ready { .. }))
    });
    let names = |pick: fn(&EventKind) -> bool, sup: &Supervisor| -> Vec<String> {
        sup.events()
            .into_iter()
            .filter(|e| pick(&e.kind))
            .map(|e| e.service)
            .collect()
    };
    assert_eq!(
        names(|k| matches!(k, EventKind::Spawned { .. }), &sup),
        ["a", "b", "c"]
    );
    sup.stop();
    assert_eq!(
        names(|k| matches!(k, EventKind::Stopped(Some(_))), &sup),
        ["c", "b", "a"]
    );
    let status = sup.status();
    assert!(
        status.iter().all(|s| s.state == State::Stopped),
        "{status:?}"
    );
    assert!(status.iter().all(|s| s.pid.is_none()), "{status:?}");
    assert_none_left(&["3041", "3042", "3043", "3044"]);
}

#[test]
fn refusing_root_is_reported_as_a_failure_and_blocks_dependents() {
    let dir = open_dir();
    let mut root = sh("rooty", "exec sleep 3061", dir.path());
    root.identity = Some(Identity {
        user: "root".into(),
        uid: 0,
        gid: 0,
        groups: vec![],
        home: "/root".into(),
    });
    let sup = Supervisor::start(vec![
        service(root, &[]),
        service(sh("after-root", "exec sleep 3062", dir.path()), &["rooty"]),
    ])
    .unwrap();
    wait_until("failed", || {
        matches!(state(&sup, "rooty"), State::Failed { .. })
    });
    let shown = state(&sup, "rooty").to_string();
    assert!(shown.contains("would run as root"), "{shown}");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        state(&sup, "after-root"),
        State::Waiting { on: "rooty".into() }
    );
    drop(sup);
    assert_none_left(&["3061", "3062"]);
}

#[test]
fn bad_sets_are_refused() {
    let dir = open_dir();
    let d = dir.path();
    let err = Supervisor::start(vec![service(sh("a", "true", d), &["ghost"])]).unwrap_err();
    assert_eq!(
        err,
        ConfigError::UnknownAfter {
            service: "a".into(),
            after: "ghost".into()
        }
    );
    let err = Supervisor::start(vec![
        service(sh("a", "true", d), &["b"]),
        service(sh("b", "true", d), &["a"]),
        service(sh("c", "true", d), &[]),
    ])
    .unwrap_err();
    assert_eq!(err, ConfigError::Cycle(vec!["a".into(), "b".into()]));
    let err = Supervisor::start(vec![
        service(sh("a", "true", d), &[]),
        service(sh("a", "true", d), &[]),
    ])
    .unwrap_err();
    assert_eq!(err, ConfigError::Duplicate("a".into()));
}

// ---------------------------------------------------------------- wait_for

fn wait_tcp(addr: &str) -> Probe {
    Probe {
        check: Check::Tcp { addr: addr.into() },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
    }
}

#[test]
fn wait_for_holds_a_start_until_a_remote_port_answers() {
    let dir = open_dir();
    let d = dir.path();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut node = service(sh("node", "exec sleep 3091", d), &[]);
    node.wait_for = vec![wait_tcp(&addr)];
    let sup = Supervisor::start(vec![node]).unwrap();
    let on = format!("tcp {addr}");
    wait_until("waiting for the port", || {
        state(&sup, "node") == State::Waiting { on: on.clone() }
    });
    assert_eq!(
        state(&sup, "node").to_string(),
        format!("waiting for tcp {addr} to be ready")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        spawned_at(&sup, "node").is_empty(),
        "spawned before the port answered"
    );
    let opened = Instant::now();
    let _listener = TcpListener::bind(&addr).unwrap();
    wait_until("node ready", || {
        matches!(state(&sup, "node"), State::Ready { .. })
    });
    assert!(spawned_at(&sup, "node")[0] >= opened);
    eprintln!(
        "port open → spawned in {:?}",
        spawned_at(&sup, "node")[0] - opened
    );
    drop(sup);
    assert_none_left(&["3091"]);
}

#[test]
fn wait_for_gives_up_after_its_timeout_and_says_on_what() {
    let dir = open_dir();
    let d = dir.path();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut node = service(sh("node", "exec sleep 3092", d), &[]);
    node.wait_for = vec![wait_tcp(&addr)];
    node.wait_timeout = Duration::from_millis(300);
    let sup = Supervisor::start(vec![node]).unwrap();
    wait_until("failed", || {
        matches!(state(&sup, "node"), State::Failed { .. })
    });
    let shown = state(&sup, "node").to_string();
    assert!(
        shown.contains(&format!("gave up waiting for tcp {addr}")),
        "{shown}"
    );
    assert!(shown.contains("refused"), "{shown}");
    assert!(spawned_at(&sup, "node").is_empty());
    drop(sup);
}

// ---------------------------------------------------------------- probes as the service

#[test]
fn command_probes_run_as_the_service_user_with_its_clean_environment() {
    let dir = open_dir();
    let d = dir.path();
    let mut svc = service(sh("probed", "exec sleep 3051", d), &[]);
    // The probe records who ran it and with what environment, then passes.
    svc.readiness = Some(Probe {
        check: Check::Command {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "id -u > \"$D/probe-uid\"; id -G > \"$D/probe-groups\"; env > \"$D/probe-env\""
                    .into(),
            ],
        },
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    });
    let sup = Supervisor::start(vec![svc]).unwrap();
    wait_until("ready", || {
        matches!(state(&sup, "probed"), State::Ready { .. })
    });
    let (uid, gid, home) = identity().map_or_else(
        || {
            (
                Uid::effective().as_raw(),
                nix::unistd::Gid::effective().as_raw(),
                std::env::var("HOME").unwrap_or_default(),
            )
        },
        |i| (i.uid, i.gid, i.home),
    );
    assert_eq!(read(&d.join("probe-uid")).trim(), uid.to_string());
    if identity().is_some() {
        // Only the service's groups: not root's.
        assert_eq!(read(&d.join("probe-groups")).trim(), gid.to_string());
    }
    let env = read(&d.join("probe-env"));
    assert!(env.lines().any(|l| l == format!("HOME={home}")), "{env}");
    assert!(
        env.lines().any(|l| l == format!("D={}", d.display())),
        "{env}"
    );
    // The agent's (here: the test's) own environment does not leak into the probe.
    assert!(!env.contains("CARGO"), "{env}");
    drop(sup);
    assert_none_left(&["3051"]);
}

// ---------------------------------------------------------------- liveness kill honours stop

/// A ready service whose liveness probe always fails, that logs the signals it gets.
fn hung_service(d: &Path, name: &str, script: &str, grace: Duration) -> ServiceSpec {
    let mut spec = service(sh(name, script, d), &[]);
    spec.process.stop = StopConfig {
        signal: Signal::SIGUSR1,
        grace,
    };
    spec.liveness = Some(Probe {
        check: Check::File {
            path: d.join("never"),
        },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
    });
    spec.liveness_failures = 2;
    spec
}

fn exits_after_hung(sup: &Supervisor, name: &str) -> Vec<(Exit, Instant, Instant)> {
    let events = events_of(sup, name);
    let mut out = Vec::new();
    let mut hung_at = None;
    for (k, at) in events {
        match k {
            EventKind::Hung(_) => hung_at = Some(at),
            EventKind::Exited(exit) => {
                if let Some(h) = hung_at.take() {
                    out.push((exit, h, at));
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_liveness_kill_sends_the_stop_signal_first_and_sigkills_the_group_after_the_grace() {
    let dir = open_dir();
    let d = dir.path();
    // Obeys the stop signal (SIGUSR1): logs it and exits 0, which still counts as a failure: it
    // restarts even under `on-failure`.
    let mut obeys = hung_service(
        d,
        "obeys",
        "trap 'echo usr1 >> \"$D/obeys-signals\"; exit 0' USR1; while :; do sleep 0.05; done # 3061",
        Duration::from_secs(10),
    );
    obeys.backoff.policy = RestartPolicy::OnFailure;
    // Ignores it: logs it and carries on, so only SIGKILL ends it, once the grace is over.
    let grace = Duration::from_millis(400);
    let stubborn = hung_service(
        d,
        "stubborn",
        "trap 'echo usr1 >> \"$D/stubborn-signals\"' USR1; while :; do sleep 0.05; done # 3062",
        grace,
    );
    let sup = Supervisor::start(vec![obeys, stubborn]).unwrap();
    wait_until("both stopped for hanging once", || {
        !exits_after_hung(&sup, "obeys").is_empty()
            && !exits_after_hung(&sup, "stubborn").is_empty()
    });
    let (exit, _, _) = exits_after_hung(&sup, "obeys")[0];
    assert_eq!(exit, Exit::Code(0), "it was not given the stop signal");
    assert!(read(&d.join("obeys-signals")).starts_with("usr1"));
    let (exit, hung, ended) = exits_after_hung(&sup, "stubborn")[0];
    assert_eq!(exit, Exit::Signal(Signal::SIGKILL as i32));
    assert!(read(&d.join("stubborn-signals")).starts_with("usr1"));
    // SIGKILL only once the grace period was over.
    assert!(ended - hung >= grace, "{:?}", ended - hung);
    // And both restart like after a crash.
    wait_until("restarts", || {
        spawned_at(&sup, "obeys").len() >= 2 && spawned_at(&sup, "stubborn").len() >= 2
    });
    drop(sup);
}

// ---------------------------------------------------------------- failed spawns

#[test]
fn a_spawn_that_fails_is_retried_with_backoff_until_the_program_appears() {
    let dir = open_dir();
    let d = dir.path();
    let program = d.join("later.sh");
    let mut spec = service(sh("later", "", d), &[]);
    spec.process.program = program.display().to_string();
    spec.process.args = vec!["3071".into()];
    let sup = Supervisor::start(vec![spec]).unwrap();
    wait_until("two failed spawns", || {
        events_of(&sup, "later")
            .iter()
            .filter(|(k, _)| matches!(k, EventKind::SpawnFailed(_)))
            .count()
            >= 2
    });
    assert!(
        matches!(state(&sup, "later"), State::Backoff { .. }),
        "{}",
        state(&sup, "later")
    );
    std::fs::write(&program, "#!/bin/sh\nexec sleep \"$1\"\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until("ready", || {
        matches!(state(&sup, "later"), State::Ready { .. })
    });
    let failures: Vec<String> = events_of(&sup, "later")
        .into_iter()
        .filter_map(|(k, _)| match k {
            EventKind::SpawnFailed(why) => Some(why),
            _ => None,
        })
        .collect();
    assert!(failures[0].contains("later.sh"), "{failures:?}");
    drop(sup);
    assert_none_left(&["3071"]);
}

#[test]
fn spawns_that_keep_failing_trip_the_breaker() {
    let dir = open_dir();
    let d = dir.path();
    let mut spec = service(sh("never", "", d), &[]);
    spec.process.program = d.join("missing").display().to_string();
    spec.backoff.base = Duration::from_millis(20);
    spec.backoff.start_limit = 3;
    let sup = Supervisor::start(vec![spec]).unwrap();
    wait_until("failed", || {
        matches!(state(&sup, "never"), State::Failed { .. })
    });
    let shown = state(&sup, "never").to_string();
    assert!(shown.starts_with("failing, gave up at "), "{shown}");
    assert!(shown.contains("3 starts within"), "{shown}");
    assert!(shown.contains("missing"), "{shown}");
    let events = events_of(&sup, "never");
    let failed = events
        .iter()
        .filter(|(k, _)| matches!(k, EventKind::SpawnFailed(_)))
        .count();
    assert_eq!(failed, 3, "{events:?}");
    assert!(matches!(events.last(), Some((EventKind::GaveUp(_), _))));
    drop(sup);
}

#[test]
fn a_service_is_not_started_while_another_process_holds_its_readiness_address() {
    let dir = open_dir();
    // Another server already answers where the service's readiness check looks: it would pass the
    // check for the new process, which could not bind the port anyway.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap().to_string();
    let mut svc = service(sh("late", "exec sleep 3041", dir.path()), &[]);
    svc.readiness = Some(Probe {
        check: Check::Tcp { addr: addr.clone() },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
    });
    let sup = Supervisor::start(vec![svc]).unwrap();
    wait_until("the refusal", || {
        sup.status()[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&addr) && e.contains("already in use"))
    });
    assert!(spawned_at(&sup, "late").is_empty(), "never spawned");
    assert!(alive_with("3041").is_empty());
    assert!(
        events_of(&sup, "late").iter().any(
            |(k, _)| matches!(k, EventKind::SpawnFailed(why) if why.contains("already in use"))
        ),
        "the refusal is an event too"
    );
    // The other server goes: the next try starts the service, and the reason is cleared.
    drop(other);
    wait_until("a start", || !spawned_at(&sup, "late").is_empty());
    assert_eq!(sup.status()[0].last_error, None);
    drop(sup);
    assert_none_left(&["3041"]);
}
