//! Limits on what a manifest may hold, so that hostile or broken input (an alias bomb, a file of
//! gigabytes, nesting thousands of levels deep, a string of hundreds of megabytes) is refused with
//! an error that names the limit, in bounded memory and time, before it can exhaust the node.
//!
//! Every limit is far above what a real cluster needs: the 1,000-node manifest of
//! `bench/scale.sh` is 90 KiB, 4 levels deep and has about 6,500 YAML values. The worst case
//! under these limits is measured by `bench/manifest-limits.sh` (figures in BENCHMARKS.md).
//! serde-saphyr enforces the ones about YAML values and aliases while it parses (its `Budget`);
//! provision enforces the rest: file sizes before a file is read whole, strings, depth and the
//! location index ([`super::locate`]) while it is built, node and resource counts after a file
//! is parsed.

use std::io::Read as _;
use std::path::Path;

use serde_saphyr::budget::BudgetBreach;

/// Bytes in one manifest file (or environment file).
pub const FILE_BYTES: usize = 4 << 20;
/// Bytes in a manifest and all the files it includes.
pub const TOTAL_BYTES: usize = 16 << 20;
/// Files a manifest may read: itself, its includes and environment files.
pub const FILES: usize = 256;
/// Nesting of mappings and lists.
pub const DEPTH: usize = 32;
/// YAML values (scalars, lists, mappings) in one file, counting each alias use as what it repeats.
pub const YAML_VALUES: usize = 250_000;
/// Alias uses (`*name`) in one file.
pub const ALIASES: usize = 10_000;
/// Parser events repeated through aliases in one file.
pub const ALIAS_EVENTS: usize = 250_000;
/// Bytes of one string (a key or a value).
pub const STRING_BYTES: usize = 1 << 20;
/// Bytes of all strings of one file, counting each alias use as what it repeats.
pub const TEXT_BYTES: usize = 16 << 20;
/// Bytes of the YAML paths (`resources[3].file.owner`) the location index of one file keeps:
/// deep nesting under long keys multiplies, and this bounds it.
pub const INDEX_BYTES: usize = 32 << 20;
/// Nodes of the cluster (`nodes:` entries, all files together).
pub const NODES: usize = 10_000;
/// Resources (`resources:` entries, all files together).
pub const RESOURCES: usize = 10_000;

/// The hint for every limit error.
pub const HINT: &str = "provision refuses manifests this large or this deep so that a broken or hostile one cannot exhaust the node (docs/manifest.md#limits); split a real one with include:";

/// The hint for a named file that is not a regular file.
pub const REGULAR_HINT: &str =
    "include: and from: must name regular files: copy what they should hold into one";

/// A file that could not be read, is over [`FILE_BYTES`], or is not a regular file where one
/// must be.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    TooLarge,
    NotRegular,
}

impl ReadError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ReadError::Io(_) => {
                "check the path; include: and from: paths are relative to the including file's folder"
            }
            ReadError::TooLarge => HINT,
            ReadError::NotRegular => REGULAR_HINT,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge => write!(
                f,
                "it is larger than {}: over the limit for one file",
                bytes(FILE_BYTES)
            ),
            ReadError::NotRegular => write!(
                f,
                "it is not a regular file (a device, a pipe or a folder) and could block or never end"
            ),
        }
    }
}

/// Reads a whole text file of at most [`FILE_BYTES`], without reading more than one byte past
/// the limit whatever the file is (`/dev/zero`, a file growing while it is read). With
/// `regular_only` (files a manifest names: includes, environment files), anything but a regular
/// file is refused before a byte is read: a FIFO would block the agent forever.
pub fn read(path: &Path, regular_only: bool) -> Result<String, ReadError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Opening a FIFO without O_NONBLOCK waits for a writer; with it, the open returns at once and
    // the file's type can be checked on the open file itself (no race with a rename).
    let flags = if regular_only {
        nix::fcntl::OFlag::O_NONBLOCK.bits()
    } else {
        0
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(ReadError::Io)?;
    if regular_only && !file.metadata().map_err(ReadError::Io)?.is_file() {
        return Err(ReadError::NotRegular);
    }
    let mut text = String::new();
    file.take(FILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(ReadError::Io)?;
    if text.len() > FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(text)
}

/// serde-saphyr's options with provision's limits.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(FILE_BYTES),
            max_depth: DEPTH,
            max_nodes: YAML_VALUES,
            max_aliases: ALIASES,
            max_total_scalar_bytes: TEXT_BYTES,
            max_total_comment_bytes: FILE_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: ALIAS_EVENTS,
            max_replay_stack_depth: DEPTH,
        },
    }
}

