//! The test kit's `LeaseStore` conformance suite, one `#[test]` per case, on every backend.

mod common;

#[cfg(feature = "sqlite")]
mod sqlite {
    safejob_test_kit::lease_store_conformance!(|| crate::common::sqlite("conformance"));
}

/// PostgreSQL and MySQL cases must be able to skip (no URL set), which the kit's macro cannot
/// express, so they are listed here; `every_case_is_listed` fails when the kit adds a case this
/// list lacks.
#[allow(unused_macros)] // used only with the postgres or mysql feature
macro_rules! skippable_conformance {
    ($make:path; $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                let Some(db) = $make(concat!("conf_", stringify!($case))) else { return };
                safejob_test_kit::conformance::$case(&db);
            }
        )*

        #[test]
        fn every_case_is_listed() {
            let listed = [$(stringify!($case)),*];
            for (name, _) in safejob_test_kit::conformance::CASES {
                assert!(listed.contains(name), "conformance case {name} is not wired in tests/conformance.rs");
            }
        }
    };
}

#[allow(unused_macros)]
macro_rules! all_cases {
    ($make:path) => {
        skippable_conformance! {
            $make;
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
            list_filters_and_paging
            get_missing_is_none
        }
    };
}

#[cfg(feature = "postgres")]
mod postgres {
    all_cases!(crate::common::postgres);
}

#[cfg(feature = "mysql")]
mod mysql {
    all_cases!(crate::common::mysql);
}
