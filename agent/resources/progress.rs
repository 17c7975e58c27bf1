//! Progress for long work (a conda install of a big environment, a pip build from source), so a
//! run that takes minutes does not look hung.
//!
//! On a terminal (stderr is a TTY) it is a bar redrawn in place on stderr and cleared when the work
//! ends: for a conda install, packages done of the transaction's total and the bytes downloaded,
//! from rattler's installer reporter ([`Tally`]); for pip, which reports nothing while it runs, a
//! spinner and the time so far. Elsewhere (CI, a pipe, the agent's journal) it is an info log line
//! (`-v`; the agent logs at info) every [`every`] saying what is still running, for how long, and
//! the counts when there are some.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rattler::install::{Reporter, Transaction};
use rattler_conda_types::{PrefixRecord, RepoDataRecord};

/// How often a long install logs that it is still running, when stderr is not a terminal.
pub const EVERY: Duration = Duration::from_secs(15);

/// Overrides [`EVERY`]: a duration such as `5s` or `1m` (`humantime`), for a journal that should
/// hear from a long install more or less often.
pub const EVERY_VAR: &str = "PROVISION_PROGRESS_EVERY";

/// How often the bar is redrawn on a terminal.
const REDRAW: Duration = Duration::from_millis(100);

/// The width the bar's line is cut to (terminals are at least this wide, and a line that wraps
/// cannot be redrawn in place).
const WIDTH: usize = 79;

/// [`EVERY`], or `$PROVISION_PROGRESS_EVERY` when it is a valid duration above zero.
pub fn every() -> Duration {
    std::env::var(EVERY_VAR)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(EVERY)
}

/// What an install has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Operations (a package linked, unlinked or replaced) finished, of `total`.
    pub done: usize,
    pub total: usize,
    /// Bytes downloaded so far, of `bytes_total` (the sizes of the downloads started so far that
    /// said theirs); both zero when every package came from the cache.
    pub bytes: u64,
    pub bytes_total: u64,
}

/// Counts filled by rattler's installer (through [`TallyReporter`]) and read by the bar.
#[derive(Default)]
pub struct Tally {
    started: AtomicBool,
    total: AtomicUsize,
    done: AtomicUsize,
    /// (bytes so far, size) of each download, by the index rattler hands back.
    downloads: Mutex<Vec<(u64, u64)>>,
    /// Wakes the bar when the transaction starts, so its first frame has the total.
    wake: Mutex<Option<Sender<Tick>>>,
}

impl Tally {
    pub fn new() -> Arc<Tally> {
        Arc::new(Tally::default())
    }

    /// The counts, once the transaction has started.
    pub fn counts(&self) -> Option<Counts> {
        if !self.started.load(Ordering::SeqCst) {
            return None;
        }
        let downloads = self.downloads.lock().unwrap();
        Some(Counts {
            done: self.done.load(Ordering::SeqCst),
            total: self.total.load(Ordering::SeqCst),
            bytes: downloads.iter().map(|d| d.0).sum(),
            bytes_total: downloads.iter().map(|d| d.1).sum(),
        })
    }

    fn wake(&self) {
        if let Some(wake) = self.wake.lock().unwrap().as_ref() {
            let _ = wake.send(Tick::Wake);
        }
    }
}

/// The reporter handed to rattler's `Installer::with_reporter`; it only counts.
pub struct TallyReporter(pub Arc<Tally>);

impl Reporter for TallyReporter {
    fn on_transaction_start(&self, transaction: &Transaction<PrefixRecord, RepoDataRecord>) {
        self.0
            .total
            .store(transaction.operations.len(), Ordering::SeqCst);
        self.0.started.store(true, Ordering::SeqCst);
        self.0.wake();
    }
    fn on_transaction_operation_start(&self, _operation: usize) {}
    fn on_populate_cache_start(&self, operation: usize, _record: &RepoDataRecord) -> usize {
        operation
    }
    fn on_validate_start(&self, cache_entry: usize) -> usize {
        cache_entry
    }
    fn on_validate_complete(&self, _validate_idx: usize) {}
    fn on_download_start(&self, _cache_entry: usize) -> usize {
        let mut downloads = self.0.downloads.lock().unwrap();
        downloads.push((0, 0));
        downloads.len() - 1
    }
    fn on_download_progress(&self, download_idx: usize, progress: u64, total: Option<u64>) {
        if let Some(d) = self.0.downloads.lock().unwrap().get_mut(download_idx) {
            *d = (progress, total.unwrap_or(d.1).max(progress));
        }
    }
    fn on_download_completed(&self, _download_idx: usize) {}
    fn on_populate_cache_complete(&self, _cache_entry: usize) {}
    fn on_unlink_start(&self, operation: usize, _record: &PrefixRecord) -> usize {
        operation
    }
    fn on_unlink_complete(&self, _index: usize) {}
    fn on_link_start(&self, operation: usize, _record: &RepoDataRecord) -> usize {
        operation
    }
    fn on_link_complete(&self, _index: usize) {}
    fn on_transaction_operation_complete(&self, _operation: usize) {
        self.0.done.fetch_add(1, Ordering::SeqCst);
    }
    fn on_transaction_complete(&self) {}
    fn on_post_link_start(&self, _package_name: &str, _script_path: &str) -> usize {
        0
    }
    fn on_post_link_complete(&self, _index: usize, _success: bool) {}
    fn on_pre_unlink_start(&self, _package_name: &str, _script_path: &str) -> usize {
        0
    }
    fn on_pre_unlink_complete(&self, _index: usize, _success: bool) {}
}

