//! `--root DIR`: every managed path lands under DIR and nothing may leave it.
//!
//! Manifest paths are absolute node paths (`/etc/hosts`). [`Root::resolve`] maps one to a real
//! path under the root, component by component, following symlinks only while they stay inside
//! the root: a link that points out of it (absolute or through `..`) is refused with an error that
//! names the link. Validation has already refused `..` in manifest paths.

use std::path::{Component, Path, PathBuf};

use super::error::{Error, Result};

/// Symlinks followed in one resolution before giving up, as the kernel does (MAXSYMLINKS).
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// `dir` must exist; it is made absolute so link targets can be compared with it.
    pub fn new(dir: &Path) -> Result<Root> {
        let dir = dir
            .canonicalize()
            .map_err(Error::io("open the root directory", dir))?;
        Ok(Root { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The real path of the node path `path` (absolute, no `..`) under this root.
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let mut pending: Vec<PathBuf> = relative_parts(Path::new(path));
        pending.reverse();
        let mut current = self.dir.clone();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part.as_os_str() == ".." {
                if current != self.dir {
                    current.pop();
                }
                continue;
            }
            current.push(&part);
            let meta = match std::fs::symlink_metadata(&current) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Nothing further exists: the rest is created as plain directories and files.
                    while let Some(rest) = pending.pop() {
                        current.push(rest);
                    }
                    return Ok(current);
                }
                Err(e) => return Err(Error::io("inspect", &current)(e)),
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(Error::SymlinkLoop {
                    path: path.to_owned(),
                });
            }
            let target =
                std::fs::read_link(&current).map_err(Error::io("read the symlink", &current))?;
            let link = current.clone();
            current.pop();
            let landed = if target.is_absolute() {
                normalize(&target)
            } else {
                normalize(&current.join(&target))
            };
            if !landed.starts_with(&self.dir) {
                return Err(Error::Escape {
                    path: path.to_owned(),
                    link,
                    target,
                    root: self.dir.clone(),
                });
            }
            // Continue from the link's target: re-walk it from the root so links inside it are
            // checked too.
            let mut rest = relative_parts(landed.strip_prefix(&self.dir).unwrap_or(Path::new("")));
            rest.reverse();
            pending.extend(rest);
            current = self.dir.clone();
        }
        Ok(current)
    }
}

/// The normal components of `path`, as single-component paths (`..` kept as `..`).
fn relative_parts(path: &Path) -> Vec<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(PathBuf::from(p)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// `path` with `.` and `..` folded away lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        (dir, root)
    }

    #[test]
    fn plain_paths_land_under_the_root() {
        let (_d, root) = root();
        assert_eq!(
            root.resolve("/etc/hosts").unwrap(),
            root.dir().join("etc/hosts")
        );
    }

    #[test]
    fn links_inside_the_root_are_followed() {
        let (_d, root) = root();
        std::fs::create_dir_all(root.dir().join("real/etc")).unwrap();
        symlink("real/etc", root.dir().join("etc")).unwrap();
        assert_eq!(
            root.resolve("/etc/hosts").unwrap(),
            root.dir().join("real/etc/hosts")
        );
        let absolute = root.dir().join("real");
        symlink(&absolute, root.dir().join("abs")).unwrap();
        assert_eq!(
            root.resolve("/abs/etc/x").unwrap(),
            root.dir().join("real/etc/x")
        );
    }

    #[test]
    fn links_out_of_the_root_are_refused() {
        let (_d, root) = root();
        std::fs::create_dir_all(root.dir().join("etc")).unwrap();
        symlink("/etc/passwd", root.dir().join("etc/hosts")).unwrap();
        let err = root.resolve("/etc/hosts").unwrap_err();
        assert!(matches!(err, Error::Escape { .. }), "{err}");
        assert!(err.to_string().contains("outside the root"), "{err}");
        symlink("../../../..", root.dir().join("etc/up")).unwrap();
        assert!(matches!(
            root.resolve("/etc/up/shadow").unwrap_err(),
            Error::Escape { .. }
        ));
    }

    #[test]
    fn link_loops_end() {
        let (_d, root) = root();
        symlink("b", root.dir().join("a")).unwrap();
        symlink("a", root.dir().join("b")).unwrap();
        assert!(matches!(
            root.resolve("/a/x").unwrap_err(),
            Error::SymlinkLoop { .. }
        ));
    }
}
