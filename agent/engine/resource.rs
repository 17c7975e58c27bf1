//! The one trait every resource kind implements, and its object-safe form for the executor.

use super::change::Change;
use crate::host::{Host, Result};

/// Something this resource needs to exist first. The graph turns these into implicit edges to
/// whichever resource of this run provides them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    User(String),
    Group(String),
    /// A directory that must exist: every managed directory at or above it comes first.
    Directory(String),
    /// A Python environment (a `venv:` or `conda_env:` resource) at this path must be made first.
    Env(String),
    /// A file this resource reads: the `file:` resource that writes it, or the `ssh_key:` whose
    /// public key it is (`<key>.pub`), comes first.
    File(String),
}

/// One managed thing on the node. Observe and diff never change anything; only `apply` does, and
/// only the executor decides whether to call it (check mode lives there and nowhere else).
pub trait Resource {
    /// What `observe` finds; absence is a value of this type, not an error.
    type Observed;

    /// `kind:key`, e.g. `file:/etc/hosts`.
    fn id(&self) -> String;

    /// What must exist first (users, groups, directories).
    fn needs(&self) -> Vec<Need> {
        Vec::new()
    }

    fn observe(&self, host: &Host) -> Result<Self::Observed>;

    /// Pure: the changes that would bring `observed` to the desired state; empty when in sync.
    fn diff(&self, observed: &Self::Observed) -> Vec<Change>;

    /// Makes the changes. Called only with a non-empty `changes` from `diff(observed)`.
    fn apply(&self, host: &Host, observed: &Self::Observed, changes: &[Change]) -> Result<()>;

    /// Pure: for checks (the `gpu` check), a requirement of the node that no apply can establish.
    /// A check's `diff` is always empty, since there is nothing provision could change to make a
    /// GPU appear; whether the node meets it is this verdict instead: `Ok(Some(note))` passes and
    /// says what was found, `Err(reason)` fails the resource (in check mode too), so everything
    /// after it is skipped. Other kinds keep the default: nothing to verify. `write` is false in
    /// check mode, where what earlier resources would create (a service's user) is not there yet.
    fn verify(&self, _observed: &Self::Observed, _write: bool) -> Result<Option<String>, String> {
        Ok(None)
    }

    /// What the agent's drift watch (inotify) should look at for this resource beyond what its id
    /// names: node paths of files it manages, and directories whose every entry counts (written
    /// with a trailing `/`, e.g. a venv's `site-packages/`). [`DriftWatch::Mounts`] asks for the
    /// live mount table. Most kinds keep the default (files, hosts and directories are watched by
    /// their id).
    fn drift_watch(&self) -> Vec<DriftWatch> {
        Vec::new()
    }
}

/// One thing the drift watch looks at for a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftWatch {
    /// A node path: a file (its content and metadata), or with a trailing `/`, any entry of that
    /// directory.
    Path(String),
    /// The live mount table (`/proc/self/mountinfo`): a mount or unmount anywhere wakes the agent.
    Mounts,
}

/// The outcome of reconciling one resource.
#[derive(Debug)]
pub struct Outcome {
    pub changes: Vec<Change>,
    /// What a check found, for the report.
    pub note: Option<String>,
}

/// A reconcile that failed, with the changes it was making when it did (empty if observing
/// failed), so a report says what a failed apply may have left half done.
#[derive(Debug)]
pub struct Failure {
    pub changes: Vec<Change>,
    /// The error, as the report shows it.
    pub error: String,
}

impl From<crate::host::Error> for Failure {
    fn from(error: crate::host::Error) -> Failure {
        Failure {
            changes: Vec::new(),
            error: error.to_string(),
        }
    }
}

/// [`Resource`] without its associated type, so resources of every kind fit in one list.
pub trait Reconcile {
    fn id(&self) -> String;
    fn needs(&self) -> Vec<Need>;
    /// Observe and diff; when `write` is set and something differs, apply, then observe again and
    /// fail if the node still differs (an apply that does not converge is a bug to report, not to
    /// hide).
    fn reconcile(&self, host: &Host, write: bool) -> Result<Outcome, Failure>;
    /// [`Resource::drift_watch`].
    fn drift_watch(&self) -> Vec<DriftWatch>;
}

impl<R: Resource> Reconcile for R {
    fn id(&self) -> String {
        Resource::id(self)
    }

    fn needs(&self) -> Vec<Need> {
        Resource::needs(self)
    }

    fn drift_watch(&self) -> Vec<DriftWatch> {
        Resource::drift_watch(self)
    }

    fn reconcile(&self, host: &Host, write: bool) -> Result<Outcome, Failure> {
        let observed = self.observe(host)?;
        let note = self.verify(&observed, write).map_err(|error| Failure {
            changes: Vec::new(),
            error,
        })?;
        let changes = self.diff(&observed);
        if !write || changes.is_empty() {
            return Ok(Outcome { changes, note });
        }
        match self.apply(host, &observed, &changes) {
            Ok(()) => {}
            Err(error) => {
                return Err(Failure {
                    changes,
                    error: error.to_string(),
                });
            }
        };
        let left = match self.observe(host) {
            Ok(again) => self.diff(&again),
            Err(error) => {
                return Err(Failure {
                    changes,
                    error: error.to_string(),
                });
            }
        };
        if !left.is_empty() {
            let left: Vec<String> = left.iter().map(ToString::to_string).collect();
            let error = format!("the node still differs after apply: {}", left.join("; "));
            return Err(Failure { changes, error });
        }
        Ok(Outcome { changes, note })
    }
}
