//! `safejob-bench duplicates`: how long guarded duplicates take to drain.
//!
//! K payouts, each enqueued C times with `enqueue_guarded` (copies interleaved: every key once,
//! then every key again, …), drained by a pool of W workers. By default the enqueue deduplicates
//! by the idempotency key, so the later copies insert nothing; with `--allow-duplicates` every
//! copy is inserted and the guard settles them as they run. Every inserted copy must finish
//! `succeeded` (the first to win the key runs it, the others complete as duplicates) and the
//! payouts' effects must run exactly K times. Prints one JSON line with the wall time of the
//! drain.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use clap::Args;
use safejob_core::{
    EffectsContext, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    queue::{EnqueueOptions, GuardedJob, Queue, QueueState, Registry, Worker},
};
use serde::{Deserialize, Serialize};

use crate::{
    driver::BenchError,
    queue_bench::{drain_timeout, open_ours},
};

/// Arguments of `duplicates`.
#[derive(Debug, Args)]
pub struct DuplicatesArgs {
    /// Database URL (`memory://` for the in-process queue).
    #[arg(long)]
    url: String,
    /// Distinct payouts (idempotency keys).
    #[arg(long, default_value_t = 50)]
    keys: usize,
    /// Copies of each payout enqueued.
    #[arg(long, default_value_t = 3)]
    copies: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// How long each payout's `perform` works, in milliseconds.
    #[arg(long, default_value_t = 5)]
    work_ms: u64,
    /// Insert every copy (`EnqueueOptions::allow_duplicates`) instead of deduplicating.
    #[arg(long)]
    allow_duplicates: bool,
}

/// `on_succeeded_once` runs of the current drain.
static EFFECTS: AtomicUsize = AtomicUsize::new(0);

/// A payout; `run` names the run, so keys never collide across runs on one database.
#[derive(Serialize, Deserialize)]
struct Payout {
    run: String,
    id: usize,
    work_ms: u64,
}

impl SafeJob for Payout {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["bench-payout", &self.run, &self.id.to_string()])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        std::thread::sleep(Duration::from_millis(self.work_ms));
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        EFFECTS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "bench_payout";
}

/// Runs the drain and prints its JSON line.
pub fn run(args: &DuplicatesArgs, run_id: &str) -> Result<(), BenchError> {
    let (store, backend) = open_ours(&args.url, args.workers)?;
    let queue = Queue::new(store.clone());
    // A queue of this run's own: the pool claims nothing left by earlier runs on the database.
    let options = EnqueueOptions::new().queue(run_id);
    let options = if args.allow_duplicates {
        options.allow_duplicates()
    } else {
        options
    };
    let mut inserted = Vec::new();
    for _ in 0..args.copies {
        for id in 0..args.keys {
            let payout = Payout {
                run: run_id.to_owned(),
                id,
                work_ms: args.work_ms,
            };
            let answer = queue.enqueue_guarded(&payout, &options)?;
            if !answer.is_duplicate() {
                inserted.push(answer.id());
            }
        }
    }
    let total = inserted.len();
    let mut registry = Registry::new();
    registry.register_guarded::<Payout>();
    let builder = Worker::builder(store.clone(), registry)
        .queues([run_id])
        .concurrency(u32::try_from(args.workers)?);
    EFFECTS.store(0, Ordering::SeqCst);
    let start = Instant::now();
    let pool = builder.start()?;
    // Idle: a claim found nothing due, nothing runs, and no snoozed copy is about to be due.
    let idle = pool.wait_idle(drain_timeout(total));
    let elapsed = start.elapsed();
    pool.shutdown(Duration::from_secs(5));
    let effects = EFFECTS.load(Ordering::SeqCst);
    let mut done = 0;
    for id in &inserted {
        if queue
            .get(*id)?
            .is_some_and(|job| job.state == QueueState::Succeeded)
        {
            done += 1;
        }
    }
    if !idle || done != total {
        return Err(format!("drain incomplete: {done} of {total} copies succeeded").into());
    }
    if effects != args.keys {
        return Err(format!("effects ran {effects} times for {} keys", args.keys).into());
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "duplicates",
            "backend": backend,
            "keys": args.keys,
            "copies": args.copies,
            "workers": args.workers,
            "work_ms": args.work_ms,
            "allow_duplicates": args.allow_duplicates,
            "inserted": total,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "effects": effects,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The drain finishes every copy and counts the effects once per key (a run whose effects
    /// ran for a duplicate, or whose copies did not all succeed, is an error, not a figure).
    #[test]
    fn the_memory_queue_drains_every_copy_and_runs_each_payout_once() {
        for allow_duplicates in [false, true] {
            let args = DuplicatesArgs {
                url: "memory://".to_owned(),
                keys: 5,
                copies: 2,
                workers: 1,
                work_ms: 0,
                allow_duplicates,
            };
            run(&args, &format!("test-{allow_duplicates}")).expect("a clean drain");
            assert_eq!(EFFECTS.load(Ordering::SeqCst), 5);
        }
    }
}
