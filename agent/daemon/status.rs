//! The agent's status API: `/health`, `/status` (JSON) and `/metrics` (Prometheus text) over
//! plain HTTP/1.1, one short-lived thread per connection.
//!
//! Guarantees: it listens on a loopback address unless a token file is given, and with a token
//! every request must carry `Authorization: Bearer <token>`; it only reads (no endpoint changes
//! anything); a client has [`CLIENT_TIMEOUT`] from its connect to send the whole request head
//! (at most [`HEAD_LIMIT`] bytes) and as long again to take the answer, however it trickles, and
//! a slow client holds only its own thread: others are answered meanwhile (up to
//! [`MAX_CLIENTS`] at once; past that a client gets `503` at once). [`request_head_response`]
//! is the whole answer to a request head as a pure function of it and the board. The data
//! is a [`Board`] the agent loop updates after each reconcile and on each tick (services: at most
//! one tick, 200 ms, old).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::engine::{Report, Status};
use crate::host::{Host, STATE_DIR};
use crate::supervisor::{ServiceStatus, State};

/// The address the status API listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9779";
/// Where the agent writes the address it listens on (under the root), for `provision status`.
pub const ADDR_FILE: &str = "status.addr";
/// How long one client may take to send its whole request head (and, again, to take the answer).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head read.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// Connections served at once (each on its own thread, for [`CLIENT_TIMEOUT`] at most twice).
pub const MAX_CLIENTS: usize = 32;
/// How long a connection is kept after its answer for the client to close it.
const LINGER: Duration = Duration::from_millis(500);
/// Drift events kept for `/status` (the counter counts them all).
const DRIFT_KEPT: usize = 100;

/// Where and how the status API listens; checked before the agent touches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    /// The bearer token every request must carry (required off loopback).
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "--status-listen {0}: not a loopback address, and the status API shows the node's services and files\n  hint: give --status-token-file FILE (clients then send `Authorization: Bearer <token>`), or listen on 127.0.0.1"
    )]
    NeedsToken(SocketAddr),
    #[error("--status-token-file {}: {reason}", .path.display())]
    Token { path: PathBuf, reason: String },
    #[error(
        "--status-listen {addr}: cannot listen: {source}\n  hint: another agent or program uses this port; pick another with --status-listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Listen {
    /// Checks `addr` against the token rule and reads the token file.
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<Listen, ListenError> {
        let token = match token_file {
            None if !addr.ip().is_loopback() => return Err(ListenError::NeedsToken(addr)),
            None => None,
            Some(path) => {
                let bad = |reason: String| ListenError::Token {
                    path: path.to_owned(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(bad("is empty; put the token on its first line".into()));
                }
                if token.contains(char::is_whitespace) {
                    return Err(bad("the token must be one word".into()));
                }
                Some(token.to_owned())
            }
        };
        Ok(Listen { addr, token })
    }
}

/// Why the agent last reconciled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    Start,
    Reload,
    Periodic,
    /// The drift watch saw these resources' paths change.
    Drift(Vec<String>),
}

impl Cause {
    fn name(&self) -> &'static str {
        match self {
            Cause::Start => "start",
            Cause::Reload => "reload",
            Cause::Periodic => "periodic",
            Cause::Drift(_) => "drift",
        }
    }

    /// Changes found now correct drift: the manifest did not change, the node did.
    pub fn corrective(&self) -> bool {
        matches!(self, Cause::Periodic | Cause::Drift(_))
    }
}

/// One drift repair: a resource that differed from the unchanged manifest and was put back.
#[derive(Debug, Clone)]
pub struct DriftEvent {
    pub at: SystemTime,
    pub id: String,
    pub changes: Vec<String>,
    /// `inotify` or `periodic`.
    pub found_by: &'static str,
    /// Whether the repair worked (a failed repair stays drift, and is counted).
    pub repaired: bool,
}

impl std::fmt::Display for DriftEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.repaired {
            "drift repaired"
        } else {
            "drift NOT repaired"
        };
        write!(f, "{what}: {}: {}", self.id, self.changes.join("; "))
    }
}

