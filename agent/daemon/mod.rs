//! `provision agent`: reconcile the node, then keep its services running and the node in shape.
//!
//! One loop on the main thread: it waits for a signal (forwarded by a thread that owns them all)
//! or for the next periodic reconcile, and acts. Guarantees: one agent per root (a `flock` on
//! `/var/lib/provision/agent.lock`); processes left by an earlier agent that died without stopping
//! them are killed before any service starts, so a restart never duplicates a service; a service
//! whose `after:` resource failed is not started; SIGTERM/SIGINT stop every service in reverse
//! dependency order and exit 0; an invalid manifest on SIGHUP changes nothing.
//!
//! `provision apply` talks to a running agent through [`handoff`]: on SIGHUP the agent takes a
//! pending request (switching to its manifest), reloads, lets the services follow (new ones
//! start, removed ones stop, a changed one or one after a changed resource restarts, the others
//! keep running), and writes what it did, with a generation number, for apply to print.

mod answer;
mod drift;
pub mod handoff;
mod hooks;
mod notify;
mod orphans;
pub mod pull;
pub mod status;
pub mod trim;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use crate::engine::{self, Options, Report, Status, Step};
use crate::facts::{self, Facts};
use crate::host::{Host, STATE_DIR};
use crate::manifest::{self, model::ResourceSpec};
use crate::resources::service::supervised;
use crate::supervisor::{ServiceSpec, Supervisor};
use handoff::ServiceChanges;

/// Why the agent did not start (nothing was touched).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Manifest(#[from] manifest::Diagnostics),
    #[error("{0}")]
    Select(#[from] manifest::SelectError),
    #[error("{0}")]
    Host(#[from] crate::host::Error),
    #[error("{0}")]
    Cycle(#[from] engine::CycleError),
    #[error(
        "another provision agent (pid {holder}) already runs for this root (lock {})\n  hint: stop it first (kill -TERM {holder}), or send it SIGHUP to reload its manifest",
        .path.display()
    )]
    Locked { path: PathBuf, holder: String },
    #[error("cannot set up signal handling: {0}")]
    Signals(nix::Error),
    #[error("{0}")]
    Status(#[from] status::ListenError),
    #[error("{0}")]
    Pull(String),
}

/// What `provision agent` was asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    pub manifest: PathBuf,
    pub node: Option<String>,
    pub root: PathBuf,
    pub interval: Duration,
    /// Where the status API listens; `None`: no status API.
    pub status: Option<status::Listen>,
    /// The manifest comes as a signed bundle from this URL (`manifest` is then where it was
    /// unpacked, filled in at start).
    pub pull: Option<pull::Pull>,
}

/// Why the agent loop wakes up.
pub(crate) enum Wake {
    Signal(Signal),
    /// The drift watch saw the paths of these resources change.
    Drift(Vec<String>),
    /// The supervisor's status changed (a service started, became ready, exited, ...).
    Services,
    /// The poller found a new bundle.
    Bundle(Box<pull::Pulled>),
}

/// One loaded manifest: the node's steps and its services as written.
struct Loaded {
    node: String,
    steps: Vec<Step>,
    services: Vec<manifest::model::ServiceSpec>,
    /// `sha256:` of the manifest files as read (each file's path and content).
    hash: String,
}

