//! The bad-manifest corpus: every file in `tests/bad-manifests/` is a manifest with one or more
//! mistakes, and says in its header comments what `provision` must report:
//!
//! ```yaml
//! # What the case shows.
//! # expect: <a part of the error message>
//! # at: LINE:COLUMN          (or FILE:LINE:COLUMN, FILE relative to tests/bad-manifests/)
//! # path: <the YAML path>    (optional)
//! ```
//!
//! with one `expect:`/`at:` pair per error. For every case, `validate` and `apply` exit 1, name
//! exactly these errors (no more, no fewer), each at `file:line:column` with its YAML path and a
//! hint, `validate --json` says the same as data, and `apply` changes nothing in its root.
//! Files under `tests/bad-manifests/includes/` are helpers that cases include, not cases.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::{Run, Sandbox, run};

/// One error a case must report.
#[derive(Debug)]
struct Expect {
    message: String,
    file: PathBuf,
    line: usize,
    column: usize,
    yaml_path: Option<String>,
}

impl Expect {
    /// `file:line:column: ` as the human output starts each error.
    fn location(&self) -> String {
        format!("{}:{}:{}: ", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug)]
struct Case {
    name: String,
    path: PathBuf,
    expects: Vec<Expect>,
}

impl Case {
    fn arg(&self) -> &str {
        self.path.to_str().expect("corpus paths are UTF-8")
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-manifests")
}

/// Every case, in file-name order, with its header read.
fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.into_iter().map(|p| read_case(&dir, p)).collect()
}

fn read_case(dir: &Path, path: PathBuf) -> Case {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("case name")
        .to_owned();
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut expects: Vec<Expect> = Vec::new();
    let mut at_seen = Vec::new();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if let Some(message) = line.strip_prefix("# expect: ") {
            expects.push(Expect {
                message: message.trim().to_owned(),
                file: path.clone(),
                line: 0,
                column: 0,
                yaml_path: None,
            });
            at_seen.push(false);
        } else if let Some(at) = line.strip_prefix("# at: ") {
            let e = expects
                .last_mut()
                .unwrap_or_else(|| panic!("{name}: `# at:` before any `# expect:`"));
            let mut parts = at.trim().rsplitn(3, ':');
            let column = parts.next().and_then(|c| c.parse().ok());
            let line = parts.next().and_then(|l| l.parse().ok());
            let (Some(line), Some(column)) = (line, column) else {
                panic!("{name}: `# at: {at}` is not LINE:COLUMN or FILE:LINE:COLUMN");
            };
            if let Some(file) = parts.next() {
                e.file = dir.join(file);
            }
            e.line = line;
            e.column = column;
            *at_seen.last_mut().expect("one per expect") = true;
        } else if let Some(yaml_path) = line.strip_prefix("# path: ") {
            let e = expects
                .last_mut()
                .unwrap_or_else(|| panic!("{name}: `# path:` before any `# expect:`"));
            e.yaml_path = Some(yaml_path.trim().to_owned());
        }
    }
    assert!(!expects.is_empty(), "{name}: no `# expect:` line");
    assert!(
        at_seen.iter().all(|seen| *seen),
        "{name}: every `# expect:` needs its `# at:`"
    );
    Case {
        name,
        path,
        expects,
    }
}

/// Runs `check` on every case and fails once, listing every case that went wrong with its output.
fn for_every_case(check: impl Fn(&Case) -> Result<(), String>) {
    let cases = cases();
    let mut failures = String::new();
    let mut failed = 0;
    for case in &cases {
        if let Err(problem) = check(case) {
            failed += 1;
            let _ = writeln!(failures, "\n=== {} ({})\n{problem}", case.name, case.arg());
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} bad-manifest cases failed:\n{failures}",
        cases.len()
    );
}

fn output(run: &Run) -> String {
    format!(
        "exit code {}\n--- stdout\n{}--- stderr\n{}",
        run.code, run.stdout, run.stderr
    )
}