#[derive(Debug, Default)]
struct Inner {
    node: String,
    last: Option<(SystemTime, Cause, Report)>,
    reconciles: u64,
    drift_total: u64,
    drift: VecDeque<DriftEvent>,
    services: Vec<ServiceStatus>,
    /// Manifests applied (1 after the start, +1 for each accepted reload or bundle).
    generation: u64,
    /// The manifest the agent runs: where it came from, its hash (`/status` `manifest`).
    manifest: Value,
    /// Polling for bundles: the last check and the last error (`/status` `pull`).
    pull: Value,
}

/// What the status API shows, shared between the agent loop and the server thread.
#[derive(Debug, Clone)]
pub struct Board {
    inner: Arc<Mutex<Inner>>,
    started: SystemTime,
    /// The agent's GPU XID record (`/gpu/xids`, `/metrics`).
    xids: Option<crate::gpu::xid::AgentXids>,
}

impl Board {
    pub fn new(node: &str) -> Board {
        Board {
            inner: Arc::new(Mutex::new(Inner {
                node: node.to_owned(),
                ..Inner::default()
            })),
            started: SystemTime::now(),
            xids: None,
        }
    }

    /// Shows the agent's XID record on `/gpu/xids`, in `/status` and in `/metrics`.
    pub fn with_xids(mut self, xids: crate::gpu::xid::AgentXids) -> Board {
        self.xids = Some(xids);
        self
    }

