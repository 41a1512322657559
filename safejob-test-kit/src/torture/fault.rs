//! Faults: the store as one crashing dispatch sees it ([`FaultStore`]), the job wrapped to pause
//! and crash inside the pipeline, and the failure policy shared across dispatches.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::{
    EffectsContext, EffectsMode, FailurePolicy, FinalFailure, Fingerprint, FingerprintError,
    IdempotencyKey, JobRecord, KeyDigest, KeyError, LeaseStore, Outcome, PerformContext, Retention,
    SafeJob,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        ListQuery, Renewed, StoreError, TxEffects,
    },
};
use serde_json::Value;

use super::{
    config::CrashPoint,
    observe::{EffectCounter, Entry},
    run::{Life, Stats, bump, lock},
};

/// The store as one dispatch sees it: crashes at the store-side points, swallows every call once
/// the dispatch is dead, and counts what committed.
pub(super) struct FaultStore {
    pub(super) inner: Arc<dyn LeaseStore>,
    pub(super) life: Arc<Life>,
    pub(super) regrants: AtomicU64,
}

impl FaultStore {
    /// A finalize as the dispatch sees it: refused once dead, a crash before it reaches the store
    /// and another after it returns, and a record of whether it committed (or is in question).
    pub(super) fn finalize(
        &self,
        lease: &Lease,
        call: impl FnOnce() -> Result<Finalized, StoreError>,
    ) -> Result<Finalized, StoreError> {
        self.life.dead()?;
        self.life.maybe_crash(CrashPoint::AfterPerform);
        let finalized = call();
        match &finalized {
            Ok(Finalized::Committed) => self.life.committed.store(true, Ordering::SeqCst),
            Ok(_) => {}
            Err(_) => *lock(&self.life.uncertain_fence) = Some(lease.fence),
        }
        if !matches!(finalized, Ok(Finalized::EffectsAborted)) {
            self.life.maybe_crash(CrashPoint::AfterFinalize);
        }
        finalized
    }
}

impl LeaseStore for FaultStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.life.dead()?;
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.life.dead()?;
        let acquired = self.inner.acquire(req)?;
        if matches!(&acquired, Acquired::Granted(lease) if lease.attempt > 1) {
            self.regrants.fetch_add(1, Ordering::Relaxed);
        }
        Ok(acquired)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        self.life.dead()?;
        self.inner.renew(lease, ttl)
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        self.finalize(lease, || {
            self.inner
                .finalize_succeeded(lease, result, effects_ttl, retention, hook)
        })
    }

    fn finalize_succeeded_without_effects(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
    ) -> Result<Finalized, StoreError> {
        // Forwarded, not left to the default: the inner store's own one-statement path is what
        // must survive the crashes.
        self.finalize(lease, || {
            self.inner
                .finalize_succeeded_without_effects(lease, result, effects_ttl, retention)
        })
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        self.life.maybe_crash(CrashPoint::AfterPerform);
        self.inner.finalize_failed(lease, failure, retention)
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        self.inner.release(lease, error)
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        let finished = self.inner.finish_effects(lease, outcome);
        if finished.is_err() {
            self.life.finish_failed.store(true, Ordering::SeqCst);
        }
        finished
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        self.life.dead()?;
        self.inner.claim_effects(req)
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        self.life.dead()?;
        self.inner.get(digest)
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        self.life.dead()?;
        self.inner.list(query)
    }

    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        self.life.dead()?;
        self.inner.prune(limit)
    }
}

/// The user's job as one dispatch runs it: crashes and pauses at the job-side points, counts the
/// effects that returned, runs under the key and fingerprint of the job's first calls (a later
/// different answer is remembered by the [`Entry`]), and reads the user's effect counter after
/// `perform`.
pub(super) struct Tortured<'a, J> {
    pub(super) entry: &'a Entry<J>,
    pub(super) counter: Option<&'a dyn EffectCounter>,
    pub(super) life: &'a Life,
    pub(super) pause: Option<&'a dyn Fn()>,
    pub(super) stats: &'a Stats,
}

impl<J: SafeJob> SafeJob for Tortured<'_, J> {
    type Error = J::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        self.entry.stable_key()
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        self.entry.stable_fingerprint()
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.entry.job.lease_ttl()
    }

    fn has_effects(&self) -> bool {
        self.entry.job.has_effects()
    }

    fn effects_mode(&self) -> Option<EffectsMode> {
        self.entry.job.effects_mode()
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.life.maybe_crash(CrashPoint::BeforePerform);
        if let Some(pause) = self.pause {
            bump(&self.stats.pauses);
            pause();
        }
        let performed = self.entry.job.perform(ctx);
        if let Some(counter) = self.counter
            && self.entry.job.has_effects()
        {
            self.entry.after_perform(counter);
        }
        performed
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        self.entry.entering_effects();
        self.life.maybe_crash(CrashPoint::EffectsStart);
        let ran = self.entry.job.on_succeeded_once(ctx);
        if ran.is_ok() {
            let counter = if ctx.is_transactional() {
                &self.life.tx_effects
            } else {
                &self.life.effects_ran
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        self.life.maybe_crash(CrashPoint::EffectsEnd);
        ran
    }
}

/// Shares one failure policy between the runners of every dispatch.
pub(super) struct SharedPolicy(pub(super) Arc<dyn FailurePolicy>);

impl FailurePolicy for SharedPolicy {
    fn decide(
        &self,
        error: &(dyn std::error::Error + 'static),
        attempt: u32,
    ) -> Option<FinalFailure> {
        self.0.decide(error, attempt)
    }
}
