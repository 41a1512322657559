//! The audit ledger's conformance suite ([`safejob_core::history`]): every backend records the
//! same entries for the same transitions, deletes them with their rows, records nothing when the
//! ledger is off, and keeps a history that replays to the state after a randomized run.
//!
//! Each case is a plain `fn(&dyn LedgerHarness)` that panics naming the broken rule; [`CASES`]
//! lists them and [`run_all`] runs each on a fresh harness (the ledger switch is database-wide
//! and pruning is store-wide, so cases must not share one). Time moves only through
//! [`QueueHarness::advance`](crate::QueueHarness::advance): no sleeps.
//!
//! ```
//! use safejob_test_kit::{MemoryQueueHarness, ledger_conformance};
//!
//! ledger_conformance::run_all(MemoryQueueHarness::new);
//! ```

use std::{fmt, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    FinalFailure, KeyDigest, Retention,
    history::{Entity, HistoryEntry, HistoryStore, Subject},
    queue::{
        AttemptError, ClaimRequest, Claimed, CompleteAs, Completed, Completion, ErrorKind,
        JobFilter, JobId, JobQuery, NewJob, OpResult, QueueLease, QueueStore, RunAt,
    },
    schedule::{Fire, ScheduleRow},
    store::{AcquireRequest, Acquired, FenceCheck, Finalized, Lease, StoreError},
};

use crate::{MemoryQueueHarness, ScheduleHarness, conformance::TIME_SLACK};

/// A store under test with a ledger: the queue (jobs, guards, schedules) and its history.
pub trait LedgerHarness: ScheduleHarness {
    /// The store under test, as a history store (the same store as
    /// [`QueueHarness::store`](crate::QueueHarness::store)).
    fn history(&self) -> Arc<dyn HistoryStore>;
}

impl LedgerHarness for MemoryQueueHarness {
    fn history(&self) -> Arc<dyn HistoryStore> {
        self.memory_queue().clone()
    }
}

mod torture;

pub use torture::{history_matches_state_after_a_torture_run, torture_run_with_seed};

/// One case of the suite.
pub type Case = fn(&dyn LedgerHarness);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    (
        "job_history_follows_each_transition",
        job_history_follows_each_transition,
    ),
    (
        "dead_jobs_and_operator_actions_are_recorded",
        dead_jobs_and_operator_actions_are_recorded,
    ),
    ("reaped_jobs_are_recorded", reaped_jobs_are_recorded),
    (
        "key_history_follows_acquire_takeover_finalize",
        key_history_follows_acquire_takeover_finalize,
    ),
    ("schedule_ticks_are_recorded", schedule_ticks_are_recorded),
    (
        "pruning_deletes_the_history_with_its_rows",
        pruning_deletes_the_history_with_its_rows,
    ),
    ("ledger_off_records_nothing", ledger_off_records_nothing),
    (
        "batch_history_records_the_batch_and_its_members",
        batch_history_records_the_batch_and_its_members,
    ),
    (
        "history_matches_state_after_a_torture_run",
        history_matches_state_after_a_torture_run,
    ),
];

/// Runs every case, each on a fresh harness from `make`. Panics at the first violation.
pub fn run_all<H: LedgerHarness>(make: impl Fn() -> H) {
    for (name, case) in CASES {
        tracing::info!(case = name, "ledger conformance case");
        case(&make());
    }
}

/// The environment variable that sets the randomized case's seed (decimal).
pub const SEED_ENV: &str = "SAFEJOB_LEDGER_SEED";

const TTL: Duration = Duration::from_secs(30);
const PAST_TTL: Duration = Duration::from_secs(31);

/// One case's context.
struct Ctx<'h> {
    name: &'static str,
    h: &'h dyn LedgerHarness,
    store: Arc<dyn QueueStore>,
    ledger: Arc<dyn HistoryStore>,
    queue: String,
}

/// An expected entry: from, to, fence.
type Step<'a> = (Option<&'a str>, &'a str, u64);

impl<'h> Ctx<'h> {
    fn new(name: &'static str, h: &'h dyn LedgerHarness) -> Self {
        Self {
            name,
            h,
            store: h.store(),
            ledger: h.history(),
            queue: format!("ledger:{name}"),
        }
    }

