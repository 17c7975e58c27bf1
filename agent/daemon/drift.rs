//! Drift watch: inotify on the files this node's resources manage, so a hand edit (or a package
//! upgrade) of a managed file is repaired at once instead of at the next periodic reconcile.
//! Resources add what their id does not name ([`Resource::drift_watch`]): a mount its fstab, its
//! credentials file and the live mount table (`/proc/self/mountinfo`, which `poll` reports
//! changed with `POLLPRI`), a Python environment its package folder (any entry).
//!
//! [`Resource::drift_watch`]: crate::engine::Resource::drift_watch
//!
//! The watches are on the *parent directories* of the managed paths, not on the files: every write
//! (ours and most editors') replaces a file by a rename, which would silently end a watch on the
//! file itself. Events on other names in those directories are ignored. A burst of events (an
//! editor's write, rename and chmod) becomes one wake-up after [`DEBOUNCE`] of quiet.
//!
//! Our own writes do not loop: the reconcile they belong to already brought the file in line, so
//! the wake-up they cause finds nothing to change, writes nothing and so causes no further event.
//! That costs one no-op reconcile (a fraction of a millisecond) after a reconcile that changed
//! files, and keeps a real edit made during a reconcile from being lost.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::Wake;
use crate::engine::{DriftWatch, Step};
use crate::host::Host;

/// Quiet time after the last event before the agent looks: long enough to cover an editor's
/// write-rename-chmod burst, short against the "well under a second" target.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// The account files that `user:` and `group:` resources edit.
const ACCOUNT_FILES: [&str; 4] = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// What a set of steps asks the drift watch to look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Managed {
    /// Node path → the resource ids that manage it. A path ending in `/` is a directory any of
    /// whose entries counts.
    pub paths: BTreeMap<String, Vec<String>>,
    /// The resources that the live mount table concerns.
    pub mounts: Vec<String>,
}

/// The node paths a set of steps manages, each with the resource ids that manage it: files,
/// hosts, directories and account files by their ids, and what each resource adds.
pub fn managed(steps: &[Step]) -> Managed {
    let mut out = Managed::default();
    for step in steps {
        let Some((kind, key)) = step.id.split_once(':') else {
            continue;
        };
        let mut paths: Vec<String> = match kind {
            "file" | "hosts" | "fstab" | "directory" if key.starts_with('/') => vec![key.into()],
            "user" | "group" => ACCOUNT_FILES.iter().map(|&p| p.to_owned()).collect(),
            _ => Vec::new(),
        };
        if let Ok(body) = &step.body {
            for w in body.drift_watch() {
                match w {
                    DriftWatch::Path(p) if p.starts_with('/') => paths.push(p),
                    DriftWatch::Path(_) => {}
                    DriftWatch::Mounts => {
                        if !out.mounts.contains(&step.id) {
                            out.mounts.push(step.id.clone());
                        }
                    }
                }
            }
        }
        for p in paths {
            let ids = out.paths.entry(p).or_default();
            if !ids.contains(&step.id) {
                ids.push(step.id.clone());
            }
        }
    }
    out
}

/// A node path with at most one `*` component (`/opt/env/lib/*/site-packages/`): every existing
/// match, in order; the path itself when it has none.
fn expand(host: &Host, path: &str) -> Vec<String> {
    let Some((head, tail)) = path.split_once("/*/") else {
        return vec![path.to_owned()];
    };
    let Ok(dir) = host.resolve(head) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("{head}/{n}/{tail}"))
        .collect()
}

/// What the watcher thread matches events against.
#[derive(Default)]
struct Targets {
    /// Watched directory → (file name in it → resource ids).
    dirs: BTreeMap<WatchDescriptor, BTreeMap<OsString, Vec<String>>>,
    /// Watched directory whose every entry counts → resource ids.
    whole: BTreeMap<WatchDescriptor, Vec<String>>,
    /// The resources a change of the mount table concerns.
    mounts: Vec<String>,
    /// The mount table changed while no resource asked about it (before the first watch, say,
    /// during the first reconcile): the next watch that has mounts looks at once.
    mounts_missed: bool,
}

