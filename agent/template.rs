//! Tera templates: the ones shipped with provision (built into the binary, so a node needs only
//! the binary) and the ones beside a manifest.
//!
//! A template sees `node` (name, address, roles, aliases), `nodes` (every node), `cluster` (name,
//! domain), `vars` (cluster vars overridden by the node's) and `facts`. An undefined variable is an
//! error, not an empty string: a config file with a silent hole is worse than a failed resource.
//!
//! A template named `*.yaml.tera` or `*.yml.tera` must render to valid YAML: the output is parsed
//! (serde-saphyr, the manifest's own parser) before any file is touched, and a syntax error fails
//! the resource with the line and column in the rendered text. One stray quote in
//! `/etc/PYME/config.yaml` would otherwise break every PYME program on the node at import time.

use std::path::Path;

/// Templates shipped with provision: (name, text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "pyme/config.yaml.tera",
        include_str!("../templates/pyme/config.yaml.tera"),
    ),
    (
        "ipyparallel/ipcluster_config.py.tera",
        include_str!("../templates/ipyparallel/ipcluster_config.py.tera"),
    ),
    (
        "ipyparallel/ipcontroller_config.py.tera",
        include_str!("../templates/ipyparallel/ipcontroller_config.py.tera"),
    ),
    (
        "ipyparallel/ipcluster-start.sh.tera",
        include_str!("../templates/ipyparallel/ipcluster-start.sh.tera"),
    ),
    (
        "ipyparallel/engines_registered.py.tera",
        include_str!("../templates/ipyparallel/engines_registered.py.tera"),
    ),
    (
        "jupyter/jupyterlab.sbatch.tera",
        include_str!("../templates/jupyter/jupyterlab.sbatch.tera"),
    ),
];

/// Names of the shipped templates.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

/// Whether `name` is a file beside the manifest or a shipped template.
pub fn exists(dir: &Path, name: &str) -> bool {
    dir.join(name).is_file() || BUILTIN.iter().any(|(n, _)| *n == name)
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {name}: {message}")]
    Render { name: String, message: String },
    #[error(
        "template {name} rendered invalid YAML at line {line}, column {column} of its output: {message}\n  {text}\n  hint: quote values that hold `:`, `#` or leading spaces, e.g. \"{{{{ vars.x }}}}\""
    )]
    InvalidYaml {
        name: String,
        line: usize,
        column: usize,
        message: String,
        /// The rendered line at fault.
        text: String,
    },
}

/// Renders the template `name` (beside the manifest first, then shipped) with `context`.
pub fn render(
    dir: &Path,
    name: &str,
    context: &serde_json::Value,
) -> Result<String, TemplateError> {
    let local = dir.join(name);
    let text = if local.is_file() {
        std::fs::read_to_string(&local).map_err(|source| TemplateError::Read {
            path: local.display().to_string(),
            source,
        })?
    } else {
        let (_, text) =
            BUILTIN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| TemplateError::Read {
                    path: local.display().to_string(),
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })?;
        (*text).to_owned()
    };
    let out = render_str(name, &text, context)?;
    if name.ends_with(".yaml.tera") || name.ends_with(".yml.tera") {
        check_yaml(name, &out)?;
    }
    Ok(out)
}

/// Parses rendered YAML (every document) and reports where it breaks.
pub fn check_yaml(name: &str, text: &str) -> Result<(), TemplateError> {
    let Err(e) = serde_saphyr::from_multiple::<serde_json::Value>(text) else {
        return Ok(());
    };
    let (line, column) = e
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    let mut message = e.to_string();
    if let Some(cut) = message.find(" at line ") {
        message.truncate(cut);
    }
    Err(TemplateError::InvalidYaml {
        name: name.to_owned(),
        line,
        column,
        message,
        text: text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or("")
            .to_owned(),
    })
}

