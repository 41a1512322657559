//! Guarded jobs, at the port: a claim that acquires the guard, and completions that finalize the
//! guard with the job, all or nothing.

use std::time::Duration;

use safejob_core::{
    Fingerprint, KeyDigest, Retention,
    queue::{
        CompleteAs, Completed, Completion, GuardFinish, GuardSpec, JobId, QueueLease, QueueState,
    },
    store::{Acquired, EffectsAborted, EffectsState, JobState},
};
use serde_json::json;

use super::{
    QueueHarness,
    fixtures::{Case, PAST_TTL, TTL},
};

pub(super) fn guard_spec(c: &Case<'_>, part: &str, fp: u8) -> GuardSpec {
    GuardSpec {
        digest: KeyDigest::of(&format!("{}:guard:{part}", c.prefix)),
        fingerprint: Some(Fingerprint::of_bytes(&[fp; 8])),
    }
}

/// A guarded job's claim performs the guard's acquire in the same step: the first claim is
/// granted, a concurrent duplicate is busy, a duplicate after success is told so, other
/// parameters are a conflict; the completion finalizes the guard in the same step.
pub fn guarded_claim_acquires_the_guard(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_claim_acquires_the_guard", harness);
    let spec = guard_spec(&c, "g", 1);
    let mut job = c.new_job("guarded");
    job.idempotent = false;
    job.guard = Some(spec);
    let a = c.enqueue(job.clone());
    let b = c.enqueue(job.clone());
    ensure!(
        c,
        c.get(a).idempotent,
        "a guarded job is always idempotent for the reaper"
    );
    ensure!(
        c,
        c.get(a).guard == Some(spec),
        "the guard is stored with the job"
    );
    let claimed = c.claim_as("wg", 2);
    ensure!(
        c,
        claimed.len() == 2,
        "claim both duplicates: {}",
        claimed.len()
    );
    let (first, second) = (&claimed[0], &claimed[1]);
    ensure!(
        c,
        first.job.id == a && second.job.id == b,
        "claim order of the duplicates"
    );
    let glease = match &first.guard {
        Some(Acquired::Granted(lease)) => lease.clone(),
        other => c.fail(format_args!(
            "the first guarded claim: expected Granted, got {other:?}"
        )),
    };
    ensure!(
        c,
        glease.digest == spec.digest && glease.fence == 1 && glease.owner == "wg",
        "the guard lease: {glease:?}"
    );
    ensure!(
        c,
        matches!(&second.guard, Some(Acquired::Busy { .. })),
        "a concurrent duplicate's guard must be busy: {:?}",
        second.guard
    );
    let row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        row.as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == 1),
        "the guard row after the claim: {row:?}"
    );
    let result = json!({"receipt": 1});
    let done = c.ok(
        "complete",
        c.store.complete(
            &Completion {
                lease: &first.lease,
                outcome: CompleteAs::Succeeded,
                progress: None,
                guard: Some(GuardFinish::Succeeded {
                    lease: &glease,
                    result: Some(&result),
                    effects_ttl: TTL,
                    has_effects: true,
                    retention: Retention::Forever,
                }),
                batch: None,
            },
            None,
        ),
    );
    ensure!(
        c,
        done == Completed::Applied,
        "guarded completion: {done:?}"
    );
    let row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        row.as_ref().is_some_and(|r| r.state == JobState::Succeeded
            && r.result.as_ref() == Some(&result)
            && r.effects == EffectsState::Pending),
        "the guard is finalized with the job: {row:?}"
    );
    ensure!(
        c,
        c.get(a).state == QueueState::Succeeded,
        "the job is succeeded with its guard"
    );
    c.complete(
        &second.lease,
        CompleteAs::Snooze {
            delay: Duration::ZERO,
            error: None,
        },
    );
    let third = c.claim_one();
    ensure!(
        c,
        third.job.id == b
            && matches!(&third.guard, Some(Acquired::AlreadySucceeded(r)) if r.result.as_ref() == Some(&result)),
        "a duplicate after success: expected AlreadySucceeded with the result, got {:?}",
        third.guard
    );
    let mut conflicting = job;
    conflicting.guard = Some(guard_spec(&c, "g", 2));
    c.enqueue(conflicting);
    let fourth = c.claim(10);
    ensure!(
        c,
        fourth.len() == 1 && matches!(&fourth[0].guard, Some(Acquired::KeyConflict { .. })),
        "same key, other fingerprint: expected KeyConflict, got {:?}",
        fourth.iter().map(|f| &f.guard).collect::<Vec<_>>()
    );
}

