//! How far one TaskManager's sandbox scales: how long an operator
//! instance takes to start, and how many live at once under the `small`
//! policy, with the engine sized as a TaskManager sizes it (pooling
//! allocator, 8 instances per slot, pool memories sized for 4 GiB,
//! 1 MiB stacks).
//!
//! 1. Start: the wordcount chain (`split -> count`: a store, an instance
//!    from the pre-linked component, and the guest's `create` call with the
//!    chain's spec) started and dropped again and again on a warm pool;
//!    the median and p99 of each start, interleaved rounds.
//! 2. Live: `INSTANCES` chains started and all kept; each then processes a
//!    batch (so each has run and touched its memory), and ends its input
//!    (each emits its counts: proof it is live and its own). The process's
//!    resident memory before and after, and per instance.
//!
//! Usage: `scale WORDCOUNT.wasm SMALL_POLICY.toml [INSTANCES]`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use sluice_bench::{median, percentile};
use sluice_policy::Policy;
use sluice_types::{Batch, BatchBuilder};
use sluice_wasm::{GuestChain, Runtime, RuntimeOptions};

/// Starts measured per round, and rounds.
const STARTS: usize = 2000;
const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: scale WORDCOUNT.wasm SMALL_POLICY.toml [INSTANCES]";
    let wasm = std::fs::read(args.get(1).context(usage)?).context("read the component")?;
    let policy = Policy::load(Path::new(args.get(2).context(usage)?))?;
    let instances: usize = args.get(3).map_or(Ok(1000), |s| s.parse()).context(usage)?;
    if instances == 0 {
        bail!("{usage}: INSTANCES must be at least 1");
    }
    let per_slot = 8usize;
    let options = RuntimeOptions {
        // As a TaskManager with enough slots for `instances` would size it.
        slots: u32::try_from(instances.div_ceil(per_slot))?,
        instances_per_slot: per_slot as u32,
        max_memory_mib: Some(sluice_cluster::MAX_INSTANCE_MEMORY_MIB),
        stack_kib: Some(sluice_cluster::INSTANCE_STACK_KIB),
        ..RuntimeOptions::default()
    };
    let runtime = Runtime::new(policy.clone(), options).context("the engine")?;
    let app = runtime.load(&wasm).context("load the component")?;
    let start = |i: usize| -> anyhow::Result<GuestChain> {
        let what = format!("split -> count #{i}");
        Ok(sluice_bench::wordcount_chain(&app, &what, &policy.name)?)
    };

    // 1. Starts on a warm pool.
    let (mut medians, mut p99s) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut times = Vec::with_capacity(STARTS);
        for i in 0..STARTS {
            let t = Instant::now();
            let chain = start(i)?;
            times.push(t.elapsed().as_secs_f64() * 1e6);
            drop(chain);
        }
        let (m, p) = (median(&mut times), percentile(&mut times, 99.0));
        eprintln!("round {}: start median {m:.1} µs, p99 {p:.1} µs", round + 1);
        medians.push(m);
        p99s.push(p);
    }
    println!(
        "| policy | starts | start, median of round medians (µs) | p99, median of rounds (µs) |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| {} | {ROUNDS} × {STARTS} | {:.1} | {:.1} |",
        policy.name,
        median(&mut medians),
        median(&mut p99s)
    );
    println!();

    // 2. Many live at once.
    let before = rss_kib()?;
    let t = Instant::now();
    let mut live = Vec::with_capacity(instances);
    for i in 0..instances {
        live.push(start(i).with_context(|| format!("instance {} of {instances}", i + 1))?);
    }
    let started = t.elapsed().as_secs_f64();
    let batch = words();
    for chain in &mut live {
        chain.process(0, batch.clone())?;
    }
    let after = rss_kib()?;
    let mut counted = 0usize;
    for chain in &mut live {
        let out = chain.end_of_input()?;
        // "to be or not to be": four distinct words, one count each.
        if out.records.meta.len() != 4 {
            bail!(
                "an instance emitted {} counts, not 4",
                out.records.meta.len()
            );
        }
        counted += 1;
    }
    println!(
        "| policy | live instances | started in (s) | RSS before (MiB) | RSS with all live (MiB) | per instance (KiB) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {counted} | {started:.2} | {:.0} | {:.0} | {:.0} |",
        policy.name,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / counted as f64
    );
    Ok(())
}

/// One line of words as a batch of one record.
fn words() -> Batch {
    let mut b = BatchBuilder::new();
    b.push(None, b"to be or not to be", None);
    b.take()
}

/// This process's resident memory, KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}
