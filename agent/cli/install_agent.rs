//! `provision install-agent`: writes the systemd unit that runs the agent at boot
//! (`templates/systemd/provision-agent.service.tera`) and enables it the way `systemctl enable`
//! does, with the `multi-user.target.wants` link, so it works for an image or a `--root` too,
//! where systemd is not running. Rerunning it with the same arguments changes nothing.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::host::{Host, Meta};

const TEMPLATE: &str = include_str!("../../templates/systemd/provision-agent.service.tera");
/// Where the unit goes, as a node path.
pub const UNIT: &str = "/etc/systemd/system/provision-agent.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/provision-agent.service";

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The manifest the agent will run (its absolute path on the node).
    manifest: PathBuf,
    /// Write the unit under DIR instead of / (an image, a chroot, a test).
    #[arg(long, default_value = "/", env = "PROVISION_ROOT")]
    root: PathBuf,
    /// The node the agent runs as; default: the host's short hostname at boot.
    #[arg(long)]
    node: Option<String>,
    /// The provision binary the unit starts; default: this binary.
    #[arg(long)]
    exec: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Host(#[from] crate::host::Error),
    #[error("{0}")]
    Template(#[from] crate::template::TemplateError),
    #[error("{what} {}: {reason}", .path.display())]
    Path {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// One argument of `ExecStart=`, quoted the way systemd reads it.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        return arg.to_owned();
    }
    let escaped = arg
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    format!("\"{escaped}\"")
}

fn absolute(what: &'static str, p: &Path) -> Result<PathBuf, InstallError> {
    std::path::absolute(p).map_err(|e| InstallError::Path {
        what,
        path: p.to_owned(),
        reason: e.to_string(),
    })
}

/// The unit's text for these arguments.
pub fn unit(exec: &Path, manifest: &Path, node: Option<&str>) -> Result<String, InstallError> {
    let mut args = vec![
        exec.display().to_string(),
        "agent".to_owned(),
        manifest.display().to_string(),
    ];
    if let Some(n) = node {
        args.extend(["--node".to_owned(), n.to_owned()]);
    }
    let exec_start: Vec<String> = args.iter().map(|a| quote(a)).collect();
    let context = serde_json::json!({
        "exec_start": exec_start.join(" "),
        "manifest": manifest.display().to_string(),
    });
    Ok(crate::template::render_str(
        "systemd/provision-agent.service.tera",
        TEMPLATE,
        &context,
    )?)
}

pub fn run(args: &InstallArgs) -> Result<u8, InstallError> {
    if !args.root.is_dir() {
        return Err(InstallError::Path {
            what: "--root",
            path: args.root.clone(),
            reason: "is not a directory; create it first".into(),
        });
    }
    let manifest = absolute("manifest", &args.manifest)?;
    let exec = match &args.exec {
        Some(e) => absolute("--exec", e)?,
        None => std::env::current_exe().map_err(|e| InstallError::Path {
            what: "this binary",
            path: PathBuf::from("/proc/self/exe"),
            reason: e.to_string(),
        })?,
    };
    let text = unit(&exec, &manifest, args.node.as_deref())?;
    let host = Host::new(&args.root)?;
    let real = host.resolve(UNIT)?;
    let wrote = if host.read(UNIT)?.as_deref() == Some(text.as_bytes()) {
        false
    } else {
        host.create_dir("/etc/systemd/system", Meta::own(0o755))?;
        host.write(UNIT, text.as_bytes(), Meta::own(0o644), None)?;
        true
    };
    // The link itself points outside the root (at the node path, as `systemctl enable` makes
    // it), so only its directory is resolved under the root.
    let (wants_dir, link_name) = WANTS.rsplit_once('/').unwrap_or(("", WANTS));
    let link = host.resolve(wants_dir)?.join(link_name);
    let linked = match std::fs::read_link(&link) {
        Ok(target) if target == Path::new(UNIT) => false,
        _ => {
            host.create_dir(wants_dir, Meta::own(0o755))?;
            let fail = |e: std::io::Error| InstallError::Path {
                what: "enable: link",
                path: link.clone(),
                reason: e.to_string(),
            };
            match std::fs::remove_file(&link) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
                _ => {}
            }
            std::os::unix::fs::symlink(UNIT, &link).map_err(fail)?;
            true
        }
    };
    let say = |done: bool| if done { "wrote" } else { "unchanged" };
    println!("{} {}", say(wrote), real.display());
    println!(
        "{} {} -> {UNIT}",
        if linked { "enabled" } else { "already enabled" },
        link.display()
    );
    if args.root == Path::new("/") {
        println!(
            "  next: systemctl daemon-reload && systemctl start provision-agent (it starts at every boot)"
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_quotes_what_systemd_would_split() {
        assert_eq!(
            quote("/usr/local/bin/provision"),
            "/usr/local/bin/provision"
        );
        assert_eq!(quote("/srv/my cluster.yaml"), "\"/srv/my cluster.yaml\"");
        assert_eq!(quote("100%$x"), "\"100%%$$x\"");
    }

    #[test]
    fn the_unit_has_what_the_issue_asks() {
        let u = unit(
            Path::new("/usr/bin/provision"),
            Path::new("/etc/provision/cluster.yaml"),
            Some("master"),
        )
        .unwrap();
        for line in [
            "After=network-online.target",
            "Wants=network-online.target",
            "Type=notify",
            "Restart=always",
            "ExecStart=/usr/bin/provision agent /etc/provision/cluster.yaml --node master",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.lines().any(|l| l == line), "{line} missing:\n{u}");
        }
    }
}
