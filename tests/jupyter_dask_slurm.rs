//! JupyterLab and Dask on a SLURM cluster, for real, on one simulated login node (its own mount,
//! network, UTS and PID namespaces and its own root, an overlay over `/`, from tests/common/netns.rs;
//! its address 10.4.0.10 on its own loopback, nothing of it in the machine's network).
//!
//! What it shows:
//! - `provision apply` of a manifest with `jupyter_server`, `dask_config`, a project venv with
//!   ipykernel (from a folder of wheels), its `jupyter_kernel`, and the shipped batch script
//!   `jupyter/jupyterlab.sbatch.tera`: the config holds only Jupyter's argon2 hash (never the
//!   password, which appears in no output either), the token file is 0600 and the jupyter user's,
//!   and a second apply changes nothing (the hash that still verifies is kept).
//! - `provision agent` starts JupyterLab (the real jupyterlab and jupyter_server from PyPI) as the
//!   jupyter user and reports it ready once `GET /api/status` answers with the token. Over the REST
//!   API: anonymous and wrong-token requests are refused (403), a browser-style login with the
//!   wrong password is refused and with the right one lets `/api/status` answer, `/api/kernelspecs`
//!   lists the project env's kernel, and a kernel of that env is started (it reports `idle`
//!   itself over ZeroMQ), seen running the env's python, and deleted.
//! - A real single-node SLURM (Debian's slurm-wlm and munge: munged, slurmctld and slurmd started
//!   by the test inside the node, proctrack/linuxproc, no systemd, no cgroups): a `SLURMCluster()`
//!   built with no arguments from the provisioned `/etc/dask/jobqueue.yaml` writes the job script
//!   the config asks for, scales to 2 workers that run as 2 SLURM jobs, sums squares on them and
//!   scales back down to no job and no worker. Dask also loads the provisioned dashboard link.
//! - The batch script, submitted with `sbatch` as the jupyter user, starts JupyterLab in a job and
//!   prints the `ssh -N -L` port-forward instructions; that JupyterLab answers on the port it
//!   names; `scancel` ends it.
//! - A port in use: with another server listening on JupyterLab's address, the agent does not
//!   start JupyterLab and says why in its status.
//!
//! Not covered: several compute nodes (the one node is login and compute node at once), a shared
//! filesystem, SLURM accounting, cgroups, and conda-forge's builds (the JupyterLab env is a venv
//! of PyPI wheels made by `.ci/run`: target/jupyter-venv; the bad-input cases are in
//! tests/bad-manifests and tests/jupyter_dask_slurm.rs's other test).
//!
//! Skipped (with `SKIP jupyter_dask_slurm: <reason>`) without root, overlayfs, the tools, or the
//! venv. Run: `cargo test --test jupyter_dask_slurm -- --nocapture` (prints the timings that
//! BENCHMARKS.md records).

mod common;

use common::netns::{Node, cmdline, run_limited, unavailable, wait};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const ADDR: &str = "10.4.0.10";
const PASSWORD: &str = "lab-Passw0rd-for-the-test";
const STEP_LIMIT: Duration = Duration::from_secs(120);
const INSTALL_LIMIT: Duration = Duration::from_secs(6 * 60);
const BRINGUP_LIMIT: Duration = Duration::from_secs(4 * 60);
const DASK_LIMIT: Duration = Duration::from_secs(8 * 60);
const SLURM: &str = "/tmp/slurm";
const CONFIG: &str = "/var/lib/jupyter/.jupyter/jupyter_server_config.json";
const TOKEN: &str = "/var/lib/jupyter/.jupyter/token";

/// The target folder: the pinned venv and the wheels `.ci/run` makes live there.
fn target() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn venv() -> PathBuf {
    target().join("jupyter-venv")
}

/// Why the test cannot run here, if it cannot.
fn gate() -> Option<String> {
    if let Some(why) = unavailable(&[
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
        "runuser",
    ]) {
        return Some(format!("{why} (.ci/run installs munge and slurm-wlm)"));
    }
    if !venv().join("bin/jupyter-lab").exists() || !target().join("jupyter-wheels").is_dir() {
        return Some(format!(
            "no JupyterLab venv at {} or no wheels beside it (.ci/run makes both)",
            venv().display()
        ));
    }
    None
}

