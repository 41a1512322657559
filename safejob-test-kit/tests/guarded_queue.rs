//! A queued guarded job runs the same pipeline as the Runner: panics, releases, timeouts,
//! retries, the payload's key and fingerprint. Each test says which code change it catches.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use safejob_core::{
    EffectsContext, EffectsMode, Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome,
    PerformContext, SafeJob,
    queue::{
        EnqueueOptions, ErrorKind, GuardedJob, JobId, KindOptions, MemoryQueue, NewJob, Queue,
        QueueState, QueueStore, Ran, Registry, RetryPolicy, Worker,
    },
    store::{AcquireRequest, Acquired, EffectsState, JobRecord, JobState},
};
use safejob_test_kit::ManualClock;
use serde::{Deserialize, Serialize};
use serde_json::json;

const TTL: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(7);
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("declined")]
struct Declined;

fn tally() -> MutexGuard<'static, BTreeMap<String, u32>> {
    static TALLY: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());
    TALLY.lock().unwrap_or_else(|p| p.into_inner())
}

fn bump(name: String) -> u32 {
    let mut tally = tally();
    let n = tally.entry(name).or_insert(0);
    *n += 1;
    *n
}

fn seen(name: &str) -> u32 {
    tally().get(name).copied().unwrap_or(0)
}

thread_local! {
    /// The clock of the test running on this thread, for jobs that take time.
    static CLOCK: RefCell<Option<Arc<ManualClock>>> = const { RefCell::new(None) };
    /// The queue of the test running on this thread, for jobs that call its reaper.
    static STORE: RefCell<Option<Arc<MemoryQueue>>> = const { RefCell::new(None) };
}

fn advance(by: Duration) {
    CLOCK.with(|c| c.borrow().as_ref().expect("a clock").advance(by));
}

/// What a [`Charge`] does when it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Act {
    Succeed,
    /// `perform` fails on its first run, succeeds after.
    FailOnce,
    /// `perform` panics.
    Panic,
    /// `on_succeeded_once` panics.
    EffectsPanic,
    /// `on_succeeded_once` fails.
    EffectsFail,
    /// `perform` outlives its claim: the queue lease expires and the reaper takes the job back.
    Reaped,
    /// `perform` outlives its guard lease, which a rival takes over; it then fails for good.
    GuardTakenThenFail,
    /// `perform` asks to be retried after this many seconds.
    RetryLater(u64),
    /// `perform` takes this many seconds (of the worker's clock), then fails.
    SlowFail(u64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charge {
    id: String,
    cents: u64,
    act: Act,
}

fn charge(id: &str, act: Act) -> Charge {
    Charge {
        id: id.to_owned(),
        cents: 100,
        act,
    }
}

impl SafeJob for Charge {
    type Error = Declined;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.id])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Declined> {
        let runs = bump(format!("{}:perform", self.id));
        match self.act {
            Act::Succeed | Act::EffectsPanic | Act::EffectsFail => Ok(Outcome::done()),
            Act::GuardTakenThenFail => {
                advance(TTL + Duration::from_secs(1));
                let store = STORE.with(|s| s.borrow().clone()).expect("a store");
                let taken = store.guards().acquire(&AcquireRequest {
                    digest: *self.key().unwrap().digest(),
                    fingerprint: self.guard_fingerprint().unwrap(),
                    owner: "rival",
                    ttl: TTL,
                });
                assert!(matches!(taken, Ok(Acquired::Granted(_))), "{taken:?}");
                Ok(Outcome::failed("declined", "card declined"))
            }
            Act::Reaped => {
                advance(TTL + Duration::from_secs(1));
                let store = STORE.with(|s| s.borrow().clone()).expect("a store");
                assert_eq!(store.reap(10).unwrap().len(), 1);
                Ok(Outcome::done())
            }
            Act::FailOnce if runs == 1 => Err(Declined),
            Act::FailOnce => Ok(Outcome::done()),
            Act::Panic => panic!("perform blew up"),
            Act::RetryLater(secs) => Ok(Outcome::retry_after(Duration::from_secs(secs))),
            Act::SlowFail(secs) => {
                advance(Duration::from_secs(secs));
                Err(Declined)
            }
        }
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), Declined> {
        match self.act {
            Act::EffectsPanic => panic!("ledger exploded"),
            Act::EffectsFail => return Err(Declined),
            _ => {}
        }
        bump(format!("{}:effects", self.id));
        Ok(())
    }
}

