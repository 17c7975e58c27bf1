//! `venv` through the real binary: a real `python3.11 -m venv` under a temporary root, real pip
//! installing wheels this test builds (offline, `--no-index --find-links`), the tree owned by the
//! manifest's user, a re-apply that changes nothing and runs no pip, an upgrade by a changed
//! specifier, and a pip failure that carries pip's output and leaves the environment working.

mod common;

use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::Sandbox;

/// Writes `name-version-py3-none-any.whl` into `dir` with Python's zipfile (a wheel is a zip
/// with a dist-info folder; RECORD carries real hashes so pip accepts it as it would any wheel).
fn build_wheel(dir: &Path, name: &str, version: &str, requires: &[&str]) {
    let script = r#"
import base64, hashlib, sys, zipfile
out, name, version, requires = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
dist = f"{name}-{version}.dist-info"
files = {
    f"{name}/__init__.py": f"VERSION = {version!r}\n",
    f"{dist}/METADATA": "Metadata-Version: 2.1\nName: %s\nVersion: %s\n%s\n" % (
        name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
    f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: provision-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
for path, text in files.items():
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{path},sha256={digest},{len(data)}")
record.append(f"{dist}/RECORD,,")
files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(f"{out}/{name}-{version}-py3-none-any.whl", "w") as z:
    for path, text in files.items():
        z.writestr(path, text)
"#;
    let status = Command::new("timeout")
        .args(["60", "python3", "-c"])
        .arg(script)
        .arg(dir)
        .args([name, version])
        .args(requires)
        .status()
        .expect("run python3");
    assert!(status.success(), "building the wheel {name} {version}");
}

/// A root with the wheels tinylib 1.0, tinyapp 1.0 and 2.0 (both need tinylib) in /srv/wheels.
fn sandbox_with_wheels() -> Sandbox {
    let s = Sandbox::debian();
    let wheels = s.path("/srv/wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    build_wheel(&wheels, "tinylib", "1.0", &[]);
    build_wheel(&wheels, "tinyapp", "1.0", &["tinylib>=1"]);
    build_wheel(&wheels, "tinyapp", "2.0", &["tinylib>=1"]);
    s
}

fn manifest(app: &str) -> String {
    format!(
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - user: {{name: pyme, system: true}}\n  - venv:\n      path: /opt/envs/tiny\n      python: python3.11\n      owner: pyme\n      pip:\n        - packages: [\"{app}\"]\n          no_index: true\n          find_links: [/srv/wheels]\n"
    )
}

/// `import NAME; print(NAME.VERSION)` with the environment's python.
fn version_in(s: &Sandbox, name: &str) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/envs/tiny/bin/python"))
        .args(["-c", &format!("import {name}; print({name}.VERSION)")])
        .output()
        .expect("run the env's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn texts(report: &serde_json::Value, id: &str) -> Vec<String> {
    report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {report}"))["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect()
}

fn python311() -> bool {
    let ok = Command::new("timeout")
        .args(["10", "python3.11", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: python3.11 is not installed");
    }
    ok
}

#[test]
fn offline_wheels_create_reapply_upgrade_and_fail_cleanly() {
    if !python311() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: giving the environment to pyme needs root");
        return;
    }
    let s = sandbox_with_wheels();
    let m = s.manifest("m.yaml", &manifest("tinyapp==1.0"));
    let m = m.to_str().unwrap();

    // Check mode writes nothing and says what it would do.
    let before = s.snapshot();
    let plan = s.run(&["plan", m, "--node", "master"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("install pip package tinyapp==1.0"),
        "{}",
        plan.stdout
    );
    assert_eq!(s.snapshot(), before, "plan wrote nothing");

    let first = s.run(&["apply", m, "--node", "master", "--json"]);
    first.expect(0);
    let report = first.json();
    let changes = texts(&report, "venv:/opt/envs/tiny");
    assert_eq!(
        changes,
        [
            "create virtual environment (python3.11)",
            "owner (none) → pyme",
            "group (none) → pyme",
            "install pip package tinyapp==1.0"
        ]
    );
    assert_eq!(version_in(&s, "tinyapp"), "1.0");
    assert_eq!(version_in(&s, "tinylib"), "1.0", "the dependency came too");
    let cfg = s.read("/opt/envs/tiny/pyvenv.cfg");
    assert!(cfg.contains("version = 3.11"), "{cfg}");

    // Every entry of the tree belongs to pyme (its uid in the root's passwd).
    let passwd = s.read("/etc/passwd");
    let uid: u32 = passwd
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
        entries > 100,
        "a whole venv, not just its folder: {entries}"
    );

    // Re-apply: nothing to do, and pip is not run (it is made unrunnable to prove it).
    let pip_dir = s.path("/opt/envs/tiny/lib/python3.11/site-packages/pip");
    let hidden = s.path("/opt/envs/tiny/lib/python3.11/pip.hidden");
    std::fs::rename(&pip_dir, &hidden).unwrap();
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
    std::fs::rename(&hidden, &pip_dir).unwrap();

    // A changed specifier upgrades.
    let m2 = s.manifest("m.yaml", &manifest("tinyapp>=2"));
    let up = s.run(&["apply", m2.to_str().unwrap(), "--node", "master", "--json"]);
    up.expect(0);
    assert_eq!(
        texts(&up.json(), "venv:/opt/envs/tiny"),
        ["pip package tinyapp 1.0 → tinyapp>=2"]
    );
    assert_eq!(version_in(&s, "tinyapp"), "2.0");

    // A package pip cannot find: the resource fails with pip's own words, the env still works.
    let m3 = s.manifest("m.yaml", &manifest("tinyapp-nowhere==9"));
    let bad = s.run(&["apply", m3.to_str().unwrap(), "--node", "master", "--json"]);
    bad.expect(4);
    let report = bad.json();
    let failed = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "venv:/opt/envs/tiny")
        .unwrap();
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("pip install (tinyapp-nowhere==9)"),
        "{error}"
    );
    assert!(
        error.contains("No matching distribution found for tinyapp-nowhere==9"),
        "pip's output is attached: {error}"
    );
    assert_eq!(version_in(&s, "tinyapp"), "2.0");
}

/// A host from the pip index URL pip would use here, for a reachability probe.
fn index_reachable() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let host = std::env::var("PIP_INDEX_URL")
        .ok()
        .and_then(|u| {
            let rest = u.split("://").nth(1)?.to_owned();
            Some(rest.split('/').next()?.to_owned())
        })
        .unwrap_or_else(|| "pypi.org".to_owned());
    let addr = if host.contains(':') {
        host.clone()
    } else {
        format!("{host}:443")
    };
    let ok = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok());
    if !ok {
        eprintln!("SKIP: the package index {host} is not reachable");
    }
    ok
}

