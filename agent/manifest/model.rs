//! The manifest as written: one serde + JSON Schema definition per YAML shape.
//!
//! These types hold only what the user wrote. Defaults that depend on other parts of the manifest
//! (a user's home, the node a resource runs on) are resolved when the node's resources are built, in `crate::resources`.
//! One exception: a `conda_env`'s root, channels, specs, pip groups and package cache are filled
//! at load from `conda:` and its `from:` file (`manifest/conda.rs`), since a named environment's
//! id depends on them.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Free-form template variables (`vars:` at cluster or node level).
pub type Vars = BTreeMap<String, serde_json::Value>;

/// One manifest file. The top-level file and every file it `include:`s share this shape.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Further manifest files, relative to this file's folder. Their nodes, vars and resources are
    /// added to this file's.
    #[serde(default)]
    pub include: Vec<String>,
    /// Cluster-wide settings.
    #[serde(default)]
    pub cluster: Option<Cluster>,
    /// The conda installation: its root, default channels, package cache, managed `.condarc`,
    /// and optionally the base environment provision makes there. Set once, in the top file.
    #[serde(default)]
    pub conda: Option<CondaSettings>,
    /// Template variables for every node. A node's own `vars` override these.
    #[serde(default)]
    pub vars: Vars,
    /// Every machine of the cluster.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// What every node (or the nodes and roles each resource names) should look like.
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

/// Cluster-wide settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// A name for the cluster, available to templates as `cluster.name`.
    #[serde(default)]
    pub name: Option<String>,
    /// DNS domain of the cluster network: `hosts` writes `node.domain node` for every node.
    #[serde(default)]
    pub domain: Option<String>,
}

/// The node's conda installation (`conda:` at the top of the manifest).
///
/// `conda_env` entries take their root, channels and package cache from here when they do not
/// name their own. The `.condarc` at `<root>/.condarc` is written in conda's own format with only
/// the keys given here; without any of them no `.condarc` is managed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CondaSettings {
    /// The installation root (`CONDA_ROOT`); named environments live in `<root>/envs/<name>`.
    /// Default `/opt/conda`.
    #[serde(default = "default_conda_root")]
    pub root: String,
    /// MatchSpecs of a base environment provision solves and installs at `root` itself (e.g.
    /// `[conda, mamba]` from conda-forge), in place of a Miniforge installer. An existing
    /// installation at `root` that provision did not make (Miniconda, Miniforge) is adopted as it
    /// is: nothing is installed, updated or removed in it. Empty: no base environment is managed.
    #[serde(default)]
    pub base: Vec<String>,
    /// Default channels, highest priority first, for the base and for `conda_env` entries that
    /// name none; also written to `.condarc` as `channels`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// `.condarc` `channel_priority`: strict, flexible or disabled.
    #[serde(default)]
    pub channel_priority: Option<ChannelPriority>,
    /// `.condarc` `auto_activate_base`: whether a login shell with `conda init` starts in base.
    #[serde(default)]
    pub auto_activate_base: Option<bool>,
    /// `.condarc` `auto_activate`, the name conda 25.5 and newer give `auto_activate_base`.
    /// conda refuses a file that sets both, so give one.
    #[serde(default)]
    pub auto_activate: Option<bool>,
    /// `.condarc` `envs_dirs`: where conda makes and looks for named environments.
    #[serde(default)]
    pub envs_dirs: Vec<String>,
    /// `.condarc` `pkgs_dirs`: conda's package caches. The first is also the cache provision
    /// downloads to (default `/var/lib/provision/conda-pkgs`).
    #[serde(default)]
    pub pkgs_dirs: Vec<String>,
    /// `.condarc` `proxy_servers`: scheme (`http`, `https`) or `scheme://host` → proxy URL.
    /// Credentials are refused here (they would be in a world-readable file and in every diff):
    /// write `${VAR}` for them, which conda expands from its environment.
    #[serde(default)]
    pub proxy_servers: BTreeMap<String, String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
}

/// conda's `channel_priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelPriority {
    Strict,
    Flexible,
    Disabled,
}

impl ChannelPriority {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelPriority::Strict => "strict",
            ChannelPriority::Flexible => "flexible",
            ChannelPriority::Disabled => "disabled",
        }
    }
}

impl CondaSettings {
    /// Whether any `.condarc` key is set (else no `.condarc` is managed).
    pub fn manages_condarc(&self) -> bool {
        !self.channels.is_empty()
            || self.channel_priority.is_some()
            || self.auto_activate_base.is_some()
            || self.auto_activate.is_some()
            || !self.envs_dirs.is_empty()
            || !self.pkgs_dirs.is_empty()
            || !self.proxy_servers.is_empty()
    }
}

/// One machine of the cluster.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Short hostname; `provision apply` picks the node whose name is the host's short hostname
    /// unless `--node` says otherwise.
    pub name: String,
    /// The node's address on the cluster network (IPv4 or IPv6).
    pub address: String,
    /// More names for this node in `/etc/hosts`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Roles this node plays (e.g. `master`, `worker`); resources name the roles they apply to.
    #[serde(default)]
    pub roles: Vec<String>,
    /// How many CPU cores the node has, for templates that size work for another node (the
    /// ipyparallel controller's engine list). A node rendering its own files can use its facts
    /// (`facts.cpus`) instead.
    #[serde(default)]
    pub cores: Option<u32>,
    /// Template variables for this node only.
    #[serde(default)]
    pub vars: Vars,
}

