//! The memory queue passes the action log conformance suite.

use safejob_test_kit::{MemoryQueueHarness, action_conformance};

#[test]
fn action_conformance_on_memory() {
    action_conformance::run_all(MemoryQueueHarness::new);
}
