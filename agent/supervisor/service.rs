//! A set of services with `after:` dependencies, kept running by one loop thread.
//!
//! A service counts as started only when its readiness probe passes; its dependents are spawned
//! only then, so start order follows readiness, not spawn. Exits are restarted per policy through
//! [`Backoff`]; a liveness probe that fails `liveness_failures` times in a row stops a hung
//! service the way its stop config says (signal, grace period, SIGKILL to the group, without
//! blocking the other services meanwhile), which then restarts like a crash. A spawn that fails
//! (program missing, log not writable) is retried with the same backoff and counts toward the
//! start-limit breaker. Stop runs in reverse dependency order, each service through
//! [`Process::stop`].
//!
//! The loop sleeps until something happens: a child exits (a thread waits for it), a probe
//! finishes, a command arrives, or the next deadline (probe interval, backoff, timeouts) comes.
//! It does not poll, so an idle supervisor costs nothing and a crash is seen at once.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use super::backoff::{Backoff, BackoffConfig, Decision};
use super::probe::Probe;
use super::process::{Exit, Process, ProcessSpec, SpawnError};

/// One supervised service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// `process.name` is the service's name.
    pub process: ProcessSpec,
    /// Services that must be ready before this one is spawned.
    pub after: Vec<String>,
    /// `None`: ready as soon as spawned.
    pub readiness: Option<Probe>,
    /// A run not ready within this time is killed and counts as a failed start.
    pub ready_timeout: Duration,
    pub liveness: Option<Probe>,
    /// Consecutive liveness failures that mean "hung".
    pub liveness_failures: u32,
    pub backoff: BackoffConfig,
    /// Checks of things outside this supervisor (a rule server on another node) that must all
    /// pass before each spawn, restarts included.
    pub wait_for: Vec<Probe>,
    /// A start that has waited this long for `wait_for` gives up: the service is failed.
    pub wait_timeout: Duration,
}

/// Where a service stands. States carry their data.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// Not spawned: `on` is not ready yet.
    Waiting {
        on: String,
    },
    /// Spawned, readiness not yet passed.
    Starting {
        pid: u32,
    },
    Ready {
        pid: u32,
    },
    /// Being stopped (hung, or not ready in time): signalled, SIGKILL at the end of the grace.
    Stopping {
        pid: u32,
    },
    /// Exited; restarts at `until`.
    Backoff {
        until: Instant,
        attempt: u32,
    },
    /// Exited and the policy says that is final.
    Exited {
        exit: Exit,
    },
    /// Will not be started again: the start-limit breaker tripped, or it cannot be spawned.
    Failed {
        gave_up_at: SystemTime,
        reason: String,
    },
    Stopped,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Waiting { on } if on.is_empty() => write!(f, "waiting to start"),
            State::Waiting { on } => write!(f, "waiting for {on} to be ready"),
            State::Starting { pid } => write!(f, "starting (pid {pid})"),
            State::Ready { pid } => write!(f, "ready (pid {pid})"),
            State::Stopping { pid } => write!(f, "stopping (pid {pid})"),
            State::Backoff { until, attempt } => write!(
                f,
                "backoff: restart {attempt} in {:?}",
                until.saturating_duration_since(Instant::now())
            ),
            State::Exited { exit } => write!(f, "exited ({exit})"),
            State::Failed { gave_up_at, reason } => {
                let at = humantime::format_rfc3339_seconds(*gave_up_at);
                write!(f, "failing, gave up at {at}: {reason}")
            }
            State::Stopped => write!(f, "stopped"),
        }
    }
}

/// A snapshot of one service, for status output.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Why the last start could not be made (the program is missing, the port is taken), until
    /// a start succeeds.
    pub last_error: Option<String>,
    /// When the state last changed.
    pub since: SystemTime,
}

