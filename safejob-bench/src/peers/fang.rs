//! fang 0.11 running the queue workload through its blocking (diesel + r2d2) queue and worker
//! pool.
//!
//! fang's blocking queue inserts one task per call and has no multi-row insert, so the batched
//! step runs `--batch` of its inserts in one transaction on one connection (one commit per batch,
//! one statement per task). Its `WorkerPool` starts T threads that fetch one task at a time
//! (`FOR UPDATE SKIP LOCKED`), run it and then, with `--retention delete`, delete it (fang's
//! default, `RetentionMode::RemoveAll`; the drain ends when `fang_tasks` is empty) or, with
//! `--retention keep`, mark it `finished` (`RetentionMode::KeepAll`; the drain ends when every
//! task is `finished`). The pool's threads cannot be stopped (fang restarts them forever), so
//! they idle, polling every 100 ms, until the process exits: fang runs last. So that this polling
//! does not count as the drain's work, the drain's counts are read right after the drain, with
//! fang's server processes ended (`pg_terminate_backend`): a backend publishes its counts when it
//! exits, so no settle wait is needed.

use std::{
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use chrono::Utc;
use diesel::{
    Connection, PgConnection, QueryableByName, RunQueryDsl,
    r2d2::{ConnectionManager, CustomizeConnection, Pool},
    sql_types::BigInt,
};
use fang::{
    FangError, Queue, Queueable, RetentionMode, Runnable, SleepParams, Worker, WorkerPool,
    run_migrations_postgres, runnable::COMMON_TYPE, typetag,
};
use serde::{Deserialize, Serialize};

use crate::{
    counters::{Counts, Meter, StatementCounter},
    driver::BenchError,
    figure::{Figure, Op},
    queue_bench::{Retention, Workload, drain_timeout, wait_for},
    scratch::Scratch,
};

/// Counts the statements of fang's pooled connections (fang runs on diesel).
#[derive(Debug)]
struct Counted(StatementCounter);

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for Counted {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.set_instrumentation(self.0.clone());
        Ok(())
    }
}

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

/// fang's retention mode for `retention`.
fn mode(retention: Retention) -> RetentionMode {
    match retention {
        Retention::Keep => RetentionMode::KeepAll,
        Retention::Delete => RetentionMode::RemoveAll,
    }
}

/// Runs the workload on fang in the fresh database `db`, each timed step counted there.
pub fn run(db: &Scratch, w: &Workload, settle: Duration) -> Result<Vec<Figure>, BenchError> {
    let url = db.url();
    let mut conn = PgConnection::establish(url)?;
    run_migrations_postgres(&mut conn)?;
    let counter = StatementCounter::default();
    let mut meter = Meter::new(Some(db), Some(counter.clone()), settle)?;
    let probes = meter.probes();
    let size = u32::try_from(w.workers + 1)?;
    let pool = Pool::builder()
        .max_size(size)
        .min_idle(Some(size))
        .connection_customizer(Box::new(Counted(counter)))
        .build(ConnectionManager::<PgConnection>::new(url))?;
    let queue = Queue::builder().connection_pool(pool).build();

    if w.warmup > 0 {
        enqueue(&queue, w.warmup, w.batch, None)?;
        // Untimed, on this thread: fang's pool, once started, can never be stopped.
        let worker = Worker::<Queue>::builder()
            .queue(queue.clone())
            .retention_mode(mode(w.retention))
            .build();
        while let Some(task) = queue.fetch_and_touch_task(COMMON_TYPE.to_owned())? {
            worker
                .run(&task)
                .map_err(|e| format!("fang's warm-up task failed: {}", e.description))?;
        }
    }

    let figure = |op, jobs, batch, elapsed, note, counts| Figure {
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
        retention: w.retention.as_str(),
        counts,
    };
    meter.touch();
    let [(single, single_counts), (batched, batched_counts)] =
        enqueue(&queue, w.jobs, w.batch, Some(&mut meter))?;
    let mut figures = vec![
        figure(Op::EnqueueSingle, w.jobs, None, single, None, single_counts),
        figure(
            Op::EnqueueBatched,
            w.jobs,
            Some(w.batch),
            batched,
            Some("no multi-row insert: one transaction of single inserts per batch"),
            batched_counts,
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
        .retention_mode(mode(w.retention))
        .number_of_workers(u32::try_from(w.workers)?)
        .build();
    DONE.store(0, Ordering::SeqCst);
    // The bench's polls go through a connection of their own, closed before the counts are read
    // (a backend publishes its counts when it exits), so the polls can be taken off exactly.
    let mut polls = PgConnection::establish(url)?;
    let mark = meter.begin()?;
    let start = Instant::now();
    pool.start()
        .map_err(|e| format!("fang's worker pool did not start: {}", e.description))?;
    let worked = wait_for(drain_timeout(total), || {
        DONE.load(Ordering::Acquire) >= total
    });
    // Worked is not finalized: wait until every task's delete has committed.
    let mut failure = None;
    let finalized = worked
        && wait_for(drain_timeout(total), || {
            match remaining(&mut polls, w.retention, &probes) {
                Ok(n) => n == 0,
                Err(e) => {
                    failure = Some(e);
                    true
                }
            }
        });
    let elapsed = start.elapsed();
    drop(polls);
    // fang's idle workers go on polling: end their server processes (from the server's admin
    // database, so the statement is not counted), which publishes their counts at once, and read
    // the counts before the pool has reconnected and polled much.
    let mut admin = PgConnection::establish(db.admin_url())?;
    diesel::sql_query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind::<diesel::sql_types::Text, _>(db.name())
        .execute(&mut admin)?;
    thread::sleep(Duration::from_millis(200));
    let counts = meter.end_after(mark, Duration::ZERO)?;
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
        Some(match w.retention {
            Retention::Keep => "blocking WorkerPool, RetentionMode::KeepAll",
            Retention::Delete => "blocking WorkerPool, RetentionMode::RemoveAll",
        }),
        counts,
    ));
    Ok(figures)
}

