//! `safejob-bench latency`: how long a job waits, on an idle queue, between the call that
//! enqueues it and the moment its work starts.
//!
//! ```text
//! cargo run --release -p safejob-bench --all-features -- latency \
//!     --url postgres://root@127.0.0.1:5432/bench_me --system safejob-notify --system safejob-poll \
//!     --system river --system apalis
//! ```
//!
//! One job at a time: the bench sleeps `--gap-ms` plus a random `0..--jitter-ms` (so the queue
//! is idle and the enqueue falls at a random point of any poll cycle), reads the clock, enqueues
//! one job, and waits until that job's work reports that it started; the sample is the time in
//! between, both instants read in this process. One worker (concurrency 1) runs the jobs. The
//! first `--warmup` samples are not counted (connections, prepared statements, the listener).
//! Each system prints one JSON line: p50, p90, p99 and max in milliseconds (nearest rank).
//!
//! * `safejob-notify` — our queue as shipped: on PostgreSQL the pool is woken by the store's
//!   `LISTEN` thread when the enqueue's `pg_notify` arrives (its poll interval, 1 s by default,
//!   is only the fallback); on SQLite and MySQL by the in-process wake-up of the same queue.
//! * `safejob-poll` — our queue with its wake-ups cut off (a store wrapper that ignores
//!   `subscribe`), so the pool finds jobs only at its poll interval, `--poll-ms`.
//! * `river`, `apalis` (crate feature `peers`, PostgreSQL) — both wake their workers by
//!   `LISTEN`/`NOTIFY`; River with the fetch cooldown (1 ms) and poll interval (50 ms) of the
//!   queue bench, apalis with its `with_pubsub()` storage. Each in its own database.
//!
//! Issue 18's target for `safejob-notify` on PostgreSQL: p50 ≤ 5 ms and p99 ≤ 50 ms; that line
//! says whether it is met (`"meets_target"`, `null` for the other lines).

#[cfg(feature = "peers")]
mod apalis;
#[cfg(feature = "peers")]
mod river;

use std::{
    collections::{HashMap, hash_map::RandomState},
    hash::{BuildHasher, Hasher},
    sync::{Arc, Condvar, LazyLock, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use clap::ValueEnum;
use safejob_core::{
    LeaseStore,
    queue::{
        ClaimRequest, Claimed, Completed, Completion, EnqueueOptions, Enqueued, Heartbeat,
        JobFilter, JobId, JobQuery, NewJob, OpResult, Progress, Queue, QueueJob, QueueLease,
        QueueStore, QueuedJob, Reaped, Registry, Snapshot, WorkContext, WorkError, Worker,
    },
    store::{FenceCheck, Lease, Renewed, StoreError, TxEffects},
    workflow::{BatchId, BatchInfo, BatchMember, BatchState, NewBatch},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    driver::BenchError,
    figure::{line, round3},
    queue_bench::open_ours,
    run_prefix,
    stats::{load1, percentile},
};

/// Issue 18's target for our queue woken by `LISTEN`/`NOTIFY` on PostgreSQL: median.
pub const TARGET_P50: Duration = Duration::from_millis(5);
/// Issue 18's target: 99th percentile.
pub const TARGET_P99: Duration = Duration::from_millis(50);
/// How long one job may take to start before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A system whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// Our queue, enqueued through the pool's own store: woken in-process at the enqueue's
    /// commit (and by PostgreSQL's `LISTEN` thread).
    SafejobNotify,
    /// Our queue, enqueued through a second store, as another process would: woken only by
    /// the store's notifications (PostgreSQL's `LISTEN` thread; other backends poll).
    SafejobListen,
    /// Our queue, polling only (at `--poll-ms`).
    SafejobPoll,
    /// River (`riverqueue`), `LISTEN`/`NOTIFY`. Needs the `peers` feature.
    River,
    /// apalis (`apalis-postgres`) with its pubsub storage. Needs the `peers` feature.
    Apalis,
}

impl System {
    /// The `"system"` and `"wake"` of its line.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::SafejobNotify => ("safejob", "notify"),
            Self::SafejobListen => ("safejob", "listen"),
            Self::SafejobPoll => ("safejob", "poll"),
            Self::River => ("river", "notify"),
            Self::Apalis => ("apalis", "notify"),
        }
    }
}

