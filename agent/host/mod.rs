//! Everything the agent does to the machine goes through [`Host`]: it resolves node paths under
//! `--root`, reads (absence is data, not an error), writes atomically, keeps a backup before each
//! change and holds the apply lock. Resources never touch `std::fs` with a manifest path directly.

pub mod accounts;
pub mod atomic;
mod error;
pub mod mounts;
mod root;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use atomic::Meta;
pub use error::{Error, Result};
pub use root::Root;

use accounts::Accounts;

/// Where the agent keeps its own state on a node: backups, the apply lock.
pub const STATE_DIR: &str = "/var/lib/provision";

/// What `lstat` says about a path, with ownership as numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Other => "a special file",
        }
    }
}

/// Removes the temporary files that backups killed before their rename left in `dir`. A managed
/// file's next write removes its own leftovers, but each backup has a new (time-stamped) name, so
/// nothing else ever would. Backups are written under the apply lock: none of these is in use.
fn remove_backup_temps(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().contains(atomic::TEMP_MARK)
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            let path = entry.path();
            std::fs::remove_file(&path)
                .map_err(Error::io("remove the stale temporary file", &path))?;
        }
    }
    Ok(())
}

/// A failed chown, with what to do when the cause is missing privilege.
pub(crate) fn chown_error(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        return Error::Other(format!(
            "cannot change the owner of {}: {e}; giving files to other users needs root, so run provision as root",
            path.display()
        ));
    }
    Error::io("change the owner of", path)(e)
}

/// The machine as seen through `--root`.
#[derive(Debug)]
pub struct Host {
    root: Root,
    /// One timestamp per run, so the backups of one apply sort together.
    stamp: String,
    /// Backups kept since the last [`Host::take_backups`], so a report lists every backup a
    /// resource made, even one that failed after making it.
    backups: std::cell::RefCell<Vec<PathBuf>>,
}

impl Host {
    pub fn new(root: &Path) -> Result<Host> {
        Ok(Host {
            root: Root::new(root)?,
            stamp: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            backups: Default::default(),
        })
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The real path of node path `path`.
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        self.root.resolve(path)
    }

    /// `lstat` of the node path, `None` if it does not exist.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>> {
        let real = self.resolve(path)?;
        match std::fs::symlink_metadata(&real) {
            Ok(m) => {
                let t = m.file_type();
                let kind = if t.is_file() {
                    Kind::File
                } else if t.is_dir() {
                    Kind::Directory
                } else if t.is_symlink() {
                    Kind::Symlink
                } else {
                    Kind::Other
                };
                Ok(Some(Stat {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("inspect", real)(e)),
        }
    }

    /// The content of node path `path`, `None` if it does not exist.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let real = self.resolve(path)?;
        match std::fs::read(&real) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", real)(e)),
        }
    }

    /// The root's accounts, read fresh (an earlier resource of this run may have added one).
    pub fn accounts(&self) -> Result<Accounts> {
        let text = |p| {
            self.read(p).map(|b| {
                b.map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            })
        };
        Ok(Accounts::parse(&text("/etc/passwd")?, &text("/etc/group")?))
    }

    /// Atomically replaces node path `path`; its directory must exist.
    pub fn write(
        &self,
        path: &str,
        content: &[u8],
        meta: Meta,
        validate: Option<&str>,
    ) -> Result<()> {
        atomic::write(&self.resolve(path)?, content, meta, validate, path)
    }

