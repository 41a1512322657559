//! The schedule conformance suite: what every [`ScheduleStore`] must show through the core's
//! [`Scheduler`] — each tick enqueued once however many schedulers race, DST days, the
//! missed-tick policies, pause and resume, a definition changed in code, trigger now, one-off
//! runs.
//!
//! Each case is a plain `fn(&dyn ScheduleHarness)` that panics naming the broken rule; [`CASES`]
//! lists them and [`run_all`] runs each on a fresh harness (the cases move the clock by months,
//! so they must not share one). Time moves only through [`QueueHarness::advance`]: no sleeps.
//!
//! ```
//! use safejob_test_kit::{MemoryQueueHarness, schedule_conformance};
//!
//! schedule_conformance::run_all(MemoryQueueHarness::new);
//! ```

use std::{
    collections::BTreeMap,
    sync::{Arc, Barrier},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use safejob_core::{
    queue::{JobFilter, JobQuery, NewJob, QueueState, QueuedJob, RunAt},
    schedule::{Fire, MissedTicks, Schedule, ScheduleStore, Scheduler, SchedulerError},
};

use crate::{MemoryQueueHarness, QueueHarness};

/// A [`QueueHarness`] whose store also keeps schedules.
pub trait ScheduleHarness: QueueHarness {
    /// The store under test, as a schedule store (the same store as [`QueueHarness::store`]).
    fn schedules(&self) -> Arc<dyn ScheduleStore>;
}

impl ScheduleHarness for MemoryQueueHarness {
    fn schedules(&self) -> Arc<dyn ScheduleStore> {
        self.memory_queue().clone()
    }
}

/// One case of the suite.
pub type Case = fn(&dyn ScheduleHarness);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    (
        "racing_schedulers_enqueue_each_tick_once",
        racing_schedulers_enqueue_each_tick_once,
    ),
    (
        "a_stale_fire_enqueues_nothing",
        a_stale_fire_enqueues_nothing,
    ),
    (
        "dst_days_run_a_daily_job_once",
        dst_days_run_a_daily_job_once,
    ),
    (
        "missed_ticks_follow_the_policy",
        missed_ticks_follow_the_policy,
    ),
    ("pause_and_resume", pause_and_resume),
    (
        "changed_expression_is_stored_and_undeclared_reported",
        changed_expression_is_stored_and_undeclared_reported,
    ),
    ("trigger_now_and_one_off", trigger_now_and_one_off),
    (
        "due_now_fires_at_the_next_tick_without_a_declaration",
        due_now_fires_at_the_next_tick_without_a_declaration,
    ),
];

/// Runs every case, each on a fresh harness from `make`.
pub fn run_all<H: ScheduleHarness>(make: impl Fn() -> H) {
    for (name, case) in CASES {
        tracing::info!(case = name, "schedule conformance case");
        case(&make());
    }
}

/// The job template of the cases' schedules.
pub fn template(kind: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        queue: "schedules".into(),
        payload: serde_json::json!({}),
        metadata: serde_json::Value::Null,
        priority: 0,
        run_at: RunAt::Now,
        max_attempts: 3,
        idempotent: true,
        unique_key: None,
        guard: None,
    }
}

fn jobs_of(h: &dyn ScheduleHarness, kind: &str) -> Vec<QueuedJob> {
    h.store()
        .list(&JobQuery {
            filter: JobFilter::default().kind(kind),
            after: None,
            limit: 100_000,
        })
        .expect("list jobs")
}

/// The tick instant a job was enqueued for (its metadata).
fn tick_of(job: &QueuedJob) -> DateTime<Utc> {
    let text = job.metadata["tick"].as_str().expect("tick metadata");
    DateTime::parse_from_rfc3339(text)
        .expect("tick is RFC 3339")
        .with_timezone(&Utc)
}

/// Finishes every live job of `kind` (cancels it), so that no unique key is held any more: a
/// second enqueue of a tick would then insert.
fn finish_all(h: &dyn ScheduleHarness, kind: &str) {
    for job in jobs_of(h, kind) {
        if job.state.is_live() {
            h.store().cancel(job.id).expect("cancel");
        }
    }
}

