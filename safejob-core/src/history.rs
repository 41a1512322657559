//! The audit ledger: every state transition of a job, a guard key, a schedule (and, once
//! workflows land, a batch), appended in the same atomic step as the transition itself, so the
//! history can never disagree with the state.
//!
//! * [`HistoryEntry`] — one transition: which entity, from which state to which, the fence and
//!   attempt after it, the worker, the time by the store clock, and a reason or error;
//! * [`HistoryStore`] — reading the history of one job, key, batch or schedule, and switching the
//!   ledger on or off;
//! * [`HistoryLog`] — the memory stores' ledger, and the one home of the rule for what is a
//!   transition and what is recorded of it. The SQL backends apply the same rule in database
//!   triggers (`migrations/*/2026-12-06-140000_create_safe_history`), written from these docs.
//!
//! # What is recorded
//!
//! A transition is the insert of a row, or an update that changes its state or its fence (for a
//! schedule: its revision, which every write bumps). Renewals, progress and effects marks change
//! neither and are not recorded. Each entry holds:
//!
//! | field | job (`safe_queue_jobs`) | key (`safe_jobs`) | schedule (`safe_queue_schedules`) |
//! |---|---|---|---|
//! | from / to | the [`QueueState`](crate::queue::QueueState) text (from is `None` at enqueue) | the [`JobState`] text | `active`, `paused` or `done` (no next run) |
//! | fence | the job's fence after the transition | the key's fence | the revision |
//! | attempt | the job's attempts | the key's attempts | — |
//! | worker | the owner after the transition, else the one before it | same | — |
//! | at | the row's `updated_at` (the store clock) | same | same |
//! | reason | the newest error, `kind: message`, when the transition appended one | the error given to a release; `code: message` of a final failure | `tick` when the fire enqueued a tick |
//!
//! Raw idempotency keys are never stored: a key is its digest. The history of a row is deleted
//! with the row (prune, purge), in the same step.
//!
//! ```
//! use std::sync::Arc;
//! use safejob_core::{history::{HistoryStore, Subject}, queue::{MemoryQueue, NewJob, QueueStore, RunAt}};
//!
//! let queue = MemoryQueue::new();
//! let job = NewJob {
//!     kind: "hello".into(),
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
//! let id = queue.enqueue(&job)?.id();
//! let history = queue.history(&Subject::Job(id))?;
//! assert_eq!(history[0].from_state, None);
//! assert_eq!(history[0].to_state, "pending");
//! # Ok::<(), safejob_core::StoreError>(())
//! ```

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};

use crate::{
    KeyDigest,
    queue::{JobId, QueuedJob},
    schedule::ScheduleRow,
    store::{JobRecord, JobState, StoreError, UnknownValue},
    workflow::{BatchId, BatchState},
};

/// What kind of row an entry is about. Stored as the text of [`Entity::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// A queued job (`safe_queue_jobs`), by [`JobId`].
    Job,
    /// A guard key (`safe_jobs`), by [`KeyDigest`].
    Key,
    /// A workflow batch (`safe_queue_batches`), by its id.
    Batch,
    /// A schedule (`safe_queue_schedules`), by name.
    Schedule,
}

impl Entity {
    /// Every entity, in declaration order.
    pub const ALL: [Self; 4] = [Self::Job, Self::Key, Self::Batch, Self::Schedule];

    /// The text stored in the `entity` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Key => "key",
            Self::Batch => "batch",
            Self::Schedule => "schedule",
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Entity {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| UnknownValue {
                column: "entity",
                found: s.chars().take(40).collect(),
            })
    }
}

/// Whose history to read (or forget).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// One queued job.
    Job(JobId),
    /// One guard key.
    Key(KeyDigest),
    /// One workflow batch: the entries recorded with this `batch_id` — the batch's own
    /// (running → succeeded / failed / cancelled) and its members' jobs'.
    Batch(BatchId),
    /// One schedule, by name.
    Schedule(String),
}

