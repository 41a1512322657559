//! # safejob-test-kit
//!
//! Prove that jobs run exactly once: a manual clock, effect probes and assertions, the
//! `LeaseStore` conformance suite every store must pass, and a torture harness.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conformance;

pub use conformance::StoreHarness;
