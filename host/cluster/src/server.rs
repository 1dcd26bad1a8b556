//! The JobManager process: binds the REST and cluster (QUIC) ports,
//! creates the [`JobManager`] state, finishes what a predecessor left
//! undone, accepts joining TaskManagers (token for certificate) and members
//! (mutual TLS), feeds their messages to the JobManager, runs its timers and
//! serves the REST API. The JobManager itself (`crate::jobmanager`) knows
//! nothing of sockets or of the REST layer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use quinn::Connection;
use sluice_connectors::Connectors;
use sluice_policy::TenantId;
use sluice_policy::quota::{Holder, Ledger, Usage};
use sluice_state::{S3Options, Storage};
use sluice_transport::{ALPN_CLUSTER, ALPN_JOIN, ClusterCa, frame};
use sluice_types::JobId;
use tokio::sync::mpsc;

use crate::checkpoints::IoDone;
use crate::jobmanager::{HEARTBEAT_SECS, JobManager, JobManagerConfig, MAX_UPLOADS};
use crate::members::{INITIAL_TOKEN, MemberBook};
use crate::protocol::{
    Hello, JoinRequest, JoinResponse, PROTOCOL_VERSION, ToJobManager, Welcome, version_mismatch,
};
use crate::results::JobResultStore;
use crate::table::{Cluster, Spent, Tm, now_ms};
use crate::tenancy::Tenancy;

/// How long the checkpoint storage has to answer when the JobManager starts.
const STORAGE_PROBE: Duration = Duration::from_secs(15);

/// Where a running JobManager listens.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Endpoints {
    /// REST API.
    pub rest: SocketAddr,
    /// Cluster RPC.
    pub rpc: SocketAddr,
    /// The join token for TaskManagers.
    pub token: String,
    /// The admin token, only when this start created it (never written
    /// with the endpoints: it is in `DATA_DIR/credentials`).
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// Whether requests need a token.
    pub authenticated: bool,
}

/// Runs a JobManager until the process is stopped. `ready` is called once
/// both ports are bound.
pub async fn run(config: JobManagerConfig, ready: impl FnOnce(&Endpoints)) -> anyhow::Result<()> {
    let tls_dir = config.data_dir.join("tls");
    let ca = ClusterCa::load_or_create(&tls_dir)?;
    let token = ca.join_token(&tls_dir)?;
    let members_path = tls_dir.join("members.json");
    let mut members = MemberBook::load(&members_path)?;
    if !members.tokens.iter().any(|t| t.id == INITIAL_TOKEN) {
        let ttl = config.join_token_ttl.map(|t| t.as_millis() as u64);
        members.add_token(INITIAL_TOKEN, &token.secret, now_ms(), ttl);
        members.save(&members_path)?;
    }
    let identity = ca.issue("jobmanager")?;
    let endpoint = sluice_transport::bind(
        config.rpc_addr,
        Some(sluice_transport::server_config(
            &identity,
            true,
            config.peer_timeout,
        )?),
    )?;
    crate::metrics::install();
    let rest = tokio::net::TcpListener::bind(config.rest_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the REST API", config.rest_addr))?;
    let (tenancy, admin_token) = Tenancy::open(&config.data_dir, config.tenancy.clone(), now_ms())?;
    let connectors = Connectors::new(&tokio::runtime::Handle::current(), config.base_dir.clone())
        .map_err(|e| anyhow::anyhow!("cannot set up connectors: {e}"))?;
    // Fail at start, not at the first checkpoint, on a store that cannot work.
    Storage::open(&config.checkpoint_storage, &S3Options::from_env())
        .map_err(anyhow::Error::new)?
        .probe(STORAGE_PROBE)
        .await
        .map_err(anyhow::Error::new)?;
    let (io_done, mut io_rx) = mpsc::unbounded_channel();
    let results = JobResultStore::new(&config.data_dir.join("job-results"));
    let billed = billed_before(&results);
    let jm = Arc::new(JobManager {
        config: config.clone(),
        cluster: Mutex::new(Cluster {
            tms: BTreeMap::new(),
            jobs: BTreeMap::new(),
            jars: BTreeMap::new(),
            ledger: Ledger::default(),
            billed,
        }),
        connectors,
        rest_addr: Mutex::new(None),
        tenancy,
        runtimes: sluice_wasm::Runtimes::new(crate::runtime_options(
            2,
            config.data_dir.join("cache"),
            config.compiler.clone(),
        )),
        jars: crate::jars::JarStore::new(&config.data_dir),
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        checks: tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4)),
        ),
        tenant_checks: Mutex::new(HashMap::new()),
        compiles: Default::default(),
        ca,
        token,
        members: Mutex::new(members),
        members_path,
        io: tokio::runtime::Handle::current(),
        io_done,
        results,
        components: Mutex::new(HashMap::new()),
        deadline: tokio::sync::watch::Sender::new(None),
    });
    finish_cleanups(&jm);
    let io_jm = jm.clone();
    tokio::spawn(async move {
        while let Some(done) = io_rx.recv().await {
            let jm = io_jm.clone();
            let _ = tokio::task::spawn_blocking(move || jm.handle_io(done)).await;
        }
    });
    load_jars(&jm);
    let endpoints = Endpoints {
        rest: rest.local_addr()?,
        rpc: endpoint.local_addr()?,
        token: jm.token.to_string(),
        admin_token,
        authenticated: jm.tenancy.auth() == crate::tenancy::AuthMode::Token,
    };
    *jm.rest_addr
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(endpoints.rest);
    ready(&endpoints);
    tokio::spawn(accept(jm.clone(), endpoint));
    tokio::spawn(ticker(jm.clone()));
    #[cfg(unix)]
    {
        let reloader = jm.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A failure is logged; the previous configuration stays.
                let _ = reloader.reload_tenants("SIGHUP");
            }
        });
    }
    axum::serve(
        rest,
        crate::rest::router(jm).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
    .context("the REST server stopped")
}