impl GuardedJob for Charge {
    const KIND: &'static str = "test.charge";
    fn options() -> KindOptions {
        KindOptions::new()
            .max_attempts(3)
            .retry(RetryPolicy::schedule([RETRY]))
            .timeout(TIMEOUT)
    }
}

/// Another kind with the same payload shape and the same keys as [`Charge`].
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refund {
    id: String,
    cents: u64,
    act: Act,
}

impl SafeJob for Refund {
    type Error = Declined;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.id])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Declined> {
        bump(format!("{}:refund", self.id));
        Ok(Outcome::done())
    }
}

impl GuardedJob for Refund {
    const KIND: &'static str = "test.refund";
}

/// A job that pins its own fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pinned {
    id: String,
    note: String,
}

impl SafeJob for Pinned {
    type Error = Declined;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["pinned", &self.id])
    }
    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Ok(Some(Fingerprint::of_bytes(self.id.as_bytes())))
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Declined> {
        bump(format!("{}:pinned", self.id));
        Ok(Outcome::done())
    }
}

impl GuardedJob for Pinned {
    const KIND: &'static str = "test.pinned";
}

/// A job that chooses where its effects run (`Some(true)`: transactional, `Some(false)`: after
/// commit, `None`: the worker's setting), counts where they ran, and fails them when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Moded {
    id: String,
    transactional: Option<bool>,
    fail: bool,
}

impl SafeJob for Moded {
    type Error = Declined;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["moded", &self.id])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Declined> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Declined> {
        bump(format!("{}:tx={}", self.id, ctx.is_transactional()));
        if self.fail { Err(Declined) } else { Ok(()) }
    }
    fn effects_mode(&self) -> Option<EffectsMode> {
        self.transactional.map(|tx| {
            if tx {
                EffectsMode::Transactional
            } else {
                EffectsMode::AfterCommit
            }
        })
    }
}

impl GuardedJob for Moded {
    const KIND: &'static str = "test.moded";
    fn options() -> KindOptions {
        KindOptions::new()
            .max_attempts(3)
            .retry(RetryPolicy::schedule([RETRY]))
    }
}

struct Setup {
    clock: Arc<ManualClock>,
    store: Arc<MemoryQueue>,
    queue: Queue,
    worker: Worker,
}

fn setup() -> Setup {
    setup_with(EffectsMode::AfterCommit)
}

fn setup_with(effects: EffectsMode) -> Setup {
    let clock = Arc::new(ManualClock::default());
    CLOCK.with(|c| *c.borrow_mut() = Some(clock.clone()));
    let store = Arc::new(MemoryQueue::with_clock(clock.clone()));
    STORE.with(|s| *s.borrow_mut() = Some(store.clone()));
    let mut registry = Registry::new();
    registry
        .register_guarded::<Charge>()
        .register_guarded::<Refund>()
        .register_guarded::<Pinned>()
        .register_guarded::<Moded>();
    let worker = Worker::builder(store.clone(), registry)
        .clock(clock.clone())
        .lease_ttl(TTL)
        .effects(effects)
        .build()
        .unwrap();
    Setup {
        clock,
        queue: Queue::new(store.clone()),
        store,
        worker,
    }
}

impl Setup {
    fn enqueue<J: GuardedJob>(&self, job: &J) -> JobId {
        self.queue
            .enqueue_guarded(job, &EnqueueOptions::new())
            .unwrap()
            .id()
    }

    fn enqueue_row(&self, row: &NewJob) -> JobId {
        match self.store.enqueue(row).unwrap() {
            safejob_core::queue::Enqueued::Inserted { id, .. } => id,
            other => panic!("not inserted: {other:?}"),
        }
    }

    /// Runs what is due and answers how each job ended, by id.
    fn run(&self) -> BTreeMap<JobId, Ran> {
        let worked = self.worker.run_once().unwrap();
        worked.into_iter().map(|w| (w.id, w.ran)).collect()
    }

