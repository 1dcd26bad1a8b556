//! The JobManager process: the cluster CA, the TaskManager registry, the
//! jobs (each driven by the sans-IO core of `sluice-coord`), the slot
//! scheduler and the failure detector. The REST API (`crate::rest`) reads
//! and changes the same state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quinn::Connection;
use sluice_connectors::Connectors;
use sluice_coord::{
    CheckpointConfig, Command, ExecutionGraph, Job, JobStatus, RestartStrategy, TaskFailure,
    TaskId, TaskStatus,
};
use sluice_state::{S3Options, Storage};

use crate::checkpoints::{IoDone, JobCheckpoints};
use crate::results::{JobResult, JobResultStore};
use sluice_policy::auth::Principal;
use sluice_policy::quota::{Exceeded, Holder, Ledger, Usage};
use sluice_policy::{Policy, TenantId};
use sluice_runtime::{NodeCounts, PreparedJob, RunError};
use sluice_transport::{ALPN_CLUSTER, ALPN_JOIN, ClusterCa, JoinToken, frame};
use sluice_types::JobId;
use sluice_wasm::{Runtime, RuntimeOptions};
use tokio::sync::mpsc;

use crate::access;
use crate::members::{CertRecord, INITIAL_TOKEN, JoinRecord, MemberBook};
use crate::tenancy::{AuthMode, Tenancy, TenancyConfig};

use crate::protocol::{
    Deployment, Hello, JoinRequest, JoinResponse, PROTOCOL_VERSION, Peer, ToJobManager,
    ToTaskManager, Welcome, version_mismatch,
};

/// How long the checkpoint storage has to answer when the JobManager starts.
const STORAGE_PROBE: Duration = Duration::from_secs(15);

/// Seconds between TaskManager heartbeats.
pub const HEARTBEAT_SECS: u32 = 2;

/// How to start a JobManager.
#[derive(Clone, Debug)]
pub struct JobManagerConfig {
    /// REST API address.
    pub rest_addr: SocketAddr,
    /// Cluster RPC (QUIC) address.
    pub rpc_addr: SocketAddr,
    /// CA, join token, uploaded components.
    pub data_dir: PathBuf,
    /// Tenants, policies and authentication.
    pub tenancy: TenancyConfig,
    /// How long a job waits for enough free slots before it fails.
    pub slot_timeout: Duration,
    /// A TaskManager silent this long is declared lost.
    pub heartbeat_timeout: Duration,
    /// What happens when a job run fails.
    pub restart: RestartStrategy,
    /// Relative file paths in jobs resolve against this directory.
    pub base_dir: Option<PathBuf>,
    /// Where checkpoints go (`file://`, `s3://` or `memory://` URI).
    pub checkpoint_storage: String,
    /// Checkpoint interval for jobs that do not set one; `None`: no
    /// checkpoints unless a job asks.
    pub checkpoint_interval: Option<Duration>,
    /// Every other checkpoint setting (its interval is ignored).
    pub checkpoint_defaults: CheckpointConfig,
    /// Ended jobs kept in memory; older ones leave it (their views stay in
    /// the job-result store).
    pub jobstore_max_capacity: usize,
    /// How long an ended job stays in memory.
    pub jobstore_expiration: Duration,
    /// How long the join token made at the first start stays valid;
    /// `None`: until revoked.
    pub join_token_ttl: Option<Duration>,
}

/// Milliseconds since the Unix epoch: the JobManager's clock for the core
/// and for the REST API's timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A registered TaskManager.
pub(crate) struct Tm {
    pub id: String,
    pub addr: SocketAddr,
    pub slots: u32,
    pub registered_at: u64,
    pub last_heartbeat: Instant,
    pub tx: mpsc::UnboundedSender<ToTaskManager>,
    pub conn: Connection,
    /// The id of its certificate (`sluice certificate list`).
    pub certificate: String,
}

/// An uploaded component.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Jar {
    /// The tenant that uploaded it (records from before tenants: `default`).
    #[serde(default = "default_tenant")]
    pub owner: TenantId,
    pub id: String,
    pub name: String,
    pub uploaded: u64,
    pub hash: String,
    /// Bytes (0 in records written before sizes were kept).
    #[serde(default)]
    pub size: u64,
}

/// What jobs cost, for usage and billing: fuel, CPU time and records, over
/// all their runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Spent {
    /// Wasm fuel burnt by guest operators.
    pub fuel: u64,
    /// CPU time of the task threads, ns.
    pub cpu_ns: u64,
    /// Records read by the first operators.
    pub records_in: u64,
    /// Records written by the last operators.
    pub records_out: u64,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, o: Spent) {
        self.fuel = self.fuel.saturating_add(o.fuel);
        self.cpu_ns = self.cpu_ns.saturating_add(o.cpu_ns);
        self.records_in = self.records_in.saturating_add(o.records_in);
        self.records_out = self.records_out.saturating_add(o.records_out);
    }
}

/// A job and what the driver knows about its current run.
pub(crate) struct JobEntry {
    pub id: JobId,
    /// The tenant that submitted it.
    pub owner: TenantId,
    pub name: String,
    pub start_time: u64,
    pub core: Job,
    pub execution: ExecutionGraph,
    pub policy: Policy,
    pub component: Arc<Vec<u8>>,
    pub hash: String,
    /// Slot index of the current run → TaskManager id.
    pub placement: Vec<String>,
    /// Where each task of the current run is.
    pub locations: HashMap<TaskId, String>,
    /// Latest counts per task of the current run.
    pub counts: HashMap<TaskId, Vec<(u64, u64)>>,
    /// Latest fuel and CPU ns per task of the current run.
    pub resources: HashMap<TaskId, (u64, u64)>,
    /// What the job's earlier runs cost.
    pub spent_before: Spent,
    /// Since when the current run waits for slots.
    pub waiting_since: Option<u64>,
    /// What the current run waits for, while it waits. Only the cluster's
    /// capacity: the tenant's quotas were admitted at submission (a job
    /// over them is refused, never queued).
    pub waiting_for: Option<String>,
    /// Checkpoints and savepoints (periodic ones only with an interval).
    pub checkpoints: JobCheckpoints,
    /// When the job's status last changed.
    pub status_changed: BTreeMap<&'static str, u64>,
    pub last_status: JobStatus,
    /// When the job ended and was archived in the job-result store.
    pub ended_at: Option<u64>,
}