/// The least time between two ticks, so that a deadline that stays due
/// (a heartbeat checked at the very millisecond it is overdue) cannot spin.
const MIN_TICK: Duration = Duration::from_millis(5);

/// Runs [`JobManager::tick`] when the deadline the last `drive` computed
/// is due, and sleeps otherwise: an idle JobManager does not wake up.
async fn ticker(jm: Arc<JobManager>) {
    let mut deadline = jm.deadline.subscribe();
    loop {
        let due = *deadline.borrow_and_update();
        let sleep = async {
            match due {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now_ms()));
                    tokio::time::sleep(wait.max(MIN_TICK)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            () = sleep => {}
        }
        let jm = jm.clone();
        // Drive on a blocking thread: the core's work is quick, but the
        // lock is shared with blocking submissions.
        let _ = tokio::task::spawn_blocking(move || jm.tick()).await;
    }
}

/// What the jobs of earlier JobManagers cost, per tenant, as their records
/// in the job-result store say (a job that was running when its JobManager
/// stopped has none: its cost since its last record is not known).
fn billed_before(results: &JobResultStore) -> BTreeMap<TenantId, Spent> {
    let mut billed: BTreeMap<TenantId, Spent> = BTreeMap::new();
    for r in results.all() {
        if let Some(spent) = r.spent {
            *billed.entry(r.owner()).or_default() += spent;
        }
    }
    billed
}

/// Finishes what an earlier JobManager left undone: deletes the checkpoints
/// of ended jobs whose cleanup is not recorded as done, and keeps (and
/// names) those of jobs that were still running, for a manual restore.
fn finish_cleanups(jm: &Arc<JobManager>) {
    for r in jm.results.all().into_iter().filter(|r| !r.cleaned) {
        let Ok(job) = r.job.parse::<JobId>() else {
            tracing::warn!(job = %r.job, "skipping a job result with a malformed id");
            continue;
        };
        if r.state == "RUNNING" {
            tracing::warn!(
                job = %r.job,
                "the job was running when the JobManager stopped; its checkpoints stay in {}/{} \
                 for a restore with --from-savepoint",
                r.storage.trim_end_matches('/'),
                r.job
            );
            let _ = jm.results.update(job, |r| {
                r.state = "FAILED".into();
                r.retained = true;
                r.cleaned = true;
            });
            continue;
        }
        let storage = match Storage::open(&r.storage, &S3Options::from_env()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(job = %r.job, "cannot clean up: {e}");
                continue;
            }
        };
        let done = jm.io_done.clone();
        tokio::spawn(async move {
            let cleaned =
                sluice_runtime::snapshot::discard_job(&storage, &job.to_string(), &r.keep).await;
            let _ = done.send(IoDone::JobCleaned { job, cleaned });
        });
    }
}

