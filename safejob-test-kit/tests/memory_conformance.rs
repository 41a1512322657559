//! The memory store, on a manual clock, passes the whole `LeaseStore` conformance suite.

use safejob_test_kit::{MemoryHarness, conformance};

safejob_test_kit::lease_store_conformance!(MemoryHarness::new);

/// Every case also passes when all of them share one store, as they would share a database.
#[test]
fn all_cases_pass_on_one_shared_store() {
    conformance::run_all(&MemoryHarness::new());
    assert_eq!(conformance::CASES.len(), 27);
}
