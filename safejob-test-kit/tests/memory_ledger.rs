//! The memory queue (jobs, schedules) and its memory guard store (keys) pass the ledger
//! conformance suite, each case on a fresh queue and manual clock.

use safejob_test_kit::{MemoryQueueHarness, ledger_conformance};

#[test]
fn ledger_conformance_on_memory() {
    ledger_conformance::run_all(MemoryQueueHarness::new);
    assert_eq!(ledger_conformance::CASES.len(), 9);
}

/// The randomized case under more seeds than the suite's one.
#[test]
fn torture_history_matches_state_under_many_seeds() {
    for seed in 1..=50u64 {
        ledger_conformance::torture_run_with_seed(&MemoryQueueHarness::new(), seed);
    }
}