    #[track_caller]
    fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        panic!("ledger conformance case `{}` failed: {what}", self.name)
    }

    #[track_caller]
    fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> T {
        result.unwrap_or_else(|e| self.fail(format_args!("{op} returned a store error: {e}")))
    }

    fn key(&self, part: &str) -> KeyDigest {
        KeyDigest::of(&format!("ledger:{}:{part}", self.name))
    }

    fn new_job(&self, max_attempts: u32, idempotent: bool) -> NewJob {
        NewJob {
            kind: format!("ledger:{}", self.name),
            queue: self.queue.clone(),
            payload: serde_json::json!({}),
            metadata: serde_json::Value::Null,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts,
            idempotent,
            unique_key: None,
            guard: None,
        }
    }

    #[track_caller]
    fn enqueue(&self, job: &NewJob) -> JobId {
        self.ok("enqueue", self.store.enqueue(job)).id()
    }

    #[track_caller]
    fn claim(&self, worker: &str, limit: usize) -> Vec<Claimed> {
        let queues = [self.queue.clone()];
        self.ok(
            "claim",
            self.store.claim(&ClaimRequest {
                worker,
                queues: &queues,
                limit,
                ttl: TTL,
            }),
        )
    }

    #[track_caller]
    fn claim_one(&self, worker: &str) -> Claimed {
        self.claim(worker, 1)
            .pop()
            .unwrap_or_else(|| self.fail(format_args!("claim by {worker} found no due job")))
    }

    #[track_caller]
    fn complete(&self, lease: &QueueLease, outcome: CompleteAs) -> Completed {
        self.ok(
            "complete",
            self.store.complete(
                &Completion {
                    lease,
                    outcome,
                    progress: None,
                    guard: None,
                    batch: None,
                },
                None,
            ),
        )
    }

    #[track_caller]
    fn history(&self, of: &Subject) -> Vec<HistoryEntry> {
        self.ok("history", self.ledger.history(of))
    }

    #[track_caller]
    fn expect_steps(&self, what: &str, history: &[HistoryEntry], steps: &[Step<'_>]) {
        let got: Vec<Step<'_>> = history
            .iter()
            .map(|e| {
                (
                    e.from_state.as_deref(),
                    e.to_state.as_str(),
                    e.fence.unwrap_or(u64::MAX),
                )
            })
            .collect();
        if got != steps {
            self.fail(format_args!(
                "{what}: expected (from, to, fence) {steps:?}, recorded {got:?}"
            ));
        }
        if history.windows(2).any(|w| w[0].id >= w[1].id) {
            self.fail(format_args!(
                "{what}: entry ids do not increase: {history:?}"
            ));
        }
    }

    #[track_caller]
    fn expect_field<T: PartialEq + fmt::Debug>(&self, what: &str, got: Vec<T>, want: Vec<T>) {
        if got != want {
            self.fail(format_args!("{what}: expected {want:?}, recorded {got:?}"));
        }
    }

    #[track_caller]
    fn expect_near(&self, what: &str, at: DateTime<Utc>, want: DateTime<Utc>) {
        let off = (at - want).abs().to_std().unwrap_or(Duration::MAX);
        if off > TIME_SLACK {
            self.fail(format_args!("{what}: at {at}, expected about {want}"));
        }
    }
}

fn reasons(history: &[HistoryEntry]) -> Vec<Option<&str>> {
    history.iter().map(|e| e.reason.as_deref()).collect()
}

fn workers(history: &[HistoryEntry]) -> Vec<Option<&str>> {
    history.iter().map(|e| e.worker.as_deref()).collect()
}

fn attempts(history: &[HistoryEntry]) -> Vec<Option<u32>> {
    history.iter().map(|e| e.attempt).collect()
}