/// Checks the human error output: exit 1, each expected error on its own line starting with its
/// location and YAML path, its message on that line, a hint on the next, and the error count.
fn check_human(case: &Case, run: &Run) -> Result<(), String> {
    let mut problems = Vec::new();
    if run.code != 1 {
        problems.push(format!("exit code {}, expected 1", run.code));
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    for e in &case.expects {
        let location = e.location();
        let found = lines.iter().enumerate().find(|(_, l)| {
            let l = l.strip_prefix("error: ").unwrap_or(l);
            l.starts_with(&location) && l.contains(&e.message)
        });
        let Some((i, line)) = found else {
            problems.push(format!(
                "no error line starting `{location}` and containing `{}`",
                e.message
            ));
            continue;
        };
        if let Some(yaml_path) = &e.yaml_path
            && !line.contains(&format!("{location}{yaml_path}: "))
        {
            problems.push(format!(
                "the error at {location}does not name the YAML path `{yaml_path}`"
            ));
        }
        if !lines
            .get(i + 1)
            .is_some_and(|next| next.starts_with("  hint: ") && next.len() > "  hint: ".len())
        {
            problems.push(format!("the error at {location}has no hint line"));
        }
    }
    let n = case.expects.len();
    let summary = format!(
        "{n} error{} in the manifest; nothing was changed",
        if n == 1 { "" } else { "s" }
    );
    if !run.stderr.contains(&summary) {
        problems.push(format!("no summary line `{summary}`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), output(run)))
    }
}

#[test]
fn validate_names_every_error_where_it_is() {
    for_every_case(|case| check_human(case, &run(&["validate", case.arg()])));
}

#[test]
fn validate_json_gives_every_error_with_its_location() {
    for_every_case(|case| {
        let run = run(&["validate", "--json", case.arg()]);
        let mut problems = Vec::new();
        if run.code != 1 {
            problems.push(format!("exit code {}, expected 1", run.code));
        }
        let report: serde_json::Value = match serde_json::from_str(&run.stdout) {
            Ok(report) => report,
            Err(e) => return Err(format!("stdout is not JSON ({e})\n{}", output(&run))),
        };
        if report["valid"] != serde_json::Value::Bool(false) {
            problems.push("`valid` is not false".to_owned());
        }
        let errors = report["errors"].as_array().cloned().unwrap_or_default();
        if errors.len() != case.expects.len() {
            problems.push(format!(
                "{} errors, expected {}",
                errors.len(),
                case.expects.len()
            ));
        }
        for e in &case.expects {
            let matches = |j: &serde_json::Value| {
                j["file"].as_str() == e.file.to_str()
                    && j["line"].as_u64() == Some(e.line as u64)
                    && j["column"].as_u64() == Some(e.column as u64)
                    && j["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&e.message))
            };
            let Some(found) = errors.iter().find(|j| matches(j)) else {
                problems.push(format!(
                    "no error with file, line, column {}and a message containing `{}`",
                    e.location(),
                    e.message
                ));
                continue;
            };
            if let Some(yaml_path) = &e.yaml_path
                && found["yaml_path"].as_str() != Some(yaml_path)
            {
                problems.push(format!(
                    "yaml_path is {}, expected `{yaml_path}`",
                    found["yaml_path"]
                ));
            }
            if found["hint"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("the error at {}has no hint", e.location()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\n{}", problems.join("\n"), output(&run)))
        }
    });
}

#[test]
fn apply_refuses_every_case_and_changes_nothing() {
    // Nothing may appear next to the manifests either (a lock, a backup, a state file).
    let corpus_before = common::snapshot(&corpus_dir());
    for_every_case(|case| {
        let sandbox = Sandbox::debian();
        let before = sandbox.snapshot();
        let run = sandbox.run(&["apply", case.arg(), "--node", "master"]);
        let after = sandbox.snapshot();
        let mut result = check_human(case, &run);
        if before != after {
            let changed: Vec<String> = before
                .keys()
                .chain(after.keys())
                .filter(|k| before.get(*k) != after.get(*k))
                .map(|k| k.display().to_string())
                .collect();
            let problem = format!("apply changed the root: {}", changed.join(", "));
            result = Err(match result {
                Ok(()) => format!("{problem}\n{}", output(&run)),
                Err(other) => format!("{problem}\n{other}"),
            });
        }
        result
    });
    assert!(
        common::snapshot(&corpus_dir()) == corpus_before,
        "apply changed files in {}",
        corpus_dir().display()
    );
}

#[test]
fn the_corpus_covers_at_least_30_cases_and_several_multi_error_ones() {
    let cases = cases();
    assert!(
        cases.len() >= 30,
        "only {} bad-manifest cases in {}",
        cases.len(),
        corpus_dir().display()
    );
    let multi: Vec<&str> = cases
        .iter()
        .filter(|c| c.expects.len() >= 2)
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        multi.len() >= 3,
        "only {} cases with several errors: {multi:?}",
        multi.len()
    );
    // Case numbers are unique, so the order (and the name in a failure) is unambiguous.
    let mut numbers: Vec<&str> = cases
        .iter()
        .map(|c| c.name.split('-').next().unwrap_or(""))
        .collect();
    numbers.sort();
    let count = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), count, "two cases share a number");
}

#[test]
fn a_good_manifest_validates() {
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pyme-cluster.yaml");
    let good = good.to_str().expect("UTF-8 path");
    let human = run(&["validate", good]);
    assert_eq!(human.code, 0, "{}", output(&human));
    assert!(human.stdout.contains("valid"), "{}", output(&human));
    let json = run(&["validate", "--json", good]);
    assert_eq!(json.code, 0, "{}", output(&json));
    let report = json.json();
    assert_eq!(report["valid"], serde_json::Value::Bool(true), "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
}

/// The values the corpus does not refuse because their file format can hold them: spaces, `#`,
/// commas and non-ASCII blanks in a mount's source and target (fstab's `\ooo` escapes), and `#`,
/// commas and spaces in a GECOS comment (passwd fields part at `:` only). Written into a temp
/// root, read back by util-linux's own fstab parser and by splitting the passwd line, they come
/// out as they went in, on one line each; a second apply changes nothing.
#[test]
fn values_the_formats_can_hold_are_escaped_and_read_back() {
    let sandbox = Sandbox::debian();
    let target = "/mnt/lab share #1\u{a0}x";
    let source = "//nas/lab share #1";
    let comment = "Ada Lovelace,Room #2,+44 20 7946 0000,ü";
    let m = sandbox.manifest(
        "m.yaml",
        &format!(
            "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - user: {{name: ada, comment: \"{comment}\", create_home: false}}\n  - mount: {{target: \"{target}\", source: \"{source}\", options: [guest], state: present}}\n"
        ),
    );
    let m = m.to_str().unwrap();
    sandbox.run(&["apply", m, "--node", "master"]).expect(0);

    let fstab = sandbox.read("/etc/fstab");
    let line = fstab
        .lines()
        .find(|l| l.starts_with("//nas/"))
        .unwrap_or_else(|| panic!("no line for the share:\n{fstab}"));
    assert_eq!(
        line,
        "//nas/lab\\040share\\040#1 /mnt/lab\\040share\\040#1\\302\\240x cifs guest,nofail,_netdev 0 0"
    );
    let tab = sandbox.path("/etc/fstab");
    let out = std::process::Command::new("findmnt")
        .args([
            "--tab-file",
            tab.to_str().unwrap(),
            "--json",
            "-o",
            "SOURCE,TARGET",
        ])
        .output()
        .expect("run findmnt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = parsed["filesystems"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["source"] == source && e["target"] == target),
        "findmnt read the fstab back as {parsed}"
    );

    let passwd = sandbox.read("/etc/passwd");
    let ada: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("ada:"))
        .unwrap_or_else(|| panic!("no ada in\n{passwd}"))
        .split(':')
        .collect();
    assert_eq!(ada.len(), 7, "{ada:?}");
    assert_eq!(ada[4], comment);

    let again = sandbox.run(&["apply", m, "--node", "master", "--detailed-exitcodes"]);
    again.expect(0);
    assert_eq!(sandbox.read("/etc/fstab"), fstab);
    assert_eq!(sandbox.read("/etc/passwd"), passwd);
}
