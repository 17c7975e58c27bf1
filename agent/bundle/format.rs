//! The bundle file: a manifest and the files it reads, signed with ed25519.
//!
//! ```text
//! provision-bundle 1\n
//! signature ed25519 <key id: 16 hex> <signature: 128 hex>\n
//! manifest <path of the top manifest>\n        } the payload: what the signature covers
//! file <size> <path>\n<size bytes>\n            } (one `file` entry per file)
//! end\n                                        }
//! ```
//!
//! Paths are relative (`/`-separated, no `.` or `..` parts, no newline); the top manifest is one
//! of the files. The key id is the first 8 bytes of the SHA-256 of the public key, so a bundle
//! signed with another key is refused naming both keys. Guarantees: [`Bundle::open`] checks the
//! signature against the trusted key before it reads a single entry, then checks every entry
//! (paths, sizes, duplicates, limits), so an accepted bundle has been signed as it is; nothing
//! is written until [`Bundle::unpack`], which writes only inside a folder it creates.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The first line of every bundle.
pub const MAGIC: &str = "provision-bundle 1\n";
/// At most this many files in a bundle.
pub const MAX_FILES: usize = 10_000;
/// How the secret key file starts.
const SECRET_HEADER: &str = "provision bundle signing key (ed25519, PKCS#8), keep it secret\n";

/// Why a bundle, or a key, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a provision bundle: it starts with {0:?}")]
    NotABundle(String),
    #[error("bundle format {0:?}: this provision reads `provision-bundle 1`")]
    Version(String),
    #[error("the bundle has no valid signature line: {0}")]
    SignatureLine(String),
    #[error(
        "the bundle is signed with key {signed}, but this agent trusts key {trusted}\n  hint: sign it with the key whose public half the agent has (--bundle-key), or give the agent that key's .pub"
    )]
    WrongKey { signed: String, trusted: String },
    #[error(
        "the signature does not match the bundle's content: it was changed after it was signed, or is damaged"
    )]
    BadSignature,
    #[error("bundle entry {entry}: {reason}")]
    Entry { entry: usize, reason: String },
    #[error("{0}")]
    Key(String),
}

/// A public key the agent trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// `ed25519:<64 hex>`, as `provision bundle keygen` writes it to `KEY.pub`.
    pub fn parse(text: &str) -> Result<PublicKey, BundleError> {
        let bad = |why: &str| {
            BundleError::Key(format!(
                "not a bundle public key ({why}); expected ed25519:<64 hex digits>, as `provision bundle keygen` writes to KEY.pub"
            ))
        };
        let hex = text
            .trim()
            .strip_prefix("ed25519:")
            .ok_or_else(|| bad("no ed25519: prefix"))?;
        let bytes = unhex(hex).ok_or_else(|| bad("not hex"))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
        Ok(PublicKey(key))
    }

    /// From `--bundle-key`: the key itself (`ed25519:...`) or a file holding it.
    pub fn from_arg(arg: &str) -> Result<PublicKey, BundleError> {
        if arg.starts_with("ed25519:") {
            return PublicKey::parse(arg);
        }
        let text = std::fs::read_to_string(arg)
            .map_err(|e| BundleError::Key(format!("--bundle-key {arg}: {e}")))?;
        PublicKey::parse(&text).map_err(|e| BundleError::Key(format!("--bundle-key {arg}: {e}")))
    }

    /// The key's short id: the first 8 bytes of its SHA-256, in hex.
    pub fn id(&self) -> String {
        key_id(&self.0)
    }

    pub fn text(&self) -> String {
        format!("ed25519:{}", hex(&self.0))
    }
}

fn key_id(public: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
    hex(&d.as_ref()[..8])
}

/// A signing key (the secret half), read from the file `keygen` wrote.
pub struct SecretKey(Ed25519KeyPair);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(<redacted>, id {})", self.public().id())
    }
}

