//! `sluice jobmanager`, `sluice taskmanager`, and the client commands that
//! talk to a cluster's REST API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sluice_cluster::api::flink::{
    CheckpointEntry, CheckpointsView, Errors, Exceptions, JobDetail, SavepointStatus,
};
use sluice_cluster::{AuthMode, JobManagerConfig, TaskManagerConfig, TenancyConfig, api};
use sluice_coord::RestartStrategy;

use crate::parse_key_value;

#[derive(clap::Args)]
pub struct JobManagerArgs {
    /// Address of the REST API (and of `/metrics`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    rest_addr: SocketAddr,
    /// Address of the cluster RPC endpoint (QUIC) TaskManagers connect to.
    #[arg(long, default_value = "127.0.0.1:6123")]
    rpc_addr: SocketAddr,
    /// Where the cluster CA, the join token and uploaded applications live.
    #[arg(long, default_value = "sluice-data/jobmanager")]
    data_dir: PathBuf,
    /// `token`: every REST request needs `Authorization: Bearer TOKEN`
    /// (the first start makes an admin token, in DATA_DIR/credentials);
    /// `none`: anyone who reaches the port acts as an admin (a laptop only).
    #[arg(long, default_value = "token", value_parser = ["token", "none"])]
    auth: String,
    /// Tenant files (`NAME.toml`), reloaded on SIGHUP or `sluice tenant
    /// reload` [default: DATA_DIR/tenants, created with the tenant `default`].
    #[arg(long, value_name = "DIR")]
    tenants_dir: Option<PathBuf>,
    /// Policy files with each tenant's limits and quotas [default:
    /// DATA_DIR/policies, created with `standard` and `small`].
    #[arg(long, value_name = "DIR")]
    policies_dir: Option<PathBuf>,
    /// How long a job waits for free slots before it fails.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    slot_timeout: Duration,
    /// A TaskManager whose heartbeats stop this long while its connection
    /// lives (a stuck process) is declared lost and its tasks fail.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    #[command(flatten)]
    peer: PeerArgs,
    /// Restart strategy after a failure: `exponential-delay` (Flink's
    /// default), `fixed-delay`, `failure-rate` or `none`. A failure that
    /// would happen again (a missing input, a guest over its limits) is
    /// never restarted.
    #[arg(long, default_value = "exponential-delay")]
    restart_strategy: String,
    /// Restarts allowed: with `fixed-delay` in all (default 3), with
    /// `exponential-delay` before a run lasts `--restart-reset-after`
    /// (default 10); with `failure-rate`, failures allowed per
    /// `--restart-failure-interval` (default 1).
    #[arg(long)]
    restart_attempts: Option<u32>,
    /// Delay before a restart (`fixed-delay`, `failure-rate`), or the first
    /// delay (`exponential-delay`).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    restart_delay: Duration,
    /// Longest delay of `exponential-delay`.
    #[arg(long, default_value = "5min", value_parser = humantime::parse_duration)]
    restart_max_delay: Duration,
    /// A run of `exponential-delay` that lasts this long starts the count
    /// of restarts and the delay over.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    restart_reset_after: Duration,
    /// The interval of `failure-rate`.
    #[arg(long, default_value = "1min", value_parser = humantime::parse_duration)]
    restart_failure_interval: Duration,
    /// Ended jobs kept in memory for the REST API (Flink's
    /// `jobstore.max-capacity`); older ones are answered from the
    /// job-result store.
    #[arg(long, default_value_t = 1000)]
    jobstore_max_capacity: usize,
    /// How long an ended job stays in memory (Flink's `jobstore.expiration-time`).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    jobstore_expiration: Duration,
    /// How long the join token made at the first start (DATA_DIR/tls/join-token)
    /// lets TaskManagers join; `never` keeps it until revoked. Make more with
    /// `sluice token create --taskmanager`.
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    join_token_ttl: Ttl,
    #[command(flatten)]
    compile: CompileArgs,
    /// Where checkpoints are kept: `file:///PATH`, `s3://BUCKET/PREFIX`
    /// (endpoint and credentials from SLUICE_S3_ENDPOINT, SLUICE_S3_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or `memory://`
    /// [default: DATA_DIR/checkpoints]. TaskManagers write there too.
    #[arg(long, value_name = "URI")]
    checkpoint_dir: Option<String>,
    /// Checkpoint interval for jobs that do not set their own (e.g. `10s`);
    /// without it, only jobs that ask take checkpoints.
    #[arg(long, value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// `exactly-once` (barriers aligned) or `at-least-once` (never blocks
    /// an input; records may be seen twice after a recovery).
    #[arg(long, default_value = "exactly-once")]
    checkpointing_mode: String,
    /// A checkpoint not complete this long after its trigger fails.
    #[arg(long, default_value = "10min", value_parser = humantime::parse_duration)]
    checkpoint_timeout: Duration,
    /// Checkpoints in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    checkpoints_concurrent: u32,
    /// Consecutive failed checkpoints tolerated before the job fails over.
    #[arg(long, default_value_t = 3)]
    checkpoint_tolerable_failures: u32,
    /// Completed checkpoints kept per job.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    checkpoints_retained: u64,
}

#[derive(clap::Args)]
pub struct TaskManagerArgs {
    /// The JobManager's cluster RPC address.
    #[arg(long, default_value = "127.0.0.1:6123", value_name = "HOST:PORT")]
    jobmanager: String,
    /// Task slots offered to the cluster.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: u32,
    /// Address of this TaskManager's QUIC endpoint; other TaskManagers
    /// connect to it (use a routable address on a multi-host cluster).
    #[arg(long, default_value = "127.0.0.1:0")]
    rpc_addr: SocketAddr,
    /// Where the certificate and the component cache live.
    #[arg(long, default_value = "sluice-data/taskmanager")]
    data_dir: PathBuf,
    /// The join token the JobManager printed; needed only at the first start.
    #[arg(long, env = "SLUICE_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the join token from this file (the JobManager's
    /// `DATA_DIR/tls/join-token`), waiting up to 30 s for it to appear.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`/metrics`): `HOST:PORT`, or
    /// `HOST:FIRST-LAST` to take the first free port of a range (several
    /// TaskManagers on one host), or `off`.
    #[arg(long, default_value = "127.0.0.1:9249-9259", value_parser = parse_metrics_addr)]
    metrics_addr: MetricsAddrs,
    #[command(flatten)]
    compile: CompileArgs,
    /// Cores shared between tenants' tasks by their policies' `cpu_shares`
    /// (default: all of this machine's); `0` turns the fair share off and
    /// leaves task threads to the OS scheduler.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=4096))]
    cores: Option<u32>,
    #[command(flatten)]
    peer: PeerArgs,
}

