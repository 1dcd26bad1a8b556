//! The `sluice` binary as a user runs it.

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--no-cache")
        .output()
        .expect("run sluice")
}

/// `sluice run WASM ARGS... --no-cache` in `dir`, where the arguments'
/// relative paths resolve.
fn run_in(dir: &std::path::Path, wasm: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .arg("run")
        .arg(wasm)
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
        stdout.contains("ok       sluice:app/plan@0.2.0"),
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
    let out = run_in(
        dir.path(),
        sluice_test_programs::WORDCOUNT,
        &["-p", "2", "--arg", "input=in.txt", "--arg", "output=out"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job finished after"), "{stderr}");
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
    assert!(stderr.contains("job failed after"), "{stderr}");
    // The task's failure is logged, without colour codes off a terminal.
    assert!(stderr.contains("task failed"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert!(
        stderr.contains("error: operator `panic` subtask 1/1 panicked: operator gave up"),
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

    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b\n").expect("write");
    let input_arg = format!("input={}", input.display());
    let output_arg = format!("output={}", dir.path().join("out").display());
    let out = sluice(&[
        "run",
        sluice_test_programs::WORDCOUNT,
        "-p",
        "3",
        "--slots",
        "2",
        "--arg",
        &input_arg,
        "--arg",
        &output_arg,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("pass --slots 3"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_peer_timeout_out_of_range_is_refused_with_the_range() {
    for role in ["jobmanager", "taskmanager"] {
        for (value, says) in [
            ("10ms", "10ms is out of range: between 250ms and 10m"),
            ("1h", "1h is out of range: between 250ms and 10m"),
            ("soon", "a duration such as `1s`"),
        ] {
            let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args([role, "--peer-timeout", value])
                .output()
                .expect("run sluice");
            assert_eq!(out.status.code(), Some(2), "{role} {value}");
            let err = text(&out.stderr);
            assert!(err.contains("--peer-timeout"), "{role} {value}: {err}");
            assert!(err.contains(says), "{role} {value}: {err}");
        }
    }
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

/// `sluice run` of the exactly-once checker, with checkpoints, in `dir`
/// (its default checkpoint directory is `dir/sluice-data/checkpoints`).
fn start_checker_run(dir: &std::path::Path, records: u64, rate: u64) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args([
            "run",
            sluice_test_programs::EXACTLY_ONCE,
            "-p",
            "2",
            "--arg",
            &format!("records={records}"),
            "--arg",
            "keys=10",
            "--arg",
            &format!("rate={rate}"),
            "--arg",
            "output=out",
            "--checkpoint-interval",
            "100ms",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice")
}

/// Waits for `f` to hold, up to two minutes.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_cancels_a_run_prints_its_summary_and_removes_its_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Far more than it can make before it is interrupted.
    let child = start_checker_run(dir.path(), 100_000_000, 1000);
    let checkpoints = dir.path().join("sluice-data/checkpoints");
    wait_until("a completed checkpoint", || {
        std::fs::read_dir(&checkpoints)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|job| job.file_name() != ".sluice-tmp")
            .flat_map(|job| {
                std::fs::read_dir(job.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .any(|chk| chk.path().join("_metadata").exists())
    });
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("cancelling the job"), "{stderr}");
    assert!(stderr.contains("job was cancelled after"), "{stderr}");
    assert!(
        stderr.contains("records in"),
        "the partial summary: {stderr}"
    );
    assert!(stderr.contains("its checkpoints were deleted"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "output published before the cancellation stays in {}",
            dir.path().join("out").display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour off a terminal: {stderr}"
    );
    assert!(
        !dir.path().join("sluice-data").exists(),
        "the run left {:?}",
        std::fs::read_dir(dir.path().join("sluice-data/checkpoints"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    // What was published stays; nothing half-written does.
    for entry in std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(name.starts_with("part-"), "left behind: {name}");
    }
}

#[test]
fn a_plain_checkpoint_directory_is_accepted_and_s3_without_credentials_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a b a\n").expect("input");
    let input_arg = format!("input={}", input.display());
    let run = |out: &str, storage: &str, env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.current_dir(dir.path()).args([
            "run",
            sluice_test_programs::WORDCOUNT,
            "--arg",
            &input_arg,
            "--arg",
            &format!("output={out}"),
            "--checkpoint-interval",
            "1s",
            "--checkpoint-dir",
            storage,
        ]);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "SLUICE_S3_ENDPOINT",
        ] {
            c.env_remove(var);
        }
        c.envs(env.iter().copied()).output().expect("run")
    };
    let plain = dir.path().join("cp");
    let out = run("o1", &plain.display().to_string(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("in file://{}", plain.display())),
        "{}",
        text(&out.stderr)
    );
    let out = run("o2", "relative-cp", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run("o3", "s3://bucket/cp", &[("AWS_ACCESS_KEY_ID", "id")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no credentials: set AWS_SECRET_ACCESS_KEY"),
        "{stderr}"
    );
    assert!(!dir.path().join("o3").exists(), "nothing ran");
}

#[test]
fn a_directory_input_counts_every_file_and_errors_name_their_cause_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in");
    std::fs::create_dir(&input).expect("mkdir");
    std::fs::write(input.join("1.txt"), "to be\n").expect("write");
    std::fs::write(input.join("2.txt"), "or not to be\n").expect("write");
    std::fs::write(input.join("_SUCCESS"), "").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir.path())
        .args([
            "run",
            sluice_test_programs::WORDCOUNT,
            "-p",
            "2",
            "--arg",
            "input=in",
            "--arg",
            "output=out",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (mut lines, _) = sluice_test_programs::wordcount::output_lines(&dir.path().join("out"));
    lines.sort();
    assert_eq!(lines, ["be\t2", "not\t1", "or\t1", "to\t2"]);
    // A missing input: its whole path, once, in Sluice's words.
    let out = sluice(&[
        "run",
        sluice_test_programs::WORDCOUNT,
        "--arg",
        "input=/tmp/../tmp/sluice-no-such-input.txt",
        "--arg",
        "output=/tmp/sluice-never",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("input `/tmp/sluice-no-such-input.txt` does not exist"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("does not exist").count(), 1, "{stderr}");
    for internal in ["context", "service: fs", "os error 2: "] {
        assert!(!stderr.contains(internal), "{internal}: {stderr}");
    }
}

#[test]
fn huge_arguments_and_names_are_cut_for_display_never_a_panic() {
    let huge = format!("name={}", "x".repeat(70_000));
    for command in ["validate", "run"] {
        let out = sluice(&[
            command,
            sluice_test_programs::ADVERSARIAL,
            "--arg",
            "mode=pass",
            "--arg",
            &huge,
        ]);
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.lines().all(|l| l.len() < 1000),
            "{command}: {stderr}"
        );
    }
}

#[test]
fn logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    // `script` runs the command on a pseudo-terminal and copies its output.
    let command = format!(
        "{} run {} --no-cache --arg mode=panic",
        env!("CARGO_BIN_EXE_sluice"),
        sluice_test_programs::ADVERSARIAL
    );
    let on_a_terminal = |no_color: Option<&str>| {
        let mut c = Command::new("script");
        c.args(["-qec", &command, "/dev/null"]);
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = c.output().expect("script (util-linux)");
        text(&out.stdout)
    };
    let coloured = on_a_terminal(None);
    assert!(coloured.contains("task failed"), "{coloured}");
    assert!(colours(&coloured), "{coloured}");
    let plain = on_a_terminal(Some("1"));
    assert!(plain.contains("task failed"), "{plain}");
    assert!(!colours(&plain), "{plain}");
}

/// Whether `s` sets colours or styles (an SGR escape, `ESC [ ... m`); the
/// progress spinner's cursor movements do not count.
fn colours(s: &str) -> bool {
    s.split('\u{1b}').skip(1).any(|rest| {
        rest.strip_prefix('[').is_some_and(|r| {
            let end = r.find(|c: char| !(c.is_ascii_digit() || c == ';'));
            end.is_some_and(|i| r[i..].starts_with('m'))
        })
    })
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_like_sigpipe() {
    // `sluice validate` prints several lines; the reader is gone before.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", sluice_test_programs::WORDCOUNT, "--no-cache"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("sluice ends");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_component_built_against_contract_0_1_0_still_validates_and_runs() {
    let wasm = sluice_test_programs::CONTRACT_V0_1;
    let out = sluice(&["validate", wasm]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ok       sluice:app/plan@0.1.0"),
        "{stdout}"
    );
    assert!(stdout.contains("upper  map"), "{stdout}");

    let dir = tempfile::tempdir().expect("tempdir");
    // Enough lines for many batches, some empty, some not ASCII.
    let mut input = String::new();
    for i in 0..5_000 {
        input.push_str(&format!("line {i} of Five Thousand, naïve café\n"));
        if i % 1_000 == 0 {
            input.push('\n');
        }
    }
    std::fs::write(dir.path().join("in.txt"), &input).expect("write");
    let out = run_in(
        dir.path(),
        wasm,
        &["-p", "2", "--arg", "input=in.txt", "--arg", "output=out"],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job finished after"), "{stderr}");
    let (mut got, subtasks) =
        sluice_test_programs::wordcount::output_lines(&dir.path().join("out"));
    assert_eq!(subtasks, 2);
    let mut want: Vec<String> = input.lines().map(str::to_ascii_uppercase).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // One job across versions: its upper-cased lines go through Rust
    // wordcount's `split` and `count` (a 0.2.0 component linked to it).
    let link = format!("rust={}", sluice_test_programs::WORDCOUNT);
    let out = run_in(
        dir.path(),
        wasm,
        &[
            "-p",
            "2",
            "--with",
            &link,
            "--arg",
            "input=in.txt",
            "--arg",
            "output=mixed",
            "--arg",
            "split=rust/split",
            "--arg",
            "count=rust/count",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (mut got, _) = sluice_test_programs::wordcount::output_lines(&dir.path().join("mixed"));
    got.sort();
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for word in input.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !word.is_empty() {
            *counts.entry(word.to_ascii_lowercase()).or_default() += 1;
        }
    }
    let mut want: Vec<String> = counts.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    want.sort();
    assert_eq!(got, want);
}