impl SecretKey {
    /// Writes a new key pair: `path` (the secret, mode 0600, never overwritten) and `path.pub`.
    pub fn generate(path: &Path) -> Result<PublicKey, BundleError> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| BundleError::Key("cannot generate an ed25519 key".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
            .map_err(|_| BundleError::Key("cannot read the generated key".into()))?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .map_err(|_| BundleError::Key("the public key is not 32 bytes".into()))?,
        );
        let io = |p: &Path, e: std::io::Error| BundleError::Key(format!("{}: {e}", p.display()));
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io(path, e))?;
        f.write_all(format!("{SECRET_HEADER}{}\n", hex(doc.as_ref())).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| io(path, e))?;
        let public_path = pub_path(path);
        std::fs::write(&public_path, format!("{}\n", public.text()))
            .map_err(|e| io(&public_path, e))?;
        Ok(public)
    }

    pub fn read(path: &Path) -> Result<SecretKey, BundleError> {
        let bad = |why: String| BundleError::Key(format!("--key {}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let body = text
            .strip_prefix(SECRET_HEADER)
            .ok_or_else(|| bad("not a key written by `provision bundle keygen`".into()))?;
        let der = unhex(body.trim()).ok_or_else(|| bad("damaged: not hex".into()))?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .map_err(|_| bad("damaged: not an ed25519 key".into()))?;
        Ok(SecretKey(pair))
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(key)
    }
}

/// `KEY.pub` beside `KEY`.
pub fn pub_path(secret: &Path) -> PathBuf {
    let mut s = secret.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// A bundle whose signature and entries were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The top manifest's path inside the bundle.
    pub manifest: String,
    /// Every file: path inside the bundle, content.
    pub files: Vec<(String, Vec<u8>)>,
    /// `sha256:<hex>` of the payload (what the signature covers).
    pub hash: String,
}

impl Bundle {
    /// Builds and signs a bundle; `files` must hold `manifest`.
    pub fn write(
        manifest: &str,
        files: &[(String, Vec<u8>)],
        key: &SecretKey,
    ) -> Result<Vec<u8>, BundleError> {
        let mut payload = Vec::new();
        check_path(manifest).map_err(|reason| BundleError::Entry { entry: 0, reason })?;
        payload.extend_from_slice(format!("manifest {manifest}\n").as_bytes());
        for (i, (path, content)) in files.iter().enumerate() {
            check_path(path).map_err(|reason| BundleError::Entry {
                entry: i + 1,
                reason,
            })?;
            payload.extend_from_slice(format!("file {} {path}\n", content.len()).as_bytes());
            payload.extend_from_slice(content);
            payload.push(b'\n');
        }
        payload.extend_from_slice(b"end\n");
        let signature = key.0.sign(&payload);
        let mut out = Vec::with_capacity(payload.len() + 200);
        out.extend_from_slice(MAGIC.as_bytes());
        out.extend_from_slice(
            format!(
                "signature ed25519 {} {}\n",
                key.public().id(),
                hex(signature.as_ref())
            )
            .as_bytes(),
        );
        out.extend_from_slice(&payload);
        // What is written must read back: the same checks as an agent makes.
        Bundle::open(&out, &key.public())?;
        Ok(out)
    }

    /// Checks `bytes` against `key`, then reads its entries.
    pub fn open(bytes: &[u8], key: &PublicKey) -> Result<Bundle, BundleError> {
        let (first, rest) = split_line(bytes).ok_or_else(|| {
            BundleError::NotABundle(String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into())
        })?;
        if first != MAGIC.trim_end().as_bytes() {
            let text = String::from_utf8_lossy(first);
            return Err(match text.strip_prefix("provision-bundle ") {
                Some(v) => BundleError::Version(v.to_owned()),
                None => BundleError::NotABundle(text.chars().take(40).collect()),
            });
        }
        let (line, payload) = split_line(rest).ok_or_else(|| {
            BundleError::SignatureLine("the bundle ends after its first line".into())
        })?;
        let line =
            std::str::from_utf8(line).map_err(|_| BundleError::SignatureLine("not text".into()))?;
        let words: Vec<&str> = line.split(' ').collect();
        let (signed_id, sig) = match words.as_slice() {
            ["signature", "ed25519", id, sig] => (*id, *sig),
            ["signature", other, ..] => {
                return Err(BundleError::SignatureLine(format!(
                    "signature kind {other:?}; this provision checks ed25519"
                )));
            }
            _ => {
                return Err(BundleError::SignatureLine(format!(
                    "expected `signature ed25519 <key id> <signature>`, found {:?}",
                    line.chars().take(60).collect::<String>()
                )));
            }
        };
        if signed_id != key.id() {
            return Err(BundleError::WrongKey {
                signed: signed_id.chars().take(16).collect(),
                trusted: key.id(),
            });
        }
        let sig = unhex(sig).filter(|s| s.len() == 64).ok_or_else(|| {
            BundleError::SignatureLine("the signature is not 64 bytes of hex".into())
        })?;
        UnparsedPublicKey::new(&ED25519, key.0)
            .verify(payload, &sig)
            .map_err(|_| BundleError::BadSignature)?;
        let mut bundle = read_payload(payload)?;
        bundle.hash = format!(
            "sha256:{}",
            hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload).as_ref())
        );
        Ok(bundle)
    }

    /// Writes every file under `dir`, which must not exist yet (it is created, 0755); returns
    /// the top manifest's path there.
    pub fn unpack(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")))?;
        std::fs::create_dir(dir)?;
        for (path, content) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)?;
            f.write_all(content)?;
            f.sync_all()?;
        }
        Ok(dir.join(&self.manifest))
    }
}

