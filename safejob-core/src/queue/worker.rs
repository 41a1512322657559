//! Workers: [`Worker`] runs claimed jobs on the calling thread; [`WorkerPool`] runs them on std
//! threads with heartbeats, lease renewal, the reaper and graceful shutdown.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use crate::{
    Clock, SystemClock,
    group::GroupStats,
    observe::{Ending, NoObserver, Observer},
    queue::{
        AttemptError, ClaimRequest, Claimed, CompleteAs, Completion, ErrorKind, GuardFinish,
        Heartbeat, JobId, QueueLease, QueueStore, Reaped, Registry, Waker,
        completer::{Completer, DEFAULT_COMPLETION_GROUP},
        exec::{Exec, Ran, Worked},
        job::Signals,
    },
    report::TtlError,
    retention::{Retention, RetentionError},
    runner::{DEFAULT_TTL, EffectsMode, validate_ttl},
    store::{Acquired, Lease, Renewed, StoreError},
};

/// A worker or pool could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerConfigError {
    /// The lease TTL is out of range.
    #[error("invalid lease ttl: {0}")]
    InvalidTtl(#[from] TtlError),
    /// The guard retention is out of range.
    #[error("invalid guard retention: {0}")]
    InvalidRetention(#[from] RetentionError),
    /// The worker id is empty or longer than 128 bytes.
    #[error("worker id must be 1 to 128 bytes, got {len}")]
    InvalidWorkerId {
        /// Its length.
        len: usize,
    },
    /// No queue to claim from: none given and no kind registered.
    #[error("no queues to work: give queues or register at least one kind")]
    NoQueues,
    /// Concurrency 0.
    #[error("concurrency must be at least 1")]
    ZeroConcurrency,
    /// The maintenance (lease renewal) interval is longer than half the lease TTL: one late or
    /// failed renewal would let a healthy job's lease expire.
    #[error("maintenance interval {interval:?} must be at most half the lease ttl {ttl:?}")]
    MaintenanceTooSlow {
        /// The interval.
        interval: Duration,
        /// The lease TTL.
        ttl: Duration,
    },
    /// An interval of zero would make a thread spin.
    #[error("{name} must be at least 1 ms")]
    ZeroInterval {
        /// Which interval.
        name: &'static str,
    },
    /// A completion group size of 0.
    #[error("the completion group size must be at least 1")]
    ZeroCompletionGroup,
    /// A thread could not be spawned.
    #[error("could not spawn a worker thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Builds a [`Worker`] (jobs run on the calling thread) or starts a [`WorkerPool`].
///
/// Defaults: id `worker-<pid>-<n>`; the queues of the registered kinds; concurrency 4; lease TTL
/// 30 s; poll interval 1 s; heartbeats, renewals and reaping every TTL ÷ 3; progress written at
/// most every second; the system clock; effects after commit; guard rows kept forever; a pool's
/// completions written in groups of at most [`DEFAULT_COMPLETION_GROUP`].
#[must_use]
pub struct WorkerBuilder {
    store: Arc<dyn QueueStore>,
    registry: Registry,
    id: Option<String>,
    queues: Option<Vec<String>>,
    concurrency: u32,
    lease_ttl: Duration,
    poll_interval: Duration,
    maintenance_interval: Option<Duration>,
    progress_interval: Duration,
    reaper: bool,
    clock: Arc<dyn Clock>,
    effects: EffectsMode,
    retention: Retention,
    observer: Arc<dyn Observer>,
    batch_completions: Option<bool>,
    completion_group: usize,
}

impl WorkerBuilder {
    /// Names the worker in leases, heartbeats and the snapshot.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The queues to claim from. Defaults to the registered kinds' queues.
    pub fn queues<I: IntoIterator<Item = S>, S: Into<String>>(mut self, queues: I) -> Self {
        self.queues = Some(queues.into_iter().map(Into::into).collect());
        self
    }

    /// Jobs run at once (pool threads; jobs per claim for [`Worker::run_once`]). Defaults to 4.
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// The lease each claim takes (renewed while the job runs). Defaults to 30 seconds.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How long an idle pool waits between claims unless woken (at least 1 ms). Defaults to 1
    /// second.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often the pool sends heartbeats, renews leases and reaps; at most half the lease TTL
    /// (a longer interval is refused by `build`). Defaults to TTL ÷ 3.
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = Some(interval);
        self
    }

    /// The shortest time between two progress writes of one job. Defaults to 1 second.
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = interval;
        self
    }

    /// Whether the pool reaps expired leases (any number of pools may). Defaults to `true`.
    pub fn reaper(mut self, enabled: bool) -> Self {
        self.reaper = enabled;
        self
    }

    /// The clock for timeouts and progress coalescing (leases use the store's). Defaults to the
    /// system clock; tests pass a `ManualClock`.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where guarded jobs' `on_succeeded_once` runs, for jobs that do not choose their own
    /// ([`SafeJob::effects_mode`](crate::SafeJob::effects_mode) returns `None`, the default).
    /// Defaults to after commit.
    pub fn effects(mut self, mode: EffectsMode) -> Self {
        self.effects = mode;
        self
    }

    /// How long a guarded job's guard row is kept once it succeeded or failed, for jobs that do
    /// not choose their own ([`SafeJob::guard_retention`](crate::SafeJob::guard_retention)
    /// returns `None`, the default): a [`Duration`] or a [`Retention`]. After it,
    /// [`Queue::prune`](crate::queue::Queue::prune) may delete the row and the same key runs
    /// again. Defaults to [`Retention::Forever`]; see [`Retention`] for why. Validated by
    /// [`build`](WorkerBuilder::build).
    pub fn guard_retention(mut self, retention: impl Into<Retention>) -> Self {
        self.retention = retention.into();
        self
    }

    /// Hears how each job ended, how long it took, and what the guard answered guarded jobs
    /// (see [`Observer`]); for instance `safejob-web`'s `Recorder`, which serves the counts on
    /// `/metrics`. Defaults to [`NoObserver`].
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// Whether a [`WorkerPool`]'s threads hand their completions to one completer that writes
    /// them in groups, one [`QueueStore::complete_many`] each (on the diesel stores: one
    /// transaction, one commit for the group). Defaults to what the store prefers
    /// ([`QueueStore::groups_completions`]: on for SQLite, off for PostgreSQL and MariaDB, whose
    /// servers already share one log flush among concurrent commits — measured in
    /// docs/BENCHMARKS.md, "Batched completions").
    ///
    /// There is no timer and no maximum wait: a thread that finds no group being written writes
    /// at once, so a lone completion on an idle pool is written immediately, and under load a
    /// group holds the completions that arrived while the previous group was being written. A
    /// job's completion is acknowledged, and its after-commit effects run, only once its group
    /// committed. Completions whose job runs transactional effects are always written by their
    /// own thread. [`Worker::run_once`] completes on its one thread and never groups.
    pub fn batch_completions(mut self, enabled: bool) -> Self {
        self.batch_completions = Some(enabled);
        self
    }

    /// The most completions one group holds (at least 1; a larger group waits for no one, it
    /// only caps what one commit carries). Defaults to [`DEFAULT_COMPLETION_GROUP`].
    pub fn completion_group_size(mut self, size: usize) -> Self {
        self.completion_group = size;
        self
    }

    /// A worker that runs jobs on the calling thread.
    pub fn build(self) -> Result<Worker, WorkerConfigError> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = self.id.unwrap_or_else(|| {
            format!(
                "worker-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        if id.is_empty() || id.len() > 128 {
            return Err(WorkerConfigError::InvalidWorkerId { len: id.len() });
        }
        if self.concurrency == 0 {
            return Err(WorkerConfigError::ZeroConcurrency);
        }
        let queues = self.queues.unwrap_or_else(|| self.registry.queues());
        if queues.is_empty() {
            return Err(WorkerConfigError::NoQueues);
        }
        let completion_group = NonZeroUsize::new(self.completion_group)
            .ok_or(WorkerConfigError::ZeroCompletionGroup)?;
        let batch_completions = self
            .batch_completions
            .unwrap_or_else(|| self.store.groups_completions());
        let lease_ttl = validate_ttl(self.lease_ttl)?;
        let maintenance_interval = self.maintenance_interval.unwrap_or(lease_ttl / 3);
        for (name, interval) in [
            ("poll interval", self.poll_interval),
            ("maintenance interval", maintenance_interval),
        ] {
            if interval < Duration::from_millis(1) {
                return Err(WorkerConfigError::ZeroInterval { name });
            }
        }
        // At most half the TTL: one late or failed renewal must not lose a healthy job's lease.
        if maintenance_interval.saturating_mul(2) > lease_ttl {
            return Err(WorkerConfigError::MaintenanceTooSlow {
                interval: maintenance_interval,
                ttl: lease_ttl,
            });
        }
        Ok(Worker {
            shared: Arc::new(Shared {
                store: self.store,
                registry: self.registry,
                id,
                queues,
                concurrency: self.concurrency,
                lease_ttl,
                poll_interval: self.poll_interval,
                maintenance_interval,
                progress_interval: self.progress_interval,
                reaper: self.reaper,
                clock: self.clock,
                effects: self.effects,
                retention: self.retention.validated()?,
                observer: self.observer,
                completion_group: batch_completions.then_some(completion_group),
            }),
        })
    }

    /// Starts a pool of threads.
    pub fn start(self) -> Result<WorkerPool, WorkerConfigError> {
        WorkerPool::start(self.build()?)
    }
}

struct Shared {
    store: Arc<dyn QueueStore>,
    registry: Registry,
    id: String,
    queues: Vec<String>,
    concurrency: u32,
    lease_ttl: Duration,
    poll_interval: Duration,
    maintenance_interval: Duration,
    progress_interval: Duration,
    reaper: bool,
    clock: Arc<dyn Clock>,
    effects: EffectsMode,
    retention: Retention,
    observer: Arc<dyn Observer>,
    /// A pool's largest completion group; `None`: batched completions off.
    completion_group: Option<NonZeroUsize>,
}

/// Claims jobs and runs them on the calling thread: the deterministic way to drive a queue in
/// tests, and the engine of [`WorkerPool`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::{
///     MemoryQueue, Queue, QueueJob, QueueState, Ran, Registry, WorkContext, WorkError, Worker,
/// };
/// use std::sync::Arc;
///
/// #[derive(Serialize, Deserialize)]
/// struct Hello { name: String }
/// impl QueueJob for Hello {
///     const KIND: &'static str = "hello";
///     type Error = std::io::Error;
///     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
///         println!("hello, {}", self.name);
///         Ok(())
///     }
/// }
///
/// let store = Arc::new(MemoryQueue::new());
/// let queue = Queue::new(store.clone());
/// let id = queue.enqueue(&Hello { name: "world".into() })?.id();
/// let mut registry = Registry::new();
/// registry.register::<Hello>();
/// let worker = Worker::builder(store.clone(), registry).build()?;
/// let worked = worker.run_once()?;
/// assert_eq!(worked[0].ran, Ran::Succeeded);
/// assert_eq!(queue.get(id)?.unwrap().state, QueueState::Succeeded);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Worker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.shared.id)
            .field("queues", &self.shared.queues)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts a builder.
    pub fn builder(store: Arc<dyn QueueStore>, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            store,
            registry,
            id: None,
            queues: None,
            concurrency: 4,
            lease_ttl: DEFAULT_TTL,
            poll_interval: Duration::from_secs(1),
            maintenance_interval: None,
            progress_interval: Duration::from_secs(1),
            reaper: true,
            clock: Arc::new(SystemClock),
            effects: EffectsMode::AfterCommit,
            retention: Retention::Forever,
            observer: Arc::new(NoObserver),
            batch_completions: None,
            completion_group: DEFAULT_COMPLETION_GROUP,
        }
    }

    /// The worker id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The queues it claims from.
    pub fn queues(&self) -> &[String] {
        &self.shared.queues
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn QueueStore> {
        &self.shared.store
    }

    /// Claims up to `limit` due jobs.
    pub fn claim(&self, limit: usize) -> Result<Vec<Claimed>, StoreError> {
        self.shared.store.claim(&ClaimRequest {
            worker: &self.shared.id,
            queues: &self.shared.queues,
            limit,
            ttl: self.shared.lease_ttl,
        })
    }

    /// Claims up to `concurrency` due jobs and runs them one after the other on this thread.
    /// Nothing renews their leases meanwhile (the pool does): keep batches short next to the
    /// lease TTL, or use a [`WorkerPool`].
    /// Every claimed job is completed; the first store error (if any) is returned after all ran.
    pub fn run_once(&self) -> Result<Vec<Worked>, StoreError> {
        let claimed = self.claim(self.shared.concurrency as usize)?;
        let mut worked = Vec::with_capacity(claimed.len());
        let mut first_error = None;
        for job in &claimed {
            match self.execute(job, Arc::default()) {
                Ok(w) => worked.push(w),
                Err(error) => {
                    warn!(job = %job.job.id, %error, "could not complete the job; its lease will expire");
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(worked),
        }
    }

    /// [`run_once`](Worker::run_once) until a claim finds nothing due, at most `max_rounds`
    /// times; returns everything handled.
    pub fn drain(&self, max_rounds: usize) -> Result<Vec<Worked>, StoreError> {
        let mut all = Vec::new();
        for _ in 0..max_rounds {
            let worked = self.run_once()?;
            if worked.is_empty() {
                break;
            }
            all.extend(worked);
        }
        Ok(all)
    }

    /// Runs one claimed job to its completion.
    pub(crate) fn execute(
        &self,
        claimed: &Claimed,
        signals: Arc<Signals>,
    ) -> Result<Worked, StoreError> {
        self.execute_with(claimed, signals, None)
    }

    /// [`Worker::execute`], completing through `completer` when given.
    fn execute_with(
        &self,
        claimed: &Claimed,
        signals: Arc<Signals>,
        completer: Option<&Completer>,
    ) -> Result<Worked, StoreError> {
        let s = &*self.shared;
        let exec = Exec {
            store: &*s.store,
            clock: &*s.clock,
            claimed,
            signals,
            progress_every: s.progress_interval,
            effects: s.effects,
            retention: s.retention,
            ttl: s.lease_ttl,
            observer: &*s.observer,
            completer,
        };
        let started = Instant::now();
        let ran = s.registry.run(&exec)?;
        let ending = Ending::of_ran(&ran);
        s.observer
            .job_ended(&claimed.job.kind, ending, started.elapsed());
        debug!(job = %claimed.job.id, kind = %claimed.job.kind, ?ran, "job handled");
        Ok(Worked {
            id: claimed.job.id,
            kind: claimed.job.kind.clone(),
            ran,
        })
    }

    /// Sends a heartbeat.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        self.shared.store.heartbeat(&Heartbeat {
            worker: &self.shared.id,
            queues: &self.shared.queues,
            concurrency: self.shared.concurrency,
        })
    }

    /// Reaps up to 100 jobs whose lease expired.
    pub fn reap(&self) -> Result<Vec<Reaped>, StoreError> {
        let reaped = self.shared.store.reap(100)?;
        for r in &reaped {
            info!(job = %r.id, kind = %r.kind, state = %r.state, "reaped an expired lease");
        }
        Ok(reaped)
    }

    /// Gives a claimed job back without counting the attempt (shutdown), releasing its guard.
    /// Whether the release applied (a job that completed meanwhile is left alone).
    fn release(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        error: Option<AttemptError>,
    ) -> bool {
        let completion = Completion {
            lease,
            outcome: CompleteAs::Snooze {
                delay: Duration::ZERO,
                error,
            },
            progress: None,
            guard: guard.map(|lease| GuardFinish::Release {
                lease,
                error: Some("worker shut down"),
            }),
            batch: None,
        };
        match self.shared.store.complete(&completion, None) {
            Ok(done) => {
                debug!(job = %lease.id, ?done, "released at shutdown");
                done == crate::queue::Completed::Applied
            }
            Err(error) => {
                warn!(job = %lease.id, %error, "release failed; the lease will expire");
                false
            }
        }
    }
}

