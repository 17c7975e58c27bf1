//! The conda part of loading: `conda_env` entries that leave out their root, channels or package
//! cache take the `conda:` settings' values, and a `from: environment.yml` (conda's own format) is
//! read into the entry's name, channels, specs and pip requirements.
//!
//! This runs at load, before validation, because a named environment's prefix (its resource id,
//! which `after:` and duplicate checks use) depends on the root. Errors in an environment file
//! point at that file's line and column: it joins the manifest's source files.

use std::path::Path;

use serde::Deserialize;

use super::diagnostic::Diagnostic;
use super::limits;
use super::locate::LocationIndex;
use super::model::{CondaEnvSpec, CondaSettings, PipGroup, ResourceSpec};
use super::{Manifest, Origin, SourceFile};

/// `environment.yml` as `conda env create -f` reads it (`conda/env/env.py`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentFile {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    /// MatchSpecs, and at most one `{pip: [...]}`; checked one by one for their positions.
    dependencies: Vec<serde_json::Value>,
}

/// What an environment file adds to a `conda_env`.
#[derive(Debug, Default)]
struct FromFile {
    name: Option<String>,
    prefix: Option<String>,
    channels: Vec<String>,
    specs: Vec<String>,
    pip: Option<PipGroup>,
}

pub fn resolve(m: &mut Manifest, errors: &mut Vec<Diagnostic>) {
    let settings: Option<CondaSettings> = m.conda.as_ref().map(|c| c.value.clone());
    for i in 0..m.resources.len() {
        let ResourceSpec::CondaEnv(spec) = &m.resources[i].value else {
            continue;
        };
        let mut spec: CondaEnvSpec = spec.clone();
        let origin = m.resources[i].origin.clone();
        if let Some(from) = spec.from.clone()
            && let Some(file) = read_environment(m, &origin, &from, errors)
        {
            if spec.prefix.is_none() && spec.name.is_none() {
                spec.prefix = file.prefix;
                spec.name = file.name;
            }
            // The file's channels and specs first, then the manifest's additions.
            let channels = std::mem::take(&mut spec.channels);
            spec.channels = file.channels;
            spec.channels.extend(channels);
            let specs = std::mem::take(&mut spec.specs);
            spec.specs = file.specs;
            spec.specs.extend(specs);
            if let Some(group) = file.pip {
                spec.pip.insert(0, group);
            }
        }
        if let Some(settings) = &settings {
            if spec.root.is_none() {
                spec.root = Some(settings.root.clone());
            }
            if spec.channels.is_empty() {
                spec.channels = settings.channels.clone();
            }
            if spec.pkgs_dir.is_none() {
                spec.pkgs_dir = settings.pkgs_dirs.first().cloned();
            }
        }
        m.resources[i].value = ResourceSpec::CondaEnv(spec);
    }
}

/// Reads and checks the environment file `from` names; `None` after reporting what is wrong.
fn read_environment(
    m: &mut Manifest,
    origin: &Origin,
    from: &str,
    errors: &mut Vec<Diagnostic>,
) -> Option<FromFile> {
    let path = m.dir_of(origin).join(from);
    let read = if m.sources.len() >= limits::FILES {
        Err((
            format!(
                "a manifest may read at most {} files (itself, includes and environment files): over the limit",
                limits::FILES
            ),
            limits::HINT,
        ))
    } else {
        limits::read(&path, true).map_err(|e| {
            let hint = match e {
                limits::ReadError::Io(_) => "from: is relative to this manifest file's folder",
                _ => e.hint(),
            };
            (e.to_string(), hint)
        })
    };
    let text = match read {
        Ok(text) => text,
        Err((e, hint)) => {
            errors.push(m.diagnostic(
                origin,
                "conda_env.from",
                format!("cannot read environment file {}: {e}", path.display()),
                Some(hint.into()),
            ));
            return None;
        }
    };
    let file = m.sources.len();
    m.sources.push(SourceFile {
        path: path.clone(),
        dir: path.parent().map(Into::into).unwrap_or_default(),
        index: LocationIndex::build(&text),
    });
    if let Some(breach) = super::load::breach_error(&m.sources[file]) {
        errors.push(breach);
        return None;
    }
    let parsed: EnvironmentFile = match serde_saphyr::from_str_with_options(
        &text,
        limits::yaml_options(),
    ) {
        Ok(parsed) => parsed,
        Err(e) => {
            let mut d = super::load::parse_error(&m.sources[file], &text, &e);
            if d.message.contains("unknown field") {
                d.hint = Some(
                    "provision reads name, prefix, channels and dependencies (with a nested pip: list) of an environment file".into(),
                );
            }
            errors.push(d);
            return None;
        }
    };
    let at = |path: String| Origin { file, path };
    let before = errors.len();
    let mut out = FromFile {
        name: parsed.name,
        prefix: parsed.prefix,
        // `nodefaults` tells conda not to add the .condarc channels; provision never adds them
        // to a list that names channels, so it has nothing to do.
        channels: parsed
            .channels
            .into_iter()
            .filter(|c| c != "nodefaults")
            .map(|c| relative_to_manifest(&c, from))
            .collect(),
        ..FromFile::default()
    };
    for (j, channel) in out.channels.iter().enumerate() {
        if let Err(e) = crate::resources::conda::channel_problem(channel) {
            errors.push(
                m.diagnostic(
                    &at(format!("channels[{j}]")),
                    "",
                    e,
                    Some(
                        "write a channel name (conda-forge), a URL, or a folder of a local channel"
                            .into(),
                    ),
                ),
            );
        }
    }
    for (j, dep) in parsed.dependencies.iter().enumerate() {
        let here = at(format!("dependencies[{j}]"));
        match dep {
            serde_json::Value::String(text) => match crate::resources::conda::parse_spec(text) {
                Ok(_) => out.specs.push(text.clone()),
                Err(e) => errors.push(m.diagnostic(
                    &here,
                    "",
                    e,
                    Some("write a MatchSpec such as numpy >=1.26, python=3.11 or conda-forge::dask".into()),
                )),
            },
            serde_json::Value::Object(map)
                if map.len() == 1 && map.get("pip").is_some_and(|p| p.is_array()) =>
            {
                let lines = map["pip"].as_array().map(Vec::as_slice).unwrap_or_default();
                let group = out.pip.get_or_insert_with(empty_group);
                for (k, line) in lines.iter().enumerate() {
                    let here = at(format!("dependencies[{j}].pip[{k}]"));
                    let problem = match line.as_str() {
                        Some(line) => pip_line(group, line.trim()).err(),
                        None => Some("expected a pip requirement (text)".to_owned()),
                    };
                    if let Some(problem) = problem {
                        errors.push(m.diagnostic(
                            &here,
                            "",
                            problem,
                            Some("write a requirement such as dask[distributed]>=2024.8, or one of the pip options --index-url, --extra-index-url, --find-links, --no-index, --no-deps, --no-build-isolation".into()),
                        ));
                    }
                }
            }
            _ => errors.push(m.diagnostic(
                &here,
                "",
                "expected a MatchSpec or a `pip:` list".into(),
                Some("write `- numpy >=1.26`, or `- pip: [requirement, ...]`".into()),
            )),
        }
    }
    (errors.len() == before).then_some(out)
}

