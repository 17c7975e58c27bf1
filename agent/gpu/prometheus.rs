//! The report in Prometheus' text exposition format, with dcgm-exporter's metric names and labels,
//! so dashboards and alerts written for dcgm-exporter keep working (for example as a node
//! exporter textfile collector: `provision gpu --prometheus > /var/lib/node_exporter/gpu.prom`).
//!
//! A field the GPU does not support (or NVML failed to read) gives no sample, as with
//! dcgm-exporter. XID metrics appear only when XIDs were watched.

use std::fmt::Write;

use super::field::Field;
use super::health::{GpuHealth, Verdict};
use super::record::{ClockEventReason, GpuRecord, GpuReport};

const MIB: u64 = 1024 * 1024;

/// One metric: name, type, help, and how to get its value from a GPU.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&GpuRecord) -> Option<String>,
}

fn int<T: ToString>(f: &Field<T>) -> Option<String> {
    f.value().map(ToString::to_string)
}

fn flag(f: &Field<bool>) -> Option<String> {
    f.value().map(|&b| u8::from(b).to_string())
}

fn watts(f: &Field<u32>) -> Option<String> {
    f.value()
        .map(|&mw| format!("{:.3}", f64::from(mw) / 1000.0))
}

const METRICS: &[Metric] = &[
    Metric {
        name: "DCGM_FI_DEV_SM_CLOCK",
        kind: "gauge",
        help: "SM clock frequency (in MHz).",
        value: |g| int(&g.clocks.sm_mhz),
    },
    Metric {
        name: "DCGM_FI_DEV_MEM_CLOCK",
        kind: "gauge",
        help: "Memory clock frequency (in MHz).",
        value: |g| int(&g.clocks.memory_mhz),
    },
    Metric {
        name: "DCGM_FI_DEV_GPU_TEMP",
        kind: "gauge",
        help: "GPU temperature (in C).",
        value: |g| int(&g.temperature_c),
    },
    Metric {
        name: "DCGM_FI_DEV_POWER_USAGE",
        kind: "gauge",
        help: "Power draw (in W).",
        value: |g| watts(&g.power_draw_mw),
    },
    Metric {
        name: "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        kind: "gauge",
        help: "Power management limit (in W).",
        value: |g| watts(&g.power_limit_mw),
    },
    Metric {
        name: "DCGM_FI_DEV_GPU_UTIL",
        kind: "gauge",
        help: "GPU utilization (in %).",
        value: |g| g.utilization.value().map(|u| u.gpu_percent.to_string()),
    },
    Metric {
        name: "DCGM_FI_DEV_MEM_COPY_UTIL",
        kind: "gauge",
        help: "Memory utilization (in %).",
        value: |g| g.utilization.value().map(|u| u.memory_percent.to_string()),
    },
    Metric {
        name: "DCGM_FI_DEV_FB_TOTAL",
        kind: "gauge",
        help: "Framebuffer memory total (in MiB).",
        value: |g| g.memory.value().map(|m| (m.total_bytes / MIB).to_string()),
    },
    Metric {
        name: "DCGM_FI_DEV_FB_FREE",
        kind: "gauge",
        help: "Framebuffer memory free (in MiB).",
        value: |g| g.memory.value().map(|m| (m.free_bytes / MIB).to_string()),
    },
    Metric {
        name: "DCGM_FI_DEV_FB_USED",
        kind: "gauge",
        help: "Framebuffer memory used (in MiB).",
        value: |g| g.memory.value().map(|m| (m.used_bytes / MIB).to_string()),
    },
    Metric {
        name: "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        kind: "gauge",
        help: "Current clock event (throttle) reasons, NVML bitmask.",
        value: |g| {
            g.clock_event_reasons
                .value()
                .map(|r| ClockEventReason::encode(r).to_string())
        },
    },
    Metric {
        name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        kind: "counter",
        help: "Total number of single-bit volatile ECC errors.",
        value: |g| int(&g.ecc_errors.volatile_corrected),
    },
    Metric {
        name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        kind: "counter",
        help: "Total number of double-bit volatile ECC errors.",
        value: |g| int(&g.ecc_errors.volatile_uncorrected),
    },
    Metric {
        name: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        kind: "counter",
        help: "Total number of single-bit persistent ECC errors.",
        value: |g| int(&g.ecc_errors.aggregate_corrected),
    },
    Metric {
        name: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        kind: "counter",
        help: "Total number of double-bit persistent ECC errors.",
        value: |g| int(&g.ecc_errors.aggregate_uncorrected),
    },
    Metric {
        name: "DCGM_FI_DEV_RETIRED_SBE",
        kind: "counter",
        help: "Total number of retired pages due to single-bit errors.",
        value: |g| int(&g.retired_pages.single_bit),
    },
    Metric {
        name: "DCGM_FI_DEV_RETIRED_DBE",
        kind: "counter",
        help: "Total number of retired pages due to double-bit errors.",
        value: |g| int(&g.retired_pages.double_bit),
    },
    Metric {
        name: "DCGM_FI_DEV_RETIRED_PENDING",
        kind: "gauge",
        help: "Whether a page retirement is pending (1) or not (0).",
        value: |g| flag(&g.retired_pages.pending),
    },
    Metric {
        name: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        kind: "counter",
        help: "Number of remapped rows for correctable errors.",
        value: |g| int(&g.remapped_rows.correctable),
    },
    Metric {
        name: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        kind: "counter",
        help: "Number of remapped rows for uncorrectable errors.",
        value: |g| int(&g.remapped_rows.uncorrectable),
    },
    Metric {
        name: "DCGM_FI_DEV_ROW_REMAP_PENDING",
        kind: "gauge",
        help: "Whether remapping of rows is pending.",
        value: |g| flag(&g.remapped_rows.pending),
    },
    Metric {
        name: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        kind: "gauge",
        help: "Whether remapping of rows has failed.",
        value: |g| flag(&g.remapped_rows.failure),
    },
    Metric {
        name: "DCGM_FI_DEV_PCIE_LINK_GEN",
        kind: "gauge",
        help: "PCIe current link generation.",
        value: |g| int(&g.pcie.current_gen),
    },
    Metric {
        name: "DCGM_FI_DEV_PCIE_MAX_LINK_GEN",
        kind: "gauge",
        help: "PCIe max link generation.",
        value: |g| int(&g.pcie.max_gen),
    },
    Metric {
        name: "DCGM_FI_DEV_PCIE_LINK_WIDTH",
        kind: "gauge",
        help: "PCIe current link width.",
        value: |g| int(&g.pcie.current_width),
    },
    Metric {
        name: "DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH",
        kind: "gauge",
        help: "PCIe max link width.",
        value: |g| int(&g.pcie.max_width),
    },
    Metric {
        name: "DCGM_FI_DEV_XID_ERRORS",
        kind: "gauge",
        help: "Value of the last XID error encountered (only while XIDs are watched).",
        value: |g| g.xids.as_ref().map(|x| x.last.unwrap_or(0).to_string()),
    },
];

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// dcgm-exporter's labels for one GPU.
fn labels(report: &GpuReport, g: &GpuRecord) -> String {
    let text = |f: &Field<String>| escape(f.value().map_or("", String::as_str));
    format!(
        "gpu=\"{}\",UUID=\"{}\",pci_bus_id=\"{}\",device=\"nvidia{}\",modelName=\"{}\",Hostname=\"{}\",DCGM_FI_DRIVER_VERSION=\"{}\"",
        g.index,
        text(&g.uuid),
        text(&g.pci_bus_id),
        g.index,
        text(&g.name),
        escape(&report.hostname),
        text(&report.driver_version),
    )
}

