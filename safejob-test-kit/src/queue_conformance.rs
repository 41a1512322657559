//! The `QueueStore` conformance suite: one set of behaviours every queue backend must show.
//!
//! Each case is a `pub fn` taking the backend's [`QueueHarness`] and panicking with a message that
//! names the case and the broken rule. [`queue_store_conformance!`](crate::queue_store_conformance)
//! turns every case into its own `#[test]`; [`run_all`] runs them in sequence on one harness.
//!
//! Most cases speak only [`QueueStore`]; the last ones drive the core's [`Worker`] and
//! [`WorkerPool`](safejob_core::queue::WorkerPool) over the store, because retries, dead-lettering, guarded duplicates and shutdown
//! are only meaningful end to end. Accordingly:
//!
//! * time moves only through [`QueueHarness::advance`]; nothing sleeps to move time (the pool
//!   cases wait, bounded, for real threads to finish real work);
//! * instants are compared with [`TIME_SLACK`] against the store's own [`QueueStore::now`];
//! * every case uses its own queue, kinds and keys, so cases may share one store; the reaper and
//!   the clock are shared, though, so a harness whose `advance` moves a clock other cases see must
//!   not run cases in parallel.
//!
//! ```
//! use safejob_test_kit::queue_conformance::{self, MemoryQueueHarness};
//!
//! queue_conformance::run_all(&MemoryQueueHarness::new());
//! ```

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{
        Arc, Barrier, Condvar, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Utc};
use safejob_core::{
    EffectsContext, FinalFailure, Fingerprint, IdempotencyKey, KeyDigest, KeyError, ListFilter,
    ListQuery, Outcome, PerformContext, Runner, SafeJob,
    queue::{
        AttemptError, ClaimRequest, Claimed, CompleteAs, Completed, Completion, EnqueueOptions,
        Enqueued, ErrorKind, GuardFinish, GuardSpec, GuardedJob, Heartbeat, JobFilter, JobId,
        JobQuery, KindOptions, MAX_ERROR_HISTORY, MemoryQueue, NewJob, OpResult, Progress, Queue,
        QueueJob, QueueLease, QueueState, QueueStore, QueuedJob, Ran, Registry, RetryPolicy, RunAt,
        WorkContext, WorkError, Worker,
    },
    store::{
        AcquireRequest, Acquired, EffectsAborted, EffectsState, JobState, Renewed, StoreError,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{ManualClock, conformance::TIME_SLACK};

/// A queue store under test, and a way to make time pass as that store sees it.
///
/// The memory backend's harness advances a `ManualClock`; a SQL backend's harness moves the
/// clock its statements read (an offset), which moves due times and lease expiries alike.
pub trait QueueHarness {
    /// The store under test. Each call returns the same store.
    fn store(&self) -> Arc<dyn QueueStore>;
    /// Makes `by` pass on the store's clock.
    fn advance(&self, by: Duration);
}

/// A fresh [`MemoryQueue`] on a [`ManualClock`].
#[derive(Debug, Clone)]
pub struct MemoryQueueHarness {
    queue: Arc<MemoryQueue>,
    clock: Arc<ManualClock>,
}

impl MemoryQueueHarness {
    /// An empty queue on a clock standing at [`ManualClock::default_start`].
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::default());
        Self {
            queue: Arc::new(MemoryQueue::with_clock(clock.clone())),
            clock,
        }
    }

    /// The queue, with its concrete type.
    pub fn memory_queue(&self) -> &Arc<MemoryQueue> {
        &self.queue
    }

    /// The clock the queue reads.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }
}

impl Default for MemoryQueueHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueHarness for MemoryQueueHarness {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// The lease TTL every case asks for.
const TTL: Duration = Duration::from_secs(30);
/// An advance that expires any lease taken with [`TTL`].
const PAST_TTL: Duration = Duration::from_secs(31);
/// How many threads race in the concurrency cases.
const RACERS: usize = 16;
/// How long a pool case waits for real threads before it fails (never reached when it passes).
const POOL_PATIENCE: Duration = Duration::from_secs(20);

/// Panics with the case's name unless `cond` holds.
macro_rules! ensure {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $case.fail(format_args!($($msg)+));
        }
    };
}

/// One case's context: its store, its own queue and prefix, and the way it reports a violation.
struct Case<'h> {
    name: &'static str,
    harness: &'h dyn QueueHarness,
    store: Arc<dyn QueueStore>,
    prefix: String,
    queue: String,
}

impl<'h> Case<'h> {
    fn new(name: &'static str, harness: &'h dyn QueueHarness) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let nonce = nanos ^ (u64::from(std::process::id()) << 32);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("qc:{name}:{nonce:x}:{seq}");
        Self {
            name,
            harness,
            store: harness.store(),
            queue: format!("{prefix}:q"),
            prefix,
        }
    }

    #[track_caller]
    fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        panic!("queue conformance case `{}` failed: {what}", self.name)
    }

    #[track_caller]
    fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => self.fail(format_args!("{op} returned a store error: {error}")),
        }
    }

    fn advance(&self, by: Duration) {
        self.harness.advance(by);
    }

    #[track_caller]
    fn now(&self) -> DateTime<Utc> {
        self.ok("now", self.store.now())
    }

    fn kind(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn new_job(&self, kind: &str) -> NewJob {
        NewJob {
            kind: self.kind(kind),
            queue: self.queue.clone(),
            payload: json!({"case": self.name, "kind": kind}),
            metadata: serde_json::Value::Null,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: 5,
            idempotent: true,
            unique_key: None,
            guard: None,
        }
    }

    fn unique(&self, part: &str) -> KeyDigest {
        KeyDigest::of(&format!("{}:unique:{part}", self.prefix))
    }

    #[track_caller]
    fn enqueue(&self, job: NewJob) -> JobId {
        match self.ok("enqueue", self.store.enqueue(&job)) {
            Enqueued::Inserted { id, .. } => id,
            other => self.fail(format_args!(
                "enqueue of a new job: expected Inserted, got {other:?}"
            )),
        }
    }

    #[track_caller]
    fn get(&self, id: JobId) -> QueuedJob {
        match self.ok("get", self.store.get(id)) {
            Some(job) => job,
            None => self.fail(format_args!("get({id}) found no job")),
        }
    }

    #[track_caller]
    fn claim_as(&self, worker: &str, limit: usize) -> Vec<Claimed> {
        let queues = [self.queue.clone()];
        let claimed = self.ok(
            "claim",
            self.store.claim(&ClaimRequest {
                worker,
                queues: &queues,
                limit,
                ttl: TTL,
            }),
        );
        ensure!(
            self,
            claimed.len() <= limit,
            "claim with limit {limit} returned {} jobs",
            claimed.len()
        );
        claimed
    }

    #[track_caller]
    fn claim(&self, limit: usize) -> Vec<Claimed> {
        self.claim_as("w1", limit)
    }

    #[track_caller]
    fn claim_one(&self) -> Claimed {
        let mut claimed = self.claim(1);
        match claimed.pop() {
            Some(c) => c,
            None => self.fail(format_args!(
                "claim found no due job where one was expected"
            )),
        }
    }

    /// Enqueues a job guarded by `spec` and claims it, expecting the guard granted: the job, its
    /// claim and the guard lease.
    #[track_caller]
    fn claim_guarded(&self, spec: GuardSpec) -> (JobId, Claimed, safejob_core::store::Lease) {
        let mut job = self.new_job("guarded");
        job.guard = Some(spec);
        let id = self.enqueue(job);
        let claimed = self.claim_one();
        let Some(Acquired::Granted(glease)) = claimed.guard.clone() else {
            self.fail(format_args!(
                "expected the guard granted, got {:?}",
                claimed.guard
            ));
        };
        (id, claimed, glease)
    }

    /// `outsider` acquires `spec`'s key through the guard store, outside the queue.
    #[track_caller]
    fn acquire_outside(&self, spec: GuardSpec) -> Acquired {
        self.ok(
            "guards().acquire",
            self.store.guards().acquire(&AcquireRequest {
                digest: spec.digest,
                fingerprint: spec.fingerprint,
                owner: "outsider",
                ttl: TTL,
            }),
        )
    }

    #[track_caller]
    fn complete(&self, lease: &QueueLease, outcome: CompleteAs) -> Completed {
        self.ok(
            "complete",
            self.store.complete(
                &Completion {
                    lease,
                    outcome,
                    progress: None,
                    guard: None,
                },
                None,
            ),
        )
    }

    #[track_caller]
    fn near(&self, what: &str, got: Option<DateTime<Utc>>, want: DateTime<Utc>) {
        let slack = chrono::Duration::from_std(TIME_SLACK).unwrap_or_default();
        match got {
            Some(got) if (got - want).abs() <= slack => {}
            other => self.fail(format_args!("{what}: expected about {want}, got {other:?}")),
        }
    }

    fn worker(&self, registry: Registry) -> Worker {
        self.worker_on_clock(registry, Arc::new(ManualClock::default()))
    }

    fn worker_on_clock(&self, registry: Registry, clock: Arc<ManualClock>) -> Worker {
        match Worker::builder(self.store.clone(), registry)
            .id(format!("{}:worker", self.prefix))
            .queues([self.queue.clone()])
            .lease_ttl(TTL)
            .progress_interval(Duration::from_secs(10))
            .clock(clock)
            .build()
        {
            Ok(worker) => worker,
            Err(error) => self.fail(format_args!("worker could not be built: {error}")),
        }
    }

    #[track_caller]
    fn run_once(&self, worker: &Worker) -> Vec<(JobId, Ran)> {
        self.ok("Worker::run_once", worker.run_once())
            .into_iter()
            .map(|w| (w.id, w.ran))
            .collect()
    }

    fn options(&self) -> EnqueueOptions {
        EnqueueOptions::new().queue(self.queue.clone())
    }

    fn queue_client(&self) -> Queue {
        Queue::new(self.store.clone())
    }
}

fn error(message: &str) -> AttemptError {
    AttemptError::new(ErrorKind::Retryable, message)
}

// ---------------------------------------------------------------------------------------------
// Enqueue
// ---------------------------------------------------------------------------------------------

