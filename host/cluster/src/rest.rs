//! The REST API, shaped like Flink's v1 API wherever the concept is the
//! same (so Flink's own CLI can list and cancel jobs), served with and
//! without the `/v1` prefix. Errors are `{"errors": [...]}`.
//!
//! Every route but the fallback authenticates first (`authenticate`, the
//! one place a request gets its [`Principal`]) and writes the audit log for
//! what changes state; handlers reach jobs and jars only through
//! `crate::access`, the ownership check.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, Extension, MatchedPath, Multipart, Path, Query, Request, State,
};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::Value;
use sluice_coord::JobStatus;
use sluice_policy::TenantId;
use sluice_policy::auth::Principal;
use sluice_policy::quota::Resource;
use sluice_types::JobId;

use crate::access;
use crate::api::flink::{
    CertificateRemoved, CertificateView, Certificates, ClusterOverview, DashboardConfig,
    DashboardFeatures, Empty, Errors, FailureCause, JarEntryPoint, JarFile, JarList, JobIdStatus,
    JobIds, JobsOverview, OperationStatus, Reloaded, SavepointOutcome, SavepointStatus,
    TaskManagerView, TaskManagers, TenantView, Tenants,
};
use crate::api::{
    CompileUsage, CreateTenant, CreateToken, JobUsage, QuotaUse, RunRequest, RunResponse,
    SavepointRequest, StopRequest, TaskManagerShare, TenantCreated, TokenCreated, TokenRevoked,
    TokenView, Tokens, TriggerResponse, UploadResponse, UsageTotal, UsageView,
};
use crate::jobmanager::{JobManager, SubmitOptions, Upload};
use crate::table::{JobEntry, SubmitError, Tm, now_ms, status_name};
use crate::tenancy::{AuditLine, Refusal, TenantChangeError};
use crate::views;

type Shared = Arc<JobManager>;

/// The largest request body but an upload's.
const MAX_BODY: usize = 16 << 20;

/// The principal a request acts for, set by `authenticate`.
type Caller = Extension<Principal>;

