//! The replay shared by the model-based tests (`memory_store.rs`, `memory_queue.rs`): traces of
//! the model's actions, random and model-generated, replayed against the real
//! `safejob_core::MemoryStore` (and, through the queue, `safejob_core::queue::MemoryQueue` on top
//! of it) on a `ManualClock`. At every step the real stores must give the model's answer
//! (granted with the same fence and expiry, busy, replay, extended, stale, committed, applied,
//! claimed, not in doubt, missing; through the queue: claimed with the same job fence, expiry
//! and guard answer, guard stale, reaped) and hold the same row (state, fence, expiry, effects)
//! for every key and the same row (state, fence, lease expiry) for every queued job.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    FinalFailure, KeyDigest, LeaseStore, MemoryStore, Retention,
    queue::{
        AttemptError, ClaimRequest, CompleteAs, Completed, Completion, ErrorKind, GuardFinish,
        GuardSpec, JobId, MemoryQueue, NewJob, QueueLease, QueueState, QueueStore, RunAt,
    },
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobState, Lease, Renewed,
    },
};
use safejob_model::{
    Action, Bounds, LeaseModel, State, Worker,
    queue::{self, GuardAnswer, JobRow, Then},
    store::{Answer, Effects, Row, RowState},
};
use safejob_test_kit::ManualClock;
use stateright::{Checker, Model, PathRecorder};

/// The real stores, their clock, and the leases each model worker holds on them.
pub struct Real {
    /// The guard store (the queue's guards, when there is a queue).
    store: Arc<MemoryStore>,
    /// The queue on `store`, holding the model's jobs (none when `copies` is 0).
    queue: MemoryQueue,
    /// The real id of each model job, in the model's order.
    jobs: Vec<JobId>,
    clock: Arc<ManualClock>,
    start: DateTime<Utc>,
    keys: Vec<KeyDigest>,
    /// The guard lease each worker holds.
    leases: Vec<Option<Lease>>,
    /// The job lease each worker holds (through the queue).
    job_leases: Vec<Option<QueueLease>>,
    ttl: Duration,
}

impl Real {
    /// Empty stores at the clock's start; through the queue, `bounds.copies` guarded jobs per
    /// key enqueued as the model's initial state has them (job `j` alone in queue `q{j}`, so a
    /// claim of that queue claims exactly that job).
    pub fn new(bounds: Bounds) -> Self {
        let clock = Arc::new(ManualClock::default());
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        let queue = MemoryQueue::with_guards(store.clone(), clock.clone());
        let keys: Vec<KeyDigest> = (0..bounds.keys)
            .map(|k| KeyDigest::of(&format!("model-key-{k}")))
            .collect();
        let jobs = queue::QueueModel::new(bounds.keys, bounds.copies)
            .jobs
            .iter()
            .enumerate()
            .map(|(j, row)| {
                let job = NewJob {
                    kind: "model".into(),
                    queue: format!("q{j}"),
                    payload: serde_json::Value::Null,
                    metadata: serde_json::Value::Null,
                    priority: 0,
                    run_at: RunAt::Now,
                    // The model's jobs never run out of attempts.
                    max_attempts: u32::MAX,
                    idempotent: true,
                    unique_key: None,
                    guard: Some(GuardSpec {
                        digest: keys[row.key],
                        fingerprint: None,
                    }),
                };
                queue.enqueue(&job).expect("enqueue").id()
            })
            .collect();
        Self {
            store,
            queue,
            jobs,
            start: clock.now(),
            clock,
            keys,
            leases: vec![None; bounds.workers],
            job_leases: vec![None; bounds.workers],
            ttl: Duration::from_secs(bounds.ttl.into()),
        }
    }

    fn seconds(&self, at: DateTime<Utc>) -> u8 {
        u8::try_from((at - self.start).num_seconds()).expect("model times fit in u8")
    }