/// How fast a cluster process gives up on a silent peer.
#[derive(clap::Args, Clone, Debug)]
struct PeerArgs {
    /// A peer whose connection is silent this long (a killed process, a
    /// dead host, a cut network) is lost, and the tasks that need it fail
    /// over; keep-alives go every fifth of it. A connection uses the
    /// smaller of its two ends' values. Raise it on a slow or lossy network.
    #[arg(long, default_value = "1s", value_parser = parse_peer_timeout)]
    peer_timeout: Duration,
}

fn parse_peer_timeout(s: &str) -> Result<Duration, String> {
    let (min, max) = (
        sluice_transport::MIN_PEER_TIMEOUT,
        sluice_transport::MAX_PEER_TIMEOUT,
    );
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (a duration such as `1s`)"))?;
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: between {} and {}",
            humantime::format_duration(d),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// Bounds on compiling tenants' components, which JobManagers (on upload)
/// and TaskManagers (on deployment) do in a child process.
#[derive(clap::Args, Clone, Debug)]
struct CompileArgs {
    /// CPU time one component may take to compile; it is refused with this
    /// limit named past it (and stopped after four times as long in
    /// wall-clock time, at least 10 s more, if it is starved or stuck).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    compile_timeout: Duration,
    /// Address space of the compiler process, MiB.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(256..))]
    compile_memory_mib: u64,
}

impl CompileArgs {
    fn compiler(&self) -> anyhow::Result<sluice_wasm::Compiler> {
        Ok(sluice_wasm::Compiler::Child(sluice_wasm::ChildCompiler {
            program: std::env::current_exe()
                .context("cannot find this program to run its compiler process")?,
            args: vec!["compile-worker".into()],
            timeout: self.compile_timeout,
            memory_mib: self.compile_memory_mib,
        }))
    }
}

/// Candidate addresses for a metrics endpoint.
#[derive(Clone, Debug)]
struct MetricsAddrs(Vec<SocketAddr>);

fn parse_metrics_addr(s: &str) -> Result<MetricsAddrs, String> {
    if s == "off" {
        return Ok(MetricsAddrs(Vec::new()));
    }
    let bad = || format!("`{s}` is not HOST:PORT, HOST:FIRST-LAST or `off`");
    let (host, ports) = s.rsplit_once(':').ok_or_else(bad)?;
    let ip: std::net::IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>(), b.parse::<u16>()),
        None => (ports.parse::<u16>(), ports.parse::<u16>()),
    };
    let (first, last) = (first.map_err(|_| bad())?, last.map_err(|_| bad())?);
    if first > last {
        return Err(format!("`{s}`: the port range is empty ({first} > {last})"));
    }
    Ok(MetricsAddrs(
        (first..=last).map(|p| SocketAddr::new(ip, p)).collect(),
    ))
}

pub fn jobmanager(args: JobManagerArgs) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_millis() as u64;
    let restart = match args.restart_strategy.as_str() {
        "exponential-delay" | "exponential" => RestartStrategy::ExponentialDelay {
            initial_ms: ms(args.restart_delay),
            max_ms: ms(args.restart_max_delay),
            multiplier: 1.5,
            reset_after_ms: ms(args.restart_reset_after),
            attempts: args.restart_attempts.unwrap_or(10),
        },
        "fixed-delay" | "fixed" => RestartStrategy::FixedDelay {
            attempts: args.restart_attempts.unwrap_or(3),
            delay_ms: ms(args.restart_delay),
        },
        "failure-rate" => RestartStrategy::FailureRate {
            max_failures: args.restart_attempts.unwrap_or(1),
            interval_ms: ms(args.restart_failure_interval),
            delay_ms: ms(args.restart_delay),
        },
        "none" | "disable" => RestartStrategy::None,
        other => {
            bail!(
                "unknown restart strategy `{other}`: use exponential-delay, fixed-delay, \
                 failure-rate or none"
            )
        }
    };
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let endpoints_file = args.data_dir.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints_file);
    let credentials = args.data_dir.join("credentials");
    let config = JobManagerConfig {
        rest_addr: args.rest_addr,
        rpc_addr: args.rpc_addr,
        data_dir: args.data_dir.clone(),
        tenancy: TenancyConfig {
            auth: if args.auth == "none" {
                AuthMode::None
            } else {
                AuthMode::Token
            },
            tenants_dir: args
                .tenants_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("tenants")),
            policies_dir: args
                .policies_dir
                .clone()
                .unwrap_or_else(|| args.data_dir.join("policies")),
        },
        slot_timeout: args.slot_timeout,
        heartbeat_timeout: args.heartbeat_timeout,
        peer_timeout: args.peer.peer_timeout,
        restart,
        base_dir: Some(std::env::current_dir()?),
        checkpoint_storage: match args.checkpoint_dir {
            Some(dir) => storage_uri(&dir, &std::env::current_dir()?)?,
            None => {
                let dir = std::path::absolute(args.data_dir.join("checkpoints"))?;
                format!("file://{}", dir.display())
            }
        },
        jobstore_max_capacity: args.jobstore_max_capacity,
        jobstore_expiration: args.jobstore_expiration,
        join_token_ttl: args.join_token_ttl.0,
        compiler: args.compile.compiler()?,
        checkpoint_interval: args.checkpoint_interval,
        checkpoint_defaults: sluice_coord::CheckpointConfig {
            mode: match args.checkpointing_mode.as_str() {
                "exactly-once" | "EXACTLY_ONCE" => sluice_coord::CheckpointingMode::ExactlyOnce,
                "at-least-once" | "AT_LEAST_ONCE" => sluice_coord::CheckpointingMode::AtLeastOnce,
                other => {
                    bail!("unknown checkpointing mode `{other}`: use exactly-once or at-least-once")
                }
            },
            timeout_ms: args.checkpoint_timeout.as_millis() as u64,
            max_concurrent: args.checkpoints_concurrent,
            tolerable_failures: args.checkpoint_tolerable_failures,
            retained: args.checkpoints_retained as usize,
            ..sluice_coord::CheckpointConfig::default()
        },
    };
    let rt = server_runtime()?;
    rt.block_on(sluice_cluster::server::run(config, |e| {
        println!(
            "sluice jobmanager: REST http://{} | cluster RPC {}",
            e.rest, e.rpc
        );
        println!(
            "TaskManagers join with:\n  sluice taskmanager --jobmanager {} --token {}",
            e.rpc, e.token
        );
        if let Some(admin) = &e.admin_token {
            println!(
                "Admin token (shown once; also in {}):\n  {admin}",
                credentials.display()
            );
        }
        if !e.authenticated {
            eprintln!(
                "WARNING: --auth none: anyone who reaches http://{} can list, run and cancel \
                 every job; use it on a laptop only",
                e.rest
            );
        }
        write_endpoints(&endpoints_file, e);
    }))
}

