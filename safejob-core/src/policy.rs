//! What to do with an error from `perform`: finalize it as a failure, or hand it back to the queue.

use std::{error::Error as StdError, fmt, marker::PhantomData};

use serde::{Deserialize, Serialize};

/// A terminal failure recorded on a key and replayed to every later duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalFailure {
    /// Short machine-readable code, e.g. `card_declined`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

impl FinalFailure {
    /// Builds a failure from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FinalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Maps an error returned by `perform` (and the attempt number, starting at 1) to a decision:
/// `Some(FinalFailure)` finalizes the key `failed` for good; `None` releases the lease and returns
/// the error to the caller so the queue retries as it normally would.
///
/// The default policy is [`NeverFinalize`].
pub trait FailurePolicy: Send + Sync {
    /// Decides what `error`, raised by attempt number `attempt`, means.
    fn decide(&self, error: &(dyn StdError + 'static), attempt: u32) -> Option<FinalFailure>;
}

/// Never finalizes on an error: every error is handed back for the queue to retry.
/// This is the default, because it never turns a transient fault into a permanent failure.
///
/// ```
/// use safejob_core::{FailurePolicy, policy::NeverFinalize};
/// let err = std::io::Error::other("timeout");
/// assert!(NeverFinalize.decide(&err, 99).is_none());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct NeverFinalize;

impl FailurePolicy for NeverFinalize {
    fn decide(&self, _error: &(dyn StdError + 'static), _attempt: u32) -> Option<FinalFailure> {
        None
    }
}

/// Finalizes the key `failed` (code `attempts_exhausted`) once `attempt` reaches `max_attempts`;
/// earlier errors are handed back for a retry.
///
/// ```
/// use safejob_core::{FailurePolicy, policy::GiveUpAfter};
/// let policy = GiveUpAfter::new(3);
/// let err = std::io::Error::other("gateway timeout");
/// assert!(policy.decide(&err, 2).is_none());
/// let failure = policy.decide(&err, 3).unwrap();
/// assert_eq!(failure.code, "attempts_exhausted");
/// assert_eq!(failure.message, "gave up after 3 attempts: gateway timeout");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct GiveUpAfter {
    max_attempts: u32,
}

impl GiveUpAfter {
    /// Gives up at attempt `max_attempts` (at least 1).
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
        }
    }
}

impl FailurePolicy for GiveUpAfter {
    fn decide(&self, error: &(dyn StdError + 'static), attempt: u32) -> Option<FinalFailure> {
        (attempt >= self.max_attempts).then(|| {
            FinalFailure::new(
                "attempts_exhausted",
                format!("gave up after {attempt} attempts: {error}"),
            )
        })
    }
}

/// A policy from a closure.
///
/// ```
/// use safejob_core::{FailurePolicy, FinalFailure, policy::PolicyFn};
/// let policy = PolicyFn::new(|err, attempt| {
///     (attempt > 5 || err.to_string().contains("declined"))
///         .then(|| FinalFailure::new("declined", err.to_string()))
/// });
/// assert!(policy.decide(&std::io::Error::other("card declined"), 1).is_some());
/// assert!(policy.decide(&std::io::Error::other("timeout"), 1).is_none());
/// ```
pub struct PolicyFn<F>(F);

impl<F> PolicyFn<F>
where
    F: Fn(&(dyn StdError + 'static), u32) -> Option<FinalFailure> + Send + Sync,
{
    /// Wraps `decide`.
    pub fn new(decide: F) -> Self {
        Self(decide)
    }
}

impl<F> FailurePolicy for PolicyFn<F>
where
    F: Fn(&(dyn StdError + 'static), u32) -> Option<FinalFailure> + Send + Sync,
{
    fn decide(&self, error: &(dyn StdError + 'static), attempt: u32) -> Option<FinalFailure> {
        (self.0)(error, attempt)
    }
}

impl<F> fmt::Debug for PolicyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PolicyFn(..)")
    }
}

/// Finalizes with `code` when the error, or any error in its `source()` chain, is a `T`;
/// otherwise defers to the next policy (by default [`NeverFinalize`]).
///
/// ```
/// use safejob_core::{FailurePolicy, policy::FailOn};
/// #[derive(Debug, thiserror::Error)]
/// #[error("card declined")]
/// struct Declined;
///
/// let policy = FailOn::<Declined>::new("card_declined");
/// assert_eq!(policy.decide(&Declined, 1).unwrap().code, "card_declined");
/// assert!(policy.decide(&std::io::Error::other("timeout"), 1).is_none());
/// ```
pub struct FailOn<T, P = NeverFinalize> {
    code: String,
    otherwise: P,
    _error: PhantomData<fn() -> T>,
}

impl<T: StdError + 'static> FailOn<T, NeverFinalize> {
    /// Finalizes errors of type `T` with `code`; hands back everything else.
    pub fn new(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            otherwise: NeverFinalize,
            _error: PhantomData,
        }
    }
}

impl<T: StdError + 'static, P: FailurePolicy> FailOn<T, P> {
    /// Uses `otherwise` for errors that are not a `T`.
    pub fn otherwise<Q: FailurePolicy>(self, otherwise: Q) -> FailOn<T, Q> {
        FailOn {
            code: self.code,
            otherwise,
            _error: PhantomData,
        }
    }
}

impl<T: StdError + 'static, P: FailurePolicy> FailurePolicy for FailOn<T, P> {
    fn decide(&self, error: &(dyn StdError + 'static), attempt: u32) -> Option<FinalFailure> {
        let mut current: Option<&(dyn StdError + 'static)> = Some(error);
        while let Some(e) = current {
            if let Some(hit) = e.downcast_ref::<T>() {
                return Some(FinalFailure::new(self.code.clone(), hit.to_string()));
            }
            current = e.source();
        }
        self.otherwise.decide(error, attempt)
    }
}

impl<T, P: fmt::Debug> fmt::Debug for FailOn<T, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailOn")
            .field("error", &std::any::type_name::<T>())
            .field("code", &self.code)
            .field("otherwise", &self.otherwise)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("declined")]
    struct Declined;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapper(#[source] Declined);

    #[test]
    fn fail_on_searches_the_source_chain_and_falls_back() {
        let policy = FailOn::<Declined>::new("declined").otherwise(GiveUpAfter::new(2));
        assert_eq!(
            policy.decide(&Wrapper(Declined), 1),
            Some(FinalFailure::new("declined", "declined"))
        );
        let io = std::io::Error::other("timeout");
        assert_eq!(policy.decide(&io, 1), None);
        assert_eq!(policy.decide(&io, 2).unwrap().code, "attempts_exhausted");
    }

    #[test]
    fn give_up_after_zero_means_one() {
        let io = std::io::Error::other("x");
        assert!(GiveUpAfter::new(0).decide(&io, 1).is_some());
    }
}