    fn request(&self, key: usize, worker: usize) -> (KeyDigest, String) {
        (self.keys[key], format!("w{worker}"))
    }

    /// The lease `worker` holds, which must carry the fence the model says it holds.
    fn lease(&self, worker: usize, fence: u8) -> Lease {
        let lease = self.leases[worker]
            .clone()
            .expect("the worker holds a lease");
        assert_eq!(lease.fence, u64::from(fence), "worker {worker}'s fence");
        lease
    }

    /// The job lease `worker` holds, which must carry the job fence the model says it holds.
    fn job_lease(&self, worker: usize, job_fence: u8) -> QueueLease {
        let lease = self.job_leases[worker]
            .clone()
            .expect("the worker holds a job lease");
        assert_eq!(
            lease.fence,
            u64::from(job_fence),
            "worker {worker}'s job fence"
        );
        lease
    }

    /// The claimed job of `worker` in model state `before`: (job, job fence).
    fn claimed(before: &State, worker: usize) -> (usize, u8) {
        match before.workers[worker] {
            Worker::Claimed { job, job_fence, .. } | Worker::Unwritten { job, job_fence, .. } => {
                (job, job_fence)
            }
            _ => panic!("worker {worker} holds no claimed job"),
        }
    }

    /// `complete` of `worker`'s job as `outcome`, with `guard`'s half; its answer.
    fn complete(
        &mut self,
        before: &State,
        worker: usize,
        outcome: CompleteAs,
        guard: Option<GuardFinish<'_>>,
    ) -> Answer {
        let (_, job_fence) = Self::claimed(before, worker);
        let lease = self.job_lease(worker, job_fence);
        let completion = Completion {
            lease: &lease,
            outcome,
            progress: None,
            guard,
            batch: None,
        };
        match self.queue.complete(&completion, None).expect("complete") {
            Completed::Applied => Answer::Applied,
            Completed::Stale => Answer::Stale,
            Completed::GuardStale => Answer::GuardStale,
            Completed::EffectsAborted => panic!("no transactional effects here"),
        }
    }

