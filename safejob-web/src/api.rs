//! The JSON API: thin handlers over the operations of `ops.rs`, each described for the OpenAPI
//! document ([`ApiDoc`]).

use axum::{
    Json,
    extract::{FromRequestParts, Path, Query, State},
    http::request::Parts,
};
use serde::{Deserialize, de::DeserializeOwned};
use utoipa::{IntoParams, OpenApi};

pub use crate::ops::HEALTHY_WITHIN_SECS;
use crate::{
    dto::{
        ActionView, BatchDetail, BatchView, Counted, Done, JobDetail, JobPage, KeyPage, KeyView,
        Overview, ScheduleView, WorkerView,
    },
    error::{ApiError, ErrorBody},
    ops::{self, run},
    state::WebState,
};

/// Query parameters, with a refusal in the API's JSON error shape (`bad_query`).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| ApiError::BadQuery(e.body_text()))
    }
}

/// Path parameters, with a refusal in the API's JSON error shape (`bad_path`).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| Self(p))
            .map_err(|e| ApiError::BadPath(e.body_text()))
    }
}

/// Filters and paging of a job listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsParams {
    /// Only this state (`pending`, `scheduled`, `blocked`, `running`, `retrying`, `succeeded`,
    /// `dead`, `cancelled`, `parked`).
    pub state: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only ids after this one (the previous page's `next_after`).
    pub after: Option<i64>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u64>,
}

/// Which jobs an action on many applies to.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilterParams {
    /// Only this state (default: dead).
    pub state: Option<String>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
}

/// Filters and paging of a key listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeysParams {
    /// `in_doubt` (default), `expired`, `all`, or a state (`running`, `released`, `succeeded`,
    /// `failed`).
    pub filter: Option<String>,
    /// Only digests after this one (hex; the previous page's `next_after`).
    pub after: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u64>,
}

/// Filters of a batch listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchesParams {
    /// Only this state (`running`, `succeeded`, `failed`, `cancelled`).
    pub state: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u64>,
}

/// Filters of an action listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActionsParams {
    /// Only this state (`pending`, `processed`, `skipped`, `parked`).
    pub state: Option<String>,
    /// Only this action type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub action_type: Option<String>,
    /// At most this many (1 to 500, default 50).
    pub limit: Option<u64>,
}

/// The queue at a glance: running jobs, kinds with their figures, counts by state, kind and
/// queue, the newest jobs and the workers.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, body = Overview), (status = "4XX", body = ErrorBody)))]
pub async fn overview(State(s): State<WebState>) -> Result<Json<Overview>, ApiError> {
    run(move || ops::overview(&s)).await.map(Json)
}

/// Jobs by id, filtered and paged.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(JobsParams),
    responses((status = 200, body = JobPage), (status = "4XX", body = ErrorBody)))]
pub async fn list_jobs(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> Result<Json<JobPage>, ApiError> {
    let filter = ops::filter(p.state, p.queue, p.kind)?;
    let limit = ops::limit(p.limit)?;
    run(move || ops::jobs(&s, filter, p.after, limit))
        .await
        .map(Json)
}

/// One job with its errors and history.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobDetail), (status = "4XX", body = ErrorBody)))]
pub async fn get_job(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<JobDetail>, ApiError> {
    run(move || ops::job(&s, id)).await.map(Json)
}

/// Makes a dead, cancelled or parked job pending again.
#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn retry_job(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::retry_job(&s, id)).await.map(Json)
}

/// Cancels a job that is not running.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn cancel_job(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::cancel_job(&s, id)).await.map(Json)
}

/// Deletes finished jobs matching the filter (dead ones when no state is given).
#[utoipa::path(post, path = "/api/jobs/purge", tag = "jobs", params(FilterParams),
    responses((status = 200, body = Counted), (status = "4XX", body = ErrorBody)))]
pub async fn purge_jobs(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<FilterParams>,
) -> Result<Json<Counted>, ApiError> {
    let filter = ops::filter(p.state, p.queue, p.kind)?;
    run(move || ops::purge(&s, filter)).await.map(Json)
}

/// Dead jobs (the dead-letter list), paged.
#[utoipa::path(get, path = "/api/dead", tag = "jobs", params(JobsParams),
    responses((status = 200, body = JobPage), (status = "4XX", body = ErrorBody)))]
pub async fn list_dead(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<JobsParams>,
) -> Result<Json<JobPage>, ApiError> {
    if p.state
        .as_deref()
        .is_some_and(|st| st != "dead" && !st.is_empty())
    {
        return Err(ApiError::BadQuery(
            "the dead-letter list has only dead jobs".into(),
        ));
    }
    let filter = ops::filter(Some("dead".into()), p.queue, p.kind)?;
    let limit = ops::limit(p.limit)?;
    run(move || ops::jobs(&s, filter, p.after, limit))
        .await
        .map(Json)
}

/// Retries every job matching the filter whose state allows it (dead ones by default).
#[utoipa::path(post, path = "/api/dead/retry", tag = "jobs", params(FilterParams),
    responses((status = 200, body = Counted), (status = "4XX", body = ErrorBody)))]
pub async fn retry_dead(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<FilterParams>,
) -> Result<Json<Counted>, ApiError> {
    let filter = ops::filter(p.state, p.queue, p.kind)?;
    run(move || ops::retry_matching(&s, filter)).await.map(Json)
}

/// Guard keys (by digest): in doubt by default.
#[utoipa::path(get, path = "/api/keys", tag = "keys", params(KeysParams),
    responses((status = 200, body = KeyPage), (status = "4XX", body = ErrorBody)))]
