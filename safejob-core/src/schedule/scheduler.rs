//! The scheduler: syncs the declared schedules into the store and fires their due ticks.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};

use super::{
    MissedTicks, Schedule, ScheduleError, Trigger,
    store::{Fire, ScheduleRow, ScheduleStore},
};
use crate::{
    IdempotencyKey, KeyError,
    periodic::Periodic,
    queue::{Enqueued, NewJob, RunAt},
    store::StoreError,
};

/// Default of [`SchedulerBuilder::grace`].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// A scheduler operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerError {
    /// A declaration, or a stored row, is not a valid schedule.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Two schedules were declared with one name.
    #[error("schedule {name:?} is declared twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The operation names a schedule this scheduler does not declare.
    #[error("schedule {name:?} is not declared in this scheduler")]
    NotDeclared {
        /// The name.
        name: String,
    },
    /// The schedule is declared but has no stored row (removed by an operator; the next
    /// [`Scheduler::sync`] stores it again).
    #[error("schedule {name:?} has no stored row")]
    NotStored {
        /// The name.
        name: String,
    },
    /// Another process changed the row at the same time, several times over; try again.
    #[error("schedule {name:?} kept changing under this operation; try again")]
    Contended {
        /// The name.
        name: String,
    },
    /// A tick's unique key could not be built (the schedule's kind is not a valid key part).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`Scheduler::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Declared schedules that had no row: stored.
    pub inserted: Vec<String>,
    /// Declared schedules whose stored definition differed from the code: updated, their next
    /// run recomputed from now.
    pub updated: Vec<String>,
    /// Stored schedules that this scheduler does not declare: left as they are (reported, never
    /// deleted; [`Scheduler::remove`] deletes one). They do not fire here.
    pub undeclared: Vec<String>,
}

/// One schedule's fire in a [`Scheduler::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule.
    pub schedule: String,
    /// The tick instants enqueued, oldest first (empty when every due tick was skipped).
    pub ticks: Vec<DateTime<Utc>>,
    /// The store's answer per tick job, in the order of `ticks`.
    pub enqueued: Vec<Enqueued>,
    /// The schedule's next run time after this fire.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// A schedule as [`Scheduler::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    /// The stored row.
    pub row: ScheduleRow,
    /// Whether this scheduler declares it.
    pub declared: bool,
    /// The next run times from the stored `next_run_at` on (empty when paused or done).
    pub next_runs: Vec<DateTime<Utc>>,
}

/// Builds a [`Scheduler`].
pub struct SchedulerBuilder {
    store: Arc<dyn ScheduleStore>,
    schedules: Vec<Schedule>,
    grace: Duration,
}

impl SchedulerBuilder {
    /// Declares a schedule.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// How late a tick may be and still run under [`MissedTicks::Skip`]. Defaults to 60 seconds.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The scheduler; `DuplicateName` when two declarations share a name.
    pub fn build(self) -> Result<Scheduler, SchedulerError> {
        let mut declared = BTreeMap::new();
        for s in self.schedules {
            if declared.contains_key(&s.name) {
                return Err(SchedulerError::DuplicateName { name: s.name });
            }
            declared.insert(s.name.clone(), s);
        }
        Ok(Scheduler {
            store: self.store,
            declared,
            grace: chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX),
        })
    }
}

/// Fires declared schedules' ticks into the queue, exactly once per tick however many schedulers
/// run on one database.
///
/// Driven by the store clock ([`QueueStore::now`](crate::queue::QueueStore::now)): call
/// [`sync`](Scheduler::sync) once at start, then [`tick`](Scheduler::tick) periodically (or
/// [`start`](Scheduler::start) a thread that does). Each tick's job carries a unique key naming
/// the schedule and the tick instant, and is enqueued in the same atomic step as the conditional
/// advance of the schedule's row ([`ScheduleStore::fire`]).
pub struct Scheduler {
    store: Arc<dyn ScheduleStore>,
    declared: BTreeMap<String, Schedule>,
    grace: chrono::Duration,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("schedules", &self.schedules.len())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("declared", &self.declared.keys().collect::<Vec<_>>())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// A row's due ticks (oldest first) and its next run after now.
type Due = (Vec<DateTime<Utc>>, Option<DateTime<Utc>>);

/// How many times an operation reads and retries a row that another process keeps changing.
const MAX_CAS_ROUNDS: usize = 8;

impl Scheduler {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn ScheduleStore>) -> SchedulerBuilder {
        SchedulerBuilder {
            store,
            schedules: Vec::new(),
            grace: DEFAULT_GRACE,
        }
    }

