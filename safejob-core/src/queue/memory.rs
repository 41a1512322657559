//! A thread-safe in-memory [`QueueStore`], for tests and single-process use.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{
    Clock, MemoryStore, SystemClock,
    history::{HistoryEntry, HistoryLog, HistoryStore, Subject},
    queue::{
        ClaimRequest, Claimed, CompleteAs, Completed, Completion, Enqueued, FinishedMinute,
        GuardFinish, Heartbeat, JobFilter, JobId, JobQuery, KindStats, MAX_ERROR_HISTORY, NewJob,
        OpResult, QueueLease, QueueState, QueueStore, QueuedJob, Reaped, RecordedError, RunAt,
        Snapshot, StateCount, Waker, WorkerInfo,
        store::{AttemptError, ErrorKind, Progress},
    },
    store::{
        AcquireRequest, FenceCheck, Finalized, Lease, LeaseStore, Renewed, StoreError, TxEffects,
    },
    workflow::{BatchId, BatchInfo, BatchMember, BatchState, NewBatch, memory::BatchRow},
};
use serde_json::Value;

/// Queued jobs in a map behind one mutex, next to a [`MemoryStore`] for the guards.
///
/// Every primitive holds the queue's lock for its whole duration, which makes it atomic; the
/// guard half of a claim or a completion runs under that lock too (the queue lock is always taken
/// before the guard store's, never the other way round), so claim + acquire and completion +
/// finalize are each one step, as in the SQL backends. Not durable: use it in tests (with
/// `safejob_test_kit::ManualClock`) and for work that may be lost with the process.
///
/// ```
/// use safejob_core::queue::{MemoryQueue, NewJob, QueueStore, RunAt};
///
/// let queue = MemoryQueue::new();
/// let job = NewJob {
///     kind: "hello".into(),
///     queue: "default".into(),
///     payload: serde_json::json!({"to": "world"}),
///     metadata: serde_json::Value::Null,
///     priority: 0,
///     run_at: RunAt::Now,
///     max_attempts: 3,
///     idempotent: true,
///     unique_key: None,
///     guard: None,
/// };
/// assert!(!queue.enqueue(&job)?.is_duplicate());
/// # Ok::<(), safejob_core::StoreError>(())
/// ```
#[derive(Debug)]
pub struct MemoryQueue {
    inner: Mutex<Inner>,
    guards: Arc<MemoryStore>,
    clock: Arc<dyn Clock>,
    wakers: Mutex<Vec<Waker>>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) jobs: BTreeMap<JobId, QueuedJob>,
    next_id: i64,
    workers: BTreeMap<String, WorkerRow>,
    /// The schedules' rows (`crate::schedule`), by name.
    pub(crate) schedules: BTreeMap<String, crate::schedule::ScheduleRow>,
    /// The audit ledger of jobs and schedules (`crate::history`), under the same lock.
    pub(crate) history: HistoryLog,
    /// Batches (`crate::workflow`, their code in `workflow/memory.rs`), by id.
    pub(crate) batches: BTreeMap<BatchId, BatchRow>,
    pub(crate) next_batch: i64,
    /// Results stored with [`QueueStore::set_result`].
    pub(crate) results: BTreeMap<JobId, Value>,
    /// The action log's rows (`crate::action`), by id.
    pub(crate) actions: BTreeMap<crate::action::ActionId, crate::action::ActionRecord>,
    pub(crate) next_action: i64,
}

#[derive(Debug)]
struct WorkerRow {
    queues: Vec<String>,
    concurrency: u32,
    last_heartbeat: DateTime<Utc>,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// A queue on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A queue, and its guard store, on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_guards(Arc::new(MemoryStore::with_clock(clock.clone())), clock)
    }

    /// A queue whose guards live in `guards` (share it with a [`Runner`](crate::Runner) to guard
    /// the same keys inside and outside the queue). `clock` must be the one `guards` reads.
    pub fn with_guards(guards: Arc<MemoryStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            guards,
            clock,
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// The guard store.
    pub fn guard_store(&self) -> &Arc<MemoryStore> {
        &self.guards
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every primitive computes first and writes last, so a panic cannot leave a row half
        // written: a poisoned map is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn wake(&self) {
        for waker in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            waker.wake();
        }
    }
}

