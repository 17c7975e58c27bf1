//! Every resource kind through the real binary on a temporary root: the first apply changes it,
//! the second reports zero changes, check mode writes nothing (the whole root is hashed before and
//! after), and `--diff` shows the change.

mod common;

use common::{Sandbox, run};

/// Runs the cycle every kind must pass for `manifest` (node `master`): returns the first
/// apply's JSON report.
#[track_caller]
fn full_cycle(s: &Sandbox, manifest: &str, expect_in_diff: &str) -> serde_json::Value {
    let m = s.manifest("m.yaml", manifest);
    let m = m.to_str().unwrap();

    let before = s.snapshot();
    let plan = s.run(&["plan", m, "--node", "master"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains(expect_in_diff),
        "plan shows the change:\n{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("check mode: nothing was written"),
        "{}",
        plan.stdout
    );
    let check = s.run(&[
        "apply",
        m,
        "--node",
        "master",
        "--check",
        "--detailed-exitcodes",
    ]);
    check.expect(2);
    assert_eq!(
        s.snapshot(),
        before,
        "plan and --check must not write anything"
    );

    let first = s.run(&[
        "apply",
        m,
        "--node",
        "master",
        "--json",
        "--detailed-exitcodes",
    ]);
    first.expect(2);
    let report = first.json();
    assert!(
        report["summary"]["changed"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");

    let second = s.run(&[
        "apply",
        m,
        "--node",
        "master",
        "--json",
        "--detailed-exitcodes",
    ]);
    second.expect(0);
    let again = second.json();
    assert_eq!(
        again["summary"]["changed"], 0,
        "second apply must change nothing: {again:#}"
    );
    let after_second = s.snapshot();
    let plan_again = s.run(&["plan", m, "--node", "master", "--detailed-exitcodes"]);
    plan_again.expect(0);
    assert_eq!(s.snapshot(), after_second);
    report
}

const NODES: &str = "nodes:\n  - name: master\n    address: 10.0.0.1\n    roles: [master]\n  - name: node01\n    address: 10.0.0.11\n    roles: [worker]\n";

#[test]
fn directory_is_created_with_owner_and_mode_then_left_alone() {
    if !common::have_root("directory_is_created_with_owner_and_mode_then_left_alone") {
        return;
    }
    let s = Sandbox::debian();
    let manifest = format!(
        "{NODES}resources:\n  - user: {{name: pyme, system: true}}\n  - directory: {{path: /data/pyme/incoming, owner: pyme, group: pyme, mode: \"0750\"}}\n"
    );
    full_cycle(
        &s,
        &manifest,
        "create directory; owner (none) → pyme; group (none) → pyme; mode (none) → 0750",
    );
    let meta = std::fs::metadata(s.path("/data/pyme/incoming")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mode() & 0o7777, 0o750);
    assert_eq!(meta.uid(), 999, "first system uid");
    // Drift is repaired: change the mode behind provision's back.
    std::fs::set_permissions(
        s.path("/data/pyme/incoming"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let m = s.work().join("m.yaml");
    let fix = s.run(&["apply", m.to_str().unwrap(), "--node", "master"]);
    fix.expect(0);
    assert!(fix.stdout.contains("mode 0777 → 0750"), "{}", fix.stdout);
}

#[test]
fn file_with_inline_content() {
    let s = Sandbox::debian();
    let manifest = format!(
        "{NODES}resources:\n  - file:\n      path: /etc/motd\n      content: \"hello cluster\\n\"\n      mode: \"0640\"\n"
    );
    full_cycle(&s, &manifest, "+hello cluster");
    assert_eq!(s.read("/etc/motd"), "hello cluster\n");
}

#[test]
fn file_from_a_template_sees_node_vars_and_facts() {
    let s = Sandbox::debian();
    s.manifest("app.conf.tera", "node={{ node.name }} addr={{ node.address }} root={{ vars.root }} peers={% for n in nodes %}{{ n.name }},{% endfor %} cpus={{ facts.cpus }}\n");
    let manifest = format!(
        "vars:\n  root: /data\n{NODES}resources:\n  - file: {{path: /etc/app.conf, template: app.conf.tera}}\n"
    );
    full_cycle(
        &s,
        &manifest,
        "+node=master addr=10.0.0.1 root=/data peers=master,node01,",
    );
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        s.read("/etc/app.conf"),
        format!("node=master addr=10.0.0.1 root=/data peers=master,node01, cpus={cpus}\n")
    );
}

#[test]
fn shipped_pyme_template_renders_per_node() {
    let s = Sandbox::debian();
    let manifest = format!(
        "vars:\n  pyme_data_root: /data/pyme\n{NODES}resources:\n  - file: {{path: /etc/PYME/config.yaml, template: pyme/config.yaml.tera, validate: \"grep -q '^dataserver-root: ' %s\"}}\n"
    );
    full_cycle(&s, &manifest, "+dataserver-root: \"/data/pyme\"");
    let text = s.read("/etc/PYME/config.yaml");
    assert!(text.contains("dataserver-filter: \"\"\n"), "{text}");
    assert!(text.contains("ruleserver-port: 15346\n"), "{text}");
}

#[test]
fn file_copied_from_a_source() {
    let s = Sandbox::debian();
    s.manifest("files/limits.conf", "pyme soft nofile 65536\n");
    let manifest = format!(
        "{NODES}resources:\n  - file: {{path: /etc/security/limits.d/pyme.conf, source: files/limits.conf}}\n"
    );
    full_cycle(&s, &manifest, "+pyme soft nofile 65536");
    assert_eq!(
        s.read("/etc/security/limits.d/pyme.conf"),
        "pyme soft nofile 65536\n"
    );
}

#[test]
fn changed_file_is_backed_up_and_the_diff_shows_both_sides() {
    let s = Sandbox::debian();
    s.write("/etc/app.conf", "port = 1\n");
    let manifest =
        format!("{NODES}resources:\n  - file: {{path: /etc/app.conf, content: \"port = 2\\n\"}}\n");
    let report = full_cycle(&s, &manifest, "-port = 1\n+port = 2");
    let backups = report["resources"][0]["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    let backup = backups[0].as_str().unwrap();
    assert!(
        backup.starts_with(
            s.root()
                .join("var/lib/provision/backups/etc/app.conf.")
                .to_str()
                .unwrap()
        ),
        "{backup}"
    );
    assert_eq!(std::fs::read_to_string(backup).unwrap(), "port = 1\n");
}

#[test]
fn absent_file_is_removed_after_a_backup() {
    let s = Sandbox::debian();
    s.write("/etc/cron.d/old-job", "* * * * * root true\n");
    let manifest =
        format!("{NODES}resources:\n  - file: {{path: /etc/cron.d/old-job, state: absent}}\n");
    let m = s.manifest("m.yaml", &manifest);
    let m = m.to_str().unwrap();
    let before = s.snapshot();
    s.run(&["plan", m, "--node", "master"]).expect(0);
    assert_eq!(s.snapshot(), before);
    let out = s.run(&["apply", m, "--node", "master"]);
    out.expect(0);
    assert!(out.stdout.contains("remove file"), "{}", out.stdout);
    assert!(!s.path("/etc/cron.d/old-job").exists());
    let again = s.run(&["apply", m, "--node", "master", "--detailed-exitcodes"]);
    again.expect(0);
}

#[test]
fn hosts_block_and_loopback_fix() {
    let s = Sandbox::debian();
    let manifest = format!(
        "cluster: {{domain: cluster.lan}}\n{NODES}resources:\n  - hosts: {{loopback_hostname: remove}}\n"
    );
    full_cycle(&s, &manifest, "+10.0.0.11\tnode01.cluster.lan node01");
    let text = s.read("/etc/hosts");
    assert!(
        text.contains("# 127.0.1.1\tmaster.example.org\tmaster\n"),
        "{text}"
    );
}

#[test]
fn group_and_user_are_created_in_the_roots_files_only() {
    if !common::have_root("group_and_user_are_created_in_the_roots_files_only") {
        return;
    }
    let s = Sandbox::debian();
    let manifest = format!(
        "{NODES}resources:\n  - group: {{name: microscopy, gid: 2000}}\n  - group: {{name: video}}\n  - user: {{name: pyme, system: true, groups: [microscopy, video], comment: PYME services}}\n"
    );
    full_cycle(
        &s,
        &manifest,
        "create user; create group pyme; join group microscopy; join group video; create home directory /home/pyme",
    );
    let passwd = s.read("/etc/passwd");
    assert!(
        passwd.starts_with(common::DEBIAN_PASSWD),
        "existing lines kept byte for byte:\n{passwd}"
    );
    assert!(
        passwd.ends_with("pyme:x:999:999:PYME services:/home/pyme:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    let group = s.read("/etc/group");
    assert!(group.contains("video:x:44:pyme\n"), "{group}");
    assert!(group.contains("microscopy:x:2000:pyme\n"), "{group}");
    assert!(group.contains("pyme:x:999:\n"), "{group}");
    assert!(
        s.read("/etc/shadow").contains("\npyme:!:"),
        "a locked shadow entry"
    );
    assert!(s.read("/etc/gshadow").contains("microscopy:!::pyme\n"));
    // The host's own account files are not touched: the run resolved names in the root only.
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    assert!(!host_passwd.contains("PYME services"));
}

#[test]
fn user_changes_are_diffed_field_by_field_and_shadow_is_never_backed_up() {
    if !common::have_root("user_changes_are_diffed_field_by_field_and_shadow_is_never_backed_up") {
        return;
    }
    let s = Sandbox::debian();
    let groups = "  - group: {name: video}\n  - group: {name: render}\n";
    let m1 = format!("{NODES}resources:\n{groups}  - user: {{name: alice, groups: [video]}}\n");
    let m = s.manifest("m.yaml", &m1);
    s.run(&["apply", m.to_str().unwrap(), "--node", "master"])
        .expect(0);
    let m2 = format!(
        "{NODES}resources:\n{groups}  - user: {{name: alice, shell: /bin/sh, groups: [render]}}\n"
    );
    let m = s.manifest("m.yaml", &m2);
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    out.expect(0);
    let report = out.json();
    let user = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "user:alice")
        .unwrap();
    let texts: Vec<&str> = user["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec![
            "shell /bin/bash → /bin/sh",
            "join group render",
            "leave group video"
        ]
    );
    let group = s.read("/etc/group");
    assert!(
        group.contains("video:x:44:\n") && group.contains("render:x:105:alice\n"),
        "{group}"
    );
    let backups = s.root().join("var/lib/provision/backups/etc");
    let names: Vec<String> = std::fs::read_dir(backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.starts_with("shadow") && !n.starts_with("gshadow")),
        "{names:?}"
    );
}

#[test]
fn absent_user_and_group_are_removed() {
    let s = Sandbox::debian();
    let m = s.manifest("m.yaml", &format!("{NODES}resources:\n  - group: {{name: lab}}\n  - user: {{name: bob, groups: [lab], create_home: false}}\n"));
    s.run(&["apply", m.to_str().unwrap(), "--node", "master"])
        .expect(0);
    let m = s.manifest("m.yaml", &format!("{NODES}resources:\n  - user: {{name: bob, state: absent}}\n  - group: {{name: lab, state: absent, after: [\"user:bob\"]}}\n"));
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master"]);
    out.expect(0);
    assert!(!s.read("/etc/passwd").contains("bob:"));
    assert!(!s.read("/etc/shadow").contains("bob:"));
    assert!(!s.read("/etc/group").contains("lab:"));
    s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--detailed-exitcodes",
    ])
    .expect(0);
}

#[test]
fn resources_scoped_to_roles_and_nodes() {
    let s = Sandbox::debian();
    let manifest = format!(
        "{NODES}resources:\n  - file: {{path: /etc/role-master, content: m, roles: [master]}}\n  - file: {{path: /etc/role-worker, content: w, roles: [worker]}}\n  - file: {{path: /etc/only-node01, content: n, nodes: [node01]}}\n  - file: {{path: /etc/everyone, content: e}}\n"
    );
    let m = s.manifest("m.yaml", &manifest);
    s.run(&["apply", m.to_str().unwrap(), "--node", "node01"])
        .expect(0);
    assert!(!s.path("/etc/role-master").exists());
    assert!(s.path("/etc/role-worker").exists());
    assert!(s.path("/etc/only-node01").exists());
    assert!(s.path("/etc/everyone").exists());
}

#[test]
fn a_failure_skips_its_dependents_but_not_independent_resources() {
    let s = Sandbox::debian();
    // The validate command rejects the config, so everything after it is skipped, transitively.
    let manifest = format!(
        "{NODES}resources:\n  - file: {{path: /etc/app.conf, content: bad, validate: \"grep -q good %s\"}}\n  - file: {{path: /etc/needs-app, content: x, after: [\"file:/etc/app.conf\"]}}\n  - file: {{path: /etc/needs-needs-app, content: y, after: [\"file:/etc/needs-app\"]}}\n  - file: {{path: /etc/independent, content: z}}\n"
    );
    let m = s.manifest("m.yaml", &manifest);
    let out = s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--json",
        "--detailed-exitcodes",
    ]);
    out.expect(6);
    let r = out.json();
    let status = |id: &str| {
        r["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {r:#}"))
            .clone()
    };
    let failed = status("file:/etc/app.conf");
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("validate command `grep -q good %s` rejected"),
        "{failed:#}"
    );
    assert_eq!(status("file:/etc/needs-app")["status"], "skipped");
    assert_eq!(
        status("file:/etc/needs-app")["skipped_because"],
        "file:/etc/app.conf failed"
    );
    assert_eq!(
        status("file:/etc/needs-needs-app")["skipped_because"],
        "file:/etc/needs-app was skipped"
    );
    assert_eq!(status("file:/etc/independent")["status"], "changed");
    assert!(
        !s.path("/etc/app.conf").exists(),
        "a rejected file is not written"
    );
    assert!(!s.path("/etc/needs-app").exists());
    // Without --detailed-exitcodes a failure is exit 4.
    s.run(&["apply", m.to_str().unwrap(), "--node", "master"])
        .expect(4);
}