/// enqueue → claim → retry → claim → succeed: one entry per transition, with its fence,
/// attempt, worker, error and store-clock time. Deliberate breaks it catches: the memory queue
/// not recording a completion (`log_job` removed from `complete`); the MySQL update trigger
/// never writing the reason (its `CASE WHEN` made `FALSE`).
pub fn job_history_follows_each_transition(h: &dyn LedgerHarness) {
    let c = Ctx::new("job_history_follows_each_transition", h);
    let start = c.ok("now", c.store.now());
    let id = c.enqueue(&c.new_job(5, true));
    let first = c.claim_one("w1");
    let retry = CompleteAs::Retry {
        delay: Duration::from_secs(10),
        error: AttemptError::new(ErrorKind::Retryable, "boom"),
    };
    if c.complete(&first.lease, retry) != Completed::Applied {
        c.fail(format_args!("the first attempt's retry did not apply"));
    }
    // A renewal and progress change neither state nor fence: not transitions.
    c.advance_and_claim_then_succeed(id);
    let job = c
        .ok("get", c.store.get(id))
        .unwrap_or_else(|| c.fail(format_args!("job gone")));
    let history = c.history(&Subject::Job(id));
    c.expect_steps(
        "job history",
        &history,
        &[
            (None, "pending", 0),
            (Some("pending"), "running", 1),
            (Some("running"), "retrying", 1),
            (Some("retrying"), "running", 2),
            (Some("running"), "succeeded", 2),
        ],
    );
    c.expect_field(
        "attempts",
        attempts(&history),
        vec![Some(0), Some(1), Some(1), Some(2), Some(2)],
    );
    c.expect_field(
        "workers",
        workers(&history),
        vec![None, Some("w1"), Some("w1"), Some("w2"), Some("w2")],
    );
    c.expect_field(
        "reasons",
        reasons(&history),
        vec![None, None, Some("retryable: boom"), None, None],
    );
    if history
        .iter()
        .any(|e| e.entity != Entity::Job || e.job_id != Some(id) || e.key.is_some())
    {
        c.fail(format_args!("entries not tagged as job {id}: {history:?}"));
    }
    c.expect_near("the enqueue", history[0].at, start);
    // The store clock moved 11 s between the retry and the second claim.
    if history[3].at - history[2].at < chrono::Duration::seconds(11) {
        c.fail(format_args!(
            "the second claim is recorded at {}, less than 11 s after the retry at {}",
            history[3].at, history[2].at
        ));
    }
    if history[4].at != job.updated_at {
        c.fail(format_args!(
            "the last entry's time {} is not the row's updated_at {}",
            history[4].at, job.updated_at
        ));
    }
}

impl Ctx<'_> {
    fn advance_and_claim_then_succeed(&self, id: JobId) {
        self.h.advance(Duration::from_secs(11));
        let second = self.claim_one("w2");
        if second.job.id != id {
            self.fail(format_args!("claimed {} instead of {id}", second.job.id));
        }
        self.ok("renew", self.store.renew(&second.lease, None, TTL));
        if self.complete(&second.lease, CompleteAs::Succeeded) != Completed::Applied {
            self.fail(format_args!("the second attempt's success did not apply"));
        }
    }
}

/// Dead letter, operator retry, operator cancel, the job's own cancel. Deliberate break it
/// catches: the memory queue's operator retry not recording (`log_job` removed from
/// `retry_one`).
pub fn dead_jobs_and_operator_actions_are_recorded(h: &dyn LedgerHarness) {
    let c = Ctx::new("dead_jobs_and_operator_actions_are_recorded", h);
    let id = c.enqueue(&c.new_job(1, true));
    let claim = c.claim_one("w1");
    let dead = CompleteAs::Dead {
        error: AttemptError::new(ErrorKind::Fatal, "bad card"),
    };
    c.complete(&claim.lease, dead);
    for (op, result) in [
        ("retry", c.store.retry(id)),
        ("cancel", c.store.cancel(id)),
        ("retry", c.store.retry(id)),
    ] {
        if c.ok(op, result) != OpResult::Applied {
            c.fail(format_args!("operator {op} did not apply"));
        }
    }
    let again = c.claim_one("w2");
    c.complete(
        &again.lease,
        CompleteAs::Cancelled {
            reason: "nothing to do".into(),
        },
    );
    // Refused operator actions change nothing and record nothing.
    let _ = c.ok("cancel", c.store.cancel(id));
    let history = c.history(&Subject::Job(id));
    c.expect_steps(
        "job history",
        &history,
        &[
            (None, "pending", 0),
            (Some("pending"), "running", 1),
            (Some("running"), "dead", 1),
            (Some("dead"), "pending", 1),
            (Some("pending"), "cancelled", 1),
            (Some("cancelled"), "pending", 1),
            (Some("pending"), "running", 2),
            (Some("running"), "cancelled", 2),
        ],
    );
    c.expect_field(
        "reasons",
        reasons(&history),
        vec![
            None,
            None,
            Some("fatal: bad card"),
            None,
            None,
            None,
            None,
            Some("cancelled: nothing to do"),
        ],
    );
    c.expect_field(
        "attempts",
        attempts(&history),
        [0, 1, 1, 0, 0, 0, 1, 1].map(Some).to_vec(),
    );
}

