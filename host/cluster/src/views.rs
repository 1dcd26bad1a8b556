//! The JSON views of a job the REST API serves, in Flink's shapes: pure
//! functions of a job's entry, so that what the API answers for a live job
//! is also what is archived in the job-result store when it ends.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_coord::TaskStatus;

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
pub(crate) fn overview(j: &JobEntry) -> Value {
    let mut tasks: BTreeMap<String, u32> = task_counts(job_tasks(j))
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    tasks.insert("total".into(), j.execution.tasks().count() as u32);
    json!({
        "jid": j.id.to_string(),
        "name": j.name,
        "jobType": "STREAMING",
        "schedulerType": "Default",
        "start-time": j.start_time,
        "end-time": end_time(j),
        "duration": duration(j),
        "state": status_name(j.core.status()),
        "last-modification": j.status_changed.values().max().copied().unwrap_or(j.start_time),
        "tasks": tasks,
        "pending-operators": 0,
        // Not in Flink's shape: the tenant that owns the job.
        "tenant": j.owner.as_str(),
        // While the run waits for slots: what for.
        "waiting-for": j.waiting_for,
    })
}

/// `GET /jobs/:id`.
pub(crate) fn detail(j: &JobEntry) -> Value {
    let counts = j.node_counts();
    let mut node_index = 0;
    let vertices: Vec<Value> = j
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
            json!({
                "id": format!("{:032x}", vi),
                "name": v.name,
                "maxParallelism": j.execution.max_parallelism,
                "parallelism": v.parallelism,
                "status": status,
                "start-time": j.start_time,
                "end-time": end_time(j),
                "duration": duration(j),
                "tasks": tasks,
                "metrics": {
                    "read-records": nodes.first().map_or(0, |n| n.records_in),
                    "read-records-complete": true,
                    "write-records": nodes.last().map_or(0, |n| n.records_out),
                    "write-records-complete": true,
                },
                "nodes": nodes.iter().map(|n| json!({
                    "name": n.name, "read-records": n.records_in, "write-records": n.records_out,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let timestamps: BTreeMap<&str, u64> = [
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
    .map(|k| (k, j.status_changed.get(k).copied().unwrap_or(0)))
    .collect();
    let status_counts = task_counts(job_tasks(j));
    json!({
        "jid": j.id.to_string(),
        "name": j.name,
        "isStoppable": false,
        "state": status_name(j.core.status()),
        "job-type": "STREAMING",
        "start-time": j.start_time,
        "end-time": end_time(j),
        "duration": duration(j),
        "maxParallelism": j.execution.max_parallelism,
        "now": now_ms(),
        "timestamps": timestamps,
        "vertices": vertices,
        "status-counts": status_counts,
        "attempt": j.core.attempt(),
        // Why a failed job was not restarted (not in Flink's shape).
        "not-restarted": j.core.not_restarted(),
        // Where the current (or last) run's tasks are or were.
        "taskmanagers": j.locations.values().collect::<std::collections::BTreeSet<_>>(),
        "tenant": j.owner.as_str(),
        // While the run waits for slots: what for.
        "waiting-for": j.waiting_for,
        // The policy as it was at submission: a reload changes new jobs only.
        "policy": {
            "name": j.policy.name,
            "as-of": "submission",
            "limits": j.policy.limits,
            "quotas": j.policy.quotas,
        },
    })
}

/// A job's checkpoint settings, in Flink's shape. Flink reports a disabled
/// periodic interval as `Long.MAX_VALUE`; so does this.
pub(crate) fn checkpoints_config(j: &JobEntry) -> Value {
    let cp = &j.checkpoints;
    let c = cp.coord.config();
    let interval = if c.interval_ms == u64::MAX {
        i64::MAX
    } else {
        c.interval_ms as i64
    };
    json!({
        "mode": match c.mode {
            sluice_coord::CheckpointingMode::ExactlyOnce => "exactly_once",
            sluice_coord::CheckpointingMode::AtLeastOnce => "at_least_once",
        },
        "interval": interval,
        "timeout": c.timeout_ms,
        "min_pause": c.min_pause_ms,
        "max_concurrent": c.max_concurrent,
        "externalization": {"enabled": true, "delete_on_cancellation": true},
        "checkpoint_storage": cp.settings.storage,
        "unaligned_checkpoints": false,
        "tolerable_failed_checkpoints": c.tolerable_failures,
        "retained_checkpoints": c.retained,
    })
}

/// Checkpoint counts, the latest of each kind and the recent history, in
/// Flink's shape.
pub(crate) fn checkpoints(j: &JobEntry) -> Value {
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
        let mut e = json!({
            "className": class,
            "id": c.id,
            "status": status,
            "is_savepoint": savepoint,
            "trigger_timestamp": c.trigger_timestamp,
            "latest_ack_timestamp": c.latest_ack_timestamp.unwrap_or(0),
            "end_to_end_duration": c.end_timestamp.map_or(0, |e| e.saturating_sub(c.trigger_timestamp)),
            "num_subtasks": total,
            "num_acknowledged_subtasks": c.acknowledged,
            "checkpoint_type": if savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
            "external_path": path(c.id),
            "discarded": c.state == CheckpointState::Completed && !cp.completed.contains_key(&c.id),
            "state_size": size(c.id),
            "checkpointed_size": size(c.id),
        });
        if let Some(m) = failure {
            e["failure_message"] = json!(m);
            e["failure_timestamp"] = json!(c.end_timestamp.unwrap_or(0));
        }
        e
    };
    let counts = cp.coord.counts();
    let history: Vec<Value> = cp.coord.history().iter().map(entry).collect();
    json!({
        "counts": {
            "restored": cp.restores,
            "total": counts.triggered,
            "in_progress": counts.in_progress,
            "completed": counts.completed,
            "failed": counts.failed,
        },
        "latest": {
            "completed": cp.coord.latest_completed().map(entry),
            "savepoint": cp.coord.latest_savepoint().map(entry),
            "failed": cp.coord.latest_failed().map(entry),
            "restored": cp.restored.map(|(cid, at)| json!({
                "id": cid,
                "restore_timestamp": at,
                "is_savepoint": false,
                "external_path": path(cid),
            })),
        },
        "history": history,
    })
}

/// Entries of the exception history shown (Flink's `web.exception-history-size`).
const EXCEPTION_HISTORY: usize = 16;

/// `GET /jobs/:id/exceptions`: each failed run's root cause, newest first,
/// with the failures that followed it in the same run.
pub(crate) fn exceptions(j: &JobEntry) -> Value {
    let task_name = |t: sluice_coord::TaskId| {
        j.execution
            .vertices
            .get(t.vertex as usize)
            .map(|v| format!("{} ({}/{})", v.name, t.subtask + 1, v.parallelism))
    };
    let failures = j.core.failures();
    let entries: Vec<Value> = failures
        .iter()
        .rev()
        .take(EXCEPTION_HISTORY)
        .map(|f| {
            let concurrent: Vec<Value> = f
                .concurrent
                .iter()
                .map(|(t, message)| {
                    json!({
                        "exceptionName": "SluiceTaskFailure",
                        "stacktrace": message,
                        "timestamp": f.at,
                        "taskName": task_name(*t),
                    })
                })
                .collect();
            json!({
                "exceptionName": "SluiceTaskFailure",
                "stacktrace": f.message,
                "timestamp": f.at,
                "taskName": f.task.and_then(task_name),
                "attempt": f.attempt,
                "failureLabels": {"kind": f.kind.name()},
                "concurrentExceptions": concurrent,
            })
        })
        .collect();
    json!({
        "exceptionHistory": {
            "entries": entries,
            "truncated": failures.len() > EXCEPTION_HISTORY,
        }
    })
}

/// What is kept of a job once it ended: every view, for the REST API to
/// answer from after the job has left memory.
pub(crate) fn archive(j: &JobEntry) -> Value {
    json!({
        "overview": overview(j),
        "detail": detail(j),
        "exceptions": exceptions(j),
        "checkpoints": checkpoints(j),
        "checkpoints-config": checkpoints_config(j),
    })
}
