//! Readiness and liveness probes: is the service answering yet, and is it still?
//!
//! A probe is one [`Check`] repeated every `interval`, each attempt bounded by `timeout`. Checks
//! block the calling thread for at most their timeout; the supervisor runs them on their own
//! threads. HTTP and HTTPS go through provision's one client ([`crate::http`]), a fresh
//! connection each time. It offers `Accept-Encoding: gzip` like any real client and gunzips the
//! answer: PYME's web framework writes a `str` to the socket (a server-side TypeError, no answer)
//! unless the client accepts gzip, so its rule and node servers only answer clients that do.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{ProcessSpec, command_as};

/// What one attempt checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A TCP connection to `addr` (`host:port`) is accepted.
    Tcp { addr: String },
    /// `GET url` answers with `status`, and the body contains `body_contains` if given; with
    /// `token_file`, the request carries `Authorization: token <the file's first line>`.
    Http {
        url: String,
        status: u16,
        body_contains: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// The file exists.
    File { path: PathBuf },
    /// The command exits with status 0 within the timeout (it is killed otherwise).
    Command { program: String, args: Vec<String> },
    /// The log file holds `contains` in what was written since this run of the service started.
    LogLine { path: PathBuf, contains: String },
}

/// A check with its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Check {
    /// One attempt, commands as the agent's own user. `log_start` is the length of the service's
    /// log file when this run started (only [`Check::LogLine`] uses it). `Err` says what was
    /// wrong, for the status.
    pub fn run(&self, timeout: Duration, log_start: u64) -> Result<(), String> {
        self.run_as(timeout, log_start, None)
    }

    /// One attempt; a [`Check::Command`] runs as the service `service` would (its user, groups,
    /// clean environment, working directory: [`command_as`]), never as the agent's root.
    pub fn run_as(
        &self,
        timeout: Duration,
        log_start: u64,
        service: Option<&ProcessSpec>,
    ) -> Result<(), String> {
        match self {
            Check::Tcp { addr } => {
                let sock = resolve(addr)?;
                TcpStream::connect_timeout(&sock, timeout)
                    .map(drop)
                    .map_err(|e| format!("tcp {addr}: {e}"))
            }
            Check::Http {
                url,
                status,
                body_contains,
                token_file,
            } => http_get(url, token_file.as_deref(), timeout).and_then(|(got, body)| {
                if got != *status {
                    return Err(format!("GET {url}: status {got}, expected {status}"));
                }
                match body_contains {
                    Some(text) if !body.contains(text.as_str()) => {
                        Err(format!("GET {url}: body does not contain {text:?}"))
                    }
                    _ => Ok(()),
                }
            }),
            Check::File { path } => match path.try_exists() {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("{} does not exist", path.display())),
                Err(e) => Err(format!("{}: {e}", path.display())),
            },
            Check::Command { program, args } => {
                let mut cmd = match service {
                    Some(spec) => command_as(spec, program, args),
                    None => {
                        let mut cmd = Command::new(program);
                        cmd.args(args).stdin(Stdio::null()).process_group(0);
                        cmd
                    }
                };
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
                run_command(program, cmd, timeout)
            }
            Check::LogLine { path, contains } => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                // A shorter file than at start was rotated: then all of it is new.
                let from = usize::try_from(log_start).unwrap_or(usize::MAX);
                let new = bytes.get(from..).unwrap_or(&bytes);
                if String::from_utf8_lossy(new).contains(contains.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{:?} not yet in {}", contains, path.display()))
                }
            }
        }
    }
}

impl Check {
    /// The `host:port` a TCP or HTTP check connects to, if it is one of those.
    pub fn address(&self) -> Option<String> {
        match self {
            Check::Tcp { addr } => Some(addr.clone()),
            Check::Http { url, .. } => {
                let (scheme, rest) = url.split_once("://")?;
                let authority = rest.split(['/', '?', '#']).next()?;
                let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
                let has_port = match authority.strip_prefix('[') {
                    Some(v6) => v6.contains("]:"),
                    None => authority.contains(':'),
                };
                Some(if has_port {
                    authority.to_owned()
                } else {
                    let port = if scheme == "https" { 443 } else { 80 };
                    format!("{authority}:{port}")
                })
            }
            _ => None,
        }
    }

    /// Before a start: why the service must not be started because something else already
    /// answers where its readiness check looks (it would make the new process look ready while
    /// the other one answers, and the new one fail to bind), if so. Only TCP and HTTP checks
    /// have a place to look; an address that does not resolve is left to the check itself.
    pub fn taken(&self) -> Option<String> {
        let addr = self.address()?;
        let sock = resolve(&addr).ok()?;
        TcpStream::connect_timeout(&sock, Duration::from_millis(250))
            .ok()
            .map(|_| {
                format!(
                    "{addr}, where its readiness check looks, is already in use by another process; not started (free the port or give the service another one)"
                )
            })
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Tcp { addr } => write!(f, "tcp {addr}"),
            Check::Http { url, status, .. } => write!(f, "GET {url} → {status}"),
            Check::File { path } => write!(f, "file {}", path.display()),
            Check::Command { program, .. } => write!(f, "command {program}"),
            Check::LogLine { contains, .. } => write!(f, "log line {contains:?}"),
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

/// The largest response body read; health endpoints are small.
const MAX_RESPONSE: u64 = 1 << 20;

/// `GET url` (http or https, no redirects followed), with the token of `token_file` if given;
/// returns the status and the body. The token never appears in an error.
fn http_get(
    url: &str,
    token_file: Option<&Path>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut get = crate::http::Get::new(url, timeout, MAX_RESPONSE);
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        get.headers
            .push(("authorization", format!("token {token}")));
    }
    let answer = crate::http::get(get).map_err(|e| e.to_string())?;
    Ok((
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    ))
}

/// Runs `cmd` (in a process group of its own) for at most `timeout`; the whole group is killed
/// after that.
fn run_command(program: &str, mut cmd: Command, timeout: Duration) -> Result<(), String> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`{program}` failed: {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{program}` did not finish within {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for `{program}`: {e}")),
        }
    }
}
