//! # safejob-test-kit
//!
//! Prove that jobs run exactly once: a manual clock, effect probes and assertions, the
//! `LeaseStore` conformance suite every store must pass, and a torture harness.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod assert;
pub mod clock;
pub mod conformance;
pub mod memory;
pub mod probe;
pub mod torture;

pub use assert::*;
pub use clock::ManualClock;
pub use conformance::StoreHarness;
pub use memory::MemoryHarness;
pub use probe::EffectProbe;
pub use torture::{CrashPoint, Torture, TortureFailure, TortureReport};
