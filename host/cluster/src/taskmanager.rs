//! The TaskManager process: registers its slots with the JobManager, runs
//! the tasks it is given on the shared task core (`sluice_runtime::task`),
//! and carries their records to and from other TaskManagers over QUIC.
//!
//! Tasks run on threads and talk through bounded in-process channels, as
//! in the mini-cluster. A channel whose other end is on another
//! TaskManager gets a bridge thread: outbound, it drains the channel into
//! a QUIC stream (blocking while QUIC's flow control says the peer is
//! behind, which fills the channel and so holds back only that producer);
//! inbound, it reads frames from the stream into the channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use crossbeam_channel::{Receiver, Sender, bounded};
use quinn::{Connection, Endpoint, RecvStream};
use sluice_connectors::Connectors;
use sluice_coord::{TaskFailure, TaskId, TaskStatus};
use sluice_runtime::snapshot::{
    AbortedCheckpoints, CheckpointNotice, Checkpointing, TakenSnapshot, TaskSnapshot,
};
use sluice_runtime::task::{self, TaskContext};
use sluice_runtime::{Components, TaskCounters};
use sluice_share::{Account, Caps, Gate};
use sluice_state::{S3Options, Storage};
use sluice_transport::{Identity, JoinToken, frame};
use sluice_types::{Event, JobId};
use sluice_wasm::App;
use tokio::sync::{Notify, mpsc};

use crate::dataplane;
use crate::protocol::{
    DataHeader, Deployment, Hello, JoinRequest, JoinResponse, PROTOCOL_VERSION, Peer, PeerAnswer,
    PeerHello, ToJobManager, ToTaskManager, Welcome,
};

/// Batches a channel holds before its producer blocks.
const CHANNEL_CAPACITY: usize = 8;
/// How long a TaskManager waits for a peer to connect to it.
const PEER_WAIT: Duration = Duration::from_secs(15);

/// How to start a TaskManager.
#[derive(Clone, Debug)]
pub struct TaskManagerConfig {
    /// The JobManager's cluster RPC address (`HOST:PORT`).
    pub jobmanager: String,
    /// Slots offered.
    pub slots: u32,
    /// Address of this TaskManager's QUIC endpoint (control and data).
    pub rpc_addr: SocketAddr,
    /// Where the certificate and the component cache live.
    pub data_dir: PathBuf,
    /// A join token, needed until the TaskManager has a certificate.
    pub token: Option<JoinToken>,
    /// Relative file paths in jobs resolve against this directory.
    pub base_dir: Option<PathBuf>,
    /// Addresses to serve `/metrics` on: the first one free is taken (so
    /// several TaskManagers on one host can share a port range). Empty: no
    /// metrics endpoint.
    pub metrics_addrs: Vec<SocketAddr>,
    /// Cores the fair gate hands out to tenants' tasks (`None`: all of the
    /// machine's); with `Some(0)` there is no gate and the OS schedules
    /// task threads as it likes (for measuring what the gate costs).
    pub cores: Option<usize>,
    /// Where deployed components are compiled (see `sluice_wasm::Compiler`).
    pub compiler: sluice_wasm::Compiler,
    /// A peer (the JobManager, another TaskManager) whose connection is
    /// silent this long is lost; a connection uses the smaller of its two
    /// ends' values.
    pub peer_timeout: Duration,
}

/// Where a started TaskManager listens.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TaskManagerEndpoints {
    /// Its QUIC endpoint.
    pub rpc: SocketAddr,
    /// Its Prometheus endpoint, if any.
    pub metrics: Option<SocketAddr>,
}

type RunKey = (JobId, u32);

/// Tasks of one job run on this TaskManager.
struct Run {
    /// Dropped to cancel every task of the run.
    cancel: Option<Sender<()>>,
    /// The job's name, for metric labels.
    name: String,
    /// The job's tenant, for metric labels.
    tenant: String,
    tasks: Vec<RunTask>,
    remaining: usize,
    /// Source tasks' checkpoint triggers.
    triggers: HashMap<TaskId, Sender<u64>>,
    /// Every task's checkpoint notices.
    notices: Vec<Sender<CheckpointNotice>>,
    /// Failed checkpoints, whose queued snapshots are not uploaded.
    aborted: AbortedCheckpoints,
}

/// One subtask of a run.
struct RunTask {
    id: TaskId,
    /// The vertex's name.
    name: String,
    /// The slot it occupies on this TaskManager.
    slot: u32,
    counters: Arc<TaskCounters>,
    ended: bool,
    /// Whether its source is read on a thread of its own.
    reads_ahead: bool,
}

impl RunTask {
    fn publish(&self, job: &JobId, tenant: &str, job_name: &str) {
        crate::metrics::publish_task(
            &crate::metrics::TaskLabels {
                tenant,
                job,
                job_name,
                task_name: &self.name,
                subtask: self.id.subtask,
            },
            &self.counters,
        );
    }
}

enum Inbound {
    /// The consumer is deployed; the stream has not arrived.
    Waiting(Sender<Event>, Receiver<()>),
    /// The stream arrived before the consumer was deployed.
    Arrived(RecvStream),
}

struct Shared {
    id: Mutex<String>,
    endpoint: Endpoint,
    handle: tokio::runtime::Handle,
    connectors: Arc<Connectors>,
    slots: u32,
    peers: Mutex<HashMap<String, Connection>>,
    peers_changed: Notify,
    /// Fingerprints (hex) of the TaskManager certificates an admin
    /// removed, as the JobManager last said: peers presenting one are
    /// refused and their connections closed.
    revoked: Mutex<std::collections::HashSet<String>>,
    inbound: Mutex<HashMap<DataHeader, Inbound>>,
    runs: Mutex<HashMap<RunKey, Run>>,
    /// Fuel burnt by each tenant's ended tasks on this TaskManager: with
    /// the running tasks' fuel, the per-tenant counter that bills it.
    ended_fuel: Mutex<HashMap<String, u64>>,
    /// Runs cancelled before their deployment here was ready (loading a
    /// component can take seconds): they are never started. The newest
    /// few hundred are remembered.
    cancelled: Mutex<std::collections::VecDeque<RunKey>>,
    /// The engine with a runtime per policy, and loaded apps by
    /// component hash and policy name.
    runtimes: sluice_wasm::Runtimes,
    apps: Mutex<LoadedApps>,
    /// The cores, shared fairly between tenants (see `sluice_share`).
    gate: Option<Gate>,
    /// Each tenant's instances and guest memory here, with its caps.
    tenants: Mutex<HashMap<String, Account>>,
    /// What compiling each tenant's components cost here.
    compiles: crate::compiles::Compiles,
    to_jm: Mutex<Option<mpsc::UnboundedSender<ToJobManager>>>,
}

