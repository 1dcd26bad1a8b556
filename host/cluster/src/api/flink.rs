//! The bodies of the endpoints Flink's own clients (its CLI, its web UI)
//! read, in Flink's shapes and under Flink's names, with Sluice's
//! additions (the owning tenant, what a job waits for, its policy) marked
//! where they are. The JobManager builds them (`views`, `rest`); the
//! `sluice` client reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sluice_policy::quota::Usage;
use sluice_policy::{Limits, Quotas};

/// Every refusal: `{"errors": [...]}`, as Flink answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Why, one line each.
    pub errors: Vec<String>,
}

/// An answer with nothing to say (`{}`), as Flink's cancel and delete give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// `GET /config`: what Flink's web UI asks first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DashboardConfig {
    /// How often the UI refreshes, ms.
    pub refresh_interval: u64,
    /// The server's time zone.
    pub timezone_name: String,
    /// Its offset from UTC, ms.
    pub timezone_offset: i64,
    /// The version the UI shows.
    pub flink_version: String,
    /// The revision the UI shows.
    pub flink_revision: String,
    /// What the UI may offer.
    pub features: DashboardFeatures,
}

/// The web UI's features.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DashboardFeatures {
    /// Uploading and running applications.
    pub web_submit: bool,
    /// Cancelling jobs.
    pub web_cancel: bool,
    /// Rescaling jobs.
    pub web_rescale: bool,
    /// The history server.
    pub web_history: bool,
}

/// `GET /overview`: the cluster's capacity and the caller's job counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ClusterOverview {
    /// Registered TaskManagers.
    pub taskmanagers: usize,
    /// Their slots.
    pub slots_total: u32,
    /// Slots no job holds.
    pub slots_available: u32,
    /// The caller's jobs that have not ended.
    pub jobs_running: usize,
    /// Finished.
    pub jobs_finished: usize,
    /// Cancelled.
    pub jobs_cancelled: usize,
    /// Failed.
    pub jobs_failed: usize,
    /// Sluice's version.
    pub flink_version: String,
    /// `sluice`.
    pub flink_commit: String,
}

/// One job of `GET /jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIdStatus {
    /// The job.
    pub id: String,
    /// Its state (`RUNNING`, ...).
    pub status: String,
}

/// `GET /jobs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobIds {
    /// The caller's jobs in the JobManager's memory.
    pub jobs: Vec<JobIdStatus>,
}

/// One job of `GET /jobs/overview`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobOverview {
    /// The job.
    pub jid: String,
    /// Its name (the application's).
    pub name: String,
    /// `STREAMING`.
    #[serde(rename = "jobType")]
    pub job_type: String,
    /// `Default`.
    #[serde(rename = "schedulerType")]
    pub scheduler_type: String,
    /// Submission, ms since the epoch.
    pub start_time: u64,
    /// End, ms since the epoch; -1 while it runs.
    pub end_time: i64,
    /// Ms from start to end (or now).
    pub duration: u64,
    /// Its state.
    pub state: String,
    /// When its state last changed, ms since the epoch.
    pub last_modification: u64,
    /// Its tasks by state (lowercase), and `total`.
    pub tasks: BTreeMap<String, u32>,
    /// Always 0.
    pub pending_operators: u32,
    /// Not in Flink's shape: the tenant that owns the job.
    #[serde(default)]
    pub tenant: String,
    /// Not in Flink's shape: while the run waits for slots, what for.
    #[serde(default)]
    pub waiting_for: Option<String>,
}

/// `GET /jobs/overview`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsOverview {
    /// The caller's jobs, newest first.
    pub jobs: Vec<JobOverview>,
}

/// Records a vertex read and wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexMetrics {
    /// Records its first node received.
    pub read_records: u64,
    /// Always true: the counts are the TaskManagers' latest.
    pub read_records_complete: bool,
    /// Records its last node emitted.
    pub write_records: u64,
    /// Always true.
    pub write_records_complete: bool,
}

/// Records one node of a vertex (one operator of a chain) read and wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct NodeView {
    /// The node's name.
    pub name: String,
    /// Records received.
    pub read_records: u64,
    /// Records emitted.
    pub write_records: u64,
}