/// One resource. Written as a one-key map: `- file: {...}`, `- user: {...}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceSpec {
    /// A directory (created with its parents).
    Directory(DirectorySpec),
    /// A whole file: inline content, a template, or a copy of a source file.
    File(FileSpec),
    /// A marked block of cluster nodes in `/etc/hosts`; every other line is kept byte for byte.
    Hosts(HostsSpec),
    /// A local user account (in the root's `/etc/passwd`, `/etc/shadow`, `/etc/group`).
    User(UserSpec),
    /// A local group (in the root's `/etc/group`).
    Group(GroupSpec),
    /// A filesystem in `/etc/fstab` and in the live mount table: a CIFS share, NFS, tmpfs, a bind
    /// mount, a disk. Keyed by its target.
    Mount(MountSpec),
    /// A check of the node's NVIDIA GPUs (driver, count, compute capability, health). Changes
    /// nothing; fails with the reason when the GPUs do not meet it.
    Gpu(GpuSpec),
    /// A long-running server process, started and kept running by `provision agent` (never by
    /// `apply`), never as root unless `allow_root: true`.
    Service(Box<ServiceSpec>),
    /// A Python virtual environment (`python -m venv`) with pip packages, for nodes without conda.
    Venv(VenvSpec),
    /// A conda environment solved and installed natively (rattler): the specs are the whole
    /// environment, from the channels named, with no conda binary needed.
    CondaEnv(CondaEnvSpec),
    /// A Jupyter kernel: `share/jupyter/kernels/<name>/kernel.json` in a JupyterLab env or prefix,
    /// starting an environment's python with ipykernel.
    JupyterKernel(JupyterKernelSpec),
    /// A user's SSH key pair (`id_ed25519` and `id_ed25519.pub`), made once and never replaced;
    /// the private key is mode 0600 and never shown or backed up.
    SshKey(SshKeySpec),
    /// A marked block of public keys in an `authorized_keys` file; every other line is kept byte
    /// for byte.
    AuthorizedKeys(AuthorizedKeysSpec),
    /// A marked block of cluster nodes' host keys in a `known_hosts` file (keys given in the
    /// manifest, or read once with `ssh-keyscan`); every other line is kept byte for byte.
    KnownHosts(KnownHostsSpec),
    /// A Jupyter server's `jupyter_server_config.json` (ip, port, root dir, no browser) with the
    /// password stored only as Jupyter's own argon2 hash, and a token file for API clients and
    /// the agent's readiness probe. Run the server itself as a `service`.
    JupyterServer(JupyterServerSpec),
    /// Dask's configuration files in a Dask config folder: `jobqueue.yaml` (dask-jobqueue's
    /// `SLURMCluster` defaults) and `distributed.yaml` (the dashboard link).
    DaskConfig(DaskConfigSpec),
}

/// `present` (the default) or `absent`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    #[default]
    Present,
    Absent,
}

/// A directory.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute path.
    pub path: String,
    /// Owner (a user name); default: left as it is, `root` for a new directory.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group (a group name); default: left as it is, `root` for a new directory.
    #[serde(default)]
    pub group: Option<String>,
    /// Permissions as a quoted octal string, e.g. `"0755"`; default: left as it is, `0755` new.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path.
    pub path: String,
    /// `present` (default) or `absent` (the file is removed, after a backup).
    #[serde(default)]
    pub state: State,
    /// The file's content, written as it is.
    #[serde(default)]
    pub content: Option<String>,
    /// A Tera template: a path relative to the manifest's folder, or the name of a template shipped
    /// with provision (`templates/` in the source tree, built into the binary).
    #[serde(default)]
    pub template: Option<String>,
    /// A file to copy, relative to the manifest's folder.
    #[serde(default)]
    pub source: Option<String>,
    /// Owner (a user name); default: left as it is, `root` for a new file.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group (a group name); default: left as it is, `root` for a new file.
    #[serde(default)]
    pub group: Option<String>,
    /// Permissions as a quoted octal string, e.g. `"0644"`; default: left as it is, `0644` new.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// A command run on the new content before it replaces the file; `%s` is the temporary file's
    /// path. A non-zero exit leaves the old file in place and fails the resource.
    #[serde(default)]
    pub validate: Option<String>,
    /// The content is secret: never shown in diffs, reports or logs, and no backup is kept.
    #[serde(default)]
    pub sensitive: bool,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// What to do with Debian's `127.0.1.1 <hostname>` line, which makes PYME advertise an address no
/// other node can reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoopbackHostname {
    /// Leave the line alone.
    #[default]
    Keep,
    /// Comment the line out (the hostname then resolves through the managed block or DNS).
    Remove,
    /// Map the hostname to this node's cluster address in place of 127.0.1.1.
    Static,
}

/// `/etc/hosts` with a managed block of cluster nodes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostsSpec {
    /// The hosts file; default `/etc/hosts`.
    #[serde(default = "default_hosts_path")]
    pub path: String,
    /// Write one line per cluster node (default true).
    #[serde(default = "yes")]
    pub cluster_nodes: bool,
    /// More lines for the managed block.
    #[serde(default)]
    pub extra: Vec<HostEntry>,
    /// What to do with the Debian `127.0.1.1 <hostname>` line.
    #[serde(default)]
    pub loopback_hostname: LoopbackHostname,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// One extra `/etc/hosts` line.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// IPv4 or IPv6 address.
    pub address: String,
    /// Canonical name first, then aliases.
    pub names: Vec<String>,
}

