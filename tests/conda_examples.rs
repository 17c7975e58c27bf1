//! The conda examples of `manifests/` applied for real, on every node they list, against a local
//! channel instead of conda-forge: manifests/jupyterlab-slurm.yaml (with its project env from
//! manifests/envs/genomics.yml) and manifests/dask-pangeo.yaml, as a user has them, unedited.
//!
//! How the examples are pointed at the local channel, and nothing else changed: the test sets
//! `CONDA_CHANNEL_ALIAS=file://<dir>` (conda's own variable for its `channel_alias` setting, which
//! provision honours the same way), so the names `conda-forge` and `bioconda` resolve to
//! `<dir>/conda-forge` and `<dir>/bioconda`, built by `tests/fixtures/conda-channel.py --examples`;
//! and `PIP_NO_INDEX=1 PIP_FIND_LINKS=<dir>/wheels`, so the envs' `pip:` requirements
//! (napari-tifffile-reader, pyfaidx) come from wheels made by the same script.
//!
//! What it checks, on each node: the base installation (conda and mamba), each environment's
//! `conda-meta` records (every package its specs name, python 3.11 or 3.12 as asked, genomics'
//! pysam and samtools from bioconda), the pip packages, each env's own `bin/python` importing what
//! it was given (ipykernel's `ipykernel_launcher` included, so the kernels' ipykernel check passes
//! on a real module), each kernel.json in the JupyterLab env with ipykernel's argv, `.condarc` with
//! `auto_activate_base: false` and the channel names as written, envs and kernels only on the
//! nodes whose roles ask for them, and a second apply that changes nothing and writes nothing.
//!
//! What it does not cover: the real conda-forge packages. The channel holds stand-ins with the
//! examples' names and versions (a module with a `__version__`; python 3.11 is this machine's
//! interpreter, python 3.12 a stand-in with no interpreter, as none is installed here), so nothing
//! checks that conda-forge's jupyterlab, dask or cartopy solve together today, download over
//! HTTPS or through dask-pangeo's proxy, or run. Kernels are checked by reading kernel.json, not
//! with `jupyter kernelspec list` (jupyter_client is not available offline here; tests/conda.rs
//! does that check with PyPI), and no kernel is started. The JupyterLab service is never started
//! (apply does not start services; tests/agent.rs covers supervision).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::Sandbox;

/// Builds the examples' channels and wheels under `dir`.
fn build_channels(dir: &Path) {
    let status = Command::new("timeout")
        .args(["60", "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/conda-channel.py"
        ))
        .arg("--examples")
        .arg(dir)
        .status()
        .expect("run python3");
    assert!(status.success(), "building the examples' channels");
}

