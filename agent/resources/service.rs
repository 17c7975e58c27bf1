//! The `service` resource: what `apply` does with a server process, and how a manifest service
//! becomes a [`supervisor::ServiceSpec`](crate::supervisor::ServiceSpec) for the agent.
//!
//! `apply` never starts a service: a process it started would be left unsupervised when it exits
//! (no restarts, nobody to stop it in order). In `apply` a service is a check: its user, groups
//! and working directory must resolve in the root, or it fails (and what is after it is
//! skipped); when they do it is reported unchanged with the note that `provision agent` starts
//! it. The agent builds the same spec with [`supervised`] and hands it to the supervisor.

use std::time::Duration;

use crate::engine::{Change, Need, Resource};
use crate::host::{Host, Result};
use crate::manifest::model::{ProbeSpec, RestartSpec, ServiceSpec as Spec};
use crate::supervisor::{
    BackoffConfig, Check, Identity, LogConfig, Probe, ProcessSpec, RestartPolicy, ServiceSpec,
    SpawnError, StopConfig,
};

/// Where service logs go (a node path, under `--root`): `<name>.log`, rotated.
pub const LOG_DIR: &str = "/var/log/provision";

/// The environment variable every service process gets: the agent's root, so the agent can find
/// processes left from an earlier run of itself (after a SIGKILL or a power cut) and end them.
pub const MARKER_ENV: &str = "PROVISION_AGENT_ROOT";

/// How long one start waits for `wait_for:` by default.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Service {
    pub spec: Spec,
}

impl Resource for Service {
    /// The supervised spec, or why it cannot be built on this node.
    type Observed = std::result::Result<ServiceSpec, NotReady>;

    fn id(&self) -> String {
        format!("service:{}", self.spec.name)
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs: Vec<Need> = self.spec.user.clone().map(Need::User).into_iter().collect();
        needs.extend(self.spec.group.clone().map(Need::Group));
        needs.extend(self.spec.groups.iter().cloned().map(Need::Group));
        needs.extend(self.spec.working_dir.clone().map(Need::Directory));
        needs
    }

    fn observe(&self, host: &Host) -> Result<Self::Observed> {
        Ok(supervised(&self.spec, host))
    }

    fn diff(&self, _observed: &Self::Observed) -> Vec<Change> {
        Vec::new()
    }

    fn apply(&self, _host: &Host, _observed: &Self::Observed, _changes: &[Change]) -> Result<()> {
        // Unreachable: the diff is always empty; services are started by the agent only.
        Ok(())
    }

    fn verify(
        &self,
        observed: &Self::Observed,
        write: bool,
    ) -> std::result::Result<Option<String>, String> {
        if let Err(not_ready) = observed {
            // In check mode the user, groups and working directory that earlier resources of
            // this manifest create are not there yet: say so instead of failing the plan.
            if !write && not_ready.pending {
                return Ok(Some(format!(
                    "not started by apply; checked once the resources it needs exist ({})",
                    not_ready.why
                )));
            }
            return Err(not_ready.why.clone());
        }
        Ok(Some(
            "not started by apply: `provision agent MANIFEST` starts and supervises services"
                .into(),
        ))
    }
}

/// Why a service cannot be supervised on this node (yet).
#[derive(Debug, Clone)]
pub struct NotReady {
    pub why: String,
    /// It is missing something this manifest creates before it: its user, a group, its working
    /// directory (validation has checked that the manifest defines them). Only check mode, where
    /// those resources have not run, can see this state without a failed dependency.
    pub pending: bool,
}