/// Enqueue stores every field; no delay is `pending`, a delay or future time is `scheduled` (due
/// by the store clock), a past time is `pending`.
pub fn enqueue_stores_jobs_pending_or_scheduled(harness: &dyn QueueHarness) {
    let c = Case::new("enqueue_stores_jobs_pending_or_scheduled", harness);
    let now = c.now();
    let mut job = c.new_job("a");
    job.priority = 3;
    job.max_attempts = 7;
    job.metadata = json!({"tenant": 9});
    job.unique_key = Some(c.unique("a"));
    let id = c.enqueue(job.clone());
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Pending,
        "no delay: expected pending, got {}",
        row.state
    );
    ensure!(
        c,
        row.kind == job.kind
            && row.queue == job.queue
            && row.payload == job.payload
            && row.metadata == job.metadata
            && row.priority == 3
            && row.max_attempts == 7
            && row.unique_key == job.unique_key
            && row.idempotent,
        "the row does not hold what was enqueued: {row:?}"
    );
    ensure!(
        c,
        row.attempts == 0 && row.fence == 0 && row.errors.is_empty() && row.owner.is_none(),
        "a new job has no attempts, fence 0, no errors, no owner: {row:?}"
    );
    c.near("run_at of an immediate job", Some(row.run_at), now);

    let mut later = c.new_job("b");
    later.run_at = RunAt::After(Duration::from_secs(60));
    let id = c.enqueue(later);
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Scheduled,
        "delay: expected scheduled, got {}",
        row.state
    );
    c.near(
        "run_at of a delayed job",
        Some(row.run_at),
        now + chrono::Duration::seconds(60),
    );

    let mut past = c.new_job("c");
    past.run_at = RunAt::At(now - chrono::Duration::seconds(10));
    let row = c.get(c.enqueue(past));
    ensure!(
        c,
        row.state == QueueState::Pending,
        "a past run_at: expected pending, got {}",
        row.state
    );

    let mut future = c.new_job("d");
    future.run_at = RunAt::At(now + chrono::Duration::seconds(3600));
    let row = c.get(c.enqueue(future));
    ensure!(
        c,
        row.state == QueueState::Scheduled,
        "a future run_at: expected scheduled, got {}",
        row.state
    );
}

/// A batch is answered in order with increasing ids; a unique key repeated inside the batch is a
/// duplicate of the earlier job.
pub fn enqueue_many_answers_in_order(harness: &dyn QueueHarness) {
    let c = Case::new("enqueue_many_answers_in_order", harness);
    let mut jobs: Vec<NewJob> = (0..4).map(|i| c.new_job(&format!("k{i}"))).collect();
    jobs[2].unique_key = Some(c.unique("batch"));
    jobs[3].unique_key = Some(c.unique("batch"));
    let answers = c.ok("enqueue_many", c.store.enqueue_many(&jobs));
    ensure!(c, answers.len() == 4, "4 jobs, {} answers", answers.len());
    let ids: Vec<JobId> = answers.iter().map(Enqueued::id).collect();
    ensure!(
        c,
        !answers[0].is_duplicate() && !answers[1].is_duplicate() && !answers[2].is_duplicate(),
        "distinct jobs must be inserted: {answers:?}"
    );
    ensure!(
        c,
        ids[0] < ids[1] && ids[1] < ids[2],
        "ids must increase in batch order: {ids:?}"
    );
    ensure!(
        c,
        answers[3].is_duplicate() && ids[3] == ids[2],
        "a unique key repeated in the batch is a duplicate of the first: {answers:?}"
    );
    for (i, id) in ids.iter().take(3).enumerate() {
        let row = c.get(*id);
        ensure!(
            c,
            row.kind == c.kind(&format!("k{i}")),
            "answer {i} names job {id} of kind {}",
            row.kind
        );
    }
}

