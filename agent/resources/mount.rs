//! `mount`: one filesystem, in `/etc/fstab` and in the live mount table.
//!
//! Order of work, so that a failure leaves the node as it was: the optional CIFS pre-flight (before
//! anything is written), the mount point, the credentials file, the fstab entry (backup first,
//! checked with `findmnt --verify` before the atomic rename), then the live mount. If mounting
//! fails, the old fstab is put back and the error says so. Unmounting comes before the entry
//! leaves fstab.
//!
//! The live state comes from `/proc/self/mountinfo`: a target mounted from another source or with
//! other options is remounted; an automount placeholder (`autofs`) is not taken for the share.

use std::path::Path;

use super::cifs::Credentials;
use super::fstab::{self, Entry};
use super::ownership::{Ownership, Seen};
use crate::engine::{Change, ContentDiff, DriftWatch, MountAction, Need, Resource};
use crate::host::mounts::{self, Mounted};
use crate::host::{Error, Host, Kind, Meta, Result, Stat};
use crate::manifest::model::MountState;
use crate::secret::Secret;

#[derive(Debug)]
pub struct Mount {
    pub target: String,
    pub source: String,
    pub fstype: String,
    /// fstab options as the manifest gives them (defaults added); `uid=`/`gid=` may still be names.
    pub options: Vec<String>,
    pub dump: u8,
    pub pass: u8,
    pub state: MountState,
    pub credentials: Option<Credentials>,
    pub verify: bool,
    /// The mount point directory (the directory under the mount).
    pub point: Ownership,
    /// The fstab to edit (`/etc/fstab`).
    pub fstab: String,
}

/// The mount point as found.
#[derive(Debug)]
pub enum Point {
    Missing,
    /// A directory with nothing mounted on it.
    Directory(Seen),
    /// Something is mounted on it, so the directory underneath cannot be seen.
    Covered,
}

/// The credentials file as found.
#[derive(Debug)]
pub struct CredsFound {
    content: Option<Secret>,
    stat: Option<Stat>,
}

#[derive(Debug)]
pub struct Found {
    fstab: Option<String>,
    /// The entry for this target, and how many lines name the target.
    entry: Option<Entry>,
    lines: usize,
    /// The entry as it should be, `uid=`/`gid=` resolved to numbers through the root's accounts.
    want: Entry,
    /// Why some `uid=`/`gid=` could not be resolved; apply refuses to write then.
    unresolved: Vec<String>,
    /// The mount at the target (the topmost one that is not an automount placeholder).
    live: Option<Mounted>,
    /// An automount placeholder is at the target.
    placeholder: bool,
    /// What differs between the live mount and `want`.
    live_differs: LiveDiff,
    point: Point,
    creds: Option<CredsFound>,
}

#[derive(Debug, Default)]
struct LiveDiff {
    /// Source or filesystem type: needs unmount and mount.
    replace: Vec<String>,
    /// Options: a remount may do.
    remount: Vec<String>,
}

/// Options the kernel never sees (mount(8), systemd and helpers use them), so the live mount
/// cannot show them.
fn userspace_only(option: &str) -> bool {
    let key = option.split('=').next().unwrap_or(option);
    matches!(
        key,
        "defaults"
            | "auto"
            | "noauto"
            | "nofail"
            | "_netdev"
            | "user"
            | "users"
            | "nouser"
            | "owner"
            | "group"
            | "comment"
            | "credentials"
            | "cred"
            | "bind"
            | "rbind"
            | "sloppy"
            | "loop"
            | "helper"
            | "uhelper"
    ) || key.starts_with("x-")
}

/// Per-mount flags the kernel always shows when set, with the flag that undoes them.
const FLAGS: [(&str, &str); 5] = [
    ("ro", "rw"),
    ("nosuid", "suid"),
    ("nodev", "dev"),
    ("noexec", "exec"),
    ("noatime", "relatime"),
];

