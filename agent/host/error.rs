//! Errors from touching the machine. Each names the path and what was being done.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {}: {source}{}", path.display(), cause(source))]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A step of an atomic write failed: named by the file being replaced, not only its temporary
    /// copy (which is removed again).
    #[error(
        "cannot write {}: cannot {step} its temporary copy {}: {source}{}",
        target.display(), temp.display(), cause(source)
    )]
    Write {
        target: PathBuf,
        step: &'static str,
        temp: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The backup kept before a change could not be made, so the change was not made either.
    #[error("cannot back up {path} before changing it, so it is left as it was: {source}")]
    Backup {
        path: String,
        #[source]
        source: Box<Error>,
    },
    #[error(
        "{} resolves through the symlink {} to {}, which is outside the root {}; provision does not follow links out of the managed root",
        path, link.display(), target.display(), root.display()
    )]
    Escape {
        path: String,
        link: PathBuf,
        target: PathBuf,
        root: PathBuf,
    },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("{path} exists but is {found}, not {expected}; provision will not replace it")]
    WrongType {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error(
        "validate command `{command}` rejected the new content of {path} (exit status {status}); the old file is untouched{output}"
    )]
    Validate {
        command: String,
        path: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An I/O error while doing `action` on `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

/// What an error number means for the person reading the message, where it is not plain.
fn cause(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC) => " (the disk is full)",
        Some(nix::libc::EDQUOT) => " (the disk quota is used up)",
        Some(nix::libc::EROFS) => " (the filesystem is mounted read-only)",
        _ => "",
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
