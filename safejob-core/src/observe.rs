//! Watching runs as they happen: an [`Observer`] set on a [`Runner`](crate::Runner)
//! ([`RunnerBuilder::observer`](crate::RunnerBuilder::observer)) or a queue worker
//! ([`WorkerBuilder::observer`](crate::queue::WorkerBuilder::observer)) hears how each job ended,
//! how long it took, and what the guard answered.
//!
//! Counters of these events (executions per kind, duration histograms, guard outcomes) cannot be
//! read from the store's rows afterwards; `safejob-web`'s `Recorder` implements this trait and
//! serves them on `/metrics`.
//!
//! The calls are made on the thread that runs the job, once per event: keep an implementation
//! cheap (atomic counters) and never block in it.
//!
//! ```
//! use std::{sync::{Arc, atomic::{AtomicU64, Ordering}}, time::Duration};
//! use safejob_core::{*, observe::{Ending, GuardOutcome, Observer}};
//!
//! #[derive(Default)]
//! struct Count { succeeded: AtomicU64, replayed: AtomicU64 }
//! impl Observer for Count {
//!     fn job_ended(&self, _kind: &str, ending: Ending, _elapsed: Duration) {
//!         if ending == Ending::Succeeded {
//!             self.succeeded.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//!     fn guard(&self, outcome: GuardOutcome) {
//!         if outcome == GuardOutcome::Replayed {
//!             self.replayed.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! struct Ping;
//! impl SafeJob for Ping {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> { IdempotencyKey::new("ping") }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//! }
//!
//! let count = Arc::new(Count::default());
//! let runner = Runner::builder(Arc::new(MemoryStore::new())).observer(count.clone()).build()?;
//! runner.run(&Ping)?;
//! runner.run(&Ping)?; // a duplicate: replayed, not executed
//! assert_eq!(count.succeeded.load(Ordering::Relaxed), 1);
//! assert_eq!(count.replayed.load(Ordering::Relaxed), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use crate::queue::Ran;

/// Hears how jobs end and what the guard answers. Every method has a no-op default, so an
/// implementation overrides only what it counts.
pub trait Observer: Send + Sync {
    /// A job ended: once per job a queue worker handled (`kind` is its registered kind), or per
    /// [`Runner::run`](crate::Runner::run) that held the lease (`kind` is the job type's name,
    /// without its module path). `elapsed` is the handler's time on the worker's clock, from
    /// just before the run to just after its completion was written.
    fn job_ended(&self, kind: &str, ending: Ending, elapsed: Duration) {
        let _ = (kind, ending, elapsed);
    }

    /// The guard answered: once per acquire of a guarded run ([`GuardOutcome::Granted`],
    /// [`Replayed`](GuardOutcome::Replayed), [`Busy`](GuardOutcome::Busy),
    /// [`Conflict`](GuardOutcome::Conflict)), and once more when a granted run then lost its
    /// lease ([`GuardOutcome::StaleFinalize`]).
    fn guard(&self, outcome: GuardOutcome) {
        let _ = outcome;
    }
}

/// Observes nothing: the default of runners and workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// What the guard answered a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardOutcome {
    /// The run took the lease and performed the job.
    Granted,
    /// The key had already succeeded or failed: the stored outcome was replayed, nothing ran.
    Replayed,
    /// Another worker held a live lease on the key.
    Busy,
    /// The same key with other parameters (fingerprint): refused.
    Conflict,
    /// The run held the lease, then lost it (taken over after expiry) before its finalize: it
    /// finalized nothing.
    StaleFinalize,
}

impl GuardOutcome {
    /// A stable lower-case name (`granted`, `replayed`, `busy`, `conflict`, `stale_finalize`),
    /// used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Replayed => "replayed",
            Self::Busy => "busy",
            Self::Conflict => "conflict",
            Self::StaleFinalize => "stale_finalize",
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ending {
    /// Succeeded (for a queued duplicate of a succeeded key: completed without running).
    Succeeded,
    /// The attempt failed and the job will be tried again: the queue's `retrying`; a runner's
    /// error handed back to the caller, or its "retry later".
    Retrying,
    /// Given back without counting the attempt (a busy guard, shutdown): the queue's snooze.
    Snoozed,
    /// Failed for good: the queue's dead letter; a runner's finalized failure.
    Dead,
    /// Cancelled by the job itself.
    Cancelled,
    /// The run's lease was lost (reaped or taken over): nothing it did was recorded.
    Stale,
}

impl Ending {
    /// A stable lower-case name (`succeeded`, `retrying`, `snoozed`, `dead`, `cancelled`,
    /// `stale`), used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Snoozed => "snoozed",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Stale => "stale",
        }
    }

    /// Whether the job's attempt counted as an execution whose duration means something (not a
    /// snooze, not a stale completion).
    pub fn ran(self) -> bool {
        !matches!(self, Self::Snoozed | Self::Stale)
    }

    /// How a queue worker's job ended.
    pub fn of_ran(ran: &Ran) -> Self {
        match ran {
            Ran::Succeeded => Self::Succeeded,
            Ran::Retrying { .. } => Self::Retrying,
            Ran::Snoozed { .. } => Self::Snoozed,
            Ran::Dead { .. } => Self::Dead,
            Ran::Cancelled => Self::Cancelled,
            Ran::Stale => Self::Stale,
        }
    }
}

/// The short name of a job type for [`Observer::job_ended`]: `Charge` for `app::jobs::Charge`,
/// `Wrapper` for `app::Wrapper<app::Inner>`. No allocation.
pub(crate) fn short_type_name<J: ?Sized>() -> &'static str {
    let full = std::any::type_name::<J>();
    let bare = full.split('<').next().unwrap_or(full);
    bare.rsplit("::").next().unwrap_or(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Charge;
    struct Wrapper<T>(T);

    #[test]
    fn short_type_names_drop_paths_and_generics() {
        assert_eq!(short_type_name::<Charge>(), "Charge");
        assert_eq!(short_type_name::<Wrapper<Charge>>(), "Wrapper");
        assert_eq!(short_type_name::<dyn Observer>(), "Observer");
    }

    #[test]
    fn only_attempts_that_ran_count_their_duration() {
        assert!(Ending::Succeeded.ran());
        assert!(Ending::Dead.ran());
        assert!(!Ending::Snoozed.ran());
        assert!(!Ending::Stale.ran());
    }
}
