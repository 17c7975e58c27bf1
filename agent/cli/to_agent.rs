//! `apply` when an agent is involved: hand the manifest to the agent that runs for this root, or
//! start one (`--start-agent`) and report its first reconcile. `apply` itself never starts a
//! service: only an agent does, so no unsupervised process is ever left behind.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::daemon::handoff::{self, HandoffError, Outcome, Request};
use crate::host::Host;

use super::output::{Paint, paint};

/// Why an agent could not be reached or started.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Handoff(#[from] HandoffError),
    #[error("{0}")]
    Host(#[from] crate::host::Error),
    #[error("cannot start `provision agent`: {what} {}: {source}", .path.display())]
    Start {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the provision agent (pid {pid}) started but has not finished its first reconcile within {waited:?}; it keeps running\n  hint: follow it in {} or with `provision status --root ...`; stop it with kill -TERM {pid}",
        .log.display()
    )]
    Slow {
        pid: u32,
        waited: Duration,
        log: PathBuf,
    },
    #[error(
        "the provision agent (pid {pid}) exited ({status}) before its first reconcile; its log, {}, ends with:\n{tail}",
        .log.display()
    )]
    Died {
        pid: u32,
        status: String,
        log: PathBuf,
        tail: String,
    },
}

/// Hands `manifest` to the agent `pid` and waits up to `limit` for its answer.
pub fn hand_over(
    host: &Host,
    pid: u32,
    manifest: &Path,
    node: Option<&str>,
    limit: Duration,
) -> Result<Outcome, AgentError> {
    let _turn = handoff::lock(host)?;
    let request = Request {
        id: handoff::new_id(),
        manifest: handoff::absolute(manifest),
        node: node.map(str::to_owned),
    };
    tracing::info!(pid, manifest = %request.manifest.display(), "handing the manifest to the running agent");
    handoff::send(host, pid, &request)?;
    let id = Some(request.id);
    Ok(handoff::wait(host, pid, limit, |o| o.id == id, || false)?)
}

/// Starts `provision agent` for this root in a session of its own, its output appended to
/// `<root>/var/log/provision/agent.log`, and waits up to `limit` until it is ready: status API
/// address written (when it has one) and first reconcile done, services handed to its
/// supervisor. Returns its pid, its log and its first answer.
pub fn start(
    host: &Host,
    root: &Path,
    manifest: &Path,
    node: Option<&str>,
    limit: Duration,
) -> Result<(u32, PathBuf, Outcome), AgentError> {
    let log = host.resolve("/var/log/provision/agent.log")?;
    let start_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| AgentError::Start { what, path, source }
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(start_err("create", dir))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(start_err("open its log", &log))?;
    let err = out.try_clone().map_err(start_err("open its log", &log))?;
    let exe = std::env::current_exe().map_err(start_err("find", Path::new("/proc/self/exe")))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("agent")
        .arg(handoff::absolute(manifest))
        .arg("--root")
        .arg(handoff::absolute(root))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .env("NO_COLOR", "1");
    if let Some(n) = node {
        cmd.args(["--node", n]);
    }
    detach(&mut cmd);
    let mut child = cmd.spawn().map_err(start_err("run", &exe))?;
    let pid = child.id();
    tracing::info!(pid, log = %log.display(), "started provision agent");
    let mut exited = None;
    let waited = handoff::wait(
        host,
        pid,
        limit,
        |o| o.agent_pid == pid && o.id.is_none(),
        || {
            exited = child.try_wait().ok().flatten();
            exited.is_some()
        },
    );
    match waited {
        Ok(outcome) => Ok((pid, log, outcome)),
        Err(HandoffError::Gone { .. }) => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            Err(AgentError::Died {
                pid,
                status: exited.map_or_else(|| "gone".to_owned(), |s| s.to_string()),
                log,
                tail,
            })
        }
        // Still starting (a long first reconcile): it runs on; say so instead of killing it.
        Err(HandoffError::NoAnswer { waited, .. }) => Err(AgentError::Slow { pid, waited, log }),
        Err(e) => Err(e.into()),
    }
}