pub async fn list_keys(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<KeysParams>,
) -> Result<Json<KeyPage>, ApiError> {
    let filter = ops::key_filter(p.filter)?;
    let after = match p.after.filter(|a| !a.is_empty()) {
        Some(a) => Some(
            ops::digest(&a).map_err(|_| ApiError::BadQuery("after is a 64-hex digest".into()))?,
        ),
        None => None,
    };
    let limit = ops::limit(p.limit)?;
    run(move || ops::keys(&s, filter, after, limit))
        .await
        .map(Json)
}

/// One guard key.
#[utoipa::path(get, path = "/api/keys/{digest}", tag = "keys",
    params(("digest" = String, Path, description = "SHA-256 of the key, 64 hex characters", pattern = "^[0-9a-fA-F]{64}$")),
    responses((status = 200, body = KeyView), (status = "4XX", body = ErrorBody)))]
pub async fn get_key(
    State(s): State<WebState>,
    ApiPath(digest): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let digest = ops::digest(&digest)?;
    run(move || ops::key(&s, digest)).await.map(Json)
}

/// Records that a key's in-doubt effects did happen (nothing is run).
#[utoipa::path(post, path = "/api/keys/{digest}/confirm", tag = "keys",
    params(("digest" = String, Path, description = "SHA-256 of the key, 64 hex characters", pattern = "^[0-9a-fA-F]{64}$")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn confirm_key(
    State(s): State<WebState>,
    ApiPath(digest): ApiPath<String>,
) -> Result<Json<Done>, ApiError> {
    let digest = ops::digest(&digest)?;
    run(move || ops::confirm_key(&s, digest)).await.map(Json)
}

/// Stored schedules with their next runs.
#[utoipa::path(get, path = "/api/schedules", tag = "schedules",
    responses((status = 200, body = Vec<ScheduleView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_schedules(
    State(s): State<WebState>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    run(move || ops::schedules(&s)).await.map(Json)
}

/// Pauses a schedule.
#[utoipa::path(post, path = "/api/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn pause_schedule(
    State(s): State<WebState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::pause_schedule(&s, &name, true))
        .await
        .map(Json)
}

/// Resumes a paused schedule.
#[utoipa::path(post, path = "/api/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn resume_schedule(
    State(s): State<WebState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::pause_schedule(&s, &name, false))
        .await
        .map(Json)
}

/// Batches, newest first.
#[utoipa::path(get, path = "/api/batches", tag = "batches", params(BatchesParams),
    responses((status = 200, body = Vec<BatchView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_batches(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<BatchesParams>,
) -> Result<Json<Vec<BatchView>>, ApiError> {
    let state = ops::parsed("state", p.state)?;
    let limit = ops::limit(p.limit)?;
    run(move || ops::batches(&s, state, limit)).await.map(Json)
}

/// One batch with its members and their dependencies.
#[utoipa::path(get, path = "/api/batches/{id}", tag = "batches",
    params(("id" = i64, Path, description = "Batch id")),
    responses((status = 200, body = BatchDetail), (status = "4XX", body = ErrorBody)))]
pub async fn get_batch(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<BatchDetail>, ApiError> {
    run(move || ops::batch(&s, id)).await.map(Json)
}

/// Cancels a running batch.
#[utoipa::path(post, path = "/api/batches/{id}/cancel", tag = "batches",
    params(("id" = i64, Path, description = "Batch id")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn cancel_batch(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::cancel_batch(&s, id)).await.map(Json)
}

/// Actions of the action log, by id.
#[utoipa::path(get, path = "/api/actions", tag = "actions", params(ActionsParams),
    responses((status = 200, body = Vec<ActionView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_actions(
    State(s): State<WebState>,
    ApiQuery(p): ApiQuery<ActionsParams>,
) -> Result<Json<Vec<ActionView>>, ApiError> {
    let filter = ops::action_filter(p.state, p.action_type)?;
    let limit = ops::limit(p.limit)?;
    run(move || ops::actions(&s, filter, limit)).await.map(Json)
}

/// Makes a parked action pending again.
#[utoipa::path(post, path = "/api/actions/{id}/retry", tag = "actions",
    params(("id" = i64, Path, description = "Action id")),
    responses((status = 200, body = Done), (status = "4XX", body = ErrorBody)))]
pub async fn retry_action(
    State(s): State<WebState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Done>, ApiError> {
    run(move || ops::retry_action(&s, id)).await.map(Json)
}

/// Workers with their health (healthy: a heartbeat in the last 60 seconds).
#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, body = Vec<WorkerView>), (status = "4XX", body = ErrorBody)))]
pub async fn list_workers(State(s): State<WebState>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    run(move || ops::workers(&s)).await.map(Json)
}

/// The OpenAPI document of this API, generated from the handlers and their types.
#[derive(OpenApi)]
#[openapi(
    info(title = "safejob", description = "Operate safejob's queue, keys, schedules, batches and actions."),
    paths(
        overview, list_jobs, get_job, retry_job, cancel_job, purge_jobs, list_dead, retry_dead,
        list_keys, get_key, confirm_key, list_schedules, pause_schedule, resume_schedule,
        list_batches, get_batch, cancel_batch, list_actions, retry_action, list_workers,
    ),
    tags(
        (name = "jobs", description = "Queued jobs, dead letters"),
        (name = "keys", description = "Guard keys by digest, effects in doubt"),
        (name = "schedules", description = "Stored schedules"),
        (name = "batches", description = "Batches and their DAGs"),
        (name = "actions", description = "The action log"),
        (name = "workers", description = "Workers and their health"),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
