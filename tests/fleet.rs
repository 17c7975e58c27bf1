//! The fleet: HTTPS through provision's one client (probes), signed bundles pulled by agents over
//! real TLS, and `provision status --cluster`. Every server here is real: `tls_server.py`
//! (python's http.server in TLS) with a CA and certificate `openssl` makes for the test.

mod common;

use std::time::Duration;

use common::tls::{Pki, TlsServer};
use common::{RunningAgent, Sandbox, run};
use provision::supervisor::Check;

/// How long a wait may take before the test fails: generous, as the machine may be loaded (these
/// are limits, not timings).
const LIMIT: Duration = Duration::from_secs(120);

/// The tests that run agents against the TLS server run one at a time: a hundred agents' TLS
/// handshakes with python's server are enough load on two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn https_probes_check_the_certificate_and_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::new(&tmp.path().join("pki"), "https_probes") else {
        return;
    };
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("health"), "{\"ready\": true}\n").unwrap();
    let server = TlsServer::start(&pki, &site);
    let probe = |url: String, body: Option<&str>| Check::Http {
        url,
        status: 200,
        body_contains: body.map(str::to_owned),
        token_file: None,
    };
    let t = Duration::from_secs(5);
    // Before the test's CA is trusted, the certificate is refused, and the error says why.
    let err = probe(server.url("/health"), None).run(t, 0).unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    provision::http::set_ca_file(&pki.ca()).unwrap();
    assert_eq!(
        probe(server.url("/health"), Some("\"ready\": true")).run(t, 0),
        Ok(())
    );
    let err = probe(server.url("/health"), Some("nope"))
        .run(t, 0)
        .unwrap_err();
    assert!(err.contains("does not contain \"nope\""), "{err}");
    let err = probe(server.url("/missing"), None).run(t, 0).unwrap_err();
    assert!(err.contains("status 404, expected 200"), "{err}");
    // A probe follows no redirect: the 302 is its answer.
    let err = probe(server.url("/bad/redirect-https"), None)
        .run(t, 0)
        .unwrap_err();
    assert!(err.contains("status 302"), "{err}");
}

/// A bundle server and the signing key: `publish` makes a bundle of a manifest folder with the
/// real `provision bundle` and puts it where the server serves it.
struct Fleet {
    tmp: tempfile::TempDir,
    pki: Pki,
    server: TlsServer,
}

impl Fleet {
    fn new(test: &str) -> Option<Fleet> {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new(&tmp.path().join("pki"), test)?;
        std::fs::create_dir_all(tmp.path().join("site")).unwrap();
        run(&["bundle", "keygen", tmp.path().join("key").to_str().unwrap()]).expect(0);
        run(&[
            "bundle",
            "keygen",
            tmp.path().join("other").to_str().unwrap(),
        ])
        .expect(0);
        let server = TlsServer::start(&pki, &tmp.path().join("site"));
        Some(Fleet { tmp, pki, server })
    }

    fn path(&self, name: &str) -> String {
        self.tmp.path().join(name).to_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        self.server.url("/cluster.bundle")
    }

