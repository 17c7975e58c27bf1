//! `hosts`: `/etc/hosts` with a marked block of cluster nodes. Every line outside the block is
//! kept byte for byte (tabs, comments, IPv6 lines, a missing final newline), except Debian's
//! `127.0.1.1 <hostname>` line when `loopback_hostname` says to fix it: PYME advertises whatever
//! its hostname resolves to, and 127.0.1.1 is unreachable from every other node.

use crate::engine::{Change, ContentDiff, Resource};
use crate::host::{Error, Host, Kind, Meta, Result};
use crate::manifest::model::LoopbackHostname;

pub const BEGIN: &str =
    "# BEGIN provision managed block: cluster nodes (edits inside are overwritten)";
pub const END: &str = "# END provision managed block";
/// How every BEGIN marker line starts, whatever the block is called.
pub const BEGIN_PREFIX: &str = "# BEGIN provision managed block";

#[derive(Debug)]
pub struct Hosts {
    pub path: String,
    /// The lines of the managed block, without markers.
    pub block: Vec<String>,
    pub loopback: LoopbackHostname,
    /// This node's name and cluster address, for `loopback_hostname`.
    pub hostname: String,
    pub address: String,
}

/// The block line for one host: `address<TAB>canonical aliases...`.
pub fn entry(address: &str, names: &[String]) -> String {
    format!("{address}\t{}", names.join(" "))
}

impl Hosts {
    /// The new file for `old` (`None`: no file yet). The first complete block (BEGIN to END) is
    /// replaced in place and any later one dropped, so the block is written once. A BEGIN marker
    /// with no END after it is replaced by the block, and the lines after it are kept: they may
    /// be the user's, and provision never drops bytes it cannot prove are its own.
    pub fn render(&self, old: Option<&str>) -> String {
        let old = old.unwrap_or("");
        let lines: Vec<&str> = old.split_inclusive('\n').collect();
        let body = |line: &str| line.trim_end_matches(['\n', '\r']).to_owned();
        let mut out = String::with_capacity(old.len() + 64 * self.block.len());
        let mut block_written = false;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            if !body(line).starts_with(BEGIN_PREFIX) {
                out.push_str(&self.fix_loopback(line));
                i += 1;
                continue;
            }
            let end = lines[i + 1..]
                .iter()
                .position(|l| body(l).trim_end() == END)
                .map(|n| i + 1 + n);
            if !block_written {
                self.write_block(&mut out);
                block_written = true;
            }
            // Past the whole block, or only past an unterminated BEGIN marker.
            i = end.map_or(i + 1, |end| end + 1);
        }
        if !block_written {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            self.write_block(&mut out);
        }
        out
    }

    fn write_block(&self, out: &mut String) {
        out.push_str(BEGIN);
        out.push('\n');
        for line in &self.block {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(END);
        out.push('\n');
    }

    /// `line` (with its line ending) as `loopback_hostname` wants it.
    fn fix_loopback(&self, line: &str) -> String {
        if self.loopback == LoopbackHostname::Keep {
            return line.to_owned();
        }
        let body = line.split('#').next().unwrap_or("");
        let mut fields = body.split_whitespace();
        if fields.next() != Some("127.0.1.1")
            || !fields.any(|n| n == self.hostname || n.split('.').next() == Some(&self.hostname))
        {
            return line.to_owned();
        }
        match self.loopback {
            LoopbackHostname::Remove => format!("# {line}"),
            LoopbackHostname::Static => line.replacen("127.0.1.1", &self.address, 1),
            LoopbackHostname::Keep => line.to_owned(),
        }
    }
}

/// The hosts file as found.
#[derive(Debug)]
pub struct Found {
    text: Option<String>,
}

impl Resource for Hosts {
    type Observed = Found;

