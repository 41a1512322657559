//! The core's [`Worker`](safejob_core::queue::Worker), end to end over the store: retries and
//! backoff, dead letters, unknown kinds and bad payloads, panics, timeouts, guarded duplicates and
//! a dead worker's guarded job; with the jobs these cases enqueue.

use std::{cell::RefCell, collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    BUSY_RETRY_MAX, EffectsContext, FinalFailure, Fingerprint, IdempotencyKey, KeyDigest, KeyError,
    ListFilter, ListQuery, Outcome, PerformContext, Retention, Runner, SafeJob,
    queue::{
        CompleteAs, Completed, Enqueued, ErrorKind, GuardedJob, JobId, KindOptions, QueueJob,
        QueueState, QueueStore, Ran, Registry, RetryPolicy, WorkContext, WorkError,
    },
    store::{AcquireRequest, Acquired, EffectsState, JobState, Renewed, StoreError},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    QueueHarness,
    fixtures::{Case, CaseError, PAST_TTL, bump, count},
};
use crate::ManualClock;

/// Always fails, retryably: 3 attempts, 10 s then 20 s apart.
#[derive(Serialize, Deserialize)]
pub(super) struct Failing {
    tag: String,
}

impl QueueJob for Failing {
    const KIND: &'static str = "conformance.failing";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        Err(WorkError::Retryable(CaseError(format!(
            "failure {}",
            ctx.attempt()
        ))))
    }
    fn options() -> KindOptions {
        KindOptions::new()
            .max_attempts(3)
            .retry(RetryPolicy::schedule([
                Duration::from_secs(10),
                Duration::from_secs(20),
            ]))
    }
}

/// Panics on its first attempt, then succeeds.
#[derive(Serialize, Deserialize)]
pub(super) struct Panicky {
    tag: String,
}

impl QueueJob for Panicky {
    const KIND: &'static str = "conformance.panicky";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        if ctx.attempt() == 1 {
            panic!("conformance job panics on purpose");
        }
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().retry(RetryPolicy::schedule([Duration::ZERO]))
    }
}

thread_local! {
    /// The worker clock a [`Slow`] job moves while it runs (it runs on the case's thread).
    static SLOW_CLOCK: RefCell<Option<Arc<ManualClock>>> = const { RefCell::new(None) };
}

/// Works in 1-second steps of the worker's clock until told to stop; times out after 5 s.
#[derive(Serialize, Deserialize)]
pub(super) struct Slow {
    tag: String,
}

impl QueueJob for Slow {
    const KIND: &'static str = "conformance.slow";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        for step in 0..1000 {
            ctx.checkpoint()?;
            ctx.progress(step, None, "");
            SLOW_CLOCK.with(|c| {
                if let Some(clock) = &*c.borrow() {
                    clock.advance(Duration::from_secs(1));
                }
            });
        }
        bump(&self.tag);
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().timeout(Duration::from_secs(5))
    }
}

/// A guarded charge: counts performs and effects per tag.
#[derive(Serialize, Deserialize)]
pub(super) struct Charge {
    tag: String,
    cents: u64,
}

impl Charge {
    pub(super) fn new(tag: String, cents: u64) -> Self {
        Self { tag, cents }
    }
}

impl SafeJob for Charge {
    type Error = CaseError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["conformance-charge", &self.tag])
    }
    fn fingerprint(&self) -> Result<Option<Fingerprint>, safejob_core::FingerprintError> {
        Fingerprint::of(&self.cents).map(Some)
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, CaseError> {
        bump(&format!("{}:perform", self.tag));
        Ok(Outcome::json(json!({"charged": self.cents})))
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), CaseError> {
        bump(&format!("{}:effects", self.tag));
        Ok(())
    }
}

impl GuardedJob for Charge {
    const KIND: &'static str = "conformance.charge";
}

/// A guarded job that declares no effects; its `on_succeeded_once` counts calls that must not
/// happen.
#[derive(Serialize, Deserialize)]
pub(super) struct Payout {
    tag: String,
}