/// One claim of several guarded jobs answers each job for its own key, whatever mix of keys it
/// holds: fresh keys granted (fence 1), a duplicate of one of them busy, a succeeded key replayed,
/// a key held elsewhere busy, an expired key taken over (fence + 1), another fingerprint a
/// conflict.
pub fn guarded_claim_answers_each_job_for_its_key(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_claim_answers_each_job_for_its_key", harness);
    let spec = |part: &str| guard_spec(&c, part, 1);
    let acquire = |part: &str| c.acquire_outside(spec(part));
    // `expired`: held by an outsider whose lease then runs out.
    let Acquired::Granted(expired) = acquire("expired") else {
        c.fail(format_args!("the outsider's first acquire"));
    };
    c.advance(PAST_TTL);
    // `held`: held by an outsider now; `done`: succeeded with a result.
    ensure!(
        c,
        matches!(acquire("held"), Acquired::Granted(_)),
        "the outsider holds `held`"
    );
    let Acquired::Granted(done) = acquire("done") else {
        c.fail(format_args!("the outsider's acquire of `done`"));
    };
    let receipt = json!({"receipt": "done"});
    ensure!(
        c,
        c.ok(
            "guards().finalize_succeeded",
            c.store.guards().finalize_succeeded_without_effects(
                &done,
                Some(&receipt),
                TTL,
                Retention::Forever
            ),
        ) == safejob_core::store::Finalized::Committed,
        "the outsider finalizes `done`"
    );
    // In claim order: fresh, its duplicate, done, held, fresh2, expired, `done` with another
    // fingerprint.
    let mut ids = Vec::new();
    for (part, fp) in [
        ("fresh", 1),
        ("fresh", 1),
        ("done", 1),
        ("held", 1),
        ("fresh2", 1),
        ("expired", 1),
        ("done", 2),
    ] {
        let mut job = c.new_job("guarded");
        job.guard = Some(guard_spec(&c, part, fp));
        ids.push(c.enqueue(job));
    }
    let claimed = c.claim_as("wb", 10);
    let got: Vec<JobId> = claimed.iter().map(|x| x.job.id).collect();
    ensure!(c, got == ids, "claim order: {got:?} against {ids:?}");
    let granted = |i: usize, part: &str, fence: u64| match &claimed[i].guard {
        Some(Acquired::Granted(lease)) => ensure!(
            c,
            lease.digest == spec(part).digest && lease.fence == fence && lease.owner == "wb",
            "job {i} ({part}): the lease {lease:?}, expected fence {fence}"
        ),
        other => c.fail(format_args!(
            "job {i} ({part}): expected Granted, got {other:?}"
        )),
    };
    granted(0, "fresh", 1);
    ensure!(
        c,
        matches!(&claimed[1].guard, Some(Acquired::Busy { owner, .. }) if owner.as_deref() == Some("wb")),
        "job 1 (a duplicate of job 0's key): expected Busy by wb, got {:?}",
        claimed[1].guard
    );
    ensure!(
        c,
        matches!(&claimed[2].guard, Some(Acquired::AlreadySucceeded(r)) if r.result.as_ref() == Some(&receipt)),
        "job 2 (done): expected AlreadySucceeded with the receipt, got {:?}",
        claimed[2].guard
    );
    ensure!(
        c,
        matches!(&claimed[3].guard, Some(Acquired::Busy { owner, .. }) if owner.as_deref() == Some("outsider")),
        "job 3 (held): expected Busy by the outsider, got {:?}",
        claimed[3].guard
    );
    granted(4, "fresh2", 1);
    granted(5, "expired", expired.fence + 1);
    ensure!(
        c,
        matches!(&claimed[6].guard, Some(Acquired::KeyConflict { .. })),
        "job 6 (done, other fingerprint): expected KeyConflict, got {:?}",
        claimed[6].guard
    );
}

/// A guarded completion is all or nothing: a stale guard fence or an aborted transactional hook
/// leaves the job running under its lease and the guard untouched.
pub fn guarded_completion_is_all_or_nothing(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_completion_is_all_or_nothing", harness);
    let spec = guard_spec(&c, "atomic", 1);
    let (id, claimed, glease) = c.claim_guarded(spec);
    let complete = |hook: Option<&mut safejob_core::store::TxEffects<'_>>| {
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
                    batch: None,
                },
                hook,
            ),
        )
    };
    let mut abort =
        |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> { Err(EffectsAborted) };
    let aborted = complete(Some(&mut abort));
    ensure!(
        c,
        aborted == Completed::EffectsAborted,
        "an aborting hook: expected EffectsAborted, got {aborted:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running && row.fence == claimed.lease.fence,
        "after an aborted hook the job must still be running under its lease: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == glease.fence),
        "after an aborted hook the guard must be untouched: {guard_row:?}"
    );
    // The guard's lease expires and someone outside the queue takes the key over.
    c.advance(PAST_TTL);
    let other = c.acquire_outside(spec);
    ensure!(
        c,
        matches!(other, Acquired::Granted(_)),
        "takeover of the expired guard: {other:?}"
    );
    let mut ok_hook = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> { Ok(()) };
    let stale = complete(Some(&mut ok_hook));
    ensure!(
        c,
        stale == Completed::GuardStale,
        "a superseded guard: expected GuardStale, got {stale:?}"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running,
        "a GuardStale completion changed the job: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == glease.fence + 1),
        "a GuardStale completion changed the guard: {guard_row:?}"
    );
}