/// Something that happened to a service; also logged through `tracing`.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Spawned {
        pid: u32,
    },
    Ready,
    Exited(Exit),
    NotReady(String),
    Hung(String),
    GaveUp(String),
    SpawnFailed(String),
    Stopped(Option<Exit>),
    /// Stopped to start again (a config file it depends on changed, or its spec did).
    Restarting(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub service: String,
    pub kind: EventKind,
    pub at: Instant,
}

/// A set of services that cannot be supervised as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("two services are named `{0}`")]
    Duplicate(String),
    #[error("service `{service}` is after `{after}`, which is not a service here")]
    UnknownAfter { service: String, after: String },
    #[error("services wait for each other in a cycle: {}", .0.join(", "))]
    Cycle(Vec<String>),
}

/// What the supervisor's loop is asked to do.
enum Command {
    Stop,
    /// Stop the service and start it again (with a new spec if given: same name).
    Restart {
        name: String,
        spec: Option<Box<ServiceSpec>>,
        why: String,
    },
    /// Supervise one more service (its `after:` must be here already).
    Add(Box<ServiceSpec>),
    /// Stop one service and forget it.
    Remove(String),
    /// Something the loop waits for happened (a child exited, a probe finished): look again.
    Wake,
}

#[derive(Debug, Default)]
struct Shared {
    status: Vec<ServiceStatus>,
    events: Vec<Event>,
}

/// The running supervisor. Dropping it stops every service.
#[derive(Debug)]
pub struct Supervisor {
    commands: mpsc::Sender<Command>,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

/// How often a service being stopped is looked at, for its last group members to leave.
const STOP_POLL: Duration = Duration::from_millis(10);

impl Supervisor {
    /// Checks the set (names, `after:` targets, cycles) and starts supervising it.
    pub fn start(specs: Vec<ServiceSpec>) -> Result<Supervisor, ConfigError> {
        Supervisor::start_notifying(specs, || {})
    }

    /// As [`Supervisor::start`]; `changed` is called (from the supervisor's thread) whenever the
    /// status changes or an event happens, so a caller can wait for that instead of polling.
    pub fn start_notifying(
        specs: Vec<ServiceSpec>,
        changed: impl Fn() + Send + 'static,
    ) -> Result<Supervisor, ConfigError> {
        let order = start_order(&specs)?;
        let slots: Vec<Slot> = order
            .into_iter()
            .map(|i| Slot::new(specs[i].clone()))
            .collect();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (commands, rx) = mpsc::channel();
        let mut looper = Loop {
            slots,
            shared: shared.clone(),
            pending: Vec::new(),
            wake: commands.clone(),
            changed: Box::new(changed),
        };
        looper.publish();
        let thread = thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || looper.run(rx))
            .expect("spawn the supervisor thread");
        Ok(Supervisor {
            commands,
            shared,
            thread: Some(thread),
        })
    }

