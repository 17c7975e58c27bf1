//! `mount` resources through the real binary: real tmpfs and bind mounts in a private mount
//! namespace (the same code path a CIFS share takes: fstab entry, `mount` with explicit fields,
//! detection in `/proc/self/mountinfo`, remount, unmount), fstab edits on realistic files, the
//! credentials file, and the CIFS pre-flight against a real Samba server on 127.0.0.1.
//!
//! Not covered here: mounting CIFS itself. This kernel has no CIFS support, so a cifs mount can
//! only fail; `a_failed_mount_puts_the_old_fstab_back` uses exactly that failure.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Namespace, RunningAgent, Sandbox};

/// A Debian fstab as installers leave it, plus hand edits: tabs, a `\040` escape, a commented-out
/// entry, a CIFS line of another share, and no final newline.
const FSTAB: &str = "# /etc/fstab: static file system information.\n#\n# Use 'blkid' to print the universally unique identifier for a\n# device; this may be used with UUID= as a more robust way to name devices\n# that works even if disks are added and removed. See fstab(5).\n#\n# <file system> <mount point>   <type>  <options>       <dump>  <pass>\n# / was on /dev/vda1 during installation\nUUID=0f3c2e4a-1b2c-4d5e-8f90-123456789abc /               ext4    errors=remount-ro 0       1\n# swap was on /dev/vda5 during installation\nUUID=9a8b7c6d-5e4f-3a2b-1c0d-fedcba987654 none            swap    sw              0       0\n/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0\nLABEL=scratch\t/scratch\txfs\tdefaults,noatime\t0\t2\n#//old-nas/data /mnt/old cifs guest 0 0\n//nas.example/my\\040docs /mnt/my\\040docs cifs guest,nofail 0 0";

const PASSWORD: &str = "Tr0ub4dor&3-unique";

fn nodes() -> &'static str {
    "nodes:\n  - name: ws01\n    address: 10.0.0.21\n"
}

fn apply(s: &Sandbox, ns: &Namespace, m: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec!["apply", m.to_str().unwrap(), "--node", "ws01"];
    args.extend(extra);
    s.run_in(ns, &args, &[])
}

/// Lines of `text` that name `target` as their mount point.
fn entries<'a>(text: &'a str, target: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.split_whitespace().nth(1) == Some(target))
        .collect()
}