impl SafeJob for Payout {
    type Error = CaseError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["conformance-payout", &self.tag])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, CaseError> {
        bump(&format!("{}:perform", self.tag));
        Ok(Outcome::json(json!({"paid": 1})))
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), CaseError> {
        bump(&format!("{}:effects", self.tag));
        Ok(())
    }
    fn has_effects(&self) -> bool {
        false
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "conformance.payout";
}

/// A worker retries a failing job after each delay of its policy (on the store clock) and
/// dead-letters it after its last attempt, with every attempt's error.
pub fn worker_retries_with_backoff_then_dead_letters(harness: &dyn QueueHarness) {
    let c = Case::new("worker_retries_with_backoff_then_dead_letters", harness);
    let tag = format!("{}:failing", c.prefix);
    let queue = c.queue_client();
    let id = c
        .ok_enqueue(queue.enqueue_with(&Failing { tag: tag.clone() }, &c.options()))
        .id();
    let mut registry = Registry::new();
    registry.register::<Failing>();
    let worker = c.worker(registry);
    let first = c.run_once(&worker);
    let retrying = |delay| Ran::Retrying {
        delay,
        kind: ErrorKind::Retryable,
    };
    ensure!(
        c,
        first == vec![(id, retrying(Duration::from_secs(10)))],
        "attempt 1: {first:?}"
    );
    c.advance(Duration::from_secs(9));
    ensure!(
        c,
        c.run_once(&worker).is_empty(),
        "retried before its 10 s delay"
    );
    c.advance(Duration::from_secs(2));
    let second = c.run_once(&worker);
    ensure!(
        c,
        second == vec![(id, retrying(Duration::from_secs(20)))],
        "attempt 2: {second:?}"
    );
    c.advance(Duration::from_secs(19));
    ensure!(
        c,
        c.run_once(&worker).is_empty(),
        "retried before its 20 s delay"
    );
    c.advance(Duration::from_secs(2));
    let third = c.run_once(&worker);
    ensure!(
        c,
        third
            == vec![(
                id,
                Ran::Dead {
                    kind: ErrorKind::Retryable
                }
            )],
        "attempt 3 of 3: expected dead, got {third:?}"
    );
    let row = c.get(id);
    let history: Vec<(u32, &str)> = row
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.as_str()))
        .collect();
    ensure!(
        c,
        row.state == QueueState::Dead
            && history == vec![(1, "failure 1"), (2, "failure 2"), (3, "failure 3")],
        "dead with its error history: {} {history:?}",
        row.state
    );
    ensure!(
        c,
        count(&tag) == 3,
        "the job ran {} times, expected 3",
        count(&tag)
    );
}

/// A job of an unknown kind, or whose payload does not decode, is dead at once with the reason
/// recorded, and never runs.
pub fn worker_discards_unknown_kinds_and_bad_payloads(harness: &dyn QueueHarness) {
    let c = Case::new("worker_discards_unknown_kinds_and_bad_payloads", harness);
    let unknown = c.enqueue(c.new_job("never-registered"));
    let mut bad = c.new_job("x");
    bad.kind = Failing::KIND.to_owned();
    bad.payload = json!({"not": "a failing job"});
    let undecodable = c.enqueue(bad);
    let mut registry = Registry::new();
    registry.register::<Failing>();
    let worker = c.worker(registry);
    let ran: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    let want = BTreeMap::from([
        (
            unknown,
            Ran::Dead {
                kind: ErrorKind::UnknownKind,
            },
        ),
        (
            undecodable,
            Ran::Dead {
                kind: ErrorKind::UndecodablePayload,
            },
        ),
    ]);
    ensure!(c, ran == want, "expected both dead at once: {ran:?}");
    for id in [unknown, undecodable] {
        let row = c.get(id);
        ensure!(
            c,
            row.state == QueueState::Dead
                && row.errors.len() == 1
                && !row.errors[0].message.is_empty(),
            "dead with a clear recorded error: {row:?}"
        );
    }
}