/// Arguments of `safejob-bench latency`.
#[derive(Debug, clap::Args)]
pub struct LatencyArgs {
    /// Our queue's database: postgres://…, sqlite://…, mysql://….
    #[arg(long)]
    pub url: String,
    /// The systems to measure, in this order (repeat the flag).
    #[arg(long = "system", value_enum, default_values_t = [System::SafejobNotify, System::SafejobListen, System::SafejobPoll])]
    pub systems: Vec<System>,
    /// Samples counted per system.
    #[arg(long, default_value_t = 500)]
    pub samples: usize,
    /// Samples taken first and not counted.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Idle time before each enqueue, milliseconds (plus the jitter).
    #[arg(long, default_value_t = 20)]
    pub gap_ms: u64,
    /// A random extra idle time of 0 up to this, milliseconds, before each enqueue.
    #[arg(long, default_value_t = 100)]
    pub jitter_ms: u64,
    /// The poll interval of `safejob-poll`, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// PostgreSQL server for the peers (defaults to --url); each uses its own database there.
    #[arg(long)]
    pub peer_url: Option<String>,
}

/// The pacing of one run: idle time before each enqueue, samples.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Samples counted.
    pub samples: usize,
    /// Samples not counted, taken first.
    pub warmup: usize,
    /// Fixed idle time before each enqueue.
    pub gap: Duration,
    /// Upper bound of the random idle time added to `gap`.
    pub jitter: Duration,
}

/// Runs `safejob-bench latency`: one line per system, printed as soon as it is measured.
pub fn run(args: &LatencyArgs) -> Result<(), BenchError> {
    let pacing = Pacing {
        samples: args.samples.max(1),
        warmup: args.warmup,
        gap: Duration::from_millis(args.gap_ms),
        jitter: Duration::from_millis(args.jitter_ms),
    };
    let poll = Duration::from_millis(args.poll_ms.max(1));
    let peer_url = args.peer_url.as_deref().unwrap_or(&args.url);
    for &system in &args.systems {
        let (backend, samples) = match system {
            System::SafejobNotify => ours(&args.url, &pacing, None, false)?,
            System::SafejobListen => ours(&args.url, &pacing, None, true)?,
            System::SafejobPoll => ours(&args.url, &pacing, Some(poll), false)?,
            System::River | System::Apalis => ("postgres", peer(system, peer_url, &pacing)?),
        };
        let latencies = Latencies::of(samples);
        let meets = (matches!(system, System::SafejobNotify | System::SafejobListen)
            && backend == "postgres")
            .then(|| latencies.as_ref().is_some_and(Latencies::meets_target));
        let poll_ms = (system == System::SafejobPoll).then_some(args.poll_ms);
        println!(
            "{}",
            latency_line(system, backend, poll_ms, &pacing, latencies.as_ref(), meets)
        );
    }
    Ok(())
}

#[cfg(feature = "peers")]
fn peer(system: System, url: &str, pacing: &Pacing) -> Result<Vec<u64>, BenchError> {
    let name = system.names().0;
    let named = |e: BenchError| -> BenchError { format!("--system {name}: {e}").into() };
    // A fresh database per measurement, dropped after it (crate::scratch).
    let db = crate::scratch::Scratch::create(url, name, false).map_err(|e| named(e.into()))?;
    let ran = match system {
        System::River => river::measure(db.url(), pacing),
        _ => apalis::measure(db.url(), pacing),
    };
    let samples = ran.map_err(named)?;
    db.finish().map_err(|e| named(e.into()))?;
    Ok(samples)
}

#[cfg(not(feature = "peers"))]
fn peer(system: System, _url: &str, _pacing: &Pacing) -> Result<Vec<u64>, BenchError> {
    Err(format!(
        "--system {} needs safejob-bench built with the `peers` feature (--features peers, or \
         --all-features)",
        system.names().0
    )
    .into())
}

/// p50, p90, p99 and max of a run's samples, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Samples counted.
    pub samples: usize,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Latencies {
    /// The percentiles (nearest rank) of `samples_ns`; `None` when there are none.
    pub fn of(mut samples_ns: Vec<u64>) -> Option<Self> {
        samples_ns.sort_unstable();
        Some(Self {
            samples: samples_ns.len(),
            p50: percentile(&samples_ns, 50.0)?,
            p90: percentile(&samples_ns, 90.0)?,
            p99: percentile(&samples_ns, 99.0)?,
            max: *samples_ns.last()?,
        })
    }

    /// Whether issue 18's target holds: p50 ≤ 5 ms and p99 ≤ 50 ms.
    pub fn meets_target(&self) -> bool {
        Duration::from_nanos(self.p50) <= TARGET_P50 && Duration::from_nanos(self.p99) <= TARGET_P99
    }
}

