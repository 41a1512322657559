//! [`Queue`]: the typed enqueue API and the operator's actions over any [`QueueStore`].

use std::{sync::Arc, time::Duration};

use crate::{
    StoreError,
    queue::{
        EnqueueError, EnqueueOptions, Enqueued, GuardedJob, JobFilter, JobId, JobQuery, NewJob,
        OpResult, QueueJob, QueueStore, QueuedJob, Snapshot,
    },
    workflow::{BatchBuilder, BatchId, BatchInfo, BatchMember, BatchPolicy},
};

/// What [`Queue::prune`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pruned {
    /// Finished jobs.
    pub jobs: u64,
    /// Guard rows (`safe_jobs`) past their retention.
    pub guards: u64,
}

/// The client side of a queue: enqueue typed jobs, and operate on them.
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::*;
///
/// #[derive(Serialize, Deserialize)]
/// struct Email { to: String }
/// impl QueueJob for Email {
///     const KIND: &'static str = "email";
///     type Error = std::io::Error;
///     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> { Ok(()) }
/// }
///
/// let queue = Queue::new(Arc::new(MemoryQueue::new()));
/// let first = queue.enqueue_with(
///     &Email { to: "a@example.com".into() },
///     &EnqueueOptions::new().unique_key("welcome:a").delay(Duration::from_secs(60)),
/// )?;
/// let again = queue.enqueue_with(
///     &Email { to: "a@example.com".into() },
///     &EnqueueOptions::new().unique_key("welcome:a"),
/// )?;
/// assert!(again.is_duplicate());
/// assert_eq!(again.id(), first.id());
/// assert_eq!(queue.get(first.id())?.unwrap().state, QueueState::Scheduled);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn QueueStore>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// A client on `store`.
    pub fn new(store: Arc<dyn QueueStore>) -> Self {
        Self { store }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn QueueStore> {
        &self.store
    }

    /// Enqueues `job` with its kind's options.
    pub fn enqueue<J: QueueJob>(&self, job: &J) -> Result<Enqueued, EnqueueError> {
        self.enqueue_with(job, &EnqueueOptions::new())
    }

    /// Enqueues `job` with `options`.
    pub fn enqueue_with<J: QueueJob>(
        &self,
        job: &J,
        options: &EnqueueOptions,
    ) -> Result<Enqueued, EnqueueError> {
        Ok(self.store.enqueue(&NewJob::of(job, options)?)?)
    }

    /// Enqueues `jobs` in one atomic step (all or none), answers in order. In the diesel
    /// backends that is one `INSERT` in autocommit only on PostgreSQL and SQLite, for up to 2,000
    /// jobs none of which has a unique key; otherwise one transaction (MySQL reads its rows back,
    /// larger batches go in chunks of 2,000, unique keys held by live jobs are looked up).
    pub fn enqueue_many<J: QueueJob>(
        &self,
        jobs: &[J],
        options: &EnqueueOptions,
    ) -> Result<Vec<Enqueued>, EnqueueError> {
        let rows = jobs
            .iter()
            .map(|job| NewJob::of(job, options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.enqueue_many(&rows)?)
    }

    /// Enqueues a [`GuardedJob`]: run through the exactly-once guard, so duplicates of one key
    /// succeed once.
    pub fn enqueue_guarded<J: GuardedJob>(
        &self,
        job: &J,
        options: &EnqueueOptions,
    ) -> Result<Enqueued, EnqueueError> {
        Ok(self.store.enqueue(&NewJob::guarded(job, options)?)?)
    }

    /// The job, if it exists.
    pub fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError> {
        self.store.get(id)
    }

    /// Up to `limit` dead jobs matching `filter` (its state is ignored), oldest first.
    pub fn dead(&self, filter: &JobFilter, limit: usize) -> Result<Vec<QueuedJob>, StoreError> {
        let mut filter = filter.clone();
        filter.state = Some(crate::queue::QueueState::Dead);
        self.store.list(&JobQuery {
            filter,
            after: None,
            limit,
        })
    }

    /// Retries one dead, cancelled or parked job.
    pub fn retry(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.store.retry(id)
    }

    /// Retries every job matching `filter` (dead ones when it names no state).
    pub fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.store.retry_matching(filter)
    }

    /// Cancels a job that is not running.
    pub fn cancel(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.store.cancel(id)
    }

    /// Deletes finished jobs matching `filter` (dead ones when it names no state).
    pub fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.store.purge(filter)
    }

    /// Prunes the queue's two tables, up to `limit` rows each: finished jobs (succeeded, dead,
    /// cancelled) older than `retention` ([`QueueStore::prune`]), and guard rows whose own
    /// retention has passed and whose outcome is settled ([`LeaseStore::prune`] on
    /// [`QueueStore::guards`]; a guard row's retention was written when it became terminal, from
    /// the job's [`SafeJob::guard_retention`] or the worker's
    /// [`WorkerBuilder::guard_retention`](crate::queue::WorkerBuilder::guard_retention), and is
    /// forever by default). A pruned guard's key runs again if it is enqueued again. The audit
    /// ledger's entries of every deleted job and guard row are deleted with it
    /// ([`crate::history`]).
    ///
    /// Schedule it, and call it again while either count reaches `limit`:
    ///
    /// ```
    /// # use std::{sync::Arc, time::Duration};
    /// # use safejob_core::queue::{MemoryQueue, Queue};
    /// let queue = Queue::new(Arc::new(MemoryQueue::new()));
    /// let week = Duration::from_secs(7 * 24 * 3600);
    /// loop {
    ///     let pruned = queue.prune(week, 1_000)?;
    ///     if pruned.jobs < 1_000 && pruned.guards < 1_000 {
    ///         break;
    ///     }
    /// }
    /// # Ok::<(), safejob_core::StoreError>(())
    /// ```
    ///
    /// [`LeaseStore::prune`]: crate::LeaseStore::prune
    /// [`SafeJob::guard_retention`]: crate::SafeJob::guard_retention
    pub fn prune(&self, retention: Duration, limit: usize) -> Result<Pruned, StoreError> {
        let jobs = self.store.prune(retention, limit)?;
        let guards = self.store.guards().prune(limit)?;
        Ok(Pruned { jobs, guards })
    }

    /// Counts, per-kind figures, workers, the oldest due job's age.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.store.snapshot()
    }

    /// A batch to build and [`dispatch`](BatchBuilder::dispatch) into this queue (see
    /// [`crate::workflow`]).
    pub fn batch(&self, name: impl Into<String>, policy: BatchPolicy) -> BatchBuilder {
        BatchBuilder::new(name, policy).on(self.store.clone())
    }

    /// The batch with its member counts, if it exists.
    pub fn batch_info(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError> {
        self.store.batch(id)
    }

    /// The batch's members with their states and results.
    pub fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError> {
        self.store.batch_members(id)
    }

    /// Cancels a running batch (see [`QueueStore::cancel_batch`]).
    pub fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError> {
        self.store.cancel_batch(id)
    }
}