/// One vertex (a chain of operators) of `GET /jobs/:id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct VertexView {
    /// 32 hex digits.
    pub id: String,
    /// 32 hex digits: every vertex shares one group of slots.
    #[serde(rename = "slotSharingGroupId", default)]
    pub slot_sharing_group_id: String,
    /// Its name.
    pub name: String,
    /// The job's key groups.
    #[serde(rename = "maxParallelism")]
    pub max_parallelism: u32,
    /// Its subtasks.
    pub parallelism: u32,
    /// Derived from its subtasks' states.
    pub status: String,
    /// The job's start, ms since the epoch.
    pub start_time: u64,
    /// The job's end; -1 while it runs.
    pub end_time: i64,
    /// Ms from start to end (or now).
    pub duration: u64,
    /// Its subtasks by state (uppercase).
    pub tasks: BTreeMap<String, u32>,
    /// Records in and out.
    pub metrics: VertexMetrics,
    /// Not in Flink's shape: each chained node's counts.
    #[serde(default)]
    pub nodes: Vec<NodeView>,
}

/// The policy a job was admitted with: a reload changes new jobs only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyAsOf {
    /// The policy's name.
    pub name: String,
    /// `submission`.
    pub as_of: String,
    /// Its per-instance limits.
    pub limits: Limits,
    /// Its quotas.
    pub quotas: Quotas,
}

/// `GET /jobs/:id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobDetail {
    /// The job.
    pub jid: String,
    /// The application it belongs to: the job itself (one job per run).
    #[serde(default)]
    pub application_id: String,
    /// Its name.
    pub name: String,
    /// Always false: stop goes through a savepoint.
    #[serde(rename = "isStoppable")]
    pub is_stoppable: bool,
    /// Its state.
    pub state: String,
    /// `STREAMING`.
    pub job_type: String,
    /// `Default`.
    #[serde(rename = "schedulerType", default)]
    pub scheduler_type: String,
    /// Submission, ms since the epoch.
    pub start_time: u64,
    /// End, ms since the epoch; -1 while it runs.
    pub end_time: i64,
    /// Ms from start to end (or now).
    pub duration: u64,
    /// Key groups (Flink answers -1 where the vertices differ).
    #[serde(rename = "maxParallelism")]
    pub max_parallelism: i64,
    /// The JobManager's clock when it answered.
    pub now: u64,
    /// When the job entered each state (0: never).
    pub timestamps: BTreeMap<String, u64>,
    /// Its vertices.
    pub vertices: Vec<VertexView>,
    /// Its current run's tasks by state.
    pub status_counts: BTreeMap<String, u32>,
    /// Always 0.
    #[serde(default)]
    pub pending_operators: u32,
    /// Not in Flink's shape: restarts so far.
    #[serde(default)]
    pub attempt: u32,
    /// Not in Flink's shape: why a failed job was not restarted.
    #[serde(default)]
    pub not_restarted: Option<String>,
    /// Not in Flink's shape: where the current (or last) run's tasks are.
    #[serde(default)]
    pub taskmanagers: BTreeSet<String>,
    /// Not in Flink's shape: the owning tenant.
    #[serde(default)]
    pub tenant: String,
    /// Not in Flink's shape: while the run waits for slots, what for.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// Not in Flink's shape: the policy as it was at submission.
    #[serde(default)]
    pub policy: Option<PolicyAsOf>,
    /// Not in Flink's shape: applications linked to the job, by the name
    /// its plan uses for them → their ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// A failure that followed the root cause in the same run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrentException {
    /// `SluiceTaskFailure`.
    pub exception_name: String,
    /// The task's error.
    pub stacktrace: String,
    /// When the run failed, ms since the epoch.
    pub timestamp: u64,
    /// `vertex (subtask/parallelism)`.
    pub task_name: Option<String>,
}

/// One failed run in `GET /jobs/:id/exceptions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionEntry {
    /// `SluiceTaskFailure`.
    pub exception_name: String,
    /// The root cause.
    pub stacktrace: String,
    /// When, ms since the epoch.
    pub timestamp: u64,
    /// The task that failed first, if a task did.
    pub task_name: Option<String>,
    /// The run it ended.
    pub attempt: u32,
    /// `kind`: what sort of failure.
    pub failure_labels: BTreeMap<String, String>,
    /// The failures that followed.
    pub concurrent_exceptions: Vec<ConcurrentException>,
}

