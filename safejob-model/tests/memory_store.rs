//! Model-based tests: traces of the model's actions, random and model-generated, replayed
//! against the real `safejob_core::MemoryStore` on a `ManualClock`. At every step the real
//! store must give the model's answer (granted with the same fence and expiry, busy, replay,
//! extended, stale, committed, applied, claimed, not in doubt, missing) and hold the same row
//! (state, fence, expiry, effects) for every key.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    FinalFailure, KeyDigest, LeaseStore, MemoryStore, Retention,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobState, Lease, Renewed,
    },
};
use safejob_model::{
    Action, Bounds, LeaseModel, State, Worker,
    store::{Answer, Effects, Row, RowState},
};
use safejob_test_kit::ManualClock;
use stateright::{Checker, Model, PathRecorder};

/// The real store, its clock, and the lease each model worker holds on it.
struct Real {
    store: MemoryStore,
    clock: Arc<ManualClock>,
    start: DateTime<Utc>,
    keys: Vec<KeyDigest>,
    leases: Vec<Option<Lease>>,
    ttl: Duration,
}

impl Real {
    fn new(bounds: Bounds) -> Self {
        let clock = Arc::new(ManualClock::default());
        Self {
            store: MemoryStore::with_clock(clock.clone()),
            start: clock.now(),
            clock,
            keys: (0..bounds.keys)
                .map(|k| KeyDigest::of(&format!("model-key-{k}")))
                .collect(),
            leases: vec![None; bounds.workers],
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

    /// Performs `action` (taken in model state `before`) on the real store; its answer in the
    /// model's vocabulary.
    fn apply(&mut self, before: &State, action: Action) -> Option<Answer> {
        let held = |worker: usize| match before.workers[worker] {
            Worker::Holding { key, fence, .. }
            | Worker::Settling { key, fence }
            | Worker::Resolving { key, fence }
            | Worker::Effects { key, fence, .. } => (key, fence),
            Worker::Idle | Worker::Claimed { .. } | Worker::Unwritten { .. } => {
                panic!("worker {worker} holds no lease taken directly from the store")
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
            Action::Claim { .. }
            | Action::Complete { .. }
            | Action::CompleteRetry { .. }
            | Action::CompleteUnwritten { .. }
            | Action::Reap => panic!("queue actions are not replayed here (copies is 0)"),
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
}

fn fence_check(check: FenceCheck) -> Answer {
    match check {
        FenceCheck::Applied => Answer::Applied,
        FenceCheck::Stale => Answer::Stale,
    }
}

/// Replays `actions` from the model's initial state on a fresh real store, requiring the same
/// answer and the same rows after every step.
fn replay(model: &LeaseModel, actions: &[Action]) {
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

/// Caught when checked: the same break as below (`MemoryStore` ignoring the fence), seen as a
/// `finish_effects` applied where the model answers stale.
#[test]
fn random_traces_get_the_models_answers_from_the_memory_store() {
    // A clock that runs far enough for many takeovers within 80 steps.
    let model = LeaseModel::new(Bounds {
        workers: 3,
        keys: 2,
        ttl: 2,
        max_time: 120,
        max_fence: u8::MAX,
        copies: 0,
    });
    let mut answers = std::collections::HashSet::new();
    for seed in 0..400 {
        let mut rng = SplitMix(seed);
        let mut state = model.initial();
        let mut trace = Vec::new();
        for _ in 0..80 {
            let mut enabled = Vec::new();
            model.enabled(&state, &mut enabled);
            let action = enabled[rng.below(enabled.len())];
            let (next, answer) = model.step(&state, action).expect("enabled");
            if let Some(answer) = answer {
                answers.insert(std::mem::discriminant(&answer));
            }
            trace.push(action);
            state = next;
        }
        replay(&model, &trace);
    }
    // The traces reached every kind of answer, so every primitive was compared.
    assert_eq!(
        answers.len(),
        12,
        "kinds of answers seen: {}",
        answers.len()
    );
}

/// Caught when checked: `MemoryStore`'s fenced writes made to ignore the fence (its `fenced`
/// filter without `row.fence == lease.fence`) — a takeover's victim then commits here, while the
/// model says stale. The random traces above fail on the same break.
#[test]
fn every_model_generated_path_gets_the_models_answers_from_the_memory_store() {
    // Every state the checker visits, reached by its path from the initial state: three
    // workers on one key with the clock to 4, and two workers on two keys with the clock to 2.
    for bounds in [
        Bounds {
            workers: 3,
            keys: 1,
            ttl: 2,
            max_time: 4,
            max_fence: 3,
            copies: 0,
        },
        Bounds {
            workers: 2,
            keys: 2,
            ttl: 2,
            max_time: 2,
            max_fence: 2,
            copies: 0,
        },
    ] {
        let model = LeaseModel::new(bounds);
        let (recorder, paths) = PathRecorder::new_with_accessor();
        model.checker().visitor(recorder).spawn_bfs().join();
        let paths = paths();
        assert!(paths.len() > 5_000, "{} paths", paths.len());
        for path in paths {
            replay(&model, &path.into_actions());
        }
    }
}
