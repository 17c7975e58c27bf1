//! `conda_env`: a conda environment solved and installed natively with the rattler crates (the
//! library behind pixi), from the channels the manifest names, with no conda binary.
//!
//! The specs are the whole environment: packages no spec needs are removed, and a changed spec is
//! met by an update. Observing first reads `conda-meta/*.json` and checks, without any channel
//! access, whether the installed records already satisfy the specs (every spec matched, every
//! dependency of every record present, nothing else installed). Only when they do not is the
//! solver run, still in observe, so a plan lists the packages that would change and a solve that
//! fails (an unreachable channel, an unsatisfiable spec) fails the resource before anything is
//! touched: the old environment keeps working. Downloads go to a package cache outside the
//! environment, so a re-run after a failure resumes from what was already fetched.
//!
//! The same resource makes the base installation (`conda: base:`) at the conda root. There, an
//! installation provision did not make (Miniconda, Miniforge: `conda-meta/` with a `history` or a
//! `bin/conda`) is adopted as it is, never changed; one provision made carries a marker file in
//! `conda-meta/` and is kept to its specs like any environment.
//!
//! pip requirements on top are checked against the `*.dist-info` of the environment's
//! site-packages and installed, after the conda packages, by the environment's own python.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rattler::install::Installer;
use rattler::package_cache::PackageCache;
use rattler_conda_types::{
    Channel, ChannelConfig, MatchSpec, Matches, PackageRecord, ParseStrictness, PrefixRecord,
    RepoDataRecord, Subdir,
};
use rattler_repodata_gateway::Gateway;
use rattler_solve::{SolverImpl, SolverTask};

use super::ownership::{Ownership, chown_tree};
use super::pip::{self, Group, Installed};
use crate::engine::{Change, DriftWatch, Need, Resource};
use crate::host::{Error, Host, Kind, Result};

#[derive(Debug)]
pub struct CondaEnv {
    /// The environment's path on the node.
    pub prefix: String,
    /// Channels, resolved (local folders are absolute), highest priority first.
    pub channels: Vec<Channel>,
    /// The specs as written (for messages) and parsed.
    pub specs: Vec<MatchSpec>,
    /// The package cache on the node.
    pub pkgs_dir: String,
    pub owner: Option<String>,
    pub group: Option<String>,
    /// pip requirements installed on top, group after group.
    pub pip: Vec<Group>,
    /// This is the base installation at the conda root: adopt one that provision did not make.
    pub base: bool,
    /// The base installation this environment lives in, made first when provision makes it.
    pub installation: Option<String>,
}

/// Marks a base installation provision made (and so keeps to its specs); one without it is
/// adopted as it is. conda reads only `*.json` records and `history` in `conda-meta/`.
pub const BASE_MARKER: &str = "conda-meta/provision-base";

/// What a root may hold before provision makes the base installation in it: the managed
/// `.condarc`, and the environments and package cache of a root whose base comes later.
const ROOT_ENTRIES_BEFORE_BASE: [&str; 3] = [".condarc", "envs", "pkgs"];

#[derive(Debug)]
pub struct Observed {
    /// Whether the environment exists (a prefix with `conda-meta/`).
    pub exists: bool,
    /// The installed packages' records.
    pub installed: Vec<PrefixRecord>,
    /// Owner and group names of the prefix and of its `conda-meta/`.
    pub owners: Vec<(String, String)>,
    /// The group the tree should have: `group`, else the owner's primary group.
    pub want_group: Option<String>,
    /// The solver's answer, only when the installed records do not satisfy the specs.
    pub solved: Option<Vec<RepoDataRecord>>,
    /// A base installation provision did not make: left as it is.
    pub adopted: bool,
    /// pip distributions in the environment's site-packages (conda's Python packages too).
    pub pip: Installed,
}

/// A MatchSpec as conda reads it (lenient: `numpy=1.26`, `python 3.11.*`).
pub fn parse_spec(text: &str) -> std::result::Result<MatchSpec, String> {
    MatchSpec::from_str(text, ParseStrictness::Lenient)
        .map_err(|e| format!("`{text}` is not a MatchSpec: {e}"))
}

