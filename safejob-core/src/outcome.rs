//! What a job's `perform` decides.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::policy::FinalFailure;

/// What [`SafeJob::perform`](crate::SafeJob::perform) returns when it ran without error.
///
/// ```
/// use safejob_core::Outcome;
/// use std::time::Duration;
///
/// let done = Outcome::done();
/// let with_receipt = Outcome::with_result(&serde_json::json!({"receipt": "r-1"})).unwrap();
/// let declined = Outcome::failed("card_declined", "the issuer declined the card");
/// let later = Outcome::retry_after(Duration::from_secs(30));
/// # let _ = (done, with_receipt, declined, later);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// The work is done. `result` is stored with the row and replayed to every duplicate.
    Succeeded {
        /// JSON result stored and replayed, if any.
        result: Option<Value>,
    },
    /// The job decided it can never succeed: the key is finalized `failed`, terminally, and the
    /// failure is replayed to duplicates.
    FailedPermanently(FinalFailure),
    /// Not ready yet: the lease is released and the caller is told to retry (after `after`, if
    /// given). Nothing is finalized.
    RetryLater {
        /// Suggested delay before the retry.
        after: Option<Duration>,
    },
}

impl Outcome {
    /// Success with no stored result.
    pub fn done() -> Self {
        Self::Succeeded { result: None }
    }

    /// Success with a JSON result stored and replayed to duplicates.
    pub fn json(result: Value) -> Self {
        Self::Succeeded {
            result: Some(result),
        }
    }

    /// Success with any serializable result.
    pub fn with_result<T: Serialize + ?Sized>(result: &T) -> Result<Self, serde_json::Error> {
        Ok(Self::json(serde_json::to_value(result)?))
    }

    /// Permanent failure decided by the job.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::FailedPermanently(FinalFailure::new(code, message))
    }

    /// Not ready; retry whenever the queue normally would.
    pub fn retry_later() -> Self {
        Self::RetryLater { after: None }
    }

    /// Not ready; retry after `delay`.
    pub fn retry_after(delay: Duration) -> Self {
        Self::RetryLater { after: Some(delay) }
    }
}