/// While a job holding a unique key is live, enqueueing with that key returns it (also under
/// concurrent enqueues: exactly one inserts); once it is finished the key is free again.
pub fn unique_key_returns_the_live_job(harness: &dyn QueueHarness) {
    let c = Case::new("unique_key_returns_the_live_job", harness);
    let mut job = c.new_job("u");
    job.unique_key = Some(c.unique("u"));
    let first = c.enqueue(job.clone());
    let again = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        again
            == Enqueued::Duplicate {
                id: first,
                state: QueueState::Pending
            },
        "duplicate enqueue: expected Duplicate({first}, pending), got {again:?}"
    );
    // Still live while running.
    let claimed = c.claim_one();
    let during = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        during.id() == first && during.is_duplicate(),
        "a running job holds its key: {during:?}"
    );
    ensure!(
        c,
        c.complete(&claimed.lease, CompleteAs::Succeeded) == Completed::Applied,
        "completion"
    );
    let after = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        !after.is_duplicate() && after.id() != first,
        "a finished job frees its unique key: {after:?}"
    );

    let mut raced = c.new_job("race");
    raced.unique_key = Some(c.unique("race"));
    let store = c.store.clone();
    let barrier = Barrier::new(RACERS);
    let answers: Vec<Result<Enqueued, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, barrier, raced) = (store.clone(), &barrier, &raced);
                s.spawn(move || {
                    barrier.wait();
                    store.enqueue(raced).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let answers: Vec<Enqueued> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| c.fail(format_args!("racing enqueue failed: {e}"))))
        .collect();
    let inserted = answers.iter().filter(|a| !a.is_duplicate()).count();
    let ids: BTreeSet<JobId> = answers.iter().map(Enqueued::id).collect();
    ensure!(
        c,
        inserted == 1 && ids.len() == 1,
        "{RACERS} racing enqueues of one unique key: expected 1 insert and one id, got {inserted} inserts and ids {ids:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Claim
// ---------------------------------------------------------------------------------------------

/// Claims take jobs by priority (lower first), then due time, then age, and return them in that
/// order.
pub fn claim_orders_by_priority_then_due_time_then_age(harness: &dyn QueueHarness) {
    let c = Case::new("claim_orders_by_priority_then_due_time_then_age", harness);
    let now = c.now();
    let mut low = c.new_job("low");
    low.priority = 1;
    let mut recent = c.new_job("recent");
    recent.run_at = RunAt::At(now - chrono::Duration::seconds(5));
    let mut old_a = c.new_job("old_a");
    old_a.run_at = RunAt::At(now - chrono::Duration::seconds(30));
    let mut old_b = old_a.clone();
    old_b.kind = c.kind("old_b");
    let mut urgent = c.new_job("urgent");
    urgent.priority = -1;
    let ids = [
        c.enqueue(low),
        c.enqueue(recent),
        c.enqueue(old_a),
        c.enqueue(old_b),
        c.enqueue(urgent),
    ];
    let expected = vec![ids[4], ids[2], ids[3], ids[1], ids[0]];
    let got: Vec<JobId> = c
        .claim(2)
        .iter()
        .chain(c.claim(10).iter())
        .map(|c| c.job.id)
        .collect();
    ensure!(
        c,
        got == expected,
        "claim order: expected {expected:?} (priority, then due time, then age), got {got:?}"
    );
}

/// A claim takes only due jobs, only from the worker's queues, at most `limit`; scheduled jobs
/// become claimable when the store clock reaches their time.
pub fn claim_takes_only_due_jobs_from_its_queues(harness: &dyn QueueHarness) {
    let c = Case::new("claim_takes_only_due_jobs_from_its_queues", harness);
    let mut elsewhere = c.new_job("elsewhere");
    elsewhere.queue = format!("{}:other", c.queue);
    let other = c.enqueue(elsewhere);
    let mut later = c.new_job("later");
    later.run_at = RunAt::After(Duration::from_secs(60));
    let scheduled = c.enqueue(later);
    let due: Vec<JobId> = (0..3)
        .map(|i| c.enqueue(c.new_job(&format!("due{i}"))))
        .collect();

    let first = c.claim(2);
    ensure!(
        c,
        first.len() == 2,
        "limit 2 with 3 due: got {}",
        first.len()
    );
    let rest = c.claim(10);
    let got: BTreeSet<JobId> = first.iter().chain(&rest).map(|c| c.job.id).collect();
    let want: BTreeSet<JobId> = due.iter().copied().collect();
    ensure!(
        c,
        got == want,
        "expected only the due jobs {want:?}, got {got:?}"
    );
    ensure!(
        c,
        c.get(other).state == QueueState::Pending,
        "a job of another queue was claimed"
    );

    c.advance(Duration::from_secs(55));
    ensure!(
        c,
        c.claim(10).is_empty(),
        "a job scheduled in 60 s was claimed after 55 s"
    );
    c.advance(Duration::from_secs(6));
    let late = c.claim(10);
    ensure!(
        c,
        late.len() == 1 && late[0].job.id == scheduled,
        "the scheduled job must be claimable once due: {:?}",
        late.iter().map(|c| c.job.id).collect::<Vec<_>>()
    );
}

/// A claim is a lease exactly like the guard's: running, fence + 1, attempt + 1, owner, expiry
/// now + ttl by the store clock; a running job is not claimed again.
pub fn claim_is_a_fenced_lease(harness: &dyn QueueHarness) {
    let c = Case::new("claim_is_a_fenced_lease", harness);
    let id = c.enqueue(c.new_job("a"));
    let now = c.now();
    let claimed = c.claim_as("worker-a", 1);
    let Some(first) = claimed.first() else {
        c.fail(format_args!("nothing claimed"));
    };
    let lease = &first.lease;
    ensure!(
        c,
        lease.id == id && lease.fence == 1 && lease.attempt == 1 && lease.owner == "worker-a",
        "first claim: expected fence 1, attempt 1, owner worker-a, got {lease:?}"
    );
    c.near(
        "lease expiry",
        Some(lease.expires_at),
        now + chrono::Duration::seconds(30),
    );
    ensure!(
        c,
        first.guard.is_none(),
        "an unguarded job has no guard answer"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running
            && row.fence == 1
            && row.attempts == 1
            && row.owner.as_deref() == Some("worker-a"),
        "the row after a claim: {row:?}"
    );
    c.near("attempted_at", row.attempted_at, now);
    c.near("row lease expiry", row.lease_expires_at, lease.expires_at);
    ensure!(
        c,
        (
            first.job.id,
            first.job.state,
            first.job.fence,
            first.job.attempts,
            &first.job.owner
        ) == (row.id, row.state, row.fence, row.attempts, &row.owner)
            && first.job.payload == row.payload,
        "Claimed::job must be the row after the claim: {:?}",
        first.job
    );
    ensure!(
        c,
        c.claim(10).is_empty(),
        "a running job was claimed a second time"
    );
}

/// Of many threads claiming at once, each job goes to exactly one.
pub fn racing_claims_take_each_job_once(harness: &dyn QueueHarness) {
    let c = Case::new("racing_claims_take_each_job_once", harness);
    let jobs: Vec<NewJob> = (0..64).map(|i| c.new_job(&format!("j{i}"))).collect();
    let ids: BTreeSet<JobId> = c
        .ok("enqueue_many", c.store.enqueue_many(&jobs))
        .iter()
        .map(Enqueued::id)
        .collect();
    let barrier = Barrier::new(RACERS);
    let queues = [c.queue.clone()];
    let taken: Vec<Vec<JobId>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier, queues) = (c.store.clone(), &barrier, &queues);
                s.spawn(move || {
                    let worker = format!("racer-{i}");
                    let mut mine = Vec::new();
                    barrier.wait();
                    loop {
                        let batch = store
                            .claim(&ClaimRequest {
                                worker: &worker,
                                queues,
                                limit: 3,
                                ttl: TTL,
                            })
                            .map_err(|e| e.to_string());
                        match batch {
                            Ok(batch) if batch.is_empty() => break Ok(mine),
                            Ok(batch) => mine.extend(batch.iter().map(|c| c.job.id)),
                            Err(e) => break Err(e),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<Result<Vec<JobId>, String>>>()
    })
    .into_iter()
    .map(|r| r.unwrap_or_else(|e| c.fail(format_args!("a racing claim failed: {e}"))))
    .collect();
    let all: Vec<JobId> = taken.into_iter().flatten().collect();
    let distinct: BTreeSet<JobId> = all.iter().copied().collect();
    ensure!(
        c,
        all.len() == distinct.len(),
        "{} claims for {} distinct jobs: some job was claimed twice",
        all.len(),
        distinct.len()
    );
    ensure!(
        c,
        distinct == ids,
        "every job must be claimed once: {} of {}",
        distinct.len(),
        ids.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Completion, retries, dead letters
// ---------------------------------------------------------------------------------------------

/// Completions are compare-and-sets on the fence: a wrong fence or a second completion changes
/// nothing and says `Stale`.
pub fn completion_is_fenced(harness: &dyn QueueHarness) {
    let c = Case::new("completion_is_fenced", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    let mut wrong = claimed.lease.clone();
    wrong.fence += 7;
    ensure!(
        c,
        c.complete(&wrong, CompleteAs::Succeeded) == Completed::Stale,
        "a wrong fence completed the job"
    );
    let progress = Progress {
        current: 1,
        total: None,
        message: None,
    };
    ensure!(
        c,
        c.ok("progress", c.store.progress(&wrong, &progress))
            == safejob_core::store::FenceCheck::Stale,
        "a wrong fence wrote progress"
    );
    ensure!(
        c,
        c.get(id).state == QueueState::Running,
        "a stale completion changed the row"
    );
    let now = c.now();
    ensure!(
        c,
        c.complete(&claimed.lease, CompleteAs::Succeeded) == Completed::Applied,
        "the holder's completion must apply"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Succeeded && row.owner.is_none() && row.lease_expires_at.is_none(),
        "after success: {row:?}"
    );
    c.near("finished_at", row.finished_at, now);
    let again = c.complete(
        &claimed.lease,
        CompleteAs::Dead {
            error: error("late"),
        },
    );
    ensure!(
        c,
        again == Completed::Stale,
        "a second completion must be stale, got {again:?}"
    );
    ensure!(
        c,
        c.get(id).state == QueueState::Succeeded,
        "a terminal job changed"
    );
}

/// A retry waits for its delay on the store clock, records the error with its attempt, and the
/// next claim bumps fence and attempt again.
pub fn retry_waits_for_its_delay(harness: &dyn QueueHarness) {
    let c = Case::new("retry_waits_for_its_delay", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    let now = c.now();
    let retry = CompleteAs::Retry {
        delay: Duration::from_secs(60),
        error: error("boom"),
    };
    ensure!(
        c,
        c.complete(&claimed.lease, retry) == Completed::Applied,
        "retry completion"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Retrying,
        "expected retrying, got {}",
        row.state
    );
    c.near(
        "retry run_at",
        Some(row.run_at),
        now + chrono::Duration::seconds(60),
    );
    ensure!(
        c,
        row.errors.len() == 1
            && row.errors[0].attempt == 1
            && row.errors[0].kind == ErrorKind::Retryable
            && row.errors[0].message == "boom",
        "the error history must hold attempt 1's error: {:?}",
        row.errors
    );
    c.near("error time", Some(row.errors[0].at), now);
    c.advance(Duration::from_secs(55));
    ensure!(
        c,
        c.claim(1).is_empty(),
        "claimed before its backoff passed"
    );
    c.advance(Duration::from_secs(6));
    let next = c.claim_one();
    ensure!(
        c,
        next.lease.fence == 2 && next.lease.attempt == 2,
        "second claim: expected fence 2, attempt 2, got {:?}",
        next.lease
    );
}

/// A snooze gives the attempt back; with no delay the job is pending at once.
pub fn snooze_gives_the_attempt_back(harness: &dyn QueueHarness) {
    let c = Case::new("snooze_gives_the_attempt_back", harness);
    let id = c.enqueue(c.new_job("a"));
    let first = c.claim_one();
    let snooze = CompleteAs::Snooze {
        delay: Duration::from_secs(30),
        error: None,
    };
    ensure!(
        c,
        c.complete(&first.lease, snooze) == Completed::Applied,
        "snooze"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Scheduled && row.attempts == 0 && row.errors.is_empty(),
        "after a snooze: expected scheduled, attempts 0, no error, got {row:?}"
    );
    c.advance(PAST_TTL);
    let second = c.claim_one();
    ensure!(
        c,
        second.lease.attempt == 1 && second.lease.fence == 2,
        "after a snooze the attempt is 1 again and the fence still grows: {:?}",
        second.lease
    );
    let release = CompleteAs::Snooze {
        delay: Duration::ZERO,
        error: Some(AttemptError::new(ErrorKind::ShutDown, "bye")),
    };
    ensure!(
        c,
        c.complete(&second.lease, release) == Completed::Applied,
        "release"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Pending && row.attempts == 0 && row.errors.len() == 1,
        "a release without delay: pending, attempts 0, its error recorded: {row:?}"
    );
}

/// The error history keeps the last [`MAX_ERROR_HISTORY`] errors, oldest first; a dead job keeps
/// it and is finished.
pub fn dead_letter_keeps_bounded_error_history(harness: &dyn QueueHarness) {
    let c = Case::new("dead_letter_keeps_bounded_error_history", harness);
    let mut job = c.new_job("a");
    job.max_attempts = 40;
    let id = c.enqueue(job);
    let total = MAX_ERROR_HISTORY + 5;
    for n in 1..=total {
        let claimed = c.claim_one();
        let outcome = if n == total {
            CompleteAs::Dead {
                error: AttemptError::new(ErrorKind::Fatal, format!("error {n}")),
            }
        } else {
            CompleteAs::Retry {
                delay: Duration::ZERO,
                error: error(&format!("error {n}")),
            }
        };
        ensure!(
            c,
            c.complete(&claimed.lease, outcome) == Completed::Applied,
            "completion {n}"
        );
    }
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Dead && row.finished_at.is_some(),
        "expected dead and finished: {row:?}"
    );
    let messages: Vec<&str> = row.errors.iter().map(|e| e.message.as_str()).collect();
    let attempts: Vec<u32> = row.errors.iter().map(|e| e.attempt).collect();
    ensure!(
        c,
        row.errors.len() == MAX_ERROR_HISTORY
            && messages.first() == Some(&"error 6")
            && messages.last() == Some(&format!("error {total}").as_str()),
        "expected the last {MAX_ERROR_HISTORY} errors, oldest first: {messages:?}"
    );
    ensure!(
        c,
        attempts.windows(2).all(|w| w[1] == w[0] + 1) && attempts.last() == Some(&(total as u32)),
        "each error carries its attempt: {attempts:?}"
    );
    ensure!(
        c,
        row.errors.last().map(|e| e.kind) == Some(ErrorKind::Fatal),
        "the last error's kind"
    );
}

/// Renewal extends the lease by the store clock, keeps it from the reaper, and is fenced.
pub fn renew_extends_the_lease(harness: &dyn QueueHarness) {
    let c = Case::new("renew_extends_the_lease", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    c.advance(Duration::from_secs(20));
    let now = c.now();
    match c.ok("renew", c.store.renew(&claimed.lease, None, TTL)) {
        Renewed::Extended(until) => c.near(
            "renewed expiry",
            Some(until),
            now + chrono::Duration::seconds(30),
        ),
        Renewed::Stale => c.fail(format_args!("the holder's renewal was stale")),
    }
    c.advance(Duration::from_secs(20));
    let reaped = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !reaped.iter().any(|r| r.id == id),
        "a renewed lease was reaped"
    );
    let mut wrong = claimed.lease.clone();
    wrong.fence += 1;
    ensure!(
        c,
        c.ok("renew", c.store.renew(&wrong, None, TTL)) == Renewed::Stale,
        "a wrong fence renewed the lease"
    );
}

/// The reaper takes expired leases only: it bumps the fence (the zombie's completion, renewal and
/// progress are then stale), requeues idempotent jobs, parks the others, and dead-letters an
/// idempotent job that was on its last attempt.
pub fn reaper_fences_out_zombies(harness: &dyn QueueHarness) {
    let c = Case::new("reaper_fences_out_zombies", harness);
    let requeued = c.enqueue(c.new_job("idempotent"));
    let mut risky = c.new_job("not_idempotent");
    risky.idempotent = false;
    let parked = c.enqueue(risky);
    let mut last = c.new_job("last_attempt");
    last.max_attempts = 1;
    let dead = c.enqueue(last);
    let claimed = c.claim(3);
    ensure!(c, claimed.len() == 3, "claim 3: got {}", claimed.len());
    c.advance(Duration::from_secs(10));
    let early = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !early
            .iter()
            .any(|r| [requeued, parked, dead].contains(&r.id)),
        "a live lease was reaped"
    );
    c.advance(PAST_TTL);
    let reaped: BTreeMap<JobId, QueueState> = c
        .ok("reap", c.store.reap(1000))
        .into_iter()
        .filter(|r| [requeued, parked, dead].contains(&r.id))
        .map(|r| (r.id, r.state))
        .collect();
    let want = BTreeMap::from([
        (requeued, QueueState::Retrying),
        (parked, QueueState::Parked),
        (dead, QueueState::Dead),
    ]);
    ensure!(
        c,
        reaped == want,
        "reaper: expected {want:?}, got {reaped:?}"
    );
    for cl in &claimed {
        let row = c.get(cl.job.id);
        ensure!(
            c,
            row.fence == cl.lease.fence + 1 && row.owner.is_none(),
            "the reaper must bump the fence and clear the owner: {row:?}"
        );
        ensure!(
            c,
            row.errors.last().map(|e| e.kind) == Some(ErrorKind::LeaseExpired),
            "the reaper records LeaseExpired: {:?}",
            row.errors
        );
        ensure!(
            c,
            c.complete(&cl.lease, CompleteAs::Succeeded) == Completed::Stale,
            "a zombie completed job {}",
            cl.job.id
        );
        ensure!(
            c,
            c.ok("renew", c.store.renew(&cl.lease, None, TTL)) == Renewed::Stale,
            "a zombie renewed job {}",
            cl.job.id
        );
    }
    let again = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !again.iter().any(|r| want.contains_key(&r.id)),
        "a job was reaped twice"
    );
    let next = c.claim(10);
    ensure!(
        c,
        next.len() == 1
            && next[0].job.id == requeued
            && next[0].lease.fence == 3
            && next[0].lease.attempt == 2,
        "only the requeued job is claimable, with fence 3 and attempt 2: {:?}",
        next.iter().map(|n| &n.lease).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// Cancel takes waiting and parked jobs, not running ones; retry revives dead, cancelled and
/// parked jobs with a fresh attempt budget; purge deletes finished jobs matching its filter.
pub fn operator_cancel_retry_purge(harness: &dyn QueueHarness) {
    let c = Case::new("operator_cancel_retry_purge", harness);
    let waiting = c.enqueue(c.new_job("waiting"));
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(waiting)) == OpResult::Applied,
        "cancel a pending job"
    );
    let row = c.get(waiting);
    ensure!(
        c,
        row.state == QueueState::Cancelled && row.finished_at.is_some(),
        "cancelled and finished: {row:?}"
    );
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(JobId(i64::MAX))) == OpResult::NotFound,
        "cancel of a missing job"
    );

    let running = c.enqueue(c.new_job("running"));
    let claimed = c.claim_one();
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(running)) == OpResult::WrongState(QueueState::Running),
        "a running job must not be cancelled by an operator"
    );
    let dead = CompleteAs::Dead {
        error: error("gave up"),
    };
    ensure!(
        c,
        c.complete(&claimed.lease, dead) == Completed::Applied,
        "dead completion"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(running)) == OpResult::Applied,
        "retry of a dead job"
    );
    let row = c.get(running);
    ensure!(
        c,
        row.state == QueueState::Pending
            && row.attempts == 0
            && row.finished_at.is_none()
            && row.errors.len() == 1,
        "a retried job is pending with attempts 0 and keeps its history: {row:?}"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(running)) == OpResult::WrongState(QueueState::Pending),
        "retry of a pending job"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(waiting)) == OpResult::Applied,
        "retry of a cancelled job"
    );
    let again = c.claim(10);
    ensure!(
        c,
        again.len() == 2,
        "both revived jobs are claimable: {}",
        again.len()
    );
    for cl in &again {
        ensure!(
            c,
            cl.lease.attempt == 1,
            "a revived job starts at attempt 1: {:?}",
            cl.lease
        );
        c.complete(
            &cl.lease,
            CompleteAs::Dead {
                error: error("again"),
            },
        );
    }
    let purged = c.ok(
        "purge",
        c.store.purge(&JobFilter::dead().queue(c.queue.clone())),
    );
    ensure!(
        c,
        purged == 2,
        "purge of 2 dead jobs in the queue: {purged}"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(running)).is_none(),
        "a purged job is gone"
    );
}

