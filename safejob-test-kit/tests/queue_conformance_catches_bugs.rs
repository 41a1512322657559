//! The queue conformance suite fails backends that break the contract, naming the case.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::{
    LeaseStore,
    queue::{
        ClaimRequest, Claimed, Completed, Completion, Enqueued, Heartbeat, JobFilter, JobId,
        JobQuery, NewJob, OpResult, Progress, QueueLease, QueueStore, QueuedJob, Reaped, Snapshot,
        Waker,
    },
    store::{FenceCheck, Lease, Renewed, StoreError, TxEffects},
};
use safejob_test_kit::{
    QueueHarness,
    queue_conformance::{self, MemoryQueueHarness},
};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Bug {
    /// No bug: the wrapper only delegates.
    None,
    /// Completion takes whatever fence the row has (an ID-only update, River's bug #1302).
    CompleteIgnoresFence,
    /// The reaper never finds anything.
    ReaperIdle,
    /// Claims come back in reverse order.
    ClaimsOutOfOrder,
    /// Unique keys are dropped at enqueue.
    DropsUniqueKeys,
    /// The guard's answer is dropped from claims.
    DropsGuardAnswer,
}

struct Buggy {
    inner: Arc<dyn QueueStore>,
    bug: Bug,
}

impl QueueStore for Buggy {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }
    fn guards(&self) -> &dyn LeaseStore {
        self.inner.guards()
    }
    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        if self.bug == Bug::DropsUniqueKeys {
            let stripped: Vec<NewJob> = jobs
                .iter()
                .cloned()
                .map(|mut j| {
                    j.unique_key = None;
                    j
                })
                .collect();
            return self.inner.enqueue_many(&stripped);
        }
        self.inner.enqueue_many(jobs)
    }
    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let mut claimed = self.inner.claim(req)?;
        match self.bug {
            Bug::ClaimsOutOfOrder => claimed.reverse(),
            Bug::DropsGuardAnswer => claimed.iter_mut().for_each(|c| c.guard = None),
            _ => {}
        }
        Ok(claimed)
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
        if self.bug == Bug::CompleteIgnoresFence
            && let Some(row) = self.inner.get(c.lease.id)?
        {
            let lease = QueueLease {
                fence: row.fence,
                ..c.lease.clone()
            };
            let mut unfenced = c.clone();
            unfenced.lease = &lease;
            return self.inner.complete(&unfenced, hook);
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
        if self.bug == Bug::ReaperIdle {
            return Ok(Vec::new());
        }
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
    fn subscribe(&self, waker: Waker) -> Result<(), StoreError> {
        self.inner.subscribe(waker)
    }
}

struct BuggyHarness {
    memory: MemoryQueueHarness,
    store: Arc<Buggy>,
}

impl BuggyHarness {
    fn new(bug: Bug) -> Self {
        let memory = MemoryQueueHarness::new();
        let store = Arc::new(Buggy {
            inner: memory.store(),
            bug,
        });
        Self { memory, store }
    }
}

impl QueueHarness for BuggyHarness {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.store.clone()
    }
    fn advance(&self, by: Duration) {
        self.memory.advance(by);
    }
}

/// Runs `case` on a store with `bug` and returns its panic message.
fn failure_of(bug: Bug, case: fn(&dyn QueueHarness)) -> String {
    let harness = BuggyHarness::new(bug);
    let panic = catch_unwind(AssertUnwindSafe(|| case(&harness)))
        .expect_err("the suite must fail a store with this bug");
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn unfenced_completion_is_caught() {
    let message = failure_of(
        Bug::CompleteIgnoresFence,
        queue_conformance::completion_is_fenced,
    );
    assert!(
        message.contains("`completion_is_fenced`") && message.contains("wrong fence"),
        "{message}"
    );
}

#[test]
fn an_idle_reaper_is_caught() {
    let message = failure_of(
        Bug::ReaperIdle,
        queue_conformance::reaper_fences_out_zombies,
    );
    assert!(message.contains("`reaper_fences_out_zombies`"), "{message}");
}

#[test]
fn claims_out_of_order_are_caught() {
    let message = failure_of(
        Bug::ClaimsOutOfOrder,
        queue_conformance::claim_orders_by_priority_then_due_time_then_age,
    );
    assert!(message.contains("claim order"), "{message}");
}

#[test]
fn dropped_unique_keys_are_caught() {
    let message = failure_of(
        Bug::DropsUniqueKeys,
        queue_conformance::unique_key_returns_the_live_job,
    );
    assert!(message.contains("duplicate enqueue"), "{message}");
}

#[test]
fn a_dropped_guard_answer_is_caught() {
    let message = failure_of(
        Bug::DropsGuardAnswer,
        queue_conformance::guarded_claim_acquires_the_guard,
    );
    assert!(message.contains("expected Granted"), "{message}");
    let message = failure_of(
        Bug::DropsGuardAnswer,
        queue_conformance::guarded_duplicates_succeed_once,
    );
    assert!(
        message.contains("`guarded_duplicates_succeed_once`"),
        "{message}"
    );
}

/// The wrapper without a bug passes everything: the failures above come from the bugs alone.
#[test]
fn the_wrapper_without_a_bug_passes() {
    queue_conformance::run_all(&BuggyHarness::new(Bug::None));
}
