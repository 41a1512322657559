//! What the runner tests share: a configurable job, runners on a memory store, row and listing
//! reads, and a store decorator that injects store faults. Each test file uses a part of it, hence
//! `dead_code` is allowed here.

#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::Retention;
use safejob_core::{
    EffectsContext, EffectsMode, FinalFailure, Fingerprint, FingerprintError, IdempotencyKey,
    JobRecord, JobState, KeyDigest, KeyError, LeaseStore, ListFilter, ListQuery, Outcome,
    PerformContext, RenewError, Runner, SafeJob, StoreError,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        Renewed, TxEffects,
    },
};
use safejob_test_kit::{EffectProbe, MemoryHarness, StoreHarness};
use serde_json::{Value, json};

pub const TTL: Duration = Duration::from_secs(30);
pub const PAST_TTL: Duration = Duration::from_secs(31);

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("card declined")]
    Declined,
    #[error(transparent)]
    Renew(#[from] RenewError),
}

pub type PerformFn<'a> =
    Box<dyn Fn(&mut PerformContext<'_>) -> Result<Outcome, JobError> + Send + Sync + 'a>;
pub type EffectsFn<'a> =
    Box<dyn Fn(&mut EffectsContext<'_>) -> Result<(), JobError> + Send + Sync + 'a>;

/// A job built from closures; its probe counts effects that returned `Ok`.
pub struct Job<'a> {
    pub key: String,
    pub fingerprint: Option<u8>,
    pub ttl: Option<Duration>,
    pub perform: PerformFn<'a>,
    pub effects: EffectsFn<'a>,
    pub has_effects: bool,
    pub effects_mode: Option<EffectsMode>,
    pub retention: Option<Retention>,
    pub probe: EffectProbe,
}

impl<'a> Job<'a> {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            fingerprint: Some(1),
            ttl: None,
            perform: Box::new(|_| Ok(Outcome::json(json!({"paid": 250})))),
            effects: Box::new(|_| Ok(())),
            has_effects: true,
            effects_mode: None,
            retention: None,
            probe: EffectProbe::new(),
        }
    }

    pub fn perform(
        mut self,
        f: impl Fn(&mut PerformContext<'_>) -> Result<Outcome, JobError> + Send + Sync + 'a,
    ) -> Self {
        self.perform = Box::new(f);
        self
    }

    pub fn effects(
        mut self,
        f: impl Fn(&mut EffectsContext<'_>) -> Result<(), JobError> + Send + Sync + 'a,
    ) -> Self {
        self.effects = Box::new(f);
        self
    }

    pub fn without_effects(mut self) -> Self {
        self.has_effects = false;
        self
    }

    /// The job's own effects mode (`None`: the runner's).
    pub fn effects_mode(mut self, mode: Option<EffectsMode>) -> Self {
        self.effects_mode = mode;
        self
    }

    /// The job's own guard retention (`None`: the runner's).
    pub fn retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }

    pub fn fingerprint(mut self, n: Option<u8>) -> Self {
        self.fingerprint = n;
        self
    }

    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::new(self.key.clone()).unwrap()
    }

    pub fn digest(&self) -> KeyDigest {
        *self.idempotency_key().digest()
    }
}

impl SafeJob for Job<'_> {
    type Error = JobError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.clone())
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Ok(self.fingerprint.map(|n| Fingerprint::of_bytes(&[n])))
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        (self.perform)(ctx)
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        (self.effects)(ctx)?;
        self.probe.record(ctx.key());
        Ok(())
    }

    fn has_effects(&self) -> bool {
        self.has_effects
    }

    fn effects_mode(&self) -> Option<EffectsMode> {
        self.effects_mode
    }

    fn guard_retention(&self) -> Option<Retention> {
        self.retention
    }
}

pub fn runner_on(store: Arc<dyn LeaseStore>, worker: &str) -> Runner {
    Runner::builder(store)
        .worker_id(worker)
        .default_ttl(TTL)
        .build()
        .unwrap()
}

pub fn runner(harness: &MemoryHarness, worker: &str) -> Runner {
    runner_on(harness.store(), worker)
}

pub fn row(harness: &MemoryHarness, digest: &KeyDigest) -> JobRecord {
    harness.store().get(digest).unwrap().expect("a row")
}

pub fn listed(harness: &MemoryHarness, filter: ListFilter) -> Vec<KeyDigest> {
    harness
        .store()
        .list(&ListQuery::new(filter, 1000))
        .unwrap()
        .into_iter()
        .map(|r| r.digest)
        .collect()
}

// A store decorator that injects store faults.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The first finalize applies, then reports `AmbiguousCommit`.
    AmbiguousAfterApplying,
    /// The first finalize reports `AmbiguousCommit` without applying.
    AmbiguousWithoutApplying,
    /// Acquire answers `AlreadyFailed` with a row that has no failure stored.
    CorruptFailedRow,
    /// Acquire cannot reach the database.
    Unreachable,
}

pub struct Faulty {
    pub inner: Arc<dyn LeaseStore>,
    pub fault: Fault,
    pub ambiguous: AtomicU32,
}

impl Faulty {
    pub fn new(harness: &MemoryHarness, fault: Fault) -> Arc<Self> {
        Arc::new(Self {
            inner: harness.store(),
            fault,
            ambiguous: AtomicU32::new(0),
        })
    }
}

pub fn ambiguous() -> StoreError {
    StoreError::AmbiguousCommit {
        source: "connection reset during COMMIT".into(),
    }
}

impl LeaseStore for Faulty {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        match self.fault {
            Fault::Unreachable => Err(StoreError::Unreachable {
                target: "db.internal/safejob".into(),
                source: "connection refused".into(),
            }),
            Fault::CorruptFailedRow => match self.inner.acquire(req)? {
                Acquired::Granted(lease) => {
                    let mut row = self.inner.get(&lease.digest)?.expect("row");
                    row.state = JobState::Failed;
                    Ok(Acquired::AlreadyFailed(row))
                }
                other => Ok(other),
            },
            _ => self.inner.acquire(req),
        }
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
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
        let first = self.ambiguous.load(Ordering::SeqCst) == 0;
        match self.fault {
            Fault::AmbiguousAfterApplying if first => {
                self.ambiguous.fetch_add(1, Ordering::SeqCst);
                let applied =
                    self.inner
                        .finalize_succeeded(lease, result, effects_ttl, retention, hook)?;
                assert_eq!(applied, Finalized::Committed);
                Err(ambiguous())
            }
            Fault::AmbiguousWithoutApplying if first => {
                self.ambiguous.fetch_add(1, Ordering::SeqCst);
                Err(ambiguous())
            }
            _ => self
                .inner
                .finalize_succeeded(lease, result, effects_ttl, retention, hook),
        }
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        self.inner.finalize_failed(lease, failure, retention)
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.inner.release(lease, error)
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        self.inner.finish_effects(lease, outcome)
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        self.inner.claim_effects(req)
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        self.inner.get(digest)
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        self.inner.list(query)
    }

    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune(limit)
    }
}