/// `4 MiB`, `250000`: a limit as the messages write it.
pub fn bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// The message for a serde-saphyr error that is one of these limits, naming it; `None` for
/// every other error.
pub fn breach_message(e: &serde_saphyr::Error) -> Option<String> {
    use serde_saphyr::Error;
    let mut e = e;
    while let Error::WithSnippet { error, .. } | Error::AliasError { error, .. } = e {
        e = error;
    }
    let message = match e {
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => depth_message(),
            BudgetBreach::Nodes { .. } => values_message(),
            BudgetBreach::Aliases { .. } => {
                format!("more than {ALIASES} aliases (*name) in one file: over the limit")
            }
            BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
                "{aliases} aliases for {anchors} anchors: more than 10 uses per anchor is refused as an alias bomb"
            ),
            BudgetBreach::ScalarBytes { .. } => format!(
                "more than {} of text in one file (each alias counted as what it repeats): over the limit",
                bytes(TEXT_BYTES)
            ),
            BudgetBreach::InputBytes { .. } => {
                format!(
                    "the file is larger than {}: over the limit",
                    bytes(FILE_BYTES)
                )
            }
            other => format!("the YAML is over one of provision's input limits ({other:?})"),
        },
        Error::AliasReplayLimitExceeded { .. } | Error::AliasExpansionLimitExceeded { .. } => {
            format!(
                "aliases repeat more than {ALIAS_EVENTS} YAML events in one file: over the limit (an alias bomb?)"
            )
        }
        Error::AliasReplayStackDepthExceeded { .. } => {
            format!("aliases nest more than {DEPTH} deep: over the limit")
        }
        _ => return None,
    };
    Some(message)
}

/// The message for more than [`YAML_VALUES`] values.
pub fn values_message() -> String {
    format!(
        "more than {YAML_VALUES} YAML values in one file (each alias counted as what it repeats): over the limit"
    )
}

/// The message for nesting past [`DEPTH`].
pub fn depth_message() -> String {
    format!("mappings and lists nest deeper than {DEPTH} levels: over the limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(FILE_BYTES), "4 MiB");
        assert_eq!(bytes(2048), "2 KiB");
        assert_eq!(bytes(1000), "1000 bytes");
    }

    #[test]
    fn a_file_over_the_limit_is_refused_without_being_read_whole() {
        // /dev/zero never ends: the read stops one byte past the limit.
        assert!(matches!(
            read(Path::new("/dev/zero"), false),
            Err(ReadError::TooLarge)
        ));
        let dir = tempfile::tempdir().unwrap();
        let at_limit = dir.path().join("m.yaml");
        std::fs::write(&at_limit, "#".repeat(FILE_BYTES)).unwrap();
        assert_eq!(read(&at_limit, true).unwrap().len(), FILE_BYTES);
        std::fs::write(&at_limit, "#".repeat(FILE_BYTES + 1)).unwrap();
        assert!(matches!(read(&at_limit, true), Err(ReadError::TooLarge)));
    }

    #[test]
    fn a_named_file_that_is_not_regular_is_refused_before_it_is_read() {
        assert!(matches!(
            read(Path::new("/dev/zero"), true),
            Err(ReadError::NotRegular)
        ));
        // A FIFO with no writer: reading it would block forever.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(read(&fifo, true), Err(ReadError::NotRegular)));
        assert!(matches!(read(dir.path(), true), Err(ReadError::NotRegular)));
    }

    #[test]
    fn an_alias_bomb_is_refused_with_its_limit_named() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = serde_saphyr::from_str_with_options::<serde_json::Value>(&text, yaml_options())
            .expect_err("a billion laughs must not parse");
        let message = breach_message(&e).expect("a limit error");
        assert!(message.contains("over the limit"), "{message}");
    }

    #[test]
    fn other_errors_are_not_limit_errors() {
        let e = serde_saphyr::from_str_with_options::<u32>("x", yaml_options()).unwrap_err();
        assert_eq!(breach_message(&e), None);
    }
}
