//! The job trait and the contexts its two halves run in.

use std::{any::Any, time::Duration, time::Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome, Retention,
    runner::EffectsMode,
    store::{Lease, LeaseStore, Renewed, StoreError},
};

/// A unit of work that must succeed at most once per idempotency key.
///
/// * [`perform`](SafeJob::perform) is the retry-safe part: it may run several times across
///   attempts (after a crash, a lost lease or a retryable error), so it must only do things that
///   are safe to repeat — computing, reading, calling APIs that take an idempotency key.
/// * [`on_succeeded_once`](SafeJob::on_succeeded_once) holds the irreversible effects. It runs only
///   in the worker whose finalize won, and never automatically a second time.
///
/// ```
/// use safejob_core::{EffectsContext, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob};
///
/// struct SendReceipt { order: u64 }
///
/// impl SafeJob for SendReceipt {
///     type Error = std::io::Error;
///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
///         IdempotencyKey::from_parts(["receipt", &self.order.to_string()])
///     }
///     fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
///         Ok(Outcome::json(serde_json::json!({"order": self.order})))
///     }
///     fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
///         // send the e-mail here
///         Ok(())
///     }
/// }
/// ```
pub trait SafeJob {
    /// The job's own error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The idempotency key: equal keys are the same piece of work.
    fn key(&self) -> Result<IdempotencyKey, KeyError>;

    /// Fingerprint of the parameters; a reused key with other parameters is a key conflict.
    /// Defaults to none, so a `Runner` run of the same key with other parameters replays the
    /// first one's result: opt in with one line, `Fingerprint::of_json("kind", self).map(Some)`
    /// for a serializable job ([`Fingerprint::of_json`]). A queued
    /// [`GuardedJob`](crate::queue::GuardedJob) is fingerprinted by default
    /// ([`GuardedJob::guard_fingerprint`](crate::queue::GuardedJob::guard_fingerprint)).
    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Ok(None)
    }

    /// Lease length for this job; defaults to the runner's.
    fn lease_ttl(&self) -> Option<Duration> {
        None
    }

    /// Where this job's [`on_succeeded_once`](SafeJob::on_succeeded_once) runs. Defaults to
    /// `None`: the setting of the [`Runner`](crate::Runner) or the queue's
    /// [`Worker`](crate::queue::Worker) / [`WorkerPool`](crate::queue::WorkerPool) that runs it
    /// ([`RunnerBuilder::effects`](crate::runner::RunnerBuilder::effects),
    /// [`WorkerBuilder::effects`](crate::queue::WorkerBuilder::effects)). `Some(mode)` wins over
    /// that setting, so a transactional charge and an after-commit webhook run on one runner or
    /// one pool.
    ///
    /// [`EffectsMode::Transactional`] needs a store with transactions (the diesel stores, the
    /// memory store); a job without effects ([`has_effects`](SafeJob::has_effects) `false`) never
    /// calls `on_succeeded_once`, whatever its mode.
    ///
    /// ```
    /// use safejob_core::{EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob};
    ///
    /// struct PostLedger { entry: u64 }
    ///
    /// impl SafeJob for PostLedger {
    ///     type Error = std::io::Error;
    ///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
    ///         IdempotencyKey::from_parts(["ledger", &self.entry.to_string()])
    ///     }
    ///     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
    ///         Ok(Outcome::done())
    ///     }
    ///     // Its ledger row commits with `succeeded`, whatever the runner's default.
    ///     fn effects_mode(&self) -> Option<EffectsMode> {
    ///         Some(EffectsMode::Transactional)
    ///     }
    /// }
    /// ```
    fn effects_mode(&self) -> Option<EffectsMode> {
        None
    }

    /// How long this key's row is kept once it succeeded or failed, after which
    /// [`LeaseStore::prune`] may delete it and **the same key runs again** (the replay window
    /// ends; see [`Retention`]). Defaults to `None`: the setting of the
    /// [`Runner`](crate::Runner) or the queue's worker or pool that runs it
    /// ([`RunnerBuilder::guard_retention`](crate::runner::RunnerBuilder::guard_retention),
    /// [`WorkerBuilder::guard_retention`](crate::queue::WorkerBuilder::guard_retention)), itself
    /// [`Retention::Forever`] by default. `Some(retention)` wins over that setting, in both
    /// directions: a webhook may keep its key a day on a runner that keeps charges forever, and a
    /// charge may say `Some(Retention::Forever)` on a runner that prunes after a day.
    ///
    /// A retention outside [`MIN_RETENTION`](crate::MIN_RETENTION)..=
    /// [`MAX_RETENTION`](crate::MAX_RETENTION) is refused before the job runs:
    /// [`RunError::InvalidRetention`](crate::RunError::InvalidRetention) from a `Runner`, before
    /// anything is stored; in the queue a dead job (`ErrorKind::Fatal`) whose guard, taken with
    /// the claim, is released at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safejob_core::{IdempotencyKey, KeyError, Outcome, PerformContext, Retention, SafeJob};
    ///
    /// struct NotifyShipped { order: u64 }
    ///
    /// impl SafeJob for NotifyShipped {
    ///     type Error = std::io::Error;
    ///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
    ///         IdempotencyKey::from_parts(["shipped", &self.order.to_string()])
    ///     }
    ///     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
    ///         Ok(Outcome::done())
    ///     }
    ///     // Duplicates of a shipping notice arrive within minutes; a day is plenty.
    ///     fn guard_retention(&self) -> Option<Retention> {
    ///         Some(Retention::For(Duration::from_secs(24 * 3600)))
    ///     }
    /// }
    /// ```
    fn guard_retention(&self) -> Option<Retention> {
        None
    }

    /// The retry-safe work. May renew the lease through `ctx` while it runs.
    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error>;

    /// The irreversible effects, run once, by the winner, after the key is finalized succeeded
    /// (or inside the finalize transaction in transactional mode). Defaults to nothing.
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let _ = ctx;
        Ok(())
    }

    /// Whether this job has effects. Defaults to `true`.
    ///
    /// Return `false` for a job whose whole work is in [`perform`](SafeJob::perform) (it calls
    /// an API that takes an idempotency key, say) and whose `on_succeeded_once` does nothing. The
    /// runner then finalizes the key with its effects already `done`, in one step
    /// ([`LeaseStore::finalize_succeeded_without_effects`]: one statement in autocommit on the
    /// SQL stores), instead of finalizing and then recording the effects — one durable commit
    /// fewer in after-commit mode and no transaction in transactional mode — and **never calls
    /// `on_succeeded_once`**, in either effects mode.
    fn has_effects(&self) -> bool {
        true
    }
}

