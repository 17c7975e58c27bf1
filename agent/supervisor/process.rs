//! One run of a service: spawn it as its own user in its own process group with its log piped to
//! a rotating file, and stop it by signalling the whole group, then SIGKILL after a grace period.
//!
//! Guarantees: a service never runs as uid 0 unless `allow_root` says so; every process it starts
//! (shell pipelines, PYME node-server workers) is in its group, and the group is gone after
//! [`Process::stop`], after its leader exits (leftover workers are killed so a restart never
//! duplicates them), and when a [`Process`] is dropped.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitPidFlag;
use nix::unistd::{Gid, Pid, Uid};

use super::logfile::{LogConfig, RotatingFile};
use crate::host::accounts::Accounts;

/// Who a service runs as, resolved from the root's account files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (e.g. `video`, `render` for GPU devices).
    pub groups: Vec<u32>,
    pub home: String,
}

impl Identity {
    /// Resolves `user` (and optionally another primary `group`): the supplementary groups are the
    /// groups that list the user, as `initgroups` would give them, plus `extra_groups`.
    pub fn resolve(
        accounts: &Accounts,
        user: &str,
        group: Option<&str>,
        extra_groups: &[String],
    ) -> Result<Identity, SpawnError> {
        let entry = accounts
            .user(user)
            .ok_or_else(|| SpawnError::UnknownUser(user.to_string()))?;
        let gid = match group {
            Some(g) => accounts
                .gid(g)
                .ok_or_else(|| SpawnError::UnknownGroup(g.to_string()))?,
            None => entry.gid,
        };
        let mut groups = Vec::new();
        for name in accounts.memberships(user).iter().chain(extra_groups) {
            let id = accounts
                .gid(name)
                .ok_or_else(|| SpawnError::UnknownGroup(name.clone()))?;
            if !groups.contains(&id) {
                groups.push(id);
            }
        }
        Ok(Identity {
            user: entry.name.clone(),
            uid: entry.uid,
            gid,
            groups,
            home: entry.home.clone(),
        })
    }
}

/// How a service is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopConfig {
    pub signal: Signal,
    /// Time between the signal and SIGKILL to the whole group.
    pub grace: Duration,
}

impl Default for StopConfig {
    fn default() -> Self {
        StopConfig {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(10),
        }
    }
}