/// For scripts and tests: where a process actually listens, written
/// atomically (a reader never sees half a file).
fn write_endpoints(path: &Path, endpoints: &impl serde::Serialize) {
    if let Ok(json) = serde_json::to_vec(endpoints) {
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
}

pub fn taskmanager(args: TaskManagerArgs) -> anyhow::Result<()> {
    let token_text = match &args.token_file {
        Some(path) => Some(read_token_file(path)?),
        None => args.token.clone(),
    };
    let token = token_text
        .as_deref()
        .map(|t| t.trim().parse())
        .transpose()
        .context("invalid join token")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let endpoints_file = args.data_dir.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints_file);
    let config = TaskManagerConfig {
        jobmanager: args.jobmanager,
        slots: args.slots,
        rpc_addr: args.rpc_addr,
        data_dir: args.data_dir,
        token,
        base_dir: Some(std::env::current_dir()?),
        metrics_addrs: args.metrics_addr.0,
        cores: args.cores.map(|c| c as usize),
        compiler: args.compile.compiler()?,
        peer_timeout: args.peer.peer_timeout,
    };
    server_runtime()?.block_on(sluice_cluster::taskmanager::run(config, |e| {
        write_endpoints(&endpoints_file, e)
    }))
}

/// Reads a token file, waiting a little for a JobManager that is starting.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
            _ if std::time::Instant::now() >= deadline => {
                bail!(
                    "{} did not appear within 30 s: is the JobManager running with that data directory?",
                    path.display()
                )
            }
            // Polling a file another process creates: there is no event to wait on portably.
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn server_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluice-io")
        .build()
        .context("cannot start the async runtime")
}

/// `dir` as a storage URI: a URI as it is, a plain path as `file://`
/// (relative to `cwd`), canonical either way.
pub fn storage_uri(dir: &str, cwd: &Path) -> anyhow::Result<String> {
    let location: sluice_state::Location = location_uri(dir, cwd).parse()?;
    Ok(location.to_string())
}

/// A location users type: a URI as it is, a plain path made absolute.
pub fn location_uri(location: &str, cwd: &Path) -> String {
    if location.contains("://") || location.starts_with('/') {
        location.to_owned()
    } else {
        cwd.join(location).display().to_string()
    }
}

/// A JobManager address as users type it: `HOST:PORT`, or a URL.
fn parse_base_url(s: &str) -> Result<String, String> {
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let parsed =
        reqwest::Url::parse(&url).map_err(|e| format!("`{s}` is not HOST:PORT or a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("`{s}` is not HOST:PORT or an http(s) URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Where the cluster is, and how to print.
#[derive(clap::Args)]
pub struct Remote {
    /// The JobManager's REST address: `HOST:PORT` or a URL (Flink's `-m`).
    #[arg(
        short = 'm',
        long,
        global = true,
        env = "SLUICE_JOBMANAGER",
        default_value = "127.0.0.1:8081",
        value_parser = parse_base_url
    )]
    jobmanager: String,
    /// Machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// API token [default: from --credentials].
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A credentials file (`token = "..."`), such as the one the JobManager
    /// writes for its admin [default: sluice-data/jobmanager/credentials,
    /// if it exists].
    #[arg(long, global = true, env = "SLUICE_CREDENTIALS", value_name = "FILE")]
    credentials: Option<PathBuf>,
}

/// A lifetime: a duration, or `never`.
#[derive(Clone, Copy, Debug)]
struct Ttl(Option<Duration>);

fn parse_ttl(s: &str) -> Result<Ttl, String> {
    if s == "never" {
        return Ok(Ttl(None));
    }
    humantime::parse_duration(s)
        .map(|d| Ttl(Some(d)))
        .map_err(|e| format!("{e} (a duration such as `24h`, or `never`)"))
}

/// The default credentials file: the one a JobManager started from this
/// directory with its default data directory wrote.
const DEFAULT_CREDENTIALS: &str = "sluice-data/jobmanager/credentials";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    token: String,
}

impl Remote {
    /// The token to send: `--token`/`SLUICE_TOKEN`, else the credentials file.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_owned()));
        }
        let (path, given) = match &self.credentials {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CREDENTIALS), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !given && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let c: Credentials = toml::from_str(&text)
            .with_context(|| format!("{} is not a credentials file", path.display()))?;
        Ok(Some(c.token))
    }
}

