//! Nexmark queries (examples/nexmark) over the `nexmark` connector, on the
//! mini-cluster, against results computed here from the generator's events
//! with plain loops and maps.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use sluice_nexmark::{Event, Generator, GeneratorConfig};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An event's text field (ASCII held as bytes).
fn s(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("the generator writes ASCII")
}

/// Runs `sluice run` on the Nexmark application with `args` at
/// `parallelism`, writing to `output`; the contents of its output files.
fn run_app(args: &[String], parallelism: u32, output: &Path) -> Vec<Vec<u8>> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["run", sluice_test_programs::NEXMARK, "-p"])
        .arg(parallelism.to_string());
    for a in args {
        cmd.args(["--arg", a]);
    }
    let out = cmd
        .args(["--arg", &format!("output={}", output.display())])
        .output()
        .expect("run sluice");
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    std::fs::read_dir(output)
        .expect("output")
        .flatten()
        .map(|entry| std::fs::read(entry.path()).expect("output file"))
        .collect()
}

/// Runs `query` over `events` events at `parallelism`; its output lines,
/// sorted.
fn run(query: &str, events: u64, tps: u64, parallelism: u32, dir: &Path) -> Vec<String> {
    let args = [
        format!("query={query}"),
        format!("events={events}"),
        format!("tps={tps}"),
    ];
    let output = dir.join(format!("{query}-p{parallelism}"));
    let mut lines = Vec::new();
    for file in run_app(&args, parallelism, &output) {
        let content = String::from_utf8(file).expect("utf-8 output");
        lines.extend(content.lines().map(str::to_owned));
    }
    lines.sort();
    lines
}

/// What each query must write for the stream.
fn reference(query: &str, events: u64, tps: u64) -> Vec<String> {
    let g = Generator::new(GeneratorConfig {
        events,
        tps,
        ..GeneratorConfig::default()
    });
    let stream: Vec<Event<'static>> = (0..events).map(|i| g.event(i)).collect();
    let bids = stream.iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    });
    let mut lines: Vec<String> = match query {
        "q0" => bids
            .map(|b| {
                format!(
                    "{},{},{},{},{}",
                    b.auction,
                    b.bidder,
                    b.price,
                    b.date_time,
                    s(&b.extra)
                )
            })
            .collect(),
        "q1" => bids
            .map(|b| {
                // 0.908 × price, to the thousandth, by decimal arithmetic.
                let euros = b.price as u128 * 908;
                format!(
                    "{},{},{}.{:03},{},{}",
                    b.auction,
                    b.bidder,
                    euros / 1000,
                    euros % 1000,
                    b.date_time,
                    s(&b.extra)
                )
            })
            .collect(),
        "q2" => bids
            .filter(|b| b.auction % 123 == 0)
            .map(|b| format!("{},{}", b.auction, b.price))
            .collect(),
        "q3" => {
            let states: HashSet<&str> = ["OR", "ID", "CA"].into();
            let sellers: HashMap<u64, String> = stream
                .iter()
                .filter_map(|e| match e {
                    Event::Person(p) if states.contains(s(&p.state)) => Some((
                        p.id,
                        format!("{},{},{}", s(&p.name), s(&p.city), s(&p.state)),
                    )),
                    _ => None,
                })
                .collect();
            stream
                .iter()
                .filter_map(|e| match e {
                    Event::Auction(a) if a.category == 10 => {
                        sellers.get(&a.seller).map(|who| format!("{who},{}", a.id))
                    }
                    _ => None,
                })
                .collect()
        }
        "q4" => {
            // An auction's winning bid: its highest one placed while it
            // was open; per category and window of closing time, the
            // count and the average (rounded down) of the winning bids.
            let mut best: HashMap<u64, u64> = HashMap::new();
            let auctions: HashMap<u64, _> = stream
                .iter()
                .filter_map(|e| match e {
                    Event::Auction(a) => Some((a.id, a)),
                    _ => None,
                })
                .collect();
            for b in bids {
                if let Some(a) = auctions.get(&b.auction)
                    && (a.date_time..=a.expires).contains(&b.date_time)
                {
                    let p = best.entry(a.id).or_default();
                    *p = (*p).max(b.price);
                }
            }
            let mut windows: HashMap<(u64, i64), (u64, u128)> = HashMap::new();
            for (id, price) in best {
                let a = auctions[&id];
                let w = windows
                    .entry((a.category, a.expires - a.expires.rem_euclid(10_000)))
                    .or_default();
                w.0 += 1;
                w.1 += u128::from(price);
            }
            windows
                .iter()
                .map(|((category, start), (n, sum))| {
                    format!("{category},{start},{n},{}", sum / u128::from(*n))
                })
                .collect()
        }
        "q5" => {
            // Every bid counts in the five 10 s windows sliding by 2 s that
            // hold it.
            let mut counts: HashMap<(i64, u64), u64> = HashMap::new();
            for b in bids {
                let last = b.date_time - b.date_time.rem_euclid(2000);
                for k in 0..5 {
                    *counts.entry((last - k * 2000, b.auction)).or_default() += 1;
                }
            }
            let mut most: HashMap<i64, u64> = HashMap::new();
            for (&(window, _), &n) in &counts {
                let m = most.entry(window).or_default();
                *m = (*m).max(n);
            }
            counts
                .iter()
                .filter(|((window, _), n)| most[window] == **n)
                .map(|((_, auction), n)| format!("{auction},{n}"))
                .collect()
        }
        "q7" => {
            let window = |t: i64| t - t.rem_euclid(10_000);
            let bids: Vec<_> = bids.collect();
            let mut highest: HashMap<i64, u64> = HashMap::new();
            for b in &bids {
                let h = highest.entry(window(b.date_time)).or_default();
                *h = (*h).max(b.price);
            }
            bids.iter()
                .filter(|b| highest[&window(b.date_time)] == b.price)
                .map(|b| {
                    format!(
                        "{},{},{},{},{}",
                        b.auction,
                        b.price,
                        b.bidder,
                        b.date_time,
                        s(&b.extra)
                    )
                })
                .collect()
        }
        "q8" => {
            let window = |t: i64| t - t.rem_euclid(10_000);
            let sold: HashSet<(u64, i64)> = stream
                .iter()
                .filter_map(|e| match e {
                    Event::Auction(a) => Some((a.seller, window(a.date_time))),
                    _ => None,
                })
                .collect();
            stream
                .iter()
                .filter_map(|e| match e {
                    Event::Person(p) if sold.contains(&(p.id, window(p.date_time))) => {
                        Some(format!("{},{},{}", p.id, s(&p.name), window(p.date_time)))
                    }
                    _ => None,
                })
                .collect()
        }
        other => panic!("no reference for {other}"),
    };
    lines.sort();
    lines
}

