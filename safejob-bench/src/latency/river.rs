//! River's start latency: one client in a fresh database made for the run (River's schema made by
//! its own migrations), one queue of `max_workers = 1`, the queue bench's fetch cooldown (1 ms) and poll
//! interval (50 ms), woken by River's `LISTEN`/`NOTIFY`. Inserts go through the same client.

use std::time::Duration;

use riverqueue::{
    BoxError, Client, Job, JobArgs, QueueConfig, WorkContext, WorkOutcome, Workers,
    database::PostgresDatabase, sqlx::postgres::PgPoolOptions,
};
use serde::{Deserialize, Serialize};

use super::{Pacing, measure as sample, started};
use crate::{
    driver::BenchError,
    peers::river::{create_schema, schema},
};

/// River's probe job.
#[derive(Clone, Debug, Deserialize, JobArgs, Serialize)]
#[river(kind = "bench_latency")]
struct RiverProbe {
    n: u64,
}

/// The start latencies of River's jobs, nanoseconds; `url` is a fresh database.
pub fn measure(url: &str, pacing: &Pacing) -> Result<Vec<u64>, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pool = runtime.block_on(async {
        let pool = PgPoolOptions::new().max_connections(4).connect(url).await?;
        create_schema(&pool).await?;
        Ok::<_, BenchError>(pool)
    })?;
    let mut workers = Workers::new();
    workers.add_fn(|_ctx: WorkContext, job: Job<RiverProbe>| async move {
        started(job.args.n);
        Ok::<_, BoxError>(WorkOutcome::Complete)
    })?;
    let client = Client::builder(PostgresDatabase::new(pool.clone()).with_schema(schema()?))
        .workers(workers)
        .fetch_cooldown(Duration::from_millis(1))
        .queue(
            "default",
            QueueConfig::new(1).with_fetch_poll_interval(Duration::from_millis(50)),
        )
        .build()?;
    let mut handle = runtime.block_on(async { client.start() })?;
    let samples = sample(pacing, |n| {
        runtime.block_on(async { client.insert(RiverProbe { n }).await })?;
        Ok(())
    });
    runtime.block_on(async {
        handle.stop().await?;
        pool.close().await;
        Ok::<_, BenchError>(())
    })?;
    samples
}