fn guard_lease(claimed: &Claimed) -> Option<Lease> {
    match &claimed.guard {
        Some(Acquired::Granted(lease)) => Some(lease.clone()),
        _ => None,
    }
}

/// What [`WorkerPool::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutdownReport {
    /// Claimed jobs that had not started: given back at once, attempt not counted.
    pub released_unstarted: usize,
    /// Jobs still running at the deadline: asked to stop and given back (their late completion
    /// is stale).
    pub released_running: usize,
}

struct InFlight {
    lease: QueueLease,
    guard: Option<Lease>,
    signals: Arc<Signals>,
}

#[derive(Default)]
struct PoolState {
    ready: VecDeque<Claimed>,
    in_flight: HashMap<JobId, InFlight>,
    stopping: bool,
    alive_workers: usize,
    /// When jobs this pool snoozed or retried become due again, for those due sooner than the
    /// next poll: the claimer wakes for each instead of polling late.
    due_soon: Vec<Instant>,
    /// Claims started so far (numbered from 1).
    claims: u64,
    /// The number of the last claim that found nothing due (0: none yet).
    last_empty_claim: u64,
    /// Jobs run to a completion (any outcome) so far.
    handled: u64,
}

impl PoolState {
    /// Whether the pool is idle as of claim number `after`: a claim started after it found
    /// nothing due, nothing is claimed or running, and no job it snoozed is about to be due.
    fn idle_since(&self, after: u64) -> bool {
        self.last_empty_claim > after
            && self.in_flight.is_empty()
            && self.ready.is_empty()
            && self.due_soon.is_empty()
    }