/// A local user.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: State,
    /// Numeric user id; default: the next free id (system range 100-999 for `system: true`,
    /// 1000-59999 otherwise).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Primary group; default: a group with the user's name, created with it.
    #[serde(default)]
    pub group: Option<String>,
    /// Supplementary groups. When given, the user is a member of exactly these groups (it leaves
    /// any other); when left out, memberships are not touched.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// Home directory; default `/home/<name>`.
    #[serde(default)]
    pub home: Option<String>,
    /// Login shell; default `/usr/sbin/nologin` for system users, `/bin/bash` otherwise.
    #[serde(default)]
    pub shell: Option<String>,
    /// The GECOS comment field.
    #[serde(default)]
    pub comment: Option<String>,
    /// A system account (ids below 1000, for services such as PYME's servers).
    #[serde(default)]
    pub system: bool,
    /// Create the home directory, owned by the user, mode 0750 (default true).
    #[serde(default = "yes")]
    pub create_home: bool,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A local group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: State,
    /// Numeric group id; default: the next free id.
    #[serde(default)]
    pub gid: Option<u32>,
    /// A system group (id below 1000).
    #[serde(default)]
    pub system: bool,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// What a `mount` resource should leave behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MountState {
    /// In fstab and mounted (the default).
    #[default]
    Mounted,
    /// In fstab; whether it is mounted now is left alone.
    Present,
    /// In fstab, and not mounted now.
    Unmounted,
    /// Not in fstab, and not mounted.
    Absent,
}

/// Mount options: a list (`[uid=pyme, iocharset=utf8]`) or one fstab-style string
/// (`"uid=pyme,iocharset=utf8"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, JsonSchema)]
#[schemars(with = "OptionsSchema")]
pub struct MountOptions(pub Vec<String>);

#[derive(JsonSchema)]
#[allow(dead_code)]
#[serde(untagged)]
enum OptionsSchema {
    List(Vec<String>),
    Text(String),
}

impl<'de> Deserialize<'de> for MountOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<MountOptions, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MountOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of mount options or a comma-separated string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MountOptions, E> {
                Ok(MountOptions(v.split(',').map(str::to_owned).collect()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MountOptions, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    out.push(item);
                }
                Ok(MountOptions(out))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A filesystem mount.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Where it is mounted (absolute path); the resource's key.
    pub target: String,
    /// What is mounted: `//server/share` (CIFS), `server:/export` (NFS), a device, `UUID=...`,
    /// `LABEL=...`, `tmpfs`, or for a bind mount the directory to bind.
    pub source: String,
    /// Filesystem type; default `cifs` for a `//server/share` source, otherwise required. Use
    /// `none` with the `bind` option for a bind mount.
    #[serde(default)]
    pub fstype: Option<String>,
    /// Mount options (fstab's fourth field). `uid=`/`gid=` may name a user or group; provision
    /// writes its number as the root's account files give it.
    #[serde(default)]
    pub options: MountOptions,
    /// fstab's fifth field (dump), default 0.
    #[serde(default)]
    pub dump: u8,
    /// fstab's sixth field (fsck order), default 0.
    #[serde(default)]
    pub pass: u8,
    /// `mounted` (default), `present`, `unmounted` or `absent`.
    #[serde(default)]
    pub state: MountState,
    /// Mount at boot (default true); `false` adds `noauto`, e.g. on a laptop that is not always on
    /// the share's network.
    #[serde(default = "yes")]
    pub boot: bool,
    /// Add `nofail` and `_netdev` so a share that is down never blocks boot. Default: true for
    /// network filesystems (cifs, smb3, nfs, nfs4, sshfs, ...), false otherwise.
    #[serde(default)]
    pub boot_safe: Option<bool>,
    /// Add `x-systemd.automount`: mount on first access instead of at boot.
    #[serde(default)]
    pub automount: bool,
    /// CIFS credentials: provision writes the credentials file (mode 0600) and adds
    /// `credentials=<file>` to the options.
    #[serde(default)]
    pub credentials: Option<CredentialsSpec>,
    /// Before writing anything, check that the server answers and the credentials log in
    /// (CIFS, with `smbclient`). Default false.
    #[serde(default)]
    pub verify: bool,
    /// Owner of the mount point directory (the directory under the mount), default root.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the mount point directory, default root.
    #[serde(default)]
    pub group: Option<String>,
    /// Mode of the mount point directory, default `"0755"` for a new one.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// Where a CIFS password comes from, and who logs in. The password itself is never written in the
/// manifest.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSpec {
    /// The user name to log in as.
    pub username: String,
    /// The Windows domain or workgroup, e.g. `DIDE`.
    #[serde(default)]
    pub domain: Option<String>,
    /// A file holding the password (one line; a final newline is ignored), relative to the
    /// manifest's folder or absolute on the machine running provision.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable of the provision process holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Where the credentials file goes on the node; default
    /// `/etc/provision/credentials/<target with / as ->`.
    #[serde(default)]
    pub path: Option<String>,
}

impl MountSpec {
    /// The filesystem type as written, or its default.
    pub fn fstype(&self) -> &str {
        match &self.fstype {
            Some(t) => t,
            None if self.source.starts_with("//") => "cifs",
            None => "",
        }
    }

    /// A CIFS/SMB mount.
    pub fn is_cifs(&self) -> bool {
        matches!(self.fstype(), "cifs" | "smb3")
    }

