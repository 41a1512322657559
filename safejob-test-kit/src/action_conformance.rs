//! The action log conformance suite: what every [`ActionStore`] must show through the core's
//! [`Publisher`] and [`Dispatcher`] — idempotent publish, `when` / `skip_if`, eligible-at, rules
//! checked at dispatch, racing dispatchers dispatching each action once, a dispatcher killed
//! between its claim and its mark, processor errors recorded, retried and parked.
//!
//! Each case is a plain `fn(&dyn ActionHarness)` that panics naming the broken rule; [`CASES`]
//! lists them and [`run_all`] runs each on a fresh harness. Time moves only through
//! [`QueueHarness::advance`]: no sleeps.
//!
//! ```
//! use safejob_test_kit::{MemoryQueueHarness, action_conformance};
//!
//! action_conformance::run_all(MemoryQueueHarness::new);
//! ```

use std::{
    sync::{
        Arc, Barrier,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use safejob_core::{
    action::{
        ActionClaim, ActionFilter, ActionLease, ActionOutcome, ActionState, ActionStore, Dispatch,
        Dispatcher, Processor, ProcessorError, Published, Publisher, RetryAction, RuleFailure,
    },
    queue::{JobFilter, JobQuery, NewJob, QueuedJob, RetryPolicy, RunAt},
    store::FenceCheck,
};
use serde_json::{Value, json};

use crate::{MemoryQueueHarness, QueueHarness};

/// A [`QueueHarness`] whose store also keeps the action log.
pub trait ActionHarness: QueueHarness {
    /// The store under test, as an action store (the same store as [`QueueHarness::store`]).
    fn actions(&self) -> Arc<dyn ActionStore>;
}

impl ActionHarness for MemoryQueueHarness {
    fn actions(&self) -> Arc<dyn ActionStore> {
        self.memory_queue().clone()
    }
}

/// One case of the suite.
pub type Case = fn(&dyn ActionHarness);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("publish_is_idempotent_by_key", publish_is_idempotent_by_key),
    (
        "when_and_skip_if_decide_at_publish",
        when_and_skip_if_decide_at_publish,
    ),
    ("eligible_at_is_respected", eligible_at_is_respected),
    (
        "racing_dispatchers_dispatch_each_action_once",
        racing_dispatchers_dispatch_each_action_once,
    ),
    (
        "rules_are_checked_at_dispatch",
        rules_are_checked_at_dispatch,
    ),
    (
        "a_dispatcher_killed_between_claim_and_mark",
        a_dispatcher_killed_between_claim_and_mark,
    ),
    (
        "processor_errors_are_recorded_retried_and_parked",
        processor_errors_are_recorded_retried_and_parked,
    ),
];

/// Runs every case, each on a fresh harness from `make`.
pub fn run_all<H: ActionHarness>(make: impl Fn() -> H) {
    for (name, case) in CASES {
        tracing::info!(case = name, "action conformance case");
        case(&make());
    }
}

/// The queue the cases' jobs go to.
const QUEUE: &str = "action-conformance";

/// Turns `case.*` actions into jobs of kind `action.job` carrying the action's id and payload;
/// counts its calls.
struct ToJob {
    calls: Arc<AtomicUsize>,
}

impl Processor for ToJob {
    fn supports(&self, action_type: &str) -> bool {
        action_type.starts_with("case.")
    }
    fn to_job(
        &self,
        action: &safejob_core::action::ActionRecord,
    ) -> Result<Dispatch, ProcessorError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(Dispatch::Job(NewJob {
            kind: "action.job".into(),
            queue: QUEUE.into(),
            payload: json!({"action": action.id.0, "payload": action.payload}),
            metadata: Value::Null,
            priority: 0,
            run_at: RunAt::Now,
            max_attempts: 3,
            idempotent: true,
            unique_key: None,
            guard: None,
        }))
    }
}

/// Fails every `flaky.*` action: retryably, or for good for `flaky.permanent`.
struct Flaky;

impl Processor for Flaky {
    fn supports(&self, action_type: &str) -> bool {
        action_type.starts_with("flaky.")
    }
    fn to_job(
        &self,
        _action: &safejob_core::action::ActionRecord,
    ) -> Result<Dispatch, ProcessorError> {
        Err(if _action.action_type == "flaky.permanent" {
            ProcessorError::Permanent("the template is gone".into())
        } else {
            ProcessorError::Retryable("the mail service is down".into())
        })
    }
}

