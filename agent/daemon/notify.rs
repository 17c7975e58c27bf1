//! `sd_notify` for running under systemd with `Type=notify`: `READY=1` once the first reconcile is
//! done and the services are handed to the supervisor, `STATUS=` lines when the summary changes,
//! `WATCHDOG=1` at half of `WATCHDOG_USEC`, `RELOADING=1`/`STOPPING=1` around reloads and stops.
//!
//! The protocol is one datagram per message to the unix socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for the abstract namespace); std's `UnixDatagram` is all it takes. Without
//! `NOTIFY_SOCKET` every call does nothing. Services never see these variables: the supervisor
//! starts them with a cleared environment.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Where messages go, and the watchdog's rhythm.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when systemd asked for a watchdog for this process.
    watchdog: Option<Duration>,
    next_watchdog: Instant,
    last_status: String,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let addr = address(path.to_str()?)?;
            let sock = UnixDatagram::unbound().ok()?;
            Some((sock, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us && socket.is_some())
            .map(|u| Duration::from_micros(u / 2));
        if let Some(w) = watchdog {
            tracing::info!(every = ?w, "systemd watchdog: pinging");
        }
        Notifier {
            socket,
            watchdog,
            next_watchdog: Instant::now(),
            last_status: String::new(),
        }
    }

    /// Sends one message (`KEY=value` lines); errors are logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((sock, addr)) = &self.socket else {
            return;
        };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_owned();
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// Sends `STATUS=` when it differs from the last one sent.
    pub fn status(&mut self, status: &str) {
        if self.socket.is_some() && status != self.last_status {
            self.last_status = status.to_owned();
            self.send(&format!("STATUS={status}"));
        }
    }

    /// How long until the next watchdog ping is due; `None` without a watchdog.
    pub fn next_due(&self) -> Option<Duration> {
        self.watchdog
            .map(|_| self.next_watchdog.saturating_duration_since(Instant::now()))
    }

    /// Pings the watchdog when due; called from the agent loop, so a stuck loop stops the pings
    /// and systemd restarts the agent.
    pub fn tick(&mut self) {
        let Some(every) = self.watchdog else { return };
        let now = Instant::now();
        if now >= self.next_watchdog {
            self.send("WATCHDOG=1");
            self.next_watchdog = now + every;
        }
    }
}

/// The socket address of a `NOTIFY_SOCKET` value.
fn address(value: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match value.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok(),
        None if value.starts_with('/') => std::os::unix::net::SocketAddr::from_pathname(value).ok(),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                address(path.to_str().unwrap()).unwrap(),
            )),
            watchdog: Some(Duration::from_secs(3600)),
            next_watchdog: Instant::now(),
            last_status: String::new(),
        };
        let mut buf = [0u8; 512];
        let mut recv = || {
            let len = server.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..len]).into_owned()
        };
        n.ready("up");
        assert_eq!(recv(), "READY=1\nSTATUS=up");
        n.status("up");
        n.status("changed");
        assert_eq!(recv(), "STATUS=changed");
        n.tick();
        n.tick();
        assert_eq!(recv(), "WATCHDOG=1");
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err(), "a second ping came early");
    }

    #[test]
    fn addresses() {
        assert!(address("@sd").is_some());
        assert!(address("/run/systemd/notify").is_some());
        assert!(address("relative").is_none());
    }
}