    /// The node path of the credentials file this mount writes, if it has credentials.
    pub fn credentials_path(&self) -> Option<String> {
        let c = self.credentials.as_ref()?;
        Some(c.path.clone().unwrap_or_else(|| {
            format!(
                "/etc/provision/credentials/{}",
                self.target.trim_start_matches('/').replace('/', "-")
            )
        }))
    }
}

/// Network filesystems: a server that is down must not block boot.
pub fn is_network_fstype(fstype: &str) -> bool {
    matches!(
        fstype,
        "cifs" | "smb3" | "nfs" | "nfs4" | "sshfs" | "fuse.sshfs" | "glusterfs" | "ceph" | "davfs"
    )
}

/// A check of the node's NVIDIA GPUs through NVML (docs/gpu.md). Resources that need the GPUs
/// name it in `after:` (`gpu:nvidia`) and are skipped when it fails.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Names the check: its id is `gpu:<name>` (default `gpu:nvidia`).
    #[serde(default = "default_gpu_name")]
    pub name: String,
    /// At least this many GPUs (default 1). 0: GPUs are not required; a node without the NVIDIA
    /// driver passes and says so, and GPUs that are there are still checked.
    #[serde(default = "one")]
    pub count: u32,
    /// Lowest CUDA compute capability, e.g. "5.2" (PYME's GPU fitting).
    #[serde(default)]
    pub min_compute_capability: Option<String>,
    /// Lowest driver version, e.g. "535.54.03".
    #[serde(default)]
    pub min_driver_version: Option<String>,
    /// Hottest allowed GPU temperature in °C (default 85).
    #[serde(default)]
    pub max_temperature: Option<u32>,
    /// Health problems that do not fail the check, e.g. [pcie_degraded].
    #[serde(default)]
    pub ignore: Vec<crate::gpu::health::ProblemKind>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A Python virtual environment made with `python -m venv`, with pip packages installed by its own
/// python.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VenvSpec {
    /// Where the environment lives on the node (absolute); the resource's key.
    pub path: String,
    /// The interpreter that makes the environment: a name looked up on `PATH` (`python3.11`) or an
    /// absolute path; default `python3`. A name with a version (`python3.11`) is also checked
    /// against an existing environment, which is made again when its version differs.
    #[serde(default = "default_python")]
    pub python: String,
    /// The user the environment belongs to: the whole tree is given to this user after every change.
    #[serde(default)]
    pub owner: Option<String>,
    /// The group of the tree; default: the owner's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// pip requirements, in groups installed one after the other, each with its own pip options.
    #[serde(default)]
    pub pip: Vec<PipGroup>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// Requirements installed by one `pip install`, with that command's options.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipGroup {
    /// Requirement specifiers: a name with optional extras and versions, e.g. `numpy>=1.26`,
    /// `dask[distributed]==2024.8.0`.
    pub packages: Vec<String>,
    /// `--no-deps`: install exactly these, not their dependencies (PYME without wxPython).
    #[serde(default)]
    pub no_deps: bool,
    /// `--no-build-isolation`: build sdists against the packages already in the environment
    /// (pymecompress needs numpy at build time).
    #[serde(default)]
    pub no_build_isolation: bool,
    /// `--index-url`: the package index to use in place of PyPI.
    #[serde(default)]
    pub index_url: Option<String>,
    /// `--extra-index-url`, repeated.
    #[serde(default)]
    pub extra_index_urls: Vec<String>,
    /// `--find-links`, repeated: a URL, or an absolute folder of wheels on the node.
    #[serde(default)]
    pub find_links: Vec<String>,
    /// `--no-index`: use only `find_links` (offline).
    #[serde(default)]
    pub no_index: bool,
}

/// A conda environment: its specs are the whole environment (packages no spec needs are removed).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CondaEnvSpec {
    /// Where the environment lives on the node (absolute). Give this or `name` (or a `name:` in
    /// the `from:` file).
    #[serde(default)]
    pub prefix: Option<String>,
    /// A named environment: `<root>/envs/<name>`. Give this or `prefix`.
    #[serde(default)]
    pub name: Option<String>,
    /// The conda installation root named environments live under; default: `conda.root`, else
    /// `/opt/conda`.
    #[serde(default)]
    pub root: Option<String>,
    /// An `environment.yml` in conda's own format (`name`, `channels`, `dependencies` with a
    /// nested `pip:` list), relative to this manifest file's folder: the environment's channels,
    /// specs and pip requirements. `channels`, `specs` and `pip` here are added to the file's.
    #[serde(default)]
    pub from: Option<String>,
    /// Channels, highest priority first: names (`conda-forge`), URLs, `file://` URLs, or local
    /// channel folders (absolute, or relative to this manifest file's folder). Channels are read
    /// on the machine running provision; they are not under `--root`. Default: `conda.channels`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// MatchSpecs, e.g. `numpy >=1.26`, `python 3.11.*`, `conda-forge::dask`.
    #[serde(default)]
    pub specs: Vec<String>,
    /// pip requirements installed on top by the environment's own python (it needs `python` and
    /// `pip` among its specs), in groups with their own pip options, as for `venv`.
    #[serde(default)]
    pub pip: Vec<PipGroup>,
    /// The package cache downloads go to, so a re-run after a failure resumes; default: the first
    /// of `conda.pkgs_dirs`, else `/var/lib/provision/conda-pkgs`.
    #[serde(default)]
    pub pkgs_dir: Option<String>,
    /// The user the environment belongs to: the whole tree is given to this user after every change.
    #[serde(default)]
    pub owner: Option<String>,
    /// The group of the tree; default: the owner's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

