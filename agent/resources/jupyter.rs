//! `jupyter_server`: a Jupyter server's `jupyter_server_config.json` with the password stored only
//! as Jupyter's own hash, and a token file for API clients.
//!
//! The hash is what `jupyter_server.auth.passwd()` writes: `argon2:` followed by the PHC string of
//! argon2id with argon2-cffi's cost (10 MiB, 10 passes, 8 lanes), which Jupyter verifies with
//! argon2-cffi. A fresh hash has a fresh salt, so a config whose hash still verifies against the
//! password keeps it: applying twice changes nothing, and a changed password gives a new hash.
//! The hash is never shown: diffs show `(argon2 hash, not shown)` in its place, and the old file
//! is not backed up (its hash would be there). The token file is made once, 32 random bytes as
//! hex with no final newline (Jupyter reads `JUPYTER_TOKEN_FILE` whole), mode 0600, and never shown or replaced.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::ownership::{Ownership, Seen};
use crate::engine::{Change, ContentDiff, Need, Resource};
use crate::host::{Error, Host, Kind, Result};
use crate::secret::Secret;

/// What a diff shows in place of the hash.
const HIDDEN: &str = "argon2:(hash, not shown)";

#[derive(Debug)]
pub struct JupyterServer {
    pub path: String,
    pub user: String,
    /// The `ServerApp` settings (ip, port, root_dir, ...), as JSON.
    pub server_app: serde_json::Map<String, serde_json::Value>,
    pub password: Secret,
    pub token_file: Option<String>,
}

/// The config and token file as found, and the config as it should be (with the hash found kept
/// when it still verifies).
#[derive(Debug)]
pub struct Found {
    config: Option<(Seen, Vec<u8>)>,
    token: Option<Seen>,
    wanted: Secret,
}

/// The argon2 hasher with Jupyter's (argon2-cffi's) cost.
fn hasher() -> Argon2<'static> {
    let params =
        Params::new(10 * 1024, 10, 8, Some(32)).expect("argon2-cffi's parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A new Jupyter password hash of `password`.
pub fn hash(password: &[u8]) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher()
        .hash_password(password, &salt)
        .map_err(|e| Error::Other(format!("cannot hash the Jupyter password: {e}")))?;
    Ok(format!("argon2:{phc}"))
}

/// Whether `hashed` (as Jupyter stores it) is an argon2 hash of `password`.
pub fn verifies(hashed: &str, password: &[u8]) -> bool {
    let Some(phc) = hashed.strip_prefix("argon2:") else {
        return false;
    };
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password, &h).is_ok())
}

/// The hash in a config file's text, if it has one.
fn hash_in(text: &[u8]) -> Option<String> {
    let config: serde_json::Value = serde_json::from_slice(text).ok()?;
    config
        .get("PasswordIdentityProvider")?
        .get("hashed_password")?
        .as_str()
        .map(str::to_owned)
}

/// `text` with its hash replaced by [`HIDDEN`], for diffs.
fn shown(text: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(text);
    match hash_in(text.as_bytes()) {
        Some(h) if !h.is_empty() => text.replace(&h, HIDDEN).into_bytes(),
        _ => text.into_owned().into_bytes(),
    }
}

impl JupyterServer {
    /// The config's text with `hashed_password` = `hash`.
    fn render(&self, hash: &str) -> Vec<u8> {
        let config = serde_json::json!({
            "PasswordIdentityProvider": {"hashed_password": hash},
            "ServerApp": self.server_app,
        });
        let mut text = serde_json::to_string_pretty(&config).expect("JSON values serialize");
        text.push('\n');
        text.into_bytes()
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            owner: Some(self.user.clone()),
            group: None,
            mode: Some(crate::manifest::model::Mode(0o600)),
            default_mode: 0o600,
        }
    }

    fn seen(host: &Host, path: &str) -> Result<Option<Seen>> {
        let Some(stat) = host.stat(path)? else {
            return Ok(None);
        };
        if stat.kind != Kind::File {
            return Err(Error::WrongType {
                path: path.to_owned(),
                found: stat.kind.describe(),
                expected: "a regular file",
            });
        }
        Ok(Some(Seen::new(stat, &host.accounts()?)))
    }
}

impl Resource for JupyterServer {
    type Observed = Found;

