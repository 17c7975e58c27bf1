//! `known_hosts`: the cluster nodes' SSH host keys, as a marked block in a `known_hosts` file, so
//! that the first `ssh` to a node (ipcluster starting engines) does not stop at "Are you sure you
//! want to continue connecting (yes/no)?", which nobody is there to answer.
//!
//! Each listed node gets one line per host key, under its name, `name.domain` and its address
//! (`[name]:port` for another port). Keys come from the manifest (pinned: the secure way), or,
//! with `scan: true`, from `ssh-keyscan` against the node's address the first time the node is
//! missing from the block, the way a sysadmin runs `ssh-keyscan >> known_hosts` once. A key in the
//! block is kept from then on and never scanned again, so a node whose key changes is refused by
//! ssh ("REMOTE HOST IDENTIFICATION HAS CHANGED") until someone removes its lines: trust on first
//! use, as `StrictHostKeyChecking=accept-new` does, but before the first connection. Lines outside
//! the block (what ssh added itself) are kept byte for byte.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ssh_key::PublicKey;

use super::block::Markers;
use super::ssh::{self, BlockFile, Owned};
use crate::engine::{Change, DriftWatch, Need, Resource};
use crate::host::accounts::Accounts;
use crate::host::{Error, Host, Result};

pub const MARKERS: Markers = Markers {
    begin: "# BEGIN provision managed block: cluster host keys (edits inside are overwritten)",
    end: "# END provision managed block",
};

/// How long `ssh-keyscan` waits for a node (its `-T`).
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(3);

/// One node to list.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The node's name: the first of its names in the block, by which its lines are found again.
    pub name: String,
    /// Every name it is listed under, the name first, then `name.domain`, the address, aliases.
    pub patterns: Vec<String>,
    /// Where `ssh-keyscan` reaches it.
    pub address: String,
    /// Keys from the manifest (`type base64`); empty: scanned.
    pub pinned: Vec<String>,
}

#[derive(Debug)]
pub struct KnownHosts {
    pub path: String,
    pub owned: Owned,
    pub hosts: Vec<Listed>,
    pub scan: bool,
    pub port: u16,
}

/// What is on the node, and what a scan found.
#[derive(Debug)]
pub struct Found {
    file: BlockFile,
    /// Keys by node name: pinned, kept from the block, or scanned now.
    keys: BTreeMap<String, Vec<String>>,
    /// Nodes a scan found no key for, with what ssh-keyscan said.
    unreachable: Vec<String>,
    accounts: Accounts,
}

/// Why `key` is not a host key as `ssh-keyscan` prints it (`type base64`), if it is not.
pub fn key_problem(key: &str) -> Option<String> {
    if key.contains(['\n', '\r']) {
        return Some("a key must be one line".into());
    }
    PublicKey::from_openssh(key.trim())
        .err()
        .map(|e| format!("not an OpenSSH public key ({e}); write it as ssh-keyscan prints it without the host, e.g. `ssh-ed25519 AAAAC3Nza...`"))
}

/// `type base64` of a key line (comment dropped).
fn normal(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A name as known_hosts writes it for `port`.
fn pattern(name: &str, port: u16) -> String {
    if port == 22 {
        name.to_owned()
    } else {
        format!("[{name}]:{port}")
    }
}

impl KnownHosts {
    fn primary(&self, h: &Listed) -> String {
        pattern(&h.name, self.port)
    }

    /// The keys of each node the current block has, by the node's first name.
    fn kept(&self, text: &str) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in MARKERS.lines(text) {
            let mut fields = line.split_whitespace();
            let (Some(names), Some(kind), Some(data)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let first = names.split(',').next().unwrap_or_default().to_owned();
            let key = format!("{kind} {data}");
            if key_problem(&key).is_none() {
                out.entry(first).or_default().push(key);
            }
        }
        out
    }

    fn block(&self, keys: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut lines = Vec::new();
        for h in &self.hosts {
            let names: Vec<String> = h.patterns.iter().map(|p| pattern(p, self.port)).collect();
            for key in keys.get(&h.name).into_iter().flatten() {
                lines.push(format!("{} {key}", names.join(",")));
            }
        }
        lines
    }

    /// Runs one `ssh-keyscan` for every address in `wanted`: keys by address, or why not.
    fn scan(&self, wanted: &[&str]) -> Result<(BTreeMap<String, Vec<String>>, String)> {
        let out = Command::new("ssh-keyscan")
            .arg("-T")
            .arg(SCAN_TIMEOUT.as_secs().to_string())
            .arg("-p")
            .arg(self.port.to_string())
            .args(wanted)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Error::Other(format!(
                    "cannot run ssh-keyscan to read the nodes' host keys: {e}; install openssh-client, or give keys: in the manifest"
                ))
            })?;
        let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(host), Some(kind), Some(data)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let key = format!("{kind} {data}");
            if key_problem(&key).is_some() {
                continue;
            }
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.split_once("]:"))
                .map_or(host, |(h, _)| h);
            let keys = found.entry(host.to_owned()).or_default();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let said: Vec<&str> = std::str::from_utf8(&out.stderr)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        Ok((found, said.join("; ")))
    }
}

impl Resource for KnownHosts {
    type Observed = Found;

