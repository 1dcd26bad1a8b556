//! Records/s of a shuffle between two TaskManagers over QUIC, against raw
//! quinn throughput measured in the same run.
//!
//! Sluice side: a JobManager and two TaskManagers (one slot each) as
//! separate processes on 127.0.0.1 (this binary re-executed in those
//! roles), running the shuffle guest at parallelism 2: two generators
//! spread `records` round-robin over two discarding sinks, so exactly half
//! the records cross between the TaskManagers, both ways, through the real
//! data plane (task thread → bounded channel → bridge → data frame →
//! QUIC stream with mutual TLS → bridge → channel → task).
//!
//! Raw quinn side: two endpoints with the same TLS and transport settings
//! exchange, in both directions at once, the same number of records as
//! the Sluice job moves between its TaskManagers, as ready-made frames of
//! the same bytes the TaskManagers send (1024 records per frame). No
//! generation, routing, encoding or decoding: the ceiling for the link.
//!
//! Usage: `quic-shuffle GUEST.wasm [RUNS]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::json;
use sluice_bench::Cluster;
use sluice_transport::DEFAULT_PEER_TIMEOUT;
use sluice_types::{BatchBuilder, Event};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if sluice_bench::serve_role(&args)? {
        return Ok(());
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
        "| value bytes | records | 2 TMs: job rec/s | 2 TMs: rec/s crossing over QUIC | 1 TM (no QUIC): job rec/s | raw quinn rec/s | crossing ÷ raw quinn | ceiling of that ratio on these cores |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    // Tiny records (the index alone, ~7 bytes) stress per-record costs;
    // 100-byte values are a typical event size.
    for (value_bytes, records) in [(0usize, 40_000_000u64), (100, 10_000_000)] {
        let crossing = records / 2;
        let (mut sluice, mut local, mut raw) = (Vec::new(), Vec::new(), Vec::new());
        let (mut ratio, mut ceiling) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let secs = run_shuffle(&cluster, &jar, records, value_bytes, 2)?;
            let s = crossing as f64 / secs;
            let secs = run_shuffle(&single, &single_jar, records, value_bytes, 1)?;
            let l = records as f64 / secs;
            let secs = io.block_on(raw_quinn(crossing, value_bytes))?;
            let r = crossing as f64 / secs;
            // Each run's three measurements are taken back to back, so
            // ratios are formed per run and their median reported.
            ratio.push(s / r);
            // The best the 2-TM job could do on the same cores if moving a
            // record cost exactly what raw quinn spends and the job's own
            // work (two records made and consumed per crossing one) what
            // the 1-TM run spends: crossing ≤ 1 / (2/l + 1/r).
            ceiling.push(1.0 / (2.0 * r / l + 1.0));
            eprintln!(
                "{value_bytes} B run {}: 2 TMs {s:.0} rec/s crossing, 1 TM job {l:.0} rec/s, raw quinn {r:.0} rec/s, ratio {:.2}, ceiling {:.2}",
                run + 1,
                ratio[run],
                ceiling[run]
            );
            sluice.push(s);
            local.push(l);
            raw.push(r);
        }
        let (s, l, r) = (
            sluice_bench::median(&mut sluice),
            sluice_bench::median(&mut local),
            sluice_bench::median(&mut raw),
        );
        println!(
            "| {value_bytes} | {records} | {:.0} | {s:.0} | {l:.0} | {r:.0} | {:.2} | {:.2} |",
            2.0 * s,
            sluice_bench::median(&mut ratio),
            sluice_bench::median(&mut ceiling)
        );
    }
    Ok(())
}

/// Runs the shuffle job; its duration, after checking every record arrived.
fn run_shuffle(
    cluster: &Cluster,
    jar: &str,
    records: u64,
    value_bytes: usize,
    tms: usize,
) -> anyhow::Result<f64> {
    let body = json!({
        "parallelism": 2,
        "programArgsList": [format!("records={records}"), format!("value-bytes={value_bytes}")],
    });
    let (secs, d) = cluster.run_job(jar, body, tms)?;
    let sink_in = d["vertices"][1]["metrics"]["read-records"].as_u64();
    if sink_in != Some(records) {
        bail!("the sinks received {sink_in:?} records, not {records}");
    }
    Ok(secs)
}

/// A frame of records as the datagen connector makes them (the index in
/// decimal, padded with `.` to `value_bytes`), encoded as TaskManagers put
/// it on the wire.
fn frame_of_records(first: u64, n: usize, value_bytes: usize) -> anyhow::Result<bytes::Bytes> {
    let mut b = BatchBuilder::new();
    for i in 0..n as u64 {
        let mut v = (first + i).to_string();
        while v.len() < value_bytes {
            v.push('.');
        }
        b.push(None, v.as_bytes(), None);
    }
    let (head, data) = sluice_cluster::dataplane::encode(Event::Records(b.take()))?;
    let mut frame = head.to_vec();
    frame.extend_from_slice(data.as_deref().unwrap_or_default());
    Ok(frame.into())
}

/// Moves `records` records over QUIC, half each way, as 1024-record frames;
/// the seconds it took.
async fn raw_quinn(records: u64, value_bytes: usize) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let ca = sluice_transport::ClusterCa::load_or_create(dir.path())?;
    let (a, b) = (ca.issue("a")?, ca.issue("b")?);
    let local = "127.0.0.1:0".parse()?;
    let server = sluice_transport::bind(
        local,
        Some(sluice_transport::server_config(
            &b,
            false,
            DEFAULT_PEER_TIMEOUT,
        )?),
    )?;
    let mut client = sluice_transport::bind(
        local,
        Some(sluice_transport::server_config(
            &a,
            false,
            DEFAULT_PEER_TIMEOUT,
        )?),
    )?;
    client.set_default_client_config(sluice_transport::client_config(&a, DEFAULT_PEER_TIMEOUT)?);
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
    let frame = frame_of_records(records, 1024, value_bytes)?;
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