    fn guard(&self, job: &impl SafeJob) -> JobRecord {
        let digest = *job.key().unwrap().digest();
        self.store
            .guards()
            .get(&digest)
            .unwrap()
            .expect("a guard row")
    }

    fn state(&self, id: JobId) -> QueueState {
        self.queue.get(id).unwrap().unwrap().state
    }

    fn last_error(&self, id: JobId) -> String {
        let job = self.queue.get(id).unwrap().unwrap();
        job.errors.last().expect("an error").message.clone()
    }
}

/// A panic in `perform` is the attempt's error (`panicked`, retried), the guard is released at
/// once, and the worker goes on with its other jobs: nothing unwinds out of `run_once`.
///
/// Catches: the queue re-raising the pipeline's panic (tried: `resume_unwind` in the handler's
/// `Ended::Panicked` arm makes `run_once` unwind); `GiveBack::Panicked` completed as another
/// error kind, or with no guard release.
#[test]
fn perform_panic_is_recorded_releases_the_guard_and_spares_the_worker() {
    let s = setup();
    let job = charge("panic-1", Act::Panic);
    let id = s.enqueue(&job);
    let other = s.enqueue(&charge("panic-1-other", Act::Succeed));
    let ran = s.run();
    assert_eq!(
        ran[&id],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::Panicked
        }
    );
    assert_eq!(ran[&other], Ran::Succeeded);
    assert_eq!(s.last_error(id), "panicked: perform blew up");
    let guard = s.guard(&job);
    assert_eq!(guard.state, JobState::Released);
    assert_eq!(guard.last_error.as_deref(), Some("perform panicked"));
}

/// A panic in after-commit effects leaves the job succeeded and its effects in doubt, recorded
/// with the Runner's words; the worker lives on.
///
/// Catches: the queue dropping the in-doubt mark for a panic (tried: recording `Done` for a
/// panic in `run_effects`), or writing its own text instead of the Runner's.
#[test]
fn effects_panic_leaves_them_in_doubt() {
    let s = setup();
    let job = charge("effects-panic-1", Act::EffectsPanic);
    let id = s.enqueue(&job);
    assert_eq!(s.run()[&id], Ran::Succeeded);
    assert_eq!(s.state(id), QueueState::Succeeded);
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.effects),
        (JobState::Succeeded, EffectsState::InDoubt)
    );
    assert_eq!(
        guard.last_error.as_deref(),
        Some("on_succeeded_once panicked")
    );
}

/// An error from `perform` gives the guard back with the completion, so the retry is granted the
/// guard at once (not answered busy until the lease would have expired).
///
/// Catches: the release on a failure replaced by no guard half (`GuardFinish::Release` dropped
/// from `InCompletion::release`: the retry then snoozes on a busy key).
#[test]
fn perform_error_releases_the_guard_for_the_retry() {
    let s = setup();
    let job = charge("fail-once-1", Act::FailOnce);
    let id = s.enqueue(&job);
    assert_eq!(
        s.run()[&id],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::Retryable
        }
    );
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.last_error.as_deref()),
        (JobState::Released, Some("declined"))
    );
    s.clock.advance(RETRY);
    assert_eq!(s.run()[&id], Ran::Succeeded);
    assert_eq!(seen("fail-once-1:perform"), 2);
    assert_eq!(seen("fail-once-1:effects"), 1);
    let guard = s.guard(&job);
    assert_eq!((guard.state, guard.attempts), (JobState::Succeeded, 2));
}

/// An attempt that fails after running its kind's whole timeout (by the worker's clock) is
/// recorded `timed_out`; one that fails a second earlier is `retryable`.
///
/// Catches: the timeout arm removed (`timed_out` always false), always true, or `>=` turned into
/// `>` (the attempt that took exactly the timeout).
#[test]
fn an_attempt_that_ran_its_whole_timeout_is_timed_out() {
    let s = setup();
    let slow = s.enqueue(&charge("slow-10", Act::SlowFail(TIMEOUT.as_secs())));
    assert_eq!(
        s.run()[&slow],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::TimedOut
        }
    );
    let quick = s.enqueue(&charge("slow-9", Act::SlowFail(TIMEOUT.as_secs() - 1)));
    assert_eq!(
        s.run()[&quick],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::Retryable
        }
    );
}

