//! The registry and the plain-job handler: what the worker knows about its kinds, and how a plain
//! job that failed after its timeout is recorded. Each test says which code change it catches.

use std::{cell::RefCell, sync::Arc, time::Duration};

use safejob_core::queue::{
    ErrorKind, KindOptions, MemoryQueue, Queue, QueueJob, Ran, Registry, RetryPolicy, WorkContext,
    WorkError, Worker,
};
use safejob_test_kit::ManualClock;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
#[error("upstream unavailable")]
struct Unavailable;

thread_local! {
    static CLOCK: RefCell<Option<Arc<ManualClock>>> = const { RefCell::new(None) };
}

/// Takes `secs` of the worker's clock, then fails with a retryable error (it never checks
/// `should_stop`).
#[derive(Serialize, Deserialize)]
struct Resize {
    secs: u64,
}

impl QueueJob for Resize {
    const KIND: &'static str = "test.resize";
    type Error = Unavailable;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Unavailable>> {
        CLOCK.with(|c| {
            c.borrow()
                .as_ref()
                .expect("a clock")
                .advance(Duration::from_secs(self.secs))
        });
        Err(WorkError::Retryable(Unavailable))
    }
    fn options() -> KindOptions {
        KindOptions::new()
            .queue("media")
            .timeout(Duration::from_secs(10))
            .retry(RetryPolicy::schedule([Duration::from_secs(3)]))
    }
}

#[derive(Serialize, Deserialize)]
struct Ping;

impl QueueJob for Ping {
    const KIND: &'static str = "test.ping";
    type Error = Unavailable;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Unavailable>> {
        Ok(())
    }
}

/// Catches: `Registry::contains` answering a constant, `Registry::kinds` answering nothing or
/// a made-up name, and the registry's `Debug` printing nothing.
#[test]
fn the_registry_lists_exactly_its_kinds() {
    let mut registry = Registry::new();
    registry.register::<Ping>().register::<Resize>();
    assert!(registry.contains("test.ping"));
    assert!(!registry.contains("test.unknown"));
    assert_eq!(
        registry.kinds().collect::<Vec<_>>(),
        ["test.ping", "test.resize"]
    );
    assert_eq!(format!("{registry:?}"), r#"{"test.ping", "test.resize"}"#);
}

/// A worker without explicit queues claims from the queues its kinds name.
///
/// Catches: a plain kind's handler answering default options (`Plain::options`), which moves
/// its jobs to the default queue in the registry's list.
#[test]
fn the_registry_names_the_queues_of_its_kinds() {
    let mut registry = Registry::new();
    registry.register::<Resize>();
    assert_eq!(registry.queues(), ["media"]);
    let worker = Worker::builder(Arc::new(MemoryQueue::new()), registry)
        .build()
        .unwrap();
    assert_eq!(worker.queues(), ["media"]);
}

/// A plain job that fails with a retryable error after running past its timeout is recorded
/// `timed_out`; one that fails within it is `retryable`.
///
/// Catches: deleting the `TimedOut` arm of the plain handler's retryable-error mapping.
#[test]
fn a_plain_job_failing_past_its_timeout_is_timed_out() {
    let clock = Arc::new(ManualClock::default());
    CLOCK.with(|c| *c.borrow_mut() = Some(clock.clone()));
    let store = Arc::new(MemoryQueue::with_clock(clock.clone()));
    let queue = Queue::new(store.clone());
    let mut registry = Registry::new();
    registry.register::<Resize>();
    let worker = Worker::builder(store, registry)
        .clock(clock)
        .build()
        .unwrap();
    let slow = queue.enqueue(&Resize { secs: 10 }).unwrap().id();
    let ran = worker.run_once().unwrap();
    assert_eq!(
        (ran[0].id, &ran[0].ran),
        (
            slow,
            &Ran::Retrying {
                delay: Duration::from_secs(3),
                kind: ErrorKind::TimedOut
            }
        )
    );
    let quick = queue.enqueue(&Resize { secs: 9 }).unwrap().id();
    let ran = worker.run_once().unwrap();
    assert_eq!(
        (ran[0].id, &ran[0].ran),
        (
            quick,
            &Ran::Retrying {
                delay: Duration::from_secs(3),
                kind: ErrorKind::Retryable
            }
        )
    );
}
