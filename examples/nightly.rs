//! A nightly ETL on SQLite: an hourly schedule kicks off an extract → transform → load → report
//! DAG, one branch of which fails, under the `continue` policy.
//!
//! Run it from the repository root: `cargo run --example nightly`. Nothing to install: the
//! database is a SQLite file under `target/`.
//!
//! 1. Declare an hourly schedule (`0 * * * *`, Europe/Berlin) whose job is `Kickoff`; list its
//!    next runs, and trigger it now instead of waiting for the hour.
//! 2. A worker runs the kickoff, which dispatches the DAG as one batch:
//!    `extract → transform_eu → load_eu`, `extract → transform_us → load_us`, and `report`
//!    after both loads. `transform_us` fails for good; under `continue`, `load_us` and `report`
//!    are cancelled while the EU branch runs to the end.
//! 3. The batch ends `failed`; its callback `Notify` runs once, told the outcome.
//! 4. Print the batch (and its own history from the audit ledger), then each member's state,
//!    result and history: every transition the ledger recorded.

use std::{
    error::Error,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use safejob_core::{
    history::{HistoryStore, Subject},
    queue::{
        EnqueueOptions, JobId, KindOptions, NewJob, Queue, QueueJob, QueueStore, Registry,
        WorkContext, WorkError, Worker,
    },
    schedule::{Schedule, ScheduleStore, Scheduler},
    workflow::{BatchId, BatchPolicy, BatchState},
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The queue the kickoff dispatches into (an example's shortcut: a real service would hold its
/// `Queue` in its own state).
static QUEUE: OnceLock<Queue> = OnceLock::new();
/// The batch the kickoff dispatched.
static BATCH: OnceLock<BatchId> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct EtlError(String);

fn retryable(e: impl std::fmt::Display) -> WorkError<EtlError> {
    WorkError::Retryable(EtlError(e.to_string()))
}

/// The scheduled job: dispatches tonight's DAG.
#[derive(Serialize, Deserialize)]
struct Kickoff;

impl QueueJob for Kickoff {
    const KIND: &'static str = "etl.kickoff";
    type Error = EtlError;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<EtlError>> {
        let queue = QUEUE.get().ok_or_else(|| retryable("no queue"))?;
        let step = |name: &str, fail: bool| Step {
            name: name.into(),
            fail,
        };
        let batch = queue
            .batch("nightly-etl", BatchPolicy::Continue)
            .add("extract", &step("extract", false), &[])
            .add("transform_eu", &step("transform_eu", false), &["extract"])
            .add("transform_us", &step("transform_us", true), &["extract"])
            .add("load_eu", &step("load_eu", false), &["transform_eu"])
            .add("load_us", &step("load_us", false), &["transform_us"])
            .add("report", &step("report", false), &["load_eu", "load_us"])
            .on_finish(&Notify)
            .dispatch()
            .map_err(retryable)?;
        let _ = BATCH.set(batch);
        Ok(())
    }
}

/// One step of the DAG: adds one to the rows its dependencies produced, or fails for good.
#[derive(Serialize, Deserialize)]
struct Step {
    name: String,
    fail: bool,
}

impl QueueJob for Step {
    const KIND: &'static str = "etl.step";
    type Error = EtlError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<EtlError>> {
        if self.fail {
            return Err(WorkError::Fatal(EtlError(format!(
                "{}: the US warehouse refused the connection",
                self.name
            ))));
        }
        // Fan-in: the rows each dependency stored as its result.
        let inputs = ctx.dependency_results().map_err(retryable)?;
        let rows: u64 = inputs
            .values()
            .flatten()
            .filter_map(|v| v["rows"].as_u64())
            .sum();
        let rows = if inputs.is_empty() { 1_000 } else { rows + 1 };
        ctx.set_result(&json!({"step": self.name, "rows": rows}))
            .map_err(retryable)?;
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().max_attempts(2)
    }
}

/// The batch's callback: runs once when the batch ends.
#[derive(Serialize, Deserialize)]
struct Notify;

impl QueueJob for Notify {
    const KIND: &'static str = "etl.notify";
    type Error = EtlError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<EtlError>> {
        let outcome = ctx.batch_outcome().ok_or_else(|| retryable("no outcome"))?;
        println!(
            "callback: batch {} ({}) ended {}: {} succeeded, {} failed, {} cancelled",
            outcome.batch,
            outcome.name,
            outcome.state,
            outcome.counts.succeeded,
            outcome.counts.failed,
            outcome.counts.cancelled
        );
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        path.display()
    ))?);
    store.migrate()?;
    let queue = Arc::new(DieselQueue::new(store));
    let _ = QUEUE.set(Queue::new(queue.clone()));

    // 1. The hourly schedule.
    let kickoff = NewJob::of(&Kickoff, &EnqueueOptions::new())?;
    let schedule = Schedule::cron("nightly-etl", "0 * * * *", "Europe/Berlin", kickoff)?;
    let scheduler = Scheduler::builder(queue.clone() as Arc<dyn ScheduleStore>)
        .schedule(schedule)
        .build()?;
    scheduler.sync()?;
    for info in scheduler.list(3)? {
        let next: Vec<String> = info.next_runs.iter().map(|t| t.to_rfc3339()).collect();
        println!(
            "schedule {} ({} {}): next runs {}",
            info.row.name,
            info.row.expression,
            info.row.time_zone,
            next.join(", ")
        );
    }
    let fired = scheduler.trigger_now("nightly-etl")?;
    println!("triggered nightly-etl now: job {}", fired.id());

    // 2. and 3. One worker runs everything that becomes due.
    let mut registry = Registry::new();
    registry.register::<Kickoff>();
    registry.register::<Step>();
    registry.register::<Notify>();
    let worker = Worker::builder(queue.clone(), registry).build()?;
    while !worker.run_once()?.is_empty() {}

    // 4. The batch and its members.
    let batch = *BATCH.get().ok_or("the kickoff did not run")?;
    let info = queue.batch(batch)?.ok_or("batch not found")?;
    println!(
        "batch {} {:?} under {}: {} ({} members: {} succeeded, {} failed, {} cancelled)",
        info.id,
        info.name,
        info.policy.as_text(),
        info.state,
        info.counts.total,
        info.counts.succeeded,
        info.counts.failed,
        info.counts.cancelled
    );
    for e in queue.history(&Subject::Batch(batch))? {
        if e.entity == safejob_core::history::Entity::Batch {
            println!(
                "  batch {} -> {} at {}",
                e.from_state.as_deref().unwrap_or("(dispatched)"),
                e.to_state,
                e.at.format("%H:%M:%S%.3f")
            );
        }
    }
    for member in queue.batch_members(batch)? {
        let result = member.result.as_ref().map_or(Value::Null, Clone::clone);
        println!(
            "  {:<13} {:<10} result {}",
            member.name, member.state, result
        );
        print_history(&queue, member.job)?;
    }
    // What `continue` promises here (CI runs this example): the EU branch ran to the end, the
    // US branch failed once and its dependents were cancelled.
    let c = info.counts;
    if info.state != BatchState::Failed || (c.succeeded, c.failed, c.cancelled) != (3, 1, 2) {
        return Err(format!("unexpected batch outcome: {info:?}").into());
    }
    Ok(())
}

/// A member's history from the audit ledger: every transition, with the worker or the reason.
fn print_history(queue: &DieselQueue, job: JobId) -> Result<(), Box<dyn Error>> {
    for e in queue.history(&Subject::Job(job))? {
        println!(
            "      {} {:>9} -> {:<9} attempt {} {}",
            e.at.format("%H:%M:%S%.3f"),
            e.from_state.as_deref().unwrap_or("(new)"),
            e.to_state,
            e.attempt.unwrap_or(0),
            e.reason.as_deref().or(e.worker.as_deref()).unwrap_or("")
        );
    }
    Ok(())
}

/// `<dir of this binary>/../safejob-nightly-example.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-nightly-example.db"))
}