impl CondaEnvSpec {
    /// The environment's path on the node: `prefix`, or `<root>/envs/<name>`. The manifest
    /// loader has filled `root`, `channels` and `pkgs_dir` from `conda:` and `from:` already.
    pub fn prefix_path(&self) -> String {
        let root = self.root.as_deref().unwrap_or(DEFAULT_CONDA_ROOT);
        match (&self.prefix, &self.name) {
            (Some(prefix), _) => prefix.clone(),
            (None, Some(name)) => format!("{}/envs/{name}", root.trim_end_matches('/')),
            (None, None) => String::new(),
        }
    }

    /// The package cache: `pkgs_dir`, else the default.
    pub fn pkgs_dir_path(&self) -> &str {
        self.pkgs_dir.as_deref().unwrap_or(DEFAULT_CONDA_PKGS)
    }
}

/// A Jupyter kernel for an environment, written as `python -m ipykernel install` would.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JupyterKernelSpec {
    /// The kernel's name (its folder): lowercase letters, digits, `.`, `_` and `-`. Jupyter knows
    /// one kernel per name on a node, so this is the resource's key.
    pub name: String,
    /// The name shown in JupyterLab's launcher; default: `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The environment the kernel runs (a venv or conda prefix holding ipykernel).
    pub env: String,
    /// The prefix of the JupyterLab that should list the kernel (its environment), or a system
    /// prefix; the kernel goes to `<prefix>/share/jupyter/kernels/<name>/`. Default `/usr/local`.
    #[serde(default = "default_kernel_prefix")]
    pub prefix: String,
    /// Environment variables for the kernel (`"env"` in kernel.json).
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: State,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A Jupyter server's configuration and credentials.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JupyterServerSpec {
    /// The config file written, e.g. `/var/lib/jupyter/.jupyter/jupyter_server_config.json`
    /// (Jupyter reads `jupyter_server_config.json` in `~/.jupyter` of the user it runs as, or in
    /// `$JUPYTER_CONFIG_DIR`).
    pub path: String,
    /// The user the server runs as: owner of the config and the token file (mode 0600).
    pub user: String,
    /// The address the server listens on (`ServerApp.ip`), e.g. the login node's address.
    #[serde(default = "default_jupyter_ip")]
    pub ip: String,
    /// Its port (`ServerApp.port`, default 8888). `port_retries` is 0: a port in use is an error,
    /// not a silent move to the next one.
    #[serde(default = "default_jupyter_port")]
    pub port: u16,
    /// The folder the file browser and notebooks start in (`ServerApp.root_dir`).
    #[serde(default)]
    pub root_dir: Option<String>,
    /// A file holding the password (one line), relative to the manifest's folder; only its
    /// argon2 hash is written.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable of the provision process holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A token file made once (random, mode 0600, never shown), for API clients and readiness
    /// probes (`token_file:` of an http probe); pass it to the server with the service's
    /// `env: {JUPYTER_TOKEN_FILE: <this path>}`.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// Dask's config files in one folder.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaskConfigSpec {
    /// The config folder: `/etc/dask` (default: every user of the node), or a user's
    /// `~/.config/dask`.
    #[serde(default = "default_dask_path")]
    pub path: String,
    /// dask-jobqueue's SLURM settings, written to `<path>/jobqueue.yaml` as `jobqueue: slurm:`.
    #[serde(default)]
    pub slurm: Option<DaskSlurmSpec>,
    /// The dashboard link Dask shows (`distributed.dashboard.link` in `<path>/distributed.yaml`),
    /// e.g. `/user/{JUPYTERHUB_USER}/proxy/{port}/status`.
    #[serde(default)]
    pub dashboard_link: Option<String>,
    /// Owner of the files (a user's own config folder); default root.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the files; default root.
    #[serde(default)]
    pub group: Option<String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// The `jobqueue: slurm:` keys of dask-jobqueue 0.9, each written only when given.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DaskSlurmSpec {
    /// The workers' job name (dask-jobqueue's default `dask-worker`).
    #[serde(default)]
    pub name: Option<String>,
    /// Cores per job.
    pub cores: u32,
    /// Memory per job, as Dask writes sizes: `32GiB`, `4 GB`, `512MiB`.
    pub memory: String,
    /// Worker processes per job (the job's cores are split among them); at most `cores`.
    #[serde(default)]
    pub processes: Option<u32>,
    /// The Python the workers run (the environment's, e.g. `/opt/conda/envs/pangeo/bin/python`).
    #[serde(default)]
    pub python: Option<String>,
    /// The network interface workers listen and reach the scheduler on (e.g. `ib0`).
    #[serde(default)]
    pub interface: Option<String>,
    /// The SLURM partition (`-p`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The SLURM account (`-A`).
    #[serde(default)]
    pub account: Option<String>,
    /// Time limit per job, in SLURM's forms: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
    /// `D-HH:MM:SS`.
    #[serde(default)]
    pub walltime: Option<String>,
    /// The workers' scratch folder (`local-directory`).
    #[serde(default)]
    pub local_directory: Option<String>,
    /// Where the jobs' output goes (`log-directory`).
    #[serde(default)]
    pub log_directory: Option<String>,
    /// Seconds a worker waits for the scheduler before it gives up (`death-timeout`).
    #[serde(default)]
    pub death_timeout: Option<u32>,
    /// Extra `#SBATCH` directives, e.g. `["--exclusive"]` (`job-extra-directives`).
    #[serde(default)]
    pub job_extra_directives: Vec<String>,
    /// Lines run in the job before the worker starts (`job-script-prologue`).
    #[serde(default)]
    pub job_script_prologue: Vec<String>,
}

