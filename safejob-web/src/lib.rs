//! # safejob-web
//!
//! safejob's operator surface over HTTP, as an axum [`Router`] you mount in your own app or
//! run with [`serve`] (what `safejob serve` does):
//!
//! * a JSON API over the library's own operations — `GET /jobs` (the queue at a glance), job
//!   listing with filters and paging, job detail with its history, dead letters, keys in doubt,
//!   schedules, batches, actions, workers — and the operator's actions as `POST`s (retry,
//!   cancel, purge, confirm effects, pause / resume a schedule, cancel a batch, retry an
//!   action); errors are `{"error": {"code", "message"}}` with a 4xx for bad input;
//! * `GET /openapi.json`, generated from the handlers ([`api::ApiDoc`]);
//! * `GET /metrics`, Prometheus text derived from the store at scrape time ([`metrics`]), plus
//!   the counters of a [`Recorder`] you feed with what your runs returned;
//! * a server-rendered dashboard at `/` and `/ui/...` (no JavaScript, no assets to build).
//!
//! It is closed by default: only loopback clients are served ([`Access`]), and every
//! state-changing request passes a CSRF check ([`csrf`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use safejob_diesel::{DieselStore, queue::DieselQueue};
//! use safejob_web::{Access, BearerToken, WebState};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(DieselStore::connect("sqlite://jobs.db")?);
//! let queue = Arc::new(DieselQueue::new(store));
//! let state = WebState::from_store(queue)?;
//! // Anyone with the token, from anywhere (loopback clients too):
//! let access = Access::Bearer(BearerToken::new(std::env::var("SAFEJOB_TOKEN")?)?);
//! safejob_web::serve("0.0.0.0:8080".parse()?, state, access).await?;
//! # Ok(()) }
//! ```
//!
//! Mounted in your own app (served with `into_make_service_with_connect_info::<SocketAddr>()`
//! so the access gate sees the peer):
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(queue: Arc<safejob_core::queue::MemoryQueue>) -> Result<(), safejob_web::WebError> {
//! let ops = safejob_web::router(safejob_web::WebState::from_store(queue)?);
//! let app: axum::Router = axum::Router::new().nest("/ops", ops);
//! # Ok(()) }
//! ```
//! (The dashboard's links are absolute, so nest it at the root of a host of its own, or use
//! only the API under a prefix.)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod api;
pub mod csrf;
mod dashboard;
pub mod dto;
pub mod error;
pub mod history;
pub mod html;
pub mod metrics;
mod ops;
pub mod recorder;
pub mod samples;
mod state;

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{
    Router,
    http::Uri,
    middleware::from_fn_with_state,
    routing::{get, post},
};
use tokio::net::TcpListener;

pub use access::{Access, AccessError, Authorize, BearerToken};
pub use error::ApiError;
pub use ops::{DEFAULT_LIMIT, HEALTHY_WITHIN_SECS, MAX_LIMIT};
pub use recorder::Recorder;
pub use state::{WebError, WebState};

/// How often [`serve`] samples the queue for the overview's charts.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The whole surface (API, OpenAPI document, metrics, dashboard) behind the access gate and
/// the CSRF check, over `state`.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/jobs", get(api::overview))
        .route("/api/jobs", get(api::list_jobs))
        .route("/api/jobs/purge", post(api::purge_jobs))
        .route("/api/jobs/{id}", get(api::get_job))
        .route("/api/jobs/{id}/retry", post(api::retry_job))
        .route("/api/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/dead", get(api::list_dead))
        .route("/api/dead/retry", post(api::retry_dead))
        .route("/api/keys", get(api::list_keys))
        .route("/api/keys/{digest}", get(api::get_key))
        .route("/api/keys/{digest}/confirm", post(api::confirm_key))
        .route("/api/schedules", get(api::list_schedules))
        .route("/api/schedules/{name}/pause", post(api::pause_schedule))
        .route("/api/schedules/{name}/resume", post(api::resume_schedule))
        .route("/api/batches", get(api::list_batches))
        .route("/api/batches/{id}", get(api::get_batch))
        .route("/api/batches/{id}/cancel", post(api::cancel_batch))
        .route("/api/actions", get(api::list_actions))
        .route("/api/actions/{id}/retry", post(api::retry_action))
        .route("/api/workers", get(api::list_workers))
        .route("/openapi.json", get(api::openapi))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(dashboard::overview))
        .route("/ui/queues", get(dashboard::queues))
        .route("/ui/jobs", get(dashboard::jobs))
        .route("/ui/jobs/{id}", get(dashboard::job))
        .route("/ui/jobs/{id}/retry", post(dashboard::retry_job))
        .route("/ui/jobs/{id}/cancel", post(dashboard::cancel_job))
        .route("/ui/dead", get(dashboard::dead))
        .route("/ui/keys", get(dashboard::keys))
        .route("/ui/keys/{digest}/confirm", post(dashboard::confirm_key))
        .route("/ui/schedules", get(dashboard::schedules))
        .route(
            "/ui/schedules/{name}/pause",
            post(dashboard::pause_schedule),
        )
        .route(
            "/ui/schedules/{name}/resume",
            post(dashboard::resume_schedule),
        )
        .route("/ui/batches", get(dashboard::batches))
        .route("/ui/batches/{id}", get(dashboard::batch))
        .route("/ui/batches/{id}/cancel", post(dashboard::cancel_batch))
        .route("/ui/actions", get(dashboard::actions))
        .route("/ui/actions/{id}/retry", post(dashboard::retry_action))
        .route("/ui/workers", get(dashboard::workers))
        .fallback(
            |uri: Uri| async move { ApiError::NoRoute(uri.path().chars().take(200).collect()) },
        )
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(from_fn_with_state(state.clone(), csrf::check))
        .layer(from_fn_with_state(state.clone(), access::gate))
        .with_state(state)
}

/// Serves [`router`] on `addr` with `access` until ctrl-c, sampling the queue every
/// [`SAMPLE_EVERY`] for the charts (seeded first with the last hour:
/// [`WebState::seed_charts`]).
pub async fn serve(addr: SocketAddr, state: WebState, access: Access) -> Result<(), WebError> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, state, access, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}

/// [`serve`] on a bound listener, until `shutdown` completes (then in-flight requests drain).
pub async fn serve_on(
    listener: TcpListener,
    state: WebState,
    access: Access,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let state = state.with_access(access);
    // Before the first answer, so the charts show the last hour at once.
    let seeding = state.clone();
    match tokio::task::spawn_blocking(move || seeding.seed_charts()).await {
        Ok(Ok(points)) => tracing::debug!(points, "safejob-web seeded the charts"),
        Ok(Err(e)) => tracing::warn!(error = %e, "safejob-web could not seed the charts"),
        Err(e) => tracing::warn!(error = %e, "safejob-web could not seed the charts"),
    }
    let sampler = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SAMPLE_EVERY);
            loop {
                every.tick().await;
                let s = state.clone();
                if let Err(e) = ops::run(move || ops::snapshot(&s)).await {
                    tracing::warn!(error = %e, "safejob-web could not sample the queue");
                }
            }
        })
    };
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sampler.abort();
    Ok(served?)
}
