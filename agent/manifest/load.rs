//! Reading manifest files: the top file and its `include:`s, each parsed into the typed model.
//!
//! Parsing stops at the first error of a file (serde cannot go on past it) but every file is still
//! read, so one run reports the syntax errors of all of them.

use std::path::{Path, PathBuf};

use super::diagnostic::Diagnostic;
use super::limits;
use super::locate::{Key, LocationIndex, Position};
use super::model::{ManifestFile, Node, ResourceSpec};
use super::{Located, Manifest, Origin, SourceFile};

/// Reads `path` and everything it includes. Syntax and type errors go to `errors`.
pub fn load(path: &Path, errors: &mut Vec<Diagnostic>) -> Manifest {
    let mut manifest = Manifest::default();
    let mut stack = Vec::new();
    let mut read = Read::default();
    load_file(path, None, &mut manifest, &mut stack, &mut read, errors);
    if errors.is_empty() {
        super::conda::resolve(&mut manifest, errors);
    }
    manifest
}

/// What the files read so far add up to, against the limits that count across files.
#[derive(Default)]
struct Read {
    bytes: usize,
    /// A limit was reported: no more files are read.
    over: bool,
    /// [`limits::NODES`] and [`limits::RESOURCES`] were reported (once, at the first past them).
    too_many_nodes: bool,
    too_many_resources: bool,
}

fn load_file(
    path: &Path,
    included_from: Option<(usize, String)>,
    manifest: &mut Manifest,
    stack: &mut Vec<PathBuf>,
    read: &mut Read,
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
    if read.over {
        // The limit is reported once, at the first file past it.
        return;
    }
    if manifest.sources.len() >= limits::FILES {
        read.over = true;
        errors.push(include_error(
            manifest,
            format!(
                "cannot read manifest {}: a manifest may read at most {} files (itself, includes and environment files): over the limit",
                path.display(),
                limits::FILES
            ),
            limits::HINT,
        ));
        return;
    }
    let text = match limits::read(path, included_from.is_some()) {
        Ok(text) => text,
        Err(limits::ReadError::Io(e)) => {
            errors.push(include_error(
                manifest,
                format!("cannot read manifest {}: {e}", path.display()),
                "check the path; include: paths are relative to the including file's folder",
            ));
            return;
        }
        Err(e) => {
            errors.push(include_error(
                manifest,
                format!("cannot read manifest {}: {e}", path.display()),
                e.hint(),
            ));
            return;
        }
    };
    read.bytes += text.len();
    if read.bytes > limits::TOTAL_BYTES {
        read.over = true;
        errors.push(include_error(
            manifest,
            format!(
                "cannot read manifest {}: with it, the manifest's files are larger than {} in all: over the limit",
                path.display(),
                limits::bytes(limits::TOTAL_BYTES)
            ),
            limits::HINT,
        ));
        return;
    }
    let index = LocationIndex::build(&text);
    let file = manifest.sources.len();
    let dir = path.parent().map(Path::to_owned).unwrap_or_default();
    manifest.sources.push(SourceFile {
        path: path.to_owned(),
        dir: dir.clone(),
        index,
    });

    if let Some(breach) = breach_error(&manifest.sources[file]) {
        errors.push(breach);
        return;
    }
    let parsed: ManifestFile =
        match serde_saphyr::from_str_with_options(&text, limits::yaml_options()) {
            Ok(parsed) => parsed,
            Err(e) => {
                errors.push(parse_error(&manifest.sources[file], &text, &e));
                return;
            }
        };
    stack.push(canonical);
    let origin = |path: String| Origin { file, path };
    if let Some(conda) = parsed.conda {
        if manifest.conda.is_some() {
            errors.push(manifest.diagnostic(
                &origin("conda".into()),
                "",
                "conda: is set in more than one manifest file".into(),
                Some("keep one conda: section, in the top manifest".into()),
            ));
        } else {
            manifest.conda = Some(Located {
                value: conda,
                origin: origin("conda".into()),
            });
        }
    }
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
        if manifest.nodes.len() >= limits::NODES {
            if std::mem::replace(&mut read.too_many_nodes, true) {
                break;
            }
            errors.push(manifest.diagnostic(
                &origin(format!("nodes[{i}]")),
                "",
                format!(
                    "more than {} nodes in the manifest: over the limit",
                    limits::NODES
                ),
                Some(limits::HINT.into()),
            ));
            break;
        }
        manifest.nodes.push(Located::<Node> {
            value: node,
            origin: origin(format!("nodes[{i}]")),
        });
    }
    for (i, resource) in parsed.resources.into_iter().enumerate() {
        if manifest.resources.len() >= limits::RESOURCES {
            if std::mem::replace(&mut read.too_many_resources, true) {
                break;
            }
            errors.push(manifest.diagnostic(
                &origin(format!("resources[{i}]")),
                "",
                format!(
                    "more than {} resources in the manifest: over the limit",
                    limits::RESOURCES
                ),
                Some(limits::HINT.into()),
            ));
            break;
        }
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
            read,
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

/// What kind of serde error it is, for placing it: some are reported where a mapping key is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// About a key itself (an unknown field, a repeated key): the key's path.
    Key,
    /// About the value after a key (wrong type or value): serde may report it at the key; move it
    /// to the value.
    Value,
    /// A missing field: serde reports it at the last key of the mapping that lacks it; point at
    /// that mapping.
    Mapping,
    /// Anywhere else (syntax errors): as reported.
    AsReported,
}

