//! Crashes of the agent itself, not just of apply: `provision agent` supervising four PYME-like
//! servers (one with worker processes) and repairing drift on its managed files is SIGKILLed at
//! random moments (while it starts, while it repairs files, while it restarts a service, while it
//! reloads), and a new agent is started on the same root each time.
//!
//! After every kill, before the next agent starts: every managed file is whole, either what the
//! agent writes or what the test last wrote there (or absent, if the test last removed it), never
//! a mix. After every restart, once the new agent says every service is ready: every service runs
//! exactly once (one server process per service, with exactly its workers, found in /proc by its
//! environment), each server is a child of the new agent (so nothing the killed agent left runs
//! unadopted), no server ever failed to bind its port (which a duplicate would have made it do),
//! every file has the manifest's content, and no temporary file is left anywhere under the root.
//! At the end a SIGTERM stops everything and nothing marked for the root is left.
//!
//! The moments come from a seeded generator; the seed is printed, and `PROVISION_CRASH_SEED=N`
//! replays a run's actions and delays (what the agent is doing at each instant still depends on
//! the machine's load). `PROVISION_CRASH_ROUNDS` sets the number of rounds (default 30; the bench
//! script runs 200). Every wait has a hard limit, every agent is killed when dropped, and a guard
//! kills whatever the root's services left if the test fails half-way.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{RunningAgent, Sandbox};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Each wait for the agent (start, converge, stop) fails after this long.
const LIMIT: Duration = Duration::from_secs(30);
const DEFAULT_ROUNDS: usize = 30;
/// Part of the name of every temporary file provision writes (`host::atomic::TEMP_MARK`).
const TEMP_MARK: &str = ".provision-tmp-";

/// A PYME-like server: `serve PORT NAME EVENTS WORKERS` starts WORKERS worker processes (as the
/// PYME node server does), listens on PORT and logs `start`/`listen`/`bindfail` lines with its
/// pid to EVENTS; `worker NAME` only waits. Request logging is off: once its agent is killed
/// the log pipe is broken, and a server must not die of that on its own.
const SERVER: &str = r#"import http.server, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
if sys.argv[1] == "worker":
    while True:
        time.sleep(3600)
port, name, events, workers = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
def say(what):
    with open(events, "a") as f:
        f.write(f"{what} {name} {os.getpid()}\n")
say("start")
kids = [subprocess.Popen([sys.executable, sys.argv[0], "worker", name]) for _ in range(workers)]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
try:
    srv = http.server.HTTPServer(("127.0.0.1", port), Quiet)
except OSError as e:
    # Who holds the port, from the kernel's socket table: state, owner uid, remote end.
    held = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as t:
            for row in list(t)[1:]:
                f = row.split()
                if int(f[1].rsplit(":", 1)[1], 16) == port:
                    held.append(f"state={f[3]} uid={f[7]} remote={f[2]}")
    say(f"bindfail errno={e.errno} held by {held}")
    raise
say("listen")
srv.serve_forever()
"#;

/// The services: name, workers, what they are `after:` (besides the service user's directory).
const SERVICES: [(&str, usize, &str); 4] = [
    ("dataserver", 0, "file:/etc/crash/data.conf"),
    (
        "ruleserver",
        0,
        "service:dataserver, file:/etc/crash/rules.conf",
    ),
    ("nodeserver", 2, "service:ruleserver"),
    (
        "clusterui",
        0,
        "service:ruleserver, file:/etc/crash/ui.conf",
    ),
];

/// The managed files: three that services are after, and four larger ones (a longer write, a
/// wider window for a kill to land in).
const FILES: [&str; 7] = [
    "/etc/crash/data.conf",
    "/etc/crash/rules.conf",
    "/etc/crash/ui.conf",
    "/etc/crash/big/0.dat",
    "/etc/crash/big/1.dat",
    "/etc/crash/big/2.dat",
    "/etc/crash/big/3.dat",
];

