//! Completions written in groups ([`QueueStore::complete_many`], and the worker pool's
//! completer): each member answered on its own, a failing hook undoing only its own job, a
//! group lost around its commit leaving every job's outcome single, and a many-thread pool
//! completing every job once.

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use safejob_core::{
    Retention,
    queue::{
        ClaimRequest, Claimed, CompleteAs, Completed, Completion, Enqueued, ErrorKind, GroupMember,
        GuardFinish, Heartbeat, JobFilter, JobId, JobQuery, NewJob, OpResult, Progress, QueueLease,
        QueueState, QueueStore, QueuedJob, Reaped, Registry, Snapshot, Worker,
    },
    store::{
        Acquired, EffectsAborted, EffectsState, FenceCheck, JobState, Lease, LeaseStore, Renewed,
        StoreError, TxEffects,
    },
    workflow::{BatchId, BatchInfo, BatchMember, BatchState, NewBatch},
};
use serde_json::Value;

use super::{
    QueueHarness,
    fixtures::{Case, PAST_TTL, POOL_PATIENCE, TTL, count, error},
    guarded::guard_spec,
    pool::Counting,
    worker::Charge,
};

fn success<'a>(lease: &'a QueueLease, guard: &'a Lease) -> Completion<'a> {
    Completion {
        lease,
        outcome: CompleteAs::Succeeded,
        progress: None,
        guard: Some(GuardFinish::Succeeded {
            lease: guard,
            result: None,
            effects_ttl: TTL,
            has_effects: true,
            retention: Retention::Forever,
        }),
        batch: None,
    }
}

fn plain(lease: &QueueLease, outcome: CompleteAs) -> Completion<'_> {
    Completion {
        lease,
        outcome,
        progress: None,
        guard: None,
        batch: None,
    }
}