fn placement(e: &serde_saphyr::Error) -> Placement {
    use serde_saphyr::Error;
    let mut e = e;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = e {
        e = error;
    }
    match e {
        Error::SerdeUnknownField { .. } => Placement::Key,
        Error::SerdeMissingField { .. } => Placement::Mapping,
        Error::SerdeInvalidType { .. }
        | Error::SerdeInvalidValue { .. }
        | Error::SerdeInvalidLength { .. }
        | Error::Message { .. } => Placement::Value,
        other => {
            let text = other.to_string();
            if text.starts_with("duplicate mapping key")
                || text.starts_with("expected end of mapping after enum variant value")
            {
                Placement::Key
            } else {
                Placement::AsReported
            }
        }
    }
}

/// serde-saphyr's wording, minus advice meant for the programmer calling it, and in the words of
/// someone writing a manifest.
fn plain_message(message: String) -> String {
    for tail in [", set DuplicateKeyPolicy", "; use from_str_multiple"] {
        if let Some(cut) = message.find(tail) {
            return message[..cut].to_owned();
        }
    }
    match message.as_str() {
        "invalid u32" => "expected a whole number from 0 to 4294967295".to_owned(),
        "invalid boolean" => "expected true or false".to_owned(),
        "expected sequence start" => "expected a list".to_owned(),
        "expected mapping start" => "expected a mapping (key: value pairs)".to_owned(),
        "expected string scalar" => "expected a single value, not a list or a mapping".to_owned(),
        _ => message,
    }
}

/// The error for text that broke an input limit while it was indexed, if it did.
pub(super) fn breach_error(source: &SourceFile) -> Option<Diagnostic> {
    let (position, yaml_path, message) = source.index.breach()?;
    Some(Diagnostic {
        file: source.path.clone(),
        line: position.line,
        column: position.column,
        yaml_path: shortened(yaml_path),
        message: message.clone(),
        hint: Some(limits::HINT.to_owned()),
    })
}

/// A path of at most 200 bytes: the one of a value past a limit may be megabytes long.
fn shortened(path: &str) -> String {
    const KEEP: usize = 200;
    if path.len() <= KEEP {
        return path.to_owned();
    }
    let mut cut = KEEP;
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &path[..cut])
}

pub(super) fn parse_error(source: &SourceFile, text: &str, e: &serde_saphyr::Error) -> Diagnostic {
    let mut position = e
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
    let limit = limits::breach_message(e);
    let mut message = limit.clone().unwrap_or_else(|| plain_message(message));
    // Two kinds in one resource item (often a field indented too little): name the extra key.
    if message.starts_with("expected end of mapping after enum variant value")
        && let Some(key) = source.index.key_at(position)
    {
        message = format!(
            "a resource item holds exactly one kind (file:, user:, ...), but `{}` is a second key in it",
            key.name
        );
    }
    // A second document is reported where its content starts; point at its `---`.
    if message.starts_with("multiple YAML documents")
        && let Some(line) = text
            .lines()
            .take(position.line)
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.starts_with("---"))
    {
        position = Position {
            line: line + 1,
            column: 1,
        };
    }
    // The scanner reports a tab at the start of the scalar it was reading; the tab itself is what
    // the user has to find.
    if message.contains("found a tab")
        && let Some(tab) = next_tab(text, position)
    {
        position = tab;
    }
    let index = &source.index;
    let yaml_path = match placement(e) {
        Placement::Key => index
            .key_at(position)
            .map(Key::path)
            .or_else(|| index.path_at(position)),
        Placement::Value => match index.key_at(position).map(Key::path) {
            Some(key) if index.value_of(&key).is_some_and(|v| v != position) => {
                position = index.value_of(&key).unwrap_or(position);
                Some(key)
            }
            _ => index.path_at(position),
        },
        Placement::Mapping => match index.key_at(position) {
            Some(key) => {
                position = index.value_of(&key.mapping).unwrap_or(position);
                Some(key.mapping.clone())
            }
            None => index.path_at(position),
        },
        Placement::AsReported => index.path_at(position),
    };
    let hint = if limit.is_some() {
        limits::HINT
    } else if message.starts_with("expected a mapping")
        && yaml_path.as_deref().unwrap_or("").is_empty()
    {
        "a manifest is a mapping: nodes:, resources:, and if needed cluster:, conda:, vars:, include:"
    } else {
        parse_hint(&message)
    };
    Diagnostic {
        file: source.path.clone(),
        line: position.line,
        column: position.column,
        yaml_path: yaml_path.unwrap_or_default(),
        message,
        hint: Some(hint.to_owned()),
    }
}

