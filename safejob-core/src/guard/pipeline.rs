//! The one pipeline every guarded run follows: acquire → perform → finalize → effects, and the
//! settling of a finalize whose answer was lost.
//!
//! Two callers, one code. The [`Runner`](super::runner::Runner) finalizes straight on a
//! [`LeaseStore`] ([`OnStore`]); the queue's guarded jobs finalize inside the queue's completion,
//! the job's transition and the guard's in one atomic step. What differs is behind the small
//! [`Finish`] port; everything else is here, once: what each acquire answer means, the failure
//! policy, fence checks, both effects modes, settling an ambiguous commit, panics, and the
//! `safejob.run` tracing span.
//!
//! ## Panics
//!
//! A panic in `perform` or in `on_succeeded_once` is caught here, and what it means is written
//! first: a panic in `perform` releases the lease (so the next attempt starts at once); in
//! after-commit effects it marks the effects in doubt (`on_succeeded_once panicked`); in
//! transactional effects the finalize rolls back and the lease is released. The run then ends
//! [`Ended::Panicked`] and its caller decides where the panic goes:
//!
//! * the `Runner` re-raises it into the code that called `run`, as any function would;
//! * the queue worker records it as the attempt's error (`panicked`, retried like any attempt
//!   error) and keeps its thread, as it does for the panic of a plain job: re-raising would kill
//!   a pool thread that serves other jobs.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use serde_json::Value;
use tracing::{debug, info, info_span, warn};

use crate::{
    EffectsContext, FailurePolicy, FinalFailure, Fingerprint, IdempotencyKey, Outcome,
    PerformContext, Retention, SafeJob,
    observe::{GuardOutcome, Observer},
    report::{Report, RunError},
    runner::{BUSY_RETRY_MAX, EffectsMode},
    store::{
        AcquireRequest, Acquired, EffectsAborted, EffectsOutcome, FenceCheck, Finalized, JobState,
        Lease, LeaseStore, StoreError, TxEffects,
    },
};

/// How a run ended: it returned, or user code panicked after the pipeline wrote what the panic
/// means (see the module docs).
pub(crate) enum Ended<T> {
    /// The run returned.
    Returned(T),
    /// `perform` or `on_succeeded_once` panicked; the store is already consistent.
    Panicked(Box<dyn Any + Send>),
}

/// What the finalize is asked to do with the job's effects.
pub(crate) enum Effects<'h, 'a> {
    /// The job has none ([`SafeJob::has_effects`] is `false`): finalized with effects `done`.
    None,
    /// Effects run after the finalize commits: finalized with effects `pending`.
    AfterCommit,
    /// Effects run inside the finalize transaction through this hook.
    Inside(&'h mut TxEffects<'a>),
}

/// Why a run gives its lease back without finalizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveBack<'a> {
    /// `perform` failed and the failure policy handed the error back (its message chain).
    Failed(&'a str),
    /// `perform` panicked (the panic's message).
    Panicked(&'a str),
    /// `perform` asked to be retried, after this delay when given.
    RetryLater(Option<Duration>),
    /// Transactional effects failed or panicked (the message), so the finalize rolled back.
    EffectsRolledBack(&'a str),
}

impl GiveBack<'_> {
    /// The error recorded on the key's row.
    pub(crate) fn note(&self) -> &str {
        match self {
            Self::Failed(message) => message,
            Self::Panicked(_) => "perform panicked",
            Self::RetryLater(_) => "perform asked to retry later",
            Self::EffectsRolledBack(_) => "transactional effects failed; finalize rolled back",
        }
    }
}

/// The port: how one run gets its lease and how its end is written.
pub(crate) trait Finish {
    /// The guard's store. Renewals, effects bookkeeping and settling go straight to it.
    fn guards(&self) -> &dyn LeaseStore;

    /// The acquire's answer. A runner asks the store; a queued job got it with its claim.
    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError>;

    /// `running → succeeded` under `lease`'s fence, as [`LeaseStore::finalize_succeeded`] says,
    /// the row kept as `retention` says.
    fn succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        effects: Effects<'_, '_>,
    ) -> Result<Finalized, StoreError>;

    /// `running → failed` under `lease`'s fence, the row kept as `retention` says.
    fn failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError>;

    /// Gives the lease back. Best effort: a release that cannot be written leaves a lease that
    /// expires (invariant 4).
    fn release(&self, lease: &Lease, why: GiveBack<'_>);

    /// A `succeeded` finalize whose answer was lost was found committed by the settle: whatever
    /// this port writes with the finalize committed with it.
    fn settled_committed(&self);
}

/// The port of a run straight on a [`LeaseStore`] (the `Runner`'s).
pub(crate) struct OnStore<'a>(pub(crate) &'a dyn LeaseStore);

