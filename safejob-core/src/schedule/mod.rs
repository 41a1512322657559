//! Schedules: named cron (in an IANA time zone) and one-off runs, declared in code, stored next
//! to the queue, each tick enqueued exactly once however many schedulers run.
//!
//! * [`Schedule`] — a declaration: a [`Trigger`], a [`MissedTicks`] policy and the job template;
//! * [`Scheduler`] — [`sync`](Scheduler::sync) the declarations into the store,
//!   [`tick`](Scheduler::tick) to fire what is due (or [`start`](Scheduler::start) a thread),
//!   pause, resume, trigger now, remove, list with the next run times;
//! * [`ScheduleStore`] — the storage port, on [`MemoryQueue`](crate::queue::MemoryQueue) here
//!   and on the SQL backends in `safejob-diesel`.
//!
//! The semantics (state diagram, each policy, DST) are in `docs/schedules.md`.
//!
//! ```
//! use std::sync::Arc;
//! use safejob_core::{queue::{MemoryQueue, NewJob, QueueStore, RunAt}, schedule::{Schedule, Scheduler}};
//!
//! let job = NewJob {
//!     kind: "digest".into(),
//!     queue: "default".into(),
//!     payload: serde_json::json!({}),
//!     metadata: serde_json::Value::Null,
//!     priority: 0,
//!     run_at: RunAt::Now,
//!     max_attempts: 3,
//!     idempotent: true,
//!     unique_key: None,
//!     guard: None,
//! };
//! let store = Arc::new(MemoryQueue::new());
//! let scheduler = Scheduler::builder(store.clone())
//!     .schedule(Schedule::cron("hourly-digest", "@hourly", "America/New_York", job)?)
//!     .build()?;
//! let report = scheduler.sync()?;
//! assert_eq!(report.inserted, ["hourly-digest"]);
//! let listed = scheduler.list(3)?;
//! assert_eq!(listed[0].next_runs.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod memory;
mod scheduler;
mod spec;
mod store;

pub use scheduler::{
    DEFAULT_GRACE, Fired, ScheduleInfo, Scheduler, SchedulerBuilder, SchedulerError,
    SchedulerHandle, SyncReport,
};
pub use spec::{MAX_MISSED_TICKS, MAX_NAME_LEN, MissedTicks, Schedule, ScheduleError, Trigger};
pub use store::{Fire, ScheduleRow, ScheduleStore};
