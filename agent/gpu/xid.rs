//! XID errors as counters with timestamps per GPU, not dcgm-exporter's "last XID" gauge that never
//! resets (dcgm-exporter#500).
//!
//! [`XidRecorder`] is pure: it counts events it is given. [`XidWatcher`] is the thin NVML part: it
//! registers for critical XID events on every GPU and hands what NVML delivers to a recorder. The
//! agent daemon keeps one of each for its whole life; `provision gpu --watch` uses them for a while.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::Instant;

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;

use super::record::{GpuReport, XidCount, XidCounts};

/// XIDs seen per GPU (by NVML index) since `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XidRecorder {
    since: u64,
    gpus: BTreeMap<u32, XidCounts>,
}

impl XidRecorder {
    /// A recorder that started watching at `since` (seconds since the Unix epoch).
    pub fn new(since: u64) -> XidRecorder {
        XidRecorder {
            since,
            gpus: BTreeMap::new(),
        }
    }

    /// Counts one XID on GPU `gpu` at `at` (seconds since the Unix epoch).
    pub fn record(&mut self, gpu: u32, xid: u64, at: u64) {
        let since = self.since;
        let counts = self.gpus.entry(gpu).or_insert_with(|| XidCounts {
            since,
            ..XidCounts::default()
        });
        counts
            .counts
            .entry(xid)
            .and_modify(|c| {
                c.count += 1;
                c.first_seen = c.first_seen.min(at);
                c.last_seen = c.last_seen.max(at);
            })
            .or_insert(XidCount {
                count: 1,
                first_seen: at,
                last_seen: at,
            });
        counts.last = Some(xid);
    }

    /// What GPU `gpu` has seen; no XIDs is an empty count, not `None`, since it was watched.
    pub fn counts(&self, gpu: u32) -> XidCounts {
        self.gpus.get(&gpu).cloned().unwrap_or(XidCounts {
            since: self.since,
            ..XidCounts::default()
        })
    }

    /// Puts the counts into a report, GPU by GPU: the report then says "watched, and saw these"
    /// rather than "not watched".
    pub fn attach(&self, report: &mut GpuReport) {
        for gpu in &mut report.gpus {
            gpu.xids = Some(self.counts(gpu.index));
        }
    }
}

/// NVML's critical XID events for every GPU that supports them.
pub struct XidWatcher<'nvml> {
    set: EventSet<'nvml>,
    /// UUID → NVML index, to name the GPU an event came from.
    index_of: BTreeMap<String, u32>,
}

impl<'nvml> XidWatcher<'nvml> {
    /// Registers for XID events on every GPU that supports them. GPUs that do not are left out.
    pub fn new(nvml: &'nvml Nvml) -> Result<XidWatcher<'nvml>, NvmlError> {
        let mut set = nvml.create_event_set()?;
        let mut index_of = BTreeMap::new();
        for i in 0..nvml.device_count()? {
            let device = nvml.device_by_index(i)?;
            let supported = device
                .supported_event_types()
                .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
            if !supported {
                continue;
            }
            set = device
                .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                .map_err(|e| e.error)?;
            index_of.insert(device.uuid()?, i);
        }
        Ok(XidWatcher { set, index_of })
    }

    /// Waits up to `for_how_long` for events and records each one. Returns early only on an NVML
    /// error other than the timeout that ends every quiet wait.
    pub fn watch(
        &self,
        recorder: &mut XidRecorder,
        for_how_long: Duration,
        now: impl Fn() -> u64,
    ) -> Result<(), NvmlError> {
        let end = Instant::now() + for_how_long;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
            match self.set.wait(ms) {
                Ok(event) => {
                    let xid = match event.event_data {
                        Some(XidError::Value(v)) => v,
                        // NVML could not say which XID; 0 is no real XID, so it stands out.
                        Some(XidError::Unknown) | None => 0,
                    };
                    let gpu = event
                        .device
                        .uuid()
                        .ok()
                        .and_then(|u| self.index_of.get(&u).copied())
                        .or_else(|| event.device.index().ok())
                        .unwrap_or(u32::MAX);
                    recorder.record(gpu, xid, now());
                }
                Err(NvmlError::Timeout) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_counts_with_first_and_last_times_per_gpu() {
        let mut r = XidRecorder::new(1_000);
        r.record(0, 79, 1_010);
        r.record(0, 79, 1_030);
        r.record(0, 13, 1_020);
        r.record(3, 48, 1_040);
        // Out of order delivery keeps first/last right.
        r.record(0, 79, 1_005);

        let g0 = r.counts(0);
        assert_eq!(g0.since, 1_000);
        assert_eq!(
            g0.counts[&79],
            XidCount {
                count: 3,
                first_seen: 1_005,
                last_seen: 1_030
            }
        );
        assert_eq!(g0.counts[&13].count, 1);
        assert_eq!(g0.last, Some(79));
        assert_eq!(r.counts(3).counts.keys().copied().collect::<Vec<_>>(), [48]);
        // A watched GPU with no XIDs: empty counts, not "not watched".
        let quiet = r.counts(1);
        assert!(quiet.counts.is_empty());
        assert_eq!(quiet.last, None);
        assert_eq!(quiet.since, 1_000);
    }
}
