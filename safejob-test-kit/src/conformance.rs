//! The `LeaseStore` conformance suite: one set of behaviours every store must show.

use std::{sync::Arc, time::Duration};

use safejob_core::LeaseStore;

/// A store under test, and a way to make time pass as that store sees it.
///
/// The memory store's harness advances a `ManualClock`; a SQL store's harness shifts its stored
/// lease expiries back by the same amount (the database clock itself cannot be moved). Neither
/// sleeps.
pub trait StoreHarness {
    /// The store under test. Each call returns the same store.
    fn store(&self) -> Arc<dyn LeaseStore>;
    /// Makes `by` pass on the store's clock, as far as leases are concerned.
    fn advance(&self, by: Duration);
}
