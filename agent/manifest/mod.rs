//! The cluster manifest: parse (typed, `deny_unknown_fields`), validate (every error at once, each
//! with file:line:column), then select one node's resources.
//!
//! Guarantee: [`parse`] either returns a manifest that passed every check or the complete list of
//! what is wrong with it. It reads the manifest files and the template/source files they name, and
//! nothing else.

mod conda;
mod diagnostic;
mod limits;
mod load;
mod locate;
pub mod model;
mod select;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics};
pub use locate::{LocationIndex, Position};
pub use select::{NodeSelection, SelectError, applies_to};

use model::{Cluster, CondaSettings, Node, ResourceSpec};

/// One file the manifest was read from.
#[derive(Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The file's folder: `template:` and `source:` paths in this file are relative to it.
    pub dir: PathBuf,
    pub index: LocationIndex,
}

/// Where a value was written: which file, which YAML path.
#[derive(Debug, Clone)]
pub struct Origin {
    pub file: usize,
    pub path: String,
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

/// The whole cluster, merged from the top file and its includes.
#[derive(Debug, Default)]
pub struct Manifest {
    pub sources: Vec<SourceFile>,
    pub cluster: Option<Located<Cluster>>,
    /// The conda installation (`conda:`), if the manifest sets one.
    pub conda: Option<Located<CondaSettings>>,
    pub vars: BTreeMap<String, Located<serde_json::Value>>,
    pub nodes: Vec<Located<Node>>,
    pub resources: Vec<Located<ResourceSpec>>,
}

/// Reads, parses and validates the manifest at `path` and the files it includes.
pub fn parse(path: &Path) -> Result<Manifest, Diagnostics> {
    let mut errors = Vec::new();
    let manifest = load::load(path, &mut errors);
    if errors.is_empty() {
        validate::validate(&manifest, &mut errors);
    }
    if errors.is_empty() {
        Ok(manifest)
    } else {
        Err(Diagnostics(errors))
    }
}

impl Manifest {
    /// An error at `origin` + `sub` (a path below it, `""` for the value itself).
    pub fn diagnostic(
        &self,
        origin: &Origin,
        sub: &str,
        message: String,
        hint: Option<String>,
    ) -> Diagnostic {
        let source = &self.sources[origin.file];
        let yaml_path = if sub.is_empty() {
            origin.path.clone()
        } else if sub.starts_with('[') {
            format!("{}{sub}", origin.path)
        } else {
            locate::join_key(&origin.path, sub)
        };
        // A value left to its default is reported where the nearest written ancestor starts, and
        // named by that ancestor's path: the path always names something the user can find.
        let (written, Position { line, column }) = source.index.resolve(&yaml_path);
        Diagnostic {
            file: source.path.clone(),
            line,
            column,
            yaml_path: written.to_owned(),
            message,
            hint,
        }
    }

    /// `file:line:column` of `origin`, for messages that point at a second place.
    pub fn describe(&self, origin: &Origin) -> String {
        let source = &self.sources[origin.file];
        let Position { line, column } = source.index.locate(&origin.path);
        format!("{}:{line}:{column}", source.path.display())
    }

    /// The folder that relative `template:`/`source:` paths of a resource are resolved against.
    pub fn dir_of(&self, origin: &Origin) -> &Path {
        &self.sources[origin.file].dir
    }

    /// The `conda:` settings, if the manifest sets them.
    pub fn conda_settings(&self) -> Option<&CondaSettings> {
        self.conda.as_ref().map(|c| &c.value)
    }

    /// The cluster's DNS domain, if the manifest sets one.
    pub fn domain(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .and_then(|c| c.value.domain.as_deref())
    }
}

/// A file the manifest reads on the machine running provision: what a tool that runs provision
/// somewhere else (the Ansible collection) must copy there with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadFile {
    /// `manifest` (the top file or an `include:`), `template` (a `template:` that is a file, not
    /// a shipped one), `source` (a file's `source:`), `password_file` (a mount's credentials) or
    /// `conda_from` (a `conda_env`'s environment file).
    pub kind: &'static str,
    /// The path as provision opens it: the folder of the manifest file that names it joined with
    /// what is written there (an absolute path stays as written).
    pub path: PathBuf,
    /// The value as written in the manifest (the top manifest: the path it was given as).
    pub written: String,
}

impl Manifest {
    /// Every file this manifest reads on the machine running provision, each once, in the order
    /// it is met: the manifest's own files (the top one first), then, resource by resource,
    /// templates that are files beside the manifest, `source:` files, `password_file:`s and
    /// `conda_env` `from:` files. Shipped templates are part of the binary and not listed; local
    /// conda channel folders are not listed either.
    pub fn files_read(&self) -> Vec<ReadFile> {
        let mut out: Vec<ReadFile> = self
            .sources
            .iter()
            .map(|s| ReadFile {
                kind: "manifest",
                path: s.path.clone(),
                written: s.path.display().to_string(),
            })
            .collect();
        for r in &self.resources {
            let dir = self.dir_of(&r.origin);
            let mut add = |kind: &'static str, written: &str| {
                let path = dir.join(written);
                if !out.iter().any(|f| f.path == path) {
                    out.push(ReadFile {
                        kind,
                        path,
                        written: written.to_owned(),
                    });
                }
            };
            match &r.value {
                ResourceSpec::File(f) => {
                    if let Some(t) = &f.template
                        && dir.join(t).is_file()
                    {
                        add("template", t);
                    }
                    if let Some(s) = &f.source {
                        add("source", s);
                    }
                }
                ResourceSpec::Mount(m) => {
                    if let Some(p) = m
                        .credentials
                        .as_ref()
                        .and_then(|c| c.password_file.as_ref())
                    {
                        add("password_file", p);
                    }
                }
                ResourceSpec::CondaEnv(c) => {
                    if let Some(from) = &c.from {
                        add("conda_from", from);
                    }
                }
                _ => {}
            }
        }
        out
    }
}
