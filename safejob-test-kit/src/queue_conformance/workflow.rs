//! Workflows at the port: a batch inserted whole or not at all, dependents unlocked by the
//! completion of their last dependency, each failure policy, the callback released once, cancel,
//! a dead-lettered member, an aborted completion, racing members, and fan-in end to end.

use std::{collections::BTreeMap, thread};

use safejob_core::{
    KeyDigest, Retention,
    queue::{
        AttemptError, CompleteAs, Completed, Completion, ErrorKind, GuardFinish, GuardSpec,
        JobFilter, JobId, JobQuery, KindOptions, NewJob, OpResult, QueueJob, QueueState, Registry,
        WorkContext, WorkError,
    },
    store::{Acquired, EffectsAborted, FenceCheck},
    workflow::{
        BatchBuilder, BatchId, BatchInfo, BatchOutcome, BatchPolicy, BatchState, WorkflowError,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    QueueHarness,
    fixtures::{Case, CaseError, PAST_TTL, RACERS, TTL},
};

impl Case<'_> {
    fn batch(&self, policy: BatchPolicy) -> BatchBuilder {
        BatchBuilder::new(format!("{}:batch", self.prefix), policy)
    }

    fn member(&self, name: &str) -> NewJob {
        let mut job = self.new_job(name);
        job.payload = json!({"member": name});
        job
    }

    #[track_caller]
    fn dispatch(&self, builder: BatchBuilder) -> BatchId {
        let batch = builder
            .build()
            .unwrap_or_else(|e| self.fail(format_args!("a valid batch was refused: {e}")));
        self.ok("insert_batch", self.store.insert_batch(&batch))
    }

    #[track_caller]
    fn info(&self, id: BatchId) -> BatchInfo {
        match self.ok("batch", self.store.batch(id)) {
            Some(info) => info,
            None => self.fail(format_args!("batch {id} not found")),
        }
    }

    /// Member id → (job, state).
    #[track_caller]
    fn members(&self, id: BatchId) -> BTreeMap<String, (JobId, QueueState)> {
        self.ok("batch_members", self.store.batch_members(id))
            .into_iter()
            .map(|m| (m.name, (m.job, m.state)))
            .collect()
    }

    #[track_caller]
    fn states(&self, id: BatchId) -> BTreeMap<String, QueueState> {
        self.members(id)
            .into_iter()
            .map(|(name, (_, state))| (name, state))
            .collect()
    }

    #[track_caller]
    fn expect_states(&self, id: BatchId, want: &[(&str, QueueState)], when: &str) {
        let got = self.states(id);
        for (name, state) in want {
            if got.get(*name) != Some(state) {
                self.fail(format_args!(
                    "{when}: member {name} should be {state}, all members: {got:?}"
                ));
            }
        }
    }

    /// Claims every due job of the case's queue and returns the claim of `job`, giving the others
    /// back by a zero snooze.
    #[track_caller]
    fn claim_member(&self, job: JobId) -> safejob_core::queue::Claimed {
        let mut mine = None;
        for claimed in self.claim(64) {
            if claimed.job.id == job {
                mine = Some(claimed);
            } else {
                let back = CompleteAs::Snooze {
                    delay: std::time::Duration::ZERO,
                    error: None,
                };
                self.complete(&claimed.lease, back);
            }
        }
        mine.unwrap_or_else(|| self.fail(format_args!("job {job} was not claimable")))
    }

    #[track_caller]
    fn end_member(&self, id: BatchId, name: &str, outcome: CompleteAs) {
        let job = self.members(id)[name].0;
        let claimed = self.claim_member(job);
        let done = self.complete(&claimed.lease, outcome);
        if done != Completed::Applied {
            self.fail(format_args!("completing member {name}: {done:?}"));
        }
    }

    #[track_caller]
    fn callback_jobs(&self) -> Vec<safejob_core::queue::QueuedJob> {
        let all = self.ok(
            "list",
            self.store.list(&JobQuery {
                filter: JobFilter::default().kind(self.kind("callback")),
                after: None,
                limit: 100,
            }),
        );
        all.into_iter()
            .filter(|j| j.state != QueueState::Blocked)
            .collect()
    }
}

