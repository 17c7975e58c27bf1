//! How `provision apply` hands a manifest to the agent that runs for the same root, and learns
//! what the agent did with it.
//!
//! Two files in `/var/lib/provision`, both written atomically (temp file, fsync, rename), mode
//! 0600: `apply.request` (the manifest's absolute path, the node if apply was given one, and a
//! unique id) and `apply.result` (the agent's answer to that id, or to a start or a plain
//! SIGHUP). `apply` writes the request and sends SIGHUP to the pid in the agent's lock file; the
//! agent, on SIGHUP, takes the request (removing it), switches to that manifest if it is valid,
//! reconciles, lets the services follow, and writes the result. `apply` holds `handoff.lock`
//! from request to result, so two applies at once take turns instead of overwriting each other.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engine::{Report, Status};
use crate::host::atomic::Meta;
use crate::host::{Host, STATE_DIR};

const REQUEST: &str = "apply.request";
const RESULT: &str = "apply.result";
const LOCK: &str = "handoff.lock";

/// What `apply` asks the agent to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per apply: the answer carries it back.
    pub id: String,
    /// Absolute, so the agent finds it whatever its working directory.
    pub manifest: PathBuf,
    /// The node apply was told to reconcile; `None`: the agent keeps its own.
    pub node: Option<String>,
}

/// One resource that did not end unchanged, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLine {
    pub id: String,
    /// `changed`, `failed` or `skipped`.
    pub status: String,
    pub changes: Vec<String>,
    pub error: Option<String>,
}

/// What the services did after the reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceChanges {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
    /// `(service, why)`.
    pub restarted: Vec<(String, String)>,
}

/// The agent's answer: written after its start, after every SIGHUP, and for every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The request answered; `None` for a start or a plain SIGHUP.
    pub id: Option<String>,
    pub agent_pid: u32,
    /// Counts the manifests the agent has applied: 1 after its start, +1 for each valid reload.
    pub generation: u64,
    /// The manifest the agent runs now (the old one if the new one was refused).
    pub manifest: PathBuf,
    pub node: String,
    /// The manifest was valid and reconciled; `false`: refused, the running one kept.
    pub applied: bool,
    /// The manifest was loaded and nothing failed or was skipped.
    pub ok: bool,
    /// Why the manifest was refused (with file:line:column), or why services could not follow.
    pub errors: Vec<String>,
    pub changed: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    /// The resources that changed, failed or were skipped.
    pub resources: Vec<ResourceLine>,
    pub services: ServiceChanges,
    /// Where each service that started or restarted stood when the agent answered: the agent
    /// answers once they have settled (ready, failing, exited, waiting on another node), or at
    /// the latest after their longest ready timeout plus 10 s (at least 1, at most 9 minutes).
    #[serde(default)]
    pub service_states: Vec<ServiceState>,
}

/// A service's state in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub name: String,
    /// As `provision status` shows it, e.g. `ready (pid 4242)`.
    pub state: String,
    /// It is failing (the breaker tripped, a wait gave up) or exited with an error: the
    /// answer's `ok` is false.
    pub failed: bool,
}

impl Outcome {
    /// An outcome for a reconcile that ran.
    pub fn reconciled(report: &Report, services: ServiceChanges, errors: Vec<String>) -> Outcome {
        let s = &report.summary;
        let resources = report
            .resources
            .iter()
            .filter(|r| r.status != Status::Unchanged)
            .map(|r| ResourceLine {
                id: r.id.clone(),
                status: match r.status {
                    Status::Changed => "changed",
                    Status::Failed => "failed",
                    Status::Skipped => "skipped",
                    Status::Unchanged => "unchanged",
                }
                .to_owned(),
                changes: r.changes.iter().map(|c| c.text.clone()).collect(),
                error: r.error.clone().or_else(|| r.skipped_because.clone()),
            })
            .collect();
        Outcome {
            id: None,
            agent_pid: std::process::id(),
            generation: 0,
            manifest: PathBuf::new(),
            node: report.node.clone(),
            applied: true,
            ok: s.failed + s.skipped == 0 && errors.is_empty(),
            errors,
            changed: s.changed,
            unchanged: s.unchanged,
            failed: s.failed,
            skipped: s.skipped,
            resources,
            services,
            service_states: Vec::new(),
        }
    }

    /// An outcome for a manifest the agent refused: nothing ran.
    pub fn refused(node: &str, error: String) -> Outcome {
        Outcome {
            id: None,
            agent_pid: std::process::id(),
            generation: 0,
            manifest: PathBuf::new(),
            node: node.to_owned(),
            applied: false,
            ok: false,
            errors: vec![error],
            changed: 0,
            unchanged: 0,
            failed: 0,
            skipped: 0,
            resources: Vec::new(),
            services: ServiceChanges::default(),
            service_states: Vec::new(),
        }
    }
}

