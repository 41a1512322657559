//! What every queue case shares: the lease TTL and other constants, the per-case context
//! [`Case`] (its own queue, kinds and keys, and how it reports a violation), and the counters the
//! cases' jobs bump.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Utc};
use safejob_core::{
    KeyDigest,
    queue::{
        AttemptError, ClaimRequest, Claimed, CompleteAs, Completed, Completion, EnqueueOptions,
        Enqueued, ErrorKind, GuardSpec, JobId, NewJob, Queue, QueueLease, QueueStore, QueuedJob,
        Ran, Registry, RunAt, Worker, WorkerBuilder,
    },
    store::{AcquireRequest, Acquired, StoreError},
};
use serde_json::json;

use super::QueueHarness;
use crate::{ManualClock, conformance::TIME_SLACK};

/// The lease TTL every case asks for.
pub(super) const TTL: Duration = Duration::from_secs(30);
/// An advance that expires any lease taken with [`TTL`].
pub(super) const PAST_TTL: Duration = Duration::from_secs(31);
/// How many threads race in the concurrency cases.
pub(super) const RACERS: usize = 16;
/// How long a pool case waits for real threads before it fails (never reached when it passes).
pub(super) const POOL_PATIENCE: Duration = Duration::from_secs(20);

/// One case's context: its store, its own queue and prefix, and the way it reports a violation.
pub(super) struct Case<'h> {
    pub(super) name: &'static str,
    pub(super) harness: &'h dyn QueueHarness,
    pub(super) store: Arc<dyn QueueStore>,
    pub(super) prefix: String,
    pub(super) queue: String,
}

impl<'h> Case<'h> {
    pub(super) fn new(name: &'static str, harness: &'h dyn QueueHarness) -> Self {
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
    pub(super) fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        panic!("queue conformance case `{}` failed: {what}", self.name)
    }

    #[track_caller]
    pub(super) fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => self.fail(format_args!("{op} returned a store error: {error}")),
        }
    }

    pub(super) fn advance(&self, by: Duration) {
        self.harness.advance(by);
    }

    #[track_caller]
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.ok("now", self.store.now())
    }

    pub(super) fn kind(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub(super) fn new_job(&self, kind: &str) -> NewJob {
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

    pub(super) fn unique(&self, part: &str) -> KeyDigest {
        KeyDigest::of(&format!("{}:unique:{part}", self.prefix))
    }

    #[track_caller]
    pub(super) fn enqueue(&self, job: NewJob) -> JobId {
        match self.ok("enqueue", self.store.enqueue(&job)) {
            Enqueued::Inserted { id, .. } => id,
            other => self.fail(format_args!(
                "enqueue of a new job: expected Inserted, got {other:?}"
            )),
        }
    }

    #[track_caller]
    pub(super) fn get(&self, id: JobId) -> QueuedJob {
        match self.ok("get", self.store.get(id)) {
            Some(job) => job,
            None => self.fail(format_args!("get({id}) found no job")),
        }
    }

    #[track_caller]
    pub(super) fn claim_as(&self, worker: &str, limit: usize) -> Vec<Claimed> {
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
    pub(super) fn claim(&self, limit: usize) -> Vec<Claimed> {
        self.claim_as("w1", limit)
    }

    #[track_caller]
    pub(super) fn claim_one(&self) -> Claimed {
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
    pub(super) fn claim_guarded(
        &self,
        spec: GuardSpec,
    ) -> (JobId, Claimed, safejob_core::store::Lease) {
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
    pub(super) fn acquire_outside(&self, spec: GuardSpec) -> Acquired {
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
    pub(super) fn complete(&self, lease: &QueueLease, outcome: CompleteAs) -> Completed {
        // The claimed job's batch, as the worker passes it.
        let batch = self.get(lease.id).batch;
        self.ok(
            "complete",
            self.store.complete(
                &Completion {
                    lease,
                    outcome,
                    progress: None,
                    guard: None,
                    batch,
                },
                None,
            ),
        )
    }

    #[track_caller]
    pub(super) fn near(&self, what: &str, got: Option<DateTime<Utc>>, want: DateTime<Utc>) {
        let slack = chrono::Duration::from_std(TIME_SLACK).unwrap_or_default();
        match got {
            Some(got) if (got - want).abs() <= slack => {}
            other => self.fail(format_args!("{what}: expected about {want}, got {other:?}")),
        }
    }

    pub(super) fn worker(&self, registry: Registry) -> Worker {
        self.worker_on_clock(registry, Arc::new(ManualClock::default()))
    }

    pub(super) fn worker_on_clock(&self, registry: Registry, clock: Arc<ManualClock>) -> Worker {
        self.build_worker(self.worker_builder(registry).clock(clock))
    }

    /// The builder of [`Case::worker`], for a case that sets more.
    pub(super) fn worker_builder(&self, registry: Registry) -> WorkerBuilder {
        Worker::builder(self.store.clone(), registry)
            .id(format!("{}:worker", self.prefix))
            .queues([self.queue.clone()])
            .lease_ttl(TTL)
            .progress_interval(Duration::from_secs(10))
            .clock(Arc::new(ManualClock::default()))
    }

    #[track_caller]
    pub(super) fn build_worker(&self, builder: WorkerBuilder) -> Worker {
        match builder.build() {
            Ok(worker) => worker,
            Err(error) => self.fail(format_args!("worker could not be built: {error}")),
        }
    }

    #[track_caller]
    pub(super) fn run_once(&self, worker: &Worker) -> Vec<(JobId, Ran)> {
        self.ok("Worker::run_once", worker.run_once())
            .into_iter()
            .map(|w| (w.id, w.ran))
            .collect()
    }

    pub(super) fn options(&self) -> EnqueueOptions {
        EnqueueOptions::new().queue(self.queue.clone())
    }

    pub(super) fn queue_client(&self) -> Queue {
        Queue::new(self.store.clone())
    }
}

pub(super) fn error(message: &str) -> AttemptError {
    AttemptError::new(ErrorKind::Retryable, message)
}

/// An error made in the conformance jobs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct CaseError(pub(super) String);

/// Counters shared between the cases and the jobs they enqueue (which are rebuilt from JSON).
pub(super) fn counters() -> MutexGuard<'static, BTreeMap<String, u32>> {
    static COUNTERS: OnceLock<Mutex<BTreeMap<String, u32>>> = OnceLock::new();
    COUNTERS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

pub(super) fn bump(name: &str) {
    *counters().entry(name.to_owned()).or_insert(0) += 1;
}

pub(super) fn count(name: &str) -> u32 {
    counters().get(name).copied().unwrap_or(0)
}

impl Case<'_> {
    #[track_caller]
    pub(super) fn ok_enqueue(
        &self,
        result: Result<Enqueued, safejob_core::queue::EnqueueError>,
    ) -> Enqueued {
        result.unwrap_or_else(|e| self.fail(format_args!("enqueue failed: {e}")))
    }
}
