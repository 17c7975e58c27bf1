//! A real HTTPS server for the tests: a CA and a server certificate made by `openssl` for this
//! test alone, and `tests/fixtures/tls_server.py` (python's http.server in TLS) serving a folder
//! on 127.0.0.1. Killed on drop; it also exits by itself after an hour.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 and localhost signed by it, in `dir`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Makes the CA and the server certificate under `dir` (created). `None`, with a printed
    /// SKIP reason, where openssl is missing.
    pub fn new(dir: &Path, test: &str) -> Option<Pki> {
        if Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("SKIP {test}: openssl is not installed (.ci/run installs it)");
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=provision test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ssl(&ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        ssl(&csr);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        ssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Some(Pki {
            dir: dir.to_owned(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
}

/// `tls_server.py` serving `root` over HTTPS on 127.0.0.1.
pub struct TlsServer {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl TlsServer {
    /// Starts the server on a port the kernel picks and waits until it listens.
    pub fn start(pki: &Pki, root: &Path) -> TlsServer {
        TlsServer::start_on(pki, root, 0)
    }

    /// Starts the server on `port` (0: any) and waits until it listens.
    pub fn start_on(pki: &Pki, root: &Path, port: u16) -> TlsServer {
        let port_file = pki.dir.join(format!("port-{}", rand_suffix()));
        let log = PathBuf::from(format!("{}.log", port_file.display()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls_server.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(pki.dir.join("server.pem"))
            .arg(pki.dir.join("server.key"))
            .arg(&port_file)
            .arg("127.0.0.1")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start tls_server.py");
        let mut server = TlsServer {
            child,
            port: 0,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                server.port = text.trim().parse().unwrap();
                return server;
            }
            if let Some(st) = server.child.try_wait().unwrap() {
                panic!("tls_server.py exited ({st}):\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "tls_server.py did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `https://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// What it logged: one line per request (`GET /path inm=<If-None-Match>`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
