//! Listing and reading rows: filters, paging, a missing key.

use std::collections::BTreeSet;

use safejob_core::{
    JobState, KeyDigest,
    store::{EffectsOutcome, FenceCheck, ListFilter, ListQuery},
};

use super::{
    StoreHarness,
    fixtures::{Case, PAST_TTL, fingerprint},
};

/// Listing filters by state, in-doubt effects and expired leases, ordered by digest and paged
/// by `after`.
pub fn list_filters_and_paging(harness: &dyn StoreHarness) {
    let case = Case::new("list_filters_and_paging", harness);
    let expired = case.key("expired");
    let running = case.key("running");
    let released = case.key("released");
    let done = case.key("done");
    let doubt = case.key("doubt");
    let failed = case.key("failed");
    case.grant(expired, fingerprint(1), "w1");
    case.advance(PAST_TTL);
    case.grant(running, fingerprint(1), "w1");
    let lease = case.grant(released, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&lease, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    let lease = case.grant(done, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);

    let mine = BTreeSet::from([expired, running, released, done, doubt, failed]);
    let expect = |filter: ListFilter, want: &[KeyDigest]| {
        let found = case.list_mine(filter, &mine);
        let want: BTreeSet<KeyDigest> = want.iter().copied().collect();
        ensure!(
            case,
            found == want,
            "list({filter:?}) returned {found:?}, expected {want:?}"
        );
    };
    expect(
        ListFilter::All,
        &[expired, running, released, done, doubt, failed],
    );
    expect(ListFilter::State(JobState::Running), &[expired, running]);
    expect(ListFilter::State(JobState::Released), &[released]);
    expect(ListFilter::State(JobState::Succeeded), &[done, doubt]);
    expect(ListFilter::State(JobState::Failed), &[failed]);
    expect(ListFilter::EffectsInDoubt, &[doubt]);
    expect(ListFilter::ExpiredLeases, &[expired]);

    let rows = case.ok("list", case.store.list(&ListQuery::new(ListFilter::All, 0)));
    ensure!(
        case,
        rows.is_empty(),
        "list with limit 0 returned {} rows",
        rows.len()
    );
}

/// `get` of a key that was never acquired is `None`, not an error.
pub fn get_missing_is_none(harness: &dyn StoreHarness) {
    let case = Case::new("get_missing_is_none", harness);
    let found = case.ok("get", case.store.get(&case.key("never")));
    ensure!(
        case,
        found.is_none(),
        "get of a missing key returned {found:?}"
    );
}
