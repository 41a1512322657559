//! A worker process: claims dispatches from the shared table and runs each through a real
//! [`Runner`], as a queue consumer would, until the table is empty.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use safejob_core::{Disposition, Report, RunError, Runner};
use safejob_diesel::DieselStore;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use super::{
    db,
    events::{AmbiguityLayer, EventLog},
    job::{EffectsKind, Sabotage, TortureJob},
};

/// How many times one dispatch is retried in the worker (a queue redelivering it) before it is
/// left to the final recovery pass.
const MAX_TRIES: u32 = 40;
/// The longest a worker keeps going, whatever happens.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The hidden `worker` subcommand's arguments (the parent passes them; not for people).
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The namespace's URL (possibly through the proxy).
    #[arg(long)]
    pub url: String,
    /// PostgreSQL schema to put on the search path.
    #[arg(long)]
    pub schema: Option<String>,
    /// This process's name in rows and logs (`w<slot>.<incarnation>`).
    #[arg(long)]
    pub name: String,
    /// Lease TTL in milliseconds.
    #[arg(long)]
    pub ttl_ms: u64,
    /// Effects mode.
    #[arg(long, value_enum)]
    pub effects: EffectsKind,
    /// Where to append this worker's events.
    #[arg(long)]
    pub events: PathBuf,
    /// Pause after each dispatch, in milliseconds (spreads the run over its duration).
    #[arg(long, default_value_t = 0)]
    pub pace_ms: u64,
    /// How long each `perform` works, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub perform_ms: u64,
    /// A broken job, to show the checker fails the run.
    #[arg(long, value_enum, default_value_t = Sabotage::None)]
    pub sabotage: Sabotage,
    /// The database of the harness tables (dispatches, perform rows, after-commit effect rows)
    /// when it is not the jobs' database: the failover torture keeps them outside the cluster.
    #[arg(long)]
    pub harness_url: Option<String>,
    /// PostgreSQL schema of the harness tables on `--harness-url`.
    #[arg(long)]
    pub harness_schema: Option<String>,
}

/// Installs the tracing subscriber: the ambiguity layer sees every event of the runner; the
/// human-readable log (stderr) shows warnings unless `RUST_LOG` says otherwise.
pub fn init_tracing(log: Option<EventLog>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(log.map(AmbiguityLayer))
        .with(fmt)
        .try_init();
}

