//! Handing back the code pages a reconcile ran once.
//!
//! Most of an idle agent's resident memory is not its data (about 1 MB) but clean pages of its
//! own binary: the code that parsing a manifest and reconciling every kind of resource ran once,
//! each page mapped in with the kernel's fault-around (up to 16 pages at a time). They stay
//! counted in the agent's RSS until the kernel needs the memory. After each reconcile the agent
//! tells the kernel it no longer needs them (`madvise(MADV_DONTNEED)`): they leave its page
//! tables but stay in the page cache, so code run again comes back with a minor fault.
//!
//! Only mappings that cannot hold anything of the agent's own are handed back: read-only
//! mappings of the executable file itself with no anonymous (written, copy-on-write) pages.
//! Relocated data (`.data.rel.ro`, anonymous once written even though read-only after RELRO),
//! `.data`, `.bss`, the heap, stacks and libraries are never touched.

use std::ffi::c_void;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{MmapAdvise, madvise};

/// A mapping of `/proc/self/smaps` that can be handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub perms: String,
    /// Resident kilobytes before the hand-back.
    pub rss_kb: u64,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) that are read-only mappings of
/// `exe`, private or shared, and hold no anonymous pages.
pub fn candidates(smaps: &str, exe: &Path) -> Vec<Span> {
    let mut out = Vec::new();
    // The mapping being read: (span, whether it qualifies so far).
    let mut current: Option<(Span, bool)> = None;
    let mut finish = |current: &mut Option<(Span, bool)>| {
        if let Some((span, true)) = current.take() {
            out.push(span);
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) {
            // A mapping's header line: `start-end perms offset dev inode path`.
            finish(&mut current);
            let perms = words.next().unwrap_or_default().to_string();
            let path: Vec<&str> = words.skip(3).collect();
            let path = path.join(" ");
            let qualifies = perms.starts_with('r')
                && perms.as_bytes().get(1) == Some(&b'-')
                && Path::new(&path) == exe;
            current = Some((
                Span {
                    start,
                    end,
                    perms,
                    rss_kb: 0,
                },
                qualifies,
            ));
            continue;
        }
        let Some((span, qualifies)) = current.as_mut() else {
            continue;
        };
        let kb = || words.clone().next().and_then(|w| w.parse::<u64>().ok());
        match first {
            "Rss:" => span.rss_kb = kb().unwrap_or(0),
            // Written pages are the process's own: never hand those back.
            "Anonymous:" if kb() != Some(0) => *qualifies = false,
            _ => {}
        }
    }
    finish(&mut current);
    out
}

/// Hands back the resident clean pages of the agent's binary; returns the kilobytes that were
/// resident in the mappings handed back. Nothing happens (0) where `/proc` cannot be read.
pub fn release_code_pages() -> u64 {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    release(&candidates(&smaps, &exe), &exe)
}

#[allow(unsafe_code)]
fn release(spans: &[Span], exe: &Path) -> u64 {
    let mut released = 0;
    for span in spans.iter().filter(|s| s.rss_kb > 0) {
        let Some(addr) = NonNull::new(span.start as *mut c_void) else {
            continue;
        };
        // SAFETY: the span is a whole mapping of the executable file, read-only and without a
        // single anonymous page (checked in `candidates` from the kernel's own account), so each
        // of its pages is a clean copy of the file. MADV_DONTNEED drops them from this
        // process's page tables and the next access reads the same bytes back from the page
        // cache: no content changes, for this thread or any other running that code meanwhile.
        let done = unsafe { madvise(addr, span.end - span.start, MmapAdvise::MADV_DONTNEED) };
        match done {
            Ok(()) => released += span.rss_kb,
            Err(e) => tracing::debug!(error = %e, exe = %exe.display(), "madvise(MADV_DONTNEED)"),
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
5555000-5556000 r--p 00000000 fd:01 42 /usr/bin/provision
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
5556000-5558000 r-xp 00001000 fd:01 42 /usr/bin/provision
Size:                  8 kB
Rss:                   8 kB
Anonymous:             0 kB
5558000-5559000 r--p 00003000 fd:01 42 /usr/bin/provision
Size:                  4 kB
Rss:                   4 kB
Anonymous:             4 kB
5559000-555a000 rw-p 00004000 fd:01 42 /usr/bin/provision
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
555a000-555b000 r-xp 00000000 fd:01 43 /usr/lib/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
555b000-555c000 r--p 00000000 fd:01 44 /usr/bin/provision with space
Rss:                   4 kB
Anonymous:             0 kB
7fff000-8000000 rw-p 00000000 00:00 0 [stack]
Rss:                   4 kB
Anonymous:             4 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_qualify() {
        let spans = candidates(SMAPS, Path::new("/usr/bin/provision"));
        let starts: Vec<usize> = spans.iter().map(|s| s.start).collect();
        // Not the relocated (anonymous) read-only data, not .data, not libc, not the stack.
        assert_eq!(starts, [0x5555000, 0x5556000]);
        assert_eq!(spans[1].perms, "r-xp");
        assert_eq!(spans[1].rss_kb, 8);
        assert_eq!(spans[1].end - spans[1].start, 0x2000);
        // A path with spaces is matched whole.
        let spaced = candidates(SMAPS, Path::new("/usr/bin/provision with space"));
        assert_eq!(spaced.len(), 1);
        assert_eq!(spaced[0].start, 0x555b000);
    }

    fn rss_file_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn handing_back_the_test_binarys_code_leaves_it_running() {
        let before = rss_file_kb();
        let released = release_code_pages();
        // This test binary has run code (the harness, this test): some of it was resident.
        assert!(released > 0, "nothing handed back (RssFile {before} kB)");
        let after = rss_file_kb();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // The code handed back still runs, and so does code run for the first time.
        assert_eq!(candidates(SMAPS, Path::new("/usr/bin/provision")).len(), 2);
        let again = format!("{:?}", (0..10).map(|i| i * i).collect::<Vec<_>>());
        assert_eq!(again, "[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]");
    }
}
