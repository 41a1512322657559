//! The one source of time.

use std::fmt;

use chrono::{DateTime, Utc};

/// Where a store reads the current time.
///
/// Lease expiry is judged by the *store's* clock (invariant 3): the memory store asks its
/// `Clock`, the diesel stores ask the database inside their statements. Tests inject a manual
/// clock (`safejob_test_kit::ManualClock`) and move time instead of sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
