//! What a subtask saves at a checkpoint, and the signals a running subtask
//! gets about checkpoints.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sluice_coord::{ExecutionGraph, TaskId};
use sluice_task::AlignmentMode;
use sluice_types::{Implementation, JobId};

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

/// The format [`CheckpointMetadata::encode`] writes.
pub const METADATA_VERSION: u32 = 2;

/// A checkpoint's metadata as stored: the job's shape, its file outputs
/// and the snapshot of every task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The directories the job's file sinks write (absolute): a job
    /// resumed from this checkpoint may write there again.
    pub outputs: Vec<String>,
}

/// The directories a job's file sinks write to, as planned (absolute).
pub fn file_outputs(execution: &ExecutionGraph) -> Vec<String> {
    execution
        .vertices
        .iter()
        .flat_map(|v| &v.nodes)
        .filter(|n| matches!(&n.implementation, Implementation::Connector(c) if c == "file-sink"))
        .filter_map(|n| n.config("path").map(str::to_owned))
        .collect()
}

/// Metadata as version 1 stored it (no outputs).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct MetadataV1 {
    version: u32,
    job: JobId,
    checkpoint: u64,
    max_parallelism: u32,
    vertices: Vec<(String, u32)>,
    tasks: Vec<(TaskId, SnapshotHandle)>,
}

impl CheckpointMetadata {
    /// The metadata of checkpoint `checkpoint` of `job`, running `execution`,
    /// whose tasks acknowledged with `tasks`.
    pub fn new(
        job: JobId,
        checkpoint: u64,
        execution: &ExecutionGraph,
        tasks: Vec<(TaskId, SnapshotHandle)>,
    ) -> Self {
        let outputs = file_outputs(execution);
        CheckpointMetadata {
            version: METADATA_VERSION,
            job,
            checkpoint,
            max_parallelism: execution.max_parallelism,
            vertices: execution
                .vertices
                .iter()
                .map(|v| (v.name.clone(), v.parallelism))
                .collect(),
            tasks,
            outputs,
        }
    }

    /// SHA-256 of the payload, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload = postcard::to_allocvec(self).expect("invariant: metadata serialises");
        let mut out = Sha256::digest(&payload).to_vec();
        out.extend_from_slice(&payload);
        out
    }

    /// Reads stored metadata of any version, checking its checksum.
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
        let corrupt = |e: postcard::Error| format!("corrupt metadata: {e}");
        let (version, _) = postcard::take_from_bytes::<u32>(payload).map_err(corrupt)?;
        match version {
            1 => {
                let v1: MetadataV1 = postcard::from_bytes(payload).map_err(corrupt)?;
                Ok(CheckpointMetadata {
                    version: v1.version,
                    job: v1.job,
                    checkpoint: v1.checkpoint,
                    max_parallelism: v1.max_parallelism,
                    vertices: v1.vertices,
                    tasks: v1.tasks,
                    outputs: Vec::new(),
                })
            }
            METADATA_VERSION => postcard::from_bytes(payload).map_err(corrupt),
            v => Err(format!(
                "metadata format {v} is newer than this Sluice understands ({METADATA_VERSION})"
            )),
        }
    }

    /// Refuses to start `execution` from this checkpoint when it cannot
    /// take the state over: other key groups, or state of vertices it
    /// does not have (unless `allow_non_restored`).
    pub fn check_fits(
        &self,
        execution: &ExecutionGraph,
        allow_non_restored: bool,
    ) -> Result<(), String> {
        if self.max_parallelism != execution.max_parallelism {
            return Err(format!(
                "the savepoint has {} key groups but the job {}: keep the maximum parallelism",
                self.max_parallelism, execution.max_parallelism
            ));
        }
        let missing: Vec<String> = self
            .vertices
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !execution.vertices.iter().any(|v| v.name == **name))
            .map(|m| format!("`{m}`"))
            .collect();
        if !missing.is_empty() && !allow_non_restored {
            return Err(format!(
                "the savepoint holds state of {} that this job does not have; pass \
                 --allow-non-restored-state to drop it",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    /// Which stored snapshots each of `tasks` restores from, for a job of
    /// possibly another parallelism: vertices match by name; a vertex the
    /// checkpoint does not know starts afresh.
    pub fn restore_for(&self, execution: &ExecutionGraph, tasks: &[TaskId]) -> Restore {
        let mut out = Vec::new();
        for t in tasks {
            let Some(vertex) = execution.vertices.get(t.vertex as usize) else {
                continue;
            };
            let Some((old_vertex, (_, old_p))) = self
                .vertices
                .iter()
                .enumerate()
                .find(|(_, (name, _))| *name == vertex.name)
            else {
                continue;
            };
            let needed =
                needed_subtasks(t.subtask, vertex.parallelism, *old_p, self.max_parallelism);
            let snapshots = self
                .tasks
                .iter()
                .filter(|(old, _)| old.vertex == old_vertex as u32 && needed.contains(&old.subtask))
                .map(|(old, h)| (old.subtask, h.clone()))
                .collect();
            out.push(TaskRestore {
                task: *t,
                snapshots,
            });
        }
        Restore {
            checkpoint: self.checkpoint,
            tasks: out,
        }
    }
}

/// Splits a checkpoint or savepoint location (`STORAGE/JOB/chk-N`, as
/// printed when it was taken) into the storage's URI and the checkpoint's
/// path inside it.
pub fn split_location(location: &str) -> Option<(String, String)> {
    let trimmed = location.trim_end_matches('/');
    let (rest, checkpoint) = trimmed.rsplit_once('/')?;
    let (root, job) = rest.rsplit_once('/')?;
    let number = checkpoint.strip_prefix("chk-")?;
    if job.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let root = match root {
        "" => "/",
        r if r.ends_with(':') || r.ends_with(":/") || r.ends_with("//") => return None,
        r => r,
    };
    Some((root.to_owned(), format!("{job}/{checkpoint}")))
}

/// Reads the metadata of the checkpoint at `path` (`JOB/chk-N`) in `storage`.
pub fn read_metadata(
    storage: &sluice_state::Storage,
    io: &tokio::runtime::Handle,
    path: &str,
) -> Result<CheckpointMetadata, String> {
    let bytes = io
        .block_on(storage.get(&format!("{path}/_metadata")))
        .map_err(|e| e.to_string())?;
    CheckpointMetadata::decode(&bytes)
}

/// What the tasks of a deployment restore from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// The checkpoint or savepoint id.
    pub checkpoint: u64,
    /// What each task takes state from; tasks not listed start afresh.
    pub tasks: Vec<TaskRestore>,
}

/// The snapshots one task takes state from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRestore {
    /// The task.
    pub task: TaskId,
    /// The old subtasks' snapshots, with their subtask index.
    pub snapshots: Vec<(u32, SnapshotHandle)>,
}

