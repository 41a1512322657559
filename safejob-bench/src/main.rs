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
mod chart;
mod counters;
mod driver;
mod duplicates;
mod figure;
mod guard;
mod latency;
#[cfg(feature = "peers")]
mod peers;
mod queue_bench;
mod report;
mod scratch;
mod sizes;
mod soak;
mod stats;
mod wal;

use std::{process::ExitCode, sync::Arc, time::Duration};

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
    /// Gathers the JSON lines of `queue` runs into queue.json and PNG charts (docs/bench).
    Report(report::ReportArgs),
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
    /// The store's group commit (`DieselStoreBuilder::group_commit`): `on`, `off`, or `compare`
    /// (two stores on the same database, one with and one without, timed in the same rounds as
    /// the baseline, in a balanced order: use a multiple of 6 rounds). Defaults to the store's
    /// default (on for SQLite, off for PostgreSQL and MySQL/MariaDB).
    #[arg(long, value_enum)]
    group_commit: Option<GroupCommitArg>,
}

/// `--group-commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GroupCommitArg {
    /// Group commit on.
    On,
    /// Group commit off: every acquire and finalize commits alone.
    Off,
    /// Both, in one run: lines for each, and their ratios.
    Compare,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Guard(args) => guard(&args),
        Command::Queue(args) => queue_bench::run(&args),
        Command::Latency(args) => latency::run(&args),
        Command::Soak(args) => soak::run(&args),
        Command::Duplicates(args) => duplicates::run(&args, &run_prefix()),
        Command::Report(args) => report::run(&args).map_err(BenchError::from),
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
    format!("sjb-{}", scratch::random_hex(16))
}

/// What one round times, in the order the round runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The guard (with group commit, under `--group-commit compare`).
    Guard,
    /// The guard without group commit (`--group-commit compare` only).
    Single,
    /// The hand-written baseline.
    Baseline,
}

/// The order of `round` for `sides`: two sides alternate (ABBA: the guard first in even rounds,
/// the baseline in odd ones); three go through their six permutations, so over 6 rounds each
/// side runs in each position twice.
fn round_order(round: usize, sides: &[Side]) -> Vec<Side> {
    match sides {
        [a, b] => {
            if baseline_first(round) {
                vec![*b, *a]
            } else {
                vec![*a, *b]
            }
        }
        [a, b, c] => {
            const PERMS: [[usize; 3]; 6] = [
                [0, 1, 2],
                [2, 1, 0],
                [1, 2, 0],
                [0, 2, 1],
                [2, 0, 1],
                [1, 0, 2],
            ];
            let all = [*a, *b, *c];
            PERMS[round % 6].iter().map(|&i| all[i]).collect()
        }
        other => other.to_vec(),
    }
}

fn guard_store(
    args: &GuardArgs,
    pool_size: u32,
    group_commit: Option<bool>,
) -> Result<Arc<DieselStore>, BenchError> {
    let mut builder = DieselStore::builder(&args.url)
        .max_size(pool_size)
        .min_idle(pool_size)
        .connection_timeout(Duration::from_secs(30))
        .relaxed_effects_marks(args.relaxed_effects_marks);
    if let Some(on) = group_commit {
        builder = builder.group_commit(on);
    }
    if let Some(sql) = args.on_connect.clone() {
        builder = builder.on_connect(move |conn| conn.batch_execute(&sql));
    }
    let store = builder.build()?;
    store.migrate()?;
    Ok(Arc::new(store))
}

