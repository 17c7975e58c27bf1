//! What `provision gpu` records: the values NVML gave for the driver and for each GPU, as plain
//! data. Health is judged from this record alone (`health.rs`), so a report saved on one node can
//! be rendered and judged anywhere (`provision gpu --from-file`).
//!
//! Units are NVML's: bytes, milliwatts, MHz, degrees Celsius, percent. The JSON form is documented
//! in docs/gpu.md; fields are only ever added, and `format_version` changes if one has to change
//! meaning.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::field::Field;

/// The current `format_version`.
pub const FORMAT_VERSION: u32 = 1;

/// Everything read from NVML on one node at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    pub format_version: u32,
    /// The node's hostname (the `Hostname` label of the Prometheus output).
    pub hostname: String,
    /// When the values were read, seconds since the Unix epoch.
    pub read_at: u64,
    /// The kernel driver's version, e.g. `550.54.15`.
    pub driver_version: Field<String>,
    /// The newest CUDA version the driver supports, e.g. 12.4.
    pub cuda_driver_version: Field<CudaVersion>,
    /// The NVML library's version, e.g. `12.550.54.15`.
    pub nvml_version: Field<String>,
    pub gpus: Vec<GpuRecord>,
}

/// A CUDA version as the driver reports it (`major.minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CudaVersion {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for CudaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    /// NVML's index (the order of `nvidia-smi`, not necessarily `CUDA_VISIBLE_DEVICES`').
    pub index: u32,
    pub name: Field<String>,
    pub uuid: Field<String>,
    /// `domain:bus:device.function`, e.g. `00000000:18:00.0`.
    pub pci_bus_id: Field<String>,
    pub compute_capability: Field<ComputeCapability>,
    pub memory: Field<Memory>,
    pub utilization: Field<Utilization>,
    pub temperature_c: Field<u32>,
    pub power_draw_mw: Field<u32>,
    /// The power limit the driver enforces.
    pub power_limit_mw: Field<u32>,
    pub clocks: Clocks,
    /// Why the clocks are below their maximum right now (NVML's clock event, formerly
    /// "throttle", reasons). Empty: not held back.
    pub clock_event_reasons: Field<Vec<ClockEventReason>>,
    pub ecc_mode: Field<EccMode>,
    pub ecc_errors: EccErrors,
    /// Dynamic page retirement (GPUs before Ampere).
    pub retired_pages: RetiredPages,
    /// Row remapping (Ampere and later; replaces page retirement).
    pub remapped_rows: RemappedRows,
    pub pcie: Pcie,
    /// XID errors seen while watching (`provision gpu --watch`, the agent). Absent: nobody was
    /// watching, which is not the same as "no XIDs".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xids: Option<XidCounts>,
}

/// A CUDA compute capability such as 5.2 (Maxwell) or 9.0 (Hopper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Frame buffer memory, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

/// Percent of the last sample period the GPU (kernels) and its memory (reads/writes) were busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utilization {
    pub gpu_percent: u32,
    pub memory_percent: u32,
}

/// Current and maximum clocks, MHz.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clocks {
    pub graphics_mhz: Field<u32>,
    pub sm_mhz: Field<u32>,
    pub memory_mhz: Field<u32>,
    pub sm_max_mhz: Field<u32>,
    pub memory_max_mhz: Field<u32>,
}

/// One reason the clocks are held below their maximum (`nvmlClocksEventReasons`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockEventReason {
    /// Nothing runs: clocks are low on purpose.
    GpuIdle,
    /// Application clocks (or locked clocks) were set by an administrator.
    ApplicationsClocksSetting,
    /// Software power capping: the board is at its power limit.
    SwPowerCap,
    /// Hardware slowdown: temperature too high, external power brake or a power supply fault.
    HwSlowdown,
    /// Clocks synchronised with other GPUs (sync boost).
    SyncBoost,
    /// Software thermal slowdown: GPU or memory temperature above its maximum operating point.
    SwThermalSlowdown,
    /// Hardware thermal slowdown: the temperature is too high.
    HwThermalSlowdown,
    /// Hardware power brake: an external signal (often the power supply) cut the clocks.
    HwPowerBrakeSlowdown,
    /// Clocks follow the display's needs.
    DisplayClockSetting,
}

impl ClockEventReason {
    /// Every reason, in bit order.
    pub const ALL: [ClockEventReason; 9] = [
        ClockEventReason::GpuIdle,
        ClockEventReason::ApplicationsClocksSetting,
        ClockEventReason::SwPowerCap,
        ClockEventReason::HwSlowdown,
        ClockEventReason::SyncBoost,
        ClockEventReason::SwThermalSlowdown,
        ClockEventReason::HwThermalSlowdown,
        ClockEventReason::HwPowerBrakeSlowdown,
        ClockEventReason::DisplayClockSetting,
    ];