impl JobEntry {
    /// What the job cost so far, its current run included.
    pub fn spent(&self) -> Spent {
        let mut spent = self.spent_before;
        spent += Spent {
            fuel: self.resources.values().map(|r| r.0).sum(),
            cpu_ns: self.resources.values().map(|r| r.1).sum(),
            ..Spent::default()
        };
        // In: what the sources emitted; out: what reached the sinks.
        for (task, counts) in &self.counts {
            let Some(v) = self.execution.vertices.get(task.vertex as usize) else {
                continue;
            };
            if v.inputs.is_empty() {
                spent.records_in += counts.first().map_or(0, |c| c.1);
            }
            if v.outputs.is_empty() {
                spent.records_out += counts.last().map_or(0, |c| c.0);
            }
        }
        spent
    }

    /// Per-node counts summed over subtasks, in graph order.
    pub fn node_counts(&self) -> Vec<NodeCounts> {
        let per_task: Vec<(TaskId, Vec<NodeCounts>)> = self
            .counts
            .iter()
            .map(|(t, c)| {
                (
                    *t,
                    c.iter()
                        .map(|&(i, o)| NodeCounts {
                            name: String::new(),
                            records_in: i,
                            records_out: o,
                        })
                        .collect(),
                )
            })
            .collect();
        sluice_runtime::sum_by_node(&self.execution, &per_task)
    }
}

/// Everything the JobManager knows, behind one lock.
pub(crate) struct Cluster {
    pub tms: BTreeMap<String, Tm>,
    pub jobs: BTreeMap<JobId, JobEntry>,
    /// Uploads by owner and id: two tenants' uploads of the same bytes are
    /// two jars.
    pub jars: BTreeMap<(TenantId, String), Jar>,
    /// What each tenant holds against its quotas.
    pub ledger: Ledger,
    /// What each tenant's jobs that left memory cost (since this
    /// JobManager started).
    pub billed: BTreeMap<TenantId, Spent>,
}

/// The JobManager's shared state.
pub(crate) struct JobManager {
    pub config: JobManagerConfig,
    pub cluster: Mutex<Cluster>,
    pub runtime: Runtime,
    pub connectors: Connectors,
    pub rest_addr: Mutex<Option<SocketAddr>>,
    pub tenancy: Tenancy,
    /// Engines by policy name, for running plan functions under the
    /// submitting tenant's limits.
    runtimes: Mutex<HashMap<String, Runtime>>,
    /// Uploaded components on disk.
    pub jars: crate::jars::JarStore,
    /// Uploads received at once, over all tenants.
    uploads: Arc<tokio::sync::Semaphore>,
    ca: ClusterCa,
    token: JoinToken,
    /// Join tokens and issued certificates, and where they are kept.
    members: Mutex<MemberBook>,
    members_path: PathBuf,
    /// Where background storage work runs, and where it reports.
    io: tokio::runtime::Handle,
    io_done: mpsc::UnboundedSender<IoDone>,
    /// Which jobs ended and whether their checkpoints are cleaned up.
    results: JobResultStore,
    /// Uploaded components' bytes by hash, while a job holds them.
    components: Mutex<HashMap<String, std::sync::Weak<Vec<u8>>>>,
}

impl JobManager {
    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_members(&self) -> MutexGuard<'_, MemberBook> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new join token for TaskManagers (its text shown once) and its record.
    pub fn create_join_token(
        &self,
        ttl: Option<Duration>,
    ) -> Result<(String, JoinRecord), SubmitError> {
        let token = JoinToken {
            secret: rand::random(),
            ca_fingerprint: self.token.ca_fingerprint,
        };
        let id = format!("tm-{}", hex::encode(rand::random::<[u8; 4]>()));
        let mut book = self.lock_members();
        let ttl = ttl.map(|t| t.as_millis() as u64);
        let record = book.add_token(&id, &token.secret, now_ms(), ttl);
        book.save(&self.members_path)
            .map_err(|e| SubmitError::Internal(format!("cannot record the join token: {e}")))?;
        tracing::info!(token = %id, "TaskManager join token created");
        Ok((token.to_string(), record))
    }

    /// Every join token's record.
    pub fn join_tokens(&self) -> Vec<JoinRecord> {
        self.lock_members().tokens.clone()
    }

    /// Revokes a join token: TaskManagers that joined with it keep their
    /// certificates; no new one joins with it.
    pub fn revoke_join_token(&self, id: &str) -> Result<JoinRecord, SubmitError> {
        let mut book = self.lock_members();
        let record = book
            .revoke_token(id, now_ms())
            .ok_or_else(|| SubmitError::NotFound(format!("there is no token `{id}`")))?;
        book.save(&self.members_path)
            .map_err(|e| SubmitError::Internal(format!("cannot record the revocation: {e}")))?;
        tracing::info!(token = %id, "TaskManager join token revoked");
        Ok(record)
    }

    /// Every TaskManager certificate's record.
    pub fn certificates(&self) -> Vec<CertRecord> {
        self.lock_members().certificates.clone()
    }

    /// Removes a TaskManager certificate: a TaskManager registered with it
    /// is disconnected (its tasks fail over), and it is refused when it
    /// tries again.
    pub fn remove_certificate(&self, id: &str) -> Result<CertRecord, SubmitError> {
        let record = {
            let mut book = self.lock_members();
            let record = book
                .remove_certificate(id, now_ms())
                .ok_or_else(|| SubmitError::NotFound(format!("there is no certificate `{id}`")))?;
            book.save(&self.members_path)
                .map_err(|e| SubmitError::Internal(format!("cannot record the removal: {e}")))?;
            record
        };
        for tm in self.lock().tms.values().filter(|t| t.certificate == id) {
            tm.conn.close(1u32.into(), b"certificate removed");
        }
        tracing::warn!(certificate = %id, name = %record.name, "TaskManager certificate removed");
        Ok(record)
    }

    /// The tenant's policy as configured now.
    pub fn policy_of(&self, tenant: &TenantId) -> Result<Policy, SubmitError> {
        self.tenancy
            .tenant(tenant)
            .map(|(_, p)| p)
            .ok_or_else(|| SubmitError::Forbidden(format!("tenant `{tenant}` is not defined")))
    }

    /// The policy a tenant's new job runs under, its file roots filled in,
    /// and where the job's relative file paths resolve. The roots are the
    /// tenant's own (its file), else the policy's, else a directory of the
    /// tenant's under `DATA_DIR/files` (created here): a shared cluster
    /// never lets a tenant's connectors reach the whole host. Only an open
    /// cluster (`--auth none`, one user on a laptop) keeps the policy's
    /// "anywhere".
    fn job_policy(&self, tenant: &TenantId) -> Result<(Policy, Option<PathBuf>), SubmitError> {
        let (t, mut policy) = self
            .tenancy
            .tenant(tenant)
            .ok_or_else(|| SubmitError::Forbidden(format!("tenant `{tenant}` is not defined")))?;
        if !t.file_roots.is_empty() {
            policy.quotas.file_roots = t.file_roots;
        } else if policy.quotas.file_roots.is_empty() {
            if self.tenancy.auth() == AuthMode::None {
                return Ok((policy, self.config.base_dir.clone()));
            }
            let own = self.tenant_files(tenant);
            std::fs::create_dir_all(&own).map_err(|e| {
                SubmitError::Internal(format!(
                    "cannot create tenant `{tenant}`'s directory {}: {e}",
                    own.display()
                ))
            })?;
            policy.quotas.file_roots = vec![own];
        }
        let base = policy.quotas.file_roots.first().cloned();
        Ok((policy, base))
    }

