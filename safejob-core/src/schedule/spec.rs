//! A schedule as declared in code: its name, its trigger (cron in a time zone, or one instant),
//! its policy for missed ticks and the job each tick enqueues.

use std::{fmt, str::FromStr};

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};

use crate::queue::NewJob;

/// The most missed ticks [`MissedTicks::RunAll`] may run at once.
pub const MAX_MISSED_TICKS: u32 = 1_000;

/// The longest schedule name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// A schedule's declaration was refused; each variant names the field at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// `name` is empty, longer than [`MAX_NAME_LEN`] or has control characters.
    #[error(
        "schedule field `name`: {name:?} is not a valid schedule name (1 to {MAX_NAME_LEN} bytes, no control characters)"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// `expression` is not a cron expression.
    #[error(
        "schedule {schedule:?} field `expression`: {expression:?} is not a valid cron expression: {source}"
    )]
    InvalidExpression {
        /// The schedule.
        schedule: String,
        /// The expression given.
        expression: String,
        /// What the cron parser said.
        #[source]
        source: croner::errors::CronError,
    },
    /// `expression` parses but never fires (for example `0 0 30 2 *`, February 30th).
    #[error(
        "schedule {schedule:?} field `expression`: {expression:?} has no run time after {after}"
    )]
    NeverFires {
        /// The schedule.
        schedule: String,
        /// The expression given.
        expression: String,
        /// The instant searched from.
        after: DateTime<Utc>,
    },
    /// `time_zone` is not an IANA time zone name.
    #[error("schedule {schedule:?} field `time_zone`: {time_zone:?} is not an IANA time zone name")]
    UnknownTimeZone {
        /// The schedule.
        schedule: String,
        /// The name given.
        time_zone: String,
    },
    /// `at` of a one-off run is not an RFC 3339 instant (read back from a stored row).
    #[error("schedule {schedule:?} field `at`: {at:?} is not an RFC 3339 instant")]
    InvalidInstant {
        /// The schedule.
        schedule: String,
        /// The text given.
        at: String,
    },
    /// `missed`: `RunAll { max }` with `max` of 0 or above [`MAX_MISSED_TICKS`], or stored text
    /// that names no policy.
    #[error(
        "schedule {schedule:?} field `missed`: {policy:?} is not a valid missed-tick policy (latest, skip, or all:N with N in 1..={MAX_MISSED_TICKS})"
    )]
    InvalidMissedPolicy {
        /// The schedule.
        schedule: String,
        /// The policy, as text.
        policy: String,
    },
    /// `trigger` of a stored row is neither `cron` nor `once`.
    #[error("schedule {schedule:?} field `trigger`: {trigger:?} is neither \"cron\" nor \"once\"")]
    UnknownTrigger {
        /// The schedule.
        schedule: String,
        /// The stored text.
        trigger: String,
    },
}

/// What to do with ticks that fell due while no scheduler ran (or while
/// [`Scheduler::tick`](super::Scheduler::tick) was not called). Defaults to
/// [`RunLatest`](MissedTicks::RunLatest). The exact semantics are in `docs/schedules.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissedTicks {
    /// Of the ticks due since the last fire, only the latest is enqueued, however late.
    #[default]
    RunLatest,
    /// Every due tick is enqueued, oldest first, but at most the latest `max` of them (older ones
    /// are skipped). `max` is 1 to [`MAX_MISSED_TICKS`].
    RunAll {
        /// The most ticks enqueued by one fire.
        max: u32,
    },
    /// Only the latest due tick, and only if it is at most the scheduler's
    /// [`grace`](super::SchedulerBuilder::grace) late; every other due tick is skipped.
    Skip,
}

impl fmt::Display for MissedTicks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RunLatest => f.write_str("latest"),
            Self::RunAll { max } => write!(f, "all:{max}"),
            Self::Skip => f.write_str("skip"),
        }
    }
}

impl FromStr for MissedTicks {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "latest" => Ok(Self::RunLatest),
            "skip" => Ok(Self::Skip),
            other => {
                let max: u32 = other
                    .strip_prefix("all:")
                    .and_then(|n| n.parse().ok())
                    .ok_or(())?;
                if (1..=MAX_MISSED_TICKS).contains(&max) {
                    Ok(Self::RunAll { max })
                } else {
                    Err(())
                }
            }
        }
    }
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A cron expression read in an IANA time zone.
    Cron {
        /// The expression as written (5 fields, an optional leading seconds field, or an
        /// `@hourly`-style alias).
        expression: String,
        /// The time zone the expression's wall-clock times are in.
        time_zone: Tz,
        /// The parsed expression.
        cron: Box<Cron>,
    },
    /// Once, at an instant.
    Once {
        /// The instant.
        at: DateTime<Utc>,
    },
}

