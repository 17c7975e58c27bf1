//! The properties the fuzz targets in `fuzz/` check, one function per parser that reads bytes
//! from outside. Each takes arbitrary bytes and panics only when a property fails, so the same
//! functions serve `cargo +nightly fuzz run` (fuzz/fuzz_targets/) and the replay of the seed
//! corpus and of every input a fuzzer ever found (tests/fuzz_corpus.rs) in the ordinary test run.
//!
//! Not part of the command-line program; public only so that the fuzz crate and the tests can
//! reach it.

use std::cell::RefCell;
use std::path::Path;

use crate::facts::Facts;
use crate::host::accounts::{self, Accounts};
use crate::manifest;
use crate::manifest::model::LoopbackHostname;
use crate::resources::fstab::{self, Entry};
use crate::resources::hosts::{self, Hosts};
use crate::resources::pip::Wanted;

/// A property over arbitrary bytes: returns, or panics saying what failed.
pub type Property = fn(&[u8]);

/// Every fuzz target: its name (as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/seeds/<name>/`)
/// and its property.
pub const TARGETS: &[(&str, Property)] = &[
    ("manifest", manifest_text),
    ("environment_file", environment_file),
    ("hosts", hosts_file),
    ("fstab", fstab_file),
    ("mountinfo", mountinfo),
    ("accounts", account_files),
    ("pip_requirement", pip_requirement),
    ("handoff_request", handoff_request),
    ("status_request", status_request),
];

/// Files the fuzzed manifest may name (an include, an environment file, a template, a password
/// file), so that mutations reach the code that reads them.
const NEIGHBOURS: &[(&str, &str)] = &[
    (
        "inc.yaml",
        "nodes:\n  - name: worker\n    address: 10.0.0.2\n    roles: [worker]\n",
    ),
    (
        "environment.yml",
        "name: analysis\nchannels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip:\n      - numpy>=1.26\n",
    ),
    ("t.j2", "{{ node.name }} {{ vars.x | default(value=1) }}\n"),
    ("password", "not-a-real-password\n"),
];

thread_local! {
    /// One folder per thread for the files a target hands to path-based parsers.
    static DIR: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Runs `f` in this thread's scratch folder, with the neighbour files in place.
fn in_scratch<R>(f: impl FnOnce(&Path) -> R) -> R {
    DIR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let dir = tempfile::tempdir().expect("a scratch folder for the fuzz target");
            for (name, text) in NEIGHBOURS {
                std::fs::write(dir.path().join(name), text).expect("write a neighbour file");
            }
            *cell = Some(dir);
        }
        let dir = cell.as_ref().expect("made above");
        f(dir.path())
    })
}

/// Facts of a made-up machine: the target must not depend on the one it runs on.
fn facts() -> Facts {
    Facts {
        hostname: "fuzz.example".into(),
        short_hostname: "fuzz".into(),
        cpus: 4,
        physical_cores: Some(2),
        memory_total_bytes: 8 << 30,
        memory_total_mib: 8 << 10,
        os_name: Some("Debian GNU/Linux".into()),
        os_version: Some("12".into()),
        kernel: Some("6.1.0".into()),
        arch: "x86_64".into(),
    }
}

/// Parses `path` as a manifest; a refused manifest's every error must point into a file that was
/// read, at a line and column that exist in it; an accepted one is taken as far as `plan` takes
/// it before touching a machine: each node selected, its resources built, their order checked.
fn parse_and_build(path: &Path) {
    match manifest::parse(path) {
        Err(diagnostics) => {
            assert!(!diagnostics.0.is_empty(), "a refused manifest says why");
            for d in &diagnostics.0 {
                assert!(d.line >= 1 && d.column >= 1, "1-based position: {d}");
                assert!(!d.message.is_empty(), "an error has a message");
                if let Ok(text) = std::fs::read_to_string(&d.file) {
                    // YAML's line breaks: CRLF, LF, and a lone CR.
                    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
                    assert!(
                        d.line <= lines + 1,
                        "{d}: line {} of a file with {lines} lines",
                        d.line
                    );
                }
                let _ = d.to_string();
            }
        }
        Ok(m) => {
            let facts = facts();
            let _ = crate::cli::order_errors(&m, &facts);
            for node in &m.nodes {
                let selection = m
                    .select(Some(&node.value.name), "")
                    .expect("every node of an accepted manifest can be selected");
                let steps = crate::resources::build(&m, &selection, &facts);
                let _ = crate::engine::check_order(&steps);
            }
        }
    }
}