/// A size such as `1024k`, `2m` or `1g`, in bytes; `None` for percentages and other forms.
fn size(v: &str) -> Option<u64> {
    let (digits, unit) = match v.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => v.split_at(i),
        None => (v, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    Some(n * scale)
}

/// Whether two values of option `key` mean the same thing (`mode=0755` is `mode=755`,
/// `size=1m` is `size=1024k`).
fn same_value(key: &str, want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    match key {
        "mode" | "file_mode" | "dir_mode" | "umask" | "fmask" | "dmask" => {
            u32::from_str_radix(want, 8).ok() == u32::from_str_radix(have, 8).ok()
                && u32::from_str_radix(want, 8).is_ok()
        }
        "size" | "nr_blocks" | "nr_inodes" | "rsize" | "wsize" => match size(want) {
            Some(w) => size(have) == Some(w),
            // A percentage: the kernel shows the bytes it came to, which cannot be compared.
            None => true,
        },
        _ => false,
    }
}

/// The options of `want` that the live mount shows differently. Options the kernel does not
/// show at all cannot be checked and are taken as they are.
fn option_differences(want: &[String], live: &Mounted) -> Vec<String> {
    let shown: Vec<&str> = live
        .mount_options
        .iter()
        .chain(&live.super_options)
        .map(String::as_str)
        .collect();
    let mut out = Vec::new();
    for option in want.iter().filter(|o| !userspace_only(o)) {
        match option.split_once('=') {
            Some((key, value)) => {
                let have = shown
                    .iter()
                    .find_map(|s| s.strip_prefix(key).and_then(|r| r.strip_prefix('=')));
                if let Some(have) = have
                    && !same_value(key, value, have)
                {
                    out.push(format!("{option}, mounted with {key}={have}"));
                }
            }
            None => {
                for (set, unset) in FLAGS {
                    if option == set && !shown.contains(&set) {
                        out.push(format!("{set}, mounted {unset}"));
                    } else if option == unset && shown.contains(&set) {
                        out.push(format!("{unset}, mounted {set}"));
                    }
                }
            }
        }
    }
    out
}

fn is_bind(options: &[String]) -> bool {
    options.iter().any(|o| o == "bind" || o == "rbind")
}

/// The mount that holds real path `path`: the one with the longest target above it.
fn holder<'a>(table: &'a [Mounted], path: &Path, except: &str) -> Option<&'a Mounted> {
    table
        .iter()
        .filter(|m| m.target != except && path.starts_with(&m.target))
        .max_by_key(|m| (m.target.len(), m.id))
}

/// A device source (`UUID=...`, `/dev/...`) as the device path it names, when it can be found.
fn device_path(source: &str) -> Option<std::path::PathBuf> {
    let by = [
        ("UUID=", "by-uuid"),
        ("LABEL=", "by-label"),
        ("PARTUUID=", "by-partuuid"),
        ("PARTLABEL=", "by-partlabel"),
    ];
    for (prefix, dir) in by {
        if let Some(v) = source.strip_prefix(prefix) {
            return std::fs::canonicalize(format!("/dev/disk/{dir}/{v}")).ok();
        }
    }
    if source.starts_with("/dev/") {
        return std::fs::canonicalize(source).ok();
    }
    None
}

impl Mount {
    fn kernel_fstype_matches(&self, live: &str) -> bool {
        let cifs = |t: &str| t == "cifs" || t == "smb3";
        live == self.fstype || (cifs(live) && cifs(&self.fstype)) || self.fstype == "auto"
    }

    /// What differs between the live mount and `want`.
    fn compare(&self, host: &Host, want: &Entry, live: &Mounted, table: &[Mounted]) -> LiveDiff {
        let mut d = LiveDiff::default();
        if is_bind(&want.options) {
            // A bind mount shows the device and directory it came from, not the source path.
            if let Ok(real) = host.resolve(&want.source)
                && let Ok(real) = std::fs::canonicalize(&real)
                && let Some(h) = holder(table, &real, &live.target)
            {
                let rest = real.strip_prefix(&h.target).unwrap_or(&real);
                let expected = Path::new(&h.root).join(rest);
                if live.dev != h.dev || Path::new(&live.root) != expected {
                    d.replace.push(format!(
                        "source {}, mounted from {}{}",
                        want.source,
                        live.source,
                        if live.root == "/" { "" } else { &live.root }
                    ));
                }
            }
        } else {
            let same_source = if want.source.starts_with("//") {
                want.source
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(live.source.trim_end_matches('/'))
            } else if let Some(dev) = device_path(&want.source) {
                device_path(&live.source).is_none_or(|l| l == dev)
            } else if want.source.contains('=') {
                // A tag whose device is not here: nothing to compare against.
                true
            } else {
                want.source == live.source
            };
            if !same_source {
                d.replace.push(format!(
                    "source {}, mounted from {}",
                    want.source, live.source
                ));
            }
            if !self.kernel_fstype_matches(&live.fstype) {
                d.replace
                    .push(format!("type {}, mounted as {}", want.fstype, live.fstype));
            }
        }
        d.remount = option_differences(&want.options, live);
        d
    }