fn manifest(venv: &Path, wheels: &Path) -> String {
    let v = venv.display();
    let w = wheels.display();
    format!(
        r#"cluster: {{name: hpc}}
nodes:
  - name: login01
    address: {ADDR}
vars:
  jupyterlab_sbatch:
    path: /usr/local/bin/jupyterlab-sbatch
    env: {v}
    login_host: login01
    partition: debug
    walltime: "00:10:00"
    cpus: 1
    memory: 1G
resources:
  - hosts: {{}}
  - user: {{name: jupyter, system: true, home: /var/lib/jupyter, comment: JupyterLab server}}
  - directory: {{path: /var/lib/jupyter, owner: jupyter, group: jupyter, mode: "0750"}}
  - directory: {{path: /var/lib/jupyter/.jupyter, owner: jupyter, group: jupyter, mode: "0700"}}
  - venv:
      path: /opt/envs/imaging
      python: python3.11
      pip:
        - packages: [ipykernel==7.4.0]
          find_links: [{w}]
          no_index: true
  - jupyter_kernel: {{name: imaging, display_name: "Imaging", env: /opt/envs/imaging}}
  - jupyter_server:
      path: {CONFIG}
      user: jupyter
      ip: {ADDR}
      port: 8888
      root_dir: /var/lib/jupyter
      password_file: jupyter-password
      token_file: {TOKEN}
  - file:
      path: /usr/local/bin/jupyterlab-sbatch
      template: jupyter/jupyterlab.sbatch.tera
      mode: "0755"
  - directory: {{path: /scratch/dask, mode: "1777"}}
  - directory: {{path: /scratch/dask/logs, mode: "1777"}}
  - dask_config:
      slurm:
        cores: 1
        memory: 1GiB
        processes: 1
        python: {v}/bin/python
        interface: lo
        queue: debug
        walltime: "00:10:00"
        local_directory: /scratch/dask
        log_directory: /scratch/dask/logs
        death_timeout: 60
        job_extra_directives: ["--comment=provisioned"]
      dashboard_link: "/proxy/{{port}}/status"
  - service:
      name: jupyterlab
      command: [{v}/bin/jupyter, lab]
      user: jupyter
      env:
        HOME: /var/lib/jupyter
        JUPYTER_TOKEN_FILE: {TOKEN}
      working_dir: /var/lib/jupyter
      readiness:
        http: {{url: "http://{ADDR}:8888/api/status", token_file: {TOKEN}}}
        interval: 250ms
      start_timeout: 3m
      after: [jupyter_server:{CONFIG}, jupyter_kernel:imaging]
"#
    )
}

