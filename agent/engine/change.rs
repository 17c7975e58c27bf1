//! Typed drift: what differs between the node and the manifest, one value per difference, each
//! printing as a sentence so a plan explains itself.

use std::fmt;

use serde::Serialize;

use crate::manifest::model::Mode;
use crate::secret::REDACTED;

/// One difference between what is and what should be.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Something is missing and will be created (`what`: "file", "directory", "user", ...).
    Create {
        what: String,
    },
    /// Something is there and will be removed.
    Remove {
        what: String,
    },
    /// The content of a file differs.
    Content(ContentDiff),
    Mode {
        from: Option<Mode>,
        to: Mode,
    },
    Owner {
        from: Option<String>,
        to: String,
    },
    Group {
        from: Option<String>,
        to: String,
    },
    /// A named attribute (a user's shell, home, ...) differs.
    Attribute {
        name: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// A user joins (`join: true`) or leaves a supplementary group.
    Membership {
        group: String,
        join: bool,
    },
    /// The resource's own entry in a file it shares with others (a mount's line in `/etc/fstab`,
    /// its credentials file) changes.
    Edit {
        file: String,
        diff: ContentDiff,
    },
    /// A package of an environment is installed (`from` absent), changed, or removed (`to`
    /// absent). `manager` is `pip` or `conda`; `to` is the requirement asked for.
    Package {
        manager: String,
        name: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// The live mount changes; `why` says what differs.
    Mount {
        action: MountAction,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        why: Vec<String>,
    },
}

/// What happens to a live mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountAction {
    Mount,
    /// `mount -o remount` with the new options.
    Remount,
    /// Unmount, then mount again (a different source or filesystem type).
    Replace,
    Unmount,
}

impl Change {
    /// The content diff this change carries, if any.
    pub fn content_diff(&self) -> Option<&ContentDiff> {
        match self {
            Change::Content(d) | Change::Edit { diff: d, .. } => Some(d),
            _ => None,
        }
    }

    pub fn content_diff_mut(&mut self) -> Option<&mut ContentDiff> {
        match self {
            Change::Content(d) | Change::Edit { diff: d, .. } => Some(d),
            _ => None,
        }
    }
}

/// How a file's content changes. `unified` is absent for secret content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentDiff {
    pub lines_added: usize,
    pub lines_removed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unified: Option<String>,
    pub redacted: bool,
}

impl ContentDiff {
    /// The diff from `old` to `new` for the node path `path`. Secret content gives only
    /// `<redacted>`; binary content only a byte count.
    pub fn between(path: &str, old: Option<&[u8]>, new: &[u8], secret: bool) -> ContentDiff {
        if secret {
            return ContentDiff {
                lines_added: 0,
                lines_removed: 0,
                unified: None,
                redacted: true,
            };
        }
        let old_text = old.map(std::str::from_utf8);
        match (old_text, std::str::from_utf8(new)) {
            (None | Some(Ok(_)), Ok(new_text)) => {
                let old_text = old_text.and_then(Result::ok).unwrap_or("");
                let diff = similar::TextDiff::from_lines(old_text, new_text);
                let (mut added, mut removed) = (0, 0);
                for op in diff.iter_all_changes() {
                    match op.tag() {
                        similar::ChangeTag::Insert => added += 1,
                        similar::ChangeTag::Delete => removed += 1,
                        similar::ChangeTag::Equal => {}
                    }
                }
                let from = if old.is_some() {
                    format!("a{path}")
                } else {
                    "/dev/null".to_owned()
                };
                let unified = diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&from, &format!("b{path}"))
                    .to_string();
                ContentDiff {
                    lines_added: added,
                    lines_removed: removed,
                    unified: Some(unified),
                    redacted: false,
                }
            }
            _ => ContentDiff {
                lines_added: 0,
                lines_removed: 0,
                unified: Some(format!(
                    "Binary content differs ({} → {} bytes)\n",
                    old.map_or(0, <[u8]>::len),
                    new.len()
                )),
                redacted: false,
            },
        }
    }
}

