//! Builds every guest under `examples/` for wasm32-wasip2 and exports their
//! paths as constants. Fails loudly when the target is missing, a guest does
//! not build, or a guest is not used by any test of the host crates.

use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[&str] = &[
    "wordcount",
    "windowed-sum",
    "join",
    "adversarial",
    "forbidden-import",
    "exactly-once",
    "nexmark",
    "contract-v0-1",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["examples", "guest-sdk", "wit", "host"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let target_dir = out.join("guests");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("examples/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        // Under `cargo clippy` the outer build sets a clippy wrapper; the
        // guests are linted separately and must build the same either way.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("cannot run cargo to build the guests");
    assert!(
        status.success(),
        "building the guests in examples/ for wasm32-wasip2 failed (see above); \
         if the target is missing, run `rustup target add wasm32-wasip2`"
    );
    let users = host_sources(&root.join("host"));
    let mut consts = String::new();
    for guest in GUESTS {
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", guest.replace('-', "_")));
        assert!(
            file.exists(),
            "guest {guest} built but {} is missing",
            file.display()
        );
        let name = guest.to_uppercase().replace('-', "_");
        assert!(
            users
                .iter()
                .any(|src| src.contains(&format!("test_programs::{name}"))),
            "guest `{guest}` is built but no host test uses sluice_test_programs::{name}: use it or remove it"
        );
        consts.push_str(&format!(
            "/// Path of the `{guest}` guest component.\npub const {name}: &str = {:?};\n",
            file.display().to_string()
        ));
    }
    std::fs::write(out.join("programs.rs"), consts).expect("write programs.rs");
}

fn host_sources(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.ends_with("test-programs") || p.ends_with("target") {
            continue;
        }
        if p.is_dir() {
            found.extend(host_sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            found.extend(std::fs::read_to_string(&p).ok());
        }
    }
    found
}
