//! River for Rust (`riverqueue` 0.5) running the queue workload.
//!
//! One client, in its own database and schema: inserts with `insert` (one job per call) and
//! `insert_many` (one statement per batch), then the client starts with one queue of
//! `max_workers = T` and a no-op async worker, on a multi-threaded tokio runtime with the default
//! thread count (one per core). River's fetch cooldown defaults to 100 ms, which caps a queue at
//! 10 fetches a second; the bench sets it to River's minimum, 1 ms (poll interval 50 ms), so River
//! runs at its best. River completes jobs through its batching completer; the drain ends when the
//! database shows every job `completed` (`--retention keep`: River's job cleaner is told never to
//! delete them), or when no job is left (`--retention delete`: completed jobs are deleted by
//! River's job cleaner, run by the elected leader every 100 ms with a retention of 0).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use riverqueue::{
    BoxError, Client, Job, JobArgs, MaintenanceConfig, QueueConfig, Retention as RiverRetention,
    WorkContext, WorkOutcome, Workers,
    database::{PostgresDatabase, SchemaName},
    migrate::PostgresMigrator,
    sqlx::{self, PgPool, postgres::PgPoolOptions},
};
use serde::{Deserialize, Serialize};

use super::{begin, end};
use crate::{
    counters::Meter,
    driver::BenchError,
    figure::{Figure, Op},
    queue_bench::{Retention, Workload, drain_timeout},
    scratch::Scratch,
};

/// River's schema in its fresh database.
pub const SCHEMA: &str = "river_bench";

/// River's no-op job.
#[derive(Clone, Debug, Deserialize, JobArgs, Serialize)]
#[river(kind = "bench_noop")]
struct BenchNoop {
    n: u64,
}

/// Runs the workload on River in the fresh database `db`, each timed step counted there (River
/// runs on sqlx, so no statement count: `pg_stat_statements` or nothing).
pub fn run(db: &Scratch, w: &Workload, settle: Duration) -> Result<Vec<Figure>, BenchError> {
    let mut meter = Meter::new(Some(db), None, settle)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(db.url(), w, &mut meter))
}

async fn run_async(url: &str, w: &Workload, meter: &mut Meter) -> Result<Vec<Figure>, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(w.workers + 4)?)
        .connect(url)
        .await?;
    create_schema(&pool).await?;
    if w.warmup > 0 {
        steps(&pool, w, w.warmup, None).await?;
        meter.touch();
    }
    let figures = steps(&pool, w, w.jobs, Some(meter)).await?;
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
    let completed = match w.retention {
        Retention::Keep => RiverRetention::Keep,
        Retention::Delete => RiverRetention::DeleteAfter(Duration::ZERO),
    };
    let maintenance = MaintenanceConfig::default()
        .with_completed_job_retention(completed)
        .with_job_cleaner_interval(Duration::from_millis(100));
    Ok(
        Client::builder(PostgresDatabase::new(pool.clone()).with_schema(schema()?))
            .workers(workers)
            .maintenance(maintenance)
            .fetch_cooldown(Duration::from_millis(1))
            .queue(
                "default",
                QueueConfig::new(w.workers).with_fetch_poll_interval(Duration::from_millis(50)),
            )
            .build()?,
    )
}

/// Inserts `jobs` one by one, `jobs` more with `insert_many`, and works off the `2 × jobs` with a
/// fresh client; each step counted by `meter` if given.
async fn steps(
    pool: &PgPool,
    w: &Workload,
    jobs: usize,
    mut meter: Option<&mut Meter>,
) -> Result<Vec<Figure>, BenchError> {
    let done = Arc::new(AtomicUsize::new(0));
    let client = client(pool, w, &done)?;
    let probes = meter
        .as_ref()
        .map_or_else(|| Arc::new(AtomicU64::new(0)), |m| m.probes());
    let figure = |op, jobs, batch, elapsed, note, counts| Figure {
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
        retention: w.retention.as_str(),
        counts,
    };
    let mut figures = Vec::with_capacity(3);

    let mark = begin(&mut meter)?;
    let start = Instant::now();
    for n in 0..jobs {
        client.insert(BenchNoop { n: n as u64 }).await?;
    }
    let elapsed = start.elapsed();
    let counts = end(&mut meter, mark)?;
    figures.push(figure(Op::EnqueueSingle, jobs, None, elapsed, None, counts));

    let mark = begin(&mut meter)?;
    let start = Instant::now();
    let mut n = jobs;
    while n < 2 * jobs {
        let last = (n + w.batch).min(2 * jobs);
        client
            .insert_many((n..last).map(|n| BenchNoop { n: n as u64 }))
            .await?;
        n = last;
    }
    let elapsed = start.elapsed();
    let counts = end(&mut meter, mark)?;
    figures.push(figure(
        Op::EnqueueBatched,
        jobs,
        Some(w.batch),
        elapsed,
        None,
        counts,
    ));

    let total = 2 * jobs;
    let deadline = Instant::now() + drain_timeout(total);
    let mark = begin(&mut meter)?;
    let start = Instant::now();
    let mut handle = client.start()?;
    while done.load(Ordering::Acquire) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    // Worked is not completed: River's completer writes completions in batches (and, with
    // deletion, its cleaner deletes them).
    while unfinished(pool, w.retention, &probes).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = start.elapsed();
    handle.stop().await?;
    let counts = end(&mut meter, mark)?;
    let left = unfinished(pool, w.retention, &Arc::new(AtomicU64::new(0))).await?;
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
        counts,
    ));
    Ok(figures)
}

pub(crate) fn schema() -> Result<SchemaName, BenchError> {
    Ok(SchemaName::new(SCHEMA)?)
}

/// Creates River's schema in its fresh database, with River's own migrations.
pub(crate) async fn create_schema(pool: &PgPool) -> Result<(), BenchError> {
    // sqlx takes only static SQL: the schema is spelled out (it is SCHEMA).
    sqlx::query("CREATE SCHEMA river_bench")
        .execute(pool)
        .await?;
    PostgresMigrator::new(pool.clone())
        .with_schema(schema()?)
        .migrate_up()
        .await?;
    Ok(())
}

/// Jobs not yet `completed` (kept), or not yet deleted; one more of the bench's own statements
/// in River's database (`probes`).
async fn unfinished(
    pool: &PgPool,
    retention: Retention,
    probes: &AtomicU64,
) -> Result<i64, BenchError> {
    let sql = match retention {
        Retention::Keep => "SELECT count(*) FROM river_bench.river_job WHERE state <> 'completed'",
        Retention::Delete => "SELECT count(*) FROM river_bench.river_job",
    };
    probes.fetch_add(1, Ordering::SeqCst);
    let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(n)
}
