//! What a subtask saves at a checkpoint, and the signals a running subtask
//! gets about checkpoints.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_coord::TaskId;
use sluice_task::AlignmentMode;
use sluice_types::JobId;

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

/// A stored task snapshot: its object path in checkpoint storage, size
/// and SHA-256, checked before it is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHandle {
    /// Path in the checkpoint storage.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// SHA-256 of the contents.
    pub sha256: [u8; 32],
}

/// A checkpoint's metadata as stored: the job's shape and the snapshot of
/// every task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointMetadata {
    /// Format version.
    pub version: u32,
    /// The job.
    pub job: JobId,
    /// The checkpoint.
    pub checkpoint: u64,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Vertex names and parallelism, by vertex index.
    pub vertices: Vec<(String, u32)>,
    /// Every task's snapshot.
    pub tasks: Vec<(TaskId, SnapshotHandle)>,
}

impl CheckpointMetadata {
    /// SHA-256 of the payload, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(self).expect("invariant: metadata serialises");
        let mut out = Sha256::digest(&payload).to_vec();
        out.extend_from_slice(&payload);
        out
    }

    /// Reads stored metadata, checking its checksum.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 32 {
            return Err(format!(
                "{} bytes is too short for checkpoint metadata",
                bytes.len()
            ));
        }
        let (sum, payload) = bytes.split_at(32);
        if Sha256::digest(payload).as_slice() != sum {
            return Err("the metadata does not match its checksum".into());
        }
        postcard::from_bytes(payload).map_err(|e| format!("corrupt metadata: {e}"))
    }
}

/// Where a task's snapshot for a checkpoint is stored:
/// `JOB/chk-ID/task-VERTEX-SUBTASK`.
pub fn snapshot_path(job: &str, checkpoint: u64, task: TaskId) -> String {
    format!(
        "{job}/chk-{checkpoint}/task-{}-{}",
        task.vertex, task.subtask
    )
}

/// Failed checkpoints a snapshot-storing thread has heard of: their
/// snapshots still queued are not uploaded (the work would be thrown away).
/// Cheap to clone; clones share the set, which keeps the newest 1024 ids.
#[derive(Clone, Debug, Default)]
pub struct AbortedCheckpoints(Arc<Mutex<BTreeSet<u64>>>);

impl AbortedCheckpoints {
    const REMEMBERED: usize = 1024;

    /// Checkpoint `id` failed.
    pub fn insert(&self, id: u64) {
        let mut ids = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ids.insert(id);
        while ids.len() > Self::REMEMBERED {
            ids.pop_first();
        }
    }

    /// Whether checkpoint `id` is known to have failed.
    pub fn contains(&self, id: u64) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
}

/// Stores a taken snapshot at its [`snapshot_path`]; its handle.
pub async fn store(
    storage: &sluice_state::Storage,
    job: &str,
    taken: TakenSnapshot,
) -> Result<(u64, TaskId, SnapshotHandle), sluice_state::StorageError> {
    let TakenSnapshot { task, snapshot } = taken;
    let checkpoint = snapshot.checkpoint;
    let bytes = snapshot.encode();
    let handle = SnapshotHandle {
        path: snapshot_path(job, checkpoint, task),
        bytes: bytes.len() as u64,
        sha256: Sha256::digest(&bytes).into(),
    };
    storage.put(&handle.path, bytes).await?;
    Ok((checkpoint, task, handle))
}

/// The state a subtask starts from, gathered from a checkpoint taken at
/// possibly another parallelism: keyed guest state by key group (each key
/// group goes to the subtask that owns it now), and everything else — source
/// positions, sink files, non-keyed guest state — from old subtask `j` to
/// new subtask `j % parallelism`. `olds` are `(old subtask, snapshot)`.
pub fn redistribute(
    checkpoint: u64,
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
    olds: Vec<(u32, TaskSnapshot)>,
) -> TaskSnapshot {
    let mine = sluice_types::keygroup::range(subtask, max_parallelism, parallelism);
    let mut out = TaskSnapshot {
        checkpoint,
        ..TaskSnapshot::default()
    };
    for (old, snap) in olds {
        let inherits = old % parallelism.max(1) == subtask;
        if inherits {
            out.sources.extend(snap.sources);
            out.sinks.extend(snap.sinks);
        }
        out.guest
            .extend(snap.guest.into_iter().filter(|(_, kg, _)| match kg {
                Some(kg) => mine.contains(kg),
                None => inherits,
            }));
    }
    out
}

/// Old subtasks (of `old_parallelism`) whose snapshots new subtask
/// `subtask` of `parallelism` needs: those whose key groups overlap its own,
/// and those whose non-keyed state it inherits.
pub fn needed_subtasks(
    subtask: u32,
    parallelism: u32,
    old_parallelism: u32,
    max_parallelism: u32,
) -> Vec<u32> {
    let mine = sluice_types::keygroup::range(subtask, max_parallelism, parallelism);
    (0..old_parallelism)
        .filter(|&j| {
            let theirs = sluice_types::keygroup::range(j, max_parallelism, old_parallelism);
            j % parallelism.max(1) == subtask
                || (theirs.start < mine.end && mine.start < theirs.end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aborted_checkpoints_are_shared_and_only_the_newest_are_kept() {
        let a = AbortedCheckpoints::default();
        let b = a.clone();
        for id in 1..=2000 {
            a.insert(id);
        }
        assert!(b.contains(2000) && b.contains(977));
        assert!(!b.contains(976) && !b.contains(1) && !b.contains(2001));
    }

    fn snap(old: u32, max_p: u32, old_p: u32) -> TaskSnapshot {
        TaskSnapshot {
            checkpoint: 5,
            sources: vec![vec![old as u8]],
            sinks: vec![vec![100 + old as u8]],
            guest: sluice_types::keygroup::range(old, max_p, old_p)
                .map(|kg| (0, Some(kg), kg.to_le_bytes().to_vec()))
                .chain(std::iter::once((1, None, vec![old as u8])))
                .collect(),
        }
    }

    #[test]
    fn rescaling_keeps_every_key_group_once_and_hands_out_non_keyed_state() {
        let max_p = 128;
        for (old_p, new_p) in [(2, 4), (4, 2), (3, 3), (1, 5), (5, 1)] {
            let olds: Vec<(u32, TaskSnapshot)> =
                (0..old_p).map(|j| (j, snap(j, max_p, old_p))).collect();
            let mut key_groups = Vec::new();
            let mut sources = Vec::new();
            for i in 0..new_p {
                let needed = needed_subtasks(i, new_p, old_p, max_p);
                let given: Vec<(u32, TaskSnapshot)> = olds
                    .iter()
                    .filter(|(j, _)| needed.contains(j))
                    .cloned()
                    .collect();
                let s = redistribute(5, i, new_p, max_p, given);
                let mine = sluice_types::keygroup::range(i, max_p, new_p);
                for (_, kg, _) in &s.guest {
                    if let Some(kg) = kg {
                        assert!(mine.contains(kg));
                        key_groups.push(*kg);
                    }
                }
                sources.extend(s.sources.iter().map(|v| v[0]));
                assert_eq!(s.sources.len(), s.sinks.len());
            }
            key_groups.sort_unstable();
            assert_eq!(
                key_groups,
                (0..max_p).collect::<Vec<_>>(),
                "{old_p} -> {new_p}"
            );
            sources.sort_unstable();
            assert_eq!(
                sources,
                (0..old_p as u8).collect::<Vec<_>>(),
                "{old_p} -> {new_p}"
            );
        }
    }
}
