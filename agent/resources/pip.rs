//! pip packages of an environment: requirements parsed as PEP 508, what is installed read from the
//! `*.dist-info` folders of site-packages (no subprocess, so an environment in sync costs a
//! directory listing), and `pip install` run by the environment's own python with a time limit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{PackageName, Requirement, VersionOrUrl};

use crate::engine::Change;
use crate::host::{Error, Result};
use crate::manifest::model::PipGroup;

/// How long one `pip install` may take (a PYME build from source takes minutes on two cores).
pub const PIP_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How much of pip's output a failure carries.
const OUTPUT_TAIL_LINES: usize = 30;

/// A requirement as the manifest wrote it, parsed.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub text: String,
    pub requirement: Requirement,
}

impl Wanted {
    /// Parses one requirement; only names with extras and version specifiers are accepted (no
    /// URLs, paths or markers: a node either needs a package or it does not, and `roles`/`nodes`
    /// say which nodes).
    pub fn parse(text: &str) -> Result<Wanted, String> {
        // pep508_rs 0.9.2 panics, where it should refuse, on a package or extra name that ends in
        // `-`, `.` or `_` before what follows (`numpy->=1`, `dask[distributed.]`): found by the
        // pip_requirement fuzz target. Such names are refused here first, and a panic the
        // fuzzer has not found yet becomes an error too, not a crash of the agent.
        //
        // It also panicked, slicing inside a character, on a marker with a character that is not
        // ASCII after it (`numpy; python_version < '3.9'\u{fffd} https://x`, found by the CI's fuzz
        // smoke, in fuzz/regressions/pip_requirement/). Names, extras, versions and specifiers are
        // ASCII, and URLs and markers are refused anyway: the parser sees none of those.
        if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
            return Err(format!(
                "`{text}` is not a pip requirement: `{c}` is not ASCII (package names, extras and versions are)"
            ));
        }
        if text.contains('@') || text.contains("://") {
            return Err(url_refused(text));
        }
        if text.contains(';') {
            return Err(marker_refused(text));
        }
        if let Some(name) = bad_name(text) {
            return Err(format!(
                "`{text}` is not a pip requirement: the name `{name}` must start and end with a letter or digit"
            ));
        }
        let parsed = std::panic::catch_unwind(|| Requirement::from_str(text))
            .map_err(|_| format!("`{text}` is not a pip requirement: {PARSER_PANICKED}"))?;
        let requirement = parsed.map_err(|e| {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_owned();
            format!("`{text}` is not a pip requirement: {first}")
        })?;
        if matches!(requirement.version_or_url, Some(VersionOrUrl::Url(_))) {
            return Err(url_refused(text));
        }
        if !requirement.marker.is_true() {
            return Err(marker_refused(text));
        }
        Ok(Wanted {
            text: text.to_owned(),
            requirement,
        })
    }

    pub fn name(&self) -> &PackageName {
        &self.requirement.name
    }

    /// Whether `installed` (a version string) satisfies the specifiers.
    pub fn satisfied_by(&self, installed: &str) -> bool {
        let Ok(version) = Version::from_str(installed) else {
            return false;
        };
        match &self.requirement.version_or_url {
            Some(VersionOrUrl::VersionSpecifier(spec)) => spec.contains(&version),
            _ => true,
        }
    }
}

/// The end of the error for a requirement that made the PEP 508 parser panic: the fuzz property
/// (agent/fuzzing.rs) fails on it, so a panic the guards above miss is a finding.
pub(crate) const PARSER_PANICKED: &str = "the PEP 508 parser panicked on it";

fn url_refused(text: &str) -> String {
    format!("`{text}` names a URL or file; provision installs packages by name and version")
}

fn marker_refused(text: &str) -> String {
    format!("`{text}` has an environment marker; provision does not evaluate markers")
}