/// `specs`, plus `pip` when the environment has pip requirements and no spec names pip: conda
/// adds pip to python's dependencies (`add_pip_as_python_dependency`, on by default), rattler
/// does not, and the pip groups need it.
pub fn with_pip(mut specs: Vec<MatchSpec>, needs_pip: bool) -> Vec<MatchSpec> {
    let named = specs
        .iter()
        .any(|s| s.name.to_string().eq_ignore_ascii_case("pip"));
    if needs_pip && !named {
        specs.extend(parse_spec("pip"));
    }
    specs
}

/// Why a channel as written cannot be used, if it cannot.
pub fn channel_problem(text: &str) -> std::result::Result<(), String> {
    if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?} is empty or has a space in it"));
    }
    if is_folder(text) {
        return Ok(());
    }
    Channel::from_str(
        text,
        &ChannelConfig::default_with_root_dir(PathBuf::from("/")),
    )
    .map(|_| ())
    .map_err(|e| format!("`{text}` is not a channel: {e}"))
}

/// A local channel folder: an absolute path, or one relative to the manifest (`./`, `../`).
fn is_folder(text: &str) -> bool {
    text.starts_with('/') || text.starts_with("./") || text.starts_with("../") || text == "."
}

/// The channel `text` names; relative folders are relative to `dir` (the manifest's folder).
pub fn channel(text: &str, dir: &Path) -> std::result::Result<Channel, String> {
    if is_folder(text) {
        let path = dir.join(text);
        return Channel::try_from_directory(&path)
            .map_err(|e| format!("channel folder {}: {e}", path.display()));
    }
    // A URL is not moved by the alias, so a bad alias does not fail it.
    let config = if text.contains("://") {
        ChannelConfig::default_with_root_dir(dir.to_path_buf())
    } else {
        channel_config(dir)?
    };
    Channel::from_str(text, &config).map_err(|e| format!("`{text}` is not a channel: {e}"))
}

/// The variable that moves every channel name (`conda-forge`, `bioconda`) to another server, as
/// conda's own `CONDA_CHANNEL_ALIAS` does: `https://mirror.example/conda` reads conda-forge from
/// `https://mirror.example/conda/conda-forge`, and `file:///srv/channels` from the local folder
/// `/srv/channels/conda-forge` (an air-gapped site's mirror; tests/conda_examples.rs). URLs and
/// folders written in the manifest are not moved, and `.condarc` keeps the names as written.
pub const CHANNEL_ALIAS_VAR: &str = "CONDA_CHANNEL_ALIAS";

/// Channel names resolve under `$CONDA_CHANNEL_ALIAS` when set, else under conda.anaconda.org.
fn channel_config(dir: &Path) -> std::result::Result<ChannelConfig, String> {
    let mut config = ChannelConfig::default_with_root_dir(dir.to_path_buf());
    if let Some(alias) = std::env::var_os(CHANNEL_ALIAS_VAR).filter(|a| !a.is_empty()) {
        let alias = alias.to_string_lossy();
        let with_slash = format!("{}/", alias.trim_end_matches('/'));
        config.channel_alias = url::Url::parse(&with_slash).map_err(|e| {
            format!(
                "{CHANNEL_ALIAS_VAR}={alias} is not a URL ({e}); write one such as https://mirror.example/conda or file:///srv/channels"
            )
        })?;
    }
    Ok(config)
}

/// Whether `records` are exactly what `specs` need: every spec matched, every dependency of a
/// needed record matched in turn, and no record that nothing needs. Virtual packages (`__glibc`)
/// are the system's, never in a prefix, and are not checked here.
pub fn satisfies(specs: &[MatchSpec], records: &[&PackageRecord]) -> bool {
    let mut needed: HashSet<usize> = HashSet::new();
    let mut queue: Vec<MatchSpec> = specs.to_vec();
    while let Some(spec) = queue.pop() {
        let virtual_package = spec.name.to_string().starts_with("__");
        if virtual_package {
            continue;
        }
        let Some(i) = records.iter().position(|r| spec.matches(*r)) else {
            return false;
        };
        if needed.insert(i) {
            for dep in &records[i].depends {
                match MatchSpec::from_str(dep, ParseStrictness::Lenient) {
                    Ok(dep) => queue.push(dep),
                    Err(_) => return false,
                }
            }
        }
    }
    needed.len() == records.len()
}

