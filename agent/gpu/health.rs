//! Health: a verdict per GPU, with the reasons, judged from recorded values only.
//!
//! Pure: no NVML here, so every rule is tested on recorded fixtures and a report saved on another
//! node is judged the same way. A field the GPU does not support is never a problem by itself
//! (an old GeForce has no ECC); a field NVML failed to read is a warning that names it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::record::{ClockEventReason, GpuRecord};

/// Limits the rules use. The manifest's `gpu` check can tighten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Hotter than this is a problem. 85 °C is below the slowdown temperature of current data
    /// centre GPUs, so a GPU is reported before it throttles.
    pub max_temperature_c: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_temperature_c: 85,
        }
    }
}

/// The overall judgement of one GPU: the worst of its findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    /// Worth a look; the GPU can run work.
    Warning,
    /// Do not run work on it until the reason is dealt with.
    Unhealthy,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Healthy => "healthy",
            Verdict::Warning => "warning",
            Verdict::Unhealthy => "unhealthy",
        })
    }
}

/// What kind of problem, as the manifest's `ignore:` list names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Hot,
    UncorrectedEcc,
    PastUncorrectedEcc,
    PendingPageRetirement,
    RowRemapPending,
    RowRemapFailure,
    PcieDegraded,
    Throttled,
    Xid,
    Unreadable,
}

/// One thing wrong with a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    Hot {
        temperature_c: u32,
        max_c: u32,
    },
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    UncorrectedEcc {
        count: u64,
    },
    /// Uncorrected ECC errors in the GPU's lifetime, none since the driver loaded.
    PastUncorrectedEcc {
        count: u64,
    },
    PendingPageRetirement,
    RowRemapPending,
    RowRemapFailure,
    /// The link runs narrower or (while busy) slower than it can. Generation is judged only while
    /// the GPU works: an idle link trains down to save power, which is normal.
    PcieDegraded {
        current_gen: u32,
        max_gen: u32,
        current_width: u32,
        max_width: u32,
    },
    /// Clocks held back by hardware protection or thermal slowdown (not by an idle GPU or its
    /// power cap, which are normal).
    Throttled {
        reasons: Vec<ClockEventReason>,
    },
    Xid {
        xid: u64,
        count: u64,
        last_seen: u64,
    },
    /// NVML failed to read a field for another reason than "not supported".
    Unreadable {
        field: String,
        error: String,
    },
}

/// XIDs that mean the GPU or its memory is in trouble (NVIDIA's XID catalogue): 48 double-bit
/// ECC, 61/62 internal micro-controller, 64 page retirement or row remap failure, 74 NVLink,
/// 79 fallen off the bus, 92 high single-bit ECC rate, 94/95 contained/uncontained ECC,
/// 119/120 GSP. Others (13, 31, 43, ...) are usually the application's fault.
const CRITICAL_XIDS: [u64; 11] = [48, 61, 62, 64, 74, 79, 92, 94, 95, 119, 120];

/// The clock event reasons that point at hardware trouble.
const BAD_THROTTLE: [ClockEventReason; 4] = [
    ClockEventReason::HwSlowdown,
    ClockEventReason::HwThermalSlowdown,
    ClockEventReason::HwPowerBrakeSlowdown,
    ClockEventReason::SwThermalSlowdown,
];

impl Problem {
    pub fn kind(&self) -> ProblemKind {
        match self {
            Problem::Hot { .. } => ProblemKind::Hot,
            Problem::UncorrectedEcc { .. } => ProblemKind::UncorrectedEcc,
            Problem::PastUncorrectedEcc { .. } => ProblemKind::PastUncorrectedEcc,
            Problem::PendingPageRetirement => ProblemKind::PendingPageRetirement,
            Problem::RowRemapPending => ProblemKind::RowRemapPending,
            Problem::RowRemapFailure => ProblemKind::RowRemapFailure,
            Problem::PcieDegraded { .. } => ProblemKind::PcieDegraded,
            Problem::Throttled { .. } => ProblemKind::Throttled,
            Problem::Xid { .. } => ProblemKind::Xid,
            Problem::Unreadable { .. } => ProblemKind::Unreadable,
        }
    }

