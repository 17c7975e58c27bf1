//! `/etc/hosts` from realistic starting files: every byte outside the managed block is kept
//! (tabs, comments, IPv6 lines, aliases, no final newline), and only the Debian
//! `127.0.1.1 <hostname>` line changes when `loopback_hostname` says so.

mod common;

use common::Sandbox;

const BEGIN: &str = "# BEGIN provision managed block";
const END: &str = "# END provision managed block\n";

/// Debian 12 netbase + installer default.
const DEBIAN: &str = common::DEBIAN_HOSTS;

/// Ubuntu 22.04 cloud-init style default, with a trailing comment and no final newline.
const UBUNTU: &str = "127.0.0.1 localhost\n127.0.1.1 master\n\n# The following lines are desirable for IPv6 capable hosts\n::1 ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\nff02::3 ip6-allhosts\n# managed by hand";

/// A lab machine someone has edited: aliases, tabs and spaces mixed, inline comments, CRLF.
const EDITED: &str = "# /etc/hosts for the microscope PC\n127.0.0.1\tlocalhost localhost.localdomain\n127.0.1.1   master.lab.example.org  master   # installer\n192.168.5.20\tnas nas.lab.example.org\t# the NAS\r\n\n\t# indented comment\n2001:db8::5  printer\n";

const NODES: &str = "cluster: {domain: cluster.lan}\nnodes:\n  - name: master\n    address: 10.0.0.1\n    aliases: [head]\n  - name: node01\n    address: 10.0.0.11\n";

/// The file with the managed block cut out.
fn without_block(text: &str) -> String {
    let start = text.find(BEGIN).expect("block present");
    let end = text.find(END).expect("block end") + END.len();
    format!("{}{}", &text[..start], &text[end..])
}

fn apply(s: &Sandbox, loopback: &str) -> String {
    let m = s.manifest("m.yaml", &format!("{NODES}resources:\n  - hosts:\n      loopback_hostname: {loopback}\n      extra:\n        - {{address: 10.0.0.100, names: [nas.cluster.lan, nas]}}\n"));
    let m = m.to_str().unwrap();
    s.run(&["apply", m, "--node", "master"]).expect(0);
    s.run(&["apply", m, "--node", "master", "--detailed-exitcodes"])
        .expect(0);
    s.read("/etc/hosts")
}

#[test]
fn keep_leaves_every_unmanaged_byte() {
    for (name, original) in [("debian", DEBIAN), ("ubuntu", UBUNTU), ("edited", EDITED)] {
        let s = Sandbox::debian();
        s.write("/etc/hosts", original);
        let text = apply(&s, "keep");
        let mut expected = original.to_owned();
        if !expected.ends_with('\n') {
            expected.push('\n'); // the block starts on a line of its own
        }
        assert_eq!(without_block(&text), expected, "{name}");
        assert!(
            text.contains(&format!("{BEGIN}: cluster nodes (edits inside are overwritten)\n10.0.0.1\tmaster.cluster.lan master head\n10.0.0.11\tnode01.cluster.lan node01\n10.0.0.100\tnas.cluster.lan nas\n{END}")),
            "{name}:\n{text}"
        );
    }
}

#[test]
fn remove_comments_out_only_this_hosts_loopback_line() {
    for (name, original, line) in [
        ("debian", DEBIAN, "127.0.1.1\tmaster.example.org\tmaster\n"),
        ("ubuntu", UBUNTU, "127.0.1.1 master\n"),
        (
            "edited",
            EDITED,
            "127.0.1.1   master.lab.example.org  master   # installer\n",
        ),
    ] {
        let s = Sandbox::debian();
        s.write("/etc/hosts", original);
        let text = apply(&s, "remove");
        let mut expected = original.replace(line, &format!("# {line}"));
        if !expected.ends_with('\n') {
            expected.push('\n');
        }
        assert_eq!(without_block(&text), expected, "{name}");
    }
}

#[test]
fn static_maps_the_hostname_to_the_cluster_address() {
    let s = Sandbox::debian();
    s.write("/etc/hosts", EDITED);
    let text = apply(&s, "static");
    let expected = EDITED.replace("127.0.1.1   master.lab", "10.0.0.1   master.lab");
    assert_eq!(without_block(&text), expected);
}

#[test]
fn a_missing_hosts_file_is_created_with_the_block_only() {
    let s = Sandbox::empty();
    let text = apply(&s, "remove");
    assert!(text.starts_with(BEGIN) && text.ends_with(END), "{text}");
}

#[test]
fn a_hand_edited_block_is_put_back_and_the_backup_keeps_the_edit() {
    let s = Sandbox::debian();
    let first = apply(&s, "keep");
    let tampered = first.replace("10.0.0.11\tnode01", "10.9.9.9\tnode01");
    s.write("/etc/hosts", &tampered);
    let m = s.work().join("m.yaml");
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "master", "--diff"]);
    out.expect(0);
    assert!(
        out.stdout.contains(
            "-10.9.9.9\tnode01.cluster.lan node01\n+10.0.0.11\tnode01.cluster.lan node01\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(s.read("/etc/hosts"), first);
    let backup = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("backup: "))
        .expect("backup line");
    assert_eq!(std::fs::read_to_string(backup).unwrap(), tampered);
}