#[test]
fn a_package_from_pypi() {
    if !python311() || !index_reachable() {
        return;
    }
    let s = Sandbox::debian();
    let m = s.manifest(
        "m.yaml",
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - venv:\n      path: /opt/envs/web\n      python: python3.11\n      pip:\n        - packages: [\"six==1.16.0\"]\n",
    );
    let m = m.to_str().unwrap();
    s.run(&["apply", m, "--node", "master"]).expect(0);
    let out = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/envs/web/bin/python"))
        .args(["-c", "import six; print(six.__version__)"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1.16.0");
    let again = s.run(&["apply", m, "--node", "master", "--json"]);
    again.expect(0);
    assert_eq!(again.json()["summary"]["changed"], 0, "{}", again.stdout);
}

/// The agent repairs a venv at once: a package removed by hand (`pip uninstall`, which takes its
/// `*.dist-info` out of site-packages) is installed again by the running agent, without waiting
/// for the periodic reconcile, and reported as drift.
#[test]
fn the_agent_reinstalls_a_package_removed_by_hand() {
    use std::time::Duration;
    if !python311() || !common::have_root("the_agent_reinstalls_a_package_removed_by_hand") {
        return;
    }
    let s = sandbox_with_wheels();
    std::fs::set_permissions(s.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = s.manifest("m.yaml", &manifest("tinyapp==1.0"));
    let mut agent = common::RunningAgent::start(&s, &m, "master", &[]);
    let limit = Duration::from_secs(120);
    agent.until("the first reconcile", limit, |a| a.status().is_some());
    let first = agent.status().unwrap();
    assert_eq!(first["last_reconcile"]["summary"]["failed"], 0, "{first}");
    assert_eq!(version_in(&s, "tinyapp"), "1.0");

    // Removed by hand, as `pip uninstall` does: the running agent puts it back.
    let uninstall = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/envs/tiny/bin/python"))
        .args(["-m", "pip", "uninstall", "-y", "-q", "tinyapp"])
        .output()
        .unwrap();
    assert!(uninstall.status.success(), "{uninstall:?}");
    agent.until("tinyapp installed again, as drift", limit, |a| {
        a.drift_for("venv:/opt/envs/tiny") == 1
    });
    assert_eq!(version_in(&s, "tinyapp"), "1.0");
    agent.stop();
}