    fn row_of(&self, s: &Schedule, now: DateTime<Utc>) -> Result<ScheduleRow, SchedulerError> {
        Ok(ScheduleRow {
            name: s.name.clone(),
            trigger: s.trigger.kind().to_owned(),
            expression: s.trigger.expression(),
            time_zone: s.trigger.time_zone().to_owned(),
            missed: s.missed.to_string(),
            kind: s.job.kind.clone(),
            paused: false,
            next_run_at: s.trigger.next_after(&s.name, now, false)?,
            last_tick: None,
            revision: 0,
        })
    }

    fn find(&self, name: &str) -> Result<Option<ScheduleRow>, SchedulerError> {
        Ok(self.store.schedules()?.into_iter().find(|r| r.name == name))
    }

    /// Stores every declared schedule: a new one is inserted with its next run after now; one
    /// whose stored definition differs is updated (next run recomputed from now; paused stays as
    /// the operator left it); stored schedules not declared here are reported and logged, not
    /// deleted.
    pub fn sync(&self) -> Result<SyncReport, SchedulerError> {
        let now = self.store.now()?;
        let mut report = SyncReport::default();
        for s in self.declared.values() {
            let wanted = self.row_of(s, now)?;
            let mut done = false;
            for _ in 0..MAX_CAS_ROUNDS {
                match self.find(&s.name)? {
                    None => {
                        if self.store.insert_schedule(&wanted)? {
                            report.inserted.push(s.name.clone());
                            tracing::info!(schedule = %s.name, "schedule stored");
                            done = true;
                            break;
                        }
                    }
                    Some(stored) if stored.same_definition(&wanted) => {
                        done = true;
                        break;
                    }
                    Some(stored) => {
                        let row = ScheduleRow {
                            paused: stored.paused,
                            last_tick: stored.last_tick,
                            ..wanted.clone()
                        };
                        if self.store.update_schedule(&row, stored.revision)? {
                            tracing::info!(
                                schedule = %s.name,
                                from = %stored.expression,
                                to = %row.expression,
                                "schedule definition updated from code"
                            );
                            report.updated.push(s.name.clone());
                            done = true;
                            break;
                        }
                    }
                }
            }
            if !done {
                return Err(SchedulerError::Contended {
                    name: s.name.clone(),
                });
            }
        }
        for row in self.store.schedules()? {
            if !self.declared.contains_key(&row.name) {
                tracing::warn!(
                    schedule = %row.name,
                    "stored schedule is not declared in code: left in place, not fired here"
                );
                report.undeclared.push(row.name);
            }
        }
        Ok(report)
    }