impl Finish for OnStore<'_> {
    fn guards(&self) -> &dyn LeaseStore {
        self.0
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.0.acquire(req)
    }

    fn succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        effects: Effects<'_, '_>,
    ) -> Result<Finalized, StoreError> {
        let store = self.0;
        match effects {
            Effects::None => {
                store.finalize_succeeded_without_effects(lease, result, effects_ttl, retention)
            }
            Effects::AfterCommit => {
                store.finalize_succeeded(lease, result, effects_ttl, retention, None)
            }
            Effects::Inside(hook) => {
                store.finalize_succeeded(lease, result, effects_ttl, retention, Some(hook))
            }
        }
    }

    fn failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        self.0.finalize_failed(lease, failure, retention)
    }

    fn release(&self, lease: &Lease, why: GiveBack<'_>) {
        release(self.0, lease, why.note());
    }

    fn settled_committed(&self) {}
}

/// What one run is: the job's key and parameters, and how the pipeline runs it.
pub(crate) struct Run<'a> {
    /// The validated key.
    pub(crate) key: &'a IdempotencyKey,
    /// The job's fingerprint, given to the acquire.
    pub(crate) fingerprint: Option<Fingerprint>,
    /// The worker id written into the lease.
    pub(crate) owner: &'a str,
    /// The lease TTL, also the effects window.
    pub(crate) ttl: Duration,
    /// Where effects run for a job that does not choose ([`SafeJob::effects_mode`] is `None`):
    /// the runner's or the worker's setting.
    pub(crate) effects: EffectsMode,
    /// How long the row is kept once terminal: resolved from the job's own
    /// [`SafeJob::guard_retention`] and the runner's or worker's setting, and validated
    /// ([`Retention::of_run`]), by the caller before the run starts.
    pub(crate) retention: Retention,
    /// What errors from `perform` mean.
    pub(crate) policy: &'a dyn FailurePolicy,
    /// Hears the guard's answers ([`Observer::guard`]).
    pub(crate) observer: &'a dyn Observer,
}

/// The result of a run.
pub(crate) type RunResult<E> = Result<Report, RunError<E>>;

