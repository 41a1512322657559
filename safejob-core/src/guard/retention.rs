//! How long a key's guard row is kept once it is terminal, and what keeping it buys.
//!
//! A `succeeded` or `failed` row is what makes a duplicate replay instead of running again. While
//! the row exists, every later run of its key gets the stored result (or failure), and a reuse of
//! the key with other parameters is refused as a conflict. Once the row is pruned, the key is
//! unknown to the store: **the same key runs again**, as a first run, and a fingerprint conflict
//! is no longer detected. That is the replay window, and [`Retention`] sets it.
//!
//! The default is [`Retention::Forever`]: rows are never pruned. For money that is the only safe
//! default without knowing the caller: a pruned payment key that a client, a broker or an operator
//! sends again is charged again. Stripe keeps idempotency keys for 24 hours and AWS Powertools
//! one hour, because their callers retry within that window; safejob cannot know how late your
//! duplicates arrive (a broker's redelivery after an outage, a batch replayed the next week), so
//! it does not pick a window for you. Choose one longer than the latest a duplicate of a key can
//! arrive, per runner or worker pool ([`RunnerBuilder::guard_retention`],
//! [`WorkerBuilder::guard_retention`]) or per job ([`SafeJob::guard_retention`]), and prune
//! ([`LeaseStore::prune`], [`Runner::prune_guards`], [`Queue::prune`]) on a schedule.
//!
//! [`RunnerBuilder::guard_retention`]: crate::runner::RunnerBuilder::guard_retention
//! [`WorkerBuilder::guard_retention`]: crate::queue::WorkerBuilder::guard_retention
//! [`SafeJob::guard_retention`]: crate::SafeJob::guard_retention
//! [`LeaseStore::prune`]: crate::LeaseStore::prune
//! [`Runner::prune_guards`]: crate::Runner::prune_guards
//! [`Queue::prune`]: crate::queue::Queue::prune

use std::time::Duration;

/// The shortest retention accepted: one second.
pub const MIN_RETENTION: Duration = Duration::from_secs(1);
/// The longest retention accepted: 100 years (36,500 days). Past that, keep rows
/// [`Retention::Forever`].
pub const MAX_RETENTION: Duration = Duration::from_secs(36_500 * 24 * 3600);

/// How long a key's guard row is kept after it became terminal (`succeeded` or `failed`).
///
/// The store writes the row's `retain_until` (its own clock's now + the duration) in the same
/// atomic step that makes the row terminal; [`LeaseStore::prune`](crate::LeaseStore::prune)
/// deletes rows whose `retain_until` has passed and whose effects are settled. See the
/// [module docs](self) for what pruning gives up.
///
/// ```
/// use std::time::Duration;
/// use safejob_core::Retention;
///
/// assert_eq!(Retention::default(), Retention::Forever);
/// let day = Retention::from(Duration::from_secs(24 * 3600));
/// assert_eq!(day, Retention::For(Duration::from_secs(86_400)));
/// assert!(Retention::For(Duration::ZERO).validated().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Retention {
    /// Never pruned: duplicates of the key replay for as long as the row exists. The default.
    #[default]
    Forever,
    /// Prunable this long after the row became terminal, by the store's clock.
    For(Duration),
}

impl From<Duration> for Retention {
    fn from(duration: Duration) -> Self {
        Self::For(duration)
    }
}

impl Retention {
    /// The retention itself if it is [`Retention::Forever`] or lies within
    /// [`MIN_RETENTION`]..=[`MAX_RETENTION`].
    pub fn validated(self) -> Result<Self, RetentionError> {
        match self {
            Self::Forever => Ok(self),
            Self::For(retention) if retention < MIN_RETENTION => Err(RetentionError::TooShort {
                retention,
                min: MIN_RETENTION,
            }),
            Self::For(retention) if retention > MAX_RETENTION => Err(RetentionError::TooLong {
                retention,
                max: MAX_RETENTION,
            }),
            Self::For(_) => Ok(self),
        }
    }

    /// The duration, or `None` for [`Retention::Forever`].
    pub fn duration(self) -> Option<Duration> {
        match self {
            Self::Forever => None,
            Self::For(duration) => Some(duration),
        }
    }

    /// The retention of one run: the job's own setting when it has one, else `default` (the
    /// runner's or the worker's), validated. The one place this rule lives.
    pub(crate) fn of_run(own: Option<Self>, default: Self) -> Result<Self, RetentionError> {
        own.unwrap_or(default).validated()
    }
}

/// A retention outside the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// Shorter than [`MIN_RETENTION`] (zero included).
    #[error("guard retention {retention:?} is too short; the minimum is {min:?}")]
    TooShort {
        /// The refused retention.
        retention: Duration,
        /// The minimum.
        min: Duration,
    },
    /// Longer than [`MAX_RETENTION`].
    #[error(
        "guard retention {retention:?} is too long; the maximum is {max:?} (keep rows forever \
         instead: Retention::Forever)"
    )]
    TooLong {
        /// The refused retention.
        retention: Duration,
        /// The maximum.
        max: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_forever_is_always_valid() {
        assert_eq!(Retention::Forever.validated(), Ok(Retention::Forever));
        for ok in [MIN_RETENTION, MAX_RETENTION] {
            assert_eq!(Retention::For(ok).validated(), Ok(Retention::For(ok)));
        }
        assert_eq!(
            Retention::For(MIN_RETENTION - Duration::from_nanos(1)).validated(),
            Err(RetentionError::TooShort {
                retention: MIN_RETENTION - Duration::from_nanos(1),
                min: MIN_RETENTION
            })
        );
        assert!(matches!(
            Retention::For(MAX_RETENTION + Duration::from_nanos(1)).validated(),
            Err(RetentionError::TooLong { .. })
        ));
    }

    #[test]
    fn a_jobs_own_retention_wins_over_the_default() {
        let day = Retention::For(Duration::from_secs(86_400));
        let hour = Retention::For(Duration::from_secs(3600));
        assert_eq!(Retention::of_run(None, day), Ok(day));
        assert_eq!(Retention::of_run(Some(hour), day), Ok(hour));
        assert_eq!(
            Retention::of_run(Some(Retention::Forever), day),
            Ok(Retention::Forever)
        );
        assert!(Retention::of_run(Some(Retention::For(Duration::ZERO)), day).is_err());
    }
}
