//! `provision agent URL`: the manifest comes as a signed bundle from a static file server, and
//! the agent keeps polling it.
//!
//! At start the agent fetches the bundle; when that fails (server down, network not up yet, a
//! bundle refused) it runs the last good bundle cached under the root and says so in its status
//! (`manifest.from_cache`, with the reason), and only with neither does it stop. Then a thread
//! asks the server again every poll interval (±25% jitter), with the ETag of what it has: an
//! unchanged bundle is one request answered 304. A new bundle goes to the agent loop, which
//! unpacks it, loads it like a SIGHUP reload and, only if its manifest is accepted, makes it the
//! last good one; a bundle refused for its signature, format or manifest changes nothing, is
//! reported (`pull.last_error`, the log) and is not offered again until the server's copy
//! changes. After each poll the code pages it ran are handed back, as after a reconcile.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Agent, Error, Wake, status};
use crate::bundle::Bundle;
use crate::bundle::cache::{Cache, Record};
use crate::bundle::fetch::{self, Fetched, Source, Validators};
use crate::facts::Facts;
use crate::host::Host;

/// Where the agent pulls from and how often.
#[derive(Debug, Clone)]
pub struct Pull {
    pub source: Source,
    pub interval: Duration,
}

/// The bundle the agent runs.
#[derive(Debug, Clone)]
pub(super) struct Current {
    pub hash: String,
    pub validators: Validators,
    /// Why the cached bundle runs instead of a fetched one; `None`: fetched.
    pub from_cache: Option<String>,
    pub fetched_at: String,
}

impl Current {
    pub fn json(&self, url: &str, path: &Path) -> Value {
        json!({
            "source": "url",
            "url": url,
            "path": path,
            "hash": self.hash,
            "fetched_at": self.fetched_at,
            "from_cache": self.from_cache.is_some(),
            "cache_reason": self.from_cache,
        })
    }
}

