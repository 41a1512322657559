//! What one guarded run reports, and what a queue should do with the message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    FinalFailure, Fingerprint, FingerprintError, KeyDigest, KeyError, RetentionError, StoreError,
};

/// What a queue consumer should do with the message that carried the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Acknowledge: the work is finished (or a duplicate of finished work).
    Ack,
    /// Redeliver, after `after` when given.
    Retry {
        /// Suggested delay.
        after: Option<Duration>,
    },
    /// Move to the dead-letter queue: an operator must look.
    DeadLetter,
}

/// A guarded run that completed without error.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// This run finalized the key succeeded (and its effects ran, or committed with it).
    Succeeded {
        /// The stored result.
        result: Option<Value>,
        /// The winning attempt.
        attempt: u32,
    },
    /// A duplicate: the key had already succeeded. Its stored result is replayed.
    AlreadySucceeded {
        /// The stored result.
        result: Option<Value>,
    },
    /// This run finalized the key failed, terminally.
    Failed {
        /// The recorded failure.
        failure: FinalFailure,
        /// The attempt that failed.
        attempt: u32,
    },
    /// A duplicate: the key had already failed. Its stored failure is replayed.
    AlreadyFailed {
        /// The recorded failure.
        failure: FinalFailure,
    },
    /// Another worker holds a live lease on the key.
    Busy {
        /// The holder's worker id.
        owner: Option<String>,
        /// When its lease ends, by the store clock.
        until: DateTime<Utc>,
        /// How long to wait before asking again: the time left on the holder's lease (by the
        /// store's clock), capped at [`BUSY_RETRY_MAX`](crate::BUSY_RETRY_MAX) so a duplicate
        /// learns soon after a holder that finishes early.
        retry_after: Duration,
    },
    /// `perform` said "not ready"; the lease was released.
    RetryLater {
        /// Suggested delay.
        after: Option<Duration>,
        /// The attempt that asked.
        attempt: u32,
    },
}

impl Report {
    /// The queue disposition: `Ack` for finished work and replays, `Retry` for busy keys and
    /// not-ready work, `DeadLetter` for a failure finalized by this run (an operator should see
    /// it once; its duplicates are acked).
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Succeeded { .. } | Self::AlreadySucceeded { .. } | Self::AlreadyFailed { .. } => {
                Disposition::Ack
            }
            Self::Failed { .. } => Disposition::DeadLetter,
            Self::Busy { retry_after, .. } => Disposition::Retry {
                after: Some(*retry_after),
            },
            Self::RetryLater { after, .. } => Disposition::Retry { after: *after },
        }
    }
}

/// A lease TTL outside the accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlError {
    /// Shorter than [`crate::runner::MIN_TTL`] (zero included).
    #[error("lease ttl {ttl:?} is too short; the minimum is {min:?}")]
    TooShort {
        /// The refused TTL.
        ttl: Duration,
        /// The minimum.
        min: Duration,
    },
    /// Longer than [`crate::runner::MAX_TTL`].
    #[error("lease ttl {ttl:?} is too long; the maximum is {max:?}")]
    TooLong {
        /// The refused TTL.
        ttl: Duration,
        /// The maximum.
        max: Duration,
    },
}