impl Trigger {
    /// Parses a cron trigger: `expression` with 5 fields (minute hour day-of-month month
    /// day-of-week), or 6 with a leading seconds field, or an alias (`@yearly`, `@monthly`,
    /// `@weekly`, `@daily`, `@hourly`), in the IANA time zone `time_zone`.
    pub fn cron(schedule: &str, expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|source| ScheduleError::InvalidExpression {
                schedule: schedule.to_owned(),
                expression: expression.to_owned(),
                source,
            })?;
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ScheduleError::UnknownTimeZone {
                schedule: schedule.to_owned(),
                time_zone: time_zone.to_owned(),
            })?;
        Ok(Self::Cron {
            expression: expression.to_owned(),
            time_zone: tz,
            cron: Box::new(cron),
        })
    }

    /// Rebuilds a trigger from a stored row's `trigger`, `expression` and `time_zone` columns.
    pub fn from_stored(
        schedule: &str,
        trigger: &str,
        expression: &str,
        time_zone: &str,
    ) -> Result<Self, ScheduleError> {
        match trigger {
            "cron" => Self::cron(schedule, expression, time_zone),
            "once" => DateTime::parse_from_rfc3339(expression)
                .map(|at| Self::Once {
                    at: at.with_timezone(&Utc),
                })
                .map_err(|_| ScheduleError::InvalidInstant {
                    schedule: schedule.to_owned(),
                    at: expression.to_owned(),
                }),
            other => Err(ScheduleError::UnknownTrigger {
                schedule: schedule.to_owned(),
                trigger: other.to_owned(),
            }),
        }
    }

    /// The stored `trigger` column: `cron` or `once`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Cron { .. } => "cron",
            Self::Once { .. } => "once",
        }
    }

    /// The stored `expression` column: the cron text, or the one-off instant in RFC 3339.
    pub fn expression(&self) -> String {
        match self {
            Self::Cron { expression, .. } => expression.clone(),
            Self::Once { at } => at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }

    /// The stored `time_zone` column (`UTC` for a one-off run).
    pub fn time_zone(&self) -> &str {
        match self {
            Self::Cron { time_zone, .. } => time_zone.name(),
            Self::Once { .. } => "UTC",
        }
    }

    /// The first run time strictly after `after` (`inclusive`: at or after), if any. DST: a
    /// wall-clock time skipped by a spring-forward runs at the first instant after the gap; one
    /// repeated by a fall-back runs once, at its earlier instant (croner's rules for fixed-time
    /// fields; an expression with a wildcard or stepped hour runs at each real instant).
    pub fn next_after(
        &self,
        schedule: &str,
        after: DateTime<Utc>,
        inclusive: bool,
    ) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        match self {
            Self::Once { at } => Ok((*at > after || (inclusive && *at == after)).then_some(*at)),
            Self::Cron {
                expression,
                time_zone,
                cron,
            } => cron
                .find_next_occurrence(&after.with_timezone(time_zone), inclusive)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| ScheduleError::NeverFires {
                    schedule: schedule.to_owned(),
                    expression: expression.clone(),
                    after,
                }),
        }
    }

    /// Up to `limit` run times in `(from, to]`, latest first (searched backwards from `to`, so a
    /// long downtime costs `limit` steps, not one per missed tick).
    pub fn latest_in(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        match self {
            Self::Once { at } => {
                if *at > from && *at <= to && limit > 0 {
                    out.push(*at);
                }
            }
            Self::Cron {
                time_zone, cron, ..
            } => {
                let mut cursor = to.with_timezone(time_zone);
                let mut inclusive = true;
                while out.len() < limit {
                    let Ok(t) = cron.find_previous_occurrence(&cursor, inclusive) else {
                        // No earlier run time at all: nothing more in the window.
                        break;
                    };
                    let utc = t.with_timezone(&Utc);
                    if utc <= from {
                        break;
                    }
                    out.push(utc);
                    cursor = t;
                    inclusive = false;
                }
            }
        }
        out
    }
}

/// A named schedule: a trigger, a missed-tick policy and the job each tick enqueues.
///
/// ```
/// use safejob_core::{queue::{NewJob, RunAt}, schedule::{MissedTicks, Schedule}};
///
/// let job = NewJob {
///     kind: "report".into(),
///     queue: "default".into(),
///     payload: serde_json::json!({}),
///     metadata: serde_json::Value::Null,
///     priority: 0,
///     run_at: RunAt::Now,
///     max_attempts: 3,
///     idempotent: true,
///     unique_key: None,
///     guard: None,
/// };
/// let nightly = Schedule::cron("nightly-report", "30 2 * * *", "Europe/Berlin", job.clone())?
///     .missed(MissedTicks::RunAll { max: 3 })?;
/// assert_eq!(nightly.name(), "nightly-report");
/// // Bad input is a typed error naming the field.
/// let err = Schedule::cron("x", "61 * * * *", "UTC", job.clone()).unwrap_err();
/// assert!(err.to_string().contains("field `expression`"));
/// let err = Schedule::cron("x", "@hourly", "Mars/Olympus", job).unwrap_err();
/// assert!(err.to_string().contains("field `time_zone`"));
/// # Ok::<(), safejob_core::schedule::ScheduleError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: String,
    pub(crate) trigger: Trigger,
    pub(crate) missed: MissedTicks,
    pub(crate) job: NewJob,
}