/// A new bundle the poller found, signature and format checked.
#[derive(Debug)]
pub(crate) struct Pulled {
    bytes: Vec<u8>,
    bundle: Bundle,
    validators: Validators,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The bundle to start with: fetched, else cached. `accept` loads a manifest path (the agent's
/// own checks); what it refuses is never cached. Returns what `accept` made, the manifest's
/// path and the bundle's record.
pub(super) fn first<T>(
    host: &Host,
    pull: &Pull,
    mut accept: impl FnMut(&Path) -> Result<T, Error>,
) -> Result<(T, PathBuf, Current), Error> {
    let cache = Cache::new(host);
    let url = &pull.source.url;
    let why_not = match fetch::fetch(&pull.source, &Validators::default()) {
        Ok(Fetched::New {
            bytes,
            bundle,
            validators,
        }) => {
            let path = cache.unpack(&bundle, None).map_err(Error::Pull)?;
            match accept(&path) {
                Ok(t) => {
                    let current = Current {
                        hash: bundle.hash.clone(),
                        validators,
                        from_cache: None,
                        fetched_at: now(),
                    };
                    store(&cache, url, &bytes, &current);
                    tracing::info!(url = %url, hash = %bundle.hash, "bundle fetched");
                    return Ok((t, path, current));
                }
                Err(e) => {
                    tracing::error!(url = %url, hash = %bundle.hash, "the fetched bundle's manifest is refused:\n{e}");
                    format!("the fetched bundle {} is refused: {e}", bundle.hash)
                }
            }
        }
        Ok(Fetched::NotModified) => format!("GET {url}: 304 to a request without validators"),
        Err(e) => {
            tracing::warn!("cannot fetch the bundle: {e}");
            e.to_string()
        }
    };
    match cache.load(&pull.source.key) {
        Ok(Some((bundle, record))) => {
            let path = cache.unpack(&bundle, None).map_err(Error::Pull)?;
            let t = accept(&path).map_err(|e| {
                Error::Pull(format!(
                    "{why_not}\n  and the cached bundle {} is refused too: {e}",
                    bundle.hash
                ))
            })?;
            tracing::warn!(hash = %bundle.hash, fetched_at = %record.fetched_at, "running the last good bundle from the cache: {why_not}");
            let current = Current {
                hash: bundle.hash,
                validators: record.validators,
                from_cache: Some(why_not),
                fetched_at: record.fetched_at,
            };
            Ok((t, path, current))
        }
        Ok(None) => Err(Error::Pull(format!(
            "{why_not}\n  and no bundle is cached yet under {}/var/lib/provision/bundle, so there is nothing to run\n  hint: check the URL and the server; the agent caches every bundle it accepts",
            host.root().dir().display()
        ))),
        Err(e) => Err(Error::Pull(format!("{why_not}\n  and {e}"))),
    }
}

fn store(cache: &Cache<'_>, url: &str, bytes: &[u8], current: &Current) {
    let record = Record {
        url: url.to_owned(),
        hash: current.hash.clone(),
        validators: current.validators.clone(),
        fetched_at: current.fetched_at.clone(),
    };
    if let Err(e) = cache.store(bytes, &record) {
        tracing::error!(
            "cannot cache the bundle (a restart without the server would not find it): {e}"
        );
    }
}

/// Starts the thread that polls for new bundles; it ends when the agent loop is gone.
pub(super) fn start_poller(
    pull: Pull,
    current: &Current,
    board: status::Board,
    wake: Sender<Wake>,
) {
    let mut known = current.validators.clone();
    let mut offered = current.hash.clone();
    let spawned = std::thread::Builder::new()
        .name("pull".into())
        .spawn(move || {
            let mut last_error = String::new();
            loop {
                std::thread::sleep(fetch::jittered(pull.interval, fetch::unit()));
                let fetched = fetch::fetch(&pull.source, &known);
                // The client's code (TLS, HTTP) need not stay resident until the next poll: handed
                // back as after a reconcile (trim.rs), it comes back with minor faults.
                let kb = super::trim::release_code_pages();
                tracing::debug!(kb, "handed back the code pages of the poll");
                match fetched {
                    Ok(Fetched::NotModified) => {
                        board.pulled(Ok("not modified"));
                        last_error.clear();
                    }
                    Ok(Fetched::New {
                        bytes,
                        bundle,
                        validators,
                    }) => {
                        known = validators.clone();
                        last_error.clear();
                        if bundle.hash == offered {
                            board.pulled(Ok("unchanged"));
                            continue;
                        }
                        board.pulled(Ok("new bundle"));
                        tracing::info!(hash = %bundle.hash, "a new bundle is served");
                        offered = bundle.hash.clone();
                        let pulled = Pulled {
                            bytes,
                            bundle,
                            validators,
                        };
                        if wake.send(Wake::Bundle(Box::new(pulled))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if text != last_error {
                            tracing::warn!(
                                "cannot fetch the bundle, keeping the running one: {text}"
                            );
                            last_error = text.clone();
                        }
                        board.pulled(Err(&text));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start polling for bundles: {e}");
    }
}

impl Agent {
    /// A new bundle from the poller: load it as a reload does; only an accepted one is cached.
    pub(super) fn take_bundle(&mut self, facts: &Facts, pulled: Pulled) {
        let Some((pull, current)) = self.pulling.clone() else {
            return;
        };
        let hash = pulled.bundle.hash.clone();
        let path = match Cache::new(&self.host).unpack(&pulled.bundle, Some(&current.hash)) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    "cannot unpack the new bundle {hash}, keeping the running one: {e}"
                );
                self.board.pull_error(&format!("bundle {hash}: {e}"));
                return;
            }
        };
        tracing::info!(hash = %hash, "loading the new bundle");
        let mut config = self.config.clone();
        config.manifest = path.clone();
        self.settle(true);
        let asked = SystemTime::now();
        let outcome = self.switch(facts, config);
        if outcome.applied {
            let new = Current {
                hash: hash.clone(),
                validators: pulled.validators,
                from_cache: None,
                fetched_at: now(),
            };
            store(
                &Cache::new(&self.host),
                &pull.source.url,
                &pulled.bytes,
                &new,
            );
            self.board
                .set_manifest(self.generation, new.json(&pull.source.url, &path));
            self.pulling = Some((pull, new));
        } else {
            let why = outcome.errors.join("\n");
            tracing::error!(hash = %hash, "the new bundle's manifest is refused; keeping the running one:\n{why}");
            self.board.pull_error(&format!(
                "bundle {hash} refused, the running one kept: {why}"
            ));
            Cache::new(&self.host).discard(&hash);
        }
        self.hold(None, outcome, asked);
    }
}