    /// The entry as it should be in fstab, `uid=`/`gid=` names resolved to numbers under the
    /// root, and the options whose name is not there (yet: in check mode the `user:` resource that
    /// creates it has not run). Those stay names, so a plan still shows the line.
    fn wanted_entry(&self, host: &Host) -> Result<(Entry, Vec<String>)> {
        let mut accounts = None;
        let mut options = Vec::with_capacity(self.options.len());
        let mut unresolved = Vec::new();
        for option in &self.options {
            let resolved = match option.split_once('=') {
                Some((key @ ("uid" | "gid"), name))
                    if !name.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    let a = match &mut accounts {
                        Some(a) => a,
                        None => accounts.insert(host.accounts()?),
                    };
                    let id = if key == "uid" {
                        a.uid(name)
                    } else {
                        a.gid(name)
                    };
                    match id {
                        Some(id) => format!("{key}={id}"),
                        None => {
                            let (noun, file) = if key == "uid" {
                                ("user", "/etc/passwd")
                            } else {
                                ("group", "/etc/group")
                            };
                            unresolved.push(format!(
                                "{key}={name}: {noun} `{name}` does not exist in {}{file}; the `{noun}:` resource that creates it must run first (did it fail?)",
                                host.root().dir().display()
                            ));
                            option.clone()
                        }
                    }
                }
                _ => option.clone(),
            };
            options.push(resolved);
        }
        let entry = Entry {
            source: self.source.clone(),
            target: self.target.clone(),
            fstype: self.fstype.clone(),
            options,
            dump: self.dump,
            pass: self.pass,
        };
        Ok((entry, unresolved))
    }

    /// The options for the `mount` command: the fstab options with node paths (the credentials
    /// file) resolved under the root.
    fn command_options(&self, host: &Host, want: &Entry) -> Result<String> {
        let mut out = Vec::new();
        for o in &want.options {
            match o.split_once('=') {
                Some((key @ ("credentials" | "cred"), path)) => {
                    out.push(format!("{key}={}", host.resolve(path)?.display()));
                }
                _ if o == "defaults" || o == "noauto" => {}
                _ => out.push(o.clone()),
            }
        }
        Ok(out.join(","))
    }

    fn source_for_command(&self, host: &Host) -> Result<String> {
        if is_bind(&self.options) {
            return Ok(host.resolve(&self.source)?.display().to_string());
        }
        Ok(self.source.clone())
    }

    fn fstab_text(&self, found: &Found) -> String {
        let old = found.fstab.as_deref().unwrap_or("");
        if self.state == MountState::Absent {
            fstab::render(old, &self.target, None)
        } else {
            fstab::render(old, &self.target, Some(&found.want.line()))
        }
    }

    fn port(&self) -> Option<&str> {
        self.options.iter().find_map(|o| o.strip_prefix("port="))
    }

    /// fstab keeps its mode and owner; a new one is 0644.
    fn fstab_meta(&self, host: &Host) -> Result<Meta> {
        Ok(match host.stat(&self.fstab)? {
            Some(s) => Meta {
                mode: s.mode,
                uid: s.uid,
                gid: s.gid,
            },
            None => Meta::own(0o644),
        })
    }

    /// Writes the new fstab after `findmnt --verify` finds no new error in it.
    fn write_fstab(&self, host: &Host, found: &Found, text: &str) -> Result<()> {
        if found.fstab.is_some() {
            host.backup(&self.fstab)?;
        }
        let meta = self.fstab_meta(host)?;
        let old = host.resolve(&self.fstab)?;
        let under_root = host.root().dir() != Path::new("/");
        host.ensure_parent(&self.fstab)?;
        host.write_checked(&self.fstab, text.as_bytes(), meta, &mut |temp| {
            verify_fstab(
                found.fstab.as_ref().map(|_| old.as_path()),
                temp,
                &self.target,
                under_root,
            )
            .map_err(Error::Other)
        })
    }

    /// Puts the fstab found at the start of apply back.
    fn restore_fstab(&self, host: &Host, found: &Found) -> Result<()> {
        match &found.fstab {
            Some(old) => host.write(&self.fstab, old.as_bytes(), self.fstab_meta(host)?, None),
            None => host.remove_file(&self.fstab),
        }
    }

    fn live_change(&self, found: &Found) -> Option<Change> {
        let mounted = found.live.is_some();
        match self.state {
            MountState::Present => None,
            MountState::Unmounted | MountState::Absent => mounted.then(|| Change::Mount {
                action: MountAction::Unmount,
                why: Vec::new(),
            }),
            MountState::Mounted => {
                let Some(_) = &found.live else {
                    let why = if found.placeholder {
                        vec!["only an automount placeholder is there".to_owned()]
                    } else {
                        vec!["not mounted".to_owned()]
                    };
                    return Some(Change::Mount {
                        action: MountAction::Mount,
                        why,
                    });
                };
                let d = &found.live_differs;
                if !d.replace.is_empty() {
                    return Some(Change::Mount {
                        action: MountAction::Replace,
                        why: d.replace.clone(),
                    });
                }
                let mut why = d.remount.clone();
                // Options changed in fstab while mounted: the mount was made with the old ones,
                // some of which the kernel does not show, so remount to be sure.
                if let Some(entry) = &found.entry {
                    let kernel = |e: &Entry| -> Vec<String> {
                        e.options
                            .iter()
                            .filter(|o| !userspace_only(o))
                            .cloned()
                            .collect()
                    };
                    if entry.source != found.want.source || entry.fstype != found.want.fstype {
                        return Some(Change::Mount {
                            action: MountAction::Replace,
                            why: vec![format!(
                                "fstab had {} {}, mounted from the old entry",
                                entry.source, entry.fstype
                            )],
                        });
                    }
                    if kernel(entry) != kernel(&found.want) && why.is_empty() {
                        why.push(format!(
                            "options {} in fstab were {}",
                            found.want.options.join(","),
                            entry.options.join(",")
                        ));
                    }
                }
                (!why.is_empty()).then_some(Change::Mount {
                    action: MountAction::Remount,
                    why,
                })
            }
        }
    }

    /// Mounts, remounts or unmounts as `change` says.
    fn apply_live(&self, host: &Host, found: &Found, change: &Change) -> Result<()> {
        let Change::Mount { action, .. } = change else {
            return Ok(());
        };
        let target = host.resolve(&self.target)?;
        let options = self.command_options(host, &found.want)?;
        let source = self.source_for_command(host)?;
        match action {
            MountAction::Mount => mounts::mount(&self.fstype, &source, &options, &target),
            MountAction::Remount => mounts::remount(&options, &target).or_else(|remount| {
                // Some filesystems (CIFS among them) cannot change options in place.
                mounts::umount(&target).map_err(|e| {
                    Error::Other(format!(
                        "{remount}, and unmounting to mount again failed too: {e}; the new options apply at the next mount"
                    ))
                })?;
                mounts::mount(&self.fstype, &source, &options, &target)
            }),
            MountAction::Replace => {
                mounts::umount(&target)?;
                mounts::mount(&self.fstype, &source, &options, &target)
            }
            MountAction::Unmount => mounts::umount(&target),
        }
    }
}

