//! Checks of `jupyter_server`: where the config and token go, the address and port, and that the
//! password has exactly one source (never the password itself in the manifest).

use super::{Validator, Written};
use crate::manifest::Origin;
use crate::manifest::model::JupyterServerSpec;

impl Validator<'_> {
    pub(super) fn jupyter_server(&mut self, o: &Origin, j: &JupyterServerSpec) {
        self.written(
            o,
            "jupyter_server.path",
            "path",
            &j.path,
            Written::Path,
            "write the config file's absolute path, e.g. /var/lib/jupyter/.jupyter/jupyter_server_config.json",
        );
        if !j.path.ends_with(".json") {
            self.error(
                o,
                "jupyter_server.path",
                format!("`{}` does not end in .json", j.path),
                "Jupyter reads jupyter_server_config.json (the .py form is Python, which provision does not write)",
            );
        }
        if !super::is_account_name(&j.user) {
            self.error(
                o,
                "jupyter_server.user",
                format!("`{}` is not a valid user name", j.user),
                "name the user the server runs as, e.g. jupyter",
            );
        }
        if let Some(t) = &j.token_file {
            self.written(
                o,
                "jupyter_server.token_file",
                "token_file",
                t,
                Written::Path,
                "write an absolute path the server's user can read, e.g. /var/lib/jupyter/.jupyter/token",
            );
            if *t == j.path {
                self.error(
                    o,
                    "jupyter_server.token_file",
                    "token_file is the config file itself".into(),
                    "give the token a file of its own, e.g. /var/lib/jupyter/.jupyter/token",
                );
            }
        }
        if let Some(dir) = &j.root_dir
            && let Some(problem) = super::path_problem(dir)
        {
            self.error(
                o,
                "jupyter_server.root_dir",
                format!("root_dir `{dir}` {problem}"),
                "write the folder notebooks start in, e.g. /var/lib/jupyter",
            );
        }
        let ip_ok = j.ip.parse::<std::net::IpAddr>().is_ok() || super::is_hostname(&j.ip);
        if !ip_ok {
            self.error(
                o,
                "jupyter_server.ip",
                format!("`{}` is not an address or host name", j.ip),
                "write the address to listen on, e.g. 127.0.0.1 or the login node's address",
            );
        }
        if j.port == 0 {
            self.error(
                o,
                "jupyter_server.port",
                "port 0 would let the system pick a port nobody knows".into(),
                "give the port users forward to, e.g. 8888",
            );
        }
        self.password_source(
            o,
            "jupyter_server",
            j.password_file.as_deref(),
            j.password_env.as_deref(),
            "JUPYTER_PASSWORD",
        );
    }
}
