//! Errors from touching the machine. Each names the path and what was being done.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