#[test]
fn a_template_error_fails_only_that_resource() {
    let s = Sandbox::debian();
    s.manifest("t.tera", "x={{ vars.not_defined }}\n");
    let manifest = format!(
        "{NODES}resources:\n  - file: {{path: /etc/t, template: t.tera}}\n  - file: {{path: /etc/ok, content: fine}}\n"
    );
    let m = s.manifest("m.yaml", &manifest);
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master"]);
    out.expect(4);
    assert!(
        out.stdout.contains("failed file:/etc/t: template t.tera"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("not_defined"), "{}", out.stdout);
    assert_eq!(s.read("/etc/ok"), "fine");
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let s = Sandbox::debian();
    std::fs::create_dir_all(s.path("/etc/PYME").parent().unwrap()).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), s.path("/etc/PYME")).unwrap();
    let manifest =
        format!("{NODES}resources:\n  - file: {{path: /etc/PYME/config.yaml, content: x}}\n");
    let m = s.manifest("m.yaml", &manifest);
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master"]);
    out.expect(4);
    assert!(out.stdout.contains("outside the root"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside the root"
    );
}

#[test]
fn sensitive_content_never_appears_in_output_or_backups() {
    let s = Sandbox::debian();
    s.write("/etc/token", "old-s3cret-token\n");
    let manifest = format!(
        "{NODES}resources:\n  - file: {{path: /etc/token, content: \"new-s3cret-token\\n\", mode: \"0600\", sensitive: true}}\n"
    );
    let m = s.manifest("m.yaml", &manifest);
    for args in [
        vec!["plan"],
        vec!["apply", "--json", "--diff"],
        vec!["apply", "--diff", "-vvv"],
    ] {
        let mut all = vec![args[0], m.to_str().unwrap(), "--node", "master"];
        all.extend(&args[1..]);
        s.write("/etc/token", "old-s3cret-token\n");
        let out = s.run(&all);
        out.expect(0);
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text.contains("s3cret"),
                "secret leaked with {args:?}:\n{text}"
            );
        }
        assert!(out.stdout.contains("<redacted>"), "{}", out.stdout);
    }
    assert_eq!(s.read("/etc/token"), "new-s3cret-token\n");
    let backups = s.root().join("var/lib/provision/backups");
    assert!(
        !backups.join("etc").exists()
            || std::fs::read_dir(backups.join("etc")).unwrap().count() == 0,
        "no backup of secret content"
    );
}

