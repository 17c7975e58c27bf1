//! Owner, group and mode of files and directories: observed by name through the root's account
//! files, compared by name, applied by the root's ids.

use std::path::{Path, PathBuf};

use crate::engine::Change;
use crate::host::accounts::Accounts;
use crate::host::{Error, Host, Meta, Result, Stat};
use crate::manifest::model::Mode;

/// What the manifest asks for; `None` leaves that attribute as it is (or the default when new).
#[derive(Debug, Clone)]
pub struct Ownership {
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<Mode>,
    /// Mode of a new file or directory when `mode` is not given.
    pub default_mode: u32,
}

/// An existing path's metadata with its owner and group as names of the root.
#[derive(Debug, Clone)]
pub struct Seen {
    pub stat: Stat,
    pub owner: String,
    pub group: String,
}

impl Seen {
    pub fn new(stat: Stat, accounts: &Accounts) -> Seen {
        Seen {
            owner: accounts.user_name(stat.uid),
            group: accounts.group_name(stat.gid),
            stat,
        }
    }
}

impl Ownership {
    /// Differences in owner, group and mode. `seen` is `None` for a path about to be created.
    pub fn diff(&self, seen: Option<&Seen>) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(owner) = &self.owner
            && seen.is_none_or(|s| &s.owner != owner)
        {
            changes.push(Change::Owner {
                from: seen.map(|s| s.owner.clone()),
                to: owner.clone(),
            });
        }
        if let Some(group) = &self.group
            && seen.is_none_or(|s| &s.group != group)
        {
            changes.push(Change::Group {
                from: seen.map(|s| s.group.clone()),
                to: group.clone(),
            });
        }
        if let Some(mode) = self.mode
            && seen.is_none_or(|s| s.stat.mode != mode.0)
        {
            changes.push(Change::Mode {
                from: seen.map(|s| Mode(s.stat.mode)),
                to: mode,
            });
        }
        changes
    }

    /// The ids and mode to give the path: what the manifest says, else what it has, else the user
    /// running provision (root on a real node) and the default mode.
    pub fn meta(&self, host: &Host, seen: Option<&Seen>) -> Result<Meta> {
        let accounts = host.accounts()?;
        let uid = match &self.owner {
            Some(name) => accounts
                .uid(name)
                .ok_or_else(|| missing("user", name, "/etc/passwd", host))?,
            None => seen.map_or(Meta::own(0).uid, |s| s.stat.uid),
        };
        let gid = match &self.group {
            Some(name) => accounts
                .gid(name)
                .ok_or_else(|| missing("group", name, "/etc/group", host))?,
            None => seen.map_or(Meta::own(0).gid, |s| s.stat.gid),
        };
        let mode = self
            .mode
            .map(|m| m.0)
            .or(seen.map(|s| s.stat.mode))
            .unwrap_or(self.default_mode);
        Ok(Meta { mode, uid, gid })
    }
}

fn missing(kind: &str, name: &str, file: &str, host: &Host) -> Error {
    Error::Other(format!(
        "{kind} `{name}` does not exist in {}{file}; the `{kind}:` resource that creates it must run first (did it fail?)",
        host.root().dir().display()
    ))
}

/// The owner and group changes for a whole tree (an environment), given the distinct
/// `(owner, group)` pairs found in it: a change when the tree is new or any entry differs.
pub fn tree_diff(
    owners: &[(String, String)],
    owner: Option<&str>,
    group: Option<&str>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(owner) = owner
        && (owners.is_empty() || owners.iter().any(|(o, _)| o != owner))
    {
        changes.push(Change::Owner {
            from: owners.first().map(|(o, _)| o.clone()),
            to: owner.to_owned(),
        });
    }
    if let Some(group) = group
        && (owners.is_empty() || owners.iter().any(|(_, g)| g != group))
    {
        changes.push(Change::Group {
            from: owners.first().map(|(_, g)| g.clone()),
            to: group.to_owned(),
        });
    }
    changes
}

/// Gives every entry of the tree (links themselves, not their targets) to the owner and group.
pub fn chown_tree(
    host: &Host,
    real: &Path,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<()> {
    let accounts = host.accounts()?;
    let missing = |kind: &str, name: &str| {
        Error::Other(format!(
            "{kind} `{name}` does not exist in {}; the `{kind}:` resource that creates it must run first (did it fail?)",
            host.root().dir().display()
        ))
    };
    let uid = match owner {
        Some(name) => Some(accounts.uid(name).ok_or_else(|| missing("user", name))?),
        None => None,
    };
    let gid = match (group, owner) {
        (Some(name), _) => Some(accounts.gid(name).ok_or_else(|| missing("group", name))?),
        (None, Some(owner)) => accounts.user(owner).map(|u| u.gid),
        (None, None) => None,
    };
    let mut stack: Vec<PathBuf> = vec![real.to_path_buf()];
    while let Some(path) = stack.pop() {
        std::os::unix::fs::lchown(&path, uid, gid)
            .map_err(|e| crate::host::chown_error(&path, e))?;
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("inspect", &path))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(Error::io("list", &path))? {
                stack.push(entry.map_err(Error::io("list", &path))?.path());
            }
        }
    }
    Ok(())
}
