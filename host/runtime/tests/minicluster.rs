//! Jobs on the embedded mini-cluster, end to end, against real guests.

use sluice_test_programs::wordcount::{generate_text, output_lines, read_output, reference_counts};
use std::collections::HashMap;

use sluice_policy::Policy;
use sluice_runtime::{Components, LocalCluster, Progress, RunControl, RunError};

fn cluster(slots: u32) -> LocalCluster {
    let mut policy = Policy::standard();
    policy.limits.fuel_per_call = Some(500_000_000);
    policy.limits.memory_mib = 64;
    LocalCluster::new(policy, slots, None, None).expect("mini-cluster")
}

fn run(
    c: &LocalCluster,
    wasm: &str,
    args: &[(&str, String)],
    parallelism: u32,
) -> Result<Progress, RunError> {
    let app = Components::single(c.load(&std::fs::read(wasm).expect("guest built"))?);
    let args: Vec<(String, String)> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let job = c.prepare(&app, &args, parallelism, None)?;
    c.run(&app, job, &mut |_| {}, RunControl::default())
}

#[test]
fn wordcount_over_10_mb_matches_the_reference_at_parallelism_1_and_4() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.txt");
    let text = generate_text(10 << 20);
    std::fs::write(&input, &text).expect("write input");
    let expected = reference_counts(&text);
    assert!(
        expected.len() > 1000,
        "the generated text has a varied vocabulary"
    );
    let c = cluster(4);
    for p in [1, 4] {
        let output = dir.path().join(format!("out-{p}"));
        let progress = run(
            &c,
            sluice_test_programs::WORDCOUNT,
            &[
                ("input", input.display().to_string()),
                ("output", output.display().to_string()),
            ],
            p,
        )
        .expect("wordcount runs");
        let (counts, parts) = read_output(&output);
        assert_eq!(parts, p as usize, "one part file per sink subtask");
        assert_eq!(counts.len(), expected.len(), "p={p}: distinct words");
        assert!(
            counts == expected,
            "p={p}: counts differ from the reference"
        );
        let words: u64 = expected.values().sum();
        let node = |n: &str| {
            progress
                .nodes
                .iter()
                .find(|c| c.name == n)
                .cloned()
                .expect("node")
        };
        assert_eq!(
            node("split").records_out,
            words,
            "split emitted one record per word"
        );
        assert_eq!(node("count").records_in, words);
        assert_eq!(node("write").records_in, expected.len() as u64);
        assert_eq!(
            (progress.tasks.finished, progress.tasks.total),
            (2 * p, 2 * p)
        );
    }
}

#[test]
fn windowed_sums_match_the_reference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out");
    let (keys, events, window) = (7u64, 20_000u64, 1000i64);
    run(
        &cluster(3),
        sluice_test_programs::WINDOWED_SUM,
        &[
            ("keys", keys.to_string()),
            ("events", events.to_string()),
            ("window_ms", window.to_string()),
            ("output", output.display().to_string()),
        ],
        3,
    )
    .expect("windowed sum runs");
    let mut expected: HashMap<(String, i64), u64> = HashMap::new();
    for i in 0..events {
        let ts = (i * 10) as i64;
        *expected
            .entry((format!("k{}", i % keys), ts - ts % window))
            .or_default() += i;
    }
    let mut got = HashMap::new();
    for line in output_lines(&output).0 {
        let f: Vec<&str> = line.split('\t').collect();
        let key = (f[0].to_owned(), f[1].parse::<i64>().expect("start"));
        assert!(
            got.insert(key, f[2].parse::<u64>().expect("sum")).is_none(),
            "window emitted twice: {line}"
        );
    }
    assert_eq!(got, expected);
}

