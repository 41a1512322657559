//! # safejob-test-kit
//!
//! Prove that jobs run exactly once:
//!
//! * [`ManualClock`] and [`MemoryHarness`]: time that moves only when a test says so — leases
//!   expire through [`StoreHarness::advance`], never by sleeping;
//! * [`EffectProbe`] counts effects per key across threads, and the [`assert`](mod@assert)
//!   helpers (`check_*` returning a `Result`, `assert_*` panicking) say which keys broke
//!   exactly-once, by digest prefix, never by raw key;
//! * [`conformance`]: the `LeaseStore` conformance suite every store must pass, one `#[test]`
//!   per case with [`lease_store_conformance!`];
//! * [`queue_conformance`]: the `QueueStore` conformance suite every queue backend must pass
//!   ([`QueueHarness`], [`MemoryQueueHarness`]), one `#[test]` per case with
//!   [`queue_store_conformance!`];
//! * [`torture`]: duplicate dispatches of your own [`SafeJob`](safejob_core::SafeJob) over many
//!   threads with crashes injected at every pipeline point, checked against the store's rows;
//! * [`proxy`]: a TCP fault proxy between worker processes and their database that cuts
//!   connections, including after a commit was sent and before its reply arrives.
//!
//! ## Quick start
//!
//! ```
//! use safejob_core::*;
//! use safejob_test_kit::{EffectProbe, MemoryHarness, Torture, assert_exactly_once};
//!
//! /// The job under test: its effects must happen once per key.
//! struct Refund {
//!     id: usize,
//!     probe: EffectProbe,
//! }
//!
//! impl SafeJob for Refund {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["refund", &self.id.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//!     fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
//!         self.probe.record(ctx.key()); // your ledger write goes here
//!         Ok(())
//!     }
//! }
//!
//! // 100 refunds, each dispatched 5 times over 4 threads, with crashes and lease expiries;
//! // transactional effects, so no crash may leave a key in doubt.
//! let harness = MemoryHarness::new();
//! let probe = EffectProbe::new();
//! let report = Torture::new(&harness)
//!     .keys(100)
//!     .duplicates(5)
//!     .threads(4)
//!     .crash_rate(0.2)
//!     .effects(EffectsMode::Transactional)
//!     .seed(42)
//!     .run(|id| Refund { id, probe: probe.clone() })?;
//! assert_eq!(report.succeeded, 100);
//! assert_eq!(report.effects_in_doubt, 0);
//!
//! // A plain run with a runner, checked with the assertions.
//! let runner = Runner::builder(Arc::new(MemoryStore::new())).build()?;
//! let single = EffectProbe::new();
//! let job = Refund { id: 1, probe: single.clone() };
//! runner.run(&job)?;
//! runner.run(&job)?; // a duplicate: replayed, no second effect
//! assert_exactly_once(&single, [job.key()?]);
//! # use std::sync::Arc;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A store runs the conformance suite with one line in its tests:
//!
//! ```
//! mod memory_store {
//!     safejob_test_kit::lease_store_conformance!(safejob_test_kit::MemoryHarness::new);
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod assert;
pub mod clock;
pub mod conformance;
pub mod memory;
pub mod probe;
pub mod proxy;
pub mod queue_conformance;
pub mod skip;
pub mod torture;

pub use assert::{
    Check, ExactlyOnceViolation, Offender, Problem, StoreCheckError, assert_at_most_once,
    assert_effects_in_doubt, assert_exactly_once, assert_settled, assert_succeeded,
    check_at_most_once, check_effects_in_doubt, check_exactly_once, check_settled, check_succeeded,
};
pub use clock::ManualClock;
pub use conformance::StoreHarness;
pub use memory::MemoryHarness;
pub use probe::EffectProbe;
pub use proxy::{FaultProxy, ProxyStats};
pub use queue_conformance::{MemoryQueueHarness, QueueHarness};
pub use skip::{backend_url, backends_required, report_skip, skip_unless_required};
pub use torture::{CrashPoint, Torture, TortureFailure, TortureReport, Violation};
