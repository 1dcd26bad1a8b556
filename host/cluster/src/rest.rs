//! The REST API, shaped like Flink's v1 API wherever the concept is the
//! same (so Flink's own CLI can list and cancel jobs), served with and
//! without the `/v1` prefix. Errors are `{"errors": [...]}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_coord::JobStatus;
use sluice_types::JobId;

use crate::jobmanager::{JobEntry, JobManager, SubmitError, SubmitOptions, status_name};
use crate::views;

type Shared = Arc<JobManager>;

/// The largest upload accepted.
const MAX_UPLOAD: usize = 256 << 20;

/// An error response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "errors": [self.1] }))).into_response()
    }
}

type ApiResult<T = Value> = Result<axum::Json<T>, ApiError>;

/// Every refusal of the JobManager has one status, whichever handler meets it.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let status = match &e {
            SubmitError::NotFound(_) => StatusCode::NOT_FOUND,
            SubmitError::Invalid(_) => StatusCode::BAD_REQUEST,
            SubmitError::Conflict(_) => StatusCode::CONFLICT,
            SubmitError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

fn parse_job_id(s: &str) -> Result<JobId, ApiError> {
    s.parse().map_err(|_| {
        bad_request(format!(
            "Bad request: `{s}` is not a job id (expected 32 lowercase hex characters)"
        ))
    })
}

/// The router: every route with and without `/v1`.
pub(crate) fn router(jm: Shared) -> Router {
    let api = Router::new()
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/jobs", get(jobs))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job_detail).patch(job_patch))
        .route("/jobs/{id}/exceptions", get(job_exceptions))
        .route("/jobs/{id}/checkpoints", get(job_checkpoints))
        .route("/jobs/{id}/checkpoints/config", get(job_checkpoints_config))
        .route("/jobs/{id}/savepoints", post(trigger_savepoint))
        .route("/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .route("/jobs/{id}/stop", post(stop_job))
        .route("/taskmanagers", get(taskmanagers))
        .route("/taskmanagers/{id}", get(taskmanager))
        .route("/jars", get(jars))
        .route("/jars/upload", post(upload))
        .route("/jars/{id}", axum::routing::delete(delete_jar))
        .route("/jars/{id}/run", post(run_jar));
    Router::new()
        .merge(api.clone())
        .nest("/v1", api)
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(jm)
}

async fn fallback(uri: Uri) -> ApiError {
    not_found(format!("Not found: {}", uri.path()))
}

async fn config() -> ApiResult {
    Ok(axum::Json(json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-revision": concat!("sluice ", env!("CARGO_PKG_VERSION")),
        "features": {"web-submit": true, "web-cancel": true, "web-rescale": false, "web-history": false}
    })))
}