/// The kind of key an `ssh_key` makes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SshKeyType {
    /// Ed25519 (OpenSSH 6.5 and later): short keys, fast, no parameters to get wrong.
    #[default]
    Ed25519,
}

/// A user's SSH key pair, made once (as `ssh-keygen -t ed25519 -N ''` would) and never replaced.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeySpec {
    /// The private key's path, e.g. `/home/ipp/.ssh/id_ed25519`; the public key is `<path>.pub`.
    pub path: String,
    /// Owner of both files (the user whose key it is); default root. A missing folder (`~/.ssh`)
    /// is made mode 0700, owned by them.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of both files; default the owner's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// The key type of a new key: `ed25519` (the default and, for now, the only one). An existing
    /// key of any type is kept as it is.
    #[serde(default, rename = "type")]
    pub key_type: SshKeyType,
    /// The comment of a new key; default `<owner>@<node>`.
    #[serde(default)]
    pub comment: Option<String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// Public keys allowed to log in as a user: a marked block in their `authorized_keys`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedKeysSpec {
    /// The file, e.g. `/home/ipp/.ssh/authorized_keys`.
    pub path: String,
    /// Owner of the file (the user who logs in with these keys); default root. The file is mode
    /// 0600, and a missing `~/.ssh` is made mode 0700, as sshd's `StrictModes` wants.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the file; default the owner's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// Key lines as `authorized_keys` has them: `[options] type base64 [comment]`, e.g.
    /// `ssh-ed25519 AAAAC3Nza... ipp@cl-0`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// Public key files on the node (absolute), read when the resource is applied: an
    /// `ssh_key`'s `.pub` (which then comes first), a key on a shared filesystem.
    #[serde(default)]
    pub key_files: Vec<String>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// The cluster nodes' SSH host keys: a marked block in a `known_hosts` file, so the first `ssh`
/// to a node does not stop at "Are you sure you want to continue connecting?".
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnownHostsSpec {
    /// The file: a user's `~/.ssh/known_hosts`, or `/etc/ssh/ssh_known_hosts` for every user.
    pub path: String,
    /// Owner of the file; default root. The file is mode 0644.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group of the file; default the owner's primary group.
    #[serde(default)]
    pub group: Option<String>,
    /// Which cluster nodes are listed: those with one of these roles (default: every node). Each
    /// is listed under its name, `name.domain` and its address.
    #[serde(default)]
    pub host_roles: Vec<String>,
    /// Host keys by node name, as `ssh-keyscan` prints them without the host:
    /// `ssh-ed25519 AAAAC3Nza...`. The secure way: the key is checked against what you wrote.
    #[serde(default)]
    pub keys: BTreeMap<String, Vec<String>>,
    /// Read the keys of listed nodes that `keys` does not give with `ssh-keyscan`, once: a key in
    /// the block is kept from then on, so a node whose key later changes is refused by ssh, as
    /// it would be by hand (trust on first use). Default false: every node needs `keys`.
    #[serde(default)]
    pub scan: bool,
    /// The nodes' SSH port (default 22); another port is written `[name]:port`.
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids (`kind:key`, e.g. `user:pyme`) this resource must come after.
    #[serde(default)]
    pub after: Vec<String>,
}

/// A command: a list (`[PYMERuleServer, -a, local]`) or one program name with `args:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    List(Vec<String>),
    Program(String),
}

/// Whether a service that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartSpec {
    /// After every exit (the default).
    #[default]
    Always,
    /// After an exit with a non-zero status or a signal.
    OnFailure,
    /// Never.
    Never,
}

/// A duration written as text: `500ms`, `5s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub struct Duration(pub std::time::Duration);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Duration).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e}; write e.g. \"500ms\", \"5s\" or \"2m\""
            ))
        })
    }
}

/// Restart backoff: exponential from `base` to `cap`, immediate again after a healthy run, and a
/// breaker after `start_limit` starts within `start_window`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSpec {
    /// Delay before the second restart in a row (default 200ms; the first is immediate).
    #[serde(default)]
    pub base: Option<Duration>,
    /// Longest delay (default 30s).
    #[serde(default)]
    pub cap: Option<Duration>,
    /// Spread of each delay as a fraction, 0 to 1 (default 0.2).
    #[serde(default)]
    pub jitter: Option<f64>,
    /// A run this long counts as healthy (default 10s).
    #[serde(default)]
    pub healthy_after: Option<Duration>,
    /// Give up after this many starts within `start_window` (default 10 in 60s).
    #[serde(default)]
    pub start_limit: Option<u32>,
    #[serde(default)]
    pub start_window: Option<Duration>,
}

/// How a service is stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// Signal sent to the service's process group first (default SIGTERM), e.g. SIGINT.
    #[serde(default)]
    pub signal: Option<String>,
    /// Time before SIGKILL to the whole group (default 10s).
    #[serde(default)]
    pub grace: Option<Duration>,
}