    fn id(&self) -> String {
        format!("hosts:{}", self.path)
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        if let Some(stat) = host.stat(&self.path)?
            && stat.kind != Kind::File
        {
            return Err(Error::WrongType {
                path: self.path.clone(),
                found: stat.kind.describe(),
                expected: "a regular file",
            });
        }
        let text = match host.read(&self.path)? {
            None => None,
            Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
                Error::Other(format!(
                    "{} is not UTF-8 text; provision will not rewrite it",
                    self.path
                ))
            })?),
        };
        Ok(Found { text })
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let new = self.render(found.text.as_deref());
        match &found.text {
            None => vec![
                Change::Create {
                    what: "file".into(),
                },
                Change::Content(ContentDiff::between(
                    &self.path,
                    None,
                    new.as_bytes(),
                    false,
                )),
            ],
            Some(old) if *old == new => Vec::new(),
            Some(old) => vec![Change::Content(ContentDiff::between(
                &self.path,
                Some(old.as_bytes()),
                new.as_bytes(),
                false,
            ))],
        }
    }

    fn apply(&self, host: &Host, found: &Found, _: &[Change]) -> Result<()> {
        let meta = match host.stat(&self.path)? {
            Some(stat) => {
                host.backup(&self.path)?;
                Meta {
                    mode: stat.mode,
                    uid: stat.uid,
                    gid: stat.gid,
                }
            }
            None => Meta::own(0o644),
        };
        host.ensure_parent(&self.path)?;
        host.write(
            &self.path,
            self.render(found.text.as_deref()).as_bytes(),
            meta,
            None,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(loopback: LoopbackHostname) -> Hosts {
        Hosts {
            path: "/etc/hosts".into(),
            block: vec![entry(
                "10.0.0.1",
                &["master.cluster.lan".into(), "master".into()],
            )],
            loopback,
            hostname: "master".into(),
            address: "10.0.0.1".into(),
        }
    }

    const DEBIAN: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tmaster.example.org\tmaster\n\n# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";

    #[test]
    fn the_block_is_appended_and_everything_else_kept() {
        let out = hosts(LoopbackHostname::Keep).render(Some(DEBIAN));
        assert_eq!(
            out,
            format!("{DEBIAN}{BEGIN}\n10.0.0.1\tmaster.cluster.lan master\n{END}\n")
        );
    }

    #[test]
    fn rendering_is_idempotent_and_replaces_the_block_in_place() {
        let h = hosts(LoopbackHostname::Remove);
        let once = h.render(Some(DEBIAN));
        assert_eq!(h.render(Some(&once)), once);
        let edited = once.replace("10.0.0.1\tmaster.cluster.lan master", "10.9.9.9 stale");
        assert_eq!(h.render(Some(&edited)), once);
    }

    #[test]
    fn loopback_remove_comments_the_line_out() {
        let out = hosts(LoopbackHostname::Remove).render(Some(DEBIAN));
        assert!(
            out.contains("\n# 127.0.1.1\tmaster.example.org\tmaster\n"),
            "{out}"
        );
    }

    #[test]
    fn loopback_static_maps_the_hostname_to_the_cluster_address() {
        let out = hosts(LoopbackHostname::Static).render(Some(DEBIAN));
        assert!(
            out.contains("\n10.0.0.1\tmaster.example.org\tmaster\n"),
            "{out}"
        );
        assert!(!out.contains("127.0.1.1"));
    }

    #[test]
    fn other_hosts_127_0_1_1_lines_are_left_alone() {
        let text = "127.0.1.1 otherhost\n";
        assert!(
            hosts(LoopbackHostname::Remove)
                .render(Some(text))
                .starts_with(text)
        );
    }

    #[test]
    fn a_second_block_is_dropped_and_an_unterminated_one_keeps_what_follows() {
        let h = hosts(LoopbackHostname::Keep);
        let block = format!("{BEGIN}\n10.9.9.9\told\n{END}\n");
        let out = h.render(Some(&format!("{block}10.2.2.2 mine\n{block}")));
        assert_eq!(out.matches(BEGIN).count(), 1, "{out}");
        assert!(out.ends_with(&format!("{END}\n10.2.2.2 mine\n")), "{out}");
        // Someone deleted the END marker: the lines after the BEGIN may be theirs.
        let out = h.render(Some(&format!("{BEGIN}\n10.9.9.9\told\n192.168.1.5 nas\n")));
        assert!(
            out.ends_with(&format!("{END}\n10.9.9.9\told\n192.168.1.5 nas\n")),
            "{out}"
        );
        assert_eq!(h.render(Some(&out)), out);
    }

    #[test]
    fn no_final_newline_gets_one_before_the_block() {
        let out = hosts(LoopbackHostname::Keep).render(Some("127.0.0.1 localhost"));
        assert!(out.starts_with("127.0.0.1 localhost\n# BEGIN"), "{out}");
    }

    #[test]
    fn crlf_and_trailing_space_markers_are_recognised() {
        let h = hosts(LoopbackHostname::Keep);
        let once = h.render(Some("a b\r\n"));
        let crlf = once.replace(END, &format!("{END}  \r"));
        assert_eq!(h.render(Some(&crlf)), once);
    }
}
