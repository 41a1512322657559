//! The kinds a worker may run, and how each kind's jobs are run.

use std::{
    any::Any,
    collections::BTreeMap,
    fmt,
    marker::PhantomData,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::{
    EffectsContext, IdempotencyKey, Outcome, PerformContext,
    queue::{
        AttemptError, CompleteAs, Completed, ErrorKind, GuardFinish, GuardedJob, KindOptions,
        QueueJob, WorkError,
        exec::{Exec, Ran, chain, panic_message},
    },
    runner::EffectsMode,
    store::{Acquired, EffectsAborted, EffectsOutcome, Lease, StoreError},
};

/// Runs the jobs of one kind.
pub(crate) trait Handler: Send + Sync {
    fn options(&self) -> &KindOptions;
    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError>;
}

/// The kinds a worker may run. A claimed job of a kind not registered here, or whose payload
/// does not decode into the kind's type, is dead at once with the reason recorded: it is never
/// run.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::{QueueJob, Registry, WorkContext, WorkError};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping;
/// impl QueueJob for Ping {
///     const KIND: &'static str = "ping";
///     type Error = std::io::Error;
///     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
///         Ok(())
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register::<Ping>();
/// assert!(registry.contains("ping"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a [`QueueJob`] kind (registering a kind name again replaces it).
    pub fn register<J: QueueJob>(&mut self) -> &mut Self {
        self.insert(
            J::KIND,
            Arc::new(Plain::<J> {
                options: J::options(),
                _job: PhantomData,
            }),
        )
    }

    /// Registers a [`GuardedJob`] kind, run through the exactly-once guard.
    pub fn register_guarded<J: GuardedJob>(&mut self) -> &mut Self {
        self.insert(
            J::KIND,
            Arc::new(Guarded::<J> {
                options: J::options(),
                _job: PhantomData,
            }),
        )
    }

    fn insert(&mut self, kind: &str, handler: Arc<dyn Handler>) -> &mut Self {
        if self.kinds.insert(kind.to_owned(), handler).is_some() {
            warn!(kind, "kind registered twice; the last registration wins");
        }
        self
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The registered kind names.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// The distinct queues the registered kinds default to.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .kinds
            .values()
            .map(|h| h.options().queue.clone())
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// Runs one claimed job.
    pub(crate) fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        let job = &exec.claimed.job;
        match self.kinds.get(&job.kind) {
            Some(handler) => handler.run(exec),
            None => {
                warn!(job = %job.id, kind = %job.kind, "unknown kind: dead, not run");
                let error = AttemptError::new(
                    ErrorKind::UnknownKind,
                    format!(
                        "no handler is registered for kind {:?} in this worker",
                        job.kind
                    ),
                );
                let release = exec.guard_release("unknown kind");
                Ok(exec
                    .finish(CompleteAs::Dead { error }, None, release, None)?
                    .1)
            }
        }
    }
}

fn decode<J: DeserializeOwned>(exec: &Exec<'_>, kind: &str) -> Result<J, AttemptError> {
    J::deserialize(&exec.claimed.job.payload).map_err(|e| {
        AttemptError::new(
            ErrorKind::UndecodablePayload,
            format!("payload does not decode as kind {kind:?}: {e}"),
        )
    })
}

struct Plain<J> {
    options: KindOptions,
    _job: PhantomData<fn() -> J>,
}

impl<J: QueueJob> Handler for Plain<J> {
    fn options(&self) -> &KindOptions {
        &self.options
    }

    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        // A plain kind never uses a guard; a granted one (the kind was re-registered) goes back.
        let release = exec.guard_release("kind runs without a guard");
        let job: J = match decode(exec, J::KIND) {
            Ok(job) => job,
            Err(error) => {
                warn!(job = %exec.claimed.job.id, kind = J::KIND, "undecodable payload: dead, not run");
                return Ok(exec
                    .finish(CompleteAs::Dead { error }, None, release, None)?
                    .1);
            }
        };
        let mut ctx = exec.context(self.options.timeout);
        let worked = catch_unwind(AssertUnwindSafe(|| job.work(&mut ctx)));
        let progress = ctx.unwritten_progress();
        let stop = ctx.stop_reason();
        drop(ctx);
        let retry = &self.options.retry;
        let outcome = match worked {
            Ok(Ok(())) => CompleteAs::Succeeded,
            Ok(Err(WorkError::Fatal(e))) => CompleteAs::Dead {
                error: AttemptError::new(ErrorKind::Fatal, chain(&e)),
            },
            Ok(Err(WorkError::Cancelled { reason })) => CompleteAs::Cancelled { reason },
            Ok(Err(WorkError::Stopped)) => exec.failure(
                AttemptError::new(Exec::stopped_kind(stop), "the job stopped on request"),
                retry,
            ),
            Ok(Err(WorkError::Retryable(e))) => {
                let kind = match stop {
                    Some(crate::queue::StopReason::TimedOut) => ErrorKind::TimedOut,
                    _ => ErrorKind::Retryable,
                };
                exec.failure(AttemptError::new(kind, chain(&e)), retry)
            }
            Err(panic) => exec.failure(
                AttemptError::new(ErrorKind::Panicked, panic_message(&*panic)),
                retry,
            ),
        };
        Ok(exec.finish(outcome, progress, release, None)?.1)
    }
}