impl From<String> for NotReady {
    fn from(why: String) -> NotReady {
        NotReady {
            why,
            pending: false,
        }
    }
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

/// The supervisor's spec for `spec` on `host`: the identity from the root's account files, node
/// paths (working directory, file probes, the log) resolved under the root. The command is not:
/// it runs on this machine as it is.
pub fn supervised(spec: &Spec, host: &Host) -> std::result::Result<ServiceSpec, NotReady> {
    let argv = spec.argv();
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| format!("service {} has an empty command", spec.name))?;
    let identity = match spec.user.as_deref() {
        None => None,
        Some(user) => {
            let accounts = host.accounts().map_err(|e| e.to_string())?;
            Some(
                Identity::resolve(&accounts, user, spec.group.as_deref(), &spec.groups).map_err(
                    |e| NotReady {
                        why: format!("service {}: {e}", spec.name),
                        pending: matches!(
                            e,
                            SpawnError::UnknownUser(_) | SpawnError::UnknownGroup(_)
                        ),
                    },
                )?,
            )
        }
    };
    if identity.as_ref().is_some_and(|i| i.uid == 0) && !spec.allow_root {
        return Err(format!(
            "service {} would run as root (uid 0); set allow_root: true if it really must",
            spec.name
        )
        .into());
    }
    let resolve = |p: &str| host.resolve(p).map_err(|e| e.to_string());
    let cwd = match &spec.working_dir {
        Some(dir) => {
            let real = resolve(dir)?;
            if !real.is_dir() {
                return Err(NotReady {
                    why: format!(
                        "service {}: working_dir {dir} is not a directory",
                        spec.name
                    ),
                    pending: true,
                });
            }
            real
        }
        None => host.root().dir().to_path_buf(),
    };
    let log = resolve(&format!("{LOG_DIR}/{}.log", spec.name))?;
    let probe = |p: &ProbeSpec| -> std::result::Result<Probe, String> {
        let check = if let Some(addr) = &p.tcp {
            Check::Tcp { addr: addr.clone() }
        } else if let Some(h) = &p.http {
            Check::Http {
                url: h.url.clone(),
                status: h.status.unwrap_or(200),
                body_contains: h.body_contains.clone(),
                token_file: h.token_file.as_deref().map(resolve).transpose()?,
            }
        } else if let Some(path) = &p.file {
            Check::File {
                path: resolve(path)?,
            }
        } else if let Some(cmd) = &p.command {
            let (program, args) = cmd.split_first().ok_or("empty probe command")?;
            Check::Command {
                program: program.clone(),
                args: args.to_vec(),
            }
        } else if let Some(text) = &p.log_line {
            Check::LogLine {
                path: log.clone(),
                contains: text.clone(),
            }
        } else {
            return Err(format!("service {}: a probe checks nothing", spec.name));
        };
        Ok(Probe {
            check,
            interval: p.interval.map_or(Duration::from_secs(1), |d| d.0),
            timeout: p.timeout.map_or(Duration::from_secs(2), |d| d.0),
        })
    };
    let defaults = BackoffConfig::default();
    let b = &spec.backoff;
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push((MARKER_ENV.into(), host.root().dir().display().to_string()));
    Ok(ServiceSpec {
        process: ProcessSpec {
            name: spec.name.clone(),
            program: program.clone(),
            args: args.to_vec(),
            env,
            cwd: Some(cwd),
            identity,
            allow_root: spec.allow_root,
            umask: spec.umask.map(|m| m.0),
            log: LogConfig {
                path: log.clone(),
                max_bytes: 10 << 20,
                keep: 3,
            },
            stop: StopConfig {
                signal: match &spec.stop.signal {
                    Some(name) => crate::supervisor::process::parse_signal(name)
                        .ok_or_else(|| format!("`{name}` is not a signal name"))?,
                    None => StopConfig::default().signal,
                },
                grace: spec.stop.grace.map_or(StopConfig::default().grace, |d| d.0),
            },
        },
        after: spec
            .after
            .iter()
            .filter_map(|a| a.strip_prefix("service:").map(str::to_owned))
            .collect(),
        readiness: spec.readiness.as_ref().map(probe).transpose()?,
        ready_timeout: spec.start_timeout.map_or(Duration::from_secs(60), |d| d.0),
        liveness: spec.liveness.as_ref().map(probe).transpose()?,
        liveness_failures: spec.liveness.as_ref().and_then(|p| p.failures).unwrap_or(3),
        wait_for: spec
            .wait_for
            .iter()
            .map(probe)
            .collect::<std::result::Result<_, _>>()?,
        wait_timeout: spec.wait_timeout.map_or(WAIT_TIMEOUT, |d| d.0),
        backoff: BackoffConfig {
            policy: match spec.restart {
                RestartSpec::Always => RestartPolicy::Always,
                RestartSpec::OnFailure => RestartPolicy::OnFailure,
                RestartSpec::Never => RestartPolicy::Never,
            },
            base: b.base.map_or(defaults.base, |d| d.0),
            cap: b.cap.map_or(defaults.cap, |d| d.0),
            jitter: b.jitter.unwrap_or(defaults.jitter),
            healthy_after: b.healthy_after.map_or(defaults.healthy_after, |d| d.0),
            start_limit: b.start_limit.unwrap_or(defaults.start_limit),
            start_window: b.start_window.map_or(defaults.start_window, |d| d.0),
        },
    })
}
