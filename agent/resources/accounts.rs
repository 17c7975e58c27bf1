//! `user` and `group`: local accounts in the root's `/etc/passwd`, `/etc/group`, `/etc/shadow` and
//! `/etc/gshadow`, edited line by line (as `useradd --prefix` would) so every other account and
//! comment is kept byte for byte. passwd and group are backed up before a change; shadow and
//! gshadow hold password hashes, so they are never copied anywhere.

use crate::engine::{Change, Need, Resource};
use crate::host::accounts::{self, Accounts, Group as GroupEntry, User as UserEntry};
use crate::host::{Error, Host, Meta, Result};
use crate::manifest::model::State;

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
const SHADOW: &str = "/etc/shadow";
const GSHADOW: &str = "/etc/gshadow";

#[derive(Debug)]
pub struct User {
    pub name: String,
    pub state: State,
    pub uid: Option<u32>,
    /// Explicit primary group; `None`: a group named after a new user, the current one of an
    /// existing user.
    pub group: Option<String>,
    /// `None`: memberships left as they are.
    pub groups: Option<Vec<String>>,
    /// `None`: `/home/<name>` for a new user, the current one of an existing user.
    pub home: Option<String>,
    /// `None`: a default for a new user, the current one of an existing user.
    pub shell: Option<String>,
    pub comment: Option<String>,
    pub system: bool,
    pub create_home: bool,
}

#[derive(Debug)]
pub struct UserFound {
    entry: Option<UserEntry>,
    primary_group: Option<String>,
    own_group_exists: bool,
    memberships: Vec<String>,
    /// The home the user has or will have.
    home: String,
    home_exists: bool,
}

impl User {
    /// The primary group a new user gets.
    fn primary_group(&self) -> &str {
        self.group.as_deref().unwrap_or(&self.name)
    }

    fn home_for(&self, existing: Option<&UserEntry>) -> String {
        self.home
            .clone()
            .or_else(|| existing.map(|e| e.home.clone()))
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }

    fn shell_for(&self, existing: Option<&UserEntry>) -> String {
        let default = if self.system {
            "/usr/sbin/nologin"
        } else {
            "/bin/bash"
        };
        self.shell
            .clone()
            .or_else(|| existing.map(|e| e.shell.clone()))
            .unwrap_or_else(|| default.to_owned())
    }

    /// The home directory is created for a new user, or when the manifest names it.
    fn wants_home(&self, found: &UserFound) -> bool {
        self.create_home && (found.entry.is_none() || self.home.is_some())
    }
}

/// Reads an account file under the root, with the metadata to write it back with.
fn read(host: &Host, path: &str) -> Result<Option<(String, Meta)>> {
    let Some(stat) = host.stat(path)? else {
        return Ok(None);
    };
    let bytes = host.read(path)?.unwrap_or_default();
    let text =
        String::from_utf8(bytes).map_err(|_| Error::Other(format!("{path} is not UTF-8 text")))?;
    Ok(Some((
        text,
        Meta {
            mode: stat.mode,
            uid: stat.uid,
            gid: stat.gid,
        },
    )))
}

/// Writes an account file if its text changed; passwd and group get a backup first.
fn write(host: &Host, path: &str, old: Option<&(String, Meta)>, new: &str) -> Result<()> {
    if old.is_some_and(|(text, _)| text == new) {
        return Ok(());
    }
    let meta = old.map_or(Meta::own(0o644), |(_, m)| *m);
    if old.is_some() && (path == PASSWD || path == GROUP) {
        host.backup(path)?;
    }
    host.ensure_parent(path)?;
    host.write(path, new.as_bytes(), meta, None)
}