fn dead(message: &str) -> CompleteAs {
    CompleteAs::Dead {
        error: AttemptError::new(ErrorKind::Fatal, message),
    }
}

/// A batch that cannot be valid (empty, duplicate or unknown member id, a cycle, threshold 0) is
/// a typed error, and nothing of it is inserted.
pub fn batch_validation_inserts_nothing(harness: &dyn QueueHarness) {
    let c = Case::new("batch_validation_inserts_nothing", harness);
    let cases: Vec<(&str, BatchBuilder)> = vec![
        ("empty", c.batch(BatchPolicy::Continue)),
        (
            "duplicate",
            c.batch(BatchPolicy::Continue)
                .add_job("a", Ok(c.member("a")), &[])
                .add_job("a", Ok(c.member("a2")), &[]),
        ),
        (
            "unknown",
            c.batch(BatchPolicy::Continue)
                .add_job("a", Ok(c.member("a")), &["ghost"]),
        ),
        (
            "cycle",
            c.batch(BatchPolicy::FailFast)
                .add_job("a", Ok(c.member("a")), &["c"])
                .add_job("b", Ok(c.member("b")), &["a"])
                .add_job("c", Ok(c.member("c")), &["b"]),
        ),
        (
            "threshold 0",
            c.batch(BatchPolicy::Threshold(0))
                .add_job("a", Ok(c.member("a")), &[]),
        ),
    ];
    for (what, builder) in cases {
        let error = match builder.build() {
            Ok(batch) => c.fail(format_args!("{what}: accepted {batch:?}")),
            Err(e) => e,
        };
        let right = match what {
            "empty" => matches!(error, WorkflowError::EmptyBatch { .. }),
            "duplicate" => {
                matches!(&error, WorkflowError::DuplicateMember { member } if member == "a")
            }
            "unknown" => {
                matches!(&error, WorkflowError::UnknownDependency { dependency, .. } if dependency == "ghost")
            }
            "cycle" => matches!(&error, WorkflowError::Cycle { members } if members.len() == 3),
            _ => matches!(error, WorkflowError::ZeroThreshold),
        };
        ensure!(c, right, "{what}: wrong error {error:?}");
    }
    let rows = c.ok(
        "list",
        c.store.list(&JobQuery {
            filter: JobFilter::default().queue(c.queue.clone()),
            after: None,
            limit: 10,
        }),
    );
    ensure!(
        c,
        rows.is_empty(),
        "a refused batch inserted jobs: {rows:?}"
    );
}

