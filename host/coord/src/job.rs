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
    /// It failed; the message names the cause.
    Failed(String),
    /// It stopped because it was told to.
    Canceled,
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
    /// Restart without limit, waiting `initial_ms` after the first failure
    /// and `multiplier` times longer after each further one, up to
    /// `max_ms`; a run that lasted `reset_after_ms` resets the delay.
    ExponentialDelay {
        /// First delay.
        initial_ms: u64,
        /// Largest delay.
        max_ms: u64,
        /// Growth per failure.
        multiplier: f64,
        /// A run this long starts the backoff over.
        reset_after_ms: u64,
    },
}

impl Default for RestartStrategy {
    /// Flink's default since 1.19: exponential delay from 1 s to 5 min,
    /// times 1.5, reset after an hour without failure.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial_ms: 1_000,
            max_ms: 300_000,
            multiplier: 1.5,
            reset_after_ms: 3_600_000,
        }
    }
}

impl RestartStrategy {
    /// The delay before restart number `restarts + 1`, or `None` to give up.
    pub fn delay(&self, restarts: u32) -> Option<u64> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay_ms } => {
                (restarts < attempts).then_some(delay_ms)
            }
            RestartStrategy::ExponentialDelay {
                initial_ms,
                max_ms,
                multiplier,
                ..
            } => {
                let d = initial_ms as f64 * multiplier.max(1.0).powi(restarts.min(1000) as i32);
                Some((d.min(max_ms as f64) as u64).max(initial_ms.min(max_ms)))
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
}

/// One job's core state.
#[derive(Debug)]
pub struct Job {
    graph: ExecutionGraph,
    status: JobStatus,
    tasks: BTreeMap<TaskId, TaskStatus>,
    commands: VecDeque<Command>,
    failure: Option<String>,
    started_at: u64,
    ended_at: Option<u64>,
    strategy: RestartStrategy,
    attempt: u32,
    restarts: u32,
    run_started_at: u64,
    restart_at: Option<u64>,
    cancel_requested: bool,
    failures: Vec<Failure>,
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

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
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
        self.record_failure(None, reason, now);
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

    /// A task reported a new status.
    pub fn handle_task_status(&mut self, task: TaskId, status: TaskStatus, now: u64) {
        match self.tasks.get_mut(&task) {
            Some(slot) if !slot.is_terminal() => *slot = status.clone(),
            _ => return,
        }
        if let TaskStatus::Failed(msg) = status
            && self.failure.is_none()
            && !self.status.is_terminal()
        {
            self.record_failure(Some(task), msg, now);
            self.cancel_running(task);
        }
        self.update_status(now);
    }

    /// The run failed for a reason of the whole job (e.g. too many failed
    /// checkpoints): its tasks are cancelled and the restart strategy applies.
    pub fn fail_run(&mut self, reason: String, now: u64) {
        if self.failure.is_some() || self.status != JobStatus::Running {
            return;
        }
        self.record_failure(None, reason, now);
        self.cancel_running(NO_TASK);
        self.update_status(now);
    }

    /// The run's failure, for its status and the exception history.
    fn record_failure(&mut self, task: Option<TaskId>, message: String, now: u64) {
        self.failures.push(Failure {
            at: now,
            attempt: self.attempt,
            task,
            message: message.clone(),
        });
        self.failure = Some(message);
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
        if self.failure.is_some()
            && !self.cancel_requested
            && let Some(delay) = self.strategy.delay(self.restarts)
        {
            self.status = JobStatus::Restarting;
            self.restart_at = Some(now + delay);
            return;
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
        job.handle_task_status(tasks[0], TaskStatus::Failed("boom".into()), 1);
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
        job.handle_task_status(tasks[0], TaskStatus::Failed("lost".into()), 10);
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
        job.handle_task_status(tasks[1], TaskStatus::Failed("again".into()), 90);
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
        job.handle_task_status(tasks[0], TaskStatus::Failed("lost".into()), 10);
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
        };
        let delays: Vec<_> = (0..5).map(|n| s.delay(n)).collect();
        assert_eq!(
            delays,
            [Some(1000), Some(2000), Some(4000), Some(5000), Some(5000)]
        );
        assert_eq!(RestartStrategy::None.delay(0), None);
    }
}
