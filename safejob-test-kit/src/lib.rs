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
//!   threads with crashes injected at every pipeline point, checked against the store's rows
//!   and, through an [`EffectCounter`], against your job's own effects;
//! * [`proxy`]: a TCP fault proxy between worker processes and their database that cuts
//!   connections, including after a commit was sent and before its reply arrives.
//!
//! On a database, safejob-diesel's `testing::TestDb` (feature `test-util`) is the ready-made
//! [`StoreHarness`]. docs/testing.md in the repository walks through both.
//!
//! ## Quick start
//!
//! Count the effect where it happens — in the fake ledger or API your job calls — not in
//! `on_succeeded_once`: then a posting made by `perform` is counted too, and the torture fails
//! it ("effects observed in perform: move them to on_succeeded_once").
//!
//! ```
//! use safejob_core::*;
//! use safejob_test_kit::{CrashPoint, EffectProbe, MemoryHarness, Torture, assert_exactly_once};
//!
//! /// The user's ledger, faked for the test: every posting is recorded in the probe.
//! #[derive(Clone, Default)]
//! struct Ledger(EffectProbe);
//!
//! impl Ledger {
//!     fn post(&self, key: &IdempotencyKey) {
//!         self.0.record(key);
//!     }
//! }
//!
//! /// The job under test: its ledger posting must happen once per key.
//! struct Refund {
//!     id: usize,
//!     ledger: Ledger,
//! }
//!
//! impl SafeJob for Refund {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["refund", &self.id.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done()) // retry-safe work only: a posting here fails the torture
//!     }
//!     fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
//!         self.ledger.post(ctx.key());
//!         Ok(())
//!     }
//! }
//!
//! // 100 refunds, each dispatched 5 times over 4 threads, with crashes and lease expiries;
//! // transactional effects, so no crash may leave a key in doubt.
//! let harness = MemoryHarness::new();
//! let ledger = Ledger::default();
//! let report = Torture::new(&harness)
//!     .keys(100)
//!     .duplicates(5)
//!     .threads(4)
//!     .crash_rate(0.2)
//!     .effects(EffectsMode::Transactional)
//!     .crash_points(CrashPoint::ALL.into_iter().filter(|p| *p != CrashPoint::EffectsEnd))
//!     .seed(42)
//!     .count_effects(ledger.0.clone()) // check the ledger itself
//!     .run(|id| Refund { id, ledger: ledger.clone() })?;
//! assert_eq!(report.succeeded, 100);
//! assert_eq!(report.effects_in_doubt, 0);
//! assert_eq!(report.effects_counted, Some(100));
//!
//! // A plain run with a runner, checked with the assertions.
//! let runner = Runner::builder(Arc::new(MemoryStore::new())).build()?;
//! let single = Ledger::default();
//! let job = Refund { id: 1, ledger: single.clone() };
//! runner.run(&job)?;
//! runner.run(&job)?; // a duplicate: replayed, no second posting
//! assert_exactly_once(&single.0, [job.key()?]);
//! # use std::sync::Arc;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crash points leave out [`CrashPoint::EffectsEnd`]: the memory store's transaction cannot
//! roll back this in-memory ledger (see the [`torture`] module).
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

pub mod action_conformance;
pub mod assert;
pub mod clock;
pub mod conformance;
pub mod ledger_conformance;
pub mod memory;
pub mod probe;
pub mod proxy;
pub mod queue_conformance;
pub mod schedule_conformance;
pub mod skip;
pub mod torture;

pub use action_conformance::ActionHarness;
pub use assert::{
    Check, ExactlyOnceViolation, Offender, Problem, StoreCheckError, assert_at_most_once,
    assert_effects_in_doubt, assert_exactly_once, assert_settled, assert_succeeded,
    check_at_most_once, check_effects_in_doubt, check_exactly_once, check_settled, check_succeeded,
};
pub use clock::ManualClock;
pub use conformance::StoreHarness;
pub use ledger_conformance::LedgerHarness;
pub use memory::MemoryHarness;
pub use probe::EffectProbe;
pub use proxy::{FaultProxy, ProxyStats};
pub use queue_conformance::{MemoryQueueHarness, QueueHarness};
pub use schedule_conformance::ScheduleHarness;
pub use skip::{
    BackendRequired, backend_url, backends_required, report_skip, skip_or_require,
    skip_unless_required, try_backend_url,
};
pub use torture::{CrashPoint, EffectCounter, Torture, TortureFailure, TortureReport, Violation};
