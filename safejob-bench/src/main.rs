//! `safejob-bench`: what the exactly-once guard costs on a real database.
//!
//! ```text
//! cargo run --release -p safejob-bench -- guard --url sqlite://target/bench.db --jobs 5000 --threads 1 --baseline
//! cargo run --release -p safejob-bench --all-features -- guard --url postgres://root@127.0.0.1:5432/test \
//!     --jobs 20000 --threads 4 --effects transactional --baseline
//! ```
//!
//! `guard` runs N no-op guarded jobs (acquire, perform nothing, finalize, effects) through
//! `safejob_core::Runner` on a `DieselStore`, on T threads sharing one store and pool, and prints
//! one JSON line. With `--baseline` it also runs, in the same process and through the same pool,
//! the hand-written equivalent (insert-or-ignore a key row, then a conditional update), prints
//! the same line for it, and a third line with the ratio of the two throughputs. Keys start with a
//! random run prefix, so repeated runs on the same database never collide. See
//! `docs/BENCHMARKS.md` for figures and the database ceilings they are compared with.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod baseline;
mod driver;
mod duplicates;
mod figure;
mod guard;
mod latency;
#[cfg(feature = "peers")]
mod peers;
mod queue_bench;
mod soak;
mod stats;

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};
use safejob_core::EffectsMode;
use safejob_diesel::DieselStore;

use crate::{
    baseline::Baseline,
    driver::BenchError,
    guard::Guard,
    stats::{Measured, RunInfo, bench_line, load1, ratio_line},
};

/// Benchmarks of safejob's exactly-once guard.
#[derive(Debug, Parser)]
#[command(name = "safejob-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs N no-op guarded jobs on T threads and prints one JSON line (plus the baseline's and
    /// the ratio with --baseline).
    Guard(GuardArgs),
    /// Enqueue (single and batched) and drain rates of our queue, guarded and not, and of River,
    /// fang and apalis with --peer; JSON lines.
    Queue(queue_bench::QueueArgs),
    /// Enqueue-to-start latency on an idle queue: p50, p90, p99 and max per system.
    Latency(latency::LatencyArgs),
    /// A long drain (1,000,000 jobs by default) printing RSS and CPU time every 100,000 jobs.
    Soak(soak::SoakArgs),
    /// K guarded payouts enqueued C times each, drained by W workers: the drain's wall time (one
    /// JSON line). Every copy must succeed and the effects run K times.
    Duplicates(duplicates::DuplicatesArgs),
}

/// Where effects run: the runner's two modes, or a job that has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Effects {
    /// After the finalize commits, recorded by a third statement (`finish_effects`).
    AfterCommit,
    /// Inside the finalize transaction (BEGIN, fenced UPDATE, COMMIT): no third commit.
    Transactional,
    /// The job declares no effects (`SafeJob::has_effects` is false): the finalize records them
    /// `done` in its one autocommit statement, the baseline's statement count.
    None,
}

impl Effects {
    fn mode(self) -> EffectsMode {
        match self {
            Self::AfterCommit | Self::None => EffectsMode::AfterCommit,
            Self::Transactional => EffectsMode::Transactional,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::AfterCommit => "after-commit",
            Self::Transactional => "transactional",
            Self::None => "none",
        }
    }
}

