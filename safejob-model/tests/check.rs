//! The exhaustive check: the protocol keeps every property within the test bounds, and each
//! planted mutation makes the checker find a counterexample to the property it breaks.
//!
//! The test bounds are smaller than `safejob-model check`'s (the clock stops at 2 instead of 4)
//! so that this runs in seconds; they still have 3 workers, 2 keys and two takeovers (asserted
//! through the example property).

use safejob_model::{
    Bounds, Mutation, Verdict, check,
    model::properties::{self, *},
};

/// 3 workers, 2 keys, clock up to 2, fences up to 3.
const TEST: Bounds = Bounds {
    workers: 3,
    keys: 2,
    ttl: 2,
    max_time: 2,
    max_fence: 3,
    copies: 0,
};

/// 3 workers, 1 key, clock up to 4: where the mutations' counterexamples are searched.
const MUTATION: Bounds = Bounds {
    workers: 3,
    keys: 1,
    ttl: 2,
    max_time: 4,
    max_fence: 3,
    copies: 0,
};

#[test]
fn the_protocol_keeps_every_property_with_three_workers_and_two_keys() {
    let outcome = check(TEST, None);
    for (name, verdict) in &outcome.verdicts {
        assert!(
            matches!(verdict, Verdict::Held | Verdict::Example(_)),
            "{name}: {verdict:?}"
        );
    }
    // The bounds reach what they claim: two takeovers of one key before its success, and a
    // lost commit settled as the worker's own.
    assert!(matches!(
        outcome.verdict(TWO_TAKEOVERS),
        Some(Verdict::Example(_))
    ));
    assert!(matches!(
        outcome.verdict(SETTLED_COMMIT),
        Some(Verdict::Example(_))
    ));
    assert!(outcome.unique_states > 100_000, "{}", outcome.unique_states);
}

/// Checks the model with `mutation` and requires a counterexample to the property it breaks,
/// and nothing but counterexamples to `always` properties are accepted as the failure.
fn assert_caught(mutation: Mutation, property: &str) {
    assert_caught_within(MUTATION, mutation, property);
}

fn assert_caught_within(bounds: Bounds, mutation: Mutation, property: &str) {
    assert_eq!(mutation.breaks(), property);
    let outcome = check(bounds, Some(mutation));
    match outcome.verdict(property) {
        Some(Verdict::Counterexample(path)) => assert!(!path.is_empty()),
        other => panic!("{mutation}: expected a counterexample to {property:?}, got {other:?}"),
    }
}

#[test]
fn finalize_without_the_fence_check_applies_a_stale_write() {
    assert_caught(Mutation::FinalizeWithoutFence, properties::NO_STALE_WRITE);
}

#[test]
fn takeover_of_a_live_lease_gives_two_live_leases() {
    assert_caught(Mutation::TakeoverLiveLease, properties::ONE_LIVE_LEASE);
}

#[test]
fn release_ignoring_the_state_lets_a_key_succeed_twice() {
    assert_caught(Mutation::ReleaseIgnoringState, properties::ONE_SUCCESS);
}

#[test]
fn settle_accepting_another_attempts_success_runs_effects_twice() {
    assert_caught(Mutation::SettleAcceptsAnySuccess, properties::EFFECTS_ONCE);
}

#[test]
fn claiming_effects_within_their_window_runs_them_twice_at_once() {
    assert_caught(Mutation::ClaimLiveEffects, properties::EFFECTS_EXCLUSIVE);
}

#[test]
fn no_takeover_after_expiry_leaves_a_crashed_workers_key_stuck() {
    assert_caught(Mutation::NoTakeoverAfterExpiry, properties::NO_KEY_STUCK);
}

/// 3 workers, 1 key enqueued twice, clock up to 3: the queue's claim, completion and reaper.
const QUEUE: Bounds = Bounds {
    workers: 3,
    keys: 1,
    ttl: 2,
    max_time: 3,
    max_fence: 3,
    copies: 2,
};

#[test]
fn through_the_queue_the_protocol_keeps_every_property() {
    let outcome = check(QUEUE, None);
    for (name, verdict) in &outcome.verdicts {
        assert!(
            matches!(verdict, Verdict::Held | Verdict::Example(_)),
            "{name}: {verdict:?}"
        );
    }
    assert!(matches!(outcome.verdict(JOB_BACKED), Some(Verdict::Held)));
    assert!(matches!(
        outcome.verdict(TWO_TAKEOVERS),
        Some(Verdict::Example(_))
    ));
}

#[test]
fn a_completion_ignoring_a_stale_guard_marks_a_job_succeeded_whose_key_did_not() {
    let bounds = Bounds {
        workers: 2,
        ..QUEUE
    };
    assert_caught_within(
        bounds,
        Mutation::CompleteIgnoringGuard,
        properties::JOB_BACKED,
    );
}

#[test]
fn every_mutation_has_a_test_and_a_name_that_parses_back() {
    for mutation in Mutation::ALL {
        assert_eq!(mutation.name().parse::<Mutation>(), Ok(mutation));
    }
    assert!("finalize".parse::<Mutation>().is_err());
}
