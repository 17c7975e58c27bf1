//! The command line: parse arguments, run one command, map the outcome to the exit code.
//!
//! Exit codes (DESIGN.md): 0 success; 1 invalid manifest or usage, nothing touched; 4 some
//! resources failed. With `--detailed-exitcodes`: 0 no changes, 2 changes, 4 failures, 6 both.

mod bundle;
mod cluster;
mod gpu;
mod install_agent;
mod output;
mod status;
mod to_agent;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::engine::{self, Options};
use crate::facts::{self, Facts};
use crate::host::Host;
use crate::manifest;

#[derive(Debug, Parser)]
#[command(
    name = "provision",
    version,
    about = "Declarative node provisioning for small scientific clusters"
)]
struct Cli {
    /// More log output on stderr (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring this node to the state the manifest describes.
    Apply(ApplyArgs),
    /// Show what `apply` would change, with diffs, and change nothing (= apply --check --diff).
    Plan(ApplyArgs),
    /// Check a manifest; print every error with file:line:column. Changes nothing.
    Validate {
        manifest: PathBuf,
        /// Print the errors as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the manifest format (for editors).
    Schema,
    /// Print the facts templates see (hostname, cpus, memory, OS, kernel).
    Facts {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Report the NVIDIA driver and every GPU with a health verdict (NVML; docs/gpu.md).
    /// Exit 0 all GPUs fine, 4 some GPU unhealthy, 5 no NVIDIA driver.
    Gpu(gpu::GpuArgs),
    /// Run the node agent: reconcile, start this node's services in dependency order and keep
    /// them running; SIGHUP reloads the manifest, SIGTERM stops everything in order.
    Agent(AgentArgs),
    /// Ask the running agent how the node stands: last reconcile, services, drift repairs.
    Status(status::StatusArgs),
    /// Write the systemd unit that runs `provision agent MANIFEST` at boot, and enable it.
    InstallAgent(install_agent::InstallArgs),
    /// Make a signed bundle of a manifest and the files it reads, for `agent URL` / `apply URL`
    /// (`bundle keygen KEY` makes the signing key; `bundle verify` checks a bundle).
    Bundle(bundle::BundleArgs),
}

/// How `agent URL` and `apply URL` fetch and check a bundle.
#[derive(Debug, Args)]
struct PullArgs {
    /// The public key bundles must be signed with: KEY.pub from `provision bundle keygen`, or
    /// `ed25519:<hex>` itself. Required for a URL.
    #[arg(long, env = "PROVISION_BUNDLE_KEY")]
    bundle_key: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's (the bundle server's and
    /// https probes'), for a site's own CA.
    #[arg(long, env = "PROVISION_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// How long one fetch of the bundle may take, connect to last byte.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    fetch_timeout: std::time::Duration,
    /// The largest bundle accepted, in bytes (suffixes K, M, G).
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    max_bundle_size: u64,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 64M"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{text:?}: the unit is K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

impl PullArgs {
    /// The bundle source for `url`, if the manifest argument is one; errors before anything
    /// is fetched or touched.
    fn source(&self, manifest: &Path) -> Result<Option<crate::bundle::Source>, UsageError> {
        let text = manifest.to_string_lossy();
        if !text.contains("://") {
            return Ok(None);
        }
        crate::bundle::fetch::check_url(&text).map_err(|e| UsageError::Usage(e.to_string()))?;
        let key = self.bundle_key.as_deref().ok_or_else(|| {
            UsageError::Usage(format!(
                "{text}: a bundle URL needs --bundle-key (the KEY.pub of `provision bundle keygen`): without it no signature could be checked"
            ))
        })?;
        let key = crate::bundle::PublicKey::from_arg(key)
            .map_err(|e| UsageError::Usage(e.to_string()))?;
        Ok(Some(crate::bundle::Source {
            url: text.into_owned(),
            key,
            timeout: self.fetch_timeout,
            max_bytes: self.max_bundle_size,
        }))
    }

    fn trust(&self) -> Result<(), UsageError> {
        match &self.ca_file {
            Some(path) => crate::http::set_ca_file(path).map_err(UsageError::Usage),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// The cluster manifest (YAML), or the https:// URL of a signed bundle (with --bundle-key).
    manifest: PathBuf,
    /// The node to run as; default: this host's short hostname.
    #[arg(long, env = "PROVISION_NODE")]
    node: Option<String>,
    /// Resolve every managed path under DIR instead of /.
    #[arg(long, default_value = "/", env = "PROVISION_ROOT")]
    root: PathBuf,
    /// Time between periodic reconciles, e.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    reconcile_interval: std::time::Duration,
    /// Where the status API listens (/health, /status, /metrics); `off` for none. Anything but a
    /// loopback address needs --status-token-file.
    #[arg(long, default_value = crate::daemon::status::DEFAULT_LISTEN, env = "PROVISION_STATUS_LISTEN")]
    status_listen: String,
    /// A file holding the bearer token every status API request must then carry.
    #[arg(long, env = "PROVISION_STATUS_TOKEN_FILE")]
    status_token_file: Option<PathBuf>,
    /// With a bundle URL: how often to ask the server for a new bundle (±25% jitter).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    poll_interval: std::time::Duration,
    #[command(flatten)]
    pull: PullArgs,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// The cluster manifest (YAML), or the https:// URL of a signed bundle (with --bundle-key).
    manifest: PathBuf,
    /// The node to reconcile; default: this host's short hostname.
    #[arg(long, env = "PROVISION_NODE")]
    node: Option<String>,
    /// Resolve every managed path under DIR instead of / (a sandbox, an image, a chroot).
    #[arg(long, default_value = "/", env = "PROVISION_ROOT")]
    root: PathBuf,
    /// Check mode: observe and report, write nothing.
    #[arg(long)]
    check: bool,
    /// Show unified diffs of file contents.
    #[arg(long)]
    diff: bool,
    /// Print the report as one JSON object (docs/report.md).
    #[arg(long)]
    json: bool,
    /// Exit 0 no changes, 2 changes, 4 failures, 6 changes and failures.
    #[arg(long)]
    detailed_exitcodes: bool,
    /// When no agent runs for this root: start `provision agent` for this manifest (in a session
    /// of its own, log in <root>/var/log/provision/agent.log) and report its first reconcile.
    #[arg(long, conflicts_with = "check")]
    start_agent: bool,
    /// How long to wait for the agent to answer (a hand-off, or the first reconcile of an agent
    /// --start-agent started), e.g. 30s, 10m.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    agent_timeout: std::time::Duration,
    #[command(flatten)]
    pull: PullArgs,
}

/// Errors that end a command before any resource runs: nothing was touched, exit 1.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("{0}")]
    Manifest(#[from] manifest::Diagnostics),
    #[error("{0}")]
    Select(#[from] manifest::SelectError),
    #[error("{0}")]
    Host(#[from] crate::host::Error),
    #[error("--root {}: {reason}", .path.display())]
    Root { path: PathBuf, reason: String },
    #[error("{0}")]
    Gpu(#[from] gpu::GpuError),
    #[error("{0}")]
    Agent(#[from] crate::daemon::Error),
    #[error("{0}")]
    Status(#[from] status::StatusError),
    #[error("{0}")]
    Install(#[from] install_agent::InstallError),
    #[error("{0}")]
    ToAgent(#[from] to_agent::AgentError),
    #[error("{0}")]
    Bundle(#[from] bundle::BundleCliError),
    #[error("{0}")]
    Usage(String),
}

impl UsageError {
    fn exit_code(&self) -> u8 {
        match self {
            UsageError::Gpu(e) => e.exit_code(),
            UsageError::Status(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    // The agent is a daemon: its events are its output, so it logs at info by default.
    let agent = matches!(cli.command, Command::Agent(_));
    init_tracing(if agent {
        cli.verbose.max(1)
    } else {
        cli.verbose
    });
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}: {e}", output::paint(output::Paint::Error, "error"));
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // rustls-platform-verifier logs each certificate it refuses as an error of its own; the
        // request's error says the same, with the URL.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{level},rustls_platform_verifier=off"))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(output::colour_on())
        .with_target(false)
        .try_init();
}

fn run(command: Command) -> Result<u8, UsageError> {
    match command {
        Command::Apply(args) => apply(&args, false),
        Command::Plan(args) => apply(&args, true),
        Command::Validate { manifest, json } => validate(&manifest, json),
        Command::Schema => {
            let schema = schemars::schema_for!(manifest::model::ManifestFile);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(0)
        }
        Command::Gpu(args) => Ok(gpu::run(&args)?),
        Command::Agent(args) => {
            if !args.root.is_dir() {
                return Err(UsageError::Root {
                    path: args.root.clone(),
                    reason: "is not a directory; create it first".into(),
                });
            }
            let status = status::listen(&args.status_listen, args.status_token_file.as_deref())?;
            args.pull.trust()?;
            if args.poll_interval < std::time::Duration::from_millis(100) {
                return Err(UsageError::Usage(format!(
                    "--poll-interval {:?}: at least 100ms (1m is the default; each poll is a request to the server)",
                    args.poll_interval
                )));
            }
            let pull = args
                .pull
                .source(&args.manifest)?
                .map(|source| crate::daemon::pull::Pull {
                    source,
                    interval: args.poll_interval,
                });
            crate::daemon::run(&crate::daemon::Config {
                manifest: args.manifest,
                node: args.node,
                root: args.root,
                interval: args.reconcile_interval,
                status,
                pull,
            })?;
            Ok(0)
        }
        Command::Status(args) => Ok(status::run(&args)?),
        Command::InstallAgent(args) => Ok(install_agent::run(&args)?),
        Command::Bundle(args) => Ok(bundle::run(&args)?),
        Command::Facts { json } => {
            let facts = Facts::gather();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&facts).unwrap_or_default()
                );
            } else {
                output::facts(&facts);
            }
            Ok(0)
        }
    }
}

/// A dependency cycle among the resources of `nodes`, as a manifest error at the first resource
/// in it.
fn cycle_diagnostic(
    m: &manifest::Manifest,
    sel: &manifest::NodeSelection<'_>,
    nodes: &[&str],
    cycle: &[String],
) -> manifest::Diagnostic {
    let first = sel
        .resources
        .iter()
        .map(|&i| &m.resources[i])
        .find(|r| cycle.first() == Some(&r.value.id()));
    let origin = first.map_or(
        manifest::Origin {
            file: 0,
            path: String::new(),
        },
        |r| r.origin.clone(),
    );
    m.diagnostic(
        &origin,
        "",
        format!(
            "on {}: the resources {} depend on each other in a cycle (through after:, owners, groups or parent directories)",
            nodes.join(", "),
            cycle.join(", ")
        ),
        Some("remove one of the after: entries, or an owner/group/directory that closes the loop".into()),
    )
}

/// Dependency cycles on any node. Nodes that run the same resources share one check.
pub(crate) fn order_errors(m: &manifest::Manifest, facts: &Facts) -> Vec<manifest::Diagnostic> {
    let mut errors = Vec::new();
    for (resources, indices) in m.selections() {
        let nodes: Vec<&str> = indices
            .iter()
            .map(|&i| m.nodes[i].value.name.as_str())
            .collect();
        let sel = manifest::NodeSelection {
            node: &m.nodes[indices[0]].value,
            resources,
        };
        let steps = crate::resources::build(m, &sel, facts);
        if let Err(engine::CycleError(cycle)) = engine::check_order(&steps) {
            errors.push(cycle_diagnostic(m, &sel, &nodes, &cycle));
        }
    }
    errors
}

fn validate(path: &Path, json: bool) -> Result<u8, UsageError> {
    let parsed = manifest::parse(path).and_then(|m| {
        let errors = order_errors(&m, &Facts::gather());
        if errors.is_empty() {
            Ok(m)
        } else {
            Err(manifest::Diagnostics(errors))
        }
    });
    match parsed {
        Ok(m) => {
            if json {
                println!("{}", valid_json(&m));
            } else {
                println!(
                    "{}: valid ({} nodes, {} resources, {} files)",
                    path.display(),
                    m.nodes.len(),
                    m.resources.len(),
                    m.sources.len()
                );
            }
            Ok(0)
        }
        Err(d) if json => {
            println!("{}", serde_json::json!({"valid": false, "errors": d.0}));
            Ok(1)
        }
        Err(d) => Err(d.into()),
    }
}

/// `validate --json` for a valid manifest: besides `valid` and `errors`, what a tool driving
/// provision from elsewhere needs (docs/report.md): the cluster, the top-level vars, every node
/// with its own vars, and the files the manifest reads.
fn valid_json(m: &manifest::Manifest) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = m
        .nodes
        .iter()
        .map(|n| {
            let n = &n.value;
            serde_json::json!({
                "address": n.address,
                "aliases": n.aliases,
                "name": n.name,
                "roles": n.roles,
                "vars": n.vars,
            })
        })
        .collect();
    let vars: serde_json::Map<String, serde_json::Value> = m
        .vars
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let cluster = m
        .cluster
        .as_ref()
        .map(|c| serde_json::json!({"domain": c.value.domain, "name": c.value.name}));
    serde_json::json!({
        "cluster": cluster,
        "errors": [],
        "files": m.files_read(),
        "nodes": nodes,
        "valid": true,
        "vars": vars,
    })
}

fn apply(args: &ApplyArgs, plan: bool) -> Result<u8, UsageError> {
    args.pull.trust()?;
    // A bundle URL: fetched and checked, then applied like a manifest file (from a folder that
    // outlives this run when it writes, so an agent it hands the manifest to can read it).
    let _unpacked;
    let fetched;
    let args = match args.pull.source(&args.manifest)? {
        None => args,
        Some(source) => {
            let check = args.check || plan;
            let (path, keep) = fetch_for_apply(&source, &args.root, check)?;
            _unpacked = keep;
            fetched = ApplyArgs {
                manifest: path,
                node: args.node.clone(),
                root: args.root.clone(),
                check: args.check,
                diff: args.diff,
                json: args.json,
                detailed_exitcodes: args.detailed_exitcodes,
                start_agent: args.start_agent,
                agent_timeout: args.agent_timeout,
                pull: PullArgs {
                    bundle_key: None,
                    ca_file: None,
                    fetch_timeout: args.pull.fetch_timeout,
                    max_bundle_size: args.pull.max_bundle_size,
                },
            };
            &fetched
        }
    };
    let manifest = manifest::parse(&args.manifest)?;
    tracing::info!(
        manifest = %args.manifest.display(),
        files = manifest.sources.len(),
        nodes = manifest.nodes.len(),
        resources = manifest.resources.len(),
        "manifest valid"
    );
    let facts = Facts::gather();
    let check = args.check || plan;
    if check && args.start_agent {
        return Err(UsageError::Usage(
            "plan and --check change nothing, so they never start an agent: drop --start-agent"
                .into(),
        ));
    }
    if !check && args.root.is_dir() {
        let host = Host::new(&args.root)?;
        if let Some(pid) = crate::daemon::handoff::running_agent(&host)? {
            return hand_over(args, &manifest, &facts, &host, pid);
        }
    }
    let selection = manifest.select(args.node.as_deref(), &facts::hostname())?;
    tracing::info!(node = %selection.node.name, resources = selection.resources.len(), "node selected");
    if !args.root.is_dir() {
        return Err(UsageError::Root {
            path: args.root.clone(),
            reason: "is not a directory; create it first".into(),
        });
    }
    let host = Host::new(&args.root)?;
    let options = Options {
        check: args.check || plan,
        diff: args.diff || plan,
    };
    let steps = crate::resources::build(&manifest, &selection, &facts);
    // A cycle is a manifest error: report it before anything (even the lock file) is written.
    let located = |engine::CycleError(cycle)| {
        manifest::Diagnostics(vec![cycle_diagnostic(
            &manifest,
            &selection,
            &[&selection.node.name],
            &cycle,
        )])
    };
    engine::check_order(&steps).map_err(located)?;
    // Only a writing apply takes the lock: check mode writes nothing, not even a lock file.
    let _lock = if options.check {
        None
    } else {
        Some(host.lock()?)
    };
    if args.start_agent {
        drop(_lock);
        let (pid, log, outcome) = to_agent::start(
            &host,
            &args.root,
            &args.manifest,
            args.node.as_deref(),
            args.agent_timeout,
        )?;
        let addr = std::fs::read_to_string(host.resolve(&format!(
            "{}/{}",
            crate::host::STATE_DIR,
            crate::daemon::status::ADDR_FILE
        ))?)
        .ok()
        .map(|a| a.trim().to_owned());
        return Ok(print_outcome(
            args,
            &outcome,
            Some((pid, &log, addr.as_deref())),
        ));
    }
    let report = engine::run(&steps, &host, &selection.node.name, options).map_err(located)?;
    let services = report
        .resources
        .iter()
        .filter(|r| r.id.starts_with("service:"))
        .count();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        output::report(&mut out, &report, options.diff);
        if services > 0 && !options.check {
            let _ = writeln!(
                out,
                "no provision agent runs for {}: its {services} service(s) are not started; start one with `provision apply --start-agent {}` (or `provision agent`, `provision install-agent`)",
                args.root.display(),
                args.manifest.display()
            );
        }
    }
    Ok(report.exit_code(args.detailed_exitcodes))
}

/// Fetches the bundle `source` names for apply: into a temporary folder for check mode (nothing
/// under the root is written), else into the root's bundle folder (the fetched bundle is not
/// cached as the last good one: that is the agent's, once its manifest runs).
fn fetch_for_apply(
    source: &crate::bundle::Source,
    root: &Path,
    check: bool,
) -> Result<(PathBuf, Option<tempfile::TempDir>), UsageError> {
    let usage = |e: String| UsageError::Usage(e);
    let fetched = crate::bundle::fetch::fetch(source, &crate::bundle::Validators::default())
        .map_err(|e| usage(e.to_string()))?;
    let crate::bundle::Fetched::New { bundle, .. } = fetched else {
        return Err(usage(format!(
            "{}: the server answered 304 to a plain GET",
            source.url
        )));
    };
    tracing::info!(url = %source.url, hash = %bundle.hash, files = bundle.files.len(), "bundle fetched");
    if check || !root.is_dir() {
        let tmp = tempfile::tempdir()
            .map_err(|e| usage(format!("cannot make a temporary folder: {e}")))?;
        let path = bundle
            .unpack(&tmp.path().join("bundle"))
            .map_err(|e| usage(format!("cannot unpack the bundle: {e}")))?;
        return Ok((path, Some(tmp)));
    }
    let host = Host::new(root)?;
    let dir = host.resolve(&format!("{}/bundle/applied", crate::host::STATE_DIR))?;
    let short = bundle
        .hash
        .trim_start_matches("sha256:")
        .get(..16)
        .unwrap_or("bundle");
    let target = dir.join(short);
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(|e| usage(format!("cannot clear {}: {e}", target.display())))?;
    }
    let path = bundle.unpack(&target).map_err(|e| {
        usage(format!(
            "cannot unpack the bundle into {}: {e}",
            target.display()
        ))
    })?;
    Ok((path, None))
}

/// An agent runs for this root: check the manifest here (every error with file:line:column,
/// nothing sent), then hand it over and print what the agent did.
fn hand_over(
    args: &ApplyArgs,
    m: &manifest::Manifest,
    facts: &Facts,
    host: &Host,
    pid: u32,
) -> Result<u8, UsageError> {
    let errors = order_errors(m, facts);
    if !errors.is_empty() {
        return Err(manifest::Diagnostics(errors).into());
    }
    if let Some(node) = &args.node {
        m.select(Some(node), "")?;
    }
    let outcome = to_agent::hand_over(
        host,
        pid,
        &args.manifest,
        args.node.as_deref(),
        args.agent_timeout,
    )?;
    Ok(print_outcome(args, &outcome, None))
}

fn print_outcome(
    args: &ApplyArgs,
    outcome: &crate::daemon::handoff::Outcome,
    started: Option<(u32, &Path, Option<&str>)>,
) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(outcome).unwrap_or_default()
        );
    } else {
        to_agent::print(&mut out, outcome, started);
    }
    to_agent::exit_code(outcome, args.detailed_exitcodes)
}