/// Listing filters by state, queue and kind and pages by id; retry of all matching jobs revives
/// exactly those.
pub fn list_and_retry_matching_filter_by_queue_and_kind(harness: &dyn QueueHarness) {
    let c = Case::new("list_and_retry_matching_filter_by_queue_and_kind", harness);
    for kind in ["k1", "k1", "k1", "k2"] {
        c.enqueue(c.new_job(kind));
    }
    for cl in c.claim(10) {
        c.complete(&cl.lease, CompleteAs::Dead { error: error("x") });
    }
    let k1 = JobFilter::dead().queue(c.queue.clone()).kind(c.kind("k1"));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c.ok(
            "list",
            c.store.list(&JobQuery {
                filter: k1.clone(),
                after,
                limit: 2,
            }),
        );
        ensure!(c, page.len() <= 2, "list returned more than its limit");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|j| j.id);
        seen.extend(page.into_iter().map(|j| (j.id, j.kind, j.state)));
    }
    ensure!(
        c,
        seen.len() == 3,
        "3 dead jobs of kind k1, listed {}",
        seen.len()
    );
    ensure!(
        c,
        seen.windows(2).all(|w| w[0].0 < w[1].0)
            && seen
                .iter()
                .all(|(_, kind, state)| *kind == c.kind("k1") && *state == QueueState::Dead),
        "paged listing must be by id and match the filter: {seen:?}"
    );
    let dead_client = c
        .queue_client()
        .dead(&JobFilter::default().queue(c.queue.clone()), 100);
    ensure!(
        c,
        c.ok("dead", dead_client).len() == 4,
        "the dead list of the queue"
    );
    let revived = c.ok("retry_matching", c.store.retry_matching(&k1));
    ensure!(c, revived == 3, "retry of all dead k1 jobs: {revived}");
    let left = c.ok(
        "list",
        c.store.list(&JobQuery {
            filter: JobFilter::dead().queue(c.queue.clone()),
            after: None,
            limit: 100,
        }),
    );
    ensure!(
        c,
        left.len() == 1 && left[0].kind == c.kind("k2"),
        "only the k2 job stays dead: {:?}",
        left.iter().map(|j| &j.kind).collect::<Vec<_>>()
    );
}

/// A retry never makes two live jobs hold one unique key.
pub fn retry_respects_unique_keys(harness: &dyn QueueHarness) {
    let c = Case::new("retry_respects_unique_keys", harness);
    let mut job = c.new_job("u");
    job.unique_key = Some(c.unique("u"));
    let first = c.enqueue(job.clone());
    let claimed = c.claim_one();
    c.complete(&claimed.lease, CompleteAs::Dead { error: error("x") });
    let second = c.enqueue(job);
    let retried = c.ok("retry", c.store.retry(first));
    ensure!(
        c,
        retried == OpResult::UniqueKeyHeld { by: second },
        "retry while another live job holds the key: expected UniqueKeyHeld({second}), got {retried:?}"
    );
    ensure!(
        c,
        c.get(first).state == QueueState::Dead,
        "a refused retry changed the job"
    );
}

/// Pruning deletes finished jobs older than the retention, and nothing else.
pub fn prune_deletes_old_finished_jobs(harness: &dyn QueueHarness) {
    let c = Case::new("prune_deletes_old_finished_jobs", harness);
    let old = c.enqueue(c.new_job("old"));
    let cl = c.claim_one();
    c.complete(&cl.lease, CompleteAs::Succeeded);
    let waiting = c.enqueue(c.new_job("waiting"));
    c.advance(Duration::from_secs(7200));
    let recent = c.enqueue(c.new_job("recent"));
    let cl = c.claim_one();
    c.complete(&cl.lease, CompleteAs::Succeeded);
    let pruned = c.ok("prune", c.store.prune(Duration::from_secs(3600), 100_000));
    ensure!(c, pruned >= 1, "prune deleted nothing");
    ensure!(
        c,
        c.ok("get", c.store.get(old)).is_none(),
        "an old finished job survived pruning"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(recent)).is_some(),
        "a recent finished job was pruned"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(waiting)).is_some(),
        "a live job was pruned"
    );
}

/// Progress is persisted under the fence, and a completion writes its last progress.
pub fn progress_is_persisted_under_the_fence(harness: &dyn QueueHarness) {
    let c = Case::new("progress_is_persisted_under_the_fence", harness);
    let id = c.enqueue(c.new_job("a"));
    let cl = c.claim_one();
    let p1 = Progress {
        current: 3,
        total: Some(10),
        message: Some("copying".into()),
    };
    ensure!(
        c,
        c.ok("progress", c.store.progress(&cl.lease, &p1))
            == safejob_core::store::FenceCheck::Applied,
        "the holder's progress must apply"
    );
    ensure!(
        c,
        c.get(id).progress.as_ref() == Some(&p1),
        "progress not stored"
    );
    let p2 = Progress {
        current: 10,
        total: Some(10),
        message: None,
    };
    let done = c.ok(
        "complete",
        c.store.complete(
            &Completion {
                lease: &cl.lease,
                outcome: CompleteAs::Succeeded,
                progress: Some(&p2),
                guard: None,
            },
            None,
        ),
    );
    ensure!(c, done == Completed::Applied, "completion with progress");
    ensure!(
        c,
        c.get(id).progress.as_ref() == Some(&p2),
        "the completion's progress not stored"
    );
}

/// The snapshot counts jobs by queue, kind and state, figures per kind, lists workers with their
/// last heartbeat and in-flight jobs, and the oldest due job's age.
pub fn snapshot_counts_kinds_workers_and_age(harness: &dyn QueueHarness) {
    let c = Case::new("snapshot_counts_kinds_workers_and_age", harness);
    let worker = format!("{}:w", c.prefix);
    let queues = [c.queue.clone()];
    let hb = Heartbeat {
        worker: &worker,
        queues: &queues,
        concurrency: 2,
    };
    c.ok("heartbeat", c.store.heartbeat(&hb));
    let beat = c.now();
    for _ in 0..4 {
        c.enqueue(c.new_job("k"));
    }
    let claimed = c.claim_as(&worker, 3);
    c.advance(Duration::from_secs(2));
    c.complete(&claimed[0].lease, CompleteAs::Succeeded);
    c.complete(&claimed[1].lease, CompleteAs::Dead { error: error("x") });
    c.advance(Duration::from_secs(10));
    let snap = c.ok("snapshot", c.store.snapshot());
    let mine: BTreeMap<QueueState, u64> = snap
        .counts
        .iter()
        .filter(|s| s.queue == c.queue && s.kind == c.kind("k"))
        .map(|s| (s.state, s.count))
        .collect();
    let want = BTreeMap::from([
        (QueueState::Pending, 1),
        (QueueState::Running, 1),
        (QueueState::Succeeded, 1),
        (QueueState::Dead, 1),
    ]);
    ensure!(
        c,
        mine == want,
        "counts of the case's queue and kind: expected {want:?}, got {mine:?}"
    );
    ensure!(
        c,
        snap.by_queue().get(&c.queue) == Some(&4),
        "by_queue: {:?}",
        snap.by_queue().get(&c.queue)
    );
    let Some(stats) = snap.kinds.iter().find(|k| k.kind == c.kind("k")) else {
        c.fail(format_args!("no figures for the case's kind"));
    };
    ensure!(
        c,
        stats.executions == 2 && (stats.success_rate - 0.5).abs() < 1e-9,
        "1 succeeded + 1 dead: expected 2 executions at 50 %, got {stats:?}"
    );
    let took = Duration::from_secs(2);
    ensure!(
        c,
        stats.mean.abs_diff(took) <= TIME_SLACK && stats.p99.abs_diff(took) <= TIME_SLACK,
        "the succeeded job took 2 s of store time: {stats:?}"
    );
    let Some(me) = snap.workers.iter().find(|w| w.id == worker) else {
        c.fail(format_args!("the worker that sent a heartbeat is missing"));
    };
    ensure!(
        c,
        me.in_flight == vec![claimed[2].job.id] && me.queues == queues && me.concurrency == 2,
        "worker info: {me:?}"
    );
    c.near("last heartbeat", Some(me.last_heartbeat), beat);
    ensure!(
        c,
        snap.oldest_due_age
            .is_some_and(|age| age + TIME_SLACK >= Duration::from_secs(12)),
        "a job due 12 s ago: oldest_due_age {:?}",
        snap.oldest_due_age
    );
    c.ok("remove_worker", c.store.remove_worker(&worker));
    let snap = c.ok("snapshot", c.store.snapshot());
    ensure!(
        c,
        !snap.workers.iter().any(|w| w.id == worker),
        "a removed worker is still listed"
    );
}

