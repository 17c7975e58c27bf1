//! `ssh_key`: a user's key pair, made once, as `ssh-keygen -t ed25519 -N '' -f PATH` would, and
//! never replaced: a key may be authorized on machines provision knows nothing about.
//!
//! The key is made in this process by the `ssh-key` crate (RustCrypto), not by running
//! `ssh-keygen`: the private key then exists only in memory, as a [`Secret`], until the atomic
//! write puts it in its file, created mode 0600 before a byte is written. No temporary file of
//! another program, no output to capture, nothing to clean up after a crash. The private key is
//! never shown (no diff, no report, no log line) and never backed up.
//!
//! What provision keeps right afterwards: the private key's owner, group and mode 0600, and the
//! public key `<path>.pub` (mode 0644), rewritten from the private key when it is missing or holds
//! another key. An existing private key of any type is adopted; one that cannot be read (an old
//! PEM key) is adopted if its `.pub` is there, and otherwise fails with what to do.

use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use super::ownership::Seen;
use super::ssh::{self, Owned};
use crate::engine::{Change, ContentDiff, DriftWatch, Need, Resource};
use crate::host::accounts::Accounts;
use crate::host::{Error, Host, Result};
use crate::secret::Secret;

#[derive(Debug)]
pub struct SshKey {
    pub path: String,
    pub owned: Owned,
    /// The comment a new key gets.
    pub comment: String,
}

/// What is on the node.
#[derive(Debug)]
pub struct Found {
    folder: (String, bool),
    private: Option<Private>,
    public: Option<(Seen, String)>,
    accounts: Accounts,
}

/// An existing private key: its metadata, and its public half if the file could be read.
#[derive(Debug)]
struct Private {
    seen: Seen,
    public: std::result::Result<PublicKey, String>,
}

impl SshKey {
    fn pub_path(&self) -> String {
        format!("{}.pub", self.path)
    }

    fn pub_name(&self) -> String {
        std::path::Path::new(&self.pub_path())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The public key line `<path>.pub` should hold for `key`: `type base64 comment`.
fn pub_line(key: &PublicKey) -> Result<String> {
    let line = key
        .to_openssh()
        .map_err(|e| Error::Other(format!("cannot encode the public key: {e}")))?;
    Ok(format!("{line}\n"))
}

/// Whether the `.pub` text holds `key` (the comment may differ: it is not part of the key).
fn holds(text: &str, key: &PublicKey) -> bool {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| PublicKey::from_openssh(l.trim()).ok())
        .is_some_and(|found| found.key_data() == key.key_data())
}

impl Resource for SshKey {
    type Observed = Found;