/// Moves the store clock to `at` (which must not be in the store's past).
fn advance_to(h: &dyn ScheduleHarness, at: DateTime<Utc>) {
    let now = h.store().now().expect("now");
    assert!(at >= now, "advance_to {at}: the clock is at {now} already");
    h.advance((at - now).to_std().expect("forward"));
}

/// The next whole hour after the store clock, plus `plus`.
fn next_hour(h: &dyn ScheduleHarness, plus: Duration) -> DateTime<Utc> {
    let now = h.store().now().expect("now");
    let hour = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .expect("round")
        + chrono::Duration::hours(1);
    hour + chrono::Duration::from_std(plus).expect("plus")
}

fn scheduler(h: &dyn ScheduleHarness, schedules: Vec<Schedule>) -> Scheduler {
    let mut b = Scheduler::builder(h.schedules());
    for s in schedules {
        b = b.schedule(s);
    }
    let s = b.build().expect("scheduler");
    s.sync().expect("sync");
    s
}

/// Two schedulers on one store, on two threads, tick together at every minute for 20 minutes;
/// between rounds every enqueued job is finished, so the unique key alone would let a late
/// scheduler insert the same tick again. Each tick is enqueued once.
///
/// Catches: a fire that does not check the row's revision (`revision = ?` dropped from the SQL
/// stores' `FIRE`): both schedulers then fire each minute, on SQLite, PostgreSQL and MariaDB.
/// On the memory store the two threads rarely interleave between read and fire, so there
/// [`a_stale_fire_enqueues_nothing`] is the deterministic check of the same rule.
pub fn racing_schedulers_enqueue_each_tick_once(h: &dyn ScheduleHarness) {
    let kind = "sched-race";
    let make = || Schedule::cron("race", "* * * * *", "UTC", template(kind)).expect("schedule");
    advance_to(h, next_hour(h, Duration::from_secs(1)));
    let a = Arc::new(scheduler(h, vec![make()]));
    let b = Arc::new(scheduler(h, vec![make()]));
    let rounds = 20;
    for _ in 0..rounds {
        h.advance(Duration::from_secs(60));
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|s| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    s.tick().expect("tick")
                })
            })
            .collect();
        let fired: usize = threads
            .into_iter()
            .map(|t| t.join().expect("thread").len())
            .sum();
        assert_eq!(
            fired, 1,
            "racing schedulers: one of the two fires each minute"
        );
        finish_all(h, kind);
    }
    let jobs = jobs_of(h, kind);
    let mut per_tick: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for job in &jobs {
        *per_tick.entry(tick_of(job)).or_default() += 1;
    }
    assert_eq!(
        jobs.len(),
        rounds,
        "racing schedulers: one job per tick: {per_tick:?}"
    );
    assert!(
        per_tick.values().all(|n| *n == 1),
        "a tick enqueued twice: {per_tick:?}"
    );
}

/// A fire with a revision the row no longer has enqueues nothing, even when the first fire's
/// job has finished already (its unique key no longer held).
///
/// Catches: the revision check dropped from `fire` (the second fire then inserts a second job).
pub fn a_stale_fire_enqueues_nothing(h: &dyn ScheduleHarness) {
    let kind = "sched-stale";
    let s = scheduler(
        h,
        vec![Schedule::cron("stale", "* * * * *", "UTC", template(kind)).expect("schedule")],
    );
    h.advance(Duration::from_secs(61));
    let store = h.schedules();
    let row = store
        .schedules()
        .expect("rows")
        .into_iter()
        .find(|r| r.name == "stale")
        .expect("row");
    let mut job = template(kind);
    job.unique_key = Some(
        *safejob_core::IdempotencyKey::from_parts([kind, "tick"])
            .expect("key")
            .digest(),
    );
    let fire = Fire {
        name: "stale",
        revision: row.revision,
        next_run_at: row.next_run_at,
        last_tick: row.next_run_at,
        jobs: std::slice::from_ref(&job),
    };
    let first = store.fire(&fire).expect("first fire");
    assert!(
        first.is_some_and(|e| e.len() == 1 && !e[0].is_duplicate()),
        "the first fire enqueues"
    );
    finish_all(h, kind);
    assert_eq!(
        store.fire(&fire).expect("second fire"),
        None,
        "a stale fire must not apply"
    );
    assert_eq!(jobs_of(h, kind).len(), 1, "a stale fire enqueued a job");
    drop(s);
}