    /// The `/gpu/xids` document (`{"watching": false, ...}` where the agent keeps no record).
    pub fn xids_json(&self) -> Value {
        self.xids.as_ref().map_or_else(
            || json!({"watching": false, "reason": "this agent keeps no XID record"}),
            crate::gpu::xid::AgentXids::json,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a reconcile; returns the drift it repaired (or failed to), if it was corrective.
    pub fn reconciled(&self, node: &str, cause: Cause, report: &Report) -> Vec<DriftEvent> {
        let at = SystemTime::now();
        let mut drift = Vec::new();
        if cause.corrective() {
            let found_by = if matches!(cause, Cause::Drift(_)) {
                "inotify"
            } else {
                "periodic"
            };
            for r in &report.resources {
                if r.changes.is_empty() || !matches!(r.status, Status::Changed | Status::Failed) {
                    continue;
                }
                drift.push(DriftEvent {
                    at,
                    id: r.id.clone(),
                    changes: r.changes.iter().map(|c| c.text.clone()).collect(),
                    found_by,
                    repaired: r.status == Status::Changed,
                });
            }
        }
        let mut inner = self.lock();
        inner.node = node.to_owned();
        inner.reconciles += 1;
        inner.drift_total += drift.len() as u64;
        for d in &drift {
            if inner.drift.len() == DRIFT_KEPT {
                inner.drift.pop_front();
            }
            inner.drift.push_back(d.clone());
        }
        inner.last = Some((at, cause, report.clone()));
        drift
    }

    /// The manifest now running, after the start or an accepted reload.
    pub fn set_manifest(&self, generation: u64, manifest: Value) {
        let mut inner = self.lock();
        inner.generation = generation;
        inner.manifest = manifest;
    }

    pub fn set_generation(&self, generation: u64) {
        self.lock().generation = generation;
    }

    /// Changes one field of the running manifest's record.
    pub fn update_manifest(&self, key: &str, value: Value) {
        let mut inner = self.lock();
        if let Value::Object(m) = &mut inner.manifest {
            m.insert(key.to_owned(), value);
        }
    }

    /// The outcome of one check for a new bundle: `Ok(what happened)` or `Err(why not)`.
    pub fn pulled(&self, outcome: Result<&str, &str>) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = rfc3339(SystemTime::now());
        if !inner.pull.is_object() {
            inner.pull = json!({"checks_total": 0, "last_error": null, "last_error_at": null});
        }
        let pull = &mut inner.pull;
        pull["checks_total"] = json!(pull["checks_total"].as_u64().unwrap_or(0) + 1);
        pull["last_check_at"] = json!(now);
        match outcome {
            Ok(what) => {
                pull["last_result"] = json!(what);
                pull["ok"] = json!(true);
                // The server serves what runs: a bundle run from the cache is confirmed.
                if what != "new bundle" && inner.manifest["from_cache"] == true {
                    inner.manifest["from_cache"] = json!(false);
                    inner.manifest["confirmed_at"] = json!(now);
                }
            }
            Err(why) => {
                pull["last_result"] = json!("error");
                pull["ok"] = json!(false);
                pull["last_error"] = json!(why);
                pull["last_error_at"] = json!(now);
            }
        }
    }

    /// Records an error of the bundle pull that no check reports (a bundle refused on load).
    pub fn pull_error(&self, why: &str) {
        let mut inner = self.lock();
        if !inner.pull.is_object() {
            inner.pull = json!({"checks_total": 0});
        }
        inner.pull["last_error"] = json!(why);
        inner.pull["last_error_at"] = json!(rfc3339(SystemTime::now()));
    }

    pub fn set_services(&self, services: Vec<ServiceStatus>) {
        let mut inner = self.lock();
        if inner.services != services {
            inner.services = services;
        }
    }

    /// One line for `sd_notify` STATUS=.
    pub fn summary_line(&self) -> String {
        let inner = self.lock();
        let mut line = match &inner.last {
            Some((_, _, r)) => format!(
                "{} resources ({} changed, {} failed, {} skipped)",
                r.resources.len(),
                r.summary.changed,
                r.summary.failed,
                r.summary.skipped
            ),
            None => "reconciling".to_owned(),
        };
        let ready = inner
            .services
            .iter()
            .filter(|s| matches!(s.state, State::Ready { .. }))
            .count();
        let _ = write!(
            line,
            "; services {ready}/{} ready; {} drift repairs",
            inner.services.len(),
            inner.drift_total
        );
        line
    }

    /// The `/status` document.
    pub fn json(&self) -> Value {
        let inner = self.lock();
        let last = inner.last.as_ref().map(|(at, cause, r)| {
            let mut v = json!({
                "at": rfc3339(*at),
                "at_unix": unix(*at),
                "cause": cause.name(),
                "summary": r.summary,
            });
            if let Cause::Drift(ids) = cause {
                v["drifted"] = json!(ids);
            }
            v
        });
        let resources: Vec<Value> = inner
            .last
            .as_ref()
            .map(|(_, _, r)| {
                r.resources
                    .iter()
                    .map(|r| {
                        let mut v = json!({"id": r.id, "status": r.status});
                        if let Some(e) = r.error.as_ref().or(r.skipped_because.as_ref()) {
                            v["reason"] = json!(e);
                        }
                        v
                    })
                    .collect()
            })
            .unwrap_or_default();
        let services: Vec<Value> = inner.services.iter().map(service_json).collect();
        let drift: Vec<Value> = inner
            .drift
            .iter()
            .map(|d| {
                json!({
                    "at": rfc3339(d.at),
                    "id": d.id,
                    "changes": d.changes,
                    "found_by": d.found_by,
                    "repaired": d.repaired,
                })
            })
            .collect();
        json!({
            "format_version": 1,
            "node": inner.node,
            "pid": std::process::id(),
            "started_at": rfc3339(self.started),
            "reconciles_total": inner.reconciles,
            "generation": inner.generation,
            "manifest": inner.manifest,
            "pull": inner.pull,
            "last_reconcile": last,
            "resources": resources,
            "services": services,
            "drift": {"repairs_total": inner.drift_total, "events": drift},
            "gpu_xids": self.xids_json(),
        })
    }

    /// The `/metrics` page (Prometheus text format 0.0.4).
    pub fn metrics(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let ready = inner
            .services
            .iter()
            .filter(|s| matches!(s.state, State::Ready { .. }))
            .count();
        family(
            "provision_services",
            "gauge",
            "Services this agent supervises.",
            &[(String::new(), inner.services.len() as f64)],
        );
        family(
            "provision_services_ready",
            "gauge",
            "Services whose readiness check passed.",
            &[(String::new(), ready as f64)],
        );
        let per = |f: &dyn Fn(&ServiceStatus) -> f64| -> Vec<(String, f64)> {
            inner
                .services
                .iter()
                .map(|s| (format!("{{service=\"{}\"}}", label(&s.name)), f(s)))
                .collect()
        };
        family(
            "provision_service_ready",
            "gauge",
            "1 when the service is ready, else 0.",
            &per(&|s| f64::from(u8::from(matches!(s.state, State::Ready { .. })))),
        );
        family(
            "provision_service_failed",
            "gauge",
            "1 when the supervisor gave up on the service (start-limit breaker), else 0.",
            &per(&|s| f64::from(u8::from(matches!(s.state, State::Failed { .. })))),
        );
        family(
            "provision_service_restarts_total",
            "counter",
            "Restarts of the service since the agent started it.",
            &per(&|s| f64::from(s.restarts)),
        );
        family(
            "provision_drift_repairs_total",
            "counter",
            "Resources found drifted from the manifest (and repaired, unless reported failed).",
            &[(String::new(), inner.drift_total as f64)],
        );
        family(
            "provision_reconciles_total",
            "counter",
            "Reconciles run by this agent.",
            &[(String::new(), inner.reconciles as f64)],
        );
        if let Some((at, _, r)) = &inner.last {
            family(
                "provision_last_reconcile_timestamp_seconds",
                "gauge",
                "When the last reconcile ended (Unix time).",
                &[(String::new(), unix(*at))],
            );
            family(
                "provision_last_reconcile_duration_seconds",
                "gauge",
                "How long the engine took in the last reconcile.",
                &[(String::new(), r.summary.duration_ms / 1000.0)],
            );
            let s = &r.summary;
            family(
                "provision_resources",
                "gauge",
                "Resources of this node by their status in the last reconcile.",
                &[
                    ("{status=\"unchanged\"}".into(), s.unchanged as f64),
                    ("{status=\"changed\"}".into(), s.changed as f64),
                    ("{status=\"failed\"}".into(), s.failed as f64),
                    ("{status=\"skipped\"}".into(), s.skipped as f64),
                ],
            );
        }
        if let Some(xids) = &self.xids {
            let samples: Vec<(String, f64)> = xids
                .samples()
                .into_iter()
                .map(|(gpu, xid, n)| (format!("{{gpu=\"{gpu}\",xid=\"{xid}\"}}"), n as f64))
                .collect();
            family(
                "provision_gpu_xid_errors_total",
                "counter",
                "XID errors per GPU and XID since the agent started (a counter, unlike dcgm-exporter's last-XID gauge).",
                &samples,
            );
        }
        out
    }
}

fn service_json(s: &ServiceStatus) -> Value {
    json!({
        "name": s.name,
        "state": state_name(&s.state),
        "detail": s.state.to_string(),
        "pid": s.pid,
        "ready": matches!(s.state, State::Ready { .. }),
        "restarts": s.restarts,
        "last_exit": s.last_exit.as_ref().map(ToString::to_string),
        "last_error": s.last_error,
        "since": rfc3339(s.since),
    })
}

/// The state's short name, stable for scripts.
fn state_name(s: &State) -> &'static str {
    match s {
        State::Waiting { .. } => "waiting",
        State::Starting { .. } => "starting",
        State::Ready { .. } => "ready",
        State::Stopping { .. } => "stopping",
        State::Backoff { .. } => "backoff",
        State::Exited { .. } => "exited",
        State::Failed { .. } => "failed",
        State::Stopped => "stopped",
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The running server. Dropping it removes the address file (the thread ends with the process).
pub struct Server {
    addr_file: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(p) = &self.addr_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds `listen` and serves `board` from a thread; writes the bound address to
/// `<root>/var/lib/provision/status.addr` so `provision status --root` finds it.
pub fn serve(listen: &Listen, host: &Host, board: Board) -> Result<Server, ListenError> {
    let listener = TcpListener::bind(listen.addr).map_err(|source| ListenError::Bind {
        addr: listen.addr,
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| ListenError::Bind {
        addr: listen.addr,
        source,
    })?;
    tracing::info!(addr = %bound, token = listen.token.is_some(), "status API listening");
    let addr_file = host.resolve(&format!("{STATE_DIR}/{ADDR_FILE}")).ok();
    if let Some(p) = &addr_file {
        let _ = std::fs::write(p, format!("{bound}\n"));
    }
    let token: Option<Arc<str>> = listen.token.as_deref().map(Arc::from);
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || accept_loop(&listener, &board, token.as_ref()))
        .map_err(|source| ListenError::Bind {
            addr: listen.addr,
            source,
        })?;
    Ok(Server { addr_file })
}

/// Accepts connections and answers each on a thread of its own, so a client that sends its
/// request slowly holds only its own thread (for [`CLIENT_TIMEOUT`] at most), never the loop.
fn accept_loop(listener: &TcpListener, board: &Board, token: Option<&Arc<str>>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::SeqCst);
            refuse_busy(&stream);
            continue;
        }
        let slot = Slot(Arc::clone(&busy));
        let (board, token) = (board.clone(), token.cloned());
        let spawned = std::thread::Builder::new()
            .name("status-client".into())
            .spawn(move || {
                let _slot = slot;
                handle(&stream, &board, token.as_deref());
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "status API: cannot start a thread for a client");
        }
    }
}