#[test]
fn tmpfs_is_mounted_detected_remounted_unmounted_and_removed() {
    let Some(ns) = Namespace::new("tmpfs_is_mounted_detected_remounted_unmounted_and_removed")
    else {
        return;
    };
    let s = Sandbox::debian();
    s.write("/etc/fstab", FSTAB);
    let real = s.path("/mnt/scratch space");
    let manifest = |size: &str, state: &str| {
        s.manifest(
            "m.yaml",
            &format!(
                "{}resources:\n  - mount:\n      target: /mnt/scratch space\n      source: scratch\n      fstype: tmpfs\n      options: [size={size}, mode=0700, nosuid]\n      state: {state}\n",
                nodes()
            ),
        )
    };
    let line = |size: &str| {
        format!("scratch /mnt/scratch\\040space tmpfs size={size},mode=0700,nosuid 0 0\n")
    };

    // Check mode: nothing written, nothing mounted.
    let m = manifest("1m", "mounted");
    let before = s.snapshot();
    let plan = apply(&s, &ns, &m, &["--check", "--diff", "--detailed-exitcodes"]);
    plan.expect(2);
    assert!(
        plan.stdout.contains("mount (not mounted)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!("+{}", line("1m"))),
        "{}",
        plan.stdout
    );
    assert_eq!(s.snapshot(), before);
    assert!(ns.mounts_at(&real).is_empty());

    // Mounted, in fstab after every unmanaged byte, with a backup of the old fstab.
    apply(&s, &ns, &m, &["--detailed-exitcodes"]).expect(2);
    let at = ns.mounts_at(&real);
    assert_eq!(at.len(), 1, "{at:?}");
    assert!(
        at[0].contains(" - tmpfs scratch ") && at[0].contains("size=1024k"),
        "{}",
        at[0]
    );
    assert!(at[0].contains("nosuid"), "{}", at[0]);
    assert_eq!(s.read("/etc/fstab"), format!("{FSTAB}\n{}", line("1m")));
    let backups = s.path("/var/lib/provision/backups/etc");
    let kept: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(kept, [FSTAB]);

    // Detected: a second apply changes nothing.
    let again = apply(&s, &ns, &m, &["--detailed-exitcodes"]);
    again.expect(0);
    assert!(
        again.stdout.contains("0 changed, 1 unchanged"),
        "{}",
        again.stdout
    );

    // A changed option: the entry is replaced in place and the live mount remounted.
    let m = manifest("2m", "mounted");
    let out = apply(&s, &ns, &m, &["--detailed-exitcodes"]);
    out.expect(2);
    assert!(
        out.stdout
            .contains("remount (size=2m, mounted with size=1024k)"),
        "{}",
        out.stdout
    );
    let at = ns.mounts_at(&real);
    assert_eq!(at.len(), 1, "remounted, not stacked: {at:?}");
    assert!(at[0].contains("size=2048k"), "{}", at[0]);
    let fstab = s.read("/etc/fstab");
    assert_eq!(
        entries(&fstab, "/mnt/scratch\\040space").len(),
        1,
        "{fstab}"
    );
    assert_eq!(fstab, format!("{FSTAB}\n{}", line("2m")));

    // Drift: unmounted behind the agent's back, mounted again.
    ns.sh(&format!("umount '{}'", real.display()));
    let out = apply(&s, &ns, &m, &[]);
    out.expect(0);
    assert!(
        out.stdout
            .contains("mount:/mnt/scratch space: mount (not mounted)"),
        "{}",
        out.stdout
    );
    assert_eq!(ns.mounts_at(&real).len(), 1);

    // unmounted: in fstab, not mounted.
    let m = manifest("2m", "unmounted");
    let out = apply(&s, &ns, &m, &[]);
    out.expect(0);
    assert!(out.stdout.contains("unmount"), "{}", out.stdout);
    assert!(ns.mounts_at(&real).is_empty());
    assert_eq!(s.read("/etc/fstab"), format!("{FSTAB}\n{}", line("2m")));
    apply(&s, &ns, &m, &["--detailed-exitcodes"]).expect(0);

    // absent: out of fstab, which is again what it was, byte for byte (the final newline the
    // first apply had to add stays).
    let m = manifest("2m", "absent");
    ns.sh(&format!("mount -t tmpfs scratch '{}'", real.display()));
    apply(&s, &ns, &m, &[]).expect(0);
    assert!(ns.mounts_at(&real).is_empty());
    assert_eq!(s.read("/etc/fstab"), format!("{FSTAB}\n"));
    apply(&s, &ns, &m, &["--detailed-exitcodes"]).expect(0);
}

#[test]
fn a_bind_mount_from_another_source_is_replaced() {
    let Some(ns) = Namespace::new("a_bind_mount_from_another_source_is_replaced") else {
        return;
    };
    let s = Sandbox::debian();
    s.write("/srv/a/a.txt", "a");
    s.write("/srv/b/b.txt", "b");
    let manifest = |src: &str| {
        s.manifest(
            "m.yaml",
            &format!(
                "{}resources:\n  - mount:\n      target: /mnt/data\n      source: {src}\n      fstype: none\n      options: [bind]\n",
                nodes()
            ),
        )
    };
    let real = s.path("/mnt/data");
    let root_field = |line: &str| line.split(' ').nth(3).unwrap().to_owned();
    apply(&s, &ns, &manifest("/srv/a"), &[]).expect(0);
    let at = ns.mounts_at(&real);
    assert_eq!(at.len(), 1);
    assert_eq!(root_field(&at[0]), s.path("/srv/a").to_str().unwrap());
    apply(&s, &ns, &manifest("/srv/a"), &["--detailed-exitcodes"]).expect(0);

    let out = apply(&s, &ns, &manifest("/srv/b"), &[]);
    out.expect(0);
    assert!(
        out.stdout.contains("unmount and mount again"),
        "{}",
        out.stdout
    );
    let at = ns.mounts_at(&real);
    assert_eq!(at.len(), 1, "{at:?}");
    assert_eq!(root_field(&at[0]), s.path("/srv/b").to_str().unwrap());

    // Someone binds the wrong folder by hand: the next apply puts the right one back.
    ns.sh(&format!(
        "umount '{0}' && mount --bind '{1}' '{0}'",
        real.display(),
        s.path("/srv/a").display()
    ));
    let out = apply(&s, &ns, &manifest("/srv/b"), &[]);
    out.expect(0);
    assert!(
        out.stdout.contains("source /srv/b, mounted from"),
        "{}",
        out.stdout
    );
    assert_eq!(
        root_field(&ns.mounts_at(&real)[0]),
        s.path("/srv/b").to_str().unwrap()
    );
    apply(&s, &ns, &manifest("/srv/b"), &["--detailed-exitcodes"]).expect(0);
}

fn cifs_manifest(s: &Sandbox, extra: &str, state: &str) -> std::path::PathBuf {
    s.manifest("nas.password", &format!("{PASSWORD}\n"));
    s.manifest(
        "m.yaml",
        &format!(
            "{}resources:\n  - user: {{name: alice, uid: 1000}}\n  - mount:\n      target: /home/alice/net/home\n      source: //127.0.0.1/data\n      options: [uid=alice, gid=alice, iocharset=utf8, vers=3.0, sec=ntlmssp, mfsymlinks{extra}]\n      state: {state}\n      credentials:\n        username: alice\n        domain: LAB\n        password_file: nas.password\n",
            nodes()
        ),
    )
}

#[test]
fn a_failed_mount_puts_the_old_fstab_back() {
    let Some(ns) = Namespace::new("a_failed_mount_puts_the_old_fstab_back") else {
        return;
    };
    let cifs_here = std::fs::read_to_string("/proc/filesystems")
        .unwrap()
        .contains("cifs");
    eprintln!(
        "NOTE: this kernel {} CIFS; the mount of //127.0.0.1/data (port 1, where nothing listens) fails either way",
        if cifs_here { "has" } else { "lacks" }
    );
    let s = Sandbox::debian();
    s.write("/etc/fstab", FSTAB);
    let m = cifs_manifest(&s, ", port=1", "mounted");
    let out = apply(&s, &ns, &m, &["--json"]);
    out.expect(4);
    let report = out.json();
    let r = &report["resources"][1];
    assert_eq!(r["id"], "mount:/home/alice/net/home");
    assert_eq!(r["status"], "failed");
    let error = r["error"].as_str().unwrap();
    assert!(error.contains("mount -t cifs //127.0.0.1/data"), "{error}");
    assert!(
        error.contains("the previous /etc/fstab was restored"),
        "{error}"
    );
    assert_eq!(s.read("/etc/fstab"), FSTAB, "restored byte for byte");
    assert!(ns.mounts_at(&s.path("/home/alice/net/home")).is_empty());
    // The backup taken before the change is there too.
    assert_eq!(r["backups"].as_array().unwrap().len(), 1, "{r}");
    // The user resource is independent and done; the credentials file was written before the
    // fstab line, private.
    assert_eq!(report["resources"][0]["status"], "changed");
    let creds = s.path("/etc/provision/credentials/home-alice-net-home");
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let folder = creds.parent().unwrap();
    assert_eq!(
        std::fs::metadata(folder).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        format!("username=alice\npassword={PASSWORD}\ndomain=LAB\n")
    );
}

#[test]
fn findmnt_verify_rejects_an_fstab_that_would_mount_out_of_order() {
    let Some(ns) = Namespace::new("findmnt_verify_rejects_an_fstab_that_would_mount_out_of_order")
    else {
        return;
    };
    let s = Sandbox::debian();
    // An existing entry inside the new mount's target: appending /mnt/data after it would mount
    // the parent over the child at boot.
    let fstab = format!("{FSTAB}\n/dev/vdb1 /mnt/data/sub ext4 defaults,nofail 0 2\n");
    s.write("/etc/fstab", &fstab);
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{}resources:\n  - mount: {{target: /mnt/data, source: data, fstype: tmpfs}}\n",
            nodes()
        ),
    );
    let out = apply(&s, &ns, &m, &[]);
    out.expect(4);
    assert!(
        out.stdout
            .contains("findmnt --verify rejects the new fstab, which was not written: /mnt/data/sub: wrong order"),
        "{}",
        out.stdout
    );
    assert_eq!(s.read("/etc/fstab"), fstab);
    assert!(ns.mounts_at(&s.path("/mnt/data")).is_empty());
}