#[derive(clap::Subcommand)]
pub enum ClientCommand {
    /// Upload an application; prints its id.
    Upload {
        #[command(flatten)]
        remote: Remote,
        /// The `.wasm` component.
        app: PathBuf,
    },
    /// Submit a job from a `.wasm` file (uploaded first) or an uploaded id.
    Submit {
        #[command(flatten)]
        remote: Remote,
        /// A `.wasm` file or the id of an uploaded application.
        app: String,
        /// Default parallelism of the job's nodes.
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        parallelism: u32,
        /// Job argument passed to the plan function (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        args: Vec<(String, String)>,
        /// Link another application (a `.wasm` file, uploaded first, or an
        /// uploaded id) to the job as NAME: the plan runs its operators by
        /// naming them `NAME/OPERATOR` (repeatable).
        #[arg(long = "with", value_name = "NAME=APP", value_parser = super::parse_link)]
        with: Vec<(String, String)>,
        /// Wait for the job to end; exit non-zero if it does not finish.
        #[arg(long)]
        wait: bool,
        /// Take a checkpoint this often (e.g. `1s`); `0s` turns checkpoints
        /// off [default: the cluster's].
        #[arg(long, value_parser = humantime::parse_duration)]
        checkpoint_interval: Option<Duration>,
        /// Start from this savepoint (the location `sluice savepoint` printed);
        /// the parallelism may differ from the savepoint's.
        #[arg(long, value_name = "PATH")]
        from_savepoint: Option<String>,
        /// Start even if the savepoint holds state of operators this job lacks.
        #[arg(long, requires = "from_savepoint")]
        allow_non_restored_state: bool,
    },
    /// List jobs, newest first.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// List uploaded applications.
    Jars {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a job: state, tasks, counts, checkpoints, failures.
    Info {
        #[command(flatten)]
        remote: Remote,
        /// Job id.
        job: String,
    },
    /// Cancel a job.
    Cancel {
        #[command(flatten)]
        remote: Remote,
        /// Job id.
        job: String,
    },
    /// Take a savepoint of a running job; prints where it is.
    Savepoint {
        #[command(flatten)]
        remote: Remote,
        /// Job id.
        job: String,
    },
    /// Stop a job with a savepoint (the job is cancelled once the savepoint
    /// completes); prints where the savepoint is.
    Stop {
        #[command(flatten)]
        remote: Remote,
        /// Job id.
        job: String,
        /// Accepted for Flink habits: a stop always takes a savepoint.
        #[arg(long)]
        savepoint: bool,
        /// Where the savepoint goes; it must be inside the cluster's
        /// checkpoint storage.
        #[arg(short = 'p', long, value_name = "DIR")]
        savepoint_path: Option<String>,
    },
    /// List TaskManagers (admin).
    Taskmanagers {
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage tenants (admin).
    Tenant {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API tokens and TaskManager join tokens (admin).
    Token {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage TaskManager certificates (admin).
    Certificate {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Show a tenant's quotas with their use, and its jobs' figures.
    Usage {
        #[command(flatten)]
        remote: Remote,
        /// Another tenant's (admin) [default: the token's].
        tenant: Option<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant on a policy (writes its file under the tenants directory).
    Create {
        /// Its name: 1 to 63 of a-z, 0-9 and '-'.
        name: String,
        /// The policy its jobs run under.
        #[arg(long, default_value = "standard")]
        policy: String,
        /// A human-readable name.
        #[arg(long, default_value = "")]
        display_name: String,
        /// A directory its file connectors may use (repeatable; relative to
        /// this directory) [default: the policy's `file_roots`, else a
        /// directory of its own under the JobManager's data directory].
        #[arg(long = "file-root", value_name = "DIR")]
        file_roots: Vec<PathBuf>,
    },
    /// List tenants with their policy and usage.
    List,
    /// Read the tenant and policy files again.
    Reload,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token for a tenant, or a join token for TaskManagers;
    /// prints it once.
    Create {
        /// The tenant it acts for.
        #[arg(required_unless_present = "taskmanager")]
        tenant: Option<String>,
        /// May act on every tenant and manage the cluster.
        #[arg(long, conflicts_with = "taskmanager")]
        admin: bool,
        /// A join token for new TaskManagers (`sluice taskmanager --token`)
        /// instead of an API token.
        #[arg(long, conflicts_with = "tenant")]
        taskmanager: bool,
        /// Lifetime (e.g. `30d`) [default: until revoked].
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (the 16 hex digits after `sluice_`, or `tm-…`
        /// for a join token).
        id: String,
    },
}

#[derive(clap::Subcommand)]
pub enum CertificateCommand {
    /// List the TaskManager certificates issued.
    List,
    /// Remove a TaskManager's certificate: the TaskManager is disconnected
    /// (its tasks fail over) and refused from then on.
    Remove {
        /// The certificate's id (`sluice certificate list`, `sluice taskmanagers`).
        id: String,
    },
}

struct Client {
    base: String,
    http: reqwest::Client,
}

/// What the JobManager refused, with its status (to tell a 409 from a 404).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refused {
    status: reqwest::StatusCode,
    message: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    fn unreachable(&self) -> String {
        format!("cannot reach the JobManager at {}", self.base)
    }

    async fn check(&self, resp: reqwest::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let errors = serde_json::from_value::<Errors>(body)
            .map(|e| e.errors.join("; "))
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "no reason given".into());
        Err(Refused {
            status,
            message: format!(
                "the JobManager answered {}: {}",
                status.as_u16(),
                super::display::truncate(&errors, 2000)
            ),
        }
        .into())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .with_context(|| self.unreachable())?;
        self.check(resp).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.with_context(|| self.unreachable())?;
        self.check(resp).await
    }

    /// `send`, with the answer read as the API type the server answers with.
    async fn send_as<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        typed(self.send(req).await?)
    }

    /// `get`, with the answer read as the API type the server answers with.
    async fn get_as<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        typed(self.get(path).await?)
    }

    async fn upload(&self, path: &Path, show: bool) -> anyhow::Result<String> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let bar = (show && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(bytes.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("uploading {bytes}/{total_bytes} {wide_bar}")
                    .expect("invariant: valid template"),
            );
            bar
        });
        let len = bytes.len() as u64;
        let bar2 = bar.clone();
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
        let stream = futures_util::stream::iter(chunks).map(move |c| {
            if let (Some(b), Ok(c)) = (&bar2, &c) {
                b.inc(c.len() as u64);
            }
            c
        });
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "application.wasm".into());
        let part =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
                .file_name(name)
                .mime_str("application/wasm")?;
        let form = reqwest::multipart::Form::new().part("jarfile", part);
        let result = self
            .send_as::<api::UploadResponse>(
                self.http.post(self.url("/jars/upload")).multipart(form),
            )
            .await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let filename = result?.filename;
        Ok(filename.rsplit('/').next().unwrap_or(&filename).to_owned())
    }
}