/// `1.5 MiB`: bytes in binary units, one decimal from KiB up.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `12/40 packages, 3.5 MiB of 120.0 MiB`: the counts in words (no bytes when nothing was
/// downloaded).
fn counts_text(c: &Counts) -> String {
    let mut text = format!("{}/{} packages", c.done, c.total);
    if c.bytes_total > 0 {
        text.push_str(&format!(", {} of {}", size(c.bytes), size(c.bytes_total)));
    }
    text
}

/// One frame of the terminal bar: with counts, `[#####-----] 12/40 packages, 3.5 MiB of 9.0 MiB,
/// 14 s: WHAT`; without (pip), a spinner, the time so far and WHAT. Cut to `width` characters.
pub fn bar_line(
    what: &str,
    counts: Option<&Counts>,
    elapsed: Duration,
    tick: usize,
    width: usize,
) -> String {
    const CELLS: usize = 20;
    let secs = elapsed.as_secs();
    let line = match counts {
        Some(c) => {
            let filled = (c.done.min(c.total) * CELLS)
                .checked_div(c.total)
                .unwrap_or(0);
            format!(
                "[{}{}] {}, {secs} s: {what}",
                "#".repeat(filled),
                "-".repeat(CELLS - filled),
                counts_text(c)
            )
        }
        None => {
            let spinner = ['|', '/', '-', '\\'][tick % 4];
            format!("{spinner} {secs} s: {what}")
        }
    };
    line.chars().take(width).collect()
}

/// The periodic line when stderr is not a terminal: `WHAT: still running after 30 s`, and the
/// counts in brackets when there are some.
pub fn log_line(what: &str, counts: Option<&Counts>, elapsed: Duration) -> String {
    let mut line = format!("{what}: still running after {} s", elapsed.as_secs());
    if let Some(c) = counts {
        line.push_str(&format!(" ({})", counts_text(c)));
    }
    line
}

enum Tick {
    Wake,
    Done,
}

/// Runs `work` with progress for it: the bar on stderr when stderr is a terminal, else a log
/// line every [`every`]. `tally`, when given, is what the installer fills as it goes.
pub fn with_progress<T>(what: &str, tally: Option<&Arc<Tally>>, work: impl FnOnce() -> T) -> T {
    if std::io::stderr().is_terminal() {
        with_bar(what, tally, &mut std::io::stderr(), work)
    } else {
        with_log_lines(what, every(), tally, &say, work)
    }
}

/// Runs `work`, drawing the bar into `out` every [`REDRAW`] (and when the install starts) and
/// clearing it when `work` ends: `\r`, the line, then erase-to-end-of-line.
pub fn with_bar<T>(
    what: &str,
    tally: Option<&Arc<Tally>>,
    out: &mut (dyn Write + Send),
    work: impl FnOnce() -> T,
) -> T {
    let (tx, rx) = channel::<Tick>();
    if let Some(t) = tally {
        *t.wake.lock().unwrap() = Some(tx.clone());
    }
    let result = std::thread::scope(|scope| {
        scope.spawn(move || {
            let started = Instant::now();
            let mut tick = 0;
            loop {
                let counts = tally.and_then(|t| t.counts());
                let line = bar_line(what, counts.as_ref(), started.elapsed(), tick, WIDTH);
                let _ = write!(out, "\r{line}\x1b[K");
                let _ = out.flush();
                tick += 1;
                match rx.recv_timeout(REDRAW) {
                    Ok(Tick::Wake) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Tick::Done) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
        });
        let result = work();
        let _ = tx.send(Tick::Done);
        result
    });
    if let Some(t) = tally {
        *t.wake.lock().unwrap() = None;
    }
    result
}

/// Runs `work`, calling `say` every `every` while it runs with [`log_line`].
pub fn with_log_lines<T>(
    what: &str,
    every: Duration,
    tally: Option<&Arc<Tally>>,
    say: &(dyn Fn(String) + Sync),
    work: impl FnOnce() -> T,
) -> T {
    let (done, finished) = channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let started = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
                let counts = tally.and_then(|t| t.counts());
                say(log_line(what, counts.as_ref(), started.elapsed()));
            }
        });
        let out = work();
        drop(done);
        out
    })
}