#[test]
fn fstab_entries_are_replaced_never_duplicated() {
    let s = Sandbox::debian();
    // Two lines for the same target, as another tool leaves them after a parameter change.
    let fstab = format!(
        "{FSTAB}\n//nas/old /home/alice/net/home cifs guest 0 0\n# keep me\n//nas/older /home/alice/net/home cifs guest 0 0\n"
    );
    s.write("/etc/fstab", &fstab);
    let m = cifs_manifest(&s, "", "present");
    s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"])
        .expect(0);
    let want = "//127.0.0.1/data /home/alice/net/home cifs credentials=/etc/provision/credentials/home-alice-net-home,uid=1000,gid=1000,iocharset=utf8,vers=3.0,sec=ntlmssp,mfsymlinks,nofail,_netdev 0 0";
    let new = s.read("/etc/fstab");
    assert_eq!(new, format!("{FSTAB}\n{want}\n# keep me\n"));

    // A parameter change replaces the line in place.
    let m = cifs_manifest(&s, ", vers=3.1.1", "present");
    let m_text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("vers=3.0, ", "");
    std::fs::write(&m, m_text).unwrap();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "ws01", "--diff"]);
    out.expect(0);
    assert!(
        out.stdout.contains("/etc/fstab changes (+1 -1 lines)"),
        "{}",
        out.stdout
    );
    let newer = s.read("/etc/fstab");
    let want = want
        .replace("vers=3.0,", "")
        .replace("mfsymlinks", "mfsymlinks,vers=3.1.1");
    assert_eq!(newer, format!("{FSTAB}\n{want}\n# keep me\n"));
    assert_eq!(entries(&newer, "/home/alice/net/home").len(), 1);
    s.run(&[
        "apply",
        m.to_str().unwrap(),
        "--node",
        "ws01",
        "--detailed-exitcodes",
    ])
    .expect(0);

    // Every change kept a backup of the fstab it replaced.
    let dir = s.path("/var/lib/provision/backups/etc");
    let mut kept: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("fstab.")
        })
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    kept.sort();
    let mut expected = vec![fstab, new];
    expected.sort();
    assert_eq!(kept, expected);

    // boot: false adds noauto (a laptop away from the share's network).
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("state: present", "state: present\n      boot: false");
    std::fs::write(&m, text).unwrap();
    s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"])
        .expect(0);
    let laptop = want.replace(",nofail,_netdev", ",noauto,nofail,_netdev");
    assert_eq!(
        s.read("/etc/fstab"),
        format!("{FSTAB}\n{laptop}\n# keep me\n")
    );
}