/// `now + by`, or an error for a duration out of range (the memory stores' one addition).
pub(crate) fn add(now: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, StoreError> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::backend(format!("duration {by:?} is out of range")))
}

/// Each job with the instant it becomes due, resolved against `now`.
pub(crate) fn due_times(
    now: DateTime<Utc>,
    jobs: &[NewJob],
) -> Result<Vec<(&NewJob, DateTime<Utc>)>, StoreError> {
    jobs.iter()
        .map(|job| {
            let run_at = match job.run_at {
                RunAt::Now => now,
                RunAt::At(at) => at,
                RunAt::After(delay) => add(now, delay)?,
            };
            Ok((job, run_at))
        })
        .collect()
}

pub(crate) fn record(job: &mut QueuedJob, error: &AttemptError, now: DateTime<Utc>) {
    job.errors.push(RecordedError {
        attempt: job.attempts,
        at: now,
        kind: error.kind,
        message: error.message.clone(),
    });
    let excess = job.errors.len().saturating_sub(MAX_ERROR_HISTORY);
    job.errors.drain(..excess);
}

fn lease_of(job: &QueuedJob) -> QueueLease {
    QueueLease {
        id: job.id,
        fence: job.fence,
        attempt: job.attempts,
        owner: job.owner.clone().unwrap_or_default(),
        expires_at: job.lease_expires_at.unwrap_or(job.updated_at),
    }
}

impl Inner {
    /// Inserts `rows` (each job with its resolved due time) under the lock: the one enqueue of
    /// [`QueueStore::enqueue_many`] and of a schedule's fire.
    pub(crate) fn insert(
        &mut self,
        now: DateTime<Utc>,
        rows: &[(&NewJob, DateTime<Utc>)],
    ) -> Vec<Enqueued> {
        let mut answers = Vec::with_capacity(rows.len());
        for &(job, run_at) in rows {
            if let Some(unique) = &job.unique_key
                && let Some(live) = self.live_holder(unique, None)
            {
                answers.push(Enqueued::Duplicate {
                    id: live.id,
                    state: live.state,
                });
                continue;
            }
            self.next_id += 1;
            let id = JobId(self.next_id);
            let state = if run_at > now {
                QueueState::Scheduled
            } else {
                QueueState::Pending
            };
            self.jobs.insert(
                id,
                QueuedJob {
                    id,
                    kind: job.kind.clone(),
                    queue: job.queue.clone(),
                    payload: job.payload.clone(),
                    metadata: job.metadata.clone(),
                    priority: job.priority,
                    state,
                    run_at,
                    attempts: 0,
                    max_attempts: job.max_attempts.max(1),
                    fence: 0,
                    owner: None,
                    lease_expires_at: None,
                    attempted_at: None,
                    idempotent: job.idempotent || job.guard.is_some(),
                    unique_key: job.unique_key,
                    guard: job.guard,
                    progress: None,
                    errors: Vec::new(),
                    created_at: now,
                    updated_at: now,
                    finished_at: None,
                    batch: None,
                },
            );
            answers.push(Enqueued::Inserted { id, state });
            self.log_job(None, id);
        }
        answers
    }

    /// Appends job `id`'s transition from `before` to the ledger (see `crate::history`).
    pub(crate) fn log_job(&mut self, before: Option<&QueuedJob>, id: JobId) {
        if let Some(after) = self.jobs.get(&id) {
            self.history.job(before, after);
        }
    }

    fn live_holder(&self, unique: &crate::KeyDigest, except: Option<JobId>) -> Option<&QueuedJob> {
        self.jobs.values().find(|j| {
            j.state.is_live() && j.unique_key.as_ref() == Some(unique) && Some(j.id) != except
        })
    }

    fn fenced(&mut self, lease: &QueueLease) -> Option<&mut QueuedJob> {
        self.jobs
            .get_mut(&lease.id)
            .filter(|j| j.state == QueueState::Running && j.fence == lease.fence)
    }
}