fn read_payload(mut rest: &[u8]) -> Result<Bundle, BundleError> {
    let entry_error = |entry: usize, reason: String| BundleError::Entry { entry, reason };
    let (line, after) = split_line(rest).ok_or_else(|| entry_error(0, "missing".into()))?;
    let manifest = std::str::from_utf8(line)
        .ok()
        .and_then(|l| l.strip_prefix("manifest "))
        .ok_or_else(|| entry_error(0, "expected `manifest <path>`".into()))?
        .to_owned();
    check_path(&manifest).map_err(|r| entry_error(0, r))?;
    rest = after;
    let mut files = Vec::new();
    let mut seen = BTreeSet::new();
    let mut entry = 0;
    loop {
        entry += 1;
        let (line, after) = split_line(rest)
            .ok_or_else(|| entry_error(entry, "the bundle ends without `end`: truncated".into()))?;
        if line == b"end" {
            if !after.is_empty() {
                return Err(entry_error(
                    entry,
                    format!("{} bytes after `end`", after.len()),
                ));
            }
            break;
        }
        if files.len() == MAX_FILES {
            return Err(entry_error(entry, format!("more than {MAX_FILES} files")));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| entry_error(entry, "the entry line is not text".into()))?;
        let (size, path) = line
            .strip_prefix("file ")
            .and_then(|l| l.split_once(' '))
            .ok_or_else(|| {
                entry_error(
                    entry,
                    format!(
                        "expected `file <size> <path>` or `end`, found {:?}",
                        line.chars().take(60).collect::<String>()
                    ),
                )
            })?;
        let size: usize = size
            .parse()
            .map_err(|_| entry_error(entry, format!("size {size:?} is not a number")))?;
        check_path(path).map_err(|r| entry_error(entry, format!("{path}: {r}")))?;
        if !seen.insert(path.to_owned()) {
            return Err(entry_error(entry, format!("{path} is in the bundle twice")));
        }
        if after.len() < size + 1 || after[size] != b'\n' {
            return Err(entry_error(
                entry,
                format!("{path}: {size} bytes announced, fewer follow: truncated"),
            ));
        }
        files.push((path.to_owned(), after[..size].to_vec()));
        rest = &after[size + 1..];
    }
    // A path that is a file and a folder at once cannot be unpacked.
    for (path, _) in &files {
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() && seen.contains(&prefix) {
                return Err(entry_error(
                    0,
                    format!("{prefix} is a file and a folder of {path}"),
                ));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
        }
    }
    if !seen.contains(&manifest) {
        return Err(entry_error(
            0,
            format!("the manifest {manifest} is not among its files"),
        ));
    }
    Ok(Bundle {
        manifest,
        files,
        hash: String::new(),
    })
}

