//! Settling a finalize whose answer was lost, on both paths of the one pipeline: the Runner's
//! finalize on the store, and a queued guarded job's completion.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::Retention;
use safejob_core::{
    EffectsContext, EffectsMode, FinalFailure, IdempotencyKey, JobRecord, KeyDigest, KeyError,
    LeaseStore, ListQuery, Outcome, PerformContext, Report, RunError, Runner, SafeJob, StoreError,
    queue::{
        ClaimRequest, Claimed, Completed, Completion, EnqueueOptions, Enqueued, ErrorKind,
        GuardFinish, GuardedJob, Heartbeat, JobFilter, JobId, JobQuery, KindOptions, MemoryQueue,
        NewJob, OpResult, Progress, Queue, QueueLease, QueueState, QueueStore, QueuedJob, Ran,
        Reaped, Registry, RetryPolicy, Snapshot, Worker,
    },
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobState, Lease, Renewed, TxEffects,
    },
};
use safejob_test_kit::{EffectProbe, ManualClock, MemoryHarness, StoreHarness};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const TTL: Duration = Duration::from_secs(30);
const PAST_TTL: Duration = Duration::from_secs(31);

fn ambiguous() -> StoreError {
    StoreError::AmbiguousCommit {
        source: "connection reset during COMMIT".into(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("test job error")]
struct TestError;

/// A payout whose effects are counted by a probe shared by every copy of it.
struct Payout {
    probe: EffectProbe,
}

impl SafeJob for Payout {
    type Error = TestError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new("payout:overtaken")
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, TestError> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), TestError> {
        self.probe.record(ctx.key());
        Ok(())
    }
}

/// The memory store, except that the finalize of fence 1 is overtaken: while it is in flight
/// the lease expires, a rival takes the key over (fence 2) and finalizes it `succeeded`, and then
/// fence 1's finalize fails with an ambiguous error (it did not apply: it was stale).
struct Overtaken {
    harness: MemoryHarness,
    rival: Runner,
    rival_job: Payout,
    rival_report: Mutex<Option<Report>>,
}

impl LeaseStore for Overtaken {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.harness.store().now()
    }
    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.harness.store().acquire(req)
    }
    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        self.harness.store().renew(lease, ttl)
    }
    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        if lease.fence == 1 {
            self.harness.advance(PAST_TTL);
            let report = self.rival.run(&self.rival_job).expect("the rival runs");
            *self.rival_report.lock().unwrap() = Some(report);
            return Err(ambiguous());
        }
        self.harness
            .store()
            .finalize_succeeded(lease, result, effects_ttl, retention, hook)
    }
    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        self.harness
            .store()
            .finalize_failed(lease, failure, retention)
    }
    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.harness.store().release(lease, error)
    }
    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        self.harness.store().finish_effects(lease, outcome)
    }
    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        self.harness.store().claim_effects(req)
    }
    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        self.harness.store().get(digest)
    }
    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        self.harness.store().list(query)
    }
    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        self.harness.store().prune(limit)
    }
}

/// The settle's re-read refuses a success under another attempt's fence: fence 1's finalize was
/// lost, the row is `succeeded` — by fence 2. Fence 1 has lost its lease; its effects never run.
///
/// Catches: dropping `row.fence == lease.fence` from the re-read in `pipeline::settle` (tried:
/// the overtaken run then reports `Succeeded` and runs the effects a second time).
#[test]
fn settle_refuses_a_success_under_another_attempts_fence() {
    for mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let harness = MemoryHarness::new();
        let probe = EffectProbe::new();
        let rival = Runner::builder(harness.store())
            .worker_id("rival")
            .default_ttl(TTL)
            .build()
            .unwrap();
        let store = Arc::new(Overtaken {
            harness: harness.clone(),
            rival,
            rival_job: Payout {
                probe: probe.clone(),
            },
            rival_report: Mutex::new(None),
        });
        let runner = Runner::builder(store.clone())
            .worker_id("overtaken")
            .default_ttl(TTL)
            .effects(mode)
            .build()
            .unwrap();
        let job = Payout {
            probe: probe.clone(),
        };
        let error = runner.run(&job).unwrap_err();
        assert!(
            matches!(error, RunError::LeaseLost { fence: 1, .. }),
            "{mode:?}: {error:?}"
        );
        assert!(matches!(
            store.rival_report.lock().unwrap().take(),
            Some(Report::Succeeded { attempt: 2, .. })
        ));
        assert_eq!(probe.total(), 1, "{mode:?}: the effects ran twice");
        let row = harness.store().get(job.key().unwrap().digest()).unwrap();
        let row = row.expect("a row");
        assert_eq!((row.state, row.fence), (JobState::Succeeded, 2));
    }
}