/// Prometheus text: the cluster's figures and, per running job, operator
/// and subtask, the record counts the TaskManagers last reported.
async fn metrics(State(jm): State<Shared>) -> impl IntoResponse {
    {
        let cluster = jm.lock();
        let total: u32 = cluster.tms.values().map(|t| t.slots).sum();
        let used: u32 = cluster
            .jobs
            .values()
            .map(|j| j.placement.len() as u32)
            .sum();
        let all = [
            JobStatus::Created,
            JobStatus::Running,
            JobStatus::Cancelling,
            JobStatus::Restarting,
            JobStatus::Finished,
            JobStatus::Failed,
            JobStatus::Canceled,
        ];
        crate::metrics::publish_cluster(&crate::metrics::ClusterFigures {
            taskmanagers: cluster.tms.len(),
            slots_total: total,
            slots_available: total.saturating_sub(used),
            jobs: all
                .iter()
                .map(|&s| {
                    let n = cluster
                        .jobs
                        .values()
                        .filter(|j| j.core.status() == s)
                        .count();
                    (status_name(s), n)
                })
                .collect(),
        });
        for job in cluster.jobs.values() {
            if job.core.status().is_terminal() {
                continue;
            }
            for (task, counts) in &job.counts {
                let Some(vertex) = job.execution.vertices.get(task.vertex as usize) else {
                    continue;
                };
                let operators: Vec<String> = vertex.nodes.iter().map(|n| n.name.clone()).collect();
                crate::metrics::publish_job_counts(
                    &job.id,
                    &job.name,
                    &operators,
                    task.subtask,
                    counts,
                );
            }
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

async fn overview(State(jm): State<Shared>) -> ApiResult {
    let cluster = jm.lock();
    let total: u32 = cluster.tms.values().map(|t| t.slots).sum();
    let used: u32 = cluster
        .jobs
        .values()
        .map(|j| j.placement.len() as u32)
        .sum();
    let count = |s: JobStatus| {
        cluster
            .jobs
            .values()
            .filter(|j| j.core.status() == s)
            .count()
    };
    let running = cluster
        .jobs
        .values()
        .filter(|j| !j.core.status().is_terminal())
        .count();
    Ok(axum::Json(json!({
        "taskmanagers": cluster.tms.len(),
        "slots-total": total,
        "slots-available": total.saturating_sub(used),
        "jobs-running": running,
        "jobs-finished": count(JobStatus::Finished),
        "jobs-cancelled": count(JobStatus::Canceled),
        "jobs-failed": count(JobStatus::Failed),
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-commit": "sluice",
    })))
}

async fn jobs(State(jm): State<Shared>) -> ApiResult {
    let cluster = jm.lock();
    let jobs: Vec<Value> = cluster
        .jobs
        .values()
        .map(|j| json!({"id": j.id.to_string(), "status": status_name(j.core.status())}))
        .collect();
    Ok(axum::Json(json!({ "jobs": jobs })))
}

async fn jobs_overview(State(jm): State<Shared>) -> ApiResult {
    let cluster = jm.lock();
    let jobs: Vec<Value> = cluster.jobs.values().rev().map(views::overview).collect();
    Ok(axum::Json(json!({ "jobs": jobs })))
}

fn find_job<'a>(
    cluster: &'a crate::jobmanager::Cluster,
    id: &str,
) -> Result<&'a JobEntry, ApiError> {
    let jid = parse_job_id(id)?;
    cluster
        .jobs
        .get(&jid)
        .ok_or_else(|| not_found(format!("Job {jid} not found")))
}

/// A view of a job: from memory while it is there, then from the archive
/// the job-result store keeps of it.
fn job_view(jm: &JobManager, id: &str, live: fn(&JobEntry) -> Value, kept: &str) -> ApiResult {
    let jid = parse_job_id(id)?;
    if let Some(j) = jm.lock().jobs.get(&jid) {
        return Ok(axum::Json(live(j)));
    }
    jm.archived(jid)
        .and_then(|mut a| a.get_mut(kept).map(Value::take))
        .map(axum::Json)
        .ok_or_else(|| not_found(format!("Job {jid} not found")))
}

async fn job_detail(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    job_view(&jm, &id, views::detail, "detail")
}

async fn job_exceptions(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    job_view(&jm, &id, views::exceptions, "exceptions")
}

async fn job_checkpoints(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    job_view(&jm, &id, views::checkpoints, "checkpoints")
}

async fn job_checkpoints_config(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    job_view(&jm, &id, views::checkpoints_config, "checkpoints-config")
}

#[derive(Deserialize, Default)]
struct SavepointRequest {
    #[serde(rename = "target-directory", alias = "targetDirectory")]
    target_directory: Option<String>,
    #[serde(rename = "cancel-job")]
    cancel_job: Option<bool>,
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("Bad request: malformed request body: {e}")))
}

async fn start_savepoint(jm: Shared, id: String, req: SavepointRequest, stop: bool) -> ApiResult {
    let jid = parse_job_id(&id)?;
    if let Some(dir) = req.target_directory.filter(|d| !d.is_empty()) {
        let storage = jm
            .config
            .checkpoint_storage
            .trim_end_matches('/')
            .to_owned();
        if !dir.trim_end_matches('/').starts_with(&storage) {
            return Err(bad_request(format!(
                "Bad request: savepoints are written to the cluster's checkpoint storage \
                 ({storage}), not to `{dir}`; choose it with `sluice jobmanager --checkpoint-dir`"
            )));
        }
    }
    let stop = stop || req.cancel_job.unwrap_or(false);
    let jm2 = jm.clone();
    let trigger = tokio::task::spawn_blocking(move || jm2.savepoint(jid, stop))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(axum::Json(json!({"request-id": trigger})))
}

async fn trigger_savepoint(
    State(jm): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: SavepointRequest = parse_body(&body)?;
    start_savepoint(jm, id, req, false).await
}

#[derive(Deserialize, Default)]
struct StopRequest {
    #[serde(rename = "targetDirectory")]
    target_directory: Option<String>,
}

async fn stop_job(
    State(jm): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: StopRequest = parse_body(&body)?;
    let req = SavepointRequest {
        target_directory: req.target_directory,
        cancel_job: Some(true),
    };
    start_savepoint(jm, id, req, true).await
}

/// Where a savepoint is, in Flink's asynchronous-operation shape.
async fn savepoint_status(
    State(jm): State<Shared>,
    Path((id, trigger)): Path<(String, String)>,
) -> ApiResult {
    let cluster = jm.lock();
    let j = find_job(&cluster, &id)?;
    let op = j.checkpoints.savepoints.get(&trigger).ok_or_else(|| {
        not_found(format!(
            "No savepoint with trigger id {trigger} for job {id}"
        ))
    })?;
    Ok(axum::Json(match &op.result {
        None => json!({"status": {"id": "IN_PROGRESS"}, "operation": null}),
        Some(Ok(location)) => {
            json!({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
        }
        Some(Err(reason)) => json!({
            "status": {"id": "COMPLETED"},
            "operation": {"failure-cause": {"class": "SavepointFailed", "stack-trace": reason, "serialized-throwable": null}},
        }),
    }))
}

#[derive(Deserialize)]
struct PatchQuery {
    mode: Option<String>,
}

async fn job_patch(
    State(jm): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<PatchQuery>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let jid = parse_job_id(&id)?;
    match q.mode.as_deref() {
        None | Some("cancel") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "Bad request: cannot resolve query parameter (mode) from value \"{other}\"; the only mode is `cancel`"
            )));
        }
    }
    jm.cancel(jid)?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({}))))
}

