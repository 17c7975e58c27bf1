//! Progress of long installs through the real binary. Not on a terminal (a pipe, as in CI or the
//! agent's journal): a conda install that cannot finish yet logs "still running" lines with its
//! package counts, and draws no bar. On a terminal (a pseudo-terminal from util-linux `script`):
//! the conda install draws a bar with the packages done of the total and clears it, and a pip
//! install a spinner.
//!
//! An install is made to last, without any timing, by a package archive of the local channel that
//! is a named pipe: rattler blocks reading it until the test, having seen the progress line it
//! waits for, writes the real archive into it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Instant;

use common::Sandbox;

fn fixture(args: &[&str]) {
    let status = Command::new("timeout")
        .args(["60", "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/conda-channel.py"
        ))
        .args(args)
        .status()
        .expect("run python3");
    assert!(status.success(), "building the channel {args:?}");
}

const MANIFEST: &str = "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - conda_env:\n      prefix: /opt/envs/tiny\n      channels: [./channel]\n      specs: [feas-a]\n";

#[test]
fn a_conda_install_off_a_terminal_logs_still_running_lines_with_its_counts_and_no_bar() {
    let s = Sandbox::debian();
    let dir = s.work().join("channel");
    fixture(&[dir.to_str().unwrap()]);
    // feas-b's archive becomes a named pipe: the install waits on it.
    let archive = dir.join("noarch/feas-b-1.0-0.tar.bz2");
    let real = s.work().join("feas-b.tar.bz2");
    std::fs::rename(&archive, &real).unwrap();
    let made = Command::new("mkfifo").arg(&archive).status().unwrap();
    assert!(made.success());
    let m = s.manifest("m.yaml", MANIFEST);

    let root = s.root();
    let mut child = Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "apply",
            m.to_str().unwrap(),
            "--node",
            "master",
            "-v",
            "--root",
        ])
        .arg(&root)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env("PROVISION_PROGRESS_EVERY", "50ms")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    // Hang guard only: the binary is killed if it runs past the common limit.
    let deadline = Instant::now() + common::TIME_LIMIT;
    let progress = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            // Lines from before the transaction started have no counts yet.
            Ok(line) if line.contains("still running after") && line.contains("packages)") => {
                break line;
            }
            Ok(_) => {}
            Err(_) => {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                let _ = Command::new("timeout")
                    .args(["5", "sh", "-c", "cat \"$0\" > \"$1\""])
                    .arg(&real)
                    .arg(&archive)
                    .status();
                panic!("no progress line before the limit");
            }
        }
    };
    assert!(
        progress.contains("INFO")
            && progress
                .contains("conda_env:/opt/envs/tiny: installing 2 packages: still running after")
            && progress.contains("/2 packages)"),
        "{progress}"
    );
    // Let the install finish.
    let fed = Command::new("timeout")
        .args(["30", "sh", "-c", "cat \"$0\" > \"$1\""])
        .arg(&real)
        .arg(&archive)
        .status()
        .unwrap();
    assert!(fed.success(), "the archive was read through the pipe");
    let out = child.wait_with_output().unwrap();
    let stderr = reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("install conda package feas-b 1.0"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(s.path("/opt/envs/tiny/share/feas-b/version.txt").is_file());
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b[K") && !stderr.contains("] "),
        "no bar off a terminal: {stderr:?}"
    );
}

/// Runs `provision ARGS` on a pseudo-terminal (util-linux `script`), with `env`; returns what the
/// terminal received, or None (and says why) where `script` is missing.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)], test: &str) -> Option<String> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP {test}: util-linux `script` (for a pseudo-terminal) is not installed");
        return None;
    }
    let mut line = String::from(env!("CARGO_BIN_EXE_provision"));
    for a in args {
        line.push_str(&format!(" '{a}'"));
    }
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "script", "-qec", &line, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    Some(text)
}

#[test]
fn on_a_terminal_a_conda_install_draws_a_bar_and_clears_it() {
    let test = "on_a_terminal_a_conda_install_draws_a_bar_and_clears_it";
    let s = Sandbox::debian();
    fixture(&[s.work().join("channel").to_str().unwrap()]);
    let m = s.manifest("m.yaml", MANIFEST);
    let root = s.root();
    let Some(tty) = on_a_terminal(
        &[
            "apply",
            m.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            root.to_str().unwrap(),
        ],
        &[],
        test,
    ) else {
        return;
    };
    // A frame with the counts, drawn in place, then erased before the report line.
    let frame = tty
        .split('\r')
        .find(|f| f.starts_with('[') && f.contains("/2 packages, "))
        .unwrap_or_else(|| panic!("no bar frame: {tty:?}"));
    assert!(
        frame.contains(" s: conda_env:/opt/envs/tiny: installing"),
        "{frame:?}"
    );
    let cleared = tty.find("\r\x1b[K").expect("the bar is cleared");
    let report = tty
        .find("changed conda_env:/opt/envs/tiny")
        .expect("the report");
    assert!(cleared < report, "cleared before the report: {tty:?}");
    assert!(s.path("/opt/envs/tiny/bin/feas-a").is_file());
}

#[test]
fn on_a_terminal_a_pip_install_shows_a_spinner() {
    let test = "on_a_terminal_a_pip_install_shows_a_spinner";
    let s = Sandbox::debian();
    fixture(&[s.work().join("channel").to_str().unwrap()]);
    let examples = s.work().join("examples");
    fixture(&["--examples", examples.to_str().unwrap()]);
    let has_python = std::fs::read_dir(s.work().join("channel/noarch"))
        .unwrap()
        .any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("python-")
        });
    if !has_python {
        eprintln!("SKIP {test}: this python has no bundled pip wheel for the channel's pip");
        return;
    }
    let m = s.manifest(
        "m.yaml",
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - conda_env:\n      prefix: /opt/envs/py\n      channels: [./channel]\n      specs: [python, pip]\n      pip:\n        - packages: [\"pyfaidx>=0.8\"]\n",
    );
    let root = s.root();
    let wheels = examples.join("wheels");
    let Some(tty) = on_a_terminal(
        &[
            "apply",
            m.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            root.to_str().unwrap(),
        ],
        &[
            ("PIP_NO_INDEX", "1"),
            ("PIP_FIND_LINKS", wheels.to_str().unwrap()),
        ],
        test,
    ) else {
        return;
    };
    assert!(
        tty.contains("\r| 0 s: pip install (pyfaidx>=0.8) in /opt/envs/py"),
        "the spinner's first frame: {tty:?}"
    );
    assert!(tty.contains("install pip package pyfaidx>=0.8"), "{tty}");
}
