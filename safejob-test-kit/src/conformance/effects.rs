//! Effects: pending until finished, in doubt past their window and listed, claimed only in doubt
//! (one winner among racers), transactional hooks that commit or roll back with the finalize, and
//! finalizes without effects.

use std::{any::Any, collections::BTreeSet};

use safejob_core::{
    JobState, KeyDigest, Retention,
    store::{
        AcquireRequest, Acquired, EffectsAborted, EffectsClaim, EffectsOutcome, EffectsState,
        FenceCheck, Finalized, ListFilter,
    },
};
use serde_json::json;

use super::{
    StoreHarness,
    fixtures::{Case, PAST_TTL, RACERS, TTL, fingerprint, race, slack},
};

/// Without a hook, a finalize leaves the effects pending for an effects window; the winner then
/// marks them done.
pub fn effects_pending_until_finished(harness: &dyn StoreHarness) {
    let case = Case::new("effects_pending_until_finished", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let before = case.now();
    case.succeed(&lease);
    let after = case.now();
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::Pending,
        "effects after finalize {:?}",
        row.effects
    );
    match row.lease_expires_at {
        Some(t) => case.expect_expiry("effects window", t, before, after),
        None => case.fail(format_args!("a pending row has no effects window: {row:?}")),
    }
    ensure!(
        case,
        row.finalized_at
            .is_some_and(|t| t >= before - slack() && t <= after + slack()),
        "finalized_at {:?}",
        row.finalized_at
    );
    let mine = BTreeSet::from([key]);
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &mine);
    ensure!(
        case,
        listed.is_empty(),
        "pending effects within their window listed in doubt"
    );
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::Done,
        "effects {:?}",
        row.effects
    );
    case.advance(PAST_TTL);
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &mine);
    ensure!(case, listed.is_empty(), "done effects listed in doubt");
}

/// Effects that ended in doubt are recorded with their error and listed for operators.
pub fn effects_in_doubt_are_listed(harness: &dyn StoreHarness) {
    let case = Case::new("effects_in_doubt_are_listed", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "smtp down" });
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects in doubt: {r:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::InDoubt && row.last_error.as_deref() == Some("smtp down"),
        "row {row:?}"
    );
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &BTreeSet::from([key]));
    ensure!(case, listed.contains(&key), "in-doubt effects not listed");
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects after in doubt: {r:?}"
    );
    case.expect_unchanged("a finish_effects on in-doubt effects", &row);
}

/// Pending effects whose window ended (their worker died) count as in doubt: visible, not lost.
pub fn pending_effects_past_window_are_in_doubt(harness: &dyn StoreHarness) {
    let case = Case::new("pending_effects_past_window_are_in_doubt", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    case.advance(PAST_TTL);
    let row = case.row(key);
    let now = case.now();
    ensure!(
        case,
        row.effects_in_doubt(now),
        "pending past the window: {row:?} at {now}"
    );
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &BTreeSet::from([key]));
    ensure!(
        case,
        listed.contains(&key),
        "pending effects past their window not listed in doubt"
    );
}

