//! `provision gpu`: read NVML (or a saved report), judge every GPU, print a table, JSON or
//! Prometheus text.
//!
//! Exit codes (docs/gpu.md): 0 report printed, no GPU unhealthy; 4 at least one GPU unhealthy;
//! 5 no NVIDIA driver, or NVML would not start (the reason on stderr, nothing on stdout);
//! 1 usage, or a `--from-file` that cannot be read.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::gpu::health::{self, GpuHealth, Limits, Verdict};
use crate::gpu::{GpuReport, prometheus, table};

#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Print the report as one JSON object (docs/gpu.md); `--from-file` reads it back.
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print Prometheus text exposition format with dcgm-exporter's metric names.
    #[arg(long)]
    prometheus: bool,
    /// Render a report saved with `--json` (on this node or another) instead of reading NVML.
    #[arg(long, value_name = "REPORT.json")]
    from_file: Option<PathBuf>,
    /// A GPU hotter than this (°C) is unhealthy.
    #[arg(long, value_name = "CELSIUS", default_value_t = Limits::default().max_temperature_c)]
    max_temperature: u32,
    /// After reading, record XID errors for this long (e.g. `30s`, `5m`) and report them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "from_file")]
    watch: Option<Duration>,
    /// The root a `provision agent` runs for: the XIDs it recorded since it started are added to
    /// the report (read from its status API, at the address it wrote under this root).
    #[arg(long, default_value = "/", env = "PROVISION_ROOT")]
    root: PathBuf,
}

/// The JSON output: the report as read, plus the verdicts.
#[derive(serde::Serialize)]
struct JsonOut<'a> {
    #[serde(flatten)]
    report: &'a GpuReport,
    health: &'a [GpuHealth],
}

/// Why `provision gpu` printed no report.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("{0}\n  hint: {hint}", hint = .0.hint())]
    Read(#[from] crate::gpu::ReadError),
    #[error("cannot read the GPU report {}: {reason}\n  hint: give a file written by `provision gpu --json`", path.display())]
    FromFile { path: PathBuf, reason: String },
}

impl GpuError {
    pub fn exit_code(&self) -> u8 {
        match self {
            GpuError::Read(_) => 5,
            GpuError::FromFile { .. } => 1,
        }
    }
}

/// Adds the XIDs the node's agent recorded, where an agent wrote its status address under `root`.
/// Without one the report says the XIDs were not watched; an agent that does not answer is noted
/// on stderr, and the report goes on without them.
fn agent_xids(root: &std::path::Path, report: &mut GpuReport) {
    let Ok(addr) = std::fs::read_to_string(root.join("var/lib/provision/status.addr")) else {
        return;
    };
    let addr = addr.trim();
    match crate::cli::status::get(addr, "/gpu/xids", None)
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
    {
        Some(doc) => {
            if !crate::gpu::xid::attach_agent_json(&doc, report) {
                eprintln!(
                    "note: the agent at {addr} records no XIDs ({})",
                    doc["reason"].as_str().unwrap_or("no reason given")
                );
            }
        }
        None => eprintln!(
            "note: XIDs left out: the agent at {addr} does not answer (`provision gpu --watch 1m` records them for a while)"
        ),
    }
}

pub fn run(args: &GpuArgs) -> Result<u8, GpuError> {
    let report = match &args.from_file {
        Some(path) => {
            let failed = |reason: String| GpuError::FromFile {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
            serde_json::from_str::<GpuReport>(&text).map_err(|e| failed(e.to_string()))?
        }
        None => {
            let host = crate::facts::hostname();
            match args.watch {
                Some(d) => crate::gpu::read::read_watching(&host, d)?,
                None => {
                    let mut report = crate::gpu::read(&host)?;
                    agent_xids(&args.root, &mut report);
                    report
                }
            }
        }
    };
    let limits = Limits {
        max_temperature_c: args.max_temperature,
    };
    let health = health::evaluate_all(&report.gpus, limits);
    if args.json {
        let out = JsonOut {
            report: &report,
            health: &health,
        };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else if args.prometheus {
        print!("{}", prometheus::render(&report, &health));
    } else {
        print!("{}", table::render(&report, &health));
    }
    Ok(if health.iter().any(|h| h.verdict == Verdict::Unhealthy) {
        4
    } else {
        0
    })
}