/// An answer as the API type both sides share.
fn typed<T: serde::de::DeserializeOwned>(answer: Value) -> anyhow::Result<T> {
    serde_json::from_value(answer).context(
        "the JobManager's answer is not what this client expects (is it another Sluice version?)",
    )
}

/// Prints an API answer as JSON.
fn print_json(answer: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(answer)?);
    Ok(())
}

pub fn client(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    let remote = match &cmd {
        ClientCommand::Upload { remote, .. }
        | ClientCommand::Submit { remote, .. }
        | ClientCommand::List { remote }
        | ClientCommand::Jars { remote }
        | ClientCommand::Info { remote, .. }
        | ClientCommand::Cancel { remote, .. }
        | ClientCommand::Savepoint { remote, .. }
        | ClientCommand::Stop { remote, .. }
        | ClientCommand::Taskmanagers { remote }
        | ClientCommand::Tenant { remote, .. }
        | ClientCommand::Token { remote, .. }
        | ClientCommand::Certificate { remote, .. }
        | ClientCommand::Usage { remote, .. } => remote,
    };
    let json = remote.json;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = remote.token()? {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token holds characters a header cannot")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = Client {
        base: remote.jobmanager.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .default_headers(headers)
            .build()?,
    };
    rt.block_on(client_command(&client, cmd, json))
}

/// Milliseconds since the epoch as a UTC time to the second; `-` for none.
fn time(ms: u64) -> String {
    match Some(ms).filter(|&t| t > 0) {
        Some(t) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(t))
                .to_string()
        }
        None => "-".into(),
    }
}

/// Milliseconds as a short duration: `850ms`, `12.3s`, `4m05s`, `2h03m`.
fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Bytes in the largest binary unit that keeps a number of at least 1.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.1} GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.1} MiB", b / (1u64 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

/// CPU seconds as `1.234s`.
fn cpu_seconds(s: f64) -> String {
    format!("{s:.3}s")
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    for line in super::display::table(header, rows) {
        println!("{line}");
    }
}