// ---------------------------------------------------------------------------------------------
// Guarded jobs, at the port
// ---------------------------------------------------------------------------------------------

fn guard_spec(c: &Case<'_>, part: &str, fp: u8) -> GuardSpec {
    GuardSpec {
        digest: KeyDigest::of(&format!("{}:guard:{part}", c.prefix)),
        fingerprint: Some(Fingerprint::of_bytes(&[fp; 8])),
    }
}

/// A guarded job's claim performs the guard's acquire in the same step: the first claim is
/// granted, a concurrent duplicate is busy, a duplicate after success is told so, other
/// parameters are a conflict; the completion finalizes the guard in the same step.
pub fn guarded_claim_acquires_the_guard(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_claim_acquires_the_guard", harness);
    let spec = guard_spec(&c, "g", 1);
    let mut job = c.new_job("guarded");
    job.idempotent = false;
    job.guard = Some(spec);
    let a = c.enqueue(job.clone());
    let b = c.enqueue(job.clone());
    ensure!(
        c,
        c.get(a).idempotent,
        "a guarded job is always idempotent for the reaper"
    );
    ensure!(
        c,
        c.get(a).guard == Some(spec),
        "the guard is stored with the job"
    );
    let claimed = c.claim_as("wg", 2);
    ensure!(
        c,
        claimed.len() == 2,
        "claim both duplicates: {}",
        claimed.len()
    );
    let (first, second) = (&claimed[0], &claimed[1]);
    ensure!(
        c,
        first.job.id == a && second.job.id == b,
        "claim order of the duplicates"
    );
    let glease = match &first.guard {
        Some(Acquired::Granted(lease)) => lease.clone(),
        other => c.fail(format_args!(
            "the first guarded claim: expected Granted, got {other:?}"
        )),
    };
    ensure!(
        c,
        glease.digest == spec.digest && glease.fence == 1 && glease.owner == "wg",
        "the guard lease: {glease:?}"
    );
    ensure!(
        c,
        matches!(&second.guard, Some(Acquired::Busy { .. })),
        "a concurrent duplicate's guard must be busy: {:?}",
        second.guard
    );
    let row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == 1),
        "the guard row after the claim: {row:?}"
    );
    let result = json!({"receipt": 1});
    let done = c.ok(
        "complete",
        c.store.complete(
            &Completion {
                lease: &first.lease,
                outcome: CompleteAs::Succeeded,
                progress: None,
                guard: Some(GuardFinish::Succeeded {
                    lease: &glease,
                    result: Some(&result),
                    effects_ttl: TTL,
                    has_effects: true,
                }),
            },
            None,
        ),
    );
    ensure!(
        c,
        done == Completed::Applied,
        "guarded completion: {done:?}"
    );
    let row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        row.as_ref().is_some_and(|r| r.state == JobState::Succeeded
            && r.result.as_ref() == Some(&result)
            && r.effects == EffectsState::Pending),
        "the guard is finalized with the job: {row:?}"
    );
    ensure!(
        c,
        c.get(a).state == QueueState::Succeeded,
        "the job is succeeded with its guard"
    );
    c.complete(
        &second.lease,
        CompleteAs::Snooze {
            delay: Duration::ZERO,
            error: None,
        },
    );
    let third = c.claim_one();
    ensure!(
        c,
        third.job.id == b
            && matches!(&third.guard, Some(Acquired::AlreadySucceeded(r)) if r.result.as_ref() == Some(&result)),
        "a duplicate after success: expected AlreadySucceeded with the result, got {:?}",
        third.guard
    );
    let mut conflicting = job;
    conflicting.guard = Some(guard_spec(&c, "g", 2));
    c.enqueue(conflicting);
    let fourth = c.claim(10);
    ensure!(
        c,
        fourth.len() == 1 && matches!(&fourth[0].guard, Some(Acquired::KeyConflict { .. })),
        "same key, other fingerprint: expected KeyConflict, got {:?}",
        fourth.iter().map(|f| &f.guard).collect::<Vec<_>>()
    );
}

/// One claim of several guarded jobs answers each job for its own key, whatever mix of keys it
/// holds: fresh keys granted (fence 1), a duplicate of one of them busy, a succeeded key replayed,
/// a key held elsewhere busy, an expired key taken over (fence + 1), another fingerprint a
/// conflict.
pub fn guarded_claim_answers_each_job_for_its_key(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_claim_answers_each_job_for_its_key", harness);
    let spec = |part: &str| guard_spec(&c, part, 1);
    let acquire = |part: &str| c.acquire_outside(spec(part));
    // `expired`: held by an outsider whose lease then runs out.
    let Acquired::Granted(expired) = acquire("expired") else {
        c.fail(format_args!("the outsider's first acquire"));
    };
    c.advance(PAST_TTL);
    // `held`: held by an outsider now; `done`: succeeded with a result.
    ensure!(
        c,
        matches!(acquire("held"), Acquired::Granted(_)),
        "the outsider holds `held`"
    );
    let Acquired::Granted(done) = acquire("done") else {
        c.fail(format_args!("the outsider's acquire of `done`"));
    };
    let receipt = json!({"receipt": "done"});
    ensure!(
        c,
        c.ok(
            "guards().finalize_succeeded",
            c.store
                .guards()
                .finalize_succeeded_without_effects(&done, Some(&receipt), TTL),
        ) == safejob_core::store::Finalized::Committed,
        "the outsider finalizes `done`"
    );
    // In claim order: fresh, its duplicate, done, held, fresh2, expired, `done` with another
    // fingerprint.
    let mut ids = Vec::new();
    for (part, fp) in [
        ("fresh", 1),
        ("fresh", 1),
        ("done", 1),
        ("held", 1),
        ("fresh2", 1),
        ("expired", 1),
        ("done", 2),
    ] {
        let mut job = c.new_job("guarded");
        job.guard = Some(guard_spec(&c, part, fp));
        ids.push(c.enqueue(job));
    }
    let claimed = c.claim_as("wb", 10);
    let got: Vec<JobId> = claimed.iter().map(|x| x.job.id).collect();
    ensure!(c, got == ids, "claim order: {got:?} against {ids:?}");
    let granted = |i: usize, part: &str, fence: u64| match &claimed[i].guard {
        Some(Acquired::Granted(lease)) => ensure!(
            c,
            lease.digest == spec(part).digest && lease.fence == fence && lease.owner == "wb",
            "job {i} ({part}): the lease {lease:?}, expected fence {fence}"
        ),
        other => c.fail(format_args!(
            "job {i} ({part}): expected Granted, got {other:?}"
        )),
    };
    granted(0, "fresh", 1);
    ensure!(
        c,
        matches!(&claimed[1].guard, Some(Acquired::Busy { owner, .. }) if owner.as_deref() == Some("wb")),
        "job 1 (a duplicate of job 0's key): expected Busy by wb, got {:?}",
        claimed[1].guard
    );
    ensure!(
        c,
        matches!(&claimed[2].guard, Some(Acquired::AlreadySucceeded(r)) if r.result.as_ref() == Some(&receipt)),
        "job 2 (done): expected AlreadySucceeded with the receipt, got {:?}",
        claimed[2].guard
    );
    ensure!(
        c,
        matches!(&claimed[3].guard, Some(Acquired::Busy { owner, .. }) if owner.as_deref() == Some("outsider")),
        "job 3 (held): expected Busy by the outsider, got {:?}",
        claimed[3].guard
    );
    granted(4, "fresh2", 1);
    granted(5, "expired", expired.fence + 1);
    ensure!(
        c,
        matches!(&claimed[6].guard, Some(Acquired::KeyConflict { .. })),
        "job 6 (done, other fingerprint): expected KeyConflict, got {:?}",
        claimed[6].guard
    );
}

/// A guarded completion is all or nothing: a stale guard fence or an aborted transactional hook
/// leaves the job running under its lease and the guard untouched.
pub fn guarded_completion_is_all_or_nothing(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_completion_is_all_or_nothing", harness);
    let spec = guard_spec(&c, "atomic", 1);
    let (id, claimed, glease) = c.claim_guarded(spec);
    let complete = |hook: Option<&mut safejob_core::store::TxEffects<'_>>| {
        c.ok(
            "complete",
            c.store.complete(
                &Completion {
                    lease: &claimed.lease,
                    outcome: CompleteAs::Succeeded,
                    progress: None,
                    guard: Some(GuardFinish::Succeeded {
                        lease: &glease,
                        result: None,
                        effects_ttl: TTL,
                        has_effects: true,
                    }),
                },
                hook,
            ),
        )
    };
    let mut abort =
        |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> { Err(EffectsAborted) };
    let aborted = complete(Some(&mut abort));
    ensure!(
        c,
        aborted == Completed::EffectsAborted,
        "an aborting hook: expected EffectsAborted, got {aborted:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running && row.fence == claimed.lease.fence,
        "after an aborted hook the job must still be running under its lease: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == glease.fence),
        "after an aborted hook the guard must be untouched: {guard_row:?}"
    );
    // The guard's lease expires and someone outside the queue takes the key over.
    c.advance(PAST_TTL);
    let other = c.acquire_outside(spec);
    ensure!(
        c,
        matches!(other, Acquired::Granted(_)),
        "takeover of the expired guard: {other:?}"
    );
    let mut ok_hook = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> { Ok(()) };
    let stale = complete(Some(&mut ok_hook));
    ensure!(
        c,
        stale == Completed::GuardStale,
        "a superseded guard: expected GuardStale, got {stale:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running,
        "a GuardStale completion changed the job: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == glease.fence + 1),
        "a GuardStale completion changed the guard: {guard_row:?}"
    );
}