    /// Performs `action` (taken in model state `before`) on the real stores; its answer in the
    /// model's vocabulary.
    pub fn apply(&mut self, before: &State, action: Action) -> Option<Answer> {
        let held = |worker: usize| match before.workers[worker] {
            Worker::Holding { key, fence, .. }
            | Worker::Settling { key, fence }
            | Worker::Resolving { key, fence }
            | Worker::Effects { key, fence, .. }
            | Worker::Claimed { key, fence, .. } => (key, fence),
            Worker::Idle | Worker::Unwritten { .. } => {
                panic!("worker {worker} holds no guard lease")
            }
        };
        Some(match action {
            Action::Tick => {
                self.clock.advance(Duration::from_secs(1));
                return None;
            }
            Action::ClockStep => {
                self.clock.advance(self.ttl);
                return None;
            }
            Action::Crash { worker } => {
                self.leases[worker] = None;
                self.job_leases[worker] = None;
                return None;
            }
            Action::Acquire { worker, key } => {
                let (digest, owner) = self.request(key, worker);
                let req = AcquireRequest {
                    digest,
                    fingerprint: None,
                    owner: &owner,
                    ttl: self.ttl,
                };
                match self.store.acquire(&req).expect("acquire") {
                    Acquired::Granted(lease) => {
                        let answer = Answer::Granted {
                            fence: u8::try_from(lease.fence).expect("small fence"),
                            expires: self.seconds(lease.expires_at),
                        };
                        self.leases[worker] = Some(lease);
                        answer
                    }
                    Acquired::AlreadySucceeded(_) => Answer::AlreadySucceeded,
                    Acquired::AlreadyFailed(_) => Answer::AlreadyFailed,
                    Acquired::Busy { .. } => Answer::Busy,
                    Acquired::KeyConflict { .. } => panic!("no fingerprints in the model"),
                }
            }
            Action::ClaimEffects { worker, key } => {
                let (digest, owner) = self.request(key, worker);
                let req = AcquireRequest {
                    digest,
                    fingerprint: None,
                    owner: &owner,
                    ttl: self.ttl,
                };
                match self.store.claim_effects(&req).expect("claim_effects") {
                    EffectsClaim::Claimed(lease, _) => {
                        let answer = Answer::Claimed {
                            fence: u8::try_from(lease.fence).expect("small fence"),
                            until: self.seconds(lease.expires_at),
                        };
                        self.leases[worker] = Some(lease);
                        answer
                    }
                    EffectsClaim::NotInDoubt(_) => Answer::NotInDoubt,
                    EffectsClaim::Missing => Answer::Missing,
                    EffectsClaim::KeyConflict { .. } => panic!("no fingerprints in the model"),
                }
            }
            Action::Renew { worker } => {
                let (_, fence) = held(worker);
                match self
                    .store
                    .renew(&self.lease(worker, fence), self.ttl)
                    .expect("renew")
                {
                    Renewed::Extended(until) => Answer::Extended {
                        until: self.seconds(until),
                    },
                    Renewed::Stale => Answer::Stale,
                }
            }
            Action::FinalizeSucceeded { worker } | Action::FinalizeSucceededLost { worker } => {
                let (_, fence) = held(worker);
                let finalized = self
                    .store
                    .finalize_succeeded(
                        &self.lease(worker, fence),
                        None,
                        self.ttl,
                        Retention::Forever,
                        None,
                    )
                    .expect("finalize_succeeded");
                match finalized {
                    Finalized::Committed => Answer::Committed,
                    Finalized::Stale => Answer::Stale,
                    Finalized::EffectsAborted => panic!("no transactional effects here"),
                }
            }
            Action::FinalizeFailed { worker } => {
                let (_, fence) = held(worker);
                let failure = FinalFailure::new("model", "final failure");
                fence_check(
                    self.store
                        .finalize_failed(&self.lease(worker, fence), &failure, Retention::Forever)
                        .expect("finalize_failed"),
                )
            }
            Action::Release { worker } | Action::SettleRelease { worker } => {
                let (_, fence) = held(worker);
                fence_check(
                    self.store
                        .release(&self.lease(worker, fence), Some("model"))
                        .expect("release"),
                )
            }
            Action::SettleRead { worker } => {
                // What the pipeline's settle decides after a stale release: ours only if the
                // row is succeeded under our fence.
                let (key, fence) = held(worker);
                let row = self.store.get(&self.keys[key]).expect("get");
                Answer::Read {
                    ours: row.is_some_and(|row| {
                        row.state == JobState::Succeeded && row.fence == u64::from(fence)
                    }),
                }
            }
            Action::Claim { worker, job } => {
                let owner = format!("w{worker}");
                let queues = [format!("q{job}")];
                let req = ClaimRequest {
                    worker: &owner,
                    queues: &queues,
                    limit: 1,
                    ttl: self.ttl,
                };
                let mut claimed = self.queue.claim(&req).expect("claim");
                let claimed = match claimed.len() {
                    0 => return None, // the model's claim is not enabled either
                    1 => claimed.remove(0),
                    n => panic!("one queue of one job claimed {n} jobs"),
                };
                assert_eq!(claimed.job.id, self.jobs[job], "the claimed job");
                let expires = self.seconds(claimed.lease.expires_at);
                let guard = match claimed.guard.expect("every model job is guarded") {
                    Acquired::Granted(lease) => {
                        assert_eq!(
                            lease.expires_at, claimed.lease.expires_at,
                            "the guard lease ends with the job's"
                        );
                        let fence = u8::try_from(lease.fence).expect("small fence");
                        self.leases[worker] = Some(lease);
                        GuardAnswer::Granted { fence }
                    }
                    Acquired::AlreadySucceeded(_) => GuardAnswer::AlreadySucceeded,
                    Acquired::AlreadyFailed(_) => GuardAnswer::AlreadyFailed,
                    Acquired::Busy { .. } => GuardAnswer::Busy,
                    Acquired::KeyConflict { .. } => panic!("no fingerprints in the model"),
                };
                let fence = u8::try_from(claimed.lease.fence).expect("small job fence");
                self.job_leases[worker] = Some(claimed.lease);
                Answer::JobClaimed {
                    fence,
                    expires,
                    guard,
                }
            }
            Action::Complete { worker } => {
                let (_, fence) = held(worker);
                let lease = self.lease(worker, fence);
                self.complete(
                    before,
                    worker,
                    CompleteAs::Succeeded,
                    Some(GuardFinish::Succeeded {
                        lease: &lease,
                        result: None,
                        effects_ttl: self.ttl,
                        has_effects: true,
                        retention: Retention::Forever,
                    }),
                )
            }
            Action::CompleteRetry { worker } => {
                let (_, fence) = held(worker);
                let lease = self.lease(worker, fence);
                self.complete(
                    before,
                    worker,
                    CompleteAs::Retry {
                        delay: Duration::ZERO,
                        error: AttemptError::new(ErrorKind::Retryable, "model"),
                    },
                    Some(GuardFinish::Release {
                        lease: &lease,
                        error: Some("model"),
                    }),
                )
            }
            Action::CompleteUnwritten { worker } => {
                let Worker::Unwritten { then, .. } = before.workers[worker] else {
                    panic!("worker {worker} has no unwritten completion");
                };
                let outcome = match then {
                    Then::Succeeded => CompleteAs::Succeeded,
                    Then::Dead => CompleteAs::Dead {
                        error: AttemptError::new(ErrorKind::GuardFailed, "model"),
                    },
                    Then::Snooze => CompleteAs::Snooze {
                        delay: Duration::ZERO,
                        error: None,
                    },
                    Then::Retry => CompleteAs::Retry {
                        delay: Duration::ZERO,
                        error: AttemptError::new(ErrorKind::LeaseLost, "model"),
                    },
                };
                self.complete(before, worker, outcome, None)
            }
            Action::Reap => {
                let reaped = self.queue.reap(usize::MAX).expect("reap");
                for job in &reaped {
                    // Guarded jobs are idempotent and never out of attempts here.
                    assert_eq!(job.state, QueueState::Retrying, "reaped {job:?}");
                }
                Answer::Reaped {
                    jobs: u8::try_from(reaped.len()).expect("few jobs"),
                }
            }
            Action::FinishEffects { worker, done } => {
                let (_, fence) = held(worker);
                let outcome = if done {
                    EffectsOutcome::Done
                } else {
                    EffectsOutcome::InDoubt { error: "model" }
                };
                fence_check(
                    self.store
                        .finish_effects(&self.lease(worker, fence), outcome)
                        .expect("finish_effects"),
                )
            }
        })
    }