/// A panic in a job is caught and recorded as a retryable failure; the next attempt runs.
pub fn worker_catches_panics_as_retryable(harness: &dyn QueueHarness) {
    let c = Case::new("worker_catches_panics_as_retryable", harness);
    let tag = format!("{}:panicky", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Panicky { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Panicky>();
    let worker = c.worker(registry);
    let first = c.run_once(&worker);
    ensure!(
        c,
        first
            == vec![(
                id,
                Ran::Retrying {
                    delay: Duration::ZERO,
                    kind: ErrorKind::Panicked
                }
            )],
        "a panic: expected a retry, got {first:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.errors.len() == 1 && row.errors[0].message.contains("panics on purpose"),
        "the panic message is recorded: {:?}",
        row.errors
    );
    let second = c.run_once(&worker);
    ensure!(
        c,
        second == vec![(id, Ran::Succeeded)],
        "attempt 2: {second:?}"
    );
    ensure!(c, count(&tag) == 2, "ran {} times", count(&tag));
}

/// Timeouts are cooperative: past its timeout the context says stop, and the stopped attempt is
/// recorded as timed out and retried. Its last progress is persisted with the completion.
pub fn worker_times_out_cooperatively(harness: &dyn QueueHarness) {
    let c = Case::new("worker_times_out_cooperatively", harness);
    let tag = format!("{}:slow", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Slow { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Slow>();
    let clock = Arc::new(ManualClock::default());
    let worker = c.worker_on_clock(registry, clock.clone());
    SLOW_CLOCK.with(|c| *c.borrow_mut() = Some(clock));
    let ran = c.run_once(&worker);
    SLOW_CLOCK.with(|c| *c.borrow_mut() = None);
    ensure!(
        c,
        matches!(ran.as_slice(), [(got, Ran::Retrying { kind: ErrorKind::TimedOut, .. })] if *got == id),
        "a job past its timeout: expected a TimedOut retry, got {ran:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.errors.last().map(|e| e.kind) == Some(ErrorKind::TimedOut),
        "the timeout is recorded: {:?}",
        row.errors
    );
    ensure!(
        c,
        row.progress.as_ref().is_some_and(|p| p.current == 4),
        "the last progress (step 4, coalesced: written with the completion) must be stored: {:?}",
        row.progress
    );
    ensure!(c, count(&tag) == 0, "a stopped job must not finish");
}

/// A guarded enqueue is deduplicated by its idempotency key: while the first job is live, the
/// copies insert nothing and answer its id; once it has finished, a new copy is inserted and
/// completes `succeeded` without running (the guard replays).
///
/// Catches: `NewJob::guarded` without the default unique key (the copies are inserted), and a
/// store that loses the unique key of guarded rows.
pub fn guarded_enqueue_dedupes_by_key(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_enqueue_dedupes_by_key", harness);
    let tag = format!("{}:dedupe", c.prefix);
    let queue = c.queue_client();
    let job = Charge {
        tag: tag.clone(),
        cents: 300,
    };
    let answers: Vec<Enqueued> = (0..3)
        .map(|_| c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())))
        .collect();
    let first = answers[0].id();
    ensure!(
        c,
        !answers[0].is_duplicate()
            && answers[1..]
                .iter()
                .all(|a| a.is_duplicate() && a.id() == first),
        "3 guarded enqueues of one key: expected one insert and two duplicates of it, got {answers:?}"
    );
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = c.worker(registry);
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == [(first, Ran::Succeeded)],
        "the one inserted job runs and succeeds: {ran:?}"
    );
    let later = c.ok_enqueue(queue.enqueue_guarded(&job, &c.options()));
    ensure!(
        c,
        !later.is_duplicate() && later.id() != first,
        "after the first job finished, a new copy is inserted: {later:?}"
    );
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == [(later.id(), Ran::Succeeded)],
        "the later copy completes succeeded (a replay): {ran:?}"
    );
    let performs = count(&format!("{tag}:perform"));
    let effects = count(&format!("{tag}:effects"));
    ensure!(
        c,
        performs == 1 && effects == 1,
        "deduplicated copies: {performs} performs, {effects} effects; expected 1 and 1"
    );
}

