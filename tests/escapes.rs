//! Symlinks under the root that point out of it, placed at every step of every path provision
//! writes (each ancestor folder and the leaf), for every kind that writes one: the resource fails
//! with an error that names the link, and nothing outside the root is created or changed (a
//! sentinel folder outside the root is snapshotted before and after). Links are made both ways
//! out: absolute, and relative through `..`. provision's own state folder gets the same links.
//! `tests/resources.rs` has the one-link smoke test; this is the exhaustive sweep.

mod common;

use std::path::{Path, PathBuf};

use common::Sandbox;

/// One path a resource writes, and the resource (alone in its manifest) that writes it.
struct Target {
    /// The resource's id in the report.
    id: &'static str,
    /// The node path written.
    path: &'static str,
    /// Whether the leaf is a folder (a link there points at a folder outside).
    dir: bool,
    /// What goes under `resources:` (and `conda:` where the target is `.condarc`).
    manifest: &'static str,
}

const NODES: &str = "nodes:\n  - name: master\n    address: 10.0.0.1\n";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx5Zz2bYQ0m8Hc3W1w5xQ2V2mX4h0aXv8k8wz9bYQ0m";

fn targets() -> Vec<Target> {
    let file = "resources:\n  - file: {path: /etc/PYME/config.yaml, content: \"x\\n\"}\n";
    let mount = "resources:\n  - mount: {target: /mnt/data, source: //nas/data, state: present, credentials: {username: pyme, password_env: NAS_PASSWORD}}\n";
    let user = "resources:\n  - user: {name: ada, home: /home/ada}\n";
    let key = "resources:\n  - ssh_key: {path: /srv/keys/.ssh/id_ed25519}\n";
    let t = |id, path, dir, manifest| Target {
        id,
        path,
        dir,
        manifest,
    };
    vec![
        t(
            "file:/etc/PYME/config.yaml",
            "/etc/PYME/config.yaml",
            false,
            file,
        ),
        t(
            "file:/opt/conda/.condarc",
            "/opt/conda/.condarc",
            false,
            "conda: {root: /opt/conda, channels: [conda-forge]}\n",
        ),
        t(
            "directory:/srv/pyme/data",
            "/srv/pyme/data",
            true,
            "resources:\n  - directory: {path: /srv/pyme/data}\n",
        ),
        t(
            "hosts:/etc/hosts",
            "/etc/hosts",
            false,
            "resources:\n  - hosts: {}\n",
        ),
        t(
            "mount:/mnt/data",
            "/etc/provision/credentials/mnt-data",
            false,
            mount,
        ),
        t("mount:/mnt/data", "/etc/fstab", false, mount),
        t("user:ada", "/home/ada", true, user),
        t("user:ada", "/etc/passwd", false, user),
        t("user:ada", "/etc/shadow", false, user),
        t("user:ada", "/etc/group", false, user),
        t(
            "ssh_key:/srv/keys/.ssh/id_ed25519",
            "/srv/keys/.ssh/id_ed25519",
            false,
            key,
        ),
        t(
            "ssh_key:/srv/keys/.ssh/id_ed25519",
            "/srv/keys/.ssh/id_ed25519.pub",
            false,
            key,
        ),
        t(
            "authorized_keys:/srv/auth/.ssh/authorized_keys",
            "/srv/auth/.ssh/authorized_keys",
            false,
            "resources:\n  - authorized_keys: {path: /srv/auth/.ssh/authorized_keys, keys: [\"KEY ada@lab\"]}\n",
        ),
        t(
            "known_hosts:/etc/ssh/ssh_known_hosts",
            "/etc/ssh/ssh_known_hosts",
            false,
            "resources:\n  - known_hosts: {path: /etc/ssh/ssh_known_hosts, keys: {master: [\"KEY\"]}}\n",
        ),
        t(
            "venv:/opt/venvs/tools",
            "/opt/venvs/tools",
            true,
            "resources:\n  - venv: {path: /opt/venvs/tools}\n",
        ),
    ]
}

/// A folder outside every root: `out/` (where folder links point, holding `keep`) and `victim`
/// (where file links point).
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/keep"), "keep\n").unwrap();
        std::fs::write(dir.path().join("victim"), "victim\n").unwrap();
        Sentinel { dir }
    }

    fn path(&self, leaf_is_file: bool) -> PathBuf {
        self.dir
            .path()
            .join(if leaf_is_file { "victim" } else { "out" })
    }
}