    /// The bit in NVML's mask (`nvmlClocksEventReason*` in nvml.h), also the value of DCGM's
    /// `DCGM_FI_DEV_CLOCKS_EVENT_REASONS`.
    pub fn bit(self) -> u64 {
        match self {
            ClockEventReason::GpuIdle => 0x1,
            ClockEventReason::ApplicationsClocksSetting => 0x2,
            ClockEventReason::SwPowerCap => 0x4,
            ClockEventReason::HwSlowdown => 0x8,
            ClockEventReason::SyncBoost => 0x10,
            ClockEventReason::SwThermalSlowdown => 0x20,
            ClockEventReason::HwThermalSlowdown => 0x40,
            ClockEventReason::HwPowerBrakeSlowdown => 0x80,
            ClockEventReason::DisplayClockSetting => 0x100,
        }
    }

    /// The reasons set in an NVML mask; unknown bits are dropped.
    pub fn decode(mask: u64) -> Vec<ClockEventReason> {
        ClockEventReason::ALL
            .into_iter()
            .filter(|r| mask & r.bit() != 0)
            .collect()
    }

    /// The NVML mask of `reasons`.
    pub fn encode(reasons: &[ClockEventReason]) -> u64 {
        reasons.iter().fold(0, |mask, r| mask | r.bit())
    }

    /// As in the JSON form: `hw_slowdown`.
    pub fn word(self) -> &'static str {
        match self {
            ClockEventReason::GpuIdle => "gpu_idle",
            ClockEventReason::ApplicationsClocksSetting => "applications_clocks_setting",
            ClockEventReason::SwPowerCap => "sw_power_cap",
            ClockEventReason::HwSlowdown => "hw_slowdown",
            ClockEventReason::SyncBoost => "sync_boost",
            ClockEventReason::SwThermalSlowdown => "sw_thermal_slowdown",
            ClockEventReason::HwThermalSlowdown => "hw_thermal_slowdown",
            ClockEventReason::HwPowerBrakeSlowdown => "hw_power_brake_slowdown",
            ClockEventReason::DisplayClockSetting => "display_clock_setting",
        }
    }
}

impl fmt::Display for ClockEventReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// ECC mode now and after the next reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccMode {
    pub enabled: bool,
    pub pending_enabled: bool,
}

/// ECC error counts: volatile since the driver loaded, aggregate over the GPU's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EccErrors {
    pub volatile_corrected: Field<u64>,
    pub volatile_uncorrected: Field<u64>,
    pub aggregate_corrected: Field<u64>,
    pub aggregate_uncorrected: Field<u64>,
}

/// Pages retired for ECC errors, and whether a retirement waits for the next driver reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredPages {
    /// Retired for multiple single-bit errors.
    pub single_bit: Field<u64>,
    /// Retired for a double-bit error.
    pub double_bit: Field<u64>,
    pub pending: Field<bool>,
}

/// Memory rows remapped to spares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemappedRows {
    pub correctable: Field<u64>,
    pub uncorrectable: Field<u64>,
    /// A remap is recorded but takes effect only after a GPU reset.
    pub pending: Field<bool>,
    /// A remap failed: no spare row was left. The GPU needs service.
    pub failure: Field<bool>,
}

/// The PCIe link now and at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pcie {
    pub current_gen: Field<u32>,
    pub max_gen: Field<u32>,
    pub current_width: Field<u32>,
    pub max_width: Field<u32>,
}

/// XIDs seen on one GPU while watching, by XID number.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidCounts {
    /// When watching started, seconds since the Unix epoch.
    pub since: u64,
    pub counts: BTreeMap<u64, XidCount>,
    /// The most recent XID (what dcgm-exporter's `DCGM_FI_DEV_XID_ERRORS` shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
}

/// How often one XID happened, and when first and last (seconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidCount {
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_event_masks_decode_to_words_and_back() {
        assert_eq!(ClockEventReason::decode(0), vec![]);
        assert_eq!(
            ClockEventReason::decode(0x1 | 0x8 | 0x40),
            vec![
                ClockEventReason::GpuIdle,
                ClockEventReason::HwSlowdown,
                ClockEventReason::HwThermalSlowdown
            ]
        );
        // Bits NVML may add later are dropped, not misread.
        assert_eq!(
            ClockEventReason::decode(0x4 | 0x8000_0000),
            vec![ClockEventReason::SwPowerCap]
        );
        for r in ClockEventReason::ALL {
            assert_eq!(ClockEventReason::decode(r.bit()), vec![r]);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.word())
            );
        }
        assert_eq!(ClockEventReason::encode(&ClockEventReason::ALL), 0x1ff);
    }
}
