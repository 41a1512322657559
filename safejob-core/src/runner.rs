//! The pipeline: acquire → perform → finalize → on_succeeded_once.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tracing::{debug, info, info_span, warn};

use crate::{
    EffectsContext, FailurePolicy, FinalFailure, IdempotencyKey, JobRecord, NeverFinalize, Outcome,
    PerformContext, SafeJob,
    report::{Report, RunError, TtlError},
    store::{
        AcquireRequest, Acquired, EffectsAborted, EffectsClaim, EffectsOutcome, FenceCheck,
        Finalized, JobState, Lease, LeaseStore, StoreError,
    },
};

/// The shortest lease accepted.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The longest lease accepted: a lease is a liveness promise, not a lock for days.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default lease TTL. Defaults to 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Checks that `ttl` is within [`MIN_TTL`]..=[`MAX_TTL`].
pub fn validate_ttl(ttl: Duration) -> Result<Duration, TtlError> {
    if ttl < MIN_TTL {
        Err(TtlError::TooShort { ttl, min: MIN_TTL })
    } else if ttl > MAX_TTL {
        Err(TtlError::TooLong { ttl, max: MAX_TTL })
    } else {
        Ok(ttl)
    }
}

/// Where `on_succeeded_once` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EffectsMode {
    /// After the finalize commits, in the winning worker. A crash or error inside leaves the key
    /// effects-in-doubt. The default.
    #[default]
    AfterCommit,
    /// Inside the finalize transaction, on the store's transaction handle: the effects' own
    /// writes commit atomically with `succeeded`, or not at all.
    Transactional,
}

/// A runner could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The default TTL is out of range.
    #[error("invalid default ttl: {0}")]
    InvalidTtl(#[from] TtlError),
    /// The worker id is empty or longer than 128 bytes.
    #[error("worker id must be 1 to 128 bytes, got {len}")]
    InvalidWorkerId {
        /// Its length.
        len: usize,
    },
}

/// Builds a [`Runner`].
pub struct RunnerBuilder {
    store: Arc<dyn LeaseStore>,
    worker_id: Option<String>,
    default_ttl: Duration,
    policy: Arc<dyn FailurePolicy>,
    effects: EffectsMode,
}

impl RunnerBuilder {
    /// Names this worker in the rows it leases. Defaults to `worker-<pid>-<n>`.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Lease TTL for jobs that do not set their own. Defaults to 30 seconds.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// What to do with errors from `perform`. Defaults to [`NeverFinalize`].
    pub fn failure_policy(mut self, policy: impl FailurePolicy + 'static) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Where effects run. Defaults to [`EffectsMode::AfterCommit`].
    pub fn effects(mut self, mode: EffectsMode) -> Self {
        self.effects = mode;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Runner, ConfigError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let worker_id = self.worker_id.unwrap_or_else(|| {
            format!(
                "worker-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        if worker_id.is_empty() || worker_id.len() > 128 {
            return Err(ConfigError::InvalidWorkerId {
                len: worker_id.len(),
            });
        }
        Ok(Runner {
            store: self.store,
            worker_id,
            default_ttl: validate_ttl(self.default_ttl)?,
            policy: self.policy,
            effects: self.effects,
        })
    }
}

/// Runs the exactly-once pipeline for one job at a time; cheap to share across threads.
///
/// ```
/// use std::sync::Arc;
/// use safejob_core::*;
///
/// struct Charge { id: u32, cents: u64 }
/// impl SafeJob for Charge {
///     type Error = std::io::Error;
///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
///         IdempotencyKey::from_parts(["charge", &self.id.to_string()])
///     }
///     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
///         Ok(Outcome::json(serde_json::json!({"charged": self.cents})))
///     }
/// }
///
/// let runner = Runner::builder(Arc::new(MemoryStore::new())).build()?;
/// let first = runner.run(&Charge { id: 7, cents: 500 })?;
/// assert!(matches!(first, Report::Succeeded { attempt: 1, .. }));
/// let again = runner.run(&Charge { id: 7, cents: 500 })?;
/// assert!(matches!(again, Report::AlreadySucceeded { .. }));
/// assert_eq!(again.disposition(), Disposition::Ack);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Runner {
    store: Arc<dyn LeaseStore>,
    worker_id: String,
    default_ttl: Duration,
    policy: Arc<dyn FailurePolicy>,
    effects: EffectsMode,
}

/// What [`Runner::recover_effects`] and [`Runner::confirm_effects`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// The in-doubt effects were claimed and resolved (re-run, or confirmed by an operator).
    Resolved {
        /// The fence of the recovery claim.
        fence: u64,
    },
    /// Nothing to recover: the key's effects are not in doubt.
    NotInDoubt(Box<JobRecord>),
    /// No row for the key.
    Missing,
}

/// The guarded pieces of one run that every step needs.
struct Attempt<'a> {
    key: &'a IdempotencyKey,
    lease: Lease,
    ttl: Duration,
}

