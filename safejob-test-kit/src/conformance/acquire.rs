//! Acquire: a fresh key, replays of finished keys, a held key, takeover after expiry, fingerprint
//! conflicts, racing acquires and the attempt count.

use safejob_core::{
    JobState, KeyDigest,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck, Finalized,
    },
};
use serde_json::json;

use super::{
    StoreHarness,
    fixtures::{Case, PAST_TTL, RACERS, TTL, failure, fingerprint, race, slack},
};

/// A fresh acquire inserts the row: fence 1, attempt 1, expiry now + ttl by the store clock.
pub fn fresh_acquire_grants_fence_one(harness: &dyn StoreHarness) {
    let case = Case::new("fresh_acquire_grants_fence_one", harness);
    let key = case.key("k");
    let before = case.now();
    let lease = case.grant(key, fingerprint(1), "w1");
    let after = case.now();
    ensure!(case, lease.digest == key, "lease digest {}", lease.digest);
    ensure!(
        case,
        lease.fence == 1,
        "fresh lease fence {} != 1",
        lease.fence
    );
    ensure!(
        case,
        lease.attempt == 1,
        "fresh lease attempt {} != 1",
        lease.attempt
    );
    ensure!(
        case,
        lease.owner == "w1",
        "fresh lease owner {:?}",
        lease.owner
    );
    case.expect_expiry("lease expiry", lease.expires_at, before, after);

    let row = case.row(key);
    ensure!(case, row.state == JobState::Running, "state {}", row.state);
    ensure!(
        case,
        row.fence == 1 && row.attempts == 1,
        "fence {} attempts {}",
        row.fence,
        row.attempts
    );
    ensure!(
        case,
        row.owner.as_deref() == Some("w1"),
        "owner {:?}",
        row.owner
    );
    ensure!(
        case,
        row.fingerprint == fingerprint(1),
        "fingerprint {:?}",
        row.fingerprint
    );
    case.expect_near("row expiry", row.lease_expires_at, lease.expires_at);
    ensure!(
        case,
        row.result.is_none() && row.failure.is_none() && row.finalized_at.is_none(),
        "a fresh row has no result, failure or finalized_at: {row:?}"
    );
    ensure!(
        case,
        row.effects == EffectsState::None,
        "effects {:?}",
        row.effects
    );
    ensure!(
        case,
        row.created_at >= before - slack() && row.created_at <= after + slack(),
        "created_at {} outside [{before}, {after}]",
        row.created_at
    );
}

/// A duplicate of a succeeded key is answered with the stored row and its result.
pub fn replay_of_succeeded_returns_result(harness: &dyn StoreHarness) {
    let case = Case::new("replay_of_succeeded_returns_result", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let result = json!({"receipt": "r-1", "cents": 250});
    let finalized = case.finalize(&lease, Some(&result));
    ensure!(
        case,
        finalized == Finalized::Committed,
        "finalize: {finalized:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded,
        "state {}",
        row.state
    );
    ensure!(
        case,
        row.result.as_ref() == Some(&result),
        "result {:?}",
        row.result
    );
    ensure!(case, row.finalized_at.is_some(), "finalized_at not set");
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::AlreadySucceeded(replayed) => ensure!(
            case,
            replayed.result.as_ref() == Some(&result) && replayed.state == JobState::Succeeded,
            "replayed row {replayed:?}"
        ),
        other => case.fail(format_args!(
            "duplicate acquire: expected AlreadySucceeded, got {other:?}"
        )),
    }
    case.expect_unchanged("a replayed acquire", &row);
}

