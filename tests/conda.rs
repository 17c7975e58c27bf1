//! `conda_env` through the real binary, fully offline: a local channel of small noarch packages
//! this test builds by hand (real `.tar.bz2` archives with `info/index.json`, `info/paths.json`,
//! `info/files`, a `bin/` script and a `share/` file, indexed into `noarch/repodata.json`), solved
//! and installed by rattler under a temporary root. Create, a re-apply that changes nothing and
//! reads no channel, an upgrade by a changed spec, a removal, an unsatisfiable spec and a missing
//! channel that fail with a reason and leave the old environment working, and an environment
//! owned by the manifest's user.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::Sandbox;

/// Builds the channel `dir` with `tests/fixtures/conda-channel.py`: feas-a 1.0 (needs
/// feas-b >=1,<2), feas-b 1.0 and feas-b 2.0. Each package's `bin/<name>` prints `<name> <version>`.
pub fn build_channel(dir: &Path) {
    let status = Command::new("timeout")
        .args(["60", "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/conda-channel.py"
        ))
        .arg(dir)
        .status()
        .expect("run python3");
    assert!(status.success(), "building the channel");
}

fn manifest(specs: &[&str], channel: &str, owner: Option<&str>) -> String {
    let specs: Vec<String> = specs.iter().map(|s| format!("\"{s}\"")).collect();
    let (user, owner) = match owner {
        Some(o) => (
            format!("  - user: {{name: {o}, system: true}}\n"),
            format!("      owner: {o}\n"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n{user}  - conda_env:\n      prefix: /opt/envs/tiny\n      channels: [{channel}]\n      specs: [{}]\n{owner}",
        specs.join(", ")
    )
}

/// Runs the environment's `bin/<name>` script and returns what it prints.
fn run_script(s: &Sandbox, name: &str) -> String {
    let out = Command::new("timeout")
        .arg("10")
        .arg(s.path(&format!("/opt/envs/tiny/bin/{name}")))
        .output()
        .expect("run the script");
    assert!(out.status.success(), "bin/{name} runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn resource<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {report}"))
}

fn texts(report: &serde_json::Value, id: &str) -> Vec<String> {
    resource(report, id)["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect()
}

const ID: &str = "conda_env:/opt/envs/tiny";

#[test]
fn local_channel_create_reapply_upgrade_remove_and_fail_cleanly() {
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let apply = |specs: &[&str], channel: &str| {
        let m = s.manifest("m.yaml", &manifest(specs, channel, None));
        s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"])
    };

    // Check mode solves, says what it would install, and writes nothing.
    let m = s.manifest("m.yaml", &manifest(&["feas-a"], "./channel", None));
    let before = s.snapshot();
    let plan = s.run(&["plan", m.to_str().unwrap(), "--node", "master"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("install conda package feas-a 1.0")
            && plan.stdout.contains("install conda package feas-b 1.0"),
        "{}",
        plan.stdout
    );
    assert_eq!(s.snapshot(), before, "plan wrote nothing");

    // Create: feas-a brings feas-b 1.0 (not 2.0, which feas-a does not allow).
    let first = apply(&["feas-a"], "./channel");
    first.expect(0);
    assert_eq!(
        texts(&first.json(), ID),
        [
            "create conda environment",
            "install conda package feas-a 1.0",
            "install conda package feas-b 1.0"
        ]
    );
    assert_eq!(run_script(&s, "feas-a"), "feas-a 1.0");
    assert_eq!(s.read("/opt/envs/tiny/share/feas-b/version.txt"), "1.0\n");
    assert!(
        s.path("/opt/envs/tiny/conda-meta/feas-a-1.0-0.json")
            .is_file()
    );
    assert!(
        s.path("/var/lib/provision/conda-pkgs/feas-b-1.0-0")
            .is_dir(),
        "the package cache is under the root"
    );

    // Re-apply: nothing to do, decided from conda-meta alone; the channel is gone to prove it.
    let channel = s.work().join("channel");
    let hidden = s.work().join("channel.hidden");
    std::fs::rename(&channel, &hidden).unwrap();
    let before = s.snapshot();
    let again = apply(&["feas-a"], "./channel");
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
    assert_eq!(s.snapshot(), before, "a no-op apply writes nothing");

    // A spec change with the channel unreadable fails cleanly and changes nothing.
    let gone = apply(&["feas-b >=2"], "./channel");
    gone.expect(4);
    let error = resource(&gone.json(), ID)["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("cannot read the channels"), "{error}");
    assert_eq!(s.snapshot(), before, "a failed solve writes nothing");
    std::fs::rename(&hidden, &channel).unwrap();

    // The spec list is the whole env: feas-b moves to 2.0 and feas-a, no longer listed, goes.
    let up = apply(&["feas-b >=2"], "./channel");
    up.expect(0);
    assert_eq!(
        texts(&up.json(), ID),
        [
            "conda package feas-b 1.0 → 2.0",
            "remove conda package feas-a 1.0"
        ]
    );
    assert_eq!(run_script(&s, "feas-b"), "feas-b 2.0");
    assert!(!s.path("/opt/envs/tiny/bin/feas-a").exists());
    assert!(
        !s.path("/opt/envs/tiny/conda-meta/feas-a-1.0-0.json")
            .exists()
    );

    // Unsatisfiable (feas-a needs feas-b <2): rattler's reason, and the env still works.
    let before = s.snapshot();
    let bad = apply(&["feas-a", "feas-b >=2"], "./channel");
    bad.expect(4);
    let error = resource(&bad.json(), ID)["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("cannot be met"), "{error}");
    assert!(
        error.contains("feas-b >=1,<2"),
        "rattler's explanation: {error}"
    );
    assert_eq!(s.snapshot(), before, "the old env is untouched");
    assert_eq!(run_script(&s, "feas-b"), "feas-b 2.0");
}

#[test]
fn an_env_owned_by_the_named_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: giving the environment to pyme needs root");
        return;
    }
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let m = s.manifest("m.yaml", &manifest(&["feas-a"], "./channel", Some("pyme")));
    let m = m.to_str().unwrap();
    let first = s.run(&["apply", m, "--node", "master", "--json"]);
    first.expect(0);
    let changes = texts(&first.json(), ID);
    assert_eq!(
        changes[1..3],
        ["owner (none) → pyme", "group (none) → pyme"]
    );
    let uid: u32 = s
        .read("/etc/passwd")
        .lines()
        .find(|l| l.starts_with("pyme:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|u| u.parse().ok())
        .expect("pyme in passwd");
    let mut stack = vec![s.path("/opt/envs/tiny")];
    let mut entries = 0;
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(meta.uid(), uid, "{} belongs to pyme", p.display());
        entries += 1;
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(
        entries >= 8,
        "the whole tree, not just its folder: {entries}"
    );
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
}

#[test]
fn packages_that_need_the_systems_virtual_packages_solve_against_this_machine() {
    // feas-sys needs __glibc >=2.17 and __unix, as conda-forge's python does: no channel holds
    // them, so they must come from this machine (rattler_virtual_packages). feas-future needs a
    // glibc no machine has, and must fail with the solver's reason naming it.
    let glibc = Command::new("ldd").arg("--version").output();
    if !glibc.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("GLIBC")) {
        eprintln!("SKIP packages_that_need_the_systems_virtual_packages: not a glibc system");
        return;
    }
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let m = s.manifest("m.yaml", &manifest(&["feas-sys"], "./channel", None));
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    out.expect(0);
    assert_eq!(
        texts(&out.json(), ID),
        [
            "create conda environment",
            "install conda package feas-sys 1.0"
        ]
    );
    assert_eq!(run_script(&s, "feas-sys"), "feas-sys 1.0");
    // In sync from conda-meta alone, although its dependencies are in no record.
    let again = s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--detailed-exitcodes",
    ]);
    again.expect(0);

    let m = s.manifest("m.yaml", &manifest(&["feas-future"], "./channel", None));
    let before = s.snapshot();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master"]);
    out.expect(4);
    assert!(
        out.stdout.contains("cannot be met") && out.stdout.contains("__glibc"),
        "{}",
        out.stdout
    );
    assert_eq!(s.snapshot(), before, "a failed solve writes nothing");
    assert_eq!(run_script(&s, "feas-sys"), "feas-sys 1.0");
}
