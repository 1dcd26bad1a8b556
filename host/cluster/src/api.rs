//! Request and response bodies of the REST API that the JobManager and the
//! `sluice` client share, so that both sides agree by type rather than by
//! key. Bodies Flink's own clients send or read keep Flink's names
//! (`programArgsList`, `jobid`, `request-id`); Sluice's own endpoints use
//! kebab-case. The views Flink's clients read (jobs, jars, TaskManagers,
//! checkpoints) are in [`flink`].

pub mod flink;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `POST /jars/:id/run`: what to run. Unknown fields are ignored, as Flink's
/// clients send some Sluice has no use for (`entryClass`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// Default parallelism of the job's nodes (1 if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// The plan function's arguments, each `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_args_list: Option<Vec<String>>,
    /// Milliseconds between checkpoints; 0 turns them off for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<u64>,
    /// A savepoint to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_path: Option<String>,
    /// Start even if the savepoint holds state the job has no place for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_restored_state: Option<bool>,
    /// Sluice's own: more uploaded applications linked to the job, by the
    /// name its plan gives their operators (`NAME/OPERATOR`) → their ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, String>,
}

/// `POST /jars/:id/run`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResponse {
    /// The new job's id.
    pub jobid: String,
}

/// `POST /jars/upload`'s answer, in Flink's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadResponse {
    /// Where the JobManager stored the application; its last segment is
    /// the application's id.
    pub filename: String,
    /// `success`.
    pub status: String,
}

/// `POST /jobs/:id/savepoints` and `/jobs/:id/stop`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// The id to ask `GET /jobs/:id/savepoints/:request-id` with.
    #[serde(rename = "request-id")]
    pub request_id: String,
}

/// `POST /jobs/:id/savepoints`, in Flink's shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointRequest {
    /// Where to write it (default: the job's checkpoint storage).
    #[serde(
        rename = "target-directory",
        alias = "targetDirectory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_directory: Option<String>,
    /// Cancel the job once the savepoint is taken.
    #[serde(
        rename = "cancel-job",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub cancel_job: Option<bool>,
}

/// `POST /jobs/:id/stop`: a savepoint, then the job cancelled; in Flink's
/// shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// Where to write the savepoint.
    #[serde(
        rename = "targetDirectory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_directory: Option<String>,
}

/// `POST /tenants` (admin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CreateTenant {
    /// Its name.
    pub name: String,
    /// The policy its jobs run under.
    pub policy: String,
    /// A human-readable name.
    #[serde(default)]
    pub display_name: String,
    /// Directories its file connectors may use (absolute).
    #[serde(default)]
    pub file_roots: Vec<PathBuf>,
}

/// `POST /tenants`' answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCreated {
    /// Its name.
    pub name: String,
    /// Its policy.
    pub policy: String,
}

/// `POST /tokens` (admin): an API token for a tenant, or a join token for
/// TaskManagers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CreateToken {
    /// The tenant an API token acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// A join token for TaskManagers instead of an API token.
    #[serde(default)]
    pub taskmanager: bool,
    /// May act on every tenant and manage the cluster.
    #[serde(default)]
    pub admin: bool,
    /// Lifetime in seconds; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenKind {
    /// A tenant's (or an admin's) REST API token.
    Api,
    /// A TaskManager's join token.
    Taskmanager,
}

/// A token as the admin API shows it: never its secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// What it is for.
    pub kind: TokenKind,
    /// The tenant an API token acts for.
    pub tenant: Option<String>,
    /// Whether it is an admin's.
    pub admin: bool,
    /// Creation, ms since the epoch.
    pub created: u64,
    /// Expiry, ms since the epoch.
    pub expires: Option<u64>,
    /// Revocation, ms since the epoch.
    pub revoked: Option<u64>,
    /// Certificates issued with a join token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins: Option<u64>,
}

/// `POST /tokens`' answer: the secret, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token to hand over.
    pub token: String,
    /// Its record.
    pub record: TokenView,
}

/// `GET /tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    /// API tokens, then join tokens.
    pub tokens: Vec<TokenView>,
}

/// `DELETE /tokens/:id`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevoked {
    /// The revoked token's record.
    pub record: TokenView,
}

/// One quota with its use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaUse {
    /// The policy's key (`max_jobs`, ...).
    pub quota: String,
    /// What the tenant holds now.
    pub used: u64,
    /// The limit; none: unlimited.
    pub limit: Option<u64>,
}

/// What a job cost so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct JobUsage {
    /// The job.
    pub jid: String,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: String,
    /// Records its sources emitted.
    pub records_in: u64,
    /// Records that reached its sinks.
    pub records_out: u64,
    /// Wasm fuel its guests burnt.
    pub fuel: u64,
    /// CPU seconds of its task threads.
    pub cpu_seconds: f64,
    /// Bytes of its latest completed checkpoint.
    pub checkpoint_bytes: u64,
}

/// What all of a tenant's jobs cost: those in memory and those the job-result
/// store records (it survives restarts of the JobManager).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct UsageTotal {
    /// Records the sources emitted.
    pub records_in: u64,
    /// Records that reached the sinks.
    pub records_out: u64,
    /// Wasm fuel burnt.
    pub fuel: u64,
    /// CPU seconds of task threads.
    pub cpu_seconds: f64,
    /// Bytes of the latest completed checkpoints of its jobs.
    pub checkpoint_bytes: u64,
}

/// `GET /tenants/me/usage` and `/tenants/:name/usage`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageView {
    /// The tenant.
    pub tenant: String,
    /// Its policy.
    pub policy: String,
    /// Every quota with its use and limit.
    pub quotas: Vec<QuotaUse>,
    /// Its jobs in the JobManager's memory.
    pub jobs: Vec<JobUsage>,
    /// All its jobs, ended ones included.
    pub total: UsageTotal,
    /// Its share of each TaskManager it ran tasks on since that started.
    #[serde(default)]
    pub taskmanagers: Vec<TaskManagerShare>,
    /// Compiling its components on the JobManager since it started.
    #[serde(default)]
    pub compile: CompileUsage,
}

/// What compiling a tenant's components cost one process (components
/// found compiled in its cache cost nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompileUsage {
    /// Components compiled.
    pub compilations: u64,
    /// Of those, refused (at a compile limit, or invalid).
    pub refused: u64,
    /// CPU time they took.
    pub cpu_seconds: f64,
}

/// A tenant's share of one TaskManager (see `sluice_share`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskManagerShare {
    /// The TaskManager.
    pub taskmanager: String,
    /// The policy's `cpu_shares`.
    pub cpu_shares: u64,
    /// The policy's `cpu_cores` ceiling.
    pub cpu_cores_limit: Option<f64>,
    /// Cores the weight entitles the tenant to beside the tenants busy now.
    pub entitled_cores: f64,
    /// CPU its tasks held a core for.
    pub cpu_seconds: f64,
    /// Time its tasks waited for a core.
    pub wait_seconds: f64,
    /// Of that, time held back by its own ceiling.
    pub throttled_seconds: f64,
    /// Live guest instances.
    pub instances: u64,
    /// `max_instances_per_taskmanager`.
    pub instances_limit: Option<u64>,
    /// Guest linear memory, bytes.
    pub memory_bytes: u64,
    /// `max_memory_mib_per_taskmanager`, bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Components compiled there at deployment, and their CPU time.
    #[serde(default)]
    pub compilations: u64,
    /// CPU seconds of those compilations.
    #[serde(default)]
    pub compile_cpu_seconds: f64,
}
