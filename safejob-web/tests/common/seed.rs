//! Demo data for the web surface's tests, its browser test and the `serve_demo` example: a few
//! jobs in three queues, one dead job, one succeeded job, a batch (a small DAG), a schedule, an
//! action, a key whose effects are in doubt and a worker's heartbeat. Shared through `#[path]`
//! so the example and the tests see the same store.

use std::{error::Error, sync::Arc};

use safejob_core::{
    EffectsContext, IdempotencyKey, KeyError, Outcome, PerformContext, Runner, SafeJob,
    action::{ActionStore, Publisher},
    queue::{
        EnqueueOptions, JobId, KindOptions, NewJob, Queue, QueueJob, Registry, WorkContext,
        WorkError, Worker,
    },
    schedule::{Schedule, ScheduleStore, Scheduler},
    workflow::{BatchId, BatchPolicy},
};
use safejob_diesel::queue::DieselQueue;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A job error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(pub String);

/// Fails fatally: dead on its first attempt.
#[derive(Serialize, Deserialize)]
pub struct Charge {
    /// Amount.
    pub cents: u64,
}

impl QueueJob for Charge {
    const KIND: &'static str = "payment.charge";
    type Error = DemoError;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<DemoError>> {
        Err(WorkError::Fatal(DemoError(format!(
            "card declined for {} cents",
            self.cents
        ))))
    }
    fn options() -> KindOptions {
        KindOptions::new().queue("payments").max_attempts(1)
    }
}

/// Succeeds.
#[derive(Serialize, Deserialize)]
pub struct Audit;

impl QueueJob for Audit {
    const KIND: &'static str = "audit.write";
    type Error = DemoError;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<DemoError>> {
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().queue("audit")
    }
}

/// Waits in the default queue (nobody works it here).
#[derive(Serialize, Deserialize)]
pub struct Email {
    /// Recipient.
    pub to: String,
}

impl QueueJob for Email {
    const KIND: &'static str = "email.send";
    type Error = DemoError;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<DemoError>> {
        Ok(())
    }
}

/// A batch step (never worked here: the batch stays running).
#[derive(Serialize, Deserialize)]
pub struct Step;

impl QueueJob for Step {
    const KIND: &'static str = "etl.step";
    type Error = DemoError;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<DemoError>> {
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().queue("etl")
    }
}

/// A guarded payout whose effects fail: its key ends effects-in-doubt.
pub struct Payout;

impl SafeJob for Payout {
    type Error = DemoError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new("payout/demo-1")
    }
    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, DemoError> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), DemoError> {
        Err(DemoError("the bank timed out after the transfer".into()))
    }
}

/// What the seed made.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    /// The dead job.
    pub dead: JobId,
    /// A pending job.
    pub pending: JobId,
    /// The batch.
    pub batch: BatchId,
}

/// Seeds `queue` (migrated) with the demo data.
pub fn seed(queue: &Arc<DieselQueue>) -> Result<Seeded, Box<dyn Error>> {
    let client = Queue::new(queue.clone());
    let pending = client
        .enqueue(&Email {
            to: "ada@example.com".into(),
        })?
        .id();
    client.enqueue(&Email {
        to: "bob@example.com".into(),
    })?;
    let dead = client.enqueue(&Charge { cents: 1999 })?.id();
    client.enqueue(&Audit)?;

    let mut registry = Registry::new();
    registry.register::<Charge>().register::<Audit>();
    let worker = Worker::builder(queue.clone(), registry)
        .id("demo-worker")
        .queues(["payments", "audit"])
        .build()?;
    worker.drain(10)?;
    worker.heartbeat()?;

    let batch = client
        .batch("nightly-etl", BatchPolicy::Continue)
        .add("extract", &Step, &[])
        .add("transform", &Step, &["extract"])
        .add("load_eu", &Step, &["transform"])
        .add("load_us", &Step, &["transform"])
        .dispatch()?;

    let tick = NewJob::of(&Audit, &EnqueueOptions::new())?;
    Scheduler::builder(queue.clone() as Arc<dyn ScheduleStore>)
        .schedule(Schedule::cron("hourly-audit", "0 * * * *", "UTC", tick)?)
        .build()?
        .sync()?;

    Publisher::new(queue.clone() as Arc<dyn ActionStore>)
        .action("email.welcome")
        .payload_value(json!({"user": 7}))
        .publish()?;

    let runner = Runner::builder(queue.store().clone())
        .worker_id("demo-runner")
        .build()?;
    // The effects fail: the run reports an error and the key is left in doubt, as intended.
    let _ = runner.run(&Payout);

    Ok(Seeded {
        dead,
        pending,
        batch,
    })
}