fn days_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl Resource for User {
    type Observed = UserFound;

    fn id(&self) -> String {
        format!("user:{}", self.name)
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs: Vec<Need> = self
            .groups
            .iter()
            .flatten()
            .cloned()
            .map(Need::Group)
            .collect();
        if let Some(g) = &self.group {
            needs.push(Need::Group(g.clone()));
        }
        needs
    }

    fn observe(&self, host: &Host) -> Result<UserFound> {
        let accounts = host.accounts()?;
        let entry = accounts.user(&self.name).cloned();
        let home = self.home_for(entry.as_ref());
        Ok(UserFound {
            primary_group: entry.as_ref().map(|e| accounts.group_name(e.gid)),
            own_group_exists: accounts.group(self.primary_group()).is_some(),
            memberships: accounts.memberships(&self.name),
            home_exists: host.stat(&home)?.is_some(),
            home,
            entry,
        })
    }

    fn diff(&self, found: &UserFound) -> Vec<Change> {
        let mut changes = Vec::new();
        let attr = |name: &str, from: Option<String>, to: Option<String>| Change::Attribute {
            name: name.into(),
            from,
            to,
        };
        match (&found.entry, self.state) {
            (None, State::Absent) => return changes,
            (Some(_), State::Absent) => {
                return vec![Change::Remove {
                    what: "user".into(),
                }];
            }
            (None, State::Present) => {
                changes.push(Change::Create {
                    what: "user".into(),
                });
                if self.group.is_none() && !found.own_group_exists {
                    changes.push(Change::Create {
                        what: format!("group {}", self.name),
                    });
                }
            }
            (Some(e), State::Present) => {
                if let Some(uid) = self.uid
                    && uid != e.uid
                {
                    changes.push(attr("uid", Some(e.uid.to_string()), Some(uid.to_string())));
                }
                if let Some(group) = &self.group
                    && found.primary_group.as_ref() != Some(group)
                {
                    changes.push(attr(
                        "primary group",
                        found.primary_group.clone(),
                        Some(group.clone()),
                    ));
                }
                if let Some(home) = &self.home
                    && e.home != *home
                {
                    changes.push(attr("home", Some(e.home.clone()), Some(home.clone())));
                }
                if let Some(shell) = &self.shell
                    && e.shell != *shell
                {
                    changes.push(attr("shell", Some(e.shell.clone()), Some(shell.clone())));
                }
                if let Some(c) = &self.comment
                    && *c != e.gecos
                {
                    changes.push(attr("comment", Some(e.gecos.clone()), Some(c.clone())));
                }
            }
        }
        if let Some(groups) = &self.groups {
            for g in groups {
                if !found.memberships.contains(g) {
                    changes.push(Change::Membership {
                        group: g.clone(),
                        join: true,
                    });
                }
            }
            for g in &found.memberships {
                if !groups.contains(g) {
                    changes.push(Change::Membership {
                        group: g.clone(),
                        join: false,
                    });
                }
            }
        }
        if self.state == State::Present && self.wants_home(found) && !found.home_exists {
            changes.push(Change::Create {
                what: format!("home directory {}", found.home),
            });
        }
        changes
    }

    fn apply(&self, host: &Host, found: &UserFound, _: &[Change]) -> Result<()> {
        let passwd = read(host, PASSWD)?;
        let group = read(host, GROUP)?;
        let shadow = read(host, SHADOW)?;
        let gshadow = read(host, GSHADOW)?;
        let text =
            |f: &Option<(String, Meta)>| f.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        let accounts = Accounts::parse(&text(&passwd), &text(&group));
        let (mut new_passwd, mut new_group, mut new_shadow, mut new_gshadow) =
            (text(&passwd), text(&group), text(&shadow), text(&gshadow));

        if self.state == State::Absent {
            new_passwd = accounts::set_line(&new_passwd, &self.name, None);
            new_shadow = accounts::set_line(&new_shadow, &self.name, None);
            new_group = accounts::set_memberships(&new_group, &self.name, &[]);
            new_gshadow = accounts::set_memberships(&new_gshadow, &self.name, &[]);
        } else {
            let uid = match (self.uid, &found.entry) {
                (Some(uid), _) => {
                    if let Some(other) = accounts
                        .users
                        .iter()
                        .find(|u| u.uid == uid && u.name != self.name)
                    {
                        return Err(Error::Other(format!(
                            "uid {uid} already belongs to user `{}`",
                            other.name
                        )));
                    }
                    uid
                }
                (None, Some(e)) => e.uid,
                (None, None) => accounts
                    .free_uid(self.system)
                    .ok_or_else(|| Error::Other("no free user id left".into()))?,
            };
            let existing_gid = if self.group.is_none() {
                found.entry.as_ref().map(|e| e.gid)
            } else {
                None
            };
            let gid = match (existing_gid, accounts.group(self.primary_group())) {
                (Some(gid), _) => gid,
                (None, Some(g)) => g.gid,
                (None, None) if self.group.is_none() => {
                    let gid = if accounts.groups.iter().any(|g| g.gid == uid) {
                        accounts
                            .free_gid(self.system)
                            .ok_or_else(|| Error::Other("no free group id left".into()))?
                    } else {
                        uid
                    };
                    let entry = GroupEntry {
                        name: self.name.clone(),
                        gid,
                        members: Vec::new(),
                    };
                    new_group = accounts::set_line(&new_group, &self.name, Some(&entry.line()));
                    if gshadow.is_some() {
                        new_gshadow = accounts::set_line(
                            &new_gshadow,
                            &self.name,
                            Some(&format!("{}:!::", self.name)),
                        );
                    }
                    gid
                }
                (None, None) => {
                    return Err(Error::Other(format!(
                        "primary group `{}` does not exist in {}{GROUP}",
                        self.primary_group(),
                        host.root().dir().display()
                    )));
                }
            };
            let gecos = self
                .comment
                .clone()
                .or_else(|| found.entry.as_ref().map(|e| e.gecos.clone()))
                .unwrap_or_default();
            let entry = UserEntry {
                name: self.name.clone(),
                uid,
                gid,
                gecos,
                home: found.home.clone(),
                shell: self.shell_for(found.entry.as_ref()),
            };
            new_passwd = accounts::set_line(&new_passwd, &self.name, Some(&entry.line()));
            if shadow.is_some() && found.entry.is_none() {
                let line = format!("{}:!:{}::::::", self.name, days_since_epoch());
                new_shadow = accounts::set_line(&new_shadow, &self.name, Some(&line));
            }
            if let Some(groups) = &self.groups {
                new_group = accounts::set_memberships(&new_group, &self.name, groups);
                if gshadow.is_some() {
                    new_gshadow = accounts::set_memberships(&new_gshadow, &self.name, groups);
                }
            }
        }
        // Groups before users: passwd never names a group id that does not exist yet.
        write(host, GROUP, group.as_ref(), &new_group)?;
        if gshadow.is_some() {
            write(host, GSHADOW, gshadow.as_ref(), &new_gshadow)?;
        }
        write(host, PASSWD, passwd.as_ref(), &new_passwd)?;
        if shadow.is_some() {
            write(host, SHADOW, shadow.as_ref(), &new_shadow)?;
        }
        if self.state == State::Present
            && self.wants_home(found)
            && host.stat(&found.home)?.is_none()
        {
            let accounts = host.accounts()?;
            let u = accounts
                .user(&self.name)
                .ok_or_else(|| Error::Other(format!("user {} vanished", self.name)))?;
            host.create_dir(
                &found.home,
                Meta {
                    mode: 0o750,
                    uid: u.uid,
                    gid: u.gid,
                },
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Group {
    pub name: String,
    pub state: State,
    pub gid: Option<u32>,
    pub system: bool,
}

impl Resource for Group {
    type Observed = Option<GroupEntry>;

    fn id(&self) -> String {
        format!("group:{}", self.name)
    }

    fn observe(&self, host: &Host) -> Result<Option<GroupEntry>> {
        Ok(host.accounts()?.group(&self.name).cloned())
    }

    fn diff(&self, found: &Option<GroupEntry>) -> Vec<Change> {
        match (found, self.state) {
            (None, State::Absent) => Vec::new(),
            (Some(_), State::Absent) => vec![Change::Remove {
                what: "group".into(),
            }],
            (None, State::Present) => vec![Change::Create {
                what: "group".into(),
            }],
            (Some(g), State::Present) => match self.gid {
                Some(gid) if gid != g.gid => {
                    vec![Change::Attribute {
                        name: "gid".into(),
                        from: Some(g.gid.to_string()),
                        to: Some(gid.to_string()),
                    }]
                }
                _ => Vec::new(),
            },
        }
    }

    fn apply(&self, host: &Host, found: &Option<GroupEntry>, _: &[Change]) -> Result<()> {
        let group = read(host, GROUP)?;
        let gshadow = read(host, GSHADOW)?;
        let text =
            |f: &Option<(String, Meta)>| f.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
        let accounts = host.accounts()?;
        let (new_group, new_gshadow) = if self.state == State::Absent {
            let gid = found.as_ref().map(|g| g.gid);
            if let Some(user) = accounts.users.iter().find(|u| Some(u.gid) == gid) {
                return Err(Error::Other(format!(
                    "group `{}` is the primary group of user `{}`; remove or change that user first",
                    self.name, user.name
                )));
            }
            (
                accounts::set_line(&text(&group), &self.name, None),
                accounts::set_line(&text(&gshadow), &self.name, None),
            )
        } else {
            let gid = match (self.gid, found) {
                (Some(gid), _) => {
                    if let Some(other) = accounts
                        .groups
                        .iter()
                        .find(|g| g.gid == gid && g.name != self.name)
                    {
                        return Err(Error::Other(format!(
                            "gid {gid} already belongs to group `{}`",
                            other.name
                        )));
                    }
                    gid
                }
                (None, Some(g)) => g.gid,
                (None, None) => accounts
                    .free_gid(self.system)
                    .ok_or_else(|| Error::Other("no free group id left".into()))?,
            };
            let members = found
                .as_ref()
                .map(|g| g.members.clone())
                .unwrap_or_default();
            let line = GroupEntry {
                name: self.name.clone(),
                gid,
                members,
            }
            .line();
            let gshadow_line = format!("{}:!::", self.name);
            let new_gshadow = if found.is_none() {
                accounts::set_line(&text(&gshadow), &self.name, Some(&gshadow_line))
            } else {
                text(&gshadow)
            };
            (
                accounts::set_line(&text(&group), &self.name, Some(&line)),
                new_gshadow,
            )
        };
        write(host, GROUP, group.as_ref(), &new_group)?;
        if gshadow.is_some() {
            write(host, GSHADOW, gshadow.as_ref(), &new_gshadow)?;
        }
        Ok(())
    }
}