fn ms(ns: u64) -> f64 {
    round3(ns as f64 / 1e6)
}

/// `{"bench":"latency","system":…,"backend":…,"wake":…,"poll_ms":…,"samples":…,"gap_ms":…,
/// "jitter_ms":…,"p50_ms":…,"p90_ms":…,"p99_ms":…,"max_ms":…,"meets_target":…,"load1":…}`.
fn latency_line(
    system: System,
    backend: &str,
    poll_ms: Option<u64>,
    pacing: &Pacing,
    l: Option<&Latencies>,
    meets_target: Option<bool>,
) -> String {
    let (name, wake) = system.names();
    let pct = |f: fn(&Latencies) -> u64| json!(l.map(|l| ms(f(l))));
    line(&[
        ("bench", json!("latency")),
        ("system", json!(name)),
        ("backend", json!(backend)),
        ("wake", json!(wake)),
        ("poll_ms", json!(poll_ms)),
        ("samples", json!(l.map_or(0, |l| l.samples))),
        ("gap_ms", json!(pacing.gap.as_millis() as u64)),
        ("jitter_ms", json!(pacing.jitter.as_millis() as u64)),
        ("p50_ms", pct(|l| l.p50)),
        ("p90_ms", pct(|l| l.p90)),
        ("p99_ms", pct(|l| l.p99)),
        ("max_ms", pct(|l| l.max)),
        ("meets_target", json!(meets_target)),
        ("load1", json!(load1())),
    ])
}

/// Where jobs report that their work started: sample number → instant.
struct Probe {
    started: Mutex<HashMap<u64, Instant>>,
    changed: Condvar,
}

static PROBE: LazyLock<Probe> = LazyLock::new(|| Probe {
    started: Mutex::new(HashMap::new()),
    changed: Condvar::new(),
});

/// Called first thing by every system's job: sample `n` started now.
pub fn started(n: u64) {
    let now = Instant::now();
    PROBE
        .started
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(n, now);
    PROBE.changed.notify_all();
}

/// When sample `n` started, waiting for it at most `timeout`; forgets it.
fn wait_started(n: u64, timeout: Duration) -> Option<Instant> {
    let map = PROBE.started.lock().unwrap_or_else(PoisonError::into_inner);
    let (mut map, _) = PROBE
        .changed
        .wait_timeout_while(map, timeout, |m| !m.contains_key(&n))
        .unwrap_or_else(PoisonError::into_inner);
    map.remove(&n)
}

/// A small xorshift generator for the jitter, seeded per run (no crate needed for this).
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self(h.finish() | 1)
    }

    /// A duration in `0..=max`, at microsecond resolution.
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let us = u64::try_from(max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.0 % us.saturating_add(1))
    }
}

/// Enqueues jobs `0..warmup + samples` one at a time with `enqueue(n)`, paced as `pacing` says,
/// waiting for each to start; the start latencies of the counted ones, nanoseconds.
pub fn measure(
    pacing: &Pacing,
    mut enqueue: impl FnMut(u64) -> Result<(), BenchError>,
) -> Result<Vec<u64>, BenchError> {
    PROBE
        .started
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let mut jitter = Jitter::seeded();
    let mut out = Vec::with_capacity(pacing.samples);
    for n in 0..(pacing.warmup + pacing.samples) as u64 {
        thread::sleep(pacing.gap + jitter.below(pacing.jitter));
        let called = Instant::now();
        enqueue(n)?;
        let started = wait_started(n, START_TIMEOUT)
            .ok_or_else(|| format!("job {n} did not start within {START_TIMEOUT:?}"))?;
        if n >= pacing.warmup as u64 {
            let ns = started.saturating_duration_since(called).as_nanos();
            out.push(u64::try_from(ns).unwrap_or(u64::MAX));
        }
    }
    Ok(out)
}

/// Our job: reports its start and does nothing else.
#[derive(Serialize, Deserialize)]
struct LatencyProbe {
    n: u64,
}

impl QueueJob for LatencyProbe {
    const KIND: &'static str = "bench_latency";
    type Error = std::io::Error;

    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        started(self.n);
        Ok(())
    }
}