/// The virtual packages of this machine (`__linux`, `__glibc`, `__unix`, `__cuda` when a driver
/// is there, `__archspec`), which packages such as conda-forge's python depend on. A detection
/// that fails is logged and leaves the list empty: packages that need one then fail to solve with
/// the solver's own explanation.
fn system_virtual_packages() -> Vec<rattler_conda_types::GenericVirtualPackage> {
    use rattler_virtual_packages::{VirtualPackage, VirtualPackageOverrides};
    match VirtualPackage::detect(&VirtualPackageOverrides::default(), None) {
        Ok(found) => found.into_iter().map(Into::into).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot detect this machine's virtual packages");
            Vec::new()
        }
    }
}

/// `version`, with the build when two records share a version.
fn describe(record: &PackageRecord, other: Option<&PackageRecord>) -> String {
    match other {
        Some(o) if o.version == record.version => {
            format!("{} (build {})", record.version, record.build)
        }
        _ => record.version.to_string(),
    }
}

/// The package changes from `installed` to `target`, by name.
pub fn package_changes(installed: &[&PackageRecord], target: &[&PackageRecord]) -> Vec<Change> {
    let have: BTreeMap<&str, &PackageRecord> = installed
        .iter()
        .map(|r| (r.name.as_normalized(), *r))
        .collect();
    let want: BTreeMap<&str, &PackageRecord> = target
        .iter()
        .map(|r| (r.name.as_normalized(), *r))
        .collect();
    let mut changes = Vec::new();
    for (name, w) in &want {
        let package = |from, to| Change::Package {
            manager: "conda".into(),
            name: (*name).to_owned(),
            from,
            to,
        };
        match have.get(name) {
            None => changes.push(package(None, Some(format!("{name} {}", w.version)))),
            Some(h) if h.version != w.version || h.build != w.build => {
                changes.push(package(
                    Some(describe(h, Some(w))),
                    Some(describe(w, Some(h))),
                ));
            }
            Some(_) => {}
        }
    }
    for (name, h) in &have {
        if !want.contains_key(name) {
            changes.push(Change::Package {
                manager: "conda".into(),
                name: (*name).to_owned(),
                from: Some(h.version.to_string()),
                to: None,
            });
        }
    }
    changes
}

/// An error with its causes, one after the other (rattler's errors nest the useful part).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whether a channel error is the network's (no route, no DNS, refused, timed out), not the
/// channel's content.
pub fn unreachable(cause: &str) -> bool {
    [
        "dns error",
        "error sending request",
        "Connection refused",
        "timed out",
        "Network is unreachable",
    ]
    .iter()
    .any(|sign| cause.contains(sign))
}