#[test]
fn unknown_host_is_a_clear_error_and_exit_1() {
    let s = Sandbox::debian();
    let m = s.manifest("m.yaml", &format!("{NODES}resources: []\n"));
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "nosuch"]);
    out.expect(1);
    assert!(
        out.stderr
            .contains("--node `nosuch` is not a node in the manifest (nodes: master, node01)"),
        "{}",
        out.stderr
    );
    let before = s.snapshot();
    let out = run(&[
        "apply",
        m.to_str().unwrap(),
        "--root",
        s.root().to_str().unwrap(),
    ]);
    if !["master", "node01"].contains(&provision::facts::hostname().split('.').next().unwrap()) {
        out.expect(1);
        assert!(
            out.stderr.contains("which is not a node in the manifest"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("--node NAME"), "{}", out.stderr);
    }
    assert_eq!(s.snapshot(), before);
}

#[test]
fn schema_and_facts_commands() {
    let schema = run(&["schema"]);
    schema.expect(0);
    let v: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let text = v.to_string();
    for field in [
        "nodes",
        "resources",
        "loopback_hostname",
        "validate",
        "sensitive",
        "after",
    ] {
        assert!(text.contains(field), "schema mentions {field}");
    }
    let facts = run(&["facts", "--json"]);
    facts.expect(0);
    let f: serde_json::Value = serde_json::from_str(&facts.stdout).unwrap();
    assert_eq!(f["hostname"], provision::facts::hostname());
    assert!(f["cpus"].as_u64().unwrap() >= 1);
    assert!(f["memory_total_bytes"].as_u64().unwrap() > 0);
    run(&["facts"]).expect(0);
}