fn tm_json(cluster: &crate::jobmanager::Cluster, t: &crate::jobmanager::Tm) -> Value {
    let used: u32 = cluster
        .jobs
        .values()
        .map(|j| j.placement.iter().filter(|p| **p == t.id).count() as u32)
        .sum();
    let tasks: usize = cluster
        .jobs
        .values()
        .filter(|j| matches!(j.core.status(), JobStatus::Running | JobStatus::Cancelling))
        .map(|j| j.locations.values().filter(|l| **l == t.id).count())
        .sum();
    json!({
        "id": t.id,
        "path": format!("quic://{}", t.addr),
        "dataPort": t.addr.port(),
        "jmxPort": -1,
        "timeSinceLastHeartbeat": t.last_heartbeat.elapsed().as_millis() as u64,
        "slotsNumber": t.slots,
        "freeSlots": t.slots.saturating_sub(used),
        "assignedTasks": tasks,
        "registered": t.registered_at,
    })
}

async fn taskmanagers(State(jm): State<Shared>) -> ApiResult {
    let cluster = jm.lock();
    let tms: Vec<Value> = cluster.tms.values().map(|t| tm_json(&cluster, t)).collect();
    Ok(axum::Json(json!({ "taskmanagers": tms })))
}

async fn taskmanager(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let cluster = jm.lock();
    let t = cluster
        .tms
        .get(&id)
        .ok_or_else(|| not_found(format!("TaskManager {id} not found")))?;
    Ok(axum::Json(tm_json(&cluster, t)))
}

async fn jars(State(jm): State<Shared>) -> ApiResult {
    let address = jm
        .rest_addr
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .map(|a| format!("http://{a}"));
    let cluster = jm.lock();
    let files: Vec<Value> = cluster
        .jars
        .values()
        .map(|j| json!({"id": j.id, "name": j.name, "uploaded": j.uploaded, "size": j.size, "entry": []}))
        .collect();
    Ok(axum::Json(json!({"address": address, "files": files})))
}

async fn upload(State(jm): State<Shared>, mut form: Multipart) -> ApiResult {
    let mut file = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad_request(format!("Bad request: malformed multipart upload: {e}")))?
    {
        if field.name() == Some("jarfile") {
            let name = field.file_name().unwrap_or("application.wasm").to_owned();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| bad_request(format!("Bad request: the upload was cut short: {e}")))?;
            file = Some((name, bytes));
        }
    }
    let (name, bytes) =
        file.ok_or_else(|| bad_request("Bad request: the upload has no `jarfile` field"))?;
    let jm2 = jm.clone();
    let jar = tokio::task::spawn_blocking(move || jm2.upload(&name, &bytes))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(bad_request)?;
    Ok(axum::Json(json!({
        "filename": jm.jar_dir().join(&jar.id).display().to_string(),
        "status": "success",
    })))
}

async fn delete_jar(State(jm): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let removed = jm.lock().jars.remove(&crate::jobmanager::jar_key(&id));
    let Some(jar) = removed else {
        return Err(not_found(format!("File {id} does not exist")));
    };
    let dir = jm.jar_dir();
    for f in [jar.id.clone(), format!("{}.json", jar.id)] {
        if let Err(e) = std::fs::remove_file(dir.join(&f))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot delete {f}: {e}"),
            ));
        }
    }
    Ok(axum::Json(json!({})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RunRequest {
    parallelism: Option<u32>,
    program_args_list: Option<Vec<String>>,
    /// Milliseconds between checkpoints; 0 turns them off for this job.
    checkpoint_interval: Option<u64>,
    /// A savepoint to start from.
    savepoint_path: Option<String>,
    /// Start even if the savepoint holds state the job has no place for.
    allow_non_restored_state: Option<bool>,
}

async fn run_jar(
    State(jm): State<Shared>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let req: RunRequest = parse_body(&body)?;
    let parallelism = req.parallelism.unwrap_or(1);
    if parallelism == 0 {
        return Err(bad_request("Bad request: parallelism must be at least 1"));
    }
    let args = req
        .program_args_list
        .unwrap_or_default()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(bad_request(format!(
                "Bad request: program argument `{a}` is not KEY=VALUE"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = SubmitOptions {
        checkpoint_interval: req.checkpoint_interval.map(Duration::from_millis),
        savepoint_path: req.savepoint_path.filter(|p| !p.is_empty()),
        allow_non_restored_state: req.allow_non_restored_state.unwrap_or(false),
    };
    let jm2 = jm.clone();
    let result = tokio::task::spawn_blocking(move || jm2.submit(&id, &args, parallelism, options))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(json!({"jobid": result?.to_string()})))
}
