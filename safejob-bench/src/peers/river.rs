//! River for Rust (`riverqueue` 0.5) running the queue workload.
//!
//! One client, in its own database and schema: inserts with `insert` (one job per call) and
//! `insert_many` (one statement per batch), then the client starts with one queue of
//! `max_workers = T` and a no-op async worker, on a multi-threaded tokio runtime with the default
//! thread count (one per core). River's fetch cooldown defaults to 100 ms, which caps a queue at
//! 10 fetches a second; the bench sets it to River's minimum, 1 ms (poll interval 50 ms), so River
//! runs at its best. River completes jobs through its batching completer; the drain ends when the
//! database shows every job `completed`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use riverqueue::{
    BoxError, Client, Job, JobArgs, QueueConfig, WorkContext, WorkOutcome, Workers,
    database::{PostgresDatabase, SchemaName},
    migrate::PostgresMigrator,
    sqlx::{self, PgPool, postgres::PgPoolOptions},
};
use serde::{Deserialize, Serialize};

use super::ensure_database;
use crate::{
    driver::BenchError,
    figure::{Figure, Op},
    queue_bench::{Workload, drain_timeout},
};

/// River's database on the server.
pub const DATABASE: &str = "bench_river";
/// River's schema there, dropped and re-created at every run.
pub const SCHEMA: &str = "river_bench";

/// River's no-op job.
#[derive(Clone, Debug, Deserialize, JobArgs, Serialize)]
#[river(kind = "bench_noop")]
struct BenchNoop {
    n: u64,
}

/// Runs the workload on River; `url` names the server (its database is replaced by
/// [`DATABASE`]).
pub fn run(url: &str, w: &Workload) -> Result<Vec<Figure>, BenchError> {
    let url = ensure_database(url, DATABASE)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(&url, w))
}

async fn run_async(url: &str, w: &Workload) -> Result<Vec<Figure>, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(w.workers + 4)?)
        .connect(url)
        .await?;
    reset_schema(&pool).await?;
    if w.warmup > 0 {
        steps(&pool, w, w.warmup).await?;
    }
    let figures = steps(&pool, w, w.jobs).await?;
    pool.close().await;
    Ok(figures)
}

/// A client whose no-op worker counts into `done`, with one queue of `max_workers = T`.
fn client(pool: &PgPool, w: &Workload, done: &Arc<AtomicUsize>) -> Result<Client, BenchError> {
    let mut workers = Workers::new();
    let counter = done.clone();
    workers.add_fn(move |_ctx: WorkContext, _job: Job<BenchNoop>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BoxError>(WorkOutcome::Complete)
        }
    })?;
    Ok(
        Client::builder(PostgresDatabase::new(pool.clone()).with_schema(schema()?))
            .workers(workers)
            .fetch_cooldown(Duration::from_millis(1))
            .queue(
                "default",
                QueueConfig::new(w.workers).with_fetch_poll_interval(Duration::from_millis(50)),
            )
            .build()?,
    )
}

/// Inserts `jobs` one by one, `jobs` more with `insert_many`, and works off the `2 × jobs` with a
/// fresh client.
async fn steps(pool: &PgPool, w: &Workload, jobs: usize) -> Result<Vec<Figure>, BenchError> {
    let done = Arc::new(AtomicUsize::new(0));
    let client = client(pool, w, &done)?;
    let figure = |op, jobs, batch, elapsed, note| Figure {
        system: "river",
        backend: "postgres",
        op,
        guarded: false,
        effects: None,
        jobs,
        workers: w.workers,
        batch,
        elapsed,
        note,
        passes: 1,
        ledger: None,
    };
    let mut figures = Vec::with_capacity(3);

    let start = Instant::now();
    for n in 0..jobs {
        client.insert(BenchNoop { n: n as u64 }).await?;
    }
    figures.push(figure(Op::EnqueueSingle, jobs, None, start.elapsed(), None));

    let start = Instant::now();
    let mut n = jobs;
    while n < 2 * jobs {
        let end = (n + w.batch).min(2 * jobs);
        client
            .insert_many((n..end).map(|n| BenchNoop { n: n as u64 }))
            .await?;
        n = end;
    }
    figures.push(figure(
        Op::EnqueueBatched,
        jobs,
        Some(w.batch),
        start.elapsed(),
        None,
    ));

    let total = 2 * jobs;
    let deadline = Instant::now() + drain_timeout(total);
    let start = Instant::now();
    let mut handle = client.start()?;
    while done.load(Ordering::Acquire) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    // Worked is not completed: River's completer writes completions in batches.
    while unfinished(pool).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = start.elapsed();
    handle.stop().await?;
    let left = unfinished(pool).await?;
    if left > 0 {
        return Err(
            format!("River's drain timed out: {left} of {total} jobs not completed").into(),
        );
    }
    let worked = done.load(Ordering::SeqCst);
    if worked != total {
        return Err(format!("River worked {worked} jobs for {total} inserted").into());
    }
    figures.push(figure(
        Op::Drain,
        total,
        None,
        elapsed,
        Some("fetch cooldown 1 ms"),
    ));
    Ok(figures)
}

pub(crate) fn schema() -> Result<SchemaName, BenchError> {
    Ok(SchemaName::new(SCHEMA)?)
}

/// Drops River's schema and re-creates it with River's own migrations, so every run starts empty.
pub(crate) async fn reset_schema(pool: &PgPool) -> Result<(), BenchError> {
    // sqlx takes only static SQL: the schema is spelled out (it is SCHEMA).
    sqlx::query("DROP SCHEMA IF EXISTS river_bench CASCADE")
        .execute(pool)
        .await?;
    sqlx::query("CREATE SCHEMA river_bench")
        .execute(pool)
        .await?;
    PostgresMigrator::new(pool.clone())
        .with_schema(schema()?)
        .migrate_up()
        .await?;
    Ok(())
}

/// Jobs not yet `completed`.
async fn unfinished(pool: &PgPool) -> Result<i64, BenchError> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM river_bench.river_job WHERE state <> 'completed'")
            .fetch_one(pool)
            .await?;
    Ok(n)
}
