//! The memory queue passes the action log conformance suite.

use safejob_test_kit::{MemoryQueueHarness, action_conformance};

#[test]
fn action_conformance_on_memory() {
    action_conformance::run_all(MemoryQueueHarness::new);
}

/// `Dispatcher::start`: the continuous mode dispatches what becomes due while it runs, and stops
/// when its handle is stopped. Catches: a start that runs one round only (its interval
/// multiplied by 100,000 failed at "an action published later was dispatched").
#[test]
fn a_started_dispatcher_keeps_dispatching_until_stopped() {
    use std::{
        sync::Arc,
        time::{Duration, Instant},
    };

    use safejob_core::{
        action::{
            ActionFilter, ActionRecord, ActionState, ActionStore, Dispatch, Dispatcher, Processor,
            ProcessorError, Publisher,
        },
        queue::{MemoryQueue, NewJob, RunAt},
    };
    use serde_json::{Value, json};

    struct ToJob;
    impl Processor for ToJob {
        fn supports(&self, _: &str) -> bool {
            true
        }
        fn to_job(&self, a: &ActionRecord) -> Result<Dispatch, ProcessorError> {
            Ok(Dispatch::Job(NewJob {
                kind: "k".into(),
                queue: "q".into(),
                payload: json!({"action": a.id.0}),
                metadata: Value::Null,
                priority: 0,
                run_at: RunAt::Now,
                max_attempts: 1,
                idempotent: true,
                unique_key: None,
                guard: None,
            }))
        }
    }

    let queue = Arc::new(MemoryQueue::new());
    let publisher = Publisher::new(queue.clone());
    let dispatcher = Arc::new(Dispatcher::builder(queue.clone()).processor(ToJob).build());
    let handle = dispatcher.start(Duration::from_millis(10), 10);
    let processed = |n: usize| {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let done = queue
                .list_actions(
                    &ActionFilter {
                        state: Some(ActionState::Processed),
                        action_type: None,
                    },
                    100,
                )
                .expect("list");
            if done.len() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    };
    publisher
        .quick("a", RunAt::Now, json!({}), None)
        .expect("publish");
    assert!(processed(1), "the first action was dispatched");
    publisher
        .quick("b", RunAt::Now, json!({}), None)
        .expect("publish");
    assert!(
        processed(2),
        "an action published later was dispatched by a later round"
    );
    handle.stop();
    publisher
        .quick("c", RunAt::Now, json!({}), None)
        .expect("publish");
    std::thread::sleep(Duration::from_millis(100));
    let pending = queue
        .list_actions(
            &ActionFilter {
                state: Some(ActionState::Pending),
                action_type: None,
            },
            100,
        )
        .expect("list");
    assert_eq!(pending.len(), 1, "nothing runs after stop");
}
