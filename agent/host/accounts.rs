//! The root's account databases: `/etc/passwd`, `/etc/group`, `/etc/shadow`, `/etc/gshadow`.
//!
//! Under `--root` the agent edits these files itself (as `useradd --prefix` does) instead of
//! calling the host's NSS, so names resolve to the ids *of the root*, not of the machine running
//! the tests. Edits touch only the line of the account concerned; every other line, comments
//! included, is kept byte for byte.

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The parsed passwd and group files of a root (empty when they do not exist).
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub users: Vec<User>,
    pub groups: Vec<Group>,
}

impl Accounts {
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        Accounts {
            users: passwd.lines().filter_map(parse_user).collect(),
            groups: group.lines().filter_map(parse_group).collect(),
        }
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The name of `uid`, or the number when no user has it.
    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    /// The name of `gid`, or the number when no group has it.
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .iter()
            .find(|g| g.gid == gid)
            .map_or_else(|| gid.to_string(), |g| g.name.clone())
    }

    /// The id of user `name` (numeric names are taken as ids).
    pub fn uid(&self, name: &str) -> Option<u32> {
        self.user(name)
            .map(|u| u.uid)
            .or_else(|| name.parse().ok())
            .or((name == "root").then_some(0))
    }

    /// The id of group `name` (numeric names are taken as ids).
    pub fn gid(&self, name: &str) -> Option<u32> {
        self.group(name)
            .map(|g| g.gid)
            .or_else(|| name.parse().ok())
            .or((name == "root").then_some(0))
    }

    /// The groups that list `user` as a member.
    pub fn memberships(&self, user: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == user))
            .map(|g| g.name.clone())
            .collect()
    }

    /// The next free user id: system ids from 999 down to 100 (as useradd picks them), others from
    /// 1000 up to 59999.
    pub fn free_uid(&self, system: bool) -> Option<u32> {
        free_id(system, |id| self.users.iter().any(|u| u.uid == id))
    }

    /// The next free group id, same ranges as [`Accounts::free_uid`].
    pub fn free_gid(&self, system: bool) -> Option<u32> {
        free_id(system, |id| self.groups.iter().any(|g| g.gid == id))
    }
}

fn free_id(system: bool, taken: impl Fn(u32) -> bool) -> Option<u32> {
    if system {
        (100..=999).rev().find(|id| !taken(*id))
    } else {
        (1000..=59999).find(|id| !taken(*id))
    }
}

fn parse_user(line: &str) -> Option<User> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 7 || line.starts_with('#') {
        return None;
    }
    Some(User {
        name: f[0].to_owned(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        gecos: f[4].to_owned(),
        home: f[5].to_owned(),
        shell: f[6].to_owned(),
    })
}

