//! The checkpoint coordinator of one job, sans IO: when to trigger a
//! checkpoint, which acknowledgements complete it, when it has timed out,
//! which completed checkpoints to keep, and when failures are too many.
//!
//! The driver feeds it time ([`CheckpointCoordinator::handle_timeout`]) and
//! what tasks and storage report (`handle_*`), and carries out what it asks
//! for ([`CheckpointCoordinator::poll_command`]): inject barriers at the
//! sources, write a checkpoint's metadata once every task acknowledged,
//! notify tasks of completion (so two-phase sinks commit), abort, and
//! discard the files of subsumed or failed checkpoints. A checkpoint counts
//! as completed only once its metadata is written.
//!
//! ```
//! use sluice_coord::{CheckpointCommand, CheckpointConfig, CheckpointCoordinator, TaskId};
//!
//! let source = TaskId { vertex: 0, subtask: 0 };
//! let sink = TaskId { vertex: 1, subtask: 0 };
//! let config = CheckpointConfig { interval_ms: 1000, ..CheckpointConfig::default() };
//! let mut c: CheckpointCoordinator<&str> = CheckpointCoordinator::new(config);
//! c.handle_run_started(vec![source, sink], vec![source], 0);
//!
//! // One interval later the first checkpoint is triggered at the sources.
//! c.handle_timeout(1000);
//! let Some(CheckpointCommand::Trigger { id, sources, .. }) = c.poll_command() else { panic!() };
//! assert_eq!((id, sources), (1, vec![source]));
//!
//! // Both tasks acknowledge with their snapshot handles; then the metadata
//! // is written, and only then is the checkpoint complete.
//! c.handle_ack(id, source, "src-state", 1100);
//! c.handle_ack(id, sink, "sink-state", 1200);
//! let Some(CheckpointCommand::WriteMetadata { id, acks }) = c.poll_command() else { panic!() };
//! assert_eq!(acks.len(), 2);
//! c.handle_metadata_written(id, Ok(()), 1250);
//! assert_eq!(c.poll_command(), Some(CheckpointCommand::NotifyComplete { id }));
//! assert_eq!(c.latest_completed().map(|cp| cp.id), Some(1));
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::execution::TaskId;

/// Checkpoint identifiers count up from 1 over the job's whole life (runs
/// included), so a newer checkpoint always has a larger id.
pub type CheckpointId = u64;

/// How barriers are handled at tasks with several inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointingMode {
    /// Inputs are aligned: an input that delivered the barrier is paused until
    /// every input has, so the snapshot reflects exactly the records before
    /// the barrier.
    #[default]
    ExactlyOnce,
    /// Inputs are never paused: records after a barrier may be in the
    /// snapshot, and are then seen again after a recovery.
    AtLeastOnce,
}

/// A job's checkpointing settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// Time between the triggers of two periodic checkpoints.
    pub interval_ms: u64,
    /// Barrier handling.
    pub mode: CheckpointingMode,
    /// A checkpoint not completed this long after its trigger fails.
    pub timeout_ms: u64,
    /// Checkpoints in flight at once.
    pub max_concurrent: u32,
    /// Least time between the end of one checkpoint and the next trigger.
    pub min_pause_ms: u64,
    /// Consecutive failed checkpoints tolerated; one more fails the job.
    pub tolerable_failures: u32,
    /// Completed checkpoints kept (the newest ones); older ones are discarded.
    pub retained: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: 10_000,
            mode: CheckpointingMode::ExactlyOnce,
            timeout_ms: 600_000,
            max_concurrent: 1,
            min_pause_ms: 0,
            tolerable_failures: 3,
            retained: 2,
        }
    }
}

/// What a checkpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// A periodic checkpoint, owned by the system.
    Checkpoint,
    /// A savepoint requested by a user, owned by the user: never discarded
    /// by the coordinator, and its failure never fails the job.
    Savepoint,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointCommand<S> {
    /// Inject barrier `id` at these source tasks.
    Trigger {
        /// The checkpoint.
        id: CheckpointId,
        /// When it was triggered.
        timestamp: u64,
        /// Checkpoint or savepoint.
        kind: CheckpointKind,
        /// The tasks that start the barrier.
        sources: Vec<TaskId>,
    },
    /// Every task acknowledged: write the checkpoint's metadata, then call
    /// [`CheckpointCoordinator::handle_metadata_written`].
    WriteMetadata {
        /// The checkpoint.
        id: CheckpointId,
        /// Each task's snapshot handle.
        acks: BTreeMap<TaskId, S>,
    },
    /// The checkpoint is complete: tasks may publish what it covers (commit
    /// two-phase sinks).
    NotifyComplete {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// Tasks must drop what they hold for this pending checkpoint.
    Abort {
        /// The checkpoint.
        id: CheckpointId,
        /// Why.
        reason: String,
    },
    /// Delete the checkpoint's files (it was subsumed or it failed); the
    /// driver retries until it can call
    /// [`CheckpointCoordinator::handle_discarded`].
    Discard {
        /// The checkpoint.
        id: CheckpointId,
    },
    /// A task's snapshot for a checkpoint that had already failed was
    /// acknowledged: its upload outlived the checkpoint, so the
    /// [`CheckpointCommand::Discard`] of its directory may have run before
    /// it landed. Delete that one snapshot.
    DiscardSnapshot {
        /// The failed checkpoint.
        id: CheckpointId,
        /// The task whose snapshot it is.
        task: TaskId,
    },
    /// Checkpoints failed more often in a row than tolerated.
    FailJob {
        /// Why, for the job's exceptions.
        reason: String,
    },
}

/// Where a checkpoint is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckpointState {
    /// Triggered, waiting for acknowledgements or its metadata.
    InProgress,
    /// Metadata written.
    Completed,
    /// It failed; the reason.
    Failed(String),
}