#[test]
fn usage_errors_exit_1() {
    run(&["apply"]).expect(1);
    run(&["frobnicate"]).expect(1);
    run(&["--help"]).expect(0);
    let s = Sandbox::debian();
    let m = s.manifest("m.yaml", &format!("{NODES}resources: []\n"));
    let out = run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--root",
        "/nonexistent/provision-root",
    ]);
    out.expect(1);
    assert!(out.stderr.contains("is not a directory"), "{}", out.stderr);
}

#[test]
fn an_existing_account_is_adopted_as_it_is() {
    let s = Sandbox::debian();
    s.write(
        "/etc/passwd",
        &format!(
            "{}alice:x:1000:100:Alice:/srv/alice:/bin/zsh\n",
            common::DEBIAN_PASSWD
        ),
    );
    s.write(
        "/etc/group",
        &format!("{}users:x:100:\nsudo:x:27:alice\n", common::DEBIAN_GROUP),
    );
    let m = s.manifest(
        "m.yaml",
        &format!("{NODES}resources:\n  - user: {{name: alice}}\n"),
    );
    let before = s.snapshot();
    let out = s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "master",
        "--detailed-exitcodes",
    ]);
    out.expect(0);
    assert!(
        out.stdout.contains(" 0 changed,"),
        "nothing the manifest leaves out is reset:\n{}",
        out.stdout
    );
    // Only the agent's own state (the apply lock) may appear; nothing of the node changes.
    let mut after = s.snapshot();
    after.retain(|path, _| !path.starts_with("var"));
    assert_eq!(after, before);
    // Naming an attribute manages it, and only it.
    let m = s.manifest(
        "m.yaml",
        &format!("{NODES}resources:\n  - user: {{name: alice, shell: /bin/bash}}\n"),
    );
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    out.expect(0);
    let report = out.json();
    let changes = report["resources"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{report:#}");
    assert_eq!(changes[0]["text"], "shell /bin/zsh → /bin/bash");
    assert!(
        s.read("/etc/passwd")
            .contains("alice:x:1000:100:Alice:/srv/alice:/bin/bash\n")
    );
    assert!(
        s.read("/etc/group").contains("sudo:x:27:alice\n"),
        "memberships untouched"
    );
}

#[test]
fn modes_in_the_json_report_are_octal_strings() {
    let s = Sandbox::debian();
    s.write("/etc/app.conf", "x\n");
    std::fs::set_permissions(
        s.path("/etc/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let m = s.manifest("m.yaml", &format!("{NODES}resources:\n  - file: {{path: /etc/app.conf, content: \"x\\n\", mode: \"0600\"}}\n"));
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    out.expect(0);
    let change = &out.json()["resources"][0]["changes"][0];
    assert_eq!(change["change"], "mode");
    assert_eq!(change["from"], "0644");
    assert_eq!(change["to"], "0600");
}

#[test]
fn a_failed_resource_still_reports_the_backup_it_kept() {
    let s = Sandbox::debian();
    s.write("/etc/app.conf", "good old\n");
    let m = s.manifest(
        "m.yaml",
        &format!("{NODES}resources:\n  - file: {{path: /etc/app.conf, content: \"bad new\\n\", validate: \"grep -q good %s\"}}\n"),
    );
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--json"]);
    out.expect(4);
    let r = &out.json()["resources"][0];
    assert_eq!(r["status"], "failed");
    let backups = r["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{r:#}");
    assert_eq!(
        std::fs::read_to_string(backups[0].as_str().unwrap()).unwrap(),
        "good old\n"
    );
    assert_eq!(
        s.read("/etc/app.conf"),
        "good old\n",
        "the rejected content was not written"
    );
}
