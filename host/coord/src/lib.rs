//! The JobManager's core, sans IO: it turns a job graph into an execution
//! graph (chained vertices, subtasks, channels), assigns subtasks to slots,
//! runs the job's state machine, and coordinates its checkpoints.
//!
//! Like quinn-proto, it owns no sockets, threads or clocks: inputs arrive
//! through `handle_*` methods with `now` passed in, and commands leave through
//! `poll_*` methods. The embedded mini-cluster and the distributed JobManager
//! drive the same code, and tests drive it directly.

#![warn(missing_docs)]

mod checkpoint;
mod execution;
mod job;

pub use checkpoint::{
    CheckpointCommand, CheckpointConfig, CheckpointCoordinator, CheckpointCounts, CheckpointId,
    CheckpointKind, CheckpointState, CheckpointStats, CheckpointingMode,
};
pub use execution::{
    ChannelId, ExecutionGraph, OutputSpec, TaskDeployment, TaskId, Vertex, VertexEdge,
};
pub use job::{
    Command, Failure, FailureKind, Job, JobStatus, RestartStrategy, SchedulingError, TaskFailure,
    TaskStatus,
};