    fn id(&self) -> String {
        format!("known_hosts:{}", self.path)
    }

    fn needs(&self) -> Vec<Need> {
        self.owned.needs(&self.path)
    }

    fn drift_watch(&self) -> Vec<DriftWatch> {
        vec![DriftWatch::Path(self.path.clone())]
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        let accounts = host.accounts()?;
        let file = BlockFile::observe(host, &self.path, &accounts)?;
        let kept = file.text().map(|text| self.kept(text)).unwrap_or_default();
        let mut keys = BTreeMap::new();
        let mut to_scan: Vec<&Listed> = Vec::new();
        for h in &self.hosts {
            if !h.pinned.is_empty() {
                keys.insert(h.name.clone(), h.pinned.iter().map(|k| normal(k)).collect());
            } else if let Some(old) = kept.get(&self.primary(h)) {
                keys.insert(h.name.clone(), old.clone());
            } else if self.scan {
                to_scan.push(h);
            }
        }
        let mut unreachable = Vec::new();
        if !to_scan.is_empty() {
            let addresses: Vec<&str> = to_scan.iter().map(|h| h.address.as_str()).collect();
            let (found, said) = self.scan(&addresses)?;
            for h in to_scan {
                match found.get(&h.address) {
                    Some(k) => {
                        keys.insert(h.name.clone(), k.clone());
                    }
                    None => unreachable.push(format!(
                        "{} ({}:{}){}",
                        h.name,
                        h.address,
                        self.port,
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(": {said}")
                        }
                    )),
                }
            }
        }
        Ok(Found {
            file,
            keys,
            unreachable,
            accounts,
        })
    }

    fn verify(&self, found: &Found, _write: bool) -> std::result::Result<Option<String>, String> {
        if found.unreachable.is_empty() {
            return Ok(None);
        }
        Err(format!(
            "ssh-keyscan read no host key from {} within {}s; nothing was written: start sshd there (or fix the address), or give keys: for it in the manifest",
            found.unreachable.join(", "),
            SCAN_TIMEOUT.as_secs()
        ))
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let lines = self.block(&found.keys);
        found
            .file
            .diff(&MARKERS, &lines, &self.owned, ssh::PUBLIC, &found.accounts)
    }

    fn apply(&self, host: &Host, found: &Found, _changes: &[Change]) -> Result<()> {
        let lines = self.block(&found.keys);
        found
            .file
            .apply(host, &MARKERS, &lines, &self.owned, ssh::PUBLIC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAc7noc+JcCSrBNcVIGbuNorJ4kw8XROLaOvqoVqkanS";
    const B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE8wB2kdAXecP2En+FFhynp8Kw763NKChhw7o++oloSV";

    fn known(port: u16) -> KnownHosts {
        KnownHosts {
            path: "/home/ipp/.ssh/known_hosts".into(),
            owned: Owned {
                owner: None,
                group: None,
            },
            hosts: vec![
                Listed {
                    name: "cl-1".into(),
                    patterns: vec!["cl-1".into(), "cl-1.cluster.lan".into(), "10.0.1.11".into()],
                    address: "10.0.1.11".into(),
                    pinned: vec![format!("{A} root@cl-1")],
                },
                Listed {
                    name: "cl-2".into(),
                    patterns: vec!["cl-2".into(), "10.0.1.12".into()],
                    address: "10.0.1.12".into(),
                    pinned: Vec::new(),
                },
            ],
            scan: true,
            port,
        }
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(key_problem(A), None);
        assert_eq!(key_problem(&format!("{A} comment")), None);
        assert!(key_problem("ssh-ed25519 AAAA").is_some());
        assert!(key_problem("cl-1 ssh-ed25519 AAAA").is_some());
    }

    #[test]
    fn the_block_lists_every_name_of_a_node_and_reads_back_by_its_name() {
        let k = known(22);
        let keys = BTreeMap::from([
            ("cl-1".to_owned(), vec![normal(&k.hosts[0].pinned[0])]),
            ("cl-2".to_owned(), vec![B.to_owned(), A.to_owned()]),
        ]);
        let text = MARKERS.render(Some("old-host ssh-rsa AAAA\n"), &k.block(&keys));
        assert!(text.starts_with("old-host ssh-rsa AAAA\n# BEGIN"), "{text}");
        assert!(
            text.contains(&format!("\ncl-1,cl-1.cluster.lan,10.0.1.11 {A}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\ncl-2,10.0.1.12 {B}\ncl-2,10.0.1.12 {A}\n")),
            "{text}"
        );
        assert_eq!(k.kept(&text), keys);
    }

    #[test]
    fn another_port_is_written_in_brackets() {
        let k = known(2222);
        let keys = BTreeMap::from([("cl-2".to_owned(), vec![B.to_owned()])]);
        let lines = k.block(&keys);
        assert_eq!(lines, [format!("[cl-2]:2222,[10.0.1.12]:2222 {B}")]);
        let text = MARKERS.render(None, &lines);
        assert_eq!(k.kept(&text).get("[cl-2]:2222"), Some(&vec![B.to_owned()]));
        assert_eq!(k.primary(&k.hosts[1]), "[cl-2]:2222");
    }
}