/// Where periodic lines go when stderr is not a terminal: the log.
pub fn say(line: String) {
    tracing::info!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_work_says_it_is_still_running_and_stops_saying_so_when_done() {
        let lines = Mutex::new(Vec::new());
        let (heard, hear) = channel::<()>();
        let heard = Mutex::new(heard);
        let say = |line: String| {
            lines.lock().unwrap().push(line);
            let _ = heard.lock().unwrap().send(());
        };
        // The work ends only once a progress line was said: no timing is assumed.
        let out = with_log_lines(
            "installing 3 packages",
            Duration::from_millis(1),
            None,
            &say,
            || {
                hear.recv().unwrap();
                42
            },
        );
        assert_eq!(out, 42);
        let said = lines.lock().unwrap().len();
        assert!(said >= 1);
        assert!(lines.lock().unwrap()[0].starts_with("installing 3 packages: still running after"));
        // Nothing more once the work is done (the ticker thread has ended with the scope).
        assert_eq!(lines.lock().unwrap().len(), said);
    }

    #[test]
    fn sizes_are_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(120 * 1024 * 1024), "120.0 MiB");
        assert_eq!(size(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn the_bar_shows_packages_bytes_and_time() {
        let c = Counts {
            done: 10,
            total: 40,
            bytes: 3 * 1024 * 1024 + 512 * 1024,
            bytes_total: 9 * 1024 * 1024,
        };
        assert_eq!(
            bar_line("env", Some(&c), Duration::from_secs(14), 0, 200),
            "[#####---------------] 10/40 packages, 3.5 MiB of 9.0 MiB, 14 s: env"
        );
        // From the cache: no bytes; all done: a full bar; none yet: an empty one.
        let cached = Counts {
            done: 3,
            total: 3,
            bytes: 0,
            bytes_total: 0,
        };
        assert_eq!(
            bar_line("env", Some(&cached), Duration::from_secs(1), 0, 200),
            "[####################] 3/3 packages, 1 s: env"
        );
        let empty = Counts {
            total: 0,
            done: 0,
            ..cached
        };
        assert_eq!(
            bar_line("env", Some(&empty), Duration::ZERO, 0, 200),
            "[--------------------] 0/0 packages, 0 s: env"
        );
        // Cut to the width, so the line never wraps.
        let long = bar_line(&"x".repeat(300), Some(&c), Duration::ZERO, 0, 79);
        assert_eq!(long.chars().count(), 79);
    }

    #[test]
    fn without_counts_the_bar_is_a_spinner() {
        let frames: Vec<String> = (0..5)
            .map(|t| bar_line("pip install (a) in /e", None, Duration::from_secs(7), t, 79))
            .collect();
        assert_eq!(frames[0], "| 7 s: pip install (a) in /e");
        assert_eq!(frames[1], "/ 7 s: pip install (a) in /e");
        assert_eq!(frames[3], "\\ 7 s: pip install (a) in /e");
        assert_eq!(frames[4], frames[0]);
    }

    #[test]
    fn log_lines_carry_the_counts_when_there_are_some() {
        let c = Counts {
            done: 2,
            total: 5,
            bytes: 2048,
            bytes_total: 4096,
        };
        assert_eq!(
            log_line(
                "conda_env:/e: installing 5 packages",
                Some(&c),
                Duration::from_secs(30)
            ),
            "conda_env:/e: installing 5 packages: still running after 30 s (2/5 packages, 2.0 KiB of 4.0 KiB)"
        );
        assert_eq!(
            log_line("pip install (a) in /e", None, Duration::from_secs(45)),
            "pip install (a) in /e: still running after 45 s"
        );
    }

    /// A writer the test can read while the bar thread holds it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_bar_draws_the_counts_once_the_install_starts_and_is_cleared_at_the_end() {
        let tally = Tally::new();
        let mut out = Shared::default();
        let seen = out.clone();
        let reporter = TallyReporter(tally.clone());
        let got = with_bar("env", Some(&tally), &mut out, || {
            // What rattler does when a transaction of 2 operations starts.
            let transaction: Transaction<PrefixRecord, RepoDataRecord> = Transaction {
                operations: vec![],
                python_info: None,
                current_python_info: None,
                platform: rattler_conda_types::Subdir::NoArch,
                unchanged: vec![],
            };
            reporter.on_transaction_start(&transaction);
            tally.total.store(2, Ordering::SeqCst);
            let d = reporter.on_download_start(0);
            reporter.on_download_progress(d, 1024, Some(2048));
            reporter.on_transaction_operation_complete(0);
            // Wait until a frame with the counts was drawn (the deadline is a hang guard only).
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let text = String::from_utf8_lossy(&seen.0.lock().unwrap()).into_owned();
                if text.contains("packages") {
                    break;
                }
                assert!(Instant::now() < deadline, "no frame with counts: {text:?}");
                std::thread::yield_now();
            }
            7
        });
        assert_eq!(got, 7);
        let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
        assert!(text.starts_with("\r"), "{text:?}");
        assert!(text.contains("/2 packages"), "{text:?}");
        assert!(text.ends_with("\r\x1b[K"), "cleared at the end: {text:?}");
        assert!(tally.wake.lock().unwrap().is_none());
    }
}