/// A diamond a → {b, c} → d: only a runs at first; the completion of a makes b and c pending in
/// its own step; d waits for both; the batch ends `succeeded` with d, and its callback is
/// released then, told the outcome.
pub fn diamond_unlocks_in_the_completing_step(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("diamond_unlocks_in_the_completing_step", harness);
    let mut callback = c.new_job("callback");
    callback.metadata = json!({"team": "data"});
    let id = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("d", Ok(c.member("d")), &["b", "c"])
            .add_job("b", Ok(c.member("b")), &["a"])
            .add_job("a", Ok(c.member("a")), &[])
            .add_job("c", Ok(c.member("c")), &["a"])
            .on_finish_job(Ok(callback)),
    );
    c.expect_states(
        id,
        &[
            ("a", Pending),
            ("b", Blocked),
            ("c", Blocked),
            ("d", Blocked),
        ],
        "after dispatch",
    );
    let info = c.info(id);
    ensure!(
        c,
        info.state == BatchState::Running && info.counts.total == 4 && info.counts.blocked == 3,
        "after dispatch: {info:?}"
    );
    // Catches: a claim that takes blocked members.
    let claimed = c.claim(64);
    let claimable: Vec<JobId> = claimed.iter().map(|cl| cl.job.id).collect();
    ensure!(
        c,
        claimable == vec![c.members(id)["a"].0],
        "only a may be claimed, got {claimable:?}"
    );
    ensure!(
        c,
        c.complete(&claimed[0].lease, CompleteAs::Succeeded) == Completed::Applied,
        "completing a"
    );
    // Catches: unlocking later (by a poller) instead of in the completion's own step.
    c.expect_states(
        id,
        &[
            ("a", Succeeded),
            ("b", Pending),
            ("c", Pending),
            ("d", Blocked),
        ],
        "after a",
    );
    let b_row = c.get(c.members(id)["b"].0);
    c.near("b's run_at", Some(b_row.run_at), c.now());
    c.end_member(id, "b", CompleteAs::Succeeded);
    // Catches: unlocking when any (not all) dependency succeeded (`all` → `any` in
    // settle::plan failed here).
    c.expect_states(id, &[("d", Blocked)], "after b");
    ensure!(c, c.callback_jobs().is_empty(), "callback released early");
    c.end_member(id, "c", CompleteAs::Succeeded);
    c.expect_states(id, &[("d", Pending)], "after c");
    c.end_member(id, "d", CompleteAs::Succeeded);
    let info = c.info(id);
    ensure!(
        c,
        info.state == BatchState::Succeeded
            && info.counts.succeeded == 4
            && info.finished_at.is_some(),
        "after d: {info:?}"
    );
    let callbacks = c.callback_jobs();
    ensure!(
        c,
        callbacks.len() == 1
            && callbacks[0].state == Pending
            && Some(callbacks[0].id) == info.callback,
        "the callback must be released once: {callbacks:?}"
    );
    let outcome = BatchOutcome::from_metadata(&callbacks[0].metadata);
    ensure!(
        c,
        outcome.as_ref().is_some_and(|o| o.batch == id
            && o.state == BatchState::Succeeded
            && o.counts.succeeded == 4),
        "the callback's outcome: {outcome:?}"
    );
    ensure!(
        c,
        callbacks[0].metadata["team"] == "data",
        "the callback's own metadata was lost: {}",
        callbacks[0].metadata
    );
}

/// `continue`: a dead member's dependents are cancelled (transitively), an independent branch
/// goes on, and the batch ends `failed` once every member ended.
pub fn continue_cancels_only_dependents(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("continue_cancels_only_dependents", harness);
    let id = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("a", Ok(c.member("a")), &[])
            .add_job("b", Ok(c.member("b")), &["a"])
            .add_job("c", Ok(c.member("c")), &["b"])
            .add_job("x", Ok(c.member("x")), &[])
            .on_finish_job(Ok(c.new_job("callback"))),
    );
    c.end_member(id, "a", dead("a fails"));
    // Catches: not cascading (c left blocked forever) or cancelling the independent branch.
    c.expect_states(
        id,
        &[
            ("a", Dead),
            ("b", Cancelled),
            ("c", Cancelled),
            ("x", Pending),
        ],
        "after a died",
    );
    let b = c.get(c.members(id)["b"].0);
    ensure!(
        c,
        b.errors
            .last()
            .is_some_and(|e| e.kind == ErrorKind::Cancelled),
        "a cancelled member records why: {:?}",
        b.errors
    );
    ensure!(c, c.info(id).state == BatchState::Running, "x still runs");
    c.end_member(id, "x", CompleteAs::Succeeded);
    let info = c.info(id);
    ensure!(
        c,
        info.state == BatchState::Failed
            && info.counts.failed == 1
            && info.counts.cancelled == 2
            && info.counts.succeeded == 1,
        "after x: {info:?}"
    );
    let outcome = c
        .callback_jobs()
        .first()
        .and_then(|j| BatchOutcome::from_metadata(&j.metadata));
    ensure!(
        c,
        outcome.is_some_and(|o| o.state == BatchState::Failed),
        "the callback is told failed"
    );
    // Catches: a retry that runs a member whose dependency never succeeded.
    let retried = c.ok("retry", c.store.retry(c.members(id)["b"].0));
    ensure!(
        c,
        retried == OpResult::DependenciesUnmet,
        "retrying b: {retried:?}"
    );
}

