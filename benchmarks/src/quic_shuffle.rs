//! Records/s of a shuffle between two TaskManagers over QUIC, against raw
//! quinn throughput measured in the same run.
//!
//! Sluice side: a JobManager and two TaskManagers (one slot each) as
//! separate processes on 127.0.0.1 (this binary re-executed in those
//! roles), running the shuffle guest at parallelism 2: two generators
//! spread `records` round-robin over two discarding sinks, so exactly half
//! the records cross between the TaskManagers, both ways, through the real
//! data plane (task thread → bounded channel → bridge → postcard frame →
//! QUIC stream with mutual TLS → bridge → channel → task).
//!
//! Raw quinn side: two endpoints with the same TLS and transport settings
//! exchange, in both directions at once, the same number of records as
//! the Sluice job moves between its TaskManagers, as ready-made frames of
//! the same bytes the TaskManagers send (1024 records per frame). No
//! generation, routing, encoding or decoding: the ceiling for the link.
//!
//! Usage: `quic-shuffle GUEST.wasm [RUNS]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_types::{BatchBuilder, Event};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--jobmanager") => return role_jobmanager(Path::new(&args[2])),
        Some("--taskmanager") => {
            let slots = args[5].parse()?;
            return role_taskmanager(&args[2], &args[3], Path::new(&args[4]), slots);
        }
        _ => {}
    }
    let guest = PathBuf::from(
        args.get(1)
            .context("usage: quic-shuffle GUEST.wasm [RUNS]")?,
    );
    let runs: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let cluster = Cluster::start(2, 1)?;
    let jar = cluster.upload(&guest)?;
    // The same job with both subtasks on one TaskManager: no QUIC at all,
    // so the difference shows what the network path costs.
    let single = Cluster::start(1, 2)?;
    let single_jar = single.upload(&guest)?;
    let io = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "| value bytes | records | 2 TMs: job rec/s | 2 TMs: rec/s crossing over QUIC | 1 TM (no QUIC): job rec/s | raw quinn rec/s | crossing ÷ raw quinn |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    // Tiny records (the index alone, ~7 bytes) stress per-record costs;
    // 100-byte values are a typical event size.
    for (value_bytes, records) in [(0usize, 20_000_000u64), (100, 5_000_000)] {
        let crossing = records / 2;
        let (mut sluice, mut local, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let secs = cluster.run_job(&jar, records, value_bytes, 2)?;
            sluice.push(crossing as f64 / secs);
            let secs = single.run_job(&single_jar, records, value_bytes, 1)?;
            local.push(records as f64 / secs);
            let secs = io.block_on(raw_quinn(crossing, value_bytes))?;
            raw.push(crossing as f64 / secs);
            eprintln!(
                "{value_bytes} B run {}: 2 TMs {:.0} rec/s crossing, 1 TM job {:.0} rec/s, raw quinn {:.0} rec/s",
                run + 1,
                sluice[run],
                local[run],
                raw[run]
            );
        }
        let (s, l, r) = (median(&mut sluice), median(&mut local), median(&mut raw));
        println!(
            "| {value_bytes} | {records} | {:.0} | {s:.0} | {l:.0} | {r:.0} | {:.2} |",
            2.0 * s,
            s / r
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Records as the datagen connector makes them: the index in decimal,
/// padded with `.` to `value_bytes`.
fn frame_of_records(first: u64, n: usize, value_bytes: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = BatchBuilder::new();
    for i in 0..n as u64 {
        let mut v = (first + i).to_string();
        while v.len() < value_bytes {
            v.push('.');
        }
        b.push(None, v.as_bytes(), None);
    }
    Ok(sluice_transport::frame::encode(&Event::Records(b.take()))?)
}

/// Moves `records` records over QUIC, half each way, as 1024-record frames;
/// the seconds it took.
async fn raw_quinn(records: u64, value_bytes: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let ca = sluice_transport::ClusterCa::load_or_create(dir.path())?;
    let (a, b) = (ca.issue("a")?, ca.issue("b")?);
    let local = "127.0.0.1:0".parse()?;
    let server = sluice_transport::bind(local, Some(sluice_transport::server_config(&b, false)?))?;
    let mut client =
        sluice_transport::bind(local, Some(sluice_transport::server_config(&a, false)?))?;
    client.set_default_client_config(sluice_transport::client_config(&a)?);
    let addr = server.local_addr()?;
    let accept = tokio::spawn(async move {
        let conn = server.accept().await.context("no connection")?.await?;
        anyhow::Ok((server, conn))
    });
    let conn_a = client
        .connect(addr, sluice_transport::server_name())?
        .await?;
    let (_server, conn_b) = accept.await??;
    // A frame of 1024 records with indices of the job's typical width.
    let frame = bytes::Bytes::from(frame_of_records(records, 1024, value_bytes)?);
    let frames = records.div_ceil(2 * 1024);
    let start = Instant::now();
    let (ab, ba, got_b, got_a) = tokio::join!(
        send_frames(conn_a.clone(), frame.clone(), frames),
        send_frames(conn_b.clone(), frame.clone(), frames),
        receive(conn_b.clone()),
        receive(conn_a.clone()),
    );
    let secs = start.elapsed().as_secs_f64();
    ab?;
    ba?;
    let expected = frames * frame.len() as u64;
    if got_a? != expected || got_b? != expected {
        bail!("raw quinn lost bytes");
    }
    conn_a.close(0u32.into(), b"done");
    Ok(secs)
}

async fn send_frames(conn: quinn::Connection, frame: bytes::Bytes, n: u64) -> anyhow::Result<()> {
    let mut send = conn.open_uni().await?;
    for _ in 0..n {
        send.write_chunk(frame.clone()).await?;
    }
    send.finish()?;
    send.stopped().await?;
    Ok(())
}

async fn receive(conn: quinn::Connection) -> anyhow::Result<u64> {
    let mut recv = conn.accept_uni().await?;
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
    }
    Ok(total)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Cluster {
    _dir: tempfile::TempDir,
    _procs: Vec<Proc>,
    rest: String,
    http: reqwest::blocking::Client,
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
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
    fn start(tms: usize, slots: u32) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let me = std::env::current_exe()?;
        let spawn = |args: &[&str]| -> anyhow::Result<Proc> {
            Ok(Proc(
                Command::new(&me).args(args).stdin(Stdio::null()).spawn()?,
            ))
        };
        let jm_dir = dir.path().join("jm");
        let mut procs = vec![spawn(&["--jobmanager", &jm_dir.display().to_string()])?];
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
            procs.push(spawn(&["--taskmanager", &rpc, &token, &tm_dir, &slots])?);
        }
        let cluster = Cluster {
            _dir: dir,
            _procs: procs,
            rest: format!("http://{}", e["rest"].as_str().context("rest")?),
            http: reqwest::blocking::Client::new(),
        };
        wait_for("the TaskManagers", || {
            let v: Value = cluster.get("/taskmanagers").ok()?;
            (v["taskmanagers"].as_array()?.len() == tms).then_some(())
        })?;
        Ok(cluster)
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.rest))
            .send()?
            .json()?)
    }

    fn upload(&self, wasm: &Path) -> anyhow::Result<String> {
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

    /// Runs the shuffle job; its duration in seconds as the JobManager saw it.
    fn run_job(
        &self,
        jar: &str,
        records: u64,
        value_bytes: usize,
        tms: usize,
    ) -> anyhow::Result<f64> {
        let v: Value = self
            .http
            .post(format!("{}/jars/{jar}/run", self.rest))
            .json(&json!({"parallelism": 2, "programArgsList": [format!("records={records}"), format!("value-bytes={value_bytes}")]}))
            .send()?
            .json()?;
        let job = v["jobid"]
            .as_str()
            .with_context(|| format!("run: {v}"))?
            .to_owned();
        let d = wait_for("the job to end", || {
            let d = self.get(&format!("/jobs/{job}")).ok()?;
            matches!(d["state"].as_str()?, "FINISHED" | "FAILED" | "CANCELED").then_some(d)
        })?;
        if d["state"] != "FINISHED" {
            bail!("the shuffle job ended {}: {d}", d["state"]);
        }
        if d["taskmanagers"].as_array().map(Vec::len) != Some(tms) {
            bail!("the job did not run on {tms} TaskManager(s): {d}");
        }
        let sink_in = d["vertices"][1]["metrics"]["read-records"].as_u64();
        if sink_in != Some(records) {
            bail!("the sinks received {sink_in:?} records, not {records}");
        }
        let ms = d["duration"].as_u64().context("duration")?;
        Ok(ms as f64 / 1000.0)
    }
}