/// The exception history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionHistory {
    /// Newest first.
    pub entries: Vec<ExceptionEntry>,
    /// Whether older ones were left out.
    pub truncated: bool,
}

/// `GET /jobs/:id/exceptions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exceptions {
    /// The failed runs.
    pub exception_history: ExceptionHistory,
}

/// Checkpoint counts over the job's life.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCountsView {
    /// Restores.
    pub restored: u64,
    /// Triggered.
    pub total: u64,
    /// In flight.
    pub in_progress: u64,
    /// Completed.
    pub completed: u64,
    /// Failed (declined ones included).
    pub failed: u64,
}

/// One checkpoint or savepoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    /// `completed`, `in_progress` or `failed`.
    #[serde(rename = "className")]
    pub class_name: String,
    /// Its id.
    pub id: u64,
    /// `COMPLETED`, `IN_PROGRESS` or `FAILED`.
    pub status: String,
    /// A savepoint rather than a checkpoint.
    pub is_savepoint: bool,
    /// `CANONICAL` for a savepoint (Sluice's snapshots are one format,
    /// restorable at any parallelism); null for a checkpoint.
    #[serde(rename = "savepointFormat", default)]
    pub savepoint_format: Option<String>,
    /// Ms since the epoch.
    pub trigger_timestamp: u64,
    /// Ms since the epoch (0: none yet).
    pub latest_ack_timestamp: u64,
    /// Ms from trigger to end (0 while in flight).
    pub end_to_end_duration: u64,
    /// Tasks that must acknowledge.
    pub num_subtasks: usize,
    /// Tasks that did.
    pub num_acknowledged_subtasks: usize,
    /// `CHECKPOINT` or `SAVEPOINT`.
    pub checkpoint_type: String,
    /// Where it is stored.
    pub external_path: String,
    /// Completed, then deleted by retention.
    pub discarded: bool,
    /// Bytes stored (known while retained).
    pub state_size: u64,
    /// The same.
    pub checkpointed_size: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// When it failed, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_timestamp: Option<u64>,
}

/// The checkpoint the current run restored from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredCheckpoint {
    /// Its id.
    pub id: u64,
    /// When, ms since the epoch.
    pub restore_timestamp: u64,
    /// Always false: a savepoint restore shows as the savepoint's path.
    pub is_savepoint: bool,
    /// Where it is.
    pub external_path: String,
}

/// The latest checkpoint of each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestCheckpoints {
    /// Completed.
    pub completed: Option<CheckpointEntry>,
    /// Savepoint.
    pub savepoint: Option<CheckpointEntry>,
    /// Failed.
    pub failed: Option<CheckpointEntry>,
    /// Restored from.
    pub restored: Option<RestoredCheckpoint>,
}

/// `GET /jobs/:id/checkpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsView {
    /// Counts.
    pub counts: CheckpointCountsView,
    /// The latest of each kind.
    pub latest: LatestCheckpoints,
    /// The recent history, oldest first.
    pub history: Vec<CheckpointEntry>,
}

/// Whether checkpoints are kept after the job ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Externalization {
    /// Always true.
    pub enabled: bool,
    /// Always true.
    pub delete_on_cancellation: bool,
}

/// `GET /jobs/:id/checkpoints/config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfigView {
    /// `exactly_once` or `at_least_once`.
    pub mode: String,
    /// Ms between checkpoints; `i64::MAX` when periodic ones are off.
    pub interval: i64,
    /// Ms before one in flight is abandoned.
    pub timeout: u64,
    /// Ms between one's end and the next's trigger.
    pub min_pause: u64,
    /// In flight at once.
    pub max_concurrent: u32,
    /// Kept after the job ends.
    pub externalization: Externalization,
    /// Where state lives between checkpoints: `SluiceKeyedState` (the
    /// TaskManager's memory, per key group).
    pub state_backend: String,
    /// Where checkpoints are stored.
    pub checkpoint_storage: String,
    /// Always false.
    pub unaligned_checkpoints: bool,
    /// Failures tolerated before the job fails.
    pub tolerable_failed_checkpoints: u32,
    /// Always 0: barriers are always aligned.
    pub aligned_checkpoint_timeout: u64,
    /// Whether checkpoints go on once some tasks finished.
    pub checkpoints_after_tasks_finish: bool,
    /// Always false.
    pub state_changelog_enabled: bool,
    /// Not in Flink's shape: completed ones kept.
    #[serde(default)]
    pub retained_checkpoints: usize,
}

