//! `authorized_keys`: the public keys allowed to log in as a user, as a marked block in their
//! `~/.ssh/authorized_keys`. Keys a person added by hand (outside the block) are kept byte for
//! byte; the block holds exactly the manifest's keys and those of its `key_files`, read from the
//! node when the resource runs (an `ssh_key`'s `.pub`, which then comes first). The file is mode
//! 0600 and owned by the user, and a missing `~/.ssh` is made mode 0700, so sshd's `StrictModes`
//! accepts them. The old file is backed up before a change (public keys are not secret).

use std::str::FromStr;

use ssh_key::authorized_keys::Entry;

use super::block::Markers;
use super::ssh::{self, BlockFile, Owned};
use crate::engine::{Change, DriftWatch, Need, Resource};
use crate::host::accounts::Accounts;
use crate::host::{Error, Host, Result};

pub const MARKERS: Markers = Markers {
    begin: "# BEGIN provision managed block: authorized keys (edits inside are overwritten)",
    end: "# END provision managed block",
};

#[derive(Debug)]
pub struct AuthorizedKeys {
    pub path: String,
    pub owned: Owned,
    /// Key lines from the manifest (validated).
    pub keys: Vec<String>,
    /// Node paths of public key files.
    pub key_files: Vec<String>,
}

/// What is on the node.
#[derive(Debug)]
pub struct Found {
    file: BlockFile,
    /// The key lines of every key file that exists, in order.
    from_files: Vec<String>,
    /// Key files not there (yet).
    missing: Vec<String>,
    accounts: Accounts,
}

/// Why `line` is not an `authorized_keys` entry, if it is not.
pub fn key_problem(line: &str) -> Option<String> {
    if line.contains(['\n', '\r']) {
        return Some("a key must be one line".into());
    }
    Entry::from_str(line.trim())
        .err()
        .map(|e| format!("not an OpenSSH public key line ({e})"))
}

/// The key lines of a public key file: every line that is not blank or a comment, each checked.
fn key_lines(path: &str, text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(problem) = key_problem(line) {
            return Err(Error::Other(format!("{path} line {}: {problem}", i + 1)));
        }
        out.push(line.to_owned());
    }
    Ok(out)
}

impl AuthorizedKeys {
    /// The block's lines: the key files' keys, then the manifest's, each once.
    fn block(&self, from_files: &[String]) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for line in from_files.iter().chain(&self.keys) {
            let line = line.trim().to_owned();
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }
}

impl Resource for AuthorizedKeys {
    type Observed = Found;

    fn id(&self) -> String {
        format!("authorized_keys:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = self.owned.needs(&self.path);
        needs.extend(self.key_files.iter().cloned().map(Need::File));
        needs
    }

    fn drift_watch(&self) -> Vec<DriftWatch> {
        let mut watch = vec![DriftWatch::Path(self.path.clone())];
        watch.extend(self.key_files.iter().cloned().map(DriftWatch::Path));
        watch
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        let accounts = host.accounts()?;
        let file = BlockFile::observe(host, &self.path, &accounts)?;
        let (mut from_files, mut missing) = (Vec::new(), Vec::new());
        for path in &self.key_files {
            match ssh::read_text(host, path)? {
                Some(text) => from_files.extend(key_lines(path, &text)?),
                None => missing.push(path.clone()),
            }
        }
        Ok(Found {
            file,
            from_files,
            missing,
            accounts,
        })
    }

    fn verify(&self, found: &Found, write: bool) -> std::result::Result<Option<String>, String> {
        if found.missing.is_empty() {
            return Ok(None);
        }
        let what = format!("key file {} does not exist", found.missing.join(", "));
        if write {
            Err(format!(
                "{what}; the resource that makes it (an ssh_key) must run first on this node, or it must be on the shared filesystem"
            ))
        } else {
            Ok(Some(format!("{what} yet; its keys are added once it does")))
        }
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let lines = self.block(&found.from_files);
        found
            .file
            .diff(&MARKERS, &lines, &self.owned, ssh::PRIVATE, &found.accounts)
    }

    fn apply(&self, host: &Host, found: &Found, _changes: &[Change]) -> Result<()> {
        let lines = self.block(&found.from_files);
        found
            .file
            .apply(host, &MARKERS, &lines, &self.owned, ssh::PRIVATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAc7noc+JcCSrBNcVIGbuNorJ4kw8XROLaOvqoVqkanS ipp@cl-0";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8wB2kdAXecP2En+FFhynp8Kw763NKChhw7o++oloSV other";

    #[test]
    fn key_lines_with_options_and_comments_parse() {
        assert_eq!(key_problem(KEY), None);
        assert_eq!(
            key_problem(&format!("from=\"10.0.0.0/24\",no-pty {KEY}")),
            None
        );
        assert!(key_problem("ssh-ed25519 AAAAnot-base64").is_some());
        assert!(key_problem("hello").is_some());
        assert!(key_problem(&format!("{KEY}\nssh-rsa AAAA")).is_some());
    }

    #[test]
    fn key_files_skip_blanks_and_comments_and_name_a_bad_line() {
        let lines = key_lines("/k.pub", &format!("# a comment\n\n{KEY}\n")).unwrap();
        assert_eq!(lines, [KEY]);
        let e = key_lines("/k.pub", &format!("{KEY}\ngarbage\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/k.pub line 2"), "{e}");
    }

    #[test]
    fn the_block_lists_file_keys_first_and_each_key_once() {
        let r = AuthorizedKeys {
            path: "/home/ipp/.ssh/authorized_keys".into(),
            owned: Owned {
                owner: None,
                group: None,
            },
            keys: vec![format!("  {KEY}"), OTHER.into()],
            key_files: vec!["/home/ipp/.ssh/id_ed25519.pub".into()],
        };
        assert_eq!(
            r.block(&[KEY.to_owned()]),
            [KEY.to_owned(), OTHER.to_owned()]
        );
        let hand = "ssh-rsa AAAAB3 me@laptop\n";
        let text = MARKERS.render(Some(hand), &r.block(&[]));
        assert!(text.starts_with(hand), "{text}");
    }
}