    /// The directory of a tenant that has no file roots of its own:
    /// `DATA_DIR/files/TENANT`, absolute.
    pub fn tenant_files(&self, tenant: &TenantId) -> PathBuf {
        let dir = self.config.data_dir.join("files").join(tenant.as_str());
        sluice_connectors::normalize(&std::path::absolute(&dir).unwrap_or(dir))
    }

    /// Sets what `holder` holds for the principal's tenant, if its quotas
    /// (as configured now) allow it.
    fn admit(
        &self,
        cluster: &mut Cluster,
        who: &Principal,
        holder: Holder,
        usage: Usage,
    ) -> Result<(), SubmitError> {
        let policy = self.policy_of(&who.tenant)?;
        cluster
            .ledger
            .admit(&who.tenant, &policy.name, &policy.quotas, holder, usage)
            .map_err(SubmitError::Quota)
    }

    /// Starts receiving an upload for the principal: counted against the
    /// cluster's and the tenant's concurrent uploads until the returned
    /// guard is finished or dropped.
    pub fn begin_upload(self: &Arc<Self>, who: &Principal) -> Result<Upload, SubmitError> {
        let permit = self.uploads.clone().try_acquire_owned().map_err(|_| {
            SubmitError::Busy(format!(
                "the JobManager is receiving {MAX_UPLOADS} uploads already; try again shortly"
            ))
        })?;
        let id = hex::encode(rand::random::<[u8; 8]>());
        let usage = Usage {
            uploads: 1,
            jars: 1,
            ..Usage::default()
        };
        self.admit(&mut self.lock(), who, Holder::Upload(id.clone()), usage)?;
        let path = match self.jars.upload_path(&who.tenant, &id) {
            Ok(p) => p,
            Err(e) => {
                self.lock()
                    .ledger
                    .release(&who.tenant, &Holder::Upload(id.clone()));
                return Err(SubmitError::Internal(e.to_string()));
            }
        };
        Ok(Upload {
            jm: self.clone(),
            who: who.clone(),
            path,
            id,
            received: 0,
            done: false,
            _permit: permit,
        })
    }

    /// Counts `n` more bytes of an upload; refused once it is over the
    /// tenant's upload or jar-bytes quota (or the cluster's upload limit).
    pub fn grow_upload(&self, upload: &mut Upload, n: u64) -> Result<(), SubmitError> {
        let received = upload.received.saturating_add(n);
        if received > HARD_MAX_UPLOAD {
            return Err(SubmitError::TooLarge(format!(
                "the upload is over the JobManager's limit of {HARD_MAX_UPLOAD} bytes"
            )));
        }
        let usage = Usage {
            uploads: 1,
            jars: 1,
            jar_bytes: received,
            ..Usage::default()
        };
        self.admit(
            &mut self.lock(),
            &upload.who,
            Holder::Upload(upload.id.clone()),
            usage,
        )?;
        upload.received = received;
        Ok(())
    }

    /// Stores a received upload under its content hash, after checking it
    /// is a valid Sluice component; it then counts as a jar of its tenant.
    pub fn finish_upload(&self, mut upload: Upload, name: &str) -> Result<Jar, SubmitError> {
        let bytes = std::fs::read(&upload.path)
            .map_err(|e| SubmitError::Internal(format!("cannot read the upload back: {e}")))?;
        self.runtime.load(&bytes).map_err(|e| {
            SubmitError::Invalid(format!("`{name}` is not a valid Sluice application: {e}"))
        })?;
        let jar = self
            .jars
            .store(&upload.who.tenant, name, &upload.path, &bytes)
            .map_err(|e| SubmitError::Internal(e.to_string()))?;
        let mut cluster = self.lock();
        let who = &upload.who;
        cluster
            .ledger
            .release(&who.tenant, &Holder::Upload(upload.id.clone()));
        upload.done = true;
        let usage = Usage {
            jars: 1,
            jar_bytes: jar.size,
            ..Usage::default()
        };
        // The upload held the same amounts, so this fits unless the quotas
        // were lowered while it streamed in.
        let key = (jar.owner.clone(), jar.id.clone());
        if let Err(e) = self.admit(&mut cluster, who, Holder::Jar(jar.id.clone()), usage) {
            if !cluster.jars.contains_key(&key) {
                let _ = self.jars.delete(&jar);
            }
            return Err(e);
        }
        cluster.jars.insert(key, jar.clone());
        Ok(jar)
    }

    /// Deletes an uploaded application the principal may see.
    pub fn delete_jar(&self, who: &Principal, id: &str) -> Result<(), SubmitError> {
        let mut cluster = self.lock();
        let jar = access::take_jar(&mut cluster, who, id)?;
        cluster
            .ledger
            .release(&jar.owner, &Holder::Jar(jar.id.clone()));
        drop(cluster);
        self.jars
            .delete(&jar)
            .map_err(|e| SubmitError::Internal(e.to_string()))
    }

    /// Where a tenant's checkpoints and savepoints are: its prefix of the
    /// cluster's checkpoint storage.
    pub fn tenant_storage(&self, tenant: &TenantId) -> String {
        format!(
            "{}/{tenant}",
            self.config.checkpoint_storage.trim_end_matches('/')
        )
    }

    /// An engine with `policy`'s limits, for plan functions (its quotas,
    /// which differ between tenants of one policy, are checked by the
    /// caller).
    fn runtime_for(&self, policy: &Policy) -> Result<Runtime, SubmitError> {
        let mut runtimes = self
            .runtimes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = runtimes.get(&policy.name)
            && r.policy().limits == policy.limits
        {
            return Ok(r.clone());
        }
        let runtime = Runtime::new(
            policy.clone(),
            RuntimeOptions {
                slots: 2,
                cache_dir: Some(self.config.data_dir.join("cache")),
                ..RuntimeOptions::default()
            },
        )
        .map_err(|e| {
            SubmitError::Internal(format!("cannot set up policy `{}`: {e}", policy.name))
        })?;
        runtimes.insert(policy.name.clone(), runtime.clone());
        Ok(runtime)
    }