fn parse_group(line: &str) -> Option<Group> {
    let f: Vec<&str> = line.split(':').collect();
    if f.len() != 4 || line.starts_with('#') {
        return None;
    }
    Some(Group {
        name: f[0].to_owned(),
        gid: f[2].parse().ok()?,
        members: f[3]
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl User {
    pub fn line(&self) -> String {
        format!(
            "{}:x:{}:{}:{}:{}:{}",
            self.name, self.uid, self.gid, self.gecos, self.home, self.shell
        )
    }
}

impl Group {
    pub fn line(&self) -> String {
        format!("{}:x:{}:{}", self.name, self.gid, self.members.join(","))
    }
}

/// `text` with the line of account `name` (first field) replaced by `line`, appended if there is
/// none, or removed when `line` is `None`. Every other line is kept byte for byte.
pub fn set_line(text: &str, name: &str, line: Option<&str>) -> String {
    let prefix = format!("{name}:");
    let mut out = String::with_capacity(text.len() + 64);
    let mut done = false;
    for l in text.split_inclusive('\n') {
        if l.starts_with(&prefix) && !done {
            done = true;
            if let Some(new) = line {
                out.push_str(new);
                out.push('\n');
            }
        } else {
            out.push_str(l);
        }
    }
    if !done && let Some(new) = line {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(new);
        out.push('\n');
    }
    out
}

/// `text` (a group or gshadow file) with `user` in the member list (last field) of exactly the
/// groups in `wanted`. Lines of groups whose membership does not change are kept byte for byte.
pub fn set_memberships(text: &str, user: &str, wanted: &[String]) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for l in text.split_inclusive('\n') {
        // A CRLF line keeps its CR in the ending, not on the last member.
        let (body, end) = l
            .strip_suffix("\r\n")
            .map(|b| (b, "\r\n"))
            .or_else(|| l.strip_suffix('\n').map(|b| (b, "\n")))
            .unwrap_or((l, ""));
        let mut fields: Vec<&str> = body.split(':').collect();
        if body.starts_with('#') || fields.len() != 4 {
            out.push_str(l);
            continue;
        }
        let list = fields[3];
        let has = list.split(',').any(|m| m == user);
        let want = wanted.iter().any(|g| g == fields[0]);
        if has == want {
            out.push_str(l);
            continue;
        }
        // Only `user` is added or taken out; every other byte of the list (odd empty entries
        // included) stays, so nothing else in the line can move, a stray CR to its end say.
        let joined = if !want {
            list.split(',')
                .filter(|m| *m != user)
                .collect::<Vec<_>>()
                .join(",")
        } else if list.is_empty() {
            user.to_owned()
        } else {
            format!("{list},{user}")
        };
        fields[3] = &joined;
        out.push_str(&fields.join(":"));
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n# a comment\npyme:x:998:998:PYME:/home/pyme:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nvideo:x:44:alice\nrender:x:105:\npyme:x:998:\n";

    #[test]
    fn parses_and_looks_up() {
        let a = Accounts::parse(PASSWD, GROUP);
        assert_eq!(a.uid("pyme"), Some(998));
        assert_eq!(a.user_name(998), "pyme");
        assert_eq!(a.user_name(4242), "4242");
        assert_eq!(a.gid("video"), Some(44));
        assert_eq!(a.memberships("alice"), vec!["video"]);
        assert_eq!(a.free_uid(true), Some(999));
        assert_eq!(a.free_uid(false), Some(1000));
    }

    #[test]
    fn set_line_replaces_appends_removes_and_keeps_the_rest() {
        let replaced = set_line(PASSWD, "pyme", Some("pyme:x:998:998::/data:/bin/bash"));
        assert_eq!(
            replaced,
            PASSWD.replace("PYME:/home/pyme:/usr/sbin/nologin", ":/data:/bin/bash")
        );
        let appended = set_line(
            "root:x:0:0:root:/root:/bin/bash",
            "bob",
            Some("bob:x:1000:1000::/home/bob:/bin/sh"),
        );
        assert_eq!(
            appended,
            "root:x:0:0:root:/root:/bin/bash\nbob:x:1000:1000::/home/bob:/bin/sh\n"
        );
        let removed = set_line(PASSWD, "pyme", None);
        assert_eq!(removed, "root:x:0:0:root:/root:/bin/bash\n# a comment\n");
        assert_eq!(set_line(PASSWD, "nobody", None), PASSWD);
    }

    #[test]
    fn memberships_change_only_the_groups_concerned() {
        let out = set_memberships(GROUP, "pyme", &["video".to_owned(), "render".to_owned()]);
        assert_eq!(
            out,
            "root:x:0:\nvideo:x:44:alice,pyme\nrender:x:105:pyme\npyme:x:998:\n"
        );
        let back = set_memberships(&out, "pyme", &[]);
        assert_eq!(back, GROUP);
    }

    #[test]
    fn a_crlf_group_file_keeps_its_line_endings_out_of_the_member_list() {
        // Found by the accounts fuzz target's CRLF seed: the CR stayed on the last member.
        let crlf = "video:x:44:alice\r\nrender:x:105:alice";
        let out = set_memberships(crlf, "pyme", &["video".to_owned()]);
        assert_eq!(out, "video:x:44:alice,pyme\r\nrender:x:105:alice");
        assert_eq!(set_memberships(&out, "pyme", &[]), crlf);
        // Found by fuzzing: dropping the list's empty entries moved a member's stray CR to the
        // end of the line, where it reads as a line ending, and made `pyme\r` a second `pyme`.
        let odd = "g:x:5:pyme,x,pyme\r,,\n";
        assert_eq!(set_memberships(odd, "pyme", &[]), "g:x:5:x,pyme\r,,\n");
    }
}