/// A group in which one completion is stale (its fence moved), one's guard is stale, and the
/// others apply (a guarded success, a retry, a dead letter) answers each member on its own, in
/// order, and a member that is not applied changes nothing, for itself or for the others.
///
/// Catches (seen failing on SQLite with the diesel store's group transaction committing a
/// member it should have undone, `Applied::Undo` treated as `Commit`): a job left `succeeded`
/// while its guard went stale; and a store whose one failing member rolls back its neighbours.
pub fn complete_many_answers_each_member(harness: &dyn QueueHarness) {
    let c = Case::new("complete_many_answers_each_member", harness);
    // The guard that goes stale: its lease expires and an outsider takes the key over.
    let taken = guard_spec(&c, "taken", 1);
    let (taken_id, taken_claim, taken_lease) = c.claim_guarded(taken);
    c.advance(PAST_TTL);
    let outsider = c.acquire_outside(taken);
    ensure!(
        c,
        matches!(outsider, Acquired::Granted(_)),
        "takeover of the expired guard: {outsider:?}"
    );
    // The stale job: claimed, given back, claimed again; the first lease is stale.
    let stale_id = c.enqueue(c.new_job("stale"));
    let first = c.claim_one();
    let snooze = CompleteAs::Snooze {
        delay: Duration::ZERO,
        error: None,
    };
    ensure!(
        c,
        c.complete(&first.lease, snooze) == Completed::Applied,
        "giving the job back"
    );
    let second = c.claim_one();
    ensure!(
        c,
        second.job.id == stale_id && first.job.id == stale_id,
        "the same job claimed twice"
    );
    let paid = guard_spec(&c, "paid", 1);
    let (paid_id, paid_claim, paid_lease) = c.claim_guarded(paid);
    let retry_id = c.enqueue(c.new_job("retry"));
    let retry = c.claim_one();
    let dead_id = c.enqueue(c.new_job("dead"));
    let dead = c.claim_one();
    ensure!(
        c,
        retry.job.id == retry_id && dead.job.id == dead_id,
        "claims in order"
    );
    let mut group = vec![
        GroupMember::new(success(&paid_claim.lease, &paid_lease)),
        GroupMember::new(plain(&first.lease, CompleteAs::Succeeded)),
        GroupMember::new(plain(
            &retry.lease,
            CompleteAs::Retry {
                delay: Duration::from_secs(60),
                error: error("again"),
            },
        )),
        GroupMember::new(success(&taken_claim.lease, &taken_lease)),
        GroupMember::new(plain(
            &dead.lease,
            CompleteAs::Dead {
                error: error("gone"),
            },
        )),
    ];
    let answers: Vec<Result<Completed, String>> = c
        .store
        .complete_many(&mut group)
        .into_iter()
        .map(|a| a.map_err(|e| e.to_string()))
        .collect();
    let want = vec![
        Ok(Completed::Applied),
        Ok(Completed::Stale),
        Ok(Completed::Applied),
        Ok(Completed::GuardStale),
        Ok(Completed::Applied),
    ];
    ensure!(c, answers == want, "answers {answers:?}, expected {want:?}");
    let row = c.get(paid_id);
    let guard_row = c.ok("guards().get", c.store.guards().get(&paid.digest));
    ensure!(
        c,
        row.state == QueueState::Succeeded
            && guard_row
                .as_ref()
                .is_some_and(|g| g.state == JobState::Succeeded
                    && g.fence == paid_lease.fence
                    && g.effects == EffectsState::Pending),
        "the applied guarded success: {row:?} / {guard_row:?}"
    );
    let row = c.get(stale_id);
    ensure!(
        c,
        row.state == QueueState::Running && row.fence == second.lease.fence,
        "a stale member changes nothing: {row:?}"
    );
    let row = c.get(retry_id);
    ensure!(
        c,
        row.state == QueueState::Retrying
            && row.errors.last().map(|e| e.kind) == Some(ErrorKind::Retryable),
        "the retry: {row:?}"
    );
    let row = c.get(taken_id);
    let guard_row = c.ok("guards().get", c.store.guards().get(&taken.digest));
    ensure!(
        c,
        row.state == QueueState::Running && row.fence == taken_claim.lease.fence,
        "a member whose guard is stale leaves its job running: {row:?}"
    );
    ensure!(
        c,
        guard_row.as_ref().is_some_and(|g| g.state == JobState::Running
            && g.owner.as_deref() == Some("outsider")),
        "... and the outsider's guard untouched: {guard_row:?}"
    );
    let row = c.get(dead_id);
    ensure!(
        c,
        row.state == QueueState::Dead && row.finished_at.is_some(),
        "the dead letter: {row:?}"
    );
}

