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
    self, AbortedCheckpoints, CheckpointMetadata, CheckpointNotice, Checkpointing, SnapshotHandle,
    TakenSnapshot, store,
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
    /// Failed checkpoints, whose queued snapshots the thread skips.
    aborted: AbortedCheckpoints,
    /// Whether the run's checkpointing started, and whether it is over.
    started: bool,
    over: bool,
    completed: u64,
}

impl LocalCheckpoints {
    pub fn new(
        job: JobId,
        interval_ms: u64,
        storage: Storage,
        io: tokio::runtime::Handle,
        execution: ExecutionGraph,
        resumed_from: u64,
    ) -> Self {
        let (snapshots, rx) = unbounded::<TakenSnapshot>();
        let (stored_tx, stored) = unbounded();
        let (storage2, io2) = (storage.clone(), io.clone());
        let aborted = AbortedCheckpoints::default();
        let aborted2 = aborted.clone();
        // Snapshots are stored off the task threads, as on a TaskManager.
        let thread = std::thread::spawn(move || {
            for taken in rx {
                let (checkpoint, task) = (taken.snapshot.checkpoint, taken.task);
                if aborted2.contains(checkpoint) {
                    continue;
                }
                let result = io2
                    .block_on(store(&storage2, &job.to_string(), taken))
                    .map_err(|e| (checkpoint, task, e.to_string()));
                if stored_tx.send(result).is_err() {
                    return;
                }
            }
        });
        LocalCheckpoints {
            // Ids go on from the savepoint's, so its barriers are never mistaken for new ones.
            coord: CheckpointCoordinator::new(CheckpointConfig {
                interval_ms,
                ..CheckpointConfig::default()
            })
            .resume_ids(resumed_from),
            storage,
            io,
            job,
            execution,
            triggers: HashMap::new(),
            notices: Vec::new(),
            snapshots: Some(snapshots),
            stored,
            thread: Some(thread),
            aborted,
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
        self.take_stored(now);
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
                    let meta = CheckpointMetadata::new(
                        self.job,
                        id,
                        &self.execution,
                        acks.into_iter().collect(),
                    );
                    let result = self
                        .io
                        .block_on(snapshot::write_metadata(&self.storage, &meta));
                    self.coord.handle_metadata_written(id, result, now);
                }
                CheckpointCommand::NotifyComplete { id } => {
                    self.completed += 1;
                    self.notify(CheckpointNotice::Complete(id));
                }
                CheckpointCommand::Abort { id, reason } => {
                    tracing::warn!(checkpoint = id, "checkpoint failed: {reason}");
                    self.aborted.insert(id);
                    self.notify(CheckpointNotice::Abort(id));
                }
                CheckpointCommand::Discard { id } => self.discard(id),
                CheckpointCommand::DiscardSnapshot { id, task } => {
                    self.delete_snapshot(id, task);
                }
                CheckpointCommand::FailJob { reason } => fail = Some(reason),
            }
        }
        fail
    }

    /// Hands the coordinator what the storage thread reported.
    fn take_stored(&mut self, now: u64) {
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
    }

    fn delete_snapshot(&self, checkpoint: u64, task: TaskId) {
        self.io.block_on(snapshot::discard_snapshot(
            &self.storage,
            &self.job.to_string(),
            checkpoint,
            task,
        ));
    }

    fn discard(&self, checkpoint: u64) {
        self.io.block_on(snapshot::discard_checkpoint(
            &self.storage,
            &self.job.to_string(),
            checkpoint,
        ));
    }

    fn notify(&self, notice: CheckpointNotice) {
        for tx in &self.notices {
            let _ = tx.send(notice);
        }
    }

    /// The job ended (every task thread too): a finished or cancelled job's
    /// checkpoints go, once the last snapshot is stored; a failed job's
    /// completed ones stay: the location of the newest, if any.
    pub fn finish(&mut self, status: JobStatus, now: u64) -> Option<String> {
        self.snapshots = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if status == JobStatus::Failed {
            // Checkpoints still pending fail with the run, and snapshots
            // stored since they failed are garbage among the ones kept.
            if self.started && !self.over {
                self.over = true;
                self.coord.handle_run_ended("the job failed", now);
            }
            self.take_stored(now);
            while let Some(cmd) = self.coord.poll_command() {
                match cmd {
                    CheckpointCommand::Discard { id } => self.discard(id),
                    CheckpointCommand::DiscardSnapshot { id, task } => {
                        self.delete_snapshot(id, task);
                    }
                    _ => {}
                }
            }
            let latest = self.coord.latest_completed()?.id;
            Some(format!(
                "{}/{}",
                self.storage.uri().trim_end_matches('/'),
                snapshot::checkpoint_dir(&self.job.to_string(), latest)
            ))
        } else {
            self.io.block_on(snapshot::discard_job(
                &self.storage,
                &self.job.to_string(),
                &[],
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_coord::Command;
    use sluice_types::{EdgeSpec, Implementation, JobGraph, NodeSpec, Partitioning};

    use crate::snapshot::TaskSnapshot;

    /// `gen` → `sink`, one subtask each (not chained).
    fn execution() -> ExecutionGraph {
        let node = |n: &str, c: &str| NodeSpec {
            name: n.into(),
            implementation: Implementation::Connector(c.into()),
            parallelism: None,
            config: vec![],
            watermarks: None,
        };
        let graph = JobGraph {
            nodes: vec![node("gen", "datagen"), node("sink", "blackhole")],
            edges: vec![EdgeSpec {
                source: "gen".into(),
                target: "sink".into(),
                partitioning: Partitioning::Rebalance,
                target_input: 0,
            }],
            max_parallelism: None,
        };
        ExecutionGraph::build(&graph, 1, 128)
    }

    fn taken(task: TaskId, checkpoint: u64) -> TakenSnapshot {
        TakenSnapshot {
            task,
            snapshot: TaskSnapshot {
                checkpoint,
                sources: vec![],
                sinks: vec![],
                guest: vec![],
            },
        }
    }

    const GEN: TaskId = TaskId {
        vertex: 0,
        subtask: 0,
    };
    const SINK: TaskId = TaskId {
        vertex: 1,
        subtask: 0,
    };

    /// A running job's checkpoints on memory storage, each task's signals,
    /// and the id of the first checkpoint, triggered at 101.
    struct Setup {
        rt: tokio::runtime::Runtime,
        storage: Storage,
        lc: LocalCheckpoints,
        job: Job,
        signals: HashMap<TaskId, Checkpointing>,
        first: u64,
    }

    fn setup() -> Setup {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let storage = Storage::open("memory://", &Default::default()).expect("memory");
        let mut lc = LocalCheckpoints::new(
            JobId([7; 16]),
            100,
            storage.clone(),
            rt.handle().clone(),
            execution(),
            0,
        );
        let mut job = Job::new(execution(), 0);
        job.handle_slots_offered(1, 0).expect("one slot");
        let mut signals = HashMap::new();
        while let Some(cmd) = job.poll_command() {
            if let Command::Deploy { deployment, .. } = cmd {
                let cp = lc.task(&deployment).expect("checkpointing");
                signals.insert(deployment.task, cp);
            }
        }
        lc.deployed();
        for t in [GEN, SINK] {
            job.handle_task_status(t, TaskStatus::Running, 1);
        }
        assert_eq!(lc.drive(&job, 1), None);
        assert_eq!(lc.drive(&job, 101), None);
        let first = signals[&GEN].triggers.try_recv().expect("a trigger");
        Setup {
            rt,
            storage,
            lc,
            job,
            signals,
            first,
        }
    }

    #[test]
    fn a_failed_jobs_pending_checkpoint_leaves_no_snapshot_even_one_stored_late() {
        let Setup {
            rt,
            storage,
            mut lc,
            mut job,
            signals,
            first: id,
        } = setup();
        // The source's snapshot is stored; then the sink fails before its own.
        signals[&GEN].snapshots.send(taken(GEN, id)).expect("send");
        // The sink's upload is under way when the checkpoint fails, so the
        // storage thread does not hear of the failure in time.
        lc.aborted = AbortedCheckpoints::default();
        job.handle_task_status(
            SINK,
            TaskStatus::Failed(sluice_coord::TaskFailure::recoverable("boom")),
            110,
        );
        job.handle_task_status(GEN, TaskStatus::Canceled, 111);
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(lc.drive(&job, 112), None);
        // A snapshot that lands after its checkpoint was discarded.
        signals[&SINK]
            .snapshots
            .send(taken(SINK, id))
            .expect("send");
        drop(signals);
        lc.finish(JobStatus::Failed, 120);
        let left = rt.block_on(storage.list("")).expect("list");
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_failed_checkpoints_queued_snapshots_are_not_stored() {
        let Setup {
            rt,
            storage,
            mut lc,
            job,
            signals,
            first,
        } = setup();
        // The first checkpoint expires; the second is triggered.
        let expired = 101 + CheckpointConfig::default().timeout_ms;
        assert_eq!(lc.drive(&job, expired), None);
        let second = signals[&GEN].triggers.try_recv().expect("a trigger");
        // Both source snapshots reach the storage thread, in this order.
        signals[&GEN]
            .snapshots
            .send(taken(GEN, first))
            .expect("send");
        signals[&GEN]
            .snapshots
            .send(taken(GEN, second))
            .expect("send");
        let stored = lc
            .stored
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the second snapshot's result");
        assert!(
            matches!(stored, Ok((id, GEN, _)) if id == second),
            "{stored:?}"
        );
        let path = snapshot::snapshot_path(&lc.job.to_string(), first, GEN);
        assert!(!rt.block_on(storage.exists(&path)).expect("exists"));
        drop(signals);
        lc.finish(JobStatus::Canceled, expired + 1);
    }
}