/// Runs a client command; a failure exit code means it ran but the
/// outcome is one (a job that did not finish).
async fn client_command(c: &Client, cmd: ClientCommand, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        ClientCommand::Upload { app, .. } => {
            let id = c.upload(&app, !json).await?;
            if json {
                println!("{}", json!({ "id": id }));
            } else {
                println!("{id}");
            }
        }
        ClientCommand::Submit {
            app,
            parallelism,
            args,
            with,
            wait,
            checkpoint_interval,
            from_savepoint,
            allow_non_restored_state,
            ..
        } => {
            sluice_runtime::check_link_count(with.len()).map_err(anyhow::Error::msg)?;
            let jar = uploaded(c, app, json).await?;
            let mut links = std::collections::BTreeMap::new();
            for (name, app) in with {
                if links.contains_key(&name) {
                    bail!("--with {name}: the link name `{name}` is given twice");
                }
                let id = uploaded(c, app, json)
                    .await
                    .with_context(|| format!("--with {name}"))?;
                links.insert(name, id);
            }
            let resumes = from_savepoint.is_some();
            let body = api::RunRequest {
                parallelism: Some(parallelism),
                program_args_list: Some(args.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                checkpoint_interval: checkpoint_interval.map(|i| i.as_millis() as u64),
                savepoint_path: from_savepoint,
                allow_non_restored_state: resumes.then_some(allow_non_restored_state),
                links,
            };
            let answer: api::RunResponse = c
                .send_as(c.http.post(c.url(&format!("/jars/{jar}/run"))).json(&body))
                .await?;
            let job = answer.jobid.clone();
            if !wait {
                if json {
                    print_json(&answer)?;
                } else {
                    println!("{job}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
                eprintln!("submitted job {job}");
            }
            let detail = wait_for(c, &job, json).await?;
            if json {
                print_json(&detail)?;
            } else {
                print_job(&detail);
                println!("{job}");
            }
            if detail.state != "FINISHED" {
                print_failure(c, &job, &detail).await?;
                return Ok(ExitCode::FAILURE);
            }
        }
        ClientCommand::List { .. } => {
            let mut answer: api::flink::JobsOverview = c.get_as("/jobs/overview").await?;
            if json {
                print_json(&answer)?;
                return Ok(ExitCode::SUCCESS);
            }
            answer.jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
            let rows: Vec<Vec<String>> = answer
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.jid.clone(),
                        j.state.clone(),
                        time(j.start_time),
                        duration(j.duration),
                        j.name.clone(),
                    ]
                })
                .collect();
            print_table(&["JOB ID", "STATE", "STARTED", "DURATION", "NAME"], &rows);
        }
        ClientCommand::Jars { .. } => {
            let mut jars: api::flink::JarList = c.get_as("/jars").await?;
            if json {
                print_json(&jars)?;
                return Ok(ExitCode::SUCCESS);
            }
            jars.files.sort_by_key(|j| std::cmp::Reverse(j.uploaded));
            let rows: Vec<Vec<String>> = jars
                .files
                .iter()
                .map(|j| vec![j.id.clone(), j.name.clone(), size(j.size), time(j.uploaded)])
                .collect();
            print_table(&["ID", "NAME", "SIZE", "UPLOADED"], &rows);
        }
        ClientCommand::Info { job, .. } => {
            let detail: JobDetail = c.get_as(&format!("/jobs/{job}")).await?;
            let exceptions: Exceptions = c.get_as(&format!("/jobs/{job}/exceptions")).await?;
            let checkpoints: Option<CheckpointsView> =
                c.get_as(&format!("/jobs/{job}/checkpoints")).await.ok();
            if json {
                println!(
                    "{}",
                    json!({"job": detail, "exceptions": exceptions, "checkpoints": checkpoints})
                );
                return Ok(ExitCode::SUCCESS);
            }
            print_job(&detail);
            if let Some(cp) = &checkpoints {
                print_checkpoints(cp);
            }
            print_exceptions(&exceptions, &detail);
        }
        ClientCommand::Cancel { job, .. } => {
            let resp = c
                .http
                .patch(c.url(&format!("/jobs/{job}?mode=cancel")))
                .send()
                .await
                .with_context(|| c.unreachable())?;
            match c.check(resp).await {
                Ok(_) => {}
                Err(e) => match e.downcast_ref::<Refused>() {
                    Some(r) if r.status == reqwest::StatusCode::CONFLICT => {
                        let state = c
                            .get_as::<JobDetail>(&format!("/jobs/{job}"))
                            .await
                            .map(|d| d.state)
                            .unwrap_or_default();
                        bail!("job {job} already ended ({state}); there is nothing to cancel");
                    }
                    _ => return Err(e),
                },
            }
            if json {
                println!("{}", json!({"jobid": job, "cancelled": true}));
            } else {
                println!("cancelling {job}");
            }
        }
        ClientCommand::Savepoint { job, .. } => {
            let body = api::SavepointRequest::default();
            let location = savepoint(c, &job, "savepoints", &body, json).await?;
            print_savepoint(&job, &location, json);
        }
        ClientCommand::Stop {
            job,
            savepoint_path,
            ..
        } => {
            let body = api::StopRequest {
                target_directory: savepoint_path.filter(|d| !d.is_empty()),
            };
            let location = savepoint(c, &job, "stop", &body, json).await?;
            print_savepoint(&job, &location, json);
        }
        ClientCommand::Taskmanagers { .. } => {
            let tms: api::flink::TaskManagers = c.get_as("/taskmanagers").await?;
            if json {
                print_json(&tms)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = tms
                .taskmanagers
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.slots_number.to_string(),
                        t.free_slots.to_string(),
                        t.assigned_tasks.to_string(),
                        duration(t.time_since_last_heartbeat),
                    ]
                })
                .collect();
            print_table(&["ID", "SLOTS", "FREE", "TASKS", "HEARTBEAT"], &rows);
        }
        ClientCommand::Tenant { command, .. } => tenant_command(c, command, json).await?,
        ClientCommand::Certificate { command, .. } => certificate_command(c, command, json).await?,
        ClientCommand::Token { command, .. } => token_command(c, command, json).await?,
        ClientCommand::Usage { tenant, .. } => {
            let path = match &tenant {
                Some(t) => format!("/tenants/{t}/usage"),
                None => "/tenants/me/usage".to_owned(),
            };
            let usage: api::UsageView = c.get_as(&path).await?;
            if json {
                print_json(&usage)?;
                return Ok(ExitCode::SUCCESS);
            }
            println!("tenant {} on policy {}", usage.tenant, usage.policy);
            let rows: Vec<Vec<String>> = usage
                .quotas
                .iter()
                .map(|q| {
                    let limit = match q.limit {
                        Some(l) => l.to_string(),
                        None => "unlimited".into(),
                    };
                    vec![q.quota.clone(), q.used.to_string(), limit]
                })
                .collect();
            print_table(&["QUOTA", "USED", "LIMIT"], &rows);
            let jobs: Vec<Vec<String>> = usage
                .jobs
                .iter()
                .map(|j| {
                    vec![
                        j.jid.clone(),
                        j.state.clone(),
                        j.records_in.to_string(),
                        j.records_out.to_string(),
                        j.fuel.to_string(),
                        cpu_seconds(j.cpu_seconds),
                        size(j.checkpoint_bytes),
                        super::display::truncate(&j.name, 60).into_owned(),
                    ]
                })
                .collect();
            let t = &usage.total;
            println!(
                "\ntotal: {} records in, {} out, {} fuel, {} CPU, {} of checkpoints",
                t.records_in,
                t.records_out,
                t.fuel,
                cpu_seconds(t.cpu_seconds),
                size(t.checkpoint_bytes)
            );
            let c = &usage.compile;
            println!(
                "compiling on the JobManager: {} components ({} refused), {} CPU",
                c.compilations,
                c.refused,
                cpu_seconds(c.cpu_seconds)
            );
            if !jobs.is_empty() {
                println!();
                print_table(
                    &[
                        "JOB",
                        "STATE",
                        "IN",
                        "OUT",
                        "FUEL",
                        "CPU",
                        "CHECKPOINT",
                        "NAME",
                    ],
                    &jobs,
                );
            }
            if !usage.taskmanagers.is_empty() {
                let or_none = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                let rows: Vec<Vec<String>> = usage
                    .taskmanagers
                    .iter()
                    .map(|t| {
                        vec![
                            t.taskmanager.clone(),
                            t.cpu_shares.to_string(),
                            format!("{:.2}", t.entitled_cores),
                            or_none(t.cpu_cores_limit.map(|c| format!("{c}"))),
                            cpu_seconds(t.cpu_seconds),
                            cpu_seconds(t.wait_seconds),
                            cpu_seconds(t.throttled_seconds),
                            format!(
                                "{}/{}",
                                t.instances,
                                or_none(t.instances_limit.map(|n| n.to_string()))
                            ),
                            format!(
                                "{}/{}",
                                size(t.memory_bytes),
                                or_none(t.memory_limit_bytes.map(size))
                            ),
                            format!(
                                "{} ({})",
                                t.compilations,
                                cpu_seconds(t.compile_cpu_seconds)
                            ),
                        ]
                    })
                    .collect();
                println!();
                print_table(
                    &[
                        "TASKMANAGER",
                        "SHARES",
                        "ENTITLED",
                        "CEILING",
                        "CPU",
                        "WAITED",
                        "THROTTLED",
                        "INSTANCES",
                        "MEMORY",
                        "COMPILED",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tenant_command(c: &Client, command: TenantCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            name,
            policy,
            display_name,
            file_roots,
        } => {
            let file_roots = file_roots
                .iter()
                .map(|r| {
                    std::path::absolute(r)
                        .map(|a| sluice_connectors::normalize(&a))
                        .with_context(|| format!("cannot resolve file root {}", r.display()))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let body = api::CreateTenant {
                name,
                policy,
                display_name,
                file_roots,
            };
            let answer: api::TenantCreated = c
                .send_as(c.http.post(c.url("/tenants")).json(&body))
                .await?;
            if json {
                print_json(&answer)?;
            } else {
                println!("created tenant {} on policy {}", answer.name, answer.policy);
                println!("give it a token with: sluice token create {}", answer.name);
            }
        }
        TenantCommand::List => {
            let answer: api::flink::Tenants = c.get_as("/tenants").await?;
            if json {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer
                .tenants
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.policy.clone(),
                        t.usage.jobs.to_string(),
                        t.usage.slots.to_string(),
                        t.usage.jars.to_string(),
                        t.display_name.clone(),
                    ]
                })
                .collect();
            print_table(
                &["TENANT", "POLICY", "JOBS", "SLOTS", "JARS", "NAME"],
                &rows,
            );
        }
        TenantCommand::Reload => {
            let answer: api::flink::Reloaded =
                c.send_as(c.http.post(c.url("/tenants/reload"))).await?;
            if json {
                print_json(&answer)?;
            } else {
                println!(
                    "reloaded {} tenants and {} policies",
                    answer.tenants, answer.policies
                );
            }
        }
    }
    Ok(())
}

async fn token_command(c: &Client, command: TokenCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            tenant,
            admin,
            taskmanager,
            ttl,
        } => {
            let body = api::CreateToken {
                tenant: tenant.clone(),
                taskmanager,
                admin,
                ttl_seconds: ttl.map(|t| t.as_secs().max(1)),
            };
            let answer: api::TokenCreated =
                c.send_as(c.http.post(c.url("/tokens")).json(&body)).await?;
            if json {
                print_json(&answer)?;
            } else {
                // The token alone on stdout, for `$(sluice token create …)`.
                println!("{}", answer.token);
                let whom = match (&answer.record.tenant, answer.record.kind) {
                    (Some(t), api::TokenKind::Api) => {
                        format!("tenant {t}{}", if admin { " (admin)" } else { "" })
                    }
                    _ => "joining TaskManagers".to_owned(),
                };
                eprintln!(
                    "token {} for {whom}: shown once, store it now",
                    answer.record.id
                );
            }
        }
        TokenCommand::List => {
            let answer: api::Tokens = c.get_as("/tokens").await?;
            if json {
                return print_json(&answer);
            }
            let ms = |t: Option<u64>| time(t.unwrap_or(0));
            let rows: Vec<Vec<String>> = answer
                .tokens
                .iter()
                .map(|t| {
                    let state = if t.revoked.is_some() {
                        "revoked".to_owned()
                    } else if t.expires.is_some() {
                        format!("expires {}", ms(t.expires))
                    } else {
                        "active".to_owned()
                    };
                    let kind = match t.kind {
                        api::TokenKind::Api => "api",
                        api::TokenKind::Taskmanager => "taskmanager",
                    };
                    vec![
                        t.id.clone(),
                        kind.to_owned(),
                        t.tenant.clone().unwrap_or_default(),
                        if t.admin { "yes" } else { "no" }.to_owned(),
                        ms(Some(t.created)),
                        state,
                    ]
                })
                .collect();
            print_table(
                &["ID", "KIND", "TENANT", "ADMIN", "CREATED", "STATE"],
                &rows,
            );
        }
        TokenCommand::Revoke { id } => {
            let answer: api::TokenRevoked = c
                .send_as(c.http.delete(c.url(&format!("/tokens/{id}"))))
                .await?;
            if json {
                print_json(&answer)?;
            } else {
                println!("revoked token {id}");
            }
        }
    }
    Ok(())
}

