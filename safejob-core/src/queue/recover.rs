//! Recovering a queued guarded job's in-doubt effects by its key alone: the job is rebuilt from
//! a queued row that carries the key, by the kind registered for it, and handed to
//! [`Runner::recover_effects`]. Only a binary that registers the kind can do this (the operator
//! command `keys recover` in a user binary built on `safejob_cli::main_with`).

use std::time::Duration;

use crate::{
    EffectsContext, Fingerprint, FingerprintError, IdempotencyKey, KeyDigest, KeyError, Outcome,
    PerformContext, Recovery, Retention, Runner, SafeJob,
    queue::{GuardedJob, JobFilter, JobId, JobQuery, QueueState, QueueStore, QueuedJob, Registry},
    report::RunError,
    runner::EffectsMode,
    store::StoreError,
};

/// Rows read per page while looking for the job that carries a key.
const PAGE: usize = 500;

/// Why in-doubt effects could not be recovered through the registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No succeeded queued job of a guarded kind registered here carries the key (it was run
    /// by a `Runner`, its kind is not registered in this binary, or the job row was pruned).
    #[error(
        "no succeeded queued job of a guarded kind registered in this binary carries key \
         {digest}: rebuild the job in your code and call Runner::recover_effects, or check that \
         the effects happened and confirm them (`keys confirm`)"
    )]
    NoJob {
        /// The key's short digest.
        digest: String,
    },
    /// The job's payload does not decode as its kind.
    #[error("job {job}: the payload does not decode as kind {kind:?}: {source}")]
    UndecodablePayload {
        /// The job.
        job: JobId,
        /// Its kind.
        kind: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The job rebuilt from the payload names another key than the row it was found by.
    #[error("job {job}: the rebuilt job's key does not match its guard")]
    KeyMismatch {
        /// The job.
        job: JobId,
    },
    /// The recovery ran and failed: the effects returned an error (they are in doubt again), or
    /// the key's claim was refused.
    #[error("recovering through job {job}: {source}")]
    Run {
        /// The job the effects were rebuilt from.
        job: JobId,
        /// The runner's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Registry {
    /// Re-runs the in-doubt effects of the key `digest`: finds a succeeded queued job of a
    /// guarded kind registered here whose guard is that key, rebuilds the job from its payload
    /// and calls [`Runner::recover_effects`] with it. The key's row is read first: a missing
    /// row answers [`Recovery::Missing`] and effects not in doubt [`Recovery::NotInDoubt`],
    /// before any job is looked for.
    ///
    /// Like `recover_effects`, this may run the effects a second time: call it only after
    /// checking that they did not happen, or when they are safe to repeat. The search reads the
    /// succeeded jobs of each guarded kind a page at a time (no index names a guard), so it is
    /// an operator's tool, not a hot path.
    pub fn recover_effects(
        &self,
        queue: &dyn QueueStore,
        runner: &Runner,
        digest: &KeyDigest,
    ) -> Result<Recovery, RecoverError> {
        let guards = runner.store();
        let Some(row) = guards.get(digest)? else {
            return Ok(Recovery::Missing);
        };
        if !row.effects_in_doubt(guards.now()?) {
            return Ok(Recovery::NotInDoubt(Box::new(row)));
        }
        for (kind, handler) in self.guarded_kinds() {
            if let Some(job) = find_carrier(queue, kind, digest)? {
                return handler.recover(&job, runner);
            }
        }
        Err(RecoverError::NoJob {
            digest: digest.short(),
        })
    }
}

/// The first succeeded job of `kind` whose guard is `digest`.
fn find_carrier(
    queue: &dyn QueueStore,
    kind: &str,
    digest: &KeyDigest,
) -> Result<Option<QueuedJob>, StoreError> {
    let mut after = None;
    loop {
        let page = queue.list(&JobQuery {
            filter: JobFilter::state(QueueState::Succeeded).kind(kind),
            after,
            limit: PAGE,
        })?;
        if let Some(job) = page
            .iter()
            .find(|j| j.guard.is_some_and(|g| g.digest == *digest))
        {
            return Ok(Some(job.clone()));
        }
        if page.len() < PAGE {
            return Ok(None);
        }
        after = page.last().map(|j| j.id);
    }
}

/// Rebuilds `job` as a `J` and recovers its effects (the guarded handler's half).
pub(crate) fn recover_as<J: GuardedJob>(
    job: &QueuedJob,
    runner: &Runner,
) -> Result<Recovery, RecoverError> {
    let rebuilt =
        J::deserialize(&job.payload).map_err(|source| RecoverError::UndecodablePayload {
            job: job.id,
            kind: job.kind.clone(),
            source,
        })?;
    let run_error = |e: RunError<J::Error>| RecoverError::Run {
        job: job.id,
        source: Box::new(e),
    };
    let key = rebuilt.key().map_err(|e| run_error(e.into()))?;
    if job.guard.is_none_or(|g| g.digest != *key.digest()) {
        return Err(RecoverError::KeyMismatch { job: job.id });
    }
    runner.recover_effects(&Queued(&rebuilt)).map_err(run_error)
}

/// A guarded job as the queue ran it: its fingerprint is the one the queue stored with its
/// guard ([`GuardedJob::guard_fingerprint`]), which the recovery's claim must present; the rest
/// is the job's own.
struct Queued<'a, J>(&'a J);

impl<J: GuardedJob> SafeJob for Queued<'_, J> {
    type Error = J::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        self.0.key()
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        self.0.guard_fingerprint()
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.0.lease_ttl()
    }

    fn effects_mode(&self) -> Option<EffectsMode> {
        self.0.effects_mode()
    }

    fn guard_retention(&self) -> Option<Retention> {
        self.0.guard_retention()
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.0.perform(ctx)
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        self.0.on_succeeded_once(ctx)
    }

    fn has_effects(&self) -> bool {
        self.0.has_effects()
    }
}
