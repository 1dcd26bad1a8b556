//! How fast a job runs again after a TaskManager's `kill -9`, and whether
//! the fast failure detection that buys it holds under load. A JobManager
//! and two TaskManagers with two slots each, separate processes on
//! 127.0.0.1, run the `exactly-once` example (generator → hash by key →
//! keyed state → two-phase file sink, parallelism 2, a checkpoint every
//! second; restart strategy: fixed delay of 200 ms).
//!
//! 1. Recovery, on a fresh cluster per trial, for each peer timeout (the
//!    old fixed 6 s and today's default, interleaved): the job runs with a
//!    completed checkpoint, one TaskManager gets `kill -9`; measured until
//!    the JobManager lists one TaskManager (detection) and until every task
//!    of the job runs again, restored from the checkpoint (recovery).
//! 2. No false failovers under load: with the default peer timeout, the
//!    job runs unthrottled for a while beside busy threads (twice as many
//!    as cores, at the same priority) while the JobManager's view is
//!    polled; any restart of the job or lost TaskManager fails the run.
//!
//! Usage: `failover EXACTLY_ONCE.wasm [TRIALS] [LOAD_SECS]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sluice_bench::{Cluster, median, wait_for};

const KEYS: u64 = 1000;
/// The peer timeout before it was configurable.
const OLD_PEER_TIMEOUT: Duration = Duration::from_secs(6);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if sluice_bench::serve_role(&args)? {
        return Ok(());
    }
    let usage = "usage: failover EXACTLY_ONCE.wasm [TRIALS] [LOAD_SECS]";
    let guest = PathBuf::from(args.get(1).context(usage)?);
    let trials: usize = args.get(2).map_or(Ok(3), |s| s.parse()).context(usage)?;
    let load_secs: u64 = args.get(3).map_or(Ok(60), |s| s.parse()).context(usage)?;
    if trials == 0 {
        bail!("{usage}: TRIALS must be at least 1");
    }
    let out = tempfile::tempdir()?;
    let timeouts = [OLD_PEER_TIMEOUT, sluice_transport::DEFAULT_PEER_TIMEOUT];
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); timeouts.len()];
    for trial in 0..trials {
        for (i, &timeout) in timeouts.iter().enumerate() {
            let output = out.path().join(format!("recovery-{trial}-{i}"));
            let (detected, running) = recovery(&guest, timeout, &output)?;
            eprintln!(
                "peer timeout {timeout:?}, trial {}: lost after {detected:.2} s, running after {running:.2} s",
                trial + 1
            );
            results[i].0.push(detected);
            results[i].1.push(running);
            let _ = std::fs::remove_dir_all(&output);
        }
    }
    println!(
        "| peer timeout | trials | detected, median (s) | running again, median (s) | min (s) | max (s) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for (timeout, (detected, running)) in timeouts.iter().zip(&mut results) {
        let m = median(detected);
        let r = median(running);
        println!(
            "| {:.1} s | {} | {m:.2} | {r:.2} | {:.2} | {:.2} |",
            timeout.as_secs_f64(),
            running.len(),
            running[0],
            running[running.len() - 1]
        );
    }
    println!();
    let load = under_load(&guest, load_secs, &out.path().join("load"))?;
    println!(
        "| under load | seconds | busy threads | records | checkpoints completed | restarts | TaskManagers lost |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| peer timeout {:.1} s | {} | {} | {} | {} | {} | {} |",
        sluice_transport::DEFAULT_PEER_TIMEOUT.as_secs_f64(),
        load_secs,
        load.burners,
        load.records,
        load.checkpoints,
        load.restarts,
        load.lost
    );
    if load.restarts > 0 || load.lost > 0 {
        bail!("false failover under load: {load:?}");
    }
    Ok(())
}

/// The endless checker job, throttled to `rate` records/s (0: unthrottled).
fn submit_checker(
    cluster: &Cluster,
    jar: &str,
    rate: u64,
    output: &Path,
) -> anyhow::Result<String> {
    cluster.submit(
        jar,
        json!({
            "parallelism": 2,
            "checkpointInterval": 1000,
            "programArgsList": [
                "records=100000000000", format!("keys={KEYS}"), format!("rate={rate}"),
                format!("output={}", output.display()),
            ],
        }),
    )
}