/// An error response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(Errors {
                errors: vec![self.1],
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// Every refusal of the JobManager has one status, whichever handler meets it.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let status = match &e {
            SubmitError::NotFound(_) => StatusCode::NOT_FOUND,
            SubmitError::Invalid(_) => StatusCode::BAD_REQUEST,
            SubmitError::Conflict(_) => StatusCode::CONFLICT,
            SubmitError::Forbidden(_) => StatusCode::FORBIDDEN,
            SubmitError::Quota(q) if q.quota == "max_upload_bytes" => StatusCode::PAYLOAD_TOO_LARGE,
            SubmitError::Quota(q) if q.quota == "max_concurrent_uploads" => {
                StatusCode::TOO_MANY_REQUESTS
            }
            SubmitError::Quota(_) => StatusCode::FORBIDDEN,
            SubmitError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SubmitError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            SubmitError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<TenantChangeError> for ApiError {
    fn from(e: TenantChangeError) -> Self {
        let status = match &e {
            TenantChangeError::Exists(_) => StatusCode::CONFLICT,
            TenantChangeError::UnknownPolicy { .. } | TenantChangeError::BadRoots(_) => {
                StatusCode::BAD_REQUEST
            }
            TenantChangeError::UnknownTenant(_) | TenantChangeError::UnknownToken(_) => {
                StatusCode::NOT_FOUND
            }
            TenantChangeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// What an audited route does, by its route pattern and method.
fn action(method: &Method, route: &str) -> Option<&'static str> {
    let route = route.strip_prefix("/v1").unwrap_or(route);
    Some(match (method.as_str(), route) {
        ("GET" | "HEAD", _) => return None,
        ("POST", "/jars/upload") => "upload",
        ("POST", "/jars/{id}/run") => "run",
        ("DELETE", "/jars/{id}") => "delete-jar",
        ("PATCH", "/jobs/{id}") => "cancel",
        ("POST", "/jobs/{id}/stop") => "stop",
        ("POST", "/jobs/{id}/savepoints") => "savepoint",
        ("POST", "/tenants") => "create-tenant",
        ("POST", "/tenants/reload") => "reload",
        ("POST", "/tokens") => "create-token",
        ("DELETE", "/tokens/{id}") => "revoke-token",
        ("DELETE", "/certificates/{id}") => "remove-certificate",
        _ => "other",
    })
}

/// Establishes who a request acts for, refuses it (401, or 429 after a
/// burst of failures from its address) if no one, and writes the audit
/// log line of everything that changes state and of every refusal.
async fn authenticate(
    State(jm): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    route: MatchedPath,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let object = req.uri().path().to_owned();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let audit =
        |tenant: &str, admin: bool, action: &str, result: StatusCode, reason: Option<String>| {
            jm.tenancy.audit(&AuditLine {
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                tenant,
                admin,
                source: peer.to_string(),
                action,
                object: &object,
                result: result.as_u16(),
                reason,
            });
        };
    let action = action(&method, route.as_str());
    match jm
        .tenancy
        .authenticate(authorization.as_deref(), peer.ip(), now_ms())
    {
        Ok(who) => {
            req.extensions_mut().insert(who.clone());
            let response = next.run(req).await;
            if let Some(action) = action {
                audit(
                    who.tenant.as_str(),
                    who.admin,
                    action,
                    response.status(),
                    None,
                );
            }
            response
        }
        Err(refusal) => {
            // A client that sends its whole body before it reads the answer
            // (an upload without a token) would see a broken connection
            // instead of the refusal: read a little of it first.
            let _ = axum::body::to_bytes(req.into_body(), REFUSED_BODY_DRAIN).await;
            refuse(refusal, peer, &object, action, audit)
        }
    }
}

/// Bytes of a refused request's body read before the answer.
const REFUSED_BODY_DRAIN: usize = 4 << 20;

/// The answer to a request that did not authenticate, audited.
fn refuse(
    refusal: Refusal,
    peer: SocketAddr,
    object: &str,
    action: Option<&str>,
    audit: impl Fn(&str, bool, &str, StatusCode, Option<String>),
) -> Response {
    match refusal {
        Refusal::Unauthenticated(why) => {
            tracing::warn!(%peer, path = %object, "refused a request: {why}");
            audit(
                "unauthenticated",
                false,
                action.unwrap_or("read"),
                StatusCode::UNAUTHORIZED,
                Some(why.to_string()),
            );
            let mut response = ApiError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "Unauthorized: {why}; send `Authorization: Bearer TOKEN` (the `sluice` client \
                     reads --token, SLUICE_TOKEN or the credentials file)"
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
        Refusal::Throttled(wait_ms) => {
            tracing::debug!(%peer, "throttled failed authentication");
            audit(
                "unauthenticated",
                false,
                action.unwrap_or("read"),
                StatusCode::TOO_MANY_REQUESTS,
                Some("throttled".into()),
            );
            let secs = wait_ms.div_ceil(1000).max(1);
            let mut response = ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many failed authentications from {}; retry in {secs}s",
                    peer.ip()
                ),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
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
        .route(
            "/jars/upload",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/jars/{id}", delete(delete_jar))
        .route("/jars/{id}/run", post(run_jar))
        .route("/tenants", get(tenants).post(create_tenant))
        .route("/tenants/reload", post(reload_tenants))
        .route("/tenants/me/usage", get(my_usage))
        .route("/tenants/{name}/usage", get(tenant_usage))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
        .route("/certificates", get(certificates))
        .route("/certificates/{id}", delete(remove_certificate));
    Router::new()
        .merge(api.clone())
        .nest("/v1", api)
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            jm.clone(),
            authenticate,
        ))
        .fallback(fallback)
        // Uploads are limited while they stream, by the tenant's quota.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(jm)
}

async fn fallback(uri: Uri) -> ApiError {
    not_found(format!("Not found: {}", uri.path()))
}

async fn config() -> ApiResult<DashboardConfig> {
    Ok(axum::Json(DashboardConfig {
        refresh_interval: 3000,
        timezone_name: "Coordinated Universal Time".into(),
        timezone_offset: 0,
        flink_version: env!("CARGO_PKG_VERSION").into(),
        flink_revision: concat!("sluice ", env!("CARGO_PKG_VERSION")).into(),
        features: DashboardFeatures {
            web_submit: true,
            web_cancel: true,
            web_rescale: false,
            web_history: false,
        },
    }))
}

/// Prometheus text: the cluster's figures and, per running job, operator
/// and subtask, the record counts the TaskManagers last reported.
async fn metrics(State(jm): State<Shared>, Extension(who): Caller) -> Result<Response, ApiError> {
    {
        let cluster = jm.lock();
        let jobs: Vec<&JobEntry> = access::all_jobs(&cluster, &who)?.collect();
        let capacity = access::capacity(&cluster);
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
            taskmanagers: capacity.taskmanagers,
            slots_total: capacity.slots,
            slots_available: capacity.free,
            jobs: all
                .iter()
                .map(|&s| {
                    let n = jobs.iter().filter(|j| j.core.status() == s).count();
                    (status_name(s), n)
                })
                .collect(),
        });
        for job in jobs {
            if job.core.status().is_terminal() {
                continue;
            }
            for (task, counts) in &job.counts {
                let Some(vertex) = job.execution.vertices.get(task.vertex as usize) else {
                    continue;
                };
                let operators: Vec<String> = vertex.nodes.iter().map(|n| n.name.clone()).collect();
                crate::metrics::publish_job_counts(
                    job.owner.as_str(),
                    &job.id,
                    &job.name,
                    &operators,
                    task.subtask,
                    counts,
                );
            }
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response())
}

async fn overview(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<ClusterOverview> {
    let cluster = jm.lock();
    let capacity = access::capacity(&cluster);
    let count = |s: JobStatus| {
        access::jobs(&cluster, &who)
            .filter(|j| j.core.status() == s)
            .count()
    };
    let running = access::jobs(&cluster, &who)
        .filter(|j| !j.core.status().is_terminal())
        .count();
    Ok(axum::Json(ClusterOverview {
        taskmanagers: capacity.taskmanagers,
        slots_total: capacity.slots,
        slots_available: capacity.free,
        jobs_running: running,
        jobs_finished: count(JobStatus::Finished),
        jobs_cancelled: count(JobStatus::Canceled),
        jobs_failed: count(JobStatus::Failed),
        flink_version: env!("CARGO_PKG_VERSION").into(),
        flink_commit: "sluice".into(),
    }))
}

async fn jobs(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<JobIds> {
    let cluster = jm.lock();
    let jobs = access::jobs(&cluster, &who)
        .map(|j| JobIdStatus {
            id: j.id.to_string(),
            status: status_name(j.core.status()).into(),
        })
        .collect();
    Ok(axum::Json(JobIds { jobs }))
}

async fn jobs_overview(
    State(jm): State<Shared>,
    Extension(who): Caller,
) -> ApiResult<JobsOverview> {
    let cluster = jm.lock();
    let jobs = access::jobs(&cluster, &who)
        .rev()
        .map(views::overview)
        .collect();
    Ok(axum::Json(JobsOverview { jobs }))
}

/// A view of a job: from memory while it is there, then from the archive
/// the job-result store keeps of it (served as it was stored).
fn job_view<T: serde::Serialize>(
    jm: &JobManager,
    who: &Principal,
    id: &str,
    live: fn(&JobEntry) -> T,
    kept: &str,
) -> Result<Response, ApiError> {
    let jid = parse_job_id(id)?;
    if let Ok(j) = access::job(&jm.lock(), who, jid) {
        return Ok(axum::Json(live(j)).into_response());
    }
    jm.archived(who, jid)
        .and_then(|mut a| a.get_mut(kept).map(Value::take))
        .map(|v| axum::Json(v).into_response())
        .ok_or_else(|| access::no_job(jid).into())
}

async fn job_detail(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    job_view(&jm, &who, &id, views::detail, "detail")
}

async fn job_exceptions(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    job_view(&jm, &who, &id, views::exceptions, "exceptions")
}

async fn job_checkpoints(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    job_view(&jm, &who, &id, views::checkpoints, "checkpoints")
}

async fn job_checkpoints_config(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    job_view(
        &jm,
        &who,
        &id,
        views::checkpoints_config,
        "checkpoints-config",
    )
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("Bad request: malformed request body: {e}")))
}

async fn start_savepoint(
    jm: Shared,
    who: Principal,
    id: String,
    req: SavepointRequest,
    stop: bool,
) -> ApiResult<TriggerResponse> {
    let jid = parse_job_id(&id)?;
    let stop = stop || req.cancel_job.unwrap_or(false);
    let jm2 = jm.clone();
    let trigger = tokio::task::spawn_blocking(move || {
        jm2.savepoint(&who, jid, stop, req.target_directory.as_deref())
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(axum::Json(TriggerResponse {
        request_id: trigger,
    }))
}

async fn trigger_savepoint(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<TriggerResponse> {
    let req: SavepointRequest = parse_body(&body)?;
    start_savepoint(jm, who, id, req, false).await
}

async fn stop_job(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<TriggerResponse> {
    let req: StopRequest = parse_body(&body)?;
    let req = SavepointRequest {
        target_directory: req.target_directory,
        cancel_job: Some(true),
    };
    start_savepoint(jm, who, id, req, true).await
}

/// Where a savepoint is, in Flink's asynchronous-operation shape.
async fn savepoint_status(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path((id, trigger)): Path<(String, String)>,
) -> ApiResult<SavepointStatus> {
    let jid = parse_job_id(&id)?;
    let cluster = jm.lock();
    let j = access::job(&cluster, &who, jid)?;
    let op = j.checkpoints.savepoints.get(&trigger).ok_or_else(|| {
        not_found(format!(
            "No savepoint with trigger id {trigger} for job {id}"
        ))
    })?;
    let operation = op.result.as_ref().map(|r| match r {
        Ok(location) => SavepointOutcome {
            location: Some(location.clone()),
            failure_cause: None,
        },
        Err(reason) => SavepointOutcome {
            location: None,
            failure_cause: Some(FailureCause {
                class: "SavepointFailed".into(),
                stack_trace: reason.clone(),
                serialized_throwable: None,
            }),
        },
    });
    let id = if operation.is_some() {
        "COMPLETED"
    } else {
        "IN_PROGRESS"
    };
    Ok(axum::Json(SavepointStatus {
        status: OperationStatus { id: id.into() },
        operation,
    }))
}

#[derive(Deserialize)]
struct PatchQuery {
    mode: Option<String>,
}

async fn job_patch(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
    Query(q): Query<PatchQuery>,
) -> Result<(StatusCode, axum::Json<Empty>), ApiError> {
    let jid = parse_job_id(&id)?;
    match q.mode.as_deref() {
        None | Some("cancel") => {}
        Some(other) => {
            return Err(bad_request(format!(
                "Bad request: cannot resolve query parameter (mode) from value \"{other}\"; the only mode is `cancel`"
            )));
        }
    }
    jm.cancel(&who, jid)?;
    Ok((StatusCode::ACCEPTED, axum::Json(Empty {})))
}

/// A TaskManager in Flink's shape; `jobs` are all jobs (an admin's view).
fn tm_view(jobs: &[&JobEntry], t: &Tm) -> TaskManagerView {
    let used: u32 = jobs
        .iter()
        .map(|j| j.placement.iter().filter(|p| **p == t.id).count() as u32)
        .sum();
    let tasks: usize = jobs
        .iter()
        .filter(|j| matches!(j.core.status(), JobStatus::Running | JobStatus::Cancelling))
        .map(|j| j.locations.values().filter(|l| **l == t.id).count())
        .sum();
    TaskManagerView {
        id: t.id.clone(),
        path: format!("quic://{}", t.addr),
        data_port: t.addr.port(),
        jmx_port: -1,
        time_since_last_heartbeat: t.last_heartbeat.elapsed().as_millis() as u64,
        slots_number: t.slots,
        free_slots: t.slots.saturating_sub(used),
        assigned_tasks: tasks,
        registered: t.registered_at,
        certificate: t.certificate.clone(),
    }
}

async fn taskmanagers(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<TaskManagers> {
    let cluster = jm.lock();
    let jobs: Vec<&JobEntry> = access::all_jobs(&cluster, &who)?.collect();
    let taskmanagers = access::taskmanagers(&cluster, &who)?
        .map(|t| tm_view(&jobs, t))
        .collect();
    Ok(axum::Json(TaskManagers { taskmanagers }))
}

async fn taskmanager(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<TaskManagerView> {
    let cluster = jm.lock();
    let jobs: Vec<&JobEntry> = access::all_jobs(&cluster, &who)?.collect();
    let t = access::taskmanager(&cluster, &who, &id)?;
    Ok(axum::Json(tm_view(&jobs, t)))
}

async fn jars(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<JarList> {
    let address = jm
        .rest_addr
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .map(|a| format!("http://{a}"));
    let cluster = jm.lock();
    let files = access::jars(&cluster, &who)
        .map(|j| JarFile {
            id: j.id.clone(),
            name: j.name.clone(),
            uploaded: j.uploaded,
            size: j.size,
            entry: Vec::<JarEntryPoint>::new(),
            tenant: j.owner.to_string(),
        })
        .collect();
    Ok(axum::Json(JarList { address, files }))
}

/// Bytes of a refused upload still read (and dropped) so that the client,
/// which may still be sending, reads the refusal; past this the connection
/// is closed instead.
const DRAIN_LIMIT: u64 = 64 << 20;

/// Receives an upload as it streams in: counted against the tenant's
/// upload quotas chunk by chunk, so an oversized one is refused (413)
/// without being buffered or kept.
async fn upload(
    State(jm): State<Shared>,
    Extension(who): Caller,
    mut form: Multipart,
) -> ApiResult<UploadResponse> {
    let malformed = |e: axum::extract::multipart::MultipartError| {
        bad_request(format!("Bad request: malformed multipart upload: {e}"))
    };
    let mut stored = None;
    let mut failure = None;
    let mut drained = 0u64;
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let is_file = field.name() == Some("jarfile");
        if is_file && failure.is_none() && stored.is_none() {
            let name = field.file_name().unwrap_or("application.wasm").to_owned();
            match receive(&jm, &who, &mut field).await {
                Ok(upload) => {
                    stored = Some((name, upload));
                    continue;
                }
                Err(e) => failure = Some(e),
            }
        } else if is_file && failure.is_none() {
            failure = Some(bad_request(
                "Bad request: the upload has more than one `jarfile` field",
            ));
        }
        // Read what is left of this field and drop it.
        while let Ok(Some(chunk)) = field.chunk().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                return Err(
                    failure.unwrap_or_else(|| bad_request("Bad request: unexpected fields"))
                );
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let (name, upload) =
        stored.ok_or_else(|| bad_request("Bad request: the upload has no `jarfile` field"))?;
    // Validation reads the upload whole and compiles it: a few at a time,
    // and one at a time per tenant, so that one tenant's compile bombs (each
    // up to the compile time limit) hold at most one of the permits.
    let mine = jm
        .tenant_checks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .entry(who.tenant.to_string())
        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
        .clone();
    let internal =
        |e: tokio::sync::AcquireError| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let _mine = mine.acquire_owned().await.map_err(internal)?;
    let _checking = jm.checks.acquire().await.map_err(internal)?;
    let jm2 = jm.clone();
    let jar = tokio::task::spawn_blocking(move || jm2.finish_upload(upload, &name))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(axum::Json(UploadResponse {
        filename: jm.jars.path(&jar).display().to_string(),
        status: "success".into(),
    }))
}

/// Streams one `jarfile` field to a file of its tenant's, within quota.
async fn receive(
    jm: &Shared,
    who: &Principal,
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<Upload, ApiError> {
    use tokio::io::AsyncWriteExt;
    let mut upload = jm.begin_upload(who)?;
    let internal = |e: std::io::Error| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the upload: {e}"),
        )
    };
    let mut file = tokio::fs::File::create(&upload.path)
        .await
        .map_err(internal)?;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| bad_request(format!("Bad request: the upload was cut short: {e}")))?
    {
        jm.grow_upload(&mut upload, chunk.len() as u64)?;
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    Ok(upload)
}

async fn delete_jar(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<Empty> {
    jm.delete_jar(&who, &id)?;
    Ok(axum::Json(Empty {}))
}

async fn run_jar(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<RunResponse> {
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
    sluice_runtime::check_link_count(req.links.len())
        .map_err(|e| bad_request(format!("Bad request: {e}")))?;
    for name in req.links.keys() {
        sluice_runtime::check_link_name(name)
            .map_err(|e| bad_request(format!("Bad request: {e}")))?;
    }
    let options = SubmitOptions {
        links: req.links.into_iter().collect(),
        checkpoint_interval: req.checkpoint_interval.map(Duration::from_millis),
        savepoint_path: req.savepoint_path.filter(|p| !p.is_empty()),
        allow_non_restored_state: req.allow_non_restored_state.unwrap_or(false),
    };
    let jm2 = jm.clone();
    let result =
        tokio::task::spawn_blocking(move || jm2.submit(&who, &id, &args, parallelism, options))
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(axum::Json(RunResponse {
        jobid: result?.to_string(),
    }))
}

/// `GET /tenants` (admin): every tenant with its policy and usage.
async fn tenants(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<Tenants> {
    access::admin(&who)?;
    let tenants = jm
        .tenancy
        .tenants()
        .into_iter()
        .map(|t| TenantView {
            usage: jm.lock().ledger.usage(&t.name),
            name: t.name.to_string(),
            display_name: t.display_name,
            policy: t.policy,
            file_roots: t.file_roots,
        })
        .collect();
    Ok(axum::Json(Tenants { tenants }))
}

/// `POST /tenants` (admin): writes a tenant file and loads it.
async fn create_tenant(
    State(jm): State<Shared>,
    Extension(who): Caller,
    body: axum::body::Bytes,
) -> ApiResult<TenantCreated> {
    access::admin(&who)?;
    let req: CreateTenant = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("Bad request: malformed request body: {e}")))?;
    let name = TenantId::new(&req.name).map_err(|e| bad_request(format!("Bad request: {e}")))?;
    jm.tenancy
        .create_tenant(&name, &req.policy, &req.display_name, &req.file_roots)?;
    tracing::info!(tenant = %name, policy = %req.policy, "tenant created");
    Ok(axum::Json(TenantCreated {
        name: name.to_string(),
        policy: req.policy,
    }))
}

/// `POST /tenants/reload` (admin): reads the tenant and policy files again.
async fn reload_tenants(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<Reloaded> {
    access::admin(&who)?;
    let (tenants, policies) = jm.reload_tenants("REST").map_err(|e| {
        bad_request(format!(
            "Bad request: not reloaded, the previous configuration stays: {e}"
        ))
    })?;
    Ok(axum::Json(Reloaded { tenants, policies }))
}

/// A tenant's quotas with use and limit, and its jobs' figures.
fn usage_view(jm: &JobManager, tenant: &TenantId) -> Result<UsageView, ApiError> {
    let policy = jm.policy_of(tenant)?;
    let cluster = jm.lock();
    let usage = cluster.ledger.usage(tenant);
    let quotas = Resource::ALL
        .iter()
        .map(|r| QuotaUse {
            quota: r.quota_name().to_owned(),
            used: r.of(&usage),
            limit: r.limit(&policy.quotas),
        })
        .collect();
    let owner = Principal {
        tenant: tenant.clone(),
        admin: false,
        token_id: None,
    };
    let mut total = cluster.billed.get(tenant).copied().unwrap_or_default();
    let jobs = access::jobs(&cluster, &owner)
        .map(|j| {
            let spent = j.spent();
            total += spent;
            JobUsage {
                jid: j.id.to_string(),
                name: crate::truncate(&j.name, 200).into_owned(),
                state: status_name(j.core.status()).to_owned(),
                records_in: spent.records_in,
                records_out: spent.records_out,
                fuel: spent.fuel,
                cpu_seconds: spent.cpu_ns as f64 / 1e9,
                checkpoint_bytes: j.checkpoints.last_size(),
            }
        })
        .collect();
    let taskmanagers = cluster
        .tms
        .values()
        .flat_map(|tm| {
            tm.shares
                .iter()
                .filter(|s| s.tenant == tenant.as_str())
                .map(|s| TaskManagerShare {
                    taskmanager: tm.id.clone(),
                    cpu_shares: s.cpu_shares,
                    cpu_cores_limit: s.cpu_cores_limit,
                    entitled_cores: s.entitled_cores,
                    cpu_seconds: s.cpu_ns as f64 / 1e9,
                    wait_seconds: s.wait_ns as f64 / 1e9,
                    throttled_seconds: s.throttled_ns as f64 / 1e9,
                    instances: s.instances,
                    instances_limit: s.instances_limit,
                    memory_bytes: s.memory_bytes,
                    memory_limit_bytes: s.memory_limit_bytes,
                    compilations: s.compilations,
                    compile_cpu_seconds: s.compile_cpu_ns as f64 / 1e9,
                })
        })
        .collect();
    let compiled = jm.compiles.of(tenant.as_str());
    Ok(UsageView {
        compile: CompileUsage {
            compilations: compiled.compilations,
            refused: compiled.refused,
            cpu_seconds: compiled.cpu_ns as f64 / 1e9,
        },
        tenant: tenant.to_string(),
        policy: policy.name,
        quotas,
        jobs,
        taskmanagers,
        // Every job the job-result store records, ended ones included.
        total: UsageTotal {
            records_in: total.records_in,
            records_out: total.records_out,
            fuel: total.fuel,
            cpu_seconds: total.cpu_ns as f64 / 1e9,
            checkpoint_bytes: usage.checkpoint_bytes,
        },
    })
}

/// `GET /tenants/me/usage`.
async fn my_usage(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<UsageView> {
    usage_view(&jm, &who.tenant).map(axum::Json)
}

/// `GET /tenants/:name/usage`: an admin's, or the tenant's own.
async fn tenant_usage(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(name): Path<String>,
) -> ApiResult<UsageView> {
    if who.tenant.as_str() != name {
        access::admin(&who)?;
    }
    let tenant = TenantId::new(&name)
        .ok()
        .filter(|t| jm.tenancy.tenant(t).is_some())
        .ok_or_else(|| not_found(format!("there is no tenant `{name}`")))?;
    usage_view(&jm, &tenant).map(axum::Json)
}

/// `GET /tokens` (admin): every API and join token, without secrets.
async fn tokens(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<Tokens> {
    access::admin(&who)?;
    let mut tokens = jm.tenancy.token_views();
    tokens.extend(jm.join_tokens().iter().map(TokenView::from));
    Ok(axum::Json(Tokens { tokens }))
}

/// `POST /tokens` (admin): a new token, its secret shown only in this answer.
async fn create_token(
    State(jm): State<Shared>,
    Extension(who): Caller,
    body: axum::body::Bytes,
) -> ApiResult<TokenCreated> {
    access::admin(&who)?;
    let req: CreateToken = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("Bad request: malformed request body: {e}")))?;
    if req.taskmanager {
        if req.tenant.is_some() || req.admin {
            return Err(bad_request(
                "Bad request: a TaskManager join token has no tenant and no admin rights",
            ));
        }
        let ttl = req.ttl_seconds.map(Duration::from_secs);
        let (token, record) = jm.create_join_token(ttl)?;
        return Ok(axum::Json(TokenCreated {
            token,
            record: TokenView::from(&record),
        }));
    }
    let tenant = req.tenant.as_deref().ok_or_else(|| {
        bad_request("Bad request: name the `tenant` the token acts for (or `taskmanager: true`)")
    })?;
    let tenant = TenantId::new(tenant).map_err(|e| bad_request(format!("Bad request: {e}")))?;
    let ttl = req.ttl_seconds.map(|s| s.saturating_mul(1000));
    let (token, view) = jm.tenancy.create_token(&tenant, req.admin, ttl, now_ms())?;
    tracing::info!(tenant = %tenant, token = %view.id, admin = req.admin, "token created");
    Ok(axum::Json(TokenCreated {
        token,
        record: view,
    }))
}

/// `DELETE /tokens/:id` (admin).
async fn revoke_token(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<TokenRevoked> {
    access::admin(&who)?;
    let record = if id.starts_with("tm-") {
        TokenView::from(&jm.revoke_join_token(&id)?)
    } else {
        let view = jm.tenancy.revoke_token(&id, now_ms())?;
        tracing::info!(token = %id, "token revoked");
        view
    };
    Ok(axum::Json(TokenRevoked { record }))
}

/// `GET /certificates` (admin): every TaskManager certificate issued.
async fn certificates(State(jm): State<Shared>, Extension(who): Caller) -> ApiResult<Certificates> {
    access::admin(&who)?;
    let certificates = jm
        .certificates()
        .iter()
        .map(CertificateView::from)
        .collect();
    Ok(axum::Json(Certificates { certificates }))
}

/// `DELETE /certificates/:id` (admin): the TaskManager holding it is
/// disconnected and refused from then on.
async fn remove_certificate(
    State(jm): State<Shared>,
    Extension(who): Caller,
    Path(id): Path<String>,
) -> ApiResult<CertificateRemoved> {
    access::admin(&who)?;
    let record = CertificateView::from(&jm.remove_certificate(&id)?);
    Ok(axum::Json(CertificateRemoved { record }))
}
