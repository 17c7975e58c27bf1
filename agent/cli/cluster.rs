//! `provision status --cluster MANIFEST`: every node's agent asked at once, one row each.
//!
//! The nodes and their addresses come from the manifest (or a signed bundle of it). Each node's
//! agent is asked `GET /status` on `<address>:<port>` with the bearer token if one is given (an
//! agent listens off loopback only with a token), all requests at the same time, each bounded by
//! `--timeout`; a node that does not answer is a row that says why. Exit 0 when every node
//! answered and none has a failed resource, 3 when some node did not answer, 4 when all answered
//! and some has failed resources.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http;
use crate::manifest;

/// One node's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub node: String,
    pub address: String,
    /// The agent's `/status` document, or why there is none.
    pub status: Result<Value, String>,
}

/// The nodes of a manifest file, or of a bundle checked with `key`: (name, address).
pub fn nodes(path: &Path, key: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let from_bundle = bytes.starts_with(crate::bundle::format::MAGIC.as_bytes());
    let _tmp;
    let manifest_path = if from_bundle {
        let key = key.ok_or_else(|| {
            format!(
                "{} is a bundle: give --bundle-key to check its signature",
                path.display()
            )
        })?;
        let key = crate::bundle::PublicKey::from_arg(key).map_err(|e| e.to_string())?;
        let bundle = crate::bundle::Bundle::open(&bytes, &key)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let tmp = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
        let top = bundle
            .unpack(&tmp.path().join("b"))
            .map_err(|e| format!("cannot unpack {}: {e}", path.display()))?;
        _tmp = tmp;
        top
    } else {
        path.to_owned()
    };
    let m = manifest::parse(&manifest_path).map_err(|e| e.to_string())?;
    Ok(m.nodes
        .iter()
        .map(|n| (n.value.name.clone(), n.value.address.clone()))
        .collect())
}

/// Asks every node at once.
pub fn ask(
    nodes: &[(String, String)],
    port: u16,
    token: Option<&str>,
    timeout: Duration,
) -> Vec<Row> {
    let reqs = nodes
        .iter()
        .map(|(_, address)| {
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            let mut req = http::Get::new(format!("http://{host}:{port}/status"), timeout, 16 << 20);
            req.cut_body = false;
            if let Some(t) = token {
                req.headers.push(("authorization", format!("Bearer {t}")));
            }
            req
        })
        .collect();
    http::get_all(reqs)
        .into_iter()
        .zip(nodes)
        .map(|(answer, (node, address))| Row {
            node: node.clone(),
            address: address.clone(),
            status: match answer {
                Err(e) => Err(e.to_string()),
                Ok(a) if a.status == 401 => {
                    Err("HTTP 401: the agent wants a token (--token-file)".into())
                }
                Ok(a) if a.status != 200 => Err(format!("HTTP {}", a.status)),
                Ok(a) => serde_json::from_slice(&a.body)
                    .map_err(|e| format!("the answer is not JSON: {e}")),
            },
        })
        .collect()
}