struct Guarded<J> {
    options: KindOptions,
    _job: PhantomData<fn() -> J>,
}

impl<J: GuardedJob> Handler for Guarded<J> {
    fn options(&self) -> &KindOptions {
        &self.options
    }

    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        let claimed = exec.claimed;
        let dead =
            |kind: ErrorKind, message: String, why: &'static str| -> Result<Ran, StoreError> {
                let error = AttemptError::new(kind, message);
                Ok(exec
                    .finish(
                        CompleteAs::Dead { error },
                        None,
                        exec.guard_release(why),
                        None,
                    )?
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
        let lease = match answer {
            Acquired::Granted(lease) => lease,
            Acquired::AlreadySucceeded(_) => {
                info!(job = %claimed.job.id, key = %spec.digest, "guard already succeeded: completed without running");
                return Ok(exec.finish(CompleteAs::Succeeded, None, None, None)?.1);
            }
            Acquired::AlreadyFailed(row) => {
                let failure = row
                    .failure
                    .as_ref()
                    .map_or_else(|| "unknown failure".to_owned(), ToString::to_string);
                return dead(
                    ErrorKind::GuardFailed,
                    format!("key {} already failed: {failure}", spec.digest),
                    "",
                );
            }
            Acquired::Busy { until, .. } => {
                let now = exec.store.now()?;
                let delay = (*until - now).to_std().unwrap_or_default();
                let outcome = CompleteAs::Snooze { delay, error: None };
                return Ok(exec.finish(outcome, None, None, None)?.1);
            }
            Acquired::KeyConflict { .. } => {
                return dead(
                    ErrorKind::KeyConflict,
                    format!(
                        "key {} was already used with different parameters",
                        spec.digest
                    ),
                    "",
                );
            }
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
        self.perform(exec, &job, &key, lease)
    }
}

impl<J: GuardedJob> Guarded<J> {
    fn perform(
        &self,
        exec: &Exec<'_>,
        job: &J,
        key: &IdempotencyKey,
        lease: &Lease,
    ) -> Result<Ran, StoreError> {
        let retry = &self.options.retry;
        let started = exec.clock.now();
        let mut pctx = PerformContext::new(key, exec.store.guards(), lease.clone(), exec.ttl);
        let performed = catch_unwind(AssertUnwindSafe(|| job.perform(&mut pctx)));
        let (lease, lost) = pctx.into_parts();
        let timed_out = self.options.timeout.is_some_and(|t| {
            (exec.clock.now() - started)
                .to_std()
                .is_ok_and(|took| took >= t)
        });
        let release = |error| GuardFinish::Release {
            lease: &lease,
            error: Some(error),
        };
        let outcome = match performed {
            Err(panic) => {
                let message = panic_message(&*panic);
                let outcome = exec.failure(AttemptError::new(ErrorKind::Panicked, message), retry);
                return Ok(exec
                    .finish(outcome, None, Some(release("perform panicked")), None)?
                    .1);
            }
            Ok(_) if lost => {
                let error = AttemptError::new(ErrorKind::LeaseLost, "the guard's lease was lost");
                return Ok(exec.finish(exec.failure(error, retry), None, None, None)?.1);
            }
            Ok(Err(e)) => {
                let message = chain(&e);
                let kind = if timed_out {
                    ErrorKind::TimedOut
                } else {
                    ErrorKind::Retryable
                };
                let outcome = exec.failure(AttemptError::new(kind, message.clone()), retry);
                return Ok(exec.finish(outcome, None, Some(release(&message)), None)?.1);
            }
            Ok(Ok(outcome)) => outcome,
        };
        match outcome {
            Outcome::Succeeded { result } => self.succeed(exec, job, key, &lease, result),
            Outcome::FailedPermanently(failure) => {
                let error = AttemptError::new(ErrorKind::Fatal, failure.to_string());
                let guard = GuardFinish::Failed {
                    lease: &lease,
                    failure: &failure,
                };
                Ok(exec
                    .finish(CompleteAs::Dead { error }, None, Some(guard), None)?
                    .1)
            }
            Outcome::RetryLater { after } => {
                let error = AttemptError::new(ErrorKind::Retryable, "perform asked to retry later");
                let outcome = match after {
                    Some(delay) if claimed_has_attempts_left(exec) => {
                        CompleteAs::Retry { delay, error }
                    }
                    _ => exec.failure(error, retry),
                };
                Ok(exec
                    .finish(outcome, None, Some(release("retry later")), None)?
                    .1)
            }
        }
    }