/// Everything needed to start one run of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    pub name: String,
    pub program: String,
    pub args: Vec<String>,
    /// Added to a clean environment of `HOME`, `USER`, `LOGNAME` and `PATH`; wins over them.
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// `None`: the agent's own user.
    pub identity: Option<Identity>,
    pub allow_root: bool,
    pub umask: Option<u32>,
    pub log: LogConfig,
    pub stop: StopConfig,
}

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(
        "service `{0}` would run as root; give it a `user:` or set `allow_root: true` if it really must"
    )]
    Root(String),
    #[error("unknown user `{0}` in the root's /etc/passwd")]
    UnknownUser(String),
    #[error("unknown group `{0}` in the root's /etc/group")]
    UnknownGroup(String),
    #[error("cannot open the log file {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot start `{program}` for service `{name}`: {source}")]
    Exec {
        name: String,
        program: String,
        source: io::Error,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    fn from_status(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Code(-1),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// A running (or just exited) service process and its process group.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pgid: Pid,
    started: Instant,
    exit: Option<Exit>,
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Process {
    /// Starts `spec`. Refuses uid 0 (explicit, or the agent's own when it runs as root) unless
    /// `spec.allow_root`.
    pub fn spawn(spec: &ProcessSpec) -> Result<Process, SpawnError> {
        let uid = spec
            .identity
            .as_ref()
            .map_or_else(|| Uid::effective().as_raw(), |i| i.uid);
        if uid == 0 && !spec.allow_root {
            return Err(SpawnError::Root(spec.name.clone()));
        }
        let log = RotatingFile::open(spec.log.clone()).map_err(|source| SpawnError::Log {
            path: spec.log.path.clone(),
            source,
        })?;
        let exec_err = |source| SpawnError::Exec {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        };
        let (reader, writer) = io::pipe().map_err(exec_err)?;
        let writer2 = writer.try_clone().map_err(exec_err)?;

        let mut cmd = command_as(spec, &spec.program, &spec.args);
        cmd.stdout(writer).stderr(writer2);
        let child = cmd.spawn().map_err(exec_err)?;
        // The command holds the write ends; dropping it leaves them only to the service's group,
        // so the pump sees end of input once every process of the group is gone.
        drop(cmd);
        thread::Builder::new()
            .name(format!("log-{}", spec.name))
            .spawn(move || log.pump(reader))
            .map_err(exec_err)?;
        let pgid = Pid::from_raw(child.id() as i32);
        Ok(Process {
            child,
            pgid,
            started: Instant::now(),
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process group: the leader's pid.
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw()
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Non-blocking: how the leader ended, if it has. Leftover group members are killed then.
    pub fn try_exit(&mut self) -> Option<Exit> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(Exit::from_status(status));
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        self.exit
    }

    /// Sends `stop.signal` to the group: the first half of a stop that does not block. Follow it
    /// with [`Process::gone`] until it says yes or the grace period is over, then
    /// [`Process::kill`].
    pub fn signal_stop(&mut self, stop: &StopConfig) {
        if self.exit.is_none() {
            let _ = killpg(self.pgid, stop.signal);
        }
    }

    /// Whether the leader has exited (it is reaped then) and no member of its group is left.
    pub fn gone(&mut self) -> bool {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit = Some(Exit::from_status(status));
        }
        self.exit.is_some() && group_members(self.pgid.as_raw()).is_empty()
    }

    /// Calls `wake` once the leader has exited, from a small thread that waits for that without
    /// reaping it (`waitid` with `WNOWAIT`): the supervisor sleeps until then instead of polling.
    pub fn on_exit(&self, wake: impl FnOnce() + Send + 'static) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = thread::Builder::new()
            .name("exit-wait".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                while let Err(nix::errno::Errno::EINTR) =
                    nix::sys::wait::waitid(nix::sys::wait::Id::Pid(pid), flags)
                {}
                wake();
            });
    }

    /// Sends `stop.signal` to the group, waits up to `stop.grace` for the whole group to leave,
    /// then SIGKILLs whatever is left. Returns how the leader ended.
    pub fn stop(&mut self, stop: &StopConfig) -> Exit {
        if self.exit.is_none() {
            let _ = killpg(self.pgid, stop.signal);
        }
        let deadline = Instant::now() + stop.grace;
        loop {
            if self.exit.is_none()
                && let Ok(Some(status)) = self.child.try_wait()
            {
                self.exit = Some(Exit::from_status(status));
            }
            if self.exit.is_some() && group_members(self.pgid.as_raw()).is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        self.kill()
    }

    /// SIGKILL to the whole group now; reaps the leader and waits (at most a second) until the
    /// kernel has ended every member.
    pub fn kill(&mut self) -> Exit {
        let _ = killpg(self.pgid, Signal::SIGKILL);
        if self.exit.is_none() {
            self.exit = Some(match self.child.wait() {
                Ok(status) => Exit::from_status(status),
                Err(_) => Exit::Signal(Signal::SIGKILL as i32),
            });
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while !group_members(self.pgid.as_raw()).is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        reap_adopted_members(self.pgid.as_raw());
        self.exit.unwrap_or(Exit::Signal(Signal::SIGKILL as i32))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Live (non-zombie) processes in group `pgid`, from /proc.
pub fn group_members(pgid: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.state != 'Z' && p.state != 'X')
        .map(|p| p.pid)
        .collect()
}

/// One line of the process table, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// `R`, `S`, `Z` (a zombie: ended, not reaped), ...
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

/// Every process this process can see.
pub fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        Some(ProcStat {
            pid,
            state: fields.next()?.chars().next()?,
            ppid: fields.next()?.parse().ok()?,
            pgrp: fields.next()?.parse().ok()?,
        })
    })
    .collect()
}

/// Reaps the members of group `pgid` (its leader excepted) that ended as zombie children of this
/// process. They are ours only where this process is a child subreaper (a worker whose parent in
/// the service died first comes back to it, not to PID 1); elsewhere there are none and this does
/// nothing. The leader is never reaped here: its `Child` does that.
pub fn reap_adopted_members(pgid: i32) {
    let me = std::process::id() as i32;
    for p in processes() {
        if p.state == 'Z' && p.ppid == me && p.pgrp == pgid && p.pid != pgid {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// A command for `program args` that runs as `spec`'s service would: its identity (groups, then
/// group, then user), its clean environment (`PATH`, `HOME`, `USER`, `LOGNAME`, then `spec.env`),
/// its working directory and umask, stdin from /dev/null, in a process group of its own. Used
/// for the service itself and for its command probes.
pub fn command_as(spec: &ProcessSpec, program: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .process_group(0);
    if let Some(id) = &spec.identity {
        cmd.env("HOME", &id.home)
            .env("USER", &id.user)
            .env("LOGNAME", &id.user);
    } else if let Ok(home) = std::env::var("HOME") {
        cmd.env("HOME", home);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    set_credentials(&mut cmd, spec.identity.clone(), spec.umask);
    cmd
}

/// Drops privileges in the child between fork and exec: supplementary groups, then group, then
/// user (the order that leaves no way back), the umask, and an empty signal mask. std's own `uid`/`gid` run before
/// `pre_exec` hooks and cannot set supplementary groups on stable Rust, so all of it is done here.
#[allow(unsafe_code)]
fn set_credentials(cmd: &mut Command, identity: Option<Identity>, umask: Option<u32>) {
    // Everything the hook needs is built here, before the fork: it must not allocate.
    let ids = identity.map(|id| {
        let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        (groups, Gid::from_raw(id.gid), Uid::from_raw(id.uid))
    });
    let mask = umask.map(nix::sys::stat::Mode::from_bits_truncate);
    // A service starts with no signal blocked, whatever the agent blocks for its own handling
    // (std's fork path does not reset the mask when a pre_exec hook is set).
    let unblocked = nix::sys::signal::SigSet::empty();
    let hook = move || -> io::Result<()> {
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&unblocked),
            None,
        )
        .map_err(io::Error::from)?;
        if let Some(mask) = mask {
            nix::sys::stat::umask(mask);
        }
        if let Some((groups, gid, uid)) = &ids {
            nix::unistd::setgroups(groups).map_err(io::Error::from)?;
            nix::unistd::setgid(*gid).map_err(io::Error::from)?;
            nix::unistd::setuid(*uid).map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec; it only makes async-signal-safe
    // system calls (sigprocmask, umask, setgroups, setgid, setuid) on data prepared before the fork, and
    // neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A signal by name: `SIGTERM`, `TERM` or `term`.
pub fn parse_signal(name: &str) -> Option<Signal> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}