/// A path inside a bundle: relative, plain parts only.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.contains(['\n', '\0', '\\']) {
        return Err("an empty path, or one with a newline, NUL or backslash".into());
    }
    if path.len() > 1024 {
        return Err("longer than 1024 bytes".into());
    }
    let p = Path::new(path);
    if p.components().any(|c| !matches!(c, Component::Normal(_)))
        || path.split('/').any(|part| part.is_empty() || part == ".")
    {
        return Err("not a plain relative path (no leading /, no . or .. parts)".into());
    }
    Ok(())
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = bytes.iter().take(4096).position(|&b| b == b'\n')?;
    Some((&bytes[..i], &bytes[i + 1..]))
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &Path, name: &str) -> SecretKey {
        let path = dir.join(name);
        SecretKey::generate(&path).unwrap();
        SecretKey::read(&path).unwrap()
    }

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("cluster.yaml".into(), b"nodes: []\n".to_vec()),
            ("templates/a.tera".into(), b"x\ny".to_vec()),
        ]
    }

    #[test]
    fn a_bundle_reads_back_and_unpacks() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path(), "k");
        let bytes = Bundle::write("cluster.yaml", &files(), &k).unwrap();
        let b = Bundle::open(&bytes, &k.public()).unwrap();
        assert_eq!(b.manifest, "cluster.yaml");
        assert_eq!(b.files, files());
        assert!(
            b.hash.starts_with("sha256:") && b.hash.len() == 71,
            "{}",
            b.hash
        );
        let top = b.unpack(&dir.path().join("out")).unwrap();
        assert_eq!(std::fs::read(top).unwrap(), b"nodes: []\n");
        assert_eq!(
            std::fs::read(dir.path().join("out/templates/a.tera")).unwrap(),
            b"x\ny"
        );
        // The secret key file is the owner's alone, and the public one parses.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let public = std::fs::read_to_string(dir.path().join("k.pub")).unwrap();
        assert_eq!(PublicKey::parse(&public).unwrap(), k.public());
        assert!(
            SecretKey::generate(&dir.path().join("k")).is_err(),
            "overwrote a key"
        );
        assert!(format!("{k:?}").contains("<redacted>"), "{k:?}");
    }

    #[test]
    fn tampering_another_key_and_damage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path(), "k");
        let other = key(dir.path(), "other");
        let bytes = Bundle::write("cluster.yaml", &files(), &k).unwrap();
        // One byte of content changed.
        let mut tampered = bytes.clone();
        let at = tampered.len() - 10;
        tampered[at] ^= 1;
        assert_eq!(
            Bundle::open(&tampered, &k.public()),
            Err(BundleError::BadSignature)
        );
        // Signed by another key.
        let err = Bundle::open(&bytes, &other.public()).unwrap_err();
        assert!(matches!(err, BundleError::WrongKey { .. }), "{err}");
        assert!(err.to_string().contains(&k.public().id()), "{err}");
        // A key id rewritten to the trusted one does not make the signature fit.
        let forged =
            String::from_utf8_lossy(&bytes).replace(&k.public().id(), &other.public().id());
        assert_eq!(
            Bundle::open(forged.as_bytes(), &other.public()),
            Err(BundleError::BadSignature)
        );
        // Cut short: the signature no longer matches (checked before anything is read).
        assert_eq!(
            Bundle::open(&bytes[..bytes.len() - 5], &k.public()),
            Err(BundleError::BadSignature)
        );
        // Not a bundle at all, another version, no signature.
        let err = Bundle::open(b"<html>502</html>\n", &k.public()).unwrap_err();
        assert!(matches!(err, BundleError::NotABundle(_)), "{err}");
        let err = Bundle::open(b"provision-bundle 2\nx\n", &k.public()).unwrap_err();
        assert_eq!(err, BundleError::Version("2".into()));
        let err = Bundle::open(b"provision-bundle 1\nmanifest x\n", &k.public()).unwrap_err();
        assert!(matches!(err, BundleError::SignatureLine(_)), "{err}");
    }

    #[test]
    fn entries_are_checked_even_when_signed() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(dir.path(), "k");
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "./a",
            "a\nb",
        ] {
            let files = vec![
                ("m.yaml".into(), b"x".to_vec()),
                (bad.to_owned(), b"y".to_vec()),
            ];
            let err = Bundle::write("m.yaml", &files, &k).unwrap_err();
            assert!(matches!(err, BundleError::Entry { .. }), "{bad:?}: {err}");
        }
        let dup = vec![
            ("m.yaml".into(), b"x".to_vec()),
            ("m.yaml".into(), b"y".to_vec()),
        ];
        assert!(
            Bundle::write("m.yaml", &dup, &k)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let both = vec![
            ("m.yaml".into(), b"x".to_vec()),
            ("m.yaml/x".into(), b"y".to_vec()),
        ];
        assert!(
            Bundle::write("m.yaml", &both, &k)
                .unwrap_err()
                .to_string()
                .contains("a file and a folder")
        );
        let missing = vec![("other.yaml".into(), b"x".to_vec())];
        assert!(
            Bundle::write("m.yaml", &missing, &k)
                .unwrap_err()
                .to_string()
                .contains("not among its files")
        );
    }
}
