//! Workers, keys and the store as one [`stateright::Model`].

use stateright::{Model, Property};

use crate::{
    Mutation,
    queue::{GuardAnswer, JobState, QueueModel, Then},
    store::{Answer, RowState, StoreModel},
};

/// The sizes that bound the exhaustive check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Workers competing for the keys.
    pub workers: usize,
    /// Idempotency keys.
    pub keys: usize,
    /// Lease length (and effects window, and claim window), in store seconds.
    pub ttl: u8,
    /// The store clock never passes this.
    pub max_time: u8,
    /// States whose fence on any key passes this, or whose fence on any queued job passes it
    /// by more than one, are not explored further (3 = two takeovers).
    pub max_fence: u8,
    /// How deliveries arrive. 0: from outside, straight to the store (the `Runner`), any key to
    /// any idle worker at any time. n ≥ 1: each key is enqueued n times in the queue (1:
    /// deduplicated at enqueue; 2: `allow_duplicates`) and workers claim jobs; the reaper runs.
    pub copies: u8,
}

impl Bounds {
    /// The bounds `safejob-model check` uses by default: 3 workers, 2 keys, ttl 2, the clock up
    /// to 4, fences up to 3 (a first grant and two takeovers).
    pub const CHECK: Self = Self {
        workers: 3,
        keys: 2,
        ttl: 2,
        max_time: 4,
        max_fence: 3,
        copies: 0,
    };

    /// The bounds `safejob-model check --queue` uses: 3 workers, 1 key enqueued twice, ttl 2,
    /// the clock up to 4, fences up to 3 (jobs' up to 4).
    pub const QUEUE: Self = Self {
        workers: 3,
        keys: 1,
        ttl: 2,
        max_time: 4,
        max_fence: 3,
        copies: 2,
    };
}

/// What one worker is doing. A crash returns it to [`Worker::Idle`] with nothing remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Worker {
    /// Waiting for a delivery.
    Idle,
    /// Granted a lease on `key` (performing the job); believes it ends at `expires`.
    Holding {
        /// The key index.
        key: usize,
        /// The lease's fence.
        fence: u8,
        /// The expiry the store last granted this lease.
        expires: u8,
    },
    /// Sent `finalize_succeeded` and lost the answer: will settle with a fenced release.
    Settling {
        /// The key index.
        key: usize,
        /// The lease's fence.
        fence: u8,
    },
    /// Its settling release was stale: will read the row to learn whether it won.
    Resolving {
        /// The key index.
        key: usize,
        /// The lease's fence.
        fence: u8,
    },
    /// Won the finalize (or a recovery claim) and runs `on_succeeded_once`.
    Effects {
        /// The key index.
        key: usize,
        /// The fence it won with.
        fence: u8,
        /// The end of its effects window.
        window: u8,
    },
    /// Claimed a queued job and was granted its key's guard: performing.
    Claimed {
        /// The job index.
        job: usize,
        /// The job lease's fence.
        job_fence: u8,
        /// The key index.
        key: usize,
        /// The guard lease's fence.
        fence: u8,
        /// The guard lease's expiry.
        expires: u8,
    },
    /// Claimed a queued job whose guard was not granted (or was lost): completes it without
    /// the guard.
    Unwritten {
        /// The job index.
        job: usize,
        /// The job lease's fence.
        job_fence: u8,
        /// How it completes.
        then: Then,
    },
}