    pub fn status(&self) -> Vec<ServiceStatus> {
        self.lock().status.clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Stops service `name` (signal, grace, SIGKILL to its group) and starts it again once what
    /// it is after is ready; only it: its dependents keep running. With `spec`, the new run uses
    /// it: same name, and its `after:` may differ (names here, no cycle: the manifest check
    /// rules cycles out); the services are put back in start order, so a later stop still goes
    /// in reverse dependency order. `why` goes into the event. Unknown names are ignored.
    pub fn restart(&self, name: &str, spec: Option<ServiceSpec>, why: &str) {
        let _ = self.commands.send(Command::Restart {
            name: name.to_string(),
            spec: spec.map(Box::new),
            why: why.to_string(),
        });
    }

    /// Supervises one more service: it starts once what it is `after:` is ready. Every name in its
    /// `after:` must be supervised here already (it waits for an unknown one forever). A name
    /// that is already here is ignored.
    pub fn add(&self, spec: ServiceSpec) {
        let _ = self.commands.send(Command::Add(Box::new(spec)));
    }

    /// Stops service `name` (signal, grace, SIGKILL to its group) and forgets it. Services after
    /// it must be removed first. Unknown names are ignored.
    pub fn remove(&self, name: &str) {
        let _ = self.commands.send(Command::Remove(name.to_string()));
    }

    /// Stops every service in reverse dependency order and waits for that to finish. Status and
    /// events stay readable afterwards.
    pub fn stop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Indices of `specs` in start order (dependencies first, otherwise as given).
fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, ConfigError> {
    let mut index = BTreeMap::new();
    for (i, s) in specs.iter().enumerate() {
        if index.insert(s.process.name.as_str(), i).is_some() {
            return Err(ConfigError::Duplicate(s.process.name.clone()));
        }
    }
    for s in specs {
        for a in &s.after {
            if !index.contains_key(a.as_str()) {
                return Err(ConfigError::UnknownAfter {
                    service: s.process.name.clone(),
                    after: a.clone(),
                });
            }
        }
    }
    let mut done = vec![false; specs.len()];
    let mut order = Vec::new();
    while order.len() < specs.len() {
        let next = (0..specs.len())
            .find(|&i| !done[i] && specs[i].after.iter().all(|a| done[index[a.as_str()]]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => {
                let stuck = (0..specs.len()).filter(|&i| !done[i]);
                return Err(ConfigError::Cycle(
                    stuck.map(|i| specs[i].process.name.clone()).collect(),
                ));
            }
        }
    }
    Ok(order)
}

struct Run {
    process: Process,
    log_start: u64,
    ready: bool,
    probe: Option<Attempt>,
    next_probe: Instant,
    live_failures: u32,
    /// Set while it is being stopped: SIGKILL to the group at this instant.
    kill_at: Option<Instant>,
}

/// One probe attempt on a thread of its own. Its result is sent before the loop is woken, so a
/// woken loop always finds it.
struct Attempt(mpsc::Receiver<Result<(), String>>);

impl Attempt {
    fn launch(
        name: String,
        wake: &mpsc::Sender<Command>,
        check: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Option<Attempt> {
        let (tx, rx) = mpsc::channel();
        let wake = wake.clone();
        thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _ = tx.send(check());
                let _ = wake.send(Command::Wake);
            })
            .ok()?;
        Some(Attempt(rx))
    }

    /// The result once the attempt is over; a panicked attempt counts as failed.
    fn result(&self) -> Option<Result<(), String>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err("probe panicked".into())),
        }
    }
}

/// A start waiting for the service's `wait_for` checks, one at a time, in order.
struct Wait {
    since: Instant,
    /// The first check not yet passed.
    next: usize,
    probe: Option<Attempt>,
    retry_at: Instant,
    last_error: String,
}

struct Slot {
    spec: ServiceSpec,
    backoff: Backoff,
    run: Option<Run>,
    /// Set while a start waits for `wait_for`.
    wait: Option<Wait>,
    state: State,
    spawns: u32,
    last_exit: Option<Exit>,
    last_error: Option<String>,
    since: SystemTime,
}

impl Slot {
    fn new(spec: ServiceSpec) -> Slot {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        spec.process.name.hash(&mut h);
        SystemTime::now().hash(&mut h);
        let backoff = Backoff::new(spec.backoff.clone(), h.finish());
        let state = State::Waiting {
            on: spec.after.first().cloned().unwrap_or_default(),
        };
        Slot {
            spec,
            backoff,
            run: None,
            wait: None,
            state,
            spawns: 0,
            last_exit: None,
            last_error: None,
            since: SystemTime::now(),
        }
    }

    fn name(&self) -> &str {
        &self.spec.process.name
    }

    fn set(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            self.since = SystemTime::now();
        }
    }

    fn status(&self) -> ServiceStatus {
        ServiceStatus {
            name: self.name().to_string(),
            state: self.state.clone(),
            pid: self.run.as_ref().map(|r| r.process.pid()),
            restarts: self.spawns.saturating_sub(1),
            last_exit: self.last_exit,
            last_error: self.last_error.clone(),
            since: self.since,
        }
    }
}

