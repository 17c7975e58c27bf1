//! The run report: one entry per resource, a summary, and the exit code they imply.
//!
//! The JSON form (`--json`) is a stable interface, documented in docs/report.md: fields are only
//! ever added, and `format_version` changes if one ever has to change meaning.

use serde::Serialize;

use super::change::Change;

/// What happened to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Already as the manifest says.
    Unchanged,
    /// Changed (in check mode: would change).
    Changed,
    /// Observing or applying failed; `error` says why.
    Failed,
    /// Not attempted because something it depends on failed or was skipped.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeEntry {
    /// The change as a sentence, e.g. `mode 0644 → 0600`.
    pub text: String,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub id: String,
    pub status: Status,
    /// What changed (would change, in check mode). For `failed`: the changes that were being
    /// made when it failed, which may be partly done.
    pub changes: Vec<ChangeEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `skipped`: the dependency that failed or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// Backups kept before changing files (real paths on this machine).
    pub backups: Vec<String>,
    /// What a check (the `gpu` check) found when it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub changed: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format_version: u32,
    pub node: String,
    /// The `--root` every path was resolved under.
    pub root: String,
    /// Check mode: nothing was written, `changed` means "would change".
    pub check: bool,
    pub resources: Vec<ResourceReport>,
    pub summary: Summary,
}

impl Report {
    /// Exit code: 0 fine, 4 failures. With `detailed`: 0 no changes, 2 changes, 4 failures,
    /// 6 changes and failures.
    pub fn exit_code(&self, detailed: bool) -> u8 {
        let failed = self.summary.failed + self.summary.skipped > 0;
        exit_code(detailed, self.summary.changed > 0, failed)
    }
}

/// The one exit-code table of `apply`, local or handed to an agent: 0 fine, 4 failures; with
/// `detailed` (`--detailed-exitcodes`): 0 no changes, 2 changes, 4 failures, 6 changes and
/// failures.
pub fn exit_code(detailed: bool, changed: bool, failed: bool) -> u8 {
    match (detailed, changed, failed) {
        (false, _, true) => 4,
        (false, _, false) => 0,
        (true, false, false) => 0,
        (true, true, false) => 2,
        (true, false, true) => 4,
        (true, true, true) => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(changed: usize, failed: usize, skipped: usize) -> Report {
        Report {
            format_version: 1,
            node: "n".into(),
            root: "/".into(),
            check: false,
            resources: vec![],
            summary: Summary {
                changed,
                unchanged: 1,
                failed,
                skipped,
                duration_ms: 0.0,
            },
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(report(0, 0, 0).exit_code(false), 0);
        assert_eq!(report(3, 0, 0).exit_code(false), 0);
        assert_eq!(report(3, 1, 0).exit_code(false), 4);
        assert_eq!(report(0, 0, 0).exit_code(true), 0);
        assert_eq!(report(3, 0, 0).exit_code(true), 2);
        assert_eq!(report(0, 1, 0).exit_code(true), 4);
        assert_eq!(report(0, 0, 1).exit_code(true), 4);
        assert_eq!(report(3, 1, 2).exit_code(true), 6);
    }
}
