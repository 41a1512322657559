//! Typed jobs: a struct that is its own payload, a kind name, and `work`.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    Clock, Fingerprint, FingerprintError, IdempotencyKey, KeyDigest, KeyError, SafeJob,
    queue::{
        GuardSpec, JobId, NewJob, Progress, QueueLease, QueueStore, RetryPolicy, RunAt,
        store::QueuedJob,
    },
    store::{FenceCheck, StoreError},
    workflow::{BatchId, BatchOutcome},
};

/// The queue a kind runs in unless it says otherwise.
pub const DEFAULT_QUEUE: &str = "default";
/// Attempts a job gets unless its kind or its enqueue says otherwise. Defaults to 25.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 25;

/// A job the queue can run: the struct is its own payload (serde JSON), `KIND` names it stably
/// across deployments, and [`work`](QueueJob::work) does it.
///
/// `work` may run more than once (after a retryable error, a panic, a timeout, or a crash when the
/// kind is idempotent). For work that must happen once, implement [`SafeJob`] and [`GuardedJob`]
/// instead: the queue runs it through the exactly-once guard.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::{KindOptions, QueueJob, WorkContext, WorkError};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image: u64 }
///
/// impl QueueJob for Resize {
///     const KIND: &'static str = "resize";
///     type Error = std::io::Error;
///     fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
///         for step in 0..10 {
///             ctx.checkpoint()?; // returns Stopped on timeout, shutdown or a lost lease
///             ctx.progress(step + 1, Some(10), "resizing");
///         }
///         Ok(())
///     }
///     fn options() -> KindOptions {
///         KindOptions::new().queue("media").idempotent(true)
///     }
/// }
/// ```
pub trait QueueJob: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable kind name stored with each job.
    const KIND: &'static str;
    /// The job's own error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Does the work.
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>>;

    /// Per-kind options. Defaults to [`KindOptions::new`].
    fn options() -> KindOptions {
        KindOptions::new()
    }
}

/// A [`SafeJob`] that can be enqueued directly: the queue runs it through the guard (acquire
/// sharing the claim's step, perform, finalize sharing the completion's step, then
/// `on_succeeded_once`). Duplicate enqueues of one key succeed once.
///
/// A guarded job is fingerprinted by default ([`guard_fingerprint`](GuardedJob::guard_fingerprint)):
/// the same key enqueued with other parameters, or by another kind, is a key conflict — dead,
/// never run — instead of a silent replay of the other job's result.
///
/// It runs the [`Runner`](crate::Runner)'s pipeline, so it behaves as a `Runner` run does, with
/// one difference at the very end: a panic in `perform` or `on_succeeded_once` is written the
/// same way (the guard released; the effects marked in doubt; transactional effects rolled back
/// and the guard released) and then recorded as the attempt's `panicked` error instead of being
/// re-raised, so the worker's thread lives on.
pub trait GuardedJob: SafeJob + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable kind name stored with each job.
    const KIND: &'static str;

    /// The fingerprint stored with the job's guard at enqueue, and computed again by the worker
    /// from the decoded payload before it runs anything: a mismatch is dead with
    /// [`ErrorKind::KeyConflict`](crate::queue::ErrorKind::KeyConflict), never run.
    ///
    /// Defaults to the job's own [`SafeJob::fingerprint`] when that gives one, else to
    /// [`Fingerprint::of_json`]`(Self::KIND, self)`: SHA-256 of the kind and the payload's
    /// canonical JSON. Two consequences of hashing the whole payload:
    ///
    /// * a payload type whose serialization is not stable across a round trip (a `HashSet`
    ///   field, whose order varies) must pin its own `fingerprint` (or use a `BTreeSet`);
    /// * changing the payload's shape (a new field) changes the fingerprint, so jobs enqueued
    ///   before the change are refused after it. A type that evolves should fingerprint the
    ///   fields that define the work in its own `fingerprint`.
    ///
    /// A job stored without a fingerprint (enqueued before guarded jobs had one by default, or
    /// built by hand with none) is not compared: it runs as it did then.
    ///
    /// To run the same job through a [`Runner`](crate::Runner) as well, have its `fingerprint`
    /// return `Fingerprint::of_json(Self::KIND, self)`: both paths then agree.
    fn guard_fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        match self.fingerprint()? {
            Some(own) => Ok(Some(own)),
            None => Fingerprint::of_json(Self::KIND, self).map(Some),
        }
    }

    /// Per-kind options. Defaults to [`KindOptions::new`]; `idempotent` is ignored (a guarded job
    /// is always safe to run again).
    fn options() -> KindOptions {
        KindOptions::new()
    }
}