fn desired(i: usize) -> String {
    let line = format!("managed content of file {i}\n");
    if i < 3 {
        line.repeat(20)
    } else {
        line.repeat(16_000)
    }
}

/// splitmix64: random moments without a dependency, replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// A free port below the kernel's ephemeral range. A port from that range (what binding port 0
/// gives) can be taken, while its server is down between two runs, as the local end of any
/// outgoing connection on the machine (the agent's own probes of the other servers), and the
/// server would then fail to bind for a reason that has nothing to do with the agent.
fn service_port(taken: &[u16]) -> u16 {
    let low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
        .clamp(2048, 65535);
    let (from, span) = (low / 2, low - low / 2);
    let start = std::process::id().wrapping_mul(7919) % span;
    (0..span)
        .map(|i| (from + (start + i) % span) as u16)
        .find(|&p| !taken.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below the ephemeral range")
}

fn manifest(sb: &Sandbox, events: &str) -> PathBuf {
    let script = sb.path("/opt/server.py").display().to_string();
    let mut text = String::from(
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - user: {name: pyme, system: true, create_home: false}\n  - directory: {path: /srv/run, owner: pyme, mode: \"0755\"}\n",
    );
    for (i, path) in FILES.iter().enumerate() {
        sb.manifest(&format!("files/{i}"), &desired(i));
        text.push_str(&format!("  - file: {{path: {path}, source: files/{i}}}\n"));
    }
    let mut ports = Vec::new();
    for (name, workers, after) in SERVICES {
        let port = service_port(&ports);
        ports.push(port);
        let probe = if name == "dataserver" {
            format!("{{tcp: \"127.0.0.1:{port}\", interval: 20ms}}")
        } else {
            format!("{{http: {{url: \"http://127.0.0.1:{port}/\"}}, interval: 20ms}}")
        };
        text.push_str(&format!(
            r#"  - service:
      name: {name}
      command: [python3, {script}, serve, "{port}", {name}, {events}, "{workers}"]
      user: pyme
      env: {{CRASH_SERVICE: {name}}}
      after: [directory:/srv/run, {after}]
      readiness: {probe}
      stop: {{grace: 2s}}
"#
        ));
    }
    sb.manifest("cluster.yaml", &text)
}

/// One live process of the root's services, from /proc.
#[derive(Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    service: String,
    worker: bool,
}

/// Every live process carrying the root's marker: its parent, its `CRASH_SERVICE` and whether
/// its command line is a worker's. One that ends while it is read is left out.
fn census(marker: &str) -> Vec<Proc> {
    common::marked(marker)
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let ppid = status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .parse()
                .ok()?;
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let service = env
                .split(|&b| b == 0)
                .find_map(|kv| kv.strip_prefix(b"CRASH_SERVICE="))
                .map_or_else(|| "?".to_owned(), |v| String::from_utf8_lossy(v).into());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let worker = cmdline.split(|&b| b == 0).any(|a| a == b"worker");
            Some(Proc {
                pid,
                ppid,
                service,
                worker,
            })
        })
        .collect()
}

/// Kills the process group of every process marked for the root (and the process itself), then
/// reaps what came back to this test: on drop, so a failing round leaves nothing running.
struct Cleanup {
    marker: String,
}

