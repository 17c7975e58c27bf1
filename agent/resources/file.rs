//! `file`: a whole file (content, template or source), with owner, group and mode, replaced
//! atomically after an optional `validate` command accepts the new content, with a backup of the
//! old one. Sensitive content is held as a [`Secret`]: no diff, no backup.

use super::ownership::{Ownership, Seen};
use crate::engine::{Change, ContentDiff, Need, Resource};
use crate::host::{Error, Host, Kind, Result};
use crate::manifest::model::State;
use crate::secret::Secret;

#[derive(Debug)]
pub enum Content {
    Plain(Vec<u8>),
    Secret(Secret),
}

impl Content {
    fn bytes(&self) -> &[u8] {
        match self {
            Content::Plain(b) => b,
            Content::Secret(s) => s.expose(),
        }
    }
}

#[derive(Debug)]
pub struct File {
    pub path: String,
    pub state: State,
    pub content: Content,
    pub ownership: Ownership,
    pub validate: Option<String>,
}

/// An existing file.
#[derive(Debug)]
pub struct Found {
    seen: Seen,
    content: Vec<u8>,
}

impl Resource for File {
    type Observed = Option<Found>;

    fn id(&self) -> String {
        format!("file:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        if self.state == State::Absent {
            return Vec::new();
        }
        super::owner_needs(&self.path, &self.ownership)
    }

    fn observe(&self, host: &Host) -> Result<Option<Found>> {
        let Some(stat) = host.stat(&self.path)? else {
            return Ok(None);
        };
        if stat.kind != Kind::File {
            return Err(Error::WrongType {
                path: self.path.clone(),
                found: stat.kind.describe(),
                expected: "a regular file",
            });
        }
        let content = host.read(&self.path)?.unwrap_or_default();
        Ok(Some(Found {
            seen: Seen::new(stat, &host.accounts()?),
            content,
        }))
    }

    fn diff(&self, found: &Option<Found>) -> Vec<Change> {
        let secret = matches!(self.content, Content::Secret(_));
        match (self.state, found) {
            (State::Absent, None) => Vec::new(),
            (State::Absent, Some(_)) => vec![Change::Remove {
                what: "file".into(),
            }],
            (State::Present, None) => {
                let mut changes = vec![
                    Change::Create {
                        what: "file".into(),
                    },
                    Change::Content(ContentDiff::between(
                        &self.path,
                        None,
                        self.content.bytes(),
                        secret,
                    )),
                ];
                changes.extend(self.ownership.diff(None));
                changes
            }
            (State::Present, Some(found)) => {
                let mut changes = Vec::new();
                if found.content != self.content.bytes() {
                    let old = Some(found.content.as_slice());
                    changes.push(Change::Content(ContentDiff::between(
                        &self.path,
                        old,
                        self.content.bytes(),
                        secret,
                    )));
                }
                changes.extend(self.ownership.diff(Some(&found.seen)));
                changes
            }
        }
    }

    fn apply(&self, host: &Host, found: &Option<Found>, changes: &[Change]) -> Result<()> {
        let keep_backup = found.is_some() && matches!(self.content, Content::Plain(_));
        if self.state == State::Absent {
            if keep_backup {
                host.backup(&self.path)?;
            }
            host.remove_file(&self.path)?;
            return Ok(());
        }
        let seen = found.as_ref().map(|f| &f.seen);
        let meta = self.ownership.meta(host, seen)?;
        let rewrite = changes
            .iter()
            .any(|c| matches!(c, Change::Create { .. } | Change::Content(_)));
        if rewrite {
            if keep_backup {
                host.backup(&self.path)?;
            }
            host.ensure_parent(&self.path)?;
            host.write(
                &self.path,
                self.content.bytes(),
                meta,
                self.validate.as_deref(),
            )?;
        } else {
            host.set_meta(&self.path, meta)?;
        }
        Ok(())
    }
}
