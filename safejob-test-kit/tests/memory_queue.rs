//! The memory queue, on a manual clock, passes the whole queue conformance suite.

use safejob_test_kit::queue_conformance::{self, MemoryQueueHarness};

safejob_test_kit::queue_store_conformance!(MemoryQueueHarness::new);

/// Every case also passes when all of them share one store, as they would share a database.
#[test]
fn all_cases_pass_on_one_shared_queue() {
    queue_conformance::run_all(&MemoryQueueHarness::new());
    assert_eq!(queue_conformance::CASES.len(), 50);
}

/// The memory queue on the system clock: the pool case that needs real time.
struct RealTime(std::sync::Arc<safejob_core::queue::MemoryQueue>);

impl safejob_test_kit::QueueHarness for RealTime {
    fn store(&self) -> std::sync::Arc<dyn safejob_core::queue::QueueStore> {
        self.0.clone()
    }
    fn advance(&self, _: std::time::Duration) {
        unreachable!("the real-time pool case never moves the clock")
    }
}

#[test]
fn a_pool_is_woken_by_enqueues_and_short_snoozes() {
    queue_conformance::pool_wakes_for_enqueues_and_short_snoozes(&RealTime(std::sync::Arc::new(
        safejob_core::queue::MemoryQueue::new(),
    )));
}

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    queue::{
        EnqueueOptions, GuardedJob, KindOptions, MemoryQueue, Queue, QueueJob, QueueState,
        QueueStore, Ran, Registry, WorkContext, WorkError, Worker,
    },
    store::{EffectsState, FenceCheck, JobState},
};
use safejob_test_kit::{ManualClock, QueueHarness};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("test job error")]
struct TestError;

fn tally() -> std::sync::MutexGuard<'static, BTreeMap<String, usize>> {
    static TALLY: OnceLock<Mutex<BTreeMap<String, usize>>> = OnceLock::new();
    TALLY
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn bump(name: &str) {
    *tally().entry(name.to_owned()).or_insert(0) += 1;
}

fn seen(name: &str) -> usize {
    tally().get(name).copied().unwrap_or(0)
}

/// A guarded ledger posting; its effects count whether they ran inside the finalize.
#[derive(Serialize, Deserialize)]
struct Posting {
    tag: String,
}

impl SafeJob for Posting {
    type Error = TestError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["posting", &self.tag])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, TestError> {
        bump(&format!("{}:perform", self.tag));
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), TestError> {
        let inside = ctx
            .transaction::<safejob_core::memory::MemoryTx>()
            .is_some();
        bump(&format!("{}:effects:{inside}", self.tag));
        Ok(())
    }
}

impl GuardedJob for Posting {
    const KIND: &'static str = "test.posting";
    fn options() -> KindOptions {
        KindOptions::new().queue("ledger")
    }
}

fn setup() -> (Arc<ManualClock>, Arc<MemoryQueue>, Queue) {
    let clock = Arc::new(ManualClock::default());
    let store = Arc::new(MemoryQueue::with_clock(clock.clone()));
    let queue = Queue::new(store.clone());
    (clock, store, queue)
}

#[test]
fn guarded_job_with_transactional_effects_commits_them_with_the_completion() {
    let (_, store, queue) = setup();
    let job = Posting { tag: "tx-1".into() };
    let id = queue
        .enqueue_guarded(&job, &EnqueueOptions::new())
        .unwrap()
        .id();
    let mut registry = Registry::new();
    registry.register_guarded::<Posting>();
    let worker = Worker::builder(store.clone(), registry)
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    assert_eq!(worker.run_once().unwrap()[0].ran, Ran::Succeeded);
    assert_eq!(seen("tx-1:effects:true"), 1);
    assert_eq!(seen("tx-1:effects:false"), 0);
    let row = store
        .guards()
        .get(job.key().unwrap().digest())
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.effects),
        (JobState::Succeeded, EffectsState::Done)
    );
    assert_eq!(queue.get(id).unwrap().unwrap().state, QueueState::Succeeded);
}