/// `claim_effects` claims only succeeded rows whose effects are in doubt, with fence + 1.
pub fn claim_effects_only_in_doubt(harness: &dyn StoreHarness) {
    let case = Case::new("claim_effects_only_in_doubt", harness);
    let not_in_doubt = |key: KeyDigest, what: &str| {
        let row = case.row(key);
        match case.claim(key, fingerprint(1), "recoverer") {
            EffectsClaim::NotInDoubt(r) => ensure!(case, r.digest == key, "NotInDoubt row {r:?}"),
            other => case.fail(format_args!(
                "claim_effects on a {what} row: expected NotInDoubt, got {other:?}"
            )),
        }
        case.expect_unchanged(&format!("claim_effects on a {what} row"), &row);
    };
    let missing = case.key("missing");
    let c = case.claim(missing, fingerprint(1), "recoverer");
    ensure!(
        case,
        c == EffectsClaim::Missing,
        "claim_effects on a missing key: {c:?}"
    );

    let running = case.key("running");
    let lease = case.grant(running, fingerprint(1), "w1");
    not_in_doubt(running, "running");
    let r = case.ok("release", case.store.release(&lease, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    not_in_doubt(running, "released");

    let pending = case.key("pending");
    let lease = case.grant(pending, fingerprint(1), "w1");
    case.succeed(&lease);
    not_in_doubt(pending, "pending (within the window)");
    let done = case.key("done");
    let lease = case.grant(done, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    not_in_doubt(done, "done");

    let doubt = case.key("doubt");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let before_row = case.row(doubt);
    let before = case.now();
    let (claim, row) = match case.claim(doubt, fingerprint(1), "recoverer") {
        EffectsClaim::Claimed(claim, row) => (claim, row),
        other => case.fail(format_args!("claim_effects on in-doubt effects: {other:?}")),
    };
    let after = case.now();
    ensure!(
        case,
        claim.fence == lease.fence + 1 && claim.owner == "recoverer" && claim.digest == doubt,
        "claim lease {claim:?}"
    );
    case.expect_expiry("claim expiry", claim.expires_at, before, after);
    let stored = case.row(doubt);
    ensure!(
        case,
        stored.state == JobState::Succeeded
            && stored.effects == EffectsState::Pending
            && stored.fence == claim.fence
            && stored.result == before_row.result
            && stored.attempts == before_row.attempts,
        "row after claim {stored:?}"
    );
    ensure!(case, row.fence == claim.fence, "claimed row {row:?}");
    not_in_doubt(doubt, "claimed");
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects by the superseded winner: {r:?}"
    );
    let r = case.finish(&claim, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects by the claim: {r:?}"
    );

    // The pending row turns claimable once its window ends.
    case.advance(PAST_TTL);
    let c = case.claim(pending, fingerprint(1), "recoverer");
    ensure!(
        case,
        matches!(c, EffectsClaim::Claimed(..)),
        "claim of pending effects past their window: {c:?}"
    );
}

/// Of many threads racing to claim one key's in-doubt effects, exactly one wins.
pub fn racing_effect_claims_one_wins(harness: &dyn StoreHarness) {
    let case = Case::new("racing_effect_claims_one_wins", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let owners: Vec<String> = (0..RACERS).map(|i| format!("recoverer-{i}")).collect();
    let answers = race(&case.store, |store, i| {
        store.claim_effects(&AcquireRequest {
            digest: key,
            fingerprint: fingerprint(1),
            owner: &owners[i],
            ttl: TTL,
        })
    });
    let mut claimed = 0;
    for answer in answers {
        match case.ok("claim_effects", answer) {
            EffectsClaim::Claimed(..) => claimed += 1,
            EffectsClaim::NotInDoubt(_) => {}
            other => case.fail(format_args!("racing claim_effects: {other:?}")),
        }
    }
    ensure!(
        case,
        claimed == 1,
        "{RACERS} racing claims: {claimed} won, expected exactly 1"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.fence == lease.fence + 1,
        "fence after the race {}",
        row.fence
    );
}

/// A transactional hook that returns `Ok` commits with the finalize: succeeded, effects done.
pub fn transactional_hook_commits(harness: &dyn StoreHarness) {
    let case = Case::new("transactional_hook_commits", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let mut calls = 0;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        calls += 1;
        Ok(())
    };
    let result = json!({"ledger": 1});
    let f = case.ok(
        "finalize_succeeded",
        case.store.finalize_succeeded(
            &lease,
            Some(&result),
            TTL,
            Retention::Forever,
            Some(&mut hook),
        ),
    );
    ensure!(
        case,
        f == Finalized::Committed,
        "finalize with an Ok hook: {f:?}"
    );
    ensure!(
        case,
        calls == 1,
        "the hook ran {calls} times, expected once"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.result.as_ref() == Some(&result),
        "row after a transactional finalize {row:?}"
    );
}

/// A transactional hook that returns `Err` rolls the whole finalize back: the row is still
/// running under the same fence, no result stored, and the lease still usable.
pub fn transactional_hook_error_rolls_back(harness: &dyn StoreHarness) {
    let case = Case::new("transactional_hook_error_rolls_back", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let row = case.row(key);
    let mut calls = 0;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        calls += 1;
        Err(EffectsAborted)
    };
    let f = case.ok(
        "finalize_succeeded",
        case.store.finalize_succeeded(
            &lease,
            Some(&json!({"ledger": 1})),
            TTL,
            Retention::Forever,
            Some(&mut hook),
        ),
    );
    ensure!(
        case,
        f == Finalized::EffectsAborted,
        "finalize with a failing hook: {f:?}"
    );
    ensure!(
        case,
        calls == 1,
        "the hook ran {calls} times, expected once"
    );
    case.expect_unchanged("a rolled-back transactional finalize", &row);
    case.succeed(&lease);
}

/// A finalize without effects commits `succeeded` with effects already `done` (never pending,
/// never in doubt, even past the effects window) and replays like any success; under a stale
/// fence it changes nothing.
pub fn finalize_without_effects_is_done_at_once(harness: &dyn StoreHarness) {
    let case = Case::new("finalize_without_effects_is_done_at_once", harness);
    let key = case.key("k");
    let zombie = case.grant(key, fingerprint(1), "w1");
    case.advance(TTL + TTL);
    let lease = case.grant(key, fingerprint(1), "w2");
    let before = case.row(key);
    let stale = case.ok(
        "finalize_succeeded_without_effects",
        case.store.finalize_succeeded_without_effects(
            &zombie,
            Some(&json!(0)),
            TTL,
            Retention::Forever,
        ),
    );
    ensure!(
        case,
        stale == Finalized::Stale,
        "a superseded fence finalized without effects: {stale:?}"
    );
    case.expect_unchanged("a stale finalize without effects", &before);
    let result = json!({"paid": 1});
    let f = case.ok(
        "finalize_succeeded_without_effects",
        case.store.finalize_succeeded_without_effects(
            &lease,
            Some(&result),
            TTL,
            Retention::Forever,
        ),
    );
    ensure!(
        case,
        f == Finalized::Committed,
        "finalize without effects: {f:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.fence == lease.fence
            && row.result.as_ref() == Some(&result),
        "row after a finalize without effects {row:?}"
    );
    case.advance(TTL + TTL);
    let row = case.row(key);
    ensure!(
        case,
        !row.effects_in_doubt(case.now()),
        "effects of a job without effects turned in doubt: {row:?}"
    );
    match case.acquire(key, fingerprint(1), "w3") {
        Acquired::AlreadySucceeded(replayed) => ensure!(
            case,
            replayed.result.as_ref() == Some(&result),
            "replay of a success without effects: {replayed:?}"
        ),
        other => case.fail(format_args!(
            "a duplicate of a success without effects got {other:?}"
        )),
    }
    ensure!(
        case,
        case.finalize(&lease, None) == Finalized::Stale,
        "a second finalize of a success without effects was not stale"
    );
}
