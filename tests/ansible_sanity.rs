//! The Ansible collection (`ansible-compat/`, `provision.fleet`) checked by Ansible's own tools,
//! from the pinned venv `.ci/run` makes: `ansible-test sanity` (every test it has for a
//! collection, each in a venv of its own with its pinned requirements from PyPI), `ansible-lint`
//! (offline), `ansible-doc` rendering both plugins' docs, and `ansible-galaxy collection build`
//! and `install` of the tarball.
//!
//! ansible-test needs the collection at `ansible_collections/provision/fleet`: it is copied there
//! in a temporary folder. Its sanity venvs live in `target/ansible-test-home` (its HOME), kept
//! between runs (a cold run installs them: minutes; a warm one about a minute). ansible-test
//! bootstraps pip in each venv with a get-pip script it downloads from a host that is not a
//! package registry and cannot be reached here; the test puts a stand-in at the path it caches
//! that script (`get_pip_24_2.py`), which bootstraps pip with Python's own ensurepip and then
//! installs the pip version ansible-test asks for from PyPI.
//!
//! Skipped (`SKIP ansible sanity: <reason>`) without the venv (`target/ansible-venv`, or
//! `$PROVISION_ANSIBLE_VENV`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netns::run_limited;

/// A cold `ansible-test sanity` (every venv installed from PyPI) on 2 busy cores.
const SANITY_LIMIT: Duration = Duration::from_secs(20 * 60);
const LIMIT: Duration = Duration::from_secs(5 * 60);

fn venv() -> PathBuf {
    common::ansible_venv()
}

fn target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The stand-in for get-pip.py (see the top of this file).
const GET_PIP: &str = r#"# Stand-in for get-pip.py, written by provision's tests/ansible_sanity.rs: ansible-test downloads
# get-pip from a host that cannot be reached here. Bootstraps pip from the wheel Python ships
# (ensurepip), then installs what get-pip was asked for (pip==X) from PyPI.
import ensurepip, subprocess, sys
ensurepip.bootstrap()
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "-q"] + args))
"#;

/// Copies the collection (without `__pycache__`) to `<dir>/ansible_collections/provision/fleet`.
fn copy_collection(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name == "__pycache__" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(&name));
            } else {
                std::fs::copy(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    let to = dir.join("ansible_collections/provision/fleet");
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("ansible-compat"),
        &to,
    );
    to
}

/// `TOOL ARGS` from the venv in `dir`, HOME `home`, collections from `collections`.
fn tool(tool: &str, args: &[&str], dir: &Path, home: &Path, collections: &Path) -> Command {
    let mut cmd = Command::new(venv().join("bin").join(tool));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env(
            "PATH",
            format!("{}:{}", venv().join("bin").display(), common::netns::PATH),
        )
        .env("HOME", home)
        .env("LC_ALL", "C.UTF-8")
        .env("NO_COLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_COLLECTIONS_PATH", collections);
    cmd
}

fn gate() -> bool {
    if !venv().join("bin/ansible-test").exists() {
        eprintln!(
            "SKIP ansible sanity: no ansible-core venv at {} (.ci/run makes it; or set PROVISION_ANSIBLE_VENV)",
            venv().display()
        );
        return false;
    }
    true
}

#[test]
fn ansible_test_sanity_passes_on_the_collection() {
    if !gate() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let collection = copy_collection(tmp.path());
    let home = target().join("ansible-test-home");
    let cache = home.join(".ansible/test/cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("get_pip_24_2.py"), GET_PIP).unwrap();
    let cmd = tool(
        "ansible-test",
        &["sanity", "--python", "3.11", "--venv", "--color", "no"],
        &collection,
        &home,
        tmp.path(),
    );
    let (code, out, err) = run_limited(cmd, "ansible-test sanity", SANITY_LIMIT);
    assert_eq!(code, 0, "ansible-test sanity:\n{out}\n{err}");
    // It ran the tests that matter for these plugins, and found nothing.
    for test in [
        "validate-modules",
        "ansible-doc",
        "pylint",
        "pep8",
        "import",
        "yamllint",
        "action-plugin-docs",
    ] {
        assert!(
            out.contains(&format!("Running sanity test \"{test}\"")),
            "{test} did not run:\n{out}"
        );
    }
    assert!(
        !out.contains("ERROR:") && !err.contains("ERROR:"),
        "{out}\n{err}"
    );
}

#[test]
fn ansible_lint_ansible_doc_and_galaxy_build_take_the_collection() {
    if !gate() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let collection = copy_collection(tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    let lint = tool(
        "ansible-lint",
        &["--offline"],
        &collection,
        &home,
        tmp.path(),
    );
    let (code, out, err) = run_limited(lint, "ansible-lint", LIMIT);
    assert_eq!(code, 0, "ansible-lint:\n{out}\n{err}");
    assert!(
        err.contains("Passed: 0 failure(s), 0 warning(s)") && err.contains("'production'"),
        "ansible-lint: {out}{err}"
    );

    // ansible-doc renders both plugins' docs: their options and examples.
    let doc = tool(
        "ansible-doc",
        &["provision.fleet.provision"],
        &collection,
        &home,
        tmp.path(),
    );
    let (code, out, err) = run_limited(doc, "ansible-doc", LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    for text in [
        "MODULE provision.fleet.provision",
        "manifest",
        "remote_dir",
        "check_mode",
        "EXAMPLES",
        "RETURN VALUES",
        "binary_copied",
    ] {
        assert!(out.contains(text), "ansible-doc lacks {text:?}:\n{out}");
    }
    let doc = tool(
        "ansible-doc",
        &["-t", "inventory", "provision.fleet.manifest"],
        &collection,
        &home,
        tmp.path(),
    );
    let (code, out, err) = run_limited(doc, "ansible-doc -t inventory", LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    for text in [
        "INVENTORY provision.fleet.manifest",
        "ansible_host",
        "PROVISION_BINARY",
        "enable_plugins",
    ] {
        assert!(out.contains(text), "ansible-doc lacks {text:?}:\n{out}");
    }

    // The collection builds into a tarball that installs (offline: it depends on nothing).
    let build = tool(
        "ansible-galaxy",
        &["collection", "build", "--output-path"],
        &collection,
        &home,
        tmp.path(),
    );
    let mut build = build;
    build.arg(tmp.path());
    let (code, out, err) = run_limited(build, "ansible-galaxy collection build", LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    let tarball = tmp.path().join("provision-fleet-0.1.0.tar.gz");
    assert!(tarball.is_file(), "{out}{err}");
    let installed = tmp.path().join("installed");
    let mut install = tool(
        "ansible-galaxy",
        &["collection", "install", "--offline", "-p"],
        tmp.path(),
        &home,
        &installed,
    );
    install.arg(&installed).arg(&tarball);
    let (code, out, err) = run_limited(install, "ansible-galaxy collection install", LIMIT);
    assert_eq!(code, 0, "{out}{err}");
    let plugins = installed.join("ansible_collections/provision/fleet/plugins");
    for p in [
        "action/provision.py",
        "modules/provision.py",
        "inventory/manifest.py",
    ] {
        assert!(plugins.join(p).is_file(), "{p} not installed: {out}");
    }
}