/// Builds a store, retrying while the database (or the proxy) refuses, bounded.
pub fn connect(
    make: impl Fn() -> Result<DieselStore, safejob_diesel::ConnectError>,
) -> Result<DieselStore, String> {
    let mut last = String::new();
    for _ in 0..150 {
        match make() {
            Ok(store) => return Ok(store),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// Runs one dispatch as a queue consumer would: retries what the disposition says to retry (in
/// place, after the suggested delay), at most [`MAX_TRIES`] times, and logs each run's outcome.
pub fn dispatch(runner: &Runner, job: &TortureJob<'_>, log: &EventLog) -> bool {
    let k = job.key_no;
    for _ in 0..MAX_TRIES {
        let result = runner.run(job);
        let delay = match &result {
            Ok(Report::Succeeded { .. }) => {
                log.line(&format!("succeeded {k}"));
                return true;
            }
            Ok(Report::AlreadySucceeded { .. }) => {
                log.line(&format!("already {k}"));
                return true;
            }
            Ok(Report::Failed { .. } | Report::AlreadyFailed { .. }) => {
                log.line(&format!("failed {k}"));
                return true;
            }
            Ok(Report::Busy { retry_after, .. }) => {
                log.line(&format!("busy {k}"));
                // Ask again soon: a frozen holder's lease is taken over as soon as it expires.
                (*retry_after).min(Duration::from_millis(250))
            }
            Ok(Report::RetryLater { .. }) => {
                log.line(&format!("retry_later {k}"));
                Duration::from_millis(50)
            }
            Err(RunError::LeaseLost { fence, .. }) => {
                log.line(&format!("lease_lost {k} {fence}"));
                Duration::from_millis(20)
            }
            Err(RunError::EffectsInDoubt { .. }) => {
                // Dead-lettered: the effects are in doubt and recorded so; nobody re-runs them.
                log.line(&format!("effects_in_doubt {k}"));
                return true;
            }
            Err(RunError::Store(_)) => {
                log.line(&format!("store_error {k}"));
                Duration::from_millis(100)
            }
            Err(RunError::Job { .. }) => {
                log.line(&format!("job_error {k}"));
                Duration::from_millis(50)
            }
            Err(RunError::EffectsRolledBack { .. }) => {
                log.line(&format!("effects_rolled_back {k}"));
                Duration::from_millis(50)
            }
            Err(_) => {
                log.line(&format!("error {k}"));
                return false;
            }
        };
        if safejob_core::disposition(&result) == Disposition::DeadLetter {
            return false;
        }
        thread::sleep(delay.clamp(Duration::from_millis(10), Duration::from_secs(2)));
    }
    log.line(&format!("gave_up {k}"));
    false
}

/// Claims one dispatch: `Ok(None)` when the table is empty.
fn claim(harness: &DieselStore, name: &str, pick: usize) -> db::DbResult<Option<(i64, u64)>> {
    for _ in 0..20 {
        let free = db::pairs(
            harness,
            "SELECT id AS a, key_no AS b FROM torture_dispatch WHERE taken_by IS NULL \
             ORDER BY id LIMIT 4",
        )?;
        if free.is_empty() {
            return Ok(None);
        }
        let candidate = free[pick % free.len()];
        let taken = db::exec(
            harness,
            &format!(
                "UPDATE torture_dispatch SET taken_by = '{name}' WHERE id = {} AND taken_by IS NULL",
                candidate.a
            ),
        )?;
        if taken == 1 {
            return Ok(Some((
                candidate.a,
                u64::try_from(candidate.b).unwrap_or_default(),
            )));
        }
    }
    Err("could not claim a dispatch in 20 tries".into())
}

/// The worker process's main.
pub fn main(args: WorkerArgs) -> ExitCode {
    let log = match EventLog::open(&args.events) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("worker {}: cannot open its event file: {e}", args.name);
            return ExitCode::from(2);
        }
    };
    init_tracing(Some(log.clone()));
    log.line("started");
    let open_on = |url: &str, schema: Option<&str>, max: u32, test: bool| {
        connect(|| {
            db::builder(url, schema)
                .max_size(max)
                .min_idle(0)
                .test_on_check_out(test)
                .connection_timeout(Duration::from_secs(3))
                .build()
        })
    };
    let open = |max: u32, test: bool| open_on(&args.url, args.schema.as_deref(), max, test);
    let open_harness = |max: u32, test: bool| match &args.harness_url {
        Some(url) => open_on(url, args.harness_schema.as_deref(), max, test),
        None => open(max, test),
    };
    // The job's store keeps the store's defaults (no test on check-out); the harness's own store
    // tests connections so a cut one is not handed back to a harness statement again and again.
    let (store, harness) = match (open(3, false), open_harness(2, true)) {
        (Ok(store), Ok(harness)) => (store, harness),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("worker {}: cannot connect: {e}", args.name);
            return ExitCode::from(3);
        }
    };
    let runner = match Runner::builder(Arc::new(store))
        .worker_id(args.name.clone())
        .default_ttl(Duration::from_millis(args.ttl_ms))
        .effects(args.effects.runner_mode())
        .build()
    {
        Ok(runner) => runner,
        Err(e) => {
            eprintln!("worker {}: {e}", args.name);
            return ExitCode::from(2);
        }
    };
    // --effects outbox: this process relays too, until it exits (dropping the handle stops it).
    let _relay = if args.effects == EffectsKind::Outbox {
        super::outbox::start_relay(
            || open(2, true),
            &args.name,
            Duration::from_millis(args.ttl_ms),
        )
    } else {
        None
    };
    let started = Instant::now();
    let mut errors_in_a_row = 0u32;
    let mut pick = std::process::id() as usize;
    while started.elapsed() < MAX_LIFETIME {
        pick = pick.wrapping_mul(31).wrapping_add(7);
        let (id, key_no) = match claim(&harness, &args.name, pick) {
            Ok(Some(claimed)) => claimed,
            Ok(None) => {
                log.line("drained");
                return ExitCode::SUCCESS;
            }
            Err(_) => {
                errors_in_a_row += 1;
                if errors_in_a_row > 600 {
                    eprintln!("worker {}: the dispatch table stays unreachable", args.name);
                    return ExitCode::from(3);
                }
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        errors_in_a_row = 0;
        let job = TortureJob {
            key_no,
            effects: args.effects,
            harness: &harness,
            worker: &args.name,
            perform_for: Duration::from_millis(args.perform_ms),
            renew: true,
            sabotage: args.sabotage,
            observe: None,
        };
        log.line(&format!("claimed {key_no} {id}"));
        dispatch(&runner, &job, &log);
        if args.pace_ms > 0 {
            thread::sleep(Duration::from_millis(args.pace_ms));
        }
    }
    ExitCode::SUCCESS
}