async fn certificate_command(
    c: &Client,
    command: CertificateCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        CertificateCommand::List => {
            let answer: api::flink::Certificates = c.get_as("/certificates").await?;
            if json {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer
                .certificates
                .iter()
                .map(|c| {
                    vec![
                        c.id.clone(),
                        super::display::truncate(&c.name, 40).into_owned(),
                        c.token.clone(),
                        time(c.issued_ms),
                        match c.removed_ms {
                            None => "active".to_owned(),
                            Some(at) => format!("removed {}", time(at)),
                        },
                    ]
                })
                .collect();
            print_table(&["ID", "NAME", "TOKEN", "ISSUED", "STATE"], &rows);
        }
        CertificateCommand::Remove { id } => {
            let answer: api::flink::CertificateRemoved = c
                .send_as(c.http.delete(c.url(&format!("/certificates/{id}"))))
                .await?;
            if json {
                print_json(&answer)?;
            } else {
                println!("removed certificate {id}; its TaskManager is disconnected and refused");
            }
        }
    }
    Ok(())
}

/// The id of an application given as a `.wasm` file (uploaded now) or as
/// the id of an uploaded one.
async fn uploaded(c: &Client, app: String, json: bool) -> anyhow::Result<String> {
    if Path::new(&app).is_file() {
        c.upload(Path::new(&app), !json).await
    } else if app.ends_with(".wasm") && !is_jar_id(&app) {
        bail!("{app}: no such file (and not the id of an uploaded application)");
    } else {
        Ok(app)
    }
}

