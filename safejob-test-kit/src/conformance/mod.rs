//! The `LeaseStore` conformance suite: one set of behaviours every store must show.
//!
//! Each case is a `pub fn` taking the store's [`StoreHarness`] and panicking with a message that
//! names the case and the broken rule. [`lease_store_conformance!`](crate::lease_store_conformance)
//! turns every case into its own `#[test]`; [`run_all`] runs them in sequence on one harness.
//!
//! The suite speaks only [`LeaseStore`], so SQL stores run it unchanged. Accordingly:
//!
//! * time moves only through [`StoreHarness::advance`]; nothing sleeps;
//! * instants are compared with a small tolerance ([`TIME_SLACK`]) against the store's own
//!   [`LeaseStore::now`], because databases round timestamps (MySQL `DATETIME(6)` keeps
//!   microseconds, SQLite text milliseconds);
//! * every case uses keys under its own unique prefix, so cases may share one store (and one
//!   database) and run in parallel.
//!
//! ```
//! use safejob_test_kit::{MemoryHarness, conformance};
//!
//! conformance::run_all(&MemoryHarness::new());
//! ```
//!
//! The cases live one file per area, as River splits its driver suite: `acquire.rs` (grants,
//! replays, busy keys, takeovers, fingerprints, races), `fence.rs` (zombies, release, renew,
//! terminal states), `effects.rs` (effects windows, claims and transactional hooks),
//! `listing.rs` and `retention.rs` (retain_until and pruning), `group.rs` (`acquire_many` and
//! `finalize_many`, racing groups, and — for stores with group commit, through
//! [`GroupCrashHarness`] — a crash between a group's commit and its answers), with what they
//! share in
//! `fixtures.rs`. This file holds the harness, the one list
//! of cases and the macros.

use std::{sync::Arc, time::Duration};

use safejob_core::LeaseStore;

/// A store under test, and a way to make time pass as that store sees it.
///
/// The memory store's harness advances a `ManualClock`. A `DieselStore`'s harness calls
/// `DieselStore::advance_clock_for_tests` (safejob-diesel's `test-util` feature, for
/// dev-dependencies), which moves the store's view of the database clock; the database clock
/// itself cannot be moved. Neither sleeps. safejob-diesel's `testing::TestDb` (same feature) is
/// that harness, ready-made, on a database of its own per test.
pub trait StoreHarness {
    /// The store under test. Each call returns the same store.
    fn store(&self) -> Arc<dyn LeaseStore>;
    /// Makes `by` pass on the store's clock, as far as leases are concerned.
    fn advance(&self, by: Duration);
}

/// How far apart two instants may be and still count as equal: a database's rounding plus the
/// real time that passes between two reads of its clock — which on a loaded 2-core CI machine
/// running many suites at once was seen to exceed 50 ms — and still far below the suite's TTL
/// (30 s) and the 2 s steps it moves time by, so a wrong expiry or duration cannot pass.
pub const TIME_SLACK: Duration = Duration::from_secs(1);
/// Panics with the case's name unless `cond` holds.
macro_rules! ensure {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $case.fail(format_args!($($msg)+));
        }
    };
}

mod acquire;
mod effects;
mod fence;
mod fixtures;
mod group;
mod listing;
mod retention;

pub use acquire::{
    attempts_counted_across_takeovers, busy_while_held, fingerprint_conflict_on_every_path,
    fresh_acquire_grants_fence_one, racing_acquires_grant_exactly_one,
    replay_of_failed_returns_failure, replay_of_succeeded_returns_result,
    takeover_after_expiry_bumps_fence,
};
pub use effects::{
    claim_effects_only_in_doubt, effects_in_doubt_are_listed, effects_pending_until_finished,
    finalize_without_effects_is_done_at_once, pending_effects_past_window_are_in_doubt,
    racing_effect_claims_one_wins, transactional_hook_commits, transactional_hook_error_rolls_back,
};
pub use fence::{
    release_lets_next_acquire_in, renew_extends_lease, terminal_states_are_immutable,
    zombie_effects_rejected_after_claim, zombie_writes_rejected_after_takeover,
};
pub use group::{
    GroupCrashHarness, crash_between_group_commit_and_answers, group_acquire_answers_each_key,
    group_finalize_answers_each_key, racing_group_commits_one_success_per_key,
};
pub use listing::{get_missing_is_none, list_filters_and_paging};
pub use retention::prune_deletes_settled_rows_past_their_retention;

/// Calls `$callback!` with every case name; the one list the macro, [`CASES`] and [`run_all`]
/// are built from.
#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            ($($args)*)
            fresh_acquire_grants_fence_one
            replay_of_succeeded_returns_result
            replay_of_failed_returns_failure
            busy_while_held
            takeover_after_expiry_bumps_fence
            zombie_writes_rejected_after_takeover
            zombie_effects_rejected_after_claim
            release_lets_next_acquire_in
            renew_extends_lease
            fingerprint_conflict_on_every_path
            terminal_states_are_immutable
            racing_acquires_grant_exactly_one
            attempts_counted_across_takeovers
            effects_pending_until_finished
            effects_in_doubt_are_listed
            pending_effects_past_window_are_in_doubt
            claim_effects_only_in_doubt
            racing_effect_claims_one_wins
            transactional_hook_commits
            transactional_hook_error_rolls_back
            finalize_without_effects_is_done_at_once
            list_filters_and_paging
            get_missing_is_none
            prune_deletes_settled_rows_past_their_retention
            group_acquire_answers_each_key
            group_finalize_answers_each_key
            racing_group_commits_one_success_per_key
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                let harness = ($make_harness)();
                $crate::conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_optional_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                // `None`: the backend is not configured here; the factory said why.
                let Some(harness) = ($make_harness)() else { return };
                $crate::conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_table {
    (() $($case:ident)*) => {
        &[$((stringify!($case), $crate::conformance::$case as fn(&dyn $crate::StoreHarness))),*]
    };
}

/// Expands to one `#[test]` per conformance case. `$make_harness` is called once per test (a
/// closure or a function path) and must return a value whose type implements [`StoreHarness`];
/// each test gets a fresh one.
///
/// With `optional` first, the factory returns `Option<_>` instead, and a `None` skips the case:
/// for a backend whose database is not configured on this machine (the factory prints why).
///
/// ```
/// mod memory_store {
///     safejob_test_kit::lease_store_conformance!(safejob_test_kit::MemoryHarness::new);
/// }
/// mod maybe_memory_store {
///     safejob_test_kit::lease_store_conformance!(optional || Some(safejob_test_kit::MemoryHarness::new()));
/// }
/// ```
#[macro_export]
macro_rules! lease_store_conformance {
    (optional $make_harness:expr $(,)?) => {
        $crate::__lease_store_conformance_cases!(__lease_store_conformance_optional_tests!(
            $make_harness
        ));
    };
    ($make_harness:expr $(,)?) => {
        $crate::__lease_store_conformance_cases!(__lease_store_conformance_tests!($make_harness));
    };
}

/// A conformance case and its name.
pub type NamedCase = (&'static str, fn(&dyn StoreHarness));

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[NamedCase] =
    crate::__lease_store_conformance_cases!(__lease_store_conformance_table!());

/// Runs every case in sequence on one harness (each case uses its own keys, so sharing a store
/// is fine). Panics at the first violation, naming the case.
pub fn run_all(harness: &dyn StoreHarness) {
    for (_, case) in CASES {
        case(harness);
    }
}