fn example(name: &str) -> String {
    format!("{}/manifests/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every node of the example, and whether it has the `login` role (JupyterLab and kernels).
fn nodes(file: &str) -> Vec<(String, bool)> {
    let m = provision::manifest::parse(Path::new(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let nodes: Vec<(String, bool)> = m
        .nodes
        .iter()
        .map(|n| {
            let login = n.value.roles.iter().any(|r| r == "login");
            (n.value.name.clone(), login)
        })
        .collect();
    assert!(
        nodes.iter().any(|n| n.1) && nodes.iter().any(|n| !n.1),
        "{file} has a login node and others: {nodes:?}"
    );
    nodes
}

/// `provision apply EXAMPLE --node NODE --json --root <root>` with the channel alias and the
/// local wheels.
/// The password jupyterlab-slurm's `jupyter_server` reads from JUPYTER_PASSWORD.
const JUPYTER_PASSWORD: &str = "example-Jupyter-Pass";

fn apply(s: &Sandbox, channels: &Path, file: &str, node: &str) -> common::Run {
    let root = s.root().to_str().unwrap().to_owned();
    let alias = format!("file://{}", channels.display());
    let wheels = channels.join("wheels").to_str().unwrap().to_owned();
    common::run_with_env(
        &["apply", file, "--node", node, "--json", "--root", &root],
        &[
            ("CONDA_CHANNEL_ALIAS", &alias),
            ("PIP_NO_INDEX", "1"),
            ("PIP_FIND_LINKS", &wheels),
            ("JUPYTER_PASSWORD", JUPYTER_PASSWORD),
        ],
    )
}

/// name -> (version, channel) of every record in `<env>/conda-meta`.
fn records(s: &Sandbox, env: &str) -> BTreeMap<String, (String, String)> {
    let dir = s.path(&format!("{env}/conda-meta"));
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        out.insert(
            r["name"].as_str().unwrap().to_owned(),
            (
                r["version"].as_str().unwrap().to_owned(),
                r["channel"].as_str().unwrap_or_default().to_owned(),
            ),
        );
    }
    out
}

/// Asserts the env has a record for each of `names`, and python `python` (major.minor).
#[track_caller]
fn assert_env(s: &Sandbox, env: &str, python: &str, names: &[&str]) {
    let have = records(s, env);
    for name in names {
        assert!(have.contains_key(*name), "{env} has no {name}: {have:?}");
    }
    let version = &have["python"].0;
    assert!(
        version.starts_with(&format!("{python}.")),
        "{env} has python {version}, not {python}"
    );
}

/// Runs the env's own `bin/python -c CODE` and returns its stdout.
fn env_python(s: &Sandbox, env: &str, code: &str) -> String {
    let out = Command::new("timeout")
        .arg("30")
        .arg(s.path(&format!("{env}/bin/python")))
        .args(["-c", code])
        .output()
        .expect("run the env's python");
    assert!(
        out.status.success(),
        "{env}/bin/python -c {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The kernel.json of kernel `name` in the JupyterLab env, if any.
fn kernel_json(s: &Sandbox, name: &str) -> Option<serde_json::Value> {
    let path = s.path(&format!(
        "/opt/conda/envs/jupyterlab/share/jupyter/kernels/{name}/kernel.json"
    ));
    let text = std::fs::read(&path).ok()?;
    Some(serde_json::from_slice(&text).unwrap())
}

/// The argv ipykernel writes for a CPython 3.11 env.
fn ipykernel_argv(env: &str) -> serde_json::Value {
    serde_json::json!([
        format!("{env}/bin/python"),
        "-Xfrozen_modules=off",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}"
    ])
}

/// Applies `file` on `node` twice into a fresh root: the first apply changes and fails nothing,
/// the second changes nothing and writes nothing. Returns the sandbox for the checks.
fn apply_twice(channels: &Path, file: &str, node: &str) -> Sandbox {
    let s = Sandbox::debian();
    let first = apply(&s, channels, file, node);
    first.expect(0);
    let report = first.json();
    for r in report["resources"].as_array().unwrap() {
        assert!(
            matches!(r["status"].as_str().unwrap(), "changed" | "unchanged"),
            "{file} on {node}, first apply: {r:#}"
        );
    }
    assert_eq!(report["summary"]["failed"], 0, "{}", first.stdout);
    let before = s.snapshot();
    let second = apply(&s, channels, file, node);
    second.expect(0);
    for r in second.json()["resources"].as_array().unwrap() {
        assert_eq!(
            r["status"], "unchanged",
            "{file} on {node}, second apply: {r:#}"
        );
    }
    assert_eq!(
        s.snapshot(),
        before,
        "{file} on {node}: the second apply wrote nothing"
    );
    s
}

#[track_caller]
fn assert_base_and_condarc(s: &Sandbox) {
    assert_eq!(
        records(s, "/opt/conda").keys().collect::<Vec<_>>(),
        ["conda", "mamba"]
    );
    let condarc = s.read("/opt/conda/.condarc");
    assert!(
        condarc.contains("\nauto_activate_base: false\n"),
        "{condarc}"
    );
    assert!(
        condarc.contains("channels:\n  - conda-forge\n") && !condarc.contains("file://"),
        "the .condarc names the channels as the manifest does: {condarc}"
    );
    assert!(condarc.contains("channel_priority: strict\n"), "{condarc}");
}

fn jupyter_user_needs_root() -> bool {
    common::have_root("conda_examples (the examples create users with homes)")
}

#[test]
fn jupyterlab_slurm_applies_on_every_node_from_a_local_channel_and_converges() {
    if !jupyter_user_needs_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let channels = tmp.path().join("channels");
    build_channels(&channels);
    let file = example("jupyterlab-slurm.yaml");
    for (node, login) in nodes(&file) {
        let s = apply_twice(&channels, &file, &node);
        assert_base_and_condarc(&s);

        // The project envs, on every node (batch jobs use them too).
        let imaging = "/opt/conda/envs/imaging";
        assert_env(
            &s,
            imaging,
            "3.11",
            &[
                "python",
                "ipykernel",
                "numpy",
                "scipy",
                "scikit-image",
                "tifffile",
                "zarr",
                "matplotlib",
                "pip",
            ],
        );
        assert_eq!(
            env_python(
                &s,
                imaging,
                "import ipykernel_launcher, numpy, skimage, napari_tifffile_reader as n; print(numpy.__version__, n.__version__)"
            ),
            "2.1.2 0.1.2",
            "imaging's python imports its conda packages and its pip: package"
        );
        let genomics = "/opt/conda/envs/genomics";
        assert_env(
            &s,
            genomics,
            "3.11",
            &["python", "ipykernel", "pandas", "pysam", "samtools", "pip"],
        );
        let have = records(&s, genomics);
        for from_bioconda in ["pysam", "samtools"] {
            assert!(
                have[from_bioconda]
                    .1
                    .trim_end_matches('/')
                    .ends_with("/bioconda"),
                "{from_bioconda} comes from environment.yml's second channel: {:?}",
                have[from_bioconda]
            );
        }
        assert!(
            have["pandas"]
                .1
                .trim_end_matches('/')
                .ends_with("/conda-forge"),
            "{:?}",
            have["pandas"]
        );
        assert_eq!(
            env_python(
                &s,
                genomics,
                "import ipykernel_launcher, pandas, pyfaidx; print(pandas.__version__, pyfaidx.__version__)"
            ),
            "2.2.3 0.8.1.3"
        );
        let samtools = Command::new("timeout")
            .arg("10")
            .arg(s.path(&format!("{genomics}/bin/samtools")))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&samtools.stdout).trim(),
            "samtools 1.21"
        );

        // JupyterLab and the kernels on every node (batch jobs run JupyterLab on the compute
        // nodes), the batch script that starts it there, and the server's config on the login
        // node only.
        {
            assert_env(
                &s,
                "/opt/conda/envs/jupyterlab",
                "3.12",
                &[
                    "python",
                    "jupyterlab",
                    "ipykernel",
                    "jupyter-resource-usage",
                ],
            );
            assert!(
                records(&s, "/opt/conda/envs/jupyterlab")["jupyterlab"]
                    .0
                    .starts_with("4."),
                "jupyterlab >=4.2"
            );
            let imaging_kernel = kernel_json(&s, "imaging").expect("kernel imaging");
            assert_eq!(imaging_kernel["argv"], ipykernel_argv(imaging));
            assert_eq!(imaging_kernel["display_name"], "Imaging (Python 3.11)");
            assert_eq!(
                imaging_kernel["env"],
                serde_json::json!({"OMP_NUM_THREADS": "4"})
            );
            let genomics_kernel = kernel_json(&s, "genomics").expect("kernel genomics");
            assert_eq!(genomics_kernel["argv"], ipykernel_argv(genomics));
            assert_eq!(genomics_kernel["display_name"], "Genomics (Python 3.11)");
        }
        let sbatch = s.read("/usr/local/bin/jupyterlab-sbatch");
        for line in [
            "#SBATCH --partition=compute\n",
            "#SBATCH --time=04:00:00\n",
            "env=\"/opt/conda/envs/jupyterlab\"\n",
            "login=\"login01\"\n",
        ] {
            assert!(sbatch.contains(line), "{line} in\n{sbatch}");
        }
        let config = "/var/lib/jupyter/.jupyter/jupyter_server_config.json";
        assert_eq!(s.path(config).exists(), login, "{node}: {config}");
        if login {
            let text = s.read(config);
            assert!(!text.contains(JUPYTER_PASSWORD), "{text}");
            let config: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(
                config["PasswordIdentityProvider"]["hashed_password"]
                    .as_str()
                    .unwrap()
                    .starts_with("argon2:$argon2id$"),
                "{config}"
            );
            assert_eq!(config["ServerApp"]["ip"], "10.2.0.10");
            assert_eq!(s.read("/var/lib/jupyter/.jupyter/token").len(), 64);
        }
        assert!(
            s.path("/var/lib/jupyter").is_dir(),
            "{node}: the jupyter user's home"
        );
    }
}

#[test]
fn dask_pangeo_applies_on_every_node_from_a_local_channel_and_converges() {
    if !jupyter_user_needs_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let channels = tmp.path().join("channels");
    build_channels(&channels);
    let file = example("dask-pangeo.yaml");
    for (node, login) in nodes(&file) {
        let s = apply_twice(&channels, &file, &node);
        assert_base_and_condarc(&s);
        let condarc = s.read("/opt/conda/.condarc");
        assert!(
            condarc.contains("proxy_servers:\n  http: \"http://proxy.hpc.example:3128\"")
                || condarc.contains("proxy_servers:\n  http: http://proxy.hpc.example:3128"),
            "{condarc}"
        );

        let pangeo = "/opt/conda/envs/pangeo";
        assert_env(
            &s,
            pangeo,
            "3.11",
            &[
                "python",
                "dask",
                "distributed",
                "dask-jobqueue",
                "xarray",
                "zarr",
                "netcdf4",
                "h5netcdf",
                "intake-xarray",
                "cartopy",
                "ipykernel",
                "dask-labextension",
            ],
        );
        let dask = &records(&s, pangeo)["dask"].0;
        assert!(dask.as_str() >= "2024.8", "dask >=2024.8: {dask}");
        assert_eq!(
            env_python(
                &s,
                pangeo,
                "import ipykernel_launcher, dask, distributed, dask_jobqueue, xarray, netCDF4, cartopy; print(dask.__version__, dask_jobqueue.__version__)"
            ),
            "2024.9.1 0.9.0"
        );
        // The workers' python that jobqueue.yaml names is the env's.
        let jobqueue = s.read("/etc/dask/jobqueue.yaml");
        assert!(
            jobqueue.contains("    python: \"/opt/conda/envs/pangeo/bin/python\"\n"),
            "{jobqueue}"
        );
        assert!(
            jobqueue.contains("    walltime: \"02:00:00\"\n"),
            "{jobqueue}"
        );
        assert!(
            s.read("/etc/dask/distributed.yaml")
                .contains("    link: \"/proxy/{port}/status\"\n")
        );
        assert!(s.path("/opt/conda/envs/pangeo/bin/python").exists());

        let lab = s.path("/opt/conda/envs/jupyterlab");
        assert_eq!(lab.exists(), login, "{node}: the JupyterLab env");
        if login {
            assert_env(
                &s,
                "/opt/conda/envs/jupyterlab",
                "3.12",
                &["python", "jupyterlab", "dask-labextension"],
            );
            let kernel = kernel_json(&s, "pangeo").expect("kernel pangeo");
            assert_eq!(kernel["argv"], ipykernel_argv(pangeo));
            assert_eq!(kernel["display_name"], "Pangeo (Dask, xarray)");
            assert_eq!(kernel["language"], "python");
        }
    }
}

#[test]
fn a_channel_alias_that_is_not_a_url_fails_the_conda_resources_with_a_reason() {
    let s = Sandbox::debian();
    let root = s.root().to_str().unwrap().to_owned();
    let out = common::run_with_env(
        &[
            "apply",
            &example("dask-pangeo.yaml"),
            "--node",
            "cn01",
            "--json",
            "--root",
            &root,
        ],
        &[("CONDA_CHANNEL_ALIAS", "not a url")],
    );
    assert_ne!(out.code, 0, "{}", out.stdout);
    let report = out.json();
    let conda: Vec<&serde_json::Value> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"].as_str().unwrap().starts_with("conda_env:"))
        .collect();
    assert_eq!(conda.len(), 2, "the base and the pangeo env: {report:#}");
    for r in conda {
        assert_eq!(r["status"], "failed", "{r:#}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("CONDA_CHANNEL_ALIAS=not a url is not a URL"),
            "{r:#}"
        );
    }
    assert!(
        !s.path("/opt/conda/conda-meta").exists() && !s.path("/opt/conda/envs/pangeo").exists(),
        "no conda installation or env was started"
    );

    // A channel written as a URL is not moved by the alias, so the bad alias does not touch it.
    let channel = s.work().join("channel");
    let status = Command::new("timeout")
        .args(["60", "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/conda-channel.py"
        ))
        .arg(&channel)
        .status()
        .unwrap();
    assert!(status.success());
    let m = s.manifest(
        "url.yaml",
        &format!(
            "nodes:\n  - name: n1\n    address: 10.0.0.1\nresources:\n  - conda_env:\n      prefix: /opt/envs/tiny\n      channels: [\"file://{}\"]\n      specs: [feas-a]\n",
            channel.display()
        ),
    );
    let url = common::run_with_env(
        &[
            "apply",
            m.to_str().unwrap(),
            "--node",
            "n1",
            "--root",
            &root,
        ],
        &[("CONDA_CHANNEL_ALIAS", "not a url")],
    );
    url.expect(0);
    assert!(s.path("/opt/envs/tiny/bin/feas-a").is_file());
}