/// `fail_fast`: the first failure cancels every member not running; a running member finishes,
/// and the batch ends `failed` when it does.
pub fn fail_fast_cancels_members_not_running(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("fail_fast_cancels_members_not_running", harness);
    let mut later = c.member("later");
    later.run_at = safejob_core::queue::RunAt::After(std::time::Duration::from_secs(3600));
    let id = c.dispatch(
        c.batch(BatchPolicy::FailFast)
            .add_job("a", Ok(c.member("a")), &[])
            .add_job("b", Ok(c.member("b")), &[])
            .add_job("after_b", Ok(c.member("after_b")), &["b"])
            .add_job("later", Ok(later), &[]),
    );
    let m = c.members(id);
    let claimed = c.claim(64);
    let lease_of = |job: JobId| {
        claimed
            .iter()
            .find(|cl| cl.job.id == job)
            .map(|cl| cl.lease.clone())
            .unwrap_or_else(|| c.fail(format_args!("job {job} not claimed")))
    };
    let (a, b) = (lease_of(m["a"].0), lease_of(m["b"].0));
    ensure!(
        c,
        c.complete(&a, dead("a fails")) == Completed::Applied,
        "a"
    );
    // Catches: fail_fast behaving like continue (later left scheduled) or cancelling b while it
    // runs.
    c.expect_states(
        id,
        &[
            ("a", Dead),
            ("b", Running),
            ("after_b", Cancelled),
            ("later", Cancelled),
        ],
        "after a died",
    );
    ensure!(c, c.info(id).state == BatchState::Running, "b still runs");
    ensure!(
        c,
        c.complete(&b, CompleteAs::Succeeded) == Completed::Applied,
        "b"
    );
    let info = c.info(id);
    ensure!(
        c,
        info.state == BatchState::Failed && info.counts.succeeded == 1,
        "after b: {info:?}"
    );
}

/// `threshold(2)`: one failure is tolerated; the second cancels the rest and fails the batch; a
/// batch with one failure ends `succeeded`.
pub fn threshold_tolerates_failures_below_n(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("threshold_tolerates_failures_below_n", harness);
    let tolerant = c.dispatch(
        c.batch(BatchPolicy::Threshold(2))
            .add_job("a", Ok(c.member("a")), &[])
            .add_job("b", Ok(c.member("b")), &[]),
    );
    c.end_member(tolerant, "a", dead("one failure"));
    c.expect_states(tolerant, &[("b", Pending)], "one failure of two allowed");
    c.end_member(tolerant, "b", CompleteAs::Succeeded);
    let info = c.info(tolerant);
    ensure!(
        c,
        info.state == BatchState::Succeeded && info.counts.failed == 1,
        "one failure under threshold(2) succeeds: {info:?}"
    );
    let tripped = c.dispatch(
        c.batch(BatchPolicy::Threshold(2))
            .add_job("a", Ok(c.member("ta")), &[])
            .add_job("b", Ok(c.member("tb")), &[])
            .add_job("c", Ok(c.member("tc")), &["a"])
            .add_job("d", Ok(c.member("td")), &[]),
    );
    c.end_member(tripped, "a", dead("first"));
    c.expect_states(
        tripped,
        &[("c", Cancelled), ("d", Pending)],
        "first failure",
    );
    c.end_member(tripped, "b", dead("second"));
    // Catches: counting the threshold off by one.
    c.expect_states(tripped, &[("d", Cancelled)], "second failure");
    let info = c.info(tripped);
    ensure!(
        c,
        info.state == BatchState::Failed && info.counts.failed == 2,
        "two failures under threshold(2): {info:?}"
    );
}

