//! The `work` command for your own binary: only it knows the job types, so it runs the workers.
//!
//! ```no_run
//! use safejob_core::queue::Registry;
//!
//! fn main() -> std::process::ExitCode {
//!     // `myapp work --queues default,mail --concurrency 8`, plus every operator command.
//!     safejob_cli::main_with(|| {
//!         let registry = Registry::new(); // register your kinds here
//!         registry
//!     })
//! }
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use safejob_core::queue::{QueueStore, Registry, ShutdownReport, Worker};

use crate::{CliError, duration::parse_duration};

/// Options of the `work` command.
#[derive(Debug, Clone, Args)]
pub struct WorkArgs {
    /// Queues to serve, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "default")]
    pub queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u32,
    /// Stop claiming after this many jobs were run (those already claimed finish).
    #[arg(long)]
    pub max_jobs: Option<u64>,
    /// Stop after this long (e.g. `30m`, `8h`); running jobs get the shutdown grace period.
    #[arg(long, value_parser = parse_duration)]
    pub max_runtime: Option<Duration>,
    /// Lease length of each claim: a job still running when it ends is taken over elsewhere
    /// unless renewed (the pool renews running jobs). Per-kind timeouts stay the kinds' own.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub lease_ttl: Duration,
    /// How often to look for due jobs when no wake-up arrives.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub poll_interval: Duration,
    /// How long running jobs get to finish at shutdown (SIGTERM, SIGINT, limits) before they
    /// are asked to stop and given back.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub grace: Duration,
    /// The worker's id in leases and heartbeats (default: host-pid).
    #[arg(long)]
    pub id: Option<String>,
}

/// Why a `work` run ended, and what the pool did at shutdown.
#[derive(Debug)]
pub struct WorkSummary {
    /// Jobs run.
    pub handled: u64,
    /// `signal`, `max-jobs` or `max-runtime`.
    pub stopped_by: &'static str,
    /// The pool's shutdown.
    pub shutdown: ShutdownReport,
}

/// Runs a worker pool over `store` with `registry` until SIGTERM / SIGINT, `--max-jobs` or
/// `--max-runtime`, then shuts it down gracefully (`--grace`).
pub fn run_work(
    args: &WorkArgs,
    store: Arc<dyn QueueStore>,
    registry: Registry,
) -> Result<WorkSummary, CliError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| CliError::Io(format!("cannot handle signal {signal}: {e}")))?;
    }
    let id = args.id.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let pool = Worker::builder(store, registry)
        .id(id.clone())
        .queues(args.queues.iter().cloned())
        .concurrency(args.concurrency)
        .lease_ttl(args.lease_ttl)
        .poll_interval(args.poll_interval)
        .start()
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    eprintln!(
        "worker {id}: serving {} with {} at once",
        args.queues.join(","),
        args.concurrency
    );
    let started = Instant::now();
    let stopped_by = loop {
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if args.max_jobs.is_some_and(|max| pool.handled() >= max) {
            break "max-jobs";
        }
        if args.max_runtime.is_some_and(|max| started.elapsed() >= max) {
            break "max-runtime";
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let handled = pool.handled();
    eprintln!("worker {id}: stopping ({stopped_by}) after {handled} jobs");
    let shutdown = pool.shutdown(args.grace);
    Ok(WorkSummary {
        handled,
        stopped_by,
        shutdown,
    })
}
