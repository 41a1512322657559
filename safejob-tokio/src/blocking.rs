//! The one hop from async code to safejob's synchronous calls: [`blocking`], and its error,
//! [`AsyncError`].

use std::any::Any;

use safejob_core::{Disposition, RunError};
use tokio::task::JoinError;

/// A synchronous safejob call made from async code did not give its own answer.
///
/// `E` is the call's own error: [`RunError`] for a run, `EnqueueError` for an enqueue,
/// `StoreError` for a read, [`std::convert::Infallible`] for a call that cannot fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsyncError<E: std::error::Error + 'static> {
    /// The call ran on the blocking pool and returned this error.
    #[error(transparent)]
    Failed(E),
    /// The call panicked on the blocking pool. A [`Runner`](safejob_core::Runner) run that panics
    /// in `perform` has released its lease, and one that panics in `on_succeeded_once` has marked
    /// its effects in doubt, before the panic reached here: the key is never left stuck.
    #[error("the blocking task panicked: {message}")]
    Panicked {
        /// The panic's message, or a note that its payload was not a string.
        message: String,
    },
    /// The runtime shut down before the blocking task started: the call did not run at all.
    #[error("the blocking task was cancelled before it ran: the tokio runtime is shutting down")]
    Cancelled,
}

impl<E: std::error::Error + 'static> AsyncError<RunError<E>> {
    /// The queue disposition, as [`RunError::disposition`] for a run that returned an error, and
    /// `Retry` with the queue's own backoff for one that panicked (the lease was released) or
    /// never ran.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Failed(error) => error.disposition(),
            Self::Panicked { .. } | Self::Cancelled => Disposition::Retry { after: None },
        }
    }
}

/// Runs the synchronous `call` on tokio's blocking pool ([`tokio::task::spawn_blocking`]) and
/// waits for it without blocking the executor: the facades of this crate are built on it, and any
/// other safejob call (an operator action, a snapshot, a query on a `DieselStore`'s pool) can go
/// through it as well.
///
/// Dropping the returned future does not stop `call`: it runs to its end on the blocking pool and
/// its answer is dropped. For a guarded run that is safe (the store records the outcome and a
/// duplicate replays it), but the caller does not learn it.
///
/// Call it from inside a tokio runtime; outside one it panics, as `spawn_blocking` does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use safejob_core::queue::{MemoryQueue, Queue};
///
/// let queue = Queue::new(Arc::new(MemoryQueue::new()));
/// let snapshot = safejob_tokio::blocking(move || queue.snapshot()).await?;
/// assert!(snapshot.workers.is_empty());
/// # Ok(()) }
/// ```
pub async fn blocking<T, E>(
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, AsyncError<E>>
where
    T: Send + 'static,
    E: std::error::Error + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(answer) => answer.map_err(AsyncError::Failed),
        Err(joined) => Err(from_join_error(joined)),
    }
}

/// What a blocking task that gave no answer means: it panicked, or never ran.
fn from_join_error<E: std::error::Error + 'static>(error: JoinError) -> AsyncError<E> {
    match error.try_into_panic() {
        Ok(payload) => AsyncError::Panicked {
            message: panic_message(payload.as_ref()),
        },
        Err(_) => AsyncError::Cancelled,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(the panic payload is not a string)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, future};

    use super::*;

    // A cancelled task and a panicked one, as tokio really reports them, map to their own
    // variants. Catches: `from_join_error` answering `Panicked` for every error (or the other
    // way round).
    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_task_is_cancelled_and_a_panicked_one_panicked() {
        let never = tokio::spawn(future::pending::<()>());
        never.abort();
        let cancelled = never.await.expect_err("an aborted task gives a JoinError");
        assert!(matches!(
            from_join_error::<Infallible>(cancelled),
            AsyncError::Cancelled
        ));

        let panicked = tokio::spawn(async { panic!("boom {}", 7) })
            .await
            .expect_err("a panicked task gives a JoinError");
        let error = from_join_error::<Infallible>(panicked);
        assert!(
            matches!(&error, AsyncError::Panicked { message } if message == "boom 7"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the blocking task panicked: boom 7",
            "the message says what happened"
        );
    }

    #[test]
    fn a_panic_payload_that_is_not_text_still_gives_a_message() {
        assert_eq!(panic_message(&"static text"), "static text");
        assert_eq!(panic_message(&String::from("owned text")), "owned text");
        assert_eq!(
            panic_message(&42_u32),
            "(the panic payload is not a string)"
        );
    }
}