/// A guarded run that did not complete. [`RunError::disposition`] says what the queue should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError<E: std::error::Error + 'static> {
    /// The job's key is invalid. Nothing was stored.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The job's parameters could not be fingerprinted. Nothing was stored.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// The job asked for a lease TTL outside the accepted range. Nothing was stored.
    #[error(transparent)]
    InvalidTtl(#[from] TtlError),
    /// The job asked for a guard retention outside the accepted range
    /// ([`SafeJob::guard_retention`](crate::SafeJob::guard_retention)). Nothing was stored.
    #[error(transparent)]
    InvalidRetention(#[from] RetentionError),
    /// The key exists with different parameters. Nothing was changed.
    #[error("key {digest} was already used with different parameters")]
    KeyConflict {
        /// The key's digest.
        digest: KeyDigest,
        /// The stored fingerprint.
        stored: Option<Fingerprint>,
        /// The fingerprint given.
        given: Option<Fingerprint>,
    },
    /// `perform` failed and the failure policy handed the error back. The lease was released so a
    /// retry can start at once.
    #[error("attempt {attempt} failed: {source}")]
    Job {
        /// The job's error.
        #[source]
        source: E,
        /// The attempt that failed.
        attempt: u32,
    },
    /// Our lease was taken over (we were paused past the TTL): nothing was finalized by us.
    #[error("lease lost: fence {fence} of attempt {attempt} was superseded; nothing finalized")]
    LeaseLost {
        /// The attempt that lost.
        attempt: u32,
        /// Its fence.
        fence: u64,
    },
    /// Transactional effects failed: the finalize was rolled back and the lease released.
    #[error("transactional effects of attempt {attempt} failed and were rolled back: {source}")]
    EffectsRolledBack {
        /// The job's error.
        #[source]
        source: E,
        /// The attempt.
        attempt: u32,
    },
    /// Transactional effects returned `Ok`, but their transaction was no longer alive when the
    /// store confirmed it before COMMIT (the hook swallowed a database error that aborted or
    /// rolled back the transaction): nothing of the finalize or the hook committed, and the lease
    /// is released. See docs/guarantees.md, "What a transactional effects hook may and may not
    /// do with errors".
    #[error(
        "transactional effects of attempt {attempt} returned Ok, but their transaction had been \
         aborted or rolled back (a swallowed database error?): nothing committed"
    )]
    EffectsTransactionLost {
        /// The attempt.
        attempt: u32,
    },
    /// The key succeeded but `on_succeeded_once` failed: the effects are in doubt and recorded so.
    /// They are not re-run automatically; see [`crate::Runner::recover_effects`].
    #[error("key {digest} succeeded but its effects failed and are in doubt: {source}")]
    EffectsInDoubt {
        /// The key's digest.
        digest: KeyDigest,
        /// The job's error.
        #[source]
        source: E,
    },
    /// The store failed. If it failed during finalize, the runner tried to resolve the outcome
    /// first (a fenced release, then a re-read): when that succeeded, the finalize did not
    /// commit and the lease is released. When the store stayed unreachable, the outcome is
    /// unknown — safely so: either the row is still `running` under a lease that expires, or it
    /// is `succeeded` with effects pending, which turn in doubt when their window ends.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl<E: std::error::Error + 'static> RunError<E> {
    /// What the queue should do: `Retry` for transient errors (job errors handed back, lost
    /// leases, rolled-back effects, a store that failed or could not be reached), `DeadLetter`
    /// for what will not work however often it is retried: invalid input (key, fingerprint,
    /// TTL, retention, key conflict), effects in doubt, and a store that needs an operator first — a missing
    /// table (run the migrations, then redrive the dead letters) or a corrupt row.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Store(StoreError::MissingTable { .. } | StoreError::CorruptRow { .. }) => {
                Disposition::DeadLetter
            }
            Self::Job { .. }
            | Self::LeaseLost { .. }
            | Self::EffectsRolledBack { .. }
            | Self::EffectsTransactionLost { .. }
            | Self::Store(_) => Disposition::Retry { after: None },
            Self::InvalidKey(_)
            | Self::Fingerprint(_)
            | Self::InvalidTtl(_)
            | Self::InvalidRetention(_)
            | Self::KeyConflict { .. }
            | Self::EffectsInDoubt { .. } => Disposition::DeadLetter,
        }
    }
}

/// The disposition of a run's whole result.
pub fn disposition<E: std::error::Error + 'static>(
    result: &Result<Report, RunError<E>>,
) -> Disposition {
    match result {
        Ok(report) => report.disposition(),
        Err(error) => error.disposition(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Error = RunError<std::io::Error>;

    /// A configuration error does not retry forever (issue #14): a missing table or a corrupt row
    /// is dead-lettered, while a store that is merely unreachable is retried. Catches the two
    /// arms folded back into `Store(_) => Retry`.
    #[test]
    fn a_store_that_needs_an_operator_is_dead_lettered() {
        let missing = Error::Store(StoreError::MissingTable {
            hint: "run the migrations".into(),
        });
        assert_eq!(missing.disposition(), Disposition::DeadLetter);
        let corrupt = Error::Store(StoreError::CorruptRow {
            digest: "abc".into(),
            detail: "state".into(),
        });
        assert_eq!(corrupt.disposition(), Disposition::DeadLetter);
        let unreachable = Error::Store(StoreError::backend("connection refused"));
        assert_eq!(
            unreachable.disposition(),
            Disposition::Retry { after: None }
        );
    }
}
