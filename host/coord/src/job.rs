//! The state machine of one job: scheduling onto slots, task status, and
//! the job's own status (named as in Flink's REST API).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::execution::{ExecutionGraph, TaskDeployment, TaskId};

/// A job's status, with Flink's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting for slots.
    Created,
    /// Tasks deployed or running.
    Running,
    /// Cancelling its tasks after a failure or a cancel request.
    Cancelling,
    /// Waiting out the restart strategy's delay after a failure.
    Restarting,
    /// Every task finished.
    Finished,
    /// A task failed.
    Failed,
    /// Cancelled by a user.
    Canceled,
}

impl JobStatus {
    /// Whether the job will not change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Finished | JobStatus::Failed | JobStatus::Canceled
        )
    }
}

/// A task's status as its TaskManager reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Deployment sent; not yet running.
    Deploying,
    /// Running.
    Running,
    /// Its input ended and it flushed everything.
    Finished,
    /// It failed.
    Failed(TaskFailure),
    /// It stopped because it was told to.
    Canceled,
}

/// Whether restarting a failed job can help, as Flink classifies failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// It may not happen again: a lost TaskManager, a temporary storage
    /// error, a time limit hit under load. The restart strategy decides.
    Recoverable,
    /// It would happen again the same way: a missing input, a permanent
    /// storage error, a guest that broke a limit or the contract. The job
    /// fails at once.
    NonRecoverable,
    /// The task stopped because another one did (its upstream or downstream
    /// task went away). Not a cause of its own: a task's own failure
    /// reported later in the same run takes its place as the root cause.
    Consequence,
}

impl FailureKind {
    /// Its name in the REST API's failure labels.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Recoverable => "recoverable",
            FailureKind::NonRecoverable => "non-recoverable",
            FailureKind::Consequence => "consequence",
        }
    }
}

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Whether a restart can help.
    pub kind: FailureKind,
    /// What happened, for users.
    pub message: String,
}

impl TaskFailure {
    /// A failure a restart may cure.
    pub fn recoverable(message: impl Into<String>) -> Self {
        TaskFailure {
            kind: FailureKind::Recoverable,
            message: message.into(),
        }
    }

    /// A failure that would happen again.
    pub fn non_recoverable(message: impl Into<String>) -> Self {
        TaskFailure {
            kind: FailureKind::NonRecoverable,
            message: message.into(),
        }
    }

    /// A task stopped because another one did.
    pub fn consequence(message: impl Into<String>) -> Self {
        TaskFailure {
            kind: FailureKind::Consequence,
            message: message.into(),
        }
    }
}

impl TaskStatus {
    fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskStatus::Finished | TaskStatus::Failed(_) | TaskStatus::Canceled
        )
    }
}

/// What the driver must do for the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start this subtask in this slot.
    Deploy {
        /// Slot index.
        slot: u32,
        /// The subtask.
        deployment: Box<TaskDeployment>,
    },
    /// Stop this subtask.
    Cancel(TaskId),
}

/// The job cannot get the slots it needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the job needs {needed} slots (its largest parallelism, with slot sharing) but the cluster has {available}"
)]
pub struct SchedulingError {
    /// Slots needed.
    pub needed: u32,
    /// Slots available.
    pub available: u32,
}

/// What to do when a run of a job fails, as Flink's restart strategies.
/// Failures that would happen again ([`FailureKind::NonRecoverable`]) are
/// never restarted, whatever the strategy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RestartStrategy {
    /// Fail the job at the first failure.
    None,
    /// Restart up to `attempts` times, `delay_ms` after each failure.
    FixedDelay {
        /// Restarts allowed.
        attempts: u32,
        /// Wait before each restart.
        delay_ms: u64,
    },
    /// Restart up to `attempts` times, waiting `initial_ms` after the first
    /// failure and `multiplier` times longer after each further one, up to
    /// `max_ms`; a run that lasted `reset_after_ms` starts the count and
    /// the delay over.
    ExponentialDelay {
        /// First delay.
        initial_ms: u64,
        /// Largest delay.
        max_ms: u64,
        /// Growth per failure.
        multiplier: f64,
        /// A run this long starts the backoff over.
        reset_after_ms: u64,
        /// Restarts allowed before the backoff starts over (Flink's
        /// `attempts-before-reset-backoff`).
        attempts: u32,
    },
    /// Restart `delay_ms` after each failure while at most `max_failures`
    /// failures fall within any `interval_ms`.
    FailureRate {
        /// Failures allowed per interval.
        max_failures: u32,
        /// The interval.
        interval_ms: u64,
        /// Wait before each restart.
        delay_ms: u64,
    },
}