#[derive(Debug, clap::Args)]
struct GuardArgs {
    /// Database URL: sqlite://path.db, postgres://…, mysql://… (postgres and mysql need the
    /// crate features of the same name, or --all-features).
    #[arg(long)]
    url: String,
    /// Jobs to time (per benchmark: the guard, and the baseline with --baseline).
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Threads sharing one store and pool.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Where on_succeeded_once runs.
    #[arg(long, value_enum, default_value_t = Effects::AfterCommit)]
    effects: Effects,
    /// Also run the hand-written baseline through the same pool, and print the ratio.
    #[arg(long)]
    baseline: bool,
    /// Run only the baseline (no guard, no ratio): for profiling one side alone, e.g. counting
    /// its statements or system calls.
    #[arg(long, conflicts_with = "baseline")]
    baseline_only: bool,
    /// Untimed jobs per thread before timing, so every pooled connection is open and has its
    /// statements prepared.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Alternate guard and baseline this many times (jobs split evenly), so a burst of load on a
    /// shared machine hits both alike; the guard goes first in even rounds and the baseline in
    /// odd ones (an even count balances the order). Figures are over all rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// SQL run on every new pooled connection after the store's own setup, for profiling only:
    /// e.g. `SET synchronous_commit = off` (PostgreSQL) or `PRAGMA synchronous = NORMAL`
    /// (SQLite) takes the disk flush out of every commit, leaving round trips and CPU.
    #[arg(long, value_name = "SQL")]
    on_connect: Option<String>,
    /// Pool size. Defaults to threads + 1, so no thread ever waits for a connection; a smaller
    /// pool is an experiment (e.g. 1 serializes SQLite writers in-process).
    #[arg(long)]
    pool_size: Option<u32>,
    /// The store's opt-in relaxed durability for effects marks (`finish_effects` through a second
    /// pool that commits without waiting for the disk; PostgreSQL and SQLite only).
    #[arg(long)]
    relaxed_effects_marks: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Guard(args) => guard(&args),
        Command::Queue(args) => queue_bench::run(&args),
        Command::Latency(args) => latency::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Duplicates(args) => duplicates::run(&args, &run_prefix()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("safejob-bench: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Whether the baseline runs before the guard in `round`: in odd rounds, so over an even number
/// of rounds neither always runs on the fresher tables, caches or checkpoint.
fn baseline_first(round: usize) -> bool {
    round % 2 == 1
}

/// A random prefix for this run's keys, so runs never collide on the same database.
fn run_prefix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("sjb-{:016x}", h.finish())
}

fn guard(args: &GuardArgs) -> Result<(), BenchError> {
    let threads = args.threads.max(1);
    let rounds = args.rounds.clamp(1, args.jobs.max(1));
    let pool_size = match args.pool_size {
        Some(n) => n.max(1),
        None => u32::try_from(threads + 1)?,
    };
    let mut builder = DieselStore::builder(&args.url)
        .max_size(pool_size)
        .min_idle(pool_size)
        .connection_timeout(Duration::from_secs(30))
        .relaxed_effects_marks(args.relaxed_effects_marks);
    if let Some(sql) = args.on_connect.clone() {
        builder = builder.on_connect(move |conn| conn.batch_execute(&sql));
    }
    let store = builder.build()?;
    store.migrate()?;
    let store = Arc::new(store);
    let runner = Guard::new(
        store.clone(),
        args.effects.mode(),
        args.effects != Effects::None,
    )?;
    let run_guard = !args.baseline_only;
    let baseline = if args.baseline || args.baseline_only {
        Some(Baseline::prepare(&store)?)
    } else {
        None
    };
    let info = RunInfo {
        backend: store.backend().as_str(),
        effects: args.effects.as_str(),
        threads,
        load1: load1(),
    };
    let prefix = run_prefix();

    let warmup = args.warmup * threads;
    if run_guard {
        runner.run(&format!("{prefix}-wg"), warmup, threads)?;
    }
    if let Some(b) = &baseline {
        b.run(&format!("{prefix}-wb"), warmup, threads)?;
    }

    let mut guarded = Measured::default();
    let mut hand_written = Measured::default();
    for round in 0..rounds {
        // Spread the remainder over the first rounds so the total is exactly --jobs.
        let n = args.jobs / rounds + usize::from(round < args.jobs % rounds);
        let baseline_leads = baseline_first(round);
        if let Some(b) = baseline.as_ref().filter(|_| baseline_leads) {
            hand_written.merge(b.run(&format!("{prefix}-b{round}"), n, threads)?);
        }
        if run_guard {
            guarded.merge(runner.run(&format!("{prefix}-g{round}"), n, threads)?);
        }
        if let Some(b) = baseline.as_ref().filter(|_| !baseline_leads) {
            hand_written.merge(b.run(&format!("{prefix}-b{round}"), n, threads)?);
        }
    }

    let guarded = guarded.summary();
    if run_guard {
        println!("{}", bench_line("guard", &info, &guarded));
    }
    if baseline.is_some() {
        let hand_written = hand_written.summary();
        println!("{}", bench_line("baseline", &info, &hand_written));
        if run_guard {
            println!("{}", ratio_line(&info, &guarded, &hand_written));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn guard_and_baseline_take_turns_going_first() {
        // Position 0 or 1 inside each round; over 4 rounds both sides sum to the same.
        let (mut guard, mut baseline) = (0, 0);
        for round in 0..4 {
            let first = usize::from(baseline_first(round));
            baseline += 1 - first;
            guard += first;
        }
        assert_eq!((guard, baseline), (2, 2));
        assert!(!baseline_first(0), "the guard goes first in round 0");
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn guard_arguments_parse() {
        let cli = Cli::try_parse_from([
            "safejob-bench",
            "guard",
            "--url",
            "sqlite://x.db",
            "--jobs",
            "20",
            "--threads",
            "4",
            "--effects",
            "transactional",
            "--baseline",
        ])
        .unwrap();
        let Command::Guard(args) = cli.command else {
            panic!("not the guard subcommand");
        };
        assert_eq!(args.jobs, 20);
        assert_eq!(args.threads, 4);
        assert_eq!(args.effects, Effects::Transactional);
        assert!(args.baseline);
        assert_eq!(args.rounds, 1);
        assert!(!args.baseline_only);
    }

    #[test]
    fn baseline_only_excludes_baseline() {
        let parsed = Cli::try_parse_from([
            "safejob-bench",
            "guard",
            "--url",
            "sqlite://x.db",
            "--baseline",
            "--baseline-only",
        ]);
        assert!(parsed.is_err());
    }

    #[test]
    fn run_prefixes_differ() {
        assert_ne!(run_prefix(), run_prefix());
    }
}
