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
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
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
    queue_bench::{drain_timeout, open_ours, wait_for},
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
    let options = if args.allow_duplicates {
        EnqueueOptions::new().allow_duplicates()
    } else {
        EnqueueOptions::new()
    };
    let mut total = 0;
    for _ in 0..args.copies {
        for id in 0..args.keys {
            let payout = Payout {
                run: run_id.to_owned(),
                id,
                work_ms: args.work_ms,
            };
            if !queue.enqueue_guarded(&payout, &options)?.is_duplicate() {
                total += 1;
            }
        }
    }
    let mut registry = Registry::new();
    registry.register_guarded::<Payout>();
    let builder =
        Worker::builder(store.clone(), registry).concurrency(u32::try_from(args.workers)?);
    EFFECTS.store(0, Ordering::SeqCst);
    // Jobs of earlier runs on the same database are not this run's.
    let earlier = queue.snapshot()?.count(QueueState::Succeeded) as usize;
    let start = Instant::now();
    let pool = builder.start()?;
    let finished = Arc::new(AtomicUsize::new(0));
    let drained = wait_for(drain_timeout(total), || {
        // Every copy finished (succeeded, the duplicates included) and nothing in flight.
        let done = queue
            .snapshot()
            .map(|s| (s.count(QueueState::Succeeded) as usize).saturating_sub(earlier))
            .unwrap_or(0);
        finished.store(done, Ordering::Relaxed);
        done >= total && pool.in_flight() == 0
    });
    let elapsed = start.elapsed();
    pool.shutdown(Duration::from_secs(5));
    let effects = EFFECTS.load(Ordering::SeqCst);
    if !drained {
        let done = finished.load(Ordering::Relaxed);
        return Err(format!("drain timed out: {done} of {total} copies succeeded").into());
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
