//! Drift watch: inotify on the files this node's resources manage, so a hand edit (or a package
//! upgrade) of a managed file is repaired at once instead of at the next periodic reconcile.
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
use crate::engine::Step;
use crate::host::Host;

/// Quiet time after the last event before the agent looks: long enough to cover an editor's
/// write-rename-chmod burst, short against the "well under a second" target.
pub const DEBOUNCE: Duration = Duration::from_millis(10);

/// The account files that `user:` and `group:` resources edit.
const ACCOUNT_FILES: [&str; 4] = ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"];

/// The node paths a set of steps manages, each with the resource ids that manage it. Only kinds
/// whose whole state is a path's content and metadata: a mount's state is the mount table and a
/// venv a whole tree, which inotify on one path cannot see.
pub fn managed_paths(steps: &[Step]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in steps {
        let Some((kind, key)) = step.id.split_once(':') else {
            continue;
        };
        let paths: Vec<&str> = match kind {
            "file" | "hosts" | "fstab" | "directory" if key.starts_with('/') => vec![key],
            "user" | "group" => ACCOUNT_FILES.to_vec(),
            _ => continue,
        };
        for p in paths {
            out.entry(p.to_owned()).or_default().push(step.id.clone());
        }
    }
    out
}

/// What the watcher thread matches events against.
#[derive(Default)]
struct Targets {
    /// Watched directory → (file name in it → resource ids).
    dirs: BTreeMap<WatchDescriptor, BTreeMap<OsString, Vec<String>>>,
}

/// The running watch. Dropping it leaves the thread blocked in `poll`; the agent only drops it
/// when the process ends.
pub struct Drift {
    inotify: Arc<Inotify>,
    targets: Arc<Mutex<Targets>>,
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
        let (i, t) = (inotify.clone(), targets.clone());
        std::thread::Builder::new()
            .name("drift".into())
            .spawn(move || watch_loop(&i, &t, &wake))?;
        Ok(Drift { inotify, targets })
    }

    /// Watches the managed paths of `steps` (call after each reconcile: a directory that was
    /// created, or removed and made again, gets its watch back; paths no longer managed lose it).
    pub fn watch(&self, host: &Host, steps: &[Step]) {
        let mut dirs: BTreeMap<WatchDescriptor, BTreeMap<OsString, Vec<String>>> = BTreeMap::new();
        for (path, ids) in managed_paths(steps) {
            let Ok(real) = host.resolve(&path) else {
                continue;
            };
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
        for old in targets.dirs.keys() {
            if !dirs.contains_key(old) {
                let _ = self.inotify.rm_watch(*old);
            }
        }
        targets.dirs = dirs;
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

/// Blocks in `poll` (no timer while nothing happens), collects the resources touched by a burst
/// of events, and sends them once the burst has been quiet for [`DEBOUNCE`].
fn watch_loop(inotify: &Inotify, targets: &Mutex<Targets>, wake: &Sender<Wake>) {
    let mut pending: Vec<String> = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => PollTimeout::try_from(d.saturating_duration_since(Instant::now()))
                .unwrap_or(PollTimeout::ZERO),
        };
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => {
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
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "the drift watch stopped; drift is repaired at the periodic reconcile only");
                return;
            }
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
            let ids = ev
                .name
                .as_ref()
                .and_then(|n| targets.dirs.get(&ev.wd)?.get(n));
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
        let m = managed_paths(&steps);
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