/// Runs `findmnt --verify` on the old and the new fstab, and refuses the new one if it has a
/// parse error or an error the old one did not have. Under `--root`, findmnt looks for targets
/// and sources on the real machine, so its "unreachable" findings about this entry say nothing
/// and are left out.
fn verify_fstab(
    old: Option<&Path>,
    new: &Path,
    target: &str,
    under_root: bool,
) -> Result<(), String> {
    let findings = |path: &Path| -> Result<(usize, Vec<(String, String)>), String> {
        let p = path.to_string_lossy();
        let (_, text) = mounts::run_output(
            "findmnt",
            &["--verify", "--tab-file", &p],
            &[],
            mounts::COMMAND_TIMEOUT,
        )
        .map_err(|e| format!("cannot check the new fstab with findmnt: {e}"))?;
        let mut parse_errors = 0;
        let mut errors = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(n) = line.split(" parse error").next()
                && line.contains(" parse error")
                && let Ok(n) = n.trim().parse::<usize>()
            {
                parse_errors = parse_errors.max(n);
            } else if let Some(msg) = line.trim_start().strip_prefix("[E] ") {
                errors.push((current.clone(), msg.to_owned()));
            } else if !line.starts_with(char::is_whitespace) && line.starts_with('/') {
                current = line.to_owned();
            }
        }
        Ok((parse_errors, errors))
    };
    let (old_parse, mut old_errors) = match old {
        Some(p) => findings(p)?,
        None => (0, Vec::new()),
    };
    let (new_parse, new_errors) = findings(new)?;
    if new_parse > old_parse {
        return Err(format!(
            "findmnt --verify finds {new_parse} parse error(s) in the new fstab; it was not written"
        ));
    }
    let mut added = Vec::new();
    for (t, msg) in new_errors {
        if let Some(i) = old_errors.iter().position(|e| e.0 == t && e.1 == msg) {
            old_errors.swap_remove(i);
            continue;
        }
        let environment = msg.starts_with("unreachable on boot required")
            || msg.starts_with("unreachable source");
        if under_root && t == target && environment {
            continue;
        }
        added.push(format!("{t}: {msg}"));
    }
    if added.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "findmnt --verify rejects the new fstab, which was not written: {}",
            added.join("; ")
        ))
    }
}