#[test]
fn the_password_appears_nowhere_but_the_credentials_file() {
    let s = Sandbox::debian();
    s.write("/etc/fstab", FSTAB);
    let m = cifs_manifest(&s, "", "present");
    let f = m.to_str().unwrap();
    let mut outputs = Vec::new();
    for args in [
        vec!["plan", f, "--node", "ws01"],
        vec!["apply", f, "--node", "ws01", "--diff", "-vvv"],
        vec!["apply", f, "--node", "ws01", "--json", "--diff"],
    ] {
        let out = s.run(&args);
        out.expect(0);
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    // A new password: the file changes, and still nothing shows it.
    s.manifest("nas.password", "second-Secret-9\n");
    let out = s.run(&["apply", f, "--node", "ws01", "--diff", "--json", "-vvv"]);
    out.expect(0);
    assert!(out.stdout.contains("<redacted>"), "{}", out.stdout);
    outputs.push(out.stdout);
    outputs.push(out.stderr);
    let creds = s.path("/etc/provision/credentials/home-alice-net-home");
    assert!(
        std::fs::read_to_string(&creds)
            .unwrap()
            .contains("password=second-Secret-9\n")
    );
    for text in &outputs {
        for secret in [PASSWORD, "second-Secret-9"] {
            assert!(!text.contains(secret), "output shows the password:\n{text}");
        }
    }
    // Every file under the root but the credentials file itself: fstab, backups, passwd...
    for (path, _) in s.snapshot() {
        let real = s.root().join(&path);
        if real == creds || !real.is_file() {
            continue;
        }
        let bytes = std::fs::read(&real).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD) && !text.contains("second-Secret-9"),
            "{path:?}"
        );
    }
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // From the environment instead of a file.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace("password_file: nas.password", "password_env: NAS_PASSWORD");
    std::fs::write(&m, text).unwrap();
    let out = common::run_with_env(
        &[
            "apply",
            f,
            "--node",
            "ws01",
            "--json",
            "--root",
            s.root().to_str().unwrap(),
        ],
        &[("NAS_PASSWORD", "third-Secret-7")],
    );
    out.expect(0);
    assert!(!out.stdout.contains("third-Secret-7") && !out.stderr.contains("third-Secret-7"));
    assert!(
        std::fs::read_to_string(&creds)
            .unwrap()
            .contains("password=third-Secret-7\n")
    );
    // Unset: that mount fails and says what to do; nothing else is touched.
    let out = s.run(&["apply", f, "--node", "ws01"]);
    out.expect(4);
    assert!(
        out.stdout
            .contains("NAS_PASSWORD that should hold the password is not set"),
        "{}",
        out.stdout
    );
}

