//! What exactly-once checkpoints cost, on a JobManager and two
//! TaskManagers (separate processes on 127.0.0.1):
//!
//! 1. throughput of the exactly-once checker job (generator → hash →
//!    keyed state → two-phase file sink, parallelism 2) without checkpoints
//!    and with a checkpoint every second, runs interleaved;
//! 2. checkpoint durations (trigger to completion) of those runs, p50/p99.
//!
//! (Recovery after a TaskManager's `kill -9`: the `failover` benchmark.)
//!
//! Usage: `checkpoint-cost EXACTLY_ONCE.wasm [RUNS]`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;
use sluice_bench::{Cluster, median, percentile};

const RECORDS: u64 = 30_000_000;
const KEYS: u64 = 1000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if sluice_bench::serve_role(&args)? {
        return Ok(());
    }
    let guest = PathBuf::from(
        args.get(1)
            .context("usage: checkpoint-cost EXACTLY_ONCE.wasm [RUNS]")?,
    );
    let runs: usize = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let out = tempfile::tempdir()?;
    let cluster = Cluster::start(2, 2)?;
    let jar = cluster.upload(&guest)?;
    let body = |interval_ms: u64, run: usize| {
        let dir = out.path().join(format!("out-{interval_ms}-{run}"));
        json!({
            "parallelism": 2,
            "checkpointInterval": interval_ms,
            "programArgsList": [
                format!("records={RECORDS}"),
                format!("keys={KEYS}"),
                format!("output={}", dir.display()),
            ],
        })
    };
    let (mut without, mut with, mut durations) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let (secs, _) = cluster.run_job(&jar, body(0, run), 2)?;
        without.push(RECORDS as f64 / secs);
        let job = cluster.submit(&jar, body(1000, run))?;
        let d = cluster.wait_finished(&job)?;
        let secs = d["duration"].as_u64().context("duration")? as f64 / 1000.0;
        with.push(RECORDS as f64 / secs);
        let c = cluster.get(&format!("/jobs/{job}/checkpoints"))?;
        let completed: Vec<f64> = c["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["status"] == "COMPLETED")
            .filter_map(|h| h["end_to_end_duration"].as_f64())
            .collect();
        eprintln!(
            "run {}: {:.0} rec/s without checkpoints, {:.0} with ({} completed: {completed:?} ms)",
            run + 1,
            without[run],
            with[run],
            c["counts"]["completed"]
        );
        durations.extend(completed);
        // Each run publishes ~0.4 GB: keep the disk for the next.
        let _ = std::fs::remove_dir_all(out.path().join(format!("out-0-{run}")));
        let _ = std::fs::remove_dir_all(out.path().join(format!("out-1000-{run}")));
    }
    let (a, b) = (median(&mut without), median(&mut with));
    println!("| records | keys | no checkpoints (rec/s) | checkpoint every 1 s (rec/s) | loss |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {RECORDS} | {KEYS} | {a:.0} | {b:.0} | {:.1} % |",
        (1.0 - b / a) * 100.0
    );
    println!();
    if durations.is_empty() {
        bail!("no checkpoint completed: the runs were shorter than the interval");
    }
    println!("| checkpoints | p50 (ms) | p99 (ms) | max (ms) |");
    println!("|---:|---:|---:|---:|");
    println!(
        "| {} | {:.0} | {:.0} | {:.0} |",
        durations.len(),
        percentile(&mut durations, 50.0),
        percentile(&mut durations, 99.0),
        percentile(&mut durations, 100.0)
    );
    Ok(())
}