/// A channel folder the environment file names relative to its own folder, made relative to
/// the manifest's folder (where `conda_env` channels are resolved); anything else as written.
fn relative_to_manifest(channel: &str, from: &str) -> String {
    let relative = channel.starts_with("./") || channel.starts_with("../") || channel == ".";
    let Some(dir) = Path::new(from).parent().filter(|_| relative) else {
        return channel.to_owned();
    };
    // Lexically, so `envs/../channel` is `channel` (the folder need not exist yet to say so).
    let mut parts: Vec<&str> = Vec::new();
    let joined = dir.join(channel);
    for part in joined.to_str().unwrap_or(channel).split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("./{}", parts.join("/"))
}

fn empty_group() -> PipGroup {
    PipGroup {
        packages: Vec::new(),
        no_deps: false,
        no_build_isolation: false,
        index_url: None,
        extra_index_urls: Vec::new(),
        find_links: Vec::new(),
        no_index: false,
    }
}

/// One line of an environment file's `pip:` list: a requirement, or one of the pip options a
/// requirements file may hold that provision carries over.
fn pip_line(group: &mut PipGroup, line: &str) -> Result<(), String> {
    if !line.starts_with('-') {
        crate::resources::pip::Wanted::parse(line)?;
        group.packages.push(line.to_owned());
        return Ok(());
    }
    let (option, value) = match line.split_once(|c: char| c == '=' || c.is_whitespace()) {
        Some((o, v)) => (o, Some(v.trim().to_owned())),
        None => (line, None),
    };
    let need = |v: Option<String>| {
        v.filter(|v| !v.is_empty())
            .ok_or(format!("{option} needs a value"))
    };
    match option {
        "--no-deps" => group.no_deps = true,
        "--no-build-isolation" => group.no_build_isolation = true,
        "--no-index" => group.no_index = true,
        "--index-url" | "-i" => group.index_url = Some(need(value)?),
        "--extra-index-url" => group.extra_index_urls.push(need(value)?),
        "--find-links" | "-f" => group.find_links.push(need(value)?),
        _ => {
            return Err(format!(
                "pip option `{option}` is not one provision carries over from an environment file"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_lines_become_a_group() {
        let mut g = empty_group();
        pip_line(&mut g, "dask[distributed]>=2024.8").unwrap();
        pip_line(&mut g, "--index-url https://example.org/simple").unwrap();
        pip_line(&mut g, "--find-links=/srv/wheels").unwrap();
        pip_line(&mut g, "--no-deps").unwrap();
        assert_eq!(g.packages, ["dask[distributed]>=2024.8"]);
        assert_eq!(g.index_url.as_deref(), Some("https://example.org/simple"));
        assert_eq!(g.find_links, ["/srv/wheels"]);
        assert!(g.no_deps);
        assert!(pip_line(&mut g, "-r requirements.txt").is_err());
        assert!(pip_line(&mut g, "--index-url").is_err());
        assert!(pip_line(&mut g, "numpy >=>1").is_err());
    }

    #[test]
    fn channel_folders_of_an_environment_file_are_relative_to_it() {
        assert_eq!(
            relative_to_manifest("../channel", "envs/a.yml"),
            "./channel"
        );
        assert_eq!(
            relative_to_manifest("./local", "envs/a.yml"),
            "./envs/local"
        );
        assert_eq!(relative_to_manifest("../../up", "envs/a.yml"), "./../up");
        assert_eq!(
            relative_to_manifest("conda-forge", "envs/a.yml"),
            "conda-forge"
        );
        assert_eq!(
            relative_to_manifest("/srv/channel", "a.yml"),
            "/srv/channel"
        );
    }
}