/// One client's place among the [`MAX_CLIENTS`]; given back when its thread ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer when [`MAX_CLIENTS`] are being served: at once, so the loop goes on accepting.
fn refuse_busy(stream: &TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let answer = response(
        "503 Service Unavailable",
        "text/plain",
        b"too many clients at once; try again\n",
        &["Retry-After: 1"],
        false,
    );
    let _ = (&*stream).write_all(&answer);
}

/// Answers one request and closes the connection: the request head must arrive whole within
/// [`CLIENT_TIMEOUT`] of the connect, and the answer must be taken within as long again.
fn handle(stream: &TcpStream, board: &Board, token: Option<&str>) {
    let answer = match read_head(stream, Instant::now() + CLIENT_TIMEOUT) {
        Ok(head) => request_head_response(&head, board, token),
        Err(HeadError::Closed) => return,
        Err(HeadError::Slow) => response(
            "408 Request Timeout",
            "text/plain",
            format!(
                "the request head did not arrive within {} s\n",
                CLIENT_TIMEOUT.as_secs()
            )
            .as_bytes(),
            &[],
            false,
        ),
        Err(HeadError::TooLarge) => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            format!("the request head is over {HEAD_LIMIT} bytes\n").as_bytes(),
            &[],
            false,
        ),
    };
    write_within(stream, &answer, Instant::now() + CLIENT_TIMEOUT);
    linger(stream);
}