#[test]
fn a_two_input_operator_sees_each_record_once_on_its_own_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out");
    let (left, right, keys) = (5_000u64, 3_001u64, 13u64);
    run(
        &cluster(3),
        sluice_test_programs::JOIN,
        &[
            ("left", left.to_string()),
            ("right", right.to_string()),
            ("keys", keys.to_string()),
            ("output", output.display().to_string()),
        ],
        3,
    )
    .expect("join runs");
    let side = |n: u64, k: u64| {
        let matching = (0..n).filter(|i| i % keys == k);
        (matching.clone().count() as u64, matching.sum::<u64>())
    };
    let mut expected: Vec<String> = (0..keys)
        .map(|k| {
            let (l, r) = (side(left, k), side(right, k));
            format!("k{k}\t{}\t{}\t{}\t{}", l.0, l.1, r.0, r.1)
        })
        .collect();
    let mut got = output_lines(&output).0;
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn misbehaving_jobs_fail_with_their_cause_and_the_next_job_runs() {
    let c = cluster(2);
    for (mode, cause) in [
        ("spin", "ran out of fuel"),
        ("bomb", "exceeded its memory limit"),
        ("panic", "panicked: operator gave up"),
    ] {
        let err = run(
            &c,
            sluice_test_programs::ADVERSARIAL,
            &[("mode", mode.into())],
            2,
        )
        .expect_err(mode);
        let msg = err.to_string();
        assert!(msg.contains(cause), "{mode}: {msg}");
        assert!(
            msg.contains(&format!("operator `{mode}` subtask")),
            "{mode}: {msg}"
        );
    }
    let err = run(&c, sluice_test_programs::FORBIDDEN_IMPORT, &[], 1).expect_err("forbidden");
    assert!(err.to_string().contains("wasi:sockets/"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "still alive\nALIVE and well\n").expect("write");
    let output = dir.path().join("out");
    run(
        &c,
        sluice_test_programs::WORDCOUNT,
        &[
            ("input", input.display().to_string()),
            ("output", output.display().to_string()),
        ],
        2,
    )
    .expect("a healthy job runs after the failures");
    let (counts, _) = read_output(&output);
    assert_eq!(
        counts,
        HashMap::from([
            ("still".into(), 1),
            ("alive".into(), 2),
            ("and".into(), 1),
            ("well".into(), 1)
        ])
    );
}

#[test]
fn plans_that_break_the_rules_are_rejected_before_running() {
    let c = cluster(2);
    let err = run(
        &c,
        sluice_test_programs::WORDCOUNT,
        &[("input", "in".into())],
        1,
    )
    .expect_err("no output");
    assert!(
        err.to_string().contains("missing argument `output`"),
        "{err}"
    );
    let err = run(
        &c,
        sluice_test_programs::ADVERSARIAL,
        &[("mode", "spin".into())],
        3,
    )
    .expect_err("3 > 2 slots");
    assert!(err.to_string().contains("needs 3 slots"), "{err}");
    // Absurd plans are refused by size before any work proportional to it.
    for (mode, what) in [
        (
            "wide-plan",
            "the plan has 16000 nodes; the policy allows at most 1000 (quota `max_plan_nodes`)",
        ),
        (
            "dense-plan",
            "the plan has 100000 edges; the policy allows at most 10000 (quota `max_plan_edges`)",
        ),
    ] {
        let err = run(
            &c,
            sluice_test_programs::ADVERSARIAL,
            &[("mode", mode.into())],
            1,
        )
        .expect_err(mode);
        assert!(err.to_string().contains(what), "{mode}: {err}");
    }
    let mut policy = Policy::standard();
    policy.quotas.connectors.retain(|c| c != "file-source");
    let strict = LocalCluster::new(policy, 2, None, None).expect("cluster");
    let err = run(
        &strict,
        sluice_test_programs::WORDCOUNT,
        &[("input", "/in".into()), ("output", "/out".into())],
        1,
    )
    .expect_err("file-source is not allowed");
    assert!(
        err.to_string()
            .contains("connector `file-source` is not allowed by policy `standard`"),
        "{err}"
    );
}

/// Regression: output batches were sent only when full (1024 records) or
/// at a watermark, checkpoint or the end, so a slow stream's records sat
/// in the source task until the job ended.
#[test]
fn a_slow_sources_records_reach_the_next_task_while_the_source_still_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = cluster(1);
    let app = Components::single(
        c.load(&std::fs::read(sluice_test_programs::EXACTLY_ONCE).expect("guest built"))
            .expect("loads"),
    );
    // 400 records at 100 per second: four seconds, never a full batch.
    let args: Vec<(String, String)> = [
        ("records", "400".to_owned()),
        ("keys", "1".to_owned()),
        ("rate", "100".to_owned()),
        ("output", dir.path().join("out").display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let job = c.prepare(&app, &args, 1, None).expect("plans");
    let mut seen_early = 0;
    let end = c
        .run(
            &app,
            job,
            &mut |p| {
                let check = p.nodes.iter().find(|n| n.name == "check");
                if p.tasks.finished == 0 {
                    seen_early = seen_early.max(check.map_or(0, |n| n.records_in));
                }
            },
            RunControl::default(),
        )
        .expect("runs");
    let check = end.nodes.iter().find(|n| n.name == "check").expect("node");
    assert_eq!(check.records_in, 400);
    assert!(
        seen_early > 0,
        "no record reached `check` before the source finished"
    );
}