/// The manifest loader, validator and resolver: YAML text in, errors or a model out, never a
/// panic (the input limits bound memory and time; the fuzzer's `-rss_limit_mb` and `-timeout`
/// catch a breach).
pub fn manifest_text(data: &[u8]) {
    in_scratch(|dir| {
        let path = dir.join("cluster.yaml");
        std::fs::write(&path, data).expect("write the fuzzed manifest");
        parse_and_build(&path);
    });
}

/// conda's `environment.yml`, read through a manifest's `conda_env: {from: ...}`: any error is
/// reported in the environment file or at the `from:` that names it.
pub fn environment_file(data: &[u8]) {
    in_scratch(|dir| {
        let env = dir.join("fuzzed-environment.yml");
        std::fs::write(&env, data).expect("write the fuzzed environment file");
        let top = dir.join("env-cluster.yaml");
        std::fs::write(
            &top,
            "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - conda_env:\n      from: fuzzed-environment.yml\n",
        )
        .expect("write the manifest naming it");
        parse_and_build(&top);
    });
}

/// The text with every complete managed block taken out: what provision must keep.
fn outside_blocks(text: &str) -> Vec<&str> {
    let mut kept = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_block = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if in_block {
            block.push(line);
            if body.trim_end() == hosts::END {
                in_block = false;
                block.clear();
            }
            continue;
        }
        if body.starts_with(hosts::BEGIN_PREFIX) {
            in_block = true;
            block.push(line);
            continue;
        }
        kept.push(line);
    }
    // A block that never ends: its BEGIN marker (and any other BEGIN marker after it) is
    // provision's, the other lines after it may be the user's.
    kept.extend(block.into_iter().filter(|l| {
        !l.trim_end_matches(['\n', '\r'])
            .starts_with(hosts::BEGIN_PREFIX)
    }));
    kept
}

/// `/etc/hosts`: rendering the managed block keeps every byte outside complete blocks (with
/// `loopback_hostname: keep`), writes the block once, and a second render changes nothing.
pub fn hosts_file(data: &[u8]) {
    let (mode, text) = data.split_first().unwrap_or((&0, &[]));
    let text = String::from_utf8_lossy(text);
    let loopback = match mode % 3 {
        0 => LoopbackHostname::Keep,
        1 => LoopbackHostname::Remove,
        _ => LoopbackHostname::Static,
    };
    let managed = Hosts {
        path: "/etc/hosts".into(),
        block: vec![
            hosts::entry("10.0.0.1", &["master".into(), "master.lab".into()]),
            hosts::entry("fe80::2", &["worker".into()]),
        ],
        loopback,
        hostname: "master".into(),
        address: "10.0.0.1".into(),
    };
    let once = managed.render(Some(&text));
    let twice = managed.render(Some(&once));
    assert_eq!(once, twice, "a second render changes nothing");
    let begins = once
        .lines()
        .filter(|l| l.starts_with(hosts::BEGIN_PREFIX))
        .count();
    assert_eq!(begins, 1, "the block is written exactly once:\n{once}");
    if loopback == LoopbackHostname::Keep {
        // Kept byte for byte; at most a line ending is added to a last line that had none.
        let before = outside_blocks(&text).concat();
        let after = outside_blocks(&once).concat();
        assert!(
            after == before || after == before.clone() + "\n",
            "every byte outside the managed block is kept:\n{before:?}\n{after:?}"
        );
    }
}