#[test]
fn a_guarded_job_whose_worker_died_is_requeued_and_runs_once() {
    let (clock, store, queue) = setup();
    let job = Posting {
        tag: "crash-1".into(),
    };
    let id = queue
        .enqueue_guarded(&job, &EnqueueOptions::new())
        .unwrap()
        .id();
    let mut registry = Registry::new();
    registry.register_guarded::<Posting>();
    let worker = Worker::builder(store.clone(), registry).build().unwrap();
    // A worker claims (and acquires the guard), then dies.
    let zombie = worker.claim(1).unwrap();
    assert_eq!(zombie.len(), 1);
    clock.advance(Duration::from_secs(31));
    let reaped = worker.reap().unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(
        reaped[0].state,
        QueueState::Retrying,
        "guarded jobs are idempotent"
    );
    let ran = worker.drain(5).unwrap();
    assert_eq!(ran.len(), 1);
    assert_eq!(ran[0].ran, Ran::Succeeded);
    assert_eq!(seen("crash-1:perform"), 1);
    assert_eq!(seen("crash-1:effects:false"), 1);
    let row = queue.get(id).unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (QueueState::Succeeded, 2));
}

/// Reports progress in a tight loop.
#[derive(Serialize, Deserialize)]
struct Busy {
    steps: u64,
}

impl QueueJob for Busy {
    const KIND: &'static str = "test.busy";
    type Error = TestError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<TestError>> {
        for step in 1..=self.steps {
            ctx.progress(step, Some(self.steps), "working");
        }
        Ok(())
    }
}

/// Counts progress writes on the way to the memory queue.
struct CountingProgress {
    inner: Arc<MemoryQueue>,
    writes: AtomicUsize,
}

impl QueueStore for CountingProgress {
    fn now(&self) -> Result<chrono::DateTime<chrono::Utc>, safejob_core::StoreError> {
        self.inner.now()
    }
    fn guards(&self) -> &dyn safejob_core::LeaseStore {
        self.inner.guards()
    }
    fn enqueue_many(
        &self,
        jobs: &[safejob_core::queue::NewJob],
    ) -> Result<Vec<safejob_core::queue::Enqueued>, safejob_core::StoreError> {
        self.inner.enqueue_many(jobs)
    }
    fn claim(
        &self,
        req: &safejob_core::queue::ClaimRequest<'_>,
    ) -> Result<Vec<safejob_core::queue::Claimed>, safejob_core::StoreError> {
        self.inner.claim(req)
    }
    fn renew(
        &self,
        lease: &safejob_core::queue::QueueLease,
        guard: Option<&safejob_core::store::Lease>,
        ttl: Duration,
    ) -> Result<safejob_core::store::Renewed, safejob_core::StoreError> {
        self.inner.renew(lease, guard, ttl)
    }
    fn progress(
        &self,
        lease: &safejob_core::queue::QueueLease,
        progress: &safejob_core::queue::Progress,
    ) -> Result<FenceCheck, safejob_core::StoreError> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.progress(lease, progress)
    }
    fn complete(
        &self,
        c: &safejob_core::queue::Completion<'_>,
        hook: Option<&mut safejob_core::store::TxEffects<'_>>,
    ) -> Result<safejob_core::queue::Completed, safejob_core::StoreError> {
        self.inner.complete(c, hook)
    }
    fn heartbeat(
        &self,
        hb: &safejob_core::queue::Heartbeat<'_>,
    ) -> Result<(), safejob_core::StoreError> {
        self.inner.heartbeat(hb)
    }
    fn remove_worker(&self, worker: &str) -> Result<(), safejob_core::StoreError> {
        self.inner.remove_worker(worker)
    }
    fn reap(
        &self,
        limit: usize,
    ) -> Result<Vec<safejob_core::queue::Reaped>, safejob_core::StoreError> {
        self.inner.reap(limit)
    }
    fn get(
        &self,
        id: safejob_core::queue::JobId,
    ) -> Result<Option<safejob_core::queue::QueuedJob>, safejob_core::StoreError> {
        self.inner.get(id)
    }
    fn list(
        &self,
        query: &safejob_core::queue::JobQuery,
    ) -> Result<Vec<safejob_core::queue::QueuedJob>, safejob_core::StoreError> {
        self.inner.list(query)
    }
    fn retry(
        &self,
        id: safejob_core::queue::JobId,
    ) -> Result<safejob_core::queue::OpResult, safejob_core::StoreError> {
        self.inner.retry(id)
    }
    fn retry_matching(
        &self,
        filter: &safejob_core::queue::JobFilter,
    ) -> Result<u64, safejob_core::StoreError> {
        self.inner.retry_matching(filter)
    }
    fn cancel(
        &self,
        id: safejob_core::queue::JobId,
    ) -> Result<safejob_core::queue::OpResult, safejob_core::StoreError> {
        self.inner.cancel(id)
    }
    fn purge(
        &self,
        filter: &safejob_core::queue::JobFilter,
    ) -> Result<u64, safejob_core::StoreError> {
        self.inner.purge(filter)
    }
    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, safejob_core::StoreError> {
        self.inner.prune(retention, limit)
    }
    fn set_result(
        &self,
        lease: &safejob_core::queue::QueueLease,
        result: &serde_json::Value,
    ) -> Result<safejob_core::store::FenceCheck, safejob_core::StoreError> {
        self.inner.set_result(lease, result)
    }
    fn insert_batch(
        &self,
        batch: &safejob_core::workflow::NewBatch,
    ) -> Result<safejob_core::workflow::BatchId, safejob_core::StoreError> {
        self.inner.insert_batch(batch)
    }
    fn batch(
        &self,
        id: safejob_core::workflow::BatchId,
    ) -> Result<Option<safejob_core::workflow::BatchInfo>, safejob_core::StoreError> {
        self.inner.batch(id)
    }
    fn batch_members(
        &self,
        id: safejob_core::workflow::BatchId,
    ) -> Result<Vec<safejob_core::workflow::BatchMember>, safejob_core::StoreError> {
        self.inner.batch_members(id)
    }
    fn list_batches(
        &self,
        state: Option<safejob_core::workflow::BatchState>,
        limit: usize,
    ) -> Result<Vec<safejob_core::workflow::BatchInfo>, safejob_core::StoreError> {
        self.inner.list_batches(state, limit)
    }
    fn cancel_batch(
        &self,
        id: safejob_core::workflow::BatchId,
    ) -> Result<safejob_core::queue::OpResult, safejob_core::StoreError> {
        self.inner.cancel_batch(id)
    }
    fn snapshot(&self) -> Result<safejob_core::queue::Snapshot, safejob_core::StoreError> {
        self.inner.snapshot()
    }
    fn finished_by_minute(
        &self,
        window: std::time::Duration,
    ) -> Result<Vec<safejob_core::queue::FinishedMinute>, safejob_core::StoreError> {
        self.inner.finished_by_minute(window)
    }
}

