//! Sluice's shared vocabulary: job graphs, record batches, task events and ids.
//!
//! Pure data (serde) with no IO, no async and no wasmtime, so every other
//! crate — the sans-IO cores, the wasm runtime, the drivers — can share it.

#![warn(missing_docs)]

mod batch;
mod graph;
mod ids;

pub use batch::{Batch, BatchBuilder, MalformedMeta, NO_KEY, NO_TIMESTAMP, Record, RecordMeta};
pub use graph::{
    EdgeSpec, GraphError, Implementation, JobGraph, MAX_KEY_GROUPS, NodeSpec, OperatorKind,
    Partitioning, split_operator,
};
pub use ids::{JobId, ParseIdError};
pub use sluice_keygroup as keygroup;

/// What travels on a channel between two subtasks, in order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A batch of records.
    Records(Batch),
    /// No later record on this channel will have an older event time.
    Watermark(i64),
    /// The sender finished; nothing follows.
    EndOfInput,
    /// Checkpoint barrier: everything before it on this channel belongs to
    /// the checkpoint with this id, everything after to later ones.
    Barrier(u64),
}
