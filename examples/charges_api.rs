//! An axum service that charges and pays out exactly once per `Idempotency-Key`, on SQLite,
//! from async handlers that never block the executor (`safejob-tokio`). Shared by the
//! `axum_charge` example (which serves it) and its test (which sends it requests in-process).
//!
//! * `POST /charges` with an `Idempotency-Key` header and `{"wallet": …, "cents": …}` runs a
//!   guarded [`Charge`] through an [`AsyncRunner`] and answers with the stored result: `201` the
//!   first time, the same `201` and body for every duplicate (marked `Idempotent-Replayed:
//!   true`), `409` with `Retry-After` while another request holds the key, `422` when the key
//!   comes back with another body. The ledger row commits in the finalize transaction
//!   (transactional effects), so a key is charged once whatever the clients retry.
//! * `POST /payouts` with an `Idempotency-Key` enqueues a guarded [`Payout`] through an
//!   [`AsyncQueue`] and answers `202` with the job id (the live job's, marked `"duplicate": true`,
//!   when the key is enqueued again while its job is live); a
//!   [`WorkerPool`](safejob_core::queue::WorkerPool) beside the server runs it, once per key however
//!   often it is enqueued.
//! * `GET /jobs/{id}` reads a queued job's state.

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use diesel::{QueryableByName, RunQueryDsl, sql_types::BigInt};
use safejob_core::{
    Disposition, EffectsContext, EffectsMode, Fingerprint, FingerprintError, IdempotencyKey,
    KeyError, Outcome, PerformContext, Report, RunError, Runner, SafeJob, StoreError,
    queue::{
        EnqueueError, EnqueueOptions, GuardedJob, JobId, Queue, Registry, Worker, WorkerBuilder,
    },
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt, queue::DieselQueue};
use safejob_tokio::{AsyncError, AsyncQueue, AsyncRunner, blocking};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The header that carries the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The header set on a response replayed from the stored result.
pub const REPLAYED: &str = "idempotent-replayed";

/// A charge request's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The wallet debited.
    pub wallet: String,
    /// The amount in cents.
    pub cents: i64,
}

/// Debits a wallet once per idempotency key.
#[derive(Debug, Clone, Serialize)]
pub struct Charge {
    /// The client's `Idempotency-Key`.
    #[serde(skip)]
    pub key: String,
    /// What to charge.
    #[serde(flatten)]
    pub request: ChargeRequest,
}

/// A charge's or a payout's effects could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger statement failed (the finalize transaction rolls back; the run is retried).
    #[error("ledger write failed: {0}")]
    Write(#[from] safejob_diesel::EffectsTxError),
    /// The hook ran outside a finalize transaction.
    #[error(transparent)]
    NoTransaction(#[from] safejob_diesel::TxError),
}

impl SafeJob for Charge {
    type Error = LedgerError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.key])
    }

    // The same key with another wallet or amount is a conflict (422), not a replay.
    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of_json("charge", self).map(Some)
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        // Retry-safe work: validate, price, call a gateway that takes an idempotency key.
        Ok(Outcome::json(json!({
            "charge": charge_id(ctx.key()),
            "wallet": self.request.wallet,
            "cents": self.request.cents,
        })))
    }

    // Inside the finalize transaction: the ledger row commits with `succeeded`, or not at all.
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let charge = charge_id(ctx.key());
        ctx.effects_tx()?.insert(
            "charge_ledger",
            &[
                ("charge_id", (&charge).into()),
                ("wallet", (&self.request.wallet).into()),
                ("cents", (-self.request.cents).into()),
            ],
        )?;
        Ok(())
    }
}

/// The charge's id: derived from the key's digest, so the raw key is never stored in the ledger.
fn charge_id(key: &IdempotencyKey) -> String {
    format!("ch_{}", key.digest().to_hex())
}

/// A payout, queued and run by the worker pool through the guard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payout {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// The amount in cents.
    pub cents: i64,
}