/// `Outcome::RetryLater(Some(d))` retries after `d` while attempts are left, and is dead on the
/// last attempt; the guard is released either way.
///
/// Catches: the attempts-left decision changed (`<` to `<=`, `==` or `>`, or a constant): the
/// last attempt then retries, or the first uses the policy's delay instead of `d`.
#[test]
fn retry_later_uses_its_delay_until_the_last_attempt() {
    let s = setup();
    let job = charge("later-1", Act::RetryLater(5));
    let id = s
        .queue
        .enqueue_guarded(&job, &EnqueueOptions::new().max_attempts(2))
        .unwrap()
        .id();
    assert_eq!(
        s.run()[&id],
        Ran::Retrying {
            delay: Duration::from_secs(5),
            kind: ErrorKind::Retryable
        }
    );
    assert_eq!(s.guard(&job).state, JobState::Released);
    s.clock.advance(Duration::from_secs(5));
    assert_eq!(
        s.run()[&id],
        Ran::Dead {
            kind: ErrorKind::Retryable
        }
    );
    assert_eq!(s.last_error(id), "perform asked to retry later");
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.last_error.as_deref()),
        (JobState::Released, Some("perform asked to retry later"))
    );
}

/// A payload whose key is not the key its guard was enqueued with is dead, never run, and the
/// guard it was granted goes back.
///
/// Catches: the worker's check that the decoded job's key matches the claimed digest replaced by
/// `true` (the job then runs under another key's lease).
#[test]
fn a_payload_whose_key_is_not_its_guards_is_dead_and_not_run() {
    let s = setup();
    let posing = charge("key-mismatch-posing", Act::Succeed);
    let victim = charge("key-mismatch-victim", Act::Succeed);
    let mut row = NewJob::guarded(&posing, &EnqueueOptions::new()).unwrap();
    let spec = row.guard.as_mut().unwrap();
    spec.digest = *victim.key().unwrap().digest();
    let id = s.enqueue_row(&row);
    assert_eq!(
        s.run()[&id],
        Ran::Dead {
            kind: ErrorKind::Fatal
        }
    );
    assert_eq!(
        s.last_error(id),
        "the payload's key does not match the job's guard"
    );
    assert_eq!(seen("key-mismatch-posing:perform"), 0);
    assert_eq!(s.guard(&victim).state, JobState::Released);
}

/// The same key enqueued again with other parameters is a key conflict — dead, never run —
/// not a replay of the first job's result, though neither job declares a fingerprint.
///
/// Catches: `GuardedJob::guard_fingerprint` defaulting to the job's own (none), as before.
#[test]
fn a_guarded_job_is_fingerprinted_by_default() {
    let s = setup();
    let first = charge("fp-default", Act::Succeed);
    let id = s.enqueue(&first);
    assert_eq!(s.run()[&id], Ran::Succeeded);
    let again = s.enqueue(&first);
    assert_eq!(s.run()[&again], Ran::Succeeded, "a true duplicate replays");
    let other = s.enqueue(&Charge {
        cents: 999,
        ..first.clone()
    });
    assert_eq!(
        s.run()[&other],
        Ran::Dead {
            kind: ErrorKind::KeyConflict
        }
    );
    assert_eq!(seen("fp-default:perform"), 1);
    assert_eq!(
        s.guard(&first).fingerprint,
        Some(Fingerprint::of_json("test.charge", &first).unwrap())
    );
}

/// The kind is part of the default fingerprint: one key used by two kinds with identical
/// payloads is a key conflict.
///
/// Catches: the default fingerprint hashing the payload without the kind
/// (`Fingerprint::of(self)` in `guard_fingerprint`, or `of_json` dropping its `kind`).
#[test]
fn one_key_across_two_kinds_is_a_key_conflict() {
    let s = setup();
    let id = s.enqueue(&charge("cross-kind", Act::Succeed));
    assert_eq!(s.run()[&id], Ran::Succeeded);
    let refund = Refund {
        id: "cross-kind".into(),
        cents: 100,
        act: Act::Succeed,
    };
    let id = s.enqueue(&refund);
    assert_eq!(
        s.run()[&id],
        Ran::Dead {
            kind: ErrorKind::KeyConflict
        }
    );
    assert_eq!(seen("cross-kind:refund"), 0);
}