fn dispatcher(h: &dyn ActionHarness, id: &str) -> Dispatcher {
    Dispatcher::builder(h.actions())
        .processor(ToJob {
            calls: Arc::new(AtomicUsize::new(0)),
        })
        .processor(Flaky)
        .claim_ttl(Duration::from_secs(30))
        .retry(RetryPolicy::schedule([Duration::from_secs(10)]))
        .id(id)
        .build()
}

fn jobs(h: &dyn ActionHarness) -> Vec<QueuedJob> {
    h.store()
        .list(&JobQuery {
            filter: JobFilter::default().queue(QUEUE),
            after: None,
            limit: 10_000,
        })
        .unwrap_or_else(|e| panic!("listing jobs: {e}"))
}

fn fail(case: &str, what: std::fmt::Arguments<'_>) -> ! {
    panic!("action conformance case `{case}` failed: {what}")
}

/// Publishing the same idempotency key twice inserts one action and answers it both times; a
/// different key inserts another.
pub fn publish_is_idempotent_by_key(h: &dyn ActionHarness) {
    let case = "publish_is_idempotent_by_key";
    let p = Publisher::new(h.actions());
    let publish = |key: &str| {
        p.quick("case.welcome", RunAt::Now, json!({"user": key}), Some(key))
            .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")))
    };
    let first = publish("welcome/1");
    let again = publish("welcome/1");
    let other = publish("welcome/2");
    // Catches: a store that inserts a second row for the same digest.
    if !matches!(first, Published::Inserted(_))
        || again
            != Published::Existing(
                first
                    .id()
                    .unwrap_or_else(|| fail(case, format_args!("no id"))),
            )
    {
        fail(case, format_args!("first {first:?}, again {again:?}"));
    }
    if !matches!(other, Published::Inserted(id) if Some(id) != first.id()) {
        fail(case, format_args!("another key: {other:?}"));
    }
    let all = h
        .actions()
        .list_actions(&ActionFilter::default(), 100)
        .unwrap_or_else(|e| fail(case, format_args!("list: {e}")));
    if all.len() != 2 || all.iter().any(|a| a.state != ActionState::Pending) {
        fail(case, format_args!("expected 2 pending actions: {all:?}"));
    }
}

/// `when` and `skip_if` are evaluated at publish: a predicate that says no inserts nothing and
/// says which predicate it was.
pub fn when_and_skip_if_decide_at_publish(h: &dyn ActionHarness) {
    let case = "when_and_skip_if_decide_at_publish";
    let p = Publisher::new(h.actions());
    let publish = |payload: Value| {
        p.action("case.promo")
            .payload_value(payload)
            .when(|v| v["consented"] == true)
            .skip_if(|v| v["bounced"] == true)
            .publish()
            .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")))
    };
    let no_consent = publish(json!({"consented": false}));
    let bounced = publish(json!({"consented": true, "bounced": true}));
    let fine = publish(json!({"consented": true}));
    if no_consent != (Published::Skipped { by: "when" })
        || bounced != (Published::Skipped { by: "skip_if" })
        || !matches!(fine, Published::Inserted(_))
    {
        fail(case, format_args!("{no_consent:?} {bounced:?} {fine:?}"));
    }
    let all = h
        .actions()
        .list_actions(&ActionFilter::default(), 100)
        .unwrap_or_else(|e| fail(case, format_args!("list: {e}")));
    if all.len() != 1 {
        fail(
            case,
            format_args!("skipped publishes inserted rows: {all:?}"),
        );
    }
}

/// An action published with a delay is not dispatched before its `eligible_at` on the store
/// clock, and is dispatched once it passed.
pub fn eligible_at_is_respected(h: &dyn ActionHarness) {
    let case = "eligible_at_is_respected";
    let p = Publisher::new(h.actions());
    p.quick(
        "case.later",
        RunAt::After(Duration::from_secs(300)),
        json!({}),
        None,
    )
    .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")));
    let d = dispatcher(h, "d1");
    let early = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    // Catches: a claim that ignores eligible_at.
    if early.claimed != 0 || !jobs(h).is_empty() {
        fail(
            case,
            format_args!("dispatched before it was due: {early:?}"),
        );
    }
    h.advance(Duration::from_secs(301));
    let due = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    if due.enqueued != 1 || jobs(h).len() != 1 {
        fail(case, format_args!("not dispatched once due: {due:?}"));
    }
}

