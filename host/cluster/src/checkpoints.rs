//! The JobManager's side of checkpointing: one sans-IO
//! `CheckpointCoordinator` per job, fed from task states and TaskManager
//! acknowledgements, and its commands carried out — triggers and notices
//! to TaskManagers, the metadata written to checkpoint storage (after every
//! acknowledgement, with a checksum), and subsumed checkpoints deleted with
//! retries.
//!
//! Layout in the storage: `JOB/chk-ID/task-VERTEX-SUBTASK` (written by
//! TaskManagers) and `JOB/chk-ID/_metadata` (written here, last).
//!
//! This module knows a job only through [`JobView`] and reaches
//! TaskManagers only through the sender it is given: it does not depend on
//! the JobManager's job table, which holds its [`JobCheckpoints`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_coord::{
    CheckpointCommand, CheckpointConfig, CheckpointCoordinator, ExecutionGraph, Job, JobStatus,
    TaskId, TaskStatus,
};
use sluice_policy::quota::{Holder, Ledger, Usage};
use sluice_policy::{Policy, TenantId};
use sluice_runtime::snapshot::{self, CheckpointNotice};
use sluice_state::Storage;
use sluice_types::JobId;
use tokio::sync::mpsc;

use crate::protocol::{CheckpointSettings, SnapshotHandle, ToTaskManager};
pub(crate) use sluice_runtime::snapshot::CheckpointMetadata;

/// Where a job's run is, for the coordinator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    /// No run started checkpointing yet, or it ended.
    Idle,
    /// This attempt's tasks all run: checkpoints are taken.
    Live(u32),
    /// This attempt stopped checkpointing (a task finished or failed).
    Over(u32),
}

/// A job's checkpointing.
pub(crate) struct JobCheckpoints {
    pub coord: CheckpointCoordinator<SnapshotHandle>,
    pub storage: Storage,
    pub settings: CheckpointSettings,
    /// Completed checkpoints still retained (and savepoints).
    pub completed: BTreeMap<u64, CheckpointMetadata>,
    /// Checkpoints whose metadata is being written.
    writing: HashMap<u64, CheckpointMetadata>,
    run: RunState,
    /// The checkpoint the current run restored from, and when.
    pub restored: Option<(u64, u64)>,
    /// Restores so far.
    pub restores: u64,
    /// Whether the job's checkpoints were deleted after it ended.
    cleaned: bool,
    /// The savepoint the job was submitted from, restored until a
    /// checkpoint of its own completes.
    pub initial: Option<CheckpointMetadata>,
    /// Savepoints asked for through the REST API, by trigger id.
    pub savepoints: BTreeMap<String, SavepointOp>,
}

/// A savepoint asked for through the REST API.
#[derive(Clone, Debug)]
pub(crate) struct SavepointOp {
    /// Its checkpoint id, once triggered.
    pub checkpoint: u64,
    /// Cancel the job once it completes (stop with savepoint).
    pub stop: bool,
    /// `None` while in progress; then the location or the failure.
    pub result: Option<Result<String, String>>,
}

/// What `drive` asks of the job.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Fail the run (too many failed checkpoints).
    pub fail: Option<String>,
    /// A stop-with-savepoint completed: cancel the job.
    pub stop: bool,
    /// The job ended: record it in the job-result store.
    pub ended: Option<Ended>,
}

/// A job that ended, and what happens to its checkpoints.
#[derive(Debug)]
pub(crate) struct Ended {
    /// How it ended.
    pub status: JobStatus,
    /// Checkpoints kept (its savepoints).
    pub keep: Vec<u64>,
    /// Whether all its checkpoints are kept (a failed job's, for a manual
    /// restore); otherwise their deletion is under way.
    pub retained: bool,
}

/// What `drive` reads of a job, and the checkpoint state it drives.
pub(crate) struct JobView<'a> {
    pub id: JobId,
    pub owner: &'a TenantId,
    /// The policy the job was admitted under (its state quota).
    pub policy: &'a Policy,
    pub core: &'a Job,
    pub execution: &'a ExecutionGraph,
    /// Where each task of the current run is.
    pub locations: &'a HashMap<TaskId, String>,
    pub checkpoints: &'a mut JobCheckpoints,
}

/// Checkpoint storage work finished in the background.
#[derive(Debug)]
pub(crate) enum IoDone {
    /// A checkpoint's metadata was written, or could not be.
    MetadataWritten {
        job: JobId,
        checkpoint: u64,
        result: Result<(), String>,
    },
    /// An ended job's checkpoints were deleted (or not all could be).
    JobCleaned { job: JobId, cleaned: bool },
}