/// A duplicate of a failed key is answered with the stored failure.
pub fn replay_of_failed_returns_failure(harness: &dyn StoreHarness) {
    let case = Case::new("replay_of_failed_returns_failure", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.fail_row(&lease);
    let row = case.row(key);
    ensure!(case, row.state == JobState::Failed, "state {}", row.state);
    ensure!(
        case,
        row.failure == Some(failure()),
        "failure {:?}",
        row.failure
    );
    ensure!(case, row.finalized_at.is_some(), "finalized_at not set");
    ensure!(
        case,
        row.result.is_none(),
        "a failed row has a result: {:?}",
        row.result
    );
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::AlreadyFailed(replayed) => ensure!(
            case,
            replayed.failure == Some(failure()),
            "replayed failure {:?}",
            replayed.failure
        ),
        other => case.fail(format_args!(
            "duplicate acquire: expected AlreadyFailed, got {other:?}"
        )),
    }
    case.expect_unchanged("a replayed acquire", &row);
}

/// While a lease is live, other acquires are told who holds it and until when.
pub fn busy_while_held(harness: &dyn StoreHarness) {
    let case = Case::new("busy_while_held", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let row = case.row(key);
    for step in 0..2 {
        match case.acquire(key, fingerprint(1), "w2") {
            Acquired::Busy { owner, until } => {
                ensure!(case, owner.as_deref() == Some("w1"), "busy owner {owner:?}");
                ensure!(
                    case,
                    (until - lease.expires_at).abs() <= slack() || step == 1,
                    "busy until {until}, lease expires {}",
                    lease.expires_at
                );
            }
            other => case.fail(format_args!(
                "acquire of a held key: expected Busy, got {other:?}"
            )),
        }
        if step == 0 {
            case.expect_unchanged("a busy acquire", &row);
            case.advance(TTL / 2);
        }
    }
}

/// Once a lease expires, the next acquire takes it over with fence + 1 and attempts + 1.
pub fn takeover_after_expiry_bumps_fence(harness: &dyn StoreHarness) {
    let case = Case::new("takeover_after_expiry_bumps_fence", harness);
    let key = case.key("k");
    case.grant(key, fingerprint(1), "w1");
    case.advance(PAST_TTL);
    let before = case.now();
    let lease = case.grant(key, fingerprint(1), "w2");
    let after = case.now();
    ensure!(
        case,
        lease.fence == 2 && lease.attempt == 2 && lease.owner == "w2",
        "takeover lease {lease:?}: expected fence 2, attempt 2, owner w2"
    );
    case.expect_expiry("takeover expiry", lease.expires_at, before, after);
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Running
            && row.fence == 2
            && row.attempts == 2
            && row.owner.as_deref() == Some("w2"),
        "row after takeover {row:?}"
    );
}

/// The same key with another fingerprint is a conflict on every path, and changes nothing.
pub fn fingerprint_conflict_on_every_path(harness: &dyn StoreHarness) {
    let case = Case::new("fingerprint_conflict_on_every_path", harness);
    let conflict = |key: KeyDigest, path: &str| {
        let row = case.row(key);
        for given in [fingerprint(2), None] {
            match case.acquire(key, given, "other") {
                Acquired::KeyConflict { stored, given: g } => ensure!(
                    case,
                    stored == row.fingerprint && g == given,
                    "conflict on {path} reported stored {stored:?} given {g:?}"
                ),
                other => case.fail(format_args!(
                    "acquire with fingerprint {given:?} on a {path} row: expected KeyConflict, got {other:?}"
                )),
            }
            case.expect_unchanged(&format!("a conflicting acquire on a {path} row"), &row);
        }
    };
    let held = case.key("held");
    let lease = case.grant(held, fingerprint(1), "w1");
    conflict(held, "held");
    case.advance(PAST_TTL);
    conflict(held, "running-expired");
    let lease2 = case.grant(held, fingerprint(1), "w1");
    ensure!(
        case,
        lease2.fence == lease.fence + 1,
        "takeover after conflicts {lease2:?}"
    );
    let r = case.ok("release", case.store.release(&lease2, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    conflict(held, "released");

    let succeeded = case.key("succeeded");
    let lease = case.grant(succeeded, fingerprint(1), "w1");
    case.succeed(&lease);
    conflict(succeeded, "succeeded");
    let failed = case.key("failed");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);
    conflict(failed, "failed");

    let unfingerprinted = case.key("none");
    case.grant(unfingerprinted, None, "w1");
    match case.acquire(unfingerprinted, fingerprint(1), "w2") {
        Acquired::KeyConflict { stored: None, .. } => {}
        other => case.fail(format_args!(
            "a fingerprint given for a row stored without one: expected KeyConflict, got {other:?}"
        )),
    }

    let doubt = case.key("in-doubt");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "smtp down" });
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects in doubt: {r:?}"
    );
    let row = case.row(doubt);
    for given in [fingerprint(2), None] {
        match case.claim(doubt, given, "recoverer") {
            EffectsClaim::KeyConflict { stored, .. } => {
                ensure!(
                    case,
                    stored == fingerprint(1),
                    "claim conflict stored {stored:?}"
                )
            }
            other => case.fail(format_args!(
                "claim_effects with fingerprint {given:?}: expected KeyConflict, got {other:?}"
            )),
        }
        case.expect_unchanged("a conflicting claim_effects", &row);
    }
    ensure!(
        case,
        matches!(
            case.claim(doubt, fingerprint(1), "recoverer"),
            EffectsClaim::Claimed(..)
        ),
        "claim_effects with the right fingerprint after conflicts was not granted"
    );
}