/// `/etc/fstab`: every line parses without a panic; an entry written back as a line parses to
/// itself; setting the entry of a target replaces exactly that target's lines, keeping every
/// other line byte for byte, and removing it leaves none.
pub fn fstab_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut targets = Vec::new();
    for line in text.lines() {
        if let Some(entry) = Entry::parse(line) {
            let again = Entry::parse(&entry.line());
            let again_line = again.as_ref().map(Entry::line);
            assert_eq!(
                again_line.as_deref().and_then(Entry::parse),
                again,
                "a written entry is a fixed point: {line:?}"
            );
            assert_eq!(
                again.as_ref().map(|e| (&e.source, &e.target, &e.fstype)),
                Some((&entry.source, &entry.target, &entry.fstype)),
                "an entry written as a line reads back the same: {line:?} -> {:?}",
                entry.line()
            );
            targets.push(entry.target);
        }
    }
    // Field escapes: any text survives escape then unescape.
    assert_eq!(fstab::unescape(&fstab::escape(&text)), text);
    let target = targets
        .first()
        .cloned()
        .unwrap_or_else(|| "/mnt/share data".into());
    let wanted = Entry {
        source: "//files.lab/share".into(),
        target: target.clone(),
        fstype: "cifs".into(),
        options: vec!["credentials=/etc/cifs/share.cred".into(), "nofail".into()],
        dump: 0,
        pass: 0,
    };
    let set = fstab::render(&text, &target, Some(&wanted.line()));
    assert_eq!(
        fstab::find(&set, &target),
        (Some(wanted.clone()), 1),
        "the target has exactly the entry set"
    );
    // A line belongs to a target when it is not a comment and its second field (fields part at
    // ASCII blanks, as libmount parts them) is the target.
    let target_of = |l: &str| {
        let body = l.trim_ascii_start();
        (!body.starts_with('#'))
            .then(|| body.split_ascii_whitespace().nth(1).map(fstab::unescape))
            .flatten()
    };
    let others = |t: &str| -> Vec<String> {
        t.split_inclusive('\n')
            .filter(|l| target_of(l.trim_end_matches(['\n', '\r'])).as_ref() != Some(&target))
            .map(|l| l.trim_end_matches('\n').to_owned())
            .collect()
    };
    assert_eq!(others(&set), others(&text), "every other line is kept");
    let removed = fstab::render(&set, &target, None);
    assert_eq!(fstab::find(&removed, &target), (None, 0));
    assert_eq!(others(&removed), others(&text), "removing keeps the rest");
}

/// How the kernel writes a mountinfo field (`mangle` in fs/proc_namespace.c: space, tab, newline
/// and backslash as octal), with `,` escaped too in option lists so each option reads back whole,
/// and an option that is just `-` (no kernel option is) escaped, so it cannot read as the ` - `
/// separator.
fn mangle(field: &str, comma: bool) -> String {
    if comma && field == "-" {
        return "\\055".to_owned();
    }
    let mut out = String::new();
    for c in field.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            ',' if comma => out.push_str("\\054"),
            c => out.push(c),
        }
    }
    out
}

/// `/proc/self/mountinfo`: any text parses without a panic, and every entry read, written back as
/// the kernel writes it, reads back the same.
pub fn mountinfo(data: &[u8]) {
    use crate::host::mounts;
    let text = String::from_utf8_lossy(data);
    for m in mounts::parse(&text) {
        let options = |o: &[String]| {
            o.iter()
                .map(|o| mangle(o, true))
                .collect::<Vec<_>>()
                .join(",")
        };
        let line = format!(
            "{} {} {} {} {} {} shared:1 - {} {} {}",
            m.id,
            m.parent,
            m.dev,
            mangle(&m.root, false),
            mangle(&m.target, false),
            options(&m.mount_options),
            mangle(&m.fstype, false),
            mangle(&m.source, false),
            options(&m.super_options)
        );
        let again = mounts::parse(&line);
        assert_eq!(again, vec![m], "a mountinfo entry reads back: {line:?}");
    }
}