    /// Plans a job from an uploaded component and queues it for slots.
    pub fn submit(
        &self,
        who: &Principal,
        jar_id: &str,
        args: &[(String, String)],
        parallelism: u32,
        options: SubmitOptions,
    ) -> Result<JobId, SubmitError> {
        let jar = access::jar(&self.lock(), who, jar_id)?.clone();
        let (policy, base) = self.job_policy(&who.tenant)?;
        let runtime = self.runtime_for(&policy)?;
        let bytes = self.component(&jar)?;
        let app = runtime
            .load(&bytes)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let uri = self.tenant_storage(&who.tenant);
        let storage = Storage::open(&uri, &S3Options::from_env()).map_err(|e| {
            SubmitError::Internal(format!("cannot open the checkpoint storage: {e}"))
        })?;
        let savepoint = options
            .savepoint_path
            .as_deref()
            .map(|path| self.read_savepoint(&storage, path))
            .transpose()?;
        let resume = savepoint.as_ref().map(|meta| sluice_runtime::Resume {
            savepoint: meta,
            allow_non_restored_state: options.allow_non_restored_state,
        });
        let PreparedJob { execution, .. } = sluice_runtime::prepare_job(
            &self.connectors.with_base(base),
            &policy,
            &app,
            args,
            parallelism,
            resume,
        )
        .map_err(|e: RunError| SubmitError::Invalid(e.to_string()))?;
        let id = JobId(rand::random());
        let now = now_ms();
        let stem = jar.name.strip_suffix(".wasm").unwrap_or(&jar.name);
        let name = std::iter::once(stem.to_owned())
            .chain(args.iter().map(|(k, v)| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ");
        let core = Job::new(execution.clone(), now).with_restart_strategy(self.config.restart);
        // Every job can take savepoints; periodic checkpoints only with an interval.
        let interval_ms = match options
            .checkpoint_interval
            .or(self.config.checkpoint_interval)
        {
            Some(interval) if !interval.is_zero() => interval.as_millis() as u64,
            _ => u64::MAX,
        };
        let mut checkpoints = JobCheckpoints::new(
            CheckpointConfig {
                interval_ms,
                ..self.config.checkpoint_defaults.clone()
            },
            storage,
            uri,
        );
        if let Some(meta) = savepoint {
            checkpoints.coord =
                sluice_coord::CheckpointCoordinator::new(checkpoints.coord.config().clone())
                    .resume_ids(meta.checkpoint);
            checkpoints.initial = Some(meta);
        }
        let entry = JobEntry {
            id,
            owner: who.tenant.clone(),
            name,
            start_time: now,
            core,
            execution,
            policy: policy.clone(),
            component: bytes,
            hash: jar.hash,
            placement: Vec::new(),
            locations: HashMap::new(),
            counts: HashMap::new(),
            resources: HashMap::new(),
            spent_before: Spent::default(),
            waiting_since: Some(now),
            waiting_for: None,
            checkpoints,
            status_changed: BTreeMap::from([("CREATED", now), ("INITIALIZING", now)]),
            last_status: JobStatus::Created,
            ended_at: None,
        };
        let record = JobResult {
            job: id.to_string(),
            owner: Some(who.tenant.clone()),
            state: "RUNNING".into(),
            storage: self.tenant_storage(&who.tenant),
            keep: Vec::new(),
            retained: false,
            cleaned: false,
            archive: None,
        };
        // Under the lock from the check to the insert: two submissions
        // cannot both take one output directory.
        let mut cluster = self.lock();
        let outputs = sluice_runtime::snapshot::file_outputs(&entry.execution);
        if let Some((other, dir)) = cluster.jobs.values().find_map(|j| {
            // Another tenant's job is named only to an admin.
            let theirs = sluice_runtime::snapshot::file_outputs(&j.execution);
            (!j.core.status().is_terminal())
                .then(|| outputs.iter().find(|o| theirs.contains(o)))
                .flatten()
                .map(|dir| (j.id, dir.clone()))
        }) {
            let owner = cluster.jobs.get(&other).map(|j| &j.owner);
            let job = if owner.is_some_and(|o| who.sees(o)) {
                format!("job {other}")
            } else {
                "another job".to_owned()
            };
            return Err(SubmitError::Conflict(format!(
                "{job} is writing to `{dir}`; cancel or stop it first, or choose another output"
            )));
        }
        let usage = Usage {
            jobs: 1,
            slots: u64::from(entry.execution.slots_needed()),
            memory_mib: (entry.execution.tasks().count() as u64)
                .saturating_mul(policy.limits.memory_mib),
            ..Usage::default()
        };
        self.admit(&mut cluster, who, Holder::Job(id.to_string()), usage)?;
        if let Err(e) = self.results.put(&record) {
            cluster
                .ledger
                .release(&who.tenant, &Holder::Job(id.to_string()));
            return Err(SubmitError::Internal(format!(
                "cannot record the job in the job-result store: {e}"
            )));
        }
        tracing::info!(
            tenant = %who.tenant,
            job = %id,
            name = %crate::truncate(&entry.name, 200),
            parallelism,
            tasks = entry.execution.tasks().count(),
            savepoint = options.savepoint_path.as_deref().unwrap_or("-"),
            "job submitted"
        );
        cluster.jobs.insert(id, entry);
        self.drive(&mut cluster, now);
        Ok(id)
    }

    /// Reads a savepoint's metadata: `path` is the location a savepoint
    /// reported (a URI inside the checkpoint storage, or a path relative to it).
    fn read_savepoint(
        &self,
        storage: &Storage,
        path: &str,
    ) -> Result<crate::checkpoints::CheckpointMetadata, SubmitError> {
        let relative = confined_path(storage.uri(), path)?;
        sluice_runtime::snapshot::read_metadata(storage, &self.io, &relative)
            .map_err(|e| SubmitError::Invalid(format!("cannot read savepoint `{path}`: {e}")))
    }

    /// Triggers a savepoint of a running job; its trigger id. With `stop`,
    /// the job is cancelled once the savepoint completes.
    pub fn savepoint(
        &self,
        who: &Principal,
        id: JobId,
        stop: bool,
        target: Option<&str>,
    ) -> Result<String, SubmitError> {
        let mut cluster = self.lock();
        let now = now_ms();
        let storage = match access::job(&cluster, who, id) {
            Ok(job) => self.tenant_storage(&job.owner),
            Err(_) => return Err(self.gone(who, id)),
        };
        if let Some(dir) = target.filter(|d| !d.is_empty()) {
            confined_path(&storage, dir)?;
        }
        let job = access::job_mut(&mut cluster, who, id)?;
        let status = job.core.status();
        let cp = &mut job.checkpoints;
        let checkpoint = cp.coord.trigger_savepoint(now).ok_or_else(|| {
            SubmitError::Conflict(format!(
                "job {id} is {} with not every task running: a savepoint needs a running job",
                status_name(status)
            ))
        })?;
        let trigger = hex::encode(rand::random::<[u8; 16]>());
        cp.savepoints.insert(
            trigger.clone(),
            crate::checkpoints::SavepointOp {
                checkpoint,
                stop,
                result: None,
            },
        );
        self.drive(&mut cluster, now);
        Ok(trigger)
    }

    /// Asks a job to cancel; a job that ended already cannot be.
    pub fn cancel(&self, who: &Principal, id: JobId) -> Result<(), SubmitError> {
        let mut cluster = self.lock();
        let now = now_ms();
        let Ok(job) = access::job_mut(&mut cluster, who, id) else {
            return Err(self.gone(who, id));
        };
        let status = job.core.status();
        if status.is_terminal() {
            return Err(ended(id, status_name(status)));
        }
        job.core.cancel(now);
        self.drive(&mut cluster, now);
        Ok(())
    }

    /// The refusal for a job that is not in memory: it ended and left (its
    /// archive says how), or it never existed.
    fn gone(&self, who: &Principal, id: JobId) -> SubmitError {
        match access::result(self.results.get(id), who) {
            Some(r) if r.state != "RUNNING" => ended(id, &r.state),
            _ => access::no_job(id),
        }
    }

    /// What the job-result store kept of a job that left memory: its REST
    /// views (see `views::archive`).
    pub fn archived(&self, who: &Principal, id: JobId) -> Option<serde_json::Value> {
        access::result(self.results.get(id), who)?.archive
    }

    /// Reads the tenant and policy files again (on SIGHUP or an admin's
    /// request); a broken file leaves the previous configuration in force.
    pub fn reload_tenants(&self, by: &str) -> Result<(usize, usize), sluice_policy::PolicyError> {
        let result = self.tenancy.reload();
        match &result {
            Ok((tenants, policies)) => {
                tracing::info!(by, tenants, policies, "tenants and policies reloaded")
            }
            Err(e) => tracing::error!(
                by,
                "tenants and policies not reloaded; the previous configuration stays: {e}"
            ),
        }
        result
    }

    /// The bytes of an uploaded component, shared by every job that runs it.
    fn component(&self, jar: &Jar) -> Result<Arc<Vec<u8>>, SubmitError> {
        let mut shared = self
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.retain(|_, c| c.strong_count() > 0);
        if let Some(bytes) = shared.get(&jar.hash).and_then(std::sync::Weak::upgrade) {
            return Ok(bytes);
        }
        let bytes = std::fs::read(self.jars.path(jar)).map_err(|e| {
            SubmitError::Internal(format!("cannot read the stored application: {e}"))
        })?;
        let bytes = Arc::new(bytes);
        shared.insert(jar.hash.clone(), Arc::downgrade(&bytes));
        Ok(bytes)
    }

    /// Runs every job's core forward: timeouts, scheduling, commands.
    pub fn drive(&self, cluster: &mut Cluster, now: u64) {
        let Cluster {
            tms,
            jobs,
            ledger,
            billed,
            ..
        } = cluster;
        let ids: Vec<JobId> = jobs.keys().copied().collect();
        for id in ids {
            let used = used_slots(jobs);
            let job = jobs.get_mut(&id).expect("invariant: id from the map");
            job.core.handle_timeout(now);
            if job.core.status() == JobStatus::Created {
                self.try_schedule(job, tms, &used, now);
            }
            let mut deploys = Vec::new();
            let mut cancels = std::collections::BTreeSet::new();
            while let Some(cmd) = job.core.poll_command() {
                match cmd {
                    Command::Deploy { slot, deployment } => deploys.push((slot, *deployment)),
                    Command::Cancel(task) => {
                        if let Some(tm) = job.locations.get(&task) {
                            cancels.insert(tm.clone());
                        }
                    }
                }
            }
            if !deploys.is_empty() {
                send_deployments(job, tms, deploys);
            }
            for tm in cancels {
                if let Some(tm) = tms.get(&tm) {
                    let _ = tm.tx.send(ToTaskManager::Cancel {
                        job: id,
                        attempt: job.core.attempt(),
                    });
                }
            }
            let mut outcome =
                crate::checkpoints::drive(job, ledger, tms, &self.io, &self.io_done, now);
            if outcome.stop {
                tracing::info!(job = %id, "stopping the job after its savepoint");
                job.core.cancel(now);
            }
            if let Some(reason) = outcome.fail {
                tracing::warn!(job = %id, "failing the run: {reason}");
                job.core.fail_run(reason, now);
            }
            // Cancellations the checkpoint outcome caused.
            let cancels: std::collections::BTreeSet<String> =
                std::iter::from_fn(|| job.core.poll_command())
                    .filter_map(|cmd| match cmd {
                        Command::Cancel(task) => job.locations.get(&task).cloned(),
                        Command::Deploy { .. } => None,
                    })
                    .collect();
            for tm in cancels.iter().filter_map(|tm| tms.get(tm)) {
                let _ = tm.tx.send(ToTaskManager::Cancel {
                    job: id,
                    attempt: job.core.attempt(),
                });
            }
            let status = job.core.status();
            if status != job.last_status {
                job.status_changed.insert(status_name(status), now);
                log_status(job, status);
                job.last_status = status;
                if status.is_terminal() {
                    ledger.release(&job.owner, &Holder::Job(id.to_string()));
                    ledger.release(&job.owner, &Holder::Checkpoint(id.to_string()));
                }
            }
            if !matches!(status, JobStatus::Running | JobStatus::Cancelling) {
                job.placement.clear();
            }
            if let Some(mut result) = outcome.ended.take() {
                // Its views outlive it in the job-result store.
                result.archive = Some(crate::views::archive(job));
                if let Err(e) = self.results.put(&result) {
                    tracing::error!(job = %id, "cannot record the job's end: {e}");
                }
                job.ended_at = Some(now);
            }
        }
        self.evict_ended(jobs, billed, now);
    }

    /// Ended jobs leave memory once there are more than the job store holds,
    /// oldest first, or when they expire; what the REST API shows of them
    /// stays in the job-result store.
    fn evict_ended(
        &self,
        jobs: &mut BTreeMap<JobId, JobEntry>,
        billed: &mut BTreeMap<TenantId, Spent>,
        now: u64,
    ) {
        let mut ended: Vec<(u64, JobId)> = jobs
            .values()
            .filter_map(|j| Some((j.ended_at?, j.id)))
            .collect();
        let excess = ended
            .len()
            .saturating_sub(self.config.jobstore_max_capacity);
        let expiry = self.config.jobstore_expiration.as_millis() as u64;
        ended.sort_unstable();
        for (i, (at, id)) in ended.into_iter().enumerate() {
            if i < excess || now.saturating_sub(at) >= expiry {
                if let Some(job) = jobs.remove(&id) {
                    *billed.entry(job.owner.clone()).or_default() += job.spent();
                }
                tracing::debug!(job = %id, "ended job left memory; its archive stays");
            }
        }
    }

    fn try_schedule(
        &self,
        job: &mut JobEntry,
        tms: &BTreeMap<String, Tm>,
        used: &HashMap<String, u32>,
        now: u64,
    ) {
        let needed = job.execution.slots_needed();
        let mut free: Vec<(String, u32)> = tms
            .values()
            .map(|t| {
                (
                    t.id.clone(),
                    t.slots
                        .saturating_sub(used.get(&t.id).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, f)| *f > 0)
            .collect();
        let total: u32 = free.iter().map(|(_, f)| f).sum();
        let waiting_since = *job.waiting_since.get_or_insert(now);
        if total < needed {
            let all: u32 = tms.values().map(|t| t.slots).sum();
            job.waiting_for = Some(format!(
                "the cluster's capacity: {needed} slots needed, {total} of {all} free on {} \
                 TaskManager(s) (tenant `{}`'s quotas admit the job)",
                tms.len(),
                job.owner
            ));
            let waited = now.saturating_sub(waiting_since);
            if waited >= self.config.slot_timeout.as_millis() as u64 {
                job.core.fail_scheduling(
                    format!(
                        "could not get {needed} slots (the job's largest parallelism, with slot \
                         sharing) within {}s: {total} of {all} slots are free on {} TaskManager(s); \
                         add TaskManagers, wait for other jobs, or lower the parallelism",
                        self.config.slot_timeout.as_secs(),
                        tms.len()
                    ),
                    now,
                );
                job.waiting_for = None;
            }
            return;
        }
        // Spread: each slot goes to the TaskManager with the most free slots left.
        let mut placement = Vec::with_capacity(needed as usize);
        for _ in 0..needed {
            let best = free
                .iter_mut()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .expect("invariant: enough free slots were counted");
            best.1 -= 1;
            placement.push(best.0.clone());
        }
        if job.core.handle_slots_offered(needed, now).is_ok() {
            job.placement = placement;
            job.locations.clear();
            job.spent_before = job.spent();
            job.counts.clear();
            job.resources.clear();
            job.waiting_since = None;
            job.waiting_for = None;
        }
    }

    /// A TaskManager is gone: the tasks it ran have failed.
    pub fn tm_lost(&self, id: &str, reason: &str) {
        let mut cluster = self.lock();
        let Some(tm) = cluster.tms.remove(id) else {
            return;
        };
        tracing::warn!(tm = %id, "TaskManager lost: {reason}");
        tm.conn.close(2u32.into(), b"declared lost");
        let now = now_ms();
        for job in cluster.jobs.values_mut() {
            let lost: Vec<TaskId> = job
                .locations
                .iter()
                .filter(|(_, t)| *t == id)
                .map(|(task, _)| *task)
                .collect();
            for task in lost {
                job.core.handle_task_status(
                    task,
                    TaskStatus::Failed(TaskFailure::recoverable(format!(
                        "TaskManager {id} ({}) was lost: {reason}",
                        tm.addr
                    ))),
                    now,
                );
            }
        }
        self.drive(&mut cluster, now);
    }

    fn handle_tm_message(&self, tm: &str, msg: ToJobManager) {
        let mut cluster = self.lock();
        let now = now_ms();
        match msg {
            ToJobManager::Heartbeat { .. } => {
                if let Some(t) = cluster.tms.get_mut(tm) {
                    t.last_heartbeat = Instant::now();
                }
                return;
            }
            ToJobManager::TaskStatus {
                job,
                attempt,
                task,
                status,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job)
                    && j.core.attempt() == attempt
                {
                    j.core.handle_task_status(task, status, now);
                }
            }
            ToJobManager::TaskCounts {
                job,
                attempt,
                task,
                nodes,
                fuel,
                cpu_ns,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job)
                    && j.core.attempt() == attempt
                {
                    j.counts.insert(task, nodes);
                    j.resources.insert(task, (fuel, cpu_ns));
                }
                return;
            }
            ToJobManager::CheckpointAck {
                job,
                attempt,
                checkpoint,
                task,
                handle,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job) {
                    let coord = &mut j.checkpoints.coord;
                    if j.core.attempt() == attempt {
                        coord.handle_ack(checkpoint, task, handle, now);
                    } else {
                        // An earlier run's snapshot: kept only if its
                        // checkpoint completed.
                        coord.handle_late_ack(checkpoint, task);
                    }
                } else {
                    self.discard_orphan(job, checkpoint, task);
                }
            }
            ToJobManager::RestoreFailed {
                job,
                attempt,
                checkpoint,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job)
                    && j.core.attempt() == attempt
                {
                    let cp = &mut j.checkpoints;
                    tracing::warn!(%job, checkpoint, "checkpoint cannot be restored; falling back to an older one");
                    cp.coord.handle_unusable(checkpoint);
                    cp.completed.remove(&checkpoint);
                }
            }
            ToJobManager::CheckpointDecline {
                job,
                attempt,
                checkpoint,
                task,
                reason,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job)
                    && j.core.attempt() == attempt
                {
                    j.checkpoints
                        .coord
                        .handle_decline(checkpoint, task, &reason, now);
                }
            }
        }
        self.drive(&mut cluster, now);
    }

    /// A snapshot acknowledged after its job left memory: its checkpoint
    /// never completed (completion needs every acknowledgement), so unless
    /// the job's checkpoints are kept on purpose (a failed job's) or it is a
    /// savepoint, the snapshot is garbage and goes.
    fn discard_orphan(&self, job: JobId, checkpoint: u64, task: TaskId) {
        let Some(r) = self.results.get(job) else {
            return;
        };
        if r.state == "RUNNING" || r.retained || r.keep.contains(&checkpoint) {
            return;
        }
        match Storage::open(&r.storage, &S3Options::from_env()) {
            Ok(storage) => {
                crate::checkpoints::discard_snapshot(&self.io, &storage, job, checkpoint, task);
            }
            Err(e) => tracing::warn!(%job, checkpoint, "cannot delete a late snapshot: {e}"),
        }
    }

    /// Background storage work finished.
    fn handle_io(&self, done: IoDone) {
        let mut cluster = self.lock();
        let now = now_ms();
        match done {
            IoDone::JobCleaned { job, cleaned } => {
                if !cleaned {
                    tracing::warn!(%job, "checkpoints not all deleted; the next JobManager start retries");
                }
                if let Err(e) = self.results.update(job, |r| r.cleaned = cleaned) {
                    tracing::error!(%job, "cannot record the job's cleanup: {e}");
                }
                return;
            }
            IoDone::MetadataWritten {
                job,
                checkpoint,
                result,
            } => {
                if let Some(j) = cluster.jobs.get_mut(&job) {
                    j.checkpoints
                        .coord
                        .handle_metadata_written(checkpoint, result, now);
                }
            }
        }
        self.drive(&mut cluster, now);
    }

    /// Periodic work: restarts due, slot waits, silent TaskManagers.
    fn tick(&self) {
        let silent: Vec<String> = self
            .lock()
            .tms
            .values()
            .filter(|t| t.last_heartbeat.elapsed() > self.config.heartbeat_timeout)
            .map(|t| t.id.clone())
            .collect();
        for id in silent {
            let reason = format!(
                "no heartbeat for {}s",
                self.config.heartbeat_timeout.as_secs()
            );
            self.tm_lost(&id, &reason);
        }
        let mut cluster = self.lock();
        self.drive(&mut cluster, now_ms());
    }
}

