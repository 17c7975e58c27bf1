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
