//! The fence: a zombie's writes and effects rejected after a takeover, release, renew, and
//! terminal states that nothing changes.

use std::{any::Any, time::Duration};

use safejob_core::{
    JobRecord, JobState, Retention,
    store::{
        Acquired, EffectsAborted, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, Lease, Renewed,
    },
};
use serde_json::json;

use super::{
    StoreHarness,
    fixtures::{Case, PAST_TTL, TTL, failure, fingerprint},
};

/// After a takeover, every fenced write of the old holder is refused and changes nothing; the
/// new holder is unaffected.
pub fn zombie_writes_rejected_after_takeover(harness: &dyn StoreHarness) {
    let case = Case::new("zombie_writes_rejected_after_takeover", harness);
    let key = case.key("k");
    let zombie = case.grant(key, fingerprint(1), "zombie");
    case.advance(PAST_TTL);
    let live = case.grant(key, fingerprint(1), "live");
    let row = case.row(key);

    let mut hook_ran = false;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        hook_ran = true;
        Ok(())
    };
    let f = case.ok(
        "finalize_succeeded",
        case.store.finalize_succeeded(
            &zombie,
            Some(&json!(1)),
            TTL,
            Retention::Forever,
            Some(&mut hook),
        ),
    );
    ensure!(
        case,
        f == Finalized::Stale,
        "zombie finalize with hook: {f:?}"
    );
    ensure!(case, !hook_ran, "a stale finalize ran its effects hook");
    case.expect_unchanged("a zombie finalize_succeeded", &row);
    let f = case.finalize(&zombie, None);
    ensure!(case, f == Finalized::Stale, "zombie finalize: {f:?}");
    case.expect_unchanged("a zombie finalize_succeeded", &row);
    let f = case.ok(
        "finalize_failed",
        case.store
            .finalize_failed(&zombie, &failure(), Retention::Forever),
    );
    ensure!(
        case,
        f == FenceCheck::Stale,
        "zombie finalize_failed: {f:?}"
    );
    case.expect_unchanged("a zombie finalize_failed", &row);
    let r = case.ok("renew", case.store.renew(&zombie, TTL));
    ensure!(case, r == Renewed::Stale, "zombie renew: {r:?}");
    case.expect_unchanged("a zombie renew", &row);
    let r = case.ok("release", case.store.release(&zombie, Some("zombie")));
    ensure!(case, r == FenceCheck::Stale, "zombie release: {r:?}");
    case.expect_unchanged("a zombie release", &row);
    let r = case.finish(&zombie, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Stale, "zombie finish_effects: {r:?}");
    case.expect_unchanged("a zombie finish_effects", &row);

    case.succeed(&live);
}

/// After a recovery claim bumped the fence of a succeeded row, the original winner can no
/// longer record how its effects ended.
pub fn zombie_effects_rejected_after_claim(harness: &dyn StoreHarness) {
    let case = Case::new("zombie_effects_rejected_after_claim", harness);
    let key = case.key("k");
    let winner = case.grant(key, fingerprint(1), "winner");
    case.succeed(&winner);
    case.advance(PAST_TTL);
    let recovery = match case.claim(key, fingerprint(1), "recoverer") {
        EffectsClaim::Claimed(lease, _) => lease,
        other => case.fail(format_args!(
            "claim of pending effects past their window: {other:?}"
        )),
    };
    let row = case.row(key);
    let r = case.finish(&winner, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "superseded finish_effects: {r:?}"
    );
    case.expect_unchanged("a superseded finish_effects", &row);
    let r = case.finish(&recovery, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "recovery finish_effects: {r:?}"
    );
}

/// A release hands the key back at once (no waiting for expiry) and records the error.
pub fn release_lets_next_acquire_in(harness: &dyn StoreHarness) {
    let case = Case::new("release_lets_next_acquire_in", harness);
    let key = case.key("k");
    let first = case.grant(key, fingerprint(1), "w1");
    let r = case.ok(
        "release",
        case.store.release(&first, Some("gateway timeout")),
    );
    ensure!(
        case,
        r == FenceCheck::Applied,
        "release by the holder: {r:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Released,
        "state after release {}",
        row.state
    );
    ensure!(
        case,
        row.last_error.as_deref() == Some("gateway timeout"),
        "last_error {:?}",
        row.last_error
    );
    let r = case.ok("release", case.store.release(&first, None));
    ensure!(case, r == FenceCheck::Stale, "second release: {r:?}");
    case.expect_unchanged("a second release", &row);
    let next = case.grant(key, fingerprint(1), "w2");
    ensure!(
        case,
        next.fence == 2 && next.attempt == 2,
        "acquire after release: {next:?}"
    );
}

