//! The fleet: HTTPS through provision's one client (probes), signed bundles pulled by agents over
//! real TLS, and `provision status --cluster`. Every server here is real: `tls_server.py`
//! (python's http.server in TLS) with a CA and certificate `openssl` makes for the test.

mod common;

use std::time::Duration;

use common::tls::{Pki, TlsServer};
use provision::supervisor::Check;

#[test]
fn https_probes_check_the_certificate_and_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(pki) = Pki::new(&tmp.path().join("pki"), "https_probes") else {
        return;
    };
    let site = tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("health"), "{\"ready\": true}\n").unwrap();
    let server = TlsServer::start(&pki, &site);
    let probe = |url: String, body: Option<&str>| Check::Http {
        url,
        status: 200,
        body_contains: body.map(str::to_owned),
    };
    let t = Duration::from_secs(5);
    // Before the test's CA is trusted, the certificate is refused, and the error says why.
    let err = probe(server.url("/health"), None).run(t, 0).unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    provision::http::set_ca_file(&pki.ca()).unwrap();
    assert_eq!(
        probe(server.url("/health"), Some("\"ready\": true")).run(t, 0),
        Ok(())
    );
    let err = probe(server.url("/health"), Some("nope"))
        .run(t, 0)
        .unwrap_err();
    assert!(err.contains("does not contain \"nope\""), "{err}");
    let err = probe(server.url("/missing"), None).run(t, 0).unwrap_err();
    assert!(err.contains("status 404, expected 200"), "{err}");
    // A probe follows no redirect: the 302 is its answer.
    let err = probe(server.url("/bad/redirect-https"), None)
        .run(t, 0)
        .unwrap_err();
    assert!(err.contains("status 302"), "{err}");
}