/// An HTTP check: `GET url` answers `status`, with `body_contains` in the body if given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpProbeSpec {
    /// An `http://host:port/path` or `https://...` URL (certificates checked against the system's
    /// roots and the agent's `--ca-file`; redirects are not followed).
    pub url: String,
    /// Expected status (default 200).
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub body_contains: Option<String>,
    /// A node file holding an API token, sent as `Authorization: token <it>` (a Jupyter server's
    /// `token_file`); read by the agent at each attempt, never shown.
    #[serde(default)]
    pub token_file: Option<String>,
}

/// A readiness or liveness probe: exactly one of `tcp`, `http`, `file`, `command`, `log_line`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// `host:port` accepts a TCP connection.
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default)]
    pub http: Option<HttpProbeSpec>,
    /// This node path exists (under `--root`).
    #[serde(default)]
    pub file: Option<String>,
    /// This command exits 0 within `timeout`.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The service's log holds this text (written since this run started).
    #[serde(default)]
    pub log_line: Option<String>,
    /// Time between attempts (default 1s).
    #[serde(default)]
    pub interval: Option<Duration>,
    /// Time one attempt may take (default 2s).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Liveness only: this many failures in a row mean the service hangs (default 3).
    #[serde(default)]
    pub failures: Option<u32>,
}

/// A long-running server, supervised by `provision agent`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service's name; its id is `service:<name>`.
    pub name: String,
    /// What to run: a list, or a program with `args:`. Not resolved under `--root`.
    pub command: CommandSpec,
    /// Arguments, when `command:` is one program.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment added to HOME, USER, LOGNAME and PATH (of the service user).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (a node path, under `--root`); default `/`.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The user it runs as (a `user:` resource of this manifest). Required unless `allow_root`.
    #[serde(default)]
    pub user: Option<String>,
    /// Primary group; default the user's.
    #[serde(default)]
    pub group: Option<String>,
    /// More supplementary groups (besides the user's own memberships), e.g. [video, render].
    #[serde(default)]
    pub groups: Vec<String>,
    /// File creation mask as a quoted octal string, e.g. `"0027"`.
    #[serde(default)]
    pub umask: Option<Mode>,
    /// Allow running as root (`user: root` or no user). Default false: refused.
    #[serde(default)]
    pub allow_root: bool,
    /// `always` (default), `on-failure` or `never`.
    #[serde(default)]
    pub restart: RestartSpec,
    #[serde(default)]
    pub backoff: BackoffSpec,
    #[serde(default)]
    pub stop: StopSpec,
    /// The service counts as started (and its dependents start) only when this passes.
    #[serde(default)]
    pub readiness: Option<ProbeSpec>,
    /// A run not ready within this time is killed and counts as a failed start (default 60s).
    #[serde(default)]
    pub start_timeout: Option<Duration>,
    /// Restarts a service that stops answering.
    #[serde(default)]
    pub liveness: Option<ProbeSpec>,
    /// What this service needs elsewhere, usually on another node (a remote rule server):
    /// `tcp:` or `http:` probes. Before every start (restarts too) each must pass; meanwhile the
    /// service is "waiting for ..." in the log and the status.
    #[serde(default)]
    pub wait_for: Vec<ProbeSpec>,
    /// How long one start waits for `wait_for:` before the service is marked failed
    /// (default 10m; a SIGHUP or an agent restart tries again).
    #[serde(default)]
    pub wait_timeout: Option<Duration>,
    /// Apply only on nodes with one of these roles. With `nodes` also empty: every node.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Apply only on these nodes (by name).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Resource ids this service starts after: other services (`service:rules`, started and
    /// ready first), files (a changed file restarts the service), mounts, gpu checks. A failed
    /// one keeps the service from starting.
    #[serde(default)]
    pub after: Vec<String>,
}

impl ServiceSpec {
    /// The program and its arguments.
    pub fn argv(&self) -> Vec<String> {
        match &self.command {
            CommandSpec::List(list) => list.iter().chain(&self.args).cloned().collect(),
            CommandSpec::Program(p) => std::iter::once(p).chain(&self.args).cloned().collect(),
        }
    }
}

/// The fields every resource kind shares, borrowed.
pub struct Scope<'a> {
    pub roles: &'a [String],
    pub nodes: &'a [String],
    pub after: &'a [String],
}