/// An install that failed for lack of space says so first, since rattler nests it deep.
fn install_error(prefix: &str, cause: String) -> Error {
    if cause.contains("No space left on device") || cause.contains("os error 28") {
        Error::Other(format!(
            "installing into {prefix} failed: the disk is full (free space where the environment and the package cache live, then apply again; downloads already in the cache are kept): {cause}"
        ))
    } else {
        Error::Other(format!("installing into {prefix} failed: {cause}"))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the conda runtime: {e}")))
}

impl CondaEnv {
    fn ownership(&self) -> Ownership {
        Ownership {
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode: None,
            default_mode: 0o755,
        }
    }

    fn channel_names(&self) -> String {
        let names: Vec<String> = self
            .channels
            .iter()
            .map(|c| c.base_url.to_string())
            .collect();
        names.join(", ")
    }

    /// Reads the channels' repodata and solves the specs, preferring what is installed.
    fn solve(&self, host: &Host, installed: &[PrefixRecord]) -> Result<Vec<RepoDataRecord>> {
        let platform = Subdir::current().unwrap_or(Subdir::NoArch);
        // Remote repodata is cached beside the package cache once that exists (an apply has made
        // it); before, a temporary folder keeps a plan from writing to the node.
        let pkgs = host.resolve(&self.pkgs_dir)?;
        let scratch;
        let cache_dir = if pkgs.is_dir() {
            pkgs.join("cache")
        } else {
            scratch = tempfile::tempdir().map_err(Error::io("create", Path::new("/tmp")))?;
            scratch.path().to_path_buf()
        };
        let gateway = Gateway::builder().with_cache_dir(cache_dir).finish();
        let platforms = if platform == Subdir::NoArch {
            vec![Subdir::NoArch]
        } else {
            vec![platform, Subdir::NoArch]
        };
        let query = gateway
            .query(self.channels.clone(), platforms, self.specs.clone())
            .recursive(true);
        let repodata = runtime()?
            .block_on(query.into_future())
            .map_err(|e| {
                let cause = chain(&e);
                if unreachable(&cause) {
                    Error::Other(format!(
                        "cannot reach the channels ({}) from this machine: {cause}; check the network and proxy, or install from a local channel folder",
                        self.channel_names()
                    ))
                } else {
                    Error::Other(format!(
                        "cannot read the channels ({}): {cause}",
                        self.channel_names()
                    ))
                }
            })?
            .repodata;
        let task = SolverTask {
            locked_packages: installed.iter().map(|r| &r.repodata_record).collect(),
            specs: self.specs.clone(),
            virtual_packages: system_virtual_packages(),
            ..SolverTask::from_iter(&repodata)
        };
        let solved = rattler_solve::resolvo::Solver.solve(task).map_err(|e| {
            let reason = match e {
                rattler_solve::SolveError::Unsolvable(lines) => lines.join("\n"),
                other => chain(&other),
            };
            Error::Other(format!(
                "the specs of {} cannot be met from {}: {reason}",
                self.prefix,
                self.channel_names()
            ))
        })?;
        Ok(solved.records)
    }
}

use std::future::IntoFuture;

impl Resource for CondaEnv {
    type Observed = Observed;

    fn id(&self) -> String {
        format!("conda_env:{}", self.prefix)
    }

    /// `conda-meta/` (a package record written or removed by `conda install`/`remove` by hand)
    /// and, for pip requirements, the package folder.
    fn drift_watch(&self) -> Vec<DriftWatch> {
        let mut watch = vec![DriftWatch::Path(format!("{}/conda-meta/", self.prefix))];
        if !self.pip.is_empty() {
            watch.push(DriftWatch::Path(format!(
                "{}/lib/*/site-packages/",
                self.prefix
            )));
        }
        watch
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = super::owner_needs(&self.prefix, &self.ownership());
        needs.push(Need::Directory(self.pkgs_dir.clone()));
        needs.extend(self.installation.clone().map(Need::Env));
        needs
    }

    fn observe(&self, host: &Host) -> Result<Observed> {
        let accounts = host.accounts()?;
        let want_group = self.group.clone().or_else(|| {
            let user = accounts.user(self.owner.as_deref()?)?;
            Some(accounts.group_name(user.gid))
        });
        let real = host.resolve(&self.prefix)?;
        let mut observed = Observed {
            exists: false,
            installed: Vec::new(),
            owners: Vec::new(),
            want_group,
            solved: None,
            adopted: false,
            pip: Installed::new(),
        };
        match host.stat(&self.prefix)? {
            None => {}
            Some(stat) if stat.kind != Kind::Directory => {
                return Err(Error::WrongType {
                    path: self.prefix.clone(),
                    found: stat.kind.describe(),
                    expected: "a conda environment (a directory)",
                });
            }
            Some(stat) => {
                let meta_path = format!("{}/conda-meta", self.prefix);
                match host.stat(&meta_path)? {
                    Some(meta) if meta.kind == Kind::Directory => {
                        observed.exists = true;
                        observed.adopted = self.base
                            && !real.join(BASE_MARKER).exists()
                            && (real.join("conda-meta/history").exists()
                                || real.join("bin/conda").exists());
                        observed.owners = vec![
                            (accounts.user_name(stat.uid), accounts.group_name(stat.gid)),
                            (accounts.user_name(meta.uid), accounts.group_name(meta.gid)),
                        ];
                        observed.installed = PrefixRecord::collect_from_prefix(&real)
                            .map_err(Error::io("read the records of", &real.join("conda-meta")))?;
                    }
                    _ => {
                        let mut entries =
                            std::fs::read_dir(&real).map_err(Error::io("list", &real))?;
                        let foreign = entries.any(|e| {
                            e.map_or(true, |e| {
                                !(self.base
                                    && ROOT_ENTRIES_BEFORE_BASE
                                        .iter()
                                        .any(|known| e.file_name() == *known))
                            })
                        });
                        if foreign {
                            return Err(Error::Other(format!(
                                "{} exists, is not empty and has no conda-meta/: it is not a conda environment, and provision will not replace it",
                                self.prefix
                            )));
                        }
                    }
                }
            }
        }
        let records: Vec<&PackageRecord> = observed
            .installed
            .iter()
            .map(|r| &r.repodata_record.package_record)
            .collect();
        if observed.exists {
            observed.pip = pip::installed(&real)?;
        }
        if !observed.adopted && (!observed.exists || !satisfies(&self.specs, &records)) {
            observed.solved = Some(self.solve(host, &observed.installed)?);
        }
        Ok(observed)
    }

    fn diff(&self, observed: &Observed) -> Vec<Change> {
        let mut changes = Vec::new();
        if !observed.exists {
            changes.push(Change::Create {
                what: if self.base {
                    "conda base installation".into()
                } else {
                    "conda environment".into()
                },
            });
        }
        let owners = &observed.owners;
        changes.extend(super::ownership::tree_diff(
            owners,
            self.owner.as_deref(),
            observed.want_group.as_deref(),
        ));
        if let Some(solved) = &observed.solved {
            let have: Vec<&PackageRecord> = observed
                .installed
                .iter()
                .map(|r| &r.repodata_record.package_record)
                .collect();
            let want: Vec<&PackageRecord> = solved.iter().map(|r| &r.package_record).collect();
            changes.extend(package_changes(&have, &want));
        }
        changes.extend(pip::diff(&self.pip, &observed.pip));
        changes
    }

    /// An adopted installation passes, and says which base specs it does not meet (provision
    /// does not change an installation it did not make).
    fn verify(&self, observed: &Observed, _write: bool) -> Result<Option<String>, String> {
        if !observed.adopted {
            return Ok(None);
        }
        let records: Vec<&PackageRecord> = observed
            .installed
            .iter()
            .map(|r| &r.repodata_record.package_record)
            .collect();
        let conda = records
            .iter()
            .find(|r| r.name.as_normalized() == "conda")
            .map_or_else(String::new, |r| format!(", conda {}", r.version));
        let unmet: Vec<String> = self
            .specs
            .iter()
            .filter(|s| !records.iter().any(|r| s.matches(*r)))
            .map(ToString::to_string)
            .collect();
        let count = match records.len() {
            1 => "1 package".to_owned(),
            n => format!("{n} packages"),
        };
        let mut note = format!(
            "adopted the existing installation ({count}{conda}); provision leaves its packages as they are"
        );
        if !unmet.is_empty() {
            note.push_str(&format!(
                "; it lacks base specs {} (install them with conda, or remove them from conda: base:)",
                unmet.join(", ")
            ));
        }
        Ok(Some(note))
    }

    fn apply(&self, host: &Host, observed: &Observed, _changes: &[Change]) -> Result<()> {
        let real = host.resolve(&self.prefix)?;
        if let Some(solved) = &observed.solved {
            host.ensure_parent(&self.prefix)?;
            if self.base {
                // Before the install: a base that fails half way is still provision's to finish.
                let meta = real.join("conda-meta");
                std::fs::create_dir_all(&meta).map_err(Error::io("create", &meta))?;
                let marker = real.join(BASE_MARKER);
                std::fs::write(
                    &marker,
                    "made by provision from the manifest's conda: base: specs\n",
                )
                .map_err(Error::io("write", &marker))?;
            }
            let pkgs = host.resolve(&self.pkgs_dir)?;
            std::fs::create_dir_all(&pkgs).map_err(Error::io("create", &pkgs))?;
            let installer = Installer::new()
                .with_package_cache(PackageCache::new(&pkgs))
                .with_target_platform(Subdir::current().unwrap_or(Subdir::NoArch))
                .with_installed_packages(observed.installed.clone())
                .with_requested_specs(self.specs.clone());
            let tally = super::progress::Tally::new();
            let installer = installer.with_reporter(super::progress::TallyReporter(tally.clone()));
            let what = format!("{}: installing {} packages", self.id(), solved.len());
            let runtime = runtime()?;
            super::progress::with_progress(&what, Some(&tally), || {
                runtime.block_on(installer.install(&real, solved.clone()))
            })
            .map_err(|e| install_error(&self.prefix, chain(&e)))?;
        }
        pip::install_groups(host, &real, &self.prefix, &self.pip)?;
        if self.owner.is_some() || self.group.is_some() {
            chown_tree(host, &real, self.owner.as_deref(), self.group.as_deref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: &str, depends: &[&str]) -> PackageRecord {
        let mut r = PackageRecord::new(
            name.parse().unwrap(),
            version.parse::<rattler_conda_types::Version>().unwrap(),
            "0".parse().unwrap(),
        );
        r.depends = depends.iter().map(|d| (*d).to_owned()).collect();
        r
    }

    fn specs(texts: &[&str]) -> Vec<MatchSpec> {
        texts.iter().map(|t| parse_spec(t).unwrap()).collect()
    }

    #[test]
    fn records_satisfy_specs_only_exactly() {
        let a = record("feas-a", "1.0", &["feas-b >=1,<2", "__glibc >=2.17"]);
        let b1 = record("feas-b", "1.0", &[]);
        let b2 = record("feas-b", "2.0", &[]);
        let extra = record("extra", "0.1", &[]);
        assert!(satisfies(&specs(&["feas-a"]), &[&a, &b1]));
        assert!(satisfies(&specs(&["feas-a", "feas-b 1.*"]), &[&a, &b1]));
        assert!(!satisfies(&specs(&["feas-b >=2"]), &[&b1]), "too old");
        assert!(!satisfies(&specs(&["feas-a"]), &[&a, &b2]), "a needs b <2");
        assert!(!satisfies(&specs(&["feas-a"]), &[&a]), "b missing");
        assert!(!satisfies(&specs(&["feas-b"]), &[&b1, &extra]), "extra");
        assert!(satisfies(&specs(&["feas-b"]), &[&b2]));
    }

    #[test]
    fn package_changes_read_as_sentences() {
        let a = record("feas-a", "1.0", &[]);
        let b1 = record("feas-b", "1.0", &[]);
        let b2 = record("feas-b", "2.0", &[]);
        let texts: Vec<String> = package_changes(&[&a, &b1], &[&b2])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            texts,
            [
                "conda package feas-b 1.0 → 2.0",
                "remove conda package feas-a 1.0"
            ]
        );
        let texts: Vec<String> = package_changes(&[], &[&a])
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["install conda package feas-a 1.0"]);
    }

    #[test]
    fn network_failures_and_full_disks_are_named() {
        assert!(unreachable(
            "error sending request for url (https://conda.anaconda.org/conda-forge/linux-64/repodata_shards.msgpack.zst): client error (Connect): dns error: failed to lookup address information"
        ));
        assert!(!unreachable(
            "could not find subdir 'noarch' in channel 'file:///srv/channel/'"
        ));
        let full = install_error(
            "/opt/envs/x",
            "failed to link: No space left on device (os error 28)".into(),
        );
        assert!(full.to_string().contains("the disk is full"), "{full}");
        let other = install_error("/opt/envs/x", "permission denied".into());
        assert!(!other.to_string().contains("disk is full"));
    }

    #[test]
    fn pip_is_added_for_pip_requirements_unless_named() {
        let names = |specs: Vec<MatchSpec>| -> Vec<String> {
            specs.iter().map(|s| s.name.to_string()).collect()
        };
        assert_eq!(names(with_pip(specs(&["python"]), true)), ["python", "pip"]);
        assert_eq!(
            names(with_pip(specs(&["python", "pip 24.*"]), true)),
            ["python", "pip"]
        );
        assert_eq!(names(with_pip(specs(&["python"]), false)), ["python"]);
    }

    #[test]
    fn channels_and_specs_are_checked() {
        assert!(channel_problem("conda-forge").is_ok());
        assert!(channel_problem("./channel").is_ok());
        assert!(channel_problem("file:///srv/channel").is_ok());
        assert!(channel_problem("conda forge").is_err());
        assert!(parse_spec("numpy >=1.26").is_ok());
        assert!(parse_spec("numpy >=>1").is_err());
    }
}
