//! Filling a [`GpuReport`] from NVML: one call per field, no `nvidia-smi` subprocess.
//!
//! The only part of the GPU code that talks to the driver. A machine without the NVIDIA driver
//! gives [`ReadError::NoDriver`], which callers report as a fact about the node, not a crash.

use std::time::{SystemTime, UNIX_EPOCH};

use nvml_wrapper::Device;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC,
};

use super::field::Field;
use super::record::{
    ClockEventReason, Clocks, ComputeCapability, CudaVersion, EccErrors, EccMode, FORMAT_VERSION,
    GpuRecord, GpuReport, Memory, Pcie, RemappedRows, RetiredPages, Utilization,
};

/// Why there is no report at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// `libnvidia-ml.so.1` cannot be loaded: the NVIDIA driver is not installed.
    #[error("no NVIDIA driver found (libnvidia-ml.so.1 not loadable)")]
    NoDriver { detail: String },
    /// The library is there but the kernel module is not loaded.
    #[error("the NVIDIA driver is installed but not loaded (NVML: {detail})")]
    DriverNotLoaded { detail: String },
    /// NVML is there but would not start.
    #[error("NVML failed to initialise: {detail}")]
    Init { detail: String },
}

impl ReadError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ReadError::NoDriver { .. } => {
                "install the NVIDIA driver (e.g. `apt install nvidia-driver-550` or `dnf install nvidia-driver`, or NVIDIA's .run installer) and reboot"
            }
            ReadError::DriverNotLoaded { .. } => {
                "load it (`modprobe nvidia`) or reboot, and check `dmesg` for why it did not load (Secure Boot signing, a kernel update without DKMS)"
            }
            ReadError::Init { .. } => {
                "check that the driver and libnvidia-ml.so.1 come from the same release (`nvidia-smi` says so), and that you may open /dev/nvidia*"
            }
        }
    }
}

impl From<NvmlError> for ReadError {
    fn from(e: NvmlError) -> ReadError {
        match e {
            NvmlError::LibloadingError(inner) => ReadError::NoDriver {
                detail: inner.to_string(),
            },
            NvmlError::LibraryNotFound => ReadError::NoDriver {
                detail: "NVML library not found".into(),
            },
            NvmlError::DriverNotLoaded => ReadError::DriverNotLoaded {
                detail: e.to_string(),
            },
            other => ReadError::Init {
                detail: other.to_string(),
            },
        }
    }
}

/// Loads NVML and reads everything once.
pub fn read(hostname: &str) -> Result<GpuReport, ReadError> {
    let nvml = Nvml::init()?;
    read_with(&nvml, hostname)
}

/// Loads NVML, reads everything once, then records XID events for `watch` and adds their counts
/// to the report.
pub fn read_watching(hostname: &str, watch: std::time::Duration) -> Result<GpuReport, ReadError> {
    let nvml = Nvml::init()?;
    let mut report = read_with(&nvml, hostname)?;
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let mut recorder = super::xid::XidRecorder::new(now());
    let watcher = super::xid::XidWatcher::new(&nvml).map_err(|e| ReadError::Init {
        detail: format!("cannot watch XID events: {e}"),
    })?;
    watcher
        .watch(&mut recorder, watch, now)
        .map_err(|e| ReadError::Init {
            detail: format!("watching XID events failed: {e}"),
        })?;
    recorder.attach(&mut report);
    Ok(report)
}

/// Reads everything from an initialised NVML.
pub fn read_with(nvml: &Nvml, hostname: &str) -> Result<GpuReport, ReadError> {
    let count = nvml.device_count()?;
    let gpus = (0..count)
        .map(|i| match nvml.device_by_index(i) {
            Ok(d) => read_device(i, &d),
            Err(e) => unreadable_device(i, &e),
        })
        .collect();
    Ok(GpuReport {
        format_version: FORMAT_VERSION,
        hostname: hostname.to_owned(),
        read_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        driver_version: field(nvml.sys_driver_version()),
        cuda_driver_version: field(nvml.sys_cuda_driver_version()).map(|&v| CudaVersion {
            major: u32::try_from(nvml_wrapper::cuda_driver_version_major(v)).unwrap_or(0),
            minor: u32::try_from(nvml_wrapper::cuda_driver_version_minor(v)).unwrap_or(0),
        }),
        nvml_version: field(nvml.sys_nvml_version()),
        gpus,
    })
}

