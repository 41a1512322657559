//! The memory queue, on a manual clock, passes the whole queue conformance suite.

use safejob_test_kit::queue_conformance::{self, MemoryQueueHarness};

safejob_test_kit::queue_store_conformance!(MemoryQueueHarness::new);

/// Every case also passes when all of them share one store, as they would share a database.
#[test]
fn all_cases_pass_on_one_shared_queue() {
    queue_conformance::run_all(&MemoryQueueHarness::new());
    assert_eq!(queue_conformance::CASES.len(), 28);
}