impl ResourceSpec {
    /// The kind as written in the manifest (`file`, `user`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceSpec::Directory(_) => "directory",
            ResourceSpec::File(_) => "file",
            ResourceSpec::Hosts(_) => "hosts",
            ResourceSpec::User(_) => "user",
            ResourceSpec::Group(_) => "group",
            ResourceSpec::Mount(_) => "mount",
            ResourceSpec::Gpu(_) => "gpu",
            ResourceSpec::Service(_) => "service",
            ResourceSpec::Venv(_) => "venv",
            ResourceSpec::CondaEnv(_) => "conda_env",
            ResourceSpec::JupyterKernel(_) => "jupyter_kernel",
            ResourceSpec::SshKey(_) => "ssh_key",
            ResourceSpec::AuthorizedKeys(_) => "authorized_keys",
            ResourceSpec::KnownHosts(_) => "known_hosts",
            ResourceSpec::JupyterServer(_) => "jupyter_server",
            ResourceSpec::DaskConfig(_) => "dask_config",
        }
    }

    /// What names this resource among its kind: a path or an account name.
    pub fn key(&self) -> std::borrow::Cow<'_, str> {
        let key: &str = match self {
            ResourceSpec::Directory(d) => &d.path,
            ResourceSpec::File(f) => &f.path,
            ResourceSpec::Hosts(h) => &h.path,
            ResourceSpec::User(u) => &u.name,
            ResourceSpec::Group(g) => &g.name,
            ResourceSpec::Service(s) => &s.name,
            ResourceSpec::Mount(m) => &m.target,
            ResourceSpec::Gpu(g) => &g.name,
            ResourceSpec::Venv(v) => &v.path,
            ResourceSpec::CondaEnv(c) => return c.prefix_path().into(),
            ResourceSpec::JupyterKernel(k) => &k.name,
            ResourceSpec::SshKey(k) => &k.path,
            ResourceSpec::AuthorizedKeys(a) => &a.path,
            ResourceSpec::KnownHosts(k) => &k.path,
            ResourceSpec::JupyterServer(j) => &j.path,
            ResourceSpec::DaskConfig(d) => &d.path,
        };
        key.into()
    }

    /// The resource id, `kind:key`, used by `after:` and in reports.
    pub fn id(&self) -> String {
        format!("{}:{}", self.kind(), self.key())
    }

    /// Where it applies and what it comes after.
    pub fn scope(&self) -> Scope<'_> {
        macro_rules! scope {
            ($s:expr) => {
                Scope {
                    roles: &$s.roles,
                    nodes: &$s.nodes,
                    after: &$s.after,
                }
            };
        }
        match self {
            ResourceSpec::Directory(s) => scope!(s),
            ResourceSpec::File(s) => scope!(s),
            ResourceSpec::Hosts(s) => scope!(s),
            ResourceSpec::Service(s) => scope!(s),
            ResourceSpec::User(s) => scope!(s),
            ResourceSpec::Group(s) => scope!(s),
            ResourceSpec::Mount(s) => scope!(s),
            ResourceSpec::Gpu(s) => scope!(s),
            ResourceSpec::Venv(s) => scope!(s),
            ResourceSpec::CondaEnv(s) => scope!(s),
            ResourceSpec::JupyterKernel(s) => scope!(s),
            ResourceSpec::SshKey(s) => scope!(s),
            ResourceSpec::AuthorizedKeys(s) => scope!(s),
            ResourceSpec::KnownHosts(s) => scope!(s),
            ResourceSpec::JupyterServer(s) => scope!(s),
            ResourceSpec::DaskConfig(s) => scope!(s),
        }
    }
}

fn default_hosts_path() -> String {
    "/etc/hosts".to_owned()
}

fn default_gpu_name() -> String {
    "nvidia".to_owned()
}

fn default_ssh_port() -> u16 {
    22
}

fn default_python() -> String {
    "python3".to_owned()
}

/// Where conda is installed when the manifest does not say.
pub const DEFAULT_CONDA_ROOT: &str = "/opt/conda";

/// provision's conda package cache when the manifest does not name one.
pub const DEFAULT_CONDA_PKGS: &str = "/var/lib/provision/conda-pkgs";

fn default_conda_root() -> String {
    DEFAULT_CONDA_ROOT.to_owned()
}

fn default_jupyter_ip() -> String {
    "127.0.0.1".to_owned()
}

fn default_jupyter_port() -> u16 {
    8888
}

fn default_dask_path() -> String {
    "/etc/dask".to_owned()
}

fn default_kernel_prefix() -> String {
    "/usr/local".to_owned()
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// File permissions, written in the manifest as a quoted octal string (`"0644"`).
///
/// A bare YAML integer is refused: `0644` means 420 under YAML 1.1 and 644 under YAML 1.2, and a
/// mode that silently means something else is how files end up world-writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub struct Mode(pub u32);

/// Serialized as written in manifests (`"0644"`), so reports read like the manifest.
impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Mode {
    /// Parses `"644"`, `"0644"` or `"0o644"`.
    pub fn parse(text: &str) -> Result<Mode, String> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        // One or two digits are a typo more often than a mode: "64" is not 0064.
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!(
                "invalid mode {text:?}: expected 3 or 4 octal digits, e.g. \"0644\""
            ));
        }
        u32::from_str_radix(digits, 8)
            .map(Mode)
            .map_err(|e| format!("invalid mode {text:?}: {e}"))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quoted octal mode such as \"0644\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mode, E> {
                Mode::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0644\", not the number {v}: \
                     YAML reads unquoted 0644 differently depending on its version"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0644\", not the number {v}"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Mode, E> {
                // Some YAML readers take a bare `0644` for a float.
                Err(E::custom(format!(
                    "mode must be a quoted octal string such as \"0644\", not the number {v}: \
                     YAML reads unquoted 0644 differently depending on its version"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_three_or_four_octal_digits() {
        assert_eq!(Mode::parse("644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("0644"), Ok(Mode(0o644)));
        assert_eq!(Mode::parse("0o750"), Ok(Mode(0o750)));
        assert_eq!(Mode::parse("1777"), Ok(Mode(0o1777)));
        for bad in ["", "0o", "7", "64", "0689", "07777", "rw-r--r--", "-644"] {
            assert!(Mode::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bare_number_is_refused_with_the_reason() {
        for text in ["mode: 0644", "mode: 644", "mode: -1"] {
            #[derive(Debug, Deserialize)]
            struct M {
                #[allow(dead_code)]
                mode: Mode,
            }
            let e = serde_saphyr::from_str::<M>(text).expect_err(text);
            assert!(e.to_string().contains("quoted octal string"), "{text}: {e}");
        }
    }
}
