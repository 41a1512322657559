//! The exactly-once guard: the job trait ([`job`]), the storage port ([`store`]), the one
//! pipeline every guarded run follows (`pipeline`), the [`Runner`](runner::Runner) that drives it
//! straight on a store, the in-memory store ([`memory`]), and how long terminal rows are kept
//! ([`retention`]).
//!
//! The queue's guarded jobs run through the same pipeline, finalizing inside the queue's
//! completion instead of on the store directly; see [`crate::queue`].
//!
//! Every module is also reachable from the crate root (`safejob_core::store`,
//! `safejob_core::runner`, ...), as before this folder existed.

pub mod job;
pub mod memory;
pub(crate) mod pipeline;
pub mod retention;
pub mod runner;
pub mod store;