/// Renders template text; errors carry Tera's whole explanation.
pub fn render_str(
    name: &str,
    text: &str,
    context: &serde_json::Value,
) -> Result<String, TemplateError> {
    let fail = |e: tera::Error| TemplateError::Render {
        name: name.to_owned(),
        message: chain(&e),
    };
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&str>::new());
    tera.add_raw_template(name, text).map_err(fail)?;
    let context = tera::Context::from_serialize(context).map_err(fail)?;
    tera.render(name, &context).map_err(fail)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_variables_and_loops() {
        let out = render_str(
            "t",
            "{{ node.name }}:{% for n in nodes %} {{ n }}{% endfor %}",
            &json!({"node": {"name": "a"}, "nodes": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(out, "a: a b");
    }

    #[test]
    fn an_undefined_variable_is_an_error_that_names_it() {
        let err = render_str("t.tera", "x = {{ vars.nope }}", &json!({"vars": {}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.tera"), "{err}");
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn rendered_yaml_is_checked_with_its_position() {
        assert!(check_yaml("c.yaml.tera", "a: 1\nb: \"x\"\n").is_ok());
        let err = check_yaml("c.yaml.tera", "a: 1\nb: \"unclosed\nc: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.yaml.tera"), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    #[test]
    fn the_shipped_pyme_config_renders_valid_yaml() {
        let ctx = json!({
            "node": {"name": "master"},
            "facts": {"cpus": 4},
            "vars": {"pyme_data_root": "/data/pyme", "pyme_cluster_filter": ""},
        });
        let out = render(Path::new("/nonexistent"), "pyme/config.yaml.tera", &ctx).unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
        assert_eq!(v["dataserver-root"], "/data/pyme");
        assert_eq!(v["dataserver-port"], 15348);
        assert_eq!(v["dataserver-filter"], "");
    }

    #[test]
    fn a_value_that_breaks_the_pyme_config_is_caught() {
        let ctx = json!({
            "node": {"name": "master"},
            "facts": {"cpus": 4},
            "vars": {"pyme_data_root": "/data/\"pyme", "pyme_cluster_filter": ""},
        });
        let err = render(Path::new("/nonexistent"), "pyme/config.yaml.tera", &ctx)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid YAML"), "{err}");
    }

    fn ipp_context(node: &str, controller_roles: &[&str]) -> serde_json::Value {
        json!({
            "node": {"name": node, "address": "10.0.1.10"},
            "nodes": [
                {"name": "cl-0", "address": "10.0.1.10", "roles": controller_roles, "cores": null, "vars": {}},
                {"name": "cl-1", "address": "10.0.1.11", "roles": ["engine"], "cores": 4, "vars": {}},
                {"name": "cl-2", "address": "10.0.1.12", "roles": ["engine"], "cores": 4, "vars": {"ipp_engines": 1}},
                {"name": "nas", "address": "10.0.1.2", "roles": [], "cores": 16, "vars": {}},
            ],
            "facts": {"cpus": 6},
            "vars": {"ipp_python": "/home/ipp/venv/bin/python"},
        })
    }

    #[test]
    fn the_engine_list_comes_from_the_engine_nodes_and_n_is_their_sum() {
        let out = render(
            Path::new("/nonexistent"),
            "ipyparallel/ipcluster_config.py.tera",
            &ipp_context("cl-0", &["controller"]),
        )
        .unwrap();
        assert!(
            out.contains(
                "c.SSHEngineSetLauncher.engines = {\n    \"cl-1\": 4,\n    \"cl-2\": 1,\n}\n"
            ),
            "{out}"
        );
        assert!(out.contains("\nc.Cluster.n = 5\n"), "{out}");
        assert!(out.contains("c.Cluster.engine_launcher_class = \"ssh\""));
        assert!(out.contains("c.SSHLauncher.to_send = []"));
        assert!(out.contains("c.SSHLauncher.remote_python = \"/home/ipp/venv/bin/python\""));
        assert!(
            !out.contains("cl-0\":"),
            "the controller is unloaded: {out}"
        );
    }

    #[test]
    fn a_controller_with_the_engine_role_counts_its_own_cpus() {
        let out = render(
            Path::new("/nonexistent"),
            "ipyparallel/ipcluster_config.py.tera",
            &ipp_context("cl-0", &["controller", "engine"]),
        )
        .unwrap();
        assert!(out.contains("    \"cl-0\": 6,\n"), "{out}");
        assert!(out.contains("\nc.Cluster.n = 11\n"), "{out}");
    }

    #[test]
    fn an_engine_node_whose_cores_the_controller_cannot_know_is_named() {
        let mut ctx = ipp_context("cl-0", &["controller"]);
        ctx["nodes"][1]["cores"] = serde_json::Value::Null;
        let err = render(
            Path::new("/nonexistent"),
            "ipyparallel/ipcluster_config.py.tera",
            &ctx,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node cl-1 has the role engine but no cores:"),
            "{err}"
        );
    }

    #[test]
    fn the_start_script_ends_leftovers_on_every_engine_host() {
        let out = render(
            Path::new("/nonexistent"),
            "ipyparallel/ipcluster-start.sh.tera",
            &ipp_context("cl-0", &["controller"]),
        )
        .unwrap();
        assert!(out.contains("  for host in cl-1 cl-2; do\n"), "{out}");
        assert!(
            out.contains("\"${python%/*}/ipcluster\" start --profile-dir=\"$profile_dir\" &\n")
                && out.contains(
                    "trap 'kill -KILL \"$ipcluster\" 2>/dev/null; end_leftovers; exit 0' INT TERM"
                ),
            "{out}"
        );
        assert!(
            out.contains("python=\"/home/ipp/venv/bin/python\""),
            "{out}"
        );
    }

    #[test]
    fn the_controller_listens_on_its_cluster_address() {
        let out = render(
            Path::new("/nonexistent"),
            "ipyparallel/ipcontroller_config.py.tera",
            &ipp_context("cl-0", &["controller"]),
        )
        .unwrap();
        assert!(out.contains("c.IPController.ip = \"10.0.1.10\""), "{out}");
        assert!(out.contains("c.IPController.reuse_files = True"));
        assert!(out.contains("c.IPController.db_class = \"SQLiteDB\""));
    }

    #[test]
    fn no_html_escaping() {
        assert_eq!(
            render_str("t.html", "{{ x }}", &json!({"x": "<a & b>"})).unwrap(),
            "<a & b>"
        );
    }
}
