//! The last good bundle, kept under the root so a node that boots while the server is down
//! still converges.
//!
//! `<root>/var/lib/provision/bundle/`: `last-good.bundle` (the bytes as served, signature
//! included), `last-good.json` (where it came from, its hash, its validators, when it was
//! fetched) and `unpacked/<hash>/` (the files the running manifest is read from). Guarantees:
//! only a bundle whose manifest the agent accepted is stored; both files are replaced atomically
//! (a power cut leaves the old pair or the new one); a cached bundle is checked against the key
//! again when read, so a changed file on disk is refused like a tampered download.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::fetch::Validators;
use super::format::{Bundle, PublicKey};
use crate::host::{Host, Meta, STATE_DIR};

/// What `last-good.json` records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub url: String,
    pub hash: String,
    pub validators: Validators,
    /// RFC 3339.
    pub fetched_at: String,
}

pub struct Cache<'h> {
    host: &'h Host,
}

impl<'h> Cache<'h> {
    pub fn new(host: &'h Host) -> Cache<'h> {
        Cache { host }
    }

    fn node_path(name: &str) -> String {
        format!("{STATE_DIR}/bundle/{name}")
    }

    /// The cached bundle, checked against `key`; `Ok(None)` when there is none.
    pub fn load(&self, key: &PublicKey) -> Result<Option<(Bundle, Record)>, String> {
        let read = |name: &str| -> Result<Option<Vec<u8>>, String> {
            self.host
                .read(&Self::node_path(name))
                .map_err(|e| e.to_string())
        };
        let (Some(bytes), Some(record)) = (read("last-good.bundle")?, read("last-good.json")?)
        else {
            return Ok(None);
        };
        let record: Record = serde_json::from_slice(&record)
            .map_err(|e| format!("{}: {e}", Self::node_path("last-good.json")))?;
        let bundle = Bundle::open(&bytes, key).map_err(|e| {
            format!(
                "the cached bundle {}: {e}",
                Self::node_path("last-good.bundle")
            )
        })?;
        Ok(Some((bundle, record)))
    }

    /// Keeps `bytes` (whose manifest was accepted) as the last good bundle.
    pub fn store(&self, bytes: &[u8], record: &Record) -> Result<(), String> {
        let e = |e: crate::host::Error| e.to_string();
        let bundle = Self::node_path("last-good.bundle");
        self.host.ensure_parent(&bundle).map_err(e)?;
        self.host
            .write(&bundle, bytes, Meta::own(0o600), None)
            .map_err(e)?;
        let json = serde_json::to_vec_pretty(record).unwrap_or_default();
        self.host
            .write(
                &Self::node_path("last-good.json"),
                &json,
                Meta::own(0o600),
                None,
            )
            .map_err(e)
    }

    /// Unpacks `bundle` afresh into `unpacked/<hash>/` (anything there before is replaced) and
    /// removes the other unpacked bundles except `keep`'s; returns the top manifest's path.
    pub fn unpack(&self, bundle: &Bundle, keep: Option<&str>) -> Result<PathBuf, String> {
        let dir = self
            .host
            .resolve(&Self::node_path("unpacked"))
            .map_err(|e| e.to_string())?;
        let name = short(&bundle.hash);
        let target = dir.join(name);
        let temp = dir.join(format!(".{name}.{}", std::process::id()));
        let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", target.display());
        for stale in [&temp, &target] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(|e| fail("cannot clear", e))?;
            }
        }
        bundle
            .unpack(&temp)
            .map_err(|e| fail("cannot unpack into", e))?;
        std::fs::rename(&temp, &target).map_err(|e| fail("cannot unpack into", e))?;
        let keep = keep.map(short);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                if n != name && Some(n.as_str()) != keep {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(target.join(&bundle.manifest))
    }
}

impl Cache<'_> {
    /// Removes the unpacked copy of a bundle that was refused.
    pub fn discard(&self, hash: &str) {
        if let Ok(dir) = self.host.resolve(&Self::node_path("unpacked")) {
            let _ = std::fs::remove_dir_all(dir.join(short(hash)));
        }
    }
}

/// The folder name of an unpacked bundle: 16 hex digits of its hash.
fn short(hash: &str) -> &str {
    let hex = hash.strip_prefix("sha256:").unwrap_or(hash);
    &hex[..hex.len().min(16)]
}