    fn succeed(
        &self,
        exec: &Exec<'_>,
        job: &J,
        key: &IdempotencyKey,
        lease: &Lease,
        result: Option<serde_json::Value>,
    ) -> Result<Ran, StoreError> {
        let retry = &self.options.retry;
        // A job without effects: the guard's finalize records them `done` inside the
        // completion, and `on_succeeded_once` is never called.
        let has_effects = job.has_effects();
        let guard = GuardFinish::Succeeded {
            lease,
            result: result.as_ref(),
            effects_ttl: exec.ttl,
            has_effects,
        };
        if !has_effects {
            let (completed, ran) = exec.finish(CompleteAs::Succeeded, None, Some(guard), None)?;
            return match completed {
                Completed::GuardStale => self.guard_lost(exec),
                Completed::Applied | Completed::Stale | Completed::EffectsAborted => Ok(ran),
            };
        }
        if exec.effects == EffectsMode::Transactional {
            let mut failed: Option<String> = None;
            let mut hook = |tx: &mut dyn Any| -> Result<(), EffectsAborted> {
                let mut ctx = EffectsContext {
                    key,
                    attempt: lease.attempt,
                    fence: lease.fence,
                    result: result.as_ref(),
                    tx: Some(tx),
                };
                match catch_unwind(AssertUnwindSafe(|| job.on_succeeded_once(&mut ctx))) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        failed = Some(chain(&e));
                        Err(EffectsAborted)
                    }
                    Err(panic) => {
                        failed = Some(panic_message(&*panic));
                        Err(EffectsAborted)
                    }
                }
            };
            let (completed, ran) =
                exec.finish(CompleteAs::Succeeded, None, Some(guard), Some(&mut hook))?;
            return match completed {
                Completed::EffectsAborted => {
                    let message = format!(
                        "transactional effects failed and were rolled back: {}",
                        failed.unwrap_or_default()
                    );
                    let outcome =
                        exec.failure(AttemptError::new(ErrorKind::Retryable, message), retry);
                    let release = GuardFinish::Release {
                        lease,
                        error: Some("transactional effects failed"),
                    };
                    Ok(exec.finish(outcome, None, Some(release), None)?.1)
                }
                Completed::GuardStale => self.guard_lost(exec),
                Completed::Applied | Completed::Stale => Ok(ran),
            };
        }
        let (completed, ran) = exec.finish(CompleteAs::Succeeded, None, Some(guard), None)?;
        match completed {
            Completed::Applied => {}
            Completed::GuardStale => return self.guard_lost(exec),
            Completed::Stale | Completed::EffectsAborted => return Ok(ran),
        }
        let mut ctx = EffectsContext {
            key,
            attempt: lease.attempt,
            fence: lease.fence,
            result: result.as_ref(),
            tx: None,
        };
        let ran_effects = catch_unwind(AssertUnwindSafe(|| job.on_succeeded_once(&mut ctx)));
        let failure = match &ran_effects {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(chain(e)),
            Err(panic) => Some(panic_message(&**panic)),
        };
        let outcome = match &failure {
            None => EffectsOutcome::Done,
            Some(error) => {
                warn!(job = %exec.claimed.job.id, key = %key.digest(), "effects failed: in doubt");
                EffectsOutcome::InDoubt { error }
            }
        };
        if let Err(error) = exec.store.guards().finish_effects(lease, outcome) {
            // The row stays pending and turns in doubt when its window ends: visible, not lost.
            warn!(%error, "could not record how the effects ended");
        }
        if let Err(panic) = ran_effects {
            // The job is succeeded and the effects recorded; the panic is not the worker's.
            drop(panic);
        }
        Ok(ran)
    }

    /// The guard's lease was taken over (it expired while the job ran): nothing was finalized.
    fn guard_lost(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        let error = AttemptError::new(ErrorKind::LeaseLost, "the guard's lease was taken over");
        let outcome = exec.failure(error, &self.options.retry);
        Ok(exec.finish(outcome, None, None, None)?.1)
    }
}

fn claimed_has_attempts_left(exec: &Exec<'_>) -> bool {
    exec.claimed.lease.attempt < exec.claimed.job.max_attempts
}