    /// Writes the manifest folder `src/` (each (name, text)), bundles it signed with `key`
    /// into `site/NAME`; returns the bundle's hash.
    fn bundle(&self, files: &[(&str, &str)], key: &str, name: &str) -> String {
        let src = self.tmp.path().join("src");
        let _ = std::fs::remove_dir_all(&src);
        for (file, text) in files {
            let p = src.join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        // Written beside, then renamed: the server never serves half a bundle.
        let out = self.path(&format!("site/.{name}.new"));
        let made = run(&[
            "bundle",
            src.to_str().unwrap(),
            "-o",
            &out,
            "--key",
            &self.path(key),
        ]);
        made.expect(0);
        std::fs::rename(&out, self.path(&format!("site/{name}"))).unwrap();
        made.stdout
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap()
            .trim_end_matches(',')
            .to_owned()
    }

    fn publish(&self, version: &str) -> String {
        self.bundle(&as_refs(&manifest(version)), "key", "cluster.bundle")
    }

    /// The common flags of `agent URL` and `apply URL`.
    fn pull_flags(&self) -> Vec<String> {
        vec![
            "--bundle-key".into(),
            self.path("key.pub"),
            "--ca-file".into(),
            self.pki.ca().to_str().unwrap().to_owned(),
        ]
    }

    fn agent(&self, sb: &Sandbox, node: &str, listen: &str, poll: &str) -> RunningAgent {
        let url = self.url();
        let root = sb.root();
        let mut args: Vec<String> = vec![
            "agent".into(),
            url,
            "--node".into(),
            node.into(),
            "--root".into(),
            root.to_str().unwrap().into(),
            "--reconcile-interval".into(),
            "1h".into(),
            "--poll-interval".into(),
            poll.into(),
            "--status-listen".into(),
            listen.into(),
            // A loaded machine must not make the first fetch fail; bad servers are tested apart.
            "--fetch-timeout".into(),
            "5m".into(),
        ];
        args.extend(self.pull_flags());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RunningAgent::start_args(sb, &args, &[])
    }
}

/// The test manifest, version `version`: a templated file, a copied file and an include.
fn manifest(version: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "cluster.yaml",
            "include: [nodes.yaml]\nresources:\n  - file: {path: /etc/motd, template: templates/motd.tera}\n  - file: {path: /etc/fleet/version, source: files/version}\n".to_owned(),
        ),
        ("nodes.yaml", nodes_yaml(3, "10.0.0")),
        ("templates/motd.tera", format!("{version} on {{{{ node.name }}}}\n")),
        ("files/version", format!("{version}\n")),
    ]
}

/// `nodes:` n1..nN at PREFIX.1..PREFIX.N.
fn nodes_yaml(n: usize, prefix: &str) -> String {
    let mut s = String::from("nodes:\n");
    for i in 1..=n {
        s.push_str(&format!("  - {{name: n{i}, address: {prefix}.{i}}}\n"));
    }
    s
}

fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(a, b)| (*a, b.as_str())).collect()
}

