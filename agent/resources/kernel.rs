//! `jupyter_kernel`: registers an environment as a Jupyter kernel by writing
//! `<prefix>/share/jupyter/kernels/<name>/kernel.json` byte for byte as
//! `python -m ipykernel install --prefix <prefix> --name <name>` (ipykernel 6.29.3 to 7.1) writes
//! it, without running Python.
//!
//! Every kernel folder provision writes holds a marker file, [`MARKER`]; a kernel someone made by
//! hand has none, so only provision's own kernels are ever pruned. The first kernel of a prefix
//! (in manifest order) also removes provision's kernels in that prefix that the manifest no longer
//! lists for the node; `state: absent` removes a kernel by name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::engine::{Change, ContentDiff, DriftWatch, Need, Resource};
use crate::host::{Error, Host, Meta, Result};
use crate::manifest::model::State;

/// The marker file in a kernel folder that provision manages.
pub const MARKER: &str = ".provision-managed";

const MARKER_TEXT: &[u8] =
    b"This kernel is managed by provision: it is removed when the manifest no longer lists it.\n";

#[derive(Debug)]
pub struct JupyterKernel {
    pub name: String,
    pub display_name: String,
    /// The environment the kernel runs (node path).
    pub env: String,
    /// The JupyterLab env or system prefix that lists the kernel (node path).
    pub prefix: String,
    pub env_vars: BTreeMap<String, String>,
    pub state: State,
    /// Set on the first kernel of its prefix: the kernel names the manifest lists there for this
    /// node; provision's other kernels in the prefix are removed.
    pub prune_except: Option<Vec<String>>,
}

/// What the kernel's environment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvState {
    /// No `bin/python` (yet).
    Missing,
    /// A python without `ipykernel_launcher`.
    NoIpykernel,
    /// Ready; the Python version when site-packages names it (`lib/python3.11`).
    Ready { version: Option<(u32, u32)> },
}

#[derive(Debug)]
pub struct Observed {
    pub kernel_json: Option<Vec<u8>>,
    pub marked: bool,
    pub env: EnvState,
    /// provision's kernels in the prefix that the manifest no longer lists.
    pub stale: Vec<String>,
}

/// kernel.json in ipykernel's key order.
#[derive(Serialize)]
struct KernelJson<'a> {
    argv: Vec<&'a str>,
    display_name: &'a str,
    language: &'a str,
    metadata: Metadata,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    env: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Metadata {
    debugger: bool,
}

impl JupyterKernel {
    fn kernels_dir(&self) -> String {
        format!(
            "{}/share/jupyter/kernels",
            self.prefix.trim_end_matches('/')
        )
    }

    fn dir(&self) -> String {
        format!("{}/{}", self.kernels_dir(), self.name)
    }

    fn python(&self) -> String {
        format!("{}/bin/python", self.env.trim_end_matches('/'))
    }