/// The package name, or one of the extras in `[...]` after it, that does not start and end with a
/// letter or digit (PEP 508's rule for names), if there is one.
fn bad_name(text: &str) -> Option<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let odd = |n: &str| n.starts_with(['-', '.', '_']) || n.ends_with(['-', '.', '_']);
    let rest = text.trim_start();
    let name = &rest[..rest.find(|c: char| !is_name(c)).unwrap_or(rest.len())];
    if odd(name) {
        return Some(name);
    }
    let after = rest[name.len()..].trim_start();
    let extras = after.strip_prefix('[')?;
    let extras = &extras[..extras.find(']').unwrap_or(extras.len())];
    extras
        .split(',')
        .map(str::trim)
        .find(|e| odd(e) || !e.chars().all(is_name))
}

/// One `pip install` of the manifest: its requirements and options.
#[derive(Debug, Clone)]
pub struct Group {
    pub wanted: Vec<Wanted>,
    pub options: PipGroup,
}

/// The distributions installed in an environment: normalized name → version.
pub type Installed = BTreeMap<PackageName, String>;

/// The site-packages folders of an environment (`lib/python3.X/site-packages`).
pub fn site_packages(prefix: &Path) -> Result<Vec<PathBuf>> {
    let lib = prefix.join("lib");
    let entries = match std::fs::read_dir(&lib) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &lib)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("list", &lib))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("python") {
            let site = entry.path().join("site-packages");
            if site.is_dir() {
                out.push(site);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What is installed, from the names of `*.dist-info` folders (`name-version.dist-info`, as the
/// wheel spec writes them) and, for older `*.egg-info` installs, their `PKG-INFO` headers.
pub fn installed(prefix: &Path) -> Result<Installed> {
    let mut out = Installed::new();
    for site in site_packages(prefix)? {
        let entries = std::fs::read_dir(&site).map_err(Error::io("list", &site))?;
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &site))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            let found = if let Some(stem) = file_name.strip_suffix(".dist-info") {
                match stem.rsplit_once('-') {
                    Some((name, version)) => Some((name.to_owned(), version.to_owned())),
                    None => metadata(&entry.path().join("METADATA")),
                }
            } else if file_name.ends_with(".egg-info") {
                let path = entry.path();
                let pkg_info = if path.is_dir() {
                    path.join("PKG-INFO")
                } else {
                    path
                };
                metadata(&pkg_info)
            } else {
                None
            };
            if let Some((name, version)) = found
                && let Ok(name) = PackageName::from_str(&name)
            {
                out.insert(name, version);
            }
        }
    }
    Ok(out)
}

/// `Name:` and `Version:` from a core-metadata file's header.
fn metadata(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut name = None;
    let mut version = None;
    for line in text.lines().take_while(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        }
    }
    Some((name?, version?))
}

/// Pure: one change per requirement that `installed` does not satisfy.
pub fn diff(groups: &[Group], installed: &Installed) -> Vec<Change> {
    groups
        .iter()
        .flat_map(|g| &g.wanted)
        .filter_map(|w| {
            let have = installed.get(w.name());
            if have.is_some_and(|v| w.satisfied_by(v)) {
                return None;
            }
            Some(Change::Package {
                manager: "pip".into(),
                name: w.name().to_string(),
                from: have.cloned(),
                to: Some(w.text.clone()),
            })
        })
        .collect()
}

