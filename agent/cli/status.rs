//! `provision status`: asks the running agent's status API and prints it as a table (or the JSON
//! as is), and the agent's `--status-listen` checks.
//!
//! Where the agent is: `--listen ADDR`, else the address the agent wrote under `--root`
//! (`/var/lib/provision/status.addr`), else the default `127.0.0.1:9779`. Exit 0 when the agent
//! answered, 3 when no agent answers there.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::daemon::status::{ADDR_FILE, DEFAULT_LISTEN, Listen, ListenError};
use crate::host::STATE_DIR;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's status address (default: what the agent under --root wrote, else
    /// 127.0.0.1:9779).
    #[arg(long, env = "PROVISION_STATUS_LISTEN")]
    listen: Option<String>,
    /// The root the agent runs for; its status address is read from there.
    #[arg(long, default_value = "/", env = "PROVISION_ROOT")]
    root: PathBuf,
    /// The token file, when the agent requires one.
    #[arg(long, env = "PROVISION_STATUS_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Print the agent's JSON document as it is (with --cluster: one object per node).
    #[arg(long)]
    json: bool,
    /// Ask every node of this manifest (or signed bundle) at once, one row each: its agent at
    /// <node address>:--port, with the token of --token-file if given.
    #[arg(long, value_name = "MANIFEST")]
    cluster: Option<PathBuf>,
    /// With --cluster: the port the agents' status API listens on.
    #[arg(long, default_value_t = 9779, requires = "cluster")]
    port: u16,
    /// With --cluster: how long each node may take to answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "cluster")]
    timeout: Duration,
    /// With a bundle for --cluster: the public key it must be signed with.
    #[arg(long, env = "PROVISION_BUNDLE_KEY")]
    bundle_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Listen(#[from] ListenError),
    #[error("--status-listen {0}: not an address (HOST:PORT, e.g. 127.0.0.1:9779, or `off`)")]
    Address(String),
    #[error(
        "no provision agent answers at {addr}: {reason}\n  hint: is `provision agent` running? Give its address with --listen, or its --root"
    )]
    Unreachable { addr: String, reason: String },
    #[error("the agent at {addr} answered {answer}")]
    Answer { addr: String, answer: String },
    #[error("--token-file {}: {reason}", .path.display())]
    Token { path: PathBuf, reason: String },
    #[error("--cluster {}: {reason}", .path.display())]
    Cluster { path: PathBuf, reason: String },
}

impl StatusError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StatusError::Unreachable { .. } => 3,
            _ => 1,
        }
    }
}

/// The agent's `--status-listen` and `--status-token-file`, checked before it touches anything.
pub fn listen(addr: &str, token_file: Option<&Path>) -> Result<Option<Listen>, StatusError> {
    if addr == "off" {
        return Ok(None);
    }
    let parsed: SocketAddr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| StatusError::Address(addr.to_owned()))?;
    Ok(Some(Listen::new(parsed, token_file)?))
}

pub fn run(args: &StatusArgs) -> Result<u8, StatusError> {
    let token = match &args.token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| StatusError::Token {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .trim()
                .to_owned(),
        ),
    };
    if let Some(path) = &args.cluster {
        let nodes = super::cluster::nodes(path, args.bundle_key.as_deref()).map_err(|reason| {
            StatusError::Cluster {
                path: path.clone(),
                reason,
            }
        })?;
        let rows: Vec<Value> =
            super::cluster::ask(&nodes, args.port, token.as_deref(), args.timeout)
                .iter()
                .map(super::cluster::summary)
                .collect();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if args.json {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"format_version": 1, "nodes": rows})
                )
                .unwrap_or_default()
            );
        } else {
            super::cluster::table(&mut out, &rows);
        }
        return Ok(super::cluster::exit_code(&rows));
    }
    let addr = match &args.listen {
        Some(a) => a.clone(),
        None => std::fs::read_to_string(
            args.root
                .join(STATE_DIR.trim_start_matches('/'))
                .join(ADDR_FILE),
        )
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| DEFAULT_LISTEN.to_owned()),
    };
    let body = get(&addr, "/status", token.as_deref())?;
    if args.json {
        println!("{body}");
        return Ok(0);
    }
    let doc: Value = serde_json::from_str(&body).map_err(|e| StatusError::Answer {
        addr: addr.clone(),
        answer: format!("something that is not JSON ({e})"),
    })?;
    let stdout = std::io::stdout();
    table(&mut stdout.lock(), &doc);
    Ok(0)
}

/// The largest status document read.
const MAX_STATUS: u64 = 16 << 20;

