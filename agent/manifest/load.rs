//! Reading manifest files: the top file and its `include:`s, each parsed into the typed model.
//!
//! Parsing stops at the first error of a file (serde cannot go on past it) but every file is still
//! read, so one run reports the syntax errors of all of them.

use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::locate::{LocationIndex, Position};
use super::model::{ManifestFile, Node, ResourceSpec};
use super::{Located, Manifest, Origin, SourceFile};

/// Reads `path` and everything it includes. Syntax and type errors go to `errors`.
pub fn load(path: &Path, errors: &mut Vec<Diagnostic>) -> Manifest {
    let mut manifest = Manifest::default();
    let mut stack = Vec::new();
    load_file(path, None, &mut manifest, &mut stack, errors);
    manifest
}

fn load_file(
    path: &Path,
    included_from: Option<(usize, String)>,
    manifest: &mut Manifest,
    stack: &mut Vec<PathBuf>,
    errors: &mut Vec<Diagnostic>,
) {
    let include_error = |manifest: &Manifest, message: String, hint: &str| match &included_from {
        Some((file, yaml_path)) => manifest.diagnostic(
            &Origin {
                file: *file,
                path: yaml_path.clone(),
            },
            "",
            message,
            Some(hint.to_owned()),
        ),
        None => Diagnostic {
            file: path.to_owned(),
            line: 1,
            column: 1,
            yaml_path: String::new(),
            message,
            hint: Some(hint.to_owned()),
        },
    };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    if stack.contains(&canonical) {
        errors.push(include_error(
            manifest,
            format!(
                "{} includes itself (through {})",
                path.display(),
                chain(stack)
            ),
            "remove one of the include: entries that form the loop",
        ));
        return;
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            errors.push(include_error(
                manifest,
                format!("cannot read manifest {}: {e}", path.display()),
                "check the path; include: paths are relative to the including file's folder",
            ));
            return;
        }
    };
    let index = LocationIndex::build(&text);
    let file = manifest.sources.len();
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    manifest.sources.push(SourceFile {
        path: path.to_owned(),
        dir: dir.clone(),
        index,
    });

    let parsed: ManifestFile = match serde_saphyr::from_str(&text) {
        Ok(parsed) => parsed,
        Err(e) => {
            errors.push(parse_error(&manifest.sources[file], &e));
            return;
        }
    };
    stack.push(canonical);
    let origin = |path: String| Origin { file, path };
    if let Some(cluster) = parsed.cluster {
        if manifest.cluster.is_some() {
            errors.push(manifest.diagnostic(
                &origin("cluster".into()),
                "",
                "cluster: is set in more than one manifest file".into(),
                Some("keep one cluster: section, in the top manifest".into()),
            ));
        } else {
            manifest.cluster = Some(Located {
                value: cluster,
                origin: origin("cluster".into()),
            });
        }
    }
    for (key, value) in parsed.vars {
        let here = origin(format!("vars.{key}"));
        if let Some(previous) = manifest.vars.get(&key) {
            let first = manifest.describe(&previous.origin);
            errors.push(manifest.diagnostic(
                &here,
                "",
                format!("variable `{key}` is already defined at {first}"),
                Some(
                    "define each cluster variable once; use node vars to override per node".into(),
                ),
            ));
            continue;
        }
        manifest.vars.insert(
            key,
            Located {
                value,
                origin: here,
            },
        );
    }
    for (i, node) in parsed.nodes.into_iter().enumerate() {
        manifest.nodes.push(Located::<Node> {
            value: node,
            origin: origin(format!("nodes[{i}]")),
        });
    }
    for (i, resource) in parsed.resources.into_iter().enumerate() {
        manifest.resources.push(Located::<ResourceSpec> {
            value: resource,
            origin: origin(format!("resources[{i}]")),
        });
    }
    for (i, include) in parsed.include.iter().enumerate() {
        let target = dir.join(include);
        load_file(
            &target,
            Some((file, format!("include[{i}]"))),
            manifest,
            stack,
            errors,
        );
    }
    stack.pop();
}

fn chain(stack: &[PathBuf]) -> String {
    stack
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" → ")
}

fn parse_error(source: &SourceFile, e: &serde_saphyr::Error) -> Diagnostic {
    let position = e
        .location()
        .map(|l| Position {
            line: l.line() as usize,
            column: l.column() as usize,
        })
        .unwrap_or(Position { line: 1, column: 1 });
    let rendered = e
        .without_snippet()
        .render_with_options(serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        });
    // The plain rendering ends with its own " at line L column C"; the diagnostic says that already.
    let message = match rendered.rfind(" at line ") {
        Some(cut) => rendered[..cut].to_owned(),
        None => rendered,
    };
    let hint = parse_hint(&message);
    Diagnostic {
        file: source.path.clone(),
        line: position.line,
        column: position.column,
        yaml_path: source.index.path_at(position).unwrap_or_default(),
        message,
        hint,
    }
}

/// What to do about the commonest serde errors.
fn parse_hint(message: &str) -> Option<String> {
    let hint = if message.contains("unknown field") {
        "remove the field or fix its spelling; `provision schema` lists every field"
    } else if message.contains("unknown variant") {
        "resource kinds are directory, file, hosts, user and group; `provision schema` lists them all"
    } else if message.contains("missing field") {
        "add the field; docs/manifest.md describes each kind"
    } else if message.contains("mode") {
        "write modes quoted: mode: \"0644\""
    } else {
        return None;
    };
    Some(hint.to_owned())
}