    /// How bad it is.
    pub fn verdict(&self) -> Verdict {
        match self {
            Problem::PastUncorrectedEcc { .. } | Problem::Unreadable { .. } => Verdict::Warning,
            Problem::Throttled { reasons } if reasons == &[ClockEventReason::SwThermalSlowdown] => {
                Verdict::Warning
            }
            Problem::Xid { xid, .. } if !CRITICAL_XIDS.contains(xid) => Verdict::Warning,
            _ => Verdict::Unhealthy,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Hot { temperature_c, max_c } => write!(
                f,
                "temperature {temperature_c} °C is above {max_c} °C: check the fans, airflow and room temperature"
            ),
            Problem::UncorrectedEcc { count } => write!(
                f,
                "{count} uncorrected ECC error(s) since the driver loaded: drain the node, reset the GPU (nvidia-smi -r) or reboot, and replace the GPU if they come back"
            ),
            Problem::PastUncorrectedEcc { count } => write!(
                f,
                "{count} uncorrected ECC error(s) in the GPU's lifetime, none since the driver loaded: watch for new ones"
            ),
            Problem::PendingPageRetirement => f.write_str(
                "a memory page retirement is pending: reload the driver or reboot to retire the page",
            ),
            Problem::RowRemapPending => f.write_str(
                "a memory row remap is pending: reset the GPU (nvidia-smi -r) or reboot to apply it",
            ),
            Problem::RowRemapFailure => f.write_str(
                "memory row remapping failed (no spare rows left): the GPU needs service or replacement",
            ),
            Problem::PcieDegraded {
                current_gen,
                max_gen,
                current_width,
                max_width,
            } => write!(
                f,
                "PCIe link runs at Gen{current_gen} x{current_width}, below its Gen{max_gen} x{max_width}: reseat the card, check the slot, riser and BIOS PCIe settings"
            ),
            Problem::Throttled { reasons } => {
                let words: Vec<&str> = reasons.iter().map(|r| r.word()).collect();
                write!(
                    f,
                    "clocks held back by {}: check cooling, power supply and cables",
                    words.join(", ")
                )
            }
            Problem::Xid {
                xid,
                count,
                last_seen,
            } => {
                let when = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(*last_seen),
                );
                write!(f, "XID {xid} seen {count} time(s), last at {when}")?;
                if let Some(meaning) = xid_meaning(*xid) {
                    write!(f, ": {meaning}")?;
                }
                Ok(())
            }
            Problem::Unreadable { field, error } => {
                write!(f, "could not read {field}: {error}")
            }
        }
    }
}

/// What a few well-known XIDs mean (NVIDIA's XID catalogue).
pub fn xid_meaning(xid: u64) -> Option<&'static str> {
    Some(match xid {
        13 => "graphics engine exception (usually the application)",
        31 => "GPU memory page fault (usually the application)",
        43 => "GPU stopped processing (usually the application)",
        48 => "double-bit ECC error",
        61 | 62 => "internal micro-controller error: reset the GPU",
        63 => "ECC page retirement or row remap recorded",
        64 => "ECC page retirement or row remap failed",
        74 => "NVLink error",
        79 => "the GPU has fallen off the bus: check power, seating and the PCIe slot",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error: restart the affected application",
        95 => "uncontained ECC error: reset the GPU",
        119 | 120 => "GSP firmware error: reset the GPU",
        _ => return None,
    })
}

/// One finding: the problem, how bad it is, and the sentence a person reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub verdict: Verdict,
    #[serde(flatten)]
    pub problem: Problem,
    pub text: String,
}

/// The verdict on one GPU and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuHealth {
    pub index: u32,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

/// Judges every GPU of a report.
pub fn evaluate_all(gpus: &[GpuRecord], limits: Limits) -> Vec<GpuHealth> {
    gpus.iter().map(|g| evaluate(g, limits)).collect()
}

/// Judges one GPU.
pub fn evaluate(gpu: &GpuRecord, limits: Limits) -> GpuHealth {
    let findings: Vec<Finding> = problems(gpu, limits)
        .into_iter()
        .map(|problem| Finding {
            verdict: problem.verdict(),
            text: problem.to_string(),
            problem,
        })
        .collect();
    GpuHealth {
        index: gpu.index,
        verdict: findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or(Verdict::Healthy),
        findings,
    }
}

