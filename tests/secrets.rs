//! Secrets never leave the places they must live. One manifest holds a CIFS password from a file,
//! another from an environment variable, a `sensitive: true` file, an ssh_key whose private
//! key provision makes, and a Jupyter server's password (from a file; only its argon2 hash may be
//! written, in the server's config, and the hash itself nowhere else) with its token file; the secrets change between runs so every diff, backup and report has an
//! old and a new value to leak. Every output channel of apply (stdout and stderr at -vvv, the
//! `--json` report, `plan --diff`) and of an agent (its log at -vvv, `/status` and `/metrics`,
//! the hand-off request and result of an `apply` handed to it), and every file under the root
//! but the credentials files, the sensitive file and the private key, is searched for each
//! secret; a find fails the test with the secret's name and where it was found.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RunningAgent, Sandbox};

/// The files where a secret must live.
const HOMES: [&str; 5] = [
    "/etc/provision/credentials/mnt-a",
    "/etc/provision/credentials/mnt-b",
    "/etc/app/token",
    "/root/.ssh/id_ed25519",
    JUPYTER_TOKEN,
];

/// The Jupyter server's config: the one place its password's hash may be.
const JUPYTER_CONFIG: &str = "/etc/jupyter/jupyter_server_config.json";
const JUPYTER_TOKEN: &str = "/etc/jupyter/token";

/// One version of the secrets.
struct Version {
    file_password: &'static str,
    env_password: &'static str,
    token: &'static str,
    jupyter_password: &'static str,
}

const V1: Version = Version {
    file_password: "filepw-Zq81Lx",
    env_password: "envpw-Kd72Wm",
    token: "token-Pr55Vn",
    jupyter_password: "jupyterpw-Ge61Rb",
};
const V2: Version = Version {
    file_password: "filepw-Yt44Qa",
    env_password: "envpw-Hb09Ce",
    token: "token-Js63Ud",
    jupyter_password: "jupyterpw-Lq02Xs",
};
/// What the manifest handed to the agent holds (the agent keeps V2's environment).
const V3: Version = Version {
    file_password: "filepw-Ma27Go",
    env_password: "envpw-Hb09Ce",
    token: "token-Wf38Ik",
    jupyter_password: "jupyterpw-Tn84Dv",
};

/// Writes the password file and the manifest for `v`; returns the manifest's path.
fn manifest(sb: &Sandbox, name: &str, v: &Version) -> PathBuf {
    std::fs::write(sb.work().join("nas.pass"), format!("{}\n", v.file_password)).unwrap();
    std::fs::write(
        sb.work().join("jupyter.pass"),
        format!("{}\n", v.jupyter_password),
    )
    .unwrap();
    sb.manifest(
        name,
        &format!(
            "nodes:\n  - name: master\n    address: 10.0.0.1\nresources:\n  - mount: {{target: /mnt/a, source: //nas/a, state: present, credentials: {{username: pyme, password_file: nas.pass}}}}\n  - mount: {{target: /mnt/b, source: //nas/b, state: present, credentials: {{username: pyme, password_env: NAS_PASSWORD}}}}\n  - file: {{path: /etc/app/token, content: \"{}\\n\", mode: \"0600\", sensitive: true}}\n  - ssh_key: {{path: /root/.ssh/id_ed25519}}\n  - file: {{path: /etc/app/plain.conf, content: \"version {name}\\n\"}}\n  - jupyter_server: {{path: {JUPYTER_CONFIG}, user: root, password_file: jupyter.pass, token_file: {JUPYTER_TOKEN}}}\n",
            v.token
        ),
    )
}

/// Everything searched: (where, text).
#[derive(Default)]
struct Channels(Vec<(String, String)>);

impl Channels {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    fn run(&mut self, what: &str, run: &common::Run) {
        self.add(format!("{what}: stdout"), run.stdout.clone());
        self.add(format!("{what}: stderr"), run.stderr.clone());
    }