/// One checkpoint as the REST API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// Its id.
    pub id: CheckpointId,
    /// Checkpoint or savepoint.
    pub kind: CheckpointKind,
    /// Where it is.
    pub state: CheckpointState,
    /// When it was triggered.
    pub trigger_timestamp: u64,
    /// When the last acknowledgement arrived.
    pub latest_ack_timestamp: Option<u64>,
    /// When it completed or failed.
    pub end_timestamp: Option<u64>,
    /// Tasks that acknowledged.
    pub acknowledged: usize,
    /// Tasks that must acknowledge.
    pub total: usize,
}

/// Counts over the job's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointCounts {
    /// Triggered so far.
    pub triggered: u64,
    /// In flight now.
    pub in_progress: u64,
    /// Completed.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
}

/// History entries kept for the REST API.
const HISTORY: usize = 10;
/// Failed checkpoints remembered, so that a snapshot acknowledged after its
/// checkpoint failed is recognised as garbage.
const FAILED_REMEMBERED: usize = 1024;

struct Pending<S> {
    kind: CheckpointKind,
    triggered: u64,
    waiting: BTreeSet<TaskId>,
    acks: BTreeMap<TaskId, S>,
    last_ack: Option<u64>,
    /// Every task acknowledged; the metadata is being written.
    writing: bool,
}

/// The checkpoint coordinator of one job. `S` is the driver's snapshot
/// handle (what a task acknowledges with), opaque to the coordinator.
pub struct CheckpointCoordinator<S> {
    config: CheckpointConfig,
    next_id: CheckpointId,
    /// The current run's tasks and sources; `None` while no run is live.
    run: Option<(Vec<TaskId>, Vec<TaskId>)>,
    /// When the next periodic checkpoint is due.
    next_trigger: Option<u64>,
    pending: BTreeMap<CheckpointId, Pending<S>>,
    /// Completed checkpoints (not savepoints), oldest first.
    completed: VecDeque<CheckpointStats>,
    consecutive_failures: u32,
    counts: CheckpointCounts,
    history: VecDeque<CheckpointStats>,
    latest_failed: Option<CheckpointStats>,
    latest_savepoint: Option<CheckpointStats>,
    /// The newest failed checkpoints' ids (at most [`FAILED_REMEMBERED`]).
    failed: BTreeSet<CheckpointId>,
    commands: VecDeque<CheckpointCommand<S>>,
}

impl<S> std::fmt::Debug for CheckpointCoordinator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCoordinator")
            .field("next_id", &self.next_id)
            .field("pending", &self.pending.keys().collect::<Vec<_>>())
            .field("counts", &self.counts)
            .finish()
    }
}

impl<S: Clone> CheckpointCoordinator<S> {
    /// A coordinator with no run yet.
    pub fn new(config: CheckpointConfig) -> Self {
        CheckpointCoordinator {
            config,
            next_id: 1,
            run: None,
            next_trigger: None,
            pending: BTreeMap::new(),
            completed: VecDeque::new(),
            consecutive_failures: 0,
            counts: CheckpointCounts::default(),
            history: VecDeque::new(),
            latest_failed: None,
            latest_savepoint: None,
            failed: BTreeSet::new(),
            commands: VecDeque::new(),
        }
    }

    /// The same coordinator, continuing the ids and history of a previous
    /// JobManager's: the next id is above `last_id`.
    pub fn resume_ids(mut self, last_id: CheckpointId) -> Self {
        self.next_id = self.next_id.max(last_id + 1);
        self
    }

    /// The settings.
    pub fn config(&self) -> &CheckpointConfig {
        &self.config
    }

