//! `provision bundle`: the files a manifest reads, gathered for one signed bundle.
//!
//! What travels: every manifest file (the top one and its includes), the templates and `source:`
//! files beside them, and the `from:` environment files, each under its path relative to the top
//! manifest's folder. What does not, each refused with the reason: a file outside that folder
//! (the bundle could not place it), a CIFS `password_file` (a secret: it never leaves the node
//! it is on; give an absolute path there, or `password_env`), a local conda channel folder (give
//! a channel URL, or an absolute folder on the nodes). Absolute `source:` paths stay what they
//! are: files on the node.

use std::path::{Path, PathBuf};

use crate::manifest::{self, model::ResourceSpec};

/// The top manifest's path in the bundle and every file, in a stable order.
pub type Contents = (String, Vec<(String, Vec<u8>)>);

/// Why no bundle was made.
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error("{0}")]
    Manifest(#[from] manifest::Diagnostics),
    #[error("{0}")]
    Refused(String),
}

/// The manifest at `path` (a file, or a folder holding `cluster.yaml`), checked as `validate`
/// does, and the files it reads.
pub fn gather(path: &Path) -> Result<Contents, MakeError> {
    let top = if path.is_dir() {
        let candidate = path.join("cluster.yaml");
        if !candidate.is_file() {
            return Err(MakeError::Refused(format!(
                "{} has no cluster.yaml\n  hint: give the top manifest file itself",
                path.display()
            )));
        }
        candidate
    } else {
        path.to_owned()
    };
    let m = manifest::parse(&top)?;
    let base = top
        .canonicalize()
        .ok()
        .and_then(|t| t.parent().map(Path::to_owned))
        .ok_or_else(|| {
            MakeError::Refused(format!("{}: cannot resolve its folder", top.display()))
        })?;
    let mut wanted: Vec<(PathBuf, String)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for s in &m.sources {
        wanted.push((s.path.clone(), format!("manifest {}", s.path.display())));
    }
    for r in &m.resources {
        let dir = m.dir_of(&r.origin);
        let at = m.describe(&r.origin);
        match &r.value {
            ResourceSpec::File(f) => {
                if let Some(t) = &f.template
                    && dir.join(t).is_file()
                {
                    wanted.push((dir.join(t), format!("{at}: template {t}")));
                }
                if let Some(src) = &f.source
                    && !Path::new(src).is_absolute()
                {
                    wanted.push((dir.join(src), format!("{at}: source {src}")));
                }
            }
            ResourceSpec::CondaEnv(c) => {
                if let Some(from) = &c.from {
                    wanted.push((dir.join(from), format!("{at}: from {from}")));
                }
                channels(&c.channels, &at, &mut problems);
            }
            ResourceSpec::Mount(mount) => {
                if let Some(file) = mount
                    .credentials
                    .as_ref()
                    .and_then(|c| c.password_file.as_ref())
                    && !Path::new(file).is_absolute()
                {
                    problems.push(format!(
                        "{at}: password_file {file} is a secret and does not travel in a bundle\n  hint: put the file on each node and give its absolute path, or use password_env"
                    ));
                }
            }
            _ => {}
        }
    }
    if let Some(c) = &m.conda {
        channels(&c.value.channels, &m.describe(&c.origin), &mut problems);
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, why) in wanted {
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{why}: {}: {e}", path.display()));
                continue;
            }
        };
        let Some(inside) = real
            .strip_prefix(&base)
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
        else {
            problems.push(format!(
                "{why}: {} is outside the manifest's folder {}, so the bundle cannot carry it\n  hint: move it beside the manifest",
                real.display(),
                base.display()
            ));
            continue;
        };
        if files.iter().any(|(p, _)| *p == inside) {
            continue;
        }
        match std::fs::read(&real) {
            Ok(content) => files.push((inside, content)),
            Err(e) => problems.push(format!("{why}: {}: {e}", real.display())),
        }
    }
    if !problems.is_empty() {
        return Err(MakeError::Refused(problems.join("\n")));
    }
    files.sort();
    let name = top
        .canonicalize()
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "cluster.yaml".into());
    Ok((name, files))
}

fn channels(list: &[String], at: &str, problems: &mut Vec<String>) {
    for ch in list {
        if ch.starts_with("./") || ch.starts_with("../") || ch == "." {
            problems.push(format!(
                "{at}: the local channel folder {ch} does not travel in a bundle\n  hint: serve it as a channel URL, or give an absolute folder that exists on every node"
            ));
        }
    }
}
