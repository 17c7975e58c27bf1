//! The fuzz targets' properties (provision::fuzzing) run over their seed corpus
//! (`fuzz/seeds/<target>/`: real files from Debian, Ubuntu and RHEL, this repository's manifests
//! and bad-manifest corpus, hand-edited variants) and over every input a fuzzer ever found to
//! break one (`fuzz/regressions/<target>/`, kept as regression tests). The fuzzing itself is
//! `bench/fuzz.sh`; this replay is what the ordinary test run covers.

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

/// Runs every input of `kind` through its target; a failing property names the file.
fn replay(kind: &str) -> usize {
    let mut failed = Vec::new();
    let mut count = 0;
    for (target, property) in provision::fuzzing::TARGETS {
        for path in inputs(kind, target) {
            let data = std::fs::read(&path).expect("read a corpus file");
            count += 1;
            if std::panic::catch_unwind(|| property(&data)).is_err() {
                failed.push(path.display().to_string());
            }
        }
    }
    assert!(
        failed.is_empty(),
        "properties failed on: {}\n(reproduce one with: cargo +nightly fuzz run <target> <file>)",
        failed.join(", ")
    );
    count
}

#[test]
fn every_target_has_seeds_and_holds_on_them() {
    for (target, _) in provision::fuzzing::TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "fuzz/seeds/{target}/ holds no seed"
        );
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(source.is_file(), "no fuzz target {}", source.display());
    }
    assert!(replay("seeds") >= provision::fuzzing::TARGETS.len());
}

#[test]
fn every_input_a_fuzzer_found_holds() {
    replay("regressions");
}
