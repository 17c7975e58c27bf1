//! `conda_env` through the real binary, fully offline: a local channel of small noarch packages
//! this test builds by hand (real `.tar.bz2` archives with `info/index.json`, `info/paths.json`,
//! `info/files`, a `bin/` script and a `share/` file, indexed into `noarch/repodata.json`), solved
//! and installed by rattler under a temporary root. Create, a re-apply that changes nothing and
//! reads no channel, an upgrade by a changed spec, a removal, an unsatisfiable spec and a missing
//! channel that fail with a reason and leave the old environment working, and an environment
//! owned by the manifest's user. Then the `conda:` settings: a base installation made from the
//! channel's stand-in conda and mamba, `.condarc`, named environments, an existing installation
//! adopted untouched, `from: environment.yml`, pip groups installed by a conda env's own python,
//! a real full disk, and project envs registered as kernels of a JupyterLab env (ipykernel from
//! PyPI, listed by real `jupyter kernelspec list`).

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

/// Runs node path `path` (a script or interpreter) with `args`, and returns what it prints.
fn run_at(s: &Sandbox, path: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("30")
        .arg(s.path(path))
        .args(args)
        .output()
        .expect("run it");
    assert!(
        out.status.success(),
        "{path} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const NODE: &str = "nodes:\n  - name: master\n    address: 10.0.0.1\n";

/// `conda:` settings for /opt/conda with the local channel and `base`.
fn conda_settings(base: &str) -> String {
    format!(
        "conda:\n  root: /opt/conda\n  base: {base}\n  channels: [./channel]\n  channel_priority: strict\n  auto_activate_base: false\n  envs_dirs: [/opt/conda/envs]\n  pkgs_dirs: [/opt/conda/pkgs]\n"
    )
}

#[test]
fn the_base_installation_condarc_and_named_envs_come_from_conda_settings() {
    // The base is made from the stand-in conda and mamba packages of the local channel: what
    // is not covered is conda-forge's real conda package (no network here), which runs
    // post-link steps these stand-ins do not have.
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let text = |base: &str| {
        format!(
            "{}{NODE}resources:\n  - conda_env:\n      name: tiny\n      specs: [feas-a]\n",
            conda_settings(base)
        )
    };
    let m = s.manifest("m.yaml", &text("[conda, mamba]"));
    let m = m.to_str().unwrap();

    let before = s.snapshot();
    let plan = s.run(&["plan", m, "--node", "master", "--json"]);
    plan.expect(0);
    let report = plan.json();
    assert_eq!(
        texts(&report, "conda_env:/opt/conda"),
        [
            "create conda base installation",
            "install conda package conda 24.9.2",
            "install conda package mamba 1.5.10"
        ]
    );
    assert_eq!(
        texts(&report, "conda_env:/opt/conda/envs/tiny")[0],
        "create conda environment"
    );
    assert_eq!(s.snapshot(), before, "plan wrote nothing");

    let first = s.run(&["apply", m, "--node", "master", "--json"]);
    first.expect(0);
    let report = first.json();
    let order: Vec<&str> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order[..3],
        [
            "conda_env:/opt/conda",
            "file:/opt/conda/.condarc",
            "conda_env:/opt/conda/envs/tiny"
        ],
        "the base, its .condarc, then its environments"
    );
    assert_eq!(run_at(&s, "/opt/conda/bin/conda", &[]), "conda 24.9.2");
    assert_eq!(run_at(&s, "/opt/conda/bin/mamba", &[]), "mamba 1.5.10");
    assert!(
        s.path("/opt/conda/conda-meta/provision-base").is_file(),
        "marked as made by provision"
    );
    assert_eq!(
        s.read("/opt/conda/.condarc"),
        "# Managed by provision (the manifest's conda: settings); edits here are replaced on the next apply.\n\
         channels:\n  - CHANNEL\n\
         channel_priority: strict\n\
         auto_activate_base: false\n\
         envs_dirs:\n  - /opt/conda/envs\n\
         pkgs_dirs:\n  - /opt/conda/pkgs\n"
            .replace(
                "CHANNEL",
                &format!("file://{}", s.work().join("channel").display())
            )
    );
    assert_eq!(
        run_at(&s, "/opt/conda/envs/tiny/bin/feas-a", &[]),
        "feas-a 1.0"
    );
    assert!(
        s.path("/opt/conda/pkgs/feas-a-1.0-0").is_dir(),
        "downloads go to the first pkgs_dirs"
    );

    let before = s.snapshot();
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
    assert_eq!(s.snapshot(), before, "a no-op apply writes nothing");

    // A base provision made is kept to its specs: mamba goes when the manifest drops it.
    let m = s.manifest("m.yaml", &text("[conda]"));
    let m = m.to_str().unwrap();
    let less = s.run(&["apply", m, "--node", "master", "--json"]);
    less.expect(0);
    assert_eq!(
        texts(&less.json(), "conda_env:/opt/conda"),
        ["remove conda package mamba 1.5.10"]
    );
    assert!(!s.path("/opt/conda/bin/mamba").exists());
    assert_eq!(run_at(&s, "/opt/conda/bin/conda", &[]), "conda 24.9.2");

    // A hand edit of .condarc is shown as a diff, backed up, and replaced.
    let managed = s.read("/opt/conda/.condarc");
    s.write("/opt/conda/.condarc", "channels: [defaults]\n");
    let plan = s.run(&["plan", m, "--node", "master"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("-channels: [defaults]")
            && plan.stdout.contains("+auto_activate_base: false"),
        "{}",
        plan.stdout
    );
    s.run(&["apply", m, "--node", "master"]).expect(0);
    assert_eq!(s.read("/opt/conda/.condarc"), managed);
    let backups = s.path("/var/lib/provision/backups/opt/conda");
    let saved: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(saved, ["channels: [defaults]\n"], "the hand-written file");
}

#[test]
fn an_existing_installation_is_adopted_as_it_is() {
    // An installation provision did not make: a prefix with real conda-meta records, a history
    // and bin/conda, as Miniforge leaves one (made here by a plain conda_env, which writes no
    // base marker; a real Miniforge installer cannot be fetched offline).
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let plain = s.manifest(
        "plain.yaml",
        &format!(
            "{NODE}resources:\n  - conda_env:\n      prefix: /opt/conda\n      channels: [./channel]\n      specs: [conda, feas-b]\n"
        ),
    );
    s.run(&["apply", plain.to_str().unwrap(), "--node", "master"])
        .expect(0);
    assert!(s.path("/opt/conda/conda-meta/history").is_file());
    assert!(!s.path("/opt/conda/conda-meta/provision-base").exists());
    s.write("/opt/conda/.condarc", "auto_activate_base: true\n");

    let m = s.manifest(
        "m.yaml",
        &format!("{}{NODE}resources: []\n", conda_settings("[conda, mamba]")),
    );
    let m = m.to_str().unwrap();
    let before = s.snapshot();
    let out = s.run(&["apply", m, "--node", "master", "--json"]);
    out.expect(0);
    let report = out.json();
    let base = resource(&report, "conda_env:/opt/conda");
    assert_eq!(base["changes"].as_array().unwrap().len(), 0, "{base}");
    let note = base["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("adopted") && note.contains("conda 24.9.2") && note.contains("mamba"),
        "{note}"
    );
    assert_eq!(
        texts(&report, "file:/opt/conda/.condarc")
            .iter()
            .filter(|t| t.starts_with("content"))
            .count(),
        1,
        "only .condarc changes"
    );
    let after = s.snapshot();
    let changed: Vec<&std::path::PathBuf> = after
        .keys()
        .filter(|k| before.get(*k) != after.get(*k))
        .filter(|k| !k.starts_with("var/lib/provision/backups"))
        .collect();
    assert_eq!(changed, [Path::new("opt/conda/.condarc")], "nothing else");
    assert!(
        !s.path("/opt/conda/bin/mamba").exists(),
        "nothing installed"
    );
    assert_eq!(
        run_at(&s, "/opt/conda/bin/feas-b", &[]),
        "feas-b 2.0",
        "nothing removed"
    );
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
}

#[test]
fn environment_yml_gives_the_name_channels_and_specs() {
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    s.manifest(
        "envs/analysis.yml",
        "name: analysis\nchannels:\n  - ../channel\n  - nodefaults\ndependencies:\n  - feas-a\n  - feas-b 1.*\n",
    );
    let m = s.manifest(
        "m.yaml",
        &format!(
            "conda:\n  root: /srv/conda\n{NODE}resources:\n  - conda_env:\n      from: envs/analysis.yml\n"
        ),
    );
    let m = m.to_str().unwrap();
    let out = s.run(&["apply", m, "--node", "master", "--json"]);
    out.expect(0);
    assert_eq!(
        texts(&out.json(), "conda_env:/srv/conda/envs/analysis"),
        [
            "create conda environment",
            "install conda package feas-a 1.0",
            "install conda package feas-b 1.0"
        ]
    );
    assert_eq!(
        run_at(&s, "/srv/conda/envs/analysis/bin/feas-a", &[]),
        "feas-a 1.0"
    );
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);

    // A mistake in the environment file is reported at its line and column, and nothing runs.
    let yml = s.manifest(
        "envs/analysis.yml",
        "name: analysis\nchannels: [../channel]\ndependencies:\n  - feas-a\n  - feas-b >=>1\n  - pip:\n      - -r requirements.txt\n",
    );
    let before = s.snapshot();
    let bad = s.run(&["apply", m, "--node", "master"]);
    bad.expect(1);
    let at = |line: usize, column: usize| format!("{}:{line}:{column}: ", yml.display());
    assert!(
        bad.stderr.contains(&at(5, 5)) && bad.stderr.contains("`feas-b >=>1` is not a MatchSpec"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains(&at(7, 9)) && bad.stderr.contains("pip option `-r`"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        s.snapshot(),
        before,
        "a bad environment file changes nothing"
    );
}

/// Writes `name-version-py3-none-any.whl` into `dir` (as tests/venv.rs does): a zip with a
/// dist-info folder whose RECORD has real hashes.
fn build_wheel(dir: &Path, name: &str, version: &str) {
    let script = r#"
import base64, hashlib, sys, zipfile
out, name, version = sys.argv[1:4]
dist = f"{name}-{version}.dist-info"
files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
         f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
         f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: provision-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},{len(t.encode())}" for p, t in files.items()]
files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
with zipfile.ZipFile(f"{out}/{name}-{version}-py3-none-any.whl", "w") as z:
    for p, t in files.items():
        z.writestr(p, t)
"#;
    let status = Command::new("timeout")
        .args(["60", "python3", "-c", script])
        .arg(dir)
        .args([name, version])
        .status()
        .expect("run python3");
    assert!(status.success(), "building the wheel {name} {version}");
}

#[test]
fn pip_requirements_on_a_conda_env_use_its_own_python() {
    // The channel's python is this machine's interpreter made into a venv-style conda package
    // (pyvenv.cfg and bin/python linking to it) and its pip is the interpreter's bundled pip
    // wheel (tests/fixtures/conda-channel.py): the environment's bin/python has the environment
    // as sys.prefix, so pip installs into its site-packages. Not covered: a conda-forge python
    // build (no network here).
    let s = Sandbox::debian();
    let channel = s.work().join("channel");
    build_channel(&channel);
    let repodata = std::fs::read_to_string(channel.join("noarch/repodata.json")).unwrap();
    if !repodata.contains("\"python-") {
        eprintln!(
            "SKIP pip_requirements_on_a_conda_env: no bundled pip wheel to build the channel's python and pip from"
        );
        return;
    }
    let wheels = s.path("/srv/wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    build_wheel(&wheels, "tinyapp", "1.0");
    build_wheel(&wheels, "tinyapp", "2.0");
    let env_file = |app: &str| {
        format!(
            "name: py\nchannels: [./channel]\ndependencies:\n  - python\n  - pip\n  - pip:\n      - --no-index\n      - --find-links /srv/wheels\n      - {app}\n"
        )
    };
    s.manifest("environment.yml", &env_file("tinyapp==1.0"));
    let m = s.manifest(
        "m.yaml",
        &format!("{NODE}resources:\n  - conda_env:\n      prefix: /opt/envs/py\n      from: environment.yml\n"),
    );
    let m = m.to_str().unwrap();
    const PY: &str = "conda_env:/opt/envs/py";
    let first = s.run(&["apply", m, "--node", "master", "--json"]);
    first.expect(0);
    let changes = texts(&first.json(), PY);
    assert_eq!(
        changes.last().unwrap(),
        "install pip package tinyapp==1.0",
        "{changes:?}"
    );
    let probe = "import sys, tinyapp; print(tinyapp.VERSION, sys.prefix, tinyapp.__file__)";
    let said = run_at(&s, "/opt/envs/py/bin/python", &["-c", probe]);
    let prefix = s.path("/opt/envs/py");
    assert_eq!(
        said,
        format!(
            "1.0 {} {}/lib/python{}/site-packages/tinyapp/__init__.py",
            prefix.display(),
            prefix.display(),
            run_at(
                &s,
                "/opt/envs/py/bin/python",
                &["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]
            )
        ),
        "installed by the environment's own python, into the environment"
    );
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);

    s.manifest("environment.yml", &env_file("tinyapp==2.0"));
    let up = s.run(&["apply", m, "--node", "master", "--json"]);
    up.expect(0);
    assert_eq!(
        texts(&up.json(), PY),
        ["pip package tinyapp 1.0 → tinyapp==2.0"]
    );
    assert!(run_at(&s, "/opt/envs/py/bin/python", &["-c", probe]).starts_with("2.0 "));

    // A requirement no wheel meets: pip's own output, and the environment still works.
    s.manifest("environment.yml", &env_file("tinyapp==3.0"));
    let bad = s.run(&["apply", m, "--node", "master", "--json"]);
    bad.expect(4);
    let error = resource(&bad.json(), PY)["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("pip install (tinyapp==3.0)") && error.contains("No matching distribution"),
        "{error}"
    );
    assert!(run_at(&s, "/opt/envs/py/bin/python", &["-c", probe]).starts_with("2.0 "));
}

#[test]
fn a_full_disk_says_so_and_the_next_apply_finishes() {
    // A real full filesystem: an 8 KiB tmpfs over /opt/envs, in a private mount namespace.
    let test = "a_full_disk_says_so_and_the_next_apply_finishes";
    let Some(ns) = common::Namespace::new(test) else {
        return;
    };
    let s = Sandbox::debian();
    build_channel(&s.work().join("channel"));
    let envs = s.path("/opt/envs");
    std::fs::create_dir_all(&envs).unwrap();
    ns.sh(&format!(
        "mount -t tmpfs -o size=8k tmpfs {}",
        envs.display()
    ));
    let m = s.manifest("m.yaml", &manifest(&["feas-a"], "./channel", None));
    let m = m.to_str().unwrap();
    let full = s.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    full.expect(4);
    let error = resource(&full.json(), ID)["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains("the disk is full") && error.contains("No space left on device"),
        "{error}"
    );

    // Space again (the tmpfs goes): the next apply makes the environment.
    ns.sh(&format!("umount {}", envs.display()));
    let again = s.run_in(&ns, &["apply", m, "--node", "master", "--json"], &[]);
    again.expect(0);
    assert_eq!(run_script(&s, "feas-a"), "feas-a 1.0");
}

fn pypi_reachable() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    "pypi.org:443"
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok())
}

#[test]
fn project_envs_are_kernels_of_a_conda_jupyterlab_env() {
    // The JupyterLab example's shape for real: a base, a JupyterLab env and a project env under
    // /opt/conda, ipykernel from PyPI installed by each env's own python, the project registered
    // as a kernel in the JupyterLab env and seen there by real `jupyter kernelspec list`. The
    // envs' python is the fixture's (this machine's interpreter, packaged venv-style); JupyterLab
    // itself is not installed (jupyter_client, which ipykernel brings, lists kernels). The jlab
    // env names only python: pip comes with its pip requirements, as with conda.
    let test = "project_envs_are_kernels_of_a_conda_jupyterlab_env";
    if !pypi_reachable() {
        eprintln!("SKIP {test}: pypi.org is not reachable, so ipykernel cannot be installed");
        return;
    }
    let s = Sandbox::debian();
    let channel = s.work().join("channel");
    build_channel(&channel);
    let repodata = std::fs::read_to_string(channel.join("noarch/repodata.json")).unwrap();
    if !repodata.contains("\"python-") {
        eprintln!("SKIP {test}: no bundled pip wheel to build the channel's python and pip from");
        return;
    }
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{}{NODE}resources:\n  - conda_env:\n      name: jlab\n      specs: [python]\n      pip:\n        - packages: [ipykernel]\n  - conda_env:\n      name: proj\n      specs: [python, pip]\n      pip:\n        - packages: [ipykernel]\n  - jupyter_kernel: {{name: proj, display_name: Project, env: /opt/conda/envs/proj, prefix: /opt/conda/envs/jlab}}\n",
            conda_settings("[conda]")
        ),
    );
    let m = m.to_str().unwrap();
    let first = s.run(&["apply", m, "--node", "master", "--json"]);
    first.expect(0);
    let home = s.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/conda/envs/jlab/bin/python"))
        .args(["-m", "jupyter", "kernelspec", "list", "--json"])
        .env("HOME", &home)
        .env_remove("JUPYTER_PATH")
        .env_remove("JUPYTER_DATA_DIR")
        .env_remove("JUPYTER_CONFIG_DIR")
        .output()
        .expect("run jupyter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let specs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let proj = &specs["kernelspecs"]["proj"];
    assert_eq!(
        proj["resource_dir"],
        s.path("/opt/conda/envs/jlab/share/jupyter/kernels/proj")
            .to_str()
            .unwrap(),
        "{specs:#}"
    );
    assert_eq!(proj["spec"]["display_name"], "Project");
    // The node's path of the project env's own python (the kernel is for the node, not the root),
    // with ipykernel's flag for Python 3.11 and newer.
    let minor: u32 = run_at(
        &s,
        "/opt/conda/envs/proj/bin/python",
        &["-c", "import sys; print(sys.version_info[1])"],
    )
    .parse()
    .unwrap();
    let mut argv = vec!["/opt/conda/envs/proj/bin/python"];
    if minor >= 11 {
        argv.push("-Xfrozen_modules=off");
    }
    argv.extend(["-m", "ipykernel_launcher", "-f", "{connection_file}"]);
    assert_eq!(proj["spec"]["argv"], serde_json::json!(argv), "{specs:#}");
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
}
