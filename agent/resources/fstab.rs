//! `/etc/fstab` as text: find the entry for one mount target, and replace or remove it while every
//! other byte of the file stays as it was (comments, tabs, `UUID=`/`LABEL=` sources, `\040`
//! escapes, a missing final newline).
//!
//! An entry belongs to a target: the first line whose second field is the target is replaced in
//! place, any further line for the same target is dropped (so a changed parameter never leaves a
//! duplicate behind), and a new entry goes at the end.

/// One fstab entry, fields decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
    pub dump: u8,
    pub pass: u8,
}

/// fstab's escapes for a field: every whitespace or control character and the backslash as
/// octal bytes (`\040` for a space, `\302\240` for a no-break space), and a `#` that starts the
/// field (`\043`, which would otherwise make a line a comment). libmount and [`unescape`] decode
/// any `\ooo`, so every string survives the round trip and no field can split or end a line.
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for (i, c) in field.char_indices() {
        if c == '\\' || c.is_whitespace() || c.is_control() || (i == 0 && c == '#') {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// fstab's decoding is mountinfo's: one routine, in the host layer that reads the mount table.
pub use crate::host::mounts::unescape;

impl Entry {
    /// The entry as an fstab line (no line ending).
    pub fn line(&self) -> String {
        let options = if self.options.is_empty() {
            "defaults".to_owned()
        } else {
            self.options.join(",")
        };
        format!(
            "{} {} {} {} {} {}",
            escape(&self.source),
            escape(&self.target),
            escape(&self.fstype),
            escape(&options),
            self.dump,
            self.pass
        )
    }

    /// Parses one line; `None` for blank lines, comments and lines with fewer than 4 fields.
    pub fn parse(line: &str) -> Option<Entry> {
        let body = line.trim_ascii_start();
        if body.starts_with('#') {
            return None;
        }
        // Fields part at ASCII blanks only, as libmount parts them: a no-break space inside a
        // path is part of it.
        let mut fields = body.split_ascii_whitespace();
        let source = unescape(fields.next()?);
        let target = unescape(fields.next()?);
        let fstype = unescape(fields.next()?);
        let options = unescape(fields.next()?);
        let number = |f: Option<&str>| f.and_then(|v| v.parse().ok()).unwrap_or(0);
        let dump = number(fields.next());
        let pass = number(fields.next());
        Some(Entry {
            source,
            target,
            fstype,
            options: options.split(',').map(str::to_owned).collect(),
            dump,
            pass,
        })
    }
}

/// The target of a line, decoded, if the line is an entry.
fn target_of(line: &str) -> Option<String> {
    let body = line.trim_ascii_start();
    if body.starts_with('#') {
        return None;
    }
    body.split_ascii_whitespace().nth(1).map(unescape)
}

/// The first entry for `target` and how many lines name that target.
pub fn find(text: &str, target: &str) -> (Option<Entry>, usize) {
    let mut first = None;
    let mut count = 0;
    for line in text.lines() {
        if target_of(line).as_deref() == Some(target) {
            count += 1;
            if first.is_none() {
                first = Entry::parse(line);
            }
        }
    }
    (first, count)
}

/// `text` with the entry for `target` set to `line` (`None` removes it). The first line for the
/// target is replaced in place (keeping its line ending), later ones are dropped, and a new entry
/// is appended; every other line is kept byte for byte.
pub fn render(text: &str, target: &str, line: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut placed = false;
    for raw in text.split_inclusive('\n') {
        let body = raw.trim_end_matches(['\n', '\r']);
        if target_of(body).as_deref() != Some(target) {
            out.push_str(raw);
            continue;
        }
        if placed {
            continue;
        }
        placed = true;
        if let Some(line) = line {
            out.push_str(line);
            // The line's own ending (none on a last line without one).
            out.push_str(&raw[body.len()..]);
        }
    }
    if !placed && let Some(line) = line {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "# /etc/fstab: static file system information.\n#\n# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n# / was on /dev/sda1 during installation\nUUID=0f3c2e4a-1b2c-4d5e-8f90-123456789abc /               ext4    errors=remount-ro 0       1\n# swap was on /dev/sda5 during installation\nUUID=9a8b7c6d-5e4f-3a2b-1c0d-fedcba987654 none            swap    sw              0       0\nLABEL=scratch\t/scratch\txfs\tdefaults,noatime\t0\t2\n/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\n//nas/my\\040share /mnt/my\\040share cifs guest 0 0\n";

    fn cifs(target: &str, opts: &[&str]) -> Entry {
        Entry {
            source: "//nas.example/data".into(),
            target: target.into(),
            fstype: "cifs".into(),
            options: opts.iter().map(|s| s.to_string()).collect(),
            dump: 0,
            pass: 0,
        }
    }

    #[test]
    fn escapes_round_trip() {
        let raw = "/mnt/my share\twith\\slash";
        assert_eq!(escape(raw), "/mnt/my\\040share\\011with\\134slash");
        assert_eq!(unescape(&escape(raw)), raw);
        // Not an escape: kept as written.
        assert_eq!(unescape("a\\9b\\04"), "a\\9b\\04");
        // Unicode blanks, carriage returns and a leading `#` cannot split a line or comment it.
        let odd = "#nas:/my\u{a0}data\r#x";
        assert_eq!(escape(odd), "\\043nas:/my\\302\\240data\\015#x");
        assert_eq!(unescape(&escape(odd)), odd);
        let e = Entry {
            source: odd.into(),
            target: "/mnt/a\u{a0}b #c".into(),
            fstype: "nfs4".into(),
            options: vec!["ro".into()],
            dump: 0,
            pass: 0,
        };
        let text = render("", &e.target, Some(&e.line()));
        assert_eq!(text.lines().count(), 1, "{text}");
        assert_eq!(find(&text, &e.target), (Some(e.clone()), 1));
        assert_eq!(render(&text, &e.target, Some(&e.line())), text);
    }

    #[test]
    fn finds_entries_by_decoded_target() {
        let (e, n) = find(DEBIAN, "/mnt/my share");
        let e = e.unwrap();
        assert_eq!((e.source.as_str(), n), ("//nas/my share", 1));
        let (e, _) = find(DEBIAN, "/scratch");
        let e = e.unwrap();
        assert_eq!(e.options, ["defaults", "noatime"]);
        assert_eq!((e.dump, e.pass), (0, 2));
        assert_eq!(find(DEBIAN, "/mnt/none"), (None, 0));
        // A commented-out entry is not an entry.
        assert_eq!(find("# //a/b /mnt/x cifs x 0 0\n", "/mnt/x").1, 0);
    }

    #[test]
    fn adding_keeps_every_other_byte() {
        let line = cifs("/mnt/data", &["nofail"]).line();
        let new = render(DEBIAN, "/mnt/data", Some(&line));
        assert_eq!(new, format!("{DEBIAN}{line}\n"));
        // No final newline: one is added before the new entry, nothing else changes.
        let cut = DEBIAN.trim_end_matches('\n');
        assert_eq!(
            render(cut, "/mnt/data", Some(&line)),
            format!("{cut}\n{line}\n")
        );
        assert_eq!(render("", "/mnt/data", Some(&line)), format!("{line}\n"));
    }

    #[test]
    fn changing_replaces_in_place_and_drops_duplicates() {
        let old = cifs("/mnt/data", &["vers=2.0"]).line();
        let text = format!("# head\n{old}\r\n# middle\n{old}\n# tail\n");
        let new = cifs("/mnt/data", &["vers=3.0"]).line();
        let out = render(&text, "/mnt/data", Some(&new));
        assert_eq!(out, format!("# head\n{new}\r\n# middle\n# tail\n"));
        assert_eq!(find(&out, "/mnt/data").1, 1);
    }

    #[test]
    fn removing_removes_only_that_target() {
        let line = cifs("/mnt/data", &["nofail"]).line();
        let text = format!("{DEBIAN}{line}\n");
        assert_eq!(render(&text, "/mnt/data", None), DEBIAN);
        assert_eq!(render(DEBIAN, "/mnt/data", None), DEBIAN);
    }

    #[test]
    fn lines_escape_and_default() {
        let e = Entry {
            source: "//nas/my share".into(),
            target: "/mnt/my share".into(),
            fstype: "cifs".into(),
            options: vec![],
            dump: 0,
            pass: 0,
        };
        assert_eq!(
            e.line(),
            "//nas/my\\040share /mnt/my\\040share cifs defaults 0 0"
        );
        let back = Entry::parse(&e.line()).unwrap();
        assert_eq!(back.source, "//nas/my share");
        assert_eq!(back.options, ["defaults"]);
    }
}
