//! What the SSH kinds (`ssh_key`, `authorized_keys`, `known_hosts`) share: fixed modes, files
//! owned by the user whose SSH setup they are (group: that user's primary group unless the
//! manifest names one), and the `~/.ssh` folder that `ssh-keygen` would make, mode 0700.

use super::block::Markers;
use super::ownership::Seen;
use crate::engine::{Change, ContentDiff, Need};
use crate::host::accounts::Accounts;
use crate::host::{Error, Host, Kind, Meta, Result};
use crate::manifest::model::Mode;

/// Mode of a private key and of `authorized_keys`.
pub const PRIVATE: u32 = 0o600;
/// Mode of a public key and of `known_hosts`.
pub const PUBLIC: u32 = 0o644;
/// Mode of a `.ssh` folder provision makes.
pub const DIR: u32 = 0o700;

/// Who owns the files.
#[derive(Debug, Clone)]
pub struct Owned {
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Owned {
    /// The group to give: the one named, else the owner's primary group (once the owner exists).
    fn group_name(&self, accounts: &Accounts) -> Option<String> {
        self.group.clone().or_else(|| {
            let user = accounts.user(self.owner.as_deref()?)?;
            Some(accounts.group_name(user.gid))
        })
    }

    /// What differs in owner, group and mode of `seen` (`None`: the file is new). `label` names
    /// the file when a resource manages two (a key pair's public half).
    pub fn diff(
        &self,
        seen: Option<&Seen>,
        mode: u32,
        accounts: &Accounts,
        label: Option<&str>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        let attr = |name: &str, from: Option<String>, to: String| match label {
            None => match name {
                "owner" => Change::Owner { from, to },
                _ => Change::Group { from, to },
            },
            Some(file) => Change::Attribute {
                name: format!("{file} {name}"),
                from,
                to: Some(to),
            },
        };
        if let Some(owner) = &self.owner
            && seen.is_none_or(|s| &s.owner != owner)
        {
            changes.push(attr("owner", seen.map(|s| s.owner.clone()), owner.clone()));
        }
        if let Some(group) = self.group_name(accounts)
            && seen.is_none_or(|s| s.group != group)
        {
            changes.push(attr("group", seen.map(|s| s.group.clone()), group));
        }
        if seen.is_none_or(|s| s.stat.mode != mode) {
            let from = seen.map(|s| Mode(s.stat.mode));
            changes.push(match label {
                None => Change::Mode {
                    from,
                    to: Mode(mode),
                },
                Some(file) => Change::Attribute {
                    name: format!("{file} mode"),
                    from: from.map(|m| m.to_string()),
                    to: Some(Mode(mode).to_string()),
                },
            });
        }
        changes
    }

    /// The ids and mode to give a file or folder: the owner and group named (the group defaults
    /// to the owner's primary group), else what it has, else the user running provision.
    pub fn meta(&self, host: &Host, seen: Option<&Seen>, mode: u32) -> Result<Meta> {
        let accounts = host.accounts()?;
        let missing = |kind: &str, name: &str| {
            Error::Other(format!(
                "{kind} `{name}` does not exist in {}; the `{kind}:` resource that creates it must run first (did it fail?)",
                host.root().dir().display()
            ))
        };
        let user = match &self.owner {
            Some(name) => Some(accounts.user(name).ok_or_else(|| missing("user", name))?),
            None => None,
        };
        let uid = user.map_or_else(|| seen.map_or(Meta::own(0).uid, |s| s.stat.uid), |u| u.uid);
        let gid = match (&self.group, user) {
            (Some(name), _) => accounts.gid(name).ok_or_else(|| missing("group", name))?,
            (None, Some(u)) => u.gid,
            (None, None) => seen.map_or(Meta::own(0).gid, |s| s.stat.gid),
        };
        Ok(Meta { mode, uid, gid })
    }

    /// The user and group to exist first, and the file's folder.
    pub fn needs(&self, path: &str) -> Vec<Need> {
        let mut needs = Vec::new();
        if let Some(dir) = std::path::Path::new(path).parent() {
            needs.push(Need::Directory(dir.display().to_string()));
        }
        needs.extend(self.owner.clone().map(Need::User));
        needs.extend(self.group.clone().map(Need::Group));
        needs
    }
}

/// The folder of node path `path`, and whether it exists (it must be a folder if it does).
pub fn folder(host: &Host, path: &str) -> Result<(String, bool)> {
    let dir = std::path::Path::new(path)
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "/".into());
    match host.stat(&dir)? {
        None => Ok((dir, false)),
        Some(s) if s.kind == Kind::Directory => Ok((dir, true)),
        Some(s) => Err(Error::WrongType {
            path: dir,
            found: s.kind.describe(),
            expected: "a directory",
        }),
    }
}

/// The change that makes a missing `~/.ssh`.
pub fn folder_change(dir: &str) -> Change {
    Change::Create {
        what: format!("directory {dir} (mode 0700)"),
    }
}

/// Makes the missing folder `dir` (its own parents as `mkdir -p` would), owned as `owned` says,
/// mode 0700.
pub fn make_folder(host: &Host, dir: &str, owned: &Owned) -> Result<()> {
    let meta = owned.meta(host, None, DIR)?;
    host.create_dir(dir, meta)
}