/// Our queue on `url` with one worker: woken by the store (`poll: None`, the default poll
/// interval as fallback), or polling every `poll` with no wake-ups; enqueued through the pool's
/// store or, with `second_store`, through another one on the same database. The backend's name
/// and the samples.
fn ours(
    url: &str,
    pacing: &Pacing,
    poll: Option<Duration>,
    second_store: bool,
) -> Result<(&'static str, Vec<u64>), BenchError> {
    if second_store && url.starts_with("memory:") {
        return Err(
            "--system safejob-listen needs a database: a second memory:// store is \
                    another queue, whose jobs the pool would never see"
                .into(),
        );
    }
    let (store, backend) = open_ours(url, 1)?;
    let queue = format!("{}-latency", run_prefix());
    let options = EnqueueOptions::new().queue(queue.clone());
    let mut registry = Registry::new();
    registry.register::<LatencyProbe>();
    let mut builder = match poll {
        None => Worker::builder(store.clone(), registry),
        Some(interval) => {
            Worker::builder(Arc::new(PollOnly(store.clone())), registry).poll_interval(interval)
        }
    };
    builder = builder.queues([queue.as_str()]).concurrency(1);
    let pool = builder.start()?;
    // A second store has wakers of its own: its enqueues reach the pool only through the
    // database (as another process's would).
    let client = if second_store {
        Queue::new(open_ours(url, 1)?.0)
    } else {
        Queue::new(store)
    };
    let samples = measure(pacing, |n| {
        client.enqueue_with(&LatencyProbe { n }, &options)?;
        Ok(())
    });
    pool.shutdown(Duration::from_secs(5));
    Ok((backend, samples?))
}

/// A queue store that never wakes anyone: every call goes to the store inside, except
/// `subscribe`, which registers nothing, so a pool on it finds jobs only by polling.
struct PollOnly(Arc<dyn QueueStore>);