    fn id(&self) -> String {
        format!("ssh_key:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        self.owned.needs(&self.path)
    }

    fn drift_watch(&self) -> Vec<DriftWatch> {
        vec![
            DriftWatch::Path(self.path.clone()),
            DriftWatch::Path(self.pub_path()),
        ]
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        let accounts = host.accounts()?;
        let folder = ssh::folder(host, &self.path)?;
        let private = match ssh::seen_file(host, &self.path, &accounts)? {
            None => None,
            Some(seen) => {
                let bytes = Secret::new(host.read(&self.path)?.unwrap_or_default());
                // The error of a key that does not parse says nothing of its content.
                let public = PrivateKey::from_openssh(bytes.expose())
                    .map(|k| k.public_key().clone())
                    .map_err(|e| e.to_string());
                Some(Private { seen, public })
            }
        };
        let pub_path = self.pub_path();
        let public = match ssh::seen_file(host, &pub_path, &accounts)? {
            None => None,
            Some(seen) => Some((seen, ssh::read_text(host, &pub_path)?.unwrap_or_default())),
        };
        Ok(Found {
            folder,
            private,
            public,
            accounts,
        })
    }

    fn verify(&self, found: &Found, _write: bool) -> std::result::Result<Option<String>, String> {
        if let Some(Private { public: Err(e), .. }) = &found.private
            && found.public.is_none()
        {
            return Err(format!(
                "{} exists but is not a private key provision can read ({e}), and {} is missing; provision never replaces an existing key: write its public half with `ssh-keygen -y -f {} > {}`, or move the old key away",
                self.path,
                self.pub_path(),
                self.path,
                self.pub_path()
            ));
        }
        Ok(None)
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let mut changes = Vec::new();
        if !found.folder.1 {
            changes.push(ssh::folder_change(&found.folder.0));
        }
        let a = &found.accounts;
        let Some(private) = &found.private else {
            changes.push(Change::Create {
                what: "ed25519 key pair".into(),
            });
            changes.extend(self.owned.diff(None, ssh::PRIVATE, a, None));
            return changes;
        };
        changes.extend(self.owned.diff(Some(&private.seen), ssh::PRIVATE, a, None));
        let name = self.pub_name();
        match (&private.public, &found.public) {
            (Ok(key), None) => {
                changes.push(Change::Create {
                    what: format!("public key {}", self.pub_path()),
                });
                if let Ok(line) = pub_line(key) {
                    changes.push(Change::Edit {
                        file: self.pub_path(),
                        diff: ContentDiff::between(&self.pub_path(), None, line.as_bytes(), false),
                    });
                }
            }
            (Ok(key), Some((seen, text))) => {
                if !holds(text, key)
                    && let Ok(line) = pub_line(key)
                {
                    changes.push(Change::Edit {
                        file: self.pub_path(),
                        diff: ContentDiff::between(
                            &self.pub_path(),
                            Some(text.as_bytes()),
                            line.as_bytes(),
                            false,
                        ),
                    });
                }
                changes.extend(self.owned.diff(Some(seen), ssh::PUBLIC, a, Some(&name)));
            }
            (Err(_), Some((seen, _))) => {
                changes.extend(self.owned.diff(Some(seen), ssh::PUBLIC, a, Some(&name)));
            }
            // verify() has failed the resource.
            (Err(_), None) => {}
        }
        changes
    }

    fn apply(&self, host: &Host, found: &Found, _changes: &[Change]) -> Result<()> {
        if !found.folder.1 {
            ssh::make_folder(host, &found.folder.0, &self.owned)?;
        }
        let pub_path = self.pub_path();
        let public = match &found.private {
            None => {
                let mut key =
                    PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
                        .map_err(|e| Error::Other(format!("cannot make an ed25519 key: {e}")))?;
                key.set_comment(&self.comment);
                let text = key
                    .to_openssh(LineEnding::LF)
                    .map_err(|e| Error::Other(format!("cannot encode the new key: {e}")))?;
                let secret = Secret::new(text.as_bytes());
                let meta = self.owned.meta(host, None, ssh::PRIVATE)?;
                host.write(&self.path, secret.expose(), meta, None)?;
                Some(key.public_key().clone())
            }
            Some(private) => {
                let meta = self.owned.meta(host, Some(&private.seen), ssh::PRIVATE)?;
                let s = &private.seen.stat;
                if (s.mode, s.uid, s.gid) != (meta.mode, meta.uid, meta.gid) {
                    host.set_meta(&self.path, meta)?;
                }
                private.public.as_ref().ok().cloned()
            }
        };
        let seen = found.public.as_ref().map(|(s, _)| s);
        let meta = self.owned.meta(host, seen, ssh::PUBLIC)?;
        let stale = match (&public, &found.public) {
            (Some(key), Some((_, text))) if found.private.is_some() => !holds(text, key),
            (Some(_), _) => true,
            (None, _) => false,
        };
        match public {
            Some(key) if stale => {
                if found.public.is_some() {
                    host.backup(&pub_path)?;
                }
                host.write(&pub_path, pub_line(&key)?.as_bytes(), meta, None)?;
            }
            _ => {
                if let Some(s) = seen
                    && (s.stat.mode, s.stat.uid, s.stat.gid) != (meta.mode, meta.uid, meta.gid)
                {
                    host.set_meta(&pub_path, meta)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pub_file_holds_a_key_whatever_its_comment() {
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let public = key.public_key();
        let line = pub_line(public).unwrap();
        assert!(line.starts_with("ssh-ed25519 AAAA"), "{line}");
        assert!(holds(&line, public));
        let other_comment = format!(
            "{} someone@else\n",
            line.split(' ').take(2).collect::<Vec<_>>().join(" ")
        );
        assert!(holds(&other_comment, public));
        let other = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        assert!(!holds(&line, other.public_key()));
        assert!(!holds("not a key\n", public));
        assert!(!holds("", public));
    }

    #[test]
    fn a_private_key_prints_nothing_of_itself() {
        let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519).unwrap();
        let text = key.to_openssh(LineEnding::LF).unwrap();
        let secret = Secret::new(text.as_bytes());
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert_eq!(
            PrivateKey::from_openssh(secret.expose())
                .unwrap()
                .public_key(),
            key.public_key()
        );
    }
}