/// An operator's cancel of a batch cancels its waiting and blocked members at once, lets the
/// running one finish, then ends the batch `cancelled`; a second cancel, or a cancel of an ended
/// batch, changes nothing.
pub fn cancel_batch_waits_for_running_members(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("cancel_batch_waits_for_running_members", harness);
    let id = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("a", Ok(c.member("a")), &[])
            .add_job("b", Ok(c.member("b")), &[])
            .add_job("c", Ok(c.member("c")), &["a"])
            .on_finish_job(Ok(c.new_job("callback"))),
    );
    let a = c.claim_member(c.members(id)["a"].0);
    let cancelled = c.ok("cancel_batch", c.store.cancel_batch(id));
    ensure!(
        c,
        cancelled == OpResult::Applied,
        "cancel_batch: {cancelled:?}"
    );
    c.expect_states(
        id,
        &[("a", Running), ("b", Cancelled), ("c", Cancelled)],
        "after the cancel",
    );
    ensure!(
        c,
        c.info(id).state == BatchState::Running && c.info(id).cancel_requested,
        "a member still runs"
    );
    ensure!(c, c.callback_jobs().is_empty(), "callback before the end");
    ensure!(
        c,
        c.complete(&a.lease, CompleteAs::Succeeded) == Completed::Applied,
        "a finishes"
    );
    let info = c.info(id);
    ensure!(c, info.state == BatchState::Cancelled, "after a: {info:?}");
    let callbacks = c.callback_jobs();
    ensure!(
        c,
        callbacks.len() == 1
            && BatchOutcome::from_metadata(&callbacks[0].metadata)
                .is_some_and(|o| o.state == BatchState::Cancelled),
        "the callback is told cancelled, once: {callbacks:?}"
    );
    let again = c.ok("cancel_batch", c.store.cancel_batch(id));
    ensure!(
        c,
        again == OpResult::BatchEnded(BatchState::Cancelled),
        "cancel of an ended batch: {again:?}"
    );
    let unknown = c.ok("cancel_batch", c.store.cancel_batch(BatchId(i64::MAX)));
    ensure!(
        c,
        unknown == OpResult::NotFound,
        "unknown batch: {unknown:?}"
    );
    // An operator's cancel of one blocked member settles its batch too.
    let other = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("a", Ok(c.member("oa")), &[])
            .add_job("b", Ok(c.member("ob")), &["a"])
            .add_job("c", Ok(c.member("oc")), &["b"]),
    );
    let b = c.members(other)["b"].0;
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(b)) == OpResult::Applied,
        "cancel of a blocked member"
    );
    c.expect_states(
        other,
        &[("c", Cancelled), ("a", Pending)],
        "after cancelling b",
    );
}

/// A member whose worker died on its last attempt is dead-lettered by the reaper, and the reaper's
/// step settles the batch: its dependents are cancelled and the batch ends.
pub fn reaped_member_settles_its_batch(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("reaped_member_settles_its_batch", harness);
    let mut once = c.member("a");
    once.max_attempts = 1;
    let id = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("a", Ok(once), &[])
            .add_job("b", Ok(c.member("b")), &["a"]),
    );
    let _zombie = c.claim_member(c.members(id)["a"].0);
    c.advance(PAST_TTL);
    let reaped = c.ok("reap", c.store.reap(100));
    ensure!(
        c,
        reaped
            .iter()
            .any(|r| r.id == c.members(id)["a"].0 && r.state == Dead),
        "a must be reaped to dead: {reaped:?}"
    );
    // Catches: a reaper that moves a member to dead without settling its batch (b blocked
    // forever; removing the settle from the SQL reaper failed this case on all three).
    c.expect_states(id, &[("a", Dead), ("b", Cancelled)], "after the reaper");
    ensure!(
        c,
        c.info(id).state == BatchState::Failed,
        "the batch ends with the reaper's step"
    );
}

