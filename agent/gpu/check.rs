//! The manifest's `gpu` check, judged purely against what was read (or why nothing could be).
//!
//! A check changes nothing: it passes, with a note saying what it found, or fails with every
//! reason and what to do about each. The resource in `crate::resources` only reads NVML and calls
//! [`evaluate`], so every rule here is tested on recorded fixtures.

use std::fmt;
use std::str::FromStr;

use super::health::{self, Limits, ProblemKind, Verdict};
use super::read::ReadError;
use super::record::{ComputeCapability, GpuReport};

/// A dotted driver version such as `535.54.03`, compared number by number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DriverVersion(pub Vec<u32>);

impl FromStr for DriverVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<DriverVersion, String> {
        s.split('.')
            .map(|part| part.parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map(DriverVersion)
            .map_err(|_| format!("`{s}` is not a driver version"))
    }
}

impl fmt::Display for DriverVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

impl FromStr for ComputeCapability {
    type Err = String;
    fn from_str(s: &str) -> Result<ComputeCapability, String> {
        let bad = || format!("`{s}` is not a compute capability");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(ComputeCapability {
            major: major.parse().map_err(|_| bad())?,
            minor: minor.parse().map_err(|_| bad())?,
        })
    }
}

/// What the manifest requires of this node's GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// At least this many GPUs. 0: GPUs are not required, and a node without a driver passes.
    pub count: u32,
    pub min_compute_capability: Option<ComputeCapability>,
    pub min_driver_version: Option<DriverVersion>,
    /// Hotter fails (default: the health rules' 85 °C).
    pub max_temperature_c: Option<u32>,
    /// Health problems that do not fail the check.
    pub ignore: Vec<ProblemKind>,
}

