//! Atomic file replacement: a power cut at any instant leaves the old file or the new one.
//!
//! The new content goes to a temporary file in the target's own directory (same filesystem, so
//! the rename is atomic), gets its final mode and owner *before* it becomes visible (a secret is
//! never readable by others, not even for an instant), is fsynced, optionally checked by a
//! `validate` command, renamed over the target, and the directory is fsynced so the rename itself
//! survives a crash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{Error, Result};

/// The suffix of temporary files. A killed apply can leave one behind; the next apply of the same
/// file removes it (under the apply lock, so no other apply is using it).
pub const TEMP_MARK: &str = ".provision-tmp-";

/// Mode and ownership a file gets.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    /// `mode`, owned by the user running provision: root on a real node, and the invoking user
    /// when someone tries a manifest in a sandbox root without root privileges.
    pub fn own(mode: u32) -> Meta {
        Meta {
            mode,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

/// Replaces `target` with `content`. `validate` is a shell command with `%s` for the temporary
/// file; if it exits non-zero, the temporary file is removed and `target` is left untouched.
pub fn write(
    target: &Path,
    content: &[u8],
    meta: Meta,
    validate: Option<&str>,
    shown: &str,
) -> Result<()> {
    write_checked(target, content, meta, &mut |temp| match validate {
        Some(command) => run_validate(command, temp, shown),
        None => Ok(()),
    })
}

/// Replaces `target` with `content` after `check` accepts the complete temporary file (given its
/// path); an error from `check` leaves `target` untouched.
pub fn write_checked(
    target: &Path,
    content: &[u8],
    meta: Meta,
    check: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| Error::Other(format!("{} has no parent directory", target.display())))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temps(dir, &name)?;
    let temp = dir.join(format!(".{name}{TEMP_MARK}{}", std::process::id()));
    let named = |e: Error| match e {
        Error::Io { action, source, .. } => Error::Write {
            target: target.to_owned(),
            step: action,
            temp: temp.clone(),
            source,
        },
        other => other,
    };
    let result = write_temp(&temp, target, content, meta)
        .map_err(named)
        .and_then(|()| check(&temp))
        .and_then(|()| {
            std::fs::rename(&temp, target).map_err(Error::io("rename into place", target))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

fn write_temp(temp: &Path, target: &Path, content: &[u8], meta: Meta) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(Error::io("create", temp))?;
    file.write_all(content).map_err(Error::io("write", temp))?;
    set_meta_fd(&file, target, meta)?;
    file.sync_all().map_err(Error::io("fsync", temp))
}

/// Sets owner then mode on an open file (chown clears set-id bits, so mode goes last).
fn set_meta_fd(file: &File, path: &Path, meta: Meta) -> Result<()> {
    let current = file.metadata().map_err(Error::io("inspect", path))?;
    use std::os::unix::fs::MetadataExt;
    if current.uid() != meta.uid || current.gid() != meta.gid {
        std::os::unix::fs::fchown(file, Some(meta.uid), Some(meta.gid))
            .map_err(|e| super::chown_error(path, e))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))
        .map_err(Error::io("change the mode of", path))
}

/// Fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync the directory", dir))
}

fn remove_stale_temps(dir: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}{TEMP_MARK}");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("list", dir)(e)),
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let path: PathBuf = entry.path();
            std::fs::remove_file(&path)
                .map_err(Error::io("remove the stale temporary file", &path))?;
        }
    }
    Ok(())
}

fn run_validate(command: &str, temp: &Path, shown: &str) -> Result<()> {
    let quoted = format!("'{}'", temp.display().to_string().replace('\'', r"'\''"));
    let line = command.replace("%s", &quoted);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .output()
        .map_err(|e| Error::Other(format!("cannot run validate command `{command}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stdout));
    let output = output.trim();
    Err(Error::Validate {
        command: command.to_owned(),
        path: shown.to_owned(),
        status: out
            .status
            .code()
            .map_or_else(|| "killed".to_owned(), |c| c.to_string()),
        output: if output.is_empty() {
            String::new()
        } else {
            format!(":\n{output}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn meta(mode: u32) -> Meta {
        Meta {
            mode,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }

    #[test]
    fn replaces_content_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        std::fs::write(&target, "old").unwrap();
        write(&target, b"new", meta(0o640), None, "/f").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn a_failing_validate_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        std::fs::write(&target, "old").unwrap();
        let err = write(&target, b"new", meta(0o644), Some("grep -q good %s"), "/f").unwrap_err();
        assert!(matches!(err, Error::Validate { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write(&target, b"good", meta(0o644), Some("grep -q good %s"), "/f").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"good");
    }

    #[test]
    fn stale_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!(".f{TEMP_MARK}99999"));
        std::fs::write(&stale, "half").unwrap();
        write(&dir.path().join("f"), b"x", meta(0o644), None, "/f").unwrap();
        assert!(!stale.exists());
    }
}