/// Of many threads racing to acquire one free key — fresh, released or expired — exactly one
/// is granted.
pub fn racing_acquires_grant_exactly_one(harness: &dyn StoreHarness) {
    let case = Case::new("racing_acquires_grant_exactly_one", harness);
    let key = case.key("k");
    let owners: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    for (expected_fence, round) in (1..).zip(["fresh", "released", "expired"]) {
        let answers = race(&case.store, |store, i| {
            store.acquire(&AcquireRequest {
                digest: key,
                fingerprint: fingerprint(1),
                owner: &owners[i],
                ttl: TTL,
            })
        });
        let mut granted = Vec::new();
        for answer in answers {
            match case.ok("acquire", answer) {
                Acquired::Granted(lease) => granted.push(lease),
                Acquired::Busy { .. } => {}
                other => case.fail(format_args!("racing acquire ({round}): {other:?}")),
            }
        }
        ensure!(
            case,
            granted.len() == 1,
            "{RACERS} racing acquires on a {round} key: {} granted, expected exactly 1",
            granted.len()
        );
        let lease = &granted[0];
        ensure!(
            case,
            lease.fence == expected_fence,
            "{round} grant {lease:?}"
        );
        let row = case.row(key);
        ensure!(
            case,
            row.fence == lease.fence && row.owner.as_deref() == Some(lease.owner.as_str()),
            "row after the race {row:?} vs winner {lease:?}"
        );
        match round {
            "fresh" => {
                let r = case.ok("release", case.store.release(lease, None));
                ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
            }
            _ => case.advance(PAST_TTL),
        }
    }
}

/// Attempts count every grant, across releases and takeovers, and stay on the finished row.
pub fn attempts_counted_across_takeovers(harness: &dyn StoreHarness) {
    let case = Case::new("attempts_counted_across_takeovers", harness);
    let key = case.key("k");
    let first = case.grant(key, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&first, Some("retry")));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    case.grant(key, fingerprint(1), "w2");
    case.advance(PAST_TTL);
    case.grant(key, fingerprint(1), "w3");
    case.advance(PAST_TTL);
    let last = case.grant(key, fingerprint(1), "w4");
    ensure!(
        case,
        last.attempt == 4 && last.fence == 4,
        "fourth grant {last:?}: expected attempt 4, fence 4"
    );
    case.succeed(&last);
    let row = case.row(key);
    ensure!(
        case,
        row.attempts == 4 && row.fence == 4 && row.owner.as_deref() == Some("w4"),
        "finished row {row:?}"
    );
}
