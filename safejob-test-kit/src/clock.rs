//! A clock that moves only when a test says so.

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use safejob_core::Clock;

/// A thread-safe [`Clock`] that stands still until it is moved: tests expire leases by calling
/// [`advance`](ManualClock::advance), never by sleeping.
///
/// Share it as an `Arc<ManualClock>`: one handle goes to the store, the test keeps the other.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use safejob_core::{Clock, MemoryStore};
/// use safejob_test_kit::ManualClock;
///
/// let clock = Arc::new(ManualClock::default());
/// let store = MemoryStore::with_clock(clock.clone());
/// let start = clock.now();
/// clock.advance(Duration::from_secs(31));
/// assert_eq!(clock.now() - start, chrono::Duration::seconds(31));
/// # drop(store);
/// ```
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// The instant [`ManualClock::default`] starts at: 2026-01-01T00:00:00Z.
    pub fn default_start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// A clock standing at the system's current time.
    pub fn starting_now() -> Self {
        Self::new(Utc::now())
    }

    fn lock(&self) -> MutexGuard<'_, DateTime<Utc>> {
        // A DateTime is always whole: a panic elsewhere cannot leave it half-written.
        self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves the clock forward by `by` and returns the new time. Saturates at the latest instant
    /// chrono can represent instead of overflowing.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut now = self.lock();
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        *now = now
            .checked_add_signed(step)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        *now
    }

    /// Puts the clock at `to`, forwards or backwards (a clock step, as NTP might make).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    /// The clock's current time (same as [`Clock::now`]).
    pub fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

impl Default for ManualClock {
    /// A clock standing at [`ManualClock::default_start`], so runs are repeatable.
    fn default() -> Self {
        Self::new(Self::default_start())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, thread};

    use super::*;

    #[test]
    fn advances_sets_and_saturates() {
        let clock = ManualClock::default();
        let start = clock.now();
        assert_eq!(start.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let later = clock.advance(Duration::from_millis(1500));
        assert_eq!(later - start, chrono::Duration::milliseconds(1500));
        clock.set(start);
        assert_eq!(Clock::now(&clock), start);
        assert_eq!(clock.advance(Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            clock.advance(Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }

    #[test]
    fn is_shared_across_threads() {
        let clock = Arc::new(ManualClock::default());
        let start = clock.now();
        thread::scope(|s| {
            for _ in 0..8 {
                let clock = &clock;
                s.spawn(move || {
                    for _ in 0..100 {
                        clock.advance(Duration::from_secs(1));
                    }
                });
            }
        });
        assert_eq!(clock.now() - start, chrono::Duration::seconds(800));
    }
}