/// `GET /jobs/:id/savepoints/:trigger`'s `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStatus {
    /// `IN_PROGRESS` or `COMPLETED`.
    pub id: String,
}

/// Why a savepoint failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureCause {
    /// `SavepointFailed`.
    pub class: String,
    /// The reason.
    pub stack_trace: String,
    /// Always null (there is no Java exception to serialise).
    pub serialized_throwable: Option<String>,
}

/// A completed savepoint operation: where, or why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SavepointOutcome {
    /// Where the savepoint is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Why there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cause: Option<FailureCause>,
}

/// `GET /jobs/:id/savepoints/:trigger`, Flink's asynchronous operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointStatus {
    /// Whether it is done.
    pub status: OperationStatus,
    /// Its outcome once done.
    pub operation: Option<SavepointOutcome>,
}

/// An entry point of an application (Flink lists a jar's main classes;
/// a component has none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JarEntryPoint {
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
}

/// One uploaded application of `GET /jars`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JarFile {
    /// Its id (`HASH.wasm`).
    pub id: String,
    /// The name it was uploaded under.
    pub name: String,
    /// Upload, ms since the epoch.
    pub uploaded: u64,
    /// Bytes.
    #[serde(default)]
    pub size: u64,
    /// Always empty.
    pub entry: Vec<JarEntryPoint>,
    /// Not in Flink's shape: the owning tenant.
    #[serde(default)]
    pub tenant: String,
}

/// `GET /jars`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JarList {
    /// The REST address.
    pub address: Option<String>,
    /// The caller's applications.
    pub files: Vec<JarFile>,
}

/// A TaskManager of `GET /taskmanagers` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManagerView {
    /// Its id.
    pub id: String,
    /// `quic://ADDRESS`.
    pub path: String,
    /// Its data port.
    pub data_port: u16,
    /// Always -1.
    pub jmx_port: i32,
    /// Ms since its last heartbeat.
    pub time_since_last_heartbeat: u64,
    /// Its slots.
    pub slots_number: u32,
    /// Slots no job holds.
    pub free_slots: u32,
    /// Tasks deployed on it.
    pub assigned_tasks: usize,
    /// Registration, ms since the epoch.
    pub registered: u64,
    /// Not in Flink's shape: its certificate's id.
    #[serde(default)]
    pub certificate: String,
}

/// `GET /taskmanagers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskManagers {
    /// Every registered TaskManager.
    pub taskmanagers: Vec<TaskManagerView>,
}

/// A tenant of `GET /tenants` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TenantView {
    /// Its name.
    pub name: String,
    /// Its human-readable name.
    pub display_name: String,
    /// Its policy.
    pub policy: String,
    /// Its file roots (empty: the policy's, or its own directory).
    pub file_roots: Vec<PathBuf>,
    /// What it holds now.
    pub usage: Usage,
}

/// `GET /tenants`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenants {
    /// Every tenant.
    pub tenants: Vec<TenantView>,
}

/// `POST /tenants/reload`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Tenants now loaded.
    pub tenants: usize,
    /// Policies now loaded.
    pub policies: usize,
}

/// A TaskManager certificate the JobManager issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    /// The first 16 hex digits of its fingerprint.
    pub id: String,
    /// SHA-256 of the certificate (DER), hex.
    pub fingerprint: String,
    /// The name the TaskManager gave when it joined.
    pub name: String,
    /// The join token it was issued with (`adopted`: issued before
    /// certificates were recorded).
    pub token: String,
    /// Issue, ms since the epoch.
    pub issued_ms: u64,
    /// Removal, ms since the epoch.
    pub removed_ms: Option<u64>,
}

/// `GET /certificates` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificates {
    /// Every certificate issued, removed ones included.
    pub certificates: Vec<CertificateView>,
}

/// `DELETE /certificates/:id`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRemoved {
    /// The removed certificate.
    pub record: CertificateView,
}
