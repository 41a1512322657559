//! The runner: the pipeline (acquire → perform → finalize → on_succeeded_once) straight on a
//! [`LeaseStore`], one job at a time, and the deliberate recovery of effects in doubt.

use std::{
    panic::resume_unwind,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::{info, info_span};

use crate::{
    FailurePolicy, JobRecord, NeverFinalize, Retention, RetentionError, SafeJob,
    guard::pipeline::{self, Ended, OnStore, Run},
    observe::{Ending, NoObserver, Observer, short_type_name},
    report::{Report, RunError, TtlError},
    store::{AcquireRequest, EffectsClaim, EffectsOutcome, FenceCheck, LeaseStore, StoreError},
};

/// The shortest lease accepted.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// The longest lease accepted: a lease is a liveness promise, not a lock for days.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The default lease TTL. Defaults to 30 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The longest a duplicate that meets a live holder is told to wait
/// ([`Report::Busy`]'s `retry_after`): the holder's remaining lease, but at most this, so a
/// duplicate asks again soon after a holder that finishes early (most do, in milliseconds)
/// instead of a whole lease later. The cost: a duplicate of a long-running holder asks four
/// times a second until the holder ends (an acquire that changes nothing, each time).
pub const BUSY_RETRY_MAX: Duration = Duration::from_millis(250);

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

/// Where `on_succeeded_once` runs: chosen per job by [`SafeJob::effects_mode`], else by the
/// [`Runner`] ([`RunnerBuilder::effects`]) or the queue's worker
/// ([`WorkerBuilder::effects`](crate::queue::WorkerBuilder::effects)) that runs it.
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
    /// The guard retention is out of range.
    #[error("invalid guard retention: {0}")]
    InvalidRetention(#[from] RetentionError),
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
    retention: Retention,
    observer: Arc<dyn Observer>,
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

    /// Where effects run for jobs that do not choose their own
    /// ([`SafeJob::effects_mode`] returns `None`, the default). Defaults to
    /// [`EffectsMode::AfterCommit`].
    pub fn effects(mut self, mode: EffectsMode) -> Self {
        self.effects = mode;
        self
    }

    /// How long a key's row is kept once it succeeded or failed, for jobs that do not choose
    /// their own ([`SafeJob::guard_retention`] returns `None`, the default): a [`Duration`] or
    /// a [`Retention`]. After it, [`Runner::prune_guards`] may delete the row and the same key
    /// runs again. Defaults to [`Retention::Forever`]; see [`Retention`] for why, and for what a
    /// shorter window gives up. Validated by [`build`](RunnerBuilder::build)
    /// ([`MIN_RETENTION`](crate::MIN_RETENTION)..=[`MAX_RETENTION`](crate::MAX_RETENTION)).
    pub fn guard_retention(mut self, retention: impl Into<Retention>) -> Self {
        self.retention = retention.into();
        self
    }

    /// Hears how each run ended and what the guard answered (see [`Observer`]); for instance
    /// `safejob-web`'s `Recorder`, which serves the counts on `/metrics`. Defaults to
    /// [`NoObserver`].
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
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
            retention: self.retention.validated()?,
            observer: self.observer,
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
    retention: Retention,
    observer: Arc<dyn Observer>,
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

impl Runner {
    /// Starts a builder on `store`.
    pub fn builder(store: Arc<dyn LeaseStore>) -> RunnerBuilder {
        RunnerBuilder {
            store,
            worker_id: None,
            default_ttl: DEFAULT_TTL,
            policy: Arc::new(NeverFinalize),
            effects: EffectsMode::AfterCommit,
            retention: Retention::Forever,
            observer: Arc::new(NoObserver),
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
        let retention = Retention::of_run(job.guard_retention(), self.retention)?;
        let run = Run {
            key: &key,
            fingerprint,
            owner: &self.worker_id,
            ttl,
            effects: self.effects,
            retention,
            policy: &*self.policy,
            observer: &*self.observer,
        };
        let started = Instant::now();
        let ended = pipeline::run(job, &run, &OnStore(&*self.store));
        if let Ended::Returned(result) = &ended
            && let Some(ending) = ending(result)
        {
            self.observer
                .job_ended(short_type_name::<J>(), ending, started.elapsed());
        }
        unwind(ended)
    }

    /// Deletes up to `limit` guard rows whose retention has passed and whose outcome is settled
    /// ([`LeaseStore::prune`]); returns how many. Rows kept [`Retention::Forever`] (the default),
    /// rows still running, and rows whose effects are pending or in doubt are never deleted. A
    /// pruned key runs again if it comes back. Schedule it (every few minutes, say), calling it
    /// again while it returns `limit`:
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use safejob_core::{MemoryStore, Runner};
    /// let runner = Runner::builder(Arc::new(MemoryStore::new()))
    ///     .guard_retention(Duration::from_secs(24 * 3600))
    ///     .build()?;
    /// while runner.prune_guards(1_000)? == 1_000 {}
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn prune_guards(&self, limit: usize) -> Result<u64, StoreError> {
        self.store.prune(limit)
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
            unwind(pipeline::run_effects(
                job,
                &*self.store,
                &key,
                &lease,
                row.result.as_ref(),
            ))?;
        } else if self.store.finish_effects(&lease, EffectsOutcome::Done)? == FenceCheck::Stale {
            return Err(RunError::LeaseLost {
                attempt: lease.attempt,
                fence: lease.fence,
            });
        }
        Ok(Recovery::Resolved { fence: lease.fence })
    }
}

/// How a run that held the lease ended, for [`Observer::job_ended`]; `None` for runs that did
/// not execute (replayed, busy, conflict) and for store errors (whether the job ran is unknown).
fn ending<E: std::error::Error + 'static>(result: &Result<Report, RunError<E>>) -> Option<Ending> {
    match result {
        // Effects in doubt: the key's finalize succeeded; the in-doubt count is the store's.
        Ok(Report::Succeeded { .. }) | Err(RunError::EffectsInDoubt { .. }) => {
            Some(Ending::Succeeded)
        }
        Ok(Report::Failed { .. }) => Some(Ending::Dead),
        Ok(Report::RetryLater { .. })
        | Err(
            RunError::Job { .. }
            | RunError::EffectsRolledBack { .. }
            | RunError::EffectsTransactionLost { .. },
        ) => Some(Ending::Retrying),
        Err(RunError::LeaseLost { .. }) => Some(Ending::Stale),
        _ => None,
    }
}

/// Hands a run's end to the caller: its value, or its panic, unwinding on.
fn unwind<T>(ended: Ended<T>) -> T {
    match ended {
        Ended::Returned(value) => value,
        Ended::Panicked(panic) => resume_unwind(panic),
    }
}

/// An operator's confirmation, by digest alone, that the in-doubt effects of a key did happen:
/// claims them (bumping the fence, so no earlier worker can record them) and marks them done
/// without running anything — what [`Runner::confirm_effects`] does, for a tool that has the
/// digest but not the job (the `safejob keys confirm` command). The claim uses the fingerprint
/// stored on the row, and `operator` as its owner.
pub fn confirm_effects_by_digest(
    store: &dyn LeaseStore,
    digest: &crate::KeyDigest,
    operator: &str,
) -> Result<Recovery, StoreError> {
    let Some(row) = store.get(digest)? else {
        return Ok(Recovery::Missing);
    };
    let req = AcquireRequest {
        digest: *digest,
        fingerprint: row.fingerprint,
        owner: operator,
        ttl: Duration::from_secs(60),
    };
    match store.claim_effects(&req)? {
        EffectsClaim::Claimed(lease, _) => {
            if store.finish_effects(&lease, EffectsOutcome::Done)? == FenceCheck::Stale {
                return Err(StoreError::backend(
                    "the confirmation's claim was taken over before it was recorded; try again",
                ));
            }
            Ok(Recovery::Resolved { fence: lease.fence })
        }
        EffectsClaim::NotInDoubt(row) => Ok(Recovery::NotInDoubt(Box::new(row))),
        EffectsClaim::Missing => Ok(Recovery::Missing),
        EffectsClaim::KeyConflict { .. } => Err(StoreError::backend(
            "the key's fingerprint changed while it was being confirmed; try again",
        )),
    }
}