/// The worker recomputes the fingerprint of the payload it decoded and compares it with the one
/// stored in the job's guard: a payload changed after enqueue is dead as a key conflict, never
/// run (the claim's acquire, which uses the stored fingerprint, cannot see it).
///
/// Catches: the worker's fingerprint check removed, or replaced by `true`.
#[test]
fn a_payload_changed_after_enqueue_is_dead_not_run() {
    let s = setup();
    let job = charge("tampered", Act::Succeed);
    let mut row = NewJob::guarded(&job, &EnqueueOptions::new()).unwrap();
    row.payload["cents"] = json!(1_000_000);
    let id = s.enqueue_row(&row);
    assert_eq!(
        s.run()[&id],
        Ran::Dead {
            kind: ErrorKind::KeyConflict
        }
    );
    assert!(
        s.last_error(id)
            .starts_with("the payload's fingerprint does not match"),
        "{}",
        s.last_error(id)
    );
    assert_eq!(seen("tampered:perform"), 0);
    assert_eq!(s.guard(&job).state, JobState::Released);
}

/// A guarded job stored without a fingerprint (enqueued before guarded jobs had one by default)
/// is not compared after decoding: it runs, once, as it did then, and its key's row has no
/// fingerprint. An upgrade must not dead-letter every job already waiting.
///
/// Catches: the grace for rows without a fingerprint removed (such a job is then dead as a key
/// conflict); and, with `a_payload_changed_after_enqueue_is_dead_not_run`, a grace that skips the
/// comparison for every row.
#[test]
fn a_job_enqueued_without_a_fingerprint_still_runs_once() {
    let s = setup();
    let job = charge("legacy", Act::Succeed);
    let mut row = NewJob::guarded(&job, &EnqueueOptions::new()).unwrap();
    row.guard.as_mut().expect("a guard").fingerprint = None;
    let id = s.enqueue_row(&row);
    assert_eq!(s.run()[&id], Ran::Succeeded);
    assert_eq!(seen("legacy:perform"), 1);
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.fingerprint),
        (JobState::Succeeded, None)
    );
}

/// A job that declares its own fingerprint keeps it: the guard stores exactly that one, and the
/// worker's check agrees with it (parameters outside it may change).
///
/// Catches: `guard_fingerprint` ignoring the job's own fingerprint.
#[test]
fn a_jobs_own_fingerprint_is_kept() {
    let s = setup();
    let job = Pinned {
        id: "pinned-1".into(),
        note: "a".into(),
    };
    let row = NewJob::guarded(&job, &EnqueueOptions::new()).unwrap();
    let own = Fingerprint::of_bytes(b"pinned-1");
    assert_eq!(row.guard.unwrap().fingerprint, Some(own));
    let id = s.enqueue(&job);
    assert_eq!(s.run()[&id], Ran::Succeeded);
    let id = s.enqueue(&Pinned {
        note: "b".into(),
        ..job.clone()
    });
    assert_eq!(
        s.run()[&id],
        Ran::Succeeded,
        "replayed: same own fingerprint"
    );
    assert_eq!(seen("pinned-1:pinned"), 1);
    assert_eq!(s.guard(&job).fingerprint, Some(own));
}

/// A job reaped while it ran (its claim's lease expired) completes stale: nothing of its
/// success is written, its effects never run, and the guard lease it still holds is released at
/// once, so the requeued attempt need not wait for it to expire.
///
/// Catches: `Exec::finish` releasing the guard on the wrong answers (`== Completed::Stale`
/// turned into `!=`): the guard then stays held by a dead attempt.
#[test]
fn a_job_reaped_while_it_ran_releases_its_guard() {
    let s = setup();
    let job = charge("reaped-1", Act::Reaped);
    let id = s.enqueue(&job);
    assert_eq!(s.run()[&id], Ran::Stale);
    assert_eq!(seen("reaped-1:effects"), 0);
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.last_error.as_deref()),
        (JobState::Released, Some("queue lease lost"))
    );
    assert_eq!(s.state(id), QueueState::Retrying);
}

