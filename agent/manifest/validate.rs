//! Every check a manifest must pass before anything is touched. Each check adds to one list, so a
//! user sees all problems in one run instead of fixing them one at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Component, Path};

use super::diagnostic::Diagnostic;
use super::model::{CommandSpec, MountSpec, ProbeSpec, ResourceSpec, ServiceSpec, State};
use super::select::NodeSet;
use super::{Manifest, Origin};

mod dask;
mod jupyter;

pub fn validate(m: &Manifest, errors: &mut Vec<Diagnostic>) {
    let mut v = Validator { m, errors };
    v.cluster();
    v.conda();
    v.nodes();
    v.resources();
    v.references();
    v.cycles();
}

struct Validator<'a> {
    m: &'a Manifest,
    errors: &'a mut Vec<Diagnostic>,
}

/// A hostname: dot-separated RFC 1123 labels (letters, digits, hyphens; no leading or trailing
/// hyphen; 1-63 characters each; 253 in all).
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A user or group name as `useradd` accepts it by default.
pub fn is_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && name.len() <= 32
        && name
            .trim_end_matches('$')
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why `addr` is not `host:port` (a name or address, and a port 1-65535), if it is not.
pub fn host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err("has no :port".into());
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || !(is_hostname(host) || host.parse::<IpAddr>().is_ok()) {
        return Err(format!("`{host}` is not a host name or address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("`{port}` is not a port (1-65535)")),
    }
}

/// Why `path` cannot name a managed file, if it cannot.
pub fn path_problem(path: &str) -> Option<&'static str> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Some("is not an absolute path");
    }
    // Control characters first: what follows a newline is no part of the path a reader sees.
    if path.contains('\0') {
        return Some("contains a NUL byte");
    }
    if path.chars().any(char::is_control) {
        return Some(
            "contains a control character (a newline, tab or the like), which would break the files and reports that name it",
        );
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Some("contains `..`, which could leave the managed root");
    }
    if path
        .split('/')
        .skip(1)
        .any(|part| part == "." || part.is_empty())
        && path != "/"
    {
        return Some("contains an empty or `.` component");
    }
    if path == "/" {
        return Some("is the root directory itself");
    }
    None
}

/// What a path written by provision is: where [`reserved_problem`] puts its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A file or folder provision writes or re-owns (file, directory, hosts, keys, envs ...).
    Path,
    /// A mount point: it hides what is under it.
    MountPoint,
    /// A user's home, created when missing (Debian's own accounts have homes such as /bin or /dev).
    Home,
}

/// System folders that no file, directory or mount may be: replacing, re-owning or mounting
/// over one breaks the node (`/` itself is refused by [`path_problem`]).
const SYSTEM_DIRS: &[&str] = &[
    "/etc", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/run",
];