/// Why `work` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkError<E: std::error::Error + 'static> {
    /// Try again after the retry policy's delay (dead after the last attempt).
    #[error("retryable: {0}")]
    Retryable(#[source] E),
    /// Never try again: the job is dead at once.
    #[error("fatal: {0}")]
    Fatal(#[source] E),
    /// The job stopped because the context asked it to ([`WorkContext::checkpoint`]); recorded as
    /// a timeout, a shutdown or a lost lease, and retried.
    #[error("stopped on request")]
    Stopped,
    /// The job decided there is nothing to do: it is cancelled.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// Per-kind options, with documented defaults.
///
/// ```
/// use std::time::Duration;
/// use safejob_core::queue::{KindOptions, RetryPolicy};
///
/// let options = KindOptions::new()
///     .queue("payments")
///     .priority(-1)
///     .max_attempts(5)
///     .retry(RetryPolicy::schedule([Duration::from_secs(30)]))
///     .timeout(Duration::from_secs(60));
/// assert_eq!(options.queue, "payments");
/// assert!(!options.idempotent);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[must_use]
pub struct KindOptions {
    /// Queue. Defaults to [`DEFAULT_QUEUE`].
    pub queue: String,
    /// Priority; lower runs first. Defaults to 0.
    pub priority: i16,
    /// Attempts before dead. Defaults to [`DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// Delays between attempts. Defaults to [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Cooperative timeout of one attempt, by the worker's clock: past it the context says stop,
    /// and an attempt that then stops or fails is recorded `timed_out` and retried. A job that
    /// returns `Ok` anyway has succeeded. Defaults to none.
    pub timeout: Option<Duration>,
    /// Whether a second run is harmless, so the reaper may requeue a job whose worker vanished.
    /// Defaults to `false`: such jobs are parked for an operator.
    pub idempotent: bool,
}

impl Default for KindOptions {
    fn default() -> Self {
        Self {
            queue: DEFAULT_QUEUE.to_owned(),
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retry: RetryPolicy::default(),
            timeout: None,
            idempotent: false,
        }
    }
}

impl KindOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the attempts (at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the cooperative timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Says whether a second run is harmless.
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }
}

/// Options of one enqueue; anything left unset comes from the kind's [`KindOptions`].
///
/// ```
/// use std::time::Duration;
/// use safejob_core::queue::EnqueueOptions;
///
/// let options = EnqueueOptions::new()
///     .delay(Duration::from_secs(60))
///     .unique_key("order-42")
///     .metadata(serde_json::json!({"tenant": 7}));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct EnqueueOptions {
    queue: Option<String>,
    priority: Option<i16>,
    run_at: RunAt,
    max_attempts: Option<u32>,
    unique_key: Option<String>,
    allow_duplicates: bool,
    metadata: Value,
}

impl EnqueueOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Overrides the priority.
    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Due at `at` (store clock).
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = RunAt::At(at);
        self
    }

    /// Due after `delay` from the store's now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Overrides the attempts (at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = Some(max_attempts.max(1));
        self
    }

    /// A unique key, unique within the kind: while a live job of this kind holds it, enqueueing
    /// returns that job. Validated like an idempotency key; only its digest is stored.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// For [`Queue::enqueue_guarded`](crate::queue::Queue::enqueue_guarded): insert a new job even
    /// while a live job of the kind holds the same idempotency key.
    ///
    /// By default a guarded enqueue is deduplicated by its idempotency key: while a live job
    /// (pending, scheduled, retrying, running or parked) of the same kind carries the key, the
    /// enqueue returns [`Enqueued::Duplicate`](crate::queue::Enqueued::Duplicate) with that job's id and inserts nothing, so a
    /// burst of duplicate deliveries costs one run. With duplicates allowed, every copy is
    /// inserted and the guard settles them when they run: one succeeds, the others replay its
    /// result; a copy claimed while another runs the key is snoozed and asked again soon
    /// ([`BUSY_RETRY_MAX`](crate::BUSY_RETRY_MAX)). A [`unique_key`](EnqueueOptions::unique_key)
    /// given explicitly replaces the idempotency key as the deduplication key.
    pub fn allow_duplicates(mut self) -> Self {
        self.allow_duplicates = true;
        self
    }

    /// Operator metadata (JSON).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A job could not be turned into a row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueError {
    /// The job does not serialize to JSON.
    #[error("cannot serialize the job payload: {0}")]
    Payload(#[source] serde_json::Error),
    /// The unique key or the guarded job's idempotency key is invalid.
    #[error(transparent)]
    InvalidKey(#[from] KeyError),
    /// The guarded job's parameters could not be fingerprinted.
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::StoreError),
}