/// The first day on or after `from` (a local date in `tz`) whose UTC offset at its end differs
/// from its start: `spring` wants the offset to grow (clocks forward), else to shrink.
fn dst_day(tz: Tz, from: NaiveDate, spring: bool) -> NaiveDate {
    let offset = |d: NaiveDate, h: u32| {
        let at = d.and_hms_opt(h, 0, 0).expect("time");
        tz.from_local_datetime(&at)
            .earliest()
            .expect("local")
            .offset()
            .fix()
            .local_minus_utc()
    };
    let mut d = from;
    for _ in 0..800 {
        let (start, end) = (offset(d, 0), offset(d, 23));
        if (spring && end > start) || (!spring && end < start) {
            return d;
        }
        d = d.succ_opt().expect("date");
    }
    panic!("no DST change in {tz} after {from}");
}

/// On the spring-forward and fall-back days of Europe/Berlin and America/New_York, a daily
/// 02:30 job (a wall-clock time skipped on one day and repeated on the other) runs exactly once
/// per local day, and an hourly job runs once per real hour (23 and 25 times).
///
/// Catches: the expression read in UTC instead of its time zone (the 02:30 ticks land on other
/// local hours). The gap and overlap rules themselves are croner's; this case pins them.
pub fn dst_days_run_a_daily_job_once(h: &dyn ScheduleHarness) {
    let today = h.store().now().expect("now").date_naive();
    let mut days = Vec::new();
    for (zone, tz) in [
        ("Europe/Berlin", chrono_tz::Europe::Berlin),
        ("America/New_York", chrono_tz::America::New_York),
    ] {
        days.push((
            dst_day(tz, today + chrono::Days::new(2), true),
            zone,
            tz,
            true,
        ));
        days.push((
            dst_day(tz, today + chrono::Days::new(2), false),
            zone,
            tz,
            false,
        ));
    }
    days.sort_by_key(|d| d.0);
    for (i, (day, zone, tz, spring)) in days.into_iter().enumerate() {
        let start = tz
            .from_local_datetime(
                &day.pred_opt()
                    .expect("day before")
                    .and_hms_opt(0, 0, 1)
                    .expect("t"),
            )
            .earliest()
            .expect("local")
            .with_timezone(&Utc);
        advance_to(h, start);
        let daily_kind = format!("sched-dst-daily-{i}");
        let hourly_kind = format!("sched-dst-hourly-{i}");
        let s = scheduler(
            h,
            vec![
                Schedule::cron(
                    &format!("dst-daily-{i}"),
                    "30 2 * * *",
                    zone,
                    template(&daily_kind),
                )
                .expect("daily"),
                Schedule::cron(
                    &format!("dst-hourly-{i}"),
                    "0 * * * *",
                    zone,
                    template(&hourly_kind),
                )
                .expect("hourly"),
            ],
        );
        // Three local days, one tick every 10 minutes.
        for _ in 0..(3 * 24 * 6) {
            h.advance(Duration::from_secs(600));
            s.tick().expect("tick");
        }
        let mut daily: BTreeMap<NaiveDate, usize> = BTreeMap::new();
        for job in jobs_of(h, &daily_kind) {
            let local = tick_of(&job).with_timezone(&tz);
            *daily.entry(local.date_naive()).or_default() += 1;
            // 02:30, except on the spring-forward day, where 02:30 does not exist: the first
            // instant after the gap, 03:00. On the fall-back day 02:30 exists twice: the earlier.
            let wanted = if spring && local.date_naive() == day {
                (3, 0)
            } else {
                (2, 30)
            };
            assert_eq!(
                (local.hour(), local.minute()),
                wanted,
                "{zone} {day}: a daily 02:30 tick ran at local {local}"
            );
            if !spring && local.date_naive() == day {
                let earlier = tz
                    .from_local_datetime(&day.and_hms_opt(2, 30, 0).expect("t"))
                    .earliest()
                    .expect("02:30 exists");
                assert_eq!(
                    local, earlier,
                    "{zone} {day}: the repeated 02:30 runs at its earlier instant"
                );
            }
        }
        let expected: BTreeMap<NaiveDate, usize> =
            [day.pred_opt().expect("d"), day, day.succ_opt().expect("d")]
                .into_iter()
                .map(|d| (d, 1))
                .collect();
        assert_eq!(
            daily,
            expected,
            "{zone} {} day {day}: the 02:30 job runs once a day",
            if spring {
                "spring-forward"
            } else {
                "fall-back"
            }
        );
        let on_day = jobs_of(h, &hourly_kind)
            .iter()
            .filter(|j| tick_of(j).with_timezone(&tz).date_naive() == day)
            .count();
        assert_eq!(
            on_day,
            if spring { 23 } else { 25 },
            "{zone} {day}: hourly ticks on the DST day"
        );
    }
}