/// Duplicate enqueues of one guarded job, inserted on purpose (`allow_duplicates`), succeed
/// once: one perform, one effect. A copy claimed while another holds the key is snoozed for at
/// most [`BUSY_RETRY_MAX`], not for the rest of the holder's lease, and completes `succeeded`
/// without running once the key has succeeded. A key already succeeded outside the queue
/// completes the queued job without running it.
///
/// Catches: a busy snooze that waits for the holder's whole lease (the second round, only
/// `BUSY_RETRY_MAX` later, then finds nothing due), and duplicates that run twice.
pub fn guarded_duplicates_succeed_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_duplicates_succeed_once", harness);
    let tag = format!("{}:charge", c.prefix);
    let queue = c.queue_client();
    let job = Charge {
        tag: tag.clone(),
        cents: 500,
    };
    let ids: Vec<JobId> = (0..3)
        .map(|_| {
            c.ok_enqueue(queue.enqueue_guarded(&job, &c.options().allow_duplicates()))
                .id()
        })
        .collect();
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = c.worker(registry.clone());
    let first: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    let succeeded = first.values().filter(|r| **r == Ran::Succeeded).count();
    let snoozed = first
        .values()
        .filter(|r| matches!(r, Ran::Snoozed { delay } if *delay <= BUSY_RETRY_MAX))
        .count();
    ensure!(
        c,
        first.len() == 3 && succeeded == 1 && snoozed == 2,
        "one claim of 3 duplicates: expected 1 succeeded and 2 snoozed for at most {BUSY_RETRY_MAX:?} (busy guard), got {first:?}"
    );
    c.advance(BUSY_RETRY_MAX);
    let second: BTreeMap<JobId, Ran> = c.run_once(&worker).into_iter().collect();
    ensure!(
        c,
        second.len() == 2 && second.values().all(|r| *r == Ran::Succeeded),
        "the snoozed duplicates are due {BUSY_RETRY_MAX:?} later and complete succeeded: {second:?}"
    );
    for id in &ids {
        ensure!(
            c,
            c.get(*id).state == QueueState::Succeeded,
            "job {id} is not succeeded"
        );
    }
    let performs = count(&format!("{tag}:perform"));
    let effects = count(&format!("{tag}:effects"));
    ensure!(
        c,
        performs == 1 && effects == 1,
        "3 duplicates: {performs} performs, {effects} effects; expected 1 and 1"
    );
    let key = match job.key() {
        Ok(key) => key,
        Err(e) => c.fail(format_args!("key: {e}")),
    };
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded && r.effects == EffectsState::Done),
        "the guard row: succeeded with effects done: {row:?}"
    );

    // Already succeeded outside the queue (a runner on the same guard store).
    let outside = Charge {
        tag: format!("{tag}:outside"),
        cents: 7,
    };
    let runner = match Runner::builder(Arc::new(GuardsOf(c.store.clone())))
        .worker_id("runner")
        .build()
    {
        Ok(runner) => runner,
        Err(e) => c.fail(format_args!("runner: {e}")),
    };
    if let Err(e) = runner.run(&outside) {
        c.fail(format_args!("runner.run: {e}"));
    }
    let id = c
        .ok_enqueue(queue.enqueue_guarded(&outside, &c.options()))
        .id();
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(id, Ran::Succeeded)],
        "a key already succeeded: {ran:?}"
    );
    let performs = count(&format!("{tag}:outside:perform"));
    let effects = count(&format!("{tag}:outside:effects"));
    ensure!(
        c,
        performs == 1 && effects == 1,
        "the queued duplicate of a succeeded key must not run: {performs} performs, {effects} effects"
    );
}

