//! The live mount table (`/proc/self/mountinfo`) and the `mount`/`umount` commands.
//!
//! Mounts go through util-linux `mount` with every field given explicitly (not `mount TARGET`,
//! which would read the machine's own fstab, not the one under `--root`), so filesystem helpers
//! such as `mount.cifs` run as they would at boot.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// One line of `/proc/self/mountinfo`, escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub id: u32,
    pub parent: u32,
    /// The device's major:minor.
    pub dev: String,
    /// The directory of the filesystem that is mounted here (`/` unless a bind mount of a
    /// subdirectory).
    pub root: String,
    pub target: String,
    /// Per-mount options (`rw`, `nosuid`, `relatime`, ...).
    pub mount_options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Filesystem options (`size=1024k`, `vers=3.1.1`, ...).
    pub super_options: Vec<String>,
}

impl Mounted {
    /// An automount placeholder (systemd's `x-systemd.automount`, autofs): the share itself is
    /// not mounted yet.
    pub fn is_placeholder(&self) -> bool {
        self.fstype == "autofs"
    }
}

/// Decodes `\ooo` octal escapes (as `/proc/self/mountinfo` and fstab write them); anything else
/// is kept as it is.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn options(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter(|o| !o.is_empty())
        .map(unescape)
        .collect()
}

/// Parses mountinfo text. The fields after the optional ones are found from the ` - ` separator,
/// as proc(5) says, since the optional fields vary in number. Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mounted> {
    text.lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let mut h = head.split(' ');
            let id = h.next()?.parse().ok()?;
            let parent = h.next()?.parse().ok()?;
            let dev = h.next()?.to_owned();
            let root = unescape(h.next()?);
            let target = unescape(h.next()?);
            let mount_options = options(h.next()?);
            let mut t = tail.split(' ');
            let fstype = unescape(t.next()?);
            let source = unescape(t.next()?);
            let super_options = t.next().map(options).unwrap_or_default();
            Some(Mounted {
                id,
                parent,
                dev,
                root,
                target,
                mount_options,
                fstype,
                source,
                super_options,
            })
        })
        .collect()
}

/// The mount table of this process's mount namespace.
pub fn read() -> Result<Vec<Mounted>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    Ok(parse(&text))
}

/// How long one `mount`/`umount`/`smbclient` may take before it is stopped: a dead server must
/// not hang an apply.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `program args...` with a time limit; `Ok(())` on exit 0, else an error with its output.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let output = run_output(program, args, env, COMMAND_TIMEOUT)?;
    if output.0 == Some(0) {
        return Ok(());
    }
    let status = output
        .0
        .map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
    Err(format!("{status}: {}", output.1.trim()))
}

/// Runs a command, returns its exit code (`None`: killed) and its stdout and stderr together.
pub fn run_output(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Result<(Option<i32>, String), String> {
    let dir = tempdir_for_output()?;
    let out_path = dir.join("output");
    let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` is not installed")
        } else {
            format!("cannot run `{program}`: {e}")
        }
    })?;
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot wait for `{program}`: {e}"));
            }
        }
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    match status {
        Some(s) => Ok((s.code(), text)),
        None => Err(format!(
            "`{program}` did not finish within {} s and was stopped",
            limit.as_secs()
        )),
    }
}

/// A private folder for a child's output (a file rather than a pipe, so a child that leaves a
/// grandchild holding the pipe open cannot hang us).
fn tempdir_for_output() -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for n in 0..100u32 {
        let dir = base.join(format!("provision-cmd-{}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err("cannot create a temporary folder for command output".into())
}

/// `mount -t FSTYPE -o OPTIONS SOURCE TARGET`.
pub fn mount(fstype: &str, source: &str, options: &str, target: &Path) -> Result<()> {
    let target_s = target.to_string_lossy();
    let mut args = vec!["-t", fstype];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([source, &target_s]);
    run("mount", &args, &[]).map_err(|e| {
        Error::Other(format!(
            "mount -t {fstype} {source} {target_s} failed ({e})"
        ))
    })
}

/// `mount -o remount,OPTIONS TARGET`.
pub fn remount(options: &str, target: &Path) -> Result<()> {
    let target_s = target.to_string_lossy();
    let opts = format!("remount,{options}");
    run("mount", &["-o", &opts, &target_s], &[])
        .map_err(|e| Error::Other(format!("remount of {target_s} failed ({e})")))
}

/// `umount TARGET`.
pub fn umount(target: &Path) -> Result<()> {
    let target_s = target.to_string_lossy();
    run("umount", &[&target_s], &[]).map_err(|e| {
        let hint = if e.contains("busy") {
            "; something is using it (`fuser -vm` shows what), stop it and apply again"
        } else {
            ""
        };
        Error::Other(format!("umount {target_s} failed ({e}){hint}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
35 22 0:31 / /mnt/my\\040data rw,nosuid,nodev,relatime shared:12 master:3 - tmpfs scratch\\040fs rw,size=1024k,mode=755
36 22 8:1 /srv/exports/a /mnt/bind rw,relatime - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/share rw,relatime shared:20 - autofs systemd-1 rw,fd=44,pgrp=1,timeout=0,minproto=5,maxproto=5,direct
41 40 0:51 / /mnt/share rw,relatime shared:21 - cifs //nas.example/data rw,vers=3.1.1,cache=strict,username=alice,uid=1000,gid=1000,file_mode=0755,mfsymlinks
garbage line
";

    #[test]
    fn parses_relative_to_the_separator_and_decodes() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 5);
        let tmp = &t[1];
        assert_eq!(tmp.target, "/mnt/my data");
        assert_eq!(tmp.source, "scratch fs");
        assert_eq!(tmp.fstype, "tmpfs");
        assert_eq!(tmp.mount_options, ["rw", "nosuid", "nodev", "relatime"]);
        assert_eq!(tmp.super_options, ["rw", "size=1024k", "mode=755"]);
        assert_eq!((tmp.id, tmp.parent, tmp.dev.as_str()), (35, 22, "0:31"));
        assert_eq!(t[2].root, "/srv/exports/a");
    }

    #[test]
    fn an_automount_placeholder_is_not_the_share() {
        let t = parse(SAMPLE);
        let at: Vec<&Mounted> = t.iter().filter(|m| m.target == "/mnt/share").collect();
        assert_eq!(at.len(), 2);
        assert!(at[0].is_placeholder());
        assert!(!at[1].is_placeholder());
        assert_eq!(at[1].source, "//nas.example/data");
    }

    #[test]
    fn commands_report_their_output() {
        let e = run("sh", &["-c", "echo oops >&2; exit 3"], &[]).unwrap_err();
        assert_eq!(e, "exit 3: oops");
        assert!(run("true", &[], &[]).is_ok());
        let e = run("no-such-program-here", &[], &[]).unwrap_err();
        assert!(e.contains("not installed"), "{e}");
        let e = run_output("sleep", &["5"], &[], Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }
}
