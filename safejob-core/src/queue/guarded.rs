//! A [`GuardedJob`] kind's handler: the guard's pipeline, finalizing inside the queue's
//! completion.
//!
//! The claim brought the guard's acquire answer; the pipeline
//! ([`guard::pipeline`](crate::guard::pipeline)) runs the job exactly as the
//! [`Runner`](crate::Runner) does, and every write that ends the run goes through [`InCompletion`]:
//! the guard's finalize or release and the job's own transition in one atomic completion. A run
//! that ends without such a write (a replay, a busy key, a conflict, a lost lease, a settled
//! ambiguous commit) is completed afterwards from its report.

use std::{cell::RefCell, marker::PhantomData, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    FinalFailure, Recovery, Retention, Runner,
    guard::pipeline::{self, Effects, Ended, Finish, GiveBack, Run, RunResult, chain},
    policy::NeverFinalize,
    queue::{
        AttemptError, CompleteAs, Completed, ErrorKind, GuardFinish, GuardSpec, GuardedJob,
        KindOptions, QueuedJob, RetryPolicy,
        exec::{Exec, Ran},
        recover::{self, RecoverError},
        registry::{Handler, decode},
    },
    report::{Report, RunError},
    store::{AcquireRequest, Acquired, FenceCheck, Finalized, Lease, LeaseStore, StoreError},
};

/// Runs the jobs of one guarded kind.
pub(crate) struct Guarded<J> {
    options: KindOptions,
    _job: PhantomData<fn() -> J>,
}

impl<J> Guarded<J> {
    pub(crate) fn new(options: KindOptions) -> Self {
        Self {
            options,
            _job: PhantomData,
        }
    }
}

impl<J: GuardedJob> Handler for Guarded<J> {
    fn options(&self) -> &KindOptions {
        &self.options
    }

    fn guarded(&self) -> bool {
        true
    }

    fn recover(&self, job: &QueuedJob, runner: &Runner) -> Result<Recovery, RecoverError> {
        recover::recover_as::<J>(job, runner)
    }

    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        let claimed = exec.claimed;
        // Dead before running: the guard, when granted, goes back so the key is not held.
        let dead =
            |kind: ErrorKind, message: String, why: &'static str| -> Result<Ran, StoreError> {
                let error = AttemptError::new(kind, message);
                let release = exec.guard_release(why);
                Ok(exec
                    .finish(CompleteAs::Dead { error }, None, release, None)?
                    .1)
            };
        let job: J = match decode(exec, J::KIND) {
            Ok(job) => job,
            Err(error) => return dead(error.kind, error.message, "undecodable payload"),
        };
        let (Some(spec), Some(answer)) = (claimed.job.guard, &claimed.guard) else {
            return dead(
                ErrorKind::Fatal,
                format!("guarded kind {:?} was enqueued without a guard", J::KIND),
                "no guard",
            );
        };
        let key = match job.key() {
            Ok(key) if key.digest() == &spec.digest => key,
            Ok(_) => {
                return dead(
                    ErrorKind::Fatal,
                    "the payload's key does not match the job's guard".into(),
                    "key mismatch",
                );
            }
            Err(e) => return dead(ErrorKind::Fatal, e.to_string(), "invalid key"),
        };
        match job.guard_fingerprint() {
            Ok(given) if given == spec.fingerprint => {}
            // Enqueued without a fingerprint (before guarded jobs had one by default, or built
            // by hand): nothing to compare; the acquire checks the key's row as it was written.
            Ok(_) if spec.fingerprint.is_none() => {}
            Ok(_) => {
                return dead(
                    ErrorKind::KeyConflict,
                    format!(
                        "the payload's fingerprint does not match the one enqueued with key {}",
                        spec.digest
                    ),
                    "fingerprint mismatch",
                );
            }
            Err(e) => return dead(ErrorKind::Fatal, e.to_string(), "unfingerprintable payload"),
        }
        // Refused before running, so the claim's guard lease goes back at once.
        let retention = match Retention::of_run(job.guard_retention(), exec.retention) {
            Ok(retention) => retention,
            Err(e) => return dead(ErrorKind::Fatal, e.to_string(), "invalid retention"),
        };
        let port = InCompletion {
            exec,
            answer,
            retry: &self.options.retry,
            timeout: self.options.timeout,
            started: exec.clock.now(),
            wrote: RefCell::new(None),
        };
        let run = Run {
            key: &key,
            fingerprint: spec.fingerprint,
            owner: &claimed.lease.owner,
            ttl: exec.ttl,
            effects: exec.effects,
            retention,
            policy: &NeverFinalize,
            observer: exec.observer,
        };
        let result = match pipeline::run(&job, &run, &port) {
            Ended::Returned(result) => Some(result),
            Ended::Panicked(panic) => {
                // The pipeline wrote what the panic means; the worker's thread lives on.
                warn!(job = %claimed.job.id, key = %spec.digest, "{}: recorded, not re-raised", pipeline::panic_message(&*panic));
                None
            }
        };
        match port.wrote.into_inner() {
            Some(ran) => ran,
            None => match result {
                Some(result) => complete_unwritten(exec, &spec, &self.options.retry, result),
                // A panic in perform is written by its release, one in effects comes after a
                // (settled) completion; only transactional effects whose completion failed with
                // a store error get here: the job's lease expires and the reaper retries it.
                None => Err(StoreError::backend(
                    "transactional effects panicked and the completion's outcome is unknown",
                )),
            },
        }
    }
}

