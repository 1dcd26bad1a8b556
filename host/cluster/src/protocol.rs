//! The wire protocol between cluster processes, as postcard frames.
//!
//! Control: a TaskManager opens one bidirectional stream to the JobManager
//! and sends [`Hello`]; the JobManager answers [`Welcome`] or refuses, then
//! both sides exchange [`ToJobManager`] and [`ToTaskManager`] messages on
//! that stream for the life of the connection.
//!
//! Data: the producing TaskManager opens one unidirectional stream per
//! channel to the consuming TaskManager, sends a [`DataHeader`], then
//! [`sluice_types::Event`] frames until end of input.
//!
//! Join: a TaskManager without a certificate connects with the join ALPN,
//! sends [`JoinRequest`] and gets [`JoinResponse`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use sluice_coord::{TaskDeployment, TaskId, TaskStatus};
use sluice_policy::Policy;
use sluice_types::JobId;

pub use sluice_runtime::snapshot::{Restore, SnapshotHandle, TaskRestore};

/// Bumped whenever a message changes shape; peers with another version
/// are refused with both versions named.
pub const PROTOCOL_VERSION: u32 = 7;

/// The first message of a TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub protocol: u32,
    /// The sender's release, for error messages.
    pub version: String,
    /// Slots offered.
    pub slots: u32,
    /// The port its data endpoint listens on (the JobManager pairs it with
    /// the address it sees the TaskManager at).
    pub data_port: u16,
    /// A stable name chosen by the TaskManager (its host and port).
    pub name: String,
}

/// The JobManager's answer to [`Hello`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Welcome {
    /// Registered under this id.
    Accepted {
        /// The TaskManager's id in this cluster.
        id: String,
        /// Seconds between heartbeats.
        heartbeat_secs: u32,
        /// Fingerprints (SHA-256 of the DER, hex) of the TaskManager
        /// certificates an admin removed: peers presenting one are refused.
        revoked: Vec<String>,
    },
    /// Refused; the reason says why and what to do.
    Refused(String),
}

/// Messages from a TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToJobManager {
    /// Still alive, with what it runs.
    Heartbeat {
        /// Tasks running.
        running_tasks: u32,
        /// What each tenant with tasks here since it started gets of it.
        tenants: Vec<TenantShare>,
    },
    /// A task changed state.
    TaskStatus {
        /// The job.
        job: JobId,
        /// Which run of the job (restarts count up).
        attempt: u32,
        /// The task.
        task: TaskId,
        /// Its new status.
        status: TaskStatus,
    },
    /// Counts of one task, sent with heartbeats while it runs and once at its end.
    TaskCounts {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// The task.
        task: TaskId,
        /// Per node of its chain: records in, records out.
        nodes: Vec<(u64, u64)>,
        /// Fuel its guests burnt so far.
        fuel: u64,
        /// CPU time of its thread so far, ns.
        cpu_ns: u64,
    },
    /// A task's snapshot for a checkpoint is stored.
    CheckpointAck {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// The checkpoint.
        checkpoint: u64,
        /// The task.
        task: TaskId,
        /// Where its snapshot is.
        handle: SnapshotHandle,
    },
    /// The snapshots of a checkpoint could not be read back for a restore
    /// (missing or corrupt): the next restore must use an older one.
    RestoreFailed {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// The checkpoint that cannot be restored.
        checkpoint: u64,
    },
    /// A task could not take or store its snapshot.
    CheckpointDecline {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// The checkpoint.
        checkpoint: u64,
        /// The task.
        task: TaskId,
        /// Why.
        reason: String,
    },
}

/// How a job's tasks take checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointSettings {
    /// URI of the checkpoint storage (`file://`, `s3://`, `memory://`).
    pub storage: String,
    /// Barrier handling.
    pub mode: sluice_coord::CheckpointingMode,
}

/// Messages to a TaskManager.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToTaskManager {
    /// Run these tasks of a job.
    Deploy(Box<Deployment>),
    /// Stop every task of this run of a job.
    Cancel {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
    },
    /// Start checkpoint `checkpoint` at these source tasks.
    TriggerCheckpoint {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// The checkpoint.
        checkpoint: u64,
        /// Source tasks on this TaskManager.
        tasks: Vec<TaskId>,
    },
    /// An admin removed a TaskManager certificate: every removed one's
    /// fingerprint (hex). Connections with peers presenting one are closed
    /// and refused.
    Revoked {
        /// SHA-256 of each removed certificate's DER, hex.
        fingerprints: Vec<String>,
    },
    /// A checkpoint completed or was given up.
    CheckpointNotice {
        /// The job.
        job: JobId,
        /// Which run.
        attempt: u32,
        /// What happened.
        notice: sluice_runtime::snapshot::CheckpointNotice,
    },
}

