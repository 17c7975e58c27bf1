//! `directory`: a directory with owner, group and mode; missing parents are created 0755 root.

use super::ownership::{Ownership, Seen};
use crate::engine::{Change, Need, Resource};
use crate::host::{Error, Host, Kind, Result};

#[derive(Debug)]
pub struct Directory {
    pub path: String,
    pub ownership: Ownership,
}

impl Resource for Directory {
    type Observed = Option<Seen>;

    fn id(&self) -> String {
        format!("directory:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        super::owner_needs(&self.path, &self.ownership)
    }

    fn observe(&self, host: &Host) -> Result<Option<Seen>> {
        let Some(stat) = host.stat(&self.path)? else {
            return Ok(None);
        };
        if stat.kind != Kind::Directory {
            return Err(Error::WrongType {
                path: self.path.clone(),
                found: stat.kind.describe(),
                expected: "a directory",
            });
        }
        Ok(Some(Seen::new(stat, &host.accounts()?)))
    }

    fn diff(&self, seen: &Option<Seen>) -> Vec<Change> {
        let mut changes = Vec::new();
        if seen.is_none() {
            changes.push(Change::Create {
                what: "directory".into(),
            });
        }
        changes.extend(self.ownership.diff(seen.as_ref()));
        changes
    }

    fn apply(&self, host: &Host, seen: &Option<Seen>, _: &[Change]) -> Result<()> {
        let meta = self.ownership.meta(host, seen.as_ref())?;
        match seen {
            None => host.create_dir(&self.path, meta)?,
            Some(_) => host.set_meta(&self.path, meta)?,
        }
        Ok(())
    }
}