/// A completion that unlocks dependents and is aborted in the middle (its transactional effects
/// hook fails, as a worker killed inside it would) unlocks nothing; the member is taken over
/// after its lease expires, and its next completion unlocks the dependents once.
pub fn aborted_completion_unlocks_nothing(harness: &dyn QueueHarness) {
    use QueueState::*;
    let c = Case::new("aborted_completion_unlocks_nothing", harness);
    let spec = GuardSpec {
        digest: KeyDigest::of(&format!("{}:guard:a", c.prefix)),
        fingerprint: None,
    };
    let mut a = c.member("a");
    a.guard = Some(spec);
    let id = c.dispatch(
        c.batch(BatchPolicy::Continue)
            .add_job("a", Ok(a), &[])
            .add_job("b", Ok(c.member("b")), &["a"]),
    );
    let job = c.members(id)["a"].0;
    let complete = |claimed: &safejob_core::queue::Claimed, fail: bool| {
        let Some(Acquired::Granted(glease)) = claimed.guard.clone() else {
            c.fail(format_args!("guard not granted: {:?}", claimed.guard));
        };
        let mut hook = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
            if fail { Err(EffectsAborted) } else { Ok(()) }
        };
        c.ok(
            "complete",
            c.store.complete(
                &Completion {
                    lease: &claimed.lease,
                    outcome: CompleteAs::Succeeded,
                    progress: None,
                    guard: Some(GuardFinish::Succeeded {
                        lease: &glease,
                        result: None,
                        effects_ttl: TTL,
                        has_effects: true,
                        retention: Retention::Forever,
                    }),
                    batch: claimed.job.batch,
                },
                Some(&mut hook),
            ),
        )
    };
    let first = c.claim_member(job);
    let aborted = complete(&first, true);
    ensure!(
        c,
        aborted == Completed::EffectsAborted,
        "abort: {aborted:?}"
    );
    // Catches: a settle that is not rolled back with the completion.
    c.expect_states(id, &[("a", Running), ("b", Blocked)], "after the abort");
    c.advance(PAST_TTL);
    c.ok("reap", c.store.reap(100));
    let second = c.claim_member(job);
    ensure!(
        c,
        complete(&second, false) == Completed::Applied,
        "retry completes"
    );
    c.expect_states(id, &[("a", Succeeded), ("b", Pending)], "after the retry");
    ensure!(
        c,
        c.info(id).state == BatchState::Running,
        "b has yet to run"
    );
}

