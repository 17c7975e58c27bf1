//! The report as people read it: the driver line, one row per GPU, then each GPU's details and
//! the reasons for its verdict. "n/a" means the GPU does not support a field; "error" means NVML
//! failed to read it (the reason is among the findings).

use std::fmt::{Display, Write};

use super::field::Field;
use super::health::{GpuHealth, Verdict};
use super::record::{GpuRecord, GpuReport};

const MIB: u64 = 1024 * 1024;

fn show<T: Display>(f: &Field<T>) -> String {
    match f {
        Field::Value(v) => v.to_string(),
        Field::NotSupported => "n/a".into(),
        Field::Error(_) => "error".into(),
    }
}

fn with<T>(f: &Field<T>, render: impl FnOnce(&T) -> String) -> String {
    match f {
        Field::Value(v) => render(v),
        Field::NotSupported => "n/a".into(),
        Field::Error(_) => "error".into(),
    }
}

fn yes_no(f: &Field<bool>) -> String {
    with(f, |&b| if b { "yes" } else { "no" }.into())
}

fn row(g: &GpuRecord, verdict: Option<Verdict>) -> Vec<String> {
    let watts = |f: &Field<u32>| with(f, |&mw| format!("{}", mw / 1000));
    vec![
        g.index.to_string(),
        show(&g.name),
        show(&g.compute_capability),
        with(&g.memory, |m| {
            format!("{}/{}", m.used_bytes / MIB, m.total_bytes / MIB)
        }),
        with(&g.utilization, |u| format!("{}%", u.gpu_percent)),
        with(&g.temperature_c, |t| format!("{t} C")),
        format!("{}/{}", watts(&g.power_draw_mw), watts(&g.power_limit_mw)),
        show(&g.clocks.sm_mhz),
        format!(
            "Gen{}/{} x{}/{}",
            show(&g.pcie.current_gen),
            show(&g.pcie.max_gen),
            show(&g.pcie.current_width),
            show(&g.pcie.max_width)
        ),
        show(&g.ecc_errors.volatile_uncorrected),
        verdict.map_or_else(|| "-".into(), |v| v.to_string()),
    ]
}

/// Pads every column to its widest cell; the last column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == n {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render(report: &GpuReport, health: &[GpuHealth]) -> String {
    let mut out = String::new();
    let when = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(report.read_at),
    );
    let _ = writeln!(
        out,
        "{}: driver {}, CUDA {}, NVML {}, {} GPU(s), read {when}",
        report.hostname,
        show(&report.driver_version),
        show(&report.cuda_driver_version),
        show(&report.nvml_version),
        report.gpus.len(),
    );
    if report.gpus.is_empty() {
        out.push_str("the driver is loaded but lists no GPUs\n");
        return out;
    }
    out.push('\n');
    let verdict_of = |i: u32| health.iter().find(|h| h.index == i);
    let mut rows = vec![
        [
            "GPU",
            "NAME",
            "CC",
            "MEM MiB",
            "UTIL",
            "TEMP",
            "POWER W",
            "SM MHz",
            "PCIE now/max",
            "ECC UNC",
            "HEALTH",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(
        report
            .gpus
            .iter()
            .map(|g| row(g, verdict_of(g.index).map(|h| h.verdict))),
    );
    out.push_str(&columns(&rows));
    for g in &report.gpus {
        let _ = writeln!(
            out,
            "\nGPU {}  {}  {}",
            g.index,
            show(&g.uuid),
            show(&g.pci_bus_id)
        );
        let _ = writeln!(
            out,
            "  clocks:        graphics {} MHz, SM {}/{} MHz, memory {}/{} MHz",
            show(&g.clocks.graphics_mhz),
            show(&g.clocks.sm_mhz),
            show(&g.clocks.sm_max_mhz),
            show(&g.clocks.memory_mhz),
            show(&g.clocks.memory_max_mhz)
        );
        let _ = writeln!(
            out,
            "  clock events:  {}",
            with(&g.clock_event_reasons, |r| if r.is_empty() {
                "none".into()
            } else {
                r.iter().map(|r| r.word()).collect::<Vec<_>>().join(", ")
            })
        );
        let e = &g.ecc_errors;
        let _ = writeln!(
            out,
            "  ECC:           {}; volatile {} corrected, {} uncorrected; aggregate {} corrected, {} uncorrected",
            with(&g.ecc_mode, |m| match (m.enabled, m.pending_enabled) {
                (true, true) => "on".into(),
                (false, false) => "off".into(),
                (true, false) => "on (off after reboot)".into(),
                (false, true) => "off (on after reboot)".into(),
            }),
            show(&e.volatile_corrected),
            show(&e.volatile_uncorrected),
            show(&e.aggregate_corrected),
            show(&e.aggregate_uncorrected)
        );
        let p = &g.retired_pages;
        let _ = writeln!(
            out,
            "  retired pages: {} single-bit, {} double-bit, pending {}",
            show(&p.single_bit),
            show(&p.double_bit),
            yes_no(&p.pending)
        );
        let r = &g.remapped_rows;
        let _ = writeln!(
            out,
            "  remapped rows: {} correctable, {} uncorrectable, pending {}, failure {}",
            show(&r.correctable),
            show(&r.uncorrectable),
            yes_no(&r.pending),
            yes_no(&r.failure)
        );
        if let Some(x) = &g.xids {
            let list: Vec<String> = x
                .counts
                .iter()
                .map(|(xid, c)| format!("{xid} ×{}", c.count))
                .collect();
            let _ = writeln!(
                out,
                "  XIDs:          {}",
                if list.is_empty() {
                    "none while watched".into()
                } else {
                    list.join(", ")
                }
            );
        }
        if let Some(h) = verdict_of(g.index) {
            let _ = writeln!(out, "  health:        {}", h.verdict);
            for f in &h.findings {
                let _ = writeln!(out, "    {}: {}", f.verdict, f.text);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{fixtures, health};
    use super::*;

    #[test]
    fn every_fixture_has_one_row_and_one_detail_block_per_gpu() {
        for name in fixtures::ALL {
            let report = fixtures::load(name);
            let health = health::evaluate_all(&report.gpus, health::Limits::default());
            let out = render(&report, &health);
            for g in &report.gpus {
                let verdict = health[g.index as usize].verdict.to_string();
                assert!(
                    out.lines()
                        .any(|l| l.starts_with(&format!("{} ", g.index)) && l.ends_with(&verdict)),
                    "{name}: row of GPU {}\n{out}",
                    g.index
                );
                assert!(
                    out.contains(&format!("\nGPU {}  GPU-", g.index)),
                    "{name}\n{out}"
                );
            }
        }
    }
}
