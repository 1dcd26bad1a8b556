//! `sluice`: run and check Sluice applications.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sluice_policy::Policy;
use sluice_runtime::{Components, LocalCluster, Progress, RunControl, RunError};
use sluice_types::OperatorKind;
use sluice_wasm::{Runtime, RuntimeOptions};

mod build;
mod cluster;
mod display;

/// The process allocator. A TaskManager starts task threads for every job,
/// and glibc's malloc gives busy threads arenas of their own (up to eight per
/// core) that keep what they freed. Measured on 2 cores, 900 short wordcount
/// jobs three at a time: with glibc the TaskManager grew to 121 MiB and kept
/// growing; with jemalloc it stayed between 58 and 78 MiB and went back to
/// 58 MiB once idle (mimalloc: 113 MiB, and twice glibc's on the
/// JobManager). jemalloc returns freed pages to the system after a delay.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Sandboxed WebAssembly stream processing"
)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info` or `warn,sluice_wasm=debug`
    /// [default: `info` for the servers, `warn,sluice_wasm=info` otherwise].
    #[arg(long, global = true, env = "SLUICE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an application on an embedded mini-cluster in this process.
    Run(RunArgs),
    /// Check an application against the contract (and, given arguments, its plan against the policy).
    Validate(ValidateArgs),
    /// Build a Go module into a validated Sluice component.
    Build(build::BuildArgs),
    /// Start a JobManager: the cluster's coordinator, REST API and CA.
    Jobmanager(Box<cluster::JobManagerArgs>),
    /// Start a TaskManager that offers slots to a JobManager.
    Taskmanager(cluster::TaskManagerArgs),
    #[command(flatten)]
    Client(cluster::ClientCommand),
    /// Compile one component under limits (run by JobManagers and
    /// TaskManagers in a child process).
    #[command(hide = true)]
    CompileWorker(CompileWorkerArgs),
}

#[derive(clap::Args)]
struct CompileWorkerArgs {
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    #[arg(long)]
    memory_mib: u64,
    #[arg(long)]
    cpu_seconds: u64,
}

#[derive(clap::Args)]
struct Common {
    /// The application: a `.wasm` component built with a Sluice SDK.
    app: PathBuf,
    /// Job argument passed to the plan function (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    args: Vec<(String, String)>,
    /// Link another component to the job as NAME: the plan then runs its
    /// operators by naming them `NAME/OPERATOR` (repeatable). This is how
    /// one job mixes operators written in Go and in Rust.
    #[arg(long = "with", value_name = "NAME=FILE", value_parser = parse_link)]
    with: Vec<(String, String)>,
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
    /// Where checkpoints go (a directory, `file:///PATH`,
    /// `s3://BUCKET/PREFIX` or `memory://`) [default:
    /// sluice-data/checkpoints in the working directory].
    #[arg(long, value_name = "URI", requires = "checkpoint_interval")]
    checkpoint_dir: Option<String>,
    /// Start from this savepoint or kept checkpoint (the location a
    /// failed run or `sluice savepoint` printed); the parallelism may differ.
    #[arg(long, value_name = "LOCATION")]
    from_savepoint: Option<String>,
    /// Start even if the savepoint holds state of operators this job lacks.
    #[arg(long, requires = "from_savepoint")]
    allow_non_restored_state: bool,
}

#[derive(clap::Args)]
struct ValidateArgs {
    #[command(flatten)]
    common: Common,
    /// Parallelism to validate the plan at (with --arg).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    parallelism: u32,
}

/// ` (in LINK)` for a task running operators of a linked component.
fn linked_from(v: &sluice_coord::Vertex) -> String {
    v.nodes
        .iter()
        .find_map(|n| n.implementation.link())
        .map(|link| format!(" (in {link})"))
        .unwrap_or_default()
}