/// After five hours of downtime and 30 minutes into the sixth, an hourly schedule under each
/// policy: `latest` enqueues the latest missed tick once, `all:3` the three latest in order,
/// `skip` none (30 minutes is past the 60 s grace); at the next hour each runs its tick.
///
/// Catches: `RunAll` enqueueing only one tick or more than `max`; `Skip` running a late tick
/// (the grace filter removed); `RunLatest` running every missed tick.
pub fn missed_ticks_follow_the_policy(h: &dyn ScheduleHarness) {
    advance_to(h, next_hour(h, Duration::from_secs(5)));
    let s = scheduler(
        h,
        [
            ("missed-latest", MissedTicks::RunLatest),
            ("missed-all", MissedTicks::RunAll { max: 3 }),
            ("missed-skip", MissedTicks::Skip),
        ]
        .into_iter()
        .map(|(name, policy)| {
            Schedule::cron(name, "0 * * * *", "UTC", template(&format!("sched-{name}")))
                .and_then(|s| s.missed(policy))
                .expect("schedule")
        })
        .collect(),
    );
    let start = h.store().now().expect("now");
    h.advance(Duration::from_secs(5 * 3600 + 1800));
    s.tick().expect("tick");
    let hour = |n: i64| {
        (start - chrono::Duration::seconds(5))
            .with_nanosecond(0)
            .expect("ns")
            + chrono::Duration::hours(n)
    };
    let ticks = |name: &str| -> Vec<DateTime<Utc>> {
        let mut t: Vec<_> = jobs_of(h, &format!("sched-{name}"))
            .iter()
            .map(tick_of)
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        ticks("missed-latest"),
        [hour(5)],
        "latest: the latest missed tick, once"
    );
    assert_eq!(
        ticks("missed-all"),
        [hour(3), hour(4), hour(5)],
        "all:3: the three latest missed ticks, oldest first"
    );
    assert_eq!(
        ticks("missed-skip"),
        Vec::<DateTime<Utc>>::new(),
        "skip: no late tick runs"
    );
    h.advance(Duration::from_secs(1800));
    s.tick().expect("tick");
    assert_eq!(
        ticks("missed-latest"),
        [hour(5), hour(6)],
        "latest: on time"
    );
    assert_eq!(ticks("missed-all").len(), 4, "all: on time");
    assert_eq!(
        ticks("missed-skip"),
        [hour(6)],
        "skip: a tick within the grace runs"
    );
}