/// The refusal for acting on a job that ended (Flink answers 409 too).
fn ended(id: JobId, state: &str) -> SubmitError {
    SubmitError::Conflict(format!(
        "Job {id} has already reached a terminal state ({state})"
    ))
}

/// How to submit a job, beyond its arguments.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubmitOptions {
    /// Checkpoint interval; `None`: the cluster's default; zero: none.
    pub checkpoint_interval: Option<Duration>,
    /// A savepoint to start from.
    pub savepoint_path: Option<String>,
    /// Start even if the savepoint holds state of operators the job lacks.
    pub allow_non_restored_state: bool,
}

/// What the JobManager refuses or fails to do; the REST API gives each
/// kind one status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    /// No such job or application (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot work as given (400).
    #[error("{0}")]
    Invalid(String),
    /// The request meets the job's or the cluster's state (409): a job that
    /// ended, an output another job writes.
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Over a quota of the tenant (403; 413 for one upload's size, 429
    /// for concurrent uploads).
    #[error("{0}")]
    Quota(Exceeded),
    /// Larger than the JobManager takes (413).
    #[error("{0}")]
    TooLarge(String),
    /// The JobManager is too busy for it now (429).
    #[error("{0}")]
    Busy(String),
    /// The JobManager itself failed (500).
    #[error("{0}")]
    Internal(String),
}