/// One step of the model: a worker's call into the store, a crash, or the clock moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// An idle worker receives a delivery of `key` (first or duplicate) and acquires.
    Acquire {
        /// The worker.
        worker: usize,
        /// The key index.
        key: usize,
    },
    /// The holder renews its lease.
    Renew {
        /// The worker.
        worker: usize,
    },
    /// The holder finalizes `succeeded` and learns the answer.
    FinalizeSucceeded {
        /// The worker.
        worker: usize,
    },
    /// The holder finalizes `succeeded`; the store applies it (or refuses it) but the answer is
    /// lost on the way back (`StoreError::AmbiguousCommit`).
    FinalizeSucceededLost {
        /// The worker.
        worker: usize,
    },
    /// The holder finalizes `failed` (a `FinalFailure`).
    FinalizeFailed {
        /// The worker.
        worker: usize,
    },
    /// The holder releases after a retryable error.
    Release {
        /// The worker.
        worker: usize,
    },
    /// A settling worker's fenced release (the pipeline's `settle`).
    SettleRelease {
        /// The worker.
        worker: usize,
    },
    /// A resolving worker reads the row: its success if `succeeded` under its fence.
    SettleRead {
        /// The worker.
        worker: usize,
    },
    /// The effects worker records how they ended.
    FinishEffects {
        /// The worker.
        worker: usize,
        /// `Done`, or `InDoubt` (they failed).
        done: bool,
    },
    /// An idle worker deliberately recovers a key's effects (`Runner::recover_effects`).
    ClaimEffects {
        /// The worker.
        worker: usize,
        /// The key index.
        key: usize,
    },
    /// A busy worker crashes and forgets everything.
    Crash {
        /// The worker.
        worker: usize,
    },
    /// The store clock advances one second (workers pause past their TTL by letting it).
    Tick,
    /// The store clock steps forward a whole TTL at once.
    ClockStep,
    /// An idle worker claims a waiting job (the guard's acquire in the same step).
    Claim {
        /// The worker.
        worker: usize,
        /// The job index.
        job: usize,
    },
    /// The claimer completes the job `succeeded` with the guard's finalize, in one step.
    Complete {
        /// The worker.
        worker: usize,
    },
    /// The claimer completes the job `retry` with the guard's release (a retryable error).
    CompleteRetry {
        /// The worker.
        worker: usize,
    },
    /// The claimer completes a job whose guard it does not hold.
    CompleteUnwritten {
        /// The worker.
        worker: usize,
    },
    /// The reaper requeues every job whose lease expired.
    Reap,
}

/// Facts about the history of a run that the properties judge, kept beside the state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ghost {
    /// Per key: how many `finalize_succeeded` calls committed (saturates at 2).
    pub successes: Vec<u8>,
    /// Per key: how many times effects were started by a finalize winner, not by a deliberate
    /// claim (saturates at 2).
    pub automatic_effects: Vec<u8>,
    /// A fenced write whose fence was not the row's current fence changed the row.
    pub stale_write_applied: bool,
    /// A worker that lost a finalize's answer settled it as its own success.
    pub settled_committed: bool,
}

/// A state of the whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// The store.
    pub store: StoreModel,
    /// The queued jobs (none when deliveries come from outside).
    pub queue: QueueModel,
    /// Each worker's local state.
    pub workers: Vec<Worker>,
    /// The history facts.
    pub ghost: Ghost,
}

/// The lease protocol: `bounds.workers` workers, `bounds.keys` keys and one store, with an
/// optional deliberate bug.
#[derive(Debug, Clone, Copy)]
pub struct LeaseModel {
    /// The sizes.
    pub bounds: Bounds,
    /// The bug to plant, if any.
    pub mutation: Option<Mutation>,
}

/// Property names, shared by the checker, the binary and the tests.
pub mod properties {
    /// No key is finalized `succeeded` twice.
    pub const ONE_SUCCESS: &str = "at most one success per key";
    /// Only a finalize winner starts effects automatically, so at most once per key.
    pub const EFFECTS_ONCE: &str = "effects run automatically at most once per key";
    /// No two workers run one key's effects within their windows.
    pub const EFFECTS_EXCLUSIVE: &str = "effects never run by two workers at once";
    /// No superseded fence changes a row.
    pub const NO_STALE_WRITE: &str = "no stale write applied";
    /// No two workers hold unexpired leases on one key.
    pub const ONE_LIVE_LEASE: &str = "at most one live lease per key";
    /// From every state, fair progress finishes every key.
    pub const NO_KEY_STUCK: &str = "no key stuck: fair progress finishes every key";
    /// Example: a key succeeds under fence 3, after two takeovers.
    pub const TWO_TAKEOVERS: &str = "example: a key succeeds after two takeovers";
    /// Example: a lost commit is settled as the worker's own success.
    pub const SETTLED_COMMIT: &str = "example: a lost commit settles as committed";
    /// A queued job completes `succeeded` only once its key has succeeded.
    pub const JOB_BACKED: &str = "a job completes succeeded only when its key succeeded";
}

