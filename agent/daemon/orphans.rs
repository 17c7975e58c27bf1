//! Service processes left behind by an agent that died without stopping them (SIGKILL, a crash,
//! a power cut leaves none, but a killed agent does): found and ended before a new agent starts
//! any service, so no service ever runs twice.
//!
//! Two records find them: the state file of process groups the last agent wrote
//! (`/var/lib/provision/services.json`), and the `PROVISION_AGENT_ROOT=<root>` variable every
//! service process inherits, which also covers a process spawned after the last write. A
//! recorded group is only killed while one of its members still carries that variable, so a
//! process group id reused by an unrelated program is left alone. A marked process counts only
//! when it sees the same `/` as this agent (`/proc/PID/root`, compared by device and inode): two
//! agents for `/` in two chroots or containers that share one process list each have their own
//! services, and neither kills the other's.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::state_file;
use crate::host::Host;
use crate::resources::service::MARKER_ENV;
use crate::supervisor::process::{group_members, processes};

/// Writes `(service, pgid)` pairs to the state file (atomically: temp file and rename).
pub fn record(host: &Host, groups: &[(String, u32)]) {
    let Some(path) = state_file(host) else { return };
    let json: Vec<serde_json::Value> = groups
        .iter()
        .map(|(name, pgid)| serde_json::json!({"service": name, "pgid": pgid}))
        .collect();
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string(&json).unwrap_or_default();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        tracing::warn!(path = %path.display(), "cannot write the service state file");
    }
}

/// Kills the process groups of services left by an earlier agent for this root, and waits (a
/// few seconds at most) until they are gone.
pub fn kill_left_over(host: &Host) {
    let marker = format!("{MARKER_ENV}={}", host.root().dir().display());
    let marked = marked_groups(&marker);
    let mut groups: Vec<i32> = marked.clone();
    if let Some(path) = state_file(host)
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&text)
    {
        for item in items {
            if let Some(pgid) = item["pgid"].as_i64().and_then(|p| i32::try_from(p).ok())
                && marked.contains(&pgid)
                && !groups.contains(&pgid)
            {
                groups.push(pgid);
            }
        }
    }
    for &pgid in &groups {
        tracing::warn!(
            pgid,
            "killing the process group of a service left by an earlier agent"
        );
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while groups.iter().any(|&g| !group_members(g).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Device and inode of the `/` that process `pid` sees (`self` for this one).
fn root_of(pid: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/root")).ok()?;
    Some((m.dev(), m.ino()))
}

/// Process groups with a live member that sees this agent's `/` and whose environment holds
/// `marker`.
fn marked_groups(marker: &str) -> Vec<i32> {
    let own_root = root_of("self");
    // Never this agent's own group (nor, through it, whoever started the agent): services always
    // lead groups of their own, so a marked process here is not one of them.
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut groups = Vec::new();
    for p in processes() {
        let Ok(env) = std::fs::read(format!("/proc/{}/environ", p.pid)) else {
            continue;
        };
        if p.state != 'Z'
            && p.pgrp > 1
            && p.pgrp != own_group
            && !groups.contains(&p.pgrp)
            && env.split(|&b| b == 0).any(|kv| kv == marker.as_bytes())
            && root_of(&p.pid.to_string()) == own_root
        {
            groups.push(p.pgrp);
        }
    }
    groups
}