    /// The earliest instant in `due_soon`.
    fn next_due(&self) -> Option<Instant> {
        self.due_soon.iter().min().copied()
    }
}

struct PoolShared {
    worker: Worker,
    state: Mutex<PoolState>,
    changed: Condvar,
    waker: Waker,
    maintenance: Waker,
    /// Where runners hand their completions, with batched completions on.
    completer: Option<Completer>,
}

impl PoolShared {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs jobs on std threads: one claimer, `concurrency` runners and one maintenance thread
/// (heartbeats, lease renewal of running jobs, the reaper).
///
/// Panics in jobs are caught and recorded as retryable failures. Stop it with
/// [`shutdown`](WorkerPool::shutdown): it stops claiming, gives back claimed jobs that had not
/// started, lets running jobs finish until the deadline, then asks the rest to stop
/// ([`WorkContext::should_stop`](crate::queue::WorkContext::should_stop)) and gives them back.
/// Dropping a pool shuts it down with no grace period.
pub struct WorkerPool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
    runners: Vec<JoinHandle<()>>,
    done: bool,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("worker", &self.shared.worker)
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    fn start(worker: Worker) -> Result<Self, WorkerConfigError> {
        let waker = Waker::new();
        if let Err(error) = worker.store().subscribe(waker.clone()) {
            warn!(%error, "no wake-ups from the store; polling only");
        }
        let completer = worker.shared.completion_group.map(Completer::new);
        let shared = Arc::new(PoolShared {
            completer,
            worker,
            state: Mutex::new(PoolState::default()),
            changed: Condvar::new(),
            waker,
            maintenance: Waker::new(),
        });
        let mut pool = Self {
            shared,
            threads: Vec::new(),
            runners: Vec::new(),
            done: false,
        };
        let id = pool.shared.worker.id().to_owned();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(WorkerConfigError::Spawn)
        };
        if let Err(error) = pool.shared.worker.heartbeat() {
            warn!(%error, "first heartbeat failed");
        }
        for n in 0..pool.shared.worker.shared.concurrency {
            pool.shared.lock().alive_workers += 1;
            let shared = pool.shared.clone();
            match spawn(format!("{id}-run{n}"), Box::new(move || run_jobs(&shared))) {
                Ok(handle) => pool.runners.push(handle),
                Err(error) => {
                    pool.shared.lock().alive_workers -= 1;
                    return Err(error);
                }
            }
        }
        let shared = pool.shared.clone();
        pool.threads.push(spawn(
            format!("{id}-claim"),
            Box::new(move || claim_jobs(&shared)),
        )?);
        let shared = pool.shared.clone();
        pool.threads.push(spawn(
            format!("{id}-maintain"),
            Box::new(move || maintain(&shared)),
        )?);
        info!(worker = %id, "worker pool started");
        Ok(pool)
    }

    /// The pool's worker id.
    pub fn id(&self) -> &str {
        self.shared.worker.id()
    }

    /// A handle that makes the idle claimer claim at once (for stores that learn of new jobs by
    /// other means, e.g. a PostgreSQL `LISTEN` thread).
    pub fn waker(&self) -> Waker {
        self.shared.waker.clone()
    }

    /// Jobs claimed and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight.len()
    }

    /// Jobs this pool has run so far, whatever their outcome (succeeded, retried, dead,
    /// snoozed...), counting those whose completion could not be written.
    pub fn handled(&self) -> u64 {
        self.shared.lock().handled
    }

    /// How the pool's completions were grouped so far (`items / groups` is the mean group
    /// size); `None` with batched completions off.
    pub fn completion_groups(&self) -> Option<GroupStats> {
        self.shared.completer.as_ref().map(Completer::stats)
    }

    /// Waits until the pool is idle, at most `timeout` (real time); returns whether it is.
    ///
    /// Idle means: a claim started after this call found no due job in the pool's queues,
    /// nothing is claimed or running, and no job this pool snoozed or retried is due within the
    /// poll interval. Jobs scheduled later, jobs another pool holds, and jobs enqueued after the
    /// answer are not waited for. For tests and one-shot tools: enqueue, then `wait_idle`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.shared.lock();
        let after = state.claims;
        self.shared.waker.wake();
        while !state.idle_since(after) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || state.stopping {
                return false;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Stops claiming, gives back unstarted jobs, waits for running jobs until `deadline` (real
    /// time), then asks the rest to stop and gives them back; removes the worker from the store.
    pub fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        self.stop(deadline)
    }

    fn stop(&mut self, deadline: Duration) -> ShutdownReport {
        if self.done {
            return ShutdownReport::default();
        }
        self.done = true;
        let shared = &self.shared;
        let worker = &shared.worker;
        let mut report = ShutdownReport::default();
        let unstarted: Vec<Claimed> = {
            let mut state = shared.lock();
            state.stopping = true;
            let ready: Vec<Claimed> = state.ready.drain(..).collect();
            for c in &ready {
                state.in_flight.remove(&c.lease.id);
            }
            ready
        };
        shared.changed.notify_all();
        shared.waker.wake();
        for c in &unstarted {
            if worker.release(&c.lease, guard_lease(c).as_ref(), None) {
                report.released_unstarted += 1;
            }
        }
        let until = Instant::now() + deadline;
        let mut state = shared.lock();
        while !state.in_flight.is_empty() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let stuck: Vec<InFlight> = state.in_flight.drain().map(|(_, f)| f).collect();
        drop(state);
        for f in &stuck {
            f.signals.abort.store(true, Ordering::Release);
            let error = AttemptError::new(ErrorKind::ShutDown, "the worker shut down mid-attempt");
            if worker.release(&f.lease, f.guard.as_ref(), Some(error)) {
                report.released_running += 1;
            }
        }
        shared.maintenance.wake();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        // Idle runners exit at once; a runner stuck in a job is left to finish on its own.
        let mut state = shared.lock();
        while state.alive_workers > stuck.len() {
            state = shared
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        for handle in self.runners.drain(..) {
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
        if let Err(error) = worker.store().remove_worker(worker.id()) {
            warn!(%error, "could not remove the worker's heartbeat row");
        }
        info!(worker = %worker.id(), ?report, "worker pool stopped");
        report
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn claim_jobs(shared: &PoolShared) {
    let worker = &shared.worker;
    let concurrency = worker.shared.concurrency as usize;
    loop {
        let free = {
            let state = shared.lock();
            if state.stopping {
                return;
            }
            concurrency.saturating_sub(state.in_flight.len())
        };
        let mut claimed_all = false;
        if free > 0 {
            let number = {
                let mut state = shared.lock();
                let now = Instant::now();
                state.due_soon.retain(|due| *due > now);
                state.claims += 1;
                state.claims
            };
            match worker.claim(free) {
                Ok(batch) => {
                    claimed_all = batch.len() == free;
                    let mut state = shared.lock();
                    if batch.is_empty() {
                        state.last_empty_claim = number;
                    }
                    if state.stopping {
                        drop(state);
                        for c in &batch {
                            let _ = worker.release(&c.lease, guard_lease(c).as_ref(), None);
                        }
                        return;
                    }
                    for c in batch {
                        state.in_flight.insert(
                            c.lease.id,
                            InFlight {
                                lease: c.lease.clone(),
                                guard: guard_lease(&c),
                                signals: Arc::default(),
                            },
                        );
                        state.ready.push_back(c);
                    }
                    drop(state);
                    shared.changed.notify_all();
                }
                Err(error) => warn!(%error, "claim failed; retrying at the next poll"),
            }
        }
        if !claimed_all {
            let due = shared.lock().next_due();
            let poll = worker.shared.poll_interval;
            let wait = due.map_or(poll, |due| {
                poll.min(due.saturating_duration_since(Instant::now()))
            });
            shared.waker.wait(wait);
        }
    }
}

fn run_jobs(shared: &PoolShared) {
    loop {
        let (claimed, signals) = {
            let mut state = shared.lock();
            loop {
                if state.stopping {
                    state.alive_workers -= 1;
                    drop(state);
                    shared.changed.notify_all();
                    return;
                }
                if let Some(c) = state.ready.pop_front() {
                    let signals = state
                        .in_flight
                        .get(&c.lease.id)
                        .map(|f| f.signals.clone())
                        .unwrap_or_default();
                    break (c, signals);
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        let completer = shared.completer.as_ref();
        let again = match shared.worker.execute_with(&claimed, signals, completer) {
            Ok(worked) => match worked.ran {
                Ran::Snoozed { delay } | Ran::Retrying { delay, .. }
                    if delay < shared.worker.shared.poll_interval =>
                {
                    Some(Instant::now() + delay)
                }
                _ => None,
            },
            Err(error) => {
                warn!(job = %claimed.job.id, %error, "could not complete the job; its lease will expire");
                None
            }
        };
        {
            let mut state = shared.lock();
            state.in_flight.remove(&claimed.lease.id);
            state.handled += 1;
            if let Some(due) = again {
                state.due_soon.push(due);
            }
        }
        shared.changed.notify_all();
        shared.waker.wake();
    }
}

fn maintain(shared: &PoolShared) {
    let worker = &shared.worker;
    let s = &worker.shared;
    loop {
        shared.maintenance.wait(s.maintenance_interval);
        let leases: Vec<(QueueLease, Option<Lease>, Arc<Signals>)> = {
            let state = shared.lock();
            if state.stopping {
                return;
            }
            state
                .in_flight
                .values()
                .map(|f| (f.lease.clone(), f.guard.clone(), f.signals.clone()))
                .collect()
        };
        if let Err(error) = worker.heartbeat() {
            warn!(%error, "heartbeat failed");
        }
        for (lease, guard, signals) in leases {
            match s.store.renew(&lease, guard.as_ref(), s.lease_ttl) {
                Ok(Renewed::Extended(_)) => {}
                Ok(Renewed::Stale) => {
                    // Also the answer for a job that completed since the snapshot above.
                    debug!(job = %lease.id, fence = lease.fence, "renewal stale: lease lost or job done");
                    signals.lease_lost.store(true, Ordering::Release);
                }
                Err(error) => warn!(job = %lease.id, %error, "renewal failed"),
            }
        }
        if s.reaper
            && let Err(error) = worker.reap()
        {
            warn!(%error, "reaper failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::MemoryQueue;

    fn builder() -> WorkerBuilder {
        Worker::builder(Arc::new(MemoryQueue::new()), Registry::new()).queues(["q"])
    }

    #[test]
    fn configuration_is_validated() {
        assert!(builder().build().is_ok());
        assert!(matches!(
            Worker::builder(Arc::new(MemoryQueue::new()), Registry::new()).build(),
            Err(WorkerConfigError::NoQueues)
        ));
        assert!(matches!(
            builder().concurrency(0).build(),
            Err(WorkerConfigError::ZeroConcurrency)
        ));
        assert!(matches!(
            builder().completion_group_size(0).build(),
            Err(WorkerConfigError::ZeroCompletionGroup)
        ));
        assert!(matches!(
            builder().id("").build(),
            Err(WorkerConfigError::InvalidWorkerId { len: 0 })
        ));
        assert!(matches!(
            builder().lease_ttl(Duration::ZERO).build(),
            Err(WorkerConfigError::InvalidTtl(_))
        ));
        assert!(matches!(
            builder().poll_interval(Duration::ZERO).build(),
            Err(WorkerConfigError::ZeroInterval {
                name: "poll interval"
            })
        ));
        let slow = builder()
            .lease_ttl(Duration::from_secs(10))
            .maintenance_interval(Duration::from_millis(5_001))
            .build();
        assert_eq!(
            slow.map(|_| ()).map_err(|e| e.to_string()),
            Err("maintenance interval 5.001s must be at most half the lease ttl 10s".to_owned())
        );
        assert!(
            builder()
                .lease_ttl(Duration::from_secs(10))
                .maintenance_interval(Duration::from_secs(5))
                .build()
                .is_ok(),
            "half the TTL is accepted"
        );
    }

    /// Batched completions follow the store's preference unless set (the memory queue prefers
    /// none), and are on or off when asked: a pool with them off has no completer. Catches a
    /// switch that is not passed on to the pool, and a default that ignores the store.
    #[test]
    fn batched_completions_can_be_turned_on_and_off() {
        let default = builder().id("default").start().unwrap();
        assert_eq!(
            default.completion_groups(),
            None,
            "the memory queue's preference"
        );
        let on = builder().id("on").batch_completions(true).start().unwrap();
        assert_eq!(on.completion_groups().map(|g| g.groups), Some(0));
        let off = builder()
            .id("off")
            .batch_completions(false)
            .start()
            .unwrap();
        assert_eq!(off.completion_groups(), None);
    }

    #[test]
    fn a_dropped_pool_leaves_the_worker_list() {
        let store = Arc::new(MemoryQueue::new());
        let pool = Worker::builder(store.clone(), Registry::new())
            .id("dropped")
            .queues(["q"])
            .start()
            .unwrap();
        assert_eq!(store.snapshot().unwrap().workers.len(), 1);
        drop(pool);
        assert!(store.snapshot().unwrap().workers.is_empty());
    }
}