fn guard(args: &GuardArgs) -> Result<(), BenchError> {
    let threads = args.threads.max(1);
    let rounds = args.rounds.clamp(1, args.jobs.max(1));
    let pool_size = match args.pool_size {
        Some(n) => n.max(1),
        None => u32::try_from(threads + 1)?,
    };
    let compare = args.group_commit == Some(GroupCommitArg::Compare);
    let group_commit = match args.group_commit {
        Some(GroupCommitArg::On | GroupCommitArg::Compare) => Some(true),
        Some(GroupCommitArg::Off) => Some(false),
        None => None,
    };
    let store = guard_store(args, pool_size, group_commit)?;
    let has_effects = args.effects != Effects::None;
    let runner = Guard::new(store.clone(), args.effects.mode(), has_effects)?;
    let single = if compare {
        let store = guard_store(args, pool_size, Some(false))?;
        Some(Guard::new(store, args.effects.mode(), has_effects)?)
    } else {
        None
    };
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
    if let Some(s) = &single {
        s.run(&format!("{prefix}-ws"), warmup, threads)?;
    }
    if let Some(b) = &baseline {
        b.run(&format!("{prefix}-wb"), warmup, threads)?;
    }
    let grouped_before = store.group_stats();

    let mut sides = Vec::new();
    if run_guard {
        sides.push(Side::Guard);
    }
    if single.is_some() {
        sides.push(Side::Single);
    }
    if baseline.is_some() {
        sides.push(Side::Baseline);
    }
    let mut guarded = Measured::default();
    let mut ungrouped = Measured::default();
    let mut hand_written = Measured::default();
    for round in 0..rounds {
        // Spread the remainder over the first rounds so the total is exactly --jobs.
        let n = args.jobs / rounds + usize::from(round < args.jobs % rounds);
        for side in round_order(round, &sides) {
            match (side, &single, &baseline) {
                (Side::Guard, _, _) => {
                    guarded.merge(runner.run(&format!("{prefix}-g{round}"), n, threads)?);
                }
                (Side::Single, Some(s), _) => {
                    ungrouped.merge(s.run(&format!("{prefix}-s{round}"), n, threads)?);
                }
                (Side::Baseline, _, Some(b)) => {
                    hand_written.merge(b.run(&format!("{prefix}-b{round}"), n, threads)?);
                }
                _ => {}
            }
        }
    }

    let guarded = guarded.summary();
    if run_guard {
        let line = bench_line("guard", &info, &guarded);
        println!(
            "{}",
            with_group_commit(&line, store.group_stats().is_some())
        );
    }
    let ungrouped = single.as_ref().map(|_| ungrouped.summary());
    if let Some(u) = &ungrouped {
        println!(
            "{}",
            with_group_commit(&bench_line("guard", &info, u), false)
        );
    }
    let hand_written = baseline.as_ref().map(|_| hand_written.summary());
    if let Some(h) = &hand_written {
        println!("{}", bench_line("baseline", &info, h));
        if run_guard {
            println!("{}", ratio_line(&info, &guarded, h));
        }
    }
    if let (Some(u), true) = (&ungrouped, run_guard) {
        let groups = match (grouped_before, store.group_stats()) {
            (Some(before), Some(after)) => Some((
                mean_group(before.acquires, after.acquires),
                mean_group(before.finishes, after.finishes),
            )),
            _ => None,
        };
        println!(
            "{}",
            serde_json::json!({
                "bench": "group_commit",
                "backend": info.backend,
                "effects": info.effects,
                "threads": threads,
                "grouped_over_single": ratio(guarded.jobs_per_s, u.jobs_per_s),
                "grouped_over_baseline": hand_written.as_ref().and_then(|h| ratio(guarded.jobs_per_s, h.jobs_per_s)),
                "single_over_baseline": hand_written.as_ref().and_then(|h| ratio(u.jobs_per_s, h.jobs_per_s)),
                "mean_acquire_group": groups.and_then(|g| g.0),
                "mean_finish_group": groups.and_then(|g| g.1),
            })
        );
    }
    Ok(())
}

/// A result line with `"group_commit":on` first.
fn with_group_commit(line: &str, on: bool) -> String {
    match line.strip_prefix('{') {
        Some(rest) => format!("{{\"group_commit\":{on},{rest}"),
        None => line.to_owned(),
    }
}

/// `a / b` to three decimals, if `b` is not zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| (a / b * 1000.0).round() / 1000.0)
}

/// Requests per group between two readings of a coalescer's counters.
fn mean_group(
    before: safejob_core::group::GroupStats,
    after: safejob_core::group::GroupStats,
) -> Option<f64> {
    let groups = after.groups.saturating_sub(before.groups);
    let items = after.items.saturating_sub(before.items);
    (groups > 0).then(|| (items as f64 / groups as f64 * 100.0).round() / 100.0)
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

    /// Over 6 rounds each of three sides runs in each position twice; two sides alternate.
    /// Catches an order that always times one side first.
    #[test]
    fn three_sides_are_balanced_over_six_rounds() {
        let sides = [Side::Guard, Side::Single, Side::Baseline];
        for side in sides {
            for position in 0..3 {
                let n = (0..6)
                    .filter(|&r| round_order(r, &sides)[position] == side)
                    .count();
                assert_eq!(n, 2, "{side:?} at position {position}");
            }
        }
        let two = [Side::Guard, Side::Baseline];
        assert_eq!(round_order(0, &two), vec![Side::Guard, Side::Baseline]);
        assert_eq!(round_order(1, &two), vec![Side::Baseline, Side::Guard]);
    }

    #[test]
    fn group_commit_parses() {
        let cli = Cli::try_parse_from([
            "safejob-bench",
            "guard",
            "--url",
            "sqlite://x.db",
            "--group-commit",
            "compare",
        ])
        .unwrap();
        let Command::Guard(args) = cli.command else {
            panic!("not the guard subcommand");
        };
        assert_eq!(args.group_commit, Some(GroupCommitArg::Compare));
    }

    #[test]
    fn run_prefixes_differ() {
        assert_ne!(run_prefix(), run_prefix());
    }
}
