//! `include:`: a cluster manifest split over several files, each file's relative paths resolved
//! against its own folder, node vars overriding cluster vars.

mod common;

use common::Sandbox;

#[test]
fn included_files_add_nodes_vars_and_resources() {
    let s = Sandbox::debian();
    s.manifest("nodes/all.yaml", "nodes:\n  - name: master\n    address: 10.0.0.1\n    roles: [master]\n  - name: node01\n    address: 10.0.0.11\n    vars: {workers: 16}\n");
    s.manifest(
        "pyme/pyme.yaml",
        "vars:\n  workers: 4\nresources:\n  - file: {path: /etc/workers, template: workers.tera}\n",
    );
    s.manifest(
        "pyme/workers.tera",
        "{{ node.name }} runs {{ vars.workers }} workers\n",
    );
    let top = s.manifest("cluster.yaml", "include: [nodes/all.yaml, pyme/pyme.yaml]\ncluster: {name: lab}\nresources:\n  - hosts: {}\n");
    let top = top.to_str().unwrap();
    common::run(&["validate", top]).expect(0);
    s.run(&["apply", top, "--node", "master"]).expect(0);
    assert_eq!(s.read("/etc/workers"), "master runs 4 workers\n");
    s.run(&["apply", top, "--node", "node01"]).expect(0);
    assert_eq!(
        s.read("/etc/workers"),
        "node01 runs 16 workers\n",
        "a node's vars override the cluster's"
    );
    assert!(s.read("/etc/hosts").contains("10.0.0.11\tnode01\n"));
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let s = Sandbox::debian();
    s.manifest(
        "more.yaml",
        "resources:\n  - file: {path: relative/path, content: x}\n",
    );
    let top = s.manifest(
        "cluster.yaml",
        "include: [more.yaml]\nnodes:\n  - {name: master, address: 10.0.0.1}\n",
    );
    let out = common::run(&["validate", top.to_str().unwrap()]);
    out.expect(1);
    let more = s.work().join("more.yaml");
    assert!(
        out.stderr.contains(&format!("{}:2:", more.display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("is not an absolute path"),
        "{}",
        out.stderr
    );
}

/// `validate --json` of a valid manifest lists what a tool running provision elsewhere must copy
/// with it (the Ansible collection): the manifest's files, local templates, `source:` files and
/// password files, each once, and not the shipped templates; and the nodes with their vars.
#[test]
fn validate_json_lists_the_files_a_manifest_reads_and_its_nodes() {
    let s = Sandbox::debian();
    s.manifest("nodes/all.yaml", "nodes:\n  - name: master\n    address: 10.0.0.1\n    roles: [master, worker]\n    aliases: [head]\n  - name: node01\n    address: 10.0.0.11\n    vars: {workers: 16}\n");
    s.manifest(
        "pyme/pyme.yaml",
        "vars:\n  workers: 4\nresources:\n  - file: {path: /etc/workers, template: workers.tera}\n  - file: {path: /etc/again, template: workers.tera}\n  - file: {path: /etc/launcher, source: ../files/launcher.py}\n",
    );
    s.manifest("pyme/workers.tera", "{{ vars.workers }}\n");
    s.manifest("files/launcher.py", "print('hi')\n");
    s.manifest("secrets/share", "s3cret\n");
    let absolute = s.work().join("secrets/share");
    let absolute = absolute.to_str().unwrap();
    let top = s.manifest(
        "cluster.yaml",
        &format!("include: [nodes/all.yaml, pyme/pyme.yaml]\ncluster: {{name: lab}}\nvars: {{site: here}}\nresources:\n  - hosts: {{}}\n  - file: {{path: /etc/PYME/config.yaml, template: pyme/config.yaml.tera}}\n  - user: {{name: alice}}\n  - mount:\n      target: /mnt/a\n      source: //fs/a\n      state: present\n      credentials: {{username: alice, password_file: secrets/share}}\n  - mount:\n      target: /mnt/b\n      source: //fs/b\n      state: present\n      credentials: {{username: alice, password_file: {absolute}}}\n"),
    );
    let json = common::run(&["validate", "--json", top.to_str().unwrap()])
        .expect(0)
        .json();
    assert_eq!(json["valid"], true);
    let w = s.work();
    let files: Vec<(String, String, String)> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["path"].as_str().unwrap().to_owned(),
                f["written"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at = |p: &str| w.join(p).display().to_string();
    assert_eq!(
        files,
        vec![
            ("manifest".into(), at("cluster.yaml"), at("cluster.yaml")),
            (
                "manifest".into(),
                at("nodes/all.yaml"),
                at("nodes/all.yaml")
            ),
            (
                "manifest".into(),
                at("pyme/pyme.yaml"),
                at("pyme/pyme.yaml")
            ),
            (
                "password_file".into(),
                at("secrets/share"),
                "secrets/share".into()
            ),
            (
                "template".into(),
                at("pyme/workers.tera"),
                "workers.tera".into()
            ),
            (
                "source".into(),
                at("pyme/../files/launcher.py"),
                "../files/launcher.py".into()
            ),
        ],
        "the shipped template is not listed, the absolute password file (the same file) once: {json}"
    );
    assert_eq!(json["cluster"]["name"], "lab");
    assert_eq!(
        json["vars"],
        serde_json::json!({"site": "here", "workers": 4})
    );
    assert_eq!(
        json["nodes"],
        serde_json::json!([
            {"name": "master", "address": "10.0.0.1", "aliases": ["head"], "roles": ["master", "worker"], "vars": {}},
            {"name": "node01", "address": "10.0.0.11", "aliases": [], "roles": [], "vars": {"workers": 16}},
        ])
    );
    // Nothing of the password file's content.
    assert!(!json.to_string().contains("s3cret"));
}
