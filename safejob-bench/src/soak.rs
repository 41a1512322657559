//! `safejob-bench soak`: a long drain that watches the process's memory and CPU.
//!
//! ```text
//! cargo run --release -p safejob-bench --features postgres -- soak \
//!     --url postgres://root@127.0.0.1:5432/bench_me --jobs 1000000 --workers 4
//! ```
//!
//! One worker pool of `--workers` runs for the whole soak, on a queue of its own. The jobs come
//! in chunks of `--every` (enqueued `--batch` per call from this thread while the pool works);
//! after each chunk is worked off, one JSON line gives the resident set (`VmRSS` of
//! `/proc/self/status`), the process's CPU time (`utime + stime` of `/proc/self/stat`, all
//! threads: the client's enqueues, the pool's claims, runs and completions), the chunk's CPU per
//! job and its rate. The last line compares the resident set after the last chunk with the one
//! after the first (issue 18's target: within 10 %). Jobs are no-ops, unguarded or, with
//! `--guarded`, guarded; finished rows stay in the database (the queue's default), so the
//! tables grow by the whole soak.
//!
//! Linux only: it reads `/proc`.

use std::{
    fs,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use safejob_core::{
    IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    queue::{
        EnqueueOptions, GuardedJob, NewJob, QueueJob, Registry, WorkContext, WorkError, Worker,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    driver::BenchError,
    figure::{line, rate, round1, round3},
    queue_bench::{drain_timeout, open_ours, wait_for},
    run_prefix,
    stats::load1,
};

/// Issue 18's bound on memory growth: RSS after the whole soak over RSS after the first chunk.
pub const RSS_GROWTH_TARGET: f64 = 1.10;

/// Arguments of `safejob-bench soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Our queue's database: postgres://…, sqlite://…, mysql://…, or memory://.
    #[arg(long)]
    pub url: String,
    /// Jobs in the whole soak.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: usize,
    /// Jobs per chunk: a line is printed after each.
    #[arg(long, default_value_t = 100_000)]
    pub every: usize,
    /// Jobs per enqueue call.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Workers (the pool's concurrency).
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Guard every job (exactly once; transactional effects).
    #[arg(long)]
    pub guarded: bool,
}

/// What reading `/proc/self` can go wrong with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    /// The file could not be read (not Linux, or no `/proc`).
    #[error("could not read {path}")]
    Unreadable {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/status` has no `VmRSS:` line.
    #[error("/proc/self/status has no VmRSS line")]
    NoRss,
    /// A field that should be a number is not.
    #[error("{field} is not a number: {value:?}")]
    NotANumber {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// `/proc/self/stat` ends before `utime` and `stime`.
    #[error("/proc/self/stat is cut short: {fields} fields after the command name")]
    ShortStat {
        /// Fields found after the `(comm)` field.
        fields: usize,
    },
}

/// The resident set in kB, from the text of `/proc/self/status` (`VmRSS:   12345 kB`).
pub fn rss_kb(status: &str) -> Result<u64, ProcError> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .ok_or(ProcError::NoRss)?
        .trim();
    let number = value.strip_suffix("kB").unwrap_or(value).trim();
    number.parse().map_err(|_| ProcError::NotANumber {
        field: "VmRSS",
        value: value.to_owned(),
    })
}

/// `utime + stime` in clock ticks, from the text of `/proc/self/stat`. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted from the
/// last `)`: `utime` and `stime` are fields 14 and 15, the 12th and 13th after it.
pub fn cpu_ticks(stat: &str) -> Result<u64, ProcError> {
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize, field: &'static str| -> Result<u64, ProcError> {
        let value = fields.get(i).ok_or(ProcError::ShortStat {
            fields: fields.len(),
        })?;
        value.parse().map_err(|_| ProcError::NotANumber {
            field,
            value: (*value).to_owned(),
        })
    };
    Ok(tick(11, "utime")? + tick(12, "stime")?)
}

/// The process's resident set and CPU time (all threads, user + system) now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set, kB.
    pub rss_kb: u64,
    /// CPU time, user + system.
    pub cpu: Duration,
}

impl Usage {
    /// Reads `/proc/self/status` and `/proc/self/stat`.
    pub fn now() -> Result<Self, ProcError> {
        let read = |path: &'static str| {
            fs::read_to_string(path).map_err(|source| ProcError::Unreadable { path, source })
        };
        let ticks = cpu_ticks(&read("/proc/self/stat")?)?;
        let hz = rustix::param::clock_ticks_per_second().max(1);
        Ok(Self {
            rss_kb: rss_kb(&read("/proc/self/status")?)?,
            cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
        })
    }
}

/// Jobs worked so far in the soak.
static DONE: AtomicUsize = AtomicUsize::new(0);

/// The soak's unguarded no-op job.
#[derive(Serialize, Deserialize)]
struct SoakNoop {
    n: u64,
}

impl QueueJob for SoakNoop {
    const KIND: &'static str = "bench_soak";
    type Error = std::io::Error;

    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The soak's guarded no-op job: a fresh key each, no effects.
#[derive(Serialize, Deserialize)]
struct SoakGuarded {
    key: String,
}

impl SafeJob for SoakGuarded {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.as_str())
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::done())
    }

    fn has_effects(&self) -> bool {
        false
    }
}

impl GuardedJob for SoakGuarded {
    const KIND: &'static str = "bench_soak_guarded";
}

/// One checkpoint of the soak: after `jobs` jobs worked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    /// Jobs worked so far.
    pub jobs: usize,
    /// Usage then.
    pub usage: Usage,
    /// Wall time since the soak started.
    pub elapsed: Duration,
}

/// CPU time per job between two checkpoints, microseconds; `None` if no job ran in between.
pub fn cpu_per_job_us(from: &Checkpoint, to: &Checkpoint) -> Option<f64> {
    let jobs = to.jobs.checked_sub(from.jobs).filter(|&n| n > 0)?;
    let cpu = to.usage.cpu.saturating_sub(from.usage.cpu);
    Some(cpu.as_secs_f64() * 1e6 / jobs as f64)
}

/// RSS after the last chunk over RSS after the first, if both are known and non-zero.
pub fn rss_growth(first: &Checkpoint, last: &Checkpoint) -> Option<f64> {
    (first.usage.rss_kb > 0).then(|| last.usage.rss_kb as f64 / first.usage.rss_kb as f64)
}

fn checkpoint_line(backend: &str, prev: &Checkpoint, now: &Checkpoint, workers: usize) -> String {
    line(&[
        ("bench", json!("soak")),
        ("backend", json!(backend)),
        ("workers", json!(workers)),
        ("jobs", json!(now.jobs)),
        ("rss_kb", json!(now.usage.rss_kb)),
        ("cpu_s", json!(round3(now.usage.cpu.as_secs_f64()))),
        (
            "chunk_cpu_per_job_us",
            json!(cpu_per_job_us(prev, now).map(round1)),
        ),
        (
            "chunk_jobs_per_s",
            json!(round1(rate(
                now.jobs - prev.jobs,
                now.elapsed.saturating_sub(prev.elapsed)
            ))),
        ),
        ("elapsed_s", json!(round3(now.elapsed.as_secs_f64()))),
        ("load1", json!(load1())),
    ])
}

fn summary_line(backend: &str, guarded: bool, points: &[Checkpoint]) -> String {
    let (start, first, last) = (points.first(), points.get(1), points.last());
    let growth = first.zip(last).and_then(|(f, l)| rss_growth(f, l));
    line(&[
        ("bench", json!("soak_summary")),
        ("backend", json!(backend)),
        ("guarded", json!(guarded)),
        ("jobs", json!(last.map_or(0, |l| l.jobs))),
        ("rss_start_kb", json!(start.map(|p| p.usage.rss_kb))),
        ("rss_first_chunk_kb", json!(first.map(|p| p.usage.rss_kb))),
        ("rss_last_kb", json!(last.map(|p| p.usage.rss_kb))),
        ("rss_growth", json!(growth.map(round3))),
        (
            "rss_within_10pct",
            json!(growth.map(|g| g <= RSS_GROWTH_TARGET)),
        ),
        (
            "cpu_per_job_us",
            json!(
                start
                    .zip(last)
                    .and_then(|(s, l)| cpu_per_job_us(s, l))
                    .map(round1)
            ),
        ),
        (
            "jobs_per_s",
            json!(last.map(|l| round1(rate(l.jobs, l.elapsed)))),
        ),
        ("load1", json!(load1())),
    ])
}

/// Runs `safejob-bench soak`: a line per chunk, then the summary.
pub fn run(args: &SoakArgs) -> Result<(), BenchError> {
    let workers = args.workers.max(1);
    let every = args.every.max(1);
    let batch = args.batch.max(1);
    let (store, backend) = open_ours(&args.url, workers)?;
    let prefix = run_prefix();
    let queue = format!("{prefix}-soak");
    let options = EnqueueOptions::new().queue(queue.clone());
    let mut registry = Registry::new();
    if args.guarded {
        registry.register_guarded::<SoakGuarded>();
    } else {
        registry.register::<SoakNoop>();
    }
    DONE.store(0, Ordering::SeqCst);
    let pool = Worker::builder(store.clone(), registry)
        .queues([queue.as_str()])
        .concurrency(u32::try_from(workers)?)
        .effects(safejob_core::EffectsMode::Transactional)
        .start()?;
    let start = Instant::now();
    let mut points = vec![Checkpoint {
        jobs: 0,
        usage: Usage::now()?,
        elapsed: Duration::ZERO,
    }];
    let mut enqueued = 0;
    let result = (|| -> Result<(), BenchError> {
        while enqueued < args.jobs {
            let chunk_end = (enqueued + every).min(args.jobs);
            while enqueued < chunk_end {
                let end = (enqueued + batch).min(chunk_end);
                let rows = (enqueued..end)
                    .map(|i| {
                        if args.guarded {
                            NewJob::guarded(
                                &SoakGuarded {
                                    key: format!("{queue}-{i}"),
                                },
                                &options,
                            )
                        } else {
                            NewJob::of(&SoakNoop { n: i as u64 }, &options)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                store.enqueue_many(&rows)?;
                enqueued = end;
            }
            if !wait_for(drain_timeout(every), || {
                DONE.load(Ordering::Acquire) >= chunk_end
            }) {
                let done = DONE.load(Ordering::SeqCst);
                return Err(format!("soak stalled: {done} of {chunk_end} jobs worked").into());
            }
            let now = Checkpoint {
                jobs: chunk_end,
                usage: Usage::now()?,
                elapsed: start.elapsed(),
            };
            let prev = points.last().copied().unwrap_or(now);
            println!("{}", checkpoint_line(backend, &prev, &now, workers));
            points.push(now);
        }
        Ok(())
    })();
    pool.shutdown(Duration::from_secs(5));
    result?;
    let worked = DONE.load(Ordering::SeqCst);
    if worked != args.jobs {
        return Err(format!("{worked} jobs worked for {} enqueued", args.jobs).into());
    }
    println!("{}", summary_line(backend, args.guarded, &points));
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const STATUS: &str = "Name:\tsafejob-bench\nUmask:\t0022\nState:\tS (sleeping)\n\
        VmPeak:\t  123456 kB\nVmSize:\t  120000 kB\nVmHWM:\t   40000 kB\nVmRSS:\t   38912 kB\n\
        RssAnon:\t   30000 kB\nThreads:\t9\n";

    // Catches reading another Vm* line (VmHWM or VmSize for VmRSS was tried: this fails).
    #[test]
    fn rss_is_read_from_the_vmrss_line_not_its_neighbours() {
        assert_eq!(rss_kb(STATUS).unwrap(), 38_912);
        assert!(matches!(
            rss_kb("Name:\tx\nVmHWM:\t 1 kB\n"),
            Err(ProcError::NoRss)
        ));
        assert!(matches!(
            rss_kb("VmRSS:\t lots kB\n"),
            Err(ProcError::NotANumber { field: "VmRSS", .. })
        ));
    }

    // Catches counting fields from the first ')' instead of the last (a command name holding
    // ')' then shifts them) and an off-by-one field index (stime read from cutime): both tried,
    // both fail here.
    #[test]
    fn cpu_ticks_add_utime_and_stime_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime ...: utime 1234, stime 56; cutime and cstime are ignored.
        let stat = "4242 (safejob-bench) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 7 8 20 0 9";
        assert_eq!(cpu_ticks(stat).unwrap(), 1_290);
        // A command name with spaces and a ')' must not shift the fields.
        let odd = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 7 8 20 0 9";
        assert_eq!(cpu_ticks(odd).unwrap(), 1_290);
        assert!(matches!(
            cpu_ticks("4242 (x) S 1 2 3"),
            Err(ProcError::ShortStat { fields: 4 })
        ));
        assert!(matches!(
            cpu_ticks("1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 56"),
            Err(ProcError::NotANumber { field: "utime", .. })
        ));
    }

    #[test]
    fn this_process_has_a_resident_set_and_spends_cpu() {
        let before = Usage::now().unwrap();
        assert!(before.rss_kb > 0);
        // Burn some CPU so the counter moves by at least one tick (10 ms at 100 Hz).
        let mut x = 0u64;
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(Usage::now().unwrap().cpu > before.cpu);
    }

    fn point(jobs: usize, rss_kb: u64, cpu_ms: u64) -> Checkpoint {
        Checkpoint {
            jobs,
            usage: Usage {
                rss_kb,
                cpu: Duration::from_millis(cpu_ms),
            },
            elapsed: Duration::from_secs(jobs as u64 / 1_000),
        }
    }

    #[test]
    fn cpu_per_job_and_rss_growth() {
        let start = point(0, 20_000, 100);
        let first = point(100_000, 40_000, 10_100);
        let last = point(1_000_000, 43_000, 100_100);
        // 10 s of CPU over 100,000 jobs: 100 µs each.
        assert_eq!(cpu_per_job_us(&start, &first), Some(100.0));
        assert_eq!(cpu_per_job_us(&first, &first), None);
        assert_eq!(rss_growth(&first, &last), Some(1.075));

        let v: Value =
            serde_json::from_str(&summary_line("postgres", false, &[start, first, last])).unwrap();
        assert_eq!(v["bench"], "soak_summary");
        assert_eq!(v["rss_first_chunk_kb"], 40_000);
        assert_eq!(v["rss_growth"], 1.075);
        assert_eq!(v["rss_within_10pct"], true);
        assert_eq!(v["cpu_per_job_us"], 100.0);

        let grown = point(1_000_000, 44_001, 100_100);
        let v: Value =
            serde_json::from_str(&summary_line("postgres", false, &[start, first, grown])).unwrap();
        assert_eq!(v["rss_within_10pct"], false);
    }

    #[test]
    fn a_small_soak_on_the_memory_queue_prints_every_chunk() {
        for guarded in [false, true] {
            let args = SoakArgs {
                url: "memory://".into(),
                jobs: 250,
                every: 100,
                batch: 30,
                workers: 2,
                guarded,
            };
            run(&args).unwrap();
        }
    }
}
