//! `sluice`: run and check Sluice applications.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_policy::Policy;
use sluice_runtime::{LocalCluster, Progress, RunError};
use sluice_types::OperatorKind;
use sluice_wasm::{Runtime, RuntimeOptions};

mod cluster;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sandboxed WebAssembly stream processing"
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `warn,sluice_wasm=debug`.
    #[arg(
        long,
        global = true,
        env = "SLUICE_LOG",
        default_value = "warn,sluice_wasm=info"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an application on an embedded mini-cluster in this process.
    Run(RunArgs),
    /// Check an application against the contract (and, given arguments, its plan against the policy).
    Validate(ValidateArgs),
    /// Start a JobManager: the cluster's coordinator, REST API and CA.
    Jobmanager(cluster::JobManagerArgs),
    /// Start a TaskManager that offers slots to a JobManager.
    Taskmanager(cluster::TaskManagerArgs),
    #[command(flatten)]
    Client(cluster::ClientCommand),
}

#[derive(clap::Args)]
struct Common {
    /// The application: a `.wasm` component built with a Sluice SDK.
    app: PathBuf,
    /// Job argument passed to the plan function (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    args: Vec<(String, String)>,
    /// Policy file with limits and quotas [default: the bundled policies/standard.toml].
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Directory for precompiled components [default: ~/.cache/sluice].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile the component every time.
    #[arg(long)]
    no_cache: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Default parallelism of the job's nodes.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: u32,
    /// Task slots of the mini-cluster [default: the parallelism].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    slots: Option<u32>,
    /// Take an exactly-once checkpoint this often (e.g. `10s`); the file
    /// sink then publishes at every completed checkpoint.
    #[arg(long, value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Where checkpoints go (`file:///PATH`, `s3://BUCKET/PREFIX`,
    /// `memory://`) [default: sluice-data/checkpoints in the working directory].
    #[arg(long, value_name = "URI", requires = "checkpoint_interval")]
    checkpoint_dir: Option<String>,
}

#[derive(clap::Args)]
struct ValidateArgs {
    #[command(flatten)]
    common: Common,
    /// Parallelism to validate the plan at (with --arg).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: u32,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args).map(|()| true),
        Command::Validate(args) => validate(args).map(|()| true),
        Command::Jobmanager(args) => cluster::jobmanager(args).map(|()| true),
        Command::Taskmanager(args) => cluster::taskmanager(args).map(|()| true),
        Command::Client(cmd) => cluster::client(cmd),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Common {
    fn policy(&self) -> anyhow::Result<Policy> {
        match &self.policy {
            Some(path) => Ok(Policy::load(path)?),
            None => Ok(Policy::standard()),
        }
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
            Some(base.join("sluice"))
        })
    }

    fn read_app(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(&self.app).with_context(|| format!("cannot read {}", self.app.display()))
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let policy = args.common.policy()?;
    let wasm = args.common.read_app()?;
    let slots = args.slots.unwrap_or(args.parallelism);
    let cwd = std::env::current_dir().context("cannot determine the working directory")?;
    let mut cluster = LocalCluster::new(policy, slots, args.common.cache_dir(), Some(cwd.clone()))?;
    if let Some(interval) = args.checkpoint_interval.filter(|i| !i.is_zero()) {
        let uri = args
            .checkpoint_dir
            .unwrap_or_else(|| format!("file://{}", cwd.join("sluice-data/checkpoints").display()));
        cluster = cluster.with_checkpoints(interval, &uri)?;
    }
    let app = cluster
        .load(&wasm)
        .with_context(|| format!("cannot load {}", args.common.app.display()))?;
    let job = match cluster.prepare(&app, &args.common.args, args.parallelism) {
        Err(RunError::Scheduling(e)) => bail!("{e}; pass --slots {}", e.needed),
        other => other?,
    };
    eprintln!(
        "running {} at parallelism {} on a mini-cluster with {} slots (policy `{}`)",
        args.common.app.display(),
        args.parallelism,
        slots,
        cluster.policy().name
    );
    for v in &job.execution.vertices {
        eprintln!("  task {} ×{}", v.name, v.parallelism);
    }
    let mut display = ProgressDisplay::new();
    let result = cluster.run(&app, job, &mut |p| display.update(p));
    display.finish();
    let progress = result?;
    print_summary(&progress);
    Ok(())
}