/// The stored jars, and what they count against their tenants' quotas.
fn load_jars(jm: &JobManager) {
    let jars = jm.jars.load_all();
    let mut cluster = jm.lock();
    let holdings = jars.iter().map(|j| {
        let usage = Usage {
            jars: 1,
            jar_bytes: j.size,
            ..Usage::default()
        };
        (j.owner.clone(), Holder::Jar(j.id.clone()), usage)
    });
    cluster.ledger = Ledger::from_holdings(holdings);
    cluster.jars = jars
        .into_iter()
        .map(|j| ((j.owner.clone(), j.id.clone()), j))
        .collect();
}

/// How long a connection may take from its first packet to a finished
/// handshake and, for a join, to its request: whoever has not finished by
/// then is disconnected (nobody is authenticated before that).
pub(crate) const UNAUTHENTICATED_DEADLINE: Duration = Duration::from_secs(10);

/// Connections handshaking or joining at once; more are refused at once,
/// so that unauthenticated peers cannot pile up state in the JobManager.
const MAX_UNAUTHENTICATED: usize = 64;

async fn accept(jm: Arc<JobManager>, endpoint: quinn::Endpoint) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_UNAUTHENTICATED));
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "refused a cluster connection: {MAX_UNAUTHENTICATED} are handshaking already");
            incoming.refuse();
            continue;
        };
        let jm = jm.clone();
        tokio::spawn(async move {
            let conn = match tokio::time::timeout(UNAUTHENTICATED_DEADLINE, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::warn!(%remote, "refused a cluster connection: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%remote, "refused a cluster connection: no handshake within {UNAUTHENTICATED_DEADLINE:?}");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            let result = match alpn.as_deref() {
                Some(p) if p == ALPN_JOIN => {
                    let joined =
                        tokio::time::timeout(UNAUTHENTICATED_DEADLINE, handle_join(&jm, &conn))
                            .await;
                    drop(permit);
                    joined.unwrap_or_else(|_| {
                        conn.close(1u32.into(), b"the join did not finish in time");
                        Err(anyhow::anyhow!(
                            "the join did not finish within {UNAUTHENTICATED_DEADLINE:?}"
                        ))
                    })
                }
                Some(p) if p == ALPN_CLUSTER && conn.peer_identity().is_some() => {
                    // Authenticated by its certificate: no longer pending.
                    drop(permit);
                    handle_tm(&jm, conn.clone()).await
                }
                _ => {
                    conn.close(1u32.into(), b"a cluster certificate is required");
                    Err(anyhow::anyhow!("connection without a cluster certificate"))
                }
            };
            if let Err(e) = result {
                tracing::warn!(%remote, "cluster connection ended: {}", crate::error_chain(&e));
            }
        });
    }
}

async fn handle_join(jm: &JobManager, conn: &Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    // The joiner has no certificate yet: its request must be small.
    let req: JoinRequest = frame::read_max(&mut recv, 4096)
        .await?
        .context("the joiner sent nothing")?;
    let checked = jm
        .lock_members()
        .check_join(&req.secret, now_ms())
        .map(|t| t.id.clone());
    let response = if req.protocol != PROTOCOL_VERSION {
        JoinResponse::Refused(version_mismatch(req.protocol, "unknown"))
    } else {
        match checked {
            Err(refusal) => {
                tracing::warn!(name = %crate::truncate(&req.name, 100), remote = %conn.remote_address(), "refused a join: {refusal}");
                JoinResponse::Refused(refusal.to_string())
            }
            Ok(token_id) => {
                let id = jm.ca.issue(&format!("taskmanager {}", req.name))?;
                let record = {
                    let mut book = jm.lock_members();
                    let record = book.issued(
                        &sluice_transport::pki::fingerprint(&id.cert),
                        &crate::truncate(&req.name, 200),
                        &token_id,
                        now_ms(),
                    );
                    book.save(&jm.members_path)?;
                    record
                };
                tracing::info!(name = %crate::truncate(&req.name, 100), remote = %conn.remote_address(), certificate = %record.id, token = %token_id, "issued a TaskManager certificate");
                JoinResponse::Issued {
                    ca: id.ca.to_vec(),
                    cert: id.cert.to_vec(),
                    key: id.key,
                }
            }
        }
    };
    frame::write(&mut send, &response).await?;
    let _ = send.finish();
    let _ = send.stopped().await;
    Ok(())
}