    /// The real row of `key` in the model's vocabulary.
    fn row(&self, key: usize) -> Option<Row> {
        let row = self.store.get(&self.keys[key]).expect("get")?;
        Some(Row {
            state: match row.state {
                JobState::Running => RowState::Running,
                JobState::Released => RowState::Released,
                JobState::Succeeded => RowState::Succeeded,
                JobState::Failed => RowState::Failed,
            },
            fence: u8::try_from(row.fence).expect("small fence"),
            expires: row.lease_expires_at.map(|t| self.seconds(t)),
            effects: match row.effects {
                EffectsState::None => Effects::None,
                EffectsState::Pending => Effects::Pending,
                EffectsState::Done => Effects::Done,
                EffectsState::InDoubt => Effects::InDoubt,
            },
        })
    }

    /// The real row of model job `job` in the model's vocabulary. A waiting job must be due: the
    /// model's retries, snoozes and reaps are due at once.
    fn job(&self, job: usize, key: usize) -> JobRow {
        let row = self
            .queue
            .get(self.jobs[job])
            .expect("get job")
            .expect("jobs are never deleted here");
        let state = match row.state {
            QueueState::Pending | QueueState::Scheduled | QueueState::Retrying => {
                assert!(
                    row.run_at <= self.clock.now(),
                    "job {job} waits but is not due"
                );
                queue::JobState::Waiting
            }
            QueueState::Running => queue::JobState::Running,
            QueueState::Succeeded => queue::JobState::Succeeded,
            QueueState::Dead => queue::JobState::Dead,
            other => panic!("job {job} is {other:?}, a state the model has no name for"),
        };
        JobRow {
            key,
            state,
            fence: u8::try_from(row.fence).expect("small job fence"),
            expires: row.lease_expires_at.map(|t| self.seconds(t)),
        }
    }
}