impl NewJob {
    /// The row for a typed job.
    pub fn of<J: QueueJob>(job: &J, options: &EnqueueOptions) -> Result<Self, EnqueueError> {
        let kind = J::options();
        Self::build(J::KIND, job, &kind, options, kind.idempotent, None)
    }

    /// The row for a [`GuardedJob`]: carries its key digest and fingerprint.
    pub fn guarded<J: GuardedJob>(job: &J, options: &EnqueueOptions) -> Result<Self, EnqueueError> {
        let key = job.key()?;
        let guard = GuardSpec {
            digest: *key.digest(),
            fingerprint: job.guard_fingerprint()?,
        };
        let mut row = Self::build(J::KIND, job, &J::options(), options, true, Some(guard))?;
        if row.unique_key.is_none() && !options.allow_duplicates {
            row.unique_key = Some(guard_unique_key(J::KIND, &guard)?);
        }
        Ok(row)
    }

    fn build<T: Serialize>(
        kind_name: &str,
        job: &T,
        kind: &KindOptions,
        options: &EnqueueOptions,
        idempotent: bool,
        guard: Option<GuardSpec>,
    ) -> Result<Self, EnqueueError> {
        let unique_key = match &options.unique_key {
            Some(text) => Some(*IdempotencyKey::from_parts([kind_name, text])?.digest()),
            None => None,
        };
        Ok(Self {
            kind: kind_name.to_owned(),
            queue: options.queue.clone().unwrap_or_else(|| kind.queue.clone()),
            payload: serde_json::to_value(job).map_err(EnqueueError::Payload)?,
            metadata: options.metadata.clone(),
            priority: options.priority.unwrap_or(kind.priority),
            run_at: options.run_at,
            max_attempts: options.max_attempts.unwrap_or(kind.max_attempts).max(1),
            idempotent,
            unique_key,
            guard,
        })
    }
}

/// The unique key a guarded enqueue is deduplicated by: the kind and the idempotency key's
/// digest (never its text), as parts of their own so no `unique_key` text can collide with it.
fn guard_unique_key(kind: &str, guard: &GuardSpec) -> Result<KeyDigest, KeyError> {
    let digest = guard.digest.to_hex();
    Ok(*IdempotencyKey::from_parts([kind, "guard", &digest])?.digest())
}

/// Why a running job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The attempt ran past its kind's timeout.
    TimedOut,
    /// The worker is shutting down and its deadline passed.
    ShuttingDown,
    /// A renewal found the lease taken: this attempt can no longer complete.
    LeaseLost,
}

/// Flags the worker sets while a job runs.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) lease_lost: AtomicBool,
    pub(crate) abort: AtomicBool,
}

/// What `work` sees: the job's identity and attempt, when to stop, and a progress reporter.
pub struct WorkContext<'a> {
    pub(crate) job: &'a QueuedJob,
    pub(crate) lease: &'a QueueLease,
    pub(crate) store: &'a dyn QueueStore,
    pub(crate) clock: &'a dyn Clock,
    pub(crate) signals: Arc<Signals>,
    pub(crate) deadline: Option<DateTime<Utc>>,
    pub(crate) progress_every: Duration,
    pub(crate) progress: Option<Progress>,
    pub(crate) progress_dirty: bool,
    pub(crate) progress_written: Option<DateTime<Utc>>,
}

