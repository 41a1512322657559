//! What a consumer does with one delivery: the guard's [`Disposition`] turned into one of three
//! broker-neutral actions, with the delay and the dead-letter reason filled in. Every consumer in
//! this crate settles through [`Settle::of`] (or [`Settle::undecodable`]); only the verbs differ.

use std::{error::Error, time::Duration};

use safejob_core::{Disposition, Report, RunError, disposition};

/// The delay of a `Retry` that suggests none: a transient job error or a store that could not
/// be reached. Defaults to 1 second (consumers take their own in their settings).
pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// A delivery's fate, decided by the guard's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Acknowledge: the work is done (here or by an earlier delivery), or it failed for good
    /// before and that failure was already dead-lettered once.
    Ack,
    /// Deliver again after `after` (the key is busy, the job is not ready, or a transient error).
    Retry {
        /// How long the broker should wait before the next delivery.
        after: Duration,
    },
    /// Move to the dead-letter destination with `reason`, then acknowledge the original.
    DeadLetter {
        /// Why: the failure code, or the error's text. Keys appear by digest only.
        reason: String,
    },
}

impl Settle {
    /// The action for a guarded run's result. `Retry` without a suggested delay waits
    /// `default_delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safejob_brokers::Settle;
    /// use safejob_core::{Report, RunError};
    ///
    /// let done: Result<Report, RunError<std::io::Error>> =
    ///     Ok(Report::AlreadySucceeded { result: None });
    /// assert_eq!(Settle::of(&done, Duration::from_secs(1)), Settle::Ack);
    /// ```
    pub fn of<E: Error + 'static>(
        result: &Result<Report, RunError<E>>,
        default_delay: Duration,
    ) -> Self {
        Self::from_disposition(disposition(result), default_delay, || reason(result))
    }

    /// The action for a run that went through the blocking pool ([`safejob_tokio::AsyncRunner`]):
    /// as [`Settle::of`], and `Retry` when the run panicked (its lease was released) or never ran.
    #[cfg(any(feature = "rabbitmq", feature = "nats"))]
    pub fn of_async<E: Error + 'static>(
        result: &Result<Report, safejob_tokio::AsyncError<RunError<E>>>,
        default_delay: Duration,
    ) -> Self {
        use safejob_tokio::AsyncError;
        match result {
            Ok(report) => Self::of::<E>(&Ok(report.clone()), default_delay),
            Err(AsyncError::Failed(error)) => {
                Self::from_disposition(error.disposition(), default_delay, || error.to_string())
            }
            Err(other) => {
                Self::from_disposition(other.disposition(), default_delay, || other.to_string())
            }
        }
    }

    /// A delivery that could not be decoded into a job cannot run safely: dead-letter it.
    pub fn undecodable(error: &DecodeError) -> Self {
        Self::DeadLetter {
            reason: format!("undecodable: {}", error.reason),
        }
    }

    fn from_disposition(
        disposition: Disposition,
        default_delay: Duration,
        reason: impl FnOnce() -> String,
    ) -> Self {
        match disposition {
            Disposition::Ack => Self::Ack,
            Disposition::Retry { after } => Self::Retry {
                after: after.unwrap_or(default_delay),
            },
            Disposition::DeadLetter => Self::DeadLetter { reason: reason() },
        }
    }
}

/// Why a run is dead-lettered, in words that name keys by digest only.
fn reason<E: Error + 'static>(result: &Result<Report, RunError<E>>) -> String {
    match result {
        Ok(Report::Failed { failure, .. }) => format!("failed: {}", failure.code),
        Ok(other) => format!("{other:?}"),
        Err(error) => error.to_string(),
    }
}

/// A delivery's payload is not a job: a missing field, bad JSON, an amount that is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode the delivery into a job: {reason}")]
pub struct DecodeError {
    /// What is wrong with it.
    pub reason: String,
}

impl DecodeError {
    /// A decode error saying `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// What the guard answered for one delivery, for counting (see [`crate::Stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// This delivery ran the job and finalized it succeeded (at most once per key).
    Succeeded,
    /// A duplicate: the stored success (or failure) was replayed.
    Replayed,
    /// This delivery finalized the job failed.
    Failed,
    /// Not run now: busy key, not ready, or a transient error.
    Deferred,
    /// Bad input, a key conflict, effects in doubt, or a store needing an operator.
    Refused,
    /// The payload was not a job.
    Undecodable,
}

impl RunKind {
    /// The kind of a run's result.
    pub fn of<E: Error + 'static>(result: &Result<Report, RunError<E>>) -> Self {
        match result {
            Ok(Report::Succeeded { .. }) => Self::Succeeded,
            Ok(Report::AlreadySucceeded { .. } | Report::AlreadyFailed { .. }) => Self::Replayed,
            Ok(Report::Failed { .. }) => Self::Failed,
            Ok(Report::Busy { .. } | Report::RetryLater { .. }) => Self::Deferred,
            Err(error) => match error.disposition() {
                Disposition::DeadLetter => Self::Refused,
                _ => Self::Deferred,
            },
        }
    }

    /// The kind of a run made through the blocking pool.
    #[cfg(any(feature = "rabbitmq", feature = "nats"))]
    pub fn of_async<E: Error + 'static>(
        result: &Result<Report, safejob_tokio::AsyncError<RunError<E>>>,
    ) -> Self {
        use safejob_tokio::AsyncError;
        match result {
            Ok(report) => Self::of::<E>(&Ok(report.clone())),
            Err(AsyncError::Failed(error)) => match error.disposition() {
                Disposition::DeadLetter => Self::Refused,
                _ => Self::Deferred,
            },
            Err(_) => Self::Deferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use safejob_core::{FinalFailure, KeyError};

    use super::*;

    type Result = std::result::Result<Report, RunError<std::io::Error>>;

    // Each disposition becomes its action; a retry without a delay waits the default one, and a
    // dead letter carries the failure code. Catches: `Retry { after: None }` mapped to a zero
    // delay (a hot redelivery loop), or the failure code left out of the reason.
    #[test]
    fn every_disposition_has_its_action() {
        let default = Duration::from_millis(700);
        let done: Result = Ok(Report::Succeeded {
            result: None,
            attempt: 1,
        });
        assert_eq!(Settle::of(&done, default), Settle::Ack);
        assert_eq!(RunKind::of(&done), RunKind::Succeeded);
        let busy: Result = Ok(Report::RetryLater {
            after: Some(Duration::from_secs(3)),
            attempt: 1,
        });
        assert_eq!(
            Settle::of(&busy, default),
            Settle::Retry {
                after: Duration::from_secs(3)
            }
        );
        let transient: Result = Err(RunError::Job {
            source: std::io::Error::other("gateway down"),
            attempt: 2,
        });
        assert_eq!(
            Settle::of(&transient, default),
            Settle::Retry { after: default }
        );
        assert_eq!(RunKind::of(&transient), RunKind::Deferred);
        let failed: Result = Ok(Report::Failed {
            failure: FinalFailure::new("card_declined", "declined"),
            attempt: 1,
        });
        assert_eq!(
            Settle::of(&failed, default),
            Settle::DeadLetter {
                reason: "failed: card_declined".into()
            }
        );
        let invalid: Result = Err(RunError::InvalidKey(KeyError::Empty));
        assert!(matches!(
            Settle::of(&invalid, default),
            Settle::DeadLetter { .. }
        ));
        assert_eq!(RunKind::of(&invalid), RunKind::Refused);
    }
}