/// The reaper's moves (idempotent → retrying, other → parked) with their fence bump and the
/// lease-expired error; a zombie's completion records nothing. Deliberate break it catches: the
/// memory queue's reaper not recording (`inner.history.job` removed from `reap`).
pub fn reaped_jobs_are_recorded(h: &dyn LedgerHarness) {
    let c = Ctx::new("reaped_jobs_are_recorded", h);
    let a = c.enqueue(&c.new_job(5, true));
    let b = c.enqueue(&c.new_job(5, false));
    let claims = c.claim("w1", 2);
    if claims.len() != 2 {
        c.fail(format_args!("claimed {} jobs, expected 2", claims.len()));
    }
    h.advance(PAST_TTL);
    let reaped = c.ok("reap", c.store.reap(100));
    if reaped.len() != 2 {
        c.fail(format_args!("reaped {reaped:?}, expected both jobs"));
    }
    // The zombie's completion is stale: no entry.
    let zombie = claims
        .iter()
        .find(|cl| cl.job.id == a)
        .unwrap_or(&claims[0]);
    if c.complete(&zombie.lease, CompleteAs::Succeeded) != Completed::Stale {
        c.fail(format_args!("a zombie's completion applied"));
    }
    if c.ok("cancel", c.store.cancel(b)) != OpResult::Applied {
        c.fail(format_args!("cancel of the parked job did not apply"));
    }
    let ha = c.history(&Subject::Job(a));
    c.expect_steps(
        "idempotent job",
        &ha,
        &[
            (None, "pending", 0),
            (Some("pending"), "running", 1),
            (Some("running"), "retrying", 2),
        ],
    );
    let hb = c.history(&Subject::Job(b));
    c.expect_steps(
        "non-idempotent job",
        &hb,
        &[
            (None, "pending", 0),
            (Some("pending"), "running", 1),
            (Some("running"), "parked", 2),
            (Some("parked"), "cancelled", 2),
        ],
    );
    for (what, entry) in [("idempotent", &ha[2]), ("non-idempotent", &hb[2])] {
        if !entry
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("lease_expired: "))
        {
            c.fail(format_args!(
                "{what} job's reap records reason {:?}, not the lease-expired error",
                entry.reason
            ));
        }
        if entry.worker.as_deref() != Some("w1") {
            c.fail(format_args!(
                "{what} job's reap names worker {:?}, not the expired holder w1",
                entry.worker
            ));
        }
    }
}

/// A guard key through acquire, takeover after expiry, release, acquire, finalize; another to a
/// final failure. Renewals and stale writes record nothing. Deliberate breaks it catches: the
/// memory store not recording a takeover (`self.record` removed from the occupied branch of
/// `acquire`), and the SQL triggers recording only state changes (`OLD.fence <> NEW.fence`
/// removed from the update triggers' condition).
pub fn key_history_follows_acquire_takeover_finalize(h: &dyn LedgerHarness) {
    let c = Ctx::new("key_history_follows_acquire_takeover_finalize", h);
    let guards = c.store.guards();
    let acquire = |digest: KeyDigest, owner: &str| -> Lease {
        match c.ok(
            "acquire",
            guards.acquire(&AcquireRequest {
                digest,
                fingerprint: None,
                owner,
                ttl: TTL,
            }),
        ) {
            Acquired::Granted(lease) => lease,
            other => c.fail(format_args!("acquire by {owner}: {other:?}")),
        }
    };
    let key = c.key("paid");
    let w1 = acquire(key, "w1");
    c.ok("renew", guards.renew(&w1, TTL));
    h.advance(PAST_TTL);
    let w2 = acquire(key, "w2");
    // w1's lease was taken over: its release is stale.
    if c.ok("release", guards.release(&w1, Some("late"))) != FenceCheck::Stale {
        c.fail(format_args!("a stale release applied"));
    }
    c.ok("release", guards.release(&w2, Some("upstream busy")));
    let w3 = acquire(key, "w3");
    let done = c.ok(
        "finalize",
        guards.finalize_succeeded_without_effects(&w3, None, TTL, Retention::Forever),
    );
    if done != Finalized::Committed {
        c.fail(format_args!("finalize: {done:?}"));
    }
    let history = c.history(&Subject::Key(key));
    c.expect_steps(
        "key history",
        &history,
        &[
            (None, "running", 1),
            (Some("running"), "running", 2),
            (Some("running"), "released", 2),
            (Some("released"), "running", 3),
            (Some("running"), "succeeded", 3),
        ],
    );
    c.expect_field(
        "workers",
        workers(&history),
        vec![Some("w1"), Some("w2"), Some("w2"), Some("w3"), Some("w3")],
    );
    c.expect_field(
        "reasons",
        reasons(&history),
        vec![None, None, Some("upstream busy"), None, None],
    );
    c.expect_field(
        "attempts",
        attempts(&history),
        [1, 2, 2, 3, 3].map(Some).to_vec(),
    );
    if history
        .iter()
        .any(|e| e.entity != Entity::Key || e.key != Some(key) || e.job_id.is_some())
    {
        c.fail(format_args!("entries not tagged as the key: {history:?}"));
    }
    let row = c
        .ok("get", guards.get(&key))
        .unwrap_or_else(|| c.fail(format_args!("key row gone")));
    if history[4].at != row.updated_at {
        c.fail(format_args!(
            "the finalize is recorded at {}, the row says {}",
            history[4].at, row.updated_at
        ));
    }

    let failed = c.key("declined");
    let lease = acquire(failed, "w1");
    let failure = FinalFailure::new("card_declined", "the card was declined");
    c.ok(
        "finalize_failed",
        guards.finalize_failed(&lease, &failure, Retention::Forever),
    );
    let history = c.history(&Subject::Key(failed));
    c.expect_steps(
        "failed key",
        &history,
        &[(None, "running", 1), (Some("running"), "failed", 1)],
    );
    c.expect_field(
        "reasons",
        reasons(&history),
        vec![None, Some("card_declined: the card was declined")],
    );
}

