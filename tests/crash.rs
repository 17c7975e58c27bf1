//! Power-cut safety: an apply killed with SIGKILL at random moments leaves every managed file
//! either entirely old or entirely new, never torn, and the next apply converges.
//!
//! SIGKILL is the closest a test can get to a power cut from inside the machine: the process gets
//! no chance to clean up. It does not cover what a real power cut adds below the process (the
//! page cache lost before fsync); that part rests on the fsync-before-rename and fsync-the-
//! directory sequence in `host::atomic`, which this test cannot observe.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;

const FILES: usize = 60;
const ROUNDS: usize = 40;

fn old(i: usize) -> String {
    format!("old version of file {i}\n").repeat(2000)
}

fn new(i: usize) -> String {
    format!("NEW version of file {i}, somewhat longer than before\n").repeat(2000)
}

/// A tiny xorshift generator: random kill moments without a dependency, seeded per run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn manifest(s: &Sandbox) -> std::path::PathBuf {
    let mut text = String::from(
        "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - hosts: {loopback_hostname: static}\n  - user: {name: pyme, system: true, create_home: false}\n",
    );
    for i in 0..FILES {
        let content = s.manifest(&format!("files/{i}"), &new(i));
        let _ = content;
        text.push_str(&format!(
            "  - file: {{path: /etc/app/{i}.conf, source: files/{i}}}\n"
        ));
    }
    s.manifest("m.yaml", &text)
}

fn seed(s: &Sandbox) {
    for i in 0..FILES {
        s.write(&format!("/etc/app/{i}.conf"), &old(i));
    }
}

fn apply(s: &Sandbox, m: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_provision"))
        .args([
            "apply",
            m.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            s.root().to_str().unwrap(),
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[track_caller]
fn assert_whole(s: &Sandbox, round: usize) -> usize {
    let mut new_count = 0;
    for i in 0..FILES {
        let text = s.read(&format!("/etc/app/{i}.conf"));
        if text == new(i) {
            new_count += 1;
        } else {
            assert_eq!(
                text,
                old(i),
                "round {round}: file {i} is neither the old nor the new version"
            );
        }
    }
    let hosts = s.read("/etc/hosts");
    assert!(
        hosts == common::DEBIAN_HOSTS || hosts.contains("# END provision managed block\n"),
        "round {round}: /etc/hosts torn:\n{hosts}"
    );
    for p in ["/etc/passwd", "/etc/group"] {
        let text = s.read(p);
        assert!(
            text.ends_with('\n') && text.lines().all(|l| l.split(':').count() >= 4),
            "round {round}: {p} torn:\n{text}"
        );
    }
    new_count
}

#[test]
fn sigkill_at_random_moments_never_tears_a_file_and_the_next_apply_converges() {
    let s = Sandbox::debian();
    let m = manifest(&s);
    // Calibrate: how long does a full apply take on this machine?
    seed(&s);
    let t = Instant::now();
    assert!(apply(&s, &m).wait().unwrap().success());
    let full = t.elapsed().as_micros() as u64;
    let seed_value = std::process::id() as u64
        ^ Instant::now().elapsed().as_nanos() as u64
        ^ 0x9E37_79B9_7F4A_7C15;
    let mut rng = Rng(seed_value | 1);
    eprintln!("a full apply takes {full} µs; rng seed {seed_value}");

    let mut interrupted = 0;
    for round in 0..ROUNDS {
        let fresh = Sandbox::debian();
        let m = manifest(&fresh);
        seed(&fresh);
        let mut child = apply(&fresh, &m);
        let delay = rng.below(full + full / 4);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let done = assert_whole(&fresh, round);
        if status.code().is_none() && done < FILES {
            interrupted += 1;
        }
        // The next apply converges, and a third finds nothing to do.
        let m = m.to_str().unwrap();
        let again = fresh.run(&["apply", m, "--node", "master"]);
        again.expect(0);
        assert_eq!(
            assert_whole(&fresh, round),
            FILES,
            "round {round}: converged"
        );
        let third = fresh.run(&["apply", m, "--node", "master", "--detailed-exitcodes"]);
        third.expect(0);
        let leftovers: Vec<_> = std::fs::read_dir(fresh.path("/etc/app"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".provision-tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: temporary files left after convergence: {leftovers:?}"
        );
    }
    eprintln!("{interrupted} of {ROUNDS} rounds were killed part-way through the files");
    assert!(
        interrupted >= ROUNDS / 4,
        "too few kills landed mid-apply ({interrupted}) for the test to mean anything"
    );
}
