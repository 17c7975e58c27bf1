//! Process supervision: the long-running servers of a node (PYME data, rule and node servers,
//! JupyterLab, ipcluster), started in dependency order gated on readiness, restarted with
//! backoff, never as root unless the manifest says so, and stopped group and all.
//!
//! One concept per file:
//! - [`backoff`]: restart policy, exponential backoff with jitter and a cap, the reset after a
//!   healthy run, the start-limit breaker. Pure, driven by `Instant`s the caller passes in.
//! - [`probe`]: readiness and liveness checks (TCP, HTTP, file, command as the service's user,
//!   log line).
//! - [`logfile`]: a service's stdout/stderr in its own size-rotated file.
//! - [`process`]: one run of a service: identity, environment, umask, process group, stop.
//! - [`service`]: the [`Supervisor`]: a set of services with `after:` dependencies, one loop.
//!
//! The API the `service` resource and the agent daemon are meant to use:
//! - build one [`ServiceSpec`] per service of this node: a [`ProcessSpec`] (with the
//!   [`Identity`] resolved from the root's account files by [`Identity::resolve`]), its `after:`
//!   names, probes and [`BackoffConfig`];
//! - [`Supervisor::start`] checks the set ([`ConfigError`]) and starts it in a thread
//!   ([`Supervisor::start_notifying`] also calls back on every change, so the agent need not poll);
//! - [`Supervisor::status`] gives a [`ServiceStatus`] per service for the status API,
//!   [`Supervisor::events`] what happened (also logged through `tracing`);
//! - [`Supervisor::restart`] restarts one service (a config file it is after changed, or its spec
//!   did), optionally with a new spec;
//! - [`Supervisor::add`] and [`Supervisor::remove`] add a service (after those it depends on) or
//!   stop and forget one (its dependents first), the others running on;
//! - [`Supervisor::stop`] (or dropping it) stops everything in reverse dependency order.
//!
//! A service's `wait_for` probes (something on another node, e.g. the master's rule server) must
//! pass before each of its spawns; it waits in [`State::Waiting`] meanwhile, up to its
//! `wait_timeout`. A kept service whose `after:` changes needs a new start order: the agent then
//! starts a new supervisor.

pub mod backoff;
pub mod logfile;
pub mod probe;
pub mod process;
pub mod service;

pub use backoff::{Backoff, BackoffConfig, Decision, RestartPolicy};
pub use logfile::LogConfig;
pub use probe::{Check, Probe};
pub use process::{Exit, Identity, Process, ProcessSpec, SpawnError, StopConfig};
pub use service::{ConfigError, Event, EventKind, ServiceSpec, ServiceStatus, State, Supervisor};