/// A schedule's insert, a fire that enqueues a tick, a pause, a stale fire (nothing), and its
/// removal (history gone). Deliberate break it catches: the memory schedule store not recording
/// a fire (`inner.history.schedule` removed from `fire`).
pub fn schedule_ticks_are_recorded(h: &dyn LedgerHarness) {
    let c = Ctx::new("schedule_ticks_are_recorded", h);
    let schedules = h.schedules();
    let now = c.ok("now", c.store.now());
    let hour = chrono::Duration::hours(1);
    let row = ScheduleRow {
        name: "ledger-hourly".into(),
        trigger: "cron".into(),
        expression: "@hourly".into(),
        time_zone: "UTC".into(),
        missed: "latest".into(),
        kind: "ledger:tick".into(),
        paused: false,
        next_run_at: Some(now),
        last_tick: None,
        revision: 0,
    };
    c.ok("insert_schedule", schedules.insert_schedule(&row));
    let tick = [c.new_job(1, true)];
    let fire = |revision| {
        c.ok(
            "fire",
            schedules.fire(&Fire {
                name: &row.name,
                revision,
                next_run_at: Some(now + hour),
                last_tick: Some(now),
                jobs: &tick,
            }),
        )
    };
    if fire(0).is_none() {
        c.fail(format_args!("the first fire did not apply"));
    }
    if fire(0).is_some() {
        c.fail(format_args!("a stale fire applied"));
    }
    let paused = ScheduleRow {
        paused: true,
        next_run_at: Some(now + hour),
        last_tick: Some(now),
        ..row.clone()
    };
    if !c.ok("update_schedule", schedules.update_schedule(&paused, 1)) {
        c.fail(format_args!("the pause did not apply"));
    }
    let subject = Subject::Schedule(row.name.clone());
    let history = c.history(&subject);
    c.expect_steps(
        "schedule history",
        &history,
        &[
            (None, "active", 0),
            (Some("active"), "active", 1),
            (Some("active"), "paused", 2),
        ],
    );
    c.expect_field("reasons", reasons(&history), vec![None, Some("tick"), None]);
    if history
        .iter()
        .any(|e| e.entity != Entity::Schedule || e.schedule.as_deref() != Some("ledger-hourly"))
    {
        c.fail(format_args!(
            "entries not tagged as the schedule: {history:?}"
        ));
    }
    // The tick's job has its own history, from its insert by the fire.
    let jobs = c.ok(
        "list",
        c.store.list(&JobQuery {
            filter: JobFilter::default().queue(c.queue.clone()),
            after: None,
            limit: 10,
        }),
    );
    let [job] = jobs.as_slice() else {
        c.fail(format_args!(
            "the fire enqueued {} jobs, expected 1",
            jobs.len()
        ));
    };
    c.expect_steps(
        "tick job",
        &c.history(&Subject::Job(job.id)),
        &[(None, "pending", 0)],
    );
    c.ok("remove_schedule", schedules.remove_schedule(&row.name));
    if !c.history(&subject).is_empty() {
        c.fail(format_args!("a removed schedule kept its history"));
    }
}