/// Whether `s` is an application id: a SHA-256, with or without `.wasm`.
fn is_jar_id(s: &str) -> bool {
    let hash = s.strip_suffix(".wasm").unwrap_or(s);
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Why a job did not finish: its root cause, and why it was not restarted.
async fn print_failure(c: &Client, job: &str, detail: &JobDetail) -> anyhow::Result<()> {
    let exceptions: Exceptions = c.get_as(&format!("/jobs/{job}/exceptions")).await?;
    let root = exceptions.exception_history.entries.first();
    match (detail.state.as_str(), root) {
        ("CANCELED", _) => eprintln!("error: job {job} was cancelled"),
        (_, Some(e)) => {
            eprintln!(
                "error: {}{}",
                e.task_name
                    .as_deref()
                    .map(|t| format!("{t}: "))
                    .unwrap_or_default(),
                e.stacktrace
            );
            if let Some(why) = &detail.not_restarted {
                eprintln!("not restarted: {why}");
            }
        }
        (state, None) => eprintln!("error: job {job} ended {state}"),
    }
    Ok(())
}

/// Triggers a savepoint (`action` is `savepoints` or `stop`) and waits for
/// it; its location.
async fn savepoint(
    c: &Client,
    job: &str,
    action: &str,
    body: &impl serde::Serialize,
    quiet: bool,
) -> anyhow::Result<String> {
    let answer: api::TriggerResponse = c
        .send_as(
            c.http
                .post(c.url(&format!("/jobs/{job}/{action}")))
                .json(body),
        )
        .await?;
    let trigger = answer.request_id;
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_message(format!("savepoint of {job}"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let result = loop {
        tick.tick().await;
        let status: SavepointStatus = c
            .get_as(&format!("/jobs/{job}/savepoints/{trigger}"))
            .await?;
        let Some(op) = status.operation else {
            continue;
        };
        break match op.location {
            Some(location) => Ok(location),
            None => Err(anyhow::anyhow!(
                "the savepoint of job {job} failed: {}",
                op.failure_cause
                    .map_or_else(|| "no reason given".to_owned(), |f| f.stack_trace)
            )),
        };
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result
}

fn print_savepoint(job: &str, location: &str, json: bool) {
    if json {
        println!("{}", json!({"jobid": job, "location": location}));
    } else {
        println!("savepoint of {job} at {location}");
    }
}

/// Polls a job until it reaches a terminal state, with a spinner on a terminal.
async fn wait_for(c: &Client, job: &str, quiet: bool) -> anyhow::Result<JobDetail> {
    let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}").expect("invariant: valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let detail: JobDetail = c.get_as(&format!("/jobs/{job}")).await?;
        let state = detail.state.as_str();
        if let Some(bar) = &bar {
            let counts: Vec<String> = detail
                .vertices
                .iter()
                .map(|v| format!("{} {}", v.name, v.metrics.write_records))
                .collect();
            bar.set_message(format!(
                "{state} | {}",
                super::display::truncate(&counts.join(" | "), 200)
            ));
        }
        if matches!(state, "FINISHED" | "FAILED" | "CANCELED") {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            return Ok(detail);
        }
    }
}

fn print_job(d: &JobDetail) {
    println!(
        "job {}  {}  {}",
        d.jid,
        d.state,
        super::display::truncate(&d.name, 200)
    );
    let restarts = d.attempt;
    println!(
        "  started {}, ran {}, {} restart{}",
        time(d.start_time),
        duration(d.duration),
        restarts,
        if restarts == 1 { "" } else { "s" }
    );
    for (name, id) in &d.links {
        println!("  linked as {name}: application {id}");
    }
    let mut rows = Vec::new();
    for v in &d.vertices {
        for n in &v.nodes {
            rows.push(vec![
                v.name.clone(),
                v.status.clone(),
                v.parallelism.to_string(),
                n.name.clone(),
                n.read_records.to_string(),
                n.write_records.to_string(),
            ]);
        }
    }
    print_table(
        &["TASK", "STATUS", "P", "NODE", "RECORDS IN", "RECORDS OUT"],
        &rows,
    );
}

/// Checkpoint counts and the newest completed and failed checkpoint.
fn print_checkpoints(cp: &CheckpointsView) {
    let n = &cp.counts;
    if n.total == 0 && n.restored == 0 {
        println!("checkpoints: none taken");
        return;
    }
    println!(
        "checkpoints: {} completed, {} failed, {} in progress, {} restored",
        n.completed, n.failed, n.in_progress, n.restored
    );
    let latest = &cp.latest;
    let kept = [
        ("latest", &latest.completed),
        ("latest savepoint", &latest.savepoint),
    ];
    for (what, c) in kept {
        let Some(c): &Option<CheckpointEntry> = c else {
            continue;
        };
        println!(
            "  {what}: chk-{} at {}, took {}, {}: {}",
            c.id,
            time(c.latest_ack_timestamp),
            duration(c.end_to_end_duration),
            size(c.state_size),
            c.external_path
        );
    }
    if let Some(failed) = &latest.failed {
        println!(
            "  latest failed: chk-{} at {}: {}",
            failed.id,
            time(failed.failure_timestamp.unwrap_or(0)),
            super::display::truncate(failed.failure_message.as_deref().unwrap_or(""), 300)
        );
    }
    if let Some(restored) = &latest.restored {
        println!("  restored from: {}", restored.external_path);
    }
}

/// The job's failures, newest first, each with its root cause.
fn print_exceptions(exceptions: &Exceptions, detail: &JobDetail) {
    let entries = &exceptions.exception_history.entries;
    if entries.is_empty() {
        return;
    }
    println!("failures (newest first):");
    for e in entries {
        println!(
            "  run {}, {}: {}{}",
            e.attempt,
            time(e.timestamp),
            e.task_name
                .as_deref()
                .map(|t| format!("{t}: "))
                .unwrap_or_default(),
            super::display::truncate(&e.stacktrace, 2000)
        );
        let others = e.concurrent_exceptions.len();
        if others > 0 {
            println!("    then {others} other task(s) failed, most as a consequence");
        }
    }
    if let Some(why) = &detail.not_restarted {
        println!("not restarted: {why}");
    }
    if let Some(what) = &detail.waiting_for {
        println!("waiting for {what}");
    }
}
