//! Input limits on manifests (agent/manifest/limits.rs), on inputs too large to keep in the
//! bad-manifest corpus: each is generated here, refused with an error at its file:line:column
//! that names the limit, and `apply` changes nothing. The small ones (a billion laughs, nesting,
//! an alias bomb, `/dev/zero` included, too many files) are corpus cases 170-175.

mod common;

use common::Sandbox;

const NODE: &str = "nodes:\n  - {name: master, address: 10.0.0.1}\n";

/// `validate` and `apply` both refuse `text` with exactly one error at `line:column` containing
/// `message`, and apply changes nothing in a Debian root.
#[track_caller]
fn refused(text: &str, line: usize, column: usize, message: &str) {
    let sandbox = Sandbox::debian();
    let manifest = sandbox.manifest("m.yaml", text);
    let manifest = manifest.to_str().unwrap();
    let location = format!("{manifest}:{line}:{column}: ");
    for args in [
        vec!["validate", manifest],
        vec!["apply", manifest, "--node", "master"],
    ] {
        let before = sandbox.snapshot();
        let run = if args[0] == "validate" {
            common::run(&args)
        } else {
            sandbox.run(&args)
        };
        assert_eq!(before, sandbox.snapshot(), "{args:?} changed the root");
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with(&format!("error: {location}")) && first.contains(message),
            "{args:?}: expected `{location}...{message}`, got:\n{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("hint: provision refuses manifests this large"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("1 error in the manifest; nothing was changed"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn a_file_over_4_mib_is_refused_before_it_is_parsed() {
    let text = format!("{NODE}# {}\n", "x".repeat(4 << 20));
    refused(
        &text,
        1,
        1,
        "it is larger than 4 MiB: over the limit for one file",
    );
}

#[test]
fn includes_over_16_mib_in_all_are_refused_at_the_include_past_the_limit() {
    let sandbox = Sandbox::debian();
    // Five files of 3.5 MiB each: the fifth brings the total past 16 MiB.
    let filler = format!("# {}\n", "x".repeat(7 << 19));
    for i in 0..5 {
        sandbox.manifest(&format!("part{i}.yaml"), &filler);
    }
    let top = sandbox.manifest(
        "m.yaml",
        &format!("include: [part0.yaml, part1.yaml, part2.yaml, part3.yaml, part4.yaml]\n{NODE}"),
    );
    let top = top.to_str().unwrap();
    let run = common::run(&["validate", top]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {top}:1:{}: include[4]: cannot read manifest",
            "include: [part0.yaml, part1.yaml, part2.yaml, part3.yaml, ".len() + 1
        )) && run
            .stderr
            .contains("larger than 16 MiB in all: over the limit"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("1 error in the manifest"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_string_over_1_mib_is_refused_and_one_of_1_mib_is_not() {
    let at_limit = format!("vars:\n  x: {}\n{NODE}", "a".repeat(1 << 20));
    let sandbox = Sandbox::debian();
    let manifest = sandbox.manifest("m.yaml", &at_limit);
    common::run(&["validate", manifest.to_str().unwrap()]).expect(0);
    let over = format!("vars:\n  x: {}\n{NODE}", "a".repeat((1 << 20) + 1));
    refused(
        &over,
        2,
        6,
        "a string of 1048577 bytes: longer than the limit of 1 MiB",
    );
}

#[test]
fn more_than_10000_nodes_are_refused_at_the_first_past_the_limit() {
    let mut text = String::from("nodes:\n");
    for i in 0..10_001 {
        text.push_str(&format!(
            "  - {{name: n{i}, address: 10.{}.{}.{}}}\n",
            i / 65536,
            i / 256 % 256,
            i % 256
        ));
    }
    // Line 1 is `nodes:`; node i is on line i + 2.
    refused(
        &text,
        10_002,
        5,
        "more than 10000 nodes in the manifest: over the limit",
    );
}

#[test]
fn more_than_10000_resources_are_refused_at_the_first_past_the_limit() {
    let mut text = format!("{NODE}resources:\n");
    for i in 0..10_001 {
        text.push_str(&format!("  - directory: {{path: /srv/d{i}}}\n"));
    }
    refused(
        &text,
        10_004,
        5,
        "more than 10000 resources in the manifest: over the limit",
    );
}

#[test]
fn more_than_250000_yaml_values_are_refused() {
    let text = format!("vars:\n  x: [{}]\n{NODE}", vec!["1"; 300_000].join(","));
    // Values so far: the top mapping, `vars`, its mapping, `x`, the list: the 249,996th item is
    // the 250,001st value, at column 7 + 2 * 249,995.
    refused(
        &text,
        2,
        7 + 2 * 249_995,
        "more than 250000 YAML values in one file",
    );
}

#[test]
fn deep_nesting_under_long_keys_cannot_blow_up_the_location_index() {
    // 30 levels under 1,000-byte keys make every path 30 KB long: without a limit, the 200,000
    // values after them would need 12 GB of paths.
    let key = "k".repeat(1000);
    let mut text = String::from("vars:\n  x: ");
    for _ in 0..29 {
        text.push_str(&format!("{{{key}: "));
    }
    let values: Vec<String> = (0..200_000).map(|i| format!("a{i}: b")).collect();
    text.push_str(&format!("{{{}}}", values.join(", ")));
    text.push_str(&"}".repeat(29));
    text.push('\n');
    text.push_str(NODE);
    let sandbox = Sandbox::debian();
    let manifest = sandbox.manifest("m.yaml", &text);
    let run = common::run(&["validate", manifest.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let first = run.stderr.lines().next().unwrap_or("");
    assert!(
        first.contains("the YAML paths of this file more than 32 MiB: over the limit"),
        "{first}"
    );
    // The path in the message is cut short, not 30 KB long.
    assert!(first.len() < 500, "{} bytes: {first}", first.len());
}

#[test]
fn aliases_repeating_more_than_16_mib_of_text_are_refused() {
    let text = format!(
        "vars:\n  big: &b {}\n  list: [{}]\n{NODE}",
        "a".repeat(1 << 20),
        vec!["*b"; 20].join(", ")
    );
    refused(
        &text,
        3,
        // `  list: [` then `*b, ` per alias: the anchored string and 15 aliases of it, with the
        // keys, are past 16 MiB at the 15th alias.
        "  list: [".len() + 1 + 4 * 14,
        "more than 16 MiB of text in one file (each alias counted as what it repeats)",
    );
}

#[test]
fn more_than_10000_aliases_are_refused() {
    let mut text = String::from("vars:\n");
    for i in 0..1100 {
        text.push_str(&format!("  a{i}: &a{i} x\n"));
    }
    let uses: Vec<String> = (0..10_001).map(|i| format!("*a{}", i % 1100)).collect();
    text.push_str(&format!("  l: [{}]\n{NODE}", uses.join(", ")));
    let line = 1 + 1100 + 1;
    let column = "  l: [".len() + 1 + uses[..10_000].iter().map(|u| u.len() + 2).sum::<usize>();
    refused(
        &text,
        line,
        column,
        "more than 10000 aliases (*name) in one file",
    );
}

#[test]
fn an_included_fifo_is_refused_without_blocking() {
    let sandbox = Sandbox::debian();
    let fifo = sandbox.work().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let manifest = sandbox.manifest("m.yaml", &format!("include: [fifo.yaml]\n{NODE}"));
    // Without the check, this run would wait for a writer until the harness killed it.
    let run = common::run(&["validate", manifest.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(&format!(
            "error: {}:1:11: include[0]: cannot read manifest",
            manifest.display()
        )) && run.stderr.contains("it is not a regular file"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_top_level_manifest_that_never_ends_is_read_only_to_the_limit() {
    // The manifest on the command line may be a pipe (`<(...)`); /dev/zero is read to 4 MiB + 1.
    let run = common::run(&["validate", "/dev/zero"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "error: /dev/zero:1:1: cannot read manifest /dev/zero: it is larger than 4 MiB"
        ),
        "{}",
        run.stderr
    );
}