/// The first tab at or after `from`, or anywhere on the lines after it.
fn next_tab(text: &str, from: Position) -> Option<Position> {
    text.lines()
        .enumerate()
        .skip(from.line.saturating_sub(1))
        .find_map(|(i, line)| {
            let skip = if i + 1 == from.line {
                from.column.saturating_sub(1)
            } else {
                0
            };
            line.chars()
                .enumerate()
                .skip(skip)
                .find(|(_, c)| *c == '\t')
                .map(|(col, _)| Position {
                    line: i + 1,
                    column: col + 1,
                })
        })
}

/// What to do about the commonest parse errors. Every parse error gets one.
fn parse_hint(message: &str) -> &'static str {
    let has = |s: &str| message.contains(s);
    if has("unknown field `password`") {
        "never write a password in the manifest: use password_file: (a file only root can read) or password_env: (the name of a variable that holds it)"
    } else if has("unknown field") {
        "remove the field or fix its spelling; `provision schema` lists every field"
    } else if has("unknown variant") && has("directory, file") {
        "resource kinds are directory, file, hosts, user, group, mount, gpu, venv, jupyter_kernel and service; `provision schema` lists them all"
    } else if has("unknown variant") {
        "use one of the values listed"
    } else if has("missing field") {
        "add the field; docs/manifest.md describes each kind"
    } else if has("mode") {
        "write modes quoted: mode: \"0644\""
    } else if has("duplicate mapping key") {
        "write each key once in a mapping; remove or merge the repeated one"
    } else if has("multiple YAML documents") {
        "a manifest is one YAML document: remove the `---` line, or move the rest to a file named in include:"
    } else if has("found a tab") {
        "indent with spaces: YAML does not allow tabs in indentation"
    } else if has("a second key in it") {
        "indent it under the resource's kind if it belongs there, or start a new `- ` item"
    } else if has("quoted scalar") || has("unexpected end of") || has("illegal placement") {
        "check that every quote and bracket opened before this point is closed"
    } else if has("while parsing") || has("while scanning") || has("indentation") {
        "check the indentation: the keys of one mapping, and the `-` items of one list, must line up"
    } else if has("whole number") {
        "write a whole number, not negative, without quotes"
    } else if has("true or false") {
        "write true or false"
    } else if has("single value") || has("string") {
        "write a single value here, quoted if it contains special characters"
    } else if has("sequence") || has("a list") {
        "write a list: [a, b], or one `- item` per line"
    } else if has("mapping") || has("struct") || has("map") {
        "write key: value pairs here"
    } else {
        "fix the value at this position; `provision schema` describes every field"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> Diagnostic {
        let source = SourceFile {
            path: "m.yaml".into(),
            dir: ".".into(),
            index: LocationIndex::build(text),
        };
        let e = serde_saphyr::from_str::<ManifestFile>(text).expect_err("must not parse");
        parse_error(&source, text, &e)
    }

    fn at(d: &Diagnostic) -> (usize, usize, &str) {
        (d.line, d.column, d.yaml_path.as_str())
    }

    #[test]
    fn an_unknown_field_is_named_by_its_own_path() {
        let d = error_of("nodes:\n  - colour: red\n    name: a\n    address: 10.0.0.1\n");
        assert_eq!(at(&d), (2, 5, "nodes[0].colour"));
        assert!(d.hint.is_some());
    }

    #[test]
    fn a_refused_value_is_reported_at_the_value_not_its_key() {
        let text = "resources:\n  - file:\n      path: /x\n      mode: 0644\n";
        let d = error_of(text);
        assert_eq!(at(&d), (4, 13, "resources[0].file.mode"), "{d}");
        assert!(d.message.contains("quoted octal string"), "{d}");
    }

    #[test]
    fn a_missing_field_is_reported_at_the_mapping_that_lacks_it() {
        let d = error_of(
            "nodes:\n  - name: a\n    address: 10.0.0.1\n  - name: b\n    vars:\n      x: 1\n    roles: [w]\n",
        );
        assert_eq!(at(&d), (4, 5, "nodes[1]"), "{d}");
        assert!(d.message.contains("missing field `address`"), "{d}");
    }

    #[test]
    fn a_tab_is_reported_where_it_is() {
        let d = error_of("nodes:\n  - name: a\n\taddress: 10.0.0.1\n");
        assert_eq!((d.line, d.column), (3, 1), "{d}");
        assert!(d.hint.as_deref().unwrap_or("").contains("spaces"));
    }

    #[test]
    fn a_repeated_key_is_reported_at_the_repetition() {
        let d = error_of("nodes:\n  - name: a\n    name: b\n    address: 10.0.0.1\n");
        assert_eq!(at(&d), (3, 5, "nodes[0].name"), "{d}");
    }
}