/// Runs a TaskManager until the process is stopped; `ready` hears where it
/// listens once it does.
pub async fn run(
    config: TaskManagerConfig,
    ready: impl FnOnce(&TaskManagerEndpoints),
) -> anyhow::Result<()> {
    let jm_addr = tokio::net::lookup_host(&config.jobmanager)
        .await
        .with_context(|| {
            format!(
                "cannot resolve the JobManager address `{}`",
                config.jobmanager
            )
        })?
        .next()
        .with_context(|| format!("`{}` resolves to no address", config.jobmanager))?;
    let tls_dir = config.data_dir.join("tls");
    let identity = if Identity::exists(&tls_dir) {
        Identity::load(&tls_dir)?
    } else {
        let Some(token) = config.token else {
            bail!(
                "this TaskManager has no cluster certificate in {} yet: start it once with \
                 `--token TOKEN` (the JobManager prints the token at start, and keeps it in \
                 its data directory under tls/join-token)",
                tls_dir.display()
            );
        };
        let id = join(jm_addr, &token, config.peer_timeout).await?;
        id.save(&tls_dir)?;
        tracing::info!(dir = %tls_dir.display(), "joined the cluster; certificate saved");
        id
    };
    let mut endpoint = sluice_transport::bind(
        config.rpc_addr,
        Some(sluice_transport::server_config(
            &identity,
            false,
            config.peer_timeout,
        )?),
    )?;
    endpoint.set_default_client_config(sluice_transport::client_config(
        &identity,
        config.peer_timeout,
    )?);
    let local = endpoint.local_addr()?;
    let io = tokio::runtime::Handle::current();
    let connectors = Connectors::new(&io, config.base_dir.clone())
        .map_err(|e| anyhow::anyhow!("cannot set up connectors: {e}"))?;
    let shared = Arc::new(Shared {
        id: Mutex::new(String::new()),
        endpoint: endpoint.clone(),
        handle: io,
        connectors: Arc::new(connectors),
        slots: config.slots,
        peers: Mutex::new(HashMap::new()),
        peers_changed: Notify::new(),
        revoked: Mutex::new(std::collections::HashSet::new()),
        inbound: Mutex::new(HashMap::new()),
        runs: Mutex::new(HashMap::new()),
        ended_fuel: Mutex::new(HashMap::new()),
        cancelled: Mutex::new(std::collections::VecDeque::new()),
        runtimes: sluice_wasm::Runtimes::new(crate::runtime_options(
            config.slots,
            config.data_dir.join("cache"),
            config.compiler.clone(),
        )),
        apps: Mutex::new(LoadedApps::default()),
        gate: match config.cores {
            Some(0) => None,
            Some(n) => Some(Gate::new(n)),
            None => Some(Gate::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        },
        tenants: Mutex::new(HashMap::new()),
        compiles: Default::default(),
        to_jm: Mutex::new(None),
    });
    tokio::spawn(accept_peers(shared.clone()));
    let metrics = match serve_metrics(&config.metrics_addrs, shared.clone()).await? {
        Some(addr) => {
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            Some(addr)
        }
        None => None,
    };
    ready(&TaskManagerEndpoints {
        rpc: local,
        metrics,
    });
    let name = format!("{}", local);
    let mut backoff = Duration::from_millis(200);
    loop {
        match control_session(&shared, jm_addr, &name).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(e) if e.downcast_ref::<RegistrationRefused>().is_some() => {
                cancel_all(&shared);
                return Err(e);
            }
            Err(e) => tracing::warn!("JobManager session ended: {}", crate::error_chain(&e)),
        }
        // Without a JobManager nobody can see or coordinate the tasks:
        // stop them, as Flink's TaskManagers do, and register again.
        cancel_all(&shared);
        *lock(&shared.to_jm) = None;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Serves `/metrics` on the first free address of `addrs`.
async fn serve_metrics(
    addrs: &[SocketAddr],
    shared: Arc<Shared>,
) -> anyhow::Result<Option<SocketAddr>> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let mut last_error = None;
    for addr in addrs {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let local = listener.local_addr()?;
                crate::metrics::install();
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let shared = shared.clone();
                        async move {
                            publish_metrics(&shared);
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                crate::metrics::render(),
                            )
                        }
                    }),
                );
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!("the metrics endpoint stopped: {e}");
                    }
                });
                return Ok(Some(local));
            }
            Err(e) => last_error = Some((addr, e)),
        }
    }
    let (addr, e) = last_error.expect("invariant: addrs is not empty");
    Err(anyhow::anyhow!(e)).with_context(|| {
        if addrs.len() > 1 {
            format!(
                "cannot serve metrics on any of {} to {}: the last error was for {addr}",
                addrs[0],
                addrs[addrs.len() - 1]
            )
        } else {
            format!("cannot serve metrics on {addr}")
        }
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gets a certificate from the JobManager with a join token.
async fn join(
    jm: SocketAddr,
    token: &JoinToken,
    peer_timeout: Duration,
) -> anyhow::Result<Identity> {
    let unspecified: SocketAddr = if jm.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("invariant: a literal address");
    let endpoint = sluice_transport::bind(unspecified, None)?;
    let conn = endpoint
        .connect_with(
            sluice_transport::join_client_config(token.ca_fingerprint, peer_timeout)?,
            jm,
            sluice_transport::server_name(),
        )?
        .await
        .with_context(|| {
            format!(
                "cannot join the cluster at {jm}: the handshake failed (is the JobManager \
                 running there, and is the token from this cluster?)"
            )
        })?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let name = hostname();
    frame::write(
        &mut send,
        &JoinRequest {
            protocol: PROTOCOL_VERSION,
            secret: token.secret,
            name,
        },
    )
    .await?;
    let _ = send.finish();
    let response: Option<JoinResponse> = frame::read(&mut recv).await?;
    conn.close(0u32.into(), b"joined");
    match response {
        Some(JoinResponse::Issued { ca, cert, key }) => Ok(Identity {
            ca: ca.into(),
            cert: cert.into(),
            key,
        }),
        Some(JoinResponse::Refused(reason)) => bail!("the JobManager refused to join: {reason}"),
        None => bail!("the JobManager closed the join stream without an answer"),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "taskmanager".into())
}

/// The JobManager refused this TaskManager for good (another protocol
/// version, a removed certificate): trying again cannot help, so the
/// process ends with the reason.
#[derive(Debug, thiserror::Error)]
#[error("the JobManager refused registration: {0}")]
struct RegistrationRefused(String);

/// One registration with the JobManager, until the connection ends.
async fn control_session(shared: &Arc<Shared>, jm: SocketAddr, name: &str) -> anyhow::Result<()> {
    let conn = shared
        .endpoint
        .connect(jm, sluice_transport::server_name())?
        .await
        .with_context(|| format!("cannot connect to the JobManager at {jm}"))?;
    let (mut send, mut recv) = conn.open_bi().await?;
    let local = shared.endpoint.local_addr()?;
    frame::write(
        &mut send,
        &Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            slots: shared.slots,
            data_port: local.port(),
            name: name.into(),
        },
    )
    .await?;
    let (id, heartbeat) = match frame::read::<Welcome>(&mut recv).await? {
        Some(Welcome::Accepted {
            id,
            heartbeat_secs,
            revoked,
        }) => {
            set_revoked(shared, revoked);
            (id, Duration::from_secs(heartbeat_secs.max(1) as u64))
        }
        Some(Welcome::Refused(reason)) => return Err(RegistrationRefused(reason).into()),
        None => bail!("the JobManager closed the connection during registration"),
    };
    tracing::info!(%id, %jm, slots = shared.slots, "registered with the JobManager");
    *lock(&shared.id) = id;
    let (tx, mut rx) = mpsc::unbounded_channel::<ToJobManager>();
    *lock(&shared.to_jm) = Some(tx);
    let writer = async {
        while let Some(msg) = rx.recv().await {
            frame::write(&mut send, &msg).await?;
        }
        anyhow::Ok(())
    };
    let reader = async {
        while let Some(msg) = frame::read::<ToTaskManager>(&mut recv).await? {
            match msg {
                ToTaskManager::Deploy(d) => {
                    let shared = shared.clone();
                    tokio::task::spawn_blocking(move || deploy(&shared, *d));
                }
                ToTaskManager::Cancel { job, attempt } => cancel(shared, (job, attempt)),
                ToTaskManager::Revoked { fingerprints } => set_revoked(shared, fingerprints),
                ToTaskManager::TriggerCheckpoint {
                    job,
                    attempt,
                    checkpoint,
                    tasks,
                } => {
                    if let Some(run) = lock(&shared.runs).get(&(job, attempt)) {
                        for t in tasks {
                            if let Some(tx) = run.triggers.get(&t) {
                                let _ = tx.send(checkpoint);
                            }
                        }
                    }
                }
                ToTaskManager::CheckpointNotice {
                    job,
                    attempt,
                    notice,
                } => {
                    if let Some(run) = lock(&shared.runs).get(&(job, attempt)) {
                        if let CheckpointNotice::Abort(id) = notice {
                            run.aborted.insert(id);
                        }
                        for tx in &run.notices {
                            let _ = tx.send(notice);
                        }
                    }
                }
            }
        }
        anyhow::Ok(())
    };
    let heartbeats = async {
        let mut tick = tokio::time::interval(heartbeat);
        loop {
            tick.tick().await;
            heartbeat_now(shared);
        }
    };
    tokio::select! {
        r = writer => r,
        r = reader => r,
        () = heartbeats => Ok(()),
    }
}

fn send_jm(shared: &Shared, msg: ToJobManager) {
    if let Some(tx) = lock(&shared.to_jm).as_ref() {
        let _ = tx.send(msg);
    }
}

fn counts_of(c: &TaskCounters) -> Vec<(u64, u64)> {
    c.nodes
        .iter()
        .map(|(_, n)| {
            (
                n.records_in.load(Ordering::Relaxed),
                n.records_out.load(Ordering::Relaxed),
            )
        })
        .collect()
}

/// Publishes the metrics of every task still running, and this
/// TaskManager's gauges.
fn publish_metrics(shared: &Shared) {
    let runs = lock(&shared.runs);
    let mut slots = std::collections::HashSet::new();
    let mut fuel = lock(&shared.ended_fuel).clone();
    for (&(job, _), run) in runs.iter() {
        for t in run.tasks.iter().filter(|t| !t.ended) {
            t.publish(&job, &run.tenant, &run.name);
            slots.insert(t.slot);
            *fuel.entry(run.tenant.clone()).or_default() +=
                t.counters.fuel_consumed.load(Ordering::Relaxed);
        }
    }
    drop(runs);
    for (tenant, fuel) in &fuel {
        crate::metrics::publish_tenant_fuel(tenant, *fuel);
    }
    for share in tenant_shares(shared) {
        crate::metrics::publish_tenant_share(&share);
    }
    crate::metrics::publish_taskmanager(shared.slots, slots.len() as u32);
}

fn heartbeat_now(shared: &Shared) {
    let runs = lock(&shared.runs);
    let mut running = 0;
    for (&(job, attempt), run) in runs.iter() {
        running += run.remaining as u32;
        for t in &run.tasks {
            send_jm(
                shared,
                ToJobManager::TaskCounts {
                    job,
                    attempt,
                    task: t.id,
                    nodes: counts_of(&t.counters),
                    fuel: t.counters.fuel_consumed.load(Ordering::Relaxed),
                    cpu_ns: t.counters.cpu_ns.load(Ordering::Relaxed),
                },
            );
        }
    }
    drop(runs);
    publish_metrics(shared);
    send_jm(
        shared,
        ToJobManager::Heartbeat {
            running_tasks: running,
            tenants: tenant_shares(shared),
        },
    );
}

/// Each tenant's CPU (from the fair gate) and instances and memory (from
/// its account) on this TaskManager.
fn tenant_shares(shared: &Shared) -> Vec<crate::protocol::TenantShare> {
    let mut out: std::collections::BTreeMap<String, crate::protocol::TenantShare> =
        std::collections::BTreeMap::new();
    if let Some(gate) = &shared.gate {
        let lanes = gate.usage();
        let busy_weight = |except: &str| -> u64 {
            lanes
                .iter()
                .filter(|l| l.tenant != except && (l.holding > 0 || l.waiting > 0))
                .map(|l| l.weight)
                .sum()
        };
        for l in &lanes {
            let cores = gate.cores() as f64;
            let fair = cores * l.weight as f64 / (l.weight + busy_weight(&l.tenant)) as f64;
            out.insert(
                l.tenant.clone(),
                crate::protocol::TenantShare {
                    tenant: l.tenant.clone(),
                    cpu_shares: l.weight,
                    cpu_cores_limit: l.ceiling,
                    entitled_cores: l.ceiling.map_or(fair, |c| fair.min(c)),
                    cpu_ns: l.used_ns,
                    wait_ns: l.waited_ns,
                    throttled_ns: l.throttled_ns,
                    ..Default::default()
                },
            );
        }
    }
    for (tenant, account) in lock(&shared.tenants).iter() {
        let caps = account.caps();
        let share = out
            .entry(tenant.clone())
            .or_insert_with(|| crate::protocol::TenantShare {
                tenant: tenant.clone(),
                ..Default::default()
            });
        share.instances = account.instances();
        share.instances_limit = caps.instances.map(|c| c.0);
        share.memory_bytes = account.memory_bytes();
        share.memory_limit_bytes = caps.memory_bytes.map(|c| c.0);
    }
    for (tenant, compiled) in shared.compiles.all() {
        let share = out
            .entry(tenant.clone())
            .or_insert_with(|| crate::protocol::TenantShare {
                tenant,
                ..Default::default()
            });
        share.compilations = compiled.compilations;
        share.compile_cpu_ns = compiled.cpu_ns;
    }
    out.into_values().collect()
}

/// Runs remembered as cancelled before they started.
const CANCELLED_KEPT: usize = 512;

fn cancel(shared: &Shared, key: RunKey) {
    let mut runs = lock(&shared.runs);
    if let Some(run) = runs.get_mut(&key) {
        run.cancel = None;
    } else {
        let mut cancelled = lock(&shared.cancelled);
        if !cancelled.contains(&key) {
            if cancelled.len() >= CANCELLED_KEPT {
                cancelled.pop_front();
            }
            cancelled.push_back(key);
        }
    }
    drop(runs);
    // Streams that arrived for a run that is going away are dropped, which
    // tells their producers to stop.
    lock(&shared.inbound).retain(|h, _| (h.job, h.attempt) != key);
}

fn cancel_all(shared: &Shared) {
    let keys: Vec<RunKey> = lock(&shared.runs).keys().copied().collect();
    for k in keys {
        cancel(shared, k);
    }
}

/// Starts the tasks of one deployment (on a blocking thread: loading a
/// component may compile it).
fn deploy(shared: &Arc<Shared>, d: Deployment) {
    let key = (d.job, d.attempt);
    let tasks: Vec<String> = d
        .tasks
        .iter()
        .map(|(_, t)| format!("{} ({}/{})", t.name, t.task.subtask + 1, t.parallelism))
        .collect();
    tracing::info!(
        job = %d.job,
        attempt = d.attempt,
        task = %crate::truncate(&tasks.join(", "), 300),
        restore = d.restore.as_ref().map_or(0, |r| r.checkpoint),
        "deploying {} task(s)",
        d.tasks.len()
    );
    let fail_all = |msg: String| {
        for (_, t) in &d.tasks {
            send_jm(
                shared,
                ToJobManager::TaskStatus {
                    job: d.job,
                    attempt: d.attempt,
                    task: t.task,
                    status: TaskStatus::Failed(TaskFailure::recoverable(msg.clone())),
                },
            );
        }
    };
    let components = match load_components(shared, &d) {
        Ok(c) => c,
        Err(e) => {
            return fail_all(format!(
                "cannot load the component on this TaskManager: {e:#}"
            ));
        }
    };
    let storage = match &d.checkpoints {
        Some(c) => match Storage::open(&c.storage, &S3Options::from_env()) {
            Ok(s) => Some(s),
            Err(e) => return fail_all(format!("cannot open the checkpoint storage: {e}")),
        },
        None => None,
    };
    let mut restore = match fetch_snapshots(shared, storage.as_ref(), &d) {
        Ok(r) => r,
        Err(e) => {
            if let Some(r) = &d.restore {
                send_jm(
                    shared,
                    ToJobManager::RestoreFailed {
                        job: d.job,
                        attempt: d.attempt,
                        checkpoint: r.checkpoint,
                    },
                );
            }
            return fail_all(e);
        }
    };
    let (cancel_tx, cancel_rx) = bounded::<()>(0);
    // Every channel with an end here gets an in-process queue.
    let mut channels: HashMap<u32, (Sender<Event>, Receiver<Event>)> = HashMap::new();
    for (_, t) in &d.tasks {
        let ids = t
            .inputs
            .iter()
            .map(|(ch, _)| *ch)
            .chain(t.outputs.iter().flat_map(|o| o.channels.iter().copied()));
        for ch in ids {
            channels
                .entry(ch)
                .or_insert_with(|| bounded(CHANNEL_CAPACITY));
        }
    }
    for peer in &d.connect_to {
        let shared2 = shared.clone();
        let peer = peer.clone();
        shared.handle.spawn(async move {
            if let Err(e) = connect_peer(&shared2, &peer).await {
                tracing::warn!(peer = %peer.id, "cannot connect to a TaskManager: {}", crate::error_chain(&e));
            }
        });
    }
    for (ch, peer) in &d.remote_consumers {
        let Some((_, rx)) = channels.get(ch) else {
            continue;
        };
        let header = DataHeader {
            job: d.job,
            attempt: d.attempt,
            channel: *ch,
        };
        let (shared2, rx, peer) = (shared.clone(), rx.clone(), peer.clone());
        spawn_thread(format!("out-{ch}"), move || {
            outbound(&shared2, header, &peer, &rx)
        });
    }
    for ch in &d.remote_producers {
        let Some((tx, _)) = channels.get(ch) else {
            continue;
        };
        let header = DataHeader {
            job: d.job,
            attempt: d.attempt,
            channel: *ch,
        };
        let mut inbound = lock(&shared.inbound);
        match inbound.remove(&header) {
            Some(Inbound::Arrived(stream)) => {
                drop(inbound);
                start_inbound(shared, stream, tx.clone(), cancel_rx.clone());
            }
            _ => {
                inbound.insert(header, Inbound::Waiting(tx.clone(), cancel_rx.clone()));
            }
        }
    }
    let mut run = Run {
        cancel: Some(cancel_tx),
        name: d.name.clone(),
        tenant: d.tenant.clone(),
        tasks: Vec::new(),
        remaining: d.tasks.len(),
        triggers: HashMap::new(),
        notices: Vec::new(),
        aborted: AbortedCheckpoints::default(),
    };
    // Snapshots are stored by one thread per run, so tasks go on at once.
    let snapshots = match (&storage, &d.checkpoints) {
        (Some(storage), Some(settings)) => {
            let (tx, rx) = crossbeam_channel::unbounded::<TakenSnapshot>();
            let (shared2, storage) = (shared.clone(), storage.clone());
            let aborted = run.aborted.clone();
            let (job, attempt) = key;
            spawn_thread(format!("snapshots-{job}"), move || {
                store_snapshots(&shared2, &storage, (job, attempt), &aborted, &rx)
            });
            Some((tx, settings.mode))
        }
        _ => None,
    };
    let task_ids: Vec<TaskId> = d.tasks.iter().map(|(_, t)| t.task).collect();
    let lane = shared.gate.as_ref().map(|g| {
        let limits = &d.policy.limits;
        g.lane(
            &d.tenant,
            limits.cpu_shares,
            limits.cpu_cores.map(sluice_policy::Cores::get),
        )
    });
    let accounts = vec![tenant_account(shared, &d), run_account(&d)];
    // The threads running here once these start (tasks, and the readers of
    // the sources that read ahead), against the cores they share.
    let (mut tasks, mut sources) = (0, 0);
    for t in lock(&shared.runs).values().flat_map(|r| &r.tasks) {
        tasks += usize::from(!t.ended);
        sources += usize::from(!t.ended && t.reads_ahead);
    }
    tasks += d.tasks.len();
    sources += d
        .tasks
        .iter()
        .filter(|(_, t)| sluice_runtime::polls_a_host_source(&t.nodes))
        .count();
    let cores = shared
        .gate
        .as_ref()
        .map_or_else(sluice_runtime::cores, Gate::cores);
    let read_ahead = sluice_runtime::read_ahead_pays(tasks, sources, cores);
    let mut starts = Vec::new();
    for (slot, t) in d.tasks {
        let counters = Arc::new(TaskCounters::new(&t.nodes));
        run.tasks.push(RunTask {
            id: t.task,
            name: t.name.clone(),
            slot,
            counters: counters.clone(),
            ended: false,
            reads_ahead: read_ahead && sluice_runtime::polls_a_host_source(&t.nodes),
        });
        let ctx = TaskContext {
            components: components.clone(),
            connectors: shared.connectors.clone(),
            policy: d.policy.name.clone(),
            inputs: t
                .inputs
                .iter()
                .map(|(ch, input)| (channels[ch].1.clone(), *input))
                .collect(),
            outputs: t
                .outputs
                .iter()
                .flat_map(|o| o.channels.iter())
                .map(|ch| (*ch, channels[ch].0.clone()))
                .collect(),
            cancel: cancel_rx.clone(),
            counters,
            checkpointing: snapshots.as_ref().map(|(tx, mode)| {
                let (trigger_tx, triggers) = crossbeam_channel::unbounded();
                let (notice_tx, notices) = crossbeam_channel::unbounded();
                if t.inputs.is_empty() {
                    run.triggers.insert(t.task, trigger_tx);
                }
                run.notices.push(notice_tx);
                Checkpointing {
                    mode: match mode {
                        sluice_coord::CheckpointingMode::ExactlyOnce => {
                            sluice_task::AlignmentMode::Aligned
                        }
                        sluice_coord::CheckpointingMode::AtLeastOnce => {
                            sluice_task::AlignmentMode::Unaligned
                        }
                    },
                    triggers,
                    notices,
                    snapshots: tx.clone(),
                }
            }),
            restore: restore.remove(&t.task),
            job: d.job,
            // A savepoint of this run may name them; its restore publishes them.
            discard_precommitted_on_cancel: false,
            lane: lane.clone(),
            read_ahead,
            accounts: accounts.clone(),
        };
        starts.push((t, ctx));
    }
    // Our ends go now, so that a task that ends is seen as a closed channel.
    drop(channels);
    {
        let mut runs = lock(&shared.runs);
        if lock(&shared.cancelled).contains(&key) {
            drop(runs);
            tracing::info!(job = %key.0, attempt = key.1, "cancelled while deploying; not started");
            for task in task_ids {
                send_jm(
                    shared,
                    ToJobManager::TaskStatus {
                        job: key.0,
                        attempt: key.1,
                        task,
                        status: TaskStatus::Canceled,
                    },
                );
            }
            return;
        }
        runs.insert(key, run);
    }
    for (t, ctx) in starts {
        let shared2 = shared.clone();
        let name = format!("task-{}-{}", t.task.vertex, t.task.subtask);
        spawn_thread(name, move || {
            task::run(t, ctx, &|task, status| {
                let terminal = matches!(
                    status,
                    TaskStatus::Finished | TaskStatus::Failed(_) | TaskStatus::Canceled
                );
                if terminal {
                    task_ended(&shared2, key, task);
                }
                send_jm(
                    &shared2,
                    ToJobManager::TaskStatus {
                        job: key.0,
                        attempt: key.1,
                        task,
                        status,
                    },
                );
            })
        });
    }
}

/// Reads and checks the snapshots this deployment's tasks restore from.
fn fetch_snapshots(
    shared: &Shared,
    storage: Option<&Storage>,
    d: &Deployment,
) -> Result<HashMap<TaskId, TaskSnapshot>, String> {
    let Some(restore) = &d.restore else {
        return Ok(HashMap::new());
    };
    let storage = storage.ok_or("a restore without checkpoint storage")?;
    let tasks: Vec<(TaskId, u32, u32)> = d
        .tasks
        .iter()
        .map(|(_, t)| (t.task, t.parallelism, t.max_parallelism))
        .collect();
    sluice_runtime::snapshot::fetch(storage, &shared.handle, restore, &tasks)
}

/// Stores the snapshots a run's tasks take and acknowledges each to the
/// JobManager, but for checkpoints already aborted; ends when every task of
/// the run has ended.
fn store_snapshots(
    shared: &Shared,
    storage: &Storage,
    (job, attempt): RunKey,
    aborted: &AbortedCheckpoints,
    rx: &Receiver<TakenSnapshot>,
) {
    for taken in rx {
        let (checkpoint, task) = (taken.snapshot.checkpoint, taken.task);
        if aborted.contains(checkpoint) {
            tracing::debug!(%job, checkpoint, "not storing a snapshot of an aborted checkpoint");
            continue;
        }
        let stored = shared.handle.block_on(sluice_runtime::snapshot::store(
            storage,
            &job.to_string(),
            taken,
        ));
        let msg = match stored {
            Ok((_, _, handle)) => ToJobManager::CheckpointAck {
                job,
                attempt,
                checkpoint,
                task,
                handle,
            },
            Err(e) => {
                tracing::warn!(%job, checkpoint, "cannot store a snapshot: {e}");
                ToJobManager::CheckpointDecline {
                    job,
                    attempt,
                    checkpoint,
                    task,
                    reason: e.to_string(),
                }
            }
        };
        send_jm(shared, msg);
    }
}

fn spawn_thread(name: String, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().name(name).spawn(f) {
        tracing::error!("cannot start a thread: {e}");
    }
}

/// A task ended: its final counts go to the JobManager, and the run is
/// forgotten when its last task ends.
fn task_ended(shared: &Shared, key: RunKey, task: TaskId) {
    let mut runs = lock(&shared.runs);
    let Some(run) = runs.get_mut(&key) else {
        return;
    };
    if let Some(t) = run.tasks.iter_mut().find(|t| t.id == task) {
        t.ended = true;
        t.publish(&key.0, &run.tenant, &run.name);
        *lock(&shared.ended_fuel)
            .entry(run.tenant.clone())
            .or_default() += t.counters.fuel_consumed.load(Ordering::Relaxed);
        send_jm(
            shared,
            ToJobManager::TaskCounts {
                job: key.0,
                attempt: key.1,
                task,
                nodes: counts_of(&t.counters),
                fuel: t.counters.fuel_consumed.load(Ordering::Relaxed),
                cpu_ns: t.counters.cpu_ns.load(Ordering::Relaxed),
            },
        );
    }
    run.remaining = run.remaining.saturating_sub(1);
    if run.remaining == 0 {
        runs.remove(&key);
        drop(runs);
        lock(&shared.inbound).retain(|h, _| (h.job, h.attempt) != key);
    }
}

/// Instances one task slot may hold: the instance pool is sized for this
/// many per slot, and the instances of a run's tasks may not take more than
/// their slots' part of it (so no job, of any tenant, can use up the pool).
pub(crate) const INSTANCES_PER_SLOT: u64 = 8;

/// The tenant's account on this TaskManager, with its policy's caps.
fn tenant_account(shared: &Shared, d: &Deployment) -> Account {
    let limits = &d.policy.limits;
    let named = |cap: &str| format!("`{cap}` of policy `{}`", d.policy.name);
    let caps = Caps {
        instances: limits
            .max_instances_per_taskmanager
            .map(|n| (n, named("max_instances_per_taskmanager"))),
        memory_bytes: limits.max_memory_mib_per_taskmanager.map(|m| {
            (
                m.saturating_mul(1 << 20),
                named("max_memory_mib_per_taskmanager"),
            )
        }),
    };
    let mut tenants = lock(&shared.tenants);
    let account = tenants
        .entry(d.tenant.clone())
        .or_insert_with(|| Account::new(format!("tenant `{}`", d.tenant), caps.clone()));
    account.set_caps(caps);
    account.clone()
}

/// The account of one run's tasks here: [`INSTANCES_PER_SLOT`] instances
/// for each slot they were given.
fn run_account(d: &Deployment) -> Account {
    slots_account(&d.name, d.tasks.iter().map(|(slot, _)| *slot))
}

/// An account of [`INSTANCES_PER_SLOT`] instances per distinct slot.
fn slots_account(job: &str, slots: impl Iterator<Item = u32>) -> Account {
    let slots: std::collections::BTreeSet<u32> = slots.collect();
    let limit = (slots.len() as u64).saturating_mul(INSTANCES_PER_SLOT);
    Account::new(
        format!("job `{job}` ({} slot(s) here)", slots.len()),
        Caps {
            instances: Some((limit, format!("{INSTANCES_PER_SLOT} instances per slot"))),
            memory_bytes: None,
        },
    )
}

/// The deployment's components, loaded: its own and those linked to it
/// that its tasks run operators of.
fn load_components(shared: &Shared, d: &Deployment) -> anyhow::Result<Components> {
    let main = load_app(shared, d, &d.component_hash, &d.component)?;
    let used: std::collections::HashSet<&str> = d
        .tasks
        .iter()
        .flat_map(|(_, t)| t.nodes.iter().filter_map(|n| n.implementation.link()))
        .collect();
    let mut linked = Vec::new();
    for l in d.linked.iter().filter(|l| used.contains(l.link.as_str())) {
        let app = load_app(shared, d, &l.hash, &l.component)
            .with_context(|| format!("the component linked as `{}`", l.link))?;
        linked.push((l.link.clone(), app));
    }
    Components::linked(main, linked).map_err(anyhow::Error::msg)
}

fn load_app(shared: &Shared, d: &Deployment, hash: &str, wasm: &[u8]) -> anyhow::Result<App> {
    let key = (hash.to_owned(), d.policy.name.clone());
    // Loaded under this very policy: a policy of the same name that
    // changed (a reload) gets the app loaded again under its new limits.
    if let Some(app) = lock(&shared.apps).get(&key)
        && app.policy().limits == d.policy.limits
    {
        return Ok(app);
    }
    let (runtime, changed) = shared.runtimes.get(&d.policy)?;
    if changed {
        lock(&shared.apps).forget_policy(&d.policy.name);
    }
    let (loaded, cost) = runtime.load_metered(wasm);
    shared.compiles.record(&d.tenant, &cost, loaded.is_ok());
    let app = loaded?;
    lock(&shared.apps).insert(key, app.clone());
    Ok(app)
}

/// Loaded applications kept for the next deployment of the same component.
const MAX_LOADED_APPS: usize = 32;

/// Loaded applications by component hash and policy name, at most
/// [`MAX_LOADED_APPS`]: the least recently deployed one is dropped first
/// (running tasks hold their own reference; the compiled code stays in the
/// on-disk cache, itself bounded).
#[derive(Default)]
struct LoadedApps {
    apps: HashMap<(String, String), (App, u64)>,
    clock: u64,
}

impl LoadedApps {
    fn get(&mut self, key: &(String, String)) -> Option<App> {
        self.clock += 1;
        let (app, used) = self.apps.get_mut(key)?;
        *used = self.clock;
        Some(app.clone())
    }

    fn insert(&mut self, key: (String, String), app: App) {
        self.clock += 1;
        while self.apps.len() >= MAX_LOADED_APPS {
            let Some(oldest) = self
                .apps
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.apps.remove(&oldest);
        }
        self.apps.insert(key, (app, self.clock));
    }

    /// Drops the applications loaded under a policy that changed.
    fn forget_policy(&mut self, policy: &str) {
        self.apps.retain(|(_, p), _| p != policy);
    }
}

/// Connects to a peer (this side has the higher id) and serves the
/// streams it opens towards us.
async fn connect_peer(shared: &Arc<Shared>, peer: &Peer) -> anyhow::Result<()> {
    if lock(&shared.peers)
        .get(&peer.id)
        .is_some_and(|c| c.close_reason().is_none())
    {
        return Ok(());
    }
    let conn = shared
        .endpoint
        .connect(peer.addr, sluice_transport::server_name())?
        .await
        .with_context(|| format!("cannot connect to TaskManager {} at {}", peer.id, peer.addr))?;
    if let Some(why) = refusal(shared, &conn) {
        conn.close(2u32.into(), why.as_bytes());
        bail!("TaskManager {} at {}: {why}", peer.id, peer.addr);
    }
    let (mut send, mut recv) = conn.open_bi().await?;
    let id = lock(&shared.id).clone();
    frame::write(
        &mut send,
        &PeerHello {
            protocol: PROTOCOL_VERSION,
            id,
        },
    )
    .await?;
    let _ = send.finish();
    match frame::read::<PeerAnswer>(&mut recv).await? {
        Some(PeerAnswer::Accepted) => {}
        Some(PeerAnswer::Refused(why)) => {
            bail!(
                "TaskManager {} at {} refused this one: {why}",
                peer.id,
                peer.addr
            )
        }
        None => bail!(
            "TaskManager {} at {} closed the connection before answering",
            peer.id,
            peer.addr
        ),
    }
    add_peer(shared, peer.id.clone(), conn);
    Ok(())
}

/// Why a peer's connection is refused, if it is: its certificate was
/// removed from the cluster.
fn refusal(shared: &Shared, conn: &Connection) -> Option<String> {
    let Some(fingerprint) = sluice_transport::peer_fingerprint(conn) else {
        return Some("it presented no certificate".into());
    };
    lock(&shared.revoked)
        .contains(&hex::encode(fingerprint))
        .then(|| "its certificate was removed from the cluster".to_owned())
}

/// Takes the JobManager's list of removed certificates, and closes the
/// connections of peers that present one.
fn set_revoked(shared: &Shared, fingerprints: Vec<String>) {
    *lock(&shared.revoked) = fingerprints.into_iter().collect();
    let mut peers = lock(&shared.peers);
    let removed: Vec<String> = peers
        .iter()
        .filter(|(_, conn)| refusal(shared, conn).is_some())
        .map(|(id, _)| id.clone())
        .collect();
    for id in removed {
        if let Some(conn) = peers.remove(&id) {
            tracing::warn!(peer = %id, "closing the connection of a peer whose certificate was removed");
            conn.close(2u32.into(), b"certificate removed");
        }
    }
}

fn add_peer(shared: &Arc<Shared>, id: String, conn: Connection) {
    lock(&shared.peers).insert(id, conn.clone());
    shared.peers_changed.notify_waiters();
    tokio::spawn(serve_streams(shared.clone(), conn));
}

/// Accepts connections from peers with higher ids.
async fn accept_peers(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let result = async {
                let conn = incoming.await?;
                // The hello comes on the first bidirectional stream.
                let (mut send, mut recv) = conn.accept_bi().await?;
                let hello: PeerHello = frame::read(&mut recv)
                    .await?
                    .context("the peer closed before saying who it is")?;
                let refused = if hello.protocol != PROTOCOL_VERSION {
                    Some(format!(
                        "it speaks protocol {}, this TaskManager {PROTOCOL_VERSION}",
                        hello.protocol
                    ))
                } else {
                    refusal(&shared, &conn)
                };
                if let Some(why) = refused {
                    frame::write(&mut send, &PeerAnswer::Refused(why.clone())).await?;
                    let _ = send.finish();
                    let _ = send.stopped().await;
                    conn.close(1u32.into(), b"refused");
                    bail!(
                        "TaskManager {} at {}: {why}",
                        crate::truncate(&hello.id, 200),
                        conn.remote_address()
                    );
                }
                frame::write(&mut send, &PeerAnswer::Accepted).await?;
                let _ = send.finish();
                add_peer(&shared, hello.id, conn);
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!("refused a peer connection: {}", crate::error_chain(&e));
            }
        });
    }
}