/// Why a hand-off did not go through.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{0}")]
    Host(#[from] crate::host::Error),
    #[error(
        "cannot send SIGHUP to the provision agent (pid {pid}): {source}\n  hint: check it runs (`provision status`), or remove the stale lock and start it again"
    )]
    Signal { pid: u32, source: nix::Error },
    #[error(
        "the provision agent (pid {pid}) did not answer within {waited:?}; the manifest is left for it in {}\n  hint: see its log (journalctl -u provision-agent, or <root>/var/log/provision/agent.log), check it with `provision status`, or restart it (kill -TERM {pid}; provision apply --start-agent)",
        .request.display()
    )]
    NoAnswer {
        pid: u32,
        waited: Duration,
        request: PathBuf,
    },
    #[error(
        "the provision agent (pid {pid}) exited before it answered\n  hint: see its log; start it again with `provision apply --start-agent` or `provision agent MANIFEST`"
    )]
    Gone { pid: u32 },
}

fn state_path(host: &Host, name: &str) -> Result<PathBuf, crate::host::Error> {
    host.resolve(&format!("{STATE_DIR}/{name}"))
}

/// The pid of the agent holding this root's agent lock, if one does.
pub fn running_agent(host: &Host) -> Result<Option<u32>, crate::host::Error> {
    let path = state_path(host, "agent.lock")?;
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::host::Error::io("open the agent lock", &path)(e)),
    };
    // A shared lock conflicts only with the agent's exclusive one; it is dropped at once.
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_free) => Ok(None),
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            // An agent that has just taken the lock writes its pid a moment later.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let mut text = String::new();
                let _ = file.rewind();
                let _ = file.read_to_string(&mut text);
                match text.trim().parse() {
                    Ok(pid) => return Ok(Some(pid)),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => {
                        return Err(crate::host::Error::Other(format!(
                            "a provision agent holds {} but has not written its pid into it; try again, or stop it",
                            path.display()
                        )));
                    }
                }
            }
        }
        Err((_, e)) => Err(crate::host::Error::io("lock", &path)(e.into())),
    }
}

/// Serialises applies that hand off: held from the request to the answer.
pub fn lock(host: &Host) -> Result<nix::fcntl::Flock<File>, crate::host::Error> {
    let path = state_path(host, LOCK)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(crate::host::Error::io("open the hand-off lock", &path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| crate::host::Error::io("lock", &path)(e.into()))
}

fn write_json<T: Serialize>(host: &Host, name: &str, value: &T) -> Result<(), crate::host::Error> {
    let path = state_path(host, name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(crate::host::Error::io("create the state directory", dir))?;
    }
    let text = serde_json::to_vec_pretty(value).unwrap_or_default();
    crate::host::atomic::write(
        &path,
        &text,
        Meta::own(0o600),
        None,
        &path.to_string_lossy(),
    )
}

/// A unique request id: pid, time and a counter.
pub fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// Writes `request` and signals the agent `pid`.
pub fn send(host: &Host, pid: u32, request: &Request) -> Result<(), HandoffError> {
    write_json(host, REQUEST, request)?;
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGHUP)
        .map_err(|source| HandoffError::Signal { pid, source })
}

/// Takes the pending request, if any (the agent, on SIGHUP). An unreadable one is logged and
/// dropped: its apply then reports that the agent did not answer.
pub fn take_request(host: &Host) -> Option<Request> {
    let path = state_path(host, REQUEST).ok()?;
    let text = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    match serde_json::from_slice(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "ignoring an unreadable apply request");
            None
        }
    }
}

/// Writes the agent's answer.
pub fn answer(host: &Host, outcome: &Outcome) {
    if let Err(e) = write_json(host, RESULT, outcome) {
        tracing::error!(error = %e, "cannot write the apply result");
    }
}

/// The last answer, if readable.
pub fn read_outcome(host: &Host) -> Option<Outcome> {
    let path = state_path(host, RESULT).ok()?;
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .is_some_and(|s| !s.starts_with('Z'))
}

/// Waits up to `limit` for the answer `accept` picks; fails early when `pid` is gone.
pub fn wait(
    host: &Host,
    pid: u32,
    limit: Duration,
    mut accept: impl FnMut(&Outcome) -> bool,
    mut gone: impl FnMut() -> bool,
) -> Result<Outcome, HandoffError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(o) = read_outcome(host).filter(|o| accept(o)) {
            return Ok(o);
        }
        if gone() || !alive(pid) {
            // It may have answered just before it went.
            return read_outcome(host)
                .filter(|o| accept(o))
                .ok_or(HandoffError::Gone { pid });
        }
        if started.elapsed() >= limit {
            return Err(HandoffError::NoAnswer {
                pid,
                waited: limit,
                request: state_path(host, REQUEST).unwrap_or_default(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The absolute form of `path` (relative to the current directory), without resolving links.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