/// A guarded success completed without a hook (after-commit effects, or a job without effects:
/// the path a store may take in one statement) is all or nothing too: a superseded guard is
/// `GuardStale` and a lost job lease `Stale`, both changing nothing; a job without effects
/// finalizes its guard with effects `done`. Claiming a key whose lease expired takes it over.
pub fn guarded_success_without_hook_is_all_or_nothing(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_success_without_hook_is_all_or_nothing", harness);
    let spec = guard_spec(&c, "nohook", 1);
    let (id, claimed, glease) = c.claim_guarded(spec);
    let complete = |lease: &QueueLease, glease: &safejob_core::store::Lease, has_effects| {
        c.ok(
            "complete",
            c.store.complete(
                &Completion {
                    lease,
                    outcome: CompleteAs::Succeeded,
                    progress: None,
                    guard: Some(GuardFinish::Succeeded {
                        lease: glease,
                        result: Some(&json!({"paid": true})),
                        effects_ttl: TTL,
                        has_effects,
                        retention: Retention::Forever,
                    }),
                    batch: None,
                },
                None,
            ),
        )
    };
    // The guard's lease expires and someone outside the queue takes the key over.
    c.advance(PAST_TTL);
    let other = c.acquire_outside(spec);
    let Acquired::Granted(outsider) = other else {
        c.fail(format_args!("takeover of the expired guard: {other:?}"));
    };
    for has_effects in [true, false] {
        let stale = complete(&claimed.lease, &glease, has_effects);
        ensure!(
            c,
            stale == Completed::GuardStale,
            "a superseded guard (has_effects {has_effects}): expected GuardStale, got {stale:?}"
        );
        let row = c.get(id);
        ensure!(
            c,
            row.state == QueueState::Running && row.fence == claimed.lease.fence,
            "a GuardStale completion changed the job: {row:?}"
        );
        let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
        ensure!(
            c,
            guard_row
                .as_ref()
                .is_some_and(|r| r.state == JobState::Running
                    && r.fence == outsider.fence
                    && r.owner.as_deref() == Some("outsider")),
            "a GuardStale completion changed the guard: {guard_row:?}"
        );
    }
    // The job's own lease is lost too: the job's answer comes first.
    c.complete(
        &claimed.lease,
        CompleteAs::Snooze {
            delay: Duration::ZERO,
            error: None,
        },
    );
    let stale = complete(&claimed.lease, &outsider, false);
    ensure!(
        c,
        stale == Completed::Stale,
        "a lost job lease with a live guard: expected Stale, got {stale:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Running && r.fence == outsider.fence),
        "a Stale completion changed the guard: {guard_row:?}"
    );
    // The outsider's lease expires too: the next claim takes the key over.
    c.advance(PAST_TTL);
    let again = c.claim_one();
    let Some(Acquired::Granted(taken)) = again.guard.clone() else {
        c.fail(format_args!(
            "a claim of an expired key: expected Granted, got {:?}",
            again.guard
        ));
    };
    ensure!(
        c,
        again.job.id == id && taken.fence == outsider.fence + 1 && taken.owner == "w1",
        "the takeover's lease: {taken:?}"
    );
    let done = complete(&again.lease, &taken, false);
    ensure!(c, done == Completed::Applied, "completion: {done:?}");
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Succeeded && row.owner.is_none(),
        "the job after its completion: {row:?}"
    );
    let guard_row = c.ok("guards().get", c.store.guards().get(&spec.digest));
    ensure!(
        c,
        guard_row
            .as_ref()
            .is_some_and(|r| r.state == JobState::Succeeded
                && r.fence == taken.fence
                && r.effects == EffectsState::Done
                && r.result.as_ref() == Some(&json!({"paid": true}))),
        "a job without effects finalizes its guard with effects done: {guard_row:?}"
    );
}
