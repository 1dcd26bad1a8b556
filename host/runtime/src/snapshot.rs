//! What a subtask saves at a checkpoint, and the signals a running subtask
//! gets about checkpoints.

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use sluice_coord::TaskId;
use sluice_task::AlignmentMode;

/// One subtask's part of a checkpoint. Given back to a subtask on restore
/// (with several source or sink states when the parallelism changed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// The checkpoint it belongs to.
    pub checkpoint: u64,
    /// Host source positions.
    pub sources: Vec<Vec<u8>>,
    /// Host sink states (pre-committed output).
    pub sinks: Vec<Vec<u8>>,
    /// Guest state: operator index in the chain, key group (for keyed
    /// state), bytes.
    pub guest: Vec<(u32, Option<u32>, Vec<u8>)>,
}

/// A snapshot that cannot be read back.
#[derive(Debug, thiserror::Error)]
#[error("the task snapshot is corrupt: {0}")]
pub struct CorruptSnapshot(String);

impl TaskSnapshot {
    /// Its stored form.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("invariant: a snapshot serialises")
    }

    /// Reads a stored snapshot.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptSnapshot> {
        postcard::from_bytes(bytes).map_err(|e| CorruptSnapshot(e.to_string()))
    }
}

/// What the driver tells a running subtask about a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointNotice {
    /// The checkpoint completed: publish what it covers.
    Complete(u64),
    /// The checkpoint was given up: stop aligning it.
    Abort(u64),
}

/// A snapshot a subtask took, for the driver to store and acknowledge.
#[derive(Debug)]
pub struct TakenSnapshot {
    /// The subtask.
    pub task: TaskId,
    /// What it saved.
    pub snapshot: TaskSnapshot,
}

/// A subtask's connection to the checkpoint machinery.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// Barrier handling at tasks with several inputs.
    pub mode: AlignmentMode,
    /// Checkpoints to start: only source subtasks get any.
    pub triggers: Receiver<u64>,
    /// Completions and aborts.
    pub notices: Receiver<CheckpointNotice>,
    /// Where taken snapshots go.
    pub snapshots: Sender<TakenSnapshot>,
}
