//! # safejob-core
//!
//! Background work that succeeds **once per idempotency key**, even when the queue delivers a job
//! twice, a worker crashes halfway, or a process pauses past its lease.
//!
//! Every guarded run follows one pipeline ([`Runner::run`]):
//!
//! 1. **acquire** a lease on the key's row (fence token + attempt number), or learn that the key
//!    already succeeded / failed (replayed), is busy, or conflicts (same key, other parameters);
//! 2. **perform** the retry-safe work ([`SafeJob::perform`]), renewing the lease if it is long;
//! 3. **finalize** with one compare-and-set that applies only under this attempt's fence;
//! 4. run **on_succeeded_once** — the irreversible effects — only in the worker whose finalize won.
//!
//! ```
//! use std::sync::Arc;
//! use safejob_core::*;
//!
//! #[derive(serde::Serialize)]
//! struct Payout { id: u64, cents: u64 }
//!
//! impl SafeJob for Payout {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["payout", &self.id.to_string()])
//!     }
//!     // Opt in: the same key with other parameters is a conflict, not a replay.
//!     fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
//!         Fingerprint::of_json("payout", self).map(Some)
//!     }
//!     fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//!     fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
//!         println!("paid out {} cents", self.cents); // runs once per key
//!         Ok(())
//!     }
//! }
//!
//! let runner = Runner::builder(Arc::new(MemoryStore::new())).worker_id("w1").build()?;
//! for _ in 0..3 {
//!     runner.run(&Payout { id: 1, cents: 250 })?; // one payout, two replays
//! }
//! // Same key, other parameters: refused.
//! assert!(matches!(
//!     runner.run(&Payout { id: 1, cents: 999 }),
//!     Err(RunError::KeyConflict { .. })
//! ));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A job enqueued on the [`queue`] as a [`GuardedJob`](queue::GuardedJob) is fingerprinted this
//! way by default; a job run by a [`Runner`] opts in as above ([`Fingerprint::of_json`]).
//!
//! The core does no I/O of its own: stores implement [`LeaseStore`] ([`MemoryStore`] here, SQL
//! databases in `safejob-diesel`), and `safejob-test-kit` holds the conformance suite every store
//! passes.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod action;
pub mod clock;
pub mod fingerprint;
pub mod group;
pub mod guard;
pub mod history;
pub mod key;
pub mod observe;
pub mod outcome;
pub mod periodic;
pub mod policy;
pub mod queue;
pub mod report;
pub mod schedule;
pub mod workflow;

// The guard's modules keep their paths from the crate root (`safejob_core::store::Lease`, ...).
pub use guard::{job, memory, retention, runner, store};

pub use clock::{Clock, SystemClock};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use job::{EffectsContext, PerformContext, RenewError, SafeJob};
pub use key::{IdempotencyKey, KeyDigest, KeyError};
pub use memory::MemoryStore;
pub use outcome::Outcome;
pub use policy::{FailurePolicy, FinalFailure, NeverFinalize};
pub use report::{Disposition, Report, RunError, TtlError, disposition};
pub use retention::{MAX_RETENTION, MIN_RETENTION, Retention, RetentionError};
pub use runner::{
    BUSY_RETRY_MAX, ConfigError, EffectsMode, Recovery, Runner, RunnerBuilder,
    confirm_effects_by_digest,
};
pub use store::{EffectsState, JobRecord, JobState, LeaseStore, ListFilter, ListQuery, StoreError};

/// The README's Rust examples, compiled and run as doctests so they stay in step with the code.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