/// One recorded transition. States are text because each entity has its own closed set
/// ([`QueueState`](crate::queue::QueueState), [`JobState`], the schedule's `active` / `paused` / `done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Increasing in the order entries were appended (per store).
    pub id: i64,
    /// What the entry is about.
    pub entity: Entity,
    /// The job, for a job's entry.
    pub job_id: Option<JobId>,
    /// The key's digest, for a key's entry.
    pub key: Option<KeyDigest>,
    /// The batch, for a batch's entry and for the entries of a batch member's job.
    pub batch_id: Option<BatchId>,
    /// The schedule's name, for a schedule's entry.
    pub schedule: Option<String>,
    /// The state before; `None` for the row's insert.
    pub from_state: Option<String>,
    /// The state after.
    pub to_state: String,
    /// The fence after (a schedule's revision).
    pub fence: Option<u64>,
    /// The attempt after (jobs and keys).
    pub attempt: Option<u32>,
    /// The worker that held or took the lease.
    pub worker: Option<String>,
    /// When, by the store clock (the row's `updated_at`).
    pub at: DateTime<Utc>,
    /// The error or reason the transition recorded, if any.
    pub reason: Option<String>,
}

/// Reading the audit ledger, and switching it on or off. Implemented by
/// [`MemoryQueue`](crate::queue::MemoryQueue), [`MemoryStore`](crate::MemoryStore) (keys only)
/// and the diesel queue; all pass `safejob_test_kit`'s ledger conformance suite.
pub trait HistoryStore: Send + Sync {
    /// The entries of `of`, oldest first (by [`HistoryEntry::id`]). Empty when nothing was
    /// recorded (the ledger was off) or the row was pruned.
    fn history(&self, of: &Subject) -> Result<Vec<HistoryEntry>, StoreError>;

    /// Switches recording on or off for every later transition. On by default. On the SQL
    /// backends this is one row of `safe_history_settings`, read by the triggers: it applies to
    /// the whole database, to every process using it.
    fn set_ledger(&self, on: bool) -> Result<(), StoreError>;

    /// Whether transitions are being recorded.
    fn ledger_enabled(&self) -> Result<bool, StoreError>;
}

/// The status of a schedule row as its history records it: `paused`, `done` (no next run: a
/// one-off run that fired) or `active`.
pub fn schedule_status(row: &ScheduleRow) -> &'static str {
    if row.paused {
        "paused"
    } else if row.next_run_at.is_none() {
        "done"
    } else {
        "active"
    }
}

/// The memory stores' ledger: entries appended by the stores inside the critical section of the
/// transition they record, and the one place the recording rule (see the [module docs](self))
/// is written for them.
#[derive(Debug, Clone)]
pub struct HistoryLog {
    entries: Vec<HistoryEntry>,
    next_id: i64,
    enabled: bool,
}

impl Default for HistoryLog {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            next_id: 0,
            enabled: true,
        }
    }
}

