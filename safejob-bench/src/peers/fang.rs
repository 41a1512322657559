//! fang 0.11 running the queue workload through its blocking (diesel + r2d2) queue and worker
//! pool.
//!
//! fang's blocking queue inserts one task per call and has no multi-row insert, so the batched
//! step runs `--batch` of its inserts in one transaction on one connection (one commit per batch,
//! one statement per task). Its `WorkerPool` starts T threads that fetch one task at a time
//! (`FOR UPDATE SKIP LOCKED`), run it and, in fang's default retention mode, delete it; the drain
//! ends when `fang_tasks` is empty. The pool's threads cannot be stopped (fang restarts them
//! forever), so they idle, polling every 100 ms, until the process exits: fang runs last.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use chrono::Utc;
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl,
    r2d2::{ConnectionManager, Pool},
    sql_types::BigInt,
};
use fang::{
    FangError, Queue, Queueable, RetentionMode, Runnable, SleepParams, Worker, WorkerPool,
    run_migrations_postgres, runnable::COMMON_TYPE, typetag,
};
use serde::{Deserialize, Serialize};

use super::ensure_database;
use crate::{
    driver::BenchError,
    figure::{Figure, Op},
    queue_bench::{Workload, drain_timeout, wait_for},
};

/// fang's database on the server.
pub const DATABASE: &str = "bench_fang";

/// Tasks worked by the drain: fang builds each task from its JSON, so it counts in a static.
static DONE: AtomicUsize = AtomicUsize::new(0);

/// fang's no-op task.
#[derive(Serialize, Deserialize)]
struct FangNoop {
    n: u64,
}

#[typetag::serde]
impl Runnable for FangNoop {
    fn run(&self, _queue: &dyn Queueable) -> Result<(), FangError> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs the workload on fang; `url` names the server (its database is replaced by
/// [`DATABASE`]).
pub fn run(url: &str, w: &Workload) -> Result<Vec<Figure>, BenchError> {
    let url = ensure_database(url, DATABASE)?;
    let mut conn = PgConnection::establish(&url)?;
    run_migrations_postgres(&mut conn)?;
    diesel::sql_query("TRUNCATE fang_tasks").execute(&mut conn)?;
    let size = u32::try_from(w.workers + 1)?;
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .build(ConnectionManager::<PgConnection>::new(url.as_str()))?;
    let queue = Queue::builder().connection_pool(pool).build();

    if w.warmup > 0 {
        enqueue(&queue, w.warmup, w.batch)?;
        // Untimed, on this thread: fang's pool, once started, can never be stopped.
        let worker = Worker::<Queue>::builder()
            .queue(queue.clone())
            .retention_mode(RetentionMode::RemoveAll)
            .build();
        while let Some(task) = queue.fetch_and_touch_task(COMMON_TYPE.to_owned())? {
            worker
                .run(&task)
                .map_err(|e| format!("fang's warm-up task failed: {}", e.description))?;
        }
    }

    let figure = |op, jobs, batch, elapsed, note| Figure {
        system: "fang",
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
    let (single, batched) = enqueue(&queue, w.jobs, w.batch)?;
    let mut figures = vec![
        figure(Op::EnqueueSingle, w.jobs, None, single, None),
        figure(
            Op::EnqueueBatched,
            w.jobs,
            Some(w.batch),
            batched,
            Some("no multi-row insert: one transaction of single inserts per batch"),
        ),
    ];

    let total = 2 * w.jobs;
    let sleep = SleepParams {
        sleep_period: Duration::from_millis(10),
        max_sleep_period: Duration::from_millis(100),
        min_sleep_period: Duration::from_millis(10),
        sleep_step: Duration::from_millis(10),
    };
    let mut pool = WorkerPool::<Queue>::builder()
        .queue(queue.clone())
        .sleep_params(sleep)
        .retention_mode(RetentionMode::RemoveAll)
        .number_of_workers(u32::try_from(w.workers)?)
        .build();
    DONE.store(0, Ordering::SeqCst);
    let start = Instant::now();
    pool.start()
        .map_err(|e| format!("fang's worker pool did not start: {}", e.description))?;
    let worked = wait_for(drain_timeout(total), || {
        DONE.load(Ordering::Acquire) >= total
    });
    // Worked is not finalized: wait until every task's delete has committed.
    let mut failure = None;
    let finalized = worked
        && wait_for(drain_timeout(total), || match remaining(&mut conn) {
            Ok(n) => n == 0,
            Err(e) => {
                failure = Some(e);
                true
            }
        });
    let elapsed = start.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    if !finalized {
        let done = DONE.load(Ordering::SeqCst);
        return Err(format!("fang's drain timed out: {done} of {total} tasks worked").into());
    }
    // Let a worker that raced the last fetch settle before reading the count.
    thread::sleep(Duration::from_millis(20));
    let done = DONE.load(Ordering::SeqCst);
    if done != total {
        return Err(format!("fang worked {done} tasks for {total} inserted").into());
    }
    figures.push(figure(
        Op::Drain,
        total,
        None,
        elapsed,
        Some("blocking WorkerPool, RetentionMode::RemoveAll"),
    ));
    Ok(figures)
}

/// Inserts `jobs` tasks one by one, then `jobs` more in transactions of `batch`; the two times.
fn enqueue(queue: &Queue, jobs: usize, batch: usize) -> Result<(Duration, Duration), BenchError> {
    let start = Instant::now();
    for n in 0..jobs {
        queue.insert_task(&FangNoop { n: n as u64 })?;
    }
    let single = start.elapsed();

    let start = Instant::now();
    let mut n = jobs;
    while n < 2 * jobs {
        let end = (n + batch).min(2 * jobs);
        let mut conn = queue.get_connection()?;
        conn.transaction::<_, fang::QueueError, _>(|conn| {
            for n in n..end {
                Queue::insert_query(conn, &FangNoop { n: n as u64 }, Utc::now())?;
            }
            Ok(())
        })?;
        n = end;
    }
    Ok((single, start.elapsed()))
}

/// Tasks left in `fang_tasks`.
fn remaining(conn: &mut PgConnection) -> Result<i64, BenchError> {
    let rows: Vec<Count> = diesel::sql_query("SELECT count(*) AS n FROM fang_tasks").load(conn)?;
    Ok(rows.first().map_or(0, |c| c.n))
}