fn default_tenant() -> TenantId {
    TenantId::new(crate::tenancy::DEFAULT_TENANT).expect("invariant: a valid tenant name")
}

/// Uploads the JobManager receives at once, over all tenants.
pub(crate) const MAX_UPLOADS: usize = 16;

/// The largest upload taken whatever the policy says.
pub(crate) const HARD_MAX_UPLOAD: u64 = 1 << 30;

/// An upload under way: it holds its tenant's quota until it is stored or
/// dropped (a failed or cut-short upload), when its file goes too.
pub(crate) struct Upload {
    jm: Arc<JobManager>,
    pub who: Principal,
    /// Where the bytes go as they arrive.
    pub path: PathBuf,
    id: String,
    received: u64,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
            self.jm
                .lock()
                .ledger
                .release(&self.who.tenant, &Holder::Upload(self.id.clone()));
        }
    }
}

/// `path` (a savepoint or a savepoint directory a client names) relative to
/// the storage at `root`, or a refusal: it must be inside `root` (a tenant's
/// prefix), and every segment must be a plain name, so `..`, `.`, empty
/// and percent-encoded segments never reach the storage.
pub(crate) fn confined_path(root: &str, path: &str) -> Result<String, SubmitError> {
    let root = root.trim_end_matches('/');
    let inside = |prefix: &str| {
        path.strip_prefix(prefix)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let relative = if let Some(rest) = inside(root) {
        rest
    } else if let Some(rest) = root.strip_prefix("file://").and_then(inside) {
        rest
    } else if path.contains("://") || path.starts_with('/') {
        return Err(SubmitError::Forbidden(format!(
            "`{path}` is not in your checkpoint storage ({root})"
        )));
    } else {
        path
    };
    let relative = relative.trim_matches('/');
    let plain = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !relative.is_empty() && !relative.split('/').all(plain) {
        return Err(SubmitError::Invalid(format!(
            "`{path}` has a segment that is not a plain name (`..`, `.`, an empty or encoded one)"
        )));
    }
    Ok(relative.to_owned())
}

/// An application's id as stored (`SHA256.wasm`) from what users give:
/// with or without the `.wasm`.
pub(crate) fn jar_key(id: &str) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{}.wasm", id.to_ascii_lowercase())
    } else {
        id.to_owned()
    }
}