/// `NOT_SUPPORTED` is a value of its own; every other error is kept with its message.
fn field<T>(r: Result<T, NvmlError>) -> Field<T> {
    match r {
        Ok(v) => Field::Value(v),
        Err(NvmlError::NotSupported) => Field::NotSupported,
        Err(e) => Field::Error(e.to_string()),
    }
}

fn read_device(index: u32, d: &Device<'_>) -> GpuRecord {
    let ecc = |kind, counter| field(d.total_ecc_errors(kind, counter));
    let retired = |cause| field(d.retired_pages(cause).map(|p| p.len() as u64));
    let rows = remapped_rows(d);
    GpuRecord {
        index,
        name: field(d.name()),
        uuid: field(d.uuid()),
        pci_bus_id: field(d.pci_info().map(|p| p.bus_id)),
        compute_capability: field(d.cuda_compute_capability().map(|c| ComputeCapability {
            major: u32::try_from(c.major).unwrap_or(0),
            minor: u32::try_from(c.minor).unwrap_or(0),
        })),
        memory: field(d.memory_info().map(|m| Memory {
            total_bytes: m.total,
            used_bytes: m.used,
            free_bytes: m.free,
        })),
        utilization: field(d.utilization_rates().map(|u| Utilization {
            gpu_percent: u.gpu,
            memory_percent: u.memory,
        })),
        temperature_c: field(d.temperature(TemperatureSensor::Gpu)),
        power_draw_mw: field(d.power_usage()),
        power_limit_mw: field(d.enforced_power_limit()),
        clocks: Clocks {
            graphics_mhz: field(d.clock_info(Clock::Graphics)),
            sm_mhz: field(d.clock_info(Clock::SM)),
            memory_mhz: field(d.clock_info(Clock::Memory)),
            sm_max_mhz: field(d.max_clock_info(Clock::SM)),
            memory_max_mhz: field(d.max_clock_info(Clock::Memory)),
        },
        clock_event_reasons: field(
            d.current_throttle_reasons()
                .map(|r| ClockEventReason::decode(r.bits())),
        ),
        ecc_mode: field(d.is_ecc_enabled().map(|m| EccMode {
            enabled: m.currently_enabled,
            pending_enabled: m.pending_enabled,
        })),
        ecc_errors: EccErrors {
            volatile_corrected: ecc(MemoryError::Corrected, EccCounter::Volatile),
            volatile_uncorrected: ecc(MemoryError::Uncorrected, EccCounter::Volatile),
            aggregate_corrected: ecc(MemoryError::Corrected, EccCounter::Aggregate),
            aggregate_uncorrected: ecc(MemoryError::Uncorrected, EccCounter::Aggregate),
        },
        retired_pages: RetiredPages {
            single_bit: retired(RetirementCause::MultipleSingleBitEccErrors),
            double_bit: retired(RetirementCause::DoubleBitEccError),
            pending: field(d.are_pages_pending_retired()),
        },
        remapped_rows: rows,
        pcie: Pcie {
            current_gen: field(d.current_pcie_link_gen()),
            max_gen: field(d.max_pcie_link_gen()),
            current_width: field(d.current_pcie_link_width()),
            max_width: field(d.max_pcie_link_width()),
        },
        xids: None,
    }
}

/// Remapped rows through NVML's field values (nvml-wrapper has no call of its own for
/// `nvmlDeviceGetRemappedRows`; the four `NVML_FI_DEV_REMAPPED_*` fields carry the same numbers),
/// in one driver call.
fn remapped_rows(d: &Device<'_>) -> RemappedRows {
    let ids = [
        NVML_FI_DEV_REMAPPED_COR,
        NVML_FI_DEV_REMAPPED_UNC,
        NVML_FI_DEV_REMAPPED_PENDING,
        NVML_FI_DEV_REMAPPED_FAILURE,
    ]
    .map(FieldId);
    let mut values: Vec<Field<u64>> = match d.field_values_for(&ids) {
        Ok(samples) => samples
            .into_iter()
            .map(|s| field(s.and_then(|s| s.value).map(sample_u64)))
            .collect(),
        Err(e) => vec![field(Err(e)); 4],
    };
    values.resize(4, Field::Error("NVML returned too few field values".into()));
    let flag = |f: &Field<u64>| f.map(|&v| v != 0);
    RemappedRows {
        correctable: values[0].clone(),
        uncorrectable: values[1].clone(),
        pending: flag(&values[2]),
        failure: flag(&values[3]),
    }
}

