//! The `gpu` check: reads NVML and judges it against the manifest's requirements.
//!
//! A check fits the resource trait as "observe, then verify": `observe` reads NVML (no driver is
//! a value, not an error), `verify` is the pure judgement in `crate::gpu::check`, and `diff` is
//! always empty, because nothing provision could write would make a GPU appear or heal one. So a
//! failing check fails the resource with its reasons, in check mode too, and the resources that
//! come after it are skipped; `apply` is never called.

use crate::engine::{Change, Resource};
use crate::gpu::check::{self, Requirements};
use crate::gpu::{GpuReport, ReadError};
use crate::host::{Host, Result};

pub struct GpuCheck {
    pub name: String,
    pub requirements: Requirements,
}

impl Resource for GpuCheck {
    type Observed = std::result::Result<GpuReport, ReadError>;

    fn id(&self) -> String {
        format!("gpu:{}", self.name)
    }

    /// GPUs are not under `--root`: this reads the real machine's NVML, which is only ever read.
    fn observe(&self, _host: &Host) -> Result<Self::Observed> {
        Ok(crate::gpu::read(&crate::facts::hostname()))
    }

    fn diff(&self, _observed: &Self::Observed) -> Vec<Change> {
        Vec::new()
    }

    fn apply(&self, _host: &Host, _observed: &Self::Observed, _changes: &[Change]) -> Result<()> {
        // Unreachable: the executor applies only a non-empty diff, and a check's diff is empty.
        Ok(())
    }

    fn verify(
        &self,
        observed: &Self::Observed,
        _write: bool,
    ) -> std::result::Result<Option<String>, String> {
        check::evaluate(&self.requirements, observed).map(Some)
    }
}
