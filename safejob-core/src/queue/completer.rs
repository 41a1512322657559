//! The pool's completer: worker threads hand their completions to one
//! [`Coalescer`](crate::group::Coalescer), and whichever thread finds no group being written
//! writes the waiting ones with one [`QueueStore::complete_many`] (on the diesel stores: one
//! transaction, one commit).
//!
//! A worker's [`Exec::finish`](super::exec) returns only once its completion's group has been
//! written, so a job's completion is acknowledged, and its after-commit effects run, only after
//! its group committed. There is no timer: a lone completion on an idle pool is written at once
//! by its own thread, and under load a group holds what piled up while the previous one was
//! being written (at most the group size).
//!
//! Completions with a transactional effects hook are not grouped: the hook borrows its worker's
//! stack (the job and its context), so it cannot be handed to another thread's group without
//! `'static` and `Send` bounds that [`TxEffects`](crate::store::TxEffects) does not have. They
//! are written by their own thread with [`QueueStore::complete`], as without grouping.

use std::{
    num::NonZeroUsize,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use serde_json::Value;
use tracing::error;

use crate::{
    FinalFailure, Retention,
    group::{Coalescer, GroupError, GroupStats},
    queue::{
        CompleteAs, Completed, Completion, GroupMember, GuardFinish, Progress, QueueLease,
        QueueStore,
    },
    store::{Lease, StoreError},
    workflow::BatchId,
};

/// The largest group the pool writes unless told otherwise.
pub const DEFAULT_COMPLETION_GROUP: usize = 64;

/// A worker pool's completer: the one coalescer its worker threads share.
pub(crate) struct Completer {
    coalescer: Coalescer<Owned, Result<Completed, StoreError>>,
}

impl Completer {
    pub(crate) fn new(max_group: NonZeroUsize) -> Self {
        Self {
            coalescer: Coalescer::new(max_group),
        }
    }

    /// Groups written so far.
    pub(crate) fn stats(&self) -> GroupStats {
        self.coalescer.stats()
    }

    /// Writes `completion` in the next group on `store` and returns its own answer once the
    /// group is written. A group whose writer panicked (after its commit, perhaps) is an
    /// ambiguous commit for each of its members, this thread's included: the panic is logged
    /// here, not carried on, so the worker thread lives and the job's fate is left to its lease
    /// and fence, as after any ambiguous commit.
    pub(crate) fn complete(
        &self,
        store: &dyn QueueStore,
        completion: &Completion<'_>,
    ) -> Result<Completed, StoreError> {
        let write = |group: Vec<Owned>| {
            let mut members: Vec<GroupMember<'_, '_>> = group
                .iter()
                .map(|c| GroupMember::new(c.borrowed()))
                .collect();
            store.complete_many(&mut members)
        };
        let submitted = catch_unwind(AssertUnwindSafe(|| {
            self.coalescer.submit(Owned::of(completion), write)
        }));
        match submitted {
            Ok(Ok(answer)) => answer,
            Ok(Err(group)) => Err(group.into()),
            Err(panic) => {
                error!(
                    job = %completion.lease.id,
                    "the completion group's writer panicked: {}; the group's outcome is unknown",
                    crate::guard::pipeline::panic_message(&*panic)
                );
                Err(GroupError::WriterPanicked.into())
            }
        }
    }
}

impl std::fmt::Debug for Completer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.coalescer.fmt(f)
    }
}

/// A [`Completion`] that owns its parts, so it can wait in a group written by another thread.
struct Owned {
    lease: QueueLease,
    outcome: CompleteAs,
    progress: Option<Progress>,
    guard: Option<OwnedGuard>,
    batch: Option<BatchId>,
}

enum OwnedGuard {
    Succeeded {
        lease: Lease,
        result: Option<Value>,
        effects_ttl: Duration,
        has_effects: bool,
        retention: Retention,
    },
    Failed {
        lease: Lease,
        failure: FinalFailure,
        retention: Retention,
    },
    Release {
        lease: Lease,
        error: Option<String>,
    },
}

impl Owned {
    fn of(c: &Completion<'_>) -> Self {
        Self {
            lease: c.lease.clone(),
            outcome: c.outcome.clone(),
            progress: c.progress.cloned(),
            guard: c.guard.map(|g| match g {
                GuardFinish::Succeeded {
                    lease,
                    result,
                    effects_ttl,
                    has_effects,
                    retention,
                } => OwnedGuard::Succeeded {
                    lease: lease.clone(),
                    result: result.cloned(),
                    effects_ttl,
                    has_effects,
                    retention,
                },
                GuardFinish::Failed {
                    lease,
                    failure,
                    retention,
                } => OwnedGuard::Failed {
                    lease: lease.clone(),
                    failure: failure.clone(),
                    retention,
                },
                GuardFinish::Release { lease, error } => OwnedGuard::Release {
                    lease: lease.clone(),
                    error: error.map(str::to_owned),
                },
            }),
            batch: c.batch,
        }
    }

    fn borrowed(&self) -> Completion<'_> {
        Completion {
            lease: &self.lease,
            outcome: self.outcome.clone(),
            progress: self.progress.as_ref(),
            guard: self.guard.as_ref().map(|g| match g {
                OwnedGuard::Succeeded {
                    lease,
                    result,
                    effects_ttl,
                    has_effects,
                    retention,
                } => GuardFinish::Succeeded {
                    lease,
                    result: result.as_ref(),
                    effects_ttl: *effects_ttl,
                    has_effects: *has_effects,
                    retention: *retention,
                },
                OwnedGuard::Failed {
                    lease,
                    failure,
                    retention,
                } => GuardFinish::Failed {
                    lease,
                    failure,
                    retention: *retention,
                },
                OwnedGuard::Release { lease, error } => GuardFinish::Release {
                    lease,
                    error: error.as_deref(),
                },
            }),
            batch: self.batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::JobId;

    /// The owned copy gives back the very completion it was made from. Catches a field lost on
    /// the way to the group's writer (a guard half, progress, or the batch that settles).
    #[test]
    fn an_owned_completion_round_trips() {
        let lease = QueueLease {
            id: JobId(7),
            fence: 3,
            attempt: 2,
            owner: "w".into(),
            expires_at: chrono::DateTime::UNIX_EPOCH,
        };
        let guard = Lease {
            digest: crate::KeyDigest::of("k"),
            fence: 9,
            attempt: 1,
            owner: "w".into(),
            expires_at: chrono::DateTime::UNIX_EPOCH,
        };
        let result = serde_json::json!({"paid": 1});
        let failure = FinalFailure::new("code", "no");
        let progress = Progress {
            current: 1,
            total: Some(2),
            message: None,
        };
        let guards = [
            None,
            Some(GuardFinish::Succeeded {
                lease: &guard,
                result: Some(&result),
                effects_ttl: Duration::from_secs(5),
                has_effects: true,
                retention: Retention::Forever,
            }),
            Some(GuardFinish::Failed {
                lease: &guard,
                failure: &failure,
                retention: Retention::Forever,
            }),
            Some(GuardFinish::Release {
                lease: &guard,
                error: Some("why"),
            }),
        ];
        for guard in guards {
            let c = Completion {
                lease: &lease,
                outcome: CompleteAs::Succeeded,
                progress: Some(&progress),
                guard,
                batch: Some(BatchId(4)),
            };
            assert_eq!(Owned::of(&c).borrowed(), c);
        }
    }
}