/// Every task of the job (two chains on each of two TaskManagers) runs,
/// in run `attempt` or later.
fn all_running(d: &Value, attempt: u64) -> bool {
    d["state"] == "RUNNING"
        && d["attempt"].as_u64() >= Some(attempt)
        && d["status-counts"]["RUNNING"].as_u64() == Some(4)
}

fn taskmanagers(cluster: &Cluster) -> Option<usize> {
    Some(
        cluster.get("/taskmanagers").ok()?["taskmanagers"]
            .as_array()?
            .len(),
    )
}

/// Seconds from killing a TaskManager until the JobManager lists it no
/// more, and until every task of the job runs again, restored from a
/// checkpoint.
fn recovery(guest: &Path, peer_timeout: Duration, output: &Path) -> anyhow::Result<(f64, f64)> {
    let mut cluster = Cluster::start_with(2, 2, peer_timeout)?;
    let jar = cluster.upload(guest)?;
    let job = submit_checker(&cluster, &jar, 200_000, output)?;
    wait_for("a completed checkpoint", || {
        let d = cluster.get(&format!("/jobs/{job}")).ok()?;
        let c = cluster.get(&format!("/jobs/{job}/checkpoints")).ok()?;
        (all_running(&d, 0) && c["counts"]["completed"].as_u64()? >= 1).then_some(())
    })?;
    // procs[0] is the JobManager; both TaskManagers run tasks of the job.
    let victim = &mut cluster.procs[1].0;
    let killed = Instant::now();
    victim.kill()?;
    victim.wait()?;
    wait_for("the JobManager to drop the TaskManager", || {
        (taskmanagers(&cluster)? == 1).then_some(())
    })?;
    let detected = killed.elapsed().as_secs_f64();
    wait_for("the job to run again", || {
        let d = cluster.get(&format!("/jobs/{job}")).ok()?;
        // One TaskManager left with two slots: both chains of each subtask
        // run there.
        all_running(&d, 1).then_some(())
    })?;
    let running = killed.elapsed().as_secs_f64();
    let c = cluster.get(&format!("/jobs/{job}/checkpoints"))?;
    if c["latest"]["restored"].is_null() {
        bail!("the job restarted without restoring a checkpoint: {c}");
    }
    // Dropping the cluster stops its processes, the endless job with them.
    Ok((detected, running))
}

#[derive(Debug)]
struct Load {
    burners: usize,
    records: u64,
    checkpoints: u64,
    restarts: u64,
    lost: usize,
}

/// Runs the checker job unthrottled for `secs` beside busy threads and
/// counts what went wrong.
fn under_load(guest: &Path, secs: u64, output: &Path) -> anyhow::Result<Load> {
    let cluster = Cluster::start(2, 2)?;
    let jar = cluster.upload(guest)?;
    let job = submit_checker(&cluster, &jar, 0, output)?;
    wait_for("the job to run", || {
        let d = cluster.get(&format!("/jobs/{job}")).ok()?;
        all_running(&d, 0).then_some(())
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let burners = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads: Vec<_> = (0..burners)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let (start, mut lost, mut restarts) = (Instant::now(), 0, 0);
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(secs) {
        // A REST call starved past its timeout is the load's doing, not a
        // failover: only answers count.
        if let Some(n) = taskmanagers(&cluster) {
            lost = lost.max(2usize.saturating_sub(n));
        }
        if let Ok(d) = cluster.get(&format!("/jobs/{job}")) {
            restarts = restarts.max(d["attempt"].as_u64().unwrap_or(0));
            if d["state"] != "RUNNING" {
                last = d;
                break;
            }
            last = d;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if last["state"] != "RUNNING" {
        bail!("the job stopped running under load: {last}");
    }
    let c = cluster.get(&format!("/jobs/{job}/checkpoints"))?;
    let records = last["vertices"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"].as_str().is_some_and(|n| n.contains("generate")))
        .and_then(|v| v["metrics"]["write-records"].as_u64())
        .unwrap_or(0);
    Ok(Load {
        burners,
        records,
        checkpoints: c["counts"]["completed"].as_u64().unwrap_or(0),
        restarts,
        lost,
    })
}
