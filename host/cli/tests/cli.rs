//! The `sluice` binary as a user runs it.

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--no-cache")
        .output()
        .expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_names_a_forbidden_import_and_fails() {
    let out = sluice(&["validate", sluice_test_programs::FORBIDDEN_IMPORT]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DENIED   wasi:sockets/tcp@0.2"), "{stdout}");
    assert!(
        stdout.contains("ok       sluice:app/plan@0.1.0"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("imports interfaces outside the sandbox: wasi:sockets/"),
        "{stderr}"
    );
}

#[test]
fn validate_lists_the_operators_of_a_valid_application() {
    let out = sluice(&["validate", sluice_test_programs::WORDCOUNT]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("split  flat-map"), "{stdout}");
    assert!(stdout.contains("count  keyed-process"), "{stdout}");
    let denied = sluice(&[
        "validate",
        sluice_test_programs::WORDCOUNT,
        "--arg",
        "input=/in",
        "--arg",
        "output=/out",
        "--policy",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/small.toml"),
    ]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        text(&denied.stderr).contains("connector `file-source` is not allowed by policy `small`"),
        "{}",
        text(&denied.stderr)
    );
}

#[test]
fn run_counts_words_prints_a_summary_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("in.txt"),
        "To be, or not to be:\nthat is the question.\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir.path())
        .args([
            "run",
            sluice_test_programs::WORDCOUNT,
            "-p",
            "2",
            "--arg",
            "input=in.txt",
            "--arg",
            "output=out",
        ])
        .arg("--no-cache")
        .output()
        .expect("run");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job finished in"), "{stderr}");
    assert!(stderr.contains("split"), "{stderr}");
    let (mut lines, _) = sluice_test_programs::wordcount::output_lines(&dir.path().join("out"));
    lines.sort();
    assert_eq!(
        lines,
        [
            "be\t2",
            "is\t1",
            "not\t1",
            "or\t1",
            "question\t1",
            "that\t1",
            "the\t1",
            "to\t2"
        ]
    );
}

#[test]
fn a_failing_job_exits_non_zero_with_the_cause() {
    let out = sluice(&[
        "run",
        sluice_test_programs::ADVERSARIAL,
        "--arg",
        "mode=panic",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("error: job failed: operator `panic` subtask 1/1 panicked: operator gave up"),
        "{stderr}"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = sluice(&["run", sluice_test_programs::WORDCOUNT, "--arg", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`novalue` is not KEY=VALUE"),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("app.wasm");
    std::fs::write(&fake, b"PK\x03\x04 this is a jar").expect("write");
    let out = sluice(&["run", fake.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("magic bytes"),
        "{}",
        text(&out.stderr)
    );

    let out = sluice(&["run", "/no/such/app.wasm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /no/such/app.wasm"),
        "{}",
        text(&out.stderr)
    );

    let out = sluice(&[
        "run",
        sluice_test_programs::WORDCOUNT,
        "-p",
        "3",
        "--slots",
        "2",
        "--arg",
        "input=/x",
        "--arg",
        "output=/y",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --slots 3"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_with_checkpoints_publishes_every_record_once_and_cleans_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("out");
    let checkpoints = dir.path().join("checkpoints");
    let output_arg = format!("output={}", out_dir.display());
    let storage = format!("file://{}", checkpoints.display());
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([
            "run",
            sluice_test_programs::EXACTLY_ONCE,
            "-p",
            "2",
            "--arg",
            "records=200000",
            "--arg",
            "keys=10",
            // Two generators at 100,000 records/s: about a second of work.
            "--arg",
            "rate=100000",
            "--arg",
            &output_arg,
            "--checkpoint-interval",
            "100ms",
            "--checkpoint-dir",
            &storage,
        ])
        .output()
        .expect("run sluice");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let completed: u64 = stderr
        .lines()
        .find_map(|l| l.trim().strip_suffix(" checkpoints completed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(completed >= 1, "{stderr}");
    let (lines, _) = sluice_test_programs::wordcount::output_lines(&out_dir);
    let mut indices: Vec<u64> = lines
        .iter()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_once('\t')
                .expect("KEY<TAB>INDEX")
                .1
                .parse()
                .expect("index")
        })
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..200_000).collect::<Vec<_>>());
    // A finished job's checkpoints are deleted (the store's empty directory
    // for atomic writes stays).
    let left: Vec<_> = std::fs::read_dir(&checkpoints)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p: &std::path::PathBuf| {
            !(p.ends_with(".sluice-tmp")
                && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none()))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