/// Ends the connection so the answer survives: closing a socket with unread bytes (the rest of
/// a refused head, a trickler's next byte) makes the kernel send a reset that can destroy the
/// answer in flight. So: our side is shut first (the client sees the end of the answer), and
/// what the client still sends is read and dropped until it closes, for [`LINGER`] at most.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut dropped = 0;
    while dropped < 64 * 1024 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) => return,
            Ok(n) => dropped += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed the connection (or it broke) before sending anything.
    Closed,
    /// The deadline passed before the blank line that ends the head.
    Slow,
    /// More than [`HEAD_LIMIT`] bytes without the blank line.
    TooLarge,
}

/// Reads up to the blank line that ends the request head, by `deadline` at the latest: each
/// read waits only for the time left, so a byte a second does not keep the connection open.
/// A client that closes its side after a partial head gets an answer to what it sent.
fn read_head(stream: &TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Slow);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| HeadError::Closed)?;
        match (&*stream).read(&mut chunk) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Ok(head),
            Ok(n) => {
                // Only the new bytes (and the three before them) can complete the end mark.
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&chunk[..n]);
                if let Some(end) = head_end(&head[from..]) {
                    head.truncate(from + end);
                    return Ok(head);
                }
                if head.len() > HEAD_LIMIT {
                    return Err(HeadError::TooLarge);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Slow);
            }
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Where the head in `bytes` ends (just after its blank line: CRLF CRLF, or LF LF from a lax
/// client), if it does.
fn head_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| {
        let rest = &bytes[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else if rest.starts_with(b"\n\r\n") {
            Some(i + 3)
        } else {
            None
        }
    })
}

