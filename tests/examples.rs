//! Every manifest in `manifests/` is a real example: each one validates, applies on every node it
//! lists into a fresh root (with Debian's default account files and /etc/hosts), and a second
//! apply changes nothing.

mod common;

use common::{Sandbox, run};

fn examples() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// The node names of a manifest, read the way a user would: from `provision validate --json`
/// is not enough, so parse it with the library.
fn nodes(path: &std::path::Path) -> Vec<String> {
    let m = provision::manifest::parse(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    m.nodes.iter().map(|n| n.value.name.clone()).collect()
}

#[test]
fn every_example_applies_on_every_node_and_converges() {
    if !common::have_root("every_example_applies_on_every_node_and_converges") {
        return;
    }
    let files = examples();
    assert!(!files.is_empty(), "manifests/ has examples");
    for file in files {
        let f = file.to_str().unwrap();
        run(&["validate", f]).expect(0);
        for node in nodes(&file) {
            let s = Sandbox::debian();
            let first = s.run(&["apply", f, "--node", &node, "--json"]);
            first.expect(0);
            assert_eq!(first.json()["summary"]["failed"], 0, "{f} on {node}");
            let second = s.run(&["apply", f, "--node", &node, "--detailed-exitcodes"]);
            second.expect(0);
            assert!(
                second.stdout.contains(" 0 changed,"),
                "{f} on {node}: {}",
                second.stdout
            );
        }
    }
}

#[test]
fn the_readme_sandbox_command_works_on_an_empty_root() {
    if !common::have_root("the_readme_sandbox_command_works_on_an_empty_root") {
        return;
    }
    // README: mkdir -p /tmp/provision-sandbox && provision apply manifests/pyme-cluster.yaml --node master --root ...
    let s = Sandbox::empty();
    let f = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/pyme-cluster.yaml");
    let out = s.run(&["apply", f.to_str().unwrap(), "--node", "master"]);
    out.expect(0);
    assert!(
        s.read("/etc/PYME/config.yaml")
            .contains("dataserver-root: \"/data/pyme\"")
    );
    assert!(s.read("/etc/passwd").contains("pyme:x:999:"));
}
