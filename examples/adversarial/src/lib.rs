//! Misbehaving operators, for testing the sandbox: `mode=spin` loops
//! forever, `mode=bomb` allocates until it hits the memory limit,
//! `mode=panic` panics, `mode=deep` recurses with large frames until the
//! stack in linear memory overflows, `mode=grow-then-spin` is refused more
//! memory, copes, and then loops forever, `mode=plan-spin` loops forever in
//! the plan function, `mode=pass` passes records on. `name=NAME` names the
//! operator's node (to try long names). Absurd plans: `mode=wide-plan`
//! returns `pairs=N` datagen → blackhole pairs (2N nodes), `mode=dense-plan`
//! one pair joined by `edges=N` duplicate edges. Host-call abuse:
//! `mode=metric-flood` adds to a counter with a 16 MiB name forever,
//! `mode=fresh-metrics` to ever new counter names, `mode=log-flood` logs
//! 1 MiB messages forever. Heavy but within limits: `mode=busy` burns
//! about half a million instructions per record (a slow operator, a
//! noisy neighbour); `mode=flood-output` emits 70 000 records of 1 KiB
//! for each record it gets (one huge batch); `mode=sleep` sleeps an hour
//! per record (WASI's clock, no wasm running). Isolation: `mode=snoop`
//! emits what its instance's memory held where it leaves each record's
//! value (zeros, unless an earlier record of the same instance put it
//! there). `count=N` records from the
//! generator (default 1000), `parallelism=N` of every node (default: the
//! job's).

use std::hint::black_box;

use sluice_sdk::prelude::*;
use sluice_sdk::{LogLevel, counter_add, log};

struct Adversarial;

