//! The JobManager: what it does with its state (`crate::table`) when a
//! request, a TaskManager message or a timer arrives: submission under the
//! tenant's quotas and file roots, jar uploads, savepoints and cancels, slot
//! scheduling (placing and deploying runs is `crate::placement`), the
//! failure detector, membership (join tokens
//! and certificates), and driving each job's sans-IO core from
//! `sluice-coord` with its checkpoints (`crate::checkpoints`). Requests reach
//! jobs and jars through the ownership check (`crate::access`). The process
//! around it — binding ports, accepting connections, timers, the REST
//! server — is `crate::server`; this module does not depend on the REST
//! layer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_connectors::Connectors;
use sluice_coord::{
    CheckpointConfig, Command, Job, JobStatus, RestartStrategy, TaskFailure, TaskId, TaskStatus,
};
use sluice_state::{S3Options, Storage};

use crate::checkpoints::{IoDone, JobCheckpoints};
use crate::results::{JobResult, JobResultStore};
use sluice_policy::auth::Principal;
use sluice_policy::quota::{Holder, Usage};
use sluice_policy::{Policy, TenantId};
use sluice_runtime::{PreparedJob, RunError};
use sluice_transport::{ClusterCa, JoinToken};
use sluice_types::JobId;
use sluice_wasm::{App, Runtime};
use tokio::sync::mpsc;

use crate::members::{CertRecord, JoinRecord, MemberBook};
use crate::table::{Cluster, Jar, JobEntry, Spent, SubmitError, Tm, now_ms, status_name};
use crate::tenancy::{AuthMode, Tenancy, TenancyConfig};
use crate::{access, placement};

use crate::protocol::{ToJobManager, ToTaskManager};

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
    /// A TaskManager whose heartbeats (every [`HEARTBEAT_SECS`]) stop this
    /// long while its connection lives is declared lost (a stuck process).
    pub heartbeat_timeout: Duration,
    /// A TaskManager whose connection is silent this long is declared lost
    /// (a killed process, a dead host, a cut network): QUIC keep-alives go
    /// every fifth of it.
    pub peer_timeout: Duration,
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
    /// Where uploaded components are compiled (see `sluice_wasm::Compiler`).
    pub compiler: sluice_wasm::Compiler,
}

/// The JobManager's shared state.
pub(crate) struct JobManager {
    pub(crate) config: JobManagerConfig,
    pub(crate) cluster: Mutex<Cluster>,
    pub(crate) connectors: Connectors,
    pub(crate) rest_addr: Mutex<Option<SocketAddr>>,
    pub(crate) tenancy: Tenancy,
    /// Engines by policy name, for running plan functions under the
    /// submitting tenant's limits.
    pub(crate) runtimes: sluice_wasm::Runtimes,
    /// Uploaded components on disk.
    pub(crate) jars: crate::jars::JarStore,
    /// Uploads received at once, over all tenants.
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    /// Received uploads validated at once (each is read whole and
    /// compiled): one per core (2 to 4), so that many uploads finishing
    /// together wait their turn instead of each holding its bytes in memory.
    pub(crate) checks: tokio::sync::Semaphore,
    /// One validation at a time per tenant (see `rest::upload`).
    pub(crate) tenant_checks: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// What compiling each tenant's components cost here.
    pub(crate) compiles: crate::compiles::Compiles,
    pub(crate) ca: ClusterCa,
    pub(crate) token: JoinToken,
    /// Join tokens and issued certificates, and where they are kept.
    pub(crate) members: Mutex<MemberBook>,
    pub(crate) members_path: PathBuf,
    /// Where background storage work runs, and where it reports.
    pub(crate) io: tokio::runtime::Handle,
    pub(crate) io_done: mpsc::UnboundedSender<IoDone>,
    /// Which jobs ended and whether their checkpoints are cleaned up.
    pub(crate) results: JobResultStore,
    /// Uploaded components' bytes by hash, while a job holds them.
    pub(crate) components: Mutex<HashMap<String, std::sync::Weak<Vec<u8>>>>,
    /// When [`JobManager::tick`] has work next (ms since the epoch), as
    /// the last `drive` computed it; the ticker sleeps until then.
    pub(crate) deadline: tokio::sync::watch::Sender<Option<u64>>,
}

