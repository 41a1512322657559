//! The queue's storage port: [`QueueStore`], its requests and its answers.
//!
//! A queue store keeps one row per queued job (the `safe_queue_jobs` row, say) next to the
//! guard's `safe_jobs` rows, and a row per live worker. Everything that is policy — retry
//! delays, when a job is dead, decoding payloads, running jobs — lives in the core; a store
//! applies the transitions it is asked for, each one atomically, with the same fence discipline
//! as [`LeaseStore`]:
//!
//! * time is the store clock ([`QueueStore::now`]): due times, lease expiries, delays;
//! * every write by a worker is a compare-and-set on `state = running AND fence = lease.fence`,
//!   changing nothing and answering stale when it does not match;
//! * a claim bumps the fence and the attempt; the reaper bumps the fence too, so a worker whose
//!   lease expired (a zombie) can never complete the job afterwards;
//! * for a job carrying a [`GuardSpec`], the claim performs the guard's acquire (exactly the
//!   [`LeaseStore::acquire`] contract, deciding with [`classify_existing`](crate::store::classify_existing))
//!   in the same atomic step (or, for a key that exists already, right after it under the job's
//!   lease), and the completion performs the guard's finalize or release in the
//!   same atomic step. The guard's halves ride in the claim's and the completion's own commits;
//!   what a guarded job adds is the after-commit effects mark (through [`QueueStore::guards`],
//!   after the effects ran) and, where a store decides an existing key after the claim
//!   (PostgreSQL), that acquire's statements, each in autocommit.
//!
//! Enqueueing inside the caller's own transaction is a backend concern, because the transaction
//! type is the backend's: SQL backends offer an `enqueue_in(conn, &[NewJob])` that runs the same
//! insert as [`QueueStore::enqueue_many`] on the caller's connection, so the jobs exist if and
//! only if the caller's transaction commits. [`NewJob`] is built by the core
//! ([`NewJob`] values built by the typed-job API) so both paths receive identical rows.
//!
//! The timeline of a zombie, with worker A paused past its lease:
//!
//! ```text
//! t0  A: claim              -> running, fence 4, attempt 2, expires t0+ttl
//! t1  A: (paused)
//! t2  clock passes t0+ttl
//! t3  reaper: reap          -> fence 5; idempotent: retrying (due now); else parked
//! t4  B: claim              -> running, fence 6, attempt 3
//! t5  A: complete(fence 4)  -> Stale: nothing changes
//! t6  B: complete(fence 6)  -> Applied
//! ```

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    FinalFailure, Fingerprint, KeyDigest, Retention,
    queue::QueueState,
    store::{Acquired, FenceCheck, Lease, LeaseStore, Renewed, StoreError, TxEffects},
    workflow::{BatchId, BatchInfo, BatchMember, BatchState, NewBatch},
};

/// The most errors a job keeps: the store drops the oldest beyond this many.
pub const MAX_ERROR_HISTORY: usize = 20;

/// A queued job's row identity, assigned by the store at enqueue; increasing with insertion order
/// (claims use it to break ties by age).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// When a new job becomes due, resolved by the store clock at insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAt {
    /// Due at once: the job is inserted `pending`.
    #[default]
    Now,
    /// Due at this instant: `scheduled` if it lies in the store's future, else `pending`.
    At(DateTime<Utc>),
    /// Due after this delay from the store's now: `scheduled` (or `pending` for a zero delay).
    After(Duration),
}

/// The guard a queued job carries: the job is a [`SafeJob`](crate::SafeJob), run through the
/// exactly-once pipeline with this key and fingerprint. Raw keys are never stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuardSpec {
    /// Digest of the job's idempotency key: the `safe_jobs` row it acquires.
    pub digest: KeyDigest,
    /// Fingerprint of its parameters, compared on every acquire.
    pub fingerprint: Option<Fingerprint>,
}