fn role_jobmanager(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let config = sluice_cluster::JobManagerConfig {
        rest_addr: "127.0.0.1:0".parse()?,
        rpc_addr: "127.0.0.1:0".parse()?,
        data_dir: dir.to_owned(),
        policy: sluice_policy::Policy::standard(),
        slot_timeout: Duration::from_secs(60),
        heartbeat_timeout: Duration::from_secs(10),
        restart: sluice_coord::RestartStrategy::None,
        base_dir: None,
        checkpoint_storage: format!("file://{}", dir.join("checkpoints").display()),
        checkpoint_interval: None,
        checkpoint_defaults: sluice_coord::CheckpointConfig::default(),
    };
    let file = dir.join("endpoints.json");
    runtime()?.block_on(sluice_cluster::jobmanager::run(config, |e| {
        let tmp = file.with_extension("tmp");
        if let Ok(json) = serde_json::to_vec(e)
            && std::fs::write(&tmp, json).is_ok()
        {
            let _ = std::fs::rename(&tmp, &file);
        }
    }))
}

fn role_taskmanager(rpc: &str, token: &str, dir: &Path, slots: u32) -> anyhow::Result<()> {
    let config = sluice_cluster::TaskManagerConfig {
        jobmanager: rpc.to_owned(),
        slots,
        rpc_addr: "127.0.0.1:0".parse()?,
        data_dir: dir.to_owned(),
        token: Some(token.parse()?),
        base_dir: None,
        metrics_addrs: Vec::new(),
    };
    runtime()?.block_on(sluice_cluster::taskmanager::run(config, |_| {}))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