/// Whether `path` is `dir` or inside it.
fn within(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Why provision must not write at `path` (already free of [`path_problem`]s), if it must not:
/// the kernel's own filesystems, provision's own state, device nodes, system folders themselves.
pub fn reserved_problem(path: &str, what: Written) -> Option<String> {
    let path = path.trim_end_matches('/');
    for kernel in ["/proc", "/sys"] {
        if within(path, kernel) {
            return Some(format!(
                "is in {kernel}, a filesystem the kernel makes up; nothing there is provision's to write"
            ));
        }
    }
    if within(path, crate::host::STATE_DIR) {
        return Some(format!(
            "is in {}, provision's own state (its lock, backups and agent files)",
            crate::host::STATE_DIR
        ));
    }
    if what == Written::Path && within(path, "/dev") {
        return Some("is in /dev, where the kernel and udev keep device nodes".into());
    }
    if what != Written::Home && SYSTEM_DIRS.contains(&path) {
        return Some(match what {
            Written::MountPoint => {
                format!("is the system folder {path}, which a mount would hide")
            }
            _ => format!(
                "is the system folder {path} itself, which provision must not replace or re-own"
            ),
        });
    }
    None
}

/// A folder as a message shows it: the current folder is `.`, not an empty string.
fn shown(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

impl Validator<'_> {
    fn error(&mut self, origin: &Origin, sub: &str, message: String, hint: &str) {
        let d = self
            .m
            .diagnostic(origin, sub, message, Some(hint.to_owned()));
        self.errors.push(d);
    }

    fn cluster(&mut self) {
        let Some(cluster) = &self.m.cluster else {
            return;
        };
        if let Some(domain) = &cluster.value.domain
            && !is_hostname(domain)
        {
            self.error(
                &cluster.origin,
                "domain",
                format!("`{domain}` is not a valid DNS domain"),
                "use letters, digits, hyphens and dots, e.g. cluster.lan",
            );
        }
    }

    /// `conda:`: paths, channels, base specs, `.condarc` values conda would refuse.
    fn conda(&mut self) {
        let Some(conda) = &self.m.conda else {
            return;
        };
        let (c, o) = (&conda.value, &conda.origin);
        self.written(
            o,
            "root",
            "root",
            &c.root,
            Written::Path,
            "write the installation's absolute path on the node, e.g. /opt/conda",
        );
        for (field, list) in [("envs_dirs", &c.envs_dirs), ("pkgs_dirs", &c.pkgs_dirs)] {
            for (i, dir) in list.iter().enumerate() {
                if let Some(problem) = path_problem(dir) {
                    self.error(
                        o,
                        &format!("{field}[{i}]"),
                        format!("{field} entry `{dir}` {problem}"),
                        "write an absolute folder on the node, e.g. /opt/conda/pkgs",
                    );
                }
            }
        }
        for (i, channel) in c.channels.iter().enumerate() {
            if let Err(e) = crate::resources::conda::channel_problem(channel) {
                self.error(
                    o,
                    &format!("channels[{i}]"),
                    e,
                    "write a channel name (conda-forge), a URL, or a folder of a local channel",
                );
            }
        }
        for (i, spec) in c.base.iter().enumerate() {
            if let Err(e) = crate::resources::conda::parse_spec(spec) {
                self.error(
                    o,
                    &format!("base[{i}]"),
                    e,
                    "write MatchSpecs such as conda, mamba or python 3.12.*",
                );
            }
        }
        if !c.base.is_empty() && c.channels.is_empty() {
            self.error(
                o,
                "base",
                "a base installation with no channels has nowhere to install from".into(),
                "add channels: [conda-forge] (or a local channel folder) to conda:",
            );
        }
        if c.auto_activate_base.is_some() && c.auto_activate.is_some() {
            self.error(
                o,
                "auto_activate",
                "auto_activate and auto_activate_base are one setting under two names, and conda refuses a file that sets both".into(),
                "keep auto_activate_base (every conda version) or auto_activate (conda 25.5 and newer)",
            );
        }
        for (key, url) in &c.proxy_servers {
            if let Err(problem) = crate::resources::condarc::proxy_problem(key, url) {
                self.error(
                    o,
                    &format!("proxy_servers.{key}"),
                    problem,
                    "write http: http://proxy.example.org:3128; for credentials write ${PROXY_USER}:${PROXY_PASSWORD}@, which conda expands from its environment",
                );
            }
        }
        let roles: BTreeSet<&str> = self
            .m
            .nodes
            .iter()
            .flat_map(|n| n.value.roles.iter().map(String::as_str))
            .collect();
        let scope = super::model::Scope {
            roles: &c.roles,
            nodes: &c.nodes,
            after: &[],
        };
        self.scope_refs(scope, &roles, o, "");
    }

    fn nodes(&mut self) {
        let mut names: HashMap<&str, &Origin> = HashMap::new();
        let mut addresses: HashMap<IpAddr, &Origin> = HashMap::new();
        if self.m.nodes.is_empty() && !self.m.sources.is_empty() {
            // At the top file's `nodes:` if it has one, else where its content starts.
            let origin = Origin {
                file: 0,
                path: "nodes".into(),
            };
            let message = if self.m.sources[0].index.value_of("").is_none() {
                "the manifest is empty: it lists no nodes"
            } else {
                "the manifest lists no nodes"
            };
            self.error(
                &origin,
                "",
                message.into(),
                "add a nodes: list with at least this machine (name: its short hostname, address: its cluster IP)",
            );
        }
        for node in &self.m.nodes {
            let n = &node.value;
            if !is_hostname(&n.name) || n.name.contains('.') {
                self.error(
                    &node.origin,
                    "name",
                    format!("`{}` is not a valid short hostname", n.name),
                    "use the node's short hostname: letters, digits and hyphens, no dots",
                );
            } else if let Some(first) = names.insert(&n.name, &node.origin) {
                let first = self.m.describe(first);
                self.error(
                    &node.origin,
                    "name",
                    format!("node `{}` is already defined at {first}", n.name),
                    "give every node a unique name",
                );
            }
            match n.address.parse::<IpAddr>() {
                Ok(ip) => {
                    if let Some(first) = addresses.insert(ip, &node.origin) {
                        let first = self.m.describe(first);
                        self.error(
                            &node.origin,
                            "address",
                            format!("address {ip} is already used by the node at {first}"),
                            "give every node its own cluster address",
                        );
                    }
                }
                Err(_) => self.error(
                    &node.origin,
                    "address",
                    format!("`{}` is not an IPv4 or IPv6 address", n.address),
                    "write the node's cluster address, e.g. 10.0.0.11",
                ),
            }
            for (i, alias) in n.aliases.iter().enumerate() {
                if !is_hostname(alias) {
                    self.error(
                        &node.origin,
                        &format!("aliases[{i}]"),
                        format!("`{alias}` is not a valid hostname"),
                        "use letters, digits, hyphens and dots",
                    );
                }
            }
            if n.cores == Some(0) {
                self.error(
                    &node.origin,
                    "cores",
                    "a node has at least one core".into(),
                    "give the node's number of CPU cores, or leave cores: out",
                );
            }
            for (i, role) in n.roles.iter().enumerate() {
                if role.is_empty() || role.contains(char::is_whitespace) {
                    self.error(
                        &node.origin,
                        &format!("roles[{i}]"),
                        format!("`{role}` is not a valid role name"),
                        "use a single word such as master or worker",
                    );
                }
            }
        }
    }

    fn resources(&mut self) {
        let m = self.m;
        let roles: BTreeSet<&str> = m
            .nodes
            .iter()
            .flat_map(|n| n.value.roles.iter().map(String::as_str))
            .collect();
        for r in &m.resources {
            let o = &r.origin;
            let kind = r.value.kind();
            match &r.value {
                ResourceSpec::Directory(d) => self.path(o, kind, &d.path),
                ResourceSpec::File(f) => {
                    self.path(o, kind, &f.path);
                    // The fields that give content, in the order a reader meets them.
                    let given: Vec<&str> = [
                        ("content", f.content.is_some()),
                        ("template", f.template.is_some()),
                        ("source", f.source.is_some()),
                    ]
                    .into_iter()
                    .filter(|(_, set)| *set)
                    .map(|(field, _)| field)
                    .collect();
                    match (f.state, given.as_slice()) {
                        (State::Present, []) => self.error(
                            o,
                            kind,
                            format!("file {} has no content", f.path),
                            "give exactly one of content:, template: or source: (or state: absent)",
                        ),
                        (State::Present, [first, second, ..]) => self.error(
                            o,
                            &format!("{kind}.{second}"),
                            format!("file {} has both {first}: and {second}:", f.path),
                            "keep exactly one of content:, template: and source:",
                        ),
                        (State::Absent, [field, ..]) => self.error(
                            o,
                            &format!("{kind}.{field}"),
                            format!("file {} is state: absent but also has {field}:", f.path),
                            "remove content:/template:/source:, or drop state: absent",
                        ),
                        _ => {}
                    }
                    let dir = self.m.dir_of(o);
                    if let Some(name) = &f.template
                        && !crate::template::exists(dir, name)
                    {
                        self.error(
                            o,
                            &format!("{kind}.template"),
                            format!(
                                "template `{name}` not found in {} nor among the shipped templates",
                                shown(dir).display()
                            ),
                            &format!(
                                "shipped templates: {}",
                                crate::template::builtin_names().join(", ")
                            ),
                        );
                    }
                    if let Some(source) = &f.source
                        && !dir.join(source).is_file()
                    {
                        self.error(
                            o,
                            &format!("{kind}.source"),
                            format!("source file {} does not exist", dir.join(source).display()),
                            "source: paths are relative to the manifest's folder",
                        );
                    }
                    if let Some(cmd) = &f.validate
                        && !cmd.contains("%s")
                    {
                        self.error(
                            o,
                            &format!("{kind}.validate"),
                            format!("validate command `{cmd}` has no %s"),
                            "put %s where the command takes the file to check, e.g. `visudo -cf %s`",
                        );
                    }
                }
                ResourceSpec::Hosts(h) => {
                    self.path(o, kind, &h.path);
                    for (i, e) in h.extra.iter().enumerate() {
                        let at = format!("{kind}.extra[{i}]");
                        if e.address.parse::<IpAddr>().is_err() {
                            self.error(
                                o,
                                &format!("{at}.address"),
                                format!("`{}` is not an IPv4 or IPv6 address", e.address),
                                "write an address such as 10.0.0.5 or fd00::5",
                            );
                        }
                        if e.names.is_empty() {
                            self.error(
                                o,
                                &format!("{at}.names"),
                                "a hosts entry needs at least one name".into(),
                                "add names: [host]",
                            );
                        }
                        for (j, name) in e.names.iter().enumerate() {
                            if !is_hostname(name) {
                                self.error(
                                    o,
                                    &format!("{at}.names[{j}]"),
                                    format!("`{name}` is not a valid hostname"),
                                    "use letters, digits, hyphens and dots",
                                );
                            }
                        }
                    }
                }
                ResourceSpec::User(u) => {
                    self.account_name(o, kind, &u.name);
                    for (field, value, example) in [
                        ("home", &u.home, "/home/pyme"),
                        ("shell", &u.shell, "/bin/bash"),
                    ] {
                        let Some(p) = value else { continue };
                        let problem = path_problem(p).map(str::to_owned).or_else(|| {
                            if p.contains(':') {
                                Some("contains `:`, which would split its /etc/passwd line".into())
                            } else if field == "home" {
                                reserved_problem(p, Written::Home)
                            } else {
                                None
                            }
                        });
                        if let Some(problem) = problem {
                            self.error(
                                o,
                                &format!("{kind}.{field}"),
                                format!("{field} `{p}` {problem}"),
                                &format!("write an absolute path such as {example}"),
                            );
                        }
                    }
                    if let Some(c) = &u.comment
                        && (c.contains(':') || c.chars().any(char::is_control))
                    {
                        self.error(
                            o,
                            &format!("{kind}.comment"),
                            "comment contains `:` or a control character (a newline, tab, NUL ...), which would corrupt /etc/passwd"
                                .into(),
                            "remove the colon or control character; commas separate GECOS fields (Full Name,Room,Phone)",
                        );
                    }
                }
                ResourceSpec::Group(g) => self.account_name(o, kind, &g.name),
                ResourceSpec::Mount(mnt) => self.mount(o, mnt),
                ResourceSpec::Gpu(g) => self.gpu(o, kind, g),
                ResourceSpec::Service(svc) => self.service(o, svc),
                ResourceSpec::Venv(v) => self.venv(o, v),
                ResourceSpec::CondaEnv(c) => self.conda_env(o, c),
                ResourceSpec::JupyterKernel(k) => self.kernel(o, k),
                ResourceSpec::SshKey(k) => self.ssh_key(o, k),
                ResourceSpec::AuthorizedKeys(a) => self.authorized_keys(o, a),
                ResourceSpec::KnownHosts(k) => self.known_hosts(o, k, &roles),
                ResourceSpec::JupyterServer(j) => self.jupyter_server(o, j),
                ResourceSpec::DaskConfig(d) => self.dask_config(o, d),
            }
            self.scope_refs(r.value.scope(), &roles, o, kind);
        }
        self.duplicates();
    }

    fn mount(&mut self, o: &Origin, m: &MountSpec) {
        self.written(
            o,
            "mount.target",
            "target",
            &m.target,
            Written::MountPoint,
            "write the absolute mount point on the node, e.g. /mnt/data",
        );
        if m.source.is_empty() || m.source.chars().any(char::is_control) {
            self.error(
                o,
                "mount.source",
                format!("source {:?} is empty or has a control character", m.source),
                "write the share or device, e.g. //nas.example/data or UUID=...",
            );
        } else if m.source.starts_with('#') {
            self.error(
                o,
                "mount.source",
                format!(
                    "source {:?} starts with `#`, which would make its fstab line a comment",
                    m.source
                ),
                "write the share or device, e.g. //nas.example/data or UUID=...",
            );
        }
        let fstype = m.fstype();
        let bind = m.options.0.iter().any(|o| o == "bind" || o == "rbind");
        if fstype.is_empty() {
            self.error(
                o,
                "mount",
                format!("mount {} has no fstype", m.target),
                "add fstype: (e.g. nfs4, ext4, tmpfs, or none with options: [bind]); only a //server/share source defaults to cifs",
            );
        } else if !fstype
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        {
            self.error(
                o,
                "mount.fstype",
                format!("`{fstype}` is not a filesystem type"),
                "use a type such as cifs, nfs4, ext4, xfs, tmpfs or none",
            );
        } else if m.source.starts_with("//") && !m.is_cifs() {
            self.error(
                o,
                "mount.fstype",
                format!(
                    "source {} is a Windows (SMB) share, which fstype `{fstype}` cannot mount",
                    m.source
                ),
                "use fstype: cifs (or smb3), or leave fstype out",
            );
        } else if m.is_cifs() && !m.source.starts_with("//") {
            self.error(
                o,
                "mount.source",
                format!(
                    "a {fstype} source must look like //server/share, not {}",
                    m.source
                ),
                "write the share as //server/share[/folder]",
            );
        }
        if bind && let Some(problem) = path_problem(&m.source) {
            self.error(
                o,
                "mount.source",
                format!("bind source `{}` {problem}", m.source),
                "a bind mount's source is an absolute directory on the node",
            );
        }
        for (i, option) in m.options.0.iter().enumerate() {
            let at = format!("mount.options[{i}]");
            let key = option.split('=').next().unwrap_or("");
            if option.is_empty() {
                self.error(
                    o,
                    &at,
                    "an empty mount option".into(),
                    "remove the empty item (or the doubled comma)",
                );
            } else if option.contains(',')
                || option.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                self.error(
                    o,
                    &at,
                    format!("mount option {option:?} contains a comma, a space or a control character, which would change other fields of the fstab line"),
                    "write one option per list item, without spaces",
                );
            } else if matches!(key, "password" | "pass" | "password2" | "pass2") {
                self.error(
                    o,
                    &at,
                    "a password in the mount options would be readable by every user in /etc/fstab".into(),
                    "remove it and add credentials: {username: ..., password_file: ...} (or password_env: VAR); provision writes a 0600 credentials file",
                );
            } else if matches!(key, "credentials" | "cred") && m.credentials.is_some() {
                self.error(
                    o,
                    &at,
                    format!("both a {key}= option and a credentials: block"),
                    "keep one: credentials: makes provision write the file, credentials= points at one you manage",
                );
            }
        }
        if m.dump > 1 {
            self.error(
                o,
                "mount.dump",
                format!("dump must be 0 or 1, not {}", m.dump),
                "use 0 (network shares and tmpfs always 0)",
            );
        }
        if m.pass > 2 {
            self.error(
                o,
                "mount.pass",
                format!("pass must be 0, 1 or 2, not {}", m.pass),
                "use 0 for network shares, 1 for /, 2 for other local disks",
            );
        }
        if let Some(c) = &m.credentials {
            if !m.is_cifs() {
                self.error(
                    o,
                    "mount.credentials",
                    format!("credentials: is for cifs mounts, and this one is `{fstype}`"),
                    "remove credentials:, or make it a //server/share cifs mount",
                );
            }
            for (field, value) in [
                ("username", Some(&c.username)),
                ("domain", c.domain.as_ref()),
            ] {
                if let Some(v) = value
                    && (v.is_empty()
                        || v.starts_with(char::is_whitespace)
                        || v.chars().any(char::is_control))
                {
                    self.error(
                        o,
                        &format!("mount.credentials.{field}"),
                        format!(
                            "{field} {v:?} is empty, starts with a space or has a control character"
                        ),
                        "mount.cifs reads one key=value per line and cannot take these",
                    );
                }
            }
            self.password_source(
                o,
                "mount.credentials",
                c.password_file.as_deref(),
                c.password_env.as_deref(),
                "NAS_PASSWORD",
            );
            if let Some(p) = &c.path {
                self.written(
                    o,
                    "mount.credentials.path",
                    "path",
                    p,
                    Written::Path,
                    "write an absolute path such as /etc/provision/credentials/data",
                );
            }
        }
        if m.verify && (m.credentials.is_none() || !m.is_cifs()) {
            self.error(
                o,
                "mount.verify",
                "verify: true logs in to a CIFS share with the mount's credentials; it needs a cifs mount with credentials:".into(),
                "add credentials: to a //server/share mount, or remove verify:",
            );
        }
    }

    fn conda_env(&mut self, o: &Origin, c: &super::model::CondaEnvSpec) {
        match (&c.prefix, &c.name) {
            (Some(_), Some(_)) | (None, None) => self.error(
                o,
                "conda_env",
                "a conda_env needs exactly one of prefix: and name:".into(),
                "write prefix: /opt/envs/analysis, or name: analysis for <root>/envs/analysis",
            ),
            (Some(prefix), None) => self.written(
                o,
                "conda_env.prefix",
                "prefix",
                prefix,
                Written::Path,
                "write the absolute path of the environment on the node, e.g. /opt/envs/analysis",
            ),
            (None, Some(name)) => {
                let ok = !name.is_empty()
                    && !name.starts_with('.')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    self.error(
                        o,
                        "conda_env.name",
                        format!("`{name}` is not an environment name"),
                        "use letters, digits, `.`, `_` and `-`, e.g. pyme-analysis; or give prefix: instead",
                    );
                }
            }
        }
        // A value taken from conda: was checked there.
        let settings = self.m.conda_settings();
        let inherited_root = settings.map(|s| &s.root);
        let inherited_pkgs = settings.and_then(|s| s.pkgs_dirs.first());
        let fields = [
            (
                "root",
                c.root.as_ref().filter(|r| Some(*r) != inherited_root),
            ),
            (
                "pkgs_dir",
                c.pkgs_dir.as_ref().filter(|p| Some(*p) != inherited_pkgs),
            ),
        ];
        for (field, value) in fields {
            let Some(value) = value else { continue };
            if let Some(problem) = path_problem(value) {
                self.error(
                    o,
                    &format!("conda_env.{field}"),
                    format!("{field} `{value}` {problem}"),
                    "write an absolute path on the node, e.g. /opt/conda",
                );
            }
        }
        if c.channels.is_empty() {
            self.error(
                o,
                "conda_env.channels",
                "a conda_env with no channels has nowhere to install from".into(),
                "list channels such as conda-forge, or a local channel folder, here or as conda: channels:",
            );
        }
        if let Some(settings) = settings
            && !settings.base.is_empty()
            && c.prefix_path().trim_end_matches('/') == settings.root.trim_end_matches('/')
        {
            self.error(
                o,
                "conda_env.prefix",
                format!(
                    "{} is the base installation, which conda: base: already describes",
                    settings.root
                ),
                "list the base packages in conda: base:, or give this environment its own prefix",
            );
        }
        self.pip_groups(o, "conda_env.pip", &c.pip);
        for (i, channel) in c.channels.iter().enumerate() {
            if let Err(e) = crate::resources::conda::channel_problem(channel) {
                self.error(
                    o,
                    &format!("conda_env.channels[{i}]"),
                    e,
                    "write a channel name (conda-forge), a URL, or a folder of a local channel",
                );
            }
        }
        if c.specs.is_empty() {
            self.error(
                o,
                "conda_env.specs",
                "a conda_env with no specs".into(),
                "list the packages the environment holds, e.g. python 3.11.*",
            );
        }
        for (i, spec) in c.specs.iter().enumerate() {
            if let Err(e) = crate::resources::conda::parse_spec(spec) {
                self.error(
                    o,
                    &format!("conda_env.specs[{i}]"),
                    e,
                    "write a MatchSpec such as numpy >=1.26, python 3.11.* or conda-forge::dask",
                );
            }
        }
    }

    fn venv(&mut self, o: &Origin, v: &super::model::VenvSpec) {
        self.path(o, "venv", &v.path);
        let python_ok = !v.python.is_empty()
            && !v
                .python
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            && (!v.python.contains('/') || v.python.starts_with('/'));
        if !python_ok {
            self.error(
                o,
                "venv.python",
                format!("`{}` is not an interpreter name or absolute path", v.python),
                "write a command such as python3.11, or an absolute path such as /usr/bin/python3",
            );
        }
        self.pip_groups(o, "venv.pip", &v.pip);
    }

    /// pip groups (`venv.pip`, `conda_env.pip`): requirements, URLs, find_links folders.
    fn pip_groups(&mut self, o: &Origin, field: &str, groups: &[super::model::PipGroup]) {
        for (i, g) in groups.iter().enumerate() {
            let at = format!("{field}[{i}]");
            if g.packages.is_empty() {
                self.error(
                    o,
                    &format!("{at}.packages"),
                    "a pip group with no packages".into(),
                    "list requirements such as numpy>=1.26, or remove the group",
                );
            }
            for (j, text) in g.packages.iter().enumerate() {
                if let Err(e) = crate::resources::pip::Wanted::parse(text) {
                    self.error(
                        o,
                        &format!("{at}.packages[{j}]"),
                        e,
                        "write a name with optional [extras] and versions, e.g. dask[distributed]>=2024.8; for local wheels use find_links:",
                    );
                }
            }
            let urls = g
                .index_url
                .iter()
                .map(|u| ("index_url".to_owned(), u))
                .chain(
                    g.extra_index_urls
                        .iter()
                        .enumerate()
                        .map(|(k, u)| (format!("extra_index_urls[{k}]"), u)),
                );
            for (field, url) in urls {
                if !url.contains("://") || url.chars().any(|c| c.is_whitespace()) {
                    self.error(
                        o,
                        &format!("{at}.{field}"),
                        format!("`{url}` is not a URL"),
                        "write the index's URL, e.g. https://pypi.org/simple",
                    );
                }
            }
            for (k, link) in g.find_links.iter().enumerate() {
                if link.contains("://") {
                    continue;
                }
                if let Some(problem) = path_problem(link) {
                    self.error(
                        o,
                        &format!("{at}.find_links[{k}]"),
                        format!("find_links `{link}` {problem}"),
                        "write a URL, or an absolute folder of wheels on the node (resolved under --root)",
                    );
                }
            }
            if g.no_index && (g.index_url.is_some() || !g.extra_index_urls.is_empty()) {
                self.error(
                    o,
                    &format!("{at}.no_index"),
                    "no_index: true with an index URL".into(),
                    "keep one: no_index installs only from find_links",
                );
            } else if g.no_index && g.find_links.is_empty() {
                self.error(
                    o,
                    &format!("{at}.no_index"),
                    "no_index: true and no find_links: pip would have nothing to install from".into(),
                    "add find_links: [/srv/wheels] (a folder of wheels on the node), or drop no_index",
                );
            }
        }
    }

    fn kernel(&mut self, o: &Origin, k: &super::model::JupyterKernelSpec) {
        let name_ok = !k.name.is_empty()
            && k.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
        if !name_ok {
            self.error(
                o,
                "jupyter_kernel.name",
                format!("`{}` is not a kernel name", k.name),
                "use lowercase letters, digits, `.`, `_` and `-` (Jupyter lower-cases names), e.g. pyme",
            );
        }
        for (field, path, example) in [
            ("env", &k.env, "/opt/envs/pyme"),
            ("prefix", &k.prefix, "/opt/envs/jupyterlab"),
        ] {
            if let Some(problem) = path_problem(path) {
                self.error(
                    o,
                    &format!("jupyter_kernel.{field}"),
                    format!("{field} `{path}` {problem}"),
                    &format!("write the environment's absolute path, e.g. {example}"),
                );
            }
        }
        if let Some(d) = &k.display_name
            && (d.is_empty() || d.chars().any(char::is_control))
        {
            self.error(
                o,
                "jupyter_kernel.display_name",
                format!("display_name {d:?} is empty or has a control character"),
                "write the name JupyterLab shows, e.g. \"PYME (Python 3.11)\"",
            );
        }
        for var in k.env_vars.keys() {
            let mut b = var.bytes();
            if !(b
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_'))
            {
                self.error(
                    o,
                    &format!("jupyter_kernel.env_vars.{var}"),
                    format!("`{var}` is not an environment variable name"),
                    "use letters, digits and _, e.g. OMP_NUM_THREADS",
                );
            }
        }
    }

    fn service(&mut self, o: &Origin, svc: &ServiceSpec) {
        if svc.name.is_empty()
            || !svc
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            self.error(
                o,
                "service.name",
                format!("`{}` is not a valid service name", svc.name),
                "use letters, digits, -, _, . and @, e.g. pyme-ruleserver",
            );
        }
        let argv = svc.argv();
        match (&svc.command, svc.args.is_empty()) {
            (CommandSpec::List(_), false) => self.error(
                o,
                "service.args",
                "args: given with a command: list".into(),
                "write the whole command as one list, or command: PROGRAM with args: [...]",
            ),
            _ if argv.first().is_none_or(|p| p.trim().is_empty()) => self.error(
                o,
                "service.command",
                format!("service {} has an empty command", svc.name),
                "name the program to run, e.g. command: [PYMERuleServer, -a, local]",
            ),
            _ => {}
        }
        // Where each word is written: command: [..] items, or command: PROGRAM then args: [..].
        let word_at = |i: usize| match &svc.command {
            CommandSpec::List(_) => format!("service.command[{i}]"),
            CommandSpec::Program(_) if i == 0 => "service.command".to_owned(),
            CommandSpec::Program(_) => format!("service.args[{}]", i - 1),
        };
        if let Some(program) = argv.first()
            && program.chars().any(char::is_control)
        {
            self.error(
                o,
                &word_at(0),
                format!("the program name {program:?} has a control character"),
                "name the program to run, e.g. PYMERuleServer or /opt/envs/pyme/bin/PYMERuleServer",
            );
        }
        for (i, word) in argv.iter().enumerate().skip(1) {
            if word.contains('\0') {
                self.error(
                    o,
                    &word_at(i),
                    format!("argument {word:?} has a NUL byte, which no program can be given"),
                    "remove the NUL; other characters, newlines too, reach the program as they are (no shell reads them)",
                );
            }
        }
        match svc.user.as_deref() {
            Some("root") if !svc.allow_root => self.error(
                o,
                "service.user",
                format!("service {} would run as root", svc.name),
                "run it as an unprivileged user (add a `user:` resource), or set allow_root: true if it really must",
            ),
            None if !svc.allow_root => self.error(
                o,
                "service",
                format!("service {} has no user: and would run as root", svc.name),
                "add user: with an unprivileged account (e.g. pyme), or set allow_root: true if it really must",
            ),
            _ => {}
        }
        if let Some(dir) = &svc.working_dir
            && let Some(problem) = path_problem(dir)
        {
            self.error(
                o,
                "service.working_dir",
                format!("working_dir `{dir}` {problem}"),
                "write an absolute directory on the node, e.g. /var/lib/pyme",
            );
        }
        for key in svc.env.keys() {
            let mut b = key.bytes();
            if !(b
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_'))
            {
                self.error(
                    o,
                    &format!("service.env.{key}"),
                    format!("`{key}` is not an environment variable name"),
                    "use letters, digits and _, not starting with a digit",
                );
            } else if svc.env[key].contains('\0') {
                self.error(
                    o,
                    &format!("service.env.{key}"),
                    format!("the value of {key} has a NUL byte, which an environment cannot hold"),
                    "remove the NUL",
                );
            }
        }
        if let Some(signal) = &svc.stop.signal
            && crate::supervisor::process::parse_signal(signal).is_none()
        {
            self.error(
                o,
                "service.stop.signal",
                format!("`{signal}` is not a signal name"),
                "use e.g. SIGTERM, SIGINT, SIGQUIT or SIGHUP",
            );
        }
        let b = &svc.backoff;
        if let Some(j) = b.jitter
            && !(0.0..=1.0).contains(&j)
        {
            self.error(
                o,
                "service.backoff.jitter",
                format!("jitter {j} is outside 0-1"),
                "give the spread as a fraction, e.g. 0.2 for ±20 %",
            );
        }
        if let (Some(base), Some(cap)) = (b.base, b.cap)
            && cap.0 < base.0
        {
            self.error(
                o,
                "service.backoff.cap",
                "the backoff cap is shorter than its base".into(),
                "make cap: at least base:",
            );
        }
        if b.start_limit == Some(0) {
            self.error(
                o,
                "service.backoff.start_limit",
                "start_limit 0 would never start the service".into(),
                "give at least 1 (default 10)",
            );
        }
        for (field, probe) in [("readiness", &svc.readiness), ("liveness", &svc.liveness)] {
            if let Some(p) = probe {
                self.probe(o, &format!("service.{field}"), field, p);
            }
        }
        for (i, p) in svc.wait_for.iter().enumerate() {
            let at = format!("service.wait_for[{i}]");
            self.probe(o, &at, "wait_for", p);
            let local = [
                ("file", p.file.is_some()),
                ("command", p.command.is_some()),
                ("log_line", p.log_line.is_some()),
                ("failures", p.failures.is_some()),
            ];
            if let Some((key, _)) = local.iter().find(|(_, set)| *set) {
                self.error(
                    o,
                    &format!("{at}.{key}"),
                    format!("wait_for: takes tcp: or http:, not {key}:"),
                    "wait for a port or an HTTP endpoint, e.g. http: {url: http://master:15346/distributor/queues}",
                );
            }
        }
        if svc.wait_timeout.is_some_and(|d| d.0.is_zero()) {
            self.error(
                o,
                "service.wait_timeout",
                "wait_timeout is zero".into(),
                "give how long a start may wait, e.g. 10m",
            );
        }
    }

    fn probe(&mut self, o: &Origin, at: &str, field: &str, p: &ProbeSpec) {
        let given: Vec<&str> = [
            ("tcp", p.tcp.is_some()),
            ("http", p.http.is_some()),
            ("file", p.file.is_some()),
            ("command", p.command.is_some()),
            ("log_line", p.log_line.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        let hint = "give exactly one of tcp:, http:, file:, command: and log_line:";
        match given.as_slice() {
            [] => self.error(o, at, format!("the {field} probe checks nothing"), hint),
            [_] => {}
            [first, second, ..] => self.error(
                o,
                &format!("{at}.{second}"),
                format!("the {field} probe has both {first}: and {second}:"),
                hint,
            ),
        }
        if let Some(addr) = &p.tcp
            && let Err(why) = host_port(addr)
        {
            self.error(
                o,
                &format!("{at}.tcp"),
                format!("tcp probe `{addr}`: {why}"),
                "write host:port, e.g. 127.0.0.1:15346 or [::1]:8888",
            );
        }
        if let Some(h) = &p.http {
            let problem = match h.url.split_once("://") {
                Some(("http" | "https", rest)) => {
                    let authority = rest.split('/').next().unwrap_or("");
                    if authority.is_empty() {
                        Some("has no host".to_owned())
                    } else if authority
                        .rsplit_once(':')
                        .is_some_and(|(_, port)| !port.contains(']'))
                    {
                        host_port(authority).err()
                    } else {
                        None
                    }
                }
                _ => Some("is not an http:// or https:// URL".to_owned()),
            };
            if let Some(problem) = problem {
                self.error(
                    o,
                    &format!("{at}.http.url"),
                    format!("http probe URL `{}` {problem}", h.url),
                    "write e.g. http://127.0.0.1:15346/distributor/queues or https://node01:8443/health",
                );
            }
            if let Some(status) = h.status
                && !(100..=599).contains(&status)
            {
                self.error(
                    o,
                    &format!("{at}.http.status"),
                    format!("{status} is not an HTTP status"),
                    "give the status a healthy server answers, e.g. 200",
                );
            }
        }
        if let Some(path) = &p.file
            && let Some(problem) = path_problem(path)
        {
            self.error(
                o,
                &format!("{at}.file"),
                format!("file probe `{path}` {problem}"),
                "write the absolute node path the service creates when ready",
            );
        }
        if p.command
            .as_ref()
            .is_some_and(|c| c.first().is_none_or(|p| p.trim().is_empty()))
        {
            self.error(
                o,
                &format!("{at}.command"),
                "the probe command is empty".into(),
                "write the command as a list, e.g. [pg_isready, -q]",
            );
        }
        if p.log_line.as_ref().is_some_and(String::is_empty) {
            self.error(
                o,
                &format!("{at}.log_line"),
                "the log line to wait for is empty".into(),
                "give text the service logs when it is ready, e.g. \"Serving on\"",
            );
        }
        if p.failures.is_some() && field == "readiness" {
            self.error(
                o,
                &format!("{at}.failures"),
                "failures: is for liveness probes".into(),
                "a readiness probe retries until start_timeout: of the service; remove failures:",
            );
        }
        if p.interval.is_some_and(|d| d.0.is_zero()) || p.timeout.is_some_and(|d| d.0.is_zero()) {
            self.error(
                o,
                at,
                format!("the {field} probe has a zero interval or timeout"),
                "give a duration such as 500ms or 2s",
            );
        }
    }

    fn ssh_key(&mut self, o: &Origin, k: &super::model::SshKeySpec) {
        self.path(o, "ssh_key", &k.path);
        if k.path.ends_with(".pub") {
            self.error(
                o,
                "ssh_key.path",
                format!("path `{}` names a public key", k.path),
                "give the private key's path, e.g. /home/ipp/.ssh/id_ed25519; the public key is that path with .pub",
            );
        }
        if let Some(c) = &k.comment
            && c.contains(['\n', '\r'])
        {
            self.error(
                o,
                "ssh_key.comment",
                "a key comment must be one line".into(),
                "write e.g. ipp@cl-0",
            );
        }
    }

    fn authorized_keys(&mut self, o: &Origin, a: &super::model::AuthorizedKeysSpec) {
        self.path(o, "authorized_keys", &a.path);
        for (i, key) in a.keys.iter().enumerate() {
            if let Some(problem) = crate::resources::authorized_keys::key_problem(key) {
                self.error(
                    o,
                    &format!("authorized_keys.keys[{i}]"),
                    problem,
                    "paste the line of the .pub file (ssh-ed25519 AAAA... comment), with authorized_keys options before it if any",
                );
            }
        }
        for (i, file) in a.key_files.iter().enumerate() {
            if let Some(problem) = path_problem(file) {
                self.error(
                    o,
                    &format!("authorized_keys.key_files[{i}]"),
                    format!("key file `{file}` {problem}"),
                    "write the public key file's absolute path on the node, e.g. /home/ipp/.ssh/id_ed25519.pub",
                );
            }
        }
    }

    fn known_hosts(
        &mut self,
        o: &Origin,
        k: &super::model::KnownHostsSpec,
        roles: &BTreeSet<&str>,
    ) {
        self.path(o, "known_hosts", &k.path);
        for (i, role) in k.host_roles.iter().enumerate() {
            if !roles.contains(role.as_str()) {
                self.error(
                    o,
                    &format!("known_hosts.host_roles[{i}]"),
                    format!("no node has the role `{role}`"),
                    &format!(
                        "known roles: {}",
                        roles.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
        let listed: Vec<&str> = self
            .m
            .nodes
            .iter()
            .map(|n| &n.value)
            .filter(|n| k.host_roles.is_empty() || n.roles.iter().any(|r| k.host_roles.contains(r)))
            .map(|n| n.name.as_str())
            .collect();
        for (name, keys) in &k.keys {
            if !listed.contains(&name.as_str()) {
                let why = if self.m.nodes.iter().any(|n| &n.value.name == name) {
                    "is not one of the nodes this known_hosts lists (host_roles)"
                } else {
                    "is not a node of this manifest"
                };
                self.error(
                    o,
                    &format!("known_hosts.keys.{name}"),
                    format!("`{name}` {why}"),
                    "give keys by the name of a listed node",
                );
            }
            for (i, key) in keys.iter().enumerate() {
                if let Some(problem) = crate::resources::known_hosts::key_problem(key) {
                    self.error(o, &format!("known_hosts.keys.{name}[{i}]"), problem, "`ssh-keyscan -t ed25519 HOST` prints `HOST ssh-ed25519 AAAA...`: write the part after the host");
                }
            }
            if keys.is_empty() {
                self.error(
                    o,
                    &format!("known_hosts.keys.{name}"),
                    format!("no keys for `{name}`"),
                    "give at least one host key, or leave the node out of keys: with scan: true",
                );
            }
        }
        let unkeyed: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|n| !k.keys.contains_key(*n))
            .collect();
        if !k.scan && !unkeyed.is_empty() {
            self.error(
                o,
                "known_hosts",
                format!("no host keys for {} and scan: is off", unkeyed.join(", ")),
                "give each node's keys under keys: (the secure way: from `ssh-keyscan` run where you trust the network, or the node's /etc/ssh/ssh_host_*_key.pub), or set scan: true to read them once at the first apply",
            );
        }
        if k.port == 0 {
            self.error(
                o,
                "known_hosts.port",
                "port 0 is not a port".into(),
                "give the nodes' SSH port (1-65535), or leave it out for 22",
            );
        }
    }

    fn path(&mut self, origin: &Origin, kind: &str, path: &str) {
        self.written(
            origin,
            &format!("{kind}.path"),
            "path",
            path,
            Written::Path,
            "write the absolute path the file has on the node, e.g. /etc/PYME/config.yaml; --root decides where it lands",
        );
    }

    /// A password's one source: `password_file` (relative to the manifest's folder, and there) or
    /// `password_env` (a variable name). `at` is the field holding both, e.g. `mount.credentials`.
    fn password_source(
        &mut self,
        o: &Origin,
        at: &str,
        file: Option<&str>,
        env: Option<&str>,
        example_var: &str,
    ) {
        match (file, env) {
            (None, None) => self.error(
                o,
                at,
                if at == "mount.credentials" {
                    "credentials have no password source".into()
                } else {
                    "no password source".into()
                },
                "add password_file: (a file only root can read) or password_env: (a variable name); never the password itself",
            ),
            (Some(_), Some(_)) => self.error(
                o,
                &format!("{at}.password_env"),
                "both password_file and password_env".into(),
                "keep one of them",
            ),
            (Some(file), None) => {
                let path = self.m.dir_of(o).join(file);
                if !path.is_file() {
                    self.error(
                        o,
                        &format!("{at}.password_file"),
                        format!("password file {} does not exist", path.display()),
                        "password_file: is relative to the manifest's folder, or absolute on the machine running provision",
                    );
                }
            }
            (None, Some(var)) => {
                let mut b = var.bytes();
                if !(b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
                    && b.all(|c| c.is_ascii_alphanumeric() || c == b'_'))
                {
                    self.error(
                        o,
                        &format!("{at}.password_env"),
                        format!("`{var}` is not an environment variable name"),
                        &format!("name the variable that holds the password, e.g. {example_var}"),
                    );
                }
            }
        }
    }

    /// A path provision writes: [`path_problem`], then [`reserved_problem`].
    fn written(
        &mut self,
        origin: &Origin,
        at: &str,
        field: &str,
        path: &str,
        what: Written,
        hint: &str,
    ) {
        let problem = path_problem(path)
            .map(str::to_owned)
            .or_else(|| reserved_problem(path, what));
        if let Some(problem) = problem {
            self.error(origin, at, format!("{field} `{path}` {problem}"), hint);
        }
    }

    fn gpu(&mut self, o: &Origin, kind: &str, g: &super::model::GpuSpec) {
        use crate::gpu::check::DriverVersion;
        use crate::gpu::record::ComputeCapability;
        if g.name.is_empty()
            || !g
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.error(
                o,
                &format!("{kind}.name"),
                format!("`{}` is not a valid gpu check name", g.name),
                "use letters, digits, - and _, e.g. nvidia",
            );
        }
        if let Some(cc) = &g.min_compute_capability
            && let Err(e) = cc.parse::<ComputeCapability>()
        {
            self.error(
                o,
                &format!("{kind}.min_compute_capability"),
                e,
                "write MAJOR.MINOR as a quoted string, e.g. \"5.2\" (PYME's GPU fitting needs 5.2)",
            );
        }
        if let Some(v) = &g.min_driver_version
            && let Err(e) = v.parse::<DriverVersion>()
        {
            self.error(
                o,
                &format!("{kind}.min_driver_version"),
                e,
                "write the version nvidia-smi shows, as a quoted string, e.g. \"535.54.03\"",
            );
        }
        if let Some(t) = g.max_temperature
            && !(30..=110).contains(&t)
        {
            self.error(
                o,
                &format!("{kind}.max_temperature"),
                format!("max_temperature {t} °C is outside 30-110 °C"),
                "give the hottest allowed GPU temperature in °C, e.g. 85",
            );
        }
    }

    fn account_name(&mut self, origin: &Origin, kind: &str, name: &str) {
        if !is_account_name(name) {
            self.error(
                origin,
                &format!("{kind}.name"),
                format!("`{name}` is not a valid {kind} name"),
                "start with a lowercase letter or _, then lowercase letters, digits, _ or -, at most 32 characters",
            );
        }
    }

    fn scope_refs(
        &mut self,
        scope: super::model::Scope<'_>,
        roles: &BTreeSet<&str>,
        origin: &Origin,
        kind: &str,
    ) {
        for (i, role) in scope.roles.iter().enumerate() {
            if !roles.contains(role.as_str()) {
                self.error(
                    origin,
                    &format!("{kind}{}roles[{i}]", if kind.is_empty() { "" } else { "." }),
                    format!("no node has the role `{role}`"),
                    &if roles.is_empty() {
                        "no node has any roles: add roles: [...] to the nodes, or name nodes with nodes: [...]".to_owned()
                    } else {
                        format!(
                            "known roles: {}",
                            roles.iter().copied().collect::<Vec<_>>().join(", ")
                        )
                    },
                );
            }
        }
        for (i, name) in scope.nodes.iter().enumerate() {
            if !self.m.nodes.iter().any(|n| &n.value.name == name) {
                self.error(
                    origin,
                    &format!("{kind}{}nodes[{i}]", if kind.is_empty() { "" } else { "." }),
                    format!("no node is named `{name}`"),
                    "name a node from the nodes: list",
                );
            }
        }
    }

    /// Two resources with the same id may coexist only if no node gets both.
    fn duplicates(&mut self) {
        let mut seen: BTreeMap<String, Vec<(usize, NodeSet)>> = BTreeMap::new();
        for (i, r) in self.m.resources.iter().enumerate() {
            let nodes = super::select::nodes_of(self.m, &r.value);
            let id = r.value.id();
            let clash = seen.get(&id).and_then(|prev| {
                prev.iter()
                    .find(|(_, n)| !n.is_disjoint(&nodes))
                    .map(|p| p.0)
            });
            if let Some(first) = clash {
                let first_at = self.m.describe(&self.m.resources[first].origin);
                // At what names the resource: its path or name (a hosts resource may leave its
                // path to the default, and is then reported where it starts).
                let key_field = match &r.value {
                    ResourceSpec::User(_)
                    | ResourceSpec::Group(_)
                    | ResourceSpec::Gpu(_)
                    | ResourceSpec::JupyterKernel(_)
                    | ResourceSpec::Service(_) => "name",
                    ResourceSpec::Mount(_) => "target",
                    ResourceSpec::CondaEnv(c) if c.prefix.is_none() => "name",
                    ResourceSpec::CondaEnv(_) => "prefix",
                    _ => "path",
                };
                self.error(
                    &r.origin,
                    &format!("{}.{key_field}", r.value.kind()),
                    format!("{id} is already defined at {first_at} for some of the same nodes"),
                    "merge the two, or scope them to different roles or nodes",
                );
            }
            seen.entry(id).or_default().push((i, nodes));
        }
    }

    /// `after:`, owners, groups and supplementary groups must name things the manifest defines.
    fn references(&mut self) {
        let ids: BTreeSet<String> = self.m.resources.iter().map(|r| r.value.id()).collect();
        let all = NodeSet::all(self.m.nodes.len());
        // Who provides each user and group, and on which nodes.
        let mut users: BTreeMap<&str, NodeSet> = BTreeMap::from([("root", all.clone())]);
        let mut groups: BTreeMap<&str, NodeSet> = BTreeMap::from([("root", all)]);
        for r in &self.m.resources {
            let provided = match &r.value {
                ResourceSpec::User(u) if u.state == State::Present => {
                    users
                        .entry(u.name.as_str())
                        .or_insert_with(|| NodeSet::empty(self.m.nodes.len()))
                        .extend(&super::select::nodes_of(self.m, &r.value));
                    if u.group.is_some() {
                        continue;
                    }
                    u.name.as_str()
                }
                ResourceSpec::Group(g) if g.state == State::Present => g.name.as_str(),
                _ => continue,
            };
            groups
                .entry(provided)
                .or_insert_with(|| NodeSet::empty(self.m.nodes.len()))
                .extend(&super::select::nodes_of(self.m, &r.value));
        }
        for r in &self.m.resources {
            let o = &r.origin;
            let kind = r.value.kind();
            for (i, after) in r.value.scope().after.iter().enumerate() {
                if !ids.contains(after) {
                    self.error(
                        o,
                        &format!("{kind}.after[{i}]"),
                        format!("`{after}` is not a resource in this manifest"),
                        "refer to resources as kind:key, e.g. user:pyme or file:/etc/PYME/config.yaml",
                    );
                }
            }
            let nodes = super::select::nodes_of(self.m, &r.value);
            let (owner, group) = match &r.value {
                ResourceSpec::Directory(d) => (d.owner.as_deref(), d.group.as_deref()),
                ResourceSpec::File(f) => (f.owner.as_deref(), f.group.as_deref()),
                ResourceSpec::Mount(m) => (m.owner.as_deref(), m.group.as_deref()),
                ResourceSpec::Venv(v) => (v.owner.as_deref(), v.group.as_deref()),
                ResourceSpec::CondaEnv(c) => (c.owner.as_deref(), c.group.as_deref()),
                ResourceSpec::SshKey(k) => (k.owner.as_deref(), k.group.as_deref()),
                ResourceSpec::AuthorizedKeys(a) => (a.owner.as_deref(), a.group.as_deref()),
                ResourceSpec::KnownHosts(k) => (k.owner.as_deref(), k.group.as_deref()),
                _ => (None, None),
            };
            let mut refs: Vec<(String, &str, &str, &str, &str)> = Vec::new();
            if let Some(owner) = owner {
                refs.push((format!("{kind}.owner"), owner, "user", "owner", "add a `user:` resource for it (an existing account is left as it is), or use root"));
            }
            if let Some(group) = group {
                refs.push((format!("{kind}.group"), group, "group", "group", "add a `group:` resource for it (an existing group is left as it is), or use root"));
            }
            if let ResourceSpec::User(u) = &r.value {
                if let Some(g) = &u.group {
                    refs.push(("user.group".into(), g, "group", "primary group", "add a `group:` resource for it, or leave group: out to get a group named after the user"));
                }
                for (i, g) in u.groups.iter().flatten().enumerate() {
                    refs.push((format!("user.groups[{i}]"), g, "group", "group", "add a `group:` resource for it; an existing group such as video is adopted as it is"));
                }
            }
            if let ResourceSpec::Service(svc) = &r.value {
                if let Some(u) = svc.user.as_deref().filter(|u| *u != "root") {
                    refs.push(("service.user".into(), u, "user", "user", "add a `user:` resource for it (an existing account is adopted as it is), e.g. a system user pyme"));
                }
                if let Some(g) = &svc.group {
                    refs.push(("service.group".into(), g, "group", "group", "add a `group:` resource for it, or leave group: out to use the user's primary group"));
                }
                for (i, g) in svc.groups.iter().enumerate() {
                    refs.push((format!("service.groups[{i}]"), g, "group", "group", "add a `group:` resource for it; an existing group such as video is adopted as it is"));
                }
            }
            if let ResourceSpec::Mount(m) = &r.value {
                for (i, option) in m.options.0.iter().enumerate() {
                    let (noun, what) = match option.split_once('=') {
                        Some(("uid", _)) => ("user", "uid"),
                        Some(("gid", _)) => ("group", "gid"),
                        _ => continue,
                    };
                    let name = &option[what.len() + 1..];
                    if !name.is_empty() && !name.bytes().all(|b| b.is_ascii_digit()) {
                        refs.push((format!("mount.options[{i}]"), name, noun, what, "use a number, or a name the manifest defines with a `user:`/`group:` resource (an existing account is adopted as it is)"));
                    }
                }
            }
            for (sub, name, noun, what, hint) in refs {
                let providers = if noun == "user" { &users } else { &groups };
                match providers.get(name) {
                    None => self.error(
                        o,
                        &sub,
                        format!("{what} `{name}` is not a {noun} this manifest defines"),
                        hint,
                    ),
                    Some(on) if !nodes.is_subset(on) => {
                        let missing: Vec<&str> = nodes
                            .difference(on)
                            .map(|n| self.m.nodes[n].value.name.as_str())
                            .collect();
                        self.error(
                            o,
                            &sub,
                            format!(
                                "{what} `{name}` is defined only for some of the nodes this {kind} applies to (not for: {})",
                                missing.join(", ")
                            ),
                            &format!("scope the `{noun}: {name}` resource to every node that uses it, or scope this {kind} to fewer nodes"),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// `after:` must not loop. Reported once per loop, at the resource that closes it.
    fn cycles(&mut self) {
        let ids: Vec<String> = self.m.resources.iter().map(|r| r.value.id()).collect();
        let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (i, r) in self.m.resources.iter().enumerate() {
            edges
                .entry(ids[i].as_str())
                .or_default()
                .extend(r.value.scope().after.iter().map(String::as_str));
        }
        let mut state: HashMap<&str, u8> = HashMap::new(); // 1 = on the path, 2 = done
        let mut reported = BTreeSet::new();
        for start in edges.keys().copied().collect::<Vec<_>>() {
            let mut path: Vec<&str> = Vec::new();
            self.visit(start, &edges, &mut state, &mut path, &mut reported, &ids);
        }
    }

    fn visit<'a>(
        &mut self,
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        reported: &mut BTreeSet<String>,
        ids: &[String],
    ) {
        match state.get(node) {
            Some(2) => return,
            Some(1) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..].to_vec();
                cycle.push(node);
                let key = {
                    let mut members = cycle[..cycle.len() - 1].to_vec();
                    members.sort();
                    members.join(",")
                };
                if reported.insert(key) {
                    let closer = path.last().copied().unwrap_or(node);
                    if let Some(i) = ids.iter().position(|id| id == closer) {
                        let r = &self.m.resources[i];
                        let at = r
                            .value
                            .scope()
                            .after
                            .iter()
                            .position(|a| a == node)
                            .unwrap_or(0);
                        let kind = r.value.kind();
                        self.error(
                            &r.origin.clone(),
                            &format!("{kind}.after[{at}]"),
                            format!("after: forms a cycle: {}", cycle.join(" → ")),
                            "remove one of the after: entries in the cycle",
                        );
                    }
                }
                return;
            }
            _ => {}
        }
        state.insert(node, 1);
        path.push(node);
        if let Some(next) = edges.get(node) {
            for n in next.iter().copied() {
                self.visit(n, edges, state, path, reported, ids);
            }
        }
        path.pop();
        state.insert(node, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for good in ["master", "node-01", "a.b.c", "x1"] {
            assert!(is_hostname(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "under_score",
            "sp ace",
            &"x".repeat(64),
        ] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn account_names() {
        for good in ["pyme", "_apt", "svc-1", "machine$"] {
            assert!(is_account_name(good), "{good}");
        }
        for bad in ["", "Pyme", "1abc", "a:b", "a b", &"a".repeat(33)] {
            assert!(!is_account_name(bad), "{bad}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(path_problem("/etc/hosts"), None);
        assert!(path_problem("etc/hosts").is_some());
        assert!(path_problem("/etc/../shadow").is_some());
        assert!(path_problem("/etc//hosts").is_some());
        assert!(path_problem("/etc/./hosts").is_some());
        assert!(path_problem("/").is_some());
    }
}