/// Transactional effects that fail roll the whole completion back; the attempt is then
/// completed as a retry that gives the guard back, with the effects' error recorded.
///
/// Catches: `Exec::finish` releasing the guard itself after the rolled-back completion
/// (`== Completed::Stale` turned into `!=`): the retry's completion then finds the guard stale
/// and the job is left running; and `GiveBack::EffectsRolledBack` completed without the guard.
#[test]
fn failed_transactional_effects_roll_back_and_retry() {
    let s = setup_with(EffectsMode::Transactional);
    let job = charge("tx-fail-1", Act::EffectsFail);
    let id = s.enqueue(&job);
    assert_eq!(
        s.run()[&id],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::Retryable
        }
    );
    assert_eq!(
        s.last_error(id),
        "transactional effects failed and were rolled back: declined"
    );
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.effects, guard.last_error.as_deref()),
        (
            JobState::Released,
            EffectsState::None,
            Some("transactional effects failed; finalize rolled back")
        )
    );
}

/// A queued guarded job's own effects mode wins over the worker's, and a job that does not
/// choose gets the worker's: one worker completes a transactional charge and an after-commit
/// webhook side by side. The mode is read from what the store recorded: a failing
/// transactional hook rolls the completion back and retries, a failing after-commit hook leaves
/// the job succeeded with its guard's effects in doubt.
///
/// Catches: the pipeline ignoring the job's mode (`run.effects` only) or the worker's
/// (`unwrap_or(EffectsMode::AfterCommit)`); both were tried and both failed here.
#[test]
fn a_jobs_own_effects_mode_wins_over_the_workers() {
    use EffectsMode::{AfterCommit, Transactional};
    for worker_mode in [AfterCommit, Transactional] {
        let s = setup_with(worker_mode);
        for (own, expected) in [
            (Some(true), Transactional),
            (Some(false), AfterCommit),
            (None, worker_mode),
        ] {
            let case = format!("worker {worker_mode:?}, job {own:?}");
            let name = format!("mode-{worker_mode:?}-{own:?}");
            let ok = Moded {
                id: format!("{name}-ok"),
                transactional: own,
                fail: false,
            };
            let failing = Moded {
                id: format!("{name}-failing"),
                transactional: own,
                fail: true,
            };
            let (ok_id, failing_id) = (s.enqueue(&ok), s.enqueue(&failing));
            let ran = s.run();
            assert_eq!(ran[&ok_id], Ran::Succeeded, "{case}");
            let tx = expected == Transactional;
            assert_eq!(seen(&format!("{}:tx={tx}", ok.id)), 1, "{case}");
            assert_eq!(seen(&format!("{}:tx={}", ok.id, !tx)), 0, "{case}");
            let guard = s.guard(&failing);
            if tx {
                assert_eq!(
                    ran[&failing_id],
                    Ran::Retrying {
                        delay: RETRY,
                        kind: ErrorKind::Retryable
                    },
                    "{case}"
                );
                assert_eq!(
                    (guard.state, guard.effects),
                    (JobState::Released, EffectsState::None),
                    "{case}"
                );
            } else {
                assert_eq!(ran[&failing_id], Ran::Succeeded, "{case}");
                assert_eq!(
                    (guard.state, guard.effects),
                    (JobState::Succeeded, EffectsState::InDoubt),
                    "{case}"
                );
            }
        }
    }
}

/// A permanent failure decided after the guard lease was taken over finalizes nothing: the
/// completion's guard half is stale, so the job is retried as `lease_lost` and the key stays the
/// rival's — not completed as succeeded or dead on the word of a stale attempt.
///
/// Catches: a stale guarded `finalize_failed` reported as applied (`pipeline::fail`), which the
/// queue would then complete from its report without writing.
#[test]
fn a_failure_decided_after_the_guard_was_taken_is_lease_lost() {
    let s = setup();
    let job = charge("taken-then-fail-1", Act::GuardTakenThenFail);
    let id = s.enqueue(&job);
    assert_eq!(
        s.run()[&id],
        Ran::Retrying {
            delay: RETRY,
            kind: ErrorKind::LeaseLost
        }
    );
    let guard = s.guard(&job);
    assert_eq!(
        (guard.state, guard.fence, guard.owner.as_deref()),
        (JobState::Running, 2, Some("rival"))
    );
}
