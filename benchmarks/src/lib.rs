//! What the cluster benchmarks share: a JobManager and TaskManagers as
//! separate processes on 127.0.0.1 (the benchmark binary re-executed in
//! those roles, running the real cluster code), and a REST client for them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The wordcount chain (`split -> count`) of a component, as subtask 0 of
/// 1, labelled `what` under `policy`.
pub fn wordcount_chain(
    app: &sluice_wasm::App,
    what: &str,
    policy: &str,
) -> Result<sluice_wasm::GuestChain, sluice_wasm::TaskError> {
    let spec = sluice_wasm::ChainSpec {
        operators: vec![
            ("split".into(), "split".into(), vec![]),
            ("count".into(), "count".into(), vec![]),
        ],
        subtask: 0,
        parallelism: 1,
        max_parallelism: 128,
        restore: vec![],
    };
    let label = sluice_wasm::TaskLabel {
        what: what.into(),
        subtask: Some((0, 1)),
        policy: policy.into(),
    };
    app.chain(label, spec, &sluice_wasm::CallControl::default())
}

/// The median (sorts `v`).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `p`-th percentile (0..=100) of `v` (sorts it).
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

/// Runs this process as a JobManager or TaskManager when `args` say so
/// (`--jobmanager DIR PEER_TIMEOUT_MS`, `--taskmanager RPC TOKEN DIR SLOTS
/// PEER_TIMEOUT_MS`); false otherwise.
pub fn serve_role(args: &[String]) -> anyhow::Result<bool> {
    let ms = |i: usize| -> anyhow::Result<Duration> { Ok(Duration::from_millis(args[i].parse()?)) };
    match args.get(1).map(String::as_str) {
        Some("--jobmanager") => role_jobmanager(Path::new(&args[2]), ms(3)?).map(|()| true),
        Some("--taskmanager") => {
            let slots = args[5].parse()?;
            role_taskmanager(&args[2], &args[3], Path::new(&args[4]), slots, ms(6)?).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running cluster.
pub struct Cluster {
    _dir: tempfile::TempDir,
    /// The JobManager, then the TaskManagers.
    pub procs: Vec<Proc>,
    rest: String,
    http: reqwest::blocking::Client,
}

/// Polls `f` until it returns `Some` (two minutes at most).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Cluster {
    /// A JobManager and `tms` TaskManagers with `slots` slots each.
    pub fn start(tms: usize, slots: u32) -> anyhow::Result<Cluster> {
        Cluster::start_with(tms, slots, sluice_transport::DEFAULT_PEER_TIMEOUT)
    }

    /// [`Cluster::start`] with every process's peer timeout set.
    pub fn start_with(tms: usize, slots: u32, peer_timeout: Duration) -> anyhow::Result<Cluster> {
        let peer_ms = peer_timeout.as_millis().to_string();
        let dir = tempfile::tempdir()?;
        let me = std::env::current_exe()?;
        let spawn = |args: &[&str]| -> anyhow::Result<Proc> {
            Ok(Proc(
                Command::new(&me).args(args).stdin(Stdio::null()).spawn()?,
            ))
        };
        let jm_dir = dir.path().join("jm");
        let mut procs = vec![spawn(&[
            "--jobmanager",
            &jm_dir.display().to_string(),
            &peer_ms,
        ])?];
        let endpoints = jm_dir.join("endpoints.json");
        let e: Value = wait_for("the JobManager", || {
            serde_json::from_slice(&std::fs::read(&endpoints).ok()?).ok()
        })?;
        let (rpc, token) = (
            e["rpc"].as_str().context("rpc")?.to_owned(),
            e["token"].as_str().context("token")?.to_owned(),
        );
        for n in 0..tms {
            let tm_dir = dir.path().join(format!("tm{n}")).display().to_string();
            let slots = slots.to_string();
            procs.push(spawn(&[
                "--taskmanager",
                &rpc,
                &token,
                &tm_dir,
                &slots,
                &peer_ms,
            ])?);
        }
        let cluster = Cluster {
            _dir: dir,
            procs,
            rest: format!("http://{}", e["rest"].as_str().context("rest")?),
            http: reqwest::blocking::Client::new(),
        };
        wait_for("the TaskManagers", || {
            let v: Value = cluster.get("/taskmanagers").ok()?;
            (v["taskmanagers"].as_array()?.len() == tms).then_some(())
        })?;
        Ok(cluster)
    }

    /// GET a REST path.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.rest))
            .send()?
            .json()?)
    }

    /// Uploads a component; its id.
    pub fn upload(&self, wasm: &Path) -> anyhow::Result<String> {
        let part = reqwest::blocking::multipart::Part::bytes(std::fs::read(wasm)?)
            .file_name("shuffle.wasm");
        let v: Value = self
            .http
            .post(format!("{}/jars/upload", self.rest))
            .multipart(reqwest::blocking::multipart::Form::new().part("jarfile", part))
            .send()?
            .json()?;
        let file = v["filename"]
            .as_str()
            .with_context(|| format!("upload: {v}"))?;
        Ok(file.rsplit('/').next().unwrap_or(file).to_owned())
    }

    /// Starts a job; its id.
    pub fn submit(&self, jar: &str, body: Value) -> anyhow::Result<String> {
        let v: Value = self
            .http
            .post(format!("{}/jars/{jar}/run", self.rest))
            .json(&body)
            .send()?
            .json()?;
        Ok(v["jobid"]
            .as_str()
            .with_context(|| format!("run: {v}"))?
            .to_owned())
    }

    /// Waits for a job to end; its detail, after checking it finished.
    pub fn wait_finished(&self, job: &str) -> anyhow::Result<Value> {
        let d = wait_for("the job to end", || {
            let d = self.get(&format!("/jobs/{job}")).ok()?;
            matches!(d["state"].as_str()?, "FINISHED" | "FAILED" | "CANCELED").then_some(d)
        })?;
        if d["state"] != "FINISHED" {
            bail!("the job ended {}: {d}", d["state"]);
        }
        Ok(d)
    }

    /// Runs a job to its end on `tms` TaskManagers; its duration in seconds
    /// as the JobManager saw it, and its detail.
    pub fn run_job(&self, jar: &str, body: Value, tms: usize) -> anyhow::Result<(f64, Value)> {
        let job = self.submit(jar, body)?;
        let d = self.wait_finished(&job)?;
        if d["taskmanagers"].as_array().map(Vec::len) != Some(tms) {
            bail!("the job did not run on {tms} TaskManager(s): {d}");
        }
        let ms = d["duration"].as_u64().context("duration")?;
        Ok((ms as f64 / 1000.0, d))
    }
}

