//! The JobManager's state as data, behind its one lock: the job table
//! (each job with its owner, its core, where its tasks run and what it
//! cost), the TaskManager registry, the uploaded applications' records and
//! the quota ledger; and the refusals the JobManager answers with. Pure
//! data and small helpers: the modules that act on it (`jobmanager`,
//! `checkpoints`, `access`, `rest`) import it, never the other way round.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use quinn::Connection;
use sluice_coord::{ExecutionGraph, Job, JobStatus, TaskId};
use sluice_policy::quota::{Exceeded, Ledger};
use sluice_policy::{Policy, TenantId};
use sluice_runtime::NodeCounts;
use sluice_types::JobId;
use tokio::sync::mpsc;

use crate::checkpoints::JobCheckpoints;
use crate::protocol::ToTaskManager;

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
    /// Each tenant's share of it, as its last heartbeat said.
    pub shares: Vec<crate::protocol::TenantShare>,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Components linked to the job (`sluice submit --with`).
    pub linked: Vec<crate::jobmanager::LinkedComponent>,
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

/// An application's id as stored (`SHA256.wasm`) from what users give:
/// with or without the `.wasm`.
pub(crate) fn jar_key(id: &str) -> String {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("{}.wasm", id.to_ascii_lowercase())
    } else {
        id.to_owned()
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
