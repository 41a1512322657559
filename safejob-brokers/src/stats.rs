//! Counters a consumer keeps, shared by every consumer of this crate.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{RunKind, Settle};

/// What one or more consumers did, counted as they go (cheap to share: atomics).
#[derive(Debug, Default)]
pub struct Stats {
    deliveries: AtomicUsize,
    redeliveries: AtomicUsize,
    succeeded: AtomicUsize,
    replayed: AtomicUsize,
    retried: AtomicUsize,
    dead_lettered: AtomicUsize,
    acked: AtomicUsize,
}

/// A reading of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Deliveries handed to the consumers (redeliveries included).
    pub deliveries: usize,
    /// Of those, deliveries the broker marked as redelivered (reclaimed, requeued, or
    /// delivered again after an ack wait).
    pub redeliveries: usize,
    /// Runs that performed the job and finalized it succeeded (at most one per key).
    pub succeeded: usize,
    /// Runs answered with a stored outcome: duplicates absorbed.
    pub replayed: usize,
    /// Deliveries handed back for a later retry.
    pub retried: usize,
    /// Deliveries moved to the dead-letter destination.
    pub dead_lettered: usize,
    /// Deliveries acknowledged (dead-lettered ones included).
    pub acked: usize,
}

impl Stats {
    /// Counts a delivery; `redelivered` when the broker says it delivered it before.
    pub fn delivered(&self, redelivered: bool) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if redelivered {
            self.redeliveries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts what the guard answered.
    pub fn ran(&self, kind: RunKind) {
        match kind {
            RunKind::Succeeded => self.succeeded.fetch_add(1, Ordering::Relaxed),
            RunKind::Replayed => self.replayed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// Counts a settlement the broker confirmed.
    pub fn settled(&self, settle: &Settle) {
        let counter = match settle {
            Settle::Ack => &self.acked,
            Settle::Retry { .. } => &self.retried,
            Settle::DeadLetter { .. } => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                &self.dead_lettered
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        StatsSnapshot {
            deliveries: get(&self.deliveries),
            redeliveries: get(&self.redeliveries),
            succeeded: get(&self.succeeded),
            replayed: get(&self.replayed),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            acked: get(&self.acked),
        }
    }
}