impl QueueStore for PollOnly {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.0.now()
    }
    fn guards(&self) -> &dyn LeaseStore {
        self.0.guards()
    }
    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        self.0.enqueue_many(jobs)
    }
    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        self.0.claim(req)
    }
    fn renew(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        self.0.renew(lease, guard, ttl)
    }
    fn progress(&self, lease: &QueueLease, progress: &Progress) -> Result<FenceCheck, StoreError> {
        self.0.progress(lease, progress)
    }
    fn complete(
        &self,
        c: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        self.0.complete(c, hook)
    }
    fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<(), StoreError> {
        self.0.heartbeat(hb)
    }
    fn remove_worker(&self, worker: &str) -> Result<(), StoreError> {
        self.0.remove_worker(worker)
    }
    fn reap(&self, limit: usize) -> Result<Vec<Reaped>, StoreError> {
        self.0.reap(limit)
    }
    fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError> {
        self.0.get(id)
    }
    fn list(&self, query: &JobQuery) -> Result<Vec<QueuedJob>, StoreError> {
        self.0.list(query)
    }
    fn retry(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.0.retry(id)
    }
    fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.0.retry_matching(filter)
    }
    fn cancel(&self, id: JobId) -> Result<OpResult, StoreError> {
        self.0.cancel(id)
    }
    fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        self.0.purge(filter)
    }
    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, StoreError> {
        self.0.prune(retention, limit)
    }
    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.0.snapshot()
    }
    fn finished_by_minute(
        &self,
        window: Duration,
    ) -> Result<Vec<safejob_core::queue::FinishedMinute>, StoreError> {
        self.0.finished_by_minute(window)
    }
    fn complete_many(
        &self,
        group: &mut [safejob_core::queue::GroupMember<'_, '_>],
    ) -> Vec<Result<Completed, StoreError>> {
        self.0.complete_many(group)
    }
    fn set_result(&self, lease: &QueueLease, result: &Value) -> Result<FenceCheck, StoreError> {
        self.0.set_result(lease, result)
    }
    fn insert_batch(&self, batch: &NewBatch) -> Result<BatchId, StoreError> {
        self.0.insert_batch(batch)
    }
    fn batch(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError> {
        self.0.batch(id)
    }
    fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError> {
        self.0.batch_members(id)
    }
    fn list_batches(
        &self,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError> {
        self.0.list_batches(state, limit)
    }
    fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError> {
        self.0.cancel_batch(id)
    }
    // `subscribe` keeps the trait's default: no wake-ups.
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches a percentile read at the wrong rank (p90 taken at 99 was tried: this fails).
    #[test]
    fn percentiles_of_a_run() {
        // 1..=200 ms: nearest rank, so p50 is the 100th sample, p90 the 180th, p99 the 198th.
        let samples: Vec<u64> = (1..=200).rev().map(|ms| ms * 1_000_000).collect();
        let l = Latencies::of(samples).unwrap();
        assert_eq!(l.samples, 200);
        assert_eq!(
            (l.p50, l.p90, l.p99, l.max),
            (100_000_000, 180_000_000, 198_000_000, 200_000_000)
        );
        // One sample is every percentile.
        let one = Latencies::of(vec![7]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (7, 7, 7));
        assert_eq!(Latencies::of(Vec::new()), None);
    }

    // Catches an exclusive bound (`<` for `<=` on p50 was tried: this fails) and a target that
    // checks one percentile only.
    #[test]
    fn the_target_needs_both_percentiles() {
        let at = |p50_ms: u64, p99_ms: u64| Latencies {
            samples: 100,
            p50: p50_ms * 1_000_000,
            p90: p50_ms * 1_000_000,
            p99: p99_ms * 1_000_000,
            max: p99_ms * 1_000_000,
        };
        assert!(at(5, 50).meets_target(), "the bounds are inclusive");
        assert!(!at(6, 20).meets_target(), "median too slow");
        assert!(!at(2, 51).meets_target(), "tail too slow");
    }

    #[test]
    fn latency_lines_are_one_json_object_with_milliseconds() {
        let pacing = Pacing {
            samples: 3,
            warmup: 0,
            gap: Duration::from_millis(20),
            jitter: Duration::from_millis(100),
        };
        let l = Latencies::of(vec![1_500_000, 2_000_000, 40_123_456]).unwrap();
        let v: Value = serde_json::from_str(&latency_line(
            System::SafejobNotify,
            "postgres",
            None,
            &pacing,
            Some(&l),
            Some(true),
        ))
        .unwrap();
        assert_eq!(v["bench"], "latency");
        assert_eq!(v["system"], "safejob");
        assert_eq!(v["wake"], "notify");
        assert_eq!(v["p50_ms"], 2.0);
        assert_eq!(v["max_ms"], 40.123);
        assert_eq!(v["poll_ms"], Value::Null);
        assert_eq!(v["meets_target"], true);
        let empty: Value = serde_json::from_str(&latency_line(
            System::SafejobPoll,
            "sqlite",
            Some(100),
            &pacing,
            None,
            None,
        ))
        .unwrap();
        assert_eq!(empty["samples"], 0);
        assert_eq!(empty["p99_ms"], Value::Null);
        assert_eq!(empty["poll_ms"], 100);
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let mut j = Jitter::seeded();
        let max = Duration::from_millis(3);
        let draws: Vec<Duration> = (0..1_000).map(|_| j.below(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        // Spread over the range, not stuck at one value.
        assert!(draws.iter().any(|d| *d < Duration::from_millis(1)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(2)));
        assert_eq!(j.below(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_memory_queue_polled_starts_every_job() {
        // Polling every millisecond: every job starts, and each sample is one enqueue's wait.
        let pacing = Pacing {
            samples: 5,
            warmup: 1,
            gap: Duration::ZERO,
            jitter: Duration::from_millis(2),
        };
        let (backend, samples) =
            ours("memory://", &pacing, Some(Duration::from_millis(1)), false).unwrap();
        assert_eq!(backend, "memory");
        assert_eq!(samples.len(), 5);
    }

    /// A second memory store is another queue: refused with a clear error rather than a pool
    /// waiting for jobs it can never see. Catches the check's removal (the first sample then
    /// fails with "did not start within", not this error).
    #[test]
    fn a_second_memory_store_is_refused() {
        let pacing = Pacing {
            samples: 1,
            warmup: 0,
            gap: Duration::ZERO,
            jitter: Duration::ZERO,
        };
        let err = ours("memory://", &pacing, None, true).unwrap_err();
        assert!(err.to_string().contains("needs a database"), "{err}");
    }

    #[test]
    fn latency_arguments_parse() {
        use clap::Parser;

        use crate::{Cli, Command};

        let cli = Cli::try_parse_from([
            "safejob-bench",
            "latency",
            "--url",
            "memory://",
            "--system",
            "safejob-poll",
            "--system",
            "apalis",
        ])
        .unwrap();
        let Command::Latency(args) = cli.command else {
            panic!("not the latency subcommand");
        };
        assert_eq!(args.systems, [System::SafejobPoll, System::Apalis]);
        assert_eq!(args.samples, 500);
        assert_eq!(args.gap_ms, 20);
        let defaults =
            Cli::try_parse_from(["safejob-bench", "latency", "--url", "memory://"]).unwrap();
        let Command::Latency(args) = defaults.command else {
            panic!("not the latency subcommand");
        };
        assert_eq!(
            args.systems,
            [
                System::SafejobNotify,
                System::SafejobListen,
                System::SafejobPoll
            ]
        );
    }
}