/// A guarded job without effects (`SafeJob::has_effects` is false) completes with its guard
/// `succeeded` and effects `done` in the completion itself: `on_succeeded_once` is never
/// called, nothing is left pending or in doubt, and a duplicate replays.
pub fn guarded_job_without_effects_is_done_at_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_job_without_effects_is_done_at_once", harness);
    let tag = format!("{}:payout", c.prefix);
    let queue = c.queue_client();
    let job = Payout { tag: tag.clone() };
    let first = c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())).id();
    let mut registry = Registry::new();
    registry.register_guarded::<Payout>();
    let worker = c.worker(registry);
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(first, Ran::Succeeded)],
        "a guarded job without effects: {ran:?}"
    );
    let key = match job.key() {
        Ok(key) => key,
        Err(e) => c.fail(format_args!("key: {e}")),
    };
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref().is_some_and(|r| r.state == JobState::Succeeded
            && r.effects == EffectsState::Done
            && r.result == Some(json!({"paid": 1}))),
        "the guard row: succeeded with effects done: {row:?}"
    );
    c.advance(PAST_TTL);
    let in_doubt = c.ok(
        "guards().list",
        c.store
            .guards()
            .list(&ListQuery::new(ListFilter::EffectsInDoubt, 10_000)),
    );
    ensure!(
        c,
        in_doubt.iter().all(|r| &r.digest != key.digest()),
        "a key without effects is listed in doubt"
    );
    let second = c.ok_enqueue(queue.enqueue_guarded(&job, &c.options())).id();
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(second, Ran::Succeeded)],
        "a duplicate of a key without effects: {ran:?}"
    );
    let performs = count(&format!("{tag}:perform"));
    let effects = count(&format!("{tag}:effects"));
    ensure!(
        c,
        performs == 1 && effects == 0,
        "expected 1 perform and no effects call, got {performs} and {effects}"
    );
}

/// Fails retryably with exponential backoff: base 10 s, cap 15 s, jitter 0.2.
#[derive(Serialize, Deserialize)]
pub(super) struct Backoff {
    tag: String,
}

pub(super) fn backoff_policy() -> RetryPolicy {
    RetryPolicy::exponential()
        .base(Duration::from_secs(10))
        .cap(Duration::from_secs(15))
        .jitter(0.2)
        .build()
}

impl QueueJob for Backoff {
    const KIND: &'static str = "conformance.backoff";
    type Error = CaseError;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        bump(&self.tag);
        Err(WorkError::Retryable(CaseError("not yet".into())))
    }
    fn options() -> KindOptions {
        KindOptions::new().max_attempts(10).retry(backoff_policy())
    }
}

/// The worker waits exactly the exponential policy's delay for the job and attempt (jitter
/// included, reproducible) before the next attempt, on the store clock.
pub fn worker_backoff_follows_the_exponential_policy(harness: &dyn QueueHarness) {
    let c = Case::new("worker_backoff_follows_the_exponential_policy", harness);
    let tag = format!("{}:backoff", c.prefix);
    let id = c
        .ok_enqueue(
            c.queue_client()
                .enqueue_with(&Backoff { tag: tag.clone() }, &c.options()),
        )
        .id();
    let mut registry = Registry::new();
    registry.register::<Backoff>();
    let worker = c.worker(registry);
    let policy = backoff_policy();
    for attempt in 1..=3u32 {
        let Some(want) = policy.delay(attempt, id.0 as u64) else {
            c.fail(format_args!("the policy must retry"));
        };
        let ran = c.run_once(&worker);
        ensure!(
            c,
            ran == vec![(
                id,
                Ran::Retrying {
                    delay: want,
                    kind: ErrorKind::Retryable
                }
            )],
            "attempt {attempt}: expected a retry after {want:?}, got {ran:?}"
        );
        let row = c.get(id);
        ensure!(
            c,
            row.attempts == attempt,
            "attempts after attempt {attempt}: {}",
            row.attempts
        );
        c.advance(want.saturating_sub(Duration::from_secs(1)));
        ensure!(
            c,
            c.run_once(&worker).is_empty(),
            "attempt {attempt}: retried before {want:?}"
        );
        c.advance(Duration::from_secs(2));
    }
    ensure!(c, count(&tag) == 3, "ran {} times, expected 3", count(&tag));
}

