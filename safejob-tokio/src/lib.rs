//! # safejob-tokio
//!
//! safejob's guarded jobs from tokio (an axum handler, a gRPC service, any async task) without
//! blocking the executor.
//!
//! safejob's core and stores are synchronous: a run holds a database connection from the r2d2
//! pool, may wait on a lock, and calls the job's own `perform`, which may block too. Called
//! straight from an async task, that would stall every other task on the same executor thread —
//! on a `current_thread` runtime, all of them. This crate is a thin facade that moves each call
//! onto tokio's blocking pool ([`tokio::task::spawn_blocking`]) and awaits it:
//!
//! * [`AsyncRunner`] — [`Runner::run`](safejob_core::Runner::run) and the recovery calls;
//! * [`AsyncQueue`] — [`Queue`](safejob_core::queue::Queue)'s enqueue (one, with options,
//!   guarded, many) and `get`;
//! * [`AsyncWorkerPool`] — start and stop a [`WorkerPool`](safejob_core::queue::WorkerPool),
//!   which runs its jobs on its own threads, beside the application;
//! * [`blocking`] — the same hop for any other synchronous call;
//! * [`AsyncError`] — the call's own error, or a blocking task that panicked or never ran.
//!
//! Nothing changes in what a run guarantees: the pipeline, the stores and the reports are the
//! core's. Enable the runtime features the application needs (`rt-multi-thread`, `macros`, …)
//! in its own `tokio` dependency; this crate needs only `rt`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use safejob_core::*;
//! use safejob_tokio::{AsyncError, AsyncRunner};
//!
//! struct Refund { id: u64 }
//! impl SafeJob for Refund {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["refund", &self.id.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::json(serde_json::json!({ "refunded": self.id })))
//!     }
//! }
//!
//! let runner = AsyncRunner::from(Runner::builder(Arc::new(MemoryStore::new())).build()?);
//! match runner.run(Refund { id: 9 }).await {
//!     Ok(Report::Succeeded { result, .. } | Report::AlreadySucceeded { result }) => {
//!         println!("refunded: {result:?}"); // the stored result, the same for every duplicate
//!     }
//!     Ok(other) => println!("not done: {other:?}"),
//!     Err(AsyncError::Failed(error)) => println!("run failed: {error}"),
//!     Err(error) => println!("the blocking task did not finish: {error}"),
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blocking;
mod pool;
mod queue;
mod runner;

pub use blocking::{AsyncError, blocking};
pub use pool::AsyncWorkerPool;
pub use queue::AsyncQueue;
pub use runner::AsyncRunner;