fn load(config: &Config, facts: &Facts) -> Result<Loaded, Error> {
    let m = manifest::parse(&config.manifest)?;
    let mut hasher = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for s in &m.sources {
        hasher.update(s.path.as_os_str().as_encoded_bytes());
        hasher.update(b"\0");
        hasher.update(&std::fs::read(&s.path).unwrap_or_default());
        hasher.update(b"\0");
    }
    let hash = format!(
        "sha256:{}",
        crate::bundle::format::hex(hasher.finish().as_ref())
    );
    let sel = m.select(config.node.as_deref(), &facts::hostname())?;
    let steps = crate::resources::build(&m, &sel, facts);
    engine::check_order(&steps)?;
    let services = sel
        .resources
        .iter()
        .filter_map(|&i| match &m.resources[i].value {
            ResourceSpec::Service(s) => Some((**s).clone()),
            _ => None,
        })
        .collect();
    Ok(Loaded {
        node: sel.node.name.clone(),
        steps,
        services,
        hash,
    })
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: &Config) -> Result<(), Error> {
    // Blocked here, before any thread exists, so every thread inherits the mask and only the
    // forwarding thread receives them (children get a clean mask from std's spawn).
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().map_err(Error::Signals)?;
    let facts = Facts::gather();
    let mut config = config.clone();
    // A manifest file is checked before anything is touched; a bundle is fetched (and cached)
    // under the agent lock.
    let (loaded, host, _lock, pulling) = match config.pull.clone() {
        None => {
            let loaded = load(&config, &facts)?;
            let host = Host::new(&config.root)?;
            let lock = lock(&host)?;
            (loaded, host, lock, None)
        }
        Some(p) => {
            let host = Host::new(&config.root)?;
            let lock = lock(&host)?;
            let (loaded, path, current) = pull::first(&host, &p, |path| {
                let mut c = config.clone();
                c.manifest = path.to_owned();
                load(&c, &facts)
            })?;
            config.manifest = path;
            (loaded, host, lock, Some((p, current)))
        }
    };
    let config = &config;
    orphans::kill_left_over(&host);
    let board = status::Board::new(&loaded.node).with_xids(crate::gpu::xid::AgentXids::start());
    let _server = match &config.status {
        Some(listen) => Some(status::serve(listen, &host, board.clone())?),
        None => None,
    };

    let (tx, rx) = mpsc::channel();
    let manifest_info = match &pulling {
        Some((p, current)) => current.json(&p.source.url, &config.manifest),
        None => serde_json::json!({"source": "file", "path": config.manifest, "hash": loaded.hash}),
    };
    board.set_manifest(1, manifest_info);
    if let Some((p, current)) = &pulling {
        pull::start_poller(p.clone(), current, board.clone(), tx.clone());
    }
    let drift = hooks::start_drift_watch(tx.clone());
    let services_changed = tx.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(sig) = signals.wait() {
                if tx.send(Wake::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::Signals(nix::Error::from_raw(e.raw_os_error().unwrap_or(0))))?;

    let mut agent = Agent {
        config: config.clone(),
        host,
        loaded,
        running: Vec::new(),
        supervisor: None,
        recorded: Vec::new(),
        board,
        drift,
        notifier: notify::Notifier::from_env(),
        generation: 1,
        wake: services_changed,
        held: None,
        pulling,
    };
    let asked = std::time::SystemTime::now();
    let report = agent.reconcile();
    agent.observed(status::Cause::Start, &report);
    let errors = agent.start_services(&report).err().into_iter().collect();
    agent.ready();
    let started = ServiceChanges {
        started: agent
            .running
            .iter()
            .map(|(s, _)| s.process.name.clone())
            .collect(),
        ..ServiceChanges::default()
    };
    agent.hold(
        None,
        handoff::Outcome::reconciled(&report, started, errors),
        asked,
    );
    let mut next = Instant::now() + config.interval;
    let mut worked = true;
    loop {
        agent.record();
        agent.tick();
        agent.settle(false);
        if std::mem::take(&mut worked) {
            // What a reconcile ran once need not stay resident while the agent sleeps.
            let kb = trim::release_code_pages();
            tracing::debug!(kb, "handed back the code pages of the reconcile");
        }
        // Asleep until a signal, drift, a service's change, the watchdog or the next periodic
        // reconcile: an idle agent does not poll.
        let mut wait = next.saturating_duration_since(Instant::now());
        if let Some(due) = agent.notifier.next_due() {
            wait = wait.min(due);
        }
        if let Some(until) = agent.held_until() {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        match rx.recv_timeout(wait) {
            Ok(Wake::Services) => {}
            Ok(Wake::Bundle(pulled)) => {
                agent.take_bundle(&facts, *pulled);
                worked = true;
            }
            Ok(Wake::Signal(Signal::SIGHUP)) => {
                let request = handoff::take_request(&agent.host);
                let id = request.as_ref().map(|r| r.id.clone());
                agent.settle(true);
                let asked = std::time::SystemTime::now();
                let outcome = agent.reload(&facts, request);
                agent.hold(id, outcome, asked);
                worked = true;
            }
            Ok(Wake::Drift(ids)) => {
                let report = agent.reconcile();
                agent.observed(status::Cause::Drift(ids), &report);
                agent.restart_dependents(&report, &[]);
                worked = true;
            }
            Ok(Wake::Signal(sig)) => {
                agent.settle(true);
                agent.notifier.send("STOPPING=1");
                tracing::info!(signal = %sig, "stopping every service in reverse dependency order");
                agent.stop();
                tracing::info!("agent stopped");
                return Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= next => {
                tracing::info!("periodic reconcile");
                let report = agent.reconcile();
                agent.observed(status::Cause::Periodic, &report);
                agent.restart_dependents(&report, &[]);
                next = Instant::now() + config.interval;
                worked = true;
            }
            Err(_) => {}
        }
    }
}

/// How long a new agent waits for an agent lock whose recorded holder has ended. A killed agent's
/// lock outlives it in the children it had forked but not yet exec'd (a fork copies the lock's
/// descriptor, the exec closes it): for moments, longer on a loaded machine. Once the lock is
/// free, every such child has exec'd, so a service among them carries its marker and is found.
const ENDED_HOLDER_WAIT: Duration = Duration::from_secs(10);

/// Takes the agent lock and writes this agent's pid into it. A live holder is refused at once;
/// while the recorded holder is gone (or has not written its pid yet) the lock is tried again,
/// for [`ENDED_HOLDER_WAIT`] at most.
fn lock(host: &Host) -> Result<nix::fcntl::Flock<File>, Error> {
    let path = host.resolve(&format!("{STATE_DIR}/agent.lock"))?;
    let io = |what: &'static str| crate::host::Error::io(what, &path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the state directory of"))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io("open the agent lock"))?;
    let deadline = Instant::now() + ENDED_HOLDER_WAIT;
    let mut said = false;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(lock, "{}", std::process::id());
                return Ok(lock);
            }
            Err((mut held, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = held.rewind();
                let _ = held.read_to_string(&mut holder);
                let holder = holder.trim().to_owned();
                let live = holder.parse().is_ok_and(process_alive);
                if live || Instant::now() >= deadline {
                    let holder = if holder.is_empty() {
                        "unknown".to_owned()
                    } else {
                        holder
                    };
                    return Err(Error::Locked { path, holder });
                }
                if !std::mem::replace(&mut said, true) {
                    tracing::warn!(
                        holder = %holder,
                        "the agent lock is held, but not by a running agent (one that was killed leaves it to what it was starting for a moment): waiting for it"
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
                file = held;
            }
            Err((_, e)) => return Err(io("lock")(std::io::Error::from(e)).into()),
        }
    }
}

/// Whether process `pid` exists and has not ended (a zombie has).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

struct Agent {
    config: Config,
    host: Host,
    loaded: Loaded,
    /// The services handed to the supervisor, with their `after:` as written.
    running: Vec<(ServiceSpec, Vec<String>)>,
    supervisor: Option<Supervisor>,
    /// The process groups last written to the state file.
    recorded: Vec<(String, u32)>,
    board: status::Board,
    drift: Option<drift::Drift>,
    notifier: notify::Notifier,
    /// Manifests applied: 1 after the start, +1 for each valid reload.
    generation: u64,
    /// The supervisor wakes the loop through this when a service's state changes.
    wake: mpsc::Sender<Wake>,
    /// The last answer, held until its services settle.
    held: Option<answer::Held>,
    /// `agent URL`: where bundles come from, and the one running.
    pulling: Option<(pull::Pull, pull::Current)>,
}

impl Agent {
    /// Runs the engine over every resource (services are only checked by it), under the apply
    /// lock so an `apply` at the same time waits.
    fn reconcile(&self) -> Report {
        let started = Instant::now();
        let report = {
            let _apply_lock = self.host.lock();
            engine::run(
                &self.loaded.steps,
                &self.host,
                &self.loaded.node,
                Options::default(),
            )
        };
        let report = report.unwrap_or_else(|e| {
            // Checked when loaded; a cycle here would be a bug in the check.
            tracing::error!(error = %e, "cannot order the resources");
            Report {
                format_version: 1,
                node: self.loaded.node.clone(),
                root: self.host.root().dir().display().to_string(),
                check: false,
                resources: Vec::new(),
                summary: Default::default(),
            }
        });
        for r in &report.resources {
            match r.status {
                Status::Failed => {
                    tracing::error!(id = %r.id, error = r.error.as_deref().unwrap_or(""), "resource failed")
                }
                Status::Skipped => {
                    tracing::warn!(id = %r.id, because = r.skipped_because.as_deref().unwrap_or(""), "resource skipped")
                }
                Status::Changed => {
                    tracing::info!(id = %r.id, changes = r.changes.len(), "resource changed")
                }
                Status::Unchanged => {}
            }
        }
        let s = &report.summary;
        tracing::info!(
            changed = s.changed,
            unchanged = s.unchanged,
            failed = s.failed,
            skipped = s.skipped,
            ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        report
    }

    /// The services of the loaded manifest that may start after `report`: those the engine
    /// neither failed nor skipped (which covers a failed `after:`), with their supervised specs.
    fn startable(&self, report: &Report) -> Vec<(ServiceSpec, Vec<String>)> {
        let status: BTreeMap<&str, (Status, String)> = report
            .resources
            .iter()
            .map(|r| {
                let why = r
                    .error
                    .clone()
                    .or_else(|| r.skipped_because.clone())
                    .unwrap_or_default();
                (r.id.as_str(), (r.status, why))
            })
            .collect();
        let mut out = Vec::new();
        for svc in &self.loaded.services {
            let id = format!("service:{}", svc.name);
            if let Some((Status::Failed | Status::Skipped, why)) = status.get(id.as_str()) {
                tracing::error!(service = %svc.name, reason = %why, "service not started");
                continue;
            }
            match supervised(svc, &self.host) {
                Ok(spec) => out.push((spec, svc.after.clone())),
                Err(why) => {
                    tracing::error!(service = %svc.name, reason = %why, "service not started")
                }
            }
        }
        out
    }

    fn start_services(&mut self, report: &Report) -> Result<(), String> {
        let set = self.startable(report);
        let specs: Vec<ServiceSpec> = set.iter().map(|(s, _)| s.clone()).collect();
        tracing::info!(
            services = specs.len(),
            "starting services in dependency order"
        );
        let wake = self.wake.clone();
        let changed = move || {
            let _ = wake.send(Wake::Services);
        };
        match Supervisor::start_notifying(specs, changed) {
            Ok(s) => {
                self.supervisor = Some(s);
                self.running = set;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot supervise the services");
                Err(format!("cannot supervise the services: {e}"))
            }
        }
    }

    /// Writes the answer for `id` (or for a start or a plain SIGHUP) with this agent's state.
    fn answer(&self, id: Option<String>, mut outcome: handoff::Outcome) {
        outcome.id = id;
        outcome.generation = self.generation;
        outcome.manifest = self.config.manifest.clone();
        outcome.node = self.loaded.node.clone();
        handoff::answer(&self.host, &outcome);
    }

    /// Restarts every running service that is `after:` a resource that changed in `report`,
    /// except those in `done`; returns `(service, why)` for each.
    fn restart_dependents(&self, report: &Report, done: &[String]) -> Vec<(String, String)> {
        let mut restarted: Vec<(String, String)> = Vec::new();
        let Some(sup) = &self.supervisor else {
            return restarted;
        };
        for r in report
            .resources
            .iter()
            .filter(|r| r.status == Status::Changed)
        {
            for (spec, after) in &self.running {
                let name = &spec.process.name;
                if after.contains(&r.id)
                    && !done.contains(name)
                    && !restarted.iter().any(|(n, _)| n == name)
                {
                    tracing::info!(service = %name, changed = %r.id, "restarting: a resource it is after changed");
                    let why = format!("{} changed", r.id);
                    sup.restart(name, None, &why);
                    restarted.push((name.clone(), why));
                }
            }
        }
        restarted
    }

    /// SIGHUP: re-read the manifest, or switch to the one `request` names; keep the running one
    /// if the new one is invalid. Then reconcile and let the services follow.
    fn reload(&mut self, facts: &Facts, request: Option<handoff::Request>) -> handoff::Outcome {
        let mut config = self.config.clone();
        if let Some(r) = request {
            tracing::info!(manifest = %r.manifest.display(), node = ?r.node, "SIGHUP: apply hands over a manifest");
            config.manifest = r.manifest;
            if r.node.is_some() {
                config.node = r.node;
            }
        } else {
            tracing::info!(manifest = %config.manifest.display(), "SIGHUP: reloading the manifest");
        }
        self.switch(facts, config)
    }

    /// Loads `config`'s manifest; if it is valid, makes it the running one, reconciles and lets
    /// the services follow. An invalid one changes nothing.
    fn switch(&mut self, facts: &Facts, config: Config) -> handoff::Outcome {
        let loaded = match load(&config, facts) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("the new manifest is not valid; keeping the running one:\n{e}");
                return handoff::Outcome::refused(&self.loaded.node, e.to_string());
            }
        };
        self.config = config;
        self.loaded = loaded;
        self.generation += 1;
        if self.pulling.is_some() {
            // take_bundle records the bundle once it is accepted.
            self.board.set_generation(self.generation);
        } else {
            self.board.set_manifest(
                self.generation,
                serde_json::json!({"source": "file", "path": self.config.manifest, "hash": self.loaded.hash}),
            );
        }
        self.notifier.send("RELOADING=1");
        let report = self.reconcile();
        self.observed(status::Cause::Reload, &report);
        self.notifier.send("READY=1");
        let (services, errors) = self.follow(&report);
        handoff::Outcome::reconciled(&report, services, errors)
    }

    /// Brings the supervised services in line with the reloaded manifest: removed ones stop (their
    /// dependents first), new ones start once what they are after is ready, a changed one
    /// restarts with its new spec (a changed `after:` too: only it restarts, the others keep
    /// running), one after a changed resource restarts; the rest keep running.
    fn follow(&mut self, report: &Report) -> (ServiceChanges, Vec<String>) {
        let new = self.startable(report);
        let names = |set: &[(ServiceSpec, Vec<String>)]| -> Vec<String> {
            set.iter().map(|(s, _)| s.process.name.clone()).collect()
        };
        if self.supervisor.is_none() {
            let errors = self.start_services(report).err().into_iter().collect();
            let changes = ServiceChanges {
                started: names(&self.running),
                ..ServiceChanges::default()
            };
            return (changes, errors);
        }
        let Some(sup) = &self.supervisor else {
            return (ServiceChanges::default(), Vec::new());
        };
        let mut changes = ServiceChanges::default();
        let new_names = names(&new);
        let old_names = names(&self.running);
        // Removed: dependents before what they are after.
        let mut removed: Vec<&ServiceSpec> = self
            .running
            .iter()
            .map(|(s, _)| s)
            .filter(|s| !new_names.contains(&s.process.name))
            .collect();
        while let Some(i) = (0..removed.len()).find(|&i| {
            !removed
                .iter()
                .any(|o| o.after.contains(&removed[i].process.name))
        }) {
            let spec = removed.remove(i);
            tracing::info!(service = %spec.process.name, "stopping: no longer in the manifest");
            sup.remove(&spec.process.name);
            changes.stopped.push(spec.process.name.clone());
        }
        // Added: after what they are after.
        let mut added: Vec<&ServiceSpec> = new
            .iter()
            .map(|(s, _)| s)
            .filter(|s| !old_names.contains(&s.process.name))
            .collect();
        while let Some(i) = (0..added.len()).find(|&i| {
            added[i]
                .after
                .iter()
                .all(|a| !added.iter().any(|o| &o.process.name == a))
        }) {
            let spec = added.remove(i);
            tracing::info!(service = %spec.process.name, "starting: new in the manifest");
            sup.add(spec.clone());
            changes.started.push(spec.process.name.clone());
        }
        for (spec, _) in &new {
            let old = self
                .running
                .iter()
                .find(|(o, _)| o.process.name == spec.process.name);
            if let Some((o, _)) = old.filter(|(o, _)| o != spec) {
                let why = if o.after != spec.after && o.process == spec.process {
                    "what it is after changed"
                } else {
                    "its spec changed"
                };
                tracing::info!(service = %spec.process.name, "restarting: {why}");
                sup.restart(&spec.process.name, Some(spec.clone()), why);
                changes
                    .restarted
                    .push((spec.process.name.clone(), why.to_owned()));
            }
        }
        self.running = new;
        let done: Vec<String> = changes.restarted.iter().map(|(n, _)| n.clone()).collect();
        let dependents = self.restart_dependents(report, &done);
        changes.restarted.extend(dependents);
        (changes, Vec::new())
    }

    /// Writes the services' process groups to the state file when they change, so a later agent
    /// can end them if this one dies without stopping them.
    fn record(&mut self) {
        let Some(sup) = &self.supervisor else { return };
        let now: Vec<(String, u32)> = sup
            .status()
            .into_iter()
            .filter_map(|s| s.pid.map(|p| (s.name, p)))
            .collect();
        if now != self.recorded {
            orphans::record(&self.host, &now);
            self.recorded = now;
        }
    }

    fn stop(&mut self) {
        if let Some(mut sup) = self.supervisor.take() {
            sup.stop();
        }
        self.running.clear();
        self.recorded.clear();
        orphans::record(&self.host, &[]);
    }
}

/// The state file listing the process groups of the running services.
fn state_file(host: &Host) -> Option<PathBuf> {
    host.resolve(&format!("{STATE_DIR}/services.json")).ok()
}