/// A paused schedule fires nothing; resumed, it fires from the next run after now on (the
/// ticks of the pause do not run).
///
/// Catches: a store whose fire ignores `paused` (the `paused = 0` condition of the SQL stores'
/// `FIRE`, the memory store's `!s.paused`), and a scheduler that ticks paused rows.
pub fn pause_and_resume(h: &dyn ScheduleHarness) {
    let kind = "sched-pause";
    let s = scheduler(
        h,
        vec![Schedule::cron("pause", "* * * * *", "UTC", template(kind)).expect("schedule")],
    );
    assert!(s.pause("pause").expect("pause"), "pause applies");
    assert!(
        !s.pause("pause").expect("pause again"),
        "pausing twice is a no-op"
    );
    h.advance(Duration::from_secs(300));
    assert!(
        s.tick().expect("tick").is_empty(),
        "a paused schedule fires nothing"
    );
    // The store refuses to fire a paused row, even for a scheduler that read it unpaused.
    let row = h.schedules().schedules().expect("rows").remove(0);
    let fire = Fire {
        name: "pause",
        revision: row.revision,
        next_run_at: row.next_run_at,
        last_tick: row.next_run_at,
        jobs: &[],
    };
    assert_eq!(
        h.schedules().fire(&fire).expect("fire"),
        None,
        "a paused row does not fire"
    );
    assert!(
        s.list(3).expect("list")[0].next_runs.is_empty(),
        "a paused schedule lists no next runs"
    );
    assert!(s.resume("pause").expect("resume"), "resume applies");
    assert!(
        s.tick().expect("tick").is_empty(),
        "resume skips the paused ticks"
    );
    h.advance(Duration::from_secs(60));
    let fired = s.tick().expect("tick");
    assert_eq!(fired.len(), 1, "resumed: the next tick fires");
    assert_eq!(jobs_of(h, kind).len(), 1, "one job after resume");
    assert!(matches!(
        s.resume("nope"),
        Err(SchedulerError::NotStored { .. })
    ));
}

/// Code that changes an expression updates the stored row on sync (next run recomputed), and a
/// stored schedule that the code no longer declares is reported, left in place, and not fired.
///
/// Catches: sync comparing only the name (the old expression stays; the 15-minute tick never
/// fires), and sync deleting undeclared rows.
pub fn changed_expression_is_stored_and_undeclared_reported(h: &dyn ScheduleHarness) {
    advance_to(h, next_hour(h, Duration::from_secs(1)));
    let kind = "sched-change";
    let old = scheduler(
        h,
        vec![Schedule::cron("change", "0 * * * *", "UTC", template(kind)).expect("schedule")],
    );
    let new = Scheduler::builder(h.schedules())
        .schedule(
            Schedule::cron("change", "*/15 * * * *", "UTC", template(kind)).expect("schedule"),
        )
        .build()
        .expect("build");
    let report = new.sync().expect("sync");
    assert_eq!(
        report.updated,
        ["change"],
        "the changed expression is reported as updated"
    );
    let listed = new.list(4).expect("list");
    assert_eq!(
        listed[0].row.expression, "*/15 * * * *",
        "the stored expression follows the code"
    );
    assert_eq!(listed[0].next_runs.len(), 4, "list shows the next 4 runs");
    let gaps: Vec<_> = listed[0]
        .next_runs
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(
        gaps.iter().all(|g| *g == chrono::Duration::minutes(15)),
        "next runs 15 minutes apart: {gaps:?}"
    );
    h.advance(Duration::from_secs(15 * 60));
    assert_eq!(
        new.tick().expect("tick").len(),
        1,
        "the new expression fires at :15"
    );
    assert_eq!(
        new.sync().expect("sync again").updated,
        Vec::<String>::new(),
        "an unchanged definition is not rewritten"
    );
    let other = Scheduler::builder(h.schedules()).build().expect("build");
    let report = other.sync().expect("sync");
    assert_eq!(
        report.undeclared,
        ["change"],
        "an undeclared stored schedule is reported"
    );
    assert_eq!(
        h.schedules().schedules().expect("rows").len(),
        1,
        "and not deleted"
    );
    h.advance(Duration::from_secs(15 * 60));
    assert!(
        other.tick().expect("tick").is_empty(),
        "an undeclared schedule does not fire"
    );
    drop(old);
}