/// What is mounted at real path `target`: the mount that is seen there (the last one mounted,
/// leaving out automount placeholders, which stand in for a share that is not mounted yet),
/// whether a placeholder is there, and whether anything at all is.
fn at_target(table: &[Mounted], target: &str) -> (Option<Mounted>, bool, bool) {
    let here: Vec<&Mounted> = table.iter().filter(|m| m.target == target).collect();
    let placeholder = here.iter().any(|m| m.is_placeholder());
    let live = here
        .iter()
        .rev()
        .find(|m| !m.is_placeholder())
        .map(|m| (*m).clone());
    (live, placeholder, !here.is_empty())
}

impl Resource for Mount {
    type Observed = Found;

    fn id(&self) -> String {
        format!("mount:{}", self.target)
    }

    /// fstab, the credentials file, and the live mount table: an unmount, a mount from another
    /// source or a hand edit of either file is repaired at once.
    fn drift_watch(&self) -> Vec<DriftWatch> {
        let mut watch = vec![DriftWatch::Path(self.fstab.clone()), DriftWatch::Mounts];
        if let Some(c) = &self.credentials {
            watch.push(DriftWatch::Path(c.path.clone()));
        }
        watch
    }

    fn needs(&self) -> Vec<Need> {
        if self.state == MountState::Absent {
            return Vec::new();
        }
        let mut needs = super::owner_needs(&self.target, &self.point);
        for o in &self.options {
            match o.split_once('=') {
                Some(("uid", name)) if !name.bytes().all(|b| b.is_ascii_digit()) => {
                    needs.push(Need::User(name.to_owned()));
                }
                Some(("gid", name)) if !name.bytes().all(|b| b.is_ascii_digit()) => {
                    needs.push(Need::Group(name.to_owned()));
                }
                _ => {}
            }
        }
        if is_bind(&self.options) {
            needs.push(Need::Directory(self.source.clone()));
        }
        needs
    }

    fn observe(&self, host: &Host) -> Result<Found> {
        let fstab = host
            .read(&self.fstab)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let (entry, lines) = fstab
            .as_deref()
            .map_or((None, 0), |t| fstab::find(t, &self.target));
        let (want, unresolved) = self.wanted_entry(host)?;
        let real = host.resolve(&self.target)?;
        let real_s = real.to_string_lossy();
        let table = mounts::read()?;
        let (live, placeholder, covered) = at_target(&table, &real_s);
        let live_differs = match &live {
            Some(l) => self.compare(host, &want, l, &table),
            None => LiveDiff::default(),
        };
        let point = if covered {
            Point::Covered
        } else {
            match host.stat(&self.target)? {
                None => Point::Missing,
                Some(s) if s.kind == Kind::Directory => {
                    Point::Directory(Seen::new(s, &host.accounts()?))
                }
                Some(s) => {
                    return Err(Error::WrongType {
                        path: self.target.clone(),
                        found: s.kind.describe(),
                        expected: "a directory (a mount point)",
                    });
                }
            }
        };
        let creds = match &self.credentials {
            None => None,
            Some(c) => Some(CredsFound {
                content: host.read(&c.path)?.map(Secret::new),
                stat: host.stat(&c.path)?,
            }),
        };
        Ok(Found {
            fstab,
            entry,
            lines,
            want,
            unresolved,
            live,
            placeholder,
            live_differs,
            point,
            creds,
        })
    }