/// Where a TaskManager's data endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// TaskManager id.
    pub id: String,
    /// Its data endpoint.
    pub addr: SocketAddr,
}

/// The tasks of one job run that one TaskManager must start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    /// The job.
    pub job: JobId,
    /// Which run of the job.
    pub attempt: u32,
    /// The job's name, for logs.
    pub name: String,
    /// The tenant that owns the job, for metric labels and logs.
    pub tenant: String,
    /// The tenant policy the tasks run under.
    pub policy: Policy,
    /// SHA-256 of the component.
    pub component_hash: String,
    /// The component (TaskManagers keep compiled components by hash, so
    /// sending it again costs only the transfer).
    pub component: Vec<u8>,
    /// Components linked to the job, whose operators the plan names
    /// `LINK/OPERATOR`.
    pub linked: Vec<LinkedComponent>,
    /// Tasks with their slot index on this TaskManager.
    pub tasks: Vec<(u32, TaskDeployment)>,
    /// For every channel this TaskManager produces into and another
    /// consumes: the consumer.
    pub remote_consumers: Vec<(u32, Peer)>,
    /// For every channel this TaskManager consumes and another produces.
    pub remote_producers: Vec<u32>,
    /// Peers with a lower id than this TaskManager's, which this one must
    /// connect to (higher ones connect to it: one connection per pair).
    pub connect_to: Vec<Peer>,
    /// Checkpointing, when the job takes checkpoints.
    pub checkpoints: Option<CheckpointSettings>,
    /// The checkpoint (or savepoint) the tasks restore from.
    pub restore: Option<Restore>,
}

/// A component linked to a job, as deployed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkedComponent {
    /// The name the job's plan uses for it.
    pub link: String,
    /// SHA-256 of the component.
    pub hash: String,
    /// The component.
    pub component: Vec<u8>,
}

/// The first frame of a data stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataHeader {
    /// The job.
    pub job: JobId,
    /// Which run.
    pub attempt: u32,
    /// The channel.
    pub channel: u32,
}

/// The first message on a TaskManager-to-TaskManager connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerHello {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The connecting TaskManager's id.
    pub id: String,
}

/// A TaskManager's answer to a peer's [`PeerHello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerAnswer {
    /// Data streams may follow.
    Accepted,
    /// Refused (another protocol version, a removed certificate); why.
    Refused(String),
}

/// A joiner's request for a certificate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The secret from the join token.
    pub secret: [u8; 16],
    /// A name for the certificate.
    pub name: String,
}

/// The answer to a [`JoinRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum JoinResponse {
    /// The identity to use from now on: CA, certificate and PKCS#8 key (DER).
    Issued {
        /// CA certificate.
        ca: Vec<u8>,
        /// The joiner's certificate.
        cert: Vec<u8>,
        /// The joiner's key.
        key: Vec<u8>,
    },
    /// Refused; the reason says why.
    Refused(String),
}

/// The refusal for a peer speaking another protocol version.
pub fn version_mismatch(theirs: u32, their_release: &str) -> String {
    format!(
        "protocol version mismatch: this JobManager (sluice {}) speaks protocol {PROTOCOL_VERSION}, \
         the TaskManager (sluice {their_release}) speaks {theirs}; run the same Sluice release on every host",
        env!("CARGO_PKG_VERSION")
    )
}

/// One tenant's share of one TaskManager, as its heartbeat reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantShare {
    /// The tenant.
    pub tenant: String,
    /// Its policy's `cpu_shares`.
    pub cpu_shares: u64,
    /// Its policy's `cpu_cores` ceiling.
    pub cpu_cores_limit: Option<f64>,
    /// Cores its weight entitles it to if it were busy now, beside the
    /// tenants busy now (within its ceiling); 0 without a fair gate.
    pub entitled_cores: f64,
    /// CPU its tasks held a core for, ns.
    pub cpu_ns: u64,
    /// Time its tasks waited for a core, ns.
    pub wait_ns: u64,
    /// Of that, time held back by its own ceiling, ns.
    pub throttled_ns: u64,
    /// Live guest instances, and the cap.
    pub instances: u64,
    /// `max_instances_per_taskmanager`.
    pub instances_limit: Option<u64>,
    /// Guest linear memory, bytes, and the cap.
    pub memory_bytes: u64,
    /// `max_memory_mib_per_taskmanager` in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Its components compiled here (at deployment), refused ones included.
    pub compilations: u64,
    /// CPU time they took, ns.
    pub compile_cpu_ns: u64,
}
