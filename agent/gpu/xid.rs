//! XID errors as counters with timestamps per GPU, not dcgm-exporter's "last XID" gauge that never
//! resets (dcgm-exporter#500).
//!
//! [`XidRecorder`] is pure: it counts events it is given. [`XidWatcher`] is the thin NVML part: it
//! registers for critical XID events on every GPU and hands what NVML delivers to a recorder.
//! [`AgentXids`] is the agent daemon's: a thread that watches for the agent's whole life and a
//! shared recorder the status API reads (`/gpu/xids`), so `provision gpu` on that node reports
//! which XIDs happened and when since the agent started; `provision gpu --watch` watches a while.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
            if let Some((gpu, xid)) = self.next(left)? {
                recorder.record(gpu, xid, now());
            }
        }
    }

    /// The next XID event within `timeout` as `(GPU index, XID)`, or `None` when none came.
    pub fn next(&self, timeout: Duration) -> Result<Option<(u32, u64)>, NvmlError> {
        let ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
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
                Ok(Some((gpu, xid)))
            }
            Err(NvmlError::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the agent knows of XIDs: watching (with what it saw), or off and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum XidState {
    /// The watcher thread is starting.
    Starting,
    Watching(XidRecorder),
    Off(String),
}

/// The agent's XID record: one thread watches NVML's event set for the agent's whole life; the
/// status API reads the counts. Cheap to clone (one shared state).
#[derive(Debug, Clone)]
pub struct AgentXids {
    state: Arc<Mutex<XidState>>,
}

impl AgentXids {
    /// Starts the watcher thread. Where NVML does not load (no NVIDIA driver) or cannot watch,
    /// the thread ends at once and the record says why; nothing else is affected.
    pub fn start() -> AgentXids {
        let xids = AgentXids {
            state: Arc::new(Mutex::new(XidState::Starting)),
        };
        let shared = xids.clone();
        let spawned = std::thread::Builder::new()
            .name("gpu-xid".into())
            .spawn(move || shared.run());
        if let Err(e) = spawned {
            xids.set(XidState::Off(format!("cannot start the XID thread: {e}")));
        }
        xids
    }

    /// A record whose recording is off for `reason` (e.g. for a status API without NVML).
    pub fn off(reason: &str) -> AgentXids {
        AgentXids {
            state: Arc::new(Mutex::new(XidState::Off(reason.to_owned()))),
        }
    }

    fn set(&self, state: XidState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    fn run(&self) {
        let nvml = match Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                let reason = super::ReadError::from(e).to_string();
                tracing::info!(%reason, "XID recording is off");
                return self.set(XidState::Off(reason));
            }
        };
        let watcher = match XidWatcher::new(&nvml) {
            Ok(w) => w,
            Err(e) => {
                let reason = format!("cannot watch XID events: {e}");
                tracing::warn!(%reason, "XID recording is off");
                return self.set(XidState::Off(reason));
            }
        };
        self.set(XidState::Watching(XidRecorder::new(unix_now())));
        tracing::info!("recording GPU XID errors");
        loop {
            match watcher.next(Duration::from_secs(60)) {
                Ok(Some((gpu, xid))) => {
                    tracing::warn!(gpu, xid, "GPU XID error");
                    self.record(gpu, xid, unix_now());
                }
                Ok(None) => {}
                Err(e) => {
                    let reason = format!("watching XID events failed: {e}");
                    tracing::warn!(%reason, "XID recording stopped");
                    let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    // What was seen stays readable; the reason goes to the log.
                    if !matches!(*state, XidState::Watching(_)) {
                        *state = XidState::Off(reason);
                    }
                    return;
                }
            }
        }
    }

    /// Counts one XID (what the watcher thread does for every event).
    pub fn record(&self, gpu: u32, xid: u64, at: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let XidState::Watching(recorder) = &mut *state {
            recorder.record(gpu, xid, at);
        }
    }

    /// Starts recording without NVML, from `since` (tests of everything around the thread).
    pub fn watching_since(since: u64) -> AgentXids {
        AgentXids {
            state: Arc::new(Mutex::new(XidState::Watching(XidRecorder::new(since)))),
        }
    }

    /// The `/gpu/xids` document: `{"watching": true, "since": S, "gpus": {"0": XidCounts}}`, or
    /// `{"watching": false, "reason": "..."}`.
    pub fn json(&self) -> serde_json::Value {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            XidState::Watching(r) => serde_json::json!({
                "watching": true,
                "since": r.since,
                "gpus": r.gpus.iter().map(|(i, c)| (i.to_string(), c)).collect::<BTreeMap<_, _>>(),
            }),
            XidState::Starting => serde_json::json!({"watching": false, "reason": "starting"}),
            XidState::Off(reason) => serde_json::json!({"watching": false, "reason": reason}),
        }
    }

    /// `(gpu, xid, count)` for the metrics page.
    pub fn samples(&self) -> Vec<(u32, u64, u64)> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            XidState::Watching(r) => r
                .gpus
                .iter()
                .flat_map(|(gpu, c)| c.counts.iter().map(|(xid, n)| (*gpu, *xid, n.count)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Puts an agent's `/gpu/xids` document into `report`: the counts of every GPU the agent has
/// watched (an empty count for a GPU that saw none). `false` when the agent is not watching.
pub fn attach_agent_json(doc: &serde_json::Value, report: &mut GpuReport) -> bool {
    if doc["watching"] != serde_json::Value::Bool(true) {
        return false;
    }
    let since = doc["since"].as_u64().unwrap_or(0);
    for gpu in &mut report.gpus {
        let counts = doc["gpus"]
            .get(gpu.index.to_string())
            .and_then(|c| serde_json::from_value::<XidCounts>(c.clone()).ok())
            .unwrap_or(XidCounts {
                since,
                ..XidCounts::default()
            });
        gpu.xids = Some(counts);
    }
    true
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

    #[test]
    fn the_agents_record_travels_through_its_json_into_a_report() {
        let xids = AgentXids::watching_since(2_000);
        xids.record(1, 79, 2_050);
        xids.record(1, 79, 2_060);
        xids.record(0, 13, 2_010);
        let doc = xids.json();
        assert_eq!(doc["watching"], true);
        assert_eq!(doc["gpus"]["1"]["counts"]["79"]["count"], 2);
        let mut samples = xids.samples();
        samples.sort_unstable();
        assert_eq!(samples, [(0, 13, 1), (1, 79, 2)]);

        // Through text, as `provision gpu` gets it from the agent's status API.
        let doc: serde_json::Value = serde_json::from_str(&doc.to_string()).unwrap();
        let mut report = crate::gpu::fixtures::load("dgx-h100-8gpu.json");
        assert!(report.gpus.len() >= 2);
        assert!(attach_agent_json(&doc, &mut report));
        let g1 = report.gpus.iter().find(|g| g.index == 1).unwrap();
        let c = &g1.xids.as_ref().unwrap().counts[&79];
        assert_eq!((c.count, c.first_seen, c.last_seen), (2, 2_050, 2_060));
        // A GPU the agent saw no XID on: watched, empty, since the agent started.
        if let Some(g2) = report.gpus.iter().find(|g| g.index > 1) {
            let x = g2.xids.as_ref().unwrap();
            assert!(x.counts.is_empty());
            assert_eq!(x.since, 2_000);
        }
    }

    #[test]
    fn an_agent_without_nvml_says_why_and_attaches_nothing() {
        let xids = AgentXids::off("no NVIDIA driver found (libnvidia-ml.so.1 not loadable)");
        xids.record(0, 79, 1);
        let doc = xids.json();
        assert_eq!(doc["watching"], false);
        assert!(doc["reason"].as_str().unwrap().contains("no NVIDIA driver"));
        assert!(xids.samples().is_empty());
        let mut report = crate::gpu::fixtures::load("dgx-h100-8gpu.json");
        let before = report.clone();
        assert!(!attach_agent_json(&doc, &mut report));
        assert_eq!(report, before);
    }

    #[test]
    fn the_agent_thread_on_a_machine_without_a_driver_turns_recording_off_with_the_reason() {
        // Real NVML loading: CI machines have no NVIDIA driver. Where one is installed this test
        // checks only that the thread leaves "starting".
        let xids = AgentXids::start();
        let deadline = Instant::now() + Duration::from_secs(10);
        while xids.json()["reason"] == "starting" {
            assert!(Instant::now() < deadline, "the XID thread never settled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let doc = xids.json();
        if doc["watching"] == false {
            assert!(!doc["reason"].as_str().unwrap().is_empty(), "{doc}");
        }
    }
}