/// Four dispatchers race over 40 due actions: each action becomes exactly one job, and each
/// action row names its job.
pub fn racing_dispatchers_dispatch_each_action_once(h: &dyn ActionHarness) {
    let case = "racing_dispatchers_dispatch_each_action_once";
    let p = Publisher::new(h.actions());
    for i in 0..40 {
        p.quick("case.race", RunAt::Now, json!({"n": i}), None)
            .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")));
    }
    let racers = 4;
    let barrier = Barrier::new(racers);
    let enqueued = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for r in 0..racers {
            let (barrier, enqueued) = (&barrier, &enqueued);
            let d = dispatcher(h, &format!("racer{r}"));
            s.spawn(move || {
                barrier.wait();
                loop {
                    let report = d
                        .dispatch(3)
                        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
                    enqueued.fetch_add(report.enqueued, Ordering::Relaxed);
                    if report.claimed == 0 {
                        break;
                    }
                }
            });
        }
    });
    let jobs = jobs(h);
    let mut ids: Vec<i64> = jobs
        .iter()
        .filter_map(|j| j.payload["action"].as_i64())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    // Catches: a claim without SKIP LOCKED / a fenced mark (an action enqueued twice).
    if jobs.len() != 40 || ids.len() != 40 || enqueued.load(Ordering::Relaxed) != 40 {
        fail(
            case,
            format_args!(
                "{} jobs for {} distinct actions, {} reported",
                jobs.len(),
                ids.len(),
                enqueued.load(Ordering::Relaxed)
            ),
        );
    }
    let actions = h
        .actions()
        .list_actions(&ActionFilter::default(), 100)
        .unwrap_or_else(|e| fail(case, format_args!("list: {e}")));
    if !actions
        .iter()
        .all(|a| a.state == ActionState::Processed && a.job.is_some() && a.processed_at.is_some())
    {
        fail(
            case,
            format_args!("not every action is marked: {actions:?}"),
        );
    }
}

/// Rules are stored with the action and checked at dispatch: an action whose rule holds becomes
/// a job; one whose rule does not is skipped with the rule recorded (or, under
/// `RuleFailure::Retry`, retried and finally parked).
pub fn rules_are_checked_at_dispatch(h: &dyn ActionHarness) {
    let case = "rules_are_checked_at_dispatch";
    let p = Publisher::new(h.actions());
    let publish = |status: &str, max: u32| {
        p.action("case.rule")
            .payload_value(json!({"user": {"status": status}}))
            .rule(r#"payload.user.status == "active""#)
            .max_attempts(max)
            .publish()
            .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")))
            .id()
            .unwrap_or_else(|| fail(case, format_args!("no id")))
    };
    let active = publish("active", 5);
    let banned = publish("banned", 5);
    let malformed = p
        .action("case.rule")
        .rule("payload.user.status ~ 1")
        .publish();
    if malformed.is_ok() {
        fail(case, format_args!("a malformed rule was published"));
    }
    let report = dispatcher(h, "d")
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    let get = |id| {
        h.actions()
            .get_action(id)
            .unwrap_or_else(|e| fail(case, format_args!("get: {e}")))
            .unwrap_or_else(|| fail(case, format_args!("action {id} is gone")))
    };
    let (a, b) = (get(active), get(banned));
    // Catches: rules not stored, or not evaluated at dispatch.
    if report.enqueued != 1
        || report.skipped != 1
        || a.state != ActionState::Processed
        || b.state != ActionState::Skipped
        || !b
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("payload.user.status"))
    {
        fail(case, format_args!("{report:?}, active {a:?}, banned {b:?}"));
    }
    // Under RuleFailure::Retry: recorded, retried, then parked.
    let waiting = publish("pending", 2);
    let retrying = Dispatcher::builder(h.actions())
        .processor(ToJob {
            calls: Arc::new(AtomicUsize::new(0)),
        })
        .on_rule_failure(RuleFailure::Retry)
        .retry(RetryPolicy::schedule([Duration::from_secs(10)]))
        .build();
    let first = retrying
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    h.advance(Duration::from_secs(11));
    let second = retrying
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    let w = get(waiting);
    if first.retried != 1 || second.parked != 1 || w.state != ActionState::Parked {
        fail(case, format_args!("{first:?} {second:?} {w:?}"));
    }
}