impl Runner {
    /// Starts a builder on `store`.
    pub fn builder(store: Arc<dyn LeaseStore>) -> RunnerBuilder {
        RunnerBuilder {
            store,
            worker_id: None,
            default_ttl: DEFAULT_TTL,
            policy: Arc::new(NeverFinalize),
            effects: EffectsMode::AfterCommit,
        }
    }

    /// The worker id written into leases.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// Runs the pipeline for `job` once and reports. A panic in `perform` releases the lease (so
    /// the next attempt starts at once) and a panic in effects marks them in doubt; the panic then
    /// continues to unwind into the caller.
    pub fn run<J: SafeJob + ?Sized>(&self, job: &J) -> Result<Report, RunError<J::Error>> {
        let key = job.key()?;
        let fingerprint = job.fingerprint()?;
        let ttl = validate_ttl(job.lease_ttl().unwrap_or(self.default_ttl))?;
        let span = info_span!("safejob.run", key = %key.digest(), worker = %self.worker_id);
        let _entered = span.enter();

        let req = AcquireRequest {
            digest: *key.digest(),
            fingerprint,
            owner: &self.worker_id,
            ttl,
        };
        let lease = match self.store.acquire(&req)? {
            Acquired::Granted(lease) => lease,
            Acquired::AlreadySucceeded(row) => {
                debug!(fence = row.fence, "duplicate of a succeeded key: replayed");
                return Ok(Report::AlreadySucceeded { result: row.result });
            }
            Acquired::AlreadyFailed(row) => {
                debug!(fence = row.fence, "duplicate of a failed key: replayed");
                let failure = row.failure.ok_or_else(|| StoreError::CorruptRow {
                    digest: key.digest().short(),
                    detail: "state is failed but no failure is stored".into(),
                })?;
                return Ok(Report::AlreadyFailed { failure });
            }
            Acquired::Busy { owner, until } => {
                let now = self.store.now()?;
                let retry_after = (until - now).to_std().unwrap_or_default();
                debug!(?owner, %until, "key busy");
                return Ok(Report::Busy {
                    owner,
                    until,
                    retry_after,
                });
            }
            Acquired::KeyConflict { stored, given } => {
                warn!("key conflict: same key, different fingerprint");
                return Err(RunError::KeyConflict {
                    digest: *key.digest(),
                    stored,
                    given,
                });
            }
        };
        debug!(
            fence = lease.fence,
            attempt = lease.attempt,
            "lease granted"
        );

        let mut ctx = PerformContext::new(&key, &*self.store, lease, ttl);
        let performed = catch_unwind(AssertUnwindSafe(|| job.perform(&mut ctx)));
        let (lease, lost) = ctx.into_parts();
        let attempt = Attempt {
            key: &key,
            lease,
            ttl,
        };
        let outcome = match performed {
            Err(panic) => {
                self.release(&attempt, "perform panicked");
                resume_unwind(panic);
            }
            Ok(_) if lost => return Err(attempt.lease_lost()),
            Ok(Err(error)) => return self.on_perform_error(&attempt, error),
            Ok(Ok(outcome)) => outcome,
        };
        match outcome {
            Outcome::Succeeded { result } => self.succeed(job, &attempt, result),
            Outcome::FailedPermanently(failure) => self.fail(&attempt, failure),
            Outcome::RetryLater { after } => {
                self.release(&attempt, "perform asked to retry later");
                Ok(Report::RetryLater {
                    after,
                    attempt: attempt.lease.attempt,
                })
            }
        }
    }