/// A guarded job whose worker died after claiming it (and its guard) is reaped, requeued (a
/// guarded job is idempotent), and the next claim takes the expired guard over: it runs and its
/// effects happen once.
pub fn guarded_job_of_a_dead_worker_runs_once(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_job_of_a_dead_worker_runs_once", harness);
    let tag = format!("{}:crash", c.prefix);
    let job = Charge {
        tag: tag.clone(),
        cents: 1,
    };
    let id = c
        .ok_enqueue(c.queue_client().enqueue_guarded(&job, &c.options()))
        .id();
    let zombie = c.claim_as("doomed", 1);
    ensure!(
        c,
        zombie.len() == 1 && matches!(zombie[0].guard, Some(Acquired::Granted(_))),
        "the doomed worker's claim takes the guard"
    );
    c.advance(PAST_TTL);
    let reaped: Vec<_> = c
        .ok("reap", c.store.reap(1000))
        .into_iter()
        .filter(|r| r.id == id)
        .collect();
    ensure!(
        c,
        reaped.len() == 1 && reaped[0].state == QueueState::Retrying,
        "a guarded job is requeued by the reaper: {reaped:?}"
    );
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = c.worker(registry);
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran == vec![(id, Ran::Succeeded)],
        "the requeued guarded job: {ran:?}"
    );
    let key = job
        .key()
        .unwrap_or_else(|e| c.fail(format_args!("key: {e}")));
    let row = c.ok("guards().get", c.store.guards().get(key.digest()));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded && r.fence == 2 && r.attempts == 2),
        "the guard was taken over (fence 2, attempt 2) and finalized: {row:?}"
    );
    let late = c.complete(&zombie[0].lease, CompleteAs::Succeeded);
    ensure!(
        c,
        late == Completed::Stale,
        "the dead worker's late completion: {late:?}"
    );
    let (performs, effects) = (
        count(&format!("{tag}:perform")),
        count(&format!("{tag}:effects")),
    );
    ensure!(
        c,
        performs == 1 && effects == 1,
        "{performs} performs, {effects} effects; expected 1 and 1"
    );
}

/// The queue store's guard store, as an owned [`safejob_core::LeaseStore`] for a runner.
pub(super) struct GuardsOf(Arc<dyn QueueStore>);

impl safejob_core::LeaseStore for GuardsOf {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.0.guards().now()
    }
    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.0.guards().acquire(req)
    }
    fn renew(
        &self,
        lease: &safejob_core::store::Lease,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        self.0.guards().renew(lease, ttl)
    }
    fn finalize_succeeded(
        &self,
        lease: &safejob_core::store::Lease,
        result: Option<&serde_json::Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut safejob_core::store::TxEffects<'_>>,
    ) -> Result<safejob_core::store::Finalized, StoreError> {
        self.0
            .guards()
            .finalize_succeeded(lease, result, effects_ttl, retention, hook)
    }
    fn finalize_succeeded_without_effects(
        &self,
        lease: &safejob_core::store::Lease,
        result: Option<&serde_json::Value>,
        effects_ttl: Duration,
        retention: Retention,
    ) -> Result<safejob_core::store::Finalized, StoreError> {
        self.0
            .guards()
            .finalize_succeeded_without_effects(lease, result, effects_ttl, retention)
    }
    fn finalize_failed(
        &self,
        lease: &safejob_core::store::Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().finalize_failed(lease, failure, retention)
    }
    fn release(
        &self,
        lease: &safejob_core::store::Lease,
        error: Option<&str>,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().release(lease, error)
    }
    fn finish_effects(
        &self,
        lease: &safejob_core::store::Lease,
        outcome: safejob_core::store::EffectsOutcome<'_>,
    ) -> Result<safejob_core::store::FenceCheck, StoreError> {
        self.0.guards().finish_effects(lease, outcome)
    }
    fn claim_effects(
        &self,
        req: &AcquireRequest<'_>,
    ) -> Result<safejob_core::store::EffectsClaim, StoreError> {
        self.0.guards().claim_effects(req)
    }
    fn get(&self, digest: &KeyDigest) -> Result<Option<safejob_core::JobRecord>, StoreError> {
        self.0.guards().get(digest)
    }
    fn list(
        &self,
        query: &safejob_core::ListQuery,
    ) -> Result<Vec<safejob_core::JobRecord>, StoreError> {
        self.0.guards().list(query)
    }
    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        self.0.guards().prune(limit)
    }
}