impl JobCheckpoints {
    pub fn new(config: CheckpointConfig, storage: Storage, uri: String) -> Self {
        let mode = config.mode;
        JobCheckpoints {
            coord: CheckpointCoordinator::new(config),
            storage,
            settings: CheckpointSettings { storage: uri, mode },
            completed: BTreeMap::new(),
            writing: HashMap::new(),
            run: RunState::Idle,
            restored: None,
            restores: 0,
            cleaned: false,
            initial: None,
            savepoints: BTreeMap::new(),
        }
    }

    /// Where a checkpoint's files are, as a URI users can pass back.
    pub fn location(&self, job: JobId, checkpoint: u64) -> String {
        format!(
            "{}/{}",
            self.settings.storage.trim_end_matches('/'),
            snapshot::checkpoint_dir(&job.to_string(), checkpoint)
        )
    }

    /// Bytes of the latest completed checkpoint (0 without one).
    pub fn last_size(&self) -> u64 {
        self.coord
            .latest_completed()
            .and_then(|c| self.completed.get(&c.id))
            .map_or(0, |m| m.tasks.iter().map(|(_, h)| h.bytes).sum())
    }

    /// What a new run restores from: the newest retained checkpoint, or the
    /// savepoint the job was submitted from while it has none of its own.
    pub fn restore_point(&mut self, now: u64) -> Option<CheckpointMetadata> {
        let meta = match self.coord.latest_completed() {
            Some(latest) => self.completed.get(&latest.id)?.clone(),
            None => self.initial.clone()?,
        };
        let id = meta.checkpoint;
        self.restored = Some((id, now));
        self.restores += 1;
        Some(meta)
    }
}

