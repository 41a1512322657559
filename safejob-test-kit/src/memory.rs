//! The memory store on a manual clock, as a [`StoreHarness`].

use std::{sync::Arc, time::Duration};

use safejob_core::{LeaseStore, MemoryStore};

use crate::{ManualClock, StoreHarness};

/// A fresh [`MemoryStore`] on a [`ManualClock`]: the harness the conformance suite and the
/// torture harness use for the core's own store, and the quickest way to test a job in memory.
///
/// ```
/// use std::time::Duration;
/// use safejob_test_kit::{MemoryHarness, StoreHarness};
///
/// let harness = MemoryHarness::new();
/// let before = harness.clock().now();
/// harness.advance(Duration::from_secs(60)); // leases expire; nothing sleeps
/// assert_eq!(harness.clock().now() - before, chrono::Duration::seconds(60));
/// let _store = harness.store();
/// ```
#[derive(Debug, Clone)]
pub struct MemoryHarness {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

impl MemoryHarness {
    /// An empty store on a clock standing at [`ManualClock::default_start`].
    pub fn new() -> Self {
        Self::with_clock(Arc::new(ManualClock::default()))
    }

    /// An empty store on `clock`.
    pub fn with_clock(clock: Arc<ManualClock>) -> Self {
        Self {
            store: Arc::new(MemoryStore::with_clock(clock.clone())),
            clock,
        }
    }

    /// The store, with its concrete type.
    pub fn memory_store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The clock the store reads.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }
}

impl Default for MemoryHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreHarness for MemoryHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}