/// A job to insert, as the core hands it to every backend (single, batched, or inside a caller's
/// transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The registered kind name.
    pub kind: String,
    /// The queue it waits in.
    pub queue: String,
    /// The serialized job.
    pub payload: Value,
    /// Free-form JSON for operators (`Value::Null` when none).
    pub metadata: Value,
    /// Lower runs first.
    pub priority: i16,
    /// When it becomes due.
    pub run_at: RunAt,
    /// Attempts allowed before it is dead (at least 1).
    pub max_attempts: u32,
    /// Whether running it twice is harmless: the reaper requeues an idempotent job whose worker
    /// vanished, and parks any other. Guarded jobs are always idempotent (the guard makes them so).
    pub idempotent: bool,
    /// Digest of a unique key: while a live job (see [`QueueState::is_live`]) holds it, enqueueing
    /// another job with it returns the live one instead of inserting.
    pub unique_key: Option<KeyDigest>,
    /// The guard, for a [`SafeJob`](crate::SafeJob) enqueued directly.
    pub guard: Option<GuardSpec>,
}

/// What [`QueueStore::enqueue_many`] did with one [`NewJob`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new row was inserted.
    Inserted {
        /// Its id.
        id: JobId,
        /// `pending` or `scheduled`.
        state: QueueState,
    },
    /// A live job already held the unique key; nothing was inserted.
    Duplicate {
        /// The live job's id.
        id: JobId,
        /// Its state.
        state: QueueState,
    },
}

impl Enqueued {
    /// The id of the inserted or the existing job.
    pub fn id(&self) -> JobId {
        match self {
            Self::Inserted { id, .. } | Self::Duplicate { id, .. } => *id,
        }
    }

    /// Whether the enqueue found an existing live job.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Duplicate { .. })
    }
}

/// Why an attempt failed (or why a job was set aside). Stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The job returned a retryable error.
    Retryable,
    /// The job returned a fatal error: dead at once.
    Fatal,
    /// The job panicked: treated as retryable.
    Panicked,
    /// The job ran past its timeout.
    TimedOut,
    /// The worker's lease expired (it crashed or paused); recorded by the reaper.
    LeaseExpired,
    /// No handler is registered for the job's kind: dead, never run.
    UnknownKind,
    /// The payload does not decode into the kind's type: dead, never run.
    UndecodablePayload,
    /// The guard refused the job: same key, different parameters.
    KeyConflict,
    /// The guard's key already failed terminally; its failure is replayed.
    GuardFailed,
    /// The worker lost its lease (or its guard's lease) before completing.
    LeaseLost,
    /// The worker shut down before the job finished.
    ShutDown,
    /// The job cancelled itself; the reason is recorded.
    Cancelled,
}

impl ErrorKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Fatal => "fatal",
            Self::Panicked => "panicked",
            Self::TimedOut => "timed_out",
            Self::LeaseExpired => "lease_expired",
            Self::UnknownKind => "unknown_kind",
            Self::UndecodablePayload => "undecodable_payload",
            Self::KeyConflict => "key_conflict",
            Self::GuardFailed => "guard_failed",
            Self::LeaseLost => "lease_lost",
            Self::ShutDown => "shut_down",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An error as a worker reports it; the store stamps it with the attempt and its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The error's message (its `Display`, with its source chain).
    pub message: String,
}

impl AttemptError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One entry of a job's error history, as stored (JSON in SQL backends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedError {
    /// The attempt that failed.
    pub attempt: u32,
    /// When, by the store clock.
    pub at: DateTime<Utc>,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The message.
    pub message: String,
}

/// Progress reported from inside a job.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Units done.
    pub current: u64,
    /// Units in all, when known.
    pub total: Option<u64>,
    /// What the job is doing.
    pub message: Option<String>,
}

/// A queued job's row.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedJob {
    /// Row identity.
    pub id: JobId,
    /// Registered kind name.
    pub kind: String,
    /// Queue name.
    pub queue: String,
    /// The serialized job.
    pub payload: Value,
    /// Operator metadata.
    pub metadata: Value,
    /// Lower runs first.
    pub priority: i16,
    /// Current state.
    pub state: QueueState,
    /// When it is (or was) due, by the store clock.
    pub run_at: DateTime<Utc>,
    /// Attempts started (claims), minus snoozes and releases.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Fence token: bumped by every claim and by the reaper.
    pub fence: u64,
    /// Worker id of the last claimer.
    pub owner: Option<String>,
    /// When the current lease ends (running jobs), by the store clock.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the current (or last) attempt was claimed.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Whether the reaper may requeue it (see [`NewJob::idempotent`]).
    pub idempotent: bool,
    /// Digest of its unique key.
    pub unique_key: Option<KeyDigest>,
    /// Its guard.
    pub guard: Option<GuardSpec>,
    /// Last persisted progress.
    pub progress: Option<Progress>,
    /// The last [`MAX_ERROR_HISTORY`] errors, oldest first.
    pub errors: Vec<RecordedError>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached succeeded, dead or cancelled.
    pub finished_at: Option<DateTime<Utc>>,
    /// The batch it is a member of (see [`crate::workflow`]).
    pub batch: Option<BatchId>,
}