/// The whole exposition: every metric with at least one sample, HELP and TYPE once each.
pub fn render(report: &GpuReport, health: &[GpuHealth]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = report.gpus.iter().map(|g| labels(report, g)).collect();
    for m in METRICS {
        let samples: Vec<(usize, String)> = report
            .gpus
            .iter()
            .enumerate()
            .filter_map(|(i, g)| (m.value)(g).map(|v| (i, v)))
            .collect();
        if samples.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {} {}", m.name, m.kind);
        for (i, v) in samples {
            let _ = writeln!(out, "{}{{{}}} {v}", m.name, labels[i]);
        }
    }
    let xid_samples: Vec<String> = report
        .gpus
        .iter()
        .enumerate()
        .flat_map(|(i, g)| {
            let labels = &labels[i];
            g.xids.iter().flat_map(move |x| {
                x.counts.iter().map(move |(xid, c)| {
                    format!(
                        "DCGM_EXP_XID_ERRORS_COUNT{{{labels},xid=\"{xid}\"}} {}",
                        c.count
                    )
                })
            })
        })
        .collect();
    if !xid_samples.is_empty() {
        out.push_str(
            "# HELP DCGM_EXP_XID_ERRORS_COUNT Count of XID errors seen while watching, by XID.\n",
        );
        out.push_str("# TYPE DCGM_EXP_XID_ERRORS_COUNT counter\n");
        for s in xid_samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
    if !health.is_empty() {
        out.push_str("# HELP provision_gpu_health Health verdict of provision's rules: 0 healthy, 1 warning, 2 unhealthy.\n");
        out.push_str("# TYPE provision_gpu_health gauge\n");
        for h in health {
            let Some(i) = report.gpus.iter().position(|g| g.index == h.index) else {
                continue;
            };
            let code = match h.verdict {
                Verdict::Healthy => 0,
                Verdict::Warning => 1,
                Verdict::Unhealthy => 2,
            };
            let _ = writeln!(out, "provision_gpu_health{{{}}} {code}", labels[i]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
