//! Records/s of wordcount's operators (`split` → `count`, chained in one
//! call) compiled natively into the host versus run as the wasm component,
//! at several batch sizes and with the sandbox's limits off and on.
//!
//! Both sides run the same source: the native side drives the application
//! through the SDK's in-process harness, the wasm side through wasmtime.
//! Every configuration is measured `--runs` times, interleaved with the
//! native baseline, and the median is reported as a ratio to native.

use std::time::Instant;

use sluice_policy::Policy;
use sluice_sdk::bindings::sluice::app::types::Batch as WitBatch;
use sluice_sdk::testing::Harness;
use sluice_types::{Batch, BatchBuilder};
use sluice_wasm::{Runtime, RuntimeOptions};
use wordcount::WordCount;

const LINES: usize = 200_000;

fn text_lines() -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..LINES)
        .map(|_| {
            let words = 4 + next() % 12;
            let mut line = Vec::new();
            for _ in 0..words {
                // A skewed vocabulary of 5000 words, mixed case and punctuation.
                let r = next();
                let w = (r % 64) * (r >> 20) % 5000;
                line.extend_from_slice(format!("Word{w}").as_bytes());
                line.extend_from_slice(if r & 0x100 == 0 { b" " } else { b", " });
            }
            line
        })
        .collect()
}

fn batches(lines: &[Vec<u8>], size: usize) -> Vec<Batch> {
    lines
        .chunks(size)
        .map(|chunk| {
            let mut b = BatchBuilder::new();
            for l in chunk {
                b.push(None, l, None);
            }
            b.take()
        })
        .collect()
}

fn to_wit(b: &Batch) -> WitBatch {
    WitBatch {
        data: b.data.clone(),
        meta: sluice_types::RecordMeta::pack(&b.meta),
    }
}

/// Seconds to push every batch through the chain natively, then end the input.
fn native(batches: &[Batch]) -> f64 {
    let mut h = Harness::new::<WordCount>(&["split", "count"]).expect("native chain");
    let start = Instant::now();
    for b in batches {
        h.process_batch(0, &to_wit(b)).expect("native process");
    }
    let out = h.end_of_input().expect("native end");
    let secs = start.elapsed().as_secs_f64();
    assert!(!out.is_empty());
    secs
}

fn wordcount_chain(app: &sluice_wasm::App) -> sluice_wasm::GuestChain {
    sluice_bench::wordcount_chain(app, "split -> count", "bench").expect("chain")
}

/// The same through wasmtime under `policy`.
fn wasm(runtime: &Runtime, wasm: &[u8], batches: &[Batch]) -> f64 {
    let app = runtime.load(wasm).expect("load");
    let mut chain = wordcount_chain(&app);
    let start = Instant::now();
    for b in batches {
        chain.process(0, b.clone()).expect("wasm process");
    }
    let out = chain.end_of_input().expect("wasm end");
    let secs = start.elapsed().as_secs_f64();
    assert!(!out.records.is_empty());
    secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: native-vs-wasm WORDCOUNT.wasm [--runs N] [--go GO-WORDCOUNT.wasm]");
    let (mut runs, mut go) = (5usize, None);
    while let Some(flag) = args.next() {
        let value = args.next().expect("a flag's value");
        match flag.as_str() {
            "--runs" => runs = value.parse().expect("--runs N"),
            "--go" => go = Some(value),
            other => panic!("unknown flag {other}: use --runs N, --go GO-WORDCOUNT.wasm"),
        }
    }
    let component = std::fs::read(&path).expect("read the wordcount component");
    let lines = text_lines();
    let modes: [(&str, Option<u64>, Option<u64>); 4] = [
        ("off", None, None),
        ("fuel", Some(u64::MAX / 2), None),
        ("epoch", None, Some(60_000)),
        ("fuel+epoch", Some(u64::MAX / 2), Some(60_000)),
    ];
    let runtimes: Vec<Runtime> = modes
        .iter()
        .map(|(_, fuel, ms)| {
            let mut p = Policy::standard();
            p.limits.fuel_per_call = *fuel;
            p.limits.max_call_ms = *ms;
            Runtime::new(p, RuntimeOptions::default()).expect("runtime")
        })
        .collect();
    println!(
        "| records/call | native rec/s | {} |",
        modes
            .map(|m| format!("wasm {} rec/s (ratio)", m.0))
            .join(" | ")
    );
    println!("|---:|---:|{}", "---:|".repeat(modes.len()));
    for size in [1usize, 16, 64, 256, 1024] {
        let bs = batches(&lines, size);
        let mut native_t = Vec::new();
        let mut wasm_t: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        for _ in 0..runs {
            native_t.push(native(&bs));
            for (i, rt) in runtimes.iter().enumerate() {
                wasm_t[i].push(wasm(rt, &component, &bs));
            }
        }
        let n = LINES as f64 / median(native_t);
        let cells: Vec<String> = wasm_t
            .into_iter()
            .map(|t| {
                let w = LINES as f64 / median(t);
                format!("{:.0} ({:.2})", w, w / n)
            })
            .collect();
        println!("| {size} | {n:.0} | {} |", cells.join(" | "));
    }
    if let Some(go) = go {
        let go = std::fs::read(&go).expect("read the Go wordcount component");
        go_vs_rust(&component, &go, &lines, runs);
    }
}

/// The Go wordcount beside the Rust one and native, under the standard
/// policy; then each component's size and instantiation time.
fn go_vs_rust(rust: &[u8], go: &[u8], lines: &[Vec<u8>], runs: usize) {
    let standard = Runtime::new(Policy::standard(), RuntimeOptions::default()).expect("runtime");
    println!();
    println!(
        "| records/call | native rec/s | Rust wasm rec/s (÷ native) | Go wasm rec/s (÷ native) | Go ÷ Rust |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for size in [64usize, 256, 1024] {
        let bs = batches(lines, size);
        let (mut n, mut r, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            n.push(native(&bs));
            r.push(wasm(&standard, rust, &bs));
            g.push(wasm(&standard, go, &bs));
        }
        let rate = |t: Vec<f64>| LINES as f64 / median(t);
        let (n, r, g) = (rate(n), rate(r), rate(g));
        println!(
            "| {size} | {n:.0} | {r:.0} ({:.2}) | {g:.0} ({:.2}) | {:.2} |",
            r / n,
            g / n,
            g / r
        );
    }
    println!();
    println!("| component | bytes | instantiate + create the chain, µs (median of 200) |");
    println!("|---|---:|---:|");
    for (name, bytes) in [("Rust wordcount", rust), ("Go wordcount", go)] {
        let app = standard.load(bytes).expect("load");
        let mut times = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            let chain = wordcount_chain(&app);
            times.push(start.elapsed().as_secs_f64() * 1e6);
            drop(chain);
        }
        println!("| {name} | {} | {:.0} |", bytes.len(), median(times));
    }
}