fn sample_u64(v: SampleValue) -> u64 {
    match v {
        SampleValue::U32(v) => u64::from(v),
        SampleValue::U64(v) => v,
        SampleValue::I64(v) => u64::try_from(v).unwrap_or(0),
        SampleValue::F64(v) => v as u64,
    }
}

/// A GPU NVML lists but cannot open (fallen off the bus, no permission): every field carries the
/// error, so the report shows it and health calls it unreadable.
fn unreadable_device(index: u32, e: &NvmlError) -> GpuRecord {
    let msg = e.to_string();
    GpuRecord {
        index,
        name: Field::Error(msg.clone()),
        uuid: Field::Error(msg.clone()),
        pci_bus_id: Field::Error(msg.clone()),
        compute_capability: Field::Error(msg.clone()),
        memory: Field::Error(msg.clone()),
        utilization: Field::Error(msg.clone()),
        temperature_c: Field::Error(msg.clone()),
        power_draw_mw: Field::Error(msg.clone()),
        power_limit_mw: Field::Error(msg.clone()),
        clocks: Clocks {
            graphics_mhz: Field::Error(msg.clone()),
            sm_mhz: Field::Error(msg.clone()),
            memory_mhz: Field::Error(msg.clone()),
            sm_max_mhz: Field::Error(msg.clone()),
            memory_max_mhz: Field::Error(msg.clone()),
        },
        clock_event_reasons: Field::Error(msg.clone()),
        ecc_mode: Field::Error(msg.clone()),
        ecc_errors: EccErrors {
            volatile_corrected: Field::Error(msg.clone()),
            volatile_uncorrected: Field::Error(msg.clone()),
            aggregate_corrected: Field::Error(msg.clone()),
            aggregate_uncorrected: Field::Error(msg.clone()),
        },
        retired_pages: RetiredPages {
            single_bit: Field::Error(msg.clone()),
            double_bit: Field::Error(msg.clone()),
            pending: Field::Error(msg.clone()),
        },
        remapped_rows: RemappedRows {
            correctable: Field::Error(msg.clone()),
            uncorrectable: Field::Error(msg.clone()),
            pending: Field::Error(msg.clone()),
            failure: Field::Error(msg.clone()),
        },
        pcie: Pcie {
            current_gen: Field::Error(msg.clone()),
            max_gen: Field::Error(msg.clone()),
            current_width: Field::Error(msg.clone()),
            max_width: Field::Error(msg.clone()),
        },
        xids: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real no-driver path on a machine without the NVIDIA driver (this one, CI); on a GPU
    /// machine it reads real values instead, and checks their shape.
    #[test]
    fn no_driver_is_a_clean_error_or_a_real_report() {
        match read("testhost") {
            Err(ReadError::NoDriver { detail }) => {
                assert!(detail.contains("libnvidia-ml.so.1"), "{detail}");
            }
            Err(other) => panic!("unexpected NVML state: {other}"),
            Ok(report) => {
                assert_eq!(report.hostname, "testhost");
                assert!(report.driver_version.value().is_some());
            }
        }
    }

    #[test]
    fn errors_say_what_they_are() {
        assert_eq!(
            ReadError::NoDriver {
                detail: String::new()
            }
            .to_string(),
            "no NVIDIA driver found (libnvidia-ml.so.1 not loadable)"
        );
        assert!(field::<u32>(Err(NvmlError::NotSupported)) == Field::NotSupported);
        assert_eq!(
            field::<u32>(Err(NvmlError::GpuLost)),
            Field::Error(NvmlError::GpuLost.to_string())
        );
    }
}