impl JobManager {
    pub fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn lock_members(&self) -> MutexGuard<'_, MemberBook> {
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
        let (record, removed) = {
            let mut book = self.lock_members();
            let record = book
                .remove_certificate(id, now_ms())
                .ok_or_else(|| SubmitError::NotFound(format!("there is no certificate `{id}`")))?;
            book.save(&self.members_path)
                .map_err(|e| SubmitError::Internal(format!("cannot record the removal: {e}")))?;
            (record, book.removed_fingerprints())
        };
        for tm in self.lock().tms.values() {
            if tm.certificate == id {
                tm.conn.close(1u32.into(), b"certificate removed");
            } else {
                // The others drop and refuse it as a data-plane peer.
                let _ = tm.tx.send(ToTaskManager::Revoked {
                    fingerprints: removed.clone(),
                });
            }
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
        // Checked under the uploader's policy (its memory and table limits).
        let policy = self.policy_of(&upload.who.tenant)?;
        let (loaded, cost) = self.runtime_for(&policy)?.load_metered(&bytes);
        self.compiles
            .record(upload.who.tenant.as_str(), &cost, loaded.is_ok());
        loaded.map_err(|e| {
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
        self.runtimes.get(policy).map(|(r, _)| r).map_err(|e| {
            SubmitError::Internal(format!("cannot set up policy `{}`: {e}", policy.name))
        })
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
        let (policy, base) = self.job_policy(&who.tenant)?;
        let runtime = self.runtime_for(&policy)?;
        // The application and those linked to it: each one the caller's.
        let load = |id: &str, link: Option<&str>| -> Result<(App, Stored), SubmitError> {
            let jar = access::jar(&self.lock(), who, id)?.clone();
            let bytes = self.component(&jar)?;
            // Compiled at upload: compiled again only if the cache lost it.
            let (loaded, cost) = runtime.load_metered(&bytes);
            self.compiles
                .record(who.tenant.as_str(), &cost, loaded.is_ok());
            let app = loaded.map_err(|e| {
                SubmitError::Invalid(match link {
                    Some(name) => format!("the application linked as `{name}`: {e}"),
                    None => e.to_string(),
                })
            })?;
            Ok((app, Stored { jar, bytes }))
        };
        let (app, Stored { jar, bytes }) = load(jar_id, None)?;
        let mut linked_apps = Vec::new();
        let mut linked = Vec::new();
        let mut deployed_bytes = bytes.len();
        for (name, id) in &options.links {
            let (app, stored) = load(id, Some(name))?;
            if stored.jar.hash == jar.hash {
                return Err(SubmitError::Invalid(format!(
                    "the application linked as `{name}` is the job's own application"
                )));
            }
            if let Some(other) = linked
                .iter()
                .find(|l: &&LinkedComponent| l.hash == stored.jar.hash)
            {
                return Err(SubmitError::Invalid(format!(
                    "the application linked as `{name}` is also linked as `{}`",
                    other.link
                )));
            }
            deployed_bytes += stored.bytes.len();
            linked_apps.push((name.clone(), app));
            linked.push(LinkedComponent {
                link: name.clone(),
                jar: stored.jar.id,
                hash: stored.jar.hash,
                component: stored.bytes,
            });
        }
        // Every deployment carries the job's components in one frame.
        if deployed_bytes > MAX_JOB_COMPONENT_BYTES {
            return Err(SubmitError::Invalid(format!(
                "the job's components come to {deployed_bytes} bytes; at most {} MiB \
                 (the application and those linked to it) may be deployed",
                MAX_JOB_COMPONENT_BYTES >> 20
            )));
        }
        let components =
            sluice_runtime::Components::linked(app, linked_apps).map_err(SubmitError::Invalid)?;
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
            &components,
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
            linked,
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
            spent: None,
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
        match access::result(&self.results, who, id) {
            Some(r) if r.state != "RUNNING" => ended(id, &r.state),
            _ => access::no_job(id),
        }
    }

    /// What the job-result store kept of a job that left memory: its REST
    /// views (see `views::archive`).
    pub fn archived(&self, who: &Principal, id: JobId) -> Option<serde_json::Value> {
        access::result(&self.results, who, id)?.archive
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
            let used = placement::used_slots(jobs);
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
                placement::send_deployments(job, tms, deploys, now);
            }
            for tm in cancels {
                if let Some(tm) = tms.get(&tm) {
                    let _ = tm.tx.send(ToTaskManager::Cancel {
                        job: id,
                        attempt: job.core.attempt(),
                    });
                }
            }
            let send = |tm: &str, msg: ToTaskManager| {
                if let Some(tm) = tms.get(tm) {
                    let _ = tm.tx.send(msg);
                }
            };
            let view = crate::checkpoints::JobView {
                id,
                owner: &job.owner,
                policy: &job.policy,
                core: &job.core,
                execution: &job.execution,
                locations: &job.locations,
                checkpoints: &mut job.checkpoints,
            };
            let mut outcome =
                crate::checkpoints::drive(view, ledger, &send, &self.io, &self.io_done, now);
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
            if let Some(ended) = outcome.ended.take() {
                let result = JobResult {
                    job: id.to_string(),
                    owner: Some(job.owner.clone()),
                    state: status_name(ended.status).to_owned(),
                    storage: job.checkpoints.settings.storage.clone(),
                    keep: ended.keep,
                    retained: ended.retained,
                    cleaned: ended.retained,
                    // Its views and its cost outlive it in the job-result store.
                    archive: Some(crate::views::archive(job)),
                    spent: Some(job.spent()),
                };
                if let Err(e) = self.results.put(&result) {
                    tracing::error!(job = %id, "cannot record the job's end: {e}");
                }
                job.ended_at = Some(now);
            }
        }
        self.evict_ended(jobs, billed, now);
        let next = self.next_deadline(cluster, now);
        self.deadline.send_if_modified(|d| {
            let changed = *d != next;
            *d = next;
            changed
        });
    }