// ---------------------------------------------------------------------------------------------
// The queue's path
// ---------------------------------------------------------------------------------------------

/// Counts effects per tag in the job itself (a static tally: the worker decodes its own copy).
#[derive(Serialize, Deserialize)]
struct Posting {
    tag: String,
}

fn tally() -> std::sync::MutexGuard<'static, std::collections::BTreeMap<String, u32>> {
    static TALLY: Mutex<std::collections::BTreeMap<String, u32>> =
        Mutex::new(std::collections::BTreeMap::new());
    TALLY.lock().unwrap_or_else(|p| p.into_inner())
}

fn seen(name: &str) -> u32 {
    tally().get(name).copied().unwrap_or(0)
}

impl SafeJob for Posting {
    type Error = TestError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["settle-posting", &self.tag])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, TestError> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), TestError> {
        *tally().entry(self.tag.clone()).or_insert(0) += 1;
        if self.tag.starts_with("panic") {
            panic!("ledger exploded");
        }
        Ok(())
    }
}

impl GuardedJob for Posting {
    const KIND: &'static str = "test.settle-posting";
    fn options() -> KindOptions {
        KindOptions::new().retry(RetryPolicy::schedule([Duration::from_secs(1)]))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cut {
    /// The first guarded success completion applies, then its answer is lost.
    AfterApplying,
    /// The first guarded success completion is lost before it applies.
    BeforeApplying,
}

/// The memory queue with one completion's answer cut.
struct CutCompletion {
    inner: Arc<MemoryQueue>,
    cut: Cut,
    cuts: AtomicU32,
}

impl QueueStore for CutCompletion {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }
    fn guards(&self) -> &dyn LeaseStore {
        self.inner.guards()
    }
    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        self.inner.enqueue_many(jobs)
    }
    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        self.inner.claim(req)
    }
    fn renew(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        self.inner.renew(lease, guard, ttl)
    }
    fn progress(&self, lease: &QueueLease, progress: &Progress) -> Result<FenceCheck, StoreError> {
        self.inner.progress(lease, progress)
    }
    fn complete(
        &self,
        c: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        let success = matches!(c.guard, Some(GuardFinish::Succeeded { .. }));
        if success && self.cuts.fetch_add(1, Ordering::SeqCst) == 0 {
            if self.cut == Cut::AfterApplying {
                assert_eq!(self.inner.complete(c, hook)?, Completed::Applied);
            }
            return Err(ambiguous());
        }
        self.inner.complete(c, hook)
    }
    fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<(), StoreError> {
        self.inner.heartbeat(hb)
    }
    fn remove_worker(&self, worker: &str) -> Result<(), StoreError> {
        self.inner.remove_worker(worker)
    }
    fn reap(&self, limit: usize) -> Result<Vec<Reaped>, StoreError> {
        self.inner.reap(limit)
    }
    fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError> {
        self.inner.get(id)
    }
    fn list(&self, query: &JobQuery) -> Result<Vec<QueuedJob>, StoreError> {
        self.inner.list(query)
    }
    fn retry(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.inner.retry(id)
    }
    fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.inner.retry_matching(filter)
    }
    fn cancel(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.inner.cancel(id)
    }
    fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.inner.purge(filter)
    }
    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, StoreError> {
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
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot()
    }
    fn finished_by_minute(
        &self,
        window: std::time::Duration,
    ) -> Result<Vec<safejob_core::queue::FinishedMinute>, StoreError> {
        self.inner.finished_by_minute(window)
    }
}

struct CutSetup {
    clock: Arc<ManualClock>,
    store: Arc<CutCompletion>,
    queue: Queue,
    worker: Worker,
}

fn cut_setup(cut: Cut, mode: EffectsMode) -> CutSetup {
    let clock = Arc::new(ManualClock::default());
    let inner = Arc::new(MemoryQueue::with_clock(clock.clone()));
    let store = Arc::new(CutCompletion {
        inner,
        cut,
        cuts: AtomicU32::new(0),
    });
    let mut registry = Registry::new();
    registry.register_guarded::<Posting>();
    let worker = Worker::builder(store.clone(), registry)
        .clock(clock.clone())
        .effects(mode)
        .lease_ttl(TTL)
        .build()
        .unwrap();
    CutSetup {
        clock,
        queue: Queue::new(store.clone()),
        store,
        worker,
    }
}

