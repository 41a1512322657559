//! The schedules' storage port: a few primitives over a `safe_queue_schedules` table (or the
//! memory queue's map), next to the queue's jobs so that a fire and its enqueue are one step.

use chrono::{DateTime, Utc};

use crate::{
    queue::{Enqueued, NewJob, QueueStore},
    store::StoreError,
};

/// One stored schedule, as operators see it in `safe_queue_schedules`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    /// The schedule's name (the primary key).
    pub name: String,
    /// `cron` or `once`.
    pub trigger: String,
    /// The cron expression, or the one-off instant in RFC 3339.
    pub expression: String,
    /// The IANA time zone of the expression (`UTC` for a one-off run).
    pub time_zone: String,
    /// The missed-tick policy as text: `latest`, `skip` or `all:N`.
    pub missed: String,
    /// The job kind each tick enqueues (for operators; the job itself is declared in code).
    pub kind: String,
    /// Paused by an operator: no tick fires until it is resumed.
    pub paused: bool,
    /// The next run time; `None` once a one-off run has fired (or been skipped).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The latest tick that enqueued a job.
    pub last_tick: Option<DateTime<Utc>>,
    /// Bumped by every write to the row: a fire, a redefinition, a pause or a resume is
    /// conditional on the revision it read.
    pub revision: i64,
}

impl ScheduleRow {
    /// Whether the stored definition (trigger, expression, time zone, policy, kind) equals
    /// `other`'s.
    pub fn same_definition(&self, other: &ScheduleRow) -> bool {
        self.trigger == other.trigger
            && self.expression == other.expression
            && self.time_zone == other.time_zone
            && self.missed == other.missed
            && self.kind == other.kind
    }
}

/// One fire of a schedule: move its row on and enqueue its tick jobs, as one atomic step.
#[derive(Debug, Clone)]
pub struct Fire<'a> {
    /// The schedule.
    pub name: &'a str,
    /// The revision the scheduler read; the fire applies only if the row still has it.
    pub revision: i64,
    /// The row's new `next_run_at`.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The row's new `last_tick` (unchanged when `None`).
    pub last_tick: Option<DateTime<Utc>>,
    /// The tick jobs, each with a unique key naming the schedule and its tick instant (may be
    /// empty: a fire that only skips ticks).
    pub jobs: &'a [NewJob],
}

/// The storage port of schedules, on the queue store whose jobs the ticks enqueue.
///
/// Every write is conditional on the row's `revision`; a fire is that conditional update and the
/// enqueue of its jobs in one transaction (the memory queue: under one lock). Two schedulers that
/// read the same revision race for one update: exactly one fires, the other is told `None` and
/// enqueues nothing. That, not the unique key alone (which dedupes only against *live* jobs: a
/// tick whose job already succeeded would insert again), is what makes a tick enqueue once.
pub trait ScheduleStore: QueueStore {
    /// Every stored schedule, by name.
    fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError>;

    /// Inserts `row` (its `revision` is ignored and stored as 0) unless a schedule of that name
    /// exists; `false` when it existed (nothing changed).
    fn insert_schedule(&self, row: &ScheduleRow) -> Result<bool, StoreError>;

    /// Where the row named `row.name` still has `revision`: writes `row`'s definition,
    /// `next_run_at` and `paused`, and bumps the revision. `false` when the row moved on or is
    /// gone.
    fn update_schedule(&self, row: &ScheduleRow, revision: i64) -> Result<bool, StoreError>;

    /// Where the row named `fire.name` still has `fire.revision` and is not paused: sets
    /// `next_run_at`, `last_tick` (when given), bumps the revision and enqueues `fire.jobs`, in
    /// one atomic step. `None` when the row moved on, is paused or is gone: nothing was enqueued.
    fn fire(&self, fire: &Fire<'_>) -> Result<Option<Vec<Enqueued>>, StoreError>;

    /// Deletes the schedule's row (its enqueued jobs stay); `false` when there was none.
    fn remove_schedule(&self, name: &str) -> Result<bool, StoreError>;
}