impl LeaseModel {
    /// The correct protocol within `bounds`.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            mutation: None,
        }
    }

    /// The protocol within `bounds` with `mutation` planted.
    pub fn mutated(bounds: Bounds, mutation: Mutation) -> Self {
        Self {
            bounds,
            mutation: Some(mutation),
        }
    }

    /// The initial state: an empty store at time 0, every worker idle.
    pub fn initial(&self) -> State {
        State {
            store: StoreModel::new(self.bounds.keys),
            queue: QueueModel::new(self.bounds.keys, self.bounds.copies),
            workers: vec![Worker::Idle; self.bounds.workers],
            ghost: Ghost {
                successes: vec![0; self.bounds.keys],
                automatic_effects: vec![0; self.bounds.keys],
                stale_write_applied: false,
                settled_committed: false,
            },
        }
    }

    /// Every action enabled in `state`, clock bound included.
    pub fn enabled(&self, state: &State, actions: &mut Vec<Action>) {
        for (worker, local) in state.workers.iter().enumerate() {
            match local {
                Worker::Idle => {
                    for key in 0..self.bounds.keys {
                        if self.bounds.copies == 0 {
                            actions.push(Action::Acquire { worker, key });
                        }
                        actions.push(Action::ClaimEffects { worker, key });
                    }
                    for (job, row) in state.queue.jobs.iter().enumerate() {
                        if row.state == JobState::Waiting {
                            actions.push(Action::Claim { worker, job });
                        }
                    }
                }
                Worker::Claimed { .. } => {
                    actions.push(Action::Complete { worker });
                    actions.push(Action::CompleteRetry { worker });
                }
                Worker::Unwritten { .. } => actions.push(Action::CompleteUnwritten { worker }),
                Worker::Holding { .. } => {
                    actions.push(Action::Renew { worker });
                    actions.push(Action::FinalizeSucceeded { worker });
                    actions.push(Action::FinalizeSucceededLost { worker });
                    actions.push(Action::FinalizeFailed { worker });
                    actions.push(Action::Release { worker });
                }
                Worker::Settling { .. } => actions.push(Action::SettleRelease { worker }),
                Worker::Resolving { .. } => actions.push(Action::SettleRead { worker }),
                Worker::Effects { .. } => {
                    actions.push(Action::FinishEffects { worker, done: true });
                    actions.push(Action::FinishEffects {
                        worker,
                        done: false,
                    });
                }
            }
            if *local != Worker::Idle {
                actions.push(Action::Crash { worker });
            }
        }
        if state.queue.reapable(state.store.now) {
            actions.push(Action::Reap);
        }
        if state.store.now < self.bounds.max_time {
            actions.push(Action::Tick);
        }
        if state.store.now.saturating_add(self.bounds.ttl) <= self.bounds.max_time {
            actions.push(Action::ClockStep);
        }
    }

    /// Applies `action` to `state`: the next state and the store's answer (`None` for a crash
    /// or a clock move). `None` overall when `action` is not enabled in `state`.
    pub fn step(&self, state: &State, action: Action) -> Option<(State, Option<Answer>)> {
        let mut next = state.clone();
        let ttl = self.bounds.ttl;
        let mutation = self.mutation;
        let answer = match action {
            Action::Tick => {
                next.store.now = next.store.now.checked_add(1)?;
                None
            }
            Action::ClockStep => {
                next.store.now = next.store.now.checked_add(ttl)?;
                None
            }
            Action::Crash { worker } => {
                *next.workers.get_mut(worker)? = Worker::Idle;
                None
            }
            Action::Acquire { worker, key } => {
                expect_idle(state, worker, key)?;
                let answer = next.store.acquire(key, ttl, mutation);
                if let Answer::Granted { fence, expires } = answer {
                    next.workers[worker] = Worker::Holding {
                        key,
                        fence,
                        expires,
                    };
                }
                Some(answer)
            }
            Action::ClaimEffects { worker, key } => {
                expect_idle(state, worker, key)?;
                let answer = next.store.claim_effects(key, ttl, mutation);
                if let Answer::Claimed { fence, until } = answer {
                    next.workers[worker] = Worker::Effects {
                        key,
                        fence,
                        window: until,
                    };
                }
                Some(answer)
            }
            Action::Renew { worker } => {
                let Worker::Holding { key, fence, .. } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.renew(key, fence, ttl);
                next.workers[worker] = match answer {
                    Answer::Extended { until } => Worker::Holding {
                        key,
                        fence,
                        expires: until,
                    },
                    // The lease is lost: the worker stops performing.
                    _ => Worker::Idle,
                };
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::FinalizeSucceeded { worker } | Action::FinalizeSucceededLost { worker } => {
                let Worker::Holding { key, fence, .. } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.finalize_succeeded(key, fence, ttl, mutation);
                if answer == Answer::Committed {
                    bump(&mut next.ghost.successes[key]);
                }
                let lost = matches!(action, Action::FinalizeSucceededLost { .. });
                next.workers[worker] = match (answer, lost) {
                    (_, true) => Worker::Settling { key, fence },
                    (Answer::Committed, false) => {
                        bump(&mut next.ghost.automatic_effects[key]);
                        Worker::Effects {
                            key,
                            fence,
                            window: state.store.now.saturating_add(ttl),
                        }
                    }
                    (_, false) => Worker::Idle,
                };
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::FinalizeFailed { worker } => {
                let Worker::Holding { key, fence, .. } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.finalize_failed(key, fence);
                next.workers[worker] = Worker::Idle;
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::Release { worker } => {
                let Worker::Holding { key, fence, .. } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.release(key, fence, mutation);
                next.workers[worker] = Worker::Idle;
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::SettleRelease { worker } => {
                let Worker::Settling { key, fence } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.release(key, fence, mutation);
                next.workers[worker] = match answer {
                    // Applied: the finalize did not commit and now never will.
                    Answer::Applied => Worker::Idle,
                    _ => Worker::Resolving { key, fence },
                };
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::SettleRead { worker } => {
                let Worker::Resolving { key, fence } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.read_settled(key, fence, mutation);
                next.workers[worker] = if answer == (Answer::Read { ours: true }) {
                    bump(&mut next.ghost.automatic_effects[key]);
                    next.ghost.settled_committed = true;
                    Worker::Effects {
                        key,
                        fence,
                        window: next.store.rows[key]
                            .and_then(|row| row.expires)
                            .unwrap_or(state.store.now),
                    }
                } else {
                    Worker::Idle
                };
                Some(answer)
            }
            Action::Claim { worker, job } => {
                (state.workers.get(worker)? == &Worker::Idle).then_some(())?;
                let answer = next.queue.claim(&mut next.store, job, ttl, mutation)?;
                let Answer::JobClaimed {
                    fence: job_fence,
                    expires,
                    guard,
                } = answer
                else {
                    return None;
                };
                let key = next.queue.jobs[job].key;
                next.workers[worker] = match guard {
                    GuardAnswer::Granted { fence } => Worker::Claimed {
                        job,
                        job_fence,
                        key,
                        fence,
                        expires,
                    },
                    GuardAnswer::AlreadySucceeded => Worker::Unwritten {
                        job,
                        job_fence,
                        then: Then::Succeeded,
                    },
                    GuardAnswer::AlreadyFailed => Worker::Unwritten {
                        job,
                        job_fence,
                        then: Then::Dead,
                    },
                    GuardAnswer::Busy => Worker::Unwritten {
                        job,
                        job_fence,
                        then: Then::Snooze,
                    },
                };
                Some(answer)
            }
            Action::Complete { worker } => {
                let Worker::Claimed {
                    job,
                    job_fence,
                    key,
                    fence,
                    ..
                } = *state.workers.get(worker)?
                else {
                    return None;
                };
                let answer = next.queue.complete_succeeded(
                    &mut next.store,
                    job,
                    job_fence,
                    key,
                    fence,
                    ttl,
                    mutation,
                );
                if next.store.rows[key] != state.store.rows[key]
                    && next.store.rows[key].is_some_and(|row| row.state == RowState::Succeeded)
                {
                    bump(&mut next.ghost.successes[key]);
                }
                next.workers[worker] = match answer {
                    Answer::Applied if next.store.rows[key] != state.store.rows[key] => {
                        bump(&mut next.ghost.automatic_effects[key]);
                        Worker::Effects {
                            key,
                            fence,
                            window: state.store.now.saturating_add(ttl),
                        }
                    }
                    // The pipeline reports the lease lost; the job is retried.
                    Answer::GuardStale => Worker::Unwritten {
                        job,
                        job_fence,
                        then: Then::Retry,
                    },
                    _ => Worker::Idle,
                };
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::CompleteRetry { worker } => {
                let Worker::Claimed {
                    job,
                    job_fence,
                    key,
                    fence,
                    ..
                } = *state.workers.get(worker)?
                else {
                    return None;
                };
                let answer = next.queue.complete_retry(
                    &mut next.store,
                    job,
                    job_fence,
                    key,
                    fence,
                    mutation,
                );
                next.workers[worker] = Worker::Idle;
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
            Action::CompleteUnwritten { worker } => {
                let Worker::Unwritten {
                    job,
                    job_fence,
                    then,
                } = *state.workers.get(worker)?
                else {
                    return None;
                };
                let answer = next.queue.complete_unwritten(job, job_fence, then);
                next.workers[worker] = Worker::Idle;
                Some(answer)
            }
            Action::Reap => Some(next.queue.reap(state.store.now)),
            Action::FinishEffects { worker, done } => {
                let Worker::Effects { key, fence, .. } = *state.workers.get(worker)? else {
                    return None;
                };
                let answer = next.store.finish_effects(key, fence, done);
                next.workers[worker] = Worker::Idle;
                note_stale_write(&mut next, state, key, fence);
                Some(answer)
            }
        };
        Some((next, answer))
    }

    /// Whether fair progress from `state` finishes every key: no more crashes, lost answers or
    /// failures; each worker in turn takes its next step of a successful run (an idle one
    /// acquires the first key that is not terminal), and the clock advances one second whenever
    /// no worker can move. Finished: every key `succeeded` or `failed`, every worker idle.
    /// Gives up (false) after a bound far above any run's length.
    pub fn can_finish(&self, state: &State) -> bool {
        let unbounded = Self {
            bounds: Bounds {
                max_time: u8::MAX,
                ..self.bounds
            },
            mutation: self.mutation,
        };
        let mut state = state.clone();
        for _ in 0..64 {
            let finished = state.workers.iter().all(|w| *w == Worker::Idle)
                && state.store.rows.iter().all(|row| {
                    row.is_some_and(|row| {
                        matches!(row.state, RowState::Succeeded | RowState::Failed)
                    })
                })
                && state
                    .queue
                    .jobs
                    .iter()
                    .all(|j| matches!(j.state, JobState::Succeeded | JobState::Dead));
            if finished {
                return true;
            }
            let mut moved = false;
            for worker in 0..state.workers.len() {
                let action = match state.workers[worker] {
                    Worker::Idle if self.bounds.copies > 0 => {
                        // A job whose key is held by a live lease would only be snoozed
                        // until that lease ends: wait for the clock instead.
                        let now = state.store.now;
                        let waiting = state.queue.jobs.iter().position(|j| {
                            j.state == JobState::Waiting
                                && !state.store.rows[j.key].is_some_and(|row| {
                                    row.state == RowState::Running
                                        && row.expires.is_some_and(|t| t > now)
                                })
                        });
                        match waiting {
                            Some(job) => Action::Claim { worker, job },
                            None => continue,
                        }
                    }
                    Worker::Idle => {
                        let open = state.store.rows.iter().position(|row| {
                            !row.is_some_and(|row| {
                                matches!(row.state, RowState::Succeeded | RowState::Failed)
                            })
                        });
                        match open {
                            Some(key) => Action::Acquire { worker, key },
                            None => continue,
                        }
                    }
                    Worker::Holding { .. } => Action::FinalizeSucceeded { worker },
                    Worker::Settling { .. } => Action::SettleRelease { worker },
                    Worker::Resolving { .. } => Action::SettleRead { worker },
                    Worker::Effects { .. } => Action::FinishEffects { worker, done: true },
                    Worker::Claimed { .. } => Action::Complete { worker },
                    Worker::Unwritten { .. } => Action::CompleteUnwritten { worker },
                };
                if let Some((next, _)) = unbounded.step(&state, action)
                    && next != state
                {
                    state = next;
                    moved = true;
                }
            }
            if !moved {
                let wait = if state.queue.reapable(state.store.now) {
                    Action::Reap
                } else {
                    Action::Tick
                };
                match unbounded.step(&state, wait) {
                    Some((next, _)) => state = next,
                    None => return false,
                }
            }
        }
        false
    }
}

/// `Some(())` if `worker` exists, is idle, and `key` exists.
fn expect_idle(state: &State, worker: usize, key: usize) -> Option<()> {
    (state.workers.get(worker)? == &Worker::Idle && key < state.store.rows.len()).then_some(())
}

fn bump(count: &mut u8) {
    *count = count.saturating_add(1).min(2);
}

/// Records a fenced write by `fence` that changed `key`'s row although the row carried another
/// fence before it.
fn note_stale_write(next: &mut State, before: &State, key: usize, fence: u8) {
    let old = before.store.rows[key];
    if old.is_some_and(|row| row.fence != fence) && next.store.rows[key] != old {
        next.ghost.stale_write_applied = true;
    }
}

fn live_leases(state: &State, key: usize) -> usize {
    state
        .workers
        .iter()
        .filter(|w| match w {
            Worker::Holding {
                key: k, expires, ..
            }
            | Worker::Claimed {
                key: k, expires, ..
            } => *k == key && *expires > state.store.now,
            _ => false,
        })
        .count()
}

fn live_effects(state: &State, key: usize) -> usize {
    state
        .workers
        .iter()
        .filter(|w| matches!(w, Worker::Effects { key: k, window, .. } if *k == key && *window > state.store.now))
        .count()
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.initial()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.enabled(state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.step(state, action).map(|(next, _)| next)
    }

    fn within_boundary(&self, state: &State) -> bool {
        state
            .store
            .rows
            .iter()
            .flatten()
            .all(|row| row.fence <= self.bounds.max_fence)
            // A snoozed or reaped job is claimed again with a new fence and no clock move: the
            // job fences need their own bound.
            && state
                .queue
                .jobs
                .iter()
                .all(|job| job.fence <= self.bounds.max_fence.saturating_add(1))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        use properties::*;
        let mut properties = vec![
            Property::always(ONE_SUCCESS, |_, s: &State| {
                s.ghost.successes.iter().all(|n| *n <= 1)
            }),
            Property::always(EFFECTS_ONCE, |_, s: &State| {
                s.ghost.automatic_effects.iter().all(|n| *n <= 1)
            }),
            Property::always(EFFECTS_EXCLUSIVE, |_, s: &State| {
                (0..s.store.rows.len()).all(|key| live_effects(s, key) <= 1)
            }),
            Property::always(NO_STALE_WRITE, |_, s: &State| !s.ghost.stale_write_applied),
            Property::always(ONE_LIVE_LEASE, |_, s: &State| {
                (0..s.store.rows.len()).all(|key| live_leases(s, key) <= 1)
            }),
            Property::always(NO_KEY_STUCK, |m: &Self, s: &State| m.can_finish(s)),
            Property::always(JOB_BACKED, |_, s: &State| {
                s.queue.jobs.iter().all(|j| {
                    j.state != JobState::Succeeded
                        || s.store.rows[j.key].is_some_and(|row| row.state == RowState::Succeeded)
                })
            }),
            Property::sometimes(TWO_TAKEOVERS, |_, s: &State| {
                s.store
                    .rows
                    .iter()
                    .flatten()
                    .any(|row| row.state == RowState::Succeeded && row.fence >= 3)
            }),
        ];
        // Lost commits are modelled on the direct path only (see docs/model.md).
        if self.bounds.copies == 0 {
            properties.push(Property::sometimes(SETTLED_COMMIT, |_, s: &State| {
                s.ghost.settled_committed
            }));
        }
        properties
    }
}