/// Reads and checks the snapshots `tasks` (each with its parallelism and
/// number of key groups) restore from, and gives each task its share (see
/// [`redistribute`]). A snapshot read for several tasks is read once.
pub fn fetch(
    storage: &sluice_state::Storage,
    io: &tokio::runtime::Handle,
    restore: &Restore,
    tasks: &[(TaskId, u32, u32)],
) -> Result<HashMap<TaskId, TaskSnapshot>, String> {
    let checkpoint = restore.checkpoint;
    let mut fetched: HashMap<String, TaskSnapshot> = HashMap::new();
    let mut out = HashMap::new();
    for &(task, parallelism, max_parallelism) in tasks {
        let Some(olds) = restore
            .tasks
            .iter()
            .find(|r| r.task == task)
            .map(|r| &r.snapshots)
        else {
            continue;
        };
        let fail = |why: String| {
            format!(
                "cannot restore task {}/{} from checkpoint {checkpoint}: {why}",
                task.vertex, task.subtask
            )
        };
        let mut snapshots = Vec::new();
        for (old, handle) in olds {
            if !fetched.contains_key(&handle.path) {
                let bytes = io
                    .block_on(storage.get(&handle.path))
                    .map_err(|e| fail(e.to_string()))?;
                let sha: [u8; 32] = Sha256::digest(&bytes).into();
                if bytes.len() as u64 != handle.bytes || sha != handle.sha256 {
                    return Err(fail(format!(
                        "`{}` does not match its checksum ({} bytes, expected {})",
                        handle.path,
                        bytes.len(),
                        handle.bytes
                    )));
                }
                let snapshot = TaskSnapshot::decode(&bytes).map_err(|e| fail(e.to_string()))?;
                fetched.insert(handle.path.clone(), snapshot);
            }
            snapshots.push((*old, fetched[&handle.path].clone()));
        }
        out.insert(
            task,
            redistribute(
                checkpoint,
                task.subtask,
                parallelism,
                max_parallelism,
                snapshots,
            ),
        );
    }
    Ok(out)
}

/// Where a task's snapshot for a checkpoint is stored:
/// `JOB/chk-ID/task-VERTEX-SUBTASK`.
pub fn snapshot_path(job: &str, checkpoint: u64, task: TaskId) -> String {
    format!(
        "{}/task-{}-{}",
        checkpoint_dir(job, checkpoint),
        task.vertex,
        task.subtask
    )
}

// What a checkpoint coordinator's commands do to the storage, for the
// session cluster and the mini-cluster alike: the layout is decided here
// and only here. The storage layer retries temporary errors itself, so
// these try once; a failed deletion is logged and left for the job's
// end-of-life cleanup (recorded in the job-result store on a cluster).