impl HistoryLog {
    /// Whether transitions are recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Switches recording on or off.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    fn push(&mut self, entry: HistoryEntry) {
        self.next_id += 1;
        self.entries.push(HistoryEntry {
            id: self.next_id,
            ..entry
        });
    }

    /// Records a job's transition from `before` (`None`: the job was just inserted) to `after`,
    /// if it is one (insert, or state or fence changed).
    pub fn job(&mut self, before: Option<&QueuedJob>, after: &QueuedJob) {
        if !self.enabled || before.is_some_and(|b| b.state == after.state && b.fence == after.fence)
        {
            return;
        }
        let appended = before.is_some_and(|b| b.errors != after.errors);
        self.push(HistoryEntry {
            id: 0,
            entity: Entity::Job,
            job_id: Some(after.id),
            key: None,
            batch_id: after.batch,
            schedule: None,
            from_state: before.map(|b| b.state.as_str().to_owned()),
            to_state: after.state.as_str().to_owned(),
            fence: Some(after.fence),
            attempt: Some(after.attempts),
            worker: after
                .owner
                .clone()
                .or_else(|| before.and_then(|b| b.owner.clone())),
            at: after.updated_at,
            reason: after
                .errors
                .last()
                .filter(|_| appended)
                .map(|e| format!("{}: {}", e.kind.as_str(), e.message)),
        });
    }

    /// Records a key's transition from `before` (`None`: the row was just inserted) to `after`,
    /// if it is one (insert, or state or fence changed).
    pub fn key(&mut self, before: Option<&JobRecord>, after: &JobRecord) {
        if !self.enabled || before.is_some_and(|b| b.state == after.state && b.fence == after.fence)
        {
            return;
        }
        let reason = match after.state {
            JobState::Released => after.last_error.clone(),
            JobState::Failed => after
                .failure
                .as_ref()
                .map(|f| format!("{}: {}", f.code, f.message)),
            JobState::Running | JobState::Succeeded => None,
        };
        self.push(HistoryEntry {
            id: 0,
            entity: Entity::Key,
            job_id: None,
            key: Some(after.digest),
            batch_id: None,
            schedule: None,
            from_state: before.map(|b| b.state.as_str().to_owned()),
            to_state: after.state.as_str().to_owned(),
            fence: Some(after.fence),
            attempt: Some(after.attempts),
            worker: after
                .owner
                .clone()
                .or_else(|| before.and_then(|b| b.owner.clone())),
            at: after.updated_at,
            reason,
        });
    }

    /// Records a schedule's write from `before` (`None`: inserted) to `after` at `at`, if it is a
    /// transition (insert, or revision changed).
    pub fn schedule(
        &mut self,
        before: Option<&ScheduleRow>,
        after: &ScheduleRow,
        at: DateTime<Utc>,
    ) {
        if !self.enabled || before.is_some_and(|b| b.revision == after.revision) {
            return;
        }
        let ticked = before.is_some_and(|b| b.last_tick != after.last_tick);
        self.push(HistoryEntry {
            id: 0,
            entity: Entity::Schedule,
            job_id: None,
            key: None,
            batch_id: None,
            schedule: Some(after.name.clone()),
            from_state: before.map(|b| schedule_status(b).to_owned()),
            to_state: schedule_status(after).to_owned(),
            fence: u64::try_from(after.revision).ok(),
            attempt: None,
            worker: None,
            at,
            reason: ticked.then(|| "tick".to_owned()),
        });
    }

    /// Records a batch's move from `from` (`None`: dispatched) to `to` at `at`.
    pub fn batch(
        &mut self,
        batch: BatchId,
        from: Option<BatchState>,
        to: BatchState,
        at: DateTime<Utc>,
    ) {
        if !self.enabled {
            return;
        }
        self.push(HistoryEntry {
            id: 0,
            entity: Entity::Batch,
            job_id: None,
            key: None,
            batch_id: Some(batch),
            schedule: None,
            from_state: from.map(|f| f.as_str().to_owned()),
            to_state: to.as_str().to_owned(),
            fence: None,
            attempt: None,
            worker: None,
            at,
            reason: None,
        });
    }

    /// Tags job `job`'s entries so far with `batch` (its insert was recorded before it joined
    /// the batch, in the batch's own transaction).
    pub fn tag_batch(&mut self, job: JobId, batch: BatchId) {
        for e in &mut self.entries {
            if e.entity == Entity::Job && e.job_id == Some(job) && e.batch_id.is_none() {
                e.batch_id = Some(batch);
            }
        }
    }

    /// The entries of `of`, oldest first.
    pub fn read(&self, of: &Subject) -> Vec<HistoryEntry> {
        self.entries
            .iter()
            .filter(|e| concerns(e, of))
            .cloned()
            .collect()
    }

    /// Deletes the entries of every subject in `of` (their rows were deleted).
    pub fn forget(&mut self, of: &[Subject]) {
        if of.is_empty() {
            return;
        }
        self.entries.retain(|e| !of.iter().any(|s| concerns(e, s)));
    }
}

fn concerns(entry: &HistoryEntry, of: &Subject) -> bool {
    match of {
        Subject::Job(id) => entry.entity == Entity::Job && entry.job_id == Some(*id),
        Subject::Key(digest) => entry.entity == Entity::Key && entry.key == Some(*digest),
        Subject::Batch(id) => entry.batch_id == Some(*id),
        Subject::Schedule(name) => {
            entry.entity == Entity::Schedule && entry.schedule.as_deref() == Some(name)
        }
    }
}

/// Why a history does not match its row (see [`check_replay`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The row exists but nothing was recorded.
    #[error("no history for a row that exists")]
    Empty,
    /// The first entry is not the row's insert.
    #[error("the first entry (#{id}) starts from {from:?}, not from the insert")]
    NoInsert {
        /// The entry.
        id: i64,
        /// Its from state.
        from: Option<String>,
    },
    /// An entry's from state is not the previous entry's to state: a transition is missing.
    #[error("entry #{id} goes from {from:?} but the previous entry ended in {previous:?}")]
    Broken {
        /// The entry.
        id: i64,
        /// Its from state.
        from: Option<String>,
        /// The previous entry's to state.
        previous: String,
    },
    /// A fence went down between two entries.
    #[error("entry #{id} has fence {fence:?} below the previous {previous:?}")]
    FenceWentBack {
        /// The entry.
        id: i64,
        /// Its fence.
        fence: Option<u64>,
        /// The previous entry's fence.
        previous: Option<u64>,
    },
    /// Replaying the history ends elsewhere than the row is.
    #[error(
        "the history ends in {ends:?} at fence {ends_fence:?}; the row is {state:?} at fence {fence}"
    )]
    EndsElsewhere {
        /// The last entry's to state.
        ends: String,
        /// The last entry's fence.
        ends_fence: Option<u64>,
        /// The row's state.
        state: String,
        /// The row's fence.
        fence: u64,
    },
}