/// A dispatcher that dies between its claim and its mark leaves the action claimed until the
/// claim expires; another dispatcher then dispatches it once, and the dead one's late mark is
/// stale and writes nothing.
pub fn a_dispatcher_killed_between_claim_and_mark(h: &dyn ActionHarness) {
    let case = "a_dispatcher_killed_between_claim_and_mark";
    let p = Publisher::new(h.actions());
    let id = p
        .quick("case.kill", RunAt::Now, json!({}), Some("kill/1"))
        .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")))
        .id()
        .unwrap_or_else(|| fail(case, format_args!("no id")));
    let store = h.actions();
    let zombie = store
        .claim_actions(&ActionClaim {
            token: "zombie",
            limit: 10,
            ttl: Duration::from_secs(30),
        })
        .unwrap_or_else(|e| fail(case, format_args!("claim: {e}")));
    if zombie.len() != 1 {
        fail(case, format_args!("the zombie claimed {}", zombie.len()));
    }
    let d = dispatcher(h, "survivor");
    let blocked = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    // Catches: a claim that takes an action under a live claim (dropping the memory store's
    // claim-expiry check failed here).
    if blocked.claimed != 0 {
        fail(
            case,
            format_args!("claimed under a live claim: {blocked:?}"),
        );
    }
    h.advance(Duration::from_secs(31));
    let taken = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    if taken.enqueued != 1 {
        fail(case, format_args!("not taken over: {taken:?}"));
    }
    let job = NewJob {
        kind: "action.job".into(),
        queue: QUEUE.into(),
        payload: json!({"zombie": true}),
        metadata: Value::Null,
        priority: 0,
        run_at: RunAt::Now,
        max_attempts: 1,
        idempotent: true,
        unique_key: None,
        guard: None,
    };
    let late = store
        .finish_action(
            &ActionLease {
                id,
                token: "zombie".into(),
            },
            &ActionOutcome::Enqueue(&job),
        )
        .unwrap_or_else(|e| fail(case, format_args!("late finish: {e}")));
    // Catches: a mark not fenced by the claim token and the pending state (the SQL FENCE
    // weakened to `id = ?` failed here: "late mark Applied, 2 jobs").
    if late != FenceCheck::Stale || jobs(h).len() != 1 {
        fail(
            case,
            format_args!("late mark {late:?}, {} jobs", jobs(h).len()),
        );
    }
}

/// A processor error is recorded on the action and retried after the backoff, then parked after
/// the last attempt; a permanent error parks at once; an unknown type is recorded and retried;
/// an operator's retry makes a parked action pending again.
pub fn processor_errors_are_recorded_retried_and_parked(h: &dyn ActionHarness) {
    let case = "processor_errors_are_recorded_retried_and_parked";
    let p = Publisher::new(h.actions());
    let publish = |t: &str| {
        p.action(t)
            .max_attempts(2)
            .publish()
            .unwrap_or_else(|e| fail(case, format_args!("publish: {e}")))
            .id()
            .unwrap_or_else(|| fail(case, format_args!("no id")))
    };
    let flaky = publish("flaky.mail");
    let permanent = publish("flaky.permanent");
    let unknown = publish("nobody.handles");
    let d = dispatcher(h, "d");
    let first = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    let get = |id| {
        h.actions()
            .get_action(id)
            .unwrap_or_else(|e| fail(case, format_args!("get: {e}")))
            .unwrap_or_else(|| fail(case, format_args!("action {id} is gone")))
    };
    let (f, pm, u) = (get(flaky), get(permanent), get(unknown));
    if first.retried != 2
        || first.parked != 1
        || f.state != ActionState::Pending
        || !f
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("mail service is down"))
        || pm.state != ActionState::Parked
        || !u
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no processor"))
    {
        fail(case, format_args!("{first:?}: {f:?} {pm:?} {u:?}"));
    }
    // Not before the backoff.
    let early = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    if early.claimed != 0 {
        fail(case, format_args!("retried before its backoff: {early:?}"));
    }
    h.advance(Duration::from_secs(11));
    let second = d
        .dispatch(10)
        .unwrap_or_else(|e| fail(case, format_args!("dispatch: {e}")));
    if second.parked != 2 || get(flaky).state != ActionState::Parked {
        fail(case, format_args!("last attempt: {second:?}"));
    }
    let retried = h
        .actions()
        .retry_action(flaky)
        .unwrap_or_else(|e| fail(case, format_args!("retry: {e}")));
    let not_parked = h
        .actions()
        .retry_action(publish("case.fresh"))
        .unwrap_or_else(|e| fail(case, format_args!("retry: {e}")));
    let again = get(flaky);
    if retried != RetryAction::Applied
        || again.state != ActionState::Pending
        || again.attempts != 0
        || not_parked != RetryAction::WrongState(ActionState::Pending)
    {
        fail(case, format_args!("{retried:?} {again:?} {not_parked:?}"));
    }
}