/// Feeds the job's state to its coordinator and carries out what the
/// coordinator asks for; says what the job itself must do (fail the run,
/// stop after a savepoint, record its end).
/// `send` delivers a message to a TaskManager by id (if it is still there).
pub(crate) fn drive(
    job: JobView<'_>,
    ledger: &mut Ledger,
    send: &dyn Fn(&str, ToTaskManager),
    io: &tokio::runtime::Handle,
    done: &mpsc::UnboundedSender<IoDone>,
    now: u64,
) -> Outcome {
    let mut outcome = Outcome::default();
    let status = job.core.status();
    // An ended job whose cleanup is under way has nothing left to drive but
    // the deletion of snapshots whose uploads outlived their checkpoint.
    if status.is_terminal() && job.checkpoints.cleaned {
        let cp = job.checkpoints;
        while let Some(cmd) = cp.coord.poll_command() {
            if let CheckpointCommand::DiscardSnapshot {
                id: checkpoint,
                task,
            } = cmd
            {
                discard_snapshot(io, &cp.storage, job.id, checkpoint, task);
            }
        }
        return outcome;
    }
    let id = job.id;
    let attempt = job.core.attempt();
    let tasks = job.core.tasks();
    let locations = job.locations;
    let sources: Vec<TaskId> = job
        .execution
        .tasks()
        .filter(|t| {
            job.execution
                .vertices
                .get(t.vertex as usize)
                .is_some_and(|v| v.inputs.is_empty())
        })
        .collect();
    let cp = job.checkpoints;
    let all_running = status == JobStatus::Running
        && !tasks.is_empty()
        && tasks.values().all(|s| *s == TaskStatus::Running);
    match cp.run {
        RunState::Live(a) if a == attempt && all_running => {}
        RunState::Live(a) => {
            let why = if a != attempt {
                "the job restarted"
            } else {
                "a task is no longer running"
            };
            cp.coord.handle_run_ended(why, now);
            cp.run = RunState::Over(a);
        }
        RunState::Over(a) if a == attempt => {}
        RunState::Idle | RunState::Over(_) => {
            if all_running {
                cp.coord
                    .handle_run_started(tasks.keys().copied().collect(), sources, now);
                cp.run = RunState::Live(attempt);
            }
        }
    }
    cp.coord.handle_timeout(now);
    let send_to = |tm_ids: &BTreeSet<&String>, msg: ToTaskManager| {
        for tm in tm_ids {
            send(tm, msg.clone());
        }
    };
    let all_tms: BTreeSet<&String> = locations.values().collect();
    while let Some(cmd) = cp.coord.poll_command() {
        match cmd {
            CheckpointCommand::Trigger {
                id: checkpoint,
                sources,
                ..
            } => {
                let mut per_tm: BTreeMap<&String, Vec<TaskId>> = BTreeMap::new();
                for t in sources {
                    if let Some(tm) = locations.get(&t) {
                        per_tm.entry(tm).or_default().push(t);
                    }
                }
                for (tm, tasks) in per_tm {
                    send_to(
                        &BTreeSet::from([tm]),
                        ToTaskManager::TriggerCheckpoint {
                            job: id,
                            attempt,
                            checkpoint,
                            tasks,
                        },
                    );
                }
            }
            CheckpointCommand::WriteMetadata {
                id: checkpoint,
                acks,
            } => {
                let meta = CheckpointMetadata::new(
                    id,
                    checkpoint,
                    job.execution,
                    acks.into_iter().collect(),
                );
                // The tenant's state quota, under the policy the job was
                // admitted with: a checkpoint that does not fit is declined
                // before it completes, never cut short.
                let bytes = meta.tasks.iter().map(|(_, h)| h.bytes).sum();
                if let Err(exceeded) = ledger.admit(
                    job.owner,
                    &job.policy.name,
                    &job.policy.quotas,
                    Holder::Checkpoint(id.to_string()),
                    Usage {
                        checkpoint_bytes: bytes,
                        ..Usage::default()
                    },
                ) {
                    cp.coord.handle_refused(
                        checkpoint,
                        &format!("declined, the job runs on without it: {exceeded}"),
                        now,
                    );
                    continue;
                }
                cp.writing.insert(checkpoint, meta.clone());
                let (storage, done) = (cp.storage.clone(), done.clone());
                io.spawn(async move {
                    let result = snapshot::write_metadata(&storage, &meta).await;
                    let _ = done.send(IoDone::MetadataWritten {
                        job: id,
                        checkpoint,
                        result,
                    });
                });
            }
            CheckpointCommand::NotifyComplete { id: checkpoint } => {
                if let Some(meta) = cp.writing.remove(&checkpoint) {
                    cp.completed.insert(checkpoint, meta);
                }
                tracing::info!(job = %id, checkpoint, "checkpoint completed");
                let location = cp.location(id, checkpoint);
                for op in cp.savepoints.values_mut() {
                    if op.checkpoint == checkpoint && op.result.is_none() {
                        op.result = Some(Ok(location.clone()));
                        outcome.stop |= op.stop;
                    }
                }
                send_to(
                    &all_tms,
                    ToTaskManager::CheckpointNotice {
                        job: id,
                        attempt,
                        notice: CheckpointNotice::Complete(checkpoint),
                    },
                );
            }
            CheckpointCommand::Abort {
                id: checkpoint,
                reason,
            } => {
                cp.writing.remove(&checkpoint);
                tracing::warn!(job = %id, checkpoint, "checkpoint failed: {reason}");
                for op in cp.savepoints.values_mut() {
                    if op.checkpoint == checkpoint && op.result.is_none() {
                        op.result = Some(Err(reason.clone()));
                    }
                }
                send_to(
                    &all_tms,
                    ToTaskManager::CheckpointNotice {
                        job: id,
                        attempt,
                        notice: CheckpointNotice::Abort(checkpoint),
                    },
                );
            }
            CheckpointCommand::Discard { id: checkpoint } => {
                cp.completed.remove(&checkpoint);
                discard(io, cp.storage.clone(), id, checkpoint);
            }
            CheckpointCommand::DiscardSnapshot {
                id: checkpoint,
                task,
            } => discard_snapshot(io, &cp.storage, id, checkpoint, task),
            CheckpointCommand::FailJob { reason } => outcome.fail = Some(reason),
        }
    }
    // A job that finished or was cancelled needs its checkpoints no more; a
    // failed one keeps them for a manual restore. The job-result store
    // records the cleanup until it is done, so a JobManager restart redoes it.
    if status.is_terminal() && !cp.cleaned {
        cp.cleaned = true;
        let keep: Vec<u64> = cp
            .savepoints
            .values()
            .filter(|op| matches!(op.result, Some(Ok(_))))
            .map(|op| op.checkpoint)
            .collect();
        cp.completed.retain(|c, _| keep.contains(c));
        let retain_all = status == JobStatus::Failed;
        outcome.ended = Some(Ended {
            status,
            keep: keep.clone(),
            retained: retain_all,
        });
        if !retain_all {
            let (storage, done) = (cp.storage.clone(), done.clone());
            io.spawn(async move {
                let cleaned = snapshot::discard_job(&storage, &id.to_string(), &keep).await;
                let _ = done.send(IoDone::JobCleaned { job: id, cleaned });
            });
        }
    }
    outcome
}

/// Deletes a checkpoint's directory in the background.
fn discard(io: &tokio::runtime::Handle, storage: Storage, job: JobId, checkpoint: u64) {
    io.spawn(
        async move { snapshot::discard_checkpoint(&storage, &job.to_string(), checkpoint).await },
    );
}

/// Deletes, in the background, a snapshot stored after its checkpoint failed.
pub(crate) fn discard_snapshot(
    io: &tokio::runtime::Handle,
    storage: &Storage,
    job: JobId,
    checkpoint: u64,
    task: TaskId,
) {
    let storage = storage.clone();
    io.spawn(async move {
        snapshot::discard_snapshot(&storage, &job.to_string(), checkpoint, task).await
    });
}
