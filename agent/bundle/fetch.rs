//! Fetching a bundle over HTTPS from a plain static file server.
//!
//! One GET, bounded in time and size, with `If-None-Match` (and `If-Modified-Since`, which
//! python's http.server understands) so an unchanged bundle costs one small request and a 304.
//! Refused, each with its own error and nothing changed: a URL that is not `https`, a redirect
//! to anything but `https`, a status other than 200 or 304, a content type that is not a bundle
//! (an HTML error page), an answer over the size limit, one that breaks off, and a bundle whose
//! signature or format is wrong.

use std::time::Duration;

use super::format::{Bundle, BundleError, PublicKey};
use crate::http;

/// The largest bundle fetched, unless the agent is told otherwise.
pub const MAX_BUNDLE: u64 = 64 << 20;
/// The whole request, unless the agent is told otherwise.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Content types a bundle may be served with (`application/octet-stream` is what nginx, caddy
/// and python's http.server send for an unknown extension). No content type at all is accepted
/// too: the signature is what proves a bundle.
pub const CONTENT_TYPES: &[&str] = &["application/octet-stream", "application/x-provision-bundle"];

/// Where the bundle comes from and how it is checked.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub key: PublicKey,
    pub timeout: Duration,
    pub max_bytes: u64,
}

/// What the server last said about the bundle, sent back so it can answer 304.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A fetch that worked.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the bundle the validators describe is still the one served.
    NotModified,
    /// A bundle whose signature and format were checked, its bytes as served, and its validators.
    New {
        bytes: Vec<u8>,
        bundle: Bundle,
        validators: Validators,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error(
        "{0}: bundles are fetched over https only\n  hint: serve the bundle behind TLS (README: Fleet)"
    )]
    NotHttps(String),
    #[error("{0}")]
    Http(#[from] http::Error),
    #[error("GET {url}: the server answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error(
        "GET {url}: the server sent {got}, not a bundle (an error page?)\n  hint: serve *.bundle as application/octet-stream"
    )]
    ContentType { url: String, got: String },
    #[error("{url}: {source}")]
    Bundle { url: String, source: BundleError },
}

/// Checks the URL alone, before anything is fetched.
pub fn check_url(url: &str) -> Result<(), FetchError> {
    match url.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(FetchError::NotHttps(url.to_owned())),
    }
}

/// One GET of `source`; `known` are the validators of the bundle in hand (empty: none).
pub fn fetch(source: &Source, known: &Validators) -> Result<Fetched, FetchError> {
    check_url(&source.url)?;
    let mut req = http::Get::new(source.url.clone(), source.timeout, source.max_bytes);
    req.cut_body = false;
    req.redirects = http::Redirects::HttpsOnly;
    req.headers
        .push(("accept", format!("{}, */*;q=0.1", CONTENT_TYPES.join(", "))));
    if let Some(tag) = &known.etag {
        req.headers.push(("if-none-match", tag.clone()));
    }
    if let Some(date) = &known.last_modified {
        req.headers.push(("if-modified-since", date.clone()));
    }
    let answer = http::get(req)?;
    let url = source.url.clone();
    match answer.status {
        304 if *known != Validators::default() => return Ok(Fetched::NotModified),
        200 => {}
        status => return Err(FetchError::Status { url, status }),
    }
    if let Some(kind) = answer.header("content-type") {
        let bare = kind
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !CONTENT_TYPES.contains(&bare.as_str()) {
            return Err(FetchError::ContentType {
                url,
                got: kind.to_owned(),
            });
        }
    }
    let bundle = Bundle::open(&answer.body, &source.key)
        .map_err(|source| FetchError::Bundle { url, source })?;
    Ok(Fetched::New {
        validators: Validators {
            etag: answer.header("etag").map(str::to_owned),
            last_modified: answer.header("last-modified").map(str::to_owned),
        },
        bytes: answer.body,
        bundle,
    })
}

/// `interval` spread by ±25% (`unit` in [0, 1)), so a hundred nodes started together do not ask
/// the server in the same second for ever.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(0.75 + 0.5 * unit.clamp(0.0, 1.0))
}

/// A random number in [0, 1).
pub fn unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_are_fetched() {
        assert!(check_url("https://files.lan/cluster.bundle").is_ok());
        for bad in [
            "http://files.lan/cluster.bundle",
            "https://",
            "file:///x",
            "files.lan/x",
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.to_string().contains("https only"), "{bad}: {err}");
        }
    }

    #[test]
    fn jitter_spreads_within_a_quarter() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(45));
        assert_eq!(jittered(i, 0.5), Duration::from_secs(60));
        assert!(jittered(i, 0.999_999) < Duration::from_secs(75));
        let draws: Vec<f64> = (0..100).map(|_| unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|&u| u < 0.4) && draws.iter().any(|&u| u > 0.6));
    }
}