/// What a worker asks a claim for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// The worker claiming: written as owner of the jobs and of their guards' leases.
    pub worker: &'a str,
    /// Only jobs in these queues.
    pub queues: &'a [String],
    /// At most this many jobs.
    pub limit: usize,
    /// Lease length (of the job and of its guard); the store adds it to its own clock.
    pub ttl: Duration,
}

/// A claimed job's lease: proof of ownership for fenced writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLease {
    /// The job.
    pub id: JobId,
    /// The fence this claim carries.
    pub fence: u64,
    /// Attempt number (1 for the first claim).
    pub attempt: u32,
    /// The claimer.
    pub owner: String,
    /// When the lease ends, by the store clock.
    pub expires_at: DateTime<Utc>,
}

/// One claimed job.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The row after the claim (`running`, with the new fence and attempt).
    pub job: QueuedJob,
    /// The lease.
    pub lease: QueueLease,
    /// For a guarded job: the guard's acquire answer, decided with the claim (see
    /// [`QueueStore::claim`]). `Granted` carries the guard lease to finalize with.
    pub guard: Option<Acquired>,
}

/// How a worker completes an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteAs {
    /// → `succeeded`.
    Succeeded,
    /// → `retrying`, due after `delay` from the store's now; `error` is appended to the history.
    Retry {
        /// Backoff before the next attempt.
        delay: Duration,
        /// Why this attempt failed.
        error: AttemptError,
    },
    /// → `scheduled` (or `pending` for a zero delay) without counting the attempt (attempts − 1):
    /// the job did not really run (its guard was busy, or the worker shut down before starting
    /// it). `error`, if given, is appended to the history.
    Snooze {
        /// When to try again.
        delay: Duration,
        /// Why, when worth recording.
        error: Option<AttemptError>,
    },
    /// → `dead`; `error` is appended to the history.
    Dead {
        /// Why the job is dead.
        error: AttemptError,
    },
    /// → `cancelled` (the job decided it has nothing to do).
    Cancelled {
        /// Why.
        reason: String,
    },
}

/// The guard's half of a completion, applied in the same atomic step as the job's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardFinish<'a> {
    /// [`LeaseStore::finalize_succeeded`] under `lease` (with the completion's hook, if any), or
    /// [`LeaseStore::finalize_succeeded_without_effects`] for a job without effects.
    Succeeded {
        /// The guard lease from the claim.
        lease: &'a Lease,
        /// The result stored on the key and replayed to duplicates.
        result: Option<&'a Value>,
        /// The effects window, as in `finalize_succeeded`.
        effects_ttl: Duration,
        /// What the job's [`SafeJob::has_effects`](crate::SafeJob::has_effects) said. `false`:
        /// [`LeaseStore::finalize_succeeded_without_effects`] instead, the effects recorded
        /// `done` in the same step (the completion is then given no hook).
        has_effects: bool,
        /// How long the guard row is kept, as in `finalize_succeeded`: its `retain_until` is
        /// written in the same step.
        retention: Retention,
    },
    /// [`LeaseStore::finalize_failed`] under `lease`.
    Failed {
        /// The guard lease from the claim.
        lease: &'a Lease,
        /// The failure stored on the key.
        failure: &'a FinalFailure,
        /// How long the guard row is kept, as in `finalize_failed`.
        retention: Retention,
    },
    /// [`LeaseStore::release`] under `lease`.
    Release {
        /// The guard lease from the claim.
        lease: &'a Lease,
        /// The error recorded on the key.
        error: Option<&'a str>,
    },
}