/// Trigger now enqueues one job outside the ticks without moving the schedule; a one-off run
/// fires once at its instant, then never again; remove deletes the row.
///
/// Catches: a one-off whose next run is not cleared after it fires (it would fire again).
pub fn trigger_now_and_one_off(h: &dyn ScheduleHarness) {
    let kind = "sched-once";
    let now = h.store().now().expect("now");
    let at = now + chrono::Duration::minutes(10);
    let s = scheduler(
        h,
        vec![
            Schedule::once("once", at, template(kind)).expect("once"),
            Schedule::cron("daily", "@daily", "UTC", template("sched-daily")).expect("daily"),
        ],
    );
    let before = s.list(1).expect("list");
    let e = s.trigger_now("daily").expect("trigger now");
    assert!(!e.is_duplicate(), "trigger now enqueues");
    assert_eq!(
        s.list(1).expect("list"),
        before,
        "trigger now leaves the schedules as they were"
    );
    assert!(matches!(
        s.trigger_now("nope"),
        Err(SchedulerError::NotDeclared { .. })
    ));
    assert!(
        s.tick().expect("tick").is_empty(),
        "nothing due before the instant"
    );
    h.advance(Duration::from_secs(11 * 60));
    let fired = s.tick().expect("tick");
    assert_eq!(fired.len(), 1, "the one-off fires");
    assert_eq!(fired[0].next_run_at, None, "a one-off has no next run");
    h.advance(Duration::from_secs(3600));
    assert!(s.tick().expect("tick").is_empty(), "a one-off fires once");
    let jobs = jobs_of(h, kind);
    assert_eq!(jobs.len(), 1, "one one-off job");
    assert_eq!(jobs[0].state, QueueState::Pending);
    assert!(
        (tick_of(&jobs[0]) - at).num_milliseconds().abs() < 1,
        "tick is the instant"
    );
    assert!(s.remove("once").expect("remove"));
    assert!(!s.remove("once").expect("remove again"));
    assert_eq!(
        s.list(1).expect("list").len(),
        1,
        "only the daily schedule is left"
    );
}

/// An operator's "run it now" without the job's declaration (`Scheduler::due_now`, what the CLI
/// does): the stored row becomes due, the next tick of a scheduler that declares it enqueues one
/// job at that instant, and the schedule's own ticks go on; a paused schedule is refused.
pub fn due_now_fires_at_the_next_tick_without_a_declaration(h: &dyn ScheduleHarness) {
    let kind = "sched-due-now";
    let worker = scheduler(
        h,
        vec![Schedule::cron("hourly", "@hourly", "UTC", template(kind)).expect("hourly")],
    );
    worker.sync().expect("sync");
    // The operator's scheduler declares nothing.
    let operator = Scheduler::builder(h.schedules()).build().expect("operator");
    assert!(
        worker.tick().expect("tick").is_empty(),
        "nothing due before the hour"
    );
    assert!(operator.due_now("hourly").expect("due now"), "made due");
    // Catches: a requested run that the tick then ignores because its instant is not one of the
    // cron's own (it fired with no job on the three SQL backends, whose clocks are not on the
    // hour, before `due` learnt to run it).
    let fired = worker.tick().expect("tick");
    assert_eq!(fired.len(), 1, "the next tick fires it");
    assert_eq!(jobs_of(h, kind).len(), 1, "one job");
    let next = fired[0].next_run_at.expect("a next run");
    assert_eq!(next.minute(), 0, "the hourly ticks go on: next at {next}");
    assert!(worker.tick().expect("tick").is_empty(), "fired once");
    assert!(operator.pause("hourly").expect("pause"));
    assert!(
        !operator.due_now("hourly").expect("due now"),
        "a paused schedule is not made due"
    );
    assert!(matches!(
        operator.due_now("nope"),
        Err(SchedulerError::NotStored { .. })
    ));
}
