//! `venv`: a Python virtual environment made by a named interpreter (`python3.11 -m venv`), with
//! pip requirements installed by the environment's own python, and the whole tree owned by the
//! user the manifest names.
//!
//! Observing reads `pyvenv.cfg`, two `stat`s and the `*.dist-info` names of site-packages: an
//! environment in sync costs no subprocess. pip packages are checked, never removed: what pip
//! pulled in as dependencies is not in the manifest, so "not listed" does not mean "unwanted".
//! Under `--root` the environment is made at its real path under the root, so its scripts name
//! that path; it is meant to be used there (tests, images), not moved.

use std::path::Path;
use std::time::Duration;

use super::ownership::{Ownership, chown_tree};
use super::pip::{self, Group, Installed};
use crate::engine::{Change, DriftWatch, Need, Resource};
use crate::host::{Error, Host, Kind, Result};

/// How long `python -m venv` may take (it installs the bundled pip wheel).
const VENV_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct Venv {
    pub path: String,
    pub python: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub groups: Vec<Group>,
}

/// An existing environment.
#[derive(Debug)]
pub struct Found {
    /// `version` from `pyvenv.cfg`.
    pub version: Option<String>,
    /// Owner and group names of the environment's folder and of its site-packages folder.
    pub owners: Vec<(String, String)>,
    pub installed: Installed,
}

#[derive(Debug)]
pub struct Observed {
    pub found: Option<Found>,
    /// The group the tree should have: `group`, else the owner's primary group (when the owner
    /// exists yet).
    pub want_group: Option<String>,
}

impl Venv {
    /// The Python version the interpreter's name promises (`python3.11` → `3.11`), if any.
    fn wanted_version(&self) -> Option<&str> {
        let base = Path::new(&self.python).file_name()?.to_str()?;
        let v = base.strip_prefix("python")?;
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then_some(v)
    }

    fn version_differs(&self, found: &Found) -> Option<Change> {
        let want = self.wanted_version()?;
        let have = found.version.as_deref();
        let ok = have.is_some_and(|h| h == want || h.starts_with(&format!("{want}.")));
        (!ok).then(|| Change::Attribute {
            name: "python".into(),
            from: have.map(str::to_owned),
            to: Some(want.to_owned()),
        })
    }

    fn ownership(&self) -> Ownership {
        Ownership {
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: None,
            default_mode: 0o755,
        }
    }
}

/// `key = value` from `pyvenv.cfg`.
fn cfg_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

impl Resource for Venv {
    type Observed = Observed;

    fn id(&self) -> String {
        format!("venv:{}", self.path)
    }

    /// `pyvenv.cfg` and every entry of its package folder: a package removed or installed by
    /// hand (its `*.dist-info` appears or goes) is put right at once.
    fn drift_watch(&self) -> Vec<DriftWatch> {
        vec![
            DriftWatch::Path(format!("{}/pyvenv.cfg", self.path)),
            DriftWatch::Path(format!("{}/lib/*/site-packages/", self.path)),
        ]
    }

    fn needs(&self) -> Vec<Need> {
        super::owner_needs(&self.path, &self.ownership())
    }

    fn observe(&self, host: &Host) -> Result<Observed> {
        let accounts = host.accounts()?;
        let want_group = self.group.clone().or_else(|| {
            let user = accounts.user(self.owner.as_deref()?)?;
            Some(accounts.group_name(user.gid))
        });
        let found = match host.stat(&self.path)? {
            None => None,
            Some(stat) if stat.kind != Kind::Directory => {
                return Err(Error::WrongType {
                    path: self.path.clone(),
                    found: stat.kind.describe(),
                    expected: "a virtual environment (a directory)",
                });
            }
            Some(stat) => {
                let cfg_path = format!("{}/pyvenv.cfg", self.path);
                match host.read(&cfg_path)? {
                    None => {
                        let real = host.resolve(&self.path)?;
                        let empty = std::fs::read_dir(&real)
                            .map_err(Error::io("list", &real))?
                            .next()
                            .is_none();
                        if !empty {
                            return Err(Error::Other(format!(
                                "{} exists, is not empty and has no pyvenv.cfg: it is not a virtual environment, and provision will not replace it",
                                self.path
                            )));
                        }
                        // An empty folder (made by a `directory:` resource) is where the
                        // environment goes.
                        None
                    }
                    Some(cfg) => {
                        let cfg = String::from_utf8_lossy(&cfg);
                        let real = host.resolve(&self.path)?;
                        let mut owners =
                            vec![(accounts.user_name(stat.uid), accounts.group_name(stat.gid))];
                        for site in pip::site_packages(&real)? {
                            let meta = std::fs::symlink_metadata(&site)
                                .map_err(Error::io("inspect", &site))?;
                            use std::os::unix::fs::MetadataExt;
                            owners.push((
                                accounts.user_name(meta.uid()),
                                accounts.group_name(meta.gid()),
                            ));
                        }
                        Some(Found {
                            version: cfg_value(&cfg, "version")
                                .or_else(|| cfg_value(&cfg, "version_info")),
                            owners,
                            installed: pip::installed(&real)?,
                        })
                    }
                }
            }
        };
        Ok(Observed { found, want_group })
    }