/// One line per change of a job's status; a restart or a failure with its
/// cause.
fn log_status(job: &JobEntry, status: JobStatus) {
    let (id, name) = (job.id, status_name(status));
    let cause = job.core.failure().unwrap_or("");
    match status {
        JobStatus::Restarting => tracing::warn!(
            job = %id,
            status = name,
            attempt = job.core.attempt() + 1,
            "job restarts after a failure: {cause}"
        ),
        JobStatus::Failed => tracing::warn!(
            job = %id,
            status = name,
            "job failed: {cause}; not restarted: {}",
            job.core.not_restarted().unwrap_or("-")
        ),
        _ => tracing::info!(job = %id, status = name, "job status changed"),
    }
}

/// Flink's name for a job status.
pub(crate) fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Created => "CREATED",
        JobStatus::Running => "RUNNING",
        JobStatus::Cancelling => "CANCELLING",
        JobStatus::Restarting => "RESTARTING",
        JobStatus::Finished => "FINISHED",
        JobStatus::Failed => "FAILED",
        JobStatus::Canceled => "CANCELED",
    }
}

fn used_slots(jobs: &BTreeMap<JobId, JobEntry>) -> HashMap<String, u32> {
    let mut used = HashMap::new();
    for j in jobs.values() {
        for tm in &j.placement {
            *used.entry(tm.clone()).or_insert(0) += 1;
        }
    }
    used
}