/// A queued job's completion committed, but its answer was lost: the settle finds the guard
/// `succeeded` under this attempt's fence, so the effects run once, now, and are recorded done —
/// not left pending to turn into a false "in doubt".
///
/// Catches: a queue path without the settle (the pipeline's ambiguous-commit handling skipped
/// for `InCompletion`, as before the pipeline was shared): `run_once` then fails with the store
/// error and the effects never run (tried by making `settle` return `finalized` unchanged).
#[test]
fn queued_completion_that_committed_is_settled_and_runs_effects_once() {
    for (tag, mode) in [
        ("committed-after", EffectsMode::AfterCommit),
        ("committed-tx", EffectsMode::Transactional),
    ] {
        let s = cut_setup(Cut::AfterApplying, mode);
        let job = Posting { tag: tag.into() };
        let id = s
            .queue
            .enqueue_guarded(&job, &EnqueueOptions::new())
            .unwrap()
            .id();
        let worked = s.worker.run_once().unwrap();
        assert_eq!(worked[0].ran, Ran::Succeeded, "{mode:?}");
        assert_eq!(seen(tag), 1, "{mode:?}");
        let row = s.store.guards().get(job.key().unwrap().digest()).unwrap();
        let row = row.expect("a guard row");
        assert_eq!(
            (row.state, row.effects),
            (JobState::Succeeded, EffectsState::Done),
            "{mode:?}"
        );
        assert_eq!(
            s.queue.get(id).unwrap().unwrap().state,
            QueueState::Succeeded
        );
        s.clock.advance(PAST_TTL);
        assert!(!row.effects_in_doubt(s.clock.now()));
        assert_eq!(s.store.cuts.load(Ordering::SeqCst), 1);
    }
}

/// A queued job's completion was lost before it applied: the settle's fenced release proves it
/// never will, so the guard is released (`finalize outcome unknown`), the job retries, and the
/// retry succeeds once.
///
/// Catches: treating the lost completion as committed (the settle's `Applied` arm answering
/// `Committed`: the effects then run on a key that is not succeeded), and leaving the job
/// running after the settle (the worker then reports the store error instead of a retry).
#[test]
fn queued_completion_that_did_not_commit_is_released_and_retried() {
    for (tag, mode) in [
        ("lost-after", EffectsMode::AfterCommit),
        ("lost-tx", EffectsMode::Transactional),
    ] {
        let s = cut_setup(Cut::BeforeApplying, mode);
        let job = Posting { tag: tag.into() };
        let id = s
            .queue
            .enqueue_guarded(&job, &EnqueueOptions::new())
            .unwrap()
            .id();
        let worked = s.worker.run_once().unwrap();
        assert_eq!(
            worked[0].ran,
            Ran::Retrying {
                delay: Duration::from_secs(1),
                kind: ErrorKind::Retryable
            },
            "{mode:?}"
        );
        assert_eq!(seen(tag), 0, "{mode:?}");
        let digest = *job.key().unwrap().digest();
        let row = s.store.guards().get(&digest).unwrap().expect("a guard row");
        assert_eq!(row.state, JobState::Released, "{mode:?}");
        assert_eq!(row.last_error.as_deref(), Some("finalize outcome unknown"));
        let queued = s.queue.get(id).unwrap().unwrap();
        assert_eq!(queued.state, QueueState::Retrying);
        assert!(
            queued.errors[0]
                .message
                .contains("commit outcome unknown: the connection failed during COMMIT"),
            "{:?}",
            queued.errors
        );
        s.clock.advance(Duration::from_secs(1));
        assert_eq!(s.worker.run_once().unwrap()[0].ran, Ran::Succeeded);
        assert_eq!(seen(tag), 1, "{mode:?}");
        let row = s.store.guards().get(&digest).unwrap().expect("a guard row");
        assert_eq!((row.state, row.attempts), (JobState::Succeeded, 2));
    }
}

/// A settled completion whose effects then panic: the job is succeeded (its completion
/// committed), the effects are in doubt, and the worker reports the job succeeded rather than an
/// error — the settle tells the queue's port that its completion committed.
///
/// Catches: `settled_committed` doing nothing for the queue's port (tried: the worker then
/// reports a store error for a job that succeeded).
#[test]
fn queued_completion_settled_committed_then_effects_panic() {
    let s = cut_setup(Cut::AfterApplying, EffectsMode::AfterCommit);
    let job = Posting {
        tag: "panic-settled".into(),
    };
    let id = s
        .queue
        .enqueue_guarded(&job, &EnqueueOptions::new())
        .unwrap()
        .id();
    let worked = s.worker.run_once().unwrap();
    assert_eq!(worked[0].ran, Ran::Succeeded);
    assert_eq!(seen("panic-settled"), 1);
    let row = s.store.guards().get(job.key().unwrap().digest()).unwrap();
    let row = row.expect("a guard row");
    assert_eq!(
        (row.state, row.effects, row.last_error.as_deref()),
        (
            JobState::Succeeded,
            EffectsState::InDoubt,
            Some("on_succeeded_once panicked")
        )
    );
    assert_eq!(
        s.queue.get(id).unwrap().unwrap().state,
        QueueState::Succeeded
    );
}
