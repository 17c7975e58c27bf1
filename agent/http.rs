//! The one HTTP client of provision: readiness probes, `provision status`, bundles fetched by the
//! agent and `provision status --cluster`.
//!
//! It is reqwest with rustls (already built for rattler's channel downloads), driven by one tokio
//! runtime on a thread of its own that starts at the first request: a process that never speaks
//! HTTP (an agent with no HTTP probe and no bundle URL) pays nothing for it. Callers block on
//! [`get`] from any thread but that one, or hand a batch to [`get_all`], whose requests run at
//! the same time.
//!
//! Guarantees: every request has a total deadline; a body is read to at most its limit (cut
//! there, or refused, as the request says); no connection is kept between requests (a probe
//! tests a fresh connect, a poll every minute needs no pool); `https` certificates are checked
//! against the system's roots plus the CA file [`set_ca_file`] names; redirects are never
//! followed unless the request allows `https` ones, and a redirect to anything but `https` is an
//! error that says so.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::Duration;

/// What one request asks for.
#[derive(Debug, Clone)]
pub struct Get {
    pub url: String,
    /// The whole request, connect to last byte.
    pub timeout: Duration,
    /// The largest body read.
    pub max_body: u64,
    /// A body over `max_body`: `true` keeps its first `max_body` bytes (a probe looks for a
    /// word), `false` fails the request ([`Error::TooLarge`]).
    pub cut_body: bool,
    /// Extra request headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    pub redirects: Redirects,
}

/// Which redirects a request follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Redirects {
    /// None: a 3xx is the answer.
    None,
    /// Up to 5, each to an `https` URL; one to `http` (or anything else) is an error.
    HttpsOnly,
}

impl Get {
    /// A GET of `url` with no redirects, cut at `max_body`.
    pub fn new(url: impl Into<String>, timeout: Duration, max_body: u64) -> Get {
        Get {
            url: url.into(),
            timeout,
            max_body,
            cut_body: true,
            headers: Vec::new(),
            redirects: Redirects::None,
        }
    }
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The URL that answered (after redirects).
    pub url: String,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, decompressed when the server gzipped it.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request got no complete answer. The text names the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{url}: not an http:// or https:// URL")]
    Url { url: String },
    #[error("GET {url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("GET {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("GET {url}: redirected to {to}, which is not https; refused")]
    Redirect { url: String, to: String },
    #[error("GET {url}: the answer is larger than the limit of {limit} bytes")]
    TooLarge { url: String, limit: u64 },
    #[error("GET {url}: the answer broke off: {reason}")]
    Body { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// The CA file every client also trusts (besides the system's roots).
static CA_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Trusts the PEM certificates in `path` too (besides the system's roots), for a site's own CA,
/// from the next request on. Checked here, so a bad file is a usage error before the agent
/// touches anything.
pub fn set_ca_file(path: &Path) -> Result<(), String> {
    read_ca(path)?;
    *CA_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_owned());
    Ok(())
}

fn read_ca(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("--ca-file {}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--ca-file {}: holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

struct Engine {
    handle: tokio::runtime::Handle,
    /// One client per redirect policy and CA file, built at its first use.
    clients: Mutex<Vec<(Redirects, Option<PathBuf>, reqwest::Client)>>,
}

static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();

fn engine() -> Result<&'static Engine, Error> {
    ENGINE
        .get_or_init(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("cannot start its runtime: {e}")));
                        }
                    }
                })
                .map_err(|e| format!("cannot start its thread: {e}"))?;
            let handle = rx
                .recv()
                .map_err(|_| "its thread ended at start".to_owned())??;
            Ok(Engine {
                handle,
                clients: Mutex::new(Vec::new()),
            })
        })
        .as_ref()
        .map_err(|e| Error::Client(e.clone()))
}

impl Engine {
    fn client(&self, redirects: Redirects) -> Result<reqwest::Client, Error> {
        let ca = CA_FILE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, c)) = clients.iter().find(|(r, f, _)| *r == redirects && *f == ca) {
            return Ok(c.clone());
        }
        let policy = match redirects {
            Redirects::None => reqwest::redirect::Policy::none(),
            Redirects::HttpsOnly => reqwest::redirect::Policy::custom(|attempt| {
                if attempt.url().scheme() != "https" {
                    let to = attempt.url().to_string();
                    attempt.error(NotHttps(to))
                } else if attempt.previous().len() >= 5 {
                    attempt.error("more than 5 redirects")
                } else {
                    attempt.follow()
                }
            }),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("provision/", env!("CARGO_PKG_VERSION")))
            .redirect(policy)
            .pool_max_idle_per_host(0)
            .no_proxy();
        if let Some(path) = &ca {
            for cert in read_ca(path).map_err(Error::Client)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| Error::Client(chain(&e)))?;
        clients.push((redirects, ca, client.clone()));
        Ok(client)
    }
}