#[test]
fn agents_pull_converge_follow_keep_the_last_good_bundle_and_start_from_the_cache() {
    let _serial = serial();
    let Some(fleet) = Fleet::new("agents_pull") else {
        return;
    };
    let sb = Sandbox::empty();
    let v1 = fleet.publish("v1");
    let mut agent = fleet.agent(&sb, "n2", "127.0.0.1:0", "200ms");
    agent.until("v1 converged", LIMIT, |a| {
        a.status().is_some_and(|s| s["manifest"]["hash"] == v1)
    });
    assert_eq!(sb.read("/etc/motd"), "v1 on n2\n");
    assert_eq!(sb.read("/etc/fleet/version"), "v1\n");
    let s = agent.status().unwrap();
    assert_eq!(s["generation"], 1, "{s}");
    assert_eq!(s["manifest"]["source"], "url");
    assert_eq!(s["manifest"]["url"], fleet.url());
    assert_eq!(s["manifest"]["from_cache"], false);
    // Unchanged, it costs a request answered 304 (the agent sends the ETag it has).
    agent.until("a 304", LIMIT, |_| {
        fleet
            .server
            .log()
            .contains("GET /cluster.bundle 304 inm=\"")
    });
    agent.until("a check recorded", LIMIT, |a| {
        a.status()
            .is_some_and(|s| s["pull"]["last_result"] == "not modified")
    });

    // A new bundle is followed.
    let v2 = fleet.publish("v2");
    agent.until("v2 converged", LIMIT, |a| {
        a.status()
            .is_some_and(|s| s["manifest"]["hash"] == v2 && s["generation"] == 2)
    });
    assert_eq!(sb.read("/etc/motd"), "v2 on n2\n");
    assert_eq!(sb.read("/etc/fleet/version"), "v2\n");
    let cached = std::fs::read(sb.path("/var/lib/provision/bundle/last-good.bundle")).unwrap();
    assert_eq!(
        cached,
        std::fs::read(fleet.path("site/cluster.bundle")).unwrap()
    );

    // Refused, with nothing on the node changed: a byte of the content flipped after signing,
    // a bundle signed with another key, a signed bundle whose manifest is invalid.
    // The agent's answer to the v2 reload is written once its (no) services settle.
    agent.until("the v2 answer written", LIMIT, |_| {
        std::fs::read(sb.path("/var/lib/provision/apply.result"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|a| a["generation"] == 2)
    });
    let before = sb.snapshot();
    let good = fleet.bundle(&as_refs(&manifest("v3")), "key", "v3.bundle");
    let mut tampered = std::fs::read(fleet.path("site/v3.bundle")).unwrap();
    let at = tampered.windows(2).position(|w| w == b"v3").unwrap();
    tampered[at + 1] = b'4';
    let serve = |bytes: &[u8]| {
        let tmp = fleet.path("site/.serve");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, fleet.path("site/cluster.bundle")).unwrap();
    };
    serve(&tampered);
    agent.until("the tampered bundle refused", LIMIT, |a| {
        a.status().is_some_and(|s| {
            s["pull"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("the signature does not match"))
        })
    });
    fleet.bundle(&as_refs(&manifest("v5")), "other", "cluster.bundle");
    agent.until("the wrongly signed bundle refused", LIMIT, |a| {
        a.status().is_some_and(|s| {
            s["pull"]["last_error"].as_str().is_some_and(|e| {
                e.contains("signed with key") && e.contains("but this agent trusts key")
            })
        })
    });
    assert_eq!(sb.snapshot(), before, "a refused bundle changed the node");
    let s = agent.status().unwrap();
    assert_eq!(
        (s["generation"].clone(), s["manifest"]["hash"].clone()),
        (2.into(), v2.clone().into())
    );
    // Valid where it was bundled, refused here: it no longer names this node.
    let mut invalid = manifest("v6");
    invalid[1].1 = "nodes:\n  - {name: n1, address: 10.0.0.1}\n".into();
    let refused = fleet.bundle(&as_refs(&invalid), "key", "cluster.bundle");
    agent.until("the manifest without this node refused", LIMIT, |a| {
        a.status().is_some_and(|s| {
            s["pull"]["last_error"].as_str().is_some_and(|e| {
                e.contains(&refused) && e.contains("the running one kept") && e.contains("n2")
            })
        })
    });
    assert_eq!(sb.read("/etc/motd"), "v2 on n2\n");
    assert_eq!(agent.status().unwrap()["generation"], 2);
    // A good one after the bad ones is taken.
    std::fs::rename(
        fleet.path("site/v3.bundle"),
        fleet.path("site/cluster.bundle"),
    )
    .unwrap();
    agent.until("v3 converged", LIMIT, |a| {
        a.status()
            .is_some_and(|s| s["manifest"]["hash"] == good && s["generation"] == 3)
    });
    assert_eq!(sb.read("/etc/motd"), "v3 on n2\n");

    // The server dies: the agent keeps running what it has, and says why it cannot check.
    let port = fleet.server.port;
    let mut fleet = fleet;
    fleet.server.kill();
    agent.until("the dead server reported", LIMIT, |a| {
        a.status().is_some_and(|s| {
            s["pull"]["ok"] == false
                && s["pull"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused"))
        })
    });
    assert_eq!(sb.read("/etc/motd"), "v3 on n2\n");
    agent.stop();

    // A boot with the server down: the cached bundle runs and converges the node, and the
    // status says it came from the cache and why.
    std::fs::remove_file(sb.path("/etc/motd")).unwrap();
    let mut agent = fleet.agent(&sb, "n2", "127.0.0.1:0", "200ms");
    agent.until("converged from the cache", LIMIT, |a| {
        a.status()
            .is_some_and(|s| s["manifest"]["from_cache"] == true)
    });
    let s = agent.status().unwrap();
    assert_eq!(s["manifest"]["hash"], good, "{s}");
    assert!(
        s["manifest"]["cache_reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused")),
        "{s}"
    );
    assert_eq!(sb.read("/etc/motd"), "v3 on n2\n");
    assert!(
        agent
            .log()
            .contains("running the last good bundle from the cache"),
        "{}",
        agent.log()
    );
    // The server is back with the same bundle: a 304, and the cached bundle is confirmed.
    fleet.server = TlsServer::start_on(&fleet.pki, &fleet.tmp.path().join("site"), port);
    agent.until("the cached bundle confirmed", LIMIT, |a| {
        a.status()
            .is_some_and(|s| s["manifest"]["from_cache"] == false && s["pull"]["ok"] == true)
    });
    agent.stop();

    // No server and an emptied cache: the agent stops at once, saying why, touching nothing.
    fleet.server.kill();
    std::fs::remove_dir_all(sb.path("/var/lib/provision/bundle")).unwrap();
    let before = sb.snapshot();
    let mut args = vec![
        "agent".to_owned(),
        fleet.url(),
        "--node".into(),
        "n2".into(),
        "--root".into(),
        sb.root().to_str().unwrap().into(),
        "--status-listen".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(fleet.pull_flags());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(&refs);
    r.expect(1);
    assert!(r.stderr.contains("no bundle is cached yet"), "{}", r.stderr);
    let after = sb.snapshot();
    let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert!(
        added.iter().all(|k| k.starts_with("var/lib/provision")),
        "{added:?}"
    );
}

#[test]
fn bad_answers_are_clear_errors_and_change_nothing() {
    let Some(fleet) = Fleet::new("bad_answers") else {
        return;
    };
    fleet.publish("v1");
    let sb = Sandbox::empty();
    let before = sb.snapshot();
    let apply = |path: &str, extra: &[&str], key: bool| {
        let mut args: Vec<String> = vec![
            "apply".into(),
            fleet.server.url(path),
            "--node".into(),
            "n1".into(),
            "--root".into(),
            sb.root().to_str().unwrap().into(),
        ];
        if key {
            args.extend(fleet.pull_flags());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs)
    };
    let cases: &[(&str, &[&str], &str)] = &[
        ("/bad/html", &[], "the server sent text/html, not a bundle"),
        ("/bad/redirect-http", &[], "which is not https; refused"),
        ("/bad/truncated", &[], "the answer broke off"),
        (
            "/bad/huge",
            &["--max-bundle-size", "1M"],
            "larger than the limit of 1048576 bytes",
        ),
        (
            "/bad/hang",
            &["--fetch-timeout", "1s"],
            "no complete answer within 1s",
        ),
        ("/missing.bundle", &[], "the server answered HTTP 404"),
    ];
    for (path, extra, expect) in cases {
        let r = apply(path, extra, true);
        r.expect(1);
        assert!(r.stderr.contains(expect), "{path}: {}", r.stderr);
        assert_eq!(sb.snapshot(), before, "{path} changed the root");
    }
    // Refused before any request: plain http, no key.
    let r = run(&[
        "apply",
        &fleet.url().replace("https://", "http://"),
        "--root",
        sb.root().to_str().unwrap(),
        "--bundle-key",
        &fleet.path("key.pub"),
    ]);
    r.expect(1);
    assert!(
        r.stderr.contains("bundles are fetched over https only"),
        "{}",
        r.stderr
    );
    let r = apply("/cluster.bundle", &[], false);
    r.expect(1);
    assert!(r.stderr.contains("needs --bundle-key"), "{}", r.stderr);
    // A server whose CA is not trusted.
    let r = run(&[
        "apply",
        &fleet.url(),
        "--root",
        sb.root().to_str().unwrap(),
        "--bundle-key",
        &fleet.path("key.pub"),
    ]);
    r.expect(1);
    assert!(
        r.stderr.contains("certificate") && r.stderr.contains("--ca-file"),
        "{}",
        r.stderr
    );
    assert_eq!(sb.snapshot(), before);
    // An https redirect is followed; plan writes nothing, apply converges.
    let r = apply("/bad/redirect-https", &["--check"], true);
    r.expect(0);
    assert!(r.stdout.contains("/etc/motd"), "{}", r.stdout);
    assert_eq!(sb.snapshot(), before, "plan wrote under the root");
    apply("/bad/redirect-https", &[], true).expect(0);
    assert_eq!(sb.read("/etc/motd"), "v1 on n1\n");
}

/// A free port on 127.0.0.2 (every agent of the simulation listens on it, each on its own
/// loopback address).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_hundred_agents_pull_one_bundle_and_status_cluster_shows_every_row() {
    const N: usize = 100;
    let _serial = serial();
    let Some(fleet) = Fleet::new("a_hundred_agents") else {
        return;
    };
    let mut files = manifest("v1");
    files[1].1 = nodes_yaml(N, "127.0.0").replace("address: 127.0.0.1}", "address: 127.0.0.201}");
    // n1 is at 127.0.0.201 (127.0.0.1 is the server's); n2..n100 at 127.0.0.2..100.
    let hash = fleet.bundle(&as_refs(&files), "key", "cluster.bundle");
    let cluster = fleet.tmp.path().join("src/cluster.yaml");
    let port = free_port();
    let address = |i: usize| {
        if i == 1 {
            "127.0.0.201".to_owned()
        } else {
            format!("127.0.0.{i}")
        }
    };
    let sandboxes: Vec<Sandbox> = (1..=N).map(|_| Sandbox::empty()).collect();
    let mut agents: Vec<Option<RunningAgent>> = (1..=N)
        .map(|i| {
            let listen = format!("{}:{port}", address(i));
            Some(fleet.agent(&sandboxes[i - 1], &format!("n{i}"), &listen, "1h"))
        })
        .collect();
    for (i, agent) in agents.iter_mut().enumerate() {
        let agent = agent.as_mut().unwrap();
        agent.until("converged", Duration::from_secs(600), |a| {
            a.status().is_some_and(|s| s["manifest"]["hash"] == hash)
        });
        assert_eq!(
            sandboxes[i].read("/etc/motd"),
            format!("v1 on n{}\n", i + 1)
        );
    }
    let requests = fleet
        .server
        .log()
        .lines()
        .filter(|l| l.starts_with("GET /cluster.bundle 200"))
        .count();
    assert_eq!(requests, N, "each agent fetched the bundle once");

    // Every tenth node's agent stopped.
    let stopped: Vec<usize> = (1..=N).filter(|i| i % 10 == 3).collect();
    for &i in &stopped {
        agents[i - 1].take().unwrap().stop();
    }
    let r = run(&[
        "status",
        "--cluster",
        cluster.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--json",
    ]);
    r.expect(3);
    let doc = r.json();
    let rows = doc["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), N);
    for (i, row) in rows.iter().enumerate() {
        let n = i + 1;
        assert_eq!(row["node"], format!("n{n}"));
        assert_eq!(row["address"], address(n));
        if stopped.contains(&n) {
            assert_eq!(row["reachable"], false, "{row}");
            assert!(row["error"].as_str().unwrap().contains("refused"), "{row}");
        } else {
            assert_eq!(row["reachable"], true, "{row}");
            assert_eq!(row["agent_node"], format!("n{n}"), "{row}");
            assert_eq!(row["hash"], hash, "{row}");
            assert_eq!(row["generation"], 1, "{row}");
            assert_eq!(row["changed"], 2, "{row}");
            assert_eq!(row["failed"], 0, "{row}");
            assert_eq!(row["services_total"], 0, "{row}");
            assert_eq!(row["last_error"], serde_json::Value::Null, "{row}");
        }
    }
    // The table: a header, one line per node in manifest order, the count.
    let r = run(&[
        "status",
        "--cluster",
        cluster.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ]);
    r.expect(3);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{}", r.stdout);
    let short = &hash["sha256:".len().."sha256:".len() + 12];
    assert_eq!(lines.len(), N + 3, "{}", r.stdout);
    for (n, line) in lines.iter().enumerate().take(N + 1).skip(1) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], format!("n{n}"), "{line}");
        if stopped.contains(&n) {
            assert_eq!(cells[1], "no", "{line}");
        } else {
            assert_eq!(&cells[1..4], ["yes", "1", short], "{line}");
        }
    }
    assert!(
        r.stdout.contains(&format!(
            "{N} nodes: {} reachable, {} unreachable, 0 with failed resources",
            N - stopped.len(),
            stopped.len()
        )),
        "{}",
        r.stdout
    );
    for agent in agents.into_iter().flatten() {
        agent.stop();
    }
}