/// The row as the `--json` document and the table show it.
pub fn summary(row: &Row) -> Value {
    let doc = match &row.status {
        Err(why) => {
            return json!({"node": row.node, "address": row.address, "reachable": false, "error": why});
        }
        Ok(doc) => doc,
    };
    let s = &doc["last_reconcile"]["summary"];
    let services = doc["services"].as_array().cloned().unwrap_or_default();
    let ready = services.iter().filter(|s| s["ready"] == true).count();
    let resources = doc["resources"].as_array().cloned().unwrap_or_default();
    let gpu_checks: Vec<&Value> = resources
        .iter()
        .filter(|r| r["id"].as_str().is_some_and(|id| id.starts_with("gpu:")))
        .collect();
    // XIDs recorded since the agent started, over every GPU (only where it watches them).
    let xids: Option<u64> = (doc["gpu_xids"]["watching"] == true).then(|| {
        doc["gpu_xids"]["gpus"]
            .as_object()
            .into_iter()
            .flat_map(|g| g.values())
            .flat_map(|c| c["counts"].as_object().into_iter().flat_map(|m| m.values()))
            .map(|n| n["count"].as_u64().unwrap_or(0))
            .sum()
    });
    let gpu = if gpu_checks.is_empty() && xids.is_none() {
        Value::Null
    } else {
        let failed = gpu_checks.iter().find(|r| r["status"] == "failed");
        json!({
            "ok": failed.is_none() && xids.unwrap_or(0) == 0,
            "checks": gpu_checks.len(),
            "failed": failed.map(|r| r["reason"].clone()),
            "xids": xids,
        })
    };
    let last_drift = doc["drift"]["events"]
        .as_array()
        .and_then(|e| e.last())
        .map(|e| json!({"at": e["at"], "id": e["id"], "repaired": e["repaired"]}));
    let failed_resource = resources
        .iter()
        .find(|r| r["status"] == "failed")
        .map(|r| format!("{}: {}", text(&r["id"]), text(&r["reason"])));
    let last_error =
        failed_resource.or_else(|| doc["pull"]["last_error"].as_str().map(str::to_owned));
    json!({
        "node": row.node,
        "address": row.address,
        "reachable": true,
        "agent_node": doc["node"],
        "generation": doc["generation"],
        "hash": doc["manifest"]["hash"],
        "from_cache": doc["manifest"]["from_cache"],
        "changed": s["changed"],
        "failed": s["failed"],
        "services_ready": ready,
        "services_total": services.len(),
        "gpu": gpu,
        "last_drift": last_drift,
        "last_error": last_error,
    })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The exit code for these rows (module doc).
pub fn exit_code(rows: &[Value]) -> u8 {
    if rows.iter().any(|r| r["reachable"] == false) {
        3
    } else if rows.iter().any(|r| r["failed"].as_u64().unwrap_or(0) > 0) {
        4
    } else {
        0
    }
}

/// One line per node under a header, and a count.
pub fn table(out: &mut impl Write, rows: &[Value]) {
    let head = [
        "NODE",
        "REACHABLE",
        "GEN",
        "HASH",
        "CHANGED",
        "FAILED",
        "SERVICES",
        "GPU",
        "LAST DRIFT",
        "LAST ERROR",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            if r["reachable"] == false {
                let mut c: [String; 10] = Default::default();
                c[0] = text(&r["node"]);
                c[1] = "no".into();
                for cell in &mut c[2..9] {
                    *cell = "-".into();
                }
                c[9] = text(&r["error"]);
                return c;
            }
            let hash = r["hash"]
                .as_str()
                .map(|h| {
                    let h = h.trim_start_matches("sha256:");
                    let short = &h[..h.len().min(12)];
                    if r["from_cache"] == true {
                        format!("{short} (cache)")
                    } else {
                        short.to_owned()
                    }
                })
                .unwrap_or_else(|| "-".into());
            let gpu = match &r["gpu"] {
                Value::Null => "-".into(),
                g if g["ok"] == true => "ok".into(),
                g => format!("FAILED {}", text(&g["failed"])),
            };
            let drift = match &r["last_drift"] {
                Value::Null => "-".into(),
                d => format!("{} {}", text(&d["at"]), text(&d["id"])),
            };
            [
                text(&r["node"]),
                "yes".into(),
                text(&r["generation"]),
                hash,
                text(&r["changed"]),
                text(&r["failed"]),
                format!(
                    "{}/{}",
                    text(&r["services_ready"]),
                    text(&r["services_total"])
                ),
                gpu,
                drift,
                text(&r["last_error"]),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()).take(9) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < 9 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    (*c).to_owned()
                }
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for row in &cells {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    let reachable = rows.iter().filter(|r| r["reachable"] == true).count();
    let failed = rows
        .iter()
        .filter(|r| r["failed"].as_u64().unwrap_or(0) > 0)
        .count();
    let _ = writeln!(
        out,
        "\n{} nodes: {reachable} reachable, {} unreachable, {failed} with failed resources",
        rows.len(),
        rows.len() - reachable
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_and_an_unreachable_node_says_so() {
        let doc = json!({
            "node": "n1", "generation": 3,
            "manifest": {"hash": "sha256:0123456789abcdef0123", "from_cache": true},
            "last_reconcile": {"summary": {"changed": 1, "failed": 1}},
            "resources": [{"id": "gpu:all", "status": "failed", "reason": "no NVIDIA driver"},
                          {"id": "file:/etc/x", "status": "unchanged"}],
            "services": [{"ready": true}, {"ready": false}],
            "drift": {"events": [{"at": "2026-01-01T00:00:00.000Z", "id": "file:/etc/x", "repaired": true}]},
            "gpu_xids": {"watching": false},
            "pull": {"last_error": null}
        });
        let rows = vec![
            summary(&Row {
                node: "n1".into(),
                address: "10.0.0.1".into(),
                status: Ok(doc),
            }),
            summary(&Row {
                node: "n2".into(),
                address: "10.0.0.2".into(),
                status: Err("GET http://10.0.0.2:9779/status: connection refused".into()),
            }),
        ];
        assert_eq!(rows[0]["services_ready"], 1);
        assert_eq!(rows[0]["services_total"], 2);
        assert_eq!(rows[0]["gpu"]["ok"], false);
        assert_eq!(rows[0]["last_error"], "gpu:all: no NVIDIA driver");
        assert_eq!(rows[1]["reachable"], false);
        assert_eq!(exit_code(&rows), 3);
        assert_eq!(exit_code(&rows[..1]), 4);
        let mut out = Vec::new();
        table(&mut out, &rows);
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NODE  REACHABLE  GEN  HASH"), "{out}");
        assert!(lines[1].starts_with("n1    yes        3    0123456789ab (cache)  1        1       1/2       FAILED no NVIDIA driver  2026-01-01T00:00:00.000Z file:/etc/x  gpu:all: no NVIDIA driver"), "{out}");
        assert!(lines[2].starts_with("n2    no         -    -"), "{out}");
        assert!(lines[2].ends_with("connection refused"), "{out}");
        assert!(
            out.contains("2 nodes: 1 reachable, 1 unreachable, 1 with failed resources"),
            "{out}"
        );
    }
}