/// Purge and prune delete the history of the jobs they delete, guard pruning that of the keys;
/// other rows keep theirs. Deliberate breaks it catches: the memory queue's prune not forgetting
/// (`forget` removed from `prune`); PostgreSQL's job delete trigger deleting nothing.
pub fn pruning_deletes_the_history_with_its_rows(h: &dyn LedgerHarness) {
    let c = Ctx::new("pruning_deletes_the_history_with_its_rows", h);
    let succeeded = c.enqueue(&c.new_job(1, true));
    let dead = c.enqueue(&c.new_job(1, true));
    for claim in c.claim("w1", 2) {
        let outcome = if claim.job.id == succeeded {
            CompleteAs::Succeeded
        } else {
            CompleteAs::Dead {
                error: AttemptError::new(ErrorKind::Fatal, "no"),
            }
        };
        c.complete(&claim.lease, outcome);
    }
    let live = c.enqueue(&c.new_job(1, true));
    let guards = c.store.guards();
    let key = c.key("short-lived");
    let Acquired::Granted(lease) = c.ok(
        "acquire",
        guards.acquire(&AcquireRequest {
            digest: key,
            fingerprint: None,
            owner: "w1",
            ttl: TTL,
        }),
    ) else {
        c.fail(format_args!("the key was not granted"));
    };
    let hour = Duration::from_secs(3600);
    c.ok(
        "finalize",
        guards.finalize_succeeded_without_effects(&lease, None, TTL, Retention::For(hour)),
    );
    let purged = c.ok(
        "purge",
        c.store.purge(&JobFilter::dead().queue(c.queue.clone())),
    );
    if purged != 1 || !c.history(&Subject::Job(dead)).is_empty() {
        c.fail(format_args!(
            "purged {purged} jobs; the dead job's history must go with it"
        ));
    }
    if c.history(&Subject::Job(succeeded)).len() != 3 {
        c.fail(format_args!("the purge touched another job's history"));
    }
    h.advance(hour * 2);
    let pruned = c.ok("prune", c.store.prune(hour, 100));
    if pruned != 1 || !c.history(&Subject::Job(succeeded)).is_empty() {
        c.fail(format_args!(
            "pruned {pruned} jobs; the succeeded job's history must go with it"
        ));
    }
    if c.history(&Subject::Job(live)).len() != 1 {
        c.fail(format_args!("pruning touched a live job's history"));
    }
    if c.history(&Subject::Key(key)).len() != 2 {
        c.fail(format_args!(
            "the key's history is not recorded before its prune"
        ));
    }
    let pruned = c.ok("guard prune", guards.prune(100));
    if pruned != 1 || !c.history(&Subject::Key(key)).is_empty() {
        c.fail(format_args!(
            "pruned {pruned} keys; the key's history must go with it"
        ));
    }
}

