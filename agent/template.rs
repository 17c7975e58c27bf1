//! Tera templates: the ones shipped with provision (built into the binary, so a node needs only
//! the binary) and the ones beside a manifest.
//!
//! A template sees `node` (name, address, roles, aliases), `nodes` (every node), `cluster` (name,
//! domain), `vars` (cluster vars overridden by the node's) and `facts`. An undefined variable is an
//! error, not an empty string: a config file with a silent hole is worse than a failed resource.

use std::path::Path;

/// Templates shipped with provision: (name, text).
const BUILTIN: &[(&str, &str)] = &[(
    "pyme/config.yaml.tera",
    include_str!("../templates/pyme/config.yaml.tera"),
)];

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
    render_str(name, &text, context)
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
    fn no_html_escaping() {
        assert_eq!(
            render_str("t.html", "{{ x }}", &json!({"x": "<a & b>"})).unwrap(),
            "<a & b>"
        );
    }
}