/// Turns the core's deploy commands into one message per TaskManager,
/// with where each channel's other end is.
fn send_deployments(
    job: &mut JobEntry,
    tms: &BTreeMap<String, Tm>,
    deploys: Vec<(u32, sluice_coord::TaskDeployment)>,
) {
    let mut producer: HashMap<u32, String> = HashMap::new();
    let mut consumer: HashMap<u32, String> = HashMap::new();
    for (slot, d) in &deploys {
        let tm = job.placement[*slot as usize].clone();
        for ch in d.outputs.iter().flat_map(|o| o.channels.iter()) {
            producer.insert(*ch, tm.clone());
        }
        for (ch, _) in &d.inputs {
            consumer.insert(*ch, tm.clone());
        }
        job.locations.insert(d.task, tm);
    }
    let peer = |id: &str| {
        tms.get(id).map(|t| Peer {
            id: id.to_owned(),
            addr: t.addr,
        })
    };
    let involved: std::collections::BTreeSet<&String> = job.placement.iter().collect();
    // A new run continues from the newest completed checkpoint, if any.
    let restore_point = job.checkpoints.restore_point(now_ms());
    if let Some(meta) = &restore_point {
        tracing::info!(job = %job.id, checkpoint = meta.checkpoint, "restoring from checkpoint");
    }
    let mut per_tm: BTreeMap<String, Vec<(u32, sluice_coord::TaskDeployment)>> = BTreeMap::new();
    for (slot, d) in deploys {
        per_tm
            .entry(job.placement[slot as usize].clone())
            .or_default()
            .push((slot, d));
    }
    for (tm_id, tasks) in per_tm {
        let restore = restore_point.as_ref().map(|meta| {
            let ids: Vec<TaskId> = tasks.iter().map(|(_, t)| t.task).collect();
            meta.restore_for(&job.execution, &ids)
        });
        let remote_consumers = producer
            .iter()
            .filter(|(ch, p)| **p == tm_id && consumer.get(*ch).is_some_and(|c| *c != tm_id))
            .filter_map(|(ch, _)| Some((*ch, peer(&consumer[ch])?)))
            .collect();
        let remote_producers = consumer
            .iter()
            .filter(|(ch, c)| **c == tm_id && producer.get(*ch).is_some_and(|p| *p != tm_id))
            .map(|(ch, _)| *ch)
            .collect();
        let connect_to = involved
            .iter()
            .filter(|other| ***other < tm_id)
            .filter_map(|other| peer(other))
            .collect();
        let deployment = Deployment {
            job: job.id,
            attempt: job.core.attempt(),
            name: job.name.clone(),
            tenant: job.owner.to_string(),
            policy: job.policy.clone(),
            component_hash: job.hash.clone(),
            component: job.component.as_ref().clone(),
            tasks,
            remote_consumers,
            remote_producers,
            connect_to,
            checkpoints: Some(job.checkpoints.settings.clone()),
            restore,
        };
        match tms.get(&tm_id) {
            Some(tm) => {
                let _ = tm.tx.send(ToTaskManager::Deploy(Box::new(deployment)));
            }
            None => {
                // Placement only uses registered TaskManagers, and losing
                // one removes it under the same lock: unreachable, but a
                // task that cannot be deployed must still fail visibly.
                for (_, t) in &deployment.tasks {
                    job.core.handle_task_status(
                        t.task,
                        TaskStatus::Failed(TaskFailure::recoverable(format!(
                            "TaskManager {tm_id} is gone"
                        ))),
                        now_ms(),
                    );
                }
            }
        }
    }
}

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
        Some(sluice_transport::server_config(&identity, true)?),
    )?;
    crate::metrics::install();
    let rest = tokio::net::TcpListener::bind(config.rest_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the REST API", config.rest_addr))?;
    let (tenancy, admin_token) = Tenancy::open(&config.data_dir, config.tenancy.clone())?;
    let runtime = Runtime::new(
        sluice_policy::Policy::standard(),
        RuntimeOptions {
            slots: 2,
            cache_dir: Some(config.data_dir.join("cache")),
            ..RuntimeOptions::default()
        },
    )?;
    let connectors = Connectors::new(&tokio::runtime::Handle::current(), config.base_dir.clone())
        .map_err(|e| anyhow::anyhow!("cannot set up connectors: {e}"))?;
    // Fail at start, not at the first checkpoint, on a store that cannot work.
    Storage::open(&config.checkpoint_storage, &S3Options::from_env())
        .map_err(anyhow::Error::new)?
        .probe(STORAGE_PROBE)
        .await
        .map_err(anyhow::Error::new)?;
    let (io_done, mut io_rx) = mpsc::unbounded_channel();
    let jm = Arc::new(JobManager {
        config: config.clone(),
        cluster: Mutex::new(Cluster {
            tms: BTreeMap::new(),
            jobs: BTreeMap::new(),
            jars: BTreeMap::new(),
            ledger: Ledger::default(),
            billed: BTreeMap::new(),
        }),
        runtime,
        connectors,
        rest_addr: Mutex::new(None),
        tenancy,
        runtimes: Mutex::new(HashMap::new()),
        jars: crate::jars::JarStore::new(&config.data_dir),
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        ca,
        token,
        members: Mutex::new(members),
        members_path,
        io: tokio::runtime::Handle::current(),
        io_done,
        results: JobResultStore::new(&config.data_dir.join("job-results")),
        components: Mutex::new(HashMap::new()),
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
    let ticker = jm.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let jm = ticker.clone();
            // Drive on a blocking thread: the core's work is quick, but
            // the lock is shared with blocking submissions.
            let _ = tokio::task::spawn_blocking(move || jm.tick()).await;
        }
    });
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
            let cleaned = crate::checkpoints::discard_job(&storage, job, &r.keep).await;
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

async fn accept(jm: Arc<JobManager>, endpoint: quinn::Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let jm = jm.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, "refused a cluster connection: {e}");
                    return;
                }
            };
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            let result = match alpn.as_deref() {
                Some(p) if p == ALPN_JOIN => handle_join(&jm, &conn).await,
                Some(p) if p == ALPN_CLUSTER && conn.peer_identity().is_some() => {
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
                        &req.name,
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

/// SHA-256 of the certificate a peer presented in the TLS handshake.
fn peer_fingerprint(conn: &Connection) -> Option<[u8; 32]> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<quinn::rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(sluice_transport::pki::fingerprint)
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
    let fingerprint = peer_fingerprint(&conn).context("the TaskManager sent no certificate")?;
    let admitted = {
        let mut book = jm.lock_members();
        book.admit(&fingerprint, &hello.name, now_ms())
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
    frame::write(
        &mut send,
        &Welcome::Accepted {
            id: id.clone(),
            heartbeat_secs: HEARTBEAT_SECS,
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
    let reason = match &result {
        Ok(()) => "it closed its connection".to_owned(),
        Err(e) => crate::error_chain(e),
    };
    let jm2 = jm.clone();
    tokio::task::spawn_blocking(move || jm2.tm_lost(&id, &reason)).await?;
    result
}