#[test]
fn bundle_carries_what_the_manifest_reads_and_refuses_what_must_not_travel() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let key = t.join("key");
    run(&["bundle", "keygen", key.to_str().unwrap()]).expect(0);
    let src = t.join("src");
    for (file, text) in manifest("v1") {
        let p = src.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // Beside the manifest but not named by it: not carried.
    std::fs::write(src.join("notes.txt"), "private notes\n").unwrap();
    let out = t.join("cluster.bundle");
    let out_s = out.to_str().unwrap();
    run(&[
        "bundle",
        src.to_str().unwrap(),
        "-o",
        out_s,
        "--key",
        key.to_str().unwrap(),
    ])
    .expect(0);
    let listed = run(&[
        "bundle",
        "verify",
        out_s,
        "--bundle-key",
        &format!("{}.pub", key.display()),
    ]);
    listed.expect(0);
    let files: Vec<&str> = listed
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "cluster.yaml",
            "files/version",
            "nodes.yaml",
            "templates/motd.tera"
        ],
        "{}",
        listed.stdout
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(!listed.stdout.contains(secret.lines().nth(1).unwrap()));

    // A password file, a file outside the folder, a local channel folder: each refused, saying
    // why, and no bundle written.
    std::fs::write(t.join("outside.conf"), "x\n").unwrap();
    std::fs::write(src.join("smb.pass"), "s3cret\n").unwrap();
    std::fs::write(
        src.join("cluster.yaml"),
        "include: [nodes.yaml]\nresources:\n  - file: {path: /etc/o.conf, source: ../outside.conf}\n  - mount: {target: /mnt/d, source: //fs/d, credentials: {username: u, password_file: smb.pass}}\n",
    )
    .unwrap();
    let refused = t.join("refused.bundle");
    let r = run(&[
        "bundle",
        src.join("cluster.yaml").to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    r.expect(1);
    assert!(
        r.stderr
            .contains("password_file smb.pass is a secret and does not travel"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("is outside the manifest's folder"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("s3cret"), "{}", r.stderr);
    assert!(!refused.exists());
    // A folder without cluster.yaml, and a bad key file.
    let r = run(&[
        "bundle",
        t.to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    r.expect(1);
    assert!(r.stderr.contains("has no cluster.yaml"), "{}", r.stderr);
    let r = run(&[
        "bundle",
        src.to_str().unwrap(),
        "-o",
        refused.to_str().unwrap(),
        "--key",
        out_s,
    ]);
    r.expect(1);
    assert!(
        r.stderr
            .contains("not a key written by `provision bundle keygen`"),
        "{}",
        r.stderr
    );
}

#[test]
fn status_cluster_sends_the_token_and_names_an_agent_that_wants_one() {
    let sb = Sandbox::empty();
    let token = sb.tmp.path().join("token");
    std::fs::write(&token, "fleet-s3cret\n").unwrap();
    let port = free_port();
    let m = sb.manifest(
        "cluster.yaml",
        "nodes:\n  - {name: a, address: 127.0.0.2}\n  - {name: b, address: 127.0.0.3}\nresources:\n  - file: {path: /etc/x, content: \"x\\n\"}\n",
    );
    let mut agent = RunningAgent::start_args(
        &sb,
        &[
            "agent",
            m.to_str().unwrap(),
            "--node",
            "a",
            "--root",
            sb.root().to_str().unwrap(),
            "--status-listen",
            &format!("127.0.0.2:{port}"),
            "--status-token-file",
            token.to_str().unwrap(),
        ],
        &[],
    );
    agent.until("listening", LIMIT, |a| {
        sb.path("/var/lib/provision/status.addr").exists() && a.log().contains("agent ready")
    });
    let args = [
        "status",
        "--cluster",
        m.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--json",
    ];
    let r = run(&args);
    r.expect(3);
    let rows = r.json()["nodes"].clone();
    assert!(
        rows[0]["error"].as_str().unwrap().contains("wants a token"),
        "{rows}"
    );
    assert_eq!(rows[1]["reachable"], false);
    let mut with_token = args.to_vec();
    with_token.extend(["--token-file", token.to_str().unwrap()]);
    let r = run(&with_token);
    r.expect(3);
    let rows = r.json()["nodes"].clone();
    assert_eq!(rows[0]["reachable"], true, "{rows}");
    assert_eq!(rows[0]["changed"], 1, "{rows}");
    assert!(
        rows[0]["hash"].as_str().unwrap().starts_with("sha256:"),
        "{rows}"
    );
    assert_eq!(rows[1]["reachable"], false, "{rows}");
    assert!(!r.stdout.contains("fleet-s3cret") && !r.stderr.contains("fleet-s3cret"));
    agent.stop();
}

/// PYME's web framework answers only clients that accept gzip (it fails writing a `str`
/// otherwise): a server that behaves the same, so the probe's request and its gunzip are real.
#[test]
fn http_probes_accept_gzip_and_read_the_gunzipped_body() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
            if !head
                .lines()
                .any(|l| l.starts_with("accept-encoding:") && l.contains("gzip"))
            {
                continue; // no answer at all, like PYME's rule server
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(b"{\"Polling\": true}").unwrap();
            let body = gz.finish().unwrap();
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    let probe = Check::Http {
        url: format!("http://{addr}/node/status"),
        status: 200,
        body_contains: Some("\"Polling\": true".into()),
        token_file: None,
    };
    assert_eq!(probe.run(Duration::from_secs(5), 0), Ok(()));
}