/// Runs the pipeline for `job` once, through `port`.
pub(crate) fn run<J, F>(job: &J, run: &Run<'_>, port: &F) -> Ended<RunResult<J::Error>>
where
    J: SafeJob + ?Sized,
    F: Finish + ?Sized,
{
    let span = info_span!("safejob.run", key = %run.key.digest(), worker = %run.owner);
    let _entered = span.enter();
    let lease = match acquire(run, port) {
        Ok(lease) => lease,
        Err(done) => return Ended::Returned(done),
    };
    debug!(
        fence = lease.fence,
        attempt = lease.attempt,
        "lease granted"
    );

    let mut ctx = PerformContext::new(run.key, port.guards(), lease, run.ttl);
    let performed = catch_unwind(AssertUnwindSafe(|| job.perform(&mut ctx)));
    let (lease, lost) = ctx.into_parts();
    let attempt = Attempt {
        key: run.key,
        lease,
        ttl: run.ttl,
        retention: run.retention,
        observer: run.observer,
    };
    let outcome = match performed {
        Err(panic) => {
            port.release(&attempt.lease, GiveBack::Panicked(&panic_message(&*panic)));
            return Ended::Panicked(panic);
        }
        Ok(_) if lost => return Ended::Returned(Err(attempt.lease_lost())),
        Ok(Err(error)) => {
            return Ended::Returned(on_perform_error(run.policy, &attempt, port, error));
        }
        Ok(Ok(outcome)) => outcome,
    };
    match outcome {
        Outcome::Succeeded { result } => {
            // The job's own mode wins; the runner's or the worker's is the default.
            let mode = job.effects_mode().unwrap_or(run.effects);
            succeed(job, &attempt, port, mode, result)
        }
        Outcome::FailedPermanently(failure) => Ended::Returned(fail(&attempt, port, failure)),
        Outcome::RetryLater { after } => {
            port.release(&attempt.lease, GiveBack::RetryLater(after));
            Ended::Returned(Ok(Report::RetryLater {
                after,
                attempt: attempt.lease.attempt,
            }))
        }
    }
}

/// The lease, or how the run ends without one.
fn acquire<E, F>(run: &Run<'_>, port: &F) -> Result<Lease, RunResult<E>>
where
    E: std::error::Error + 'static,
    F: Finish + ?Sized,
{
    let key = run.key;
    let req = AcquireRequest {
        digest: *key.digest(),
        fingerprint: run.fingerprint,
        owner: run.owner,
        ttl: run.ttl,
    };
    let answer = port.acquire(&req).map_err(|e| Err(e.into()))?;
    run.observer.guard(match answer {
        Acquired::Granted(_) => GuardOutcome::Granted,
        Acquired::AlreadySucceeded(_) | Acquired::AlreadyFailed(_) => GuardOutcome::Replayed,
        Acquired::Busy { .. } => GuardOutcome::Busy,
        Acquired::KeyConflict { .. } => GuardOutcome::Conflict,
    });
    Err(match answer {
        Acquired::Granted(lease) => return Ok(lease),
        Acquired::AlreadySucceeded(row) => {
            debug!(fence = row.fence, "duplicate of a succeeded key: replayed");
            Ok(Report::AlreadySucceeded { result: row.result })
        }
        Acquired::AlreadyFailed(row) => {
            debug!(fence = row.fence, "duplicate of a failed key: replayed");
            match row.failure {
                Some(failure) => Ok(Report::AlreadyFailed { failure }),
                None => Err(StoreError::CorruptRow {
                    digest: key.digest().short(),
                    detail: "state is failed but no failure is stored".into(),
                }
                .into()),
            }
        }
        Acquired::Busy { owner, until } => {
            let now = port.guards().now().map_err(|e| Err(e.into()))?;
            let remaining = (until - now).to_std().unwrap_or_default();
            let retry_after = remaining.min(BUSY_RETRY_MAX);
            debug!(?owner, %until, "key busy");
            Ok(Report::Busy {
                owner,
                until,
                retry_after,
            })
        }
        Acquired::KeyConflict { stored, given } => {
            warn!("key conflict: same key, different fingerprint");
            Err(RunError::KeyConflict {
                digest: *key.digest(),
                stored,
                given,
            })
        }
    })
}

/// The guarded pieces of one run that every step needs.
struct Attempt<'a> {
    key: &'a IdempotencyKey,
    lease: Lease,
    ttl: Duration,
    retention: Retention,
    observer: &'a dyn Observer,
}

impl Attempt<'_> {
    fn lease_lost<E: std::error::Error + 'static>(&self) -> RunError<E> {
        self.observer.guard(GuardOutcome::StaleFinalize);
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

fn on_perform_error<E, F>(
    policy: &dyn FailurePolicy,
    attempt: &Attempt<'_>,
    port: &F,
    error: E,
) -> RunResult<E>
where
    E: std::error::Error + Send + Sync + 'static,
    F: Finish + ?Sized,
{
    match policy.decide(&error, attempt.lease.attempt) {
        Some(failure) => fail(attempt, port, failure),
        None => {
            let message = chain(&error);
            debug!(attempt = attempt.lease.attempt, %message, "perform failed; handing the error back");
            port.release(&attempt.lease, GiveBack::Failed(&message));
            Err(RunError::Job {
                source: error,
                attempt: attempt.lease.attempt,
            })
        }
    }
}

fn fail<E, F>(attempt: &Attempt<'_>, port: &F, failure: FinalFailure) -> RunResult<E>
where
    E: std::error::Error + 'static,
    F: Finish + ?Sized,
{
    match port.failed(&attempt.lease, &failure, attempt.retention)? {
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

fn succeed<J, F>(
    job: &J,
    attempt: &Attempt<'_>,
    port: &F,
    mode: EffectsMode,
    result: Option<Value>,
) -> Ended<RunResult<J::Error>>
where
    J: SafeJob + ?Sized,
    F: Finish + ?Sized,
{
    let has_effects = job.has_effects();
    if has_effects && mode == EffectsMode::Transactional {
        return succeed_transactional(job, attempt, port, result);
    }
    let lease = &attempt.lease;
    let effects = if has_effects {
        Effects::AfterCommit
    } else {
        Effects::None
    };
    let finalized = port.succeeded(
        lease,
        result.as_ref(),
        attempt.ttl,
        attempt.retention,
        effects,
    );
    let lost = match settle(port, lease, finalized) {
        Ok(Finalized::Committed) => None,
        Ok(Finalized::Stale) => Some(attempt.lease_lost()),
        Ok(Finalized::EffectsAborted) => {
            Some(StoreError::backend("store aborted a finalize that had no effects").into())
        }
        Err(error) => Some(error.into()),
    };
    if let Some(error) = lost {
        return Ended::Returned(Err(error));
    }
    info!(
        attempt = lease.attempt,
        fence = lease.fence,
        has_effects,
        "finalized succeeded"
    );
    if has_effects {
        match run_effects(job, port.guards(), attempt.key, lease, result.as_ref()) {
            Ended::Returned(Ok(())) => {}
            Ended::Returned(Err(error)) => return Ended::Returned(Err(error)),
            Ended::Panicked(panic) => return Ended::Panicked(panic),
        }
    }
    Ended::Returned(Ok(Report::Succeeded {
        result,
        attempt: lease.attempt,
    }))
}

fn succeed_transactional<J, F>(
    job: &J,
    attempt: &Attempt<'_>,
    port: &F,
    result: Option<Value>,
) -> Ended<RunResult<J::Error>>
where
    J: SafeJob + ?Sized,
    F: Finish + ?Sized,
{
    let lease = &attempt.lease;
    let mut failed: Option<J::Error> = None;
    let mut panicked = None;
    let mut hook = |tx: &mut dyn Any| -> Result<(), EffectsAborted> {
        let mut ctx = effects_context(attempt.key, lease, result.as_ref(), Some(tx));
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
    let finalized = port.succeeded(
        lease,
        result.as_ref(),
        attempt.ttl,
        attempt.retention,
        Effects::Inside(&mut hook),
    );
    let settled = settle(port, lease, finalized);
    if matches!(settled, Ok(Finalized::EffectsAborted)) {
        // The whole finalize rolled back and the row is still ours: give it back.
        let message = match (&failed, &panicked) {
            (Some(error), _) => chain(error),
            (None, Some(panic)) => panic_message(&**panic),
            (None, None) => "transactional effects returned Ok, but their transaction had been \
                             aborted or rolled back"
                .to_owned(),
        };
        port.release(lease, GiveBack::EffectsRolledBack(&message));
    }
    if let Some(panic) = panicked {
        return Ended::Panicked(panic);
    }
    Ended::Returned(match settled {
        Ok(Finalized::Committed) => {
            info!(
                attempt = lease.attempt,
                fence = lease.fence,
                "finalized succeeded with transactional effects"
            );
            Ok(Report::Succeeded {
                result,
                attempt: lease.attempt,
            })
        }
        Ok(Finalized::Stale) => Err(attempt.lease_lost()),
        Ok(Finalized::EffectsAborted) => match failed {
            Some(source) => Err(RunError::EffectsRolledBack {
                source,
                attempt: lease.attempt,
            }),
            None => Err(RunError::EffectsTransactionLost {
                attempt: lease.attempt,
            }),
        },
        Err(error) => Err(error.into()),
    })
}

/// Resolves a finalize whose outcome is unknown (the store failed while it was in flight, for
/// instance the connection dropped after COMMIT was sent).
///
/// A fenced release is a write, so on a SQL store it waits behind any transaction still holding
/// the row. Then: `Applied` means the finalize did not commit, and now never will; `Stale` means
/// the row moved on: re-read it, and it is ours only if it is `succeeded` under our fence (a row
/// finalized `succeeded` by another attempt is that attempt's success, never ours).
fn settle<F: Finish + ?Sized>(
    port: &F,
    lease: &Lease,
    finalized: Result<Finalized, StoreError>,
) -> Result<Finalized, StoreError> {
    let error = match finalized {
        Ok(finalized) => return Ok(finalized),
        Err(error) => error,
    };
    let store = port.guards();
    warn!(fence = lease.fence, %error, "finalize outcome unknown; resolving");
    match store.release(lease, Some("finalize outcome unknown")) {
        Ok(FenceCheck::Applied) => {
            info!(
                fence = lease.fence,
                "ambiguous finalize resolved: not committed"
            );
            Err(error)
        }
        Ok(FenceCheck::Stale) => match store.get(&lease.digest) {
            Ok(Some(row)) if row.state == JobState::Succeeded && row.fence == lease.fence => {
                info!(
                    fence = lease.fence,
                    "ambiguous finalize resolved: committed"
                );
                port.settled_committed();
                Ok(Finalized::Committed)
            }
            Ok(_) => {
                info!(
                    fence = lease.fence,
                    "ambiguous finalize resolved: stale under another fence"
                );
                Ok(Finalized::Stale)
            }
            Err(read) => {
                warn!(fence = lease.fence, %read, "ambiguous finalize unresolved: the resolving read failed");
                Err(error)
            }
        },
        Err(release) => {
            warn!(fence = lease.fence, %release, "ambiguous finalize unresolved: the resolving release failed");
            Err(error)
        }
    }
}

/// The context `on_succeeded_once` sees.
fn effects_context<'a>(
    key: &'a IdempotencyKey,
    lease: &Lease,
    result: Option<&'a Value>,
    tx: Option<&'a mut dyn Any>,
) -> EffectsContext<'a> {
    EffectsContext {
        key,
        attempt: lease.attempt,
        fence: lease.fence,
        result,
        tx,
    }
}

/// Runs after-commit effects for a lease whose finalize (or recovery claim) committed, and
/// records how they ended: `done`, or in doubt with the error (or `on_succeeded_once panicked`).
pub(crate) fn run_effects<J: SafeJob + ?Sized>(
    job: &J,
    store: &dyn LeaseStore,
    key: &IdempotencyKey,
    lease: &Lease,
    result: Option<&Value>,
) -> Ended<Result<(), RunError<J::Error>>> {
    let mut ctx = effects_context(key, lease, result, None);
    let ran = catch_unwind(AssertUnwindSafe(|| job.on_succeeded_once(&mut ctx)));
    let failure = match &ran {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(chain(error)),
        Err(_) => Some("on_succeeded_once panicked".to_owned()),
    };
    let outcome = match &failure {
        None => EffectsOutcome::Done,
        Some(error) => EffectsOutcome::InDoubt { error },
    };
    match store.finish_effects(lease, outcome) {
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
            Ended::Returned(Ok(()))
        }
        Ok(Err(source)) => {
            warn!(fence = lease.fence, error = %source, "effects failed: in doubt");
            Ended::Returned(Err(RunError::EffectsInDoubt {
                digest: *key.digest(),
                source,
            }))
        }
        Err(panic) => {
            warn!(fence = lease.fence, "effects panicked: in doubt");
            Ended::Panicked(panic)
        }
    }
}

/// A fenced release whose failure is only logged: the lease then expires by itself.
pub(crate) fn release(store: &dyn LeaseStore, lease: &Lease, why: &str) {
    match store.release(lease, Some(why)) {
        Ok(FenceCheck::Applied) => debug!(fence = lease.fence, why, "lease released"),
        Ok(FenceCheck::Stale) => debug!(
            fence = lease.fence,
            "release was stale: lease already superseded"
        ),
        // The lease expires by itself (invariant 4); nothing is stuck.
        Err(error) => {
            warn!(fence = lease.fence, %error, "release failed; the lease will expire")
        }
    }
}

/// The message of an error with its sources, `a: b: c`.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned());
    format!("panicked: {text}")
}
