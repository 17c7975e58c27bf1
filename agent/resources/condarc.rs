//! The managed `<conda root>/.condarc`, in conda's own format (`conda/base/context.py` keys):
//! only the keys the manifest's `conda:` settings give are written, in a fixed order, so the text
//! is stable and a hand edit shows as a diff. It is written by the `file` resource, which keeps a
//! backup of a hand-written file it replaces.

use std::path::Path;

use crate::manifest::model::CondaSettings;

/// The `.condarc` text for `settings`; local channel folders (relative to `dir`, the manifest's
/// folder) are written as absolute `file://` URLs, since conda reads them from anywhere.
pub fn render(settings: &CondaSettings, dir: &Path) -> String {
    let mut out = String::from(
        "# Managed by provision (the manifest's conda: settings); edits here are replaced on the next apply.\n",
    );
    let list = |out: &mut String, key: &str, items: &[String]| {
        if !items.is_empty() {
            out.push_str(&format!("{key}:\n"));
            for item in items {
                out.push_str(&format!("  - {}\n", scalar(item)));
            }
        }
    };
    let channels: Vec<String> = settings
        .channels
        .iter()
        .map(|c| channel_url(c, dir))
        .collect();
    list(&mut out, "channels", &channels);
    if let Some(p) = settings.channel_priority {
        out.push_str(&format!("channel_priority: {}\n", p.as_str()));
    }
    if let Some(b) = settings.auto_activate_base {
        out.push_str(&format!("auto_activate_base: {b}\n"));
    }
    if let Some(b) = settings.auto_activate {
        out.push_str(&format!("auto_activate: {b}\n"));
    }
    list(&mut out, "envs_dirs", &settings.envs_dirs);
    list(&mut out, "pkgs_dirs", &settings.pkgs_dirs);
    if !settings.proxy_servers.is_empty() {
        out.push_str("proxy_servers:\n");
        for (key, url) in &settings.proxy_servers {
            out.push_str(&format!("  {}: {}\n", scalar(key), scalar(url)));
        }
    }
    out
}

/// A channel as `.condarc` should name it: names and URLs as written, folders as `file://` URLs.
fn channel_url(text: &str, dir: &Path) -> String {
    let folder =
        text.starts_with('/') || text.starts_with("./") || text.starts_with("../") || text == ".";
    if !folder {
        return text.to_owned();
    }
    match super::conda::channel(text, dir) {
        Ok(channel) => channel
            .base_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        Err(_) => format!("file://{}", dir.join(text).display()),
    }
}

/// A YAML scalar: plain when that is unambiguous, else double-quoted (JSON's quoting is valid YAML).
fn scalar(text: &str) -> String {
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:@+-".contains(c))
        && !text.contains(": ")
        && !["true", "false", "yes", "no", "on", "off", "null", "~"]
            .contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_owned()
    } else {
        serde_json::Value::String(text.to_owned()).to_string()
    }
}

/// Why a `proxy_servers` entry would not work or would leak a password, if it would. The message
/// never repeats the URL: it may hold the password it refuses.
pub fn proxy_problem(key: &str, url: &str) -> Result<(), String> {
    let key_ok = matches!(key, "http" | "https")
        || key
            .split_once("://")
            .is_some_and(|(scheme, host)| !scheme.is_empty() && !host.is_empty());
    if !key_ok {
        return Err(format!(
            "proxy_servers key `{key}` is not a scheme (http, https) or scheme://host"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "the proxy for `{key}` is not a URL (scheme://host:port)"
        ));
    };
    if !matches!(scheme, "http" | "https" | "socks5" | "socks5h") || rest.is_empty() {
        return Err(format!(
            "the proxy for `{key}` is not an http, https or socks5 URL"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && let Some((_, password)) = userinfo.split_once(':')
        && !(password.starts_with("${") && password.ends_with('}'))
    {
        return Err(format!(
            "the proxy for `{key}` has a password written in it (not shown); .condarc is world-readable and every diff would show it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::model::ChannelPriority;

    fn settings() -> CondaSettings {
        CondaSettings {
            root: "/opt/conda".into(),
            base: vec!["conda".into()],
            channels: vec!["conda-forge".into(), "david_baddeley".into()],
            channel_priority: Some(ChannelPriority::Strict),
            auto_activate_base: Some(false),
            auto_activate: None,
            envs_dirs: vec!["/opt/conda/envs".into()],
            pkgs_dirs: vec![],
            proxy_servers: [(
                "https".to_owned(),
                "http://${PROXY_USER}:${PROXY_PASSWORD}@proxy.lan:3128".to_owned(),
            )]
            .into(),
            roles: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn only_given_keys_are_written_in_condas_format() {
        let text = render(&settings(), Path::new("/"));
        assert_eq!(
            text.lines().skip(1).collect::<Vec<_>>(),
            [
                "channels:",
                "  - conda-forge",
                "  - david_baddeley",
                "channel_priority: strict",
                "auto_activate_base: false",
                "envs_dirs:",
                "  - /opt/conda/envs",
                "proxy_servers:",
                "  https: \"http://${PROXY_USER}:${PROXY_PASSWORD}@proxy.lan:3128\"",
            ]
        );
        let parsed: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(parsed["auto_activate_base"], false);
        assert_eq!(parsed["channels"][1], "david_baddeley");
    }

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(scalar("conda-forge"), "conda-forge");
        assert_eq!(scalar("no"), "\"no\"");
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(scalar("#x"), "\"#x\"");
    }

    #[test]
    fn proxies_with_passwords_are_refused_without_showing_them() {
        assert!(proxy_problem("http", "http://proxy.lan:3128").is_ok());
        assert!(proxy_problem("https://repo.anaconda.com", "http://proxy.lan:3128").is_ok());
        assert!(proxy_problem("http", "http://${U}:${P}@proxy.lan:3128").is_ok());
        let e = proxy_problem("http", "http://me:hunter2@proxy.lan:3128").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(proxy_problem("ftp", "http://proxy.lan").is_err());
        assert!(proxy_problem("http", "proxy.lan:3128").is_err());
    }
}