/// The running watch. Dropping it leaves the thread blocked in `poll`; the agent only drops it
/// when the process ends.
pub struct Drift {
    inotify: Arc<Inotify>,
    targets: Arc<Mutex<Targets>>,
    wake: Sender<Wake>,
}

impl Drift {
    /// Starts the watcher thread; it sends [`Wake::Drift`] with the ids of the resources whose
    /// paths changed.
    pub fn start(wake: Sender<Wake>) -> std::io::Result<Drift> {
        let inotify = Arc::new(
            Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .map_err(std::io::Error::from)?,
        );
        let targets = Arc::new(Mutex::new(Targets::default()));
        let (i, t, w) = (inotify.clone(), targets.clone(), wake.clone());
        std::thread::Builder::new()
            .name("drift".into())
            .spawn(move || watch_loop(&i, &t, &w))?;
        Ok(Drift {
            inotify,
            targets,
            wake,
        })
    }

    /// Watches the managed paths of `steps` (call after each reconcile: a directory that was
    /// created, or removed and made again, gets its watch back; paths no longer managed lose it).
    pub fn watch(&self, host: &Host, steps: &[Step]) {
        let mut dirs: BTreeMap<WatchDescriptor, BTreeMap<OsString, Vec<String>>> = BTreeMap::new();
        let mut whole: BTreeMap<WatchDescriptor, Vec<String>> = BTreeMap::new();
        let managed = managed(steps);
        let paths = managed.paths.into_iter().flat_map(|(path, ids)| {
            expand(host, &path)
                .into_iter()
                .map(move |p| (p, ids.clone()))
        });
        for (path, ids) in paths {
            let Ok(real) = host.resolve(path.trim_end_matches('/')) else {
                continue;
            };
            if path.ends_with('/') {
                match self.add(&real) {
                    Ok(wd) => whole.entry(wd).or_default().extend(ids),
                    Err(e) => {
                        tracing::debug!(dir = %real.display(), error = %e, "cannot watch for drift")
                    }
                }
                continue;
            }
            let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
                continue;
            };
            match self.add(dir) {
                Ok(wd) => {
                    dirs.entry(wd)
                        .or_default()
                        .insert(name.to_owned(), ids.clone());
                }
                // A directory that does not exist yet has nothing to drift; a failed resource
                // is reported by the reconcile itself.
                Err(e) => {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch for drift")
                }
            }
        }
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        for old in targets.dirs.keys().chain(targets.whole.keys()) {
            if !dirs.contains_key(old) && !whole.contains_key(old) {
                let _ = self.inotify.rm_watch(*old);
            }
        }
        targets.dirs = dirs;
        targets.whole = whole;
        targets.mounts = managed.mounts;
        if targets.mounts.is_empty() {
            return;
        }
        if std::mem::take(&mut targets.mounts_missed) {
            let _ = self.wake.send(Wake::Drift(targets.mounts.clone()));
        }
    }

    fn add(&self, dir: &Path) -> nix::Result<WatchDescriptor> {
        self.inotify.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_ONLYDIR,
        )
    }
}

/// Reads the mount table to its end, which re-arms its `POLLPRI`.
fn reread(f: &mut std::fs::File) {
    use std::io::{Read, Seek};
    let _ = f.rewind();
    let _ = std::io::copy(&mut f.by_ref(), &mut std::io::sink());
}