    fn id(&self) -> String {
        format!("jupyter_server:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = vec![Need::User(self.user.clone())];
        for path in std::iter::once(&self.path).chain(&self.token_file) {
            if let Some((parent, _)) = path.rsplit_once('/')
                && !parent.is_empty()
            {
                needs.push(Need::Directory(parent.to_owned()));
            }
        }
        needs
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        let config = match Self::seen(host, &self.path)? {
            Some(seen) => Some((seen, host.read(&self.path)?.unwrap_or_default())),
            None => None,
        };
        let token = match &self.token_file {
            Some(path) => Self::seen(host, path)?,
            None => None,
        };
        let kept = config
            .as_ref()
            .and_then(|(_, text)| hash_in(text))
            .filter(|h| verifies(h, self.password.expose()));
        let hash = match kept {
            Some(h) => h,
            None => hash(self.password.expose())?,
        };
        Ok(Found {
            config,
            token,
            wanted: Secret::new(self.render(&hash)),
        })
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let mut changes = Vec::new();
        let wanted = found.wanted.expose();
        match &found.config {
            None => {
                changes.push(Change::Create {
                    what: "file".into(),
                });
                changes.push(Change::Content(ContentDiff::between(
                    &self.path,
                    None,
                    &shown(wanted),
                    false,
                )));
                changes.extend(self.ownership().diff(None));
            }
            Some((seen, old)) => {
                if old.as_slice() != wanted {
                    let (old_shown, new_shown) = (shown(old), shown(wanted));
                    if old_shown == new_shown {
                        changes.push(Change::Attribute {
                            name: "password".into(),
                            from: Some("(not shown)".into()),
                            to: Some("(changed, not shown)".into()),
                        });
                    } else {
                        changes.push(Change::Content(ContentDiff::between(
                            &self.path,
                            Some(&old_shown),
                            &new_shown,
                            false,
                        )));
                    }
                }
                changes.extend(self.ownership().diff(Some(seen)));
            }
        }
        if let Some(path) = &self.token_file {
            match &found.token {
                None => changes.push(Change::Edit {
                    file: path.clone(),
                    diff: ContentDiff::between(path, None, b"", true),
                }),
                Some(seen) => {
                    for change in self.ownership().diff(Some(seen)) {
                        changes.push(match change {
                            Change::Owner { from, to } => Change::Attribute {
                                name: format!("owner of {path}"),
                                from,
                                to: Some(to),
                            },
                            Change::Mode { from, to } => Change::Attribute {
                                name: format!("mode of {path}"),
                                from: from.map(|m| m.to_string()),
                                to: Some(to.to_string()),
                            },
                            other => other,
                        });
                    }
                }
            }
        }
        changes
    }

    fn drift_watch(&self) -> Vec<crate::engine::DriftWatch> {
        std::iter::once(&self.path)
            .chain(&self.token_file)
            .map(|p| crate::engine::DriftWatch::Path(p.clone()))
            .collect()
    }

    fn apply(&self, host: &Host, found: &Found, _changes: &[Change]) -> Result<()> {
        let ownership = self.ownership();
        // No backup of the old config: it holds the old hash.
        let seen = found.config.as_ref().map(|(s, _)| s);
        let meta = ownership.meta(host, seen)?;
        if found
            .config
            .as_ref()
            .is_none_or(|(_, old)| old.as_slice() != found.wanted.expose())
        {
            host.ensure_parent(&self.path)?;
            host.write(&self.path, found.wanted.expose(), meta, None)?;
        } else {
            host.set_meta(&self.path, meta)?;
        }
        if let Some(path) = &self.token_file {
            let meta = ownership.meta(host, found.token.as_ref())?;
            match &found.token {
                None => {
                    let mut bytes = [0u8; 32];
                    aws_lc_rs::rand::fill(&mut bytes)
                        .map_err(|_| Error::Other("no random bytes for the token".into()))?;
                    // No final newline: Jupyter reads JUPYTER_TOKEN_FILE whole, newline included.
                    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                    host.ensure_parent(path)?;
                    host.write(path, Secret::new(token).expose(), meta, None)?;
                }
                Some(_) => host.set_meta(path, meta)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_own_password_and_is_salted() {
        let a = hash(b"correct horse").unwrap();
        assert!(
            a.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
            "{a}"
        );
        assert!(verifies(&a, b"correct horse"));
        assert!(!verifies(&a, b"correct horsE"));
        assert_ne!(a, hash(b"correct horse").unwrap(), "a fresh salt each time");
        assert!(!verifies("sha1:abc:def", b"correct horse"));
        assert!(!verifies("argon2:not a phc string", b"x"));
    }

    #[test]
    fn the_hash_is_found_and_hidden() {
        let j = JupyterServer {
            path: "/j/jupyter_server_config.json".into(),
            user: "jupyter".into(),
            server_app: serde_json::json!({"port": 8888})
                .as_object()
                .unwrap()
                .clone(),
            password: Secret::new("pw"),
            token_file: None,
        };
        let text = j.render("argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdA$aGFzaA");
        assert_eq!(
            hash_in(&text).as_deref(),
            Some("argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdA$aGFzaA")
        );
        let shown = String::from_utf8(shown(&text)).unwrap();
        assert!(
            shown.contains(HIDDEN) && !shown.contains("aGFzaA"),
            "{shown}"
        );
        assert!(shown.contains("\"port\": 8888"), "{shown}");
    }
}
