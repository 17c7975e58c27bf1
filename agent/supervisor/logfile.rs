//! A service's log file with size-based rotation: `name.log`, then `name.log.1` (newest) up to
//! `name.log.K`. The child writes to a pipe; one thread per service reads it and appends here, so
//! rotation happens between writes and the child never holds a renamed file open.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Where a service's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub path: PathBuf,
    /// Rotate once the file would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

/// An append-only file that rotates itself.
#[derive(Debug)]
pub struct RotatingFile {
    config: LogConfig,
    file: File,
    size: u64,
}

impl RotatingFile {
    pub fn open(config: LogConfig) -> io::Result<RotatingFile> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { config, file, size })
    }

    /// Appends `buf`; no file grows past the limit. What does not fit is cut after its last
    /// whole line that does (mid-line only when a single line is longer than the limit), and the
    /// rest goes to a fresh file.
    pub fn append(&mut self, mut buf: &[u8]) -> io::Result<()> {
        let max = self.config.max_bytes.max(1);
        while !buf.is_empty() {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if buf.len() <= room {
                self.write(buf)?;
                return Ok(());
            }
            let cut = match buf[..room].iter().rposition(|b| *b == b'\n') {
                Some(nl) => nl + 1,
                None if self.size == 0 => room,
                None => 0,
            };
            self.write(&buf[..cut])?;
            buf = &buf[cut..];
            self.rotate()?;
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let path = &self.config.path;
        if self.config.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..self.config.keep).rev() {
            let from = numbered(path, n);
            if from.exists() {
                std::fs::rename(&from, numbered(path, n + 1))?;
            }
        }
        std::fs::rename(path, numbered(path, 1))?;
        self.file = open_append(path)?;
        self.size = 0;
        Ok(())
    }

    /// Copies `from` into the file until end of input (all writers closed).
    pub fn pump(mut self, mut from: impl Read) {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if let Err(e) = self.append(&buf[..n]) {
                        tracing::warn!(path = %self.config.path.display(), "service log: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// `path.n`: the n-th newest rotated file.
pub fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_at_the_limit_and_keeps_k_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let config = LogConfig {
            path: path.clone(),
            max_bytes: 10,
            keep: 2,
        };
        let mut f = RotatingFile::open(config).unwrap();
        for chunk in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            f.append(chunk.as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "dddddd\n");
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "cccccc\n"
        );
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 2)).unwrap(),
            "bbbbbb\n"
        );
        assert!(!numbered(&path, 3).exists());
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        std::fs::write(&path, "12345678\n").unwrap();
        let config = LogConfig {
            path: path.clone(),
            max_bytes: 12,
            keep: 1,
        };
        let mut f = RotatingFile::open(config).unwrap();
        f.append(b"ab\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "12345678\nab\n");
        f.append(b"c\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "12345678\nab\n"
        );
    }

    #[test]
    fn a_big_write_is_cut_at_line_ends_and_no_file_passes_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let config = LogConfig {
            path: path.clone(),
            max_bytes: 10,
            keep: 3,
        };
        let mut f = RotatingFile::open(config).unwrap();
        f.append(b"abc\ndefgh\nijklmnopqrstu\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 2)).unwrap(),
            "abc\ndefgh\n"
        );
        assert_eq!(
            std::fs::read_to_string(numbered(&path, 1)).unwrap(),
            "ijklmnopqr"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "stu\n");
    }

    #[test]
    fn keep_zero_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let config = LogConfig {
            path: path.clone(),
            max_bytes: 4,
            keep: 0,
        };
        let mut f = RotatingFile::open(config).unwrap();
        f.append(b"abc\n").unwrap();
        f.append(b"de\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "de\n");
        assert!(!numbered(&path, 1).exists());
    }
}