impl SafeJob for Payout {
    type Error = LedgerError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["payout", &self.key])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let payout = format!("po_{}", ctx.key().digest().to_hex());
        ctx.effects_tx()?.insert(
            "payout_ledger",
            &[
                ("payout_id", (&payout).into()),
                ("cents", self.cents.into()),
            ],
        )?;
        Ok(())
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "payout";
}

/// What the handlers share: cheap to clone, one runner and one queue for every request.
#[derive(Debug, Clone)]
pub struct App {
    runner: AsyncRunner,
    queue: AsyncQueue,
}

/// Creates the example's tables (a no-op when they exist) on `store`, already migrated.
pub fn create_tables(store: &DieselStore) -> Result<(), StoreError> {
    store
        .with_connection(|conn| {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS charge_ledger (
                     charge_id TEXT PRIMARY KEY, wallet TEXT NOT NULL, cents INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS payout_ledger (
                     payout_id TEXT PRIMARY KEY, cents INTEGER NOT NULL);",
            )
        })?
        .map_err(StoreError::backend)
}

impl App {
    /// The service's state on `store` (migrated, with [`create_tables`] run): a runner with
    /// transactional effects and a queue client on the same database.
    pub fn new(store: Arc<DieselStore>) -> Result<Self, Box<dyn std::error::Error>> {
        let runner = Runner::builder(store.clone())
            .effects(EffectsMode::Transactional)
            .build()?;
        Ok(Self {
            runner: AsyncRunner::from(runner),
            queue: AsyncQueue::from(Queue::new(Arc::new(DieselQueue::new(store)))),
        })
    }

    /// The queue client the handlers enqueue on.
    pub fn queue(&self) -> &AsyncQueue {
        &self.queue
    }
}

/// The worker pool that runs the queued payouts, with transactional effects, on `store`; start
/// it with `AsyncWorkerPool::start`.
pub fn payout_workers(store: Arc<DieselStore>) -> WorkerBuilder {
    let mut registry = Registry::new();
    registry.register_guarded::<Payout>();
    Worker::builder(Arc::new(DieselQueue::new(store)), registry)
        .effects(EffectsMode::Transactional)
        .poll_interval(Duration::from_millis(100))
}

/// The routes, mountable under any path of a larger router.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/charges", post(create_charge))
        .route("/payouts", post(create_payout))
        .route("/jobs/{id}", get(job_state))
        .with_state(app)
}

async fn create_charge(
    State(app): State<App>,
    headers: HeaderMap,
    Json(request): Json<ChargeRequest>,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    answer_charge(app.runner.run(Charge { key, request }).await)
}

/// A run's report or error as an HTTP answer.
fn answer_charge(ran: Result<Report, AsyncError<RunError<LedgerError>>>) -> Response {
    match ran {
        Ok(Report::Succeeded { result, .. }) => (StatusCode::CREATED, Json(result)).into_response(),
        Ok(Report::AlreadySucceeded { result }) => (
            StatusCode::CREATED,
            [(REPLAYED, HeaderValue::from_static("true"))],
            Json(result),
        )
            .into_response(),
        Ok(Report::Busy { retry_after, .. }) => busy(
            StatusCode::CONFLICT,
            retry_after,
            "a request with this Idempotency-Key is in progress",
        ),
        Ok(Report::RetryLater { after, .. }) => busy(
            StatusCode::SERVICE_UNAVAILABLE,
            after.unwrap_or(Duration::from_secs(1)),
            "not ready, retry later",
        ),
        Ok(Report::Failed { failure, .. } | Report::AlreadyFailed { failure }) => {
            refuse(StatusCode::UNPROCESSABLE_ENTITY, &failure.to_string())
        }
        Err(AsyncError::Failed(RunError::KeyConflict { .. })) => refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "this Idempotency-Key was already used with another request body",
        ),
        Err(AsyncError::Failed(RunError::InvalidKey(error))) => {
            refuse(StatusCode::BAD_REQUEST, &error.to_string())
        }
        Err(error) => match error.disposition() {
            // Retryable: the lease was released (or nothing ran); the client retries the same key.
            Disposition::Retry { .. } => busy(
                StatusCode::SERVICE_UNAVAILABLE,
                Duration::from_secs(1),
                &error.to_string(),
            ),
            _ => refuse(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
        },
    }
}