/// `link` (a real path) made a symlink to `to`: absolute, or relative through `..` up to `/`
/// and down again.
fn make_link(link: &Path, to: &Path, relative: bool) {
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if meta.is_dir() {
            std::fs::remove_dir_all(link).unwrap();
        } else {
            std::fs::remove_file(link).unwrap();
        }
    }
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let target = if relative {
        let depth = link.parent().unwrap().components().count() - 1;
        let mut t = PathBuf::from("../".repeat(depth));
        t.push(to.strip_prefix("/").unwrap());
        t
    } else {
        to.to_owned()
    };
    std::os::unix::fs::symlink(&target, link).unwrap();
    assert_eq!(
        std::fs::canonicalize(link).unwrap(),
        std::fs::canonicalize(to).unwrap(),
        "the test's link {} does not lead to {}",
        link.display(),
        to.display()
    );
}

/// Every step of a node path: `/a`, `/a/b`, `/a/b/c`.
fn steps(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    (1..=parts.len())
        .map(|n| format!("/{}", parts[..n].join("/")))
        .collect()
}

fn apply(sb: &Sandbox, manifest: &Path) -> common::Run {
    let root = sb.root();
    common::run_with_env(
        &[
            "apply",
            manifest.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            root.to_str().unwrap(),
            "--json",
        ],
        &[("NAS_PASSWORD", "pw-for-the-test")],
    )
}

#[test]
fn a_link_out_of_the_root_at_any_step_of_any_written_path_fails_that_resource() {
    let mut problems = Vec::new();
    let mut runs = 0;
    for target in targets() {
        let manifest = format!("{NODES}{}", target.manifest.replace("KEY", KEY));
        // Without links the resource applies: whatever fails below fails for the link.
        let sb = Sandbox::debian();
        let m = sb.manifest("m.yaml", &manifest);
        let clean = apply(&sb, &m);
        assert_eq!(
            clean.code, 0,
            "{} without links:\n{}\n{}",
            target.id, clean.stdout, clean.stderr
        );
        let all = steps(target.path);
        for (i, step) in all.iter().enumerate() {
            let leaf = i + 1 == all.len();
            for relative in [false, true] {
                runs += 1;
                let sb = Sandbox::debian();
                let m = sb.manifest("m.yaml", &manifest);
                let sentinel = Sentinel::new();
                let link = sb.path(step);
                make_link(&link, &sentinel.path(leaf && !target.dir), relative);
                let outside_before = common::snapshot(sentinel.dir.path());
                let run = apply(&sb, &m);
                let how = format!(
                    "{} with {} a {} link to outside the root",
                    target.path,
                    step,
                    if relative { "relative" } else { "absolute" }
                );
                if common::snapshot(sentinel.dir.path()) != outside_before {
                    problems.push(format!("{how}: the folder outside the root changed"));
                }
                if run.code != 4 {
                    problems.push(format!(
                        "{how}: exit code {}, expected 4\n{}{}",
                        run.code, run.stdout, run.stderr
                    ));
                    continue;
                }
                let report = run.json();
                let Some(r) = report["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["id"] == target.id)
                else {
                    problems.push(format!("{how}: no {} in the report", target.id));
                    continue;
                };
                let error = r["error"].as_str().unwrap_or("");
                let named = link.display().to_string();
                if r["status"] != "failed"
                    || !error.contains("outside the root")
                    || !error.contains(&format!("symlink {named} "))
                {
                    problems.push(format!(
                        "{how}: {} is {} with error {error:?}; expected failed, naming the link {named}",
                        target.id, r["status"]
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {runs} runs went wrong:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_link_out_of_the_root_in_provisions_own_state_folder_writes_nothing_outside() {
    let mut problems = Vec::new();
    for step in steps("/var/lib/provision/backups") {
        for relative in [false, true] {
            let sb = Sandbox::debian();
            sb.write("/etc/PYME/config.yaml", "old\n");
            let m = sb.manifest(
                "m.yaml",
                &format!("{NODES}resources:\n  - file: {{path: /etc/PYME/config.yaml, content: \"new\\n\"}}\n"),
            );
            let sentinel = Sentinel::new();
            let link = sb.path(&step);
            make_link(&link, &sentinel.path(false), relative);
            let outside_before = common::snapshot(sentinel.dir.path());
            let run = apply(&sb, &m);
            let how = format!(
                "an {} link at {step}",
                if relative { "relative" } else { "absolute" }
            );
            if common::snapshot(sentinel.dir.path()) != outside_before {
                problems.push(format!("{how}: the folder outside the root changed"));
            }
            let output = format!("{}{}", run.stdout, run.stderr);
            if run.code == 0
                || !output.contains("outside the root")
                || !output.contains(&link.display().to_string())
            {
                problems.push(format!(
                    "{how}: exit code {}, expected a failure naming the link:\n{output}",
                    run.code
                ));
            }
            // The managed file is not changed without its backup.
            if sb.read("/etc/PYME/config.yaml") != "old\n" {
                problems.push(format!("{how}: the file changed without a backup"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