fn or_none(v: &Option<impl fmt::Display>) -> String {
    v.as_ref()
        .map_or_else(|| "(none)".to_owned(), ToString::to_string)
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Create { what } => write!(f, "create {what}"),
            Change::Remove { what } => write!(f, "remove {what}"),
            Change::Content(d) if d.redacted => write!(f, "content changes ({REDACTED})"),
            Change::Content(d) => write!(
                f,
                "content changes (+{} -{} lines)",
                d.lines_added, d.lines_removed
            ),
            Change::Mode { from, to } => write!(f, "mode {} → {to}", or_none(from)),
            Change::Owner { from, to } => write!(f, "owner {} → {to}", or_none(from)),
            Change::Group { from, to } => write!(f, "group {} → {to}", or_none(from)),
            Change::Attribute { name, from, to } => {
                write!(f, "{name} {} → {}", or_none(from), or_none(to))
            }
            Change::Membership { group, join: true } => write!(f, "join group {group}"),
            Change::Membership { group, join: false } => write!(f, "leave group {group}"),
            Change::Edit { file, diff } if diff.redacted => {
                write!(f, "{file} changes ({REDACTED})")
            }
            Change::Edit { file, diff } => write!(
                f,
                "{file} changes (+{} -{} lines)",
                diff.lines_added, diff.lines_removed
            ),
            Change::Package {
                manager,
                name,
                from,
                to,
            } => match (from, to) {
                (None, Some(to)) => write!(f, "install {manager} package {to}"),
                (Some(from), None) => write!(f, "remove {manager} package {name} {from}"),
                (Some(from), Some(to)) => write!(f, "{manager} package {name} {from} → {to}"),
                (None, None) => write!(f, "{manager} package {name}"),
            },
            Change::Mount { action, why } => {
                let what = match action {
                    MountAction::Mount => "mount",
                    MountAction::Remount => "remount",
                    MountAction::Replace => "unmount and mount again",
                    MountAction::Unmount => "unmount",
                };
                if why.is_empty() {
                    write!(f, "{what}")
                } else {
                    write!(f, "{what} ({})", why.join(", "))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences() {
        let cases = [
            (
                Change::Create {
                    what: "file".into(),
                },
                "create file",
            ),
            (
                Change::Mode {
                    from: Some(Mode(0o644)),
                    to: Mode(0o600),
                },
                "mode 0644 → 0600",
            ),
            (
                Change::Owner {
                    from: None,
                    to: "pyme".into(),
                },
                "owner (none) → pyme",
            ),
            (
                Change::Membership {
                    group: "video".into(),
                    join: true,
                },
                "join group video",
            ),
            (
                Change::Attribute {
                    name: "shell".into(),
                    from: Some("/bin/sh".into()),
                    to: Some("/bin/bash".into()),
                },
                "shell /bin/sh → /bin/bash",
            ),
            (
                Change::Package {
                    manager: "pip".into(),
                    name: "numpy".into(),
                    from: Some("1.26.4".into()),
                    to: Some("numpy>=2".into()),
                },
                "pip package numpy 1.26.4 → numpy>=2",
            ),
            (
                Change::Package {
                    manager: "pip".into(),
                    name: "toolz".into(),
                    from: None,
                    to: Some("toolz".into()),
                },
                "install pip package toolz",
            ),
        ];
        for (change, text) in cases {
            assert_eq!(change.to_string(), text);
        }
    }

    #[test]
    fn text_diffs_are_unified_and_counted() {
        let d = ContentDiff::between("/etc/x", Some(b"a\nb\n"), b"a\nc\n", false);
        assert_eq!((d.lines_added, d.lines_removed), (1, 1));
        let u = d.unified.unwrap();
        assert!(u.starts_with("--- a/etc/x\n+++ b/etc/x\n"), "{u}");
        assert!(u.contains("-b\n+c\n"), "{u}");
        let new = ContentDiff::between("/etc/x", None, b"a\n", false);
        assert!(new.unified.unwrap().starts_with("--- /dev/null"));
    }

    #[test]
    fn secret_diffs_show_nothing() {
        let d = ContentDiff::between("/etc/x", Some(b"old-password"), b"new-password", true);
        assert!(d.unified.is_none());
        let json = serde_json::to_string(&Change::Content(d.clone())).unwrap();
        assert!(!json.contains("password"), "{json}");
        assert_eq!(
            Change::Content(d).to_string(),
            "content changes (<redacted>)"
        );
    }

    #[test]
    fn binary_diffs_give_sizes() {
        let d = ContentDiff::between("/x", Some(&[0xff, 0xfe]), &[0xff], false);
        assert_eq!(d.unified.unwrap(), "Binary content differs (2 → 1 bytes)\n");
    }
}