/// A spinner on a terminal; a line every few seconds otherwise.
struct ProgressDisplay {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl ProgressDisplay {
    const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("invariant: valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        ProgressDisplay {
            bar,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, p: &Progress) {
        let nodes: Vec<String> = p
            .nodes
            .iter()
            .map(|n| format!("{} {}→{}", n.name, n.records_in, n.records_out))
            .collect();
        let msg = format!(
            "{:>6.1}s {:?} tasks {}/{} | {}",
            p.elapsed.as_secs_f64(),
            p.status,
            p.finished_tasks.0,
            p.finished_tasks.1,
            nodes.join(" | ")
        );
        match &self.bar {
            Some(bar) => bar.set_message(msg),
            None if self.last_line.elapsed() >= Self::PLAIN_INTERVAL => {
                eprintln!("{msg}");
                self.last_line = Instant::now();
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn print_summary(p: &Progress) {
    let secs = p.elapsed.as_secs_f64();
    eprintln!("job finished in {secs:.2} s");
    if p.checkpoints > 0 {
        eprintln!("  {} checkpoints completed", p.checkpoints);
    }
    let width = p
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    eprintln!(
        "  {:<width$}  {:>14}  {:>14}  {:>12}",
        "node", "records in", "records out", "out/s"
    );
    for n in &p.nodes {
        let rate = if secs > 0.0 {
            n.records_out as f64 / secs
        } else {
            0.0
        };
        eprintln!(
            "  {:<width$}  {:>14}  {:>14}  {:>12.0}",
            n.name, n.records_in, n.records_out, rate
        );
    }
}

fn kind_name(kind: OperatorKind) -> &'static str {
    match kind {
        OperatorKind::Source => "source",
        OperatorKind::Map => "map",
        OperatorKind::Filter => "filter",
        OperatorKind::FlatMap => "flat-map",
        OperatorKind::KeyedProcess => "keyed-process",
        OperatorKind::CoProcess => "co-process",
        OperatorKind::Sink => "sink",
    }
}

fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let policy = c.policy()?;
    let wasm = c.read_app()?;
    let runtime = Runtime::new(
        policy.clone(),
        RuntimeOptions {
            cache_dir: c.cache_dir(),
            ..RuntimeOptions::default()
        },
    )?;
    println!("{}: {} bytes", c.app.display(), wasm.len());
    let imports = runtime
        .imports(&wasm)
        .with_context(|| format!("cannot load {}", c.app.display()))?;
    println!("imports:");
    for (name, allowed) in &imports {
        println!("  {}  {name}", if *allowed { "ok     " } else { "DENIED " });
    }
    let app = runtime
        .load(&wasm)
        .with_context(|| format!("{} is not a valid Sluice application", c.app.display()))?;
    println!("sha256: {}", app.digest());
    println!("operators:");
    let ops = app.operators()?;
    let width = ops.iter().map(|o| o.name.len()).max().unwrap_or(0);
    for o in &ops {
        println!(
            "  {:<width$}  {:<13}  {}",
            o.name,
            kind_name(o.kind),
            o.description
        );
    }
    if c.args.is_empty() {
        println!(
            "contract: ok (pass --arg KEY=VALUE to check a job's plan against policy `{}`)",
            policy.name
        );
        return Ok(());
    }
    let cluster = LocalCluster::new(
        policy,
        args.parallelism,
        None,
        Some(std::env::current_dir()?),
    )?;
    let app = cluster.load(&wasm)?;
    let job = cluster.prepare(&app, &c.args, args.parallelism)?;
    println!("plan:");
    for v in &job.execution.vertices {
        println!("  task {} ×{}", v.name, v.parallelism);
    }
    println!("contract and policy `{}`: ok", cluster.policy().name);
    Ok(())
}
