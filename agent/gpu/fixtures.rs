//! The constructed fixtures of `tests/fixtures/gpu/` (see its README), for unit tests.

use super::record::GpuReport;

pub fn load(name: &str) -> GpuReport {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpu")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub const ALL: [&str; 4] = [
    "h100-sxm-healthy.json",
    "a100-pending-remap.json",
    "old-workstation.json",
    "dgx-h100-8gpu.json",
];