/// Runs this process as a JobManager with its data in `dir`.
pub fn role_jobmanager(dir: &Path, peer_timeout: Duration) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = sluice_cluster::JobManagerConfig {
        rest_addr: "127.0.0.1:0".parse()?,
        rpc_addr: "127.0.0.1:0".parse()?,
        data_dir: dir.to_owned(),
        // A private cluster on 127.0.0.1 for one measurement.
        tenancy: sluice_cluster::TenancyConfig {
            auth: sluice_cluster::AuthMode::None,
            tenants_dir: dir.join("tenants"),
            policies_dir: dir.join("policies"),
        },
        slot_timeout: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(10),
        peer_timeout,
        restart: sluice_coord::RestartStrategy::FixedDelay {
            attempts: 3,
            delay_ms: 200,
        },
        base_dir: None,
        checkpoint_storage: format!("file://{}", dir.join("checkpoints").display()),
        checkpoint_interval: None,
        checkpoint_defaults: sluice_coord::CheckpointConfig::default(),
        jobstore_max_capacity: 1000,
        jobstore_expiration: Duration::from_secs(3600),
        join_token_ttl: None,
        // The benchmarks' own components: compiled in-process.
        compiler: sluice_wasm::Compiler::InProcess,
    };
    let file = dir.join("endpoints.json");
    runtime()?.block_on(sluice_cluster::server::run(config, |e| {
        let tmp = file.with_extension("tmp");
        if let Ok(json) = serde_json::to_vec(e)
            && std::fs::write(&tmp, json).is_ok()
        {
            let _ = std::fs::rename(&tmp, &file);
        }
    }))
}

/// Runs this process as a TaskManager.
pub fn role_taskmanager(
    rpc: &str,
    token: &str,
    dir: &Path,
    slots: u32,
    peer_timeout: Duration,
) -> anyhow::Result<()> {
    let config = sluice_cluster::TaskManagerConfig {
        jobmanager: rpc.to_owned(),
        slots,
        rpc_addr: "127.0.0.1:0".parse()?,
        data_dir: dir.to_owned(),
        token: Some(token.parse()?),
        base_dir: None,
        metrics_addrs: Vec::new(),
        cores: None,
        compiler: sluice_wasm::Compiler::InProcess,
        peer_timeout,
    };
    runtime()?.block_on(sluice_cluster::taskmanager::run(config, |_| {}))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