    fn diff(&self, observed: &Observed) -> Vec<Change> {
        let mut changes = Vec::new();
        let empty = Installed::new();
        let (installed, owners) = match &observed.found {
            Some(found) if self.version_differs(found).is_none() => {
                (&found.installed, found.owners.as_slice())
            }
            Some(found) => {
                changes.extend(self.version_differs(found));
                (&empty, &[][..])
            }
            None => {
                changes.push(Change::Create {
                    what: format!("virtual environment ({})", self.python),
                });
                (&empty, &[][..])
            }
        };
        changes.extend(super::ownership::tree_diff(
            owners,
            self.owner.as_deref(),
            observed.want_group.as_deref(),
        ));
        changes.extend(pip::diff(&self.groups, installed));
        changes
    }

    fn apply(&self, host: &Host, observed: &Observed, _changes: &[Change]) -> Result<()> {
        let real = host.resolve(&self.path)?;
        match &observed.found {
            Some(found) if self.version_differs(found).is_none() => {}
            found => {
                if found.is_some() {
                    std::fs::remove_dir_all(&real).map_err(Error::io("remove", &real))?;
                }
                self.create(host, &real)?;
            }
        }
        pip::install_groups(host, &real, &self.path, &self.groups)?;
        if self.owner.is_some() || self.group.is_some() {
            chown_tree(host, &real, self.owner.as_deref(), self.group.as_deref())?;
        }
        Ok(())
    }
}

impl Venv {
    /// `python -m venv <real path>`.
    fn create(&self, host: &Host, real: &Path) -> Result<()> {
        host.ensure_parent(&self.path)?;
        let real_s = real.to_string_lossy();
        let (code, output) = crate::host::mounts::run_output(
            &self.python,
            &["-m", "venv", &real_s],
            &[],
            VENV_TIMEOUT,
        )
        .map_err(|e| {
            Error::Other(format!(
                "cannot make the virtual environment {}: {e}",
                self.path
            ))
        })?;
        if code != Some(0) {
            let status =
                code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
            return Err(Error::Other(format!(
                "`{} -m venv {}` failed ({status}):\n{}",
                self.python,
                self.path,
                pip::tail(&output, 20)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn venv(python: &str) -> Venv {
        Venv {
            path: "/opt/envs/x".into(),
            python: python.into(),
            owner: Some("pyme".into()),
            group: None,
            groups: Vec::new(),
        }
    }

    fn found(version: &str, owner: &str) -> Found {
        Found {
            version: Some(version.into()),
            owners: vec![(owner.into(), owner.into()), (owner.into(), owner.into())],
            installed: Installed::new(),
        }
    }

    #[test]
    fn interpreter_names_promise_versions() {
        assert_eq!(venv("python3.11").wanted_version(), Some("3.11"));
        assert_eq!(venv("/usr/bin/python3").wanted_version(), Some("3"));
        assert_eq!(venv("python").wanted_version(), None);
        assert_eq!(venv("/opt/py/bin/pypy3").wanted_version(), None);
    }

    #[test]
    fn an_env_in_sync_has_no_changes() {
        let observed = Observed {
            found: Some(found("3.11.7", "pyme")),
            want_group: Some("pyme".into()),
        };
        assert!(venv("python3.11").diff(&observed).is_empty());
    }

    #[test]
    fn another_python_or_owner_differs() {
        let observed = Observed {
            found: Some(found("3.10.12", "pyme")),
            want_group: Some("pyme".into()),
        };
        let texts: Vec<String> = venv("python3.11")
            .diff(&observed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts[0], "python 3.10.12 → 3.11");
        let observed = Observed {
            found: Some(found("3.11.7", "root")),
            want_group: Some("pyme".into()),
        };
        let texts: Vec<String> = venv("python3.11")
            .diff(&observed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["owner root → pyme", "group root → pyme"]);
    }

    #[test]
    fn pyvenv_cfg_values() {
        let cfg = "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n";
        assert_eq!(cfg_value(cfg, "version").as_deref(), Some("3.11.2"));
        assert_eq!(cfg_value(cfg, "executable"), None);
    }
}