    /// Every file under `root` but the secrets' homes, by content and by name.
    fn files(&mut self, what: &str, root: &Path) {
        for rel in common::snapshot(root).into_keys() {
            let path = root.join(&rel);
            let node = format!("/{}", rel.display());
            self.add(format!("{what}: the name {node}"), node.clone());
            if HOMES.contains(&node.as_str()) || !path.is_file() || path.is_symlink() {
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            self.add(format!("{what}: the file {node}"), text);
        }
    }
}

fn apply(sb: &Sandbox, m: &Path, env_password: &str, extra: &[&str]) -> common::Run {
    let root = sb.root();
    let mut args = vec![
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    common::run_with_env(
        &args,
        &[
            ("NAS_PASSWORD", env_password),
            ("PROVISION_STATUS_LISTEN", "127.0.0.1:0"),
        ],
    )
}

/// The Jupyter password's hash in the server's config (the part after `argon2:`, which holds the
/// salt and the digest).
fn jupyter_hash(sb: &Sandbox) -> String {
    let config: serde_json::Value = serde_json::from_str(&sb.read(JUPYTER_CONFIG)).unwrap();
    let hash = config["PasswordIdentityProvider"]["hashed_password"]
        .as_str()
        .unwrap();
    assert!(hash.starts_with("argon2:$argon2id$"), "{config}");
    hash["argon2:".len()..].to_owned()
}

/// The base64 lines of the private key's body: any one of them found is a leak.
fn key_lines(sb: &Sandbox) -> Vec<String> {
    let key = sb.read("/root/.ssh/id_ed25519");
    assert!(
        key.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"),
        "{key}"
    );
    key.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_secret_reaches_any_output_report_backup_state_file_or_the_agents_api() {
    if !common::have_root("no_secret_reaches_any_output") {
        return;
    }
    let sb = Sandbox::debian();
    let mut seen = Channels::default();

    // Apply: a first run, then every secret changed (diffs, backups and reports have two sides).
    let m1 = manifest(&sb, "v1.yaml", &V1);
    seen.run(
        "plan --diff (v1)",
        &apply(&sb, &m1, V1.env_password, &["--check", "--diff"]),
    );
    let first = apply(&sb, &m1, V1.env_password, &["-vvv", "--diff"]);
    first.expect(0);
    seen.run("apply -vvv --diff (v1)", &first);
    let mut hashes = vec![("v1", jupyter_hash(&sb))];
    seen.run(
        "apply --json (v1)",
        &apply(&sb, &m1, V1.env_password, &["--json"]),
    );
    let m2 = manifest(&sb, "v2.yaml", &V2);
    let plan = common::run_with_env(
        &[
            "plan",
            m2.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            sb.root().to_str().unwrap(),
        ],
        &[("NAS_PASSWORD", V2.env_password)],
    );
    assert!(plan.stdout.contains("<redacted>"), "{}", plan.stdout);
    seen.run("plan --diff (v2)", &plan);
    let second = apply(&sb, &m2, V2.env_password, &["-vvv", "--diff", "--json"]);
    second.expect(0);
    seen.run("apply -vvv --diff --json (v2)", &second);
    hashes.push(("v2", jupyter_hash(&sb)));
    assert_ne!(hashes[0].1, hashes[1].1, "a new password, a new hash");
    assert!(
        second.json()["summary"]["changed"].as_u64() >= Some(3),
        "the secrets did not change: {}",
        second.stdout
    );
    // Each secret really is where it must live: the search below looks for the right strings.
    assert!(sb.read("/etc/app/token").contains(V2.token));
    assert!(
        sb.read("/etc/provision/credentials/mnt-a")
            .contains(V2.file_password)
    );
    assert!(
        sb.read("/etc/provision/credentials/mnt-b")
            .contains(V2.env_password)
    );
    seen.files("after apply", &sb.root());

    // An agent at -vvv, and an apply (v3) handed to it.
    let root = sb.root();
    let env = format!("NAS_PASSWORD={}", V2.env_password);
    let mut agent = RunningAgent::start_args(
        &sb,
        &[
            "agent",
            m2.to_str().unwrap(),
            "--node",
            "master",
            "--root",
            root.to_str().unwrap(),
            "--reconcile-interval",
            "1h",
            "-vvv",
        ],
        &["env", &env],
    );
    agent.until("the first reconcile", Duration::from_secs(30), |a| {
        a.status().is_some()
    });
    for path in ["/status", "/metrics", "/health"] {
        let answer = agent.get(path).expect("the status API answers");
        seen.add(format!("agent {path} (v2)"), answer);
    }
    let m3 = manifest(&sb, "v3.yaml", &V3);
    let handed = apply(
        &sb,
        &m3,
        V3.env_password,
        &["--agent-timeout", "30s", "-vvv"],
    );
    handed.expect(0);
    assert!(
        handed.stdout.contains("agent"),
        "the apply was not handed to the agent:\n{}",
        handed.stdout
    );
    seen.run("apply handed to the agent (v3)", &handed);
    let state = sb.path("/var/lib/provision");
    for name in ["apply.request", "apply.result"] {
        if let Ok(text) = std::fs::read_to_string(state.join(name)) {
            seen.add(format!("hand-off file {name}"), text);
        }
    }
    assert!(
        std::fs::read_to_string(state.join("apply.result")).is_ok(),
        "the agent wrote no apply.result"
    );
    assert!(sb.read("/etc/app/token").contains(V3.token));
    hashes.push(("v3", jupyter_hash(&sb)));
    for path in ["/status", "/metrics"] {
        let answer = agent.get(path).expect("the status API answers");
        seen.add(format!("agent {path} (v3)"), answer);
    }
    seen.files("with the agent running", &sb.root());
    agent.stop();
    // The whole log, its last lines (the stop) too: `RunningAgent` keeps it in the sandbox.
    let log = std::fs::read_to_string(sb.tmp.path().join("agent.log")).unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("TRACE"),
        "not a -vvv log:\n{log}"
    );
    seen.add("the agent's log (-vvv)", log);
    seen.files("after the agent", &sb.root());

    let mut secrets: Vec<(String, String)> = Vec::new();
    for (n, v) in [("v1", &V1), ("v2", &V2), ("v3", &V3)] {
        secrets.push((
            format!("the {n} CIFS password from a file"),
            v.file_password.into(),
        ));
        secrets.push((
            format!("the {n} CIFS password from the environment"),
            v.env_password.into(),
        ));
        secrets.push((format!("the {n} sensitive file's content"), v.token.into()));
    }
    for (i, line) in key_lines(&sb).into_iter().enumerate() {
        secrets.push((format!("line {} of the private key", i + 1), line));
    }
    let token = sb.read(JUPYTER_TOKEN);
    assert_eq!(token.len(), 64, "{token:?}");
    secrets.push(("the Jupyter token".into(), token));
    for (n, v) in [("v1", &V1), ("v2", &V2), ("v3", &V3)] {
        secrets.push((
            format!("the {n} Jupyter password"),
            v.jupyter_password.into(),
        ));
    }
    let mut found = Vec::new();
    for (what, text) in &seen.0 {
        for (name, secret) in &secrets {
            if text.contains(secret.as_str()) {
                found.push(format!("{name} is in {what}"));
            }
        }
        // The hash lives in the config alone (the current one; older ones nowhere at all).
        for (n, hash) in &hashes {
            if text.contains(hash.as_str())
                && !what.ends_with(&format!("the file {JUPYTER_CONFIG}"))
            {
                found.push(format!("the {n} Jupyter password hash is in {what}"));
            }
        }
    }
    assert!(
        seen.0.len() > 40,
        "only {} channels were searched",
        seen.0.len()
    );
    assert!(
        seen.0.iter().any(
            |(what, text)| what.ends_with(&format!("the file {JUPYTER_CONFIG}"))
                && text.contains(hashes[2].1.as_str())
        ),
        "the search sees the current hash where it lives"
    );
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}