    /// When `drive` has work next, at the earliest: a restart due, a
    /// checkpoint to trigger or expire, a waiting job that fits in the free
    /// slots now or whose wait for slots runs out, an ended job leaving
    /// memory, a TaskManager's heartbeat overdue. `None`: nothing until a
    /// request or a TaskManager's message.
    fn next_deadline(&self, cluster: &Cluster, now: u64) -> Option<u64> {
        let ms = |d: Duration| d.as_millis() as u64;
        let used = placement::used_slots(&cluster.jobs);
        let free: u32 = placement::free_slots(&cluster.tms, &used)
            .iter()
            .map(|(_, f)| f)
            .sum();
        let jobs = cluster.jobs.values().flat_map(|j| {
            let live = !j.core.status().is_terminal();
            let waiting = (j.core.status() == JobStatus::Created).then(|| {
                if j.execution.slots_needed() <= free {
                    now
                } else {
                    j.waiting_since
                        .unwrap_or(now)
                        .saturating_add(ms(self.config.slot_timeout))
                }
            });
            [
                j.core.poll_timeout(),
                j.checkpoints.coord.poll_timeout().filter(|_| live),
                waiting,
                j.ended_at
                    .map(|t| t.saturating_add(ms(self.config.jobstore_expiration))),
            ]
        });
        let heartbeats = cluster.tms.values().map(|t| {
            let left = self
                .config
                .heartbeat_timeout
                .saturating_sub(t.last_heartbeat.elapsed());
            Some(now.saturating_add(ms(left)))
        });
        jobs.chain(heartbeats).flatten().min()
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
                    let spent = job.spent();
                    *billed.entry(job.owner.clone()).or_default() += spent;
                    // Figures that arrived after the end count too.
                    if let Err(e) = self.results.update(id, |r| r.spent = Some(spent)) {
                        tracing::warn!(job = %id, "cannot record what the job cost: {e}");
                    }
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
        let free = placement::free_slots(tms, used);
        let total: u32 = free.iter().map(|(_, f)| f).sum();
        let waiting_since = *job.waiting_since.get_or_insert(now);
        let Some(placement) = placement::spread(free, needed) else {
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
        };
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

    pub(crate) fn handle_tm_message(&self, tm: &str, msg: ToJobManager) {
        let mut cluster = self.lock();
        let now = now_ms();
        match msg {
            ToJobManager::Heartbeat { tenants, .. } => {
                if let Some(t) = cluster.tms.get_mut(tm) {
                    t.last_heartbeat = Instant::now();
                    t.shares = tenants;
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
    pub(crate) fn handle_io(&self, done: IoDone) {
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

    /// Timed work, run when [`JobManager::deadline`] is due: restarts,
    /// checkpoint triggers and expiries, slot waits, silent TaskManagers.
    pub(crate) fn tick(&self) {
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

/// The most bytes of components (the application and those linked to it)
/// one job deploys: they travel to each TaskManager in one frame, which
/// must stay under the transport's limit (256 MiB) with room to spare.
const MAX_JOB_COMPONENT_BYTES: usize = 192 << 20;

/// A component linked to a job: its operators are the ones the plan names
/// `LINK/OPERATOR`.
#[derive(Clone, Debug)]
pub(crate) struct LinkedComponent {
    /// The name the plan uses.
    pub link: String,
    /// The uploaded application's id.
    pub jar: String,
    /// SHA-256 of the component.
    pub hash: String,
    pub component: Arc<Vec<u8>>,
}

/// An uploaded application read for a submission.
struct Stored {
    jar: Jar,
    bytes: Arc<Vec<u8>>,
}

/// How to submit a job, beyond its arguments.
#[derive(Clone, Debug, Default)]
pub(crate) struct SubmitOptions {
    /// Uploaded applications linked to the job: link name → application id.
    pub links: Vec<(String, String)>,
    /// Checkpoint interval; `None`: the cluster's default; zero: none.
    pub checkpoint_interval: Option<Duration>,
    /// A savepoint to start from.
    pub savepoint_path: Option<String>,
    /// Start even if the savepoint holds state of operators the job lacks.
    pub allow_non_restored_state: bool,
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