/// A fenced completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion<'a> {
    /// The claim's lease.
    pub lease: &'a QueueLease,
    /// The transition.
    pub outcome: CompleteAs,
    /// Progress not yet persisted, written in the same step.
    pub progress: Option<&'a Progress>,
    /// The guard's half, for a guarded job whose claim was granted the guard.
    pub guard: Option<GuardFinish<'a>>,
    /// The claimed job's batch, exactly as its claim returned it ([`QueuedJob::batch`]): a
    /// completion that ends a member settles its batch in the same step
    /// ([`QueueStore::insert_batch`]). Stores rely on it to choose that path (the SQL stores
    /// complete a job outside any batch in one autocommit statement), so a caller passing
    /// `None` for a member leaves its batch unsettled; the core's worker always passes it.
    pub batch: Option<BatchId>,
}

/// One member of a group of completions written together by [`QueueStore::complete_many`]: the
/// completion, and its transactional effects hook when it has one.
pub struct GroupMember<'c, 'h> {
    /// The completion, exactly as [`QueueStore::complete`] takes it.
    pub completion: Completion<'c>,
    /// Its transactional effects hook, as [`QueueStore::complete`] takes it.
    pub hook: Option<&'h mut TxEffects<'h>>,
}

impl<'c> GroupMember<'c, '_> {
    /// A member without a hook.
    pub fn new(completion: Completion<'c>) -> Self {
        Self {
            completion,
            hook: None,
        }
    }
}

impl std::fmt::Debug for GroupMember<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("completion", &self.completion)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The answer of [`QueueStore::complete`]. Anything but `Applied` changed nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// The job (and its guard) moved as asked.
    Applied,
    /// The job is no longer `running` under this lease's fence (reaped, or completed already).
    Stale,
    /// The job's fence matched but the guard's did not (its lease expired and was taken over
    /// elsewhere, or the key was finished meanwhile).
    GuardStale,
    /// The transactional effects hook returned an error: everything was rolled back, the job is
    /// still `running` under this lease and the guard still held.
    EffectsAborted,
}

/// A worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat<'a> {
    /// The worker id.
    pub worker: &'a str,
    /// The queues it serves.
    pub queues: &'a [String],
    /// How many jobs it runs at once.
    pub concurrency: u32,
}

/// What the reaper did with one job whose lease had expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// The fence after the reaper's bump.
    pub fence: u64,
    /// Its new state: `retrying` (idempotent), `parked` (not idempotent) or `dead` (idempotent,
    /// but that was its last attempt).
    pub state: QueueState,
}

/// Which jobs an operator lists, retries or purges. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<QueueState>,
    /// Only jobs in this queue.
    pub queue: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
}

impl JobFilter {
    /// Jobs in `state`.
    pub fn state(state: QueueState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }

    /// Dead jobs.
    pub fn dead() -> Self {
        Self::state(QueueState::Dead)
    }

    /// Only in `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Whether `job` matches.
    pub fn matches(&self, job: &QueuedJob) -> bool {
        self.state.is_none_or(|s| s == job.state)
            && self.queue.as_ref().is_none_or(|q| *q == job.queue)
            && self.kind.as_ref().is_none_or(|k| *k == job.kind)
    }
}

/// A listing: jobs matching `filter`, ordered by id, after the cursor `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Which jobs.
    pub filter: JobFilter,
    /// Only ids greater than this (paging).
    pub after: Option<JobId>,
    /// At most this many.
    pub limit: usize,
}

/// The answer of an operator action on one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// Done.
    Applied,
    /// No such job.
    NotFound,
    /// The job's state does not allow the action; nothing changed.
    WrongState(QueueState),
    /// A retry would make the job live while another live job holds its unique key; nothing
    /// changed.
    UniqueKeyHeld {
        /// The live job holding the key.
        by: JobId,
    },
    /// The batch already ended in this state; nothing changed.
    BatchEnded(BatchState),
    /// A retry of a batch member whose dependencies did not all succeed (it could never run);
    /// nothing changed.
    DependenciesUnmet,
}

/// How many jobs are in one (queue, kind, state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: QueueState,
    /// Jobs.
    pub count: u64,
}

