//! `dask_config`: the Dask config files the Pangeo guide has users write by hand, rendered from
//! the manifest into one Dask config folder: `jobqueue.yaml` (`jobqueue: slurm:`, dask-jobqueue's
//! keys, so `SLURMCluster()` needs no arguments) and `distributed.yaml` (the dashboard link).
//! Each file is a whole [`File`]: replaced atomically, with a backup of a hand-written one.

use super::file::{Content, File, Found};
use super::ownership::Ownership;
use crate::engine::{Change, Need, Resource};
use crate::host::{Host, Result};
use crate::manifest::model::{DaskConfigSpec, DaskSlurmSpec, State};

/// The header of every file written.
const HEADER: &str = "# Managed by provision (the manifest's dask_config); edits here are replaced on the next apply.\n";

/// A YAML string (JSON's quoting is valid YAML, and leaves no doubt: `02:00:00` stays a string).
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// `jobqueue.yaml` for `s`, keys in dask-jobqueue's order, each only when given.
pub fn jobqueue(s: &DaskSlurmSpec) -> String {
    let mut out = format!("{HEADER}jobqueue:\n  slurm:\n");
    let mut text = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            out.push_str(&format!("    {key}: {}\n", quoted(v)));
        }
    };
    text("name", &s.name);
    text("memory", &Some(s.memory.clone()));
    text("python", &s.python);
    text("interface", &s.interface);
    text("queue", &s.queue);
    text("account", &s.account);
    text("walltime", &s.walltime);
    text("local-directory", &s.local_directory);
    text("log-directory", &s.log_directory);
    out.push_str(&format!("    cores: {}\n", s.cores));
    if let Some(p) = s.processes {
        out.push_str(&format!("    processes: {p}\n"));
    }
    if let Some(t) = s.death_timeout {
        out.push_str(&format!("    death-timeout: {t}\n"));
    }
    for (key, list) in [
        ("job-extra-directives", &s.job_extra_directives),
        ("job-script-prologue", &s.job_script_prologue),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("    {key}:\n"));
            for line in list {
                out.push_str(&format!("      - {}\n", quoted(line)));
            }
        }
    }
    out
}

/// `distributed.yaml` with the dashboard link.
pub fn distributed(link: &str) -> String {
    format!(
        "{HEADER}distributed:\n  dashboard:\n    link: {}\n",
        quoted(link)
    )
}

/// The config folder's files, each a [`File`].
#[derive(Debug)]
pub struct DaskConfig {
    pub path: String,
    pub files: Vec<File>,
}

impl DaskConfig {
    pub fn new(spec: &DaskConfigSpec) -> DaskConfig {
        let file = |name: &str, text: String| File {
            path: format!("{}/{name}", spec.path.trim_end_matches('/')),
            state: State::Present,
            content: Content::Plain(text.into_bytes()),
            ownership: Ownership {
                owner: spec.owner.clone(),
                group: spec.group.clone(),
                mode: None,
                default_mode: 0o644,
            },
            validate: None,
        };
        let mut files = Vec::new();
        if let Some(s) = &spec.slurm {
            files.push(file("jobqueue.yaml", jobqueue(s)));
        }
        if let Some(link) = &spec.dashboard_link {
            files.push(file("distributed.yaml", distributed(link)));
        }
        DaskConfig {
            path: spec.path.clone(),
            files,
        }
    }
}

impl Resource for DaskConfig {
    type Observed = Vec<Option<Found>>;

    fn id(&self) -> String {
        format!("dask_config:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        let mut needs = Vec::new();
        for f in &self.files {
            for need in f.needs() {
                if !needs.contains(&need) {
                    needs.push(need);
                }
            }
        }
        needs
    }

    fn observe(&self, host: &Host) -> Result<Vec<Option<Found>>> {
        self.files.iter().map(|f| f.observe(host)).collect()
    }

    /// Each file's changes, its content change named by the file (`Edit`), since two files
    /// share the one resource.
    fn diff(&self, found: &Vec<Option<Found>>) -> Vec<Change> {
        let mut changes = Vec::new();
        for (file, seen) in self.files.iter().zip(found) {
            for change in file.diff(seen) {
                match change {
                    Change::Create { .. } => {}
                    Change::Content(diff) => changes.push(Change::Edit {
                        file: file.path.clone(),
                        diff,
                    }),
                    other => changes.push(other),
                }
            }
        }
        changes
    }

    fn apply(&self, host: &Host, found: &Vec<Option<Found>>, _changes: &[Change]) -> Result<()> {
        for (file, seen) in self.files.iter().zip(found) {
            let changes = file.diff(seen);
            if !changes.is_empty() {
                file.apply(host, seen, &changes)?;
            }
        }
        Ok(())
    }

    fn drift_watch(&self) -> Vec<crate::engine::DriftWatch> {
        self.files
            .iter()
            .map(|f| crate::engine::DriftWatch::Path(f.path.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_keys_given_are_written_and_strings_stay_strings() {
        let s = DaskSlurmSpec {
            cores: 8,
            memory: "32GiB".into(),
            processes: Some(2),
            walltime: Some("02:00:00".into()),
            queue: Some("compute".into()),
            job_extra_directives: vec!["--exclusive".into()],
            ..DaskSlurmSpec::default()
        };
        assert_eq!(
            jobqueue(&s),
            format!(
                "{HEADER}jobqueue:\n  slurm:\n    memory: \"32GiB\"\n    queue: \"compute\"\n    walltime: \"02:00:00\"\n    cores: 8\n    processes: 2\n    job-extra-directives:\n      - \"--exclusive\"\n"
            )
        );
        assert_eq!(
            distributed("/user/{JUPYTERHUB_USER}/proxy/{port}/status"),
            format!(
                "{HEADER}distributed:\n  dashboard:\n    link: \"/user/{{JUPYTERHUB_USER}}/proxy/{{port}}/status\"\n"
            )
        );
    }
}