/// A transactional effects hook that fails in the middle of a group rolls back only its own
/// job: the members before and after it (hooked or not) apply, its job stays running under its
/// lease with its guard held, and every hook ran once.
///
/// Catches (seen failing on SQLite with the hooked member's savepoint released instead of
/// rolled back): a failing hook whose member's writes commit with the group; and a store that
/// rolls the whole group back for one hook.
pub fn a_failing_hook_rolls_back_only_its_member(harness: &dyn QueueHarness) {
    let c = Case::new("a_failing_hook_rolls_back_only_its_member", harness);
    let specs = [
        guard_spec(&c, "h1", 1),
        guard_spec(&c, "h2", 1),
        guard_spec(&c, "h3", 1),
    ];
    let claims: Vec<(JobId, Claimed, Lease)> = specs.iter().map(|s| c.claim_guarded(*s)).collect();
    let plain_id = c.enqueue(c.new_job("plain"));
    let plain_claim = c.claim_one();
    ensure!(c, plain_claim.job.id == plain_id, "claim order");
    let ran = [Cell::new(0u32), Cell::new(0), Cell::new(0)];
    let mut first = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
        ran[0].set(ran[0].get() + 1);
        Ok(())
    };
    let mut failing = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
        ran[1].set(ran[1].get() + 1);
        Err(EffectsAborted)
    };
    let mut last = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
        ran[2].set(ran[2].get() + 1);
        Ok(())
    };
    let hooks: [&mut TxEffects<'_>; 3] = [&mut first, &mut failing, &mut last];
    let mut group: Vec<GroupMember<'_, '_>> = Vec::new();
    let mut hooks = hooks.into_iter();
    for (i, (_, claim, lease)) in claims.iter().enumerate() {
        if i == 1 {
            group.push(GroupMember::new(plain(
                &plain_claim.lease,
                CompleteAs::Succeeded,
            )));
        }
        group.push(GroupMember {
            completion: success(&claim.lease, lease),
            hook: hooks.next(),
        });
    }
    let answers: Vec<Result<Completed, String>> = c
        .store
        .complete_many(&mut group)
        .into_iter()
        .map(|a| a.map_err(|e| e.to_string()))
        .collect();
    drop(group);
    let want = vec![
        Ok(Completed::Applied),
        Ok(Completed::Applied),
        Ok(Completed::EffectsAborted),
        Ok(Completed::Applied),
    ];
    ensure!(c, answers == want, "answers {answers:?}, expected {want:?}");
    let runs: Vec<u32> = ran.iter().map(Cell::get).collect();
    ensure!(c, runs == [1, 1, 1], "each hook runs once: {runs:?}");
    for (i, ((id, claim, lease), spec)) in claims.iter().zip(&specs).enumerate() {
        let row = c.get(*id);
        let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
        if i == 1 {
            ensure!(
                c,
                row.state == QueueState::Running && row.fence == claim.lease.fence,
                "the aborted member's job must still run under its lease: {row:?}"
            );
            ensure!(
                c,
                guard_row
                    .as_ref()
                    .is_some_and(|g| g.state == JobState::Running && g.fence == lease.fence),
                "the aborted member's guard must be untouched: {guard_row:?}"
            );
        } else {
            ensure!(
                c,
                row.state == QueueState::Succeeded
                    && guard_row.as_ref().is_some_and(
                        |g| g.state == JobState::Succeeded && g.effects == EffectsState::Done
                    ),
                "member {i} (hook ok) applies with effects done: {row:?} / {guard_row:?}"
            );
        }
    }
    let row = c.get(plain_id);
    ensure!(
        c,
        row.state == QueueState::Succeeded,
        "the unhooked member applies: {row:?}"
    );
}

/// How [`LosesGroups`] fails its first groups.
const LOST_BEFORE_COMMIT: u32 = 0;
const LOST_AFTER_COMMIT: u32 = 1;
const UNANSWERED_AFTER_COMMIT: u32 = 2;

/// A store whose first completion groups that finalize a guard are lost: the first before it
/// is written (its writer panics), the second after it committed (its writer panics), the third
/// after it committed with its answers lost. Everything else goes to the store under test.
struct LosesGroups {
    inner: Arc<dyn QueueStore>,
    groups: AtomicU32,
}