impl Default for RestartStrategy {
    /// Flink's default since 1.19, bounded: exponential delay from 1 s to
    /// 5 min, times 1.5, at most 10 restarts, reset after an hour without
    /// failure.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial_ms: 1_000,
            max_ms: 300_000,
            multiplier: 1.5,
            reset_after_ms: 3_600_000,
            attempts: 10,
        }
    }
}

impl RestartStrategy {
    /// The delay before restart number `restarts + 1` (counted since the
    /// last reset), given the times of recent failures (the newest last),
    /// or why there is none.
    pub fn delay(&self, restarts: u32, failures: &[u64]) -> Result<u64, String> {
        match *self {
            RestartStrategy::None => Err("the restart strategy is `none`".into()),
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                if restarts < attempts {
                    Ok(delay_ms)
                } else {
                    Err(format!(
                        "the fixed-delay restart strategy allows {attempts} restarts and all were made"
                    ))
                }
            }
            RestartStrategy::ExponentialDelay {
                initial_ms,
                max_ms,
                multiplier,
                attempts,
                ..
            } => {
                if restarts >= attempts {
                    return Err(format!(
                        "the exponential-delay restart strategy allows {attempts} restarts without \
                         a stable run and all were made"
                    ));
                }
                let d = initial_ms as f64 * multiplier.max(1.0).powi(restarts.min(1000) as i32);
                Ok((d.min(max_ms as f64) as u64).max(initial_ms.min(max_ms)))
            }
            RestartStrategy::FailureRate {
                max_failures,
                interval_ms,
                delay_ms,
            } => {
                let newest = failures.last().copied().unwrap_or(0);
                let recent = failures
                    .iter()
                    .filter(|&&t| newest.saturating_sub(t) < interval_ms)
                    .count();
                if recent as u64 <= u64::from(max_failures) {
                    Ok(delay_ms)
                } else {
                    Err(format!(
                        "{recent} failures within {} s exceed the failure-rate restart strategy's \
                         {max_failures}",
                        interval_ms / 1000
                    ))
                }
            }
        }
    }
}

/// Matches no task: `cancel_running(NO_TASK)` cancels them all.
const NO_TASK: TaskId = TaskId {
    vertex: u32::MAX,
    subtask: u32::MAX,
};

/// One failure of a job run, for its exception history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When it was reported.
    pub at: u64,
    /// The run it ended.
    pub attempt: u32,
    /// The task that failed, if one did.
    pub task: Option<TaskId>,
    /// What happened.
    pub message: String,
    /// Whether a restart could help.
    pub kind: FailureKind,
    /// Other tasks of the run that failed after it (most as its
    /// consequence), with what they reported.
    pub concurrent: Vec<(TaskId, String)>,
}

/// Failures remembered for the failure-rate strategy.
const FAILURE_TIMES_KEPT: usize = 1024;

/// One job's core state.
#[derive(Debug)]
pub struct Job {
    graph: ExecutionGraph,
    status: JobStatus,
    tasks: BTreeMap<TaskId, TaskStatus>,
    commands: VecDeque<Command>,
    /// The current run's root cause, once it failed.
    failure: Option<TaskFailure>,
    started_at: u64,
    ended_at: Option<u64>,
    strategy: RestartStrategy,
    attempt: u32,
    restarts: u32,
    run_started_at: u64,
    restart_at: Option<u64>,
    cancel_requested: bool,
    failures: Vec<Failure>,
    /// When runs failed, newest last (for the failure-rate strategy).
    failure_times: VecDeque<u64>,
    /// Why a failed job was not restarted.
    not_restarted: Option<String>,
}

impl Job {
    /// A new job in `Created` state.
    pub fn new(graph: ExecutionGraph, now: u64) -> Self {
        Job {
            graph,
            status: JobStatus::Created,
            tasks: BTreeMap::new(),
            commands: VecDeque::new(),
            failure: None,
            started_at: now,
            ended_at: None,
            strategy: RestartStrategy::None,
            attempt: 0,
            restarts: 0,
            run_started_at: now,
            restart_at: None,
            cancel_requested: false,
            failures: Vec::new(),
            failure_times: VecDeque::new(),
            not_restarted: None,
        }
    }