    /// The kernel.json ipykernel writes for an env of Python `version`: `json.dump(indent=1)`,
    /// ASCII only, no final newline; `-Xfrozen_modules=off` on CPython 3.11 and later.
    pub fn content(&self, version: Option<(u32, u32)>) -> Vec<u8> {
        let python = self.python();
        let mut argv = vec![python.as_str()];
        if version.is_some_and(|v| v >= (3, 11)) {
            argv.push("-Xfrozen_modules=off");
        }
        argv.extend(["-m", "ipykernel_launcher", "-f", "{connection_file}"]);
        let doc = KernelJson {
            argv,
            display_name: &self.display_name,
            language: "python",
            metadata: Metadata { debugger: true },
            env: &self.env_vars,
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        doc.serialize(&mut ser)
            .expect("a kernel.json always serializes");
        ascii_escape(&String::from_utf8_lossy(&out)).into_bytes()
    }

    fn no_ipykernel(&self) -> String {
        format!(
            "the kernel's environment {} has no ipykernel (no ipykernel_launcher.py in its site-packages), so Jupyter could not start the kernel; add ipykernel to the environment's packages",
            self.env
        )
    }

    fn env_state(&self, host: &Host) -> Result<EnvState> {
        let env = host.resolve(&self.env)?;
        if !env.join("bin/python").exists() {
            return Ok(EnvState::Missing);
        }
        for site in super::pip::site_packages(&env)? {
            if site.join("ipykernel_launcher.py").is_file() {
                return Ok(EnvState::Ready {
                    version: python_version(&site),
                });
            }
        }
        Ok(EnvState::NoIpykernel)
    }
}

/// `(3, 11)` from `.../lib/python3.11/site-packages`.
fn python_version(site: &Path) -> Option<(u32, u32)> {
    let dir = site.parent()?.file_name()?.to_str()?;
    let (major, minor) = dir.strip_prefix("python")?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// What Python's `json.dump` does with `ensure_ascii`: every non-ASCII character as `\uXXXX`
/// (a surrogate pair above U+FFFF). Outside strings JSON text is ASCII, so this is safe on the
/// whole document.
fn ascii_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

impl Resource for JupyterKernel {
    type Observed = Observed;

    fn id(&self) -> String {
        format!("jupyter_kernel:{}", self.name)
    }

    /// Its kernel.json, and the env's packages (ipykernel removed by hand fails it at once).
    fn drift_watch(&self) -> Vec<DriftWatch> {
        vec![
            DriftWatch::Path(format!("{}/kernel.json", self.dir())),
            DriftWatch::Path(format!("{}/lib/*/site-packages/", self.env)),
        ]
    }

    fn needs(&self) -> Vec<Need> {
        if self.state == State::Absent {
            return Vec::new();
        }
        vec![
            Need::Env(self.env.clone()),
            Need::Env(self.prefix.clone()),
            Need::Directory(self.prefix.clone()),
        ]
    }

    fn observe(&self, host: &Host) -> Result<Observed> {
        let dir = self.dir();
        let kernel_json = host.read(&format!("{dir}/kernel.json"))?;
        let marked = host.stat(&format!("{dir}/{MARKER}"))?.is_some();
        let env = if self.state == State::Present {
            self.env_state(host)?
        } else {
            EnvState::Missing
        };
        let mut stale = Vec::new();
        if let Some(keep) = &self.prune_except {
            let real = host.resolve(&self.kernels_dir())?;
            match std::fs::read_dir(&real) {
                Ok(entries) => {
                    for entry in entries {
                        let entry = entry.map_err(Error::io("list", &real))?;
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if !keep.contains(&name) && entry.path().join(MARKER).is_file() {
                            stale.push(name);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("list", &real)(e)),
            }
            stale.sort();
        }
        Ok(Observed {
            kernel_json,
            marked,
            env,
            stale,
        })
    }

    fn verify(
        &self,
        observed: &Observed,
        _write: bool,
    ) -> std::result::Result<Option<String>, String> {
        if self.state == State::Present && observed.env == EnvState::NoIpykernel {
            return Err(self.no_ipykernel());
        }
        Ok(None)
    }

    fn diff(&self, observed: &Observed) -> Vec<Change> {
        let mut changes: Vec<Change> = observed
            .stale
            .iter()
            .map(|name| Change::Remove {
                what: format!("kernel {name} (no longer in the manifest)"),
            })
            .collect();
        let json_path = format!("{}/kernel.json", self.dir());
        match (self.state, &observed.kernel_json) {
            (State::Absent, None) => {}
            (State::Absent, Some(_)) => changes.push(Change::Remove {
                what: format!("kernel {}", self.name),
            }),
            (State::Present, old) => {
                let version = match observed.env {
                    EnvState::Ready { version } => version,
                    _ => None,
                };
                let new = self.content(version);
                if old.is_none() {
                    changes.push(Change::Create {
                        what: format!("kernel {}", self.name),
                    });
                }
                if old.as_deref() != Some(new.as_slice()) {
                    changes.push(Change::Content(ContentDiff::between(
                        &json_path,
                        old.as_deref(),
                        &new,
                        false,
                    )));
                }
                if !observed.marked {
                    changes.push(Change::Create {
                        what: format!("marker {MARKER} (the kernel is provision's to remove)"),
                    });
                }
            }
        }
        changes
    }

    fn apply(&self, host: &Host, observed: &Observed, _changes: &[Change]) -> Result<()> {
        for name in &observed.stale {
            let real = host.resolve(&format!("{}/{name}", self.kernels_dir()))?;
            std::fs::remove_dir_all(&real).map_err(Error::io("remove", &real))?;
        }
        let dir = self.dir();
        if self.state == State::Absent {
            if observed.kernel_json.is_some() {
                let real = host.resolve(&dir)?;
                std::fs::remove_dir_all(&real).map_err(Error::io("remove", &real))?;
            }
            return Ok(());
        }
        // The environment may have been made by this run, after the observation.
        let version = match self.env_state(host)? {
            EnvState::Missing => {
                return Err(Error::Other(format!(
                    "the kernel's environment {} does not exist (no bin/python); make it with a venv: resource or fix env:",
                    self.env
                )));
            }
            EnvState::NoIpykernel => {
                return Err(Error::Other(self.no_ipykernel()));
            }
            EnvState::Ready { version } => version,
        };
        let json_path = format!("{dir}/kernel.json");
        host.ensure_parent(&json_path)?;
        host.write(&json_path, &self.content(version), Meta::own(0o644), None)?;
        host.write(
            &format!("{dir}/{MARKER}"),
            MARKER_TEXT,
            Meta::own(0o644),
            None,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(display: &str) -> JupyterKernel {
        JupyterKernel {
            name: "pyme".into(),
            display_name: display.into(),
            env: "/opt/conda/envs/pyme".into(),
            prefix: "/opt/conda/envs/jlab".into(),
            env_vars: BTreeMap::new(),
            state: State::Present,
            prune_except: None,
        }
    }

    /// The file ipykernel 6.29.3-7.1 writes for this env on CPython 3.11 (research notes §3).
    #[test]
    fn content_is_ipykernels_byte_for_byte() {
        let expected = "{\n \"argv\": [\n  \"/opt/conda/envs/pyme/bin/python\",\n  \"-Xfrozen_modules=off\",\n  \"-m\",\n  \"ipykernel_launcher\",\n  \"-f\",\n  \"{connection_file}\"\n ],\n \"display_name\": \"PYME\",\n \"language\": \"python\",\n \"metadata\": {\n  \"debugger\": true\n }\n}";
        assert_eq!(
            String::from_utf8(kernel("PYME").content(Some((3, 11)))).unwrap(),
            expected
        );
        let old = String::from_utf8(kernel("PYME").content(Some((3, 10)))).unwrap();
        assert!(!old.contains("frozen_modules"), "{old}");
    }

    #[test]
    fn non_ascii_is_escaped_as_python_does() {
        let text = String::from_utf8(kernel("Mikroskopie µ 🔬").content(None)).unwrap();
        assert!(
            text.contains(r#""Mikroskopie \u00b5 \ud83d\udd2c""#),
            "{text}"
        );
    }

    #[test]
    fn env_vars_come_last() {
        let mut k = kernel("PYME");
        k.env_vars.insert("OMP_NUM_THREADS".into(), "1".into());
        let text = String::from_utf8(k.content(None)).unwrap();
        assert!(
            text.ends_with(" },\n \"env\": {\n  \"OMP_NUM_THREADS\": \"1\"\n }\n}"),
            "{text}"
        );
    }

    #[test]
    fn versions_come_from_site_packages() {
        assert_eq!(
            python_version(Path::new("/e/lib/python3.11/site-packages")),
            Some((3, 11))
        );
        assert_eq!(python_version(Path::new("/e/lib/site-packages")), None);
    }
}