/// A renewal extends the lease to now + ttl, keeps others out past the original expiry, and
/// works on an expired lease that nobody took over (the fence decides, not the clock).
pub fn renew_extends_lease(harness: &dyn StoreHarness) {
    let case = Case::new("renew_extends_lease", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.advance(Duration::from_secs(10));
    let old = case.row(key).lease_expires_at;
    let before = case.now();
    let renewed = case.ok("renew", case.store.renew(&lease, TTL));
    let after = case.now();
    let Renewed::Extended(until) = renewed else {
        case.fail(format_args!("renew by the holder: {renewed:?}"));
    };
    case.expect_expiry("renewed expiry", until, before, after);
    ensure!(
        case,
        old.is_some_and(|old| until > old),
        "renewal did not extend: {old:?} -> {until}"
    );
    case.expect_near(
        "row expiry after renew",
        case.row(key).lease_expires_at,
        until,
    );
    case.advance(Duration::from_secs(25)); // past the original expiry, not the renewed one
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::Busy { .. } => {}
        other => case.fail(format_args!("acquire within a renewed lease: {other:?}")),
    }
    case.advance(PAST_TTL);
    let renewed = case.ok("renew", case.store.renew(&lease, TTL));
    ensure!(
        case,
        matches!(renewed, Renewed::Extended(_)),
        "renew of an expired lease nobody took over: {renewed:?}"
    );
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::Busy { .. } => {}
        other => case.fail(format_args!("acquire after a late renewal: {other:?}")),
    }
}

/// No primitive changes a `succeeded` or `failed` row, except the effects bookkeeping of a
/// succeeded row under its current fence.
pub fn terminal_states_are_immutable(harness: &dyn StoreHarness) {
    let case = Case::new("terminal_states_are_immutable", harness);
    let refuse_all = |lease: &Lease, what: &str| {
        let row = case.row(lease.digest);
        let mut hook_ran = false;
        let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
            hook_ran = true;
            Ok(())
        };
        let f = case.ok(
            "finalize_succeeded",
            case.store
                .finalize_succeeded(lease, None, TTL, Retention::Forever, Some(&mut hook)),
        );
        ensure!(
            case,
            f == Finalized::Stale && !hook_ran,
            "finalize_succeeded (hook) on a {what} row: {f:?}"
        );
        let f = case.finalize(lease, Some(&json!("again")));
        ensure!(
            case,
            f == Finalized::Stale,
            "finalize_succeeded on a {what} row: {f:?}"
        );
        let f = case.ok(
            "finalize_failed",
            case.store
                .finalize_failed(lease, &failure(), Retention::Forever),
        );
        ensure!(
            case,
            f == FenceCheck::Stale,
            "finalize_failed on a {what} row: {f:?}"
        );
        let r = case.ok("renew", case.store.renew(lease, TTL));
        ensure!(case, r == Renewed::Stale, "renew on a {what} row: {r:?}");
        let r = case.ok("release", case.store.release(lease, Some("x")));
        ensure!(
            case,
            r == FenceCheck::Stale,
            "release on a {what} row: {r:?}"
        );
        case.expect_unchanged(&format!("a fenced write on a {what} row"), &row);
        case.advance(PAST_TTL);
        let a = case.acquire(lease.digest, fingerprint(1), "late");
        let replayed = match what {
            "succeeded" => matches!(a, Acquired::AlreadySucceeded(_)),
            _ => matches!(a, Acquired::AlreadyFailed(_)),
        };
        ensure!(
            case,
            replayed,
            "acquire of a {what} row after its expiry: {a:?}"
        );
        case.expect_unchanged(&format!("an acquire of a {what} row"), &row);
    };

    let succeeded = case.key("succeeded");
    let lease = case.grant(succeeded, fingerprint(1), "w1");
    case.succeed(&lease);
    refuse_all(&lease, "succeeded");
    // The effects bookkeeping may still move, under the right fence, once.
    let before = case.row(succeeded);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects by the winner: {r:?}"
    );
    let after = case.row(succeeded);
    ensure!(
        case,
        after.effects == EffectsState::Done
            && JobRecord {
                effects: before.effects,
                updated_at: before.updated_at,
                ..after.clone()
            } == before,
        "finish_effects changed more than the effects: {before:?} -> {after:?}"
    );
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "late" });
    ensure!(case, r == FenceCheck::Stale, "second finish_effects: {r:?}");
    case.expect_unchanged("a second finish_effects", &after);

    let failed = case.key("failed");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);
    refuse_all(&lease, "failed");
    let row = case.row(failed);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects on a failed row: {r:?}"
    );
    let c = case.claim(failed, fingerprint(1), "recoverer");
    ensure!(
        case,
        matches!(c, EffectsClaim::NotInDoubt(_)),
        "claim_effects on a failed row: {c:?}"
    );
    case.expect_unchanged("effects calls on a failed row", &row);
}