/// The redirect a [`Redirects::HttpsOnly`] request refused.
#[derive(Debug)]
struct NotHttps(String);

impl std::fmt::Display for NotHttps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirect to {} refused", self.0)
    }
}

impl std::error::Error for NotHttps {}

/// One request, waited for on this thread (never call it from the client's own runtime).
pub fn get(req: Get) -> Result<Response, Error> {
    get_all(vec![req])
        .pop()
        .unwrap_or_else(|| Err(Error::Client("the request was lost".into())))
}

/// Every request at once; the answers in the order asked.
pub fn get_all(reqs: Vec<Get>) -> Vec<Result<Response, Error>> {
    let engine = match engine() {
        Ok(e) => e,
        Err(e) => return reqs.iter().map(|_| Err(e.clone())).collect(),
    };
    let longest = reqs.iter().map(|r| r.timeout).max().unwrap_or_default();
    let (tx, rx) = mpsc::channel();
    let n = reqs.len();
    for (i, req) in reqs.into_iter().enumerate() {
        let tx = tx.clone();
        let client = engine.client(req.redirects);
        engine.handle.spawn(async move {
            let answer = match client {
                Ok(c) => fetch(&c, &req).await,
                Err(e) => Err(e),
            };
            let _ = tx.send((i, answer));
        });
    }
    drop(tx);
    let mut out: Vec<Option<Result<Response, Error>>> = (0..n).map(|_| None).collect();
    // Each request ends by its own deadline; the margin only guards against a lost task.
    let until = std::time::Instant::now() + longest + Duration::from_secs(5);
    while out.iter().any(Option::is_none) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, answer)) => out[i] = Some(answer),
            Err(_) => break,
        }
    }
    out.into_iter()
        .map(|a| a.unwrap_or_else(|| Err(Error::Client("the request was lost".into()))))
        .collect()
}

async fn fetch(client: &reqwest::Client, req: &Get) -> Result<Response, Error> {
    let url = req.url.clone();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::Url { url });
    }
    let timeout = req.timeout;
    let work = async {
        let mut builder = client.get(&url);
        for (k, v) in &req.headers {
            builder = builder.header(*k, v);
        }
        let mut resp = builder.send().await.map_err(|e| failed(&url, &e))?;
        let status = resp.status().as_u16();
        let answered = resp.url().to_string();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let too_large = || Error::TooLarge {
            url: url.clone(),
            limit: req.max_body,
        };
        let compressed = resp
            .headers()
            .contains_key(reqwest::header::CONTENT_ENCODING);
        if !req.cut_body && !compressed && resp.content_length().is_some_and(|n| n > req.max_body) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| failed(&url, &e))? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > req.max_body {
                if req.cut_body {
                    body.truncate(usize::try_from(req.max_body).unwrap_or(usize::MAX));
                    break;
                }
                return Err(too_large());
            }
        }
        Ok(Response {
            status,
            url: answered,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(answer) => answer,
        Err(_) => Err(Error::Timeout { url, timeout }),
    }
}

/// A reqwest error in the words of its whole chain of causes.
fn failed(url: &str, e: &reqwest::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(NotHttps(to)) = s.downcast_ref::<NotHttps>() {
            return Error::Redirect {
                url: url.to_owned(),
                to: to.clone(),
            };
        }
        source = s.source();
    }
    let reason = chain(e);
    if e.is_body() || e.is_decode() {
        Error::Body {
            url: url.to_owned(),
            reason,
        }
    } else if reason.contains("invalid peer certificate") {
        Error::Connect {
            url: url.to_owned(),
            reason: format!(
                "{reason}\n  hint: if the server's certificate is from a site CA, give that CA with --ca-file"
            ),
        }
    } else {
        Error::Connect {
            url: url.to_owned(),
            reason,
        }
    }
}

/// An error and its causes, without reqwest's own repetition of the URL.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = e.source();
    let top = e.to_string();
    if !top.starts_with("error sending request") && !top.starts_with("error decoding") {
        parts.push(top);
    }
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}