    /// The ticks of `row` due in `[next, now]` under its policy, oldest first, and its next
    /// run after `now`; from the stored definition (every scheduler agrees on it, even
    /// mid-deploy).
    fn due(
        &self,
        row: &ScheduleRow,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Due, ScheduleError> {
        let trigger =
            Trigger::from_stored(&row.name, &row.trigger, &row.expression, &row.time_zone)?;
        let missed: MissedTicks =
            row.missed
                .parse()
                .map_err(|()| ScheduleError::InvalidMissedPolicy {
                    schedule: row.name.clone(),
                    policy: row.missed.clone(),
                })?;
        let limit = match missed {
            MissedTicks::RunAll { max } => max as usize,
            MissedTicks::RunLatest | MissedTicks::Skip => 1,
        };
        // Latest first, searched backwards from now.
        let before_next = next - chrono::Duration::microseconds(1);
        let mut ticks = trigger.latest_in(before_next, now, limit);
        // A run an operator asked for ([`Scheduler::due_now`]): `next` is not one of the
        // trigger's own instants, and runs as a tick of its own (the oldest).
        if trigger.next_after(&row.name, before_next, true)? != Some(next) && !ticks.contains(&next)
        {
            ticks.push(next);
        }
        if missed == MissedTicks::Skip {
            ticks.retain(|t| now - *t <= self.grace);
        }
        ticks.reverse();
        Ok((ticks, trigger.next_after(&row.name, now, false)?))
    }

    /// Fires every declared, unpaused schedule whose next run is due by the store clock, each
    /// by its [`MissedTicks`] policy, and returns what it fired. A schedule another scheduler
    /// fired first is left out (it enqueued nothing here); so is a stored row that does not
    /// parse, logged as a warning.
    pub fn tick(&self) -> Result<Vec<Fired>, SchedulerError> {
        let now = self.store.now()?;
        let mut fired = Vec::new();
        for row in self.store.schedules()? {
            let Some(s) = self.declared.get(&row.name) else {
                continue;
            };
            if row.paused {
                continue;
            }
            let Some(next) = row.next_run_at.filter(|n| *n <= now) else {
                continue;
            };
            // A row that does not parse (edited by hand, or written by a newer version) is
            // skipped, so that it cannot stop the other schedules.
            let (ticks, next_run_at) = match self.due(&row, next, now) {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(schedule = %row.name, %error, "stored schedule skipped");
                    continue;
                }
            };
            let jobs = ticks
                .iter()
                .map(|t| tick_job(&s.job, &row.name, &[&stamp(*t)]))
                .collect::<Result<Vec<_>, _>>()?;
            let answer = self.store.fire(&Fire {
                name: &row.name,
                revision: row.revision,
                next_run_at,
                last_tick: ticks.last().copied(),
                jobs: &jobs,
            })?;
            let Some(enqueued) = answer else { continue };
            tracing::debug!(schedule = %row.name, ticks = ticks.len(), "schedule fired");
            fired.push(Fired {
                schedule: row.name,
                ticks,
                enqueued,
                next_run_at,
            });
        }
        Ok(fired)
    }

    /// Pauses a schedule: no tick fires until [`resume`](Scheduler::resume). `false` when it
    /// was paused already.
    pub fn pause(&self, name: &str) -> Result<bool, SchedulerError> {
        self.set_paused(name, true)
    }

    /// Resumes a paused schedule; its next run is the first after now (ticks that fell due while
    /// it was paused do not run). `false` when it was not paused.
    pub fn resume(&self, name: &str) -> Result<bool, SchedulerError> {
        self.set_paused(name, false)
    }

    fn set_paused(&self, name: &str, paused: bool) -> Result<bool, SchedulerError> {
        self.update_row(name, |row| {
            if row.paused == paused {
                return Ok(None);
            }
            let mut next = row.clone();
            next.paused = paused;
            if !paused {
                let trigger =
                    Trigger::from_stored(&row.name, &row.trigger, &row.expression, &row.time_zone)?;
                let now = self.store.now()?;
                next.next_run_at = match row.next_run_at {
                    // A one-off that has not fired keeps its instant (late runs follow `missed`).
                    Some(at) if row.trigger == "once" => Some(at),
                    Some(_) => trigger.next_after(name, now, false)?,
                    None => None,
                };
            }
            Ok(Some(next))
        })
        .inspect(|changed| {
            if *changed {
                tracing::info!(schedule = %name, paused, "schedule paused state changed");
            }
        })
    }

    /// Makes the stored schedule due now: the next [`tick`](Scheduler::tick) of any scheduler
    /// that declares it enqueues one job for this instant (an instant that is not one of the
    /// schedule's own, so it is a run of its own, with a unique key of its own), and its ticks
    /// then go on as before. Needs no
    /// declaration (an operator's tool has none; [`trigger_now`](Scheduler::trigger_now) needs
    /// the declared job instead). `false` for a paused schedule (resume it first) or a one-off
    /// that already fired.
    pub fn due_now(&self, name: &str) -> Result<bool, SchedulerError> {
        let now = self.store.now()?;
        self.update_row(name, |row| {
            if row.paused || row.next_run_at.is_none() {
                return Ok(None);
            }
            let mut next = row.clone();
            next.next_run_at = Some(now);
            Ok(Some(next))
        })
    }