/// Hands every data stream a peer opens to its consumer.
async fn serve_streams(shared: Arc<Shared>, conn: Connection) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let header: DataHeader = match frame::read(&mut recv).await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("a peer opened a data stream without a valid header: {e}");
                    return;
                }
            };
            let mut inbound = lock(&shared.inbound);
            match inbound.remove(&header) {
                Some(Inbound::Waiting(tx, cancel)) => {
                    drop(inbound);
                    start_inbound(&shared, recv, tx, cancel);
                }
                _ => {
                    inbound.insert(header, Inbound::Arrived(recv));
                }
            }
        });
    }
}

/// Reads one channel's frames into its queue, on a thread of its own.
fn start_inbound(
    shared: &Arc<Shared>,
    mut recv: RecvStream,
    tx: Sender<Event>,
    cancel: Receiver<()>,
) {
    let handle = shared.handle.clone();
    spawn_thread("in".into(), move || {
        loop {
            let event = match handle.block_on(dataplane::read(&mut recv)) {
                Ok(Some(e)) => e,
                // The producer's side ended (cleanly after end of input,
                // or not): dropping `tx` tells the consumer.
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("data stream ended: {e}");
                    return;
                }
            };
            let end = matches!(event, Event::EndOfInput);
            crossbeam_channel::select! {
                send(tx, event) -> r => if r.is_err() { return },
                recv(cancel) -> _ => return,
            }
            if end {
                return;
            }
        }
    });
}