/// A checkpoint's directory: `JOB/chk-ID`.
pub fn checkpoint_dir(job: &str, checkpoint: u64) -> String {
    format!("{job}/chk-{checkpoint}")
}

/// Writes a checkpoint's metadata, `JOB/chk-ID/_metadata`: the last of its
/// files, which makes it complete.
pub async fn write_metadata(
    storage: &sluice_state::Storage,
    meta: &CheckpointMetadata,
) -> Result<(), String> {
    let path = format!(
        "{}/_metadata",
        checkpoint_dir(&meta.job.to_string(), meta.checkpoint)
    );
    storage
        .put(&path, meta.encode())
        .await
        .map_err(|e| e.to_string())
}

/// Deletes a failed or subsumed checkpoint's directory; whether it is gone.
pub async fn discard_checkpoint(
    storage: &sluice_state::Storage,
    job: &str,
    checkpoint: u64,
) -> bool {
    let dir = checkpoint_dir(job, checkpoint);
    match storage.delete_dir(&dir).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = dir, "cannot delete a discarded checkpoint: {e}");
            false
        }
    }
}

/// Deletes a snapshot stored after its checkpoint failed; whether it is gone.
pub async fn discard_snapshot(
    storage: &sluice_state::Storage,
    job: &str,
    checkpoint: u64,
    task: TaskId,
) -> bool {
    let path = snapshot_path(job, checkpoint, task);
    tracing::debug!(
        path,
        "deleting a snapshot stored after its checkpoint failed"
    );
    match storage.delete(&path).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path, "cannot delete a failed checkpoint's snapshot: {e}");
            false
        }
    }
}

/// Deletes an ended job's checkpoints but those in `keep` (its savepoints);
/// whether all of them are gone.
pub async fn discard_job(storage: &sluice_state::Storage, job: &str, keep: &[u64]) -> bool {
    let delete = |dir: String| async move {
        match storage.delete_dir(&dir).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(path = dir, "cannot delete checkpoint files: {e}");
                false
            }
        }
    };
    if keep.is_empty() {
        return delete(job.to_owned()).await;
    }
    let files = match storage.list(job).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(job, "cannot list the job's checkpoints: {e}");
            return false;
        }
    };
    let dirs: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.split('/').nth(1).map(str::to_owned))
        .filter(|d| {
            d.strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
                .is_none_or(|n| !keep.contains(&n))
        })
        .collect();
    let mut all = true;
    for d in dirs {
        all &= delete(format!("{job}/{d}")).await;
    }
    all
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
    fn locations_split_into_the_storage_and_the_checkpoint() {
        let job = "0123456789abcdef0123456789abcdef";
        for (location, root) in [
            (format!("file:///var/cp/{job}/chk-7"), "file:///var/cp"),
            (format!("/var/cp/{job}/chk-7/"), "/var/cp"),
            (
                format!("s3://bucket/prefix/{job}/chk-7"),
                "s3://bucket/prefix",
            ),
            (format!("s3://bucket/{job}/chk-7"), "s3://bucket"),
        ] {
            assert_eq!(
                split_location(&location),
                Some((root.to_owned(), format!("{job}/chk-7"))),
                "{location}"
            );
        }
        for bad in [
            "file:///chk-7",
            "/var/cp/job/checkpoint-7",
            "chk-7",
            "/x/job/chk-",
        ] {
            assert_eq!(split_location(bad), None, "{bad}");
        }
    }

    #[test]
    fn metadata_of_the_first_format_still_decodes() {
        let task = TaskId {
            vertex: 1,
            subtask: 0,
        };
        let handle = SnapshotHandle {
            path: "j/chk-3/task-1-0".into(),
            bytes: 9,
            sha256: [1; 32],
        };
        let payload = postcard::to_allocvec(&MetadataV1 {
            version: 1,
            job: JobId([2; 16]),
            checkpoint: 3,
            max_parallelism: 128,
            vertices: vec![("a".into(), 2)],
            tasks: vec![(task, handle.clone())],
        })
        .expect("encode");
        let mut bytes = Sha256::digest(&payload).to_vec();
        bytes.extend(payload);
        let meta = CheckpointMetadata::decode(&bytes).expect("v1");
        assert_eq!((meta.checkpoint, meta.outputs.len()), (3, 0));
        assert_eq!(meta.tasks, [(task, handle)]);
        // And the current format round-trips, outputs included.
        let current = CheckpointMetadata {
            version: METADATA_VERSION,
            outputs: vec!["/out".into()],
            ..meta
        };
        assert_eq!(
            CheckpointMetadata::decode(&current.encode()).expect("v2"),
            current
        );
    }

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
