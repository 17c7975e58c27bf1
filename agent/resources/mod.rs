//! The resource kinds, and turning one node's share of the manifest into engine steps.
//!
//! Building resolves everything that depends on the node: template rendering (with facts and
//! vars), source files, default homes and shells, the hosts block. A resource that cannot be built
//! becomes a failed step; the others still run.

mod accounts;
pub mod authorized_keys;
mod block;
pub mod cifs;
pub mod conda;
pub mod condarc;
mod dask;
mod directory;
mod file;
pub mod fstab;
mod gpu;
pub(crate) mod hosts;
mod jupyter;
mod kernel;
pub mod known_hosts;
mod mount;
mod ownership;
pub mod pip;
mod progress;
pub mod service;
mod ssh;
mod ssh_key;
mod venv;

use std::path::Path;

use serde_json::json;

pub use accounts::{Group, User};
pub use authorized_keys::AuthorizedKeys;
pub use conda::CondaEnv;
pub use dask::DaskConfig;
pub use directory::Directory;
pub use file::{Content, File};
pub use gpu::GpuCheck;
pub use hosts::Hosts;
pub use jupyter::JupyterServer;
pub use kernel::JupyterKernel;
pub use known_hosts::KnownHosts;
pub use mount::Mount;
pub use ownership::Ownership;
pub use service::Service;
pub use ssh_key::SshKey;
pub use venv::Venv;

use crate::engine::{Need, Reconcile, Step};
use crate::facts::Facts;
use crate::manifest::model::{
    CondaSettings, DEFAULT_CONDA_PKGS, JupyterKernelSpec, KnownHostsSpec, MountSpec, PipGroup,
    ResourceSpec, State,
};
use crate::manifest::{Manifest, NodeSelection};
use crate::secret::Secret;

/// What a path needs first: its owner, its group, its parent directory.
fn owner_needs(path: &str, ownership: &Ownership) -> Vec<Need> {
    let mut needs = Vec::new();
    if let Some(parent) = Path::new(path).parent() {
        needs.push(Need::Directory(parent.display().to_string()));
    }
    needs.extend(ownership.owner.clone().map(Need::User));
    needs.extend(ownership.group.clone().map(Need::Group));
    needs
}