/// `NAME=WHAT` of `--with` (`sluice run` and `sluice submit`).
fn parse_link(s: &str) -> Result<(String, String), String> {
    let (name, what) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NAME=FILE"))?;
    sluice_runtime::check_link_name(name)?;
    if what.is_empty() {
        return Err(format!("`{s}` names nothing to link"));
    }
    Ok((name.to_owned(), what.to_owned()))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Exits quietly, as a program killed by SIGPIPE would (status 141), when
/// stdout is a pipe closed early (`sluice list | head -1`): Rust ignores
/// SIGPIPE, so `println!` would panic with a backtrace instead.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let servers = matches!(
        cli.command,
        Command::Jobmanager(_) | Command::Taskmanager(_)
    );
    let default_log = if servers {
        "info"
    } else {
        "warn,sluice_wasm=info"
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log.as_deref().unwrap_or(default_log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(display::colour(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Validate(args) => validate(args).map(|()| ExitCode::SUCCESS),
        Command::Build(args) => build::build(args).map(|()| ExitCode::SUCCESS),
        Command::Jobmanager(args) => cluster::jobmanager(*args).map(|()| ExitCode::SUCCESS),
        Command::Taskmanager(args) => cluster::taskmanager(args).map(|()| ExitCode::SUCCESS),
        Command::Client(cmd) => cluster::client(cmd),
        Command::CompileWorker(a) => {
            let code =
                sluice_wasm::compile_worker(&a.input, &a.output, a.memory_mib, a.cpu_seconds);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", display::chain(&e));
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

    /// The job's components: the application and those `--with` links.
    fn components(&self, cluster: &LocalCluster, wasm: &[u8]) -> anyhow::Result<Components> {
        let main = cluster
            .load(wasm)
            .with_context(|| format!("cannot load {}", self.app.display()))?;
        let mut linked = Vec::new();
        for (name, path) in &self.with {
            let path = Path::new(path);
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read {} (--with {name})", path.display()))?;
            let app = cluster
                .load(&bytes)
                .with_context(|| format!("cannot load {} (--with {name})", path.display()))?;
            linked.push((name.clone(), app));
        }
        Components::linked(main, linked).map_err(anyhow::Error::msg)
    }
}

/// The exit code of a run cancelled by Ctrl-C (128 + SIGINT), as shells use.
const INTERRUPTED: u8 = 130;

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let policy = args.common.policy()?;
    let wasm = args.common.read_app()?;
    let slots = args.slots.unwrap_or(args.parallelism);
    let cwd = std::env::current_dir().context("cannot determine the working directory")?;
    let mut cluster = LocalCluster::new(policy, slots, args.common.cache_dir(), Some(cwd.clone()))?;
    let default_dir = cwd.join("sluice-data/checkpoints");
    let mut checkpoint_uri = None;
    if let Some(interval) = args.checkpoint_interval.filter(|i| !i.is_zero()) {
        let uri = match &args.checkpoint_dir {
            Some(dir) => cluster::storage_uri(dir, &cwd)?,
            None => format!("file://{}", default_dir.display()),
        };
        cluster = cluster.with_checkpoints(interval, &uri)?;
        checkpoint_uri = Some((interval, uri));
    }
    let components = args.common.components(&cluster, &wasm)?;
    let resume = args
        .from_savepoint
        .as_deref()
        .map(|location| cluster.open_savepoint(&cluster::location_uri(location, &cwd)))
        .transpose()?;
    let job = match cluster.prepare(
        &components,
        &args.common.args,
        args.parallelism,
        resume.as_ref().map(|r| sluice_runtime::Resume {
            savepoint: &r.metadata,
            allow_non_restored_state: args.allow_non_restored_state,
        }),
    ) {
        Err(RunError::Scheduling(e)) => bail!("{e}; pass --slots {}", e.needed),
        other => other?,
    };
    let outputs = sluice_runtime::snapshot::file_outputs(&job.execution);
    eprintln!(
        "running {} at parallelism {} on a mini-cluster with {} slots (policy `{}`)",
        args.common.app.display(),
        args.parallelism,
        slots,
        cluster.policy().name
    );
    for v in &job.execution.vertices {
        eprintln!(
            "  task {} ×{}{}",
            display::truncate(&v.name, 80),
            v.parallelism,
            linked_from(v)
        );
    }
    if let Some(r) = &resume {
        eprintln!(
            "  restoring checkpoint {} of job {} from {}",
            r.metadata.checkpoint, r.metadata.job, r.location
        );
    }
    if let Some((interval, uri)) = &checkpoint_uri {
        eprintln!(
            "  checkpoints every {} in {uri} (deleted when the job finishes or is cancelled, kept if it fails)",
            humantime::format_duration(*interval)
        );
    }
    let (interrupt_tx, interrupt) = crossbeam_channel::bounded::<()>(1);
    let interrupted = std::sync::atomic::AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if interrupted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(i32::from(INTERRUPTED));
        }
        eprintln!("\ncancelling the job (Ctrl-C again to quit at once)");
        let _ = interrupt_tx.try_send(());
    })
    .context("cannot handle Ctrl-C")?;
    let mut display = ProgressDisplay::new();
    let result = cluster.run(
        &components,
        job,
        &mut |p| display.update(p),
        RunControl {
            interrupt: Some(&interrupt),
            resume: resume.as_ref(),
        },
    );
    display.finish();
    let code = match result {
        Ok(progress) => {
            print_summary(&progress, "finished");
            ExitCode::SUCCESS
        }
        Err(RunError::Cancelled(progress)) => {
            print_summary(&progress, "was cancelled");
            if checkpoint_uri.is_some() {
                eprintln!("  its checkpoints were deleted");
            }
            for dir in &outputs {
                eprintln!("  output published before the cancellation stays in {dir}");
            }
            ExitCode::from(INTERRUPTED)
        }
        Err(RunError::Failed { message, progress }) => {
            print_summary(&progress, "failed");
            eprintln!("error: {message}");
            if let Some(location) = &progress.kept_checkpoint {
                eprintln!(
                    "its checkpoints stay; resume from the newest with:\n  sluice run {} --from-savepoint {location} ...",
                    args.common.app.display()
                );
            }
            ExitCode::FAILURE
        }
        Err(e) => return Err(e.into()),
    };
    if checkpoint_uri.is_some() && args.checkpoint_dir.is_none() {
        remove_if_empty(&default_dir);
    }
    Ok(code)
}