/// Many members ending at the same moment from many threads: the batch ends exactly once, with
/// every member counted, and its callback is released exactly once.
pub fn racing_members_end_the_batch_once(harness: &dyn QueueHarness) {
    let c = Case::new("racing_members_end_the_batch_once", harness);
    let mut builder = c
        .batch(BatchPolicy::Continue)
        .on_finish_job(Ok(c.new_job("callback")));
    let names: Vec<String> = (0..RACERS).map(|i| format!("m{i}")).collect();
    for name in &names {
        builder = builder.add_job(name.clone(), Ok(c.member(name)), &[]);
    }
    let fan_in: Vec<&str> = names.iter().map(String::as_str).collect();
    builder = builder.add_job("join", Ok(c.member("join")), &fan_in);
    let id = c.dispatch(builder);
    let claimed = c.claim(RACERS + 8);
    ensure!(c, claimed.len() == RACERS, "claimed {}", claimed.len());
    let store = c.store.clone();
    let answers: Vec<Completed> = thread::scope(|s| {
        let handles: Vec<_> = claimed
            .iter()
            .map(|cl| {
                let store = store.clone();
                s.spawn(move || {
                    store.complete(
                        &Completion {
                            lease: &cl.lease,
                            outcome: CompleteAs::Succeeded,
                            progress: None,
                            guard: None,
                            batch: cl.job.batch,
                        },
                        None,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => c.fail(format_args!("a racing completion failed: {e}")),
                Err(_) => c.fail(format_args!("a racing completion panicked")),
            })
            .collect()
    });
    ensure!(
        c,
        answers.iter().all(|a| *a == Completed::Applied),
        "racing completions: {answers:?}"
    );
    // Catches: two settles that do not see each other's member (join left blocked): with the
    // batch row lock (FOR UPDATE) removed, PostgreSQL and MariaDB failed 5 of 6 runs.
    c.expect_states(id, &[("join", QueueState::Pending)], "after the race");
    c.end_member(id, "join", CompleteAs::Succeeded);
    let info = c.info(id);
    ensure!(
        c,
        info.state == BatchState::Succeeded && info.counts.succeeded as usize == RACERS + 1,
        "{info:?}"
    );
    ensure!(c, c.callback_jobs().len() == 1, "one callback");
}

/// Produces `n * 10` as its result.
#[derive(Serialize, Deserialize)]
pub(super) struct Produce {
    n: u64,
}

impl QueueJob for Produce {
    const KIND: &'static str = "conformance.workflow.produce";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        match ctx.set_result(&json!(self.n * 10)) {
            Ok(FenceCheck::Applied) => Ok(()),
            other => Err(WorkError::Retryable(CaseError(format!("{other:?}")))),
        }
    }
}

/// Sums its dependencies' results and stores the sum as its own result.
#[derive(Serialize, Deserialize)]
pub(super) struct Sum;

impl QueueJob for Sum {
    const KIND: &'static str = "conformance.workflow.sum";
    type Error = CaseError;
    fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<CaseError>> {
        let results = ctx
            .dependency_results()
            .map_err(|e| WorkError::Retryable(CaseError(e.to_string())))?;
        let sum: u64 = results.values().flatten().filter_map(Value::as_u64).sum();
        let seen: Vec<&String> = results.keys().collect();
        ctx.set_result(&json!({"sum": sum, "from": seen}))
            .map_err(|e| WorkError::Retryable(CaseError(e.to_string())))?;
        Ok(())
    }
    fn options() -> KindOptions {
        KindOptions::new().max_attempts(1)
    }
}

/// Fan-in end to end: a worker runs three producers, then the member depending on them reads
/// their results by member id, and its own result is stored.
pub fn fan_in_reads_dependency_results(harness: &dyn QueueHarness) {
    let c = Case::new("fan_in_reads_dependency_results", harness);
    let opts = c.options();
    let batch = c
        .batch(BatchPolicy::FailFast)
        .add_with("p1", &Produce { n: 1 }, &opts, &[])
        .add_with("p2", &Produce { n: 2 }, &opts, &[])
        .add_with("p3", &Produce { n: 3 }, &opts, &[])
        .add_with("sum", &Sum, &opts, &["p1", "p2", "p3"]);
    let id = c.dispatch(batch);
    let mut registry = Registry::new();
    registry.register::<Produce>();
    registry.register::<Sum>();
    let worker = c.worker(registry);
    let mut ran = 0;
    for _ in 0..4 {
        ran += c.run_once(&worker).len();
    }
    ensure!(c, ran == 4, "ran {ran} jobs");
    let info = c.info(id);
    ensure!(c, info.state == BatchState::Succeeded, "{info:?}");
    let members = c.ok("batch_members", c.store.batch_members(id));
    let sum = members
        .iter()
        .find(|m| m.name == "sum")
        .and_then(|m| m.result.clone());
    // Catches: results not stored, or dependency_results reading the wrong members.
    ensure!(
        c,
        sum == Some(json!({"sum": 60, "from": ["p1", "p2", "p3"]})),
        "the fan-in member's result: {sum:?}"
    );
    let outside = c.enqueue(c.new_job("loner"));
    let none = c.ok(
        "dependency_results",
        safejob_core::workflow::dependency_results(&*c.store, outside),
    );
    ensure!(
        c,
        none.is_empty(),
        "a job outside a batch has no dependencies"
    );
}