impl WorkContext<'_> {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.job.id
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.lease.attempt
    }

    /// The claim's fence token: pass it to downstream systems that can reject stale writers.
    pub fn fence(&self) -> u64 {
        self.lease.fence
    }

    /// The queue.
    pub fn queue(&self) -> &str {
        &self.job.queue
    }

    /// The enqueue's metadata.
    pub fn metadata(&self) -> &Value {
        &self.job.metadata
    }

    /// When this attempt times out, by the worker's clock.
    pub fn deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline
    }

    /// Why the job should stop now, if it should.
    pub fn stop_reason(&self) -> Option<StopReason> {
        if self.signals.lease_lost.load(Ordering::Acquire) {
            Some(StopReason::LeaseLost)
        } else if self.signals.abort.load(Ordering::Acquire) {
            Some(StopReason::ShuttingDown)
        } else if self.deadline.is_some_and(|d| self.clock.now() >= d) {
            Some(StopReason::TimedOut)
        } else {
            None
        }
    }

    /// Whether the job should stop (see [`stop_reason`](WorkContext::stop_reason)).
    pub fn should_stop(&self) -> bool {
        self.stop_reason().is_some()
    }

    /// `Err(WorkError::Stopped)` when the job should stop: call it with `?` between steps.
    pub fn checkpoint<E: std::error::Error + 'static>(&self) -> Result<(), WorkError<E>> {
        match self.stop_reason() {
            Some(_) => Err(WorkError::Stopped),
            None => Ok(()),
        }
    }

    /// Reports progress. Coalesced: written at most once per the worker's progress interval (by
    /// its clock), and the last value is written with the completion, so a tight loop costs no
    /// write per call.
    pub fn progress(&mut self, current: u64, total: Option<u64>, message: impl Into<String>) {
        let message = message.into();
        self.progress = Some(Progress {
            current,
            total,
            message: (!message.is_empty()).then_some(message),
        });
        self.progress_dirty = true;
        let now = self.clock.now();
        let due = self.progress_written.is_none_or(|at| {
            (now - at)
                .to_std()
                .is_ok_and(|since| since >= self.progress_every)
        });
        if due {
            self.flush_progress(now);
        }
    }

    fn flush_progress(&mut self, now: DateTime<Utc>) {
        let Some(progress) = &self.progress else {
            return;
        };
        match self.store.progress(self.lease, progress) {
            Ok(FenceCheck::Applied) => {
                self.progress_dirty = false;
                self.progress_written = Some(now);
            }
            Ok(FenceCheck::Stale) => self.signals.lease_lost.store(true, Ordering::Release),
            Err(error) => {
                tracing::debug!(job = %self.job.id, %error, "progress not persisted; kept for later")
            }
        }
    }

    /// Stores `result` on this job for the batch members that depend on it (fan-in, see
    /// [`dependency_results`](WorkContext::dependency_results)). Written at once, fenced: a
    /// result set by an attempt that lost its lease is refused with `Stale` (and the context
    /// then asks the job to stop). The last result set by the attempt that succeeds is the one
    /// dependents read; a job that fails after setting one leaves it, but its dependents never
    /// run.
    pub fn set_result(&mut self, result: &Value) -> Result<FenceCheck, StoreError> {
        let check = self.store.set_result(self.lease, result)?;
        if check == FenceCheck::Stale {
            self.signals.lease_lost.store(true, Ordering::Release);
        }
        Ok(check)
    }

    /// The results of this batch member's dependencies, by member id (see
    /// [`crate::workflow::dependency_results`]). Empty outside a batch.
    pub fn dependency_results(&self) -> Result<BTreeMap<String, Option<Value>>, StoreError> {
        crate::workflow::dependency_results(self.store, self.job.id)
    }

    /// For a batch's callback job: how the batch ended (from its metadata).
    pub fn batch_outcome(&self) -> Option<BatchOutcome> {
        BatchOutcome::from_metadata(&self.job.metadata)
    }

    /// The batch this job is a member of.
    pub fn batch(&self) -> Option<BatchId> {
        self.job.batch
    }

    /// Progress not yet written, for the completion.
    pub(crate) fn unwritten_progress(&self) -> Option<Progress> {
        self.progress.clone().filter(|_| self.progress_dirty)
    }
}
