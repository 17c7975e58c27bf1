//! A marked block of lines in a file that people edit too (`authorized_keys`, `known_hosts`):
//! provision owns the lines between its markers and nothing else. Every line outside the block is
//! kept byte for byte (comments, blank lines, CRLF endings, a missing final newline); a missing
//! block is appended at the end.

/// A block's two marker lines.
#[derive(Debug, Clone, Copy)]
pub struct Markers {
    pub begin: &'static str,
    pub end: &'static str,
}

impl Markers {
    /// The lines between the markers in `text`, without line endings (none when there is no
    /// block).
    pub fn lines<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut out = Vec::new();
        let mut inside = false;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            if inside {
                if body.trim_end() == self.end {
                    inside = false;
                } else {
                    out.push(body);
                }
            } else if body.trim_end() == self.begin {
                inside = true;
            }
        }
        out
    }

    /// `old` (`None`: no file yet) with its block replaced by `lines`, or the block appended.
    pub fn render(&self, old: Option<&str>, lines: &[String]) -> String {
        let old = old.unwrap_or("");
        let mut out = String::with_capacity(old.len() + 80 * (lines.len() + 2));
        let mut written = false;
        let mut inside = false;
        for line in old.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            if inside {
                if body.trim_end() == self.end {
                    inside = false;
                }
                continue;
            }
            if body.trim_end() == self.begin && !written {
                inside = true;
                self.write(&mut out, lines);
                written = true;
                continue;
            }
            out.push_str(line);
        }
        if !written {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            self.write(&mut out, lines);
        }
        out
    }

    fn write(&self, out: &mut String, lines: &[String]) {
        out.push_str(self.begin);
        out.push('\n');
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(self.end);
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Markers = Markers {
        begin: "# BEGIN provision managed block: test",
        end: "# END provision managed block",
    };

    #[test]
    fn a_missing_block_is_appended_and_every_other_byte_kept() {
        let old = "# mine\r\nssh-rsa AAAA me@laptop\n\n";
        let out = M.render(Some(old), &["a".into(), "b".into()]);
        assert_eq!(out, format!("{old}{}\na\nb\n{}\n", M.begin, M.end));
        assert_eq!(M.lines(&out), ["a", "b"]);
    }

    #[test]
    fn the_block_is_replaced_in_place_and_rendering_is_idempotent() {
        let old = format!("top\n{}\nold\n{}\nbottom", M.begin, M.end);
        let out = M.render(Some(&old), &["new".into()]);
        assert_eq!(out, format!("top\n{}\nnew\n{}\nbottom", M.begin, M.end));
        assert_eq!(M.render(Some(&out), &["new".into()]), out);
    }

    #[test]
    fn no_file_and_no_final_newline() {
        assert_eq!(M.render(None, &[]), format!("{}\n{}\n", M.begin, M.end));
        assert!(M.render(Some("x"), &[]).starts_with("x\n# BEGIN"));
        assert!(M.lines("no block here\n").is_empty());
    }

    #[test]
    fn markers_with_crlf_or_trailing_spaces_are_recognised() {
        let old = format!("{}  \r\nold\r\n{} \r\nafter\n", M.begin, M.end);
        assert_eq!(M.lines(&old), ["old"]);
        assert_eq!(
            M.render(Some(&old), &["x".into()]),
            format!("{}\nx\n{}\nafter\n", M.begin, M.end)
        );
    }

    #[test]
    fn an_unclosed_block_swallows_to_the_end_of_the_file() {
        // A block whose END marker was deleted by hand: everything after BEGIN was provision's.
        let old = format!("keep\n{}\nstale\n", M.begin);
        assert_eq!(
            M.render(Some(&old), &["x".into()]),
            format!("keep\n{}\nx\n{}\n", M.begin, M.end)
        );
    }
}
