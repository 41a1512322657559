//! Shared pieces of the examples: an at-least-once dispatcher that delivers every job several
//! times from several threads, the way a real queue does on a bad day.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use safejob_core::{Disposition, Report, Runner, SafeJob};

/// What a dispatch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    /// Deliveries that ran the job to success (at most one per key).
    pub succeeded: usize,
    /// Deliveries answered with the stored result: duplicates absorbed.
    pub absorbed: usize,
    /// Deliveries that found the key busy and were redelivered later.
    pub busy: usize,
    /// Deliveries that failed with a retryable error and were redelivered later.
    pub retried: usize,
}

/// Delivers each of `jobs` `copies` times, shuffled by `seed`, from `threads` threads through
/// `runner`. A delivery that finds the key busy or fails retryably goes to the back of the queue,
/// as a queue's redelivery would. Returns an error on any other report.
pub fn dispatch<J: SafeJob + Sync>(
    runner: &Runner,
    jobs: &[J],
    copies: usize,
    threads: usize,
    seed: u64,
) -> Result<DispatchStats, String> {
    let mut deliveries: Vec<usize> = (0..jobs.len())
        .flat_map(|i| std::iter::repeat_n(i, copies))
        .collect();
    shuffle(&mut deliveries, seed);
    let queue = Mutex::new(VecDeque::from(deliveries));
    let counters: [AtomicUsize; 4] = Default::default();
    let [succeeded, absorbed, busy, retried] = &counters;
    let outcome = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    loop {
                        let Some(i) = queue.lock().map_err(|e| e.to_string())?.pop_front() else {
                            return Ok(());
                        };
                        let (counter, redeliver) = match runner.run(&jobs[i]) {
                            Ok(Report::Succeeded { .. }) => (succeeded, false),
                            Ok(Report::AlreadySucceeded { .. }) => (absorbed, false),
                            Ok(Report::Busy { .. }) => (busy, true),
                            Err(e) if e.disposition() != Disposition::DeadLetter => (retried, true),
                            Ok(other) => return Err(format!("unexpected report {other:?}")),
                            Err(e) => return Err(format!("job failed for good: {e}")),
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if redeliver {
                            queue.lock().map_err(|e| e.to_string())?.push_back(i);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect::<Result<Vec<()>, String>>()
    });
    outcome?;
    Ok(DispatchStats {
        succeeded: succeeded.load(Ordering::Relaxed),
        absorbed: absorbed.load(Ordering::Relaxed),
        busy: busy.load(Ordering::Relaxed),
        retried: retried.load(Ordering::Relaxed),
    })
}

/// A deterministic Fisher–Yates shuffle driven by a small LCG (the examples need no `rand`).
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }
}

/// The wallet examples' data and their final check, shared by the SQLite and PostgreSQL
/// versions.
pub mod wallet {
    use std::collections::BTreeMap;

    use crate::DispatchStats;

    /// The wallets charged.
    pub const WALLETS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    /// Each wallet's balance before any charge, in cents.
    pub const OPENING_BALANCE: i64 = 100_000;
    /// How many charges there are.
    pub const CHARGES: usize = 60;
    /// How many times the queue delivers each charge.
    pub const DELIVERIES_PER_CHARGE: usize = 4;
    /// Dispatching threads.
    pub const THREADS: usize = 8;

    /// One charge: debit `cents` from `wallet`, once per `id`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ChargeSpec {
        /// The charge id (the idempotency key's second part).
        pub id: String,
        /// The wallet debited.
        pub wallet: &'static str,
        /// The amount in cents.
        pub cents: i64,
    }

    /// The same 60 charges on every run, so a second run can prove nothing is charged twice.
    pub fn charges() -> Vec<ChargeSpec> {
        (0..CHARGES)
            .map(|i| ChargeSpec {
                id: format!("ch_{i:04}"),
                wallet: WALLETS[i % WALLETS.len()],
                cents: 100 + 25 * (i as i64 % 7),
            })
            .collect()
    }

    /// What the database says after the dispatch.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Observed {
        /// `(wallet, balance in cents)` for every wallet.
        pub balances: Vec<(String, i64)>,
        /// Rows in the ledger.
        pub ledger_rows: i64,
        /// Distinct charge ids in the ledger.
        pub distinct_charges: i64,
    }

    /// Prints the figures and checks that every charge was applied exactly once.
    pub fn report(stats: &DispatchStats, observed: &Observed) -> Result<(), String> {
        let specs = charges();
        let mut expected: BTreeMap<&str, i64> =
            WALLETS.iter().map(|w| (*w, OPENING_BALANCE)).collect();
        for charge in &specs {
            *expected.entry(charge.wallet).or_default() -= charge.cents;
        }
        println!(
            "deliveries: {} ({} charges x {DELIVERIES_PER_CHARGE}) on {THREADS} threads",
            specs.len() * DELIVERIES_PER_CHARGE,
            specs.len()
        );
        println!(
            "charged now: {}, duplicates absorbed: {}, redelivered while busy: {}, after a retryable error: {}",
            stats.succeeded, stats.absorbed, stats.busy, stats.retried
        );
        let mut all_match = observed.balances.len() == WALLETS.len();
        for (wallet, balance) in &observed.balances {
            let want = expected.get(wallet.as_str()).copied().unwrap_or_default();
            all_match &= want == *balance;
            println!(
                "  {wallet:<6} balance {:>8.2}  (expected {:>8.2}) {}",
                *balance as f64 / 100.0,
                want as f64 / 100.0,
                if want == *balance { "ok" } else { "WRONG" }
            );
        }
        println!(
            "ledger rows: {} for {} distinct charges; charged twice: {}",
            observed.ledger_rows,
            observed.distinct_charges,
            observed.ledger_rows - observed.distinct_charges
        );
        let n = specs.len() as i64;
        if !all_match || observed.ledger_rows != n || observed.distinct_charges != n {
            return Err("a charge was lost or applied twice".into());
        }
        println!("every charge applied exactly once. Run again: nothing is charged twice.");
        Ok(())
    }
}

// Adapting a queue we do not own: a Redis Streams consumer group behind the guard, shared by the
// `redis_streams` example and test (documented in the module itself).
#[cfg(feature = "redis")]
pub mod redis_queue;

// Charging from async handlers: an axum service whose handlers run and enqueue guarded jobs
// through safejob-tokio, shared by the `axum_charge` example and test.
#[cfg(feature = "axum")]
pub mod charges_api;
