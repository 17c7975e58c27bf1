//! The agent's status API: `/health`, `/status` (JSON) and `/metrics` (Prometheus text) over
//! plain HTTP/1.1 on one thread.
//!
//! Guarantees: it listens on a loopback address unless a token file is given, and with a token
//! every request must carry `Authorization: Bearer <token>`; it only reads (no endpoint changes
//! anything); a slow or broken client cannot stall it for more than [`CLIENT_TIMEOUT`]. The data
//! is a [`Board`] the agent loop updates after each reconcile and on each tick (services: at most
//! one tick, 200 ms, old).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::engine::{Report, Status};
use crate::host::{Host, STATE_DIR};
use crate::supervisor::{ServiceStatus, State};

/// The address the status API listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9779";
/// Where the agent writes the address it listens on (under the root), for `provision status`.
pub const ADDR_FILE: &str = "status.addr";
/// How long one client may take to send its request.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
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
    let token = listen.token.clone();
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                handle(stream, &board, token.as_deref());
            }
        })
        .map_err(|source| ListenError::Bind {
            addr: listen.addr,
            source,
        })?;
    Ok(Server { addr_file })
}

/// Answers one request and closes the connection.
fn handle(stream: TcpStream, board: &Board, token: Option<&str>) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut reader = BufReader::new((&stream).take(16 * 1024));
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut auth = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case("authorization")
                {
                    auth = Some(v.trim().to_owned());
                }
            }
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let authorized = match token {
        None => true,
        Some(t) => auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), t.as_bytes())),
    };
    let (code, kind, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_owned(),
        )
    } else if !authorized {
        (
            "401 Unauthorized",
            "text/plain",
            "send Authorization: Bearer <token>\n".to_owned(),
        )
    } else {
        match path {
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
        }
    };
    let mut head = format!(
        "HTTP/1.1 {code}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if code.starts_with("401") {
        head.push_str("WWW-Authenticate: Bearer\r\n");
    }
    head.push_str("\r\n");
    let mut out = &stream;
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = out.write_all(body.as_bytes());
    }
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

    #[test]
    fn labels_are_escaped_and_tokens_compared_whole() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
    }
}