/// passwd/group: any text parses without a panic; setting one account's line keeps every other
/// line byte for byte and reads back as the account; memberships end as wanted.
pub fn account_files(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (passwd, group) = text.split_once('\0').unwrap_or((&text, ""));
    let found = Accounts::parse(passwd, group);
    let user = accounts::User {
        name: "pyme".into(),
        uid: 999,
        gid: 999,
        gecos: "PYME servers".into(),
        home: "/var/lib/pyme".into(),
        shell: "/usr/sbin/nologin".into(),
    };
    let set = accounts::set_line(passwd, &user.name, Some(&user.line()));
    let after = Accounts::parse(&set, "");
    assert_eq!(after.user("pyme"), Some(&user), "the account reads back");
    let not_ours = |t: &str| -> Vec<String> {
        t.split_inclusive('\n')
            .filter(|l| !l.starts_with("pyme:"))
            .map(|l| l.trim_end_matches('\n').to_owned())
            .collect()
    };
    assert_eq!(not_ours(&set), not_ours(passwd), "other lines are kept");
    // Later lines for the same name (a hand-made duplicate) are kept, not silently dropped.
    let dupes = |t: &str| t.lines().filter(|l| l.starts_with("pyme:")).count();
    assert_eq!(dupes(&set), dupes(passwd).max(1));
    let wanted: Vec<String> = found
        .groups
        .iter()
        .take(2)
        .map(|g| g.name.clone())
        .collect();
    let grouped = accounts::set_memberships(group, "pyme", &wanted);
    let groups = Accounts::parse("", &grouped);
    let before = Accounts::parse("", group);
    assert_eq!(groups.groups.len(), before.groups.len());
    for (g, old) in groups.groups.iter().zip(&before.groups) {
        let member = g.members.iter().any(|m| m == "pyme");
        assert_eq!(
            member,
            wanted.contains(&g.name),
            "pyme's membership of {} is as wanted",
            g.name
        );
        let others = |g: &accounts::Group| -> Vec<String> {
            g.members.iter().filter(|m| *m != "pyme").cloned().collect()
        };
        assert_eq!(
            others(g),
            others(old),
            "other members of {} are kept",
            g.name
        );
    }
    assert_eq!(
        grouped.split_inclusive('\n').count(),
        group.split_inclusive('\n').count(),
        "memberships add and remove no lines"
    );
}

/// A pip requirement as the manifest and environment files give it: never a panic; an accepted
/// one names a package, cannot be read by pip as an option, and its canonical form is accepted
/// as the same requirement.
pub fn pip_requirement(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let wanted = match Wanted::parse(line) {
            Ok(wanted) => wanted,
            Err(e) => {
                // Wanted::parse turns a panic of pep508_rs into an error; a guard must come first.
                assert!(
                    !e.ends_with(crate::resources::pip::PARSER_PANICKED),
                    "{line:?}: {e}"
                );
                continue;
            }
        };
        assert!(
            !line.trim_start().starts_with('-'),
            "an accepted requirement is not a pip option: {line:?}"
        );
        let canonical = wanted.requirement.to_string();
        let again = Wanted::parse(&canonical)
            .unwrap_or_else(|e| panic!("{line:?} accepted, its form {canonical:?} not: {e}"));
        assert_eq!(again.name(), wanted.name());
        let _ = wanted.satisfied_by("1.0");
    }
}

/// The agent's hand-off request file: any bytes are either refused or a request that writes back
/// as itself.
pub fn handoff_request(data: &[u8]) {
    use crate::daemon::handoff::Request;
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_vec(&request).expect("a request serializes");
        let again: Request = serde_json::from_slice(&text).expect("and reads back");
        assert_eq!(again, request);
    }
}

/// The agent's status API, one request head: the answer is always one well-formed HTTP/1.1
/// response (a status line, only the server's own headers, a Content-Length that is the body's
/// length), and with a token set nothing but a request carrying it gets a 200.
pub fn status_request(data: &[u8]) {
    use crate::daemon::status::{Board, request_head_response};
    const TOKEN: &str = "fuzz-token-7f3a";
    let (mode, head) = data.split_first().unwrap_or((&0, &[]));
    let token = (mode % 2 == 1).then_some(TOKEN);
    let board = Board::new("fuzz");
    let answer = request_head_response(head, &board, token);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the head of the answer ends with an empty line");
    let (head_out, body) = (&answer[..split], &answer[split + 4..]);
    let head_out = std::str::from_utf8(head_out).expect("the answer's head is text");
    let mut lines = head_out.split("\r\n");
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 "), "status line {status:?}");
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(": ").expect("a header line");
        assert!(
            matches!(
                name,
                "Content-Type" | "Content-Length" | "Connection" | "WWW-Authenticate" | "Allow"
            ),
            "only the server's own headers: {line:?}"
        );
        if name == "Content-Length" {
            length = Some(value.parse::<usize>().expect("a number"));
        }
    }
    let length = length.expect("a Content-Length");
    assert!(
        body.len() == length || body.is_empty(),
        "the body is the length said (or absent, for HEAD)"
    );
    if token.is_some() && !head.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()) {
        assert!(
            !status.starts_with("HTTP/1.1 200"),
            "answered without the token: {status}"
        );
    }
}