/// Writes `bytes`, giving up at `deadline` (a client that does not read cannot hold the thread).
fn write_within(stream: &TcpStream, bytes: &[u8], deadline: Instant) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).write(rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A request as the status API understands it.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target without its query string.
    path: &'a str,
    /// The `Authorization` header's value, trimmed.
    authorization: Option<&'a [u8]>,
}

/// Parses a request head (request line, header lines, up to the blank line; bytes after it are
/// ignored). `Err` says why it is not a request this API can answer.
fn parse_request(head: &[u8]) -> Result<Request<'_>, &'static str> {
    if head.len() > HEAD_LIMIT {
        return Err("the request head is too large");
    }
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let first = std::str::from_utf8(first).map_err(|_| "the request line is not UTF-8")?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not `METHOD TARGET HTTP/1.1`");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("the method is not a word in capitals");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return Err("the target is not an absolute path");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("the version is not HTTP/1.0 or HTTP/1.1");
    }
    let mut authorization = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("a header line has no `:`");
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || name.iter().any(|b| !b.is_ascii_graphic()) {
            return Err("a header name is empty or has a space or control character");
        }
        if name.eq_ignore_ascii_case(b"authorization") {
            if authorization.is_some() {
                return Err("two Authorization headers");
            }
            authorization = Some(value.trim_ascii());
        }
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        method,
        path,
        authorization,
    })
}

/// The whole HTTP answer (status line, headers, body) to the request head `head`: what the
/// server sends for it, byte for byte. Pure but for reading `board`.
pub fn request_head_response(head: &[u8], board: &Board, token: Option<&str>) -> Vec<u8> {
    let request = match parse_request(head) {
        Ok(r) => r,
        Err(why) => {
            return response(
                "400 Bad Request",
                "text/plain",
                format!("bad request: {why}\n").as_bytes(),
                &[],
                false,
            );
        }
    };
    let head_only = request.method == "HEAD";
    let authorized = match token {
        None => true,
        Some(t) => request
            .authorization
            .and_then(|a| a.strip_prefix(b"Bearer "))
            .is_some_and(|given| same(given.trim_ascii(), t.as_bytes())),
    };
    if request.method != "GET" && !head_only {
        return response(
            "405 Method Not Allowed",
            "text/plain",
            b"only GET\n",
            &["Allow: GET, HEAD"],
            false,
        );
    }
    if !authorized {
        return response(
            "401 Unauthorized",
            "text/plain",
            b"send Authorization: Bearer <token>\n",
            &["WWW-Authenticate: Bearer"],
            head_only,
        );
    }
    let (code, kind, body) = match request.path {
        "/health" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/status" => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&board.json()).unwrap_or_default() + "\n",
        ),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            board.metrics(),
        ),
        "/gpu/xids" => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(&board.xids_json()).unwrap_or_default() + "\n",
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "endpoints: /health /status /metrics /gpu/xids\n".to_owned(),
        ),
    };
    response(code, kind, body.as_bytes(), &[], head_only)
}