/// The arguments after `python -m` for installing `wanted` with `options`. `node_path` turns an
/// absolute `find_links` folder into its real path under the root.
pub fn install_args(
    options: &PipGroup,
    wanted: &[&Wanted],
    node_path: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<Vec<String>> {
    let mut args: Vec<String> = [
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--no-warn-script-location",
    ]
    .map(str::to_owned)
    .to_vec();
    if options.no_deps {
        args.push("--no-deps".into());
    }
    if options.no_build_isolation {
        args.push("--no-build-isolation".into());
    }
    if options.no_index {
        args.push("--no-index".into());
    }
    if let Some(url) = &options.index_url {
        args.extend(["--index-url".into(), url.clone()]);
    }
    for url in &options.extra_index_urls {
        args.extend(["--extra-index-url".into(), url.clone()]);
    }
    for link in &options.find_links {
        let link = if link.starts_with('/') {
            node_path(link)?.to_string_lossy().into_owned()
        } else {
            link.clone()
        };
        args.extend(["--find-links".into(), link]);
    }
    args.extend(wanted.iter().map(|w| w.text.clone()));
    Ok(args)
}

/// Runs `python -m pip install ...` (`args` from [`install_args`]) for the requirements `what`;
/// a failure carries the end of pip's output.
pub fn install(python: &Path, args: &[String], what: &str, env_path: &str) -> Result<()> {
    let python_s = python.to_string_lossy();
    let mut full = vec!["-m"];
    full.extend(args.iter().map(String::as_str));
    // As in an activated environment: builds that look for `python` on PATH (meson-python, which
    // PYME's sdist uses) find the environment's own interpreter, not the system's or none.
    let bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let prefix = bin.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = match std::env::var_os("PATH") {
        Some(old) => {
            let mut dirs = vec![bin.clone()];
            dirs.extend(std::env::split_paths(&old));
            std::env::join_paths(dirs).unwrap_or(old)
        }
        None => bin.clone().into_os_string(),
    };
    let path = path.to_string_lossy().into_owned();
    let prefix = prefix.to_string_lossy().into_owned();
    let env = [
        ("PIP_NO_INPUT", "1"),
        ("PATH", path.as_str()),
        ("VIRTUAL_ENV", prefix.as_str()),
    ];
    let progress = format!("pip install ({what}) in {env_path}");
    let (code, output) = super::progress::with_progress(&progress, None, || {
        crate::host::mounts::run_output(&python_s, &full, &env, PIP_TIMEOUT)
    })
    .map_err(|e| Error::Other(format!("pip install in {env_path} failed: {e}")))?;
    if code == Some(0) {
        return Ok(());
    }
    let status = code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
    Err(Error::Other(format!(
        "pip install ({what}) in {env_path} failed ({status}); the end of pip's output:\n{}",
        tail(&output, OUTPUT_TAIL_LINES)
    )))
}

/// Installs, group after group, the requirements of `groups` that the environment at `real`
/// (`env_path` on the node) does not satisfy, with its own `bin/python`: the one pip step of
/// `venv` and `conda_env`.
pub fn install_groups(
    host: &crate::host::Host,
    real: &Path,
    env_path: &str,
    groups: &[Group],
) -> Result<()> {
    let mut have = installed(real)?;
    let python = real.join("bin/python");
    for group in groups {
        let missing: Vec<&Wanted> = group
            .wanted
            .iter()
            .filter(|w| !have.get(w.name()).is_some_and(|v| w.satisfied_by(v)))
            .collect();
        if missing.is_empty() {
            continue;
        }
        if !python.exists() {
            return Err(Error::Other(format!(
                "{env_path} has pip requirements but no bin/python to install them with: add python and pip to its packages"
            )));
        }
        let args = install_args(&group.options, &missing, &|p| host.resolve(p))?;
        let what: Vec<&str> = missing.iter().map(|w| w.text.as_str()).collect();
        install(&python, &args, &what.join(" "), env_path)?;
        have = installed(real)?;
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_ending_in_a_separator_is_refused_not_a_panic() {
        // pep508_rs panicked on these (fuzz/regressions/pip_requirement/).
        for text in [
            "uumpy->=1.27,<2",
            "numpy.>=1",
            "a_ ==1",
            "dask-[distributed]",
            "dask[distribu57. ]>=2024.1",
            "dask[x,_y]",
        ] {
            let e = Wanted::parse(text).unwrap_err();
            assert!(
                e.contains("must start and end with a letter or digit"),
                "{text}: {e}"
            );
        }
        assert!(Wanted::parse("numpy-quaternion>=2023.0").is_ok());
        assert!(Wanted::parse("dask[distributed, diagnostics]>=2024.1").is_ok());
    }

    #[test]
    fn requirements_parse_and_match_versions() {
        let w = Wanted::parse("NumPy>=1.26,<2").unwrap();
        assert_eq!(w.name().to_string(), "numpy");
        assert!(w.satisfied_by("1.26.4"));
        assert!(!w.satisfied_by("2.0.0"));
        assert!(!w.satisfied_by("1.25"));
        let w = Wanted::parse("dask[distributed]==2024.8.*").unwrap();
        assert!(w.satisfied_by("2024.8.2"));
        assert!(!w.satisfied_by("2024.9.0"));
        assert!(Wanted::parse("toolz").unwrap().satisfied_by("0.12.1"));
        assert!(
            Wanted::parse("Python_Microscopy")
                .unwrap()
                .name()
                .to_string()
                == "python-microscopy"
        );
    }

    #[test]
    fn urls_markers_and_garbage_are_refused() {
        for bad in [
            "pkg @ https://example.org/pkg.whl",
            "numpy; python_version < '3.9'",
            "numpy >>= 1",
            "",
        ] {
            assert!(Wanted::parse(bad).is_err(), "{bad}");
        }
        let e = Wanted::parse("pkg @ https://example.org/pkg.whl").unwrap_err();
        assert!(e.contains("names a URL or file"), "{e}");
        let e = Wanted::parse("numpy; python_version < '3.9'").unwrap_err();
        assert!(e.contains("environment marker"), "{e}");
    }

    #[test]
    fn a_character_that_is_not_ascii_is_refused_not_a_panic() {
        // pep508_rs sliced inside the character after the marker and panicked
        // (fuzz/regressions/pip_requirement/crash-aee734dc...).
        for text in [
            "numpy; python_version < '3.9'\u{fffd} https://x",
            "git+h/github.com/pythopython\u{fffd}\u{fffd}kg",
            "nümpy>=1",
            "numpy>=1.0\u{00a0}",
        ] {
            let e = Wanted::parse(text).unwrap_err();
            assert!(e.contains("is not ASCII"), "{text}: {e}");
        }
    }

    #[test]
    fn only_unsatisfied_requirements_differ() {
        let group = Group {
            wanted: ["toolz>=0.12", "six", "numpy==2.*"]
                .iter()
                .map(|t| Wanted::parse(t).unwrap())
                .collect(),
            options: PipGroup {
                packages: Vec::new(),
                no_deps: false,
                no_build_isolation: false,
                index_url: None,
                extra_index_urls: Vec::new(),
                find_links: Vec::new(),
                no_index: false,
            },
        };
        let installed: Installed = [("toolz", "0.12.1"), ("numpy", "1.26.4")]
            .iter()
            .map(|(n, v)| (PackageName::from_str(n).unwrap(), (*v).to_owned()))
            .collect();
        let texts: Vec<String> = diff(&[group], &installed)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            texts,
            [
                "install pip package six",
                "pip package numpy 1.26.4 → numpy==2.*"
            ]
        );
    }

    #[test]
    fn dist_info_names_give_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("lib/python3.11/site-packages");
        std::fs::create_dir_all(site.join("typing_extensions-4.12.2.dist-info")).unwrap();
        std::fs::create_dir_all(site.join("Old_Pkg.egg-info")).unwrap();
        std::fs::write(
            site.join("Old_Pkg.egg-info/PKG-INFO"),
            "Metadata-Version: 1.0\nName: Old-Pkg\nVersion: 0.3\n\nbody\n",
        )
        .unwrap();
        std::fs::create_dir_all(site.join("numpy")).unwrap();
        let found = installed(dir.path()).unwrap();
        let found: Vec<(String, String)> =
            found.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(
            found,
            [
                ("old-pkg".to_owned(), "0.3".to_owned()),
                ("typing-extensions".to_owned(), "4.12.2".to_owned())
            ]
        );
    }

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
