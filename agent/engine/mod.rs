//! The engine: order the node's resources, then for each one observe → diff → (check mode stops
//! here) → apply → observe again, and report. A failed resource does not stop independent ones;
//! everything that depends on it is skipped and reported as such.

pub mod change;
mod graph;
pub mod report;
pub mod resource;

use std::time::Instant;

use crate::host::Host;
pub use change::{Change, ContentDiff, MountAction};
pub use report::{ChangeEntry, Report, ResourceReport, Status, Summary};
pub use resource::{DriftWatch, Failure, Need, Outcome, Reconcile, Resource};

/// One resource to run: built, or the reason it could not be built (a template that does not
/// render, say), which fails it without stopping the others.
pub struct Step {
    pub id: String,
    pub after: Vec<String>,
    pub body: Result<Box<dyn Reconcile>, String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Check mode: observe and diff only, write nothing.
    pub check: bool,
    /// Keep unified diffs of file contents in the report.
    pub diff: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the resources {} depend on each other in a cycle (through after:, owners, groups or parent directories)\n  hint: remove one of the after: entries, or an owner/group that closes the loop", .0.join(", "))]
pub struct CycleError(pub Vec<String>);

/// The order `steps` run in; `Err` if they form a cycle. Touches nothing.
pub fn check_order(steps: &[Step]) -> Result<(), CycleError> {
    order(steps).map(|_| ())
}

fn order(steps: &[Step]) -> Result<graph::Order, CycleError> {
    let vertices: Vec<graph::Vertex<'_>> = steps
        .iter()
        .map(|s| graph::Vertex {
            id: &s.id,
            after: &s.after,
            needs: s.body.as_ref().map(|b| b.needs()).unwrap_or_default(),
        })
        .collect();
    graph::order(&vertices).map_err(CycleError)
}

/// Runs `steps` on `host` and reports. Fails before touching anything if the steps form a cycle.
pub fn run(
    steps: &[Step],
    host: &Host,
    node: &str,
    options: Options,
) -> Result<Report, CycleError> {
    let started = Instant::now();
    let order = order(steps)?;
    tracing::info!(
        resources = steps.len(),
        check = options.check,
        "running in dependency order"
    );
    let mut reports: Vec<Option<ResourceReport>> = vec![None; steps.len()];
    for &i in &order.sequence {
        let step = &steps[i];
        let t = Instant::now();
        let blocker = order.deps[i].iter().find(|&&d| {
            reports[d]
                .as_ref()
                .is_some_and(|r| matches!(r.status, Status::Failed | Status::Skipped))
        });
        let mut report = ResourceReport {
            id: step.id.clone(),
            status: Status::Unchanged,
            changes: Vec::new(),
            error: None,
            skipped_because: None,
            backups: Vec::new(),
            note: None,
            duration_ms: 0.0,
        };
        if let Some(&d) = blocker {
            report.status = Status::Skipped;
            let dep = &steps[d].id;
            let why = if reports[d]
                .as_ref()
                .is_some_and(|r| r.status == Status::Failed)
            {
                "failed"
            } else {
                "was skipped"
            };
            report.skipped_because = Some(format!("{dep} {why}"));
        } else {
            host.take_backups();
            let (changes, error) = match &step.body {
                Ok(body) => match body.reconcile(host, !options.check) {
                    Ok(outcome) => {
                        report.note = outcome.note;
                        (outcome.changes, None)
                    }
                    Err(failure) => (failure.changes, Some(failure.error)),
                },
                Err(e) => (Vec::new(), Some(e.clone())),
            };
            report.status = match (&error, changes.is_empty()) {
                (Some(_), _) => Status::Failed,
                (None, true) => Status::Unchanged,
                (None, false) => Status::Changed,
            };
            report.error = error;
            report.changes = changes
                .into_iter()
                .map(|mut change| {
                    if let (Some(d), false) = (change.content_diff_mut(), options.diff) {
                        d.unified = None;
                    }
                    ChangeEntry {
                        text: change.to_string(),
                        change,
                    }
                })
                .collect();
            report.backups = host
                .take_backups()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
        }
        report.duration_ms = t.elapsed().as_secs_f64() * 1000.0;
        match report.status {
            Status::Failed => {
                tracing::warn!(id = %report.id, error = report.error.as_deref().unwrap_or(""), "resource failed")
            }
            _ => {
                tracing::info!(id = %report.id, status = ?report.status, changes = report.changes.len(), ms = report.duration_ms, "resource done")
            }
        }
        reports[i] = Some(report);
    }
    let resources: Vec<ResourceReport> = order
        .sequence
        .iter()
        .filter_map(|&i| reports[i].take())
        .collect();
    let mut summary = Summary::default();
    for r in &resources {
        match r.status {
            Status::Changed => summary.changed += 1,
            Status::Unchanged => summary.unchanged += 1,
            Status::Failed => summary.failed += 1,
            Status::Skipped => summary.skipped += 1,
        }
    }
    summary.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Report {
        format_version: 1,
        node: node.to_owned(),
        root: host.root().dir().display().to_string(),
        check: options.check,
        resources,
        summary,
    })
}
