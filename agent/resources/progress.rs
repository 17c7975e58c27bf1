//! Progress for long work (a conda install of a big environment, a pip build from source): a line
//! every so often saying what is still running and for how long, so a run that takes minutes
//! does not look hung. On a terminal the line also goes to stderr; elsewhere (CI, the agent's
//! journal) it is an info log line (`-v`).

use std::io::IsTerminal;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How often a long install says it is still running.
pub const EVERY: Duration = Duration::from_secs(15);

/// Runs `work`, calling `say` every `every` while it runs with `what` and the time so far.
pub fn with_progress<T>(
    what: &str,
    every: Duration,
    say: &(dyn Fn(String) + Sync),
    work: impl FnOnce() -> T,
) -> T {
    let (done, finished) = channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let started = Instant::now();
            while let Err(RecvTimeoutError::Timeout) = finished.recv_timeout(every) {
                say(format!(
                    "{what}: still running after {} s",
                    started.elapsed().as_secs()
                ));
            }
        });
        let out = work();
        drop(done);
        out
    })
}

/// Where progress lines go: the log, and stderr when it is a terminal.
pub fn say(line: String) {
    tracing::info!("{line}");
    if std::io::stderr().is_terminal() {
        eprintln!("  … {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
        let out = with_progress(
            "installing 3 packages",
            Duration::from_millis(1),
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
}
