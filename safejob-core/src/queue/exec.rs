//! Running one claimed job: the shared steps of every handler.

use std::{sync::Arc, time::Duration};

use tracing::{debug, warn};

use crate::{
    Clock, Retention,
    observe::Observer,
    queue::{
        AttemptError, Claimed, CompleteAs, Completed, Completion, ErrorKind, GuardFinish, Progress,
        QueueStore, RetryPolicy, WorkContext,
        completer::Completer,
        job::{Signals, StopReason},
    },
    runner::EffectsMode,
    store::{Acquired, StoreError, TxEffects},
};

/// How one claimed job ended, as the worker saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ran {
    /// Completed `succeeded` (for a guarded duplicate of a succeeded key: without running).
    Succeeded,
    /// Completed `retrying`, due after `delay`.
    Retrying {
        /// The backoff.
        delay: Duration,
        /// Why the attempt failed.
        kind: ErrorKind,
    },
    /// Given back without counting the attempt (guard busy, shutdown), due after `delay`.
    Snoozed {
        /// When it will be due again.
        delay: Duration,
    },
    /// Completed `dead`.
    Dead {
        /// Why.
        kind: ErrorKind,
    },
    /// Completed `cancelled` by the job itself.
    Cancelled,
    /// The completion was stale: the lease had been reaped (or the guard taken); nothing changed.
    Stale,
}

/// One job a worker handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worked {
    /// The job.
    pub id: crate::queue::JobId,
    /// Its kind.
    pub kind: String,
    /// How it ended.
    pub ran: Ran,
}

/// Everything a handler needs to run one claimed job.
pub(crate) struct Exec<'a> {
    pub(crate) store: &'a dyn QueueStore,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) claimed: &'a Claimed,
    pub(crate) signals: Arc<Signals>,
    pub(crate) progress_every: Duration,
    /// The worker's effects mode: the default for guarded jobs that do not choose their own.
    pub(crate) effects: EffectsMode,
    /// The worker's guard retention: the default for guarded jobs that do not choose their own.
    pub(crate) retention: Retention,
    pub(crate) ttl: Duration,
    /// The worker's observer: hears the guard's answers of guarded jobs.
    pub(crate) observer: &'a dyn Observer,
    /// The pool's completer, when completions are written in groups (a pool with batched
    /// completions on); `None`: each completion is written by its own thread.
    pub(crate) completer: Option<&'a Completer>,
}

impl<'a> Exec<'a> {
    /// A context for `work`, with the attempt's deadline from `timeout`.
    pub(crate) fn context(&self, timeout: Option<Duration>) -> WorkContext<'a> {
        let deadline = timeout.and_then(|t| {
            chrono::Duration::from_std(t)
                .ok()
                .and_then(|t| self.clock.now().checked_add_signed(t))
        });
        WorkContext {
            job: &self.claimed.job,
            lease: &self.claimed.lease,
            store: self.store,
            clock: self.clock,
            signals: self.signals.clone(),
            deadline,
            progress_every: self.progress_every,
            progress: None,
            progress_dirty: false,
            progress_written: None,
        }
    }

    /// Retry after the policy's delay, or dead on the last attempt or with no retries.
    pub(crate) fn failure(&self, error: AttemptError, retry: &RetryPolicy) -> CompleteAs {
        let lease = &self.claimed.lease;
        if lease.attempt >= self.claimed.job.max_attempts {
            return CompleteAs::Dead { error };
        }
        match retry.delay(lease.attempt, self.claimed.job.id.0 as u64) {
            Some(delay) => CompleteAs::Retry { delay, error },
            None => CompleteAs::Dead { error },
        }
    }

    /// The error kind of a job that stopped, from why it was asked to.
    pub(crate) fn stopped_kind(reason: Option<StopReason>) -> ErrorKind {
        match reason {
            Some(StopReason::TimedOut) => ErrorKind::TimedOut,
            Some(StopReason::ShuttingDown) => ErrorKind::ShutDown,
            Some(StopReason::LeaseLost) => ErrorKind::LeaseLost,
            None => ErrorKind::Retryable,
        }
    }

    /// The guard's release, when the claim was granted the guard but the job will not run it.
    pub(crate) fn guard_release(&self, why: &'a str) -> Option<GuardFinish<'a>> {
        match &self.claimed.guard {
            Some(Acquired::Granted(lease)) => Some(GuardFinish::Release {
                lease,
                error: Some(why),
            }),
            _ => None,
        }
    }

    /// Completes the job (and the guard's half) and says how it ended. With the pool's completer
    /// the completion is written in a group, and this returns once that group was written
    /// (committed). On a stale completion, a guard lease this attempt still holds is released
    /// so the next attempt needs not wait for it.
    pub(crate) fn finish(
        &self,
        outcome: CompleteAs,
        progress: Option<Progress>,
        guard: Option<GuardFinish<'_>>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<(Completed, Ran), StoreError> {
        let completion = Completion {
            lease: &self.claimed.lease,
            outcome,
            progress: progress.as_ref(),
            guard,
            batch: self.claimed.job.batch,
        };
        // A hooked completion is written by this thread: its hook borrows this thread's stack
        // (see `completer`). Everything else waits for its group's commit.
        let completed = match (self.completer, hook) {
            (Some(completer), None) => completer.complete(self.store, &completion)?,
            (_, hook) => self.store.complete(&completion, hook)?,
        };
        let ran = match completed {
            Completed::Applied => match completion.outcome {
                CompleteAs::Succeeded => Ran::Succeeded,
                CompleteAs::Retry { delay, error } => Ran::Retrying {
                    delay,
                    kind: error.kind,
                },
                CompleteAs::Snooze { delay, .. } => Ran::Snoozed { delay },
                CompleteAs::Dead { error } => Ran::Dead { kind: error.kind },
                CompleteAs::Cancelled { .. } => Ran::Cancelled,
            },
            Completed::Stale | Completed::GuardStale | Completed::EffectsAborted => {
                debug!(job = %self.claimed.job.id, fence = self.claimed.lease.fence, ?completed, "completion not applied");
                if completed == Completed::Stale
                    && let Some(
                        GuardFinish::Succeeded { lease, .. }
                        | GuardFinish::Failed { lease, .. }
                        | GuardFinish::Release { lease, .. },
                    ) = completion.guard
                    && let Err(error) = self.store.guards().release(lease, Some("queue lease lost"))
                {
                    warn!(%error, "could not release the guard; its lease will expire");
                }
                Ran::Stale
            }
        };
        Ok((completed, ran))
    }
}
