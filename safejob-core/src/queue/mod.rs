//! A durable job queue with the exactly-once guard built in.
//!
//! * [`QueueJob`] — a typed job: the struct is its own payload, `KIND` names it, `work` does it;
//!   [`GuardedJob`] — a [`SafeJob`](crate::SafeJob) enqueued directly, run through the guard;
//! * [`Queue`] — enqueue (one, many, with options: queue, priority, delay, attempts, unique key,
//!   metadata) and the operator's actions;
//! * [`Registry`] — the kinds a worker may run; [`Worker`] and [`WorkerPool`] run them;
//! * [`RetryPolicy`] — exponential backoff with jitter (the default), a fixed schedule, none;
//! * [`QueueState`] — the closed set of states (diagram in `docs/queue.md`);
//! * [`QueueStore`] — the storage port, with [`MemoryQueue`] here and the SQL backends in
//!   `safejob-diesel`; `safejob-test-kit` holds the conformance suite they all pass.
//!
//! ```
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use safejob_core::queue::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Flaky { fail_times: u32 }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("upstream unavailable")]
//! struct Unavailable;
//!
//! impl QueueJob for Flaky {
//!     const KIND: &'static str = "flaky";
//!     type Error = Unavailable;
//!     fn work(&self, ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Unavailable>> {
//!         if ctx.attempt() <= self.fail_times {
//!             return Err(WorkError::Retryable(Unavailable));
//!         }
//!         Ok(())
//!     }
//!     fn options() -> KindOptions {
//!         KindOptions::new().max_attempts(2).retry(RetryPolicy::none())
//!     }
//! }
//!
//! let store = Arc::new(MemoryQueue::new());
//! let queue = Queue::new(store.clone());
//! let id = queue.enqueue(&Flaky { fail_times: 5 })?.id();
//! let mut registry = Registry::new();
//! registry.register::<Flaky>();
//! let worker = Worker::builder(store, registry).build()?;
//! worker.drain(10)?;
//! // No retries: dead after the first failure, with its error recorded.
//! let dead = queue.dead(&JobFilter::default().kind("flaky"), 10)?;
//! assert_eq!(dead[0].errors[0].message, "upstream unavailable");
//! assert_eq!(queue.retry(id)?, OpResult::Applied);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod completer;
mod exec;
mod guarded;
mod job;
pub(crate) mod memory;
mod recover;
mod registry;
mod retry;
mod state;
pub mod store;
mod worker;

pub use client::{Pruned, Queue};
pub use completer::DEFAULT_COMPLETION_GROUP;
pub use exec::{Ran, Worked};
pub use job::{
    DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, EnqueueError, EnqueueOptions, GuardedJob, KindOptions,
    QueueJob, StopReason, WorkContext, WorkError,
};
pub use memory::MemoryQueue;
pub use recover::RecoverError;
pub use registry::Registry;
pub use retry::{ExponentialBuilder, RetryPolicy};
pub use state::QueueState;
pub use store::{
    AttemptError, ClaimRequest, Claimed, CompleteAs, Completed, Completion, Enqueued, ErrorKind,
    FinishedMinute, GroupMember, GuardFinish, GuardSpec, Heartbeat, JobFilter, JobId, JobQuery,
    KindStats, MAX_ERROR_HISTORY, NewJob, OpResult, Progress, QueueLease, QueueStore, QueuedJob,
    Reaped, RecordedError, RunAt, Snapshot, StateCount, Waker, WorkerInfo,
};
pub use worker::{ShutdownReport, Worker, WorkerBuilder, WorkerConfigError, WorkerPool};