    fn on_perform_error<E: std::error::Error + Send + Sync + 'static>(
        &self,
        attempt: &Attempt<'_>,
        error: E,
    ) -> Result<Report, RunError<E>> {
        match self.policy.decide(&error, attempt.lease.attempt) {
            Some(failure) => self.fail(attempt, failure),
            None => {
                debug!(attempt = attempt.lease.attempt, %error, "perform failed; handing the error back");
                self.release(attempt, &error.to_string());
                Err(RunError::Job {
                    source: error,
                    attempt: attempt.lease.attempt,
                })
            }
        }
    }

    fn fail<E: std::error::Error + 'static>(
        &self,
        attempt: &Attempt<'_>,
        failure: FinalFailure,
    ) -> Result<Report, RunError<E>> {
        match self.store.finalize_failed(&attempt.lease, &failure)? {
            FenceCheck::Applied => {
                info!(code = %failure.code, attempt = attempt.lease.attempt, "finalized failed");
                Ok(Report::Failed {
                    failure,
                    attempt: attempt.lease.attempt,
                })
            }
            FenceCheck::Stale => Err(attempt.lease_lost()),
        }
    }

    fn succeed<J: SafeJob + ?Sized>(
        &self,
        job: &J,
        attempt: &Attempt<'_>,
        result: Option<Value>,
    ) -> Result<Report, RunError<J::Error>> {
        let lease = &attempt.lease;
        let report = || Report::Succeeded {
            result: result.clone(),
            attempt: lease.attempt,
        };
        let has_effects = job.has_effects();
        if has_effects && self.effects == EffectsMode::Transactional {
            return self.succeed_transactional(job, attempt, result.as_ref(), report);
        }
        let finalized = if has_effects {
            self.store
                .finalize_succeeded(lease, result.as_ref(), attempt.ttl, None)
        } else {
            self.store
                .finalize_succeeded_without_effects(lease, result.as_ref(), attempt.ttl)
        };
        match self.settle(attempt, finalized)? {
            Finalized::Committed => {}
            Finalized::Stale => return Err(attempt.lease_lost()),
            Finalized::EffectsAborted => {
                return Err(
                    StoreError::backend("store aborted a finalize that had no effects").into(),
                );
            }
        }
        info!(
            attempt = lease.attempt,
            fence = lease.fence,
            has_effects,
            "finalized succeeded"
        );
        if has_effects {
            self.run_effects(job, attempt.key, lease, result.as_ref())?;
        }
        Ok(report())
    }

    fn succeed_transactional<J: SafeJob + ?Sized>(
        &self,
        job: &J,
        attempt: &Attempt<'_>,
        result: Option<&Value>,
        report: impl Fn() -> Report,
    ) -> Result<Report, RunError<J::Error>> {
        let lease = &attempt.lease;
        let mut failed: Option<J::Error> = None;
        let mut panicked = None;
        let mut hook = |tx: &mut dyn Any| -> Result<(), EffectsAborted> {
            let mut ctx = EffectsContext {
                key: attempt.key,
                attempt: lease.attempt,
                fence: lease.fence,
                result,
                tx: Some(tx),
            };
            match catch_unwind(AssertUnwindSafe(|| job.on_succeeded_once(&mut ctx))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => {
                    failed = Some(error);
                    Err(EffectsAborted)
                }
                Err(panic) => {
                    panicked = Some(panic);
                    Err(EffectsAborted)
                }
            }
        };
        let finalized = self
            .store
            .finalize_succeeded(lease, result, attempt.ttl, Some(&mut hook));
        let settled = self.settle(attempt, finalized);
        if let Some(panic) = panicked {
            // The hook panicked, so the store rolled the finalize back. The panic belongs to the
            // caller, after the lease is released.
            if matches!(settled, Ok(Finalized::EffectsAborted)) {
                self.release(
                    attempt,
                    "transactional effects panicked; finalize rolled back",
                );
            }
            resume_unwind(panic);
        }
        match settled? {
            Finalized::Committed => {
                info!(
                    attempt = lease.attempt,
                    fence = lease.fence,
                    "finalized succeeded with transactional effects"
                );
                Ok(report())
            }
            Finalized::Stale => Err(attempt.lease_lost()),
            Finalized::EffectsAborted => {
                self.release(
                    attempt,
                    "transactional effects failed; finalize rolled back",
                );
                match failed {
                    Some(source) => Err(RunError::EffectsRolledBack {
                        source,
                        attempt: lease.attempt,
                    }),
                    None => Err(StoreError::backend(
                        "store reported aborted effects that did not fail",
                    )
                    .into()),
                }
            }
        }
    }

    /// Resolves a finalize whose outcome is unknown (the store failed while it was in flight,
    /// for instance the connection dropped after COMMIT was sent).
    ///
    /// A fenced release is a write, so on a SQL store it waits behind any transaction still
    /// holding the row. Then: `Applied` means the finalize did not commit, and now never will;
    /// `Stale` means the row moved on: re-read it, and it is ours only if it is `succeeded` under
    /// our fence.
    fn settle(
        &self,
        attempt: &Attempt<'_>,
        finalized: Result<Finalized, StoreError>,
    ) -> Result<Finalized, StoreError> {
        let error = match finalized {
            Ok(finalized) => return Ok(finalized),
            Err(error) => error,
        };
        let lease = &attempt.lease;
        warn!(fence = lease.fence, %error, "finalize outcome unknown; resolving");
        match self.store.release(lease, Some("finalize outcome unknown")) {
            Ok(FenceCheck::Applied) => {
                info!(
                    fence = lease.fence,
                    "ambiguous finalize resolved: not committed"
                );
                Err(error)
            }
            Ok(FenceCheck::Stale) => match self.store.get(&lease.digest) {
                Ok(Some(row)) if row.state == JobState::Succeeded && row.fence == lease.fence => {
                    info!(
                        fence = lease.fence,
                        "ambiguous finalize resolved: committed"
                    );
                    Ok(Finalized::Committed)
                }
                Ok(_) => Ok(Finalized::Stale),
                Err(_) => Err(error),
            },
            Err(_) => Err(error),
        }
    }

    /// Runs after-commit effects for a lease whose finalize (or recovery claim) committed, and
    /// records how they ended.
    fn run_effects<J: SafeJob + ?Sized>(
        &self,
        job: &J,
        key: &IdempotencyKey,
        lease: &Lease,
        result: Option<&Value>,
    ) -> Result<(), RunError<J::Error>> {
        let mut ctx = EffectsContext {
            key,
            attempt: lease.attempt,
            fence: lease.fence,
            result,
            tx: None,
        };
        let ran = catch_unwind(AssertUnwindSafe(|| job.on_succeeded_once(&mut ctx)));
        let failure = match &ran {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("on_succeeded_once panicked".to_owned()),
        };
        let outcome = match &failure {
            None => EffectsOutcome::Done,
            Some(error) => EffectsOutcome::InDoubt { error },
        };
        match self.store.finish_effects(lease, outcome) {
            Ok(FenceCheck::Applied) => {}
            // The effects window ended and someone claimed the key for recovery: the row says so.
            Ok(FenceCheck::Stale) => warn!(
                fence = lease.fence,
                "effects outran their window; the row was claimed for recovery"
            ),
            // The row stays pending and turns in doubt when the window ends: visible, not lost.
            Err(error) => {
                warn!(fence = lease.fence, %error, "could not record how the effects ended")
            }
        }
        match ran {
            Ok(Ok(())) => {
                debug!(fence = lease.fence, "effects done");
                Ok(())
            }
            Ok(Err(source)) => {
                warn!(fence = lease.fence, error = %source, "effects failed: in doubt");
                Err(RunError::EffectsInDoubt {
                    digest: *key.digest(),
                    source,
                })
            }
            Err(panic) => {
                warn!(fence = lease.fence, "effects panicked: in doubt");
                resume_unwind(panic)
            }
        }
    }

    fn release(&self, attempt: &Attempt<'_>, why: &str) {
        match self.store.release(&attempt.lease, Some(why)) {
            Ok(FenceCheck::Applied) => debug!(fence = attempt.lease.fence, why, "lease released"),
            Ok(FenceCheck::Stale) => debug!(
                fence = attempt.lease.fence,
                "release was stale: lease already superseded"
            ),
            // The lease expires by itself (invariant 4); nothing is stuck.
            Err(error) => {
                warn!(fence = attempt.lease.fence, %error, "release failed; the lease will expire")
            }
        }
    }

    /// A deliberate recovery for a key whose effects are in doubt: claims the effects (bumping the
    /// fence so no earlier worker can record them) and runs `job.on_succeeded_once` once more.
    /// Call it only after checking that the effects did not happen, or when they are safe to
    /// repeat: this is the one path that may run them a second time, and only because you asked.
    pub fn recover_effects<J: SafeJob + ?Sized>(
        &self,
        job: &J,
    ) -> Result<Recovery, RunError<J::Error>> {
        self.resolve_in_doubt(job, true)
    }

    /// Records that an operator checked that the in-doubt effects of `job`'s key did happen:
    /// marks them done without running anything.
    pub fn confirm_effects<J: SafeJob + ?Sized>(
        &self,
        job: &J,
    ) -> Result<Recovery, RunError<J::Error>> {
        self.resolve_in_doubt(job, false)
    }

    fn resolve_in_doubt<J: SafeJob + ?Sized>(
        &self,
        job: &J,
        rerun: bool,
    ) -> Result<Recovery, RunError<J::Error>> {
        let key = job.key()?;
        let fingerprint = job.fingerprint()?;
        let ttl = validate_ttl(job.lease_ttl().unwrap_or(self.default_ttl))?;
        let span =
            info_span!("safejob.recover", key = %key.digest(), worker = %self.worker_id, rerun);
        let _entered = span.enter();
        let req = AcquireRequest {
            digest: *key.digest(),
            fingerprint,
            owner: &self.worker_id,
            ttl,
        };
        let (lease, row) = match self.store.claim_effects(&req)? {
            EffectsClaim::Claimed(lease, row) => (lease, row),
            EffectsClaim::NotInDoubt(row) => return Ok(Recovery::NotInDoubt(Box::new(row))),
            EffectsClaim::Missing => return Ok(Recovery::Missing),
            EffectsClaim::KeyConflict { stored, given } => {
                return Err(RunError::KeyConflict {
                    digest: *key.digest(),
                    stored,
                    given,
                });
            }
        };
        info!(fence = lease.fence, "in-doubt effects claimed for recovery");
        if rerun {
            self.run_effects(job, &key, &lease, row.result.as_ref())?;
        } else if self.store.finish_effects(&lease, EffectsOutcome::Done)? == FenceCheck::Stale {
            return Err(RunError::LeaseLost {
                attempt: lease.attempt,
                fence: lease.fence,
            });
        }
        Ok(Recovery::Resolved { fence: lease.fence })
    }
}

impl Attempt<'_> {
    fn lease_lost<E: std::error::Error + 'static>(&self) -> RunError<E> {
        warn!(
            fence = self.lease.fence,
            attempt = self.lease.attempt,
            "lease lost: nothing finalized"
        );
        RunError::LeaseLost {
            attempt: self.lease.attempt,
            fence: self.lease.fence,
        }
    }
}
