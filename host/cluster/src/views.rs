//! The JSON views of a job the REST API serves, in Flink's shapes: pure
//! functions of a job's entry, so that what the API answers for a live job
//! is also what is archived in the job-result store when it ends.

use std::collections::BTreeMap;

use serde_json::Value;
use sluice_coord::TaskStatus;

use crate::api::flink::{
    CheckpointConfigView, CheckpointCountsView, CheckpointEntry, CheckpointsView,
    ConcurrentException, ExceptionEntry, ExceptionHistory, Exceptions, Externalization, JobDetail,
    JobOverview, LatestCheckpoints, NodeView, PolicyAsOf, RestoredCheckpoint, VertexMetrics,
    VertexView,
};

use crate::table::{JobEntry, now_ms, status_name};

fn end_time(j: &JobEntry) -> i64 {
    if j.core.status().is_terminal() {
        j.status_changed
            .get(status_name(j.core.status()))
            .map_or(-1, |t| *t as i64)
    } else {
        -1
    }
}

fn duration(j: &JobEntry) -> u64 {
    let end = match end_time(j) {
        -1 => now_ms(),
        t => t as u64,
    };
    end.saturating_sub(j.start_time)
}

/// Counts of the current run's tasks by Flink state name (lowercase for
/// the overview, uppercase for vertices, as Flink does).
fn task_counts<'a>(
    statuses: impl Iterator<Item = Option<&'a TaskStatus>>,
) -> BTreeMap<&'static str, u32> {
    let mut m: BTreeMap<&'static str, u32> = [
        "CREATED",
        "SCHEDULED",
        "DEPLOYING",
        "INITIALIZING",
        "RUNNING",
        "FINISHED",
        "CANCELING",
        "CANCELED",
        "FAILED",
        "RECONCILING",
    ]
    .into_iter()
    .map(|k| (k, 0))
    .collect();
    for s in statuses {
        let k = match s {
            None => "CREATED",
            Some(TaskStatus::Deploying) => "DEPLOYING",
            Some(TaskStatus::Running) => "RUNNING",
            Some(TaskStatus::Finished) => "FINISHED",
            Some(TaskStatus::Failed(_)) => "FAILED",
            Some(TaskStatus::Canceled) => "CANCELED",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

fn job_tasks(j: &JobEntry) -> impl Iterator<Item = Option<&TaskStatus>> + '_ {
    j.execution.tasks().map(|t| j.core.tasks().get(&t))
}

/// One job of `GET /jobs/overview`.
pub(crate) fn overview(j: &JobEntry) -> JobOverview {
    let mut tasks: BTreeMap<String, u32> = task_counts(job_tasks(j))
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    tasks.insert("total".into(), j.execution.tasks().count() as u32);
    JobOverview {
        jid: j.id.to_string(),
        name: j.name.clone(),
        job_type: "STREAMING".into(),
        scheduler_type: "Default".into(),
        start_time: j.start_time,
        end_time: end_time(j),
        duration: duration(j),
        state: status_name(j.core.status()).into(),
        last_modification: j
            .status_changed
            .values()
            .max()
            .copied()
            .unwrap_or(j.start_time),
        tasks,
        pending_operators: 0,
        tenant: j.owner.to_string(),
        waiting_for: j.waiting_for.clone(),
    }
}

/// Task counts with `&'static str` keys as owned strings.
fn owned(m: BTreeMap<&'static str, u32>) -> BTreeMap<String, u32> {
    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// `GET /jobs/:id`.
pub(crate) fn detail(j: &JobEntry) -> JobDetail {
    let counts = j.node_counts();
    let mut node_index = 0;
    let vertices: Vec<VertexView> = j
        .execution
        .vertices
        .iter()
        .enumerate()
        .map(|(vi, v)| {
            let nodes = &counts[node_index..node_index + v.nodes.len()];
            node_index += v.nodes.len();
            let statuses = (0..v.parallelism).map(|s| {
                j.core.tasks().get(&sluice_coord::TaskId {
                    vertex: vi as u32,
                    subtask: s,
                })
            });
            let tasks = task_counts(statuses);
            let status = if tasks["FAILED"] > 0 {
                "FAILED"
            } else if tasks["RUNNING"] > 0 {
                "RUNNING"
            } else if tasks["FINISHED"] == v.parallelism {
                "FINISHED"
            } else if tasks["CANCELED"] > 0 {
                "CANCELED"
            } else {
                "CREATED"
            };
            VertexView {
                id: format!("{:032x}", vi),
                slot_sharing_group_id: format!("{:032x}", 0),
                name: v.name.clone(),
                max_parallelism: j.execution.max_parallelism,
                parallelism: v.parallelism,
                status: status.into(),
                start_time: j.start_time,
                end_time: end_time(j),
                duration: duration(j),
                tasks: owned(tasks),
                metrics: VertexMetrics {
                    read_records: nodes.first().map_or(0, |n| n.records_in),
                    read_records_complete: true,
                    write_records: nodes.last().map_or(0, |n| n.records_out),
                    write_records_complete: true,
                },
                nodes: nodes
                    .iter()
                    .map(|n| NodeView {
                        name: n.name.clone(),
                        read_records: n.records_in,
                        write_records: n.records_out,
                    })
                    .collect(),
            }
        })
        .collect();
    let timestamps = [
        "CREATED",
        "INITIALIZING",
        "RUNNING",
        "CANCELLING",
        "RESTARTING",
        "FINISHED",
        "FAILED",
        "CANCELED",
    ]
    .into_iter()
    .map(|k| (k.to_owned(), j.status_changed.get(k).copied().unwrap_or(0)))
    .collect();
    JobDetail {
        jid: j.id.to_string(),
        application_id: j.id.to_string(),
        name: j.name.clone(),
        is_stoppable: false,
        state: status_name(j.core.status()).into(),
        job_type: "STREAMING".into(),
        scheduler_type: "Default".into(),
        start_time: j.start_time,
        end_time: end_time(j),
        duration: duration(j),
        max_parallelism: i64::from(j.execution.max_parallelism),
        now: now_ms(),
        timestamps,
        vertices,
        status_counts: owned(task_counts(job_tasks(j))),
        pending_operators: 0,
        attempt: j.core.attempt(),
        not_restarted: j.core.not_restarted().map(str::to_owned),
        taskmanagers: j.locations.values().cloned().collect(),
        tenant: j.owner.to_string(),
        waiting_for: j.waiting_for.clone(),
        policy: Some(PolicyAsOf {
            name: j.policy.name.clone(),
            as_of: "submission".into(),
            limits: j.policy.limits.clone(),
            quotas: j.policy.quotas.clone(),
        }),
        links: j
            .linked
            .iter()
            .map(|l| (l.link.clone(), l.jar.clone()))
            .collect(),
    }
}

/// A job's checkpoint settings, in Flink's shape. Flink reports a disabled
/// periodic interval as `Long.MAX_VALUE`; so does this.
pub(crate) fn checkpoints_config(j: &JobEntry) -> CheckpointConfigView {
    let cp = &j.checkpoints;
    let c = cp.coord.config();
    let interval = if c.interval_ms == u64::MAX {
        i64::MAX
    } else {
        c.interval_ms as i64
    };
    CheckpointConfigView {
        mode: match c.mode {
            sluice_coord::CheckpointingMode::ExactlyOnce => "exactly_once",
            sluice_coord::CheckpointingMode::AtLeastOnce => "at_least_once",
        }
        .into(),
        interval,
        timeout: c.timeout_ms,
        min_pause: c.min_pause_ms,
        max_concurrent: c.max_concurrent,
        externalization: Externalization {
            enabled: true,
            delete_on_cancellation: true,
        },
        state_backend: "SluiceKeyedState".into(),
        checkpoint_storage: cp.settings.storage.clone(),
        unaligned_checkpoints: false,
        tolerable_failed_checkpoints: c.tolerable_failures,
        aligned_checkpoint_timeout: 0,
        // A run stops checkpointing once one of its tasks finished.
        checkpoints_after_tasks_finish: false,
        state_changelog_enabled: false,
        retained_checkpoints: c.retained,
    }
}

/// Checkpoint counts, the latest of each kind and the recent history, in
/// Flink's shape.
pub(crate) fn checkpoints(j: &JobEntry) -> CheckpointsView {
    use sluice_coord::{CheckpointKind, CheckpointState, CheckpointStats};
    let cp = &j.checkpoints;
    let total: usize = j
        .execution
        .vertices
        .iter()
        .map(|v| v.parallelism as usize)
        .sum();
    let path = |cid: u64| {
        format!(
            "{}/{}/chk-{cid}",
            cp.settings.storage.trim_end_matches('/'),
            j.id
        )
    };
    // Bytes stored, known while the checkpoint is retained.
    let size = |cid: u64| {
        cp.completed
            .get(&cid)
            .map_or(0, |m| m.tasks.iter().map(|(_, h)| h.bytes).sum::<u64>())
    };
    let entry = |c: &CheckpointStats| {
        let (class, status, failure) = match &c.state {
            CheckpointState::InProgress => ("in_progress", "IN_PROGRESS", None),
            CheckpointState::Completed => ("completed", "COMPLETED", None),
            CheckpointState::Failed(m) => ("failed", "FAILED", Some(m.clone())),
        };
        let savepoint = c.kind == CheckpointKind::Savepoint;
        CheckpointEntry {
            class_name: class.into(),
            id: c.id,
            status: status.into(),
            is_savepoint: savepoint,
            savepoint_format: savepoint.then(|| "CANONICAL".to_owned()),
            trigger_timestamp: c.trigger_timestamp,
            latest_ack_timestamp: c.latest_ack_timestamp.unwrap_or(0),
            end_to_end_duration: c
                .end_timestamp
                .map_or(0, |e| e.saturating_sub(c.trigger_timestamp)),
            num_subtasks: total,
            num_acknowledged_subtasks: c.acknowledged,
            checkpoint_type: if savepoint { "SAVEPOINT" } else { "CHECKPOINT" }.into(),
            external_path: path(c.id),
            discarded: c.state == CheckpointState::Completed && !cp.completed.contains_key(&c.id),
            state_size: size(c.id),
            checkpointed_size: size(c.id),
            failure_timestamp: failure.as_ref().map(|_| c.end_timestamp.unwrap_or(0)),
            failure_message: failure,
        }
    };
    let counts = cp.coord.counts();
    CheckpointsView {
        counts: CheckpointCountsView {
            restored: cp.restores,
            total: counts.triggered,
            in_progress: counts.in_progress,
            completed: counts.completed,
            failed: counts.failed,
        },
        latest: LatestCheckpoints {
            completed: cp.coord.latest_completed().map(entry),
            savepoint: cp.coord.latest_savepoint().map(entry),
            failed: cp.coord.latest_failed().map(entry),
            restored: cp.restored.map(|(cid, at)| RestoredCheckpoint {
                id: cid,
                restore_timestamp: at,
                is_savepoint: false,
                external_path: path(cid),
            }),
        },
        history: cp.coord.history().iter().map(entry).collect(),
    }
}

/// Entries of the exception history shown (Flink's `web.exception-history-size`).
const EXCEPTION_HISTORY: usize = 16;

/// `GET /jobs/:id/exceptions`: each failed run's root cause, newest first,
/// with the failures that followed it in the same run.
pub(crate) fn exceptions(j: &JobEntry) -> Exceptions {
    let task_name = |t: sluice_coord::TaskId| {
        j.execution
            .vertices
            .get(t.vertex as usize)
            .map(|v| format!("{} ({}/{})", v.name, t.subtask + 1, v.parallelism))
    };
    let failures = j.core.failures();
    let entries = failures
        .iter()
        .rev()
        .take(EXCEPTION_HISTORY)
        .map(|f| ExceptionEntry {
            exception_name: "SluiceTaskFailure".into(),
            stacktrace: f.message.clone(),
            timestamp: f.at,
            task_name: f.task.and_then(task_name),
            attempt: f.attempt,
            failure_labels: [("kind".to_owned(), f.kind.name().to_owned())].into(),
            concurrent_exceptions: f
                .concurrent
                .iter()
                .map(|(t, message)| ConcurrentException {
                    exception_name: "SluiceTaskFailure".into(),
                    stacktrace: message.clone(),
                    timestamp: f.at,
                    task_name: task_name(*t),
                })
                .collect(),
        })
        .collect();
    Exceptions {
        exception_history: ExceptionHistory {
            entries,
            truncated: failures.len() > EXCEPTION_HISTORY,
        },
    }
}

/// What is kept of a job once it ended: every view, for the REST API to
/// answer from after the job has left memory.
#[derive(serde::Serialize)]
pub(crate) struct Archive {
    overview: JobOverview,
    detail: JobDetail,
    exceptions: Exceptions,
    checkpoints: CheckpointsView,
    #[serde(rename = "checkpoints-config")]
    checkpoints_config: CheckpointConfigView,
}

/// The archive of a job, as the job-result store keeps it.
pub(crate) fn archive(j: &JobEntry) -> Value {
    serde_json::to_value(Archive {
        overview: overview(j),
        detail: detail(j),
        exceptions: exceptions(j),
        checkpoints: checkpoints(j),
        checkpoints_config: checkpoints_config(j),
    })
    .unwrap_or(Value::Null)
}