impl QueueStore for MemoryQueue {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.clock.now())
    }

    fn guards(&self) -> &dyn LeaseStore {
        &*self.guards
    }

    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        let now = self.clock.now();
        let rows = due_times(now, jobs)?;
        let answers = self.lock().insert(now, &rows);
        self.wake();
        Ok(answers)
    }

    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let now = self.clock.now();
        let until = add(now, req.ttl)?;
        let mut inner = self.lock();
        let mut due: Vec<(i16, DateTime<Utc>, JobId)> = inner
            .jobs
            .values()
            .filter(|j| j.state.is_waiting() && j.run_at <= now && req.queues.contains(&j.queue))
            .map(|j| (j.priority, j.run_at, j.id))
            .collect();
        due.sort_unstable();
        due.truncate(req.limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, _, id) in due {
            let Some(job) = inner.jobs.get_mut(&id) else {
                continue;
            };
            // The guard's acquire first: it is the only part that can fail, and nothing of the
            // job has been written yet.
            let guard = match job.guard {
                Some(spec) => Some(self.guards.acquire(&AcquireRequest {
                    digest: spec.digest,
                    fingerprint: spec.fingerprint,
                    owner: req.worker,
                    ttl: req.ttl,
                })?),
                None => None,
            };
            let before = job.clone();
            job.state = QueueState::Running;
            job.fence += 1;
            job.attempts += 1;
            job.owner = Some(req.worker.to_owned());
            job.lease_expires_at = Some(until);
            job.attempted_at = Some(now);
            job.updated_at = now;
            claimed.push(Claimed {
                lease: lease_of(job),
                job: job.clone(),
                guard,
            });
            inner.log_job(Some(&before), id);
        }
        Ok(claimed)
    }

    fn renew(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        let now = self.clock.now();
        let until = add(now, ttl)?;
        let mut inner = self.lock();
        let Some(job) = inner.fenced(lease) else {
            return Ok(Renewed::Stale);
        };
        if let Some(guard) = guard {
            // Best effort by contract: a stale guard shows at completion.
            self.guards.renew(guard, ttl)?;
        }
        job.lease_expires_at = Some(until);
        job.updated_at = now;
        Ok(Renewed::Extended(until))
    }

    fn progress(&self, lease: &QueueLease, progress: &Progress) -> Result<FenceCheck, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        Ok(match inner.fenced(lease) {
            Some(job) => {
                job.progress = Some(progress.clone());
                job.updated_at = now;
                FenceCheck::Applied
            }
            None => FenceCheck::Stale,
        })
    }

    fn complete(
        &self,
        c: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        let now = self.clock.now();
        let run_at = match &c.outcome {
            CompleteAs::Retry { delay, .. } | CompleteAs::Snooze { delay, .. } => {
                Some(add(now, *delay)?)
            }
            _ => None,
        };
        let mut inner = self.lock();
        if inner.fenced(c.lease).is_none() {
            return Ok(Completed::Stale);
        }
        if let Some(guard) = c.guard {
            let applied = match guard {
                GuardFinish::Succeeded {
                    lease,
                    result,
                    effects_ttl,
                    has_effects,
                    retention,
                } => {
                    let finalized = if has_effects {
                        self.guards.finalize_succeeded(
                            lease,
                            result,
                            effects_ttl,
                            retention,
                            hook,
                        )?
                    } else {
                        self.guards.finalize_succeeded_without_effects(
                            lease,
                            result,
                            effects_ttl,
                            retention,
                        )?
                    };
                    match finalized {
                        Finalized::Committed => true,
                        Finalized::Stale => false,
                        Finalized::EffectsAborted => return Ok(Completed::EffectsAborted),
                    }
                }
                GuardFinish::Failed {
                    lease,
                    failure,
                    retention,
                } => self.guards.finalize_failed(lease, failure, retention)? == FenceCheck::Applied,
                GuardFinish::Release { lease, error } => {
                    self.guards.release(lease, error)? == FenceCheck::Applied
                }
            };
            if !applied {
                return Ok(Completed::GuardStale);
            }
        }
        let Some(job) = inner.fenced(c.lease) else {
            return Ok(Completed::Stale);
        };
        let before = job.clone();
        job.owner = None;
        job.lease_expires_at = None;
        job.updated_at = now;
        if let Some(progress) = c.progress {
            job.progress = Some(progress.clone());
        }
        match &c.outcome {
            CompleteAs::Succeeded => {
                job.state = QueueState::Succeeded;
                job.finished_at = Some(now);
            }
            CompleteAs::Retry { error, .. } => {
                record(job, error, now);
                job.state = QueueState::Retrying;
                job.run_at = run_at.unwrap_or(now);
            }
            CompleteAs::Snooze { error, .. } => {
                if let Some(error) = error {
                    record(job, error, now);
                }
                job.attempts = job.attempts.saturating_sub(1);
                let at = run_at.unwrap_or(now);
                job.state = if at > now {
                    QueueState::Scheduled
                } else {
                    QueueState::Pending
                };
                job.run_at = at;
            }
            CompleteAs::Dead { error } => {
                record(job, error, now);
                job.state = QueueState::Dead;
                job.finished_at = Some(now);
            }
            CompleteAs::Cancelled { reason } => {
                record(
                    job,
                    &AttemptError::new(ErrorKind::Cancelled, reason.clone()),
                    now,
                );
                job.state = QueueState::Cancelled;
                job.finished_at = Some(now);
            }
        }
        let finished = job.state.is_finished();
        inner.log_job(Some(&before), c.lease.id);
        if finished && let Some(batch) = c.batch {
            inner.settle(batch, now);
        }
        Ok(Completed::Applied)
    }

    fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.lock().workers.insert(
            hb.worker.to_owned(),
            WorkerRow {
                queues: hb.queues.to_vec(),
                concurrency: hb.concurrency,
                last_heartbeat: now,
            },
        );
        Ok(())
    }

    fn remove_worker(&self, worker: &str) -> Result<(), StoreError> {
        self.lock().workers.remove(worker);
        Ok(())
    }

    fn reap(&self, limit: usize) -> Result<Vec<Reaped>, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut reaped = Vec::new();
        for job in inner.jobs.values_mut() {
            if reaped.len() >= limit {
                break;
            }
            if job.state != QueueState::Running || job.lease_expires_at.is_some_and(|t| t > now) {
                continue;
            }
            let before = job.clone();
            job.fence += 1;
            let error = AttemptError::new(
                ErrorKind::LeaseExpired,
                format!(
                    "lease of worker {} expired",
                    job.owner.as_deref().unwrap_or("?")
                ),
            );
            record(job, &error, now);
            job.owner = None;
            job.lease_expires_at = None;
            job.updated_at = now;
            job.state = if !job.idempotent {
                QueueState::Parked
            } else if job.attempts >= job.max_attempts {
                job.finished_at = Some(now);
                QueueState::Dead
            } else {
                job.run_at = now;
                QueueState::Retrying
            };
            reaped.push(Reaped {
                id: job.id,
                kind: job.kind.clone(),
                fence: job.fence,
                state: job.state,
            });
            inner.history.job(Some(&before), job);
        }
        for r in &reaped {
            if r.state.is_finished() {
                inner.settle_member(r.id, now);
            }
        }
        Ok(reaped)
    }

    fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError> {
        Ok(self.lock().jobs.get(&id).cloned())
    }

    fn list(&self, query: &JobQuery) -> Result<Vec<QueuedJob>, StoreError> {
        let inner = self.lock();
        let start = query
            .after
            .map_or(JobId(i64::MIN), |a| JobId(a.0.saturating_add(1)));
        Ok(inner
            .jobs
            .range(start..)
            .map(|(_, j)| j)
            .filter(|j| query.filter.matches(j))
            .take(query.limit)
            .cloned()
            .collect())
    }

    fn retry(&self, id: JobId) -> Result<OpResult, StoreError> {
        let now = self.clock.now();
        let result = retry_one(&mut self.lock(), id, now);
        if result == OpResult::Applied {
            self.wake();
        }
        Ok(result)
    }

    fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let filter = with_default_state(filter);
        let mut inner = self.lock();
        let ids: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|j| filter.matches(j))
            .map(|j| j.id)
            .collect();
        let n = ids
            .into_iter()
            .filter(|id| retry_one(&mut inner, *id, now) == OpResult::Applied)
            .count() as u64;
        drop(inner);
        if n > 0 {
            self.wake();
        }
        Ok(n)
    }

    fn cancel(&self, id: JobId) -> Result<OpResult, StoreError> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(&id) else {
            return Ok(OpResult::NotFound);
        };
        if !(job.state.is_waiting()
            || job.state == QueueState::Parked
            || job.state == QueueState::Blocked)
        {
            return Ok(OpResult::WrongState(job.state));
        }
        let before = job.clone();
        job.state = QueueState::Cancelled;
        job.finished_at = Some(now);
        job.updated_at = now;
        inner.log_job(Some(&before), id);
        inner.settle_member(id, now);
        Ok(OpResult::Applied)
    }

    fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        let filter = with_default_state(filter);
        let mut inner = self.lock();
        let gone: Vec<Subject> = inner
            .jobs
            .values()
            .filter(|j| j.state.is_finished() && filter.matches(j))
            .map(|j| Subject::Job(j.id))
            .collect();
        inner
            .jobs
            .retain(|_, j| !(j.state.is_finished() && filter.matches(j)));
        // The purged jobs' history goes with them, under the same lock.
        inner.history.forget(&gone);
        Ok(gone.len() as u64)
    }

    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| now.checked_sub_signed(r))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut inner = self.lock();
        let old: Vec<JobId> = inner
            .jobs
            .values()
            .filter(|j| j.state.is_finished() && j.finished_at.is_some_and(|t| t < cutoff))
            .map(|j| j.id)
            .take(limit)
            .collect();
        for id in &old {
            inner.jobs.remove(id);
            inner.results.remove(id);
        }
        // The pruned jobs' history goes with them, under the same lock.
        inner
            .history
            .forget(&old.iter().copied().map(Subject::Job).collect::<Vec<_>>());
        inner.forget_ended_batches();
        Ok(old.len() as u64)
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let now = self.clock.now();
        let inner = self.lock();
        let mut counts: BTreeMap<(String, String, QueueState), u64> = BTreeMap::new();
        let mut finished: BTreeMap<String, (u64, Vec<Duration>)> = BTreeMap::new();
        let mut in_flight: BTreeMap<&str, Vec<JobId>> = BTreeMap::new();
        let mut oldest_due: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for j in inner.jobs.values() {
            *counts
                .entry((j.queue.clone(), j.kind.clone(), j.state))
                .or_insert(0) += 1;
            match j.state {
                QueueState::Succeeded => {
                    let took = match (j.attempted_at, j.finished_at) {
                        (Some(a), Some(f)) => (f - a).to_std().unwrap_or_default(),
                        _ => Duration::ZERO,
                    };
                    finished.entry(j.kind.clone()).or_default().1.push(took);
                }
                QueueState::Dead => finished.entry(j.kind.clone()).or_default().0 += 1,
                QueueState::Running => {
                    if let Some(owner) = &j.owner {
                        in_flight.entry(owner).or_default().push(j.id);
                    }
                }
                s if s.is_waiting() && j.run_at <= now => {
                    let due = oldest_due.entry(&j.queue).or_insert(j.run_at);
                    *due = (*due).min(j.run_at);
                }
                _ => {}
            }
        }
        Ok(Snapshot {
            taken_at: now,
            counts: counts
                .into_iter()
                .map(|((queue, kind, state), count)| StateCount {
                    queue,
                    kind,
                    state,
                    count,
                })
                .collect(),
            kinds: finished
                .into_iter()
                .map(|(kind, (dead, durations))| KindStats::from_finished(kind, dead, durations))
                .collect(),
            workers: inner
                .workers
                .iter()
                .map(|(id, w)| WorkerInfo {
                    id: id.clone(),
                    queues: w.queues.clone(),
                    concurrency: w.concurrency,
                    last_heartbeat: w.last_heartbeat,
                    in_flight: in_flight.get(id.as_str()).cloned().unwrap_or_default(),
                })
                .collect(),
            oldest_due_age: oldest_due
                .values()
                .min()
                .map(|t| (now - *t).to_std().unwrap_or_default()),
            oldest_due_by_queue: oldest_due
                .into_iter()
                .map(|(queue, t)| (queue.to_owned(), (now - t).to_std().unwrap_or_default()))
                .collect(),
        })
    }

    fn finished_by_minute(&self, window: Duration) -> Result<Vec<FinishedMinute>, StoreError> {
        let now = self.clock.now();
        let since = chrono::Duration::from_std(window)
            .ok()
            .and_then(|w| now.checked_sub_signed(w))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let inner = self.lock();
        // Per minute (µs since the epoch): succeeded, dead, total succeeded duration.
        let mut minutes: BTreeMap<i64, (u64, u64, Duration)> = BTreeMap::new();
        for j in inner.jobs.values() {
            let Some(at) = j.finished_at.filter(|at| *at >= since) else {
                continue;
            };
            let us = at.timestamp_micros();
            let m = minutes.entry(us - us.rem_euclid(60_000_000)).or_default();
            match j.state {
                QueueState::Succeeded => {
                    m.0 += 1;
                    m.2 += j
                        .attempted_at
                        .and_then(|a| (at - a).to_std().ok())
                        .unwrap_or_default();
                }
                QueueState::Dead => m.1 += 1,
                _ => {}
            }
        }
        Ok(minutes
            .into_iter()
            .filter(|(_, (ok, dead, _))| ok + dead > 0)
            .filter_map(|(us, (succeeded, dead, total))| {
                Some(FinishedMinute {
                    minute: DateTime::from_timestamp_micros(us)?,
                    succeeded,
                    dead,
                    mean: u32::try_from(succeeded)
                        .ok()
                        .filter(|n| *n > 0)
                        .map_or(Duration::ZERO, |n| total / n),
                })
            })
            .collect())
    }

    fn set_result(&self, lease: &QueueLease, result: &Value) -> Result<FenceCheck, StoreError> {
        let mut inner = self.lock();
        if inner.fenced(lease).is_none() {
            return Ok(FenceCheck::Stale);
        }
        inner.results.insert(lease.id, result.clone());
        Ok(FenceCheck::Applied)
    }

    fn insert_batch(&self, batch: &NewBatch) -> Result<BatchId, StoreError> {
        let now = self.clock.now();
        let id = self.lock().insert_batch(now, batch)?;
        self.wake();
        Ok(id)
    }

    fn batch(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError> {
        Ok(self.lock().batch_info(id))
    }

    fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError> {
        Ok(self.lock().batch_members(id))
    }

    fn list_batches(
        &self,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError> {
        Ok(self.lock().list_batches(state, limit))
    }

    fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError> {
        let now = self.clock.now();
        let answer = self.lock().cancel_batch(id, now);
        if answer == OpResult::Applied {
            self.wake();
        }
        Ok(answer)
    }

    fn subscribe(&self, waker: Waker) -> Result<(), StoreError> {
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(waker);
        Ok(())
    }
}

/// A filter without a state means dead jobs.
fn with_default_state(filter: &JobFilter) -> JobFilter {
    let mut filter = filter.clone();
    filter.state.get_or_insert(QueueState::Dead);
    filter
}

fn retry_one(inner: &mut Inner, id: JobId, now: DateTime<Utc>) -> OpResult {
    let Some(job) = inner.jobs.get(&id) else {
        return OpResult::NotFound;
    };
    if !matches!(
        job.state,
        QueueState::Dead | QueueState::Cancelled | QueueState::Parked
    ) {
        return OpResult::WrongState(job.state);
    }
    // A batch member runs only after all its dependencies succeeded.
    if inner.dependencies_unmet(job) {
        return OpResult::DependenciesUnmet;
    }
    // A parked job is live and already holds its key; a finished one must not take it from
    // another live job.
    if job.state.is_finished()
        && let Some(unique) = job.unique_key
        && let Some(holder) = inner.live_holder(&unique, Some(id))
    {
        return OpResult::UniqueKeyHeld { by: holder.id };
    }
    let Some(job) = inner.jobs.get_mut(&id) else {
        return OpResult::NotFound;
    };
    let before = job.clone();
    job.state = QueueState::Pending;
    job.run_at = now;
    job.attempts = 0;
    job.finished_at = None;
    job.updated_at = now;
    inner.log_job(Some(&before), id);
    OpResult::Applied
}

impl HistoryStore for MemoryQueue {
    /// Jobs and schedules from the queue's ledger; keys from its guard store's.
    fn history(&self, of: &Subject) -> Result<Vec<HistoryEntry>, StoreError> {
        match of {
            Subject::Key(_) => self.guards.history(of),
            _ => Ok(self.lock().history.read(of)),
        }
    }

    /// Switches the queue's ledger and its guard store's.
    fn set_ledger(&self, on: bool) -> Result<(), StoreError> {
        self.lock().history.set_enabled(on);
        self.guards.set_ledger(on)
    }

    fn ledger_enabled(&self) -> Result<bool, StoreError> {
        Ok(self.lock().history.enabled())
    }
}