/// Drains one channel's queue into a QUIC stream to its consumer.
fn outbound(shared: &Arc<Shared>, header: DataHeader, peer: &Peer, rx: &Receiver<Event>) {
    let result = shared.handle.block_on(async {
        let conn = peer_connection(shared, peer).await?;
        let mut send = conn.open_uni().await?;
        frame::write(&mut send, &header).await?;
        anyhow::Ok(send)
    });
    let mut send = match result {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(peer = %peer.id, channel = header.channel, "cannot open a data stream: {}", crate::error_chain(&e));
            return;
        }
    };
    loop {
        let Ok(event) = rx.recv() else {
            // The producer stopped without ending its output.
            let _ = send.reset(1u32.into());
            return;
        };
        let end = matches!(event, Event::EndOfInput);
        match shared.handle.block_on(dataplane::write(&mut send, event)) {
            Ok(()) => {}
            Err(e @ dataplane::DataFrameError::TooLarge(_)) => {
                // Not the consumer's doing: the stream is reset (not
                // finished, which would read as a clean end) and the cause
                // logged; producer and consumer then fail the run.
                tracing::warn!(channel = header.channel, "cannot send a batch: {e}");
                let _ = send.reset(2u32.into());
                return;
            }
            Err(e) => {
                tracing::debug!(
                    channel = header.channel,
                    "data stream closed by the consumer: {e}"
                );
                return;
            }
        }
        if end {
            let _ = send.finish();
            // Keep the stream until the peer has it all.
            let _ = shared.handle.block_on(send.stopped());
            return;
        }
    }
}