#[test]
fn progress_in_a_tight_loop_is_coalesced() {
    let (clock, memory, queue) = setup();
    let id = queue.enqueue(&Busy { steps: 10_000 }).unwrap().id();
    let store = Arc::new(CountingProgress {
        inner: memory,
        writes: AtomicUsize::new(0),
    });
    let mut registry = Registry::new();
    registry.register::<Busy>();
    let worker = Worker::builder(store.clone(), registry)
        .clock(clock)
        .build()
        .unwrap();
    assert_eq!(worker.run_once().unwrap()[0].ran, Ran::Succeeded);
    // The clock stood still: the first report is written, the rest only with the completion.
    assert_eq!(store.writes.load(Ordering::Relaxed), 1);
    let progress = queue.get(id).unwrap().unwrap().progress.unwrap();
    assert_eq!((progress.current, progress.total), (10_000, Some(10_000)));
}

/// Counts its runs.
#[derive(Serialize, Deserialize)]
struct Note {
    tag: String,
}

impl QueueJob for Note {
    const KIND: &'static str = "test.note";
    type Error = TestError;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<TestError>> {
        bump(&self.tag);
        Ok(())
    }
}

#[test]
fn an_idle_pool_is_woken_by_an_enqueue() {
    let (_, store, queue) = setup();
    let mut registry = Registry::new();
    registry.register::<Note>();
    // Polling once an hour: only the store's wake-up can make the job run within the test.
    let pool = Worker::builder(store.clone(), registry)
        .poll_interval(Duration::from_secs(3600))
        .concurrency(2)
        .start()
        .unwrap();
    let id = queue
        .enqueue(&Note {
            tag: "woken".into(),
        })
        .unwrap()
        .id();
    let started = Instant::now();
    while queue.get(id).unwrap().unwrap().state != QueueState::Succeeded {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the pool was not woken by the enqueue"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    pool.shutdown(Duration::from_secs(5));
    assert_eq!(seen("woken"), 1);
}

#[test]
fn a_parked_job_runs_again_only_after_an_operator_retry() {
    let harness = MemoryQueueHarness::new();
    let store = harness.memory_queue().clone();
    let queue = Queue::new(store.clone());
    let id = queue
        .enqueue(&Note {
            tag: "parked".into(),
        })
        .unwrap()
        .id();
    let mut registry = Registry::new();
    registry.register::<Note>();
    let worker = Worker::builder(store, registry).build().unwrap();
    assert_eq!(worker.claim(1).unwrap().len(), 1); // ... and the worker dies
    harness.advance(Duration::from_secs(31));
    assert_eq!(worker.reap().unwrap()[0].state, QueueState::Parked);
    assert!(
        worker.drain(3).unwrap().is_empty(),
        "a parked job is not claimable"
    );
    assert_eq!(
        queue.retry(id).unwrap(),
        safejob_core::queue::OpResult::Applied
    );
    assert_eq!(worker.drain(3).unwrap()[0].ran, Ran::Succeeded);
    assert_eq!(seen("parked"), 1);
}

/// The schedule conformance suite on the memory queue (a fresh ManualClock per case).
#[test]
fn schedule_conformance_on_memory() {
    safejob_test_kit::schedule_conformance::run_all(safejob_test_kit::MemoryQueueHarness::new);
}

/// `Scheduler::start` ticks once before it first waits, so a thread started and stopped at once
/// has fired what was due (no sleep: the stop waits for that round).
///
/// Catches: a loop that waits before its first tick (no job), or that ignores the stop (the
/// join would hang).
#[test]
fn a_started_scheduler_ticks_then_stops() {
    use std::{sync::Arc, time::Duration};

    use safejob_core::{
        queue::{JobFilter, JobQuery, QueueStore},
        schedule::{Schedule, Scheduler},
    };
    use safejob_test_kit::{MemoryQueueHarness, schedule_conformance::template};

    let h = MemoryQueueHarness::new();
    let scheduler = Scheduler::builder(h.memory_queue().clone())
        .schedule(Schedule::cron("bg", "* * * * *", "UTC", template("sched-bg")).expect("schedule"))
        .build()
        .expect("build");
    scheduler.sync().expect("sync");
    h.clock().advance(Duration::from_secs(61));
    Arc::new(scheduler).start(Duration::from_secs(3600)).stop();
    let jobs = h
        .memory_queue()
        .list(&JobQuery {
            filter: JobFilter::default().kind("sched-bg"),
            after: None,
            limit: 10,
        })
        .expect("list");
    assert_eq!(
        jobs.len(),
        1,
        "the started scheduler fired the due tick once"
    );
}

/// A stored schedule row that no longer parses (edited by hand) is skipped by `tick`; the other
/// schedules still fire.
///
/// Catches: `tick` returning the parse error (`?`) instead of skipping the row — then no
/// schedule fires while one row is bad.
#[test]
fn a_corrupt_schedule_row_does_not_stop_the_others() {
    use std::time::Duration;

    use safejob_core::schedule::{Schedule, ScheduleStore, Scheduler};
    use safejob_test_kit::{MemoryQueueHarness, schedule_conformance::template};

    let h = MemoryQueueHarness::new();
    let scheduler = Scheduler::builder(h.memory_queue().clone())
        .schedule(Schedule::cron("bad", "* * * * *", "UTC", template("sched-bad")).expect("bad"))
        .schedule(Schedule::cron("good", "* * * * *", "UTC", template("sched-good")).expect("good"))
        .build()
        .expect("build");
    scheduler.sync().expect("sync");
    let store = h.memory_queue();
    let mut row = store
        .schedules()
        .expect("rows")
        .into_iter()
        .find(|r| r.name == "bad")
        .expect("row");
    let revision = row.revision;
    row.time_zone = "Nowhere/Atlantis".into();
    assert!(store.update_schedule(&row, revision).expect("edit"));
    h.clock().advance(Duration::from_secs(61));
    let fired = scheduler
        .tick()
        .expect("a bad row is not an error of the tick");
    let names: Vec<&str> = fired.iter().map(|f| f.schedule.as_str()).collect();
    assert_eq!(
        names,
        ["good"],
        "the good schedule fires, the bad one is skipped"
    );
}