/// Every problem of one GPU, in a fixed order.
pub fn problems(gpu: &GpuRecord, limits: Limits) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(&t) = gpu.temperature_c.value()
        && t > limits.max_temperature_c
    {
        out.push(Problem::Hot {
            temperature_c: t,
            max_c: limits.max_temperature_c,
        });
    }
    let ecc = &gpu.ecc_errors;
    match (
        ecc.volatile_uncorrected.value(),
        ecc.aggregate_uncorrected.value(),
    ) {
        (Some(&v), _) if v > 0 => out.push(Problem::UncorrectedEcc { count: v }),
        (_, Some(&a)) if a > 0 => out.push(Problem::PastUncorrectedEcc { count: a }),
        _ => {}
    }
    if gpu.retired_pages.pending.value() == Some(&true) {
        out.push(Problem::PendingPageRetirement);
    }
    if gpu.remapped_rows.pending.value() == Some(&true) {
        out.push(Problem::RowRemapPending);
    }
    if gpu.remapped_rows.failure.value() == Some(&true) {
        out.push(Problem::RowRemapFailure);
    }
    if let Some(p) = pcie_problem(gpu) {
        out.push(p);
    }
    if let Some(reasons) = gpu.clock_event_reasons.value() {
        let bad: Vec<ClockEventReason> = reasons
            .iter()
            .copied()
            .filter(|r| BAD_THROTTLE.contains(r))
            .collect();
        if !bad.is_empty() {
            out.push(Problem::Throttled { reasons: bad });
        }
    }
    if let Some(xids) = &gpu.xids {
        for (&xid, c) in &xids.counts {
            out.push(Problem::Xid {
                xid,
                count: c.count,
                last_seen: c.last_seen,
            });
        }
    }
    for (field, error) in unreadable(gpu) {
        out.push(Problem::Unreadable {
            field: field.to_owned(),
            error: error.to_owned(),
        });
    }
    out
}

fn pcie_problem(gpu: &GpuRecord) -> Option<Problem> {
    let p = &gpu.pcie;
    let (&cg, &mg, &cw, &mw) = (
        p.current_gen.value()?,
        p.max_gen.value()?,
        p.current_width.value()?,
        p.max_width.value()?,
    );
    // Busy: not marked idle and doing something. Unknown counts as idle, so a GPU that reports
    // neither is never blamed for a power-saving link.
    let idle_reason = gpu
        .clock_event_reasons
        .value()
        .is_none_or(|r| r.contains(&ClockEventReason::GpuIdle));
    let busy = !idle_reason && gpu.utilization.value().is_some_and(|u| u.gpu_percent > 0);
    (cw < mw || (busy && cg < mg)).then_some(Problem::PcieDegraded {
        current_gen: cg,
        max_gen: mg,
        current_width: cw,
        max_width: mw,
    })
}