/// Blocks in `poll` (no timer while nothing happens), collects the resources touched by a burst
/// of events, and sends them once the burst has been quiet for [`DEBOUNCE`].
fn watch_loop(inotify: &Inotify, targets: &Mutex<Targets>, wake: &Sender<Wake>) {
    let mut pending: Vec<String> = Vec::new();
    let mut deadline: Option<Instant> = None;
    // The mount table: `poll` says POLLPRI once it changed; reading it again re-arms that.
    let mut mountinfo = std::fs::File::open("/proc/self/mountinfo").ok();
    if let Some(f) = &mut mountinfo {
        reread(f);
    }
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
        };
        let (inotify_ready, mounts_changed) = {
            let mut fds = vec![PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
            if let Some(f) = &mountinfo {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLPRI));
            }
            match poll(&mut fds, timeout) {
                Ok(0) => (false, false),
                Ok(_) => {
                    let flag = |i: usize, f: PollFlags| {
                        fds.get(i)
                            .and_then(PollFd::revents)
                            .is_some_and(|r| r.intersects(f))
                    };
                    (
                        flag(0, PollFlags::POLLIN),
                        flag(1, PollFlags::POLLPRI | PollFlags::POLLERR),
                    )
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the drift watch stopped; drift is repaired at the periodic reconcile only");
                    return;
                }
            }
        };
        if mounts_changed {
            if let Some(f) = &mut mountinfo {
                reread(f);
            }
            let mut targets = targets.lock().unwrap_or_else(|e| e.into_inner());
            targets.mounts_missed = targets.mounts.is_empty();
            if !targets.mounts.is_empty() {
                for id in &targets.mounts {
                    if !pending.contains(id) {
                        pending.push(id.clone());
                    }
                }
                deadline = Some(Instant::now() + DEBOUNCE);
            }
        }
        if !inotify_ready && !mounts_changed {
            if !pending.is_empty()
                && wake
                    .send(Wake::Drift(std::mem::take(&mut pending)))
                    .is_err()
            {
                return;
            }
            deadline = None;
            continue;
        }
        if !inotify_ready {
            continue;
        }
        let events = match inotify.read_events() {
            Ok(ev) => ev,
            Err(nix::errno::Errno::EAGAIN) => Vec::new(),
            Err(e) => {
                tracing::error!(error = %e, "the drift watch stopped; drift is repaired at the periodic reconcile only");
                return;
            }
        };
        let targets = targets.lock().unwrap_or_else(|e| e.into_inner());
        for ev in events {
            let named = ev
                .name
                .as_ref()
                .and_then(|n| targets.dirs.get(&ev.wd)?.get(n));
            let whole = targets.whole.get(&ev.wd);
            let ids: Option<Vec<&String>> = match (named, whole) {
                (None, None) => None,
                (a, b) => Some(
                    a.into_iter()
                        .flatten()
                        .chain(b.into_iter().flatten())
                        .collect(),
                ),
            };
            if let Some(ids) = ids {
                for id in ids {
                    if !pending.contains(id) {
                        pending.push(id.clone());
                    }
                }
                deadline = Some(Instant::now() + DEBOUNCE);
            } else if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Events were lost: look at everything.
                pending.push("(event queue overflow)".into());
                deadline = Some(Instant::now() + DEBOUNCE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str) -> Step {
        Step {
            id: id.into(),
            after: vec![],
            body: Err("not built".into()),
        }
    }

    #[test]
    fn managed_paths_cover_files_hosts_directories_and_account_files() {
        let steps = [
            step("file:/etc/PYME/config.yaml"),
            step("hosts:/etc/hosts"),
            step("directory:/srv/data"),
            step("user:pyme"),
            step("group:pyme"),
            step("service:a"),
            step("mount:/mnt/data"),
            step("venv:/opt/env"),
        ];
        let m = managed(&steps).paths;
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "/etc/PYME/config.yaml",
                "/etc/group",
                "/etc/gshadow",
                "/etc/hosts",
                "/etc/passwd",
                "/etc/shadow",
                "/srv/data"
            ]
        );
        assert_eq!(m["/etc/passwd"], ["user:pyme", "group:pyme"]);
    }
}