/// A renewal from inside `perform` did not extend the lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenewError {
    /// Our fence was superseded (the lease expired and another worker took it), or the row is no
    /// longer running. Stop working: this attempt can no longer finalize.
    #[error("lease lost: fence {fence} was superseded")]
    LeaseLost {
        /// The fence this attempt held.
        fence: u64,
    },
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `perform` sees: the key, the attempt, and its lease, which it may renew.
pub struct PerformContext<'a> {
    key: &'a IdempotencyKey,
    store: &'a dyn LeaseStore,
    lease: Lease,
    ttl: Duration,
    last_renewed: Instant,
    lost: bool,
}

impl<'a> PerformContext<'a> {
    pub(crate) fn new(
        key: &'a IdempotencyKey,
        store: &'a dyn LeaseStore,
        lease: Lease,
        ttl: Duration,
    ) -> Self {
        Self {
            key,
            store,
            lease,
            ttl,
            last_renewed: Instant::now(),
            lost: false,
        }
    }

    pub(crate) fn into_parts(self) -> (Lease, bool) {
        (self.lease, self.lost)
    }

    /// The key being worked on.
    pub fn key(&self) -> &IdempotencyKey {
        self.key
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.lease.attempt
    }

    /// The fence token of this attempt: pass it to downstream systems that can reject stale
    /// writers.
    pub fn fence(&self) -> u64 {
        self.lease.fence
    }

    /// When the lease ends, by the store clock, as of the last grant or renewal.
    pub fn lease_expires_at(&self) -> DateTime<Utc> {
        self.lease.expires_at
    }

    /// Whether a renewal found the lease lost.
    pub fn lease_lost(&self) -> bool {
        self.lost
    }

    /// Extends the lease to the store's now + TTL.
    pub fn renew(&mut self) -> Result<DateTime<Utc>, RenewError> {
        match self.store.renew(&self.lease, self.ttl)? {
            Renewed::Extended(until) => {
                self.lease.expires_at = until;
                self.last_renewed = Instant::now();
                tracing::trace!(key = %self.key.digest(), fence = self.lease.fence, %until, "lease renewed");
                Ok(until)
            }
            Renewed::Stale => {
                self.lost = true;
                tracing::warn!(key = %self.key.digest(), fence = self.lease.fence, "lease lost during perform");
                Err(RenewError::LeaseLost {
                    fence: self.lease.fence,
                })
            }
        }
    }

    /// Renews when a third of the TTL has passed since the last grant or renewal; call it often
    /// from a long loop. The local monotonic clock only decides *when to ask*; the store decides
    /// whether the lease is still ours.
    pub fn keep_alive(&mut self) -> Result<(), RenewError> {
        if self.lost {
            return Err(RenewError::LeaseLost {
                fence: self.lease.fence,
            });
        }
        if self.last_renewed.elapsed() >= self.ttl / 3 {
            self.renew()?;
        }
        Ok(())
    }
}

/// What `on_succeeded_once` sees.
pub struct EffectsContext<'a> {
    pub(crate) key: &'a IdempotencyKey,
    pub(crate) attempt: u32,
    pub(crate) fence: u64,
    pub(crate) result: Option<&'a Value>,
    pub(crate) tx: Option<&'a mut dyn Any>,
}

impl EffectsContext<'_> {
    /// The key that succeeded.
    pub fn key(&self) -> &IdempotencyKey {
        self.key
    }

    /// The attempt that won.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The winning fence: a stable, unique number for this key's success.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The result `perform` stored.
    pub fn result(&self) -> Option<&Value> {
        self.result
    }

    /// Whether the effects run inside the finalize transaction.
    pub fn is_transactional(&self) -> bool {
        self.tx.is_some()
    }

    /// The finalize transaction's handle, in transactional mode, if it is a `T` (for the diesel
    /// stores: their connection type; for the memory store: [`crate::memory::MemoryTx`]).
    pub fn transaction<T: Any>(&mut self) -> Option<&mut T> {
        self.tx.as_deref_mut().and_then(|tx| tx.downcast_mut::<T>())
    }
}