/// With the ledger off, no transition of a job, a key or a schedule is recorded; on again, the
/// next ones are. Deliberate break it catches: `HistoryLog::job` ignoring the switch.
pub fn ledger_off_records_nothing(h: &dyn LedgerHarness) {
    let c = Ctx::new("ledger_off_records_nothing", h);
    if !c.ok("ledger_enabled", c.ledger.ledger_enabled()) {
        c.fail(format_args!("the ledger is off by default"));
    }
    c.ok("set_ledger", c.ledger.set_ledger(false));
    if c.ok("ledger_enabled", c.ledger.ledger_enabled()) {
        c.fail(format_args!("the ledger still says it is on"));
    }
    let id = c.enqueue(&c.new_job(3, true));
    let claim = c.claim_one("w1");
    c.complete(
        &claim.lease,
        CompleteAs::Retry {
            delay: Duration::ZERO,
            error: AttemptError::new(ErrorKind::Retryable, "off"),
        },
    );
    let key = c.key("unrecorded");
    let granted = c.ok(
        "acquire",
        c.store.guards().acquire(&AcquireRequest {
            digest: key,
            fingerprint: None,
            owner: "w1",
            ttl: TTL,
        }),
    );
    let now = c.ok("now", c.store.now());
    let row = ScheduleRow {
        name: "ledger-off".into(),
        trigger: "once".into(),
        expression: now.to_rfc3339(),
        time_zone: "UTC".into(),
        missed: "latest".into(),
        kind: "ledger:off".into(),
        paused: false,
        next_run_at: Some(now),
        last_tick: None,
        revision: 0,
    };
    c.ok("insert_schedule", h.schedules().insert_schedule(&row));
    for (what, subject) in [
        ("job", Subject::Job(id)),
        ("key", Subject::Key(key)),
        ("schedule", Subject::Schedule(row.name.clone())),
    ] {
        let history = c.history(&subject);
        if !history.is_empty() {
            c.fail(format_args!(
                "the {what} was recorded with the ledger off: {history:?}"
            ));
        }
    }
    c.ok("set_ledger", c.ledger.set_ledger(true));
    let again = c.claim_one("w2");
    c.expect_steps(
        "job after the ledger is back on",
        &c.history(&Subject::Job(id)),
        &[(Some("retrying"), "running", again.lease.fence)],
    );
    if let Acquired::Granted(lease) = granted {
        c.ok("release", c.store.guards().release(&lease, None));
        c.expect_steps(
            "key after the ledger is back on",
            &c.history(&Subject::Key(key)),
            &[(Some("running"), "released", lease.fence)],
        );
    }
}

/// A batch's history: the batch's own entries (`running` at dispatch, then its end) and every
/// transition of its members' jobs — the insert included, though it happened before the job
/// joined the batch — with the member's unlock in between, all tagged with the batch.
/// Deliberate breaks it catches: the batch's end not recorded (memory: `history.batch` removed
/// from `settle`), or a member's insert left untagged (the SQL stores' TAG_HISTORY removed).
pub fn batch_history_records_the_batch_and_its_members(h: &dyn LedgerHarness) {
    use safejob_core::workflow::{BatchBuilder, BatchPolicy};
    let c = Ctx::new("batch_history_records_the_batch_and_its_members", h);
    let batch = BatchBuilder::new("ledger", BatchPolicy::Continue)
        .add_job("a", Ok(c.new_job(3, true)), &[])
        .add_job("b", Ok(c.new_job(3, true)), &["a"])
        .build()
        .unwrap_or_else(|e| c.fail(format_args!("batch: {e}")));
    let id = c.ok("insert_batch", c.store.insert_batch(&batch));
    for _ in 0..2 {
        let claimed = c.claim_one("w1");
        let done = c.ok(
            "complete",
            c.store.complete(
                &Completion {
                    lease: &claimed.lease,
                    outcome: CompleteAs::Succeeded,
                    progress: None,
                    guard: None,
                    batch: claimed.job.batch,
                },
                None,
            ),
        );
        if done != Completed::Applied {
            c.fail(format_args!("completion: {done:?}"));
        }
    }
    let history = c.history(&Subject::Batch(id));
    let own: Vec<(Option<&str>, &str)> = history
        .iter()
        .filter(|e| e.entity == Entity::Batch)
        .map(|e| (e.from_state.as_deref(), e.to_state.as_str()))
        .collect();
    if own != vec![(None, "running"), (Some("running"), "succeeded")] {
        c.fail(format_args!("the batch's own entries: {own:?}"));
    }
    let members = c.ok("batch_members", c.store.batch_members(id));
    let b = members
        .iter()
        .find(|m| m.name == "b")
        .unwrap_or_else(|| c.fail(format_args!("no member b")))
        .job;
    let of_b: Vec<(Option<&str>, &str)> = history
        .iter()
        .filter(|e| e.job_id == Some(b))
        .map(|e| (e.from_state.as_deref(), e.to_state.as_str()))
        .collect();
    let want = vec![
        (None, "pending"),
        (Some("pending"), "blocked"),
        (Some("blocked"), "pending"),
        (Some("pending"), "running"),
        (Some("running"), "succeeded"),
    ];
    if of_b != want {
        c.fail(format_args!(
            "member b's entries under the batch: {of_b:?}, want {want:?}"
        ));
    }
    if history.iter().any(|e| e.batch_id != Some(id)) {
        c.fail(format_args!(
            "an entry not tagged with the batch: {history:?}"
        ));
    }
}