/// The connection to a peer: ours if we connect to it, else the one it
/// opens to us (waited for).
async fn peer_connection(shared: &Arc<Shared>, peer: &Peer) -> anyhow::Result<Connection> {
    let deadline = tokio::time::Instant::now() + PEER_WAIT;
    loop {
        let notified = shared.peers_changed.notified();
        if let Some(c) = lock(&shared.peers).get(&peer.id)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let my_id = lock(&shared.id).clone();
        if peer.id < my_id {
            connect_peer(shared, peer).await?;
            continue;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            bail!(
                "TaskManager {} did not connect within {PEER_WAIT:?}",
                peer.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_instances_are_bounded_by_its_slots_share_of_the_pool() {
        // Three tasks sharing two slots: 16 instances, then refused.
        let account = slots_account("wide", [0, 0, 1].into_iter());
        let claims: Vec<sluice_share::Claim> = (0..2 * INSTANCES_PER_SLOT)
            .map(|_| sluice_share::Claim::instance(std::slice::from_ref(&account)).expect("room"))
            .collect();
        let refused = sluice_share::Claim::instance(std::slice::from_ref(&account))
            .expect_err("over the slots' share");
        assert_eq!(
            refused.to_string(),
            "job `wide` (2 slot(s) here) reached 8 instances per slot: 16 instances on this process, 16 in use, 1 more requested"
        );
        drop(claims);
        assert_eq!(account.instances(), 0);
    }

    #[test]
    fn loaded_apps_keep_the_most_recently_used_within_their_bound() {
        let runtime = sluice_wasm::Runtime::new(
            sluice_policy::Policy::standard(),
            sluice_wasm::RuntimeOptions::default(),
        )
        .expect("engine");
        let wasm = std::fs::read(sluice_test_programs::WORDCOUNT).expect("built");
        let app = runtime.load(&wasm).expect("loads");
        let key = |i: usize| (format!("component-{i}"), "standard".to_owned());
        let mut apps = LoadedApps::default();
        for i in 0..MAX_LOADED_APPS {
            apps.insert(key(i), app.clone());
        }
        // The first one is used again; the second is now the oldest.
        assert!(apps.get(&key(0)).is_some());
        apps.insert(key(MAX_LOADED_APPS), app.clone());
        assert_eq!(apps.apps.len(), MAX_LOADED_APPS);
        assert!(apps.get(&key(1)).is_none(), "the least recently used left");
        assert!(apps.get(&key(0)).is_some() && apps.get(&key(MAX_LOADED_APPS)).is_some());
        apps.forget_policy("standard");
        assert!(apps.apps.is_empty());
    }
}