/// The variables a template sees for this node.
pub fn template_context(m: &Manifest, sel: &NodeSelection<'_>, facts: &Facts) -> serde_json::Value {
    let mut vars: serde_json::Map<String, serde_json::Value> = m
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    vars.extend(sel.node.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let node_json = |n: &crate::manifest::model::Node| json!({"name": n.name, "address": n.address, "roles": n.roles, "aliases": n.aliases, "cores": n.cores, "vars": n.vars});
    let cluster = m.cluster.as_ref().map(|c| &c.value);
    json!({
        "node": node_json(sel.node),
        "nodes": m.nodes.iter().map(|n| node_json(&n.value)).collect::<Vec<_>>(),
        "cluster": {"name": cluster.and_then(|c| c.name.clone()), "domain": cluster.and_then(|c| c.domain.clone())},
        "vars": vars,
        "facts": facts,
    })
}

/// The steps for the selected node: the `conda:` installation's, then the resources in manifest
/// order.
pub fn build(m: &Manifest, sel: &NodeSelection<'_>, facts: &Facts) -> Vec<Step> {
    // Made only if a template is rendered: it holds every node, so making it for each node of a
    // large cluster (validate checks each distinct set of resources) would cost nodes squared.
    let context = std::cell::LazyCell::new(|| template_context(m, sel, facts));
    let mut steps = conda_steps(m, sel);
    steps.extend(sel.resources.iter().map(|&i| {
        let located = &m.resources[i];
        let spec = &located.value;
        let dir = m.dir_of(&located.origin);
        Step {
            id: spec.id(),
            after: spec.scope().after.to_vec(),
            body: build_one(m, sel, spec, dir, &context),
        }
    }));
    steps
}

/// The `conda:` settings, if they apply to this node.
fn conda_here<'m>(m: &'m Manifest, sel: &NodeSelection<'_>) -> Option<&'m CondaSettings> {
    let c = m.conda_settings()?;
    crate::manifest::applies_to(&c.roles, &c.nodes, sel.node).then_some(c)
}

/// The base installation provision makes at the conda root, if `conda: base:` names packages.
fn conda_base(m: &Manifest, sel: &NodeSelection<'_>) -> Option<String> {
    conda_here(m, sel)
        .filter(|c| !c.base.is_empty())
        .map(|c| c.root.trim_end_matches('/').to_owned())
}

/// The base installation (a `conda_env` at the root) and the managed `.condarc` (which a base
/// may be made beside, so the two do not wait for each other).
fn conda_steps(m: &Manifest, sel: &NodeSelection<'_>) -> Vec<Step> {
    let (Some(c), Some(located)) = (conda_here(m, sel), m.conda.as_ref()) else {
        return Vec::new();
    };
    let dir = m.dir_of(&located.origin);
    let root = c.root.trim_end_matches('/');
    let mut steps = Vec::new();
    if !c.base.is_empty() {
        let body = (|| -> Result<Box<dyn Reconcile>, String> {
            Ok(Box::new(CondaEnv {
                prefix: root.to_owned(),
                channels: c
                    .channels
                    .iter()
                    .map(|text| conda::channel(text, dir))
                    .collect::<Result<_, String>>()?,
                specs: c
                    .base
                    .iter()
                    .map(|t| conda::parse_spec(t))
                    .collect::<Result<_, String>>()?,
                pkgs_dir: c
                    .pkgs_dirs
                    .first()
                    .map_or(DEFAULT_CONDA_PKGS, String::as_str)
                    .to_owned(),
                owner: None,
                group: None,
                pip: Vec::new(),
                base: true,
                installation: None,
            }))
        })();
        steps.push(Step {
            id: format!("conda_env:{root}"),
            after: Vec::new(),
            body,
        });
    }
    if c.manages_condarc() {
        let path = format!("{root}/.condarc");
        steps.push(Step {
            id: format!("file:{path}"),
            after: Vec::new(),
            body: Ok(Box::new(File {
                path,
                state: State::Present,
                content: Content::Plain(condarc::render(c, dir).into_bytes()),
                ownership: Ownership {
                    owner: None,
                    group: None,
                    mode: None,
                    default_mode: 0o644,
                },
                validate: None,
            })),
        });
    }
    steps
}

/// pip groups as the manifest writes them, parsed (validation has checked them).
fn pip_groups(groups: &[PipGroup]) -> Result<Vec<pip::Group>, String> {
    groups
        .iter()
        .map(|g| {
            Ok(pip::Group {
                wanted: g
                    .packages
                    .iter()
                    .map(|t| pip::Wanted::parse(t))
                    .collect::<Result<_, String>>()?,
                options: g.clone(),
            })
        })
        .collect()
}

fn build_one(
    m: &Manifest,
    sel: &NodeSelection<'_>,
    spec: &ResourceSpec,
    dir: &Path,
    context: &std::cell::LazyCell<serde_json::Value, impl FnOnce() -> serde_json::Value>,
) -> Result<Box<dyn Reconcile>, String> {
    Ok(match spec {
        ResourceSpec::Directory(d) => Box::new(Directory {
            path: d.path.clone(),
            ownership: Ownership {
                owner: d.owner.clone(),
                group: d.group.clone(),
                mode: d.mode,
                default_mode: 0o755,
            },
        }),
        ResourceSpec::File(f) => {
            let bytes: Vec<u8> = if f.state == State::Absent {
                Vec::new()
            } else if let Some(text) = &f.content {
                text.clone().into_bytes()
            } else if let Some(name) = &f.template {
                crate::template::render(dir, name, std::cell::LazyCell::force(context))
                    .map_err(|e| e.to_string())?
                    .into_bytes()
            } else if let Some(source) = &f.source {
                let path = dir.join(source);
                std::fs::read(&path)
                    .map_err(|e| format!("cannot read source file {}: {e}", path.display()))?
            } else {
                return Err(format!("file {} has no content", f.path));
            };
            Box::new(File {
                path: f.path.clone(),
                state: f.state,
                content: if f.sensitive {
                    Content::Secret(Secret::new(bytes))
                } else {
                    Content::Plain(bytes)
                },
                ownership: Ownership {
                    owner: f.owner.clone(),
                    group: f.group.clone(),
                    mode: f.mode,
                    default_mode: 0o644,
                },
                validate: f.validate.clone(),
            })
        }
        ResourceSpec::Hosts(h) => {
            let mut block = Vec::new();
            if h.cluster_nodes {
                for n in &m.nodes {
                    let n = &n.value;
                    let mut names = Vec::new();
                    if let Some(domain) = m.domain() {
                        names.push(format!("{}.{domain}", n.name));
                    }
                    names.push(n.name.clone());
                    names.extend(n.aliases.iter().cloned());
                    block.push(hosts::entry(&n.address, &names));
                }
            }
            block.extend(h.extra.iter().map(|e| hosts::entry(&e.address, &e.names)));
            Box::new(Hosts {
                path: h.path.clone(),
                block,
                loopback: h.loopback_hostname,
                hostname: sel.node.name.clone(),
                address: sel.node.address.clone(),
            })
        }
        ResourceSpec::User(u) => Box::new(User {
            name: u.name.clone(),
            state: u.state,
            uid: u.uid,
            group: u.group.clone(),
            groups: u.groups.clone(),
            home: u.home.clone(),
            shell: u.shell.clone(),
            comment: u.comment.clone(),
            system: u.system,
            create_home: u.create_home,
        }),
        ResourceSpec::Group(g) => Box::new(Group {
            name: g.name.clone(),
            state: g.state,
            gid: g.gid,
            system: g.system,
        }),
        ResourceSpec::Mount(spec) => Box::new(build_mount(spec, dir)?),
        ResourceSpec::Service(spec) => Box::new(Service {
            spec: (**spec).clone(),
        }),
        ResourceSpec::Venv(v) => Box::new(Venv {
            path: v.path.clone(),
            python: v.python.clone(),
            owner: v.owner.clone(),
            group: v.group.clone(),
            groups: pip_groups(&v.pip)?,
        }),
        ResourceSpec::CondaEnv(c) => Box::new(CondaEnv {
            installation: conda_base(m, sel).filter(|base| {
                Path::new(&c.prefix_path()).starts_with(base) && c.prefix_path() != *base
            }),
            pip: pip_groups(&c.pip)?,
            base: false,
            prefix: c.prefix_path(),
            channels: c
                .channels
                .iter()
                .map(|text| conda::channel(text, dir))
                .collect::<Result<_, String>>()?,
            specs: conda::with_pip(
                c.specs
                    .iter()
                    .map(|t| conda::parse_spec(t))
                    .collect::<Result<_, String>>()?,
                !c.pip.is_empty(),
            ),
            pkgs_dir: c.pkgs_dir_path().to_owned(),
            owner: c.owner.clone(),
            group: c.group.clone(),
        }),
        ResourceSpec::JupyterKernel(k) => Box::new(build_kernel(m, sel, k)),
        ResourceSpec::SshKey(k) => Box::new(SshKey {
            path: k.path.clone(),
            owned: ssh::Owned {
                owner: k.owner.clone(),
                group: k.group.clone(),
            },
            comment: k.comment.clone().unwrap_or_else(|| {
                format!("{}@{}", k.owner.as_deref().unwrap_or("root"), sel.node.name)
            }),
        }),
        ResourceSpec::AuthorizedKeys(a) => Box::new(AuthorizedKeys {
            path: a.path.clone(),
            owned: ssh::Owned {
                owner: a.owner.clone(),
                group: a.group.clone(),
            },
            keys: a.keys.clone(),
            key_files: a.key_files.clone(),
        }),
        ResourceSpec::KnownHosts(k) => Box::new(build_known_hosts(m, k)),
        ResourceSpec::JupyterServer(j) => {
            let password =
                cifs::read_password(dir, j.password_file.as_deref(), j.password_env.as_deref())
                    .map_err(|e| format!("jupyter_server {}: {e}", j.path))?;
            let mut server_app = serde_json::Map::new();
            server_app.insert("ip".into(), json!(j.ip));
            server_app.insert("port".into(), json!(j.port));
            server_app.insert("port_retries".into(), json!(0));
            server_app.insert("open_browser".into(), json!(false));
            if let Some(dir) = &j.root_dir {
                server_app.insert("root_dir".into(), json!(dir));
            }
            Box::new(JupyterServer {
                path: j.path.clone(),
                user: j.user.clone(),
                server_app,
                password,
                token_file: j.token_file.clone(),
            })
        }
        ResourceSpec::DaskConfig(d) => Box::new(DaskConfig::new(d)),
        // Validation has checked that both versions parse.
        ResourceSpec::Gpu(g) => Box::new(GpuCheck {
            name: g.name.clone(),
            requirements: crate::gpu::check::Requirements {
                count: g.count,
                min_compute_capability: match &g.min_compute_capability {
                    Some(text) => Some(text.parse()?),
                    None => None,
                },
                min_driver_version: match &g.min_driver_version {
                    Some(text) => Some(text.parse()?),
                    None => None,
                },
                max_temperature_c: g.max_temperature,
                ignore: g.ignore.clone(),
            },
        }),
    })
}

/// The nodes a `known_hosts` lists (those with one of `host_roles`, or all), each under its
/// name, `name.domain`, aliases and address.
fn build_known_hosts(m: &Manifest, k: &KnownHostsSpec) -> KnownHosts {
    let hosts = m
        .nodes
        .iter()
        .map(|n| &n.value)
        .filter(|n| k.host_roles.is_empty() || n.roles.iter().any(|r| k.host_roles.contains(r)))
        .map(|n| {
            let mut patterns = vec![n.name.clone()];
            if let Some(domain) = m.domain() {
                patterns.push(format!("{}.{domain}", n.name));
            }
            patterns.extend(n.aliases.iter().cloned());
            patterns.push(n.address.clone());
            known_hosts::Listed {
                name: n.name.clone(),
                patterns,
                address: n.address.clone(),
                pinned: k.keys.get(&n.name).cloned().unwrap_or_default(),
            }
        })
        .collect();
    KnownHosts {
        path: k.path.clone(),
        owned: ssh::Owned {
            owner: k.owner.clone(),
            group: k.group.clone(),
        },
        hosts,
        scan: k.scan,
        port: k.port,
    }
}

/// A kernel; the first present kernel of its prefix (in manifest order) prunes provision's other
/// kernels there that this node's manifest does not list.
fn build_kernel(m: &Manifest, sel: &NodeSelection<'_>, k: &JupyterKernelSpec) -> JupyterKernel {
    let same_prefix: Vec<&JupyterKernelSpec> = sel
        .resources
        .iter()
        .filter_map(|&i| match &m.resources[i].value {
            ResourceSpec::JupyterKernel(other) if other.prefix == k.prefix => Some(other),
            _ => None,
        })
        .collect();
    let first = same_prefix
        .iter()
        .find(|o| o.state == State::Present)
        .is_some_and(|o| std::ptr::eq(*o, k));
    JupyterKernel {
        name: k.name.clone(),
        display_name: k.display_name.clone().unwrap_or_else(|| k.name.clone()),
        env: k.env.clone(),
        prefix: k.prefix.clone(),
        env_vars: k.env_vars.clone(),
        state: k.state,
        prune_except: first.then(|| {
            same_prefix
                .iter()
                .filter(|o| o.state == State::Present)
                .map(|o| o.name.clone())
                .collect()
        }),
    }
}

/// A mount with its defaults: `noauto` for `boot: false`, `nofail,_netdev` for network
/// filesystems (so a share that is down never blocks boot), `x-systemd.automount`, and the
/// credentials file. The password is read here, so a missing one fails only this mount.
fn build_mount(spec: &MountSpec, dir: &Path) -> Result<Mount, String> {
    let fstype = spec.fstype().to_owned();
    let mut options: Vec<String> = spec
        .options
        .0
        .iter()
        .filter(|o| o.as_str() != "defaults")
        .cloned()
        .collect();
    let mut add = |o: &str| {
        if !options.iter().any(|x| x == o) {
            options.push(o.to_owned());
        }
    };
    if !spec.boot {
        add("noauto");
    }
    if spec
        .boot_safe
        .unwrap_or_else(|| crate::manifest::model::is_network_fstype(&fstype))
    {
        add("nofail");
        add("_netdev");
    }
    if spec.automount {
        add("x-systemd.automount");
    }
    let credentials = match (&spec.credentials, spec.credentials_path()) {
        (Some(c), Some(path)) => {
            let password =
                cifs::read_password(dir, c.password_file.as_deref(), c.password_env.as_deref())?;
            options.insert(0, format!("credentials={path}"));
            Some(cifs::Credentials {
                path,
                username: c.username.clone(),
                domain: c.domain.clone(),
                password,
            })
        }
        _ => None,
    };
    if options.is_empty() {
        options.push("defaults".into());
    }
    Ok(Mount {
        target: spec.target.clone(),
        source: spec.source.clone(),
        fstype,
        options,
        dump: spec.dump,
        pass: spec.pass,
        state: spec.state,
        credentials,
        verify: spec.verify,
        point: Ownership {
            owner: spec.owner.clone(),
            group: spec.group.clone(),
            mode: spec.mode,
            default_mode: 0o755,
        },
        fstab: "/etc/fstab".into(),
    })
}