/// A guarded success completed without a hook (after-commit effects, or a job without effects:
/// the path a store may take in one statement) is all or nothing too: a superseded guard is
/// `GuardStale` and a lost job lease `Stale`, both changing nothing; a job without effects
/// finalizes its guard with effects `done`. Claiming a key whose lease expired takes it over.
pub fn guarded_success_without_hook_is_all_or_nothing(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_success_without_hook_is_all_or_nothing", harness);
    let spec = guard_spec(&c, "nohook", 1);
    let (id, claimed, glease) = c.claim_guarded(spec);
    let complete = |lease: &QueueLease, glease: &safejob_core::store::Lease, has_effects| {
        c.ok(
            "complete",
            c.store.complete(
                &Completion {
                    lease,
                    outcome: CompleteAs::Succeeded,
                    progress: None,
                    guard: Some(GuardFinish::Succeeded {
                        lease: glease,
                        result: Some(&json!({"paid": true})),
                        effects_ttl: TTL,
                        has_effects,
                    }),
                },
                None,
            ),
        )
    };
    // The guard's lease expires and someone outside the queue takes the key over.
    c.advance(PAST_TTL);
    let other = c.acquire_outside(spec);
    let Acquired::Granted(outsider) = other else {
        c.fail(format_args!("takeover of the expired guard: {other:?}"));
    };
    for has_effects in [true, false] {
        let stale = complete(&claimed.lease, &glease, has_effects);
        ensure!(
            c,
            stale == Completed::GuardStale,
            "a superseded guard (has_effects {has_effects}): expected GuardStale, got {stale:?}"
        );
        let row = c.get(id);
        ensure!(
            c,
            row.state == QueueState::Running && row.fence == claimed.lease.fence,
            "a GuardStale completion changed the job: {row:?}"
        );
        let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
        ensure!(
            c,
            guard_row
                .as_ref()
                .is_some_and(|r| r.state == JobState::Running
                    && r.fence == outsider.fence
                    && r.owner.as_deref() == Some("outsider")),
            "a GuardStale completion changed the guard: {guard_row:?}"
        );
    }
    // The job's own lease is lost too: the job's answer comes first.
    c.complete(
        &claimed.lease,
        CompleteAs::Snooze {
            delay: Duration::ZERO,
            error: None,
        },
    );
    let stale = complete(&claimed.lease, &outsider, false);
    ensure!(
        c,
        stale == Completed::Stale,
        "a lost job lease with a live guard: expected Stale, got {stale:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == outsider.fence),
        "a Stale completion changed the guard: {guard_row:?}"
    );
    // The outsider's lease expires too: the next claim takes the key over.
    c.advance(PAST_TTL);
    let again = c.claim_one();
    let Some(Acquired::Granted(taken)) = again.guard.clone() else {
        c.fail(format_args!(
            "a claim of an expired key: expected Granted, got {:?}",
            again.guard
        ));
    };
    ensure!(
        c,
        again.job.id == id && taken.fence == outsider.fence + 1 && taken.owner == "w1",
        "the takeover's lease: {taken:?}"
    );
    let done = complete(&again.lease, &taken, false);
    ensure!(c, done == Completed::Applied, "completion: {done:?}");
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Succeeded && row.owner.is_none(),
        "the job after its completion: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded
                && r.fence == taken.fence
                && r.effects == EffectsState::Done
                && r.result.as_ref() == Some(&json!({"paid": true}))),
        "a job without effects finalizes its guard with effects done: {guard_row:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Worker, end to end over the store
// ---------------------------------------------------------------------------------------------

/// An error made in the conformance jobs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CaseError(String);

/// Counters shared between the cases and the jobs they enqueue (which are rebuilt from JSON).
fn counters() -> MutexGuard<'static, BTreeMap<String, u32>> {
    static COUNTERS: OnceLock<Mutex<BTreeMap<String, u32>>> = OnceLock::new();
    COUNTERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn bump(name: &str) {
    *counters().entry(name.to_owned()).or_insert(0) += 1;
}

fn count(name: &str) -> u32 {
    counters().get(name).copied().unwrap_or(0)
}

/// Always fails, retryably: 3 attempts, 10 s then 20 s apart.
#[derive(Serialize, Deserialize)]
struct Failing {
    tag: String,
}

impl QueueJob for Failing {
    const KIND: &'static str = "conformance.failing";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        Err(WorkError::Retryable(CaseError(format!(
            "failure {}",
            ctx.attempt()
        ))))
    }
    fn options() -> KindOptions {
        KindOptions::new()
            .max_attempts(3)
            .retry(RetryPolicy::schedule([
                Duration::from_secs(10),
                Duration::from_secs(20),
            ]))
    }
}

/// Panics on its first attempt, then succeeds.
#[derive(Serialize, Deserialize)]
struct Panicky {
    tag: String,
}

impl QueueJob for Panicky {
    const KIND: &'static str = "conformance.panicky";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        if ctx.attempt() == 1 {
            panic!("conformance job panics on purpose");
        }
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().retry(RetryPolicy::schedule([Duration::ZERO]))
    }
}

thread_local! {
    /// The worker clock a [`Slow`] job moves while it runs (it runs on the case's thread).
    static SLOW_CLOCK: RefCell<Option<Arc<ManualClock>>> = const { RefCell::new(None) };
}

/// Works in 1-second steps of the worker's clock until told to stop; times out after 5 s.
#[derive(Serialize, Deserialize)]
struct Slow {
    tag: String,
}

impl QueueJob for Slow {
    const KIND: &'static str = "conformance.slow";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        for step in 0..1000 {
            ctx.checkpoint()?;
            ctx.progress(step, None, "");
            SLOW_CLOCK.with(|c| {
                if let Some(clock) = &*c.borrow() {
                    clock.advance(Duration::from_secs(1));
                }
            });
        }
        bump(&self.tag);
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().timeout(Duration::from_secs(5))
    }
}

/// A guarded charge: counts performs and effects per tag.
#[derive(Serialize, Deserialize)]
struct Charge {
    tag: String,
    cents: u64,
}

impl SafeJob for Charge {
    type Error = CaseError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["conformance-charge", &self.tag])
    }
    fn fingerprint(&self) -> Result<Option<Fingerprint>, safejob_core::FingerprintError> {
        Fingerprint::of(&self.cents).map(Some)
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, CaseError> {
        bump(&format!("{}:perform", self.tag));
        Ok(Outcome::json(json!({"charged": self.cents})))
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), CaseError> {
        bump(&format!("{}:effects", self.tag));
        Ok(())
    }
}

impl GuardedJob for Charge {
    const KIND: &'static str = "conformance.charge";
}

/// A guarded job that declares no effects; its `on_succeeded_once` counts calls that must not
/// happen.
#[derive(Serialize, Deserialize)]
struct Payout {
    tag: String,
}

impl SafeJob for Payout {
    type Error = CaseError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["conformance-payout", &self.tag])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, CaseError> {
        bump(&format!("{}:perform", self.tag));
        Ok(Outcome::json(json!({"paid": 1})))
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), CaseError> {
        bump(&format!("{}:effects", self.tag));
        Ok(())
    }
    fn has_effects(&self) -> bool {
        false
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "conformance.payout";
}

/// A worker retries a failing job after each delay of its policy (on the store clock) and
/// dead-letters it after its last attempt, with every attempt's error.
pub fn worker_retries_with_backoff_then_dead_letters(harness: &dyn QueueHarness) {
    let c = Case::new("worker_retries_with_backoff_then_dead_letters", harness);
    let tag = format!("{}:failing", c.prefix);
    let queue = c.queue_client();
    let id = c
        .ok_enqueue(queue.enqueue_with(&Failing { tag: tag.clone() }, &c.options()))
        .id();
    let mut registry = Registry::new();
    registry.register::<Failing>();
    let worker = c.worker(registry);
    let first = c.run_once(&worker);
    let retrying = |delay| Ran::Retrying {
        delay,
        kind: ErrorKind::Retryable,
    };
    ensure!(
        c,
        first == vec![(id, retrying(Duration::from_secs(10)))],
        "attempt 1: {first:?}"
    );
    c.advance(Duration::from_secs(9));
    ensure!(
        c,
        c.run_once(&worker).is_empty(),
        "retried before its 10 s delay"
    );
    c.advance(Duration::from_secs(2));
    let second = c.run_once(&worker);
    ensure!(
        c,
        second == vec![(id, retrying(Duration::from_secs(20)))],
        "attempt 2: {second:?}"
    );
    c.advance(Duration::from_secs(19));
    ensure!(
        c,
        c.run_once(&worker).is_empty(),
        "retried before its 20 s delay"
    );
    c.advance(Duration::from_secs(2));
    let third = c.run_once(&worker);
    ensure!(
        c,
        third
            == vec![(
                id,
                Ran::Dead {
                    kind: ErrorKind::Retryable
                }
            )],
        "attempt 3 of 3: expected dead, got {third:?}"
    );
    let row = c.get(id);
    let history: Vec<(u32, &str)> = row
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.as_str()))
        .collect();
    ensure!(
        c,
        row.state == QueueState::Dead
            && history == vec![(1, "failure 1"), (2, "failure 2"), (3, "failure 3")],
        "dead with its error history: {} {history:?}",
        row.state
    );
    ensure!(
        c,
        count(&tag) == 3,
        "the job ran {} times, expected 3",
        count(&tag)
    );
}

/// A job of an unknown kind, or whose payload does not decode, is dead at once with the reason
/// recorded, and never runs.
pub fn worker_discards_unknown_kinds_and_bad_payloads(harness: &dyn QueueHarness) {
    let c = Case::new("worker_discards_unknown_kinds_and_bad_payloads", harness);
    let unknown = c.enqueue(c.new_job("never-registered"));
    let mut bad = c.new_job("x");
    bad.kind = Failing::KIND.to_owned();
    bad.payload = json!({"not": "a failing job"});
    let undecodable = c.enqueue(bad);
    let mut registry = Registry::new();
    registry.register::<Failing>();
    let worker = c.worker(registry);
    let ran: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    let want = BTreeMap::from([
        (
            unknown,
            Ran::Dead {
                kind: ErrorKind::UnknownKind,
            },
        ),
        (
            undecodable,
            Ran::Dead {
                kind: ErrorKind::UndecodablePayload,
            },
        ),
    ]);
    ensure!(c, ran == want, "expected both dead at once: {ran:?}");
    for id in [unknown, undecodable] {
        let row = c.get(id);
        ensure!(
            c,
            row.state == QueueState::Dead
                && row.errors.len() == 1
                && !row.errors[0].message.is_empty(),
            "dead with a clear recorded error: {row:?}"
        );
    }
}