    fn diff(&self, found: &Found) -> Vec<Change> {
        let mut changes = Vec::new();
        let present = self.state != MountState::Absent;
        if present {
            match &found.point {
                Point::Missing => {
                    changes.push(Change::Create {
                        what: "mount point directory".into(),
                    });
                    changes.extend(self.point.diff(None));
                }
                Point::Directory(seen) => changes.extend(self.point.diff(Some(seen))),
                Point::Covered => {}
            }
        }
        if let (Some(c), Some(f)) = (&self.credentials, &found.creds) {
            match (present, &f.content) {
                (true, None) => changes.push(Change::Create {
                    what: format!("credentials file {}", c.path),
                }),
                (true, Some(old)) if old != &c.file() => changes.push(Change::Edit {
                    file: c.path.clone(),
                    diff: ContentDiff::between(&c.path, None, b"", true),
                }),
                (false, Some(_)) => changes.push(Change::Remove {
                    what: format!("credentials file {}", c.path),
                }),
                _ => {}
            }
            if present
                && let Some(stat) = f.stat
                && stat.mode != 0o600
            {
                changes.push(Change::Attribute {
                    name: format!("mode of {}", c.path),
                    from: Some(format!("{:04o}", stat.mode)),
                    to: Some("0600".into()),
                });
            }
        }
        let in_sync = if present {
            found.lines == 1 && found.entry.as_ref() == Some(&found.want)
        } else {
            found.lines == 0
        };
        if !in_sync {
            let old = found.fstab.as_deref().unwrap_or("");
            let new = self.fstab_text(found);
            changes.push(Change::Edit {
                file: self.fstab.clone(),
                diff: ContentDiff::between(
                    &self.fstab,
                    Some(old.as_bytes()),
                    new.as_bytes(),
                    false,
                ),
            });
        }
        changes.extend(self.live_change(found));
        changes
    }

    fn apply(&self, host: &Host, found: &Found, changes: &[Change]) -> Result<()> {
        if let Some(why) = found.unresolved.first()
            && self.state != MountState::Absent
        {
            return Err(Error::Other(why.clone()));
        }
        let live = changes.iter().find(|c| matches!(c, Change::Mount { .. }));
        let fstab_changes = changes
            .iter()
            .any(|c| matches!(c, Change::Edit { file, .. } if *file == self.fstab));
        if self.verify
            && self.state != MountState::Absent
            && let Some(c) = &self.credentials
        {
            super::cifs::verify(&self.source, self.port(), c).map_err(Error::Other)?;
        }
        if self.state == MountState::Absent || self.state == MountState::Unmounted {
            if let Some(change) = live {
                self.apply_live(host, found, change)?;
            }
            if fstab_changes {
                self.write_fstab(host, found, &self.fstab_text(found))?;
            }
            if let (Some(c), Some(f)) = (&self.credentials, &found.creds)
                && self.state == MountState::Absent
                && f.content.is_some()
            {
                host.remove_file(&c.path)?;
            }
            if self.state == MountState::Unmounted {
                self.fix_point(host, found)?;
                self.write_credentials(host, found)?;
            }
            return Ok(());
        }
        self.fix_point(host, found)?;
        self.write_credentials(host, found)?;
        if fstab_changes {
            self.write_fstab(host, found, &self.fstab_text(found))?;
        }
        if let Some(change) = live
            && let Err(e) = self.apply_live(host, found, change)
        {
            if !fstab_changes {
                return Err(e);
            }
            return Err(match self.restore_fstab(host, found) {
                Ok(()) => Error::Other(format!("{e}; the previous {} was restored", self.fstab)),
                Err(r) => Error::Other(format!(
                    "{e}; restoring the previous {} failed too: {r} (a backup is in {}/backups)",
                    self.fstab,
                    crate::host::STATE_DIR
                )),
            });
        }
        Ok(())
    }
}

impl Mount {
    fn fix_point(&self, host: &Host, found: &Found) -> Result<()> {
        match &found.point {
            Point::Missing => {
                let meta = self.point.meta(host, None)?;
                host.create_dir(&self.target, meta)
            }
            Point::Directory(seen) if !self.point.diff(Some(seen)).is_empty() => {
                let meta = self.point.meta(host, Some(seen))?;
                host.set_meta(&self.target, meta)
            }
            _ => Ok(()),
        }
    }