/// The agent gets a session of its own: no terminal, no signals from apply's process group, and
/// it lives on after apply exits.
#[allow(unsafe_code)]
fn detach(cmd: &mut Command) {
    // SAFETY: runs in the forked child before exec; setsid is async-signal-safe and touches no
    // memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// What the agent did, one line per resource that changed, failed or was skipped, the services
/// that followed, and a summary line.
pub fn print(out: &mut impl Write, outcome: &Outcome, started: Option<(u32, &Path, Option<&str>)>) {
    for e in &outcome.errors {
        let _ = writeln!(out, "{} {e}", paint(Paint::Error, "error"));
    }
    for r in &outcome.resources {
        let _ = match r.status.as_str() {
            "changed" => writeln!(
                out,
                "{} {}: {}",
                paint(Paint::Changed, "changed"),
                r.id,
                r.changes.join("; ")
            ),
            "skipped" => writeln!(
                out,
                "{} {}: not attempted because {}",
                paint(Paint::Skipped, "skipped"),
                r.id,
                r.error.as_deref().unwrap_or("a dependency failed")
            ),
            _ => writeln!(
                out,
                "{} {}: {}",
                paint(Paint::Error, "failed"),
                r.id,
                r.error.as_deref().unwrap_or("unknown error")
            ),
        };
    }
    let s = &outcome.services;
    // Where a service that started or restarted stood when the agent answered.
    let now = |name: &str| {
        outcome
            .service_states
            .iter()
            .find(|s| s.name == name)
            .map_or_else(String::new, |s| format!(", now {}", s.state))
    };
    for name in &s.started {
        let _ = writeln!(
            out,
            "{} service:{name}{}",
            paint(Paint::Changed, "started"),
            now(name)
        );
    }
    for (name, why) in &s.restarted {
        let _ = writeln!(
            out,
            "{} service:{name}: {why}{}",
            paint(Paint::Changed, "restarted"),
            now(name)
        );
    }
    for st in outcome.service_states.iter().filter(|s| s.failed) {
        let _ = writeln!(
            out,
            "{} service:{}: {}",
            paint(Paint::Error, "failed"),
            st.name,
            st.state
        );
    }
    for name in &s.stopped {
        let _ = writeln!(
            out,
            "{} service:{name}: no longer in the manifest",
            paint(Paint::Changed, "stopped")
        );
    }
    let who = match started {
        Some((pid, log, addr)) => {
            let addr = addr.map_or_else(String::new, |a| format!(", status API http://{a}"));
            format!(
                "started provision agent (pid {pid}, log {}{addr})",
                log.display()
            )
        }
        None => format!("provision agent (pid {})", outcome.agent_pid),
    };
    let verdict = if !outcome.applied {
        "refused the manifest, kept the running one"
    } else if outcome.ok {
        "applied"
    } else {
        "applied with failures"
    };
    let _ = writeln!(
        out,
        "{who} {verdict}: {} generation {}, node {}: {} changed, {} unchanged, {} failed, {} skipped",
        outcome.manifest.display(),
        outcome.generation,
        outcome.node,
        outcome.changed,
        outcome.unchanged,
        outcome.failed,
        outcome.skipped
    );
}

/// The exit code of an apply the agent answered, as for a local apply: 1 refused manifest,
/// 4 failures; with `detailed`: 0 no changes, 2 changes, 4 failures, 6 both.
pub fn exit_code(outcome: &Outcome, detailed: bool) -> u8 {
    if !outcome.applied {
        return 1;
    }
    let failed = !outcome.ok;
    let s = &outcome.services;
    let changed = outcome.changed > 0
        || !s.started.is_empty()
        || !s.restarted.is_empty()
        || !s.stopped.is_empty();
    crate::engine::report::exit_code(detailed, changed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::handoff::ServiceChanges;

    fn outcome(applied: bool, ok: bool, changed: usize, services: ServiceChanges) -> Outcome {
        Outcome {
            id: None,
            agent_pid: 1,
            generation: 2,
            manifest: PathBuf::from("/m.yaml"),
            node: "n1".into(),
            applied,
            ok,
            errors: Vec::new(),
            changed,
            unchanged: 3,
            failed: usize::from(!ok),
            skipped: 0,
            resources: Vec::new(),
            services,
            service_states: Vec::new(),
        }
    }

    #[test]
    fn exit_codes_match_a_local_apply() {
        let none = ServiceChanges::default();
        let restarted = ServiceChanges {
            restarted: vec![("a".into(), "its spec changed".into())],
            ..ServiceChanges::default()
        };
        assert_eq!(exit_code(&outcome(false, false, 0, none.clone()), false), 1);
        assert_eq!(exit_code(&outcome(false, false, 0, none.clone()), true), 1);
        assert_eq!(exit_code(&outcome(true, true, 0, none.clone()), false), 0);
        assert_eq!(exit_code(&outcome(true, true, 1, none.clone()), false), 0);
        assert_eq!(exit_code(&outcome(true, false, 1, none.clone()), false), 4);
        assert_eq!(exit_code(&outcome(true, true, 0, none.clone()), true), 0);
        // A service that followed is a change, even when no resource changed.
        assert_eq!(
            exit_code(&outcome(true, true, 0, restarted.clone()), true),
            2
        );
        assert_eq!(exit_code(&outcome(true, false, 0, none), true), 4);
        assert_eq!(exit_code(&outcome(true, false, 0, restarted), true), 6);
    }

    /// `text` without colour codes (on a terminal the words are painted).
    fn plain(text: Vec<u8>) -> String {
        let text = String::from_utf8(text).unwrap();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find('\x1b') {
            out.push_str(&rest[..i]);
            rest = rest[i..].split_once('m').map_or("", |(_, r)| r);
        }
        out + rest
    }

    #[test]
    fn the_summary_says_who_did_what() {
        let mut out = Vec::new();
        let o = outcome(
            true,
            true,
            0,
            ServiceChanges {
                stopped: vec!["c".into()],
                ..ServiceChanges::default()
            },
        );
        print(&mut out, &o, None);
        let text = plain(out);
        assert_eq!(
            text,
            "stopped service:c: no longer in the manifest\nprovision agent (pid 1) applied: /m.yaml generation 2, node n1: 0 changed, 3 unchanged, 0 failed, 0 skipped\n"
        );
        let mut out = Vec::new();
        print(
            &mut out,
            &outcome(false, false, 0, ServiceChanges::default()),
            None,
        );
        assert!(plain(out).contains("refused the manifest, kept the running one"),);
    }
}