/// A panic in a job is caught and recorded as a retryable failure; the next attempt runs.
pub fn worker_catches_panics_as_retryable(harness: &dyn QueueHarness) {
    let c = Case::new("worker_catches_panics_as_retryable", harness);
    let tag = format!("{}:panicky", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Panicky { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Panicky>();
    let worker = c.worker(registry);
    let first = c.run_once(&worker);
    ensure!(
        c,
        first
            == vec![(
                id,
                Ran::Retrying {
                    delay: Duration::ZERO,
                    kind: ErrorKind::Panicked
                }
            )],
        "a panic: expected a retry, got {first:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.errors.len() == 1 && row.errors[0].message.contains("panics on purpose"),
        "the panic message is recorded: {:?}",
        row.errors
    );
    let second = c.run_once(&worker);
    ensure!(
        c,
        second == vec![(id, Ran::Succeeded)],
        "attempt 2: {second:?}"
    );
    ensure!(c, count(&tag) == 2, "ran {} times", count(&tag));
}

/// Timeouts are cooperative: past its timeout the context says stop, and the stopped attempt is
/// recorded as timed out and retried. Its last progress is persisted with the completion.
pub fn worker_times_out_cooperatively(harness: &dyn QueueHarness) {
    let c = Case::new("worker_times_out_cooperatively", harness);
    let tag = format!("{}:slow", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Slow { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Slow>();
    let clock = Arc::new(ManualClock::default());
    let worker = c.worker_on_clock(registry, clock.clone());
    SLOW_CLOCK.with(|c| *c.borrow_mut() = Some(clock));
    let ran = c.run_once(&worker);
    SLOW_CLOCK.with(|c| *c.borrow_mut() = None);
    ensure!(
        c,
        matches!(ran.as_slice(), [(got, Ran::Retrying { kind: ErrorKind::TimedOut, .. })] if *got == id),
        "a job past its timeout: expected a TimedOut retry, got {ran:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.errors.last().map(|e| e.kind) == Some(ErrorKind::TimedOut),
        "the timeout is recorded: {:?}",
        row.errors
    );
    ensure!(
        c,
        row.progress.as_ref().is_some_and(|p| p.current == 4),
        "the last progress (step 4, coalesced: written with the completion) must be stored: {:?}",
        row.progress
    );
    ensure!(c, count(&tag) == 0, "a stopped job must not finish");
}

/// Duplicate enqueues of one guarded job succeed once: one perform, one effect; the duplicates
/// complete `succeeded` without running once the key has succeeded (a busy key snoozes them).
/// A key already succeeded outside the queue completes the queued job without running it.
pub fn guarded_duplicates_succeed_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_duplicates_succeed_once", harness);
    let tag = format!("{}:charge", c.prefix);
    let queue = c.queue_client();
    let job = Charge {
        tag: tag.clone(),
        cents: 500,
    };
    let ids: Vec<JobId> = (0..3)
        .map(|_| c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())).id())
        .collect();
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = c.worker(registry.clone());
    let first: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    let succeeded = first.values().filter(|r| **r == Ran::Succeeded).count();
    let snoozed = first
        .values()
        .filter(|r| matches!(r, Ran::Snoozed { .. }))
        .count();
    ensure!(
        c,
        first.len() == 3 && succeeded == 1 && snoozed == 2,
        "one claim of 3 duplicates: expected 1 succeeded and 2 snoozed (busy guard), got {first:?}"
    );
    c.advance(PAST_TTL);
    let second: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    ensure!(
        c,
        second.len() == 2 && second.values().all(|r| *r == Ran::Succeeded),
        "the snoozed duplicates complete succeeded: {second:?}"
    );
    for id in &ids {
        ensure!(
            c,
            c.get(*id).state == QueueState::Succeeded,
            "job {id} is not succeeded"
        );
    }
    let performs = count(&format!("{tag}:perform"));
    let effects = count(&format!("{tag}:effects"));
    ensure!(
        c,
        performs == 1 && effects == 1,
        "3 duplicates: {performs} performs, {effects} effects; expected 1 and 1"
    );
    let key = match job.key() {
        Ok(key) => key,
        Err(e) => c.fail(format_args!("key: {e}")),
    };
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded && r.effects == EffectsState::Done),
        "the guard row: succeeded with effects done: {row:?}"
    );

    // Already succeeded outside the queue (a runner on the same guard store).
    let outside = Charge {
        tag: format!("{tag}:outside"),
        cents: 7,
    };
    let runner = match Runner::builder(Arc::new(GuardsOf(c.store.clone())))
        .worker_id("runner")
        .build()
    {
        Ok(runner) => runner,
        Err(e) => c.fail(format_args!("runner: {e}")),
    };
    if let Err(e) = runner.run(&outside) {
        c.fail(format_args!("runner.run: {e}"));
    }
    let id = c
        .ok_enqueue(queue.enqueue_guarded(&outside, &c.options()))
        .id();
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(id, Ran::Succeeded)],
        "a key already succeeded: {ran:?}"
    );
    let performs = count(&format!("{tag}:outside:perform"));
    let effects = count(&format!("{tag}:outside:effects"));
    ensure!(
        c,
        performs == 1 && effects == 1,
        "the queued duplicate of a succeeded key must not run: {performs} performs, {effects} effects"
    );
}

/// A guarded job without effects (`SafeJob::has_effects` is false) completes with its guard
/// `succeeded` and effects `done` in the completion itself: `on_succeeded_once` is never
/// called, nothing is left pending or in doubt, and a duplicate replays.
pub fn guarded_job_without_effects_is_done_at_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_job_without_effects_is_done_at_once", harness);
    let tag = format!("{}:payout", c.prefix);
    let queue = c.queue_client();
    let job = Payout { tag: tag.clone() };
    let first = c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())).id();
    let mut registry = Registry::new();
    registry.register_guarded::<Payout>();
    let worker = c.worker(registry);
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(first, Ran::Succeeded)],
        "a guarded job without effects: {ran:?}"
    );
    let key = match job.key() {
        Ok(key) => key,
        Err(e) => c.fail(format_args!("key: {e}")),
    };
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref().is_some_and(|r| r.state == JobState::Succeeded
            && r.effects == EffectsState::Done
            && r.result == Some(json!({"paid": 1}))),
        "the guard row: succeeded with effects done: {row:?}"
    );
    c.advance(PAST_TTL);
    let in_doubt = c.ok(
        "guards().list",
        c.store
            .guards()
            .list(&ListQuery::new(ListFilter::EffectsInDoubt, 10_000)),
    );
    ensure!(
        c,
        in_doubt.iter().all(|r| &r.digest != key.digest()),
        "a key without effects is listed in doubt"
    );
    let second = c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())).id();
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(second, Ran::Succeeded)],
        "a duplicate of a key without effects: {ran:?}"
    );
    let performs = count(&format!("{tag}:perform"));
    let effects = count(&format!("{tag}:effects"));
    ensure!(
        c,
        performs == 1 && effects == 0,
        "expected 1 perform and no effects call, got {performs} and {effects}"
    );
}

/// Fails retryably with exponential backoff: base 10 s, cap 15 s, jitter 0.2.
#[derive(Serialize, Deserialize)]
struct Backoff {
    tag: String,
}

fn backoff_policy() -> RetryPolicy {
    RetryPolicy::exponential()
        .base(Duration::from_secs(10))
        .cap(Duration::from_secs(15))
        .jitter(0.2)
        .build()
}

impl QueueJob for Backoff {
    const KIND: &'static str = "conformance.backoff";
    type Error = CaseError;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        Err(WorkError::Retryable(CaseError("not yet".into())))
    }
    fn options() -> KindOptions {
        KindOptions::new().max_attempts(10).retry(backoff_policy())
    }
}

/// The worker waits exactly the exponential policy's delay for the job and attempt (jitter
/// included, reproducible) before the next attempt, on the store clock.
pub fn worker_backoff_follows_the_exponential_policy(harness: &dyn QueueHarness) {
    let c = Case::new("worker_backoff_follows_the_exponential_policy", harness);
    let tag = format!("{}:backoff", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Backoff { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Backoff>();
    let worker = c.worker(registry);
    let policy = backoff_policy();
    for attempt in 1..=3u32 {
        let Some(want) = policy.delay(attempt, id.0 as u64) else {
            c.fail(format_args!("the policy must retry"));
        };
        let ran = c.run_once(&worker);
        ensure!(
            c,
            ran == vec![(
                id,
                Ran::Retrying {
                    delay: want,
                    kind: ErrorKind::Retryable
                }
            )],
            "attempt {attempt}: expected a retry after {want:?}, got {ran:?}"
        );
        let row = c.get(id);
        ensure!(
            c,
            row.attempts == attempt,
            "attempts after attempt {attempt}: {}",
            row.attempts
        );
        c.advance(want.saturating_sub(Duration::from_secs(1)));
        ensure!(
            c,
            c.run_once(&worker).is_empty(),
            "attempt {attempt}: retried before {want:?}"
        );
        c.advance(Duration::from_secs(2));
    }
    ensure!(c, count(&tag) == 3, "ran {} times, expected 3", count(&tag));
}

/// A guarded job whose worker died after claiming it (and its guard) is reaped, requeued (a
/// guarded job is idempotent), and the next claim takes the expired guard over: it runs and its
/// effects happen once.
pub fn guarded_job_of_a_dead_worker_runs_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_job_of_a_dead_worker_runs_once", harness);
    let tag = format!("{}:crash", c.prefix);
    let job = Charge {
        tag: tag.clone(),
        cents: 1,
    };
    let id = c
        .ok_enqueue(c.queue_client().enqueue_guarded(&job, &c.options()))
        .id();
    let zombie = c.claim_as("doomed", 1);
    ensure!(
        c,
        zombie.len() == 1 && matches!(zombie[0].guard, Some(Acquired::Granted(_))),
        "the doomed worker's claim takes the guard"
    );
    c.advance(PAST_TTL);
    let reaped: Vec<_> = c
        .ok("reap", c.store.reap(1000))
        .into_iter()
        .filter(|r| r.id == id)
        .collect();
    ensure!(
        c,
        reaped.len() == 1 && reaped[0].state == QueueState::Retrying,
        "a guarded job is requeued by the reaper: {reaped:?}"
    );
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = c.worker(registry);
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(id, Ran::Succeeded)],
        "the requeued guarded job: {ran:?}"
    );
    let key = job
        .key()
        .unwrap_or_else(|e| c.fail(format_args!("key: {e}")));
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded && r.fence == 2 && r.attempts == 2),
        "the guard was taken over (fence 2, attempt 2) and finalized: {row:?}"
    );
    let late = c.complete(&zombie[0].lease, CompleteAs::Succeeded);
    ensure!(
        c,
        late == Completed::Stale,
        "the dead worker's late completion: {late:?}"
    );
    let (performs, effects) = (
        count(&format!("{tag}:perform")),
        count(&format!("{tag}:effects")),
    );
    ensure!(
        c,
        performs == 1 && effects == 1,
        "{performs} performs, {effects} effects; expected 1 and 1"
    );
}

/// The queue store's guard store, as an owned [`safejob_core::LeaseStore`] for a runner.
struct GuardsOf(Arc<dyn QueueStore>);