    /// The same job, restarting failed runs under `strategy`.
    pub fn with_restart_strategy(mut self, strategy: RestartStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Which run of the job this is (0 for the first; restarts count up).
    /// Reports from other runs must be dropped by the driver.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Every failure so far, oldest first.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// When the driver must call [`Job::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.restart_at
    }

    /// Time passed: a restart whose delay is over puts the job back in
    /// `Created`, for a new run to be scheduled.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.status == JobStatus::Restarting && self.restart_at.is_some_and(|t| now >= t) {
            self.restart_at = None;
            self.status = JobStatus::Created;
            self.attempt += 1;
            self.restarts += 1;
            self.tasks.clear();
            self.failure = None;
        }
    }

    /// The execution graph.
    pub fn graph(&self) -> &ExecutionGraph {
        &self.graph
    }

    /// The job's status.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// Why the current run failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.message.as_str())
    }

    /// Why the job failed instead of restarting, once it has.
    pub fn not_restarted(&self) -> Option<&str> {
        self.not_restarted.as_deref()
    }

    /// Each task's status.
    pub fn tasks(&self) -> &BTreeMap<TaskId, TaskStatus> {
        &self.tasks
    }

    /// Milliseconds from creation to the terminal state (or to `now`).
    pub fn duration_ms(&self, now: u64) -> u64 {
        self.ended_at.unwrap_or(now).saturating_sub(self.started_at)
    }

    /// The job could not get slots in time (or at all): it fails with `reason`.
    pub fn fail_scheduling(&mut self, reason: String, now: u64) {
        if self.status != JobStatus::Created {
            return;
        }
        self.record_failure(None, TaskFailure::non_recoverable(reason), now);
        self.status = JobStatus::Failed;
        self.ended_at = Some(now);
    }

    /// Schedules every subtask onto `slots` free slots: subtask i of every
    /// vertex goes to slot i (slot sharing, as in Flink).
    pub fn handle_slots_offered(&mut self, slots: u32, now: u64) -> Result<(), SchedulingError> {
        if self.status != JobStatus::Created {
            return Ok(());
        }
        let needed = self.graph.slots_needed();
        if slots < needed {
            return Err(SchedulingError {
                needed,
                available: slots,
            });
        }
        for task in self.graph.tasks().collect::<Vec<_>>() {
            self.tasks.insert(task, TaskStatus::Deploying);
            self.commands.push_back(Command::Deploy {
                slot: task.subtask,
                deployment: Box::new(self.graph.deployment(task)),
            });
        }
        self.status = JobStatus::Running;
        self.run_started_at = now;
        Ok(())
    }

    /// A task reported a new status. The run's first failure is its root
    /// cause and cancels the other tasks, unless it is only a consequence
    /// of another task's failure and that one's report follows: then that
    /// one becomes the root cause. Later failures are kept with it.
    pub fn handle_task_status(&mut self, task: TaskId, status: TaskStatus, now: u64) {
        match self.tasks.get_mut(&task) {
            Some(slot) if !slot.is_terminal() => *slot = status.clone(),
            _ => return,
        }
        if let TaskStatus::Failed(failure) = status
            && !self.status.is_terminal()
        {
            match &self.failure {
                None => {
                    self.record_failure(Some(task), failure, now);
                    self.cancel_running(task);
                }
                Some(root)
                    if root.kind == FailureKind::Consequence
                        && failure.kind != FailureKind::Consequence =>
                {
                    let record = self.failures.last_mut().expect("invariant: recorded");
                    if let Some(old) = record.task {
                        record.concurrent.insert(0, (old, record.message.clone()));
                    }
                    record.task = Some(task);
                    record.message = failure.message.clone();
                    record.kind = failure.kind;
                    self.failure = Some(failure);
                }
                Some(_) => {
                    let record = self.failures.last_mut().expect("invariant: recorded");
                    record.concurrent.push((task, failure.message));
                }
            }
        }
        self.update_status(now);
    }

    /// The run failed for a reason of the whole job (e.g. too many failed
    /// checkpoints): its tasks are cancelled and the restart strategy applies.
    pub fn fail_run(&mut self, reason: String, now: u64) {
        if self.failure.is_some() || self.status != JobStatus::Running {
            return;
        }
        self.record_failure(None, TaskFailure::recoverable(reason), now);
        self.cancel_running(NO_TASK);
        self.update_status(now);
    }

    /// The run's failure, for its status and the exception history.
    fn record_failure(&mut self, task: Option<TaskId>, failure: TaskFailure, now: u64) {
        self.failures.push(Failure {
            at: now,
            attempt: self.attempt,
            task,
            message: failure.message.clone(),
            kind: failure.kind,
            concurrent: Vec::new(),
        });
        self.failure_times.push_back(now);
        if self.failure_times.len() > FAILURE_TIMES_KEPT {
            self.failure_times.pop_front();
        }
        self.failure = Some(failure);
    }

    /// A user asked to cancel the job.
    pub fn cancel(&mut self, now: u64) {
        if self.status.is_terminal() {
            return;
        }
        self.cancel_requested = true;
        if matches!(self.status, JobStatus::Created | JobStatus::Restarting) {
            self.restart_at = None;
            self.status = JobStatus::Canceled;
            self.ended_at = Some(now);
            return;
        }
        self.cancel_running(NO_TASK);
        self.update_status(now);
    }

    fn cancel_running(&mut self, except: TaskId) {
        if self.status == JobStatus::Running {
            self.status = JobStatus::Cancelling;
        }
        for (t, s) in &self.tasks {
            if *t != except && !s.is_terminal() {
                self.commands.push_back(Command::Cancel(*t));
            }
        }
    }

    fn update_status(&mut self, now: u64) {
        if !self.tasks.values().all(TaskStatus::is_terminal)
            || self.status.is_terminal()
            || matches!(self.status, JobStatus::Created | JobStatus::Restarting)
        {
            return;
        }
        if let RestartStrategy::ExponentialDelay { reset_after_ms, .. } = self.strategy
            && now.saturating_sub(self.run_started_at) >= reset_after_ms
        {
            self.restarts = 0;
        }
        if let Some(failure) = &self.failure
            && !self.cancel_requested
        {
            let times: Vec<u64> = self.failure_times.iter().copied().collect();
            let delay = match failure.kind {
                FailureKind::NonRecoverable => {
                    Err("the failure would happen again (it is not recoverable)".to_owned())
                }
                _ => self.strategy.delay(self.restarts, &times),
            };
            match delay {
                Ok(delay) => {
                    self.status = JobStatus::Restarting;
                    self.restart_at = Some(now + delay);
                    return;
                }
                Err(why) => self.not_restarted = Some(why),
            }
        }
        self.status = if self.failure.is_some() && !self.cancel_requested {
            JobStatus::Failed
        } else if self.tasks.values().all(|s| *s == TaskStatus::Finished) {
            JobStatus::Finished
        } else {
            JobStatus::Canceled
        };
        self.ended_at = Some(now);
    }

    /// The next command for the driver.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_types::{EdgeSpec, Implementation, JobGraph, NodeSpec, Partitioning};

    fn graph(p: u32) -> ExecutionGraph {
        let node = |n: &str, i| NodeSpec {
            name: n.into(),
            implementation: i,
            parallelism: None,
            config: vec![],
            watermarks: None,
        };
        let jg = JobGraph {
            nodes: vec![
                node("gen", Implementation::Connector("datagen".into())),
                node("sink", Implementation::Connector("blackhole".into())),
            ],
            edges: vec![EdgeSpec {
                source: "gen".into(),
                target: "sink".into(),
                partitioning: Partitioning::Rebalance,
                target_input: 0,
            }],
            max_parallelism: None,
        };
        ExecutionGraph::build(&jg, p, 128)
    }

    fn deployed(job: &mut Job) -> Vec<TaskId> {
        std::iter::from_fn(|| job.poll_command())
            .map(|c| match c {
                Command::Deploy { deployment, .. } => deployment.task,
                other => panic!("expected a deployment, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn too_few_slots_is_an_error_that_names_both_numbers() {
        let mut job = Job::new(graph(3), 0);
        let err = job.handle_slots_offered(2, 0).expect_err("3 > 2");
        assert_eq!(
            err,
            SchedulingError {
                needed: 3,
                available: 2
            }
        );
        assert_eq!(job.status(), JobStatus::Created);
    }

    #[test]
    fn job_finishes_when_every_task_finishes() {
        let mut job = Job::new(graph(2), 0);
        job.handle_slots_offered(2, 0).expect("enough slots");
        let tasks = deployed(&mut job);
        assert_eq!(tasks.len(), 4);
        for (i, t) in tasks.iter().enumerate() {
            job.handle_task_status(*t, TaskStatus::Running, 1);
            job.handle_task_status(*t, TaskStatus::Finished, 2 + i as u64);
        }
        assert_eq!(job.status(), JobStatus::Finished);
        assert_eq!(job.duration_ms(100), 5);
    }

    #[test]
    fn a_failed_task_cancels_the_others_and_fails_the_job_with_its_message() {
        let mut job = Job::new(graph(2), 0);
        job.handle_slots_offered(2, 0).expect("enough slots");
        let tasks = deployed(&mut job);
        job.handle_task_status(
            tasks[0],
            TaskStatus::Failed(TaskFailure::recoverable("boom")),
            1,
        );
        assert_eq!(job.status(), JobStatus::Cancelling);
        let cancels: Vec<_> = std::iter::from_fn(|| job.poll_command()).collect();
        assert_eq!(cancels.len(), 3);
        for t in &tasks[1..] {
            job.handle_task_status(*t, TaskStatus::Canceled, 2);
        }
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.failure(), Some("boom"));
    }

    #[test]
    fn a_failed_run_restarts_after_the_delay_as_a_new_attempt() {
        let strategy = RestartStrategy::FixedDelay {
            attempts: 1,
            delay_ms: 50,
        };
        let mut job = Job::new(graph(1), 0).with_restart_strategy(strategy);
        job.handle_slots_offered(1, 0).expect("enough slots");
        let tasks = deployed(&mut job);
        job.handle_task_status(
            tasks[0],
            TaskStatus::Failed(TaskFailure::recoverable("lost")),
            10,
        );
        let _ = std::iter::from_fn(|| job.poll_command()).count();
        job.handle_task_status(tasks[1], TaskStatus::Canceled, 20);
        assert_eq!(job.status(), JobStatus::Restarting);
        assert_eq!(job.poll_timeout(), Some(70));
        job.handle_timeout(69);
        assert_eq!(job.status(), JobStatus::Restarting);
        job.handle_timeout(70);
        assert_eq!((job.status(), job.attempt()), (JobStatus::Created, 1));
        // The second run fails too: one restart was all the strategy allowed.
        job.handle_slots_offered(1, 80).expect("enough slots");
        let tasks = deployed(&mut job);
        job.handle_task_status(
            tasks[1],
            TaskStatus::Failed(TaskFailure::recoverable("again")),
            90,
        );
        let _ = std::iter::from_fn(|| job.poll_command()).count();
        job.handle_task_status(tasks[0], TaskStatus::Canceled, 95);
        assert_eq!(job.status(), JobStatus::Failed);
        let history: Vec<_> = job
            .failures()
            .iter()
            .map(|f| (f.attempt, f.message.as_str()))
            .collect();
        assert_eq!(history, [(0, "lost"), (1, "again")]);
    }

    #[test]
    fn a_job_level_failure_cancels_the_run_and_restarts_it() {
        let mut job = Job::new(graph(2), 0).with_restart_strategy(RestartStrategy::FixedDelay {
            attempts: 1,
            delay_ms: 10,
        });
        job.handle_slots_offered(2, 0).expect("slots");
        let tasks: Vec<TaskId> = job.tasks().keys().copied().collect();
        for t in &tasks {
            job.handle_task_status(*t, TaskStatus::Running, 1);
        }
        while job.poll_command().is_some() {}
        job.fail_run("4 checkpoints failed in a row".into(), 5);
        assert_eq!(job.status(), JobStatus::Cancelling);
        let cancels = std::iter::from_fn(|| job.poll_command()).count();
        assert_eq!(cancels, tasks.len());
        for t in &tasks {
            job.handle_task_status(*t, TaskStatus::Canceled, 6);
        }
        assert_eq!(job.status(), JobStatus::Restarting);
        assert_eq!(job.failures()[0].message, "4 checkpoints failed in a row");
        assert_eq!(job.failures()[0].task, None);
    }

    #[test]
    fn cancelling_a_restarting_job_cancels_it() {
        let mut job = Job::new(graph(1), 0).with_restart_strategy(RestartStrategy::default());
        job.handle_slots_offered(1, 0).expect("enough slots");
        let tasks = deployed(&mut job);
        job.handle_task_status(
            tasks[0],
            TaskStatus::Failed(TaskFailure::recoverable("lost")),
            10,
        );
        job.handle_task_status(tasks[1], TaskStatus::Canceled, 20);
        assert_eq!(job.status(), JobStatus::Restarting);
        job.cancel(30);
        assert_eq!(job.status(), JobStatus::Canceled);
        assert_eq!(job.poll_timeout(), None);
    }

    #[test]
    fn exponential_delay_grows_to_its_cap() {
        let s = RestartStrategy::ExponentialDelay {
            initial_ms: 1000,
            max_ms: 5000,
            multiplier: 2.0,
            reset_after_ms: 60_000,
            attempts: 5,
        };
        let delays: Vec<_> = (0..6).map(|n| s.delay(n, &[]).ok()).collect();
        assert_eq!(
            delays,
            [
                Some(1000),
                Some(2000),
                Some(4000),
                Some(5000),
                Some(5000),
                None
            ]
        );
        assert!(RestartStrategy::None.delay(0, &[]).is_err());
    }

    /// Fails task `t` of the run with `failure` and cancels the rest.
    fn fail(job: &mut Job, failure: TaskFailure, now: u64) {
        let tasks: Vec<TaskId> = job.tasks().keys().copied().collect();
        job.handle_task_status(tasks[0], TaskStatus::Failed(failure), now);
        while job.poll_command().is_some() {}
        for t in &tasks[1..] {
            job.handle_task_status(*t, TaskStatus::Canceled, now);
        }
    }

    #[test]
    fn a_failure_that_would_repeat_fails_the_job_without_a_restart() {
        let mut job = Job::new(graph(1), 0).with_restart_strategy(RestartStrategy::default());
        job.handle_slots_offered(1, 0).expect("slots");
        fail(
            &mut job,
            TaskFailure::non_recoverable("input `/x` does not exist"),
            5,
        );
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.attempt(), 0);
        assert_eq!(job.failure(), Some("input `/x` does not exist"));
        assert_eq!(job.failures()[0].kind, FailureKind::NonRecoverable);
        assert!(
            job.not_restarted()
                .is_some_and(|r| r.contains("not recoverable")),
            "{:?}",
            job.not_restarted()
        );
    }

    #[test]
    fn the_default_strategy_gives_up_after_ten_restarts() {
        let mut job = Job::new(graph(1), 0).with_restart_strategy(RestartStrategy::default());
        let mut now = 0;
        for run in 0..=10 {
            job.handle_slots_offered(1, now).expect("slots");
            while job.poll_command().is_some() {}
            fail(
                &mut job,
                TaskFailure::recoverable("TaskManager lost"),
                now + 10,
            );
            if run < 10 {
                assert_eq!(job.status(), JobStatus::Restarting, "run {run}");
                now = job.poll_timeout().expect("a restart is due");
                job.handle_timeout(now);
            }
        }
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.attempt(), 10);
        assert!(
            job.not_restarted()
                .is_some_and(|r| r.contains("allows 10 restarts")),
            "{:?}",
            job.not_restarted()
        );
    }

    #[test]
    fn failure_rate_allows_so_many_failures_per_interval() {
        let s = RestartStrategy::FailureRate {
            max_failures: 2,
            interval_ms: 1000,
            delay_ms: 10,
        };
        assert_eq!(s.delay(0, &[100]), Ok(10));
        assert_eq!(s.delay(1, &[100, 600]), Ok(10));
        assert!(s.delay(2, &[100, 600, 900]).is_err());
        // Failures that left the interval no longer count.
        assert_eq!(s.delay(2, &[100, 600, 1200]), Ok(10));
    }

    #[test]
    fn a_consequence_reported_first_gives_way_to_the_tasks_own_failure() {
        let mut job = Job::new(graph(1), 0).with_restart_strategy(RestartStrategy::None);
        job.handle_slots_offered(1, 0).expect("slots");
        let tasks = deployed(&mut job);
        let (upstream, downstream) = (tasks[0], tasks[1]);
        job.handle_task_status(
            downstream,
            TaskStatus::Failed(TaskFailure::consequence("an upstream task stopped")),
            10,
        );
        assert_eq!(job.status(), JobStatus::Cancelling);
        job.handle_task_status(
            upstream,
            TaskStatus::Failed(TaskFailure::non_recoverable("`split` ran out of fuel")),
            11,
        );
        assert_eq!(job.status(), JobStatus::Failed);
        let f = &job.failures()[0];
        assert_eq!(
            (f.task, f.message.as_str(), f.kind),
            (
                Some(upstream),
                "`split` ran out of fuel",
                FailureKind::NonRecoverable
            )
        );
        assert_eq!(
            f.concurrent,
            [(downstream, "an upstream task stopped".to_owned())]
        );
        assert_eq!(job.failures().len(), 1);
    }
}