struct Loop {
    slots: Vec<Slot>,
    shared: Arc<Mutex<Shared>>,
    pending: Vec<Event>,
    /// Child-exit and probe threads wake the loop through this.
    wake: mpsc::Sender<Command>,
    /// Told when the status changed or an event happened.
    changed: Box<dyn Fn() + Send>,
}

impl Loop {
    fn run(&mut self, rx: mpsc::Receiver<Command>) {
        loop {
            self.tick(Instant::now());
            self.publish();
            let now = Instant::now();
            let command = match self.next_deadline(now) {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(now)),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match command {
                Err(RecvTimeoutError::Timeout) | Ok(Command::Wake) => {}
                Ok(Command::Restart { name, spec, why }) => self.restart(&name, spec, why),
                Ok(Command::Add(spec)) => self.add(*spec),
                Ok(Command::Remove(name)) => self.remove(&name),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for i in (0..self.slots.len()).rev() {
            let slot = &mut self.slots[i];
            let exit = slot
                .run
                .take()
                .map(|mut r| r.process.stop(&slot.spec.process.stop));
            if exit.is_some() {
                slot.last_exit = exit;
            }
            slot.set(State::Stopped);
            self.event(i, EventKind::Stopped(exit));
            self.publish();
        }
    }

    /// When the loop must look again at the latest; `None`: only an event (a child exit, a probe
    /// result, a command) can change anything. A running service's timers (its next probe, its
    /// ready timeout, the end of its grace period) count even when already due: the next tick
    /// acts on them. A start's timers (backoff, `wait_for`) count only while in the future: one
    /// already due that the last tick did not act on waits for an `after:` service to become
    /// ready, which is an event.
    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let mut at: Vec<Instant> = Vec::new();
        for slot in &self.slots {
            if let Some(run) = &slot.run {
                if let Some(kill_at) = run.kill_at {
                    at.push(kill_at.min(now + STOP_POLL));
                    continue;
                }
                if !run.ready {
                    at.push(run.process.started() + slot.spec.ready_timeout);
                }
                let probe = if run.ready {
                    slot.spec.liveness.as_ref()
                } else {
                    slot.spec.readiness.as_ref()
                };
                if probe.is_some() && run.probe.is_none() {
                    at.push(run.next_probe);
                }
                continue;
            }
            let mut start = Vec::new();
            if let State::Backoff { until, .. } = slot.state {
                start.push(until);
            }
            if let Some(wait) = &slot.wait {
                start.push(wait.since + slot.spec.wait_timeout);
                if wait.probe.is_none() {
                    start.push(wait.retry_at);
                }
            }
            at.extend(start.into_iter().filter(|&t| t > now));
        }
        at.into_iter().min()
    }

    fn add(&mut self, spec: ServiceSpec) {
        if self.slots.iter().any(|s| s.name() == spec.process.name) {
            return;
        }
        if let Some(missing) = spec
            .after
            .iter()
            .find(|a| !self.slots.iter().any(|s| s.name() == a.as_str()))
        {
            tracing::error!(service = %spec.process.name, after = %missing, "added service is after a service that is not supervised; it waits for it");
        }
        self.slots.push(Slot::new(spec));
        self.publish();
    }

    fn remove(&mut self, name: &str) {
        let Some(i) = self.slots.iter().position(|s| s.name() == name) else {
            return;
        };
        let slot = &mut self.slots[i];
        let exit = slot
            .run
            .take()
            .map(|mut r| r.process.stop(&slot.spec.process.stop));
        self.event(i, EventKind::Stopped(exit));
        self.slots.remove(i);
        self.publish();
    }

    fn restart(&mut self, name: &str, spec: Option<Box<ServiceSpec>>, why: String) {
        let Some(i) = self.slots.iter().position(|s| s.name() == name) else {
            return;
        };
        self.event(i, EventKind::Restarting(why));
        let slot = &mut self.slots[i];
        if let Some(mut run) = slot.run.take() {
            slot.last_exit = Some(run.process.stop(&slot.spec.process.stop));
        }
        let mut reordered = false;
        if let Some(spec) = spec {
            slot.backoff = Backoff::new(spec.backoff.clone(), slot.spawns.into());
            reordered = slot.spec.after != spec.after;
            slot.spec = *spec;
        }
        slot.backoff.reset();
        slot.wait = None;
        let on = slot.spec.after.first().cloned().unwrap_or_default();
        slot.set(State::Waiting { on });
        if reordered {
            self.reorder();
        }
        self.publish();
    }

    /// Puts the slots back in start order (dependencies first, otherwise as they were) after a
    /// service's `after:` changed. Names that are not here do not hold anything back. A cycle
    /// leaves the order as it was and says so.
    fn reorder(&mut self) {
        let names: Vec<String> = self.slots.iter().map(|s| s.name().to_string()).collect();
        let mut done = vec![false; names.len()];
        let mut order = Vec::with_capacity(names.len());
        while order.len() < names.len() {
            let next = (0..names.len()).find(|&i| {
                !done[i]
                    && self.slots[i]
                        .spec
                        .after
                        .iter()
                        .all(|a| names.iter().position(|n| n == a).is_none_or(|j| done[j]))
            });
            let Some(i) = next else {
                let stuck: Vec<&str> = (0..names.len())
                    .filter(|&i| !done[i])
                    .map(|i| names[i].as_str())
                    .collect();
                tracing::error!(services = ?stuck, "services wait for each other in a cycle; start order kept");
                return;
            };
            done[i] = true;
            order.push(i);
        }
        let mut slots: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        self.slots = order.into_iter().filter_map(|i| slots[i].take()).collect();
    }

    fn publish(&mut self) {
        let status: Vec<ServiceStatus> = self.slots.iter().map(Slot::status).collect();
        let changed = {
            let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            let changed = shared.status != status || !self.pending.is_empty();
            shared.status = status;
            shared.events.append(&mut self.pending);
            changed
        };
        if changed {
            (self.changed)();
        }
    }

    fn event(&mut self, i: usize, kind: EventKind) {
        self.event_at(i, kind, Instant::now());
    }

    /// An event that happened at `at` (before now).
    fn event_at(&mut self, i: usize, kind: EventKind, at: Instant) {
        let service = self.slots[i].name().to_string();
        tracing::info!(service = %service, event = ?kind, "supervisor");
        self.pending.push(Event { service, kind, at });
    }

    fn tick(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].run.is_some() {
                self.watch(i, now);
            } else {
                self.maybe_spawn(i, now);
            }
        }
    }

    /// A spawned service: reap an exit, collect probe results, launch the next probe.
    fn watch(&mut self, i: usize, now: Instant) {
        let slot = &mut self.slots[i];
        let Some(run) = slot.run.as_mut() else { return };
        if let Some(kill_at) = run.kill_at {
            if run.process.gone() || now >= kill_at {
                let exit = run.process.kill();
                self.event(i, EventKind::Exited(exit));
                self.exited(i, exit, now, true);
            }
            return;
        }
        if let Some(exit) = run.process.try_exit() {
            self.event(i, EventKind::Exited(exit));
            self.exited(i, exit, now, false);
            return;
        }
        let result = run.probe.as_ref().and_then(Attempt::result);
        if result.is_some() {
            run.probe = None;
            match (run.ready, result) {
                (false, Some(Ok(()))) => {
                    run.ready = true;
                    run.next_probe = now;
                    let pid = run.process.pid();
                    slot.set(State::Ready { pid });
                    self.event(i, EventKind::Ready);
                    return;
                }
                (true, Some(Err(why))) => {
                    run.live_failures += 1;
                    if run.live_failures >= slot.spec.liveness_failures.max(1) {
                        let sent = self.begin_stop(i);
                        self.event_at(i, EventKind::Hung(why), sent);
                        return;
                    }
                }
                (true, Some(Ok(()))) => run.live_failures = 0,
                _ => {}
            }
        }
        if !run.ready && now.duration_since(run.process.started()) >= slot.spec.ready_timeout {
            let why = format!("not ready within {:?}", slot.spec.ready_timeout);
            let sent = self.begin_stop(i);
            self.event_at(i, EventKind::NotReady(why), sent);
            return;
        }
        let probe = if run.ready {
            slot.spec.liveness.as_ref()
        } else {
            slot.spec.readiness.as_ref()
        };
        if let Some(probe) = probe
            && run.probe.is_none()
            && now >= run.next_probe
        {
            run.next_probe = now + probe.interval;
            let (check, timeout, log_start) = (probe.check.clone(), probe.timeout, run.log_start);
            let service = slot.spec.process.clone();
            run.probe = Attempt::launch(format!("probe-{}", service.name), &self.wake, move || {
                check.run_as(timeout, log_start, Some(&service))
            });
        }
    }

    /// Starts stopping service `i` as its stop config says: the signal now, SIGKILL to the group
    /// once the grace period is over (or as soon as the group has left). The loop goes on with
    /// the other services meanwhile; the end counts as an exit, restarted per policy. Returns
    /// when the grace period began (the stop signal went out), which the event that says why
    /// carries, so that "SIGKILL no sooner than the grace after" holds for the events too.
    fn begin_stop(&mut self, i: usize) -> Instant {
        let slot = &mut self.slots[i];
        let sent = Instant::now();
        let Some(run) = slot.run.as_mut() else {
            return sent;
        };
        let stop = slot.spec.process.stop;
        run.process.signal_stop(&stop);
        run.kill_at = Some(sent + stop.grace);
        let pid = run.process.pid();
        slot.set(State::Stopping { pid });
        sent
    }

    /// A run ended; `stopped` says the supervisor stopped it (hung, or not ready in time).
    fn exited(&mut self, i: usize, exit: Exit, now: Instant, stopped: bool) {
        let slot = &mut self.slots[i];
        let Some(run) = slot.run.take() else { return };
        slot.last_exit = Some(exit);
        let started = run.process.started();
        drop(run);
        // A stop for not being ready or for hanging is a failure whatever the status says (a
        // service that exits 0 on its stop signal must still restart under `on-failure`).
        let success = exit.success() && !stopped;
        match slot.backoff.exited(started, now, success) {
            Decision::RestartIn(delay) => {
                let attempt = slot.backoff.attempt();
                slot.set(State::Backoff {
                    until: now + delay,
                    attempt,
                });
                if delay.is_zero() {
                    self.maybe_spawn(i, now);
                }
            }
            Decision::Stay => slot.set(State::Exited { exit }),
            Decision::GiveUp { starts, window } => {
                let reason = format!("{starts} starts within {window:?}, last {exit}");
                slot.set(State::Failed {
                    gave_up_at: SystemTime::now(),
                    reason: reason.clone(),
                });
                self.event(i, EventKind::GaveUp(reason));
            }
        }
    }

    /// Spawns a waiting service, or one whose backoff is over, once all it is after are ready.
    fn maybe_spawn(&mut self, i: usize, now: Instant) {
        match &self.slots[i].state {
            State::Waiting { .. } => {}
            State::Backoff { until, .. } if *until <= now => {}
            _ => return,
        }
        let blocker = self.slots[i].spec.after.iter().find(|a| {
            !self
                .slots
                .iter()
                .any(|s| s.name() == a.as_str() && matches!(s.state, State::Ready { .. }))
        });
        if let Some(on) = blocker {
            if matches!(self.slots[i].state, State::Waiting { .. }) {
                let on = on.clone();
                self.slots[i].set(State::Waiting { on });
            }
            return;
        }
        if !self.waited(i, now) {
            return;
        }
        if let Some(reason) = self.slots[i]
            .spec
            .readiness
            .as_ref()
            .and_then(|p| p.check.taken())
        {
            self.event(i, EventKind::SpawnFailed(reason.clone()));
            self.slots[i].backoff.started(now);
            self.spawn_failed(i, reason, false, now);
            return;
        }
        let slot = &mut self.slots[i];
        let log_start = std::fs::metadata(&slot.spec.process.log.path).map_or(0, |m| m.len());
        slot.backoff.started(now);
        match Process::spawn(&slot.spec.process) {
            Ok(process) => {
                slot.spawns += 1;
                slot.last_error = None;
                let pid = process.pid();
                let wake = self.wake.clone();
                process.on_exit(move || {
                    let _ = wake.send(Command::Wake);
                });
                let ready = slot.spec.readiness.is_none();
                slot.run = Some(Run {
                    process,
                    log_start,
                    ready,
                    probe: None,
                    next_probe: now,
                    live_failures: 0,
                    kill_at: None,
                });
                slot.set(if ready {
                    State::Ready { pid }
                } else {
                    State::Starting { pid }
                });
                self.event(i, EventKind::Spawned { pid });
                if ready {
                    self.event(i, EventKind::Ready);
                }
            }
            Err(e) => {
                let reason = e.to_string();
                let refused = matches!(e, SpawnError::Root(_));
                self.event(i, EventKind::SpawnFailed(reason.clone()));
                self.spawn_failed(i, reason, refused, now);
            }
        }
    }

    /// A spawn that failed counts as a failed start: retried after the backoff delay (never at
    /// once: the program that is missing now is missing a microsecond later), until the breaker
    /// trips. Running as root without `allow_root` is refused for good.
    fn spawn_failed(&mut self, i: usize, reason: String, refused: bool, now: Instant) {
        let slot = &mut self.slots[i];
        slot.last_error = Some(reason.clone());
        let decision = if refused {
            Decision::Stay
        } else {
            slot.backoff.exited(now, now, false)
        };
        match decision {
            Decision::RestartIn(delay) => {
                let delay = delay.max(slot.spec.backoff.base);
                let attempt = slot.backoff.attempt();
                tracing::warn!(service = %slot.spec.process.name, retry_in = ?delay, "cannot start: {reason}");
                slot.set(State::Backoff {
                    until: now + delay,
                    attempt,
                });
            }
            Decision::Stay => slot.set(State::Failed {
                gave_up_at: SystemTime::now(),
                reason,
            }),
            Decision::GiveUp { starts, window } => {
                let reason = format!("{starts} starts within {window:?}, last: {reason}");
                slot.set(State::Failed {
                    gave_up_at: SystemTime::now(),
                    reason: reason.clone(),
                });
                self.event(i, EventKind::GaveUp(reason));
            }
        }
    }

    /// Whether every `wait_for` check of service `i` has passed for this start. Runs the checks
    /// on their own threads, one at a time, never blocking the loop; gives up after
    /// `wait_timeout` (the service is failed, with the last error).
    fn waited(&mut self, i: usize, now: Instant) -> bool {
        let slot = &mut self.slots[i];
        if slot.spec.wait_for.is_empty() {
            return true;
        }
        let mut wait = slot.wait.take().unwrap_or_else(|| Wait {
            since: now,
            next: 0,
            probe: None,
            retry_at: now,
            last_error: String::new(),
        });
        let result = wait.probe.as_ref().and_then(Attempt::result);
        if result.is_some() {
            wait.probe = None;
            match result {
                Some(Ok(())) => {
                    tracing::info!(
                        service = %slot.spec.process.name,
                        check = %slot.spec.wait_for[wait.next].check,
                        waited_ms = now.duration_since(wait.since).as_millis() as u64,
                        "wait_for passed"
                    );
                    wait.next += 1;
                    wait.retry_at = now;
                }
                Some(Err(why)) => wait.last_error = why,
                None => {}
            }
        }
        let Some(probe) = slot.spec.wait_for.get(wait.next).cloned() else {
            return true;
        };
        if now.duration_since(wait.since) >= slot.spec.wait_timeout {
            let reason = format!(
                "gave up waiting for {} after {:?}: {}",
                probe.check, slot.spec.wait_timeout, wait.last_error
            );
            slot.set(State::Failed {
                gave_up_at: SystemTime::now(),
                reason: reason.clone(),
            });
            self.event(i, EventKind::GaveUp(reason));
            return false;
        }
        let on = probe.check.to_string();
        if !matches!(&slot.state, State::Waiting { on: o } if *o == on) {
            tracing::info!(service = %slot.spec.process.name, "waiting for {on}");
            slot.set(State::Waiting { on });
        }
        if wait.probe.is_none() && now >= wait.retry_at {
            wait.retry_at = now + probe.interval;
            let (check, timeout) = (probe.check, probe.timeout);
            let service = slot.spec.process.clone();
            wait.probe = Attempt::launch(format!("wait-{}", service.name), &self.wake, move || {
                check.run_as(timeout, 0, Some(&service))
            });
        }
        slot.wait = Some(wait);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::{LogConfig, StopConfig};

    fn spec(name: &str, after: &[&str]) -> ServiceSpec {
        ServiceSpec {
            process: ProcessSpec {
                name: name.into(),
                program: "/nonexistent".into(),
                args: Vec::new(),
                env: Vec::new(),
                cwd: None,
                identity: None,
                allow_root: false,
                umask: None,
                log: LogConfig {
                    path: "/nonexistent.log".into(),
                    max_bytes: 1024,
                    keep: 1,
                },
                stop: StopConfig::default(),
            },
            after: after.iter().map(|a| a.to_string()).collect(),
            readiness: None,
            ready_timeout: Duration::from_secs(10),
            liveness: None,
            liveness_failures: 1,
            backoff: BackoffConfig::default(),
            wait_for: Vec::new(),
            wait_timeout: Duration::from_secs(10),
        }
    }

    /// A loop over `specs` that never runs: only its timers are looked at.
    fn looper(specs: Vec<ServiceSpec>) -> Loop {
        let (wake, _rx) = mpsc::channel();
        Loop {
            slots: specs.into_iter().map(Slot::new).collect(),
            shared: Arc::default(),
            pending: Vec::new(),
            wake,
            changed: Box::new(|| {}),
        }
    }

    #[test]
    fn nothing_timed_means_no_wakeup_at_all() {
        let l = looper(vec![spec("a", &[]), spec("b", &["a"])]);
        assert_eq!(l.next_deadline(Instant::now()), None);
    }

    #[test]
    fn a_backoff_wakes_the_loop_when_it_ends_and_not_after() {
        let mut l = looper(vec![spec("a", &[]), spec("b", &["a"])]);
        let now = Instant::now();
        let until = now + Duration::from_millis(300);
        l.slots[1].state = State::Backoff { until, attempt: 2 };
        assert_eq!(l.next_deadline(now), Some(until));
        // Over, but `a` is not ready: only `a` becoming ready (an event) can start it.
        assert_eq!(l.next_deadline(until + Duration::from_millis(1)), None);
    }

    #[test]
    fn a_wait_for_wakes_the_loop_for_its_retry_and_its_timeout() {
        let mut l = looper(vec![spec("a", &[])]);
        let now = Instant::now();
        l.slots[0].wait = Some(Wait {
            since: now,
            next: 0,
            probe: None,
            retry_at: now + Duration::from_millis(50),
            last_error: String::new(),
        });
        assert_eq!(l.next_deadline(now), Some(now + Duration::from_millis(50)));
        // A probe in flight wakes the loop itself: then only the timeout counts.
        let (_tx, rx) = mpsc::channel();
        if let Some(w) = l.slots[0].wait.as_mut() {
            w.probe = Some(Attempt(rx));
        }
        assert_eq!(l.next_deadline(now), Some(now + Duration::from_secs(10)));
    }
}