/// Execution figures of one kind, over the finished jobs still in the store (since the last
/// prune). Every backend builds them with [`KindStats::from_finished`], but not from the same
/// durations: see [`KindStats::p95`].
#[derive(Debug, Clone, PartialEq)]
pub struct KindStats {
    /// The kind.
    pub kind: String,
    /// Jobs that finished succeeded or dead.
    pub executions: u64,
    /// Succeeded ÷ executions (0 when none).
    pub success_rate: f64,
    /// Mean duration of the succeeded jobs' last attempt: `finished_at − attempted_at`, by the
    /// store clock.
    pub mean: Duration,
    /// 95th percentile (nearest rank) of the succeeded jobs' durations. The memory backend takes
    /// it over all of them; the diesel backends over a sample, the kind's 10,000 succeeded jobs
    /// with the highest ids (the most recently enqueued), so past 10,000 the backends can differ.
    /// Executions, success rate and mean cover every finished job on every backend.
    pub p95: Duration,
    /// 99th percentile (nearest rank), over the same durations as [`KindStats::p95`].
    pub p99: Duration,
}

impl KindStats {
    /// Figures from the count of dead jobs and the durations of the succeeded ones.
    pub fn from_finished(kind: impl Into<String>, dead: u64, mut succeeded: Vec<Duration>) -> Self {
        succeeded.sort_unstable();
        let ok = succeeded.len() as u64;
        let executions = ok + dead;
        let total: Duration = succeeded.iter().sum();
        let mean = u32::try_from(ok)
            .ok()
            .filter(|n| *n > 0)
            .map_or(Duration::ZERO, |n| total / n);
        Self {
            kind: kind.into(),
            executions,
            success_rate: if executions == 0 {
                0.0
            } else {
                ok as f64 / executions as f64
            },
            mean,
            p95: nearest_rank(&succeeded, 95),
            p99: nearest_rank(&succeeded, 99),
        }
    }
}

/// The `pct`th percentile of sorted values by the nearest-rank method; zero when empty.
pub fn nearest_rank(sorted: &[Duration], pct: u32) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * pct as usize).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// A worker as the store last heard from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Its concurrency.
    pub concurrency: u32,
    /// Its last heartbeat, by the store clock.
    pub last_heartbeat: DateTime<Utc>,
    /// Jobs `running` with this worker as owner (read from the jobs, not reported by the worker).
    pub in_flight: Vec<JobId>,
}

/// The jobs that finished in one minute ([`QueueStore::finished_by_minute`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedMinute {
    /// The minute's start, by the store clock.
    pub minute: DateTime<Utc>,
    /// Jobs that finished `succeeded` in it.
    pub succeeded: u64,
    /// Jobs that finished `dead` in it.
    pub dead: u64,
    /// The mean duration of its succeeded jobs' last attempt (`finished_at − attempted_at`);
    /// zero when none succeeded.
    pub mean: Duration,
}

/// What the queue looks like now.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The store's now when it was taken.
    pub taken_at: DateTime<Utc>,
    /// Job counts by queue, kind and state (zero counts omitted).
    pub counts: Vec<StateCount>,
    /// Figures per kind.
    pub kinds: Vec<KindStats>,
    /// Workers that sent a heartbeat and have not been removed.
    pub workers: Vec<WorkerInfo>,
    /// How long the oldest due waiting job has been due (none when nothing is due).
    pub oldest_due_age: Option<Duration>,
    /// The same, per queue: queues with nothing due are absent.
    pub oldest_due_by_queue: BTreeMap<String, Duration>,
}

impl Snapshot {
    /// Jobs per state.
    pub fn by_state(&self) -> BTreeMap<QueueState, u64> {
        let mut out = BTreeMap::new();
        for c in &self.counts {
            *out.entry(c.state).or_insert(0) += c.count;
        }
        out
    }

    /// Jobs in `state`.
    pub fn count(&self, state: QueueState) -> u64 {
        self.by_state().get(&state).copied().unwrap_or(0)
    }

    /// Jobs per kind.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for c in &self.counts {
            *out.entry(c.kind.clone()).or_insert(0) += c.count;
        }
        out
    }

    /// Jobs per queue.
    pub fn by_queue(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for c in &self.counts {
            *out.entry(c.queue.clone()).or_insert(0) += c.count;
        }
        out
    }
}

