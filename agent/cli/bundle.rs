//! `provision bundle`: make a signed bundle of a manifest, make a signing key, or check a bundle.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::bundle::make::{self, MakeError};
use crate::bundle::{Bundle, BundleError, PublicKey, SecretKey, format};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BundleArgs {
    #[command(subcommand)]
    command: Option<BundleCommand>,
    /// The top manifest, or a folder holding cluster.yaml.
    #[arg(required = true)]
    manifest: Option<PathBuf>,
    /// Where the bundle is written (replaced atomically).
    #[arg(short, long, required = true)]
    output: Option<PathBuf>,
    /// The signing key, as `provision bundle keygen` wrote it.
    #[arg(long, required = true, env = "PROVISION_BUNDLE_SIGNING_KEY")]
    key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Make a signing key: KEY (secret, mode 0600) and KEY.pub (for the agents' --bundle-key).
    Keygen {
        /// Where the secret key goes; never overwritten.
        key: PathBuf,
    },
    /// Check a bundle against a public key and list what it holds. Changes nothing.
    Verify {
        bundle: PathBuf,
        /// The public key (KEY.pub, or `ed25519:...`).
        #[arg(long, env = "PROVISION_BUNDLE_KEY")]
        bundle_key: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BundleCliError {
    #[error("{0}")]
    Make(#[from] MakeError),
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("{}: {reason}", .path.display())]
    Io { path: PathBuf, reason: String },
}

pub fn run(args: &BundleArgs) -> Result<u8, BundleCliError> {
    match &args.command {
        Some(BundleCommand::Keygen { key }) => {
            let public = SecretKey::generate(key)?;
            println!(
                "wrote {} (secret: keep it where only the signer can read it) and {} (key {})",
                key.display(),
                format::pub_path(key).display(),
                public.id()
            );
            println!("agents check bundles with: --bundle-key {}", public.text());
            Ok(0)
        }
        Some(BundleCommand::Verify { bundle, bundle_key }) => {
            let key = PublicKey::from_arg(bundle_key)?;
            let bytes = std::fs::read(bundle).map_err(|e| BundleCliError::Io {
                path: bundle.clone(),
                reason: e.to_string(),
            })?;
            let b = Bundle::open(&bytes, &key)?;
            println!(
                "{}: signed by key {}, {} ({} files, manifest {})",
                bundle.display(),
                key.id(),
                b.hash,
                b.files.len(),
                b.manifest
            );
            for (path, content) in &b.files {
                println!("  {path} ({} bytes)", content.len());
            }
            Ok(0)
        }
        None => {
            let (Some(manifest), Some(output), Some(key)) =
                (&args.manifest, &args.output, &args.key)
            else {
                unreachable!("clap requires MANIFEST, --output and --key");
            };
            let key = SecretKey::read(key)?;
            let (top, files) = make::gather(manifest)?;
            let bytes = Bundle::write(&top, &files, &key)?;
            let b = Bundle::open(&bytes, &key.public())?;
            let io = |e: std::io::Error| BundleCliError::Io {
                path: output.clone(),
                reason: e.to_string(),
            };
            let dir = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
            std::io::Write::write_all(&mut temp, &bytes).map_err(io)?;
            temp.as_file().sync_all().map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            temp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
            temp.persist(output).map_err(|e| io(e.error))?;
            println!(
                "{}: {} files, {} bytes, {}, signed by key {}",
                output.display(),
                files.len(),
                bytes.len(),
                b.hash,
                key.public().id()
            );
            Ok(0)
        }
    }
}