#[test]
fn nexmark_queries_write_what_the_reference_computes_at_parallelism_1_and_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Five minutes of event time: thirty tumbling windows, 150 sliding ones.
    let (events, tps) = (60_000, 200);
    for query in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
        let expected = reference(query, events, tps);
        // Enough results that a wrong one cannot hide.
        assert!(expected.len() >= 30, "{query}: {}", expected.len());
        for parallelism in [1, 3] {
            let got = run(query, events, tps, parallelism, dir.path());
            assert_eq!(got.len(), expected.len(), "{query} at p={parallelism}");
            assert!(
                got == expected,
                "{query} at p={parallelism}: results differ"
            );
        }
    }
}

#[test]
fn the_synthetic_pipeline_counts_nine_records_in_ten_per_key_at_parallelism_1_and_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let records = 50_000u64;
    // Key `i % 10000` of the records kept: each key's counts run 1, 2, ...
    let mut per_key: HashMap<u64, u64> = HashMap::new();
    for i in (0..records).filter(|i| i % 10 != 0) {
        *per_key.entry(i % 10_000).or_default() += 1;
    }
    let mut expected: Vec<u64> = per_key.values().flat_map(|&n| 1..=n).collect();
    expected.sort_unstable();
    assert_eq!(expected.len(), 45_000);
    for parallelism in [1, 3] {
        let output = dir.path().join(format!("synthetic-p{parallelism}"));
        let args = ["query=synthetic".to_owned(), format!("events={records}")];
        // Each output line is a count: 8 bytes, little-endian, then `\n`.
        let mut counts = Vec::new();
        for bytes in run_app(&args, parallelism, &output) {
            assert_eq!(bytes.len() % 9, 0);
            for line in bytes.chunks_exact(9) {
                assert_eq!(line[8], b'\n');
                counts.push(u64::from_le_bytes(line[..8].try_into().expect("8 bytes")));
            }
        }
        counts.sort_unstable();
        assert!(counts == expected, "p={parallelism}: counts differ");
    }
}

#[test]
fn a_query_the_application_lacks_is_refused_with_the_ones_it_has() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", sluice_test_programs::NEXMARK])
        .args(["--arg", "query=q99", "--arg", "events=10"])
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("query `q99` is not one of q0, q1, q2, q3"),
        "{err}"
    );
}