/// An HTTP/1.1 answer that closes the connection; `head_only` leaves the body out (a `HEAD`
/// request), keeping its `Content-Length`.
fn response(
    code: &str,
    kind: &str,
    body: &[u8],
    extra_headers: &[&str],
    head_only: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra_headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:9779".parse().unwrap();
        let err = Listen::new(any, None).unwrap_err();
        assert!(err.to_string().contains("--status-token-file"), "{err}");
        let lo: SocketAddr = "127.0.0.1:9779".parse().unwrap();
        assert_eq!(Listen::new(lo, None).unwrap().token, None);
        let lo6: SocketAddr = "[::1]:9779".parse().unwrap();
        assert!(Listen::new(lo6, None).is_ok());
    }

    #[test]
    fn token_file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  \n").unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(Listen::new(any, Some(&p)).is_err());
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(
            Listen::new(any, Some(&p)).unwrap().token.as_deref(),
            Some("s3cret")
        );
        let missing = dir.path().join("nope");
        let err = Listen::new(any, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    fn answer(head: &str, token: Option<&str>) -> String {
        let board = Board::new("n1");
        String::from_utf8(request_head_response(head.as_bytes(), &board, token)).unwrap()
    }

    fn code(answer: &str) -> &str {
        answer.split(' ').nth(1).unwrap_or("")
    }

    #[test]
    fn request_heads_are_answered_by_what_they_ask() {
        let ok = answer("GET /health HTTP/1.1\r\nHost: x\r\n\r\n", None);
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        assert!(ok.contains("\r\nContent-Length: 3\r\n"), "{ok}");
        let head = answer("HEAD /health?x=1 HTTP/1.0\n\n", None);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        let status = answer("GET /status HTTP/1.1\r\n\r\n", None);
        let body = status.split_once("\r\n\r\n").unwrap().1;
        let doc: Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["node"], "n1");
        assert_eq!(code(&answer("GET /nope HTTP/1.1\r\n\r\n", None)), "404");
        assert_eq!(code(&answer("POST /status HTTP/1.1\r\n\r\n", None)), "405");
    }

    #[test]
    fn a_token_is_needed_whole_and_once() {
        let t = Some("s3cret");
        let no = answer("GET /status HTTP/1.1\r\n\r\n", t);
        assert_eq!(code(&no), "401");
        assert!(no.contains("\r\nWWW-Authenticate: Bearer\r\n"), "{no}");
        let wrong = "GET /status HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n";
        assert_eq!(code(&answer(wrong, t)), "401");
        let right = "GET /health HTTP/1.1\r\nauthorization:  Bearer s3cret \r\n\r\n";
        assert_eq!(code(&answer(right, t)), "200");
        let twice = "GET /health HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nAuthorization: Bearer x\r\n\r\n";
        assert_eq!(code(&answer(twice, t)), "400");
        for a in [&no, &answer(wrong, t), &answer(twice, t)] {
            assert!(!a.contains("s3cret"), "the token is in an answer: {a}");
        }
    }

    #[test]
    fn malformed_heads_get_400_without_echoing_them() {
        for head in [
            &b""[..],
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /health\r\n\r\n",
            b"GET /health HTTP/2\r\n\r\n",
            b"GET  /health HTTP/1.1\r\n\r\n",
            b"get /health HTTP/1.1\r\n\r\n",
            b"GET health HTTP/1.1\r\n\r\n",
            b"GET /he\x01alth HTTP/1.1\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /health HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /health HTTP/1.1\r\n: x\r\n\r\n",
        ] {
            let board = Board::new("n1");
            let a = String::from_utf8(request_head_response(head, &board, None)).unwrap();
            assert_eq!(code(&a), "400", "{:?}: {a}", String::from_utf8_lossy(head));
            assert!(!a.contains("health"), "the answer echoes the request: {a}");
        }
        let huge = format!(
            "GET /health HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(HEAD_LIMIT)
        );
        assert_eq!(code(&answer(&huge, None)), "400");
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nbody"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\r\n"), Some(17));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        let r = parse_request(b"GET /metrics?x HTTP/1.1\r\n\r\nX-After: the head\r\n").unwrap();
        assert_eq!(
            (r.method, r.path, r.authorization),
            ("GET", "/metrics", None)
        );
    }

    #[test]
    fn labels_are_escaped_and_tokens_compared_whole() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
    }
}