/// Checks that `history` (oldest first) replays to a row now in `state` at `fence`: it starts
/// with the insert, each entry starts where the previous one ended (no transition is missing),
/// fences never go down, and the last entry is the row's state and fence.
pub fn check_replay(history: &[HistoryEntry], state: &str, fence: u64) -> Result<(), ReplayError> {
    let Some(first) = history.first() else {
        return Err(ReplayError::Empty);
    };
    if first.from_state.is_some() {
        return Err(ReplayError::NoInsert {
            id: first.id,
            from: first.from_state.clone(),
        });
    }
    for pair in history.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if next.from_state.as_deref() != Some(prev.to_state.as_str()) {
            return Err(ReplayError::Broken {
                id: next.id,
                from: next.from_state.clone(),
                previous: prev.to_state.clone(),
            });
        }
        if next.fence < prev.fence {
            return Err(ReplayError::FenceWentBack {
                id: next.id,
                fence: next.fence,
                previous: prev.fence,
            });
        }
    }
    let last = &history[history.len() - 1];
    if last.to_state != state || last.fence != Some(fence) {
        return Err(ReplayError::EndsElsewhere {
            ends: last.to_state.clone(),
            ends_fence: last.fence,
            state: state.to_owned(),
            fence,
        });
    }
    Ok(())
}

/// [`check_replay`] of a job's history against its row.
pub fn check_job(history: &[HistoryEntry], job: &QueuedJob) -> Result<(), ReplayError> {
    check_replay(history, job.state.as_str(), job.fence)
}

/// [`check_replay`] of a key's history against its row.
pub fn check_key(history: &[HistoryEntry], row: &JobRecord) -> Result<(), ReplayError> {
    check_replay(history, row.state.as_str(), row.fence)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, from: Option<&str>, to: &str, fence: u64) -> HistoryEntry {
        HistoryEntry {
            id,
            entity: Entity::Job,
            job_id: Some(JobId(1)),
            key: None,
            batch_id: None,
            schedule: None,
            from_state: from.map(str::to_owned),
            to_state: to.to_owned(),
            fence: Some(fence),
            attempt: None,
            worker: None,
            at: DateTime::UNIX_EPOCH,
            reason: None,
        }
    }

    #[test]
    fn entity_text_round_trips() {
        for e in Entity::ALL {
            assert_eq!(e.as_str().parse::<Entity>(), Ok(e));
        }
        assert!("row".parse::<Entity>().is_err());
    }

    #[test]
    fn replay_finds_gaps_regressions_and_wrong_ends() {
        let good = [
            entry(1, None, "pending", 0),
            entry(2, Some("pending"), "running", 1),
            entry(3, Some("running"), "succeeded", 1),
        ];
        assert_eq!(check_replay(&good, "succeeded", 1), Ok(()));
        assert_eq!(check_replay(&[], "pending", 0), Err(ReplayError::Empty));
        assert!(matches!(
            check_replay(&good[1..], "succeeded", 1),
            Err(ReplayError::NoInsert { .. })
        ));
        let gap = [good[0].clone(), good[2].clone()];
        assert!(matches!(
            check_replay(&gap, "succeeded", 1),
            Err(ReplayError::Broken { id: 3, .. })
        ));
        let back = [
            good[0].clone(),
            good[1].clone(),
            entry(3, Some("running"), "succeeded", 0),
        ];
        assert!(matches!(
            check_replay(&back, "succeeded", 0),
            Err(ReplayError::FenceWentBack { id: 3, .. })
        ));
        assert!(matches!(
            check_replay(&good, "succeeded", 2),
            Err(ReplayError::EndsElsewhere { .. })
        ));
        assert!(matches!(
            check_replay(&good, "dead", 1),
            Err(ReplayError::EndsElsewhere { .. })
        ));
    }
}
