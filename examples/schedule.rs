//! Schedules on SQLite: two scheduler threads race, each tick is enqueued once.
//!
//! Run it from the repository root: `cargo run --example schedule`. Nothing to install: the
//! database is a SQLite file under `target/`. It runs for about four seconds of real time.
//!
//! 1. Declare an every-second cron schedule (a seconds field) in Europe/Berlin, a nightly 02:30
//!    report, and a one-off run two seconds from now; sync them into `safe_queue_schedules`.
//! 2. List the next run times, pause the nightly report, trigger it once by hand.
//! 3. Start two schedulers on the same database (two processes would do the same), each ticking
//!    every 100 ms, for three seconds; count the enqueued jobs per tick: one each.

use std::{collections::BTreeMap, error::Error, path::PathBuf, sync::Arc, time::Duration};

use chrono::Utc;
use safejob_core::{
    queue::{
        EnqueueOptions, JobFilter, JobQuery, NewJob, QueueJob, QueueStore, WorkContext, WorkError,
    },
    schedule::{Schedule, ScheduleStore, Scheduler},
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use serde::{Deserialize, Serialize};

/// The scheduled job: a heartbeat ping.
#[derive(Serialize, Deserialize)]
struct Ping;

impl QueueJob for Ping {
    const KIND: &'static str = "ping";
    type Error = std::convert::Infallible;
    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        Ok(())
    }
}

fn declarations() -> Result<Vec<Schedule>, Box<dyn Error>> {
    let ping = NewJob::of(&Ping, &EnqueueOptions::new())?;
    Ok(vec![
        Schedule::cron(
            "ping-every-second",
            "* * * * * *",
            "Europe/Berlin",
            ping.clone(),
        )?,
        Schedule::cron(
            "nightly-report",
            "30 2 * * *",
            "Europe/Berlin",
            ping.clone(),
        )?,
        Schedule::once("one-off", Utc::now() + chrono::Duration::seconds(2), ping)?,
    ])
}

fn scheduler(store: Arc<dyn ScheduleStore>) -> Result<Scheduler, Box<dyn Error>> {
    let mut builder = Scheduler::builder(store);
    for s in declarations()? {
        builder = builder.schedule(s);
    }
    Ok(builder.build()?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        path.display()
    ))?);
    store.migrate()?;
    let queue = Arc::new(DieselQueue::new(store));

    let a = Arc::new(scheduler(queue.clone())?);
    let b = Arc::new(scheduler(queue.clone())?);
    let report = a.sync()?;
    println!("stored: {:?}", report.inserted);
    b.sync()?;

    for info in a.list(3)? {
        let next: Vec<String> = info.next_runs.iter().map(|t| t.to_rfc3339()).collect();
        println!(
            "{:<18} {:<4} {:<29} {:<14} next: {}",
            info.row.name,
            info.row.trigger,
            info.row.expression,
            info.row.time_zone,
            next.join(", ")
        );
    }
    a.pause("nightly-report")?;
    let by_hand = a.trigger_now("nightly-report")?;
    println!(
        "nightly-report paused; triggered by hand as job {}",
        by_hand.id().0
    );

    // Two schedulers, one database: each tick is enqueued by exactly one of them.
    let (ha, hb) = (
        a.clone().start(Duration::from_millis(100)),
        b.clone().start(Duration::from_millis(100)),
    );
    std::thread::sleep(Duration::from_secs(3));
    ha.stop();
    hb.stop();

    let jobs = queue.list(&JobQuery {
        filter: JobFilter::default().kind(Ping::KIND),
        after: None,
        limit: 10_000,
    })?;
    let mut per_schedule: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for job in &jobs {
        let schedule = job.metadata["schedule"].as_str().unwrap_or("?").to_owned();
        let tick = job.metadata["tick"].as_str().unwrap_or("?").to_owned();
        *per_schedule
            .entry(schedule)
            .or_default()
            .entry(tick)
            .or_default() += 1;
    }
    for (schedule, ticks) in &per_schedule {
        let most = ticks.values().max().copied().unwrap_or(0);
        let names: Vec<&str> = ticks.keys().map(String::as_str).collect();
        println!(
            "{schedule:<18} {} tick(s), at most {most} job per tick: {}",
            ticks.len(),
            names.join(", ")
        );
        if most > 1 {
            return Err(format!("{schedule}: a tick was enqueued twice").into());
        }
    }
    Ok(())
}

/// `<dir of this binary>/../safejob-schedule-example.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-schedule-example.db"))
}