/// Removes the default checkpoint directory and `sluice-data` if nothing is
/// left in them, so a run leaves no empty directories behind.
fn remove_if_empty(checkpoints: &Path) {
    let _ = std::fs::remove_dir(checkpoints.join(".sluice-tmp"));
    if std::fs::remove_dir(checkpoints).is_ok()
        && let Some(parent) = checkpoints.parent()
    {
        let _ = std::fs::remove_dir(parent);
    }
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
        let msg = progress_line(p);
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

/// One line of progress: time, where the tasks are, each node's counts.
fn progress_line(p: &Progress) -> String {
    let nodes: Vec<String> = p
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {}→{}",
                display::truncate(&n.name, 40),
                n.records_in,
                n.records_out
            )
        })
        .collect();
    let t = p.tasks;
    let tasks = if t.finished == 0 {
        format!("{}/{} tasks running", t.running, t.total)
    } else {
        format!(
            "{}/{} tasks running, {} finished",
            t.running, t.total, t.finished
        )
    };
    format!(
        "{:>6.1}s {} | {}",
        p.elapsed.as_secs_f64(),
        tasks,
        display::truncate(&nodes.join(" | "), 200)
    )
}

/// The end of a run: how long it took and what each node counted.
fn print_summary(p: &Progress, outcome: &str) {
    let secs = p.elapsed.as_secs_f64();
    eprintln!("job {outcome} after {secs:.2} s");
    if p.checkpoints > 0 {
        eprintln!("  {} checkpoints completed", p.checkpoints);
    }
    let rows: Vec<Vec<String>> = p
        .nodes
        .iter()
        .map(|n| {
            let rate = if secs > 0.0 {
                n.records_out as f64 / secs
            } else {
                0.0
            };
            vec![
                n.name.clone(),
                n.records_in.to_string(),
                n.records_out.to_string(),
                format!("{rate:.0}"),
            ]
        })
        .collect();
    for line in display::table(&["node", "records in", "records out", "out/s"], &rows) {
        eprintln!("  {line}");
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
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                kind_name(o.kind).to_owned(),
                o.description.clone(),
            ]
        })
        .collect();
    for line in display::table(&["name", "kind", "description"], &rows)
        .iter()
        .skip(1)
    {
        println!("  {line}");
    }
    if c.args.is_empty() && c.with.is_empty() {
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
    let components = c.components(&cluster, &wasm)?;
    for (name, app) in components.linked_apps() {
        let ops: Vec<String> = app.operators()?.into_iter().map(|o| o.name).collect();
        println!("linked as {name}: operators {}", ops.join(", "));
    }
    if c.args.is_empty() {
        println!(
            "contract: ok (pass --arg KEY=VALUE to check a job's plan against policy `{}`)",
            cluster.policy().name
        );
        return Ok(());
    }
    let job = cluster.prepare(&components, &c.args, args.parallelism, None)?;
    println!("plan:");
    for v in &job.execution.vertices {
        println!("  task {} ×{}{}", v.name, v.parallelism, linked_from(v));
    }
    println!("contract and policy `{}`: ok", cluster.policy().name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::{NodeCounts, TaskTally};

    #[test]
    fn the_progress_line_counts_running_tasks_as_running() {
        let p = Progress {
            elapsed: Duration::from_millis(1500),
            status: sluice_coord::JobStatus::Running,
            nodes: vec![NodeCounts {
                name: "split".into(),
                records_in: 3,
                records_out: 7,
            }],
            tasks: TaskTally {
                running: 4,
                finished: 0,
                total: 4,
            },
            checkpoints: 0,
            kept_checkpoint: None,
        };
        assert_eq!(progress_line(&p), "   1.5s 4/4 tasks running | split 3→7");
        let p = Progress {
            tasks: TaskTally {
                running: 1,
                finished: 3,
                total: 4,
            },
            ..p
        };
        assert!(progress_line(&p).contains("1/4 tasks running, 3 finished"));
    }
}