    /// Rewrites the stored row of `name` as `change` says (`None`: leave it, answer `false`),
    /// conditionally on the revision it read, retrying on a concurrent change.
    fn update_row(
        &self,
        name: &str,
        change: impl Fn(&ScheduleRow) -> Result<Option<ScheduleRow>, SchedulerError>,
    ) -> Result<bool, SchedulerError> {
        for _ in 0..MAX_CAS_ROUNDS {
            let Some(row) = self.find(name)? else {
                return Err(SchedulerError::NotStored {
                    name: name.to_owned(),
                });
            };
            let Some(next) = change(&row)? else {
                return Ok(false);
            };
            if self.store.update_schedule(&next, row.revision)? {
                return Ok(true);
            }
        }
        Err(SchedulerError::Contended {
            name: name.to_owned(),
        })
    }

    /// Enqueues the schedule's job now, outside its ticks (paused or not), with a unique key
    /// naming the schedule and this instant; the schedule's own ticks are unaffected.
    pub fn trigger_now(&self, name: &str) -> Result<Enqueued, SchedulerError> {
        let s = self
            .declared
            .get(name)
            .ok_or_else(|| SchedulerError::NotDeclared {
                name: name.to_owned(),
            })?;
        let now = self.store.now()?;
        let job = tick_job(&s.job, name, &["trigger", &stamp(now)])?;
        Ok(self.store.enqueue(&job)?)
    }

    /// Deletes a stored schedule (its enqueued jobs stay). If it is still declared, the next
    /// [`sync`](Scheduler::sync) stores it again: remove it from the code first. `false` when
    /// there was no row.
    pub fn remove(&self, name: &str) -> Result<bool, SchedulerError> {
        let removed = self.store.remove_schedule(name)?;
        if removed {
            tracing::info!(schedule = %name, "schedule removed");
        }
        Ok(removed)
    }

    /// Every stored schedule with up to `n` next run times (from its stored `next_run_at`).
    pub fn list(&self, n: usize) -> Result<Vec<ScheduleInfo>, SchedulerError> {
        let mut out = Vec::new();
        for row in self.store.schedules()? {
            let mut next_runs = Vec::new();
            if !row.paused
                && let Some(first) = row.next_run_at
            {
                let trigger =
                    Trigger::from_stored(&row.name, &row.trigger, &row.expression, &row.time_zone)?;
                let mut at = Some(first);
                while let Some(t) = at {
                    if next_runs.len() >= n {
                        break;
                    }
                    next_runs.push(t);
                    at = match trigger {
                        Trigger::Once { .. } => None,
                        Trigger::Cron { .. } => trigger.next_after(&row.name, t, false)?,
                    };
                }
            }
            out.push(ScheduleInfo {
                declared: self.declared.contains_key(&row.name),
                row,
                next_runs,
            });
        }
        Ok(out)
    }

    /// Runs [`tick`](Scheduler::tick) on a thread of its own every `every`, until the handle is
    /// stopped or dropped. Errors are logged and the next round tries again.
    pub fn start(self: Arc<Self>, every: Duration) -> SchedulerHandle {
        Periodic::start("scheduler tick", every, move || self.tick().map(drop))
    }
}

/// A scheduler thread from [`Scheduler::start`]: [`Periodic::stop`] stops it after its current
/// round (dropping it does too).
pub type SchedulerHandle = Periodic;

/// An instant as it appears in a tick's unique key and metadata.
fn stamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The schedule's job for one tick: due now, with a unique key of its own parts (the kind,
/// `schedule`, the name, then `tail`: the tick instant, or `trigger` and the instant), and the
/// schedule and tick in its metadata (an object's other fields are kept).
fn tick_job(template: &NewJob, name: &str, tail: &[&str]) -> Result<NewJob, KeyError> {
    let mut parts = vec![template.kind.as_str(), "schedule", name];
    parts.extend_from_slice(tail);
    let key = IdempotencyKey::from_parts(parts)?;
    let mut job = template.clone();
    job.unique_key = Some(*key.digest());
    job.run_at = RunAt::Now;
    let mut meta = match &template.metadata {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    meta.insert("schedule".into(), name.into());
    meta.insert("tick".into(), tail.join(" ").into());
    job.metadata = serde_json::Value::Object(meta);
    Ok(job)
}
