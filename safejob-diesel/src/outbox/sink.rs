//! Where a relay delivers: a user-supplied [`Sink`].

use crate::BoxError;

use super::OutboxMessage;

/// A delivery did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The receiver could not take the message now (down, timed out, overloaded): the relay tries
    /// again after a backoff.
    #[error("receiver unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The receiver refused the message for good (malformed, unknown topic): the relay marks it
    /// dead at once, for an operator to look at.
    #[error("receiver rejected the message: {0}")]
    Rejected(#[source] BoxError),
}

impl SinkError {
    /// A failure worth retrying.
    pub fn unavailable(error: impl Into<BoxError>) -> Self {
        Self::Unavailable(error.into())
    }

    /// A failure not worth retrying.
    pub fn rejected(error: impl Into<BoxError>) -> Self {
        Self::Rejected(error.into())
    }
}

/// Delivers outbox messages to a receiver: a broker, a webhook, another database.
///
/// A relay calls `deliver` at least once per message, on its own threads, and marks the message
/// delivered when it returns `Ok`. The same message may arrive again (after a relay crash, or a
/// claim that expired during a slow delivery), always with the same
/// [`message_id`](OutboxMessage::message_id): pass it on as the receiver's idempotency or
/// deduplication key. A panic counts as [`SinkError::Unavailable`].
///
/// Closures are sinks:
///
/// ```
/// use safejob_diesel::outbox::{OutboxMessage, Sink, SinkError};
///
/// fn assert_sink(_: &impl Sink) {}
/// assert_sink(&|msg: &OutboxMessage| -> Result<(), SinkError> {
///     println!("{} {} {}", msg.message_id, msg.topic, msg.payload);
///     Ok(())
/// });
/// ```
pub trait Sink: Send + Sync {
    /// Hands `msg` to the receiver. `Ok` means the receiver has it.
    fn deliver(&self, msg: &OutboxMessage) -> Result<(), SinkError>;
}

impl<F> Sink for F
where
    F: Fn(&OutboxMessage) -> Result<(), SinkError> + Send + Sync,
{
    fn deliver(&self, msg: &OutboxMessage) -> Result<(), SinkError> {
        self(msg)
    }
}
