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

    /// Schedules every subtask onto `slots` free slots: subtask i of every
    /// vertex goes to slot i (slot sharing, as in Flink).
    pub fn handle_slots_offered(&mut self, slots: u32, _now: u64) -> Result<(), SchedulingError> {
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
            self.failure = Some(msg);
            self.cancel_running(task);
        }
        self.update_status(now);
    }

    /// A user asked to cancel the job.
    pub fn cancel(&mut self, now: u64) {
        if self.status.is_terminal() {
            return;
        }
        if self.status == JobStatus::Created {
            self.status = JobStatus::Canceled;
            self.ended_at = Some(now);
            return;
        }
        self.cancel_running(TaskId {
            vertex: u32::MAX,
            subtask: u32::MAX,
        });
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
        if !self.tasks.values().all(TaskStatus::is_terminal) || self.status.is_terminal() {
            return;
        }
        self.status = if self.failure.is_some() {
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
}