fn fence_check(check: FenceCheck) -> Answer {
    match check {
        FenceCheck::Applied => Answer::Applied,
        FenceCheck::Stale => Answer::Stale,
    }
}

/// Replays `actions` from the model's initial state on fresh real stores, requiring the same
/// answer and the same rows (every key's, every queued job's) after every step.
pub fn replay(model: &LeaseModel, actions: &[Action]) {
    let mut real = Real::new(model.bounds);
    let mut state = model.initial();
    for (i, &action) in actions.iter().enumerate() {
        let (next, expected) = model
            .step(&state, action)
            .unwrap_or_else(|| panic!("step {i}: {action:?} is not enabled"));
        let got = real.apply(&state, action);
        assert_eq!(got, expected, "step {i}: {action:?} in {actions:?}");
        for key in 0..model.bounds.keys {
            assert_eq!(
                real.row(key),
                next.store.rows[key],
                "step {i}: key {key}'s row after {action:?} in {actions:?}"
            );
        }
        for (job, row) in next.queue.jobs.iter().enumerate() {
            assert_eq!(
                real.job(job, row.key),
                *row,
                "step {i}: job {job}'s row after {action:?} in {actions:?}"
            );
        }
        state = next;
    }
}

/// A small deterministic generator (SplitMix64), so a failing seed can be replayed.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        usize::try_from(z % n as u64).expect("below n")
    }
}

/// The kind of an answer, for counting which kinds a set of traces reached: its variant, and for
/// a job claim the guard's variant too (`JobClaimed(Busy)`).
fn kind(answer: &Answer) -> String {
    let name = |debug: String| {
        debug
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    match answer {
        Answer::JobClaimed { guard, .. } => format!("JobClaimed({})", name(format!("{guard:?}"))),
        other => name(format!("{other:?}")),
    }
}

/// Replays `traces` random traces of `steps` enabled actions each (seeds 0..traces) and returns
/// the kinds of answer the model gave along them (see [`kind`]).
pub fn replay_random_traces(model: &LeaseModel, traces: u64, steps: usize) -> BTreeSet<String> {
    let mut answers = BTreeSet::new();
    for seed in 0..traces {
        let mut rng = SplitMix(seed);
        let mut state = model.initial();
        let mut trace = Vec::new();
        for _ in 0..steps {
            let mut enabled = Vec::new();
            model.enabled(&state, &mut enabled);
            let action = enabled[rng.below(enabled.len())];
            let (next, answer) = model.step(&state, action).expect("enabled");
            if let Some(answer) = answer {
                answers.insert(kind(&answer));
            }
            trace.push(action);
            state = next;
        }
        replay(model, &trace);
    }
    answers
}

/// Replays the path to every state the checker visits within `bounds`; returns how many.
pub fn replay_every_path(bounds: Bounds) -> usize {
    let model = LeaseModel::new(bounds);
    let (recorder, paths) = PathRecorder::new_with_accessor();
    model.checker().visitor(recorder).spawn_bfs().join();
    let paths = paths();
    let count = paths.len();
    for path in paths {
        replay(&model, &path.into_actions());
    }
    count
}
