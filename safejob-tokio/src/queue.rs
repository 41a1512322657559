//! [`AsyncQueue`]: a [`Queue`] called from async code.

use safejob_core::{
    StoreError,
    queue::{
        EnqueueError, EnqueueOptions, Enqueued, GuardedJob, JobId, Queue, QueueJob, QueuedJob,
    },
};

use crate::{AsyncError, blocking};

/// A [`Queue`] for async code: enqueue and read jobs on tokio's blocking pool, so a database wait
/// (a lock, a slow commit, a pool with no free connection) never blocks the executor. Cheap to
/// clone.
///
/// Each method calls the `Queue` method of the same name, so the enqueue semantics (options, unique
/// keys, guarded jobs and their fingerprint) are the `Queue`'s, unchanged. Jobs and options move
/// into the blocking task, so they are taken by value. For the operator's actions (`dead`,
/// `retry`, `cancel`, `purge`, `prune`, `snapshot`) call the `Queue` through
/// [`blocking`](crate::blocking).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::*;
/// use safejob_tokio::AsyncQueue;
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
/// impl QueueJob for Email {
///     const KIND: &'static str = "email";
///     type Error = std::io::Error;
///     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> { Ok(()) }
/// }
///
/// let queue = AsyncQueue::from(Queue::new(Arc::new(MemoryQueue::new())));
/// let id = queue.enqueue(Email { to: "a@example.com".into() }).await?.id();
/// assert_eq!(queue.get(id).await?.unwrap().state, QueueState::Pending);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncQueue {
    queue: Queue,
}

impl From<Queue> for AsyncQueue {
    fn from(queue: Queue) -> Self {
        Self::new(queue)
    }
}

impl AsyncQueue {
    /// Wraps a queue client.
    pub fn new(queue: Queue) -> Self {
        Self { queue }
    }

    /// The queue client underneath.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// [`Queue::enqueue`]: enqueues `job` with its kind's options.
    pub async fn enqueue<J: QueueJob>(&self, job: J) -> Result<Enqueued, AsyncError<EnqueueError>> {
        let queue = self.queue.clone();
        blocking(move || queue.enqueue(&job)).await
    }

    /// [`Queue::enqueue_with`]: enqueues `job` with `options`.
    pub async fn enqueue_with<J: QueueJob>(
        &self,
        job: J,
        options: EnqueueOptions,
    ) -> Result<Enqueued, AsyncError<EnqueueError>> {
        let queue = self.queue.clone();
        blocking(move || queue.enqueue_with(&job, &options)).await
    }

    /// [`Queue::enqueue_guarded`]: enqueues a [`GuardedJob`], run through the exactly-once guard.
    pub async fn enqueue_guarded<J: GuardedJob>(
        &self,
        job: J,
        options: EnqueueOptions,
    ) -> Result<Enqueued, AsyncError<EnqueueError>> {
        let queue = self.queue.clone();
        blocking(move || queue.enqueue_guarded(&job, &options)).await
    }

    /// [`Queue::enqueue_many`]: enqueues `jobs` in one atomic step (all or none), answers in
    /// order.
    pub async fn enqueue_many<J: QueueJob>(
        &self,
        jobs: Vec<J>,
        options: EnqueueOptions,
    ) -> Result<Vec<Enqueued>, AsyncError<EnqueueError>> {
        let queue = self.queue.clone();
        blocking(move || queue.enqueue_many(&jobs, &options)).await
    }

    /// [`Queue::get`]: the job, if it exists.
    pub async fn get(&self, id: JobId) -> Result<Option<QueuedJob>, AsyncError<StoreError>> {
        let queue = self.queue.clone();
        blocking(move || queue.get(id)).await
    }
}
