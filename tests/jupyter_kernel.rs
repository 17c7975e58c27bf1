//! `jupyter_kernel` through the real binary, checked by real Jupyter: a venv with ipykernel from
//! the package index (it brings jupyter_client and its `jupyter kernelspec`), kernels registered
//! in it, `jupyter kernelspec list --json` seeing them with ipykernel's argv, a kernel whose env
//! lacks ipykernel failing with the reason, and a kernel dropped from the manifest removed while a
//! hand-made kernel in the same prefix stays.

mod common;

use std::process::Command;

use common::Sandbox;

fn index_reachable() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let ok = "pypi.org:443"
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, std::time::Duration::from_secs(5)).is_ok());
    if !ok {
        eprintln!("SKIP: pypi.org is not reachable, so ipykernel cannot be installed");
    }
    ok
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

const NODES: &str = "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - venv:\n      path: /opt/envs/jlab\n      python: python3.11\n      pip:\n        - packages: [ipykernel]\n  - venv:\n      path: /opt/envs/bare\n      python: python3.11\n";

/// `jupyter kernelspec list --json` of the jlab env, with a private HOME so no user kernels leak in.
fn kernelspecs(s: &Sandbox) -> serde_json::Value {
    let home = s.tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/envs/jlab/bin/jupyter"))
        .args(["kernelspec", "list", "--json"])
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
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["kernelspecs"].clone()
}

#[test]
fn kernels_are_seen_by_jupyter_and_pruned_when_dropped() {
    if !python311() || !index_reachable() {
        return;
    }
    let s = Sandbox::debian();
    let envs = s.manifest("envs.yaml", NODES);
    s.run(&["apply", envs.to_str().unwrap(), "--node", "master"])
        .expect(0);
    // A kernel someone made by hand in the same prefix: never provision's to remove.
    s.write(
        "/opt/envs/jlab/share/jupyter/kernels/handmade/kernel.json",
        "{\"argv\": [\"/usr/bin/python3\", \"-m\", \"ipykernel_launcher\", \"-f\", \"{connection_file}\"], \"display_name\": \"Hand made\", \"language\": \"python\"}",
    );
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}  - jupyter_kernel: {{name: lab-python, display_name: Lab Python, env: /opt/envs/jlab, prefix: /opt/envs/jlab}}\n  - jupyter_kernel: {{name: bare, env: /opt/envs/bare, prefix: /opt/envs/jlab}}\n"
        ),
    );
    let first = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    first.expect(4);
    let report = first.json();
    let bare = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "jupyter_kernel:bare")
        .unwrap();
    assert_eq!(bare["status"], "failed");
    assert!(
        bare["error"]
            .as_str()
            .unwrap()
            .contains("/opt/envs/bare has no ipykernel"),
        "{bare}"
    );

    let specs = kernelspecs(&s);
    let lab = &specs["lab-python"];
    assert_eq!(
        lab["spec"]["argv"],
        serde_json::json!([
            "/opt/envs/jlab/bin/python",
            "-Xfrozen_modules=off",
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}"
        ]),
        "{specs:#}"
    );
    assert_eq!(lab["spec"]["display_name"], "Lab Python");
    assert_eq!(lab["spec"]["language"], "python");
    assert_eq!(
        lab["resource_dir"],
        s.path("/opt/envs/jlab/share/jupyter/kernels/lab-python")
            .to_str()
            .unwrap()
    );
    assert!(specs.get("bare").is_none(), "{specs:#}");

    // ipykernel itself, asked to install the same kernel, writes the same argv.
    let theirs = s.tmp.path().join("theirs");
    let status = Command::new("timeout")
        .arg("60")
        .arg(s.path("/opt/envs/jlab/bin/python"))
        .args([
            "-m",
            "ipykernel",
            "install",
            "--name",
            "lab-python",
            "--prefix",
        ])
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(status.status.success());
    let theirs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(theirs.join("share/jupyter/kernels/lab-python/kernel.json")).unwrap(),
    )
    .unwrap();
    let ours: serde_json::Value = serde_json::from_str(
        &s.read("/opt/envs/jlab/share/jupyter/kernels/lab-python/kernel.json"),
    )
    .unwrap();
    let real_python = s.path("/opt/envs/jlab/bin/python");
    let mut their_argv = theirs["argv"].clone();
    // ipykernel names the python it ran as (the real path under the test root).
    assert_eq!(their_argv[0], real_python.to_str().unwrap());
    their_argv[0] = "/opt/envs/jlab/bin/python".into();
    assert_eq!(their_argv, ours["argv"]);

    // The manifest drops lab-python and lists another kernel: lab-python goes, handmade stays.
    let m2 = s.manifest(
        "m.yaml",
        &format!(
            "{NODES}  - jupyter_kernel: {{name: lab-two, env: /opt/envs/jlab, prefix: /opt/envs/jlab}}\n"
        ),
    );
    let second = s.run(&["apply", m2.to_str().unwrap(), "--node", "master", "--json"]);
    second.expect(0);
    let changes: Vec<String> = second.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "jupyter_kernel:lab-two")
        .unwrap()["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        changes[0], "remove kernel lab-python (no longer in the manifest)",
        "{changes:?}"
    );
    let specs = kernelspecs(&s);
    assert!(specs.get("lab-python").is_none(), "{specs:#}");
    assert!(specs.get("handmade").is_some(), "{specs:#}");
    assert_eq!(specs["lab-two"]["spec"]["display_name"], "lab-two");

    let third = s.run(&["apply", m2.to_str().unwrap(), "--node", "master", "--json"]);
    third.expect(0);
    assert_eq!(third.json()["summary"]["changed"], 0, "{}", third.stdout);
}