impl Application for Adversarial {
    fn operators() -> Vec<OperatorDef> {
        vec![
            map("spin", |r: Record<'_>, out: &mut Collector| {
                let mut x = r.value.len() as u64;
                loop {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    if x == 42 {
                        break;
                    }
                }
                out.emit(&x.to_le_bytes());
                Ok(())
            }),
            map("bomb", |r: Record<'_>, out: &mut Collector| {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                    if hoard.len() == usize::MAX {
                        out.emit(r.value);
                        return Ok(());
                    }
                }
            }),
            map("deep", |r: Record<'_>, out: &mut Collector| {
                out.emit(&deep(black_box(r.value.len() as u64)).to_le_bytes());
                Ok(())
            }),
            map("grow-then-spin", |r: Record<'_>, out: &mut Collector| {
                // A request far over any limit: refused, and handled.
                let mut big: Vec<u8> = Vec::new();
                if big.try_reserve(black_box(1 << 30)).is_ok() {
                    out.emit(b"reserved");
                }
                let mut x = r.value.len() as u64;
                while black_box(x) != 42 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                Ok(())
            }),
            map("metric-flood", |r: Record<'_>, out: &mut Collector| {
                let name = "m".repeat(16 << 20);
                while black_box(r.value.len()) != usize::MAX {
                    counter_add(&name, 1);
                }
                out.emit(r.value);
                Ok(())
            }),
            map("fresh-metrics", |r: Record<'_>, out: &mut Collector| {
                let mut i = 0u64;
                while black_box(i) != u64::MAX {
                    counter_add(&format!("fresh.{i}"), 1);
                    i += 1;
                }
                out.emit(r.value);
                Ok(())
            }),
            map("log-flood", |r: Record<'_>, out: &mut Collector| {
                let message = "x".repeat(1 << 20);
                while black_box(r.value.len()) != usize::MAX {
                    log(LogLevel::Info, &message);
                }
                out.emit(r.value);
                Ok(())
            }),
            map("busy", |r: Record<'_>, out: &mut Collector| {
                let mut x = r.value.len() as u64;
                for _ in 0..100_000 {
                    x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                out.emit(&x.to_le_bytes());
                Ok(())
            }),
            flat_map("flood-output", |r: Record<'_>, out: &mut Collector| {
                let value = vec![b'o'; 1024];
                for _ in 0..black_box(70_000) {
                    out.emit(&value);
                }
                black_box(r.value);
                Ok(())
            }),
            map("sleep", |r: Record<'_>, out: &mut Collector| {
                std::thread::sleep(std::time::Duration::from_secs(black_box(3600)));
                out.emit(r.value);
                Ok(())
            }),
            map("pass", |r: Record<'_>, out: &mut Collector| {
                out.emit(r.value);
                Ok(())
            }),
            map("snoop", |r: Record<'_>, out: &mut Collector| {
                // What is in this instance's scratch memory (a fresh
                // instance must find zeros, whatever instance had its
                // memory before), then the record's value left there.
                let mut scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
                let n = r.value.len().min(scratch.len());
                out.emit(&scratch[..n]);
                scratch[..n].copy_from_slice(&r.value[..n]);
                Ok(())
            }),
            map("panic", |r: Record<'_>, _out: &mut Collector| {
                panic!(
                    "operator gave up on record {:?}",
                    String::from_utf8_lossy(r.value)
                );
            }),
        ]
    }

    fn plan(args: &Args) -> Result<Graph, Error> {
        let mode = args.require("mode")?;
        if mode == "wide-plan" {
            let pairs: u32 = args.parse_or("pairs", 8_000)?;
            let mut g = Graph::new();
            for i in 0..pairs {
                let source =
                    g.add(Node::connector(&format!("gen{i}"), "datagen").config("count", 1));
                let sink = g.add(Node::connector(&format!("sink{i}"), "blackhole"));
                g.forward(&source, &sink);
            }
            return Ok(g);
        }
        if mode == "dense-plan" {
            let edges: u32 = args.parse_or("edges", 100_000)?;
            let mut g = Graph::new();
            let source = g.add(Node::connector("gen", "datagen").config("count", 1));
            let sink = g.add(Node::connector("sink", "blackhole"));
            for _ in 0..edges {
                g.rebalance(&source, &sink);
            }
            return Ok(g);
        }
        if mode == "plan-spin" {
            let mut n = 0u64;
            while black_box(n) != u64::MAX {
                n = black_box(n.wrapping_add(2));
            }
        }
        let operators = [
            "spin",
            "bomb",
            "panic",
            "deep",
            "grow-then-spin",
            "metric-flood",
            "fresh-metrics",
            "log-flood",
            "busy",
            "flood-output",
            "sleep",
            "pass",
            "snoop",
        ];
        if !operators.contains(&mode) {
            return Err(invalid_config(format!("unknown mode `{mode}`")));
        }
        let count: u64 = args.parse_or("count", 1000)?;
        // The job's default parallelism unless `parallelism` is given.
        let parallelism: Option<u32> = match args.get("parallelism") {
            Some(_) => Some(args.parse_or("parallelism", 1)?),
            None => None,
        };
        let at = |node: Node| match parallelism {
            Some(p) => node.parallelism(p),
            None => node,
        };
        let mut g = Graph::new();
        let gen_ = g.add(at(Node::connector("gen", "datagen").config("count", count)));
        let bad = g.add(at(Node::guest(args.get("name").unwrap_or(mode), mode)));
        let sink = g.add(at(Node::connector("sink", "blackhole")));
        g.forward(&gen_, &bad).forward(&bad, &sink);
        Ok(g)
    }
}

/// Zero-initialised memory (a whole wasm page) that `snoop` reads and writes.
static SCRATCH: std::sync::Mutex<[u8; 64 << 10]> = std::sync::Mutex::new([0; 64 << 10]);

/// Recursion whose frames hold 16 KiB each, on the stack the compiler keeps
/// in linear memory; it never ends (the depth only grows, and is never
/// `u64::MAX`).
#[inline(never)]
fn deep(n: u64) -> u64 {
    let mut frame = [0u8; 16 << 10];
    frame[(n % (16 << 10)) as usize] = n as u8;
    if black_box(n) == u64::MAX {
        return 0;
    }
    let below = deep(black_box(n + 1));
    black_box(&frame);
    below.wrapping_add(u64::from(frame[(n % 7) as usize]))
}

sluice_sdk::export_app!(Adversarial);