/// `Ok(note)`: passed, and what was found; `Err(reasons)`: failed, with what to do.
pub fn evaluate(req: &Requirements, read: &Result<GpuReport, ReadError>) -> Result<String, String> {
    let report = match read {
        Err(e) if req.count == 0 => {
            return Ok(format!(
                "{e}; GPUs are not required on this node (count: 0)"
            ));
        }
        Err(e) => {
            return Err(format!(
                "{e}, and this node needs {} GPU(s): {}",
                req.count,
                e.hint()
            ));
        }
        Ok(report) => report,
    };
    let mut reasons = Vec::new();
    let found = report.gpus.len();
    if found < req.count as usize {
        reasons.push(format!(
            "found {found} GPU(s), {} required: check `nvidia-smi -L`, `lspci | grep -i nvidia` and `dmesg` (XID 79 means a GPU fell off the bus)",
            req.count
        ));
    }
    if let Some(min) = &req.min_driver_version {
        match report
            .driver_version
            .value()
            .map(|v| (v, v.parse::<DriverVersion>()))
        {
            Some((_, Ok(have))) if have >= *min => {}
            Some((text, Ok(_))) => reasons.push(format!(
                "driver {text} is older than the required {min}: install a newer NVIDIA driver"
            )),
            Some((text, Err(_))) => reasons.push(format!(
                "driver version `{text}` cannot be compared with the required {min}"
            )),
            None => reasons.push(format!(
                "the driver version could not be read, so it cannot be checked against {min}"
            )),
        }
    }
    let limits = Limits {
        max_temperature_c: req
            .max_temperature_c
            .unwrap_or(Limits::default().max_temperature_c),
    };
    for gpu in &report.gpus {
        let who = format!(
            "GPU {} ({})",
            gpu.index,
            gpu.name.value().map_or("unknown model", String::as_str)
        );
        if let Some(min) = req.min_compute_capability {
            match gpu.compute_capability.value() {
                Some(cc) if *cc >= min => {}
                Some(cc) => reasons.push(format!(
                    "{who} has compute capability {cc}, below the required {min}: this node's GPU code needs a newer GPU"
                )),
                None => reasons.push(format!(
                    "{who}: its compute capability could not be read, so it cannot be checked against {min}"
                )),
            }
        }
        for problem in health::problems(gpu, limits) {
            if problem.verdict() == Verdict::Unhealthy && !req.ignore.contains(&problem.kind()) {
                reasons.push(format!("{who}: {problem}"));
            }
        }
    }
    if reasons.is_empty() {
        let models: Vec<String> = report
            .gpus
            .iter()
            .map(|g| g.name.value().cloned().unwrap_or_else(|| "unknown".into()))
            .collect();
        Ok(format!(
            "{found} GPU(s) fit the requirements ({}), driver {}",
            if models.is_empty() {
                "none required".into()
            } else {
                models.join(", ")
            },
            report
                .driver_version
                .value()
                .map_or("unknown", String::as_str)
        ))
    } else {
        Err(reasons.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn pyme() -> Requirements {
        Requirements {
            count: 1,
            min_compute_capability: Some("5.2".parse().unwrap()),
            min_driver_version: Some("535.54.03".parse().unwrap()),
            max_temperature_c: None,
            ignore: vec![],
        }
    }

    fn no_driver() -> Result<GpuReport, ReadError> {
        Err(ReadError::NoDriver {
            detail: "libnvidia-ml.so.1: cannot open shared object file".into(),
        })
    }

    #[test]
    fn versions_parse_and_compare_number_by_number() {
        let v = |s: &str| s.parse::<DriverVersion>().unwrap();
        assert!(v("535.154.05") > v("535.54.03"));
        assert!(v("550") > v("535.154.05"));
        assert!(v("535.54.03") >= v("535.54.3"));
        assert_eq!(v("535.54.03").to_string(), "535.54.3");
        for bad in ["", "latest", "535..1", "5.x", "-1"] {
            assert!(bad.parse::<DriverVersion>().is_err(), "{bad}");
        }
        let cc = |s: &str| s.parse::<ComputeCapability>();
        assert_eq!(cc("5.2"), Ok(ComputeCapability { major: 5, minor: 2 }));
        assert!(cc("10.0").unwrap() > cc("9.0").unwrap());
        for bad in ["5", "five", "5.", ".2", "5.2.1"] {
            assert!(cc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn no_driver_fails_when_gpus_are_required_and_says_what_to_install() {
        let e = evaluate(&pyme(), &no_driver()).unwrap_err();
        assert_eq!(
            e,
            "no NVIDIA driver found (libnvidia-ml.so.1 not loadable), and this node needs 1 GPU(s): install the NVIDIA driver (e.g. `apt install nvidia-driver-550` or `dnf install nvidia-driver`, or NVIDIA's .run installer) and reboot"
        );
    }

    #[test]
    fn no_driver_passes_when_gpus_are_not_required_and_says_so() {
        let req = Requirements { count: 0, ..pyme() };
        assert_eq!(
            evaluate(&req, &no_driver()).unwrap(),
            "no NVIDIA driver found (libnvidia-ml.so.1 not loadable); GPUs are not required on this node (count: 0)"
        );
    }

    #[test]
    fn a_healthy_h100_passes_pyme_requirements() {
        let r = Ok(fixtures::load("h100-sxm-healthy.json"));
        assert_eq!(
            evaluate(&pyme(), &r).unwrap(),
            "1 GPU(s) fit the requirements (NVIDIA H100 80GB HBM3), driver 550.54.15"
        );
    }

    #[test]
    fn too_few_gpus_old_driver_and_low_compute_capability_each_give_a_reason() {
        let r = Ok(fixtures::load("old-workstation.json"));
        let req = Requirements {
            count: 4,
            ignore: vec![
                ProblemKind::Hot,
                ProblemKind::Throttled,
                ProblemKind::PendingPageRetirement,
            ],
            ..pyme()
        };
        let e = evaluate(&req, &r).unwrap_err();
        let reasons: Vec<&str> = e.split("; ").collect();
        assert_eq!(reasons.len(), 3, "{e}");
        assert!(reasons[0].starts_with("found 2 GPU(s), 4 required"), "{e}");
        assert_eq!(
            reasons[1],
            "driver 470.239.06 is older than the required 535.54.3: install a newer NVIDIA driver"
        );
        assert!(
            reasons[2].starts_with(
                "GPU 1 (Tesla K80) has compute capability 3.7, below the required 5.2"
            ),
            "{e}"
        );
    }

    #[test]
    fn health_problems_fail_unless_ignored() {
        let r = Ok(fixtures::load("a100-pending-remap.json"));
        let e = evaluate(&pyme(), &r).unwrap_err();
        assert!(
            e.contains("GPU 0 (NVIDIA A100-SXM4-40GB): 1 uncorrected ECC error(s)"),
            "{e}"
        );
        assert!(
            e.contains("GPU 0 (NVIDIA A100-SXM4-40GB): a memory row remap is pending"),
            "{e}"
        );
        assert!(
            e.contains("GPU 1 (NVIDIA A100-SXM4-40GB): memory row remapping failed"),
            "{e}"
        );
        // Warnings (lifetime ECC errors) never fail a check.
        assert!(!e.contains("lifetime"), "{e}");
        let tolerant = Requirements {
            ignore: vec![
                ProblemKind::UncorrectedEcc,
                ProblemKind::RowRemapPending,
                ProblemKind::RowRemapFailure,
            ],
            ..pyme()
        };
        assert!(evaluate(&tolerant, &r).is_ok());
    }

    #[test]
    fn max_temperature_tightens_the_health_limit() {
        let r = Ok(fixtures::load("dgx-h100-8gpu.json"));
        let req = Requirements {
            count: 8,
            max_temperature_c: Some(60),
            ignore: vec![ProblemKind::PcieDegraded, ProblemKind::Xid],
            ..pyme()
        };
        let e = evaluate(&req, &r).unwrap_err();
        assert_eq!(
            e.matches("temperature 61 °C is above 60 °C").count(),
            8,
            "{e}"
        );
        let req = Requirements {
            max_temperature_c: Some(70),
            ..req
        };
        assert!(
            evaluate(&req, &r)
                .unwrap()
                .starts_with("8 GPU(s) fit the requirements")
        );
    }

    #[test]
    fn a_degraded_link_and_an_xid_fail_an_eight_gpu_node() {
        let r = Ok(fixtures::load("dgx-h100-8gpu.json"));
        let req = Requirements { count: 8, ..pyme() };
        let e = evaluate(&req, &r).unwrap_err();
        let reasons: Vec<&str> = e.split("; ").collect();
        assert_eq!(reasons.len(), 2, "{e}");
        assert!(reasons[0].starts_with(
            "GPU 3 (NVIDIA H100 80GB HBM3): PCIe link runs at Gen5 x8, below its Gen5 x16"
        ));
        assert!(reasons[1].starts_with("GPU 6 (NVIDIA H100 80GB HBM3): XID 79 seen 1 time(s)"));
    }
}