/// The port of a queued run: every write that ends it is one queue completion carrying the
/// guard's half.
struct InCompletion<'e, 'a> {
    exec: &'e Exec<'a>,
    answer: &'e Acquired,
    retry: &'e RetryPolicy,
    timeout: Option<Duration>,
    started: DateTime<Utc>,
    /// How the completion this run wrote ended (set once; `None`: nothing written yet).
    wrote: RefCell<Option<Result<Ran, StoreError>>>,
}

impl InCompletion<'_, '_> {
    fn record(&self, ran: Result<Ran, StoreError>) {
        *self.wrote.borrow_mut() = Some(ran);
    }

    /// Whether the attempt ran for its kind's whole timeout, by the worker's clock.
    fn timed_out(&self) -> bool {
        self.timeout.is_some_and(|t| {
            (self.exec.clock.now() - self.started)
                .to_std()
                .is_ok_and(|took| took >= t)
        })
    }

    /// Whether the claim may be tried again.
    fn attempts_left(&self) -> bool {
        self.exec.claimed.lease.attempt < self.exec.claimed.job.max_attempts
    }
}

impl Finish for InCompletion<'_, '_> {
    fn guards(&self) -> &dyn LeaseStore {
        self.exec.store.guards()
    }

    fn acquire(&self, _: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        // The claim performed the acquire, with the job's guard spec.
        Ok(self.answer.clone())
    }

