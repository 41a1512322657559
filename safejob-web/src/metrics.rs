//! `GET /metrics`: Prometheus / OpenMetrics text, derived from the store at scrape time.
//!
//! The stores keep rows, not event counters, so every figure is a gauge read from them when
//! scraped (each scrape is one snapshot plus bounded key listings):
//!
//! | metric | labels | from |
//! |---|---|---|
//! | `safejob_jobs` | queue, kind, state | the snapshot's counts |
//! | `safejob_queue_depth` | queue | waiting jobs (pending, scheduled, retrying) |
//! | `safejob_oldest_due_age_seconds` | queue | the oldest due waiting job of each queue with jobs (0: none due) |
//! | `safejob_oldest_due_age_all_queues_seconds` | | the same over all queues |
//! | `safejob_kind_executions` | kind | finished (succeeded + dead) jobs still stored |
//! | `safejob_kind_succeeded`, `safejob_kind_dead` | kind | the counts |
//! | `safejob_kind_duration_seconds` | kind, stat = mean, p95, p99 | succeeded jobs' durations |
//! | `safejob_effects_in_doubt` | | keys whose effects are in doubt (counted up to 10,000) |
//! | `safejob_guard_expired_leases` | | running keys with an expired lease (up to 10,000) |
//! | `safejob_workers`, `safejob_worker_in_flight`, `safejob_worker_heartbeat_age_seconds` | worker | heartbeats |
//!
//! Figures over finished jobs cover what is still stored: a prune lowers them. Events (guard
//! outcomes, executions, duration histograms) come from a [`Recorder`](crate::Recorder) when the
//! state has one.

use std::sync::atomic::AtomicU64;

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use safejob_core::{
    queue::QueueState,
    store::{ListFilter, ListQuery},
};

use crate::{
    error::ApiError,
    ops::{self, MAX_LIMIT, run},
    state::WebState,
};

/// Keys counted at most, per listing, in one scrape.
pub const MAX_COUNTED_KEYS: u64 = 10_000;

type Labels = Vec<(&'static str, String)>;
type IntFamily = Family<Labels, Gauge>;
type FloatFamily = Family<Labels, Gauge<f64, AtomicU64>>;

/// The scrape, as text.
pub fn render(state: &WebState) -> Result<String, ApiError> {
    let snapshot = ops::snapshot(state)?;
    let mut registry = Registry::default();

    let jobs = IntFamily::default();
    let depth = IntFamily::default();
    let succeeded = IntFamily::default();
    let dead = IntFamily::default();
    for c in &snapshot.counts {
        let n = i64::try_from(c.count).unwrap_or(i64::MAX);
        jobs.get_or_create(&vec![
            ("queue", c.queue.clone()),
            ("kind", c.kind.clone()),
            ("state", c.state.as_str().to_owned()),
        ])
        .set(n);
        if c.state.is_waiting() {
            depth
                .get_or_create(&vec![("queue", c.queue.clone())])
                .inc_by(n);
        }
        match c.state {
            QueueState::Succeeded => {
                succeeded
                    .get_or_create(&vec![("kind", c.kind.clone())])
                    .inc_by(n);
            }
            QueueState::Dead => {
                dead.get_or_create(&vec![("kind", c.kind.clone())])
                    .inc_by(n);
            }
            _ => {}
        }
    }
    registry.register(
        "safejob_jobs",
        "Jobs in the store by queue, kind and state",
        jobs,
    );
    registry.register(
        "safejob_queue_depth",
        "Jobs waiting (pending, scheduled, retrying) per queue",
        depth,
    );
    let oldest_by_queue = FloatFamily::default();
    for queue in snapshot.by_queue().into_keys() {
        let age = snapshot
            .oldest_due_by_queue
            .get(&queue)
            .map_or(0.0, |d| d.as_secs_f64());
        oldest_by_queue
            .get_or_create(&vec![("queue", queue)])
            .set(age);
    }
    registry.register(
        "safejob_oldest_due_age_seconds",
        "How long the oldest due waiting job of each queue has waited (0 when none is due)",
        oldest_by_queue,
    );
    let oldest = Gauge::<f64, AtomicU64>::default();
    oldest.set(snapshot.oldest_due_age.map_or(0.0, |d| d.as_secs_f64()));
    registry.register(
        "safejob_oldest_due_age_all_queues_seconds",
        "How long the oldest due waiting job has waited, all queues (0 when none)",
        oldest,
    );

    let executions = IntFamily::default();
    let durations = FloatFamily::default();
    for k in &snapshot.kinds {
        let kind = || ("kind", k.kind.clone());
        executions
            .get_or_create(&vec![kind()])
            .set(i64::try_from(k.executions).unwrap_or(i64::MAX));
        for (stat, d) in [("mean", k.mean), ("p95", k.p95), ("p99", k.p99)] {
            durations
                .get_or_create(&vec![kind(), ("stat", stat.to_owned())])
                .set(d.as_secs_f64());
        }
    }
    registry.register(
        "safejob_kind_executions",
        "Finished executions (succeeded + dead) per kind, over the jobs still stored",
        executions,
    );
    registry.register(
        "safejob_kind_succeeded",
        "Succeeded jobs per kind",
        succeeded,
    );
    registry.register(
        "safejob_kind_dead",
        "Dead jobs (dead letters) per kind",
        dead,
    );
    registry.register(
        "safejob_kind_duration_seconds",
        "Durations of succeeded jobs per kind: mean, p95, p99",
        durations,
    );

    for (name, help, filter) in [
        (
            "safejob_effects_in_doubt",
            "Keys whose effects are in doubt (counted up to 10000)",
            ListFilter::EffectsInDoubt,
        ),
        (
            "safejob_guard_expired_leases",
            "Running keys whose lease expired (counted up to 10000)",
            ListFilter::ExpiredLeases,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(i64::try_from(count_keys(state, filter)?).unwrap_or(i64::MAX));
        registry.register(name, help, gauge);
    }

    let workers = Gauge::<i64>::default();
    workers.set(i64::try_from(snapshot.workers.len()).unwrap_or(i64::MAX));
    let in_flight = IntFamily::default();
    let age = FloatFamily::default();
    for w in &snapshot.workers {
        let label = vec![("worker", w.id.clone())];
        in_flight
            .get_or_create(&label)
            .set(i64::try_from(w.in_flight.len()).unwrap_or(i64::MAX));
        age.get_or_create(&label).set(
            (snapshot.taken_at - w.last_heartbeat)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0,
        );
    }
    registry.register("safejob_workers", "Workers with a heartbeat", workers);
    registry.register(
        "safejob_worker_in_flight",
        "Jobs running per worker",
        in_flight,
    );
    registry.register(
        "safejob_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat",
        age,
    );

    if let Some(recorder) = state.recorder() {
        recorder.register(&mut registry);
    }

    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(out)
}

/// Rows matching `filter`, paged, up to [`MAX_COUNTED_KEYS`].
fn count_keys(state: &WebState, filter: ListFilter) -> Result<u64, ApiError> {
    let guards = state.queue().guards();
    let mut query = ListQuery::new(filter, MAX_LIMIT);
    let mut counted = 0u64;
    loop {
        let rows = guards.list(&query)?;
        counted += rows.len() as u64;
        match rows.last() {
            Some(last) if rows.len() == MAX_LIMIT && counted < MAX_COUNTED_KEYS => {
                query.after = Some(last.digest);
            }
            _ => return Ok(counted.min(MAX_COUNTED_KEYS)),
        }
    }
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<WebState>) -> Result<Response, ApiError> {
    let text = run(move || render(&s)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