/// The fields NVML failed to read (not "not supported"), by their JSON name.
fn unreadable(g: &GpuRecord) -> Vec<(&'static str, &str)> {
    let fields: [(&'static str, Option<&str>); 31] = [
        ("name", g.name.error()),
        ("uuid", g.uuid.error()),
        ("pci_bus_id", g.pci_bus_id.error()),
        ("compute_capability", g.compute_capability.error()),
        ("memory", g.memory.error()),
        ("utilization", g.utilization.error()),
        ("temperature_c", g.temperature_c.error()),
        ("power_draw_mw", g.power_draw_mw.error()),
        ("power_limit_mw", g.power_limit_mw.error()),
        ("clocks.graphics_mhz", g.clocks.graphics_mhz.error()),
        ("clocks.sm_mhz", g.clocks.sm_mhz.error()),
        ("clocks.memory_mhz", g.clocks.memory_mhz.error()),
        ("clocks.sm_max_mhz", g.clocks.sm_max_mhz.error()),
        ("clocks.memory_max_mhz", g.clocks.memory_max_mhz.error()),
        ("clock_event_reasons", g.clock_event_reasons.error()),
        ("ecc_mode", g.ecc_mode.error()),
        (
            "ecc_errors.volatile_corrected",
            g.ecc_errors.volatile_corrected.error(),
        ),
        (
            "ecc_errors.volatile_uncorrected",
            g.ecc_errors.volatile_uncorrected.error(),
        ),
        (
            "ecc_errors.aggregate_corrected",
            g.ecc_errors.aggregate_corrected.error(),
        ),
        (
            "ecc_errors.aggregate_uncorrected",
            g.ecc_errors.aggregate_uncorrected.error(),
        ),
        (
            "retired_pages.single_bit",
            g.retired_pages.single_bit.error(),
        ),
        (
            "retired_pages.double_bit",
            g.retired_pages.double_bit.error(),
        ),
        ("retired_pages.pending", g.retired_pages.pending.error()),
        (
            "remapped_rows.correctable",
            g.remapped_rows.correctable.error(),
        ),
        (
            "remapped_rows.uncorrectable",
            g.remapped_rows.uncorrectable.error(),
        ),
        ("remapped_rows.pending", g.remapped_rows.pending.error()),
        ("remapped_rows.failure", g.remapped_rows.failure.error()),
        ("pcie.current_gen", g.pcie.current_gen.error()),
        ("pcie.current_width", g.pcie.current_width.error()),
        ("pcie.max_gen", g.pcie.max_gen.error()),
        ("pcie.max_width", g.pcie.max_width.error()),
    ];
    fields
        .into_iter()
        .filter_map(|(name, e)| e.map(|e| (name, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::field::Field;
    use super::super::fixtures;
    use super::super::record::{Utilization, XidCount, XidCounts};
    use super::*;

    fn kinds(h: &GpuHealth) -> Vec<ProblemKind> {
        h.findings.iter().map(|f| f.problem.kind()).collect()
    }

    fn healthy_gpu() -> GpuRecord {
        fixtures::load("h100-sxm-healthy.json").gpus.remove(0)
    }

    #[test]
    fn an_idle_h100_is_healthy_despite_its_idle_link_and_unsupported_retirement() {
        let h = evaluate(&healthy_gpu(), Limits::default());
        assert_eq!(h.verdict, Verdict::Healthy, "{h:#?}");
        assert!(h.findings.is_empty());
    }

    #[test]
    fn hot() {
        let mut g = healthy_gpu();
        g.temperature_c = Field::Value(86);
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Unhealthy);
        assert_eq!(
            h.findings[0].text.split(':').next().unwrap(),
            "temperature 86 °C is above 85 °C"
        );
        g.temperature_c = Field::Value(85);
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Healthy);
        assert_eq!(
            evaluate(
                &g,
                Limits {
                    max_temperature_c: 80
                }
            )
            .verdict,
            Verdict::Unhealthy
        );
    }

    #[test]
    fn volatile_uncorrected_ecc_is_unhealthy_lifetime_only_a_warning() {
        let mut g = healthy_gpu();
        g.ecc_errors.aggregate_uncorrected = Field::Value(4);
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Warning);
        assert_eq!(kinds(&h), [ProblemKind::PastUncorrectedEcc]);
        g.ecc_errors.volatile_uncorrected = Field::Value(2);
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Unhealthy);
        assert_eq!(kinds(&h), [ProblemKind::UncorrectedEcc]);
        assert!(
            h.findings[0]
                .text
                .starts_with("2 uncorrected ECC error(s) since the driver loaded")
        );
    }

    #[test]
    fn pending_retirement_and_row_remaps() {
        let mut g = healthy_gpu();
        g.retired_pages.pending = Field::Value(true);
        g.remapped_rows.pending = Field::Value(true);
        g.remapped_rows.failure = Field::Value(true);
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Unhealthy);
        assert_eq!(
            kinds(&h),
            [
                ProblemKind::PendingPageRetirement,
                ProblemKind::RowRemapPending,
                ProblemKind::RowRemapFailure
            ]
        );
    }

    #[test]
    fn pcie_width_always_counts_generation_only_while_busy() {
        let mut g = healthy_gpu();
        // Idle at Gen1 of Gen5: normal power saving.
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Healthy);
        // Busy at Gen1: degraded.
        g.clock_event_reasons = Field::Value(vec![]);
        g.utilization = Field::Value(Utilization {
            gpu_percent: 90,
            memory_percent: 30,
        });
        let h = evaluate(&g, Limits::default());
        assert_eq!(kinds(&h), [ProblemKind::PcieDegraded]);
        assert!(
            h.findings[0]
                .text
                .starts_with("PCIe link runs at Gen1 x16, below its Gen5 x16")
        );
        // Narrow even when idle: degraded.
        let mut g = healthy_gpu();
        g.pcie.current_width = Field::Value(8);
        assert_eq!(
            kinds(&evaluate(&g, Limits::default())),
            [ProblemKind::PcieDegraded]
        );
        // Unknown link: nothing to judge.
        g.pcie.max_width = Field::NotSupported;
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Healthy);
    }

    #[test]
    fn throttling_counts_only_for_bad_reasons() {
        let mut g = healthy_gpu();
        for fine in [
            vec![ClockEventReason::GpuIdle],
            vec![ClockEventReason::SwPowerCap],
            vec![
                ClockEventReason::ApplicationsClocksSetting,
                ClockEventReason::SyncBoost,
            ],
        ] {
            g.clock_event_reasons = Field::Value(fine.clone());
            assert_eq!(
                evaluate(&g, Limits::default()).verdict,
                Verdict::Healthy,
                "{fine:?}"
            );
        }
        g.clock_event_reasons = Field::Value(vec![ClockEventReason::SwThermalSlowdown]);
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Warning);
        g.clock_event_reasons = Field::Value(vec![
            ClockEventReason::SwPowerCap,
            ClockEventReason::HwPowerBrakeSlowdown,
        ]);
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Unhealthy);
        assert_eq!(
            h.findings[0].problem,
            Problem::Throttled {
                reasons: vec![ClockEventReason::HwPowerBrakeSlowdown]
            }
        );
    }

    #[test]
    fn xids_critical_or_not() {
        let mut g = healthy_gpu();
        let one = XidCount {
            count: 2,
            first_seen: 1_767_225_000,
            last_seen: 1_767_225_600,
        };
        g.xids = Some(XidCounts {
            since: 0,
            counts: [(13, one)].into(),
            last: Some(13),
        });
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Warning);
        g.xids = Some(XidCounts {
            since: 0,
            counts: [(13, one), (79, one)].into(),
            last: Some(79),
        });
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Unhealthy);
        assert_eq!(
            h.findings[1].text,
            "XID 79 seen 2 time(s), last at 2026-01-01T00:00:00Z: the GPU has fallen off the bus: check power, seating and the PCIe slot"
        );
        // Watched and quiet: healthy.
        g.xids = Some(XidCounts::default());
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Healthy);
    }

    #[test]
    fn unsupported_fields_are_tolerated_errors_are_warnings() {
        let mut g = healthy_gpu();
        g.ecc_mode = Field::NotSupported;
        g.ecc_errors.volatile_uncorrected = Field::NotSupported;
        g.ecc_errors.aggregate_uncorrected = Field::NotSupported;
        g.remapped_rows.pending = Field::NotSupported;
        g.temperature_c = Field::NotSupported;
        g.clock_event_reasons = Field::NotSupported;
        assert_eq!(evaluate(&g, Limits::default()).verdict, Verdict::Healthy);
        g.power_draw_mw = Field::Error("Insufficient Permissions".into());
        let h = evaluate(&g, Limits::default());
        assert_eq!(h.verdict, Verdict::Warning);
        assert_eq!(
            h.findings[0].text,
            "could not read power_draw_mw: Insufficient Permissions"
        );
    }

    #[test]
    fn every_fixture_gets_the_verdicts_its_readme_promises() {
        let verdicts = |name: &str| -> Vec<(Verdict, Vec<ProblemKind>)> {
            evaluate_all(&fixtures::load(name).gpus, Limits::default())
                .iter()
                .map(|h| (h.verdict, kinds(h)))
                .collect()
        };
        use ProblemKind as K;
        use Verdict::{Healthy, Unhealthy};
        assert_eq!(verdicts("h100-sxm-healthy.json"), [(Healthy, vec![])]);
        assert_eq!(
            verdicts("a100-pending-remap.json"),
            [
                (Unhealthy, vec![K::UncorrectedEcc, K::RowRemapPending]),
                (Unhealthy, vec![K::PastUncorrectedEcc, K::RowRemapFailure]),
            ]
        );
        assert_eq!(
            verdicts("old-workstation.json"),
            [
                (Unhealthy, vec![K::Hot, K::Throttled]),
                (
                    Unhealthy,
                    vec![
                        K::PastUncorrectedEcc,
                        K::PendingPageRetirement,
                        K::Unreadable
                    ]
                ),
            ]
        );
        let dgx = verdicts("dgx-h100-8gpu.json");
        assert_eq!(dgx.len(), 8);
        for (i, v) in dgx.iter().enumerate() {
            let expected = match i {
                3 => (Unhealthy, vec![K::PcieDegraded]),
                6 => (Unhealthy, vec![K::Xid]),
                _ => (Healthy, vec![]),
            };
            assert_eq!(v, &expected, "GPU {i}");
        }
    }
}