    fn succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        effects: Effects<'_, '_>,
    ) -> Result<Finalized, StoreError> {
        let (has_effects, hook) = match effects {
            Effects::None => (false, None),
            Effects::AfterCommit => (true, None),
            Effects::Inside(hook) => (true, Some(hook)),
        };
        let guard = GuardFinish::Succeeded {
            lease,
            result,
            effects_ttl,
            has_effects,
            retention,
        };
        let (completed, ran) = self
            .exec
            .finish(CompleteAs::Succeeded, None, Some(guard), hook)?;
        Ok(match completed {
            Completed::Applied => {
                self.record(Ok(ran));
                Finalized::Committed
            }
            Completed::GuardStale => Finalized::Stale,
            Completed::EffectsAborted => Finalized::EffectsAborted,
            // The job's own lease was lost (reaped): nothing changed, and nothing more is
            // written for this claim.
            Completed::Stale => {
                self.record(Ok(ran));
                Finalized::Stale
            }
        })
    }

    fn failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        let error = AttemptError::new(ErrorKind::Fatal, failure.to_string());
        let guard = GuardFinish::Failed {
            lease,
            failure,
            retention,
        };
        let (completed, ran) =
            self.exec
                .finish(CompleteAs::Dead { error }, None, Some(guard), None)?;
        Ok(match completed {
            Completed::Applied => {
                self.record(Ok(ran));
                FenceCheck::Applied
            }
            Completed::Stale => {
                self.record(Ok(ran));
                FenceCheck::Stale
            }
            Completed::GuardStale | Completed::EffectsAborted => FenceCheck::Stale,
        })
    }

    fn release(&self, lease: &Lease, why: GiveBack<'_>) {
        let exec = self.exec;
        let outcome = match why {
            GiveBack::Failed(message) => {
                let kind = if self.timed_out() {
                    ErrorKind::TimedOut
                } else {
                    ErrorKind::Retryable
                };
                exec.failure(AttemptError::new(kind, message), self.retry)
            }
            GiveBack::Panicked(message) => {
                exec.failure(AttemptError::new(ErrorKind::Panicked, message), self.retry)
            }
            GiveBack::RetryLater(after) => {
                let error = AttemptError::new(ErrorKind::Retryable, "perform asked to retry later");
                match after {
                    Some(delay) if self.attempts_left() => CompleteAs::Retry { delay, error },
                    _ => exec.failure(error, self.retry),
                }
            }
            GiveBack::EffectsRolledBack(message) => {
                let message =
                    format!("transactional effects failed and were rolled back: {message}");
                exec.failure(AttemptError::new(ErrorKind::Retryable, message), self.retry)
            }
        };
        let guard = GuardFinish::Release {
            lease,
            error: Some(why.note()),
        };
        self.record(
            exec.finish(outcome, None, Some(guard), None)
                .map(|(_, ran)| ran),
        );
    }

    fn settled_committed(&self) {
        // The completion is one atomic step: the job's `succeeded` committed with the guard's.
        self.record(Ok(Ran::Succeeded));
    }
}

/// Completes a run that wrote no completion, from its report. The guard is not touched: it was
/// not granted, lost, or released by the settle of a completion that did not commit (or its
/// lease expires, when the settle could not reach the store).
fn complete_unwritten<E: std::error::Error + 'static>(
    exec: &Exec<'_>,
    spec: &GuardSpec,
    retry: &RetryPolicy,
    result: RunResult<E>,
) -> Result<Ran, StoreError> {
    let outcome = match result {
        // These reports are made only by a written (or settled) completion.
        Ok(
            report @ (Report::Succeeded { .. } | Report::Failed { .. } | Report::RetryLater { .. }),
        ) => {
            return Err(StoreError::backend(format!(
                "a guarded run reported {report:?} without its completion"
            )));
        }
        Ok(Report::AlreadySucceeded { .. }) => {
            info!(job = %exec.claimed.job.id, key = %spec.digest, "guard already succeeded: completed without running");
            CompleteAs::Succeeded
        }
        Ok(Report::AlreadyFailed { failure }) => CompleteAs::Dead {
            error: AttemptError::new(
                ErrorKind::GuardFailed,
                format!("key {} already failed: {failure}", spec.digest),
            ),
        },
        Ok(Report::Busy { retry_after, .. }) => CompleteAs::Snooze {
            delay: retry_after,
            error: None,
        },
        Err(error @ RunError::KeyConflict { .. }) => CompleteAs::Dead {
            error: AttemptError::new(ErrorKind::KeyConflict, error.to_string()),
        },
        Err(error @ RunError::LeaseLost { .. }) => exec.failure(
            AttemptError::new(ErrorKind::LeaseLost, error.to_string()),
            retry,
        ),
        Err(error) => exec.failure(
            AttemptError::new(ErrorKind::Retryable, chain(&error)),
            retry,
        ),
    };
    Ok(exec.finish(outcome, None, None, None)?.1)
}