/// Wakes an idle worker pool so it claims at once instead of at its next poll. Cheap to clone.
/// Stores that learn of new jobs ([`MemoryQueue`](crate::queue::MemoryQueue) on enqueue; PostgreSQL through
/// `LISTEN`/`NOTIFY`) call [`Waker::wake`] on the wakers given to [`QueueStore::subscribe`].
#[derive(Debug, Clone, Default)]
pub struct Waker {
    inner: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Waker {
    /// A waker nobody waits on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiter (or makes its next wait return at once).
    pub fn wake(&self) {
        let (flag, cond) = &*self.inner;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cond.notify_all();
    }

    /// Waits until woken or `timeout` passes (real time: this is the poll interval); returns
    /// whether it was woken. Clears the wake-up.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (flag, cond) = &*self.inner;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = cond
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, false)
    }
}

/// The queue's storage port. Implemented by [`MemoryQueue`](crate::queue::MemoryQueue) and by
/// the diesel backends; all pass `safejob_test_kit`'s queue conformance suite.
///
/// Every method is atomic as a whole. "Store clock" is the store's own now (the database's).
/// Every fenced write matches `state = running AND fence = lease.fence` on the job's row.
pub trait QueueStore: Send + Sync {
    /// The store clock's current time.
    fn now(&self) -> Result<DateTime<Utc>, StoreError>;

    /// The lease store holding the guards' rows, in the same database (the same transaction
    /// scope as the queue rows). The worker uses it for what the pipeline does outside claim and
    /// completion: renewals from inside `perform`, recording after-commit effects.
    fn guards(&self) -> &dyn LeaseStore;

    /// Inserts `jobs` in one atomic step (all or none: in the diesel backends one statement or
    /// one transaction, depending on the backend, the batch size and unique keys) and answers per
    /// job, in order. `run_at` is resolved by the store clock. A job whose unique key
    /// is held by a live job (in the store, or earlier in the same batch) is not inserted: the
    /// answer is `Duplicate` with the live job's id. Of concurrent enqueues with one unique key,
    /// exactly one inserts.
    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError>;

    /// [`enqueue_many`](QueueStore::enqueue_many) of one job.
    fn enqueue(&self, job: &NewJob) -> Result<Enqueued, StoreError> {
        let mut answers = self.enqueue_many(std::slice::from_ref(job))?;
        answers
            .pop()
            .ok_or_else(|| StoreError::backend("enqueue of one job returned no answer"))
    }

    /// Claims up to `req.limit` due jobs (`pending`, `scheduled` or `retrying` with
    /// `run_at <= now`) from `req.queues`, ordered by priority (lower first), then `run_at`,
    /// then id, and returns them in that order, atomically: each becomes `running` with
    /// fence + 1, attempts + 1, owner `req.worker`, `attempted_at` now and lease expiry
    /// now + ttl. A job is never handed to two concurrent claims (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL and MySQL, an immediate transaction on SQLite).
    ///
    /// For a job with a guard, the guard's acquire for `req.worker` with `req.ttl` under the
    /// [`LeaseStore::acquire`] contract, with its answer in [`Claimed::guard`]; the job is
    /// claimed whatever the answer. A fresh key's acquire is part of the claim's atomic step. A
    /// store may decide a key that exists already right after that step, while the job's lease
    /// is held (PostgreSQL's one-statement claim does): a crash in between leaves the job to the
    /// reaper and the key as it was, and guarded jobs are always idempotent.
    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError>;

