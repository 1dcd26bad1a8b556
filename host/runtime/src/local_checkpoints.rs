//! Checkpoints in the embedded mini-cluster: the same coordinator, barriers,
//! snapshots and storage layout as on the session cluster
//! (`JOB/chk-ID/task-V-S` and `JOB/chk-ID/_metadata`), driven from the
//! mini-cluster's loop instead of a JobManager. The two-phase file sink
//! publishes at each completed checkpoint. The mini-cluster does not restart
//! failed jobs, so a checkpoint is for resuming elsewhere (`sluice submit
//! --from-savepoint` on a cluster that shares the storage).

use std::collections::HashMap;

use crossbeam_channel::{Receiver, Sender, unbounded};
use sluice_coord::{
    CheckpointCommand, CheckpointConfig, CheckpointCoordinator, ExecutionGraph, Job, JobStatus,
    TaskDeployment, TaskId, TaskStatus,
};
use sluice_state::Storage;
use sluice_task::AlignmentMode;
use sluice_types::JobId;

use crate::snapshot::{
    CheckpointMetadata, CheckpointNotice, Checkpointing, SnapshotHandle, TakenSnapshot, store,
};

type Stored = Result<(u64, TaskId, SnapshotHandle), (u64, TaskId, String)>;

/// One job's checkpointing in the mini-cluster.
pub(crate) struct LocalCheckpoints {
    coord: CheckpointCoordinator<SnapshotHandle>,
    storage: Storage,
    io: tokio::runtime::Handle,
    job: JobId,
    execution: ExecutionGraph,
    triggers: HashMap<TaskId, Sender<u64>>,
    notices: Vec<Sender<CheckpointNotice>>,
    snapshots: Option<Sender<TakenSnapshot>>,
    stored: Receiver<Stored>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Whether the run's checkpointing started, and whether it is over.
    started: bool,
    over: bool,
    completed: u64,
}

impl LocalCheckpoints {
    pub fn new(
        interval_ms: u64,
        storage: Storage,
        io: tokio::runtime::Handle,
        execution: ExecutionGraph,
    ) -> Self {
        let job = JobId(rand::random());
        let (snapshots, rx) = unbounded::<TakenSnapshot>();
        let (stored_tx, stored) = unbounded();
        let (storage2, io2) = (storage.clone(), io.clone());
        // Snapshots are stored off the task threads, as on a TaskManager.
        let thread = std::thread::spawn(move || {
            for taken in rx {
                let (checkpoint, task) = (taken.snapshot.checkpoint, taken.task);
                let result = io2
                    .block_on(store(&storage2, &job.to_string(), taken))
                    .map_err(|e| (checkpoint, task, e.to_string()));
                if stored_tx.send(result).is_err() {
                    return;
                }
            }
        });
        LocalCheckpoints {
            coord: CheckpointCoordinator::new(CheckpointConfig {
                interval_ms,
                ..CheckpointConfig::default()
            }),
            storage,
            io,
            job,
            execution,
            triggers: HashMap::new(),
            notices: Vec::new(),
            snapshots: Some(snapshots),
            stored,
            thread: Some(thread),
            started: false,
            over: false,
            completed: 0,
        }
    }

    /// Checkpoints completed so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// A task's connection to the checkpoints.
    pub fn task(&mut self, d: &TaskDeployment) -> Option<Checkpointing> {
        let (trigger_tx, triggers) = unbounded();
        let (notice_tx, notices) = unbounded();
        if d.inputs.is_empty() {
            self.triggers.insert(d.task, trigger_tx);
        }
        self.notices.push(notice_tx);
        Some(Checkpointing {
            mode: AlignmentMode::Aligned,
            triggers,
            notices,
            snapshots: self.snapshots.clone()?,
        })
    }

    /// Every task is deployed: the storage thread ends with the last task.
    pub fn deployed(&mut self) {
        self.snapshots = None;
    }

    /// Feeds the job's state and the stored snapshots to the coordinator and
    /// carries out its commands; a reason to fail the job, if any.
    pub fn drive(&mut self, job: &Job, now: u64) -> Option<String> {
        let running = job.status() == JobStatus::Running
            && job.tasks().values().all(|s| *s == TaskStatus::Running);
        if !self.started && running {
            self.started = true;
            let sources = self.triggers.keys().copied().collect();
            self.coord
                .handle_run_started(job.tasks().keys().copied().collect(), sources, now);
        } else if self.started && !self.over && !running {
            self.over = true;
            self.coord
                .handle_run_ended("a task is no longer running", now);
        }
        while let Ok(stored) = self.stored.try_recv() {
            match stored {
                Ok((checkpoint, task, handle)) => {
                    self.coord.handle_ack(checkpoint, task, handle, now)
                }
                Err((checkpoint, task, reason)) => {
                    self.coord.handle_decline(checkpoint, task, &reason, now)
                }
            }
        }
        self.coord.handle_timeout(now);
        let mut fail = None;
        while let Some(cmd) = self.coord.poll_command() {
            match cmd {
                CheckpointCommand::Trigger { id, sources, .. } => {
                    for t in sources {
                        if let Some(tx) = self.triggers.get(&t) {
                            let _ = tx.send(id);
                        }
                    }
                }
                CheckpointCommand::WriteMetadata { id, acks } => {
                    let meta = CheckpointMetadata {
                        version: 1,
                        job: self.job,
                        checkpoint: id,
                        max_parallelism: self.execution.max_parallelism,
                        vertices: self
                            .execution
                            .vertices
                            .iter()
                            .map(|v| (v.name.clone(), v.parallelism))
                            .collect(),
                        tasks: acks.into_iter().collect(),
                    };
                    let path = format!("{}/chk-{id}/_metadata", self.job);
                    let result = self
                        .io
                        .block_on(self.storage.put(&path, meta.encode()))
                        .map_err(|e| e.to_string());
                    self.coord.handle_metadata_written(id, result, now);
                }
                CheckpointCommand::NotifyComplete { id } => {
                    self.completed += 1;
                    self.notify(CheckpointNotice::Complete(id));
                }
                CheckpointCommand::Abort { id, reason } => {
                    tracing::warn!(checkpoint = id, "checkpoint failed: {reason}");
                    self.notify(CheckpointNotice::Abort(id));
                }
                CheckpointCommand::Discard { id } => {
                    self.delete(&format!("{}/chk-{id}", self.job));
                }
                CheckpointCommand::FailJob { reason } => fail = Some(reason),
            }
        }
        fail
    }

    fn notify(&self, notice: CheckpointNotice) {
        for tx in &self.notices {
            let _ = tx.send(notice);
        }
    }

    fn delete(&self, dir: &str) {
        if let Err(e) = self.io.block_on(self.storage.delete_dir(dir)) {
            tracing::warn!(dir, "cannot delete checkpoint files: {e}");
        }
    }

    /// The job ended (every task thread too): a finished or cancelled job's
    /// checkpoints go, once the last snapshot is stored; a failed job's stay,
    /// and their place is logged.
    pub fn finish(&mut self, status: JobStatus) {
        self.snapshots = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if status == JobStatus::Failed {
            tracing::warn!(
                "the job's checkpoints stay in {}/{}",
                self.storage.uri().trim_end_matches('/'),
                self.job
            );
        } else {
            self.delete(&self.job.to_string());
        }
    }
}