impl safejob_core::LeaseStore for GuardsOf {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.0.guards().now()
    }
    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.0.guards().acquire(req)
    }
    fn renew(
        &self,
        lease: &safejob_core::store::Lease,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        self.0.guards().renew(lease, ttl)
    }
    fn finalize_succeeded(
        &self,
        lease: &safejob_core::store::Lease,
        result: Option<&serde_json::Value>,
        effects_ttl: Duration,
        hook: Option<&mut safejob_core::store::TxEffects<'_>>,
    ) -> Result<safejob_core::store::Finalized, StoreError> {
        self.0
            .guards()
            .finalize_succeeded(lease, result, effects_ttl, hook)
    }
    fn finalize_succeeded_without_effects(
        &self,
        lease: &safejob_core::store::Lease,
        result: Option<&serde_json::Value>,
        effects_ttl: Duration,
    ) -> Result<safejob_core::store::Finalized, StoreError> {
        self.0
            .guards()
            .finalize_succeeded_without_effects(lease, result, effects_ttl)
    }
    fn finalize_failed(
        &self,
        lease: &safejob_core::store::Lease,
        failure: &FinalFailure,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().finalize_failed(lease, failure)
    }
    fn release(
        &self,
        lease: &safejob_core::store::Lease,
        error: Option<&str>,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().release(lease, error)
    }
    fn finish_effects(
        &self,
        lease: &safejob_core::store::Lease,
        outcome: safejob_core::store::EffectsOutcome<'_>,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().finish_effects(lease, outcome)
    }
    fn claim_effects(
        &self,
        req: &AcquireRequest<'_>,
    ) -> Result<safejob_core::store::EffectsClaim, StoreError> {
        self.0.guards().claim_effects(req)
    }
    fn get(&self, digest: &KeyDigest) -> Result<Option<safejob_core::JobRecord>, StoreError> {
        self.0.guards().get(digest)
    }
    fn list(
        &self,
        query: &safejob_core::ListQuery,
    ) -> Result<Vec<safejob_core::JobRecord>, StoreError> {
        self.0.guards().list(query)
    }
}

impl Case<'_> {
    #[track_caller]
    fn ok_enqueue(&self, result: Result<Enqueued, safejob_core::queue::EnqueueError>) -> Enqueued {
        result.unwrap_or_else(|e| self.fail(format_args!("enqueue failed: {e}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Worker pool, on real threads
// ---------------------------------------------------------------------------------------------

/// A gate a [`Blocking`] job waits at, keyed by tag.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (started, open)
    changed: Condvar,
}

fn gate(tag: &str) -> Arc<Gate> {
    static GATES: OnceLock<Mutex<BTreeMap<String, Arc<Gate>>>> = OnceLock::new();
    GATES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(tag.to_owned())
        .or_default()
        .clone()
}

impl Gate {
    fn set(&self, f: impl FnOnce(&mut (bool, bool))) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Waits, at most [`POOL_PATIENCE`], until `cond` holds; returns whether it did.
    fn wait(&self, cond: impl Fn(&(bool, bool)) -> bool) -> bool {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, POOL_PATIENCE, |s| !cond(s))
            .unwrap_or_else(|p| p.into_inner());
        cond(&guard)
    }
}

/// Marks its gate started, then waits for it to open.
#[derive(Serialize, Deserialize)]
struct Blocking {
    tag: String,
}

impl QueueJob for Blocking {
    const KIND: &'static str = "conformance.blocking";
    type Error = CaseError;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        let gate = gate(&self.tag);
        gate.set(|s| s.0 = true);
        if gate.wait(|s| s.1) {
            bump(&self.tag);
            Ok(())
        } else {
            Err(WorkError::Retryable(CaseError(
                "the gate never opened".into(),
            )))
        }
    }
}

/// Counts its runs.
#[derive(Serialize, Deserialize)]
struct Counting {
    tag: String,
}

impl QueueJob for Counting {
    const KIND: &'static str = "conformance.counting";
    type Error = CaseError;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        Ok(())
    }
}

/// A pool of threads runs every job exactly once, appears in the snapshot while it runs, and
/// leaves it at shutdown.
pub fn pool_runs_every_job_once(harness: &dyn QueueHarness) {
    let c = Case::new("pool_runs_every_job_once", harness);
    let jobs: Vec<Counting> = (0..40)
        .map(|i| Counting {
            tag: format!("{}:{i}", c.prefix),
        })
        .collect();
    let ids: Vec<JobId> = c
        .queue_client()
        .enqueue_many(&jobs, &c.options())
        .unwrap_or_else(|e| c.fail(format_args!("enqueue_many: {e}")))
        .iter()
        .map(Enqueued::id)
        .collect();
    let mut registry = Registry::new();
    registry.register::<Counting>();
    let pool = Worker::builder(c.store.clone(), registry)
        .id(format!("{}:pool", c.prefix))
        .queues([c.queue.clone()])
        .concurrency(4)
        .poll_interval(Duration::from_millis(10))
        .maintenance_interval(Duration::from_millis(10))
        .start()
        .unwrap_or_else(|e| c.fail(format_args!("pool start: {e}")));
    let started = Instant::now();
    let finished = |c: &Case<'_>| {
        ids.iter()
            .all(|id| c.get(*id).state == QueueState::Succeeded)
    };
    while !finished(&c) {
        ensure!(
            c,
            started.elapsed() < POOL_PATIENCE,
            "the pool did not finish 40 jobs in {POOL_PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let listed = c
        .ok("snapshot", c.store.snapshot())
        .workers
        .iter()
        .any(|w| w.id == pool.id());
    let report = pool.shutdown(Duration::from_secs(5));
    ensure!(
        c,
        listed,
        "a running pool is listed among the workers (heartbeats)"
    );
    ensure!(
        c,
        report.released_running == 0,
        "nothing was running at shutdown: {report:?}"
    );
    let runs: Vec<u32> = jobs.iter().map(|j| count(&j.tag)).collect();
    ensure!(
        c,
        runs.iter().all(|n| *n == 1),
        "every job runs exactly once: {runs:?}"
    );
    let workers = c.ok("snapshot", c.store.snapshot()).workers;
    ensure!(
        c,
        !workers.iter().any(|w| w.id.starts_with(&c.prefix)),
        "a stopped pool must leave the worker list"
    );
}

/// Shutdown stops claiming, waits for running work until its deadline, then gives it back: the
/// job is due again with its attempt given back, and the late worker's completion is stale.
pub fn pool_shutdown_releases_claimed_work(harness: &dyn QueueHarness) {
    let c = Case::new("pool_shutdown_releases_claimed_work", harness);
    let tag = format!("{}:blocking", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Blocking { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Blocking>();
    let pool = Worker::builder(c.store.clone(), registry)
        .id(format!("{}:pool", c.prefix))
        .queues([c.queue.clone()])
        .concurrency(1)
        .poll_interval(Duration::from_millis(10))
        .start()
        .unwrap_or_else(|e| c.fail(format_args!("pool start: {e}")));
    let gate = gate(&tag);
    ensure!(c, gate.wait(|s| s.0), "the pool never started the job");
    let report = pool.shutdown(Duration::from_millis(20));
    ensure!(
        c,
        report.released_running == 1,
        "the blocked job must be released at the deadline: {report:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Pending
            && row.attempts == 0
            && row.owner.is_none()
            && row.errors.last().map(|e| e.kind) == Some(ErrorKind::ShutDown),
        "a released job is pending, attempt given back, ShutDown recorded: {row:?}"
    );
    // Another worker takes it; the old attempt finishes late and must not complete anything.
    let next = c.claim_one();
    gate.set(|s| s.1 = true);
    ensure!(
        c,
        next.lease.fence == row.fence + 1,
        "the next claim bumps the fence"
    );
    ensure!(
        c,
        c.complete(&next.lease, CompleteAs::Succeeded) == Completed::Applied,
        "the new holder completes"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Succeeded && row.fence == next.lease.fence,
        "final row: {row:?}"
    );
}

/// Calls `$callback!` with every case name; the one list the macro, [`CASES`] and [`run_all`]
/// are built from.
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            ($($args)*)
            enqueue_stores_jobs_pending_or_scheduled
            enqueue_many_answers_in_order
            unique_key_returns_the_live_job
            claim_orders_by_priority_then_due_time_then_age
            claim_takes_only_due_jobs_from_its_queues
            claim_is_a_fenced_lease
            racing_claims_take_each_job_once
            completion_is_fenced
            retry_waits_for_its_delay
            snooze_gives_the_attempt_back
            dead_letter_keeps_bounded_error_history
            renew_extends_the_lease
            reaper_fences_out_zombies
            operator_cancel_retry_purge
            list_and_retry_matching_filter_by_queue_and_kind
            retry_respects_unique_keys
            prune_deletes_old_finished_jobs
            progress_is_persisted_under_the_fence
            snapshot_counts_kinds_workers_and_age
            guarded_claim_acquires_the_guard
            guarded_claim_answers_each_job_for_its_key
            guarded_completion_is_all_or_nothing
            guarded_success_without_hook_is_all_or_nothing
            worker_retries_with_backoff_then_dead_letters
            worker_discards_unknown_kinds_and_bad_payloads
            worker_catches_panics_as_retryable
            worker_times_out_cooperatively
            guarded_duplicates_succeed_once
            guarded_job_without_effects_is_done_at_once
            worker_backoff_follows_the_exponential_policy
            guarded_job_of_a_dead_worker_runs_once
            pool_runs_every_job_once
            pool_shutdown_releases_claimed_work
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                let harness = ($make_harness)();
                $crate::queue_conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_optional_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                // `None`: the backend is not configured here; the factory said why.
                let Some(harness) = ($make_harness)() else { return };
                $crate::queue_conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_table {
    (() $($case:ident)*) => {
        &[$((stringify!($case), $crate::queue_conformance::$case as fn(&dyn $crate::QueueHarness))),*]
    };
}

/// Expands to one `#[test]` per queue conformance case. `$make_harness` is called once per test
/// and must return a value whose type implements [`QueueHarness`]; each test gets a fresh one.
/// With `optional` first, the factory returns `Option<_>` and a `None` skips the case (a backend
/// not configured on this machine; the factory prints why).
///
/// ```
/// mod memory_queue {
///     safejob_test_kit::queue_store_conformance!(
///         safejob_test_kit::queue_conformance::MemoryQueueHarness::new
///     );
/// }
/// ```
#[macro_export]
macro_rules! queue_store_conformance {
    (optional $make_harness:expr $(,)?) => {
        $crate::__queue_store_conformance_cases!(__queue_store_conformance_optional_tests!(
            $make_harness
        ));
    };
    ($make_harness:expr $(,)?) => {
        $crate::__queue_store_conformance_cases!(__queue_store_conformance_tests!($make_harness));
    };
}

/// A conformance case and its name.
pub type NamedCase = (&'static str, fn(&dyn QueueHarness));

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[NamedCase] =
    crate::__queue_store_conformance_cases!(__queue_store_conformance_table!());

/// Runs every case in sequence on one harness (each case uses its own queue, kinds and keys, so
/// sharing a store is fine). Panics at the first violation, naming the case.
pub fn run_all(harness: &dyn QueueHarness) {
    for (_, case) in CASES {
        case(harness);
    }
}
