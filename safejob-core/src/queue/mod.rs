//! A durable job queue with the exactly-once guard built in.
//!
//! * [`QueueState`] — the closed set of states a queued job goes through (diagram in
//!   `docs/queue.md`);
//! * [`QueueStore`] — the storage port: enqueue, claim (a lease with a fence token, sharing its
//!   atomic step with the guard's acquire), renew, fenced completion (sharing its step with the
//!   guard's finalize), heartbeats, the reaper, operator actions, snapshot and pruning.
//!
//! The memory backend, the typed-job API, the worker pool and the retry policies build on these.

mod state;
pub mod store;

pub use state::QueueState;
pub use store::{
    AttemptError, ClaimRequest, Claimed, CompleteAs, Completed, Completion, Enqueued, ErrorKind,
    GuardFinish, GuardSpec, Heartbeat, JobFilter, JobId, JobQuery, KindStats, MAX_ERROR_HISTORY,
    NewJob, OpResult, Progress, QueueLease, QueueStore, QueuedJob, Reaped, RecordedError, RunAt,
    Snapshot, StateCount, Waker, WorkerInfo,
};
