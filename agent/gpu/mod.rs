//! GPU checks and health reports through NVML.
//!
//! - [`record`]: the values read, as plain serialisable data ([`field::Field`] keeps "not
//!   supported" apart from errors);
//! - [`read`]: the only code that calls NVML to fill a record;
//! - [`health`]: a pure verdict per GPU with reasons;
//! - [`check`]: the manifest's `gpu` requirements, judged purely against a record;
//! - [`table`], [`prometheus`]: the human and dcgm-exporter-compatible renderings (JSON is serde);
//! - [`xid`]: XID events as counters with timestamps.

pub mod check;
pub mod field;
#[cfg(test)]
mod fixtures;
pub mod health;
pub mod prometheus;
pub mod read;
pub mod record;
pub mod table;
pub mod xid;

pub use field::Field;
pub use read::{ReadError, read};
pub use record::GpuReport;
