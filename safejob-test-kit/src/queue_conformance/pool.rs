//! The worker pool, on real threads: every job once, and shutdown releasing claimed work; with
//! the thread gates its jobs wait at.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex, OnceLock},
    time::{Duration, Instant},
};

use safejob_core::queue::{
    CompleteAs, Completed, Enqueued, ErrorKind, JobId, NewJob, QueueJob, QueueState, Registry,
    ShutdownReport, WorkContext, WorkError, Worker,
};
use serde::{Deserialize, Serialize};

use super::{
    QueueHarness,
    fixtures::{Case, CaseError, POOL_PATIENCE, bump, count},
};

/// A gate a [`Blocking`] job waits at, keyed by tag.
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<(bool, bool)>, // (started, open)
    changed: Condvar,
}

pub(super) fn gate(tag: &str) -> Arc<Gate> {
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
    pub(super) fn set(&self, f: impl FnOnce(&mut (bool, bool))) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Waits, at most [`POOL_PATIENCE`], until `cond` holds; returns whether it did.
    pub(super) fn wait(&self, cond: impl Fn(&(bool, bool)) -> bool) -> bool {
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
pub(super) struct Blocking {
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
pub(super) struct Counting {
    tag: String,
}

impl Counting {
    pub(super) fn new(tag: String) -> Self {
        Self { tag }
    }
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

/// A pool that polls only once a minute still runs work at once: an enqueue wakes it, and a
/// guarded duplicate it snoozed because the key was busy is claimed again when its short snooze
/// ([`BUSY_RETRY_MAX`](safejob_core::BUSY_RETRY_MAX)) ends, not at the next poll; then
/// [`WorkerPool::wait_idle`](safejob_core::queue::WorkerPool::wait_idle) answers idle with every
/// copy succeeded and the key's effects run once.
///
/// Not in [`CASES`](super::CASES): it needs a store whose clock runs in real time (a SQL
/// backend, or a [`MemoryQueue`](safejob_core::queue::MemoryQueue) on the system clock), since
/// the pool's threads wait in real time.
///
/// Catches: a store that does not wake its subscribers on enqueue (SQLite and MySQL wake the
/// pools of their own process), and a pool that waits a whole poll interval for a job it snoozed.
pub fn pool_wakes_for_enqueues_and_short_snoozes(harness: &dyn QueueHarness) {
    let c = Case::new("pool_wakes_for_enqueues_and_short_snoozes", harness);
    let mut registry = Registry::new();
    registry.register::<Counting>();
    registry.register_guarded::<super::worker::Charge>();
    let pool = Worker::builder(c.store.clone(), registry)
        .id(format!("{}:pool", c.prefix))
        .queues([c.queue.clone()])
        .concurrency(3)
        .poll_interval(Duration::from_secs(60))
        .start()
        .unwrap_or_else(|e| c.fail(format_args!("pool start: {e}")));
    let succeeded_soon = |c: &Case<'_>, ids: &[JobId]| {
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
    };
    // Let the pool's first claim find nothing, so only a wake-up can start the next one.
    std::thread::sleep(Duration::from_millis(50));
    let tag = format!("{}:woken", c.prefix);
    let plain = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Counting { tag: tag.clone() }, &c.options()),
        )
        .id();
    ensure!(
        c,
        succeeded_soon(&c, &[plain]),
        "a job enqueued on this store was not run within {POOL_PATIENCE:?} by a pool that polls once a minute: the enqueue did not wake it"
    );
    // Three copies of one guarded key, inserted on purpose in one batch: claimed together, one
    // runs and the other two meet a busy key and are snoozed.
    let charge_tag = format!("{}:charge", c.prefix);
    let charge = super::worker::Charge::new(charge_tag.clone(), 900);
    let copy = NewJob::guarded(&charge, &c.options().allow_duplicates())
        .unwrap_or_else(|e| c.fail(format_args!("NewJob::guarded: {e}")));
    let ids: Vec<JobId> = c
        .ok(
            "enqueue_many",
            c.store.enqueue_many(&[copy.clone(), copy.clone(), copy]),
        )
        .iter()
        .map(Enqueued::id)
        .collect();
    ensure!(
        c,
        succeeded_soon(&c, &ids),
        "3 copies of one guarded key did not all succeed within {POOL_PATIENCE:?} on a pool that polls once a minute: {:?}",
        ids.iter().map(|id| c.get(*id).state).collect::<Vec<_>>()
    );
    ensure!(
        c,
        pool.wait_idle(POOL_PATIENCE),
        "wait_idle: the pool is not idle after its work is done"
    );
    let performs = count(&format!("{charge_tag}:perform"));
    let effects = count(&format!("{charge_tag}:effects"));
    ensure!(
        c,
        count(&tag) == 1 && performs == 1 && effects == 1,
        "runs: plain {}, guarded performs {performs}, effects {effects}; expected 1, 1, 1",
        count(&tag)
    );
    let report = pool.shutdown(Duration::from_secs(5));
    ensure!(
        c,
        report == ShutdownReport::default(),
        "nothing was claimed at shutdown: {report:?}"
    );
}