    /// Extends the job's lease to now + ttl where it is `running` under `lease.fence`; in the
    /// same step, extends `guard` (the claim's guard lease) where its row is `running` under its
    /// fence. The answer is the job's; a stale guard shows at completion as
    /// [`Completed::GuardStale`].
    fn renew(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError>;

    /// Persists progress where the job is `running` under `lease.fence`.
    fn progress(&self, lease: &QueueLease, progress: &Progress) -> Result<FenceCheck, StoreError>;

    /// The fenced completion, atomically with its guard's half:
    ///
    /// 1. if the job is not `running` under `c.lease.fence`: `Stale`, nothing changed;
    /// 2. if `c.guard` is given and the guard's row is not `running` under that lease's fence:
    ///    `GuardStale`, nothing changed;
    /// 3. the guard's half is applied exactly as the matching [`LeaseStore`] primitive would
    ///    (for `Succeeded` with `hook`, the hook runs inside the step after the state changes;
    ///    its `Err` rolls everything back: `EffectsAborted`);
    /// 4. the job moves as `c.outcome` says: the lease and owner are cleared, an error is
    ///    appended to the history (keeping the last [`MAX_ERROR_HISTORY`]), `c.progress` is
    ///    written, `finished_at` is set on succeeded / dead / cancelled, and a `Snooze` gives
    ///    the attempt back (attempts − 1).
    fn complete(
        &self,
        c: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError>;

    /// A group of completions, each answered on its own, in order: one answer per member, the
    /// answer [`complete`](QueueStore::complete) would give it (`Applied`, `Stale`,
    /// `GuardStale`, `EffectsAborted`, or its own error). A member that is not applied changes
    /// nothing, and its failure (a stale fence, a stale guard, an aborting hook, an error of its
    /// own) changes nothing for the others.
    ///
    /// A store may write the whole group in one transaction, one commit (the diesel stores do,
    /// each member in its own savepoint and each hook in its member's). A failure of the group as
    /// a whole (its commit, a lost connection) is every member's error, and leaves each member's
    /// outcome unknown exactly as the same failure of one [`complete`](QueueStore::complete)
    /// would: the job's lease expires, and its fence keeps a late answer from changing anything.
    /// A hook that panics rolls back the whole group, and the panic goes on in the caller.
    ///
    /// The default completes the members one after the other with
    /// [`complete`](QueueStore::complete): correct for every store, one commit per member.
    fn complete_many(
        &self,
        group: &mut [GroupMember<'_, '_>],
    ) -> Vec<Result<Completed, StoreError>> {
        group
            .iter_mut()
            .map(|m| self.complete(&m.completion, m.hook.as_deref_mut()))
            .collect()
    }

    /// Records that `hb.worker` is alive (upsert, stamped with the store clock).
    fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<(), StoreError>;

    /// Forgets a worker that shut down. Idempotent.
    fn remove_worker(&self, worker: &str) -> Result<(), StoreError>;

    /// Finds up to `limit` `running` jobs whose lease expired by the store clock and, one
    /// conditional update each (still running, still expired, same fence), bumps the fence,
    /// clears the lease and appends a `LeaseExpired` error; then: not idempotent → `parked`;
    /// idempotent with attempts left → `retrying`, due now; idempotent on its last attempt →
    /// `dead` (finished). A guard's lease is left to expire on its own (its next acquire takes
    /// it over with a fence bump of its own).
    fn reap(&self, limit: usize) -> Result<Vec<Reaped>, StoreError>;

    /// The job, if it exists.
    fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError>;

    /// Jobs matching the query, by id.
    fn list(&self, query: &JobQuery) -> Result<Vec<QueuedJob>, StoreError>;

    /// An operator's retry: a `dead`, `cancelled` or `parked` job becomes `pending`, due now,
    /// with attempts reset to 0 (its error history and fence are kept; `finished_at` cleared).
    /// `WrongState` for any other state; `UniqueKeyHeld` when another live job now holds the
    /// job's unique key; `DependenciesUnmet` for a batch member whose dependencies did not all
    /// succeed. Retrying a member does not reopen a batch that ended.
    fn retry(&self, id: JobId) -> Result<OpResult, StoreError>;

    /// [`retry`](QueueStore::retry) of every job matching `filter` whose state allows it
    /// (a filter without a state means dead jobs); returns how many.
    fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError>;

    /// An operator's cancel: a `pending`, `scheduled`, `retrying`, `parked` or `blocked` job
    /// becomes `cancelled` (finished), and its batch, if any, is settled in the same step. A
    /// running job is `WrongState`: it belongs to its worker.
    fn cancel(&self, id: JobId) -> Result<OpResult, StoreError>;

    /// Deletes finished (`succeeded`, `dead`, `cancelled`) jobs matching `filter` (a filter
    /// without a state means dead jobs); returns how many.
    fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError>;

    /// Deletes up to `limit` finished jobs whose `finished_at` is older than `retention` on the
    /// store clock; returns how many. A batch whose members are all gone and that ended goes
    /// with them. Only jobs: the guard rows are pruned by their own
    /// retention, through [`LeaseStore::prune`] on [`guards`](QueueStore::guards)
    /// ([`Queue::prune`](crate::queue::Queue::prune) does both).
    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, StoreError>;

    /// Counts, per-kind figures, workers and the oldest due job's age.
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Jobs that finished `succeeded` or `dead` within `window` before now (by `finished_at`,
    /// on the store clock), counted per minute, oldest minute first; minutes with none are
    /// absent. What a chart over time starts from (the dashboard's throughput and latency over
    /// the last hour); an aggregate read through the `finished_at` index, not a scan.
    fn finished_by_minute(&self, window: Duration) -> Result<Vec<FinishedMinute>, StoreError>;

    /// Stores `result` on the job, fenced like a completion (`Stale` changes nothing): what
    /// [`WorkContext::set_result`](crate::queue::WorkContext::set_result) writes for the members
    /// that depend on this one ([`crate::workflow::dependency_results`]).
    fn set_result(&self, lease: &QueueLease, result: &Value) -> Result<FenceCheck, StoreError>;

    /// Inserts a validated batch in one transaction: the batch row (`running`), every member
    /// (`blocked` when it has dependencies, else as its `run_at` says; unique keys are not
    /// used), the dependency edges, and the callback job (`blocked`, outside the members). Then
    /// the batch is settled at once (a batch whose members all start ended ends at once).
    ///
    /// From then on, every transition of a member to an end state (`succeeded`, `dead`,
    /// `cancelled`) — a completion, the reaper, an operator's cancel — applies
    /// [`crate::workflow::settle::plan`] to the batch in the same transaction, after taking the
    /// batch's row lock (so two members ending at once see each other): unlocks, cancellations,
    /// and the batch's end with the callback's release (→ `pending`, the
    /// [`BatchOutcome`](crate::workflow::BatchOutcome) added to its metadata), exactly once.
    fn insert_batch(&self, batch: &NewBatch) -> Result<BatchId, StoreError>;

    /// The batch's row with its member counts, if it exists.
    fn batch(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError>;

    /// The batch's members in insertion order (each after its dependencies), with their states,
    /// edges and stored results. Empty for an unknown batch.
    fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError>;

    /// Batches by id, newest first, at most `limit`, optionally only those in `state`.
    fn list_batches(
        &self,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError>;

    /// An operator's cancel of a running batch: every member not running is cancelled, running
    /// members finish on their own, and the batch ends `cancelled` once none is left running (at
    /// once if none runs), releasing its callback. `WrongState` for a batch that already ended,
    /// `NotFound` for an unknown one.
    fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError>;

    /// Whether a worker pool should group its completions on this store by default
    /// ([`WorkerBuilder::batch_completions`](crate::queue::WorkerBuilder::batch_completions)):
    /// true where each commit pays a disk flush of its own that grouping saves. The default
    /// says no (the memory queue has no commits to save).
    fn groups_completions(&self) -> bool {
        false
    }

    /// Registers a waker to call when jobs may have become claimable (enqueue, retry). The
    /// default does nothing: the pool then polls at its interval.
    fn subscribe(&self, waker: Waker) -> Result<(), StoreError> {
        let _ = waker;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_before_the_wait_is_not_lost() {
        let waker = Waker::new();
        waker.clone().wake();
        // Returns at once (the hour is never waited) and clears the wake-up.
        assert!(waker.wait(Duration::from_secs(3600)));
        assert!(!waker.wait(Duration::from_millis(1)));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |n| Duration::from_millis(n);
        let values: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(nearest_rank(&values, 95), ms(95));
        assert_eq!(nearest_rank(&values, 99), ms(99));
        assert_eq!(nearest_rank(&[ms(7)], 99), ms(7));
        assert_eq!(nearest_rank(&[], 50), Duration::ZERO);
        let stats = KindStats::from_finished("k", 1, vec![ms(30), ms(10), ms(20)]);
        assert_eq!(stats.executions, 4);
        assert_eq!(stats.mean, ms(20));
        assert_eq!(stats.p99, ms(30));
        assert!((stats.success_rate - 0.75).abs() < 1e-9);
    }
}