    /// Counts over the job's life.
    pub fn counts(&self) -> CheckpointCounts {
        CheckpointCounts {
            in_progress: self.pending.len() as u64,
            ..self.counts
        }
    }

    /// The newest completed checkpoint, if any.
    pub fn latest_completed(&self) -> Option<&CheckpointStats> {
        self.completed.back()
    }

    /// Completed checkpoints still kept, newest first: the candidates to
    /// restore from, in order.
    pub fn retained(&self) -> impl Iterator<Item = &CheckpointStats> {
        self.completed.iter().rev()
    }

    /// The newest failed checkpoint, if any.
    pub fn latest_failed(&self) -> Option<&CheckpointStats> {
        self.latest_failed.as_ref()
    }

    /// The newest completed savepoint, if any.
    pub fn latest_savepoint(&self) -> Option<&CheckpointStats> {
        self.latest_savepoint.as_ref()
    }

    /// The most recent checkpoints, newest first, in progress ones included.
    pub fn history(&self) -> Vec<CheckpointStats> {
        let mut all: Vec<CheckpointStats> = self
            .pending
            .iter()
            .map(|(&id, p)| self.stats_of(id, p, CheckpointState::InProgress, None))
            .chain(self.history.iter().cloned())
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.id));
        all.truncate(HISTORY);
        all
    }

    /// When the driver must call [`CheckpointCoordinator::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let expiry = self
            .pending
            .values()
            .map(|p| p.triggered.saturating_add(self.config.timeout_ms))
            .min();
        match (self.next_trigger, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing to do, if any.
    pub fn poll_command(&mut self) -> Option<CheckpointCommand<S>> {
        self.commands.pop_front()
    }

    /// A run's tasks are all running: periodic checkpoints start one
    /// interval from now. `sources` are the tasks with no inputs.
    pub fn handle_run_started(&mut self, tasks: Vec<TaskId>, sources: Vec<TaskId>, now: u64) {
        self.run = Some((tasks, sources));
        self.next_trigger = Some(now.saturating_add(self.config.interval_ms));
    }

    /// The run ended (failure, cancel, finish): pending checkpoints fail
    /// without counting against the tolerance, and no more are triggered
    /// until the next run starts.
    pub fn handle_run_ended(&mut self, reason: &str, now: u64) {
        self.run = None;
        self.next_trigger = None;
        let ids: Vec<CheckpointId> = self.pending.keys().copied().collect();
        for id in ids {
            self.fail(id, format!("the job run ended: {reason}"), now, false);
        }
    }

    /// Triggers a savepoint now; `None` when no run is live.
    pub fn trigger_savepoint(&mut self, now: u64) -> Option<CheckpointId> {
        self.run.as_ref()?;
        Some(self.trigger(CheckpointKind::Savepoint, now))
    }

    /// Time passed: expire checkpoints past their timeout, and trigger the
    /// next periodic one if it is due and allowed.
    pub fn handle_timeout(&mut self, now: u64) {
        let expired: Vec<CheckpointId> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.triggered.saturating_add(self.config.timeout_ms))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let reason = format!(
                "checkpoint {id} expired after {} ms before every task acknowledged",
                self.config.timeout_ms
            );
            self.fail(id, reason, now, true);
        }
        let Some(due) = self.next_trigger else {
            return;
        };
        if now < due || self.run.is_none() {
            return;
        }
        let in_flight = self
            .pending
            .values()
            .filter(|p| p.kind == CheckpointKind::Checkpoint)
            .count() as u32;
        if in_flight >= self.config.max_concurrent {
            // Tried again when one ends (see `finish`).
            self.next_trigger = None;
            return;
        }
        self.trigger(CheckpointKind::Checkpoint, now);
        self.next_trigger = Some(now.saturating_add(self.config.interval_ms));
    }

    fn trigger(&mut self, kind: CheckpointKind, now: u64) -> CheckpointId {
        let (tasks, sources) = self
            .run
            .clone()
            .expect("invariant: triggers happen only during a run");
        let id = self.next_id;
        self.next_id += 1;
        self.counts.triggered += 1;
        self.pending.insert(
            id,
            Pending {
                kind,
                triggered: now,
                waiting: tasks.into_iter().collect(),
                acks: BTreeMap::new(),
                last_ack: None,
                writing: false,
            },
        );
        self.commands.push_back(CheckpointCommand::Trigger {
            id,
            timestamp: now,
            kind,
            sources,
        });
        id
    }

    /// A task took its snapshot for checkpoint `id`. One for a checkpoint
    /// no longer pending goes to [`Self::handle_late_ack`]; a repeated one,
    /// or one from a task the checkpoint does not wait for, is ignored.
    pub fn handle_ack(&mut self, id: CheckpointId, task: TaskId, snapshot: S, now: u64) {
        let Some(p) = self.pending.get_mut(&id) else {
            self.handle_late_ack(id, task);
            return;
        };
        if !p.waiting.remove(&task) {
            return;
        }
        p.acks.insert(task, snapshot);
        p.last_ack = Some(now);
        if p.waiting.is_empty() && !p.writing {
            p.writing = true;
            let acks = p.acks.clone();
            self.commands
                .push_back(CheckpointCommand::WriteMetadata { id, acks });
        }
    }

    /// A snapshot was acknowledged by a task of an earlier run of the job,
    /// or after its checkpoint stopped being pending: if that checkpoint
    /// failed, the snapshot is garbage and a
    /// [`CheckpointCommand::DiscardSnapshot`] follows. (A completed
    /// checkpoint's snapshots are never touched: a repeated ack of one is
    /// ignored.)
    pub fn handle_late_ack(&mut self, id: CheckpointId, task: TaskId) {
        if self.failed.contains(&id) && !self.pending.contains_key(&id) {
            self.commands
                .push_back(CheckpointCommand::DiscardSnapshot { id, task });
        }
    }

    /// A task could not take or upload its snapshot.
    pub fn handle_decline(&mut self, id: CheckpointId, task: TaskId, reason: &str, now: u64) {
        if self.pending.contains_key(&id) {
            let reason = format!("task {task:?} declined checkpoint {id}: {reason}");
            self.fail(id, reason, now, true);
        }
    }

    /// The host refuses pending checkpoint `id` (its tenant's state quota):
    /// it fails with `reason` but does not count toward the tolerable
    /// failures, because a restart would not make it fit; the job runs on
    /// without it.
    pub fn handle_refused(&mut self, id: CheckpointId, reason: &str, now: u64) {
        if self.pending.contains_key(&id) {
            self.fail(id, reason.to_owned(), now, false);
        }
    }

    /// The metadata of checkpoint `id` was written, or could not be.
    pub fn handle_metadata_written(
        &mut self,
        id: CheckpointId,
        result: Result<(), String>,
        now: u64,
    ) {
        match result {
            Err(e) => {
                if self.pending.contains_key(&id) {
                    self.fail(
                        id,
                        format!("cannot write the metadata of checkpoint {id}: {e}"),
                        now,
                        true,
                    );
                }
            }
            Ok(()) => {
                let Some(p) = self.pending.remove(&id) else {
                    return;
                };
                let stats = self.stats_of(id, &p, CheckpointState::Completed, Some(now));
                self.counts.completed += 1;
                self.consecutive_failures = 0;
                self.record(stats.clone());
                self.commands
                    .push_back(CheckpointCommand::NotifyComplete { id });
                match p.kind {
                    CheckpointKind::Savepoint => self.latest_savepoint = Some(stats),
                    CheckpointKind::Checkpoint => {
                        self.completed.push_back(stats);
                        // Older pending checkpoints are subsumed by this one.
                        let older: Vec<CheckpointId> = self
                            .pending
                            .iter()
                            .filter(|(o, q)| **o < id && q.kind == CheckpointKind::Checkpoint)
                            .map(|(o, _)| *o)
                            .collect();
                        for o in older {
                            self.fail(o, format!("subsumed by checkpoint {id}"), now, false);
                        }
                        while self.completed.len() > self.config.retained.max(1) {
                            let old = self
                                .completed
                                .pop_front()
                                .expect("invariant: more than one is retained");
                            self.commands
                                .push_back(CheckpointCommand::Discard { id: old.id });
                        }
                    }
                }
                self.finished(now);
            }
        }
    }

    /// A completed checkpoint turned out unusable (corrupt or missing
    /// metadata on restore): it is no longer offered by [`Self::retained`].
    pub fn handle_unusable(&mut self, id: CheckpointId) {
        self.completed.retain(|c| c.id != id);
    }

    /// The files of a discarded checkpoint are gone.
    pub fn handle_discarded(&mut self, _id: CheckpointId) {}

    fn fail(&mut self, id: CheckpointId, reason: String, now: u64, counts: bool) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let stats = self.stats_of(id, &p, CheckpointState::Failed(reason.clone()), Some(now));
        self.counts.failed += 1;
        self.latest_failed = Some(stats.clone());
        self.record(stats);
        self.failed.insert(id);
        while self.failed.len() > FAILED_REMEMBERED {
            self.failed.pop_first();
        }
        self.commands.push_back(CheckpointCommand::Abort {
            id,
            reason: reason.clone(),
        });
        self.commands.push_back(CheckpointCommand::Discard { id });
        // A failed savepoint is the user's to retry; it never fails the job.
        if counts && p.kind == CheckpointKind::Checkpoint {
            self.consecutive_failures += 1;
            if self.consecutive_failures > self.config.tolerable_failures {
                self.commands.push_back(CheckpointCommand::FailJob {
                    reason: format!(
                        "{} checkpoints failed in a row (tolerated: {}); the last: {reason}",
                        self.consecutive_failures, self.config.tolerable_failures
                    ),
                });
                self.consecutive_failures = 0;
            }
        }
        self.finished(now);
    }

    /// A checkpoint ended: a trigger held back by `max_concurrent` may go,
    /// after the minimum pause.
    fn finished(&mut self, now: u64) {
        let earliest = now.saturating_add(self.config.min_pause_ms);
        if self.run.is_some() {
            self.next_trigger = Some(self.next_trigger.map_or(earliest, |t| t.max(earliest)));
        }
    }

    fn record(&mut self, stats: CheckpointStats) {
        self.history.push_back(stats);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    fn stats_of(
        &self,
        id: CheckpointId,
        p: &Pending<S>,
        state: CheckpointState,
        end: Option<u64>,
    ) -> CheckpointStats {
        CheckpointStats {
            id,
            kind: p.kind,
            state,
            trigger_timestamp: p.triggered,
            latest_ack_timestamp: p.last_ack,
            end_timestamp: end,
            acknowledged: p.acks.len(),
            total: p.acks.len() + p.waiting.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckpointCommand as C;

    fn t(vertex: u32, subtask: u32) -> TaskId {
        TaskId { vertex, subtask }
    }

    /// A source (0,0) and a sink (1,0), checkpoints every 100 ms.
    fn coordinator(edit: impl FnOnce(&mut CheckpointConfig)) -> CheckpointCoordinator<u32> {
        let mut config = CheckpointConfig {
            interval_ms: 100,
            timeout_ms: 1000,
            ..CheckpointConfig::default()
        };
        edit(&mut config);
        let mut c = CheckpointCoordinator::new(config);
        c.handle_run_started(vec![t(0, 0), t(1, 0)], vec![t(0, 0)], 0);
        c
    }

    fn drain(c: &mut CheckpointCoordinator<u32>) -> Vec<C<u32>> {
        std::iter::from_fn(|| c.poll_command()).collect()
    }

    /// Triggers the next checkpoint at `now`; its id.
    fn trigger(c: &mut CheckpointCoordinator<u32>, now: u64) -> CheckpointId {
        c.handle_timeout(now);
        match drain(c).as_slice() {
            [C::Trigger { id, .. }] => *id,
            other => panic!("expected one trigger, got {other:?}"),
        }
    }

    fn complete(c: &mut CheckpointCoordinator<u32>, id: CheckpointId, now: u64) -> Vec<C<u32>> {
        c.handle_ack(id, t(0, 0), 1, now);
        c.handle_ack(id, t(1, 0), 2, now);
        c.handle_metadata_written(id, Ok(()), now);
        drain(c)
    }

    #[test]
    fn nothing_is_triggered_before_the_interval_or_without_a_run() {
        let mut c = coordinator(|_| {});
        assert_eq!(c.poll_timeout(), Some(100));
        c.handle_timeout(99);
        assert!(drain(&mut c).is_empty());
        c.handle_run_ended("cancelled", 99);
        c.handle_timeout(1000);
        assert!(drain(&mut c).is_empty());
        assert_eq!(c.trigger_savepoint(1000), None);
    }

    #[test]
    fn a_checkpoint_completes_only_after_every_ack_and_its_metadata() {
        let mut c = coordinator(|_| {});
        let id = trigger(&mut c, 100);
        c.handle_ack(id, t(0, 0), 7, 110);
        assert!(drain(&mut c).is_empty(), "one task is still missing");
        // A duplicate or a stranger's ack changes nothing.
        c.handle_ack(id, t(0, 0), 7, 111);
        c.handle_ack(id, t(5, 5), 7, 111);
        assert!(drain(&mut c).is_empty());
        c.handle_ack(id, t(1, 0), 8, 120);
        let cmds = drain(&mut c);
        assert_eq!(
            cmds,
            [C::WriteMetadata {
                id,
                acks: [(t(0, 0), 7), (t(1, 0), 8)].into_iter().collect()
            }]
        );
        assert!(c.latest_completed().is_none(), "not before the metadata");
        let h = &c.history()[0];
        assert_eq!(
            (h.id, &h.state, h.acknowledged),
            (id, &CheckpointState::InProgress, 2)
        );
        assert_eq!(c.counts().in_progress, 1);
        c.handle_metadata_written(id, Ok(()), 130);
        assert_eq!(drain(&mut c), [C::NotifyComplete { id }]);
        let h = &c.history()[0];
        assert_eq!(
            (h.id, &h.state, h.end_timestamp),
            (id, &CheckpointState::Completed, Some(130))
        );
        let done = c.latest_completed().expect("completed");
        assert_eq!((done.id, done.acknowledged, done.total), (id, 2, 2));
        assert_eq!(c.counts().completed, 1);
    }

    #[test]
    fn max_concurrent_holds_the_next_trigger_until_one_ends_plus_the_pause() {
        let mut c = coordinator(|cfg| cfg.min_pause_ms = 50);
        let first = trigger(&mut c, 100);
        c.handle_timeout(200);
        assert!(drain(&mut c).is_empty(), "one is in flight already");
        complete(&mut c, first, 230);
        c.handle_timeout(279);
        assert!(drain(&mut c).is_empty(), "the minimum pause is not over");
        assert_eq!(c.poll_timeout(), Some(280));
        let second = trigger(&mut c, 280);
        assert_eq!(second, first + 1);
    }

    #[test]
    fn expired_and_declined_checkpoints_fail_and_too_many_in_a_row_fail_the_job() {
        let mut c = coordinator(|cfg| cfg.tolerable_failures = 1);
        let id = trigger(&mut c, 100);
        c.handle_ack(id, t(0, 0), 1, 150);
        c.handle_timeout(1100);
        let cmds = drain(&mut c);
        assert!(
            matches!(&cmds[..], [C::Abort { id: a, reason }, C::Discard { id: d }, C::Trigger { .. }]
                if *a == id && *d == id && reason.contains("expired")),
            "{cmds:?}"
        );
        assert!(matches!(
            c.latest_failed().map(|f| &f.state),
            Some(CheckpointState::Failed(r)) if r.contains("expired")
        ));
        // The late ack of the expired checkpoint is ignored.
        c.handle_ack(id, t(1, 0), 2, 1101);
        // A success in between resets the count...
        let next = id + 1;
        complete(&mut c, next, 1150);
        let third = trigger(&mut c, 1250);
        c.handle_decline(third, t(1, 0), "disk full", 1260);
        let cmds = drain(&mut c);
        assert!(
            !cmds.iter().any(|c| matches!(c, C::FailJob { .. })),
            "{cmds:?}"
        );
        // ...but two failures in a row exceed a tolerance of one.
        let fourth = trigger(&mut c, 1360);
        c.handle_ack(fourth, t(0, 0), 1, 1361);
        c.handle_ack(fourth, t(1, 0), 1, 1362);
        drain(&mut c);
        c.handle_metadata_written(fourth, Err("S3 unavailable".into()), 1370);
        let cmds = drain(&mut c);
        let fail = cmds.iter().find_map(|c| match c {
            C::FailJob { reason } => Some(reason.clone()),
            _ => None,
        });
        assert!(
            fail.as_deref().is_some_and(
                |r| r.contains("2 checkpoints failed in a row") && r.contains("S3 unavailable")
            ),
            "{cmds:?}"
        );
        assert_eq!(c.counts().failed, 3);
    }

    #[test]
    fn only_the_newest_completed_checkpoints_are_kept() {
        let mut c = coordinator(|cfg| cfg.retained = 2);
        let mut discarded = Vec::new();
        let mut now = 100;
        for _ in 0..4 {
            let id = trigger(&mut c, now);
            for cmd in complete(&mut c, id, now + 10) {
                if let C::Discard { id } = cmd {
                    discarded.push(id);
                }
            }
            now += 100;
        }
        assert_eq!(discarded, [1, 2]);
        assert_eq!(c.retained().map(|s| s.id).collect::<Vec<_>>(), [4, 3]);
        // A retained checkpoint found corrupt is no longer offered.
        c.handle_unusable(4);
        assert_eq!(c.retained().map(|s| s.id).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn a_snapshot_acknowledged_after_its_checkpoint_failed_is_discarded() {
        let mut c = coordinator(|cfg| cfg.tolerable_failures = 10);
        let failed = trigger(&mut c, 100);
        c.handle_ack(failed, t(0, 0), 1, 150);
        c.handle_timeout(1100);
        let cmds = drain(&mut c);
        let [
            C::Abort { .. },
            C::Discard { .. },
            C::Trigger { id: next, .. },
        ] = &cmds[..]
        else {
            panic!("{cmds:?}");
        };
        let next = *next;
        // The slow task's upload lands after the discard of the directory.
        c.handle_ack(failed, t(1, 0), 2, 1200);
        assert_eq!(
            drain(&mut c),
            [C::DiscardSnapshot {
                id: failed,
                task: t(1, 0)
            }]
        );
        // So does one reported by a task of an earlier run.
        c.handle_late_ack(failed, t(0, 0));
        assert_eq!(
            drain(&mut c),
            [C::DiscardSnapshot {
                id: failed,
                task: t(0, 0)
            }]
        );
        // A completed checkpoint's snapshots stay whatever is repeated, and
        // an id never triggered means nothing.
        let done = next;
        assert!(complete(&mut c, done, 1300).contains(&C::NotifyComplete { id: done }));
        c.handle_ack(done, t(1, 0), 2, 1400);
        c.handle_late_ack(done, t(0, 0));
        c.handle_late_ack(done + 100, t(0, 0));
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_newer_completed_checkpoint_subsumes_older_pending_ones() {
        let mut c = coordinator(|cfg| cfg.max_concurrent = 2);
        let first = trigger(&mut c, 100);
        let second = trigger(&mut c, 200);
        let cmds = complete(&mut c, second, 210);
        assert!(
            cmds.contains(&C::Abort {
                id: first,
                reason: format!("subsumed by checkpoint {second}")
            }),
            "{cmds:?}"
        );
        assert!(!cmds.iter().any(|c| matches!(c, C::FailJob { .. })));
        assert_eq!(c.counts().in_progress, 0);
    }

    #[test]
    fn a_run_that_ends_aborts_pending_checkpoints_without_counting_them() {
        let mut c = coordinator(|cfg| cfg.tolerable_failures = 0);
        let id = trigger(&mut c, 100);
        c.handle_run_ended("TaskManager lost", 150);
        let cmds = drain(&mut c);
        assert!(
            matches!(&cmds[..], [C::Abort { id: a, reason }, C::Discard { .. }]
                if *a == id && reason.contains("TaskManager lost")),
            "{cmds:?}"
        );
        c.handle_timeout(10_000);
        assert!(drain(&mut c).is_empty());
        // The next run continues the ids.
        c.handle_run_started(vec![t(0, 0), t(1, 0)], vec![t(0, 0)], 20_000);
        assert_eq!(trigger(&mut c, 20_100), id + 1);
    }

    #[test]
    fn savepoints_are_never_discarded_and_their_failures_never_fail_the_job() {
        let mut c = coordinator(|cfg| {
            cfg.tolerable_failures = 0;
            cfg.retained = 1;
        });
        let sp = c.trigger_savepoint(10).expect("a run is live");
        assert!(matches!(
            drain(&mut c).as_slice(),
            [C::Trigger {
                kind: CheckpointKind::Savepoint,
                ..
            }]
        ));
        complete(&mut c, sp, 20);
        assert_eq!(c.latest_savepoint().map(|s| s.id), Some(sp));
        assert!(
            c.latest_completed().is_none(),
            "not a checkpoint to restore from"
        );
        let failing = c.trigger_savepoint(30).expect("run");
        drain(&mut c);
        c.handle_decline(failing, t(0, 0), "cannot upload", 40);
        let cmds = drain(&mut c);
        assert!(
            !cmds.iter().any(|c| matches!(c, C::FailJob { .. })),
            "{cmds:?}"
        );
        for _ in 0..3 {
            let now = c.poll_timeout().expect("periodic");
            let id = trigger(&mut c, now);
            let cmds = complete(&mut c, id, now + 1);
            assert!(!cmds.contains(&C::Discard { id: sp }));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        enum Ev {
            Tick(u64),
            Ack(usize, u32),
            /// An ack for any checkpoint triggered so far, pending or not.
            LateAck(usize, u32),
            Decline(usize),
            Metadata(usize, bool),
            Savepoint,
            RunEnded,
            RunStarted,
        }

        fn ev() -> impl Strategy<Value = Ev> {
            prop_oneof![
                4 => (1u64..400).prop_map(Ev::Tick),
                6 => (0usize..4, 0u32..3).prop_map(|(p, s)| Ev::Ack(p, s)),
                2 => (0usize..64, 0u32..3).prop_map(|(k, s)| Ev::LateAck(k, s)),
                1 => (0usize..4).prop_map(Ev::Decline),
                3 => (0usize..4, proptest::bool::weighted(0.8)).prop_map(|(p, ok)| Ev::Metadata(p, ok)),
                1 => Just(Ev::Savepoint),
                1 => Just(Ev::RunEnded),
                1 => Just(Ev::RunStarted),
            ]
        }

        proptest! {
            /// Whatever tasks and storage do: ids only grow, completions
            /// need every ack and the metadata, at most `max_concurrent`
            /// periodic checkpoints are in flight, at most `retained` are
            /// kept, the job fails only after more consecutive counted
            /// failures than tolerated, and a snapshot is discarded exactly
            /// when it is acknowledged after its checkpoint failed.
            #[test]
            fn invariants_hold_under_any_interleaving(
                events in proptest::collection::vec(ev(), 1..200),
                max_concurrent in 1u32..3,
                retained in 1usize..3,
                tolerable in 0u32..3,
            ) {
                let tasks: Vec<TaskId> = (0..3).map(|s| t(s % 2, s)).collect();
                let config = CheckpointConfig {
                    interval_ms: 100,
                    timeout_ms: 500,
                    max_concurrent,
                    retained,
                    tolerable_failures: tolerable,
                    ..CheckpointConfig::default()
                };
                let mut c: CheckpointCoordinator<u32> = CheckpointCoordinator::new(config);
                c.handle_run_started(tasks.clone(), vec![tasks[0]], 0);
                let mut now = 0u64;
                let mut last_trigger = 0;
                let mut writing: Vec<CheckpointId> = Vec::new();
                let mut pending: Vec<(CheckpointId, CheckpointKind)> = Vec::new();
                let mut acked: BTreeMap<CheckpointId, BTreeSet<TaskId>> = BTreeMap::new();
                let mut streak = 0u32;
                let mut live = true;
                let mut triggered: Vec<CheckpointId> = Vec::new();
                let mut aborted: BTreeSet<CheckpointId> = BTreeSet::new();
                for e in events {
                    // A snapshot of this checkpoint must be discarded now.
                    let mut late_for_failed = None;
                    match e {
                        Ev::Tick(d) => { now += d; c.handle_timeout(now); }
                        Ev::Ack(p, s) => if let Some(&(id, _)) = pending.get(p) {
                            let task = tasks[s as usize];
                            c.handle_ack(id, task, 0, now);
                            acked.entry(id).or_default().insert(task);
                        },
                        Ev::LateAck(k, s) => if !triggered.is_empty() {
                            let id = triggered[k % triggered.len()];
                            let task = tasks[s as usize];
                            if aborted.contains(&id) {
                                late_for_failed = Some((id, task));
                            }
                            let is_pending = pending.iter().any(|p| p.0 == id);
                            c.handle_ack(id, task, 0, now);
                            if is_pending {
                                acked.entry(id).or_default().insert(task);
                            }
                        },
                        Ev::Decline(p) => if let Some(&(id, _)) = pending.get(p) {
                            c.handle_decline(id, tasks[0], "no", now);
                        },
                        Ev::Metadata(p, ok) => if let Some(&id) = writing.get(p) {
                            c.handle_metadata_written(id, if ok { Ok(()) } else { Err("x".into()) }, now);
                        },
                        Ev::Savepoint => { c.trigger_savepoint(now); }
                        Ev::RunEnded => { c.handle_run_ended("test", now); live = false; }
                        Ev::RunStarted => if !live {
                            c.handle_run_started(tasks.clone(), vec![tasks[0]], now);
                            live = true;
                        },
                    }
                    while let Some(cmd) = c.poll_command() {
                        match cmd {
                            C::Trigger { id, kind, .. } => {
                                prop_assert!(live);
                                prop_assert!(id > last_trigger);
                                last_trigger = id;
                                triggered.push(id);
                                pending.push((id, kind));
                            }
                            C::WriteMetadata { id, acks } => {
                                let expected: BTreeSet<TaskId> = tasks.iter().copied().collect();
                                prop_assert_eq!(acks.keys().copied().collect::<BTreeSet<_>>(), expected.clone());
                                prop_assert_eq!(acked.get(&id).cloned().unwrap_or_default(), expected);
                                writing.push(id);
                            }
                            C::NotifyComplete { id } => {
                                prop_assert!(writing.contains(&id));
                                pending.retain(|p| p.0 != id);
                                writing.retain(|w| *w != id);
                                streak = 0;
                            }
                            C::Abort { id, reason } => {
                                let kind = pending.iter().find(|p| p.0 == id).map(|p| p.1);
                                prop_assert!(kind.is_some());
                                let counted = !reason.contains("subsumed") && !reason.contains("run ended");
                                if counted && kind == Some(CheckpointKind::Checkpoint) {
                                    streak += 1;
                                }
                                pending.retain(|p| p.0 != id);
                                writing.retain(|w| *w != id);
                                aborted.insert(id);
                            }
                            C::Discard { .. } => {}
                            C::DiscardSnapshot { id, task } => {
                                prop_assert_eq!(late_for_failed.take(), Some((id, task)));
                            }
                            C::FailJob { .. } => {
                                prop_assert!(streak > tolerable, "failed after {} of {} tolerated", streak, tolerable);
                                streak = 0;
                            }
                        }
                    }
                    prop_assert_eq!(late_for_failed, None, "a late snapshot was kept");
                    let periodic = pending.iter().filter(|p| p.1 == CheckpointKind::Checkpoint).count();
                    prop_assert!(periodic as u32 <= max_concurrent);
                    prop_assert!(c.retained().count() <= retained);
                    let ids: Vec<_> = c.retained().map(|s| s.id).collect();
                    prop_assert!(ids.windows(2).all(|w| w[0] > w[1]));
                    prop_assert_eq!(c.counts().in_progress as usize, pending.len());
                }
            }
        }
    }
}