/// `name` from PATH, or from the sbin folders a non-login root shell may not have on PATH.
fn sbin(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A Samba server of its own on 127.0.0.1, in a temporary folder, stopped on drop.
struct Samba {
    /// Config, passdb, share and logs; removed on drop, after the server stops.
    _dir: tempfile::TempDir,
    server: std::process::Child,
    port: u16,
}

impl Samba {
    fn start(test: &str) -> Option<Samba> {
        if !common::have_root(test) {
            return None;
        }
        let (Some(smbd), Some(smbpasswd)) = (sbin("smbd"), sbin("smbpasswd")) else {
            eprintln!(
                "SKIP {test}: smbd is not installed (apt-get install samba smbclient; .ci/run installs them)"
            );
            return None;
        };
        common::adopt_orphans();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in [
            "share", "private", "lock", "state", "cache", "pid", "log", "ncalrpc",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // A port of our own, so a machine's real Samba (445) is never involved.
        let port = 20000 + (std::process::id() % 20000) as u16;
        let conf = format!(
            "[global]\n  workgroup = LAB\n  server role = standalone server\n  interfaces = lo\n  bind interfaces only = yes\n  smb ports = {port}\n  private dir = {d}/private\n  lock directory = {d}/lock\n  state directory = {d}/state\n  cache directory = {d}/cache\n  pid directory = {d}/pid\n  ncalrpc dir = {d}/ncalrpc\n  log file = {d}/log/%m.log\n  passdb backend = tdbsam:{d}/private/passdb.tdb\n  username map = {d}/usermap\n  load printers = no\n  printcap name = /dev/null\n  disable spoolss = yes\n[data]\n  path = {d}/share\n  read only = no\n",
            d = d.display()
        );
        std::fs::write(d.join("smb.conf"), conf).unwrap();
        // The Samba user `alice` maps to root, so no Unix account is created on this machine.
        std::fs::write(d.join("usermap"), "root = alice\n").unwrap();
        let conf = d.join("smb.conf");
        let mut add = std::process::Command::new(smbpasswd)
            .args(["-c", conf.to_str().unwrap(), "-s", "-a", "root"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        add.stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n{PASSWORD}\n").as_bytes())
            .unwrap();
        assert!(add.wait().unwrap().success());
        use std::os::unix::process::CommandExt;
        let server = std::process::Command::new(smbd)
            .args(["-F", "--no-process-group", "-s", conf.to_str().unwrap()])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let samba = Samba {
            _dir: dir,
            server,
            port,
        };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed().as_secs() < 20,
                "smbd did not start listening on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(samba)
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // smbd forks a child per connection: stop the whole process group.
        let pgid = nix::unistd::Pid::from_raw(self.server.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.server.wait();
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        common::reap_group(pgid.as_raw());
    }
}

#[test]
fn the_preflight_logs_in_to_a_real_samba_server() {
    let Some(samba) = Samba::start("the_preflight_logs_in_to_a_real_samba_server") else {
        return;
    };
    let port = format!(", port={}", samba.port);

    // Wrong password: a clear error, and nothing written at all.
    let s = Sandbox::debian();
    s.write("/etc/fstab", FSTAB);
    let m = cifs_manifest(&s, &port, "present");
    let text = std::fs::read_to_string(&m).unwrap().replace(
        "      credentials:",
        "      verify: true\n      credentials:",
    );
    std::fs::write(&m, text).unwrap();
    s.manifest("nas.password", "not-the-password\n");
    s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"])
        .expect(4);
    // (The user resource ran; start over from its result so the comparison is about the mount.)
    let before = s.snapshot();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"]);
    out.expect(4);
    assert!(
        out.stdout.contains("pre-flight check failed: 127.0.0.1 rejected the login of LAB\\alice (NT_STATUS_LOGON_FAILURE): check the username, domain and password; nothing was written"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("not-the-password"));
    assert_eq!(s.snapshot(), before, "nothing written");
    assert_eq!(s.read("/etc/fstab"), FSTAB);
    assert!(
        !s.path("/etc/provision/credentials/home-alice-net-home")
            .exists()
    );

    // The right password: the check passes and the entry is written.
    s.manifest("nas.password", &format!("{PASSWORD}\n"));
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"]);
    out.expect(0);
    assert!(
        s.read("/etc/fstab")
            .contains("//127.0.0.1/data /home/alice/net/home cifs")
    );

    // A server that does not answer.
    let text = std::fs::read_to_string(&m)
        .unwrap()
        .replace(&format!("port={}", samba.port), "port=1");
    std::fs::write(&m, text).unwrap();
    let out = s.run(&["apply", m.to_str().unwrap(), "--node", "ws01"]);
    out.expect(4);
    assert!(
        out.stdout.contains("does not answer on the SMB port"),
        "{}",
        out.stdout
    );
}

/// The agent repairs mount drift at once: an unmount behind its back (seen in the live mount
/// table, which `poll` reports changed) is mounted again, and a hand edit that drops the fstab
/// line is put back, both reported as drift on the status API. The agent runs in the test's
/// private mount namespace; nothing outside it is mounted.
#[test]
fn the_agent_remounts_what_was_unmounted_and_restores_its_fstab_line() {
    use std::time::Duration;
    let Some(ns) = Namespace::new("the_agent_remounts_what_was_unmounted") else {
        return;
    };
    let s = Sandbox::debian();
    s.write("/etc/fstab", FSTAB);
    let real = s.path("/mnt/scratch");
    let m = s.manifest(
        "m.yaml",
        &format!(
            "{}resources:\n  - mount: {{target: /mnt/scratch, source: scratch, fstype: tmpfs, options: [size=1m]}}\n",
            nodes()
        ),
    );
    let holder = ns.pid().to_string();
    let mut agent = RunningAgent::start(&s, &m, "ws01", &["nsenter", "-t", &holder, "-m", "--"]);
    let limit = Duration::from_secs(30);
    agent.until("the first reconcile", limit, |a| a.status().is_some());
    assert!(!ns.mounts_at(&real).is_empty(), "{}", agent.log());
    assert_eq!(
        agent.status().unwrap()["last_reconcile"]["summary"]["failed"],
        0,
        "{}",
        agent.log()
    );
    assert_eq!(agent.drift_for("mount:/mnt/scratch"), 0);

    // Unmounted behind the agent's back: mounted again, and reported as drift.
    ns.sh(&format!("umount '{}'", real.display()));
    agent.until("the remount, as drift", limit, |a| {
        !ns.mounts_at(&real).is_empty() && a.drift_for("mount:/mnt/scratch") == 1
    });

    // The fstab line removed by hand: put back, the other lines kept byte for byte.
    let fstab = s.path("/etc/fstab");
    let with_line = std::fs::read_to_string(&fstab).unwrap();
    assert_eq!(entries(&with_line, "/mnt/scratch").len(), 1);
    std::fs::write(&fstab, FSTAB).unwrap();
    agent.until("the fstab line put back, as drift", limit, |a| {
        std::fs::read_to_string(&fstab).is_ok_and(|t| t == with_line)
            && a.drift_for("mount:/mnt/scratch") == 2
    });
    agent.stop();
}