/// One GET of the agent's status API; the body of a 200 answer.
pub fn get(addr: &str, path: &str, token: Option<&str>) -> Result<String, StatusError> {
    let mut req = crate::http::Get::new(
        format!("http://{addr}{path}"),
        Duration::from_secs(5),
        MAX_STATUS,
    );
    req.cut_body = false;
    if let Some(t) = token {
        req.headers.push(("authorization", format!("Bearer {t}")));
    }
    let answer = crate::http::get(req).map_err(|e| StatusError::Unreachable {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })?;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    if answer.status != 200 {
        return Err(StatusError::Answer {
            addr: addr.to_owned(),
            answer: format!("HTTP {}: {}", answer.status, body.trim()),
        });
    }
    Ok(body)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints the status document as a header, a services table and the drift events.
fn table(out: &mut impl Write, doc: &Value) {
    let last = &doc["last_reconcile"];
    let s = &last["summary"];
    let _ = writeln!(
        out,
        "node {} (agent pid {}, up since {})",
        text(&doc["node"]),
        text(&doc["pid"]),
        text(&doc["started_at"])
    );
    if last.is_null() {
        let _ = writeln!(out, "last reconcile: none yet");
    } else {
        let _ = writeln!(
            out,
            "last reconcile: {} ({}): {} changed, {} unchanged, {} failed, {} skipped in {:.1} ms",
            text(&last["at"]),
            text(&last["cause"]),
            text(&s["changed"]),
            text(&s["unchanged"]),
            text(&s["failed"]),
            text(&s["skipped"]),
            s["duration_ms"].as_f64().unwrap_or(0.0)
        );
    }
    for r in doc["resources"].as_array().into_iter().flatten() {
        if r["status"] == "failed" || r["status"] == "skipped" {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                text(&r["status"]),
                text(&r["id"]),
                text(&r["reason"])
            );
        }
    }
    let rows: Vec<[String; 6]> = doc["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let detail = match s["last_error"].as_str() {
                Some(why) => format!("{}; last start failed: {why}", text(&s["detail"])),
                None => text(&s["detail"]),
            };
            [
                text(&s["name"]),
                detail,
                text(&s["pid"]),
                text(&s["restarts"]),
                text(&s["last_exit"]),
                text(&s["since"]),
            ]
        })
        .collect();
    let head = ["SERVICE", "STATE", "PID", "RESTARTS", "LAST EXIT", "SINCE"];
    let mut widths = head.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(out);
    if rows.is_empty() {
        let _ = writeln!(out, "no services");
    } else {
        let _ = writeln!(out, "{}", line(head));
        for row in &rows {
            let _ = writeln!(out, "{}", line(row.each_ref().map(String::as_str)));
        }
    }
    let drift = &doc["drift"];
    let _ = writeln!(out, "\ndrift repairs: {}", text(&drift["repairs_total"]));
    for e in drift["events"].as_array().into_iter().flatten() {
        let changes: Vec<String> = e["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let what = if e["repaired"] == true {
            "repaired"
        } else {
            "NOT repaired"
        };
        let _ = writeln!(
            out,
            "  {} {what} ({}): {}: {}",
            text(&e["at"]),
            text(&e["found_by"]),
            text(&e["id"]),
            changes.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads() {
        let doc = serde_json::json!({
            "node": "n1", "pid": 7, "started_at": "2026-01-01T00:00:00.000Z",
            "last_reconcile": {"at": "2026-01-01T00:00:01.000Z", "cause": "drift",
                "summary": {"changed": 1, "unchanged": 4, "failed": 0, "skipped": 0, "duration_ms": 0.25}},
            "resources": [],
            "services": [{"name": "data", "detail": "ready (pid 9)", "pid": 9, "restarts": 2,
                "last_exit": "exit status 1", "since": "2026-01-01T00:00:00.500Z"}],
            "drift": {"repairs_total": 1, "events": [{"at": "2026-01-01T00:00:01.000Z",
                "id": "file:/etc/x", "changes": ["content changes (+1 -1 lines)"],
                "found_by": "inotify", "repaired": true}]}
        });
        let mut out = Vec::new();
        table(&mut out, &doc);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("last reconcile: 2026-01-01T00:00:01.000Z (drift): 1 changed, 4 unchanged, 0 failed, 0 skipped in 0.2 ms"), "{out}");
        assert!(
            out.contains("SERVICE  STATE          PID  RESTARTS  LAST EXIT      SINCE"),
            "{out}"
        );
        assert!(
            out.contains(
                "data     ready (pid 9)  9    2         exit status 1  2026-01-01T00:00:00.500Z"
            ),
            "{out}"
        );
        assert!(
            out.contains("repaired (inotify): file:/etc/x: content changes (+1 -1 lines)"),
            "{out}"
        );
    }
}
