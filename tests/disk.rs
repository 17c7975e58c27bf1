//! Disk faults under a real apply: a root on a small tmpfs filled to the last byte, and a root
//! (or its /etc) bind-mounted read-only, each inside a private mount namespace so nothing is
//! mounted on the machine. Every write fails with an error that names the file and the cause,
//! the old files stay whole, no temporary file is left behind, and once the fault is gone the
//! next apply finishes.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{Namespace, Sandbox};

const NODES: &str =
    "nodes:\n  - name: master\n    address: 10.0.0.1\n  - name: node01\n    address: 10.0.0.11\n";

/// A config file replaced by one bigger than any space left, a new file (no backup to make
/// first, so its own write fails), the hosts block, and a new user: every kind of write (a file
/// replaced, a file made, a file edited, the account files and a home).
fn manifest() -> String {
    let big = "a".repeat(96 * 1024);
    format!(
        "{NODES}resources:\n  - file: {{path: /etc/PYME/config.yaml, content: \"{big}\\n\"}}\n  - file: {{path: /etc/PYME/extra.yaml, content: \"{big}\\n\"}}\n  - hosts: {{}}\n  - user: {{name: ada}}\n"
    )
}

/// Each resource and the files its error may name (a user's first write is one of four).
const IDS: [(&str, &[&str]); 4] = [
    ("file:/etc/PYME/config.yaml", &["/etc/PYME/config.yaml"]),
    ("file:/etc/PYME/extra.yaml", &["/etc/PYME/extra.yaml"]),
    ("hosts:/etc/hosts", &["/etc/hosts"]),
    (
        "user:ada",
        &["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"],
    ),
];

/// `path` as the namespace sees it (its mounts), from outside: through the holder's root.
fn inside(ns: &Namespace, path: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{}", ns.pid(), path.display()))
}

/// Debian's account and hosts files and an old config, written under `root`.
fn seed(root: &Path) {
    for (p, text) in [
        ("etc/passwd", common::DEBIAN_PASSWD),
        ("etc/group", common::DEBIAN_GROUP),
        ("etc/shadow", common::DEBIAN_SHADOW),
        ("etc/gshadow", common::DEBIAN_GSHADOW),
        ("etc/hosts", common::DEBIAN_HOSTS),
        ("etc/PYME/config.yaml", "old: config\n"),
    ] {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Files under `root` whose name marks them as provision's temporary files.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    common::snapshot(root)
        .into_keys()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".provision-tmp-"))
        })
        .collect()
}

/// Fails with every problem found, and with `run`'s report, unless there are none; a temporary
/// file left under `root` is one.
#[track_caller]
fn no_problems(mut problems: Vec<String>, root: &Path, run: &common::Run) {
    let temps = temp_files(root);
    if !temps.is_empty() {
        problems.push(format!("temporary files left: {temps:?}"));
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        run.stdout
    );
}

/// Checks that each of [`IDS`] failed with an error naming one of its files, and `cause`.
fn each_failed(run: &common::Run, cause: &str) -> Vec<String> {
    let report = run.json();
    let mut problems = Vec::new();
    for (id, files) in IDS {
        let r = report["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id);
        let error = r.and_then(|r| r["error"].as_str()).unwrap_or("");
        if r.is_none_or(|r| r["status"] != "failed")
            || !error.contains(cause)
            || !files
                .iter()
                .any(|f| error.contains(&format!("{f} ")) || error.contains(&format!("{f}:")))
        {
            problems.push(format!(
                "{id}: expected failed, naming one of {files:?} and `{cause}`; got {}",
                r.map_or("nothing".to_owned(), ToString::to_string)
            ));
        }
    }
    problems
}

#[test]
fn a_full_disk_fails_each_write_by_name_keeps_the_old_files_and_leaves_no_temp_file() {
    let Some(ns) = Namespace::new("a_full_disk_fails_each_write_by_name") else {
        return;
    };
    let sb = Sandbox::empty();
    ns.sh(&format!(
        "mount -t tmpfs -o size=256k tmpfs {}",
        sb.root().display()
    ));
    let root = inside(&ns, &sb.root());
    seed(&root);
    // provision's state folder exists (an earlier apply made it); then not a byte is left.
    std::fs::create_dir_all(root.join("var/lib/provision")).unwrap();
    let mut filler = std::fs::File::create(root.join("filler")).unwrap();
    let chunk = vec![0u8; 4096];
    let full = loop {
        if let Err(e) = filler.write_all(&chunk).and_then(|()| filler.sync_all()) {
            break e;
        }
    };
    assert_eq!(full.raw_os_error(), Some(nix::libc::ENOSPC), "{full}");
    drop(filler);
    let before = common::snapshot(&root);

    let m = sb.manifest("m.yaml", &manifest());
    let m = m.to_str().unwrap();
    let run = sb.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    let mut problems = each_failed(&run, "No space left on device");
    let after = common::snapshot(&root);
    for file in IDS.iter().flat_map(|(_, files)| files.iter()) {
        let key = PathBuf::from(file.trim_start_matches('/'));
        if before.get(&key) != after.get(&key) {
            problems.push(format!("{file} changed"));
        }
    }
    no_problems(problems, &root, &run);

    // Space again: the next apply finishes.
    std::fs::remove_file(root.join("filler")).unwrap();
    let again = sb.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .contains("\nada:")
    );
    assert!(temp_files(&root).is_empty());
}

#[test]
fn a_read_only_root_is_refused_clearly_and_plan_still_works() {
    let Some(ns) = Namespace::new("a_read_only_root_is_refused_clearly") else {
        return;
    };
    let sb = Sandbox::empty();
    seed(&sb.root());
    let root = sb.root();
    ns.sh(&format!(
        "mount --bind {r} {r} && mount -o remount,bind,ro {r}",
        r = root.display()
    ));
    let before = common::snapshot(&inside(&ns, &root));
    let m = sb.manifest("m.yaml", &manifest());
    let m = m.to_str().unwrap();

    let plan = sb.run_in(&ns, &["plan", m, "--node", "master"], &[]);
    assert_eq!(plan.code, 0, "{}\n{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("file:/etc/PYME/config.yaml"),
        "{}",
        plan.stdout
    );

    let run = sb.run_in(&ns, &["apply", m, "--node", "master"], &[]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output
            .contains("Read-only file system (os error 30) (the filesystem is mounted read-only)")
            && output.contains("state folder /var/lib/provision")
            && output.contains(&root.display().to_string()),
        "the error names neither the folder nor the cause:\n{output}"
    );
    assert_eq!(common::snapshot(&inside(&ns, &root)), before, "{output}");
}

#[test]
fn a_read_only_etc_fails_each_write_by_name_and_keeps_the_old_files() {
    let Some(ns) = Namespace::new("a_read_only_etc_fails_each_write_by_name") else {
        return;
    };
    let sb = Sandbox::empty();
    seed(&sb.root());
    let etc = sb.path("/etc");
    ns.sh(&format!(
        "mount --bind {e} {e} && mount -o remount,bind,ro {e}",
        e = etc.display()
    ));
    let root = inside(&ns, &sb.root());
    let before = common::snapshot(&root.join("etc"));
    let m = sb.manifest("m.yaml", &manifest());
    let m = m.to_str().unwrap();
    let run = sb.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    let mut problems = each_failed(&run, "Read-only file system");
    if common::snapshot(&root.join("etc")) != before {
        problems.push("/etc changed".to_owned());
    }
    no_problems(problems, &root, &run);

    ns.sh(&format!("umount {}", etc.display()));
    let again = sb.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
}
