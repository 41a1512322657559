//! apalis' start latency: its storage in a fresh database made for the run (migrated by apalis) with
//! `with_pubsub()`, apalis' `LISTEN`/`NOTIFY` wake-up, and one worker of `concurrency(1)`. Tasks
//! are pushed through a storage on the same pool.

use apalis::prelude::{BoxDynError, TaskSink, WorkerBuilder, WorkerBuilderExt, WorkerContext};

use super::{Pacing, measure as sample, started};
use crate::{
    driver::BenchError,
    peers::apalis::{ApalisNoop, connect, storage},
};

async fn probe(task: ApalisNoop) -> Result<(), BoxDynError> {
    started(task.n);
    Ok(())
}

/// The start latencies of apalis' tasks, nanoseconds; `url` is a fresh database.
pub fn measure(url: &str, pacing: &Pacing) -> Result<Vec<u64>, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pool = runtime.block_on(connect(url, 4))?;
    let ctx = WorkerContext::new("safejob-bench-apalis-latency");
    let worker = WorkerBuilder::new(&ctx)
        .backend(storage::<ApalisNoop>(&pool).with_pubsub())
        .concurrency(1)
        .build(probe);
    let running = runtime.spawn(worker.run());
    let mut sink = storage::<ApalisNoop>(&pool);
    let samples = sample(pacing, |n| {
        runtime.block_on(sink.push(ApalisNoop { n }))?;
        Ok(())
    });
    ctx.stop()?;
    runtime.block_on(async {
        running.await??;
        pool.close().await;
        Ok::<_, BenchError>(())
    })?;
    samples
}