impl QueueStore for LosesGroups {
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
        self.inner.complete(c, hook)
    }
    fn complete_many(
        &self,
        group: &mut [GroupMember<'_, '_>],
    ) -> Vec<Result<Completed, StoreError>> {
        // Only groups finalizing a guard count, so each lost group holds a key's success.
        let finalizes = group
            .iter()
            .any(|m| matches!(m.completion.guard, Some(GuardFinish::Succeeded { .. })));
        if !finalizes {
            return self.inner.complete_many(group);
        }
        match self.groups.fetch_add(1, Ordering::SeqCst) {
            LOST_BEFORE_COMMIT => panic!("conformance: the completer crashed before its commit"),
            LOST_AFTER_COMMIT => {
                let _ = self.inner.complete_many(group);
                panic!("conformance: the completer crashed after its commit")
            }
            UNANSWERED_AFTER_COMMIT => {
                let _ = self.inner.complete_many(group);
                Vec::new()
            }
            _ => self.inner.complete_many(group),
        }
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
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot()
    }
    fn finished_by_minute(
        &self,
        window: Duration,
    ) -> Result<Vec<safejob_core::queue::FinishedMinute>, StoreError> {
        self.inner.finished_by_minute(window)
    }
    fn set_result(&self, lease: &QueueLease, result: &Value) -> Result<FenceCheck, StoreError> {
        self.inner.set_result(lease, result)
    }
    fn insert_batch(&self, batch: &NewBatch) -> Result<BatchId, StoreError> {
        self.inner.insert_batch(batch)
    }
    fn batch(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError> {
        self.inner.batch(id)
    }
    fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError> {
        self.inner.batch_members(id)
    }
    fn list_batches(
        &self,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError> {
        self.inner.list_batches(state, limit)
    }
    fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError> {
        self.inner.cancel_batch(id)
    }
    fn subscribe(&self, waker: safejob_core::queue::Waker) -> Result<(), StoreError> {
        self.inner.subscribe(waker)
    }
}

/// Waits, at most [`POOL_PATIENCE`], until every job in `ids` is `succeeded`.
fn all_succeed(c: &Case<'_>, ids: &[JobId]) -> bool {
    let started = Instant::now();
    while started.elapsed() < POOL_PATIENCE {
        if ids
            .iter()
            .all(|id| c.get(*id).state == QueueState::Succeeded)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Guarded and plain jobs, enqueued in one batch, alternating.
fn mixed_jobs(c: &Case<'_>, pairs: usize) -> (Vec<JobId>, Vec<String>, Vec<String>) {
    let (mut charges, mut plains, mut jobs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let tag = format!("{}:charge{i}", c.prefix);
        let charge = Charge::new(tag.clone(), 100 + i as u64);
        jobs.push(
            NewJob::guarded(&charge, &c.options())
                .unwrap_or_else(|e| c.fail(format_args!("NewJob::guarded: {e}"))),
        );
        charges.push(tag);
        let tag = format!("{}:plain{i}", c.prefix);
        let mut job = NewJob::of(&Counting::new(tag.clone()), &c.options())
            .unwrap_or_else(|e| c.fail(format_args!("NewJob::of: {e}")));
        // Running it twice is harmless (it counts): the reaper retries it rather than parks it.
        job.idempotent = true;
        jobs.push(job);
        plains.push(tag);
    }
    let ids = c
        .ok("enqueue_many", c.store.enqueue_many(&jobs))
        .iter()
        .map(Enqueued::id)
        .collect();
    (ids, charges, plains)
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register::<Counting>();
    registry.register_guarded::<Charge>();
    registry
}

/// A pool whose completion groups are lost around their commit: before it (the writer
/// panics), after it (the writer panics), and after it with the answers lost. The workers see
/// an error for each, and then the lease, the reaper and the fences keep every job's outcome
/// single: every job ends `succeeded`, every guarded key's effects run exactly once (a key
/// whose group committed settles its ambiguous finalize as committed; one whose group did not
/// is retried), and every guard row is `succeeded`.
///
/// Catches (seen failing, effects `[2, 1, …]`, with the pool's completer answering `Applied` to
/// a group's members when its writer failed, the leader's caught panic included): a completion
/// acknowledged, and its after-commit effects run, though its group never committed — the job
/// is then run again after its lease expires, and its effects twice.
pub fn pool_group_lost_around_its_commit_leaves_each_outcome_single(harness: &dyn QueueHarness) {
    let c = Case::new(
        "pool_group_lost_around_its_commit_leaves_each_outcome_single",
        harness,
    );
    let (ids, charges, plains) = mixed_jobs(&c, 12);
    let store = Arc::new(LosesGroups {
        inner: c.store.clone(),
        groups: AtomicU32::new(0),
    });
    let pool = Worker::builder(store.clone(), registry())
        .id(format!("{}:pool", c.prefix))
        .queues([c.queue.clone()])
        .concurrency(4)
        .lease_ttl(TTL)
        .poll_interval(Duration::from_millis(10))
        .maintenance_interval(Duration::from_millis(10))
        .batch_completions(true)
        .start()
        .unwrap_or_else(|e| c.fail(format_args!("pool start: {e}")));
    ensure!(
        c,
        pool.wait_idle(POOL_PATIENCE),
        "the pool did not become idle"
    );
    ensure!(
        c,
        store.groups.load(Ordering::SeqCst) > UNANSWERED_AFTER_COMMIT,
        "every kind of lost group was exercised"
    );
    // Jobs whose group never committed are still running under their leases: let them expire,
    // and the pool's reaper gives them back.
    c.advance(PAST_TTL);
    let done = all_succeed(&c, &ids);
    pool.shutdown(Duration::from_secs(5));
    ensure!(
        c,
        done,
        "not every job succeeded: {:?}",
        ids.iter().map(|id| c.get(*id).state).collect::<Vec<_>>()
    );
    let effects: Vec<u32> = charges
        .iter()
        .map(|t| count(&format!("{t}:effects")))
        .collect();
    ensure!(
        c,
        effects.iter().all(|n| *n == 1),
        "each guarded key's effects run exactly once: {effects:?}"
    );
    for tag in &charges {
        let key = safejob_core::IdempotencyKey::from_parts(["conformance-charge", tag])
            .unwrap_or_else(|e| c.fail(format_args!("key: {e}")));
        let row = c.ok("guards().get", c.store.guards().get(key.digest()));
        ensure!(
            c,
            row.as_ref()
                .is_some_and(|r| r.state == JobState::Succeeded && r.effects == EffectsState::Done),
            "the guard of {tag}: {row:?}"
        );
    }
    let runs: Vec<u32> = plains.iter().map(|t| count(t)).collect();
    ensure!(
        c,
        runs.iter().all(|n| (1..=2).contains(n)),
        "a plain job runs once, or twice when its first completion was lost before its commit: {runs:?}"
    );
}

/// A many-thread pool with grouped completions completes every job exactly once: every plain
/// job ran once, every guarded key performed once with its effects once, and every completion
/// went through the completer.
///
/// Catches (seen failing with the diesel store's group transaction answering `Applied` for
/// members after the first without writing them): a completer or store that acknowledges
/// completions it did not write.
pub fn pool_with_grouped_completions_completes_each_job_once(harness: &dyn QueueHarness) {
    let c = Case::new(
        "pool_with_grouped_completions_completes_each_job_once",
        harness,
    );
    let (ids, charges, plains) = mixed_jobs(&c, 60);
    let pool = Worker::builder(c.store.clone(), registry())
        .id(format!("{}:pool", c.prefix))
        .queues([c.queue.clone()])
        .concurrency(8)
        .lease_ttl(TTL)
        .poll_interval(Duration::from_millis(10))
        .batch_completions(true)
        .completion_group_size(16)
        .start()
        .unwrap_or_else(|e| c.fail(format_args!("pool start: {e}")));
    let done = all_succeed(&c, &ids);
    let idle = pool.wait_idle(POOL_PATIENCE);
    let groups = pool.completion_groups();
    pool.shutdown(Duration::from_secs(5));
    ensure!(c, done && idle, "the pool did not complete its 120 jobs");
    let runs: Vec<u32> = plains.iter().map(|t| count(t)).collect();
    ensure!(
        c,
        runs.iter().all(|n| *n == 1),
        "every plain job runs once: {runs:?}"
    );
    let charged: Vec<(u32, u32)> = charges
        .iter()
        .map(|t| {
            (
                count(&format!("{t}:perform")),
                count(&format!("{t}:effects")),
            )
        })
        .collect();
    ensure!(
        c,
        charged.iter().all(|p| *p == (1, 1)),
        "every guarded key performs once and its effects run once: {charged:?}"
    );
    ensure!(
        c,
        groups.is_some_and(|g| g.items >= ids.len() as u64 && g.largest <= 16),
        "every completion goes through the completer, in groups of at most 16: {groups:?}"
    );
}
