//! apalis 1.0 (`apalis-postgres`, tokio + sqlx) running the queue workload.
//!
//! One `PostgresStorage` in the run's fresh database ([`crate::scratch`]), its tables (schema
//! `apalis`) made by apalis' own embedded migrations. The single step pushes one task
//! per `TaskSink::push` (a transaction around one `INSERT`); the batched step pushes `--batch`
//! tasks per `push_bulk` (one multi-row `INSERT … SELECT unnest(…)`). The drain runs one apalis
//! worker with `concurrency(T)` (tower's concurrency limit, apalis' way to run T jobs at once; the
//! counterpart of River's `max_workers`) and a no-op handler, on a multi-threaded tokio runtime
//! with the default thread count. apalis fetches `batch_size` tasks per query (its default, 10)
//! and marks them `Queued`; completions are sent to the storage through a channel and written
//! in batches (one `UPDATE` per flush) whenever the worker next polls the storage. With no new
//! tasks the storage polls on an interval: set to 50 ms, River's poll interval in this bench.
//!
//! **Finished jobs are kept**: apalis' default `persist_results` writes each task's status
//! (`Done`), attempts, result and `done_at` onto its row and never deletes it (River keeps its
//! `completed` rows too; fang, in the bench's retention mode, deletes its tasks). The drain ends
//! when every task of the run is `Done` in the database.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::{
    BackendExt, BoxDynError, Strategy, TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerContext,
};
use apalis_postgres::{Config, PostgresStorage};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgPoolOptions};

use super::{begin, end};
use crate::{
    counters::Meter,
    driver::BenchError,
    figure::{Figure, Op},
    queue_bench::{Retention, Workload, drain_timeout},
    run_prefix,
    scratch::Scratch,
};

/// The queue (apalis' `job_type`) the bench's tasks go to.
pub const QUEUE: &str = "bench_noop";
/// How often an idle apalis worker looks for tasks (River's poll interval in this bench).
pub const POLL: Duration = Duration::from_millis(50);

/// Tasks worked by the current drain: apalis calls a plain `async fn`, so it counts in a static.
static DONE: AtomicUsize = AtomicUsize::new(0);

/// apalis' no-op task.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ApalisNoop {
    /// The task's number in its run.
    pub n: u64,
}

async fn noop(_task: ApalisNoop) -> Result<(), BoxDynError> {
    DONE.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Runs the workload on apalis in the fresh database `db`, each timed step counted there (apalis
/// runs on sqlx, so no statement count: `pg_stat_statements` or nothing). apalis keeps finished
/// rows and has no deleting mode: `--retention delete` is refused.
pub fn run(db: &Scratch, w: &Workload, settle: Duration) -> Result<Vec<Figure>, BenchError> {
    if w.retention == Retention::Delete {
        return Err(
            "apalis keeps finished tasks (status Done) and has no mode that deletes \
                    them: run it with --retention keep"
                .into(),
        );
    }
    let mut meter = Meter::new(Some(db), None, settle)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(db.url(), w, &mut meter))
}

async fn run_async(url: &str, w: &Workload, meter: &mut Meter) -> Result<Vec<Figure>, BenchError> {
    let pool = connect(url, w.workers + 4).await?;
    if w.warmup > 0 {
        steps(&pool, w, w.warmup, None).await?;
        meter.touch();
    }
    let figures = steps(&pool, w, w.jobs, Some(meter)).await?;
    pool.close().await;
    Ok(figures)
}

/// A pool of `size` connections to apalis' database, migrated by apalis and with its jobs table
/// emptied, so every run starts alike.
pub async fn connect(url: &str, size: usize) -> Result<PgPool, BenchError> {
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(size)?)
        .connect(url)
        .await?;
    PostgresStorage::setup(&pool).await?;
    sqlx::query("TRUNCATE apalis.jobs").execute(&pool).await?;
    Ok(pool)
}

/// apalis' storage for the bench's queue.
pub fn storage<T>(pool: &PgPool) -> PostgresStorage<T> {
    PostgresStorage::new(pool).with_config(Config::default().queue(QUEUE))
}

/// Pushes `jobs` tasks one by one, `jobs` more with `push_bulk`, and works off the `2 × jobs`
/// with a fresh worker.
async fn steps(
    pool: &PgPool,
    w: &Workload,
    jobs: usize,
    mut meter: Option<&mut Meter>,
) -> Result<Vec<Figure>, BenchError> {
    let figure = |op, jobs, batch, elapsed, note, counts| Figure {
        system: "apalis",
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
    let probes = meter
        .as_ref()
        .map_or_else(|| Arc::new(AtomicU64::new(0)), |m| m.probes());
    let mut sink = storage::<ApalisNoop>(pool);
    let mut figures = Vec::with_capacity(3);

    let mark = begin(&mut meter)?;
    let start = Instant::now();
    for n in 0..jobs {
        sink.push(ApalisNoop { n: n as u64 }).await?;
    }
    let elapsed = start.elapsed();
    let counts = end(&mut meter, mark)?;
    figures.push(figure(Op::EnqueueSingle, jobs, None, elapsed, None, counts));

    let mark = begin(&mut meter)?;
    let start = Instant::now();
    let mut n = jobs;
    while n < 2 * jobs {
        let last = (n + w.batch).min(2 * jobs);
        sink.push_bulk((n..last).map(|n| ApalisNoop { n: n as u64 }).collect())
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
    let backend = storage::<ApalisNoop>(pool).poll_with_strategy(Strategy::new().interval(POLL));
    // A name per worker: apalis registers it under a session advisory lock that its pooled
    // connection keeps, so a second worker of the same name (the timed one, after the warm-up's)
    // would be refused as `WorkerAlreadyExists`.
    let ctx = WorkerContext::new(&format!("safejob-bench-apalis-{}", run_prefix()));
    let worker = WorkerBuilder::new(&ctx)
        .backend(backend)
        .concurrency(w.workers)
        .build(noop);
    DONE.store(0, Ordering::SeqCst);
    let deadline = Instant::now() + drain_timeout(total);
    let mark = begin(&mut meter)?;
    let start = Instant::now();
    let running = tokio::spawn(worker.run());
    while DONE.load(Ordering::Acquire) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    // Worked is not done: apalis writes completions in batches, at the worker's next poll.
    while unfinished(pool, &probes).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let elapsed = start.elapsed();
    ctx.stop()?;
    running.await??;
    let counts = end(&mut meter, mark)?;
    let left = unfinished(pool, &Arc::new(AtomicU64::new(0))).await?;
    if left > 0 {
        return Err(format!("apalis' drain timed out: {left} of {total} tasks not done").into());
    }
    let worked = DONE.load(Ordering::SeqCst);
    if worked != total {
        return Err(format!("apalis worked {worked} tasks for {total} pushed").into());
    }
    figures.push(figure(
        Op::Drain,
        total,
        None,
        elapsed,
        Some("one worker, concurrency(T), batch_size 10, poll 50 ms; rows kept (Done)"),
        counts,
    ));
    sqlx::query("TRUNCATE apalis.jobs").execute(pool).await?;
    Ok(figures)
}

/// The bench queue's tasks not yet `Done`; one more of the bench's own statements in apalis'
/// database (`probes`).
async fn unfinished(pool: &PgPool, probes: &AtomicU64) -> Result<i64, BenchError> {
    probes.fetch_add(1, Ordering::Relaxed);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status <> 'Done'",
    )
    .bind(QUEUE)
    .fetch_one(pool)
    .await?;
    Ok(n)
}
