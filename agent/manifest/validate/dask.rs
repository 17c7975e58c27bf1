//! Checks of `dask_config`: the values dask-jobqueue and SLURM would refuse only once a job is
//! submitted (a size Dask cannot parse, a time limit SLURM cannot read), refused here with the
//! field named, before anything is written.

use super::{Validator, Written, path_problem};
use crate::manifest::Origin;
use crate::manifest::model::DaskConfigSpec;

/// Why `text` is not a size `dask.utils.parse_bytes` reads (`32GiB`, `4 GB`, `512MiB`, `1e9`), if
/// it is not. A bare number is bytes.
pub fn memory_problem(text: &str) -> Option<String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+'))
        .unwrap_or(t.len());
    // `e` also starts no unit Dask knows, so a number runs as far as digits, dots and exponents go.
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let number_ok = !number.is_empty()
        && number.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && number
            .parse::<f64>()
            .is_ok_and(|n| n.is_finite() && n > 0.0);
    const UNITS: &[&str] = &[
        "", "b", "k", "kb", "kib", "m", "mb", "mib", "g", "gb", "gib", "t", "tb", "tib", "p", "pb",
        "pib",
    ];
    if !number_ok {
        return Some(format!("`{text}` does not start with a positive number"));
    }
    if !UNITS.contains(&unit.to_ascii_lowercase().as_str()) {
        return Some(format!(
            "`{text}` has the unit `{unit}`, which Dask does not know"
        ));
    }
    None
}

/// Why `text` is not a SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`), if it is not.
pub fn walltime_problem(text: &str) -> Option<String> {
    let number = |p: &str| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit());
    let (days, rest) = match text.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, text),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let shape_ok = match days {
        Some(d) => number(d) && (1..=3).contains(&parts.len()),
        None => (1..=3).contains(&parts.len()),
    } && parts.iter().all(|p| number(p));
    if !shape_ok {
        return Some(format!(
            "`{text}` is not a SLURM time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
        ));
    }
    // Every field after the first is minutes or seconds (0-59), as SLURM reads them.
    let limited = &parts[1..];
    if limited.iter().any(|p| p.parse::<u32>().unwrap_or(0) > 59) {
        return Some(format!(
            "`{text}` has minutes or seconds over 59 after the first field"
        ));
    }
    if text.bytes().all(|b| b == b'0' || b == b':' || b == b'-') {
        return Some(format!("`{text}` is no time at all"));
    }
    None
}

/// A value written into YAML as a plain or quoted scalar: one line, no control characters.
fn one_line(text: &str) -> bool {
    !text.is_empty() && !text.chars().any(char::is_control)
}

impl Validator<'_> {
    pub(super) fn dask_config(&mut self, o: &Origin, d: &DaskConfigSpec) {
        self.written(
            o,
            "dask_config.path",
            "path",
            &d.path,
            Written::Path,
            "write Dask's config folder: /etc/dask for every user, or /home/<user>/.config/dask",
        );
        if d.slurm.is_none() && d.dashboard_link.is_none() {
            self.error(
                o,
                "dask_config",
                "a dask_config with neither slurm: nor dashboard_link: writes nothing".into(),
                "add slurm: {cores: 8, memory: 32GiB, ...} (jobqueue.yaml) or dashboard_link: (distributed.yaml)",
            );
        }
        if let Some(link) = &d.dashboard_link
            && !one_line(link)
        {
            self.error(
                o,
                "dask_config.dashboard_link",
                "dashboard_link is empty or has a control character".into(),
                "write one line, e.g. /user/{JUPYTERHUB_USER}/proxy/{port}/status",
            );
        }
        let Some(s) = &d.slurm else {
            return;
        };
        if s.cores == 0 {
            self.error(
                o,
                "dask_config.slurm.cores",
                "cores is 0".into(),
                "give the cores each SLURM job asks for, e.g. 8",
            );
        }
        if let Some(p) = s.processes
            && (p == 0 || p > s.cores)
        {
            self.error(
                o,
                "dask_config.slurm.processes",
                format!(
                    "processes {p} is not between 1 and cores ({}): each worker process needs a core",
                    s.cores
                ),
                "split the job's cores among 1 to `cores` worker processes, e.g. processes: 2",
            );
        }
        if let Some(problem) = memory_problem(&s.memory) {
            self.error(
                o,
                "dask_config.slurm.memory",
                format!("memory {problem}"),
                "write the memory per job as Dask writes sizes, e.g. 32GiB, 4 GB or 512MiB",
            );
        }
        if let Some(w) = &s.walltime
            && let Some(problem) = walltime_problem(w)
        {
            self.error(
                o,
                "dask_config.slurm.walltime",
                format!("walltime {problem}"),
                "write a quoted SLURM time limit, e.g. \"02:00:00\" (two hours) or \"1-00:00:00\" (a day)",
            );
        }
        for (field, path) in [
            ("python", &s.python),
            ("local_directory", &s.local_directory),
            ("log_directory", &s.log_directory),
        ] {
            if let Some(path) = path
                && let Some(problem) = path_problem(path)
            {
                self.error(
                    o,
                    &format!("dask_config.slurm.{field}"),
                    format!("{field} `{path}` {problem}"),
                    "write an absolute path on the compute nodes, e.g. /scratch/dask",
                );
            }
        }
        for (field, value) in [
            ("name", &s.name),
            ("interface", &s.interface),
            ("queue", &s.queue),
            ("account", &s.account),
        ] {
            if let Some(v) = value
                && (!one_line(v) || v.contains(char::is_whitespace))
            {
                self.error(
                    o,
                    &format!("dask_config.slurm.{field}"),
                    format!("{field} {v:?} is empty or has a space or control character"),
                    "SLURM and Dask take one word here, e.g. compute",
                );
            }
        }
        for (field, list) in [
            ("job_extra_directives", &s.job_extra_directives),
            ("job_script_prologue", &s.job_script_prologue),
        ] {
            if let Some((i, _)) = list.iter().enumerate().find(|(_, l)| !one_line(l)) {
                self.error(
                    o,
                    &format!("dask_config.slurm.{field}[{i}]"),
                    "a line that is empty or has a newline or control character".into(),
                    "each entry is one line of the job script",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_dask_reads_them() {
        for ok in [
            "32GiB", "4 GB", "512MiB", "1e9", "1000", "1.5 TiB", "10kB", "2g",
        ] {
            assert_eq!(memory_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "GiB", "32 gigs", "-4GB", "0", "32GiBs", "lots", "nan", "inf GB",
        ] {
            assert!(memory_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn time_limits_as_slurm_reads_them() {
        for ok in [
            "30",
            "30:00",
            "02:00:00",
            "1-00",
            "1-12:00",
            "2-00:00:00",
            "120:00:00",
        ] {
            assert_eq!(walltime_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "2h",
            "1:2:3:4",
            "00:61:00",
            "10:75",
            "1-",
            "-1",
            "a-02",
            "00:00:00",
            "1-24:60",
            "02:00:00 ",
        ] {
            assert!(walltime_problem(bad).is_some(), "{bad}");
        }
    }
}