/// The seen metadata of node path `path`, which must be a regular file if it exists.
pub fn seen_file(host: &Host, path: &str, accounts: &Accounts) -> Result<Option<Seen>> {
    match host.stat(path)? {
        None => Ok(None),
        Some(stat) if stat.kind == Kind::File => Ok(Some(Seen::new(stat, accounts))),
        Some(stat) => Err(Error::WrongType {
            path: path.to_owned(),
            found: stat.kind.describe(),
            expected: "a regular file",
        }),
    }
}

/// `path` read as UTF-8 text (`None` if missing).
pub fn read_text(host: &Host, path: &str) -> Result<Option<String>> {
    match host.read(path)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
            Error::Other(format!(
                "{path} is not UTF-8 text; provision will not rewrite it"
            ))
        }),
    }
}

/// A file of the user's SSH setup with a marked block (`authorized_keys`, `known_hosts`), as
/// found: its folder and, if it exists, its metadata and text.
#[derive(Debug)]
pub struct BlockFile {
    pub path: String,
    folder: (String, bool),
    file: Option<(Seen, String)>,
}

impl BlockFile {
    pub fn observe(host: &Host, path: &str, accounts: &Accounts) -> Result<BlockFile> {
        let folder = folder(host, path)?;
        let file = match seen_file(host, path, accounts)? {
            None => None,
            Some(seen) => Some((seen, read_text(host, path)?.unwrap_or_default())),
        };
        Ok(BlockFile {
            path: path.to_owned(),
            folder,
            file,
        })
    }

    /// The text as found (`None`: no file).
    pub fn text(&self) -> Option<&str> {
        self.file.as_ref().map(|(_, text)| text.as_str())
    }

    fn seen(&self) -> Option<&Seen> {
        self.file.as_ref().map(|(s, _)| s)
    }

    /// What differs from the file with its block holding `lines`, owned as `owned` says, `mode`.
    pub fn diff(
        &self,
        markers: &Markers,
        lines: &[String],
        owned: &Owned,
        mode: u32,
        accounts: &Accounts,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.folder.1 {
            changes.push(folder_change(&self.folder.0));
        }
        let old = self.text();
        let new = markers.render(old, lines);
        if old.is_none() {
            changes.push(Change::Create {
                what: "file".into(),
            });
        }
        if old != Some(new.as_str()) {
            changes.push(Change::Content(ContentDiff::between(
                &self.path,
                old.map(str::as_bytes),
                new.as_bytes(),
                false,
            )));
        }
        changes.extend(owned.diff(self.seen(), mode, accounts, None));
        changes
    }

    /// Makes the folder if missing, then writes the whole file when its text changes (after a
    /// backup), else only its owner and mode.
    pub fn apply(
        &self,
        host: &Host,
        markers: &Markers,
        lines: &[String],
        owned: &Owned,
        mode: u32,
    ) -> Result<()> {
        if !self.folder.1 {
            make_folder(host, &self.folder.0, owned)?;
        }
        let meta = owned.meta(host, self.seen(), mode)?;
        let old = self.text();
        let new = markers.render(old, lines);
        if old != Some(new.as_str()) {
            if old.is_some() {
                host.backup(&self.path)?;
            }
            return host.write(&self.path, new.as_bytes(), meta, None);
        }
        if let Some(s) = self.seen()
            && (s.stat.mode, s.stat.uid, s.stat.gid) != (meta.mode, meta.uid, meta.gid)
        {
            host.set_meta(&self.path, meta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Stat;

    fn accounts() -> Accounts {
        Accounts::parse(
            "root:x:0:0::/root:/bin/bash\nipp:x:2000:2000::/home/ipp:/bin/bash\n",
            "root:x:0:\nipp:x:2000:\nstaff:x:50:\n",
        )
    }

    fn seen(mode: u32, uid: u32, gid: u32) -> Seen {
        let stat = Stat {
            kind: Kind::File,
            mode,
            uid,
            gid,
        };
        Seen::new(stat, &accounts())
    }

    #[test]
    fn the_group_defaults_to_the_owners_primary_group() {
        let owned = Owned {
            owner: Some("ipp".into()),
            group: None,
        };
        assert!(
            owned
                .diff(Some(&seen(0o600, 2000, 2000)), PRIVATE, &accounts(), None)
                .is_empty()
        );
        let changes: Vec<String> = owned
            .diff(Some(&seen(0o644, 0, 0)), PRIVATE, &accounts(), None)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            ["owner root → ipp", "group root → ipp", "mode 0644 → 0600"]
        );
    }

    #[test]
    fn a_second_file_is_named_in_its_changes() {
        let owned = Owned {
            owner: Some("ipp".into()),
            group: Some("staff".into()),
        };
        let changes: Vec<String> = owned
            .diff(
                Some(&seen(0o664, 2000, 2000)),
                PUBLIC,
                &accounts(),
                Some("id_ed25519.pub"),
            )
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "id_ed25519.pub group ipp → staff",
                "id_ed25519.pub mode 0664 → 0644"
            ]
        );
    }
}
