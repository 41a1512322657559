//! An in-process torture harness for a user's own [`SafeJob`](safejob_core::SafeJob).
//!
//! [`Torture::run`] dispatches every one of K keys D times, shuffled, over W threads, through a
//! real [`Runner`](safejob_core::Runner) on the harness's store, and injects faults on the way:
//!
//! * **crashes** at each point of the pipeline ([`CrashPoint`]). A crash kills the dispatch like
//!   a killed process: from then on every store call of that dispatch — including the runner's
//!   clean-up, such as releasing the lease while the panic unwinds — is swallowed before it
//!   reaches the store, and the dispatch unwinds to its thread, which counts it and moves on;
//! * **pauses** inside `perform`: the store's time jumps past the lease TTL (through
//!   [`StoreHarness::advance`](crate::StoreHarness::advance), never by sleeping), so leases
//!   expire while their holders work and duplicates take them over.
//!
//! Before the first dispatch it calls each job's `key()` and `fingerprint()` twice: a job whose
//! answers differ (a timestamp or a random id in the key) fails the run at once with
//! [`TortureFailure::UnstableKey`] or [`TortureFailure::UnstableFingerprint`], naming the key index
//! and the job's type. Every dispatch then runs under those first answers; a later call that
//! answers differently is reported as [`Violation::UnstableKey`] (or `UnstableFingerprint`) for
//! that job, not by its symptoms (finalizes and rows under keys no other dispatch uses).
//!
//! Then it makes time pass beyond every lease and re-dispatches each key that is not terminal,
//! round after round (a bounded number), as a queue would redeliver. Finally it checks, from the
//! store's own rows (not from worker memory):
//!
//! * every key has exactly one row, terminal: none is stuck;
//! * no key was finalized `succeeded` more than once (finalizes that committed are counted where
//!   the store answers them), and a `succeeded` row has exactly one;
//! * effects ran exactly once per key, except where a crash or an effects error hit the window
//!   after the finalize: there they ran at most once **and** the key is listed effects-in-doubt
//!   (visible, not lost). With
//!   [`EffectsMode::Transactional`](safejob_core::EffectsMode::Transactional) no key may be in
//!   doubt at all;
//! * a job that declares no effects (`SafeJob::has_effects` is false) never has its effects hook
//!   called, and its row says effects `done` and is never in doubt, crash or not.
//!
//! ## What it sees of your effects
//!
//! On its own the harness counts the calls to `on_succeeded_once` that returned: it cannot see
//! what the job writes anywhere else. A job that posts its ledger row in `perform` passes such a
//! run while charging some keys twice. Give it an [`EffectCounter`] with
//! [`Torture::count_effects`] — an [`EffectProbe`](crate::EffectProbe) recorded into wherever
//! the effect happens, or a closure that counts rows in your ledger — and it also checks:
//!
//! * after every `perform`: the counter shows no effect for a key whose `on_succeeded_once` has
//!   not started yet. One that does is [`Violation::EffectsInPerform`], reported as "effects
//!   observed in perform: move them to on_succeeded_once";
//! * at the end: exactly one effect per succeeded key (at most one for a key left
//!   effects-in-doubt), none for a key that did not succeed.
//!
//! The report says which of the two it checked ([`TortureReport::effects_checked`]).
//!
//! The fault plan comes from a seed: the same seed gives the same crashes and pauses at the same
//! dispatches (thread interleaving still varies; with one thread the whole run repeats). Every
//! failure prints the seed. A run given no seed takes `SAFEJOB_TORTURE_SEED` when it is set, so
//! a failure of a randomly seeded run can be replayed without editing the test.
//!
//! ```
//! use safejob_core::*;
//! use safejob_test_kit::{MemoryHarness, Torture};
//!
//! struct Charge(usize);
//! impl SafeJob for Charge {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["charge", &self.0.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//! }
//!
//! let harness = MemoryHarness::new();
//! let report = Torture::new(&harness)
//!     .keys(50)
//!     .duplicates(4)
//!     .threads(4)
//!     .crash_rate(0.2)
//!     .seed(7)
//!     .run(Charge)?;
//! assert_eq!(report.succeeded, 50);
//! assert_eq!(report.dispatches_planned, 200);
//! # Ok::<(), safejob_test_kit::TortureFailure>(())
//! ```
//!
//! The memory store's transaction handle cannot roll back a job's own in-memory writes: under
//! [`EffectsMode::Transactional`](safejob_core::EffectsMode::Transactional), a crash at
//! [`CrashPoint::EffectsEnd`] rolls back the store but not such writes. The harness's own count
//! of effects follows the transaction (it is counted only when the finalize commits); a job's
//! ledger that lives outside the store does not (an [`EffectCounter`] over it then counts the
//! rolled-back posting too), so check such a ledger in after-commit mode, or leave that crash
//! point out. On a SQL store, a ledger table written through the finalize transaction rolls
//! back with it.
//!
//! The harness is split by role: `config.rs` (the [`Torture`] builder and the [`CrashPoint`]s),
//! `run.rs` (dispatching with faults, the rounds of recovery), `fault.rs` (the store and the job as
//! a crashing dispatch sees them), `observe.rs` (what it watches of the job itself: stable keys
//! and fingerprints, the [`EffectCounter`]), `check.rs` (the checks against the store's rows) and
//! `report.rs` (the [`TortureReport`], the [`Violation`]s and the [`TortureFailure`]).

/// The environment variable that overrides the seed of every torture run.
pub const SEED_ENV: &str = "SAFEJOB_TORTURE_SEED";

mod check;
mod config;
mod fault;
mod observe;
mod report;
mod run;

pub use config::{CrashPoint, Torture};
pub use observe::{CountError, EffectCounter};
pub use report::{DoubtReason, TortureFailure, TortureReport, Violation};
/// The seeded generator of the torture run, shared with the ledger's randomized case.
pub(crate) use run::SplitMix64;