    /// Writes the credentials file (mode 0600, owned by whoever runs provision: root on a node)
    /// when it is missing, different or not private.
    fn write_credentials(&self, host: &Host, found: &Found) -> Result<()> {
        let (Some(c), Some(f)) = (&self.credentials, &found.creds) else {
            return Ok(());
        };
        let file = c.file();
        let meta = Meta::own(0o600);
        if f.content.as_ref() != Some(&file) {
            // A folder made for credentials is private too.
            if let Some(parent) = Path::new(&c.path).parent()
                && host.stat(&parent.to_string_lossy())?.is_none()
            {
                host.create_dir(&parent.to_string_lossy(), Meta::own(0o700))?;
            }
            host.write(&c.path, file.expose(), meta, None)?;
        } else if f.stat.is_some_and(|s| s.mode != 0o600) {
            host.set_meta(&c.path, meta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(mount_opts: &str, super_opts: &str) -> Mounted {
        let line = format!("35 22 0:31 / /mnt/t {mount_opts} shared:1 - tmpfs tmpfs {super_opts}");
        mounts::parse(&line).remove(0)
    }

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn equal_options_in_other_spellings_match() {
        let l = live("rw,nosuid,relatime", "rw,size=1024k,mode=755,uid=1000");
        let want = opts(&[
            "size=1m",
            "mode=0755",
            "uid=1000",
            "nosuid",
            "nofail",
            "x-systemd.automount",
        ]);
        assert_eq!(option_differences(&want, &l), Vec::<String>::new());
    }

    #[test]
    fn changed_options_are_named() {
        let l = live("rw,relatime", "rw,size=1024k");
        let d = option_differences(&opts(&["size=2m", "ro", "noexec"]), &l);
        assert_eq!(
            d,
            [
                "size=2m, mounted with size=1024k",
                "ro, mounted rw",
                "noexec, mounted exec"
            ]
        );
        let l = live("ro,nosuid", "ro");
        let d = option_differences(&opts(&["rw", "suid"]), &l);
        assert_eq!(d, ["rw, mounted ro", "suid, mounted nosuid"]);
    }

    #[test]
    fn options_the_kernel_does_not_show_are_not_differences() {
        let l = live("rw", "rw");
        let d = option_differences(
            &opts(&[
                "credentials=/etc/x",
                "iocharset=utf8",
                "mfsymlinks",
                "size=50%",
            ]),
            &l,
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn an_automount_placeholder_is_not_the_share() {
        let autofs = "40 22 0:50 / /mnt/share rw,relatime shared:20 - autofs systemd-1 rw,fd=44,pgrp=1,timeout=0,minproto=5,maxproto=5,direct\n";
        let cifs =
            "41 40 0:51 / /mnt/share rw,relatime shared:21 - cifs //nas/data rw,vers=3.1.1\n";
        let table = mounts::parse(autofs);
        let (live, placeholder, covered) = at_target(&table, "/mnt/share");
        assert!(live.is_none() && placeholder && covered);
        let table = mounts::parse(&format!("{autofs}{cifs}"));
        let (live, placeholder, _) = at_target(&table, "/mnt/share");
        assert_eq!(live.unwrap().source, "//nas/data");
        assert!(placeholder);
        let m = Mount {
            target: "/mnt/share".into(),
            source: "//nas/data".into(),
            fstype: "cifs".into(),
            options: vec!["x-systemd.automount".into()],
            dump: 0,
            pass: 0,
            state: MountState::Mounted,
            credentials: None,
            verify: false,
            point: Ownership {
                owner: None,
                group: None,
                mode: None,
                default_mode: 0o755,
            },
            fstab: "/etc/fstab".into(),
        };
        let found = Found {
            fstab: None,
            entry: None,
            lines: 1,
            want: Entry::parse("//nas/data /mnt/share cifs x-systemd.automount 0 0").unwrap(),
            unresolved: Vec::new(),
            live: None,
            placeholder: true,
            live_differs: LiveDiff::default(),
            point: Point::Covered,
            creds: None,
        };
        assert_eq!(
            m.live_change(&found),
            Some(Change::Mount {
                action: MountAction::Mount,
                why: vec!["only an automount placeholder is there".into()],
            })
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1024k"), Some(1 << 20));
        assert_eq!(size("1m"), Some(1 << 20));
        assert_eq!(size("3"), Some(3));
        assert_eq!(size("50%"), None);
        assert!(same_value("mode", "0700", "700"));
        assert!(!same_value("mode", "0700", "755"));
        assert!(!same_value("vers", "3.0", "3.1.1"));
    }
}