impl Schedule {
    /// A cron schedule; see [`Trigger::cron`] for the expression. `job` is the template each
    /// tick enqueues (its `unique_key` and `run_at` are replaced per tick; build it with
    /// [`NewJob::of`]).
    pub fn cron(
        name: &str,
        expression: &str,
        time_zone: &str,
        job: NewJob,
    ) -> Result<Self, ScheduleError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            trigger: Trigger::cron(name, expression, time_zone)?,
            missed: MissedTicks::default(),
            job,
        })
    }

    /// A one-off run at `at`, truncated to the millisecond (the precision every backend stores).
    pub fn once(name: &str, at: DateTime<Utc>, job: NewJob) -> Result<Self, ScheduleError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            trigger: Trigger::Once {
                at: at.trunc_subsecs(3),
            },
            missed: MissedTicks::default(),
            job,
        })
    }

    /// The missed-tick policy (default [`MissedTicks::RunLatest`]).
    pub fn missed(mut self, policy: MissedTicks) -> Result<Self, ScheduleError> {
        if let MissedTicks::RunAll { max } = policy
            && !(1..=MAX_MISSED_TICKS).contains(&max)
        {
            return Err(ScheduleError::InvalidMissedPolicy {
                schedule: self.name,
                policy: policy.to_string(),
            });
        }
        self.missed = policy;
        Ok(self)
    }

    /// The schedule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When it fires.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// Its missed-tick policy.
    pub fn missed_policy(&self) -> MissedTicks {
        self.missed
    }
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ScheduleError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn bad_input_is_a_typed_error_naming_the_field() {
        let err = Trigger::cron("s", "not cron", "UTC").unwrap_err();
        assert!(
            matches!(err, ScheduleError::InvalidExpression { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("field `expression`"));
        let err = Trigger::cron("s", "*/5 * * * *", "Europe/Nowhere").unwrap_err();
        assert!(
            matches!(err, ScheduleError::UnknownTimeZone { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("field `time_zone`"));
        let err = Trigger::from_stored("s", "weekly", "x", "UTC").unwrap_err();
        assert!(matches!(err, ScheduleError::UnknownTrigger { .. }), "{err}");
        let err = Trigger::from_stored("s", "once", "yesterday", "UTC").unwrap_err();
        assert!(matches!(err, ScheduleError::InvalidInstant { .. }), "{err}");
    }

    #[test]
    fn missed_policy_round_trips_and_refuses_bounds() {
        for p in [
            MissedTicks::RunLatest,
            MissedTicks::Skip,
            MissedTicks::RunAll { max: 7 },
        ] {
            assert_eq!(p.to_string().parse::<MissedTicks>(), Ok(p));
        }
        assert!("all:0".parse::<MissedTicks>().is_err());
        assert!("all:1001".parse::<MissedTicks>().is_err());
        assert!("sometimes".parse::<MissedTicks>().is_err());
    }

    #[test]
    fn seconds_field_and_aliases_parse() {
        let at = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let every_10s = Trigger::cron("s", "*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_10s.next_after("s", at, false).unwrap(),
            Some(at + chrono::Duration::seconds(10))
        );
        let hourly = Trigger::cron("s", "@hourly", "Asia/Kolkata").unwrap();
        // Kolkata is UTC+05:30: its whole hours are at :30 UTC.
        assert_eq!(
            hourly.next_after("s", at, false).unwrap(),
            Some(at + chrono::Duration::minutes(30))
        );
    }

    #[test]
    fn latest_in_searches_backwards_and_stops_at_the_window() {
        let t = Trigger::cron("s", "0 * * * *", "UTC").unwrap();
        let to = Utc.with_ymd_and_hms(2027, 1, 1, 10, 30, 0).unwrap();
        let from = Utc.with_ymd_and_hms(2027, 1, 1, 7, 0, 0).unwrap();
        let hour = |h| Utc.with_ymd_and_hms(2027, 1, 1, h, 0, 0).unwrap();
        assert_eq!(t.latest_in(from, to, 10), [hour(10), hour(9), hour(8)]);
        assert_eq!(t.latest_in(from, to, 2), [hour(10), hour(9)]);
    }

    #[test]
    fn names_are_checked() {
        let job = NewJob {
            kind: "k".into(),
            queue: "q".into(),
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
            priority: 0,
            run_at: crate::queue::RunAt::Now,
            max_attempts: 1,
            idempotent: true,
            unique_key: None,
            guard: None,
        };
        assert!(matches!(
            Schedule::cron("", "@daily", "UTC", job.clone()),
            Err(ScheduleError::InvalidName { .. })
        ));
        assert!(matches!(
            Schedule::once(&"x".repeat(MAX_NAME_LEN + 1), Utc::now(), job.clone()),
            Err(ScheduleError::InvalidName { .. })
        ));
        let s = Schedule::cron("ok", "@daily", "UTC", job).unwrap();
        assert!(matches!(
            s.missed(MissedTicks::RunAll { max: 0 }),
            Err(ScheduleError::InvalidMissedPolicy { .. })
        ));
    }
}