    /// Atomically replaces node path `path` once `check` accepts the new content, which it gets
    /// as a complete temporary file next to the target.
    pub fn write_checked(
        &self,
        path: &str,
        content: &[u8],
        meta: Meta,
        check: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<()> {
        atomic::write_checked(&self.resolve(path)?, content, meta, check)
    }

    /// Creates the directory `path` and any missing parents (parents 0755 root:root).
    pub fn create_dir(&self, path: &str, meta: Meta) -> Result<()> {
        let real = self.resolve(path)?;
        if let Some(parent) = real.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("create the directory", parent))?;
        }
        std::fs::create_dir(&real).map_err(Error::io("create the directory", &real))?;
        self.set_meta(path, meta)?;
        if let Some(parent) = real.parent() {
            atomic::sync_dir(parent)?;
        }
        Ok(())
    }

    /// Creates the missing parent directories of `path` (0755 root:root, as `mkdir -p` would).
    pub fn ensure_parent(&self, path: &str) -> Result<()> {
        let real = self.resolve(path)?;
        match real.parent() {
            Some(parent) if !parent.exists() => {
                std::fs::create_dir_all(parent).map_err(Error::io("create the directory", parent))
            }
            _ => Ok(()),
        }
    }

    /// Sets owner and mode of an existing path (owner first: chown clears set-id bits).
    pub fn set_meta(&self, path: &str, meta: Meta) -> Result<()> {
        let real = self.resolve(path)?;
        std::os::unix::fs::lchown(&real, Some(meta.uid), Some(meta.gid))
            .map_err(|e| chown_error(&real, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(meta.mode))
            .map_err(Error::io("change the mode of", &real))
    }

    /// Removes the file `path` (durably).
    pub fn remove_file(&self, path: &str) -> Result<()> {
        let real = self.resolve(path)?;
        std::fs::remove_file(&real).map_err(Error::io("remove", &real))?;
        match real.parent() {
            Some(parent) => atomic::sync_dir(parent),
            None => Ok(()),
        }
    }

    /// Copies node path `path` to the backup folder before it changes; returns the backup's real
    /// path. Backups live in `/var/lib/provision/backups/` under the root (mode 0700), named after
    /// the file and this run's timestamp.
    pub fn backup(&self, path: &str) -> Result<PathBuf> {
        self.keep_backup(path).map_err(|e| match e {
            // A link out of the root is the path's own problem, not the backup's.
            e @ (Error::Escape { .. } | Error::SymlinkLoop { .. }) => e,
            e => Error::Backup {
                path: path.to_owned(),
                source: Box::new(e),
            },
        })
    }

    fn keep_backup(&self, path: &str) -> Result<PathBuf> {
        let real = self.resolve(path)?;
        let content = std::fs::read(&real).map_err(Error::io("read for backup", &real))?;
        let meta = std::fs::metadata(&real).map_err(Error::io("inspect", &real))?;
        let backups = format!("{STATE_DIR}/backups");
        self.ensure_private_dir(&backups)?;
        let relative = path.trim_start_matches('/');
        let mut name = format!("{backups}/{relative}.{}", self.stamp);
        let mut n = 1;
        while self.stat(&name)?.is_some() {
            name = format!("{backups}/{relative}.{}.{n}", self.stamp);
            n += 1;
        }
        let parent = Path::new(&name)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent_real = self.resolve(&parent)?;
        std::fs::create_dir_all(&parent_real)
            .map_err(Error::io("create the directory", &parent_real))?;
        remove_backup_temps(&parent_real)?;
        let me = Meta {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        self.write(&name, &content, me, None)?;
        let real = self.resolve(&name)?;
        self.backups.borrow_mut().push(real.clone());
        Ok(real)
    }

    /// The backups kept since the last call.
    pub fn take_backups(&self) -> Vec<PathBuf> {
        self.backups.take()
    }

    fn ensure_private_dir(&self, path: &str) -> Result<()> {
        if self.stat(path)?.is_none() {
            let me = Meta::own(0o700);
            self.create_dir(path, me)?;
        }
        Ok(())
    }

    /// Takes the apply lock (`/var/lib/provision/lock`), waiting for another apply to finish.
    /// Held until the returned guard is dropped.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<File>> {
        self.ensure_private_dir(STATE_DIR).map_err(|e| match e {
            Error::Io { .. } => Error::Other(format!(
                "cannot make provision's state folder {STATE_DIR} for the apply lock: {e}"
            )),
            e => e,
        })?;
        let path = self.resolve(&format!("{STATE_DIR}/lock"))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open the lock file", &path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("lock", &path)(std::io::Error::from(e)))
    }
}
