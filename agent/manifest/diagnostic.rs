//! Manifest errors that say where (file:line:column and YAML path), what, and what to do.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One problem in a manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The YAML path of the offending value, e.g. `resources[3].file.owner`; empty for the file.
    pub yaml_path: String,
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// One line (and a hint line). The YAML path and the message quote manifest values, so
    /// their control characters are shown escaped (`\n`, `\0`, `\u{1b}`): a value cannot add a
    /// line of its own to the error output, nor send a terminal escape sequence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.yaml_path.is_empty() {
            write!(f, "{}: ", one_line(&self.yaml_path))?;
        }
        f.write_str(&one_line(&self.message))?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {}", one_line(hint))?;
        }
        Ok(())
    }
}

/// `text` with control characters and the Unicode bidirectional overrides (which can make a
/// terminal show text in another order than it is) written as Rust escapes.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let odd = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(odd) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if odd(c) {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_cannot_break_the_error_line() {
        let d = Diagnostic {
            file: "m.yaml".into(),
            line: 3,
            column: 7,
            yaml_path: "resources[0].service.env.A\nB".into(),
            message: "`mas\nter\0\u{1b}[31m\u{202e}` is not valid".into(),
            hint: Some("fix it".into()),
        };
        assert_eq!(
            d.to_string(),
            "m.yaml:3:7: resources[0].service.env.A\\nB: `mas\\nter\\0\\u{1b}[31m\\u{202e}` is not valid\n  hint: fix it"
        );
        assert_eq!(one_line("plain `x` and üñí"), "plain `x` and üñí");
    }
}

/// Every problem found in a manifest; validation collects them all before reporting.
#[derive(Debug, Clone, Default, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the manifest; nothing was changed",
            if n == 1 { "" } else { "s" }
        )
    }
}
