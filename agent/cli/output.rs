//! Human output: one line per resource that changed, failed or was skipped, then a summary line.
//! Colour only on a terminal, never with `NO_COLOR` set.

use std::io::{IsTerminal, Write};

use crate::engine::{Report, Status};
use crate::facts::Facts;

#[derive(Clone, Copy)]
pub enum Paint {
    Changed,
    Error,
    Skipped,
    Dim,
}

/// Colour only on a terminal, and never when `NO_COLOR` is set (to anything but empty).
pub fn colour_on() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
}

/// `text` in the colour for `paint`, when colour is on.
pub fn paint(paint: Paint, text: &str) -> String {
    if !colour_on() {
        return text.to_owned();
    }
    let code = match paint {
        Paint::Changed => "33",
        Paint::Error => "1;31",
        Paint::Skipped => "35",
        Paint::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

pub fn report(out: &mut impl Write, report: &Report, diff: bool) {
    let changed_word = if report.check {
        "would change"
    } else {
        "changed"
    };
    for r in &report.resources {
        let _ = match r.status {
            Status::Unchanged => match &r.note {
                Some(note) => writeln!(out, "ok {}: {note}", r.id),
                None => continue,
            },
            Status::Changed => {
                let what: Vec<&str> = r.changes.iter().map(|c| c.text.as_str()).collect();
                writeln!(
                    out,
                    "{} {}: {}",
                    paint(Paint::Changed, changed_word),
                    r.id,
                    what.join("; ")
                )
            }
            Status::Failed => {
                let attempted: Vec<&str> = r.changes.iter().map(|c| c.text.as_str()).collect();
                let attempted = if attempted.is_empty() {
                    String::new()
                } else {
                    format!("\n  while: {}", attempted.join("; "))
                };
                writeln!(
                    out,
                    "{} {}: {}{attempted}",
                    paint(Paint::Error, "failed"),
                    r.id,
                    r.error.as_deref().unwrap_or("unknown error")
                )
            }
            Status::Skipped => writeln!(
                out,
                "{} {}: not attempted because {}",
                paint(Paint::Skipped, "skipped"),
                r.id,
                r.skipped_because
                    .as_deref()
                    .unwrap_or("a dependency failed")
            ),
        };
        for b in &r.backups {
            let _ = writeln!(out, "  {}", paint(Paint::Dim, &format!("backup: {b}")));
        }
        if diff {
            for c in &r.changes {
                if let Some(d) = c.change.content_diff()
                    && let Some(unified) = &d.unified
                {
                    let _ = out.write_all(unified.as_bytes());
                }
            }
        }
    }
    let s = &report.summary;
    let mode = if report.check {
        " (check mode: nothing was written)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "{}: {} {changed_word}, {} unchanged, {} failed, {} skipped in {:.1} ms{mode}",
        report.node, s.changed, s.unchanged, s.failed, s.skipped, s.duration_ms
    );
}

pub fn facts(f: &Facts) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
    println!("hostname        {}", f.hostname);
    println!("short_hostname  {}", f.short_hostname);
    println!("cpus            {}", f.cpus);
    println!(
        "physical_cores  {}",
        f.physical_cores
            .map_or_else(|| "unknown".into(), |c| c.to_string())
    );
    println!("memory_total    {} MiB", f.memory_total_mib);
    println!("os              {} {}", opt(&f.os_name), opt(&f.os_version));
    println!("kernel          {}", opt(&f.kernel));
    println!("arch            {}", f.arch);
}