async fn handle_tm(jm: &Arc<JobManager>, conn: Connection) -> anyhow::Result<()> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let hello: Hello = frame::read(&mut recv)
        .await?
        .context("the TaskManager sent nothing")?;
    if hello.protocol != PROTOCOL_VERSION {
        let reason = version_mismatch(hello.protocol, &hello.version);
        frame::write(&mut send, &Welcome::Refused(reason.clone())).await?;
        let _ = send.finish();
        let _ = send.stopped().await;
        anyhow::bail!(reason);
    }
    // The certificate passed the TLS handshake (signed by the cluster CA);
    // it must also not have been removed.
    let fingerprint =
        sluice_transport::peer_fingerprint(&conn).context("the TaskManager sent no certificate")?;
    let admitted = {
        let mut book = jm.lock_members();
        book.admit(&fingerprint, &crate::truncate(&hello.name, 200), now_ms())
            .and_then(|adopted| {
                if adopted {
                    book.save(&jm.members_path).map_err(|e| e.to_string())?;
                }
                Ok(book
                    .certificate(&fingerprint)
                    .map(|c| c.id.clone())
                    .unwrap_or_default())
            })
    };
    let certificate = match admitted {
        Ok(c) => c,
        Err(reason) => {
            tracing::warn!(remote = %conn.remote_address(), "refused a TaskManager: {reason}");
            frame::write(&mut send, &Welcome::Refused(reason.clone())).await?;
            let _ = send.finish();
            let _ = send.stopped().await;
            anyhow::bail!(reason);
        }
    };
    let addr = SocketAddr::new(conn.remote_address().ip(), hello.data_port);
    let id = format!("{addr}-{}", &hex::encode(rand::random::<[u8; 3]>()));
    let revoked = jm.lock_members().removed_fingerprints();
    frame::write(
        &mut send,
        &Welcome::Accepted {
            id: id.clone(),
            heartbeat_secs: HEARTBEAT_SECS,
            revoked,
        },
    )
    .await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    {
        let mut cluster = jm.lock();
        cluster.tms.insert(
            id.clone(),
            Tm {
                id: id.clone(),
                addr,
                slots: hello.slots,
                registered_at: now_ms(),
                last_heartbeat: Instant::now(),
                shares: Vec::new(),
                tx,
                conn: conn.clone(),
                certificate,
            },
        );
        jm.drive(&mut cluster, now_ms());
    }
    tracing::info!(tm = %id, slots = hello.slots, "TaskManager registered");
    let writer = async {
        while let Some(msg) = rx.recv().await {
            frame::write(&mut send, &msg).await?;
        }
        anyhow::Ok(())
    };
    let reader = async {
        while let Some(msg) = frame::read::<ToJobManager>(&mut recv).await? {
            let jm = jm.clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || jm.handle_tm_message(&id, msg)).await?;
        }
        anyhow::Ok(())
    };
    let result = tokio::select! {
        r = writer => r,
        r = reader => r,
    };
    let reason = match (&result, conn.close_reason()) {
        // Silence, not a close: what a killed process or a cut network
        // looks like; say so rather than quinn's bare "timed out".
        (_, Some(quinn::ConnectionError::TimedOut)) => format!(
            "it went silent for the peer timeout ({:?}, --peer-timeout): the process died or \
             hung, or the network is cut",
            jm.config.peer_timeout
        ),
        (Ok(()), _) => "it closed its connection".to_owned(),
        (Err(e), _) => crate::error_chain(e),
    };
    let jm2 = jm.clone();
    tokio::task::spawn_blocking(move || jm2.tm_lost(&id, &reason)).await?;
    result
}