#[derive(Deserialize)]
struct PayoutRequest {
    cents: i64,
}

async fn create_payout(
    State(app): State<App>,
    headers: HeaderMap,
    Json(request): Json<PayoutRequest>,
) -> Response {
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(refused) => return refused,
    };
    let payout = Payout {
        key,
        cents: request.cents,
    };
    match app
        .queue
        .enqueue_guarded(payout, EnqueueOptions::new())
        .await
    {
        Ok(enqueued) => (
            StatusCode::ACCEPTED,
            // A payout enqueued again while its job is live is deduplicated by its key: the
            // same job id, marked as a duplicate.
            Json(json!({ "job": enqueued.id().0, "duplicate": enqueued.is_duplicate() })),
        )
            .into_response(),
        Err(AsyncError::Failed(EnqueueError::InvalidKey(error))) => {
            refuse(StatusCode::BAD_REQUEST, &error.to_string())
        }
        Err(error) => refuse(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

async fn job_state(State(app): State<App>, Path(id): Path<i64>) -> Response {
    match app.queue.get(JobId(id)).await {
        Ok(Some(job)) => Json(json!({ "job": id, "state": job.state.to_string() })).into_response(),
        Ok(None) => refuse(StatusCode::NOT_FOUND, "no such job"),
        Err(error) => refuse(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// The request's `Idempotency-Key`, or the `400` that refuses it.
fn idempotency_key(headers: &HeaderMap) -> Result<String, Response> {
    let value = headers
        .get(IDEMPOTENCY_KEY)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "missing Idempotency-Key header"))?;
    let text = value.to_str().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "the Idempotency-Key header is not visible ASCII",
        )
    })?;
    Ok(text.to_owned())
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn busy(status: StatusCode, retry_after: Duration, message: &str) -> Response {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    (
        status,
        [(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))],
        Json(json!({ "error": message })),
    )
        .into_response()
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    all: i64,
    #[diesel(sql_type = BigInt)]
    distinct: i64,
}

/// `(rows, distinct charge ids)` in the charge ledger, read on the blocking pool.
pub async fn charge_ledger(store: Arc<DieselStore>) -> Result<(i64, i64), AsyncError<StoreError>> {
    counts(
        store,
        "SELECT COUNT(*) AS \"all\", COUNT(DISTINCT charge_id) AS \"distinct\" FROM charge_ledger",
    )
    .await
}

/// `(rows, distinct payout ids)` in the payout ledger, read on the blocking pool.
pub async fn payout_ledger(store: Arc<DieselStore>) -> Result<(i64, i64), AsyncError<StoreError>> {
    counts(
        store,
        "SELECT COUNT(*) AS \"all\", COUNT(DISTINCT payout_id) AS \"distinct\" FROM payout_ledger",
    )
    .await
}

async fn counts(
    store: Arc<DieselStore>,
    sql: &'static str,
) -> Result<(i64, i64), AsyncError<StoreError>> {
    blocking(move || {
        let rows = store
            .with_connection(|conn| match conn {
                ConnectionRef::Sqlite(conn) => diesel::sql_query(sql).load::<Counts>(*conn),
                _ => Err(diesel::result::Error::NotFound),
            })?
            .map_err(StoreError::backend)?;
        rows.first()
            .map(|c| (c.all, c.distinct))
            .ok_or_else(|| StoreError::backend("the count query gave no row"))
    })
    .await
}