/// `why`, then the end of JupyterLab's log as the agent keeps it.
fn lab_log(n: &Node, why: String) -> String {
    let text =
        std::fs::read_to_string(n.path("/var/log/provision/jupyterlab.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{why}\n--- jupyterlab.log (end)\n{}", tail.join("\n"))
}

/// Starts munged, slurmctld and slurmd in the node (they die with it), and waits until the node
/// is idle in `sinfo`.
fn start_slurm(n: &Node) {
    let conf = format!(
        "ClusterName=provision-test
SlurmctldHost=login01(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket={SLURM}/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation={SLURM}/state
SlurmdSpoolDir={SLURM}/spool
SlurmctldPidFile={SLURM}/slurmctld.pid
SlurmdPidFile={SLURM}/slurmd.pid
SlurmctldLogFile={SLURM}/slurmctld.log
SlurmdLogFile={SLURM}/slurmd.log
NodeName=login01 NodeAddr=127.0.0.1 CPUs=2 RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=login01 Default=YES MaxTime=INFINITE State=UP
"
    );
    n.write(&format!("{SLURM}/slurm.conf"), &conf, 0o644);
    n.sh(
        &format!(
            "set -e
             mkdir -p {SLURM}/state {SLURM}/spool
             dd if=/dev/urandom of={SLURM}/munge.key bs=1024 count=1 status=none
             chmod 0400 {SLURM}/munge.key
             munged -f --key-file={SLURM}/munge.key --socket={SLURM}/munge.sock \
               --pid-file={SLURM}/munged.pid --log-file={SLURM}/munged.log --seed-file={SLURM}/munge.seed \
               </dev/null >/dev/null 2>&1
             export SLURM_CONF={SLURM}/slurm.conf
             slurmctld -i </dev/null >/dev/null 2>&1
             slurmd </dev/null >/dev/null 2>&1"
        ),
        STEP_LIMIT,
    );
    let log = n.path(&format!("{SLURM}/slurmctld.log"));
    wait("the SLURM node idle", STEP_LIMIT, &log, || {
        let out = slurm(n, "sinfo -h -o %T");
        if out.trim() == "idle" {
            Ok(())
        } else {
            Err(format!("sinfo: {out}"))
        }
    });
}

/// A SLURM command in the node, as root: its stdout.
fn slurm(n: &Node, command: &str) -> String {
    let mut cmd = n.command(true, "sh");
    cmd.args(["-c", command])
        .env("SLURM_CONF", format!("{SLURM}/slurm.conf"));
    let (code, out, err) = run_limited(cmd, command, STEP_LIMIT);
    if code != 0 {
        return format!("(exit {code}) {err}");
    }
    out
}

/// Pids of processes in the node whose command line contains `text`.
fn pids_with(n: &Node, text: &str) -> Vec<u32> {
    n.inside()
        .into_iter()
        .filter(|&p| cmdline(p).contains(text))
        .collect()
}

/// The agent, as a child of this test, logging to `log`.
fn start_agent(n: &Node, m: &str, log: &Path) -> Child {
    let mut agent = n.command(true, env!("CARGO_BIN_EXE_provision"));
    agent
        .args([
            "agent",
            m,
            "--node",
            "login01",
            "--reconcile-interval",
            "1h",
        ])
        .env("PROVISION_STATUS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    agent.spawn().unwrap()
}

/// SIGTERM to the agent itself (its child here is `nsenter`, which does not pass signals on), then
/// waits for it and for JupyterLab, which it stops, to be gone.
fn stop_agent(n: &Node, mut agent: Child) {
    let bin = env!("CARGO_BIN_EXE_provision");
    let pid = n.pid_of(&format!("{bin} agent")).expect("one agent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + STEP_LIMIT;
    while agent.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + STEP_LIMIT;
    while !pids_with(n, "bin/jupyter-lab").is_empty() {
        let left: Vec<String> = pids_with(n, "bin/jupyter-lab")
            .into_iter()
            .map(|p| format!("{p}: {}", cmdline(p)))
            .collect();
        assert!(
            Instant::now() < deadline,
            "JupyterLab outlived the agent: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn jupyterlab_and_dask_on_a_real_slurm_from_one_manifest() {
    if let Some(why) = gate() {
        eprintln!("SKIP jupyter_dask_slurm: {why}");
        return;
    }
    let venv = venv();
    let py = venv.join("bin/python").display().to_string();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let n = Node::new("login01", ADDR);
    n.host_sh(&format!("ip addr add {ADDR}/32 dev lo"));
    n.write("/srv/m/jupyter-password", &format!("{PASSWORD}\n"), 0o600);
    n.write(
        "/srv/m/cluster.yaml",
        &manifest(&venv, &target().join("jupyter-wheels")),
        0o644,
    );
    let m = "/srv/m/cluster.yaml";

    // apply: the files, the hash and not the password.
    let t = Instant::now();
    let (code, out, err) = n.provision(
        true,
        &["apply", m, "--node", "login01", "--json"],
        INSTALL_LIMIT,
    );
    let apply_s = t.elapsed().as_secs_f64();
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["summary"]["failed"], 0, "{report:#}");
    let config: serde_json::Value = serde_json::from_str(&n.read(CONFIG)).unwrap();
    let hash = config["PasswordIdentityProvider"]["hashed_password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        hash.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
        "{config}"
    );
    assert_eq!(config["ServerApp"]["ip"], ADDR);
    assert_eq!(config["ServerApp"]["port"], 8888);
    assert_eq!(config["ServerApp"]["port_retries"], 0);
    assert!(!n.read(CONFIG).contains(PASSWORD));
    assert!(!out.contains(&hash[7..]), "the hash is not shown either");
    let jupyter_uid = n
        .read("/etc/passwd")
        .lines()
        .find_map(|l| l.strip_prefix("jupyter:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|uid| uid.parse::<u32>().ok())
        .expect("the jupyter user");
    for file in [CONFIG, TOKEN] {
        let meta = std::fs::metadata(n.path(file)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600, "{file}");
        assert_eq!(meta.uid(), jupyter_uid, "{file}");
    }
    let token = n.read(TOKEN);
    assert_eq!(
        token.len(),
        64,
        "32 random bytes as hex, no newline: {token:?}"
    );
    assert!(!out.contains(&token) && !err.contains(&token));
    let jobqueue = n.read("/etc/dask/jobqueue.yaml");
    assert!(jobqueue.contains("    memory: \"1GiB\"\n"), "{jobqueue}");
    let second = n.provision(
        true,
        &["apply", m, "--node", "login01", "--json"],
        STEP_LIMIT,
    );
    assert_eq!(second.0, 0, "{}{}", second.1, second.2);
    let again: serde_json::Value = serde_json::from_str(&second.1).unwrap();
    assert_eq!(again["summary"]["changed"], 0, "{again:#}");
    assert_eq!(n.read(TOKEN), token, "the token is made once");
    assert!(
        n.read(CONFIG).contains(&hash),
        "the hash that verifies is kept"
    );

    // The agent: JupyterLab ready once /api/status answers with the token.
    let log = n.tmp.path().join("agent.log");
    let started = Instant::now();
    let agent = start_agent(&n, m, &log);
    wait("jupyterlab ready", BRINGUP_LIMIT, &log, || {
        let s = n.service_status("jupyterlab").map_err(|e| lab_log(&n, e))?;
        if s["state"] == "ready" {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    });
    let ready_s = started.elapsed().as_secs_f64();
    let lab = pids_with(&n, "bin/jupyter-lab");
    assert_eq!(lab.len(), 1, "{lab:?}");
    assert_eq!(
        std::fs::metadata(format!("/proc/{}", lab[0]))
            .unwrap()
            .uid(),
        jupyter_uid,
        "JupyterLab runs as jupyter"
    );

    let mut api = n.command(true, "timeout");
    api.args(["150", &py])
        .arg(format!("{fixtures}/jupyter_api.py"))
        .args([
            &format!("http://{ADDR}:8888"),
            TOKEN,
            "/srv/m/jupyter-password",
            "imaging",
            "/var/lib/jupyter/.local/share/jupyter/runtime",
        ]);
    let (code, out, err) = run_limited(api, "the Jupyter REST API", 2 * STEP_LIMIT);
    assert_eq!(code, 0, "{out}{err}{}", lab_log(&n, String::new()));
    let seen: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(seen["anonymous"], 403, "{seen}");
    assert_eq!(seen["token"], 200, "{seen}");
    assert_eq!(seen["wrong_token"], 403, "{seen}");
    assert_eq!(seen["wrong_password"], 403, "{seen}");
    assert_eq!(seen["password"], 200, "{seen}");
    assert!(
        seen["kernelspecs"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("imaging")),
        "{seen}"
    );
    assert_eq!(seen["kernel_start"], 201, "{seen}");
    assert_eq!(seen["kernel_reply"], "ok", "{seen}");
    assert_eq!(
        seen["kernel_python"], "/opt/envs/imaging/bin/python",
        "{seen}"
    );
    assert_eq!(seen["kernel_state"], "idle", "{seen}");
    assert_eq!(seen["kernel_delete"], 204, "{seen}");
    let agent_log = std::fs::read_to_string(&log).unwrap();
    let lab_log =
        std::fs::read_to_string(n.path("/var/log/provision/jupyterlab.log")).unwrap_or_default();
    for text in [&agent_log, &lab_log] {
        assert!(!text.contains(PASSWORD) && !text.contains(&token));
    }
    assert!(lab_log.contains("Kernel started"), "{lab_log}");

    // SLURM, and a SLURMCluster() from the provisioned config alone.
    start_slurm(&n);
    let mut dask = n.command(true, &py);
    dask.arg(format!("{fixtures}/dask_slurm.py"))
        .env("SLURM_CONF", format!("{SLURM}/slurm.conf"))
        .env("HOME", "/root");
    let (code, out, err) = run_limited(dask, "the Dask cluster", DASK_LIMIT);
    assert_eq!(
        code,
        0,
        "{out}{err}\n--- slurmctld\n{}",
        std::fs::read_to_string(n.path(&format!("{SLURM}/slurmctld.log"))).unwrap_or_default()
    );
    let d: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(d["config"]["cores"], 1, "{d}");
    assert_eq!(d["config"]["memory"], "1GiB", "{d}");
    assert_eq!(d["dashboard_link"], "/proxy/{port}/status", "{d}");
    let script = d["job_script"].as_str().unwrap();
    for line in [
        "#SBATCH -p debug",
        "#SBATCH -t 00:10:00",
        "#SBATCH --comment=provisioned",
        "#SBATCH --cpus-per-task=1",
    ] {
        assert!(script.contains(line), "{line} in\n{script}");
    }
    assert!(
        script.contains(&format!("{py} -m distributed.cli.dask_worker")),
        "{script}"
    );
    let jobs: Vec<&str> = d["worker_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_str().expect("a worker in a SLURM job"))
        .collect();
    assert_eq!(jobs.len(), 2, "{d}");
    assert_ne!(jobs[0], jobs[1], "two jobs: {d}");
    assert_eq!(d["running"].as_array().unwrap().len(), 2, "{d}");
    assert_eq!(d["sum"], (0..100).map(|x| x * x).sum::<i64>(), "{d}");
    assert_eq!(d["workers_after"], 0, "{d}");
    assert_eq!(d["after"], serde_json::json!([]), "{d}");
    let first_worker_s = d["first_worker_s"].as_f64().unwrap();

    // The batch script: JupyterLab in a job, with the port-forward instructions.
    let (code, out, err) = {
        let mut cmd = n.command(true, "runuser");
        cmd.args([
            "-u",
            "jupyter",
            "--",
            "sbatch",
            "--parsable",
            "--chdir=/var/lib/jupyter",
        ])
        .arg("/usr/local/bin/jupyterlab-sbatch")
        .env("SLURM_CONF", format!("{SLURM}/slurm.conf"))
        .env("HOME", "/var/lib/jupyter")
        .env("USER", "jupyter");
        run_limited(cmd, "sbatch jupyterlab-sbatch", STEP_LIMIT)
    };
    assert_eq!(code, 0, "{out}{err}");
    let job = out.trim().to_owned();
    let job_log = format!("/var/lib/jupyter/jupyterlab-{job}.log");
    let port = wait(
        "the batch JupyterLab",
        BRINGUP_LIMIT,
        &n.path(&job_log),
        || {
            let text = std::fs::read_to_string(n.path(&job_log)).map_err(|e| e.to_string())?;
            let port = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("ssh -N -L "))
                .and_then(|rest| rest.split(':').next())
                .ok_or("no instructions yet")?
                .to_owned();
            assert!(
                text.contains(&format!("ssh -N -L {port}:login01:{port} jupyter@login01")),
                "{text}"
            );
            if text.contains("is running at") {
                Ok(port)
            } else {
                Err(text)
            }
        },
    );
    let answer = n.sh(
        &format!("{py} -c \"import urllib.request as u, urllib.error as e\ntry: u.urlopen('http://{ADDR}:{port}/api/status', timeout=20)\nexcept e.HTTPError as x: print(x.code)\""),
        STEP_LIMIT,
    );
    assert_eq!(
        answer.trim(),
        "403",
        "the job's JupyterLab answers, and wants a login"
    );
    slurm(&n, &format!("scancel {job}"));
    let log_path = n.path(&job_log);
    wait("the batch job gone", STEP_LIMIT, &log_path, || {
        let q = slurm(&n, "squeue -h -o %i");
        if q.trim().is_empty() && pids_with(&n, &format!("--port={port}")).is_empty() {
            Ok(())
        } else {
            Err(q)
        }
    });

    // A port in use: the agent does not start JupyterLab, and says why.
    stop_agent(&n, agent);
    let mut blocker = n.command(true, &py);
    blocker
        .args(["-m", "http.server", "--bind", ADDR, "8888"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut blocker = blocker.spawn().unwrap();
    wait("the blocker listening", STEP_LIMIT, &log, || {
        if n.listens(8888) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let log2 = n.tmp.path().join("agent2.log");
    let agent = start_agent(&n, m, &log2);
    let why = wait("jupyterlab refused", BRINGUP_LIMIT, &log2, || {
        let s = n.service_status("jupyterlab")?;
        let text = s.to_string();
        if text.contains("already in use") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(why.contains(&format!("{ADDR}:8888")), "{why}");
    assert!(pids_with(&n, "bin/jupyter-lab").is_empty(), "not started");
    let _ = blocker.kill();
    let _ = blocker.wait();
    stop_agent(&n, agent);

    println!(
        "jupyter_dask_slurm: apply {apply_s:.1}s (venv from wheels included); agent start to JupyterLab ready {ready_s:.1}s; SLURMCluster() to first worker connected {first_worker_s:.1}s, to two {:.1}s",
        d["two_workers_s"].as_f64().unwrap()
    );
}