impl Cleanup {
    fn kill_all(&self) {
        for _ in 0..3 {
            for pid in common::marked(&self.marker) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            common::reap_adopted();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What the test knows about the root between two kills.
struct Crash {
    sb: Sandbox,
    manifest: PathBuf,
    marker: String,
    events: PathBuf,
    /// Per file: what the test last did to it since the agent last converged (`Some(None)`:
    /// removed it).
    last: Vec<Option<Option<String>>>,
    /// Agents started so far (for their log file names).
    agents: usize,
}

impl Crash {
    fn start(&mut self) -> RunningAgent {
        // Each agent's log is kept beside the next one, for the failure messages.
        let log = self.sb.tmp.path().join("agent.log");
        if log.exists() {
            let _ = std::fs::rename(
                &log,
                self.sb
                    .tmp
                    .path()
                    .join(format!("agent-{}.log", self.agents)),
            );
        }
        self.agents += 1;
        RunningAgent::start(&self.sb, &self.manifest, "master", &[])
    }

    /// The last two agents' logs.
    fn logs(&self, agent: &RunningAgent) -> String {
        let prev = self
            .sb
            .tmp
            .path()
            .join(format!("agent-{}.log", self.agents - 1));
        format!(
            "--- the killed agent's log\n{}\n--- this agent's log\n{}",
            std::fs::read_to_string(prev).unwrap_or_default(),
            agent.log()
        )
    }

    fn events(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Temporary files anywhere under the root.
    fn temps(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.sb.root()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                } else if name.contains(TEMP_MARK) || name.ends_with(".tmp") {
                    out.push(e.path());
                }
            }
        }
        out
    }

    fn in_sync(&self) -> bool {
        FILES
            .iter()
            .enumerate()
            .all(|(i, p)| std::fs::read_to_string(self.sb.path(p)).is_ok_and(|t| t == desired(i)))
    }

    /// Right after a kill: every file is the agent's content or what the test last left there.
    #[track_caller]
    fn assert_whole(&self, round: usize) -> usize {
        let mut off = 0;
        for (i, p) in FILES.iter().enumerate() {
            let now = std::fs::read_to_string(self.sb.path(p)).ok();
            if now.as_deref() == Some(desired(i).as_str()) {
                continue;
            }
            off += 1;
            let left = self.last[i].as_ref().unwrap_or_else(|| {
                panic!("round {round}: {p} is not the manifest's content, and the test did not touch it ({} bytes)", now.as_ref().map_or(0, String::len))
            });
            assert!(
                &now == left,
                "round {round}: {p} is torn: neither the manifest's content nor what the test left \
                 ({:?} bytes, the test left {:?})",
                now.as_ref().map(String::len),
                left.as_ref().map(String::len)
            );
        }
        off
    }

    /// Waits until `agent` says every service is ready and every file is back, then checks that
    /// each service runs exactly once under this agent. Returns the servers' pids.
    #[track_caller]
    fn assert_converged(&mut self, agent: &mut RunningAgent, round: usize) -> Vec<i32> {
        let pid = agent.pid() as u64;
        let mut waiting = String::new();
        agent.until("every service ready and every file repaired", LIMIT, |a| {
            let ready = a.status().is_some_and(|s| {
                s["pid"].as_u64() == Some(pid)
                    && s["services"].as_array().is_some_and(|v| {
                        v.len() == SERVICES.len() && v.iter().all(|x| x["ready"] == true)
                    })
            });
            let why = if !ready {
                "services not ready".to_owned()
            } else if !self.in_sync() {
                "files not repaired".to_owned()
            } else {
                let temps = self.temps();
                if temps.is_empty() {
                    return true;
                }
                format!("temporary files left: {temps:?}")
            };
            // Shown with the failure, should this wait time out.
            if why != waiting {
                eprintln!("round {round}: waiting: {why}");
                waiting = why;
            }
            false
        });
        let status = agent.status().unwrap();
        let procs = census(&self.marker);
        let mut servers = Vec::new();
        for (name, workers, _) in SERVICES {
            let leaders: Vec<&Proc> = procs
                .iter()
                .filter(|p| p.service == name && !p.worker)
                .collect();
            assert!(
                leaders.len() == 1 && leaders[0].ppid == agent.pid() as i32,
                "round {round}: service {name} should run once, as a child of the agent (pid {}), \
                 but its servers are {leaders:?}\n{}",
                agent.pid(),
                self.logs(agent)
            );
            let leader = leaders[0].pid;
            let shown = status["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == name)
                .and_then(|s| s["pid"].as_i64());
            assert_eq!(
                shown,
                Some(i64::from(leader)),
                "round {round}: the status API's pid for {name}"
            );
            let kids: Vec<&Proc> = procs
                .iter()
                .filter(|p| p.service == name && p.worker)
                .collect();
            assert!(
                kids.len() == workers && kids.iter().all(|k| k.ppid == leader),
                "round {round}: service {name} should have {workers} workers under {leader}, has {kids:?}"
            );
            servers.push(leader);
        }
        let expected = SERVICES.len() + SERVICES.iter().map(|s| s.1).sum::<usize>();
        assert_eq!(
            procs.len(),
            expected,
            "round {round}: stray marked processes: {procs:?}"
        );
        let events = self.events();
        let failed: Vec<&str> = events
            .lines()
            .filter(|l| l.starts_with("bindfail"))
            .collect();
        assert!(
            failed.is_empty(),
            "round {round}: a server could not bind its port (a duplicate held it): {failed:?}\n{}",
            self.logs(agent)
        );
        // What the killed agents left was ended by this one: the zombies are this test's to reap.
        common::reap_adopted();
        for l in &mut self.last {
            *l = None;
        }
        servers
    }
}

/// SIGKILL (dropping a `RunningAgent` kills it and waits for it).
fn crash(agent: RunningAgent) {
    drop(agent);
}

#[test]
fn an_agent_killed_at_random_moments_restarts_every_service_once_and_leaves_files_whole() {
    if !common::have_root("an_agent_killed_at_random_moments") {
        return;
    }
    let rounds: usize = std::env::var("PROVISION_CRASH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("PROVISION_CRASH_ROUNDS: a number"))
        .unwrap_or(DEFAULT_ROUNDS);
    let seed: u64 = std::env::var("PROVISION_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("PROVISION_CRASH_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id())
        });
    eprintln!("{rounds} rounds, seed {seed} (replay: PROVISION_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let sb = Sandbox::debian();
    // The service user must reach the script and the event log inside the sandbox.
    std::fs::set_permissions(sb.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.write("/opt/server.py", SERVER);
    let events = sb.path("/srv/run/events");
    let manifest = manifest(&sb, &events.display().to_string());
    let marker = format!("PROVISION_AGENT_ROOT={}", sb.root().display());
    let _cleanup = Cleanup {
        marker: marker.clone(),
    };
    let mut c = Crash {
        sb,
        manifest,
        marker,
        events,
        last: vec![None; FILES.len()],
        agents: 0,
    };

    // The first start, timed: the kill windows scale with it.
    let started = Instant::now();
    let mut agent = c.start();
    let mut servers = c.assert_converged(&mut agent, 0);
    let startup = started.elapsed().as_micros() as u64;
    eprintln!("a first start to every service ready takes {startup} µs");

    let (mut early, mut mid_repair, mut orphaned) = (0, 0, 0);
    let began = Instant::now();
    for round in 1..=rounds {
        // Drift and service trouble, the agent busy with it, then the kill.
        for k in 0..1 + rng.below(4) {
            match rng.below(10) {
                0 | 1 => {
                    let i = rng.below(FILES.len() as u64) as usize;
                    let _ = std::fs::remove_file(c.sb.path(FILES[i]));
                    c.last[i] = Some(None);
                }
                2 => {
                    let victim = servers[rng.below(servers.len() as u64) as usize];
                    let _ = kill(Pid::from_raw(victim), Signal::SIGKILL);
                }
                3 => {
                    let _ = kill(Pid::from_raw(agent.pid() as i32), Signal::SIGHUP);
                }
                _ => {
                    let i = rng.below(FILES.len() as u64) as usize;
                    let text = format!("drift {round}.{k} of {}\n", FILES[i])
                        .repeat(1 + rng.below(2000) as usize);
                    // Written in place, as an editor without a temp file would.
                    std::fs::write(c.sb.path(FILES[i]), &text).unwrap();
                    c.last[i] = Some(Some(text));
                }
            }
            std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        }
        std::thread::sleep(Duration::from_micros(rng.below(startup / 2)));
        crash(agent);
        if c.assert_whole(round) > 0 {
            mid_repair += 1;
        }
        if !census(&c.marker).is_empty() {
            orphaned += 1;
        }

        // The next agent; one time in three it is killed again while it starts.
        agent = c.start();
        if rng.below(3) == 0 {
            std::thread::sleep(Duration::from_micros(rng.below(startup + startup / 4)));
            crash(agent);
            c.assert_whole(round);
            early += 1;
            agent = c.start();
        }
        let old = servers;
        servers = c.assert_converged(&mut agent, round);
        assert!(
            old.iter().all(|p| !servers.contains(p)),
            "round {round}: a server of a killed agent is still running"
        );
    }
    let per_round = began.elapsed() / rounds.max(1) as u32;
    eprintln!(
        "{rounds} rounds in {:?} ({per_round:?} per round): {mid_repair} kills left files to repair, \
         {orphaned} left services running, {early} more landed while an agent started; {} agents",
        began.elapsed(),
        c.agents
    );

    agent.stop();
    let left = census(&c.marker);
    assert!(left.is_empty(), "left running after SIGTERM: {left:?}");
    assert!(
        orphaned > 0,
        "no kill left a service running: the test proved nothing about adoption"
    );
}

/// Found by the test above: an agent killed while it wrote a backup left the backup's temporary
/// file in `/var/lib/provision/backups` for good (a backup's name is new each time, so no later
/// write of that name cleaned it up). The next backup in that folder removes it.
#[test]
fn a_backup_left_half_written_is_removed_by_the_next_backup() {
    let sb = Sandbox::debian();
    sb.write("/etc/app/a.conf", "drifted\n");
    let stale =
        "/var/lib/provision/backups/etc/app/.a.conf.2026-01-01T00:00:00.000Z.provision-tmp-4194304";
    sb.write(stale, "half a backup");
    let m = sb.manifest(
        "m.yaml",
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - file: {path: /etc/app/a.conf, content: \"managed\\n\"}\n",
    );
    sb.run(&["apply", m.to_str().unwrap(), "--node", "master"])
        .expect(0);
    assert_eq!(sb.read("/etc/app/a.conf"), "managed\n");
    assert!(
        !sb.path(stale).exists(),
        "the stale temporary file is still there"
    );
    let backups: Vec<String> = std::fs::read_dir(sb.path("/var/lib/provision/backups/etc/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        backups.len() == 1 && backups[0].starts_with("a.conf."),
        "one backup, of the drifted file: {backups:?}"
    );
    let kept = sb.path(&format!(
        "/var/lib/provision/backups/etc/app/{}",
        backups[0]
    ));
    assert_eq!(std::fs::read_to_string(kept).unwrap(), "drifted\n");
}

/// Found by the test above: an agent started right after one was killed refused to run,
/// "another provision agent (pid N) already runs" with N dead. The lock was held by a child the
/// killed agent had forked and not yet exec'd (the fork copies the lock's descriptor; the exec
/// closes it). Here a real process that is not the recorded agent holds the lock for a moment,
/// as that child does: the new agent waits for it and starts.
#[test]
fn an_agent_lock_held_after_its_agent_died_is_waited_for() {
    let sb = Sandbox::debian();
    let lock = sb.path("/var/lib/provision/agent.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(&lock, format!("{dead}\n")).unwrap();
    let mut holder = std::process::Command::new("flock")
        .arg("--no-fork")
        .arg(&lock)
        .args(["sleep", "1"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_until_locked(&lock, LIMIT);
    let m = sb.manifest(
        "m.yaml",
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - file: {path: /etc/app/a.conf, content: \"managed\\n\"}\n",
    );
    let mut agent = RunningAgent::start(&sb, &m, "master", &[]);
    agent.until("the agent's first reconcile", LIMIT, |a| {
        a.status().is_some()
    });
    assert!(
        holder.try_wait().unwrap().is_some(),
        "the agent started while another process held its lock"
    );
    assert_eq!(sb.read("/etc/app/a.conf"), "managed\n");
    assert!(
        agent.log().contains("not by a running agent"),
        "{}",
        agent.log()
    );
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        format!("{}\n", agent.pid())
    );
    agent.stop();
}