/// Inserts `jobs` tasks one by one, then `jobs` more in transactions of `batch`; the two times
/// and, with a `meter`, the two steps' counts.
fn enqueue(
    queue: &Queue,
    jobs: usize,
    batch: usize,
    mut meter: Option<&mut Meter>,
) -> Result<[(Duration, Counts); 2], BenchError> {
    let begin = |m: &mut Option<&mut Meter>| m.as_mut().map(|m| m.begin()).transpose();
    let end = |m: &mut Option<&mut Meter>, mark| -> Result<Counts, BenchError> {
        match (m.as_mut(), mark) {
            (Some(m), Some(mark)) => Ok(m.end(mark)?),
            _ => Ok(Counts::default()),
        }
    };
    let mark = begin(&mut meter)?;
    let start = Instant::now();
    for n in 0..jobs {
        queue.insert_task(&FangNoop { n: n as u64 })?;
    }
    let single = start.elapsed();
    let single_counts = end(&mut meter, mark)?;

    let mark = begin(&mut meter)?;
    let start = Instant::now();
    let mut n = jobs;
    while n < 2 * jobs {
        let last = (n + batch).min(2 * jobs);
        let mut conn = queue.get_connection()?;
        conn.transaction::<_, fang::QueueError, _>(|conn| {
            for n in n..last {
                Queue::insert_query(conn, &FangNoop { n: n as u64 }, Utc::now())?;
            }
            Ok(())
        })?;
        n = last;
    }
    let batched = start.elapsed();
    let batched_counts = end(&mut meter, mark)?;
    Ok([(single, single_counts), (batched, batched_counts)])
}

/// Tasks not yet finished (kept) or not yet deleted; one more of the bench's own statements in
/// fang's database (`probes`).
fn remaining(
    conn: &mut PgConnection,
    retention: Retention,
    probes: &AtomicU64,
) -> Result<i64, BenchError> {
    let sql = match retention {
        Retention::Keep => "SELECT count(*) AS n FROM fang_tasks WHERE state <> 'finished'",
        Retention::Delete => "SELECT count(*) AS n FROM fang_tasks",
    };
    probes.fetch_add(1, Ordering::SeqCst);
    let rows: Vec<Count> = diesel::sql_query(sql).load(conn)?;
    Ok(rows.first().map_or(0, |c| c.n))
}
