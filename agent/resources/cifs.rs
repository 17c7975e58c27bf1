//! CIFS specifics: the credentials file `mount.cifs` reads, and the optional pre-flight that logs
//! in to the share with `smbclient` before anything is written.
//!
//! The password lives in a [`Secret`] from the moment it is read: it reaches the credentials file
//! (mode 0600) and the environment of `smbclient`, and nothing else.

use std::path::Path;

use crate::host::mounts;
use crate::secret::Secret;

/// Who logs in to a share.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The node path of the credentials file.
    pub path: String,
    pub username: String,
    pub domain: Option<String>,
    pub password: Secret,
}

impl Credentials {
    /// The credentials file as `mount.cifs` parses it: `key=value` lines, the value running to the
    /// end of the line.
    pub fn file(&self) -> Secret {
        let mut text = format!("username={}\n", self.username).into_bytes();
        text.extend_from_slice(b"password=");
        text.extend_from_slice(self.password.expose());
        text.push(b'\n');
        if let Some(domain) = &self.domain {
            text.extend_from_slice(format!("domain={domain}\n").as_bytes());
        }
        Secret::new(text)
    }
}

/// Reads the password from a file (relative to the manifest folder `dir`) or an environment
/// variable. A final newline of the file is not part of the password.
pub fn read_password(dir: &Path, file: Option<&str>, env: Option<&str>) -> Result<Secret, String> {
    let mut bytes = match (file, env) {
        (Some(file), _) => {
            let path = dir.join(file);
            std::fs::read(&path)
                .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?
        }
        (None, Some(var)) => std::env::var_os(var)
            .map(std::os::unix::ffi::OsStringExt::into_vec)
            .ok_or_else(|| {
                format!(
                    "the environment variable {var} that should hold the password is not set; export it before running provision"
                )
            })?,
        (None, None) => return Err("credentials need password_file or password_env".into()),
    };
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err("the password is empty".into());
    }
    if bytes.contains(&b'\n') {
        return Err(
            "the password has more than one line; a credentials file holds one line per key".into(),
        );
    }
    Ok(Secret::new(bytes))
}

/// `//server/share[/path]` split into the server and `//server/share`.
fn server_of(source: &str) -> Option<&str> {
    source.strip_prefix("//")?.split('/').next()
}

/// Logs in to `source` with `smbclient` and lists its top folder. `port` is the `port=` mount
/// option if there is one. The password goes to smbclient through its `PASSWD` environment
/// variable, never its command line (which every user can read in `ps`).
pub fn verify(source: &str, port: Option<&str>, creds: &Credentials) -> Result<(), String> {
    let server = server_of(source).unwrap_or(source);
    let share: String = {
        let rest = source.trim_start_matches('/');
        let mut parts = rest.splitn(3, '/');
        let host = parts.next().unwrap_or("");
        let name = parts.next().unwrap_or("");
        format!("//{host}/{name}")
    };
    let mut args: Vec<&str> = vec![&share, "-U", &creds.username, "-c", "ls", "-t", "20"];
    if let Some(domain) = &creds.domain {
        args.extend(["-W", domain]);
    }
    if let Some(port) = port {
        args.extend(["-p", port]);
    }
    let password = String::from_utf8_lossy(creds.password.expose()).into_owned();
    let (code, output) = mounts::run_output(
        "smbclient",
        &args,
        &[("PASSWD", &password)],
        mounts::COMMAND_TIMEOUT,
    )
    .map_err(|e| {
        if e.contains("not installed") {
            "verify: true needs smbclient (apt-get install smbclient), or leave verify out".into()
        } else {
            e
        }
    })?;
    if code == Some(0) {
        return Ok(());
    }
    let status = output
        .split_whitespace()
        .find(|w| w.starts_with("NT_STATUS_"))
        .unwrap_or("")
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
    let who = match &creds.domain {
        Some(d) => format!("{d}\\{}", creds.username),
        None => creds.username.clone(),
    };
    let why = match status {
        "NT_STATUS_LOGON_FAILURE" | "NT_STATUS_WRONG_PASSWORD" | "NT_STATUS_NO_SUCH_USER" => {
            format!(
                "{server} rejected the login of {who} ({status}): check the username, domain and password"
            )
        }
        "NT_STATUS_ACCOUNT_LOCKED_OUT" | "NT_STATUS_ACCOUNT_DISABLED" => {
            format!("{server} refused {who}: the account is locked or disabled ({status})")
        }
        "NT_STATUS_BAD_NETWORK_NAME" => {
            format!("{server} has no share {share} ({status}): check the share name")
        }
        "NT_STATUS_ACCESS_DENIED" => {
            format!("{who} may not open {share} ({status})")
        }
        "NT_STATUS_CONNECTION_REFUSED"
        | "NT_STATUS_IO_TIMEOUT"
        | "NT_STATUS_HOST_UNREACHABLE"
        | "NT_STATUS_NETWORK_UNREACHABLE"
        | "NT_STATUS_UNSUCCESSFUL"
        | "NT_STATUS_BAD_NETWORK_PATH" => format!(
            "{server} does not answer on the SMB port ({status}): check the server name, the network and the firewall"
        ),
        _ => {
            let last = output
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            format!("smbclient could not open {share} as {who}: {}", last.trim())
        }
    };
    Err(format!(
        "pre-flight check failed: {why}; nothing was written"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            path: "/etc/provision/credentials/x".into(),
            username: "alice".into(),
            domain: Some("DIDE".into()),
            password: Secret::new("pa ss=word,1"),
        }
    }

    #[test]
    fn the_file_is_what_mount_cifs_reads() {
        let f = creds().file();
        assert_eq!(
            f.expose(),
            b"username=alice\npassword=pa ss=word,1\ndomain=DIDE\n"
        );
        assert_eq!(format!("{f:?}"), "<redacted>");
    }

    #[test]
    fn passwords_come_from_files_or_the_environment() {
        let dir = std::env::temp_dir().join(format!("provision-cifs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw"), "s3cret\n").unwrap();
        std::fs::write(dir.join("two"), "a\nb\n").unwrap();
        let p = read_password(&dir, Some("pw"), None).unwrap();
        assert_eq!(p.expose(), b"s3cret");
        let e = read_password(&dir, Some("two"), None).unwrap_err();
        assert!(e.contains("more than one line"), "{e}");
        let e = read_password(&dir, Some("missing"), None).unwrap_err();
        assert!(e.contains("cannot read the password file"), "{e}");
        let e = read_password(&dir, None, Some("PROVISION_TEST_SURELY_UNSET")).unwrap_err();
        assert!(
            e.contains("PROVISION_TEST_SURELY_UNSET that should hold the password is not set"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn servers_from_sources() {
        assert_eq!(server_of("//nas.example/data/sub"), Some("nas.example"));
        assert_eq!(server_of("/dev/sda1"), None);
    }
}
