//! What the agent loop does around each reconcile besides supervising: feed the status board,
//! report drift, keep the drift watch on the current set of managed paths, and tell systemd.

use std::sync::mpsc::Sender;

use super::status::Cause;
use super::{Agent, Wake, drift};
use crate::engine::Report;

/// Starts the drift watch; without inotify (a kernel without it, or no watches left) the agent
/// still repairs drift at each periodic reconcile, and says so.
pub(super) fn start_drift_watch(wake: Sender<Wake>) -> Option<drift::Drift> {
    match drift::Drift::start(wake) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch managed files; drift is repaired at the periodic reconcile only");
            None
        }
    }
}

impl Agent {
    /// After every reconcile: record it, log drift as drift (a corrective change, not an
    /// intentional one), and re-arm the drift watch.
    pub(super) fn observed(&mut self, cause: Cause, report: &Report) {
        if let Cause::Drift(ids) = &cause {
            tracing::debug!(resources = ?ids, "managed files changed on disk: reconciling");
        }
        for d in self.board.reconciled(&self.loaded.node, cause, report) {
            if d.repaired {
                tracing::warn!(found_by = d.found_by, "{d}");
            } else {
                tracing::error!(found_by = d.found_by, "{d}");
            }
        }
        if let Some(w) = &self.drift {
            w.watch(&self.host, &self.loaded.steps);
        }
        let line = self.board.summary_line();
        self.notifier.status(&line);
    }

    /// Once the first reconcile is done and the services are handed to the supervisor.
    pub(super) fn ready(&mut self) {
        if let Some(sup) = &self.supervisor {
            self.board.set_services(sup.status());
        }
        let line = self.board.summary_line();
        self.notifier.ready(&line);
        tracing::info!("agent ready: {line}");
    }

    /// Every turn of the loop: the services' state for the status API, sd_notify status and
    /// watchdog.
    pub(super) fn tick(&mut self) {
        if let Some(sup) = &self.supervisor {
            self.board.set_services(sup.status());
        }
        let line = self.board.summary_line();
        self.notifier.status(&line);
        self.notifier.tick();
    }
}
