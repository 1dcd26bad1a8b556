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

/// Runs `query` over `events` events at `parallelism`; its output lines,
/// sorted.
fn run(query: &str, events: u64, tps: u64, parallelism: u32, dir: &Path) -> Vec<String> {
    let output = dir.join(format!("{query}-p{parallelism}"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", sluice_test_programs::NEXMARK, "-p"])
        .arg(parallelism.to_string())
        .args(["--arg", &format!("query={query}")])
        .args(["--arg", &format!("events={events}")])
        .args(["--arg", &format!("tps={tps}")])
        .args(["--arg", &format!("output={}", output.display())])
        .output()
        .expect("run sluice");
    assert!(out.status.success(), "{query}: {}", text(&out.stderr));
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(&output).expect("output").flatten() {
        let content = std::fs::read_to_string(entry.path()).expect("utf-8 output");
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
                    b.auction, b.bidder, b.price, b.date_time, b.extra
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
                    b.extra
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
                    Event::Person(p) if states.contains(&*p.state) => {
                        Some((p.id, format!("{},{},{}", p.name, p.city, p.state)))
                    }
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
                        b.auction, b.price, b.bidder, b.date_time, b.extra
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
                        Some(format!("{},{},{}", p.id, p.name, window(p.date_time)))
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
    for query in ["q0", "q1", "q2", "q3", "q5", "q7", "q8"] {
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
