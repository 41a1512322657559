//! `safejob-bench queue`: how fast our durable queue takes jobs in and works them off, beside
//! River and fang on the same PostgreSQL.
//!
//! Every system runs the same workload, in this order, and prints one JSON line per step:
//!
//! 1. `enqueue_single` — N no-op jobs inserted one call at a time, from one client thread;
//! 2. `enqueue_batched` — N more in calls of `--batch` jobs (one statement each where the system
//!    has a multi-row insert);
//! 3. `drain` — the 2N jobs now waiting, worked off by T workers: timed from the moment the
//!    workers start until every job is completed (its completion committed), so the line says
//!    `"jobs": 2N`.
//!
//! Before the timed steps every system runs the same three steps untimed on `--warmup` jobs, so
//! connections, prepared statements and caches are warm for all alike.
//!
//! Our queue runs unguarded, and with `--guarded` also with every job a [`GuardedJob`] (the
//! exactly-once guard's acquire and finalize inside the queue's claim and completion). Each pass
//! leaves finished rows (and, on PostgreSQL, dead tuples until a vacuum) behind for the passes
//! after it, so the two modes are timed in the order unguarded, guarded, guarded, unguarded, after
//! both have warmed up, and each mode's line sums its two passes (`"passes": 2`): neither mode
//! gains from going first. The last line compares the figures with the targets of issue 5
//! (guarded drain at least 1.0 × unguarded and 1.5 × the faster peer, batched enqueue at least
//! 20,000 jobs/s).
//! Peers (`--peer river`, `--peer fang`, `--peer apalis`, crate feature `peers`) run in their own databases on
//! the same server (see [`crate::peers`]).
//!
//! Every system runs in a database of its own created for this run ([`crate::scratch`]: named
//! after `--url`'s, migrated by the system, dropped at the end unless `--keep`), so no run
//! measures what an earlier one left behind; when a system's run ends its tables' rows and bytes
//! are printed (a `queue_tables` line, [`crate::sizes`]). Finished jobs are kept or deleted alike
//! for every system (`--retention`, [`Retention`]). Each step's line carries the commits,
//! statements and WAL bytes the step cost, in total and per job ([`crate::counters`]); a table
//! for people goes to standard error at the end.

use std::{
    cell::RefCell,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use clap::ValueEnum;
use safejob_core::{
    IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    history::HistoryStore,
    queue::{
        EnqueueOptions, GuardedJob, NewJob, Queue, QueueJob, QueueStore, Registry, WorkContext,
        WorkError, Worker,
    },
};
use safejob_diesel::{DieselQueue, DieselStore};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    Effects,
    counters::{Counts, Meter, StatementCounter},
    driver::BenchError,
    figure::{Figure, Op, figure_line, ledger_cost_line, line, round1, round3, summary_table},
    run_prefix,
    scratch::Scratch,
    sizes::{table_sizes, tables_line},
    stats::load1,
};

/// The batched-enqueue target, jobs per second.
pub const ENQUEUE_TARGET: f64 = 20_000.0;
/// Guarded drain over unguarded drain, at least.
pub const GUARD_FREE_TARGET: f64 = 1.0;
/// Guarded drain over the faster peer's drain, at least.
pub const PEER_TARGET: f64 = 1.5;

/// A system we compare ours with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// River for Rust (`riverqueue` crate): tokio + sqlx, its own `river_*` tables.
    River,
    /// fang (`fang` crate), its blocking diesel queue and worker pool, its `fang_tasks` table.
    Fang,
    /// apalis (`apalis-postgres` crate): tokio + sqlx, its `apalis.jobs` table.
    Apalis,
}

impl Peer {
    /// The name printed in `"system"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::River => "river",
            Self::Fang => "fang",
            Self::Apalis => "apalis",
        }
    }
}

/// What happens to a job once it has finished, the same for every system of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Retention {
    /// Finished jobs stay in their tables: ours (until `prune`), River's (`completed`, its job
    /// cleaner set never to delete them), fang's (`RetentionMode::KeepAll`, state `finished`).
    Keep,
    /// Finished jobs are deleted during the drain, and the drain ends when none is left: fang
    /// deletes each task as it finishes (`RetentionMode::RemoveAll`, its default); River's
    /// job cleaner deletes completed jobs at once (retention 0) every 100 ms; ours runs
    /// `Queue::prune` (retention 0) in a loop beside the workers. Our guard rows (`safe_jobs`)
    /// stay: they are what makes a job exactly once, and have a minimum retention.
    Delete,
}

impl Retention {
    /// The name printed in `"retention"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Delete => "delete",
        }
    }
}

/// Arguments of `safejob-bench queue`.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// The server, and a database on it that exists (a file path for SQLite): each system runs
    /// in a fresh database named after it, `<database>_<system>_<random>`, created on that
    /// server for this run (postgres://…, mysql://…, sqlite://…), or memory:// for the
    /// in-process MemoryQueue.
    #[arg(long)]
    pub url: String,
    /// Leave the fresh databases (and SQLite files) in place after the run, to look at them.
    #[arg(long)]
    pub keep: bool,
    /// What happens to finished jobs, for every system alike.
    #[arg(long, value_enum, default_value_t = Retention::Keep)]
    pub retention: Retention,
    /// Milliseconds to wait after a step before reading PostgreSQL's per-database counts, which
    /// a busy backend publishes up to 10 s after it goes idle.
    #[arg(long, default_value_t = 11_000)]
    pub settle_ms: u64,
    /// Jobs per enqueue step (N); the drain works off both steps' jobs, 2N.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Workers working the drain (threads for us and fang, River's max_workers).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Jobs per call in the batched enqueue.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Untimed jobs per enqueue step that every system enqueues and drains before the timed
    /// steps, so that connections, prepared statements and caches are warm for all alike (else
    /// whichever runs first pays for them).
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    /// Also run our queue with every job guarded (exactly once), and compare.
    #[arg(long)]
    pub guarded: bool,
    /// Where guarded jobs' on_succeeded_once runs. Transactional puts it inside the completion's
    /// transaction; after-commit records it with one more statement.
    #[arg(long, value_enum, default_value_t = Effects::Transactional)]
    pub effects: Effects,
    /// Enqueue guarded jobs without deduplicating them by key
    /// (`EnqueueOptions::allow_duplicates`): measures what the default deduplication costs.
    #[arg(long)]
    pub allow_duplicates: bool,
    /// Also run the same workload through a peer (repeat for both). Needs the `peers` feature.
    #[arg(long = "peer", value_enum)]
    pub peers: Vec<Peer>,
    /// PostgreSQL server and database for the peers (defaults to --url). Each peer gets a fresh
    /// database named after it there: `<database>_river_<random>` (schema river_bench) and
    /// `<database>_fang_<random>` and `<database>_apalis_<random>`.
    #[arg(long)]
    pub peer_url: Option<String>,
    /// Measure only the peers, not our queue.
    #[arg(long)]
    pub peers_only: bool,
    /// The audit ledger (safe_history) while our queue runs: `on` (the default), `off`, or
    /// `compare`: the workload (guarded with `--guarded`, else unguarded) with the ledger on and
    /// off in one run, in the order on, off, off, on after both warmed up, each mode's figures
    /// its two passes summed, then a `ledger_cost` line. On SQL backends the switch is
    /// database-wide; the run leaves the ledger on.
    #[arg(long, value_enum, default_value_t = LedgerMode::On)]
    pub ledger: LedgerMode,
    /// Our pool writes its completions in groups, one commit per group
    /// (`WorkerBuilder::batch_completions`: `true` or `false`); unset, the store's default (on
    /// for SQLite, off for PostgreSQL and MariaDB). Completions of jobs with transactional
    /// effects are never grouped.
    #[arg(long, action = clap::ArgAction::Set)]
    pub batch_completions: Option<bool>,
}

/// What `--ledger` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LedgerMode {
    /// Record every transition (the default of the stores too).
    On,
    /// Record nothing.
    Off,
    /// Both, in one balanced run.
    Compare,
}

/// The targets of issue 5, judged on the figures of one run; a target whose figures are missing
/// is `null`, neither passed nor failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Our guarded drain over our unguarded drain.
    pub guarded_over_unguarded: Option<f64>,
    /// The peer with the faster drain, and its rate.
    pub best_peer: Option<(&'static str, f64)>,
    /// Our guarded drain over the faster peer's.
    pub guarded_over_best_peer: Option<f64>,
    /// Our batched enqueue (unguarded), jobs per second.
    pub enqueue_batched: Option<f64>,
}

impl Verdict {
    /// Reads the targets' inputs from `figures`. Our drain is compared with the peers' only when
    /// it ran on the same backend as theirs (PostgreSQL).
    pub fn of(figures: &[Figure]) -> Self {
        let find = |op: Op, guarded: bool| {
            figures
                .iter()
                .find(|f| f.system == "safejob" && f.op == op && f.guarded == guarded)
        };
        let unguarded = find(Op::Drain, false);
        let guarded = find(Op::Drain, true);
        let best_peer = figures
            .iter()
            .filter(|f| f.system != "safejob" && f.op == Op::Drain)
            .max_by(|a, b| a.jobs_per_s().total_cmp(&b.jobs_per_s()));
        let ratio = |a: Option<&Figure>, b: Option<&Figure>| match (a, b) {
            (Some(a), Some(b)) if a.backend == b.backend && b.jobs_per_s() > 0.0 => {
                Some(a.jobs_per_s() / b.jobs_per_s())
            }
            _ => None,
        };
        Self {
            guarded_over_unguarded: ratio(guarded, unguarded),
            guarded_over_best_peer: ratio(guarded, best_peer),
            best_peer: best_peer.map(|p| (p.system, p.jobs_per_s())),
            enqueue_batched: find(Op::EnqueueBatched, false).map(Figure::jobs_per_s),
        }
    }

    /// The verdict line: `{"bench":"queue_targets",…}` with each ratio and whether it passes.
    pub fn line(&self, backend: &str, workers: usize, load1: Option<f64>) -> String {
        let pass = |x: Option<f64>, target: f64| x.map(|x| x >= target);
        line(&[
            ("bench", json!("queue_targets")),
            ("backend", json!(backend)),
            ("workers", json!(workers)),
            (
                "guarded_over_unguarded",
                json!(self.guarded_over_unguarded.map(round3)),
            ),
            (
                "guard_free",
                json!(pass(self.guarded_over_unguarded, GUARD_FREE_TARGET)),
            ),
            ("best_peer", json!(self.best_peer.map(|p| p.0))),
            (
                "guarded_over_best_peer",
                json!(self.guarded_over_best_peer.map(round3)),
            ),
            (
                "beats_peers",
                json!(pass(self.guarded_over_best_peer, PEER_TARGET)),
            ),
            (
                "enqueue_batched_jobs_per_s",
                json!(self.enqueue_batched.map(round1)),
            ),
            (
                "enqueue_fast",
                json!(pass(self.enqueue_batched, ENQUEUE_TARGET)),
            ),
            ("load1", json!(load1)),
        ])
    }
}

/// Runs `safejob-bench queue`: prints each figure as soon as it is measured, each system's
/// table sizes when its run ends, then the verdict (and the table for people on stderr).
pub fn run(args: &QueueArgs) -> Result<(), BenchError> {
    let workers = args.workers.max(1);
    let workload = Workload {
        jobs: args.jobs.max(1),
        workers,
        batch: args.batch.max(1),
        warmup: args.warmup,
        retention: args.retention,
    };
    let settle = Duration::from_millis(args.settle_ms);
    let mut figures = Vec::new();
    let mut emit = |f: Figure| {
        println!("{}", figure_line(&f, load1()));
        figures.push(f);
    };
    let mut backend = "postgres";
    if !args.peers_only {
        let db = if args.url.starts_with("memory:") {
            None
        } else {
            Some(Scratch::create(&args.url, "safejob", args.keep)?)
        };
        let counter = StatementCounter::default();
        let url = db.as_ref().map_or(args.url.as_str(), Scratch::url);
        let (store, ledger, name) = open_counted(url, workers, Some(counter.clone()))?;
        backend = name;
        let meter = Meter::new(db.as_ref(), Some(counter), settle)?;
        let ours = Ours {
            store,
            ledger,
            ledger_mode: args.ledger,
            backend,
            w: workload,
            effects: args.effects,
            allow_duplicates: args.allow_duplicates,
            meter: RefCell::new(meter),
            batch_completions: args.batch_completions,
        };
        let ran = if args.ledger == LedgerMode::Compare {
            ours.run_ledger_compare(args.guarded)
        } else {
            ours.run(args.guarded)
        };
        for f in ran? {
            emit(f);
        }
        drop(ours);
        if let Some(db) = db {
            print_tables("safejob", backend, &db, args.retention)?;
            db.finish()?;
        }
    }
    if !args.peers.is_empty() {
        let url = args.peer_url.as_deref().unwrap_or(&args.url);
        for peer in dedup(&args.peers) {
            for f in run_peer(peer, url, &workload, args.keep, settle)? {
                emit(f);
            }
        }
    }
    if !args.peers_only && args.ledger == LedgerMode::Compare {
        println!("{}", ledger_cost_line(&figures, backend, workers, load1()));
    }
    println!("{}", Verdict::of(&figures).line(backend, workers, load1()));
    eprint!("{}", summary_table(&figures));
    Ok(())
}

/// Prints the `queue_tables` line of `system`'s database.
pub fn print_tables(
    system: &str,
    backend: &str,
    db: &Scratch,
    retention: Retention,
) -> Result<(), BenchError> {
    let sizes = table_sizes(db)?;
    println!(
        "{}",
        tables_line(
            system,
            backend,
            db.name(),
            retention.as_str(),
            &sizes,
            load1()
        )
    );
    Ok(())
}

/// Each peer once, in the order first given.
fn dedup(peers: &[Peer]) -> Vec<Peer> {
    let mut out = Vec::new();
    for &p in peers {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The same workload, as a peer receives it.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// N, per enqueue step.
    pub jobs: usize,
    /// T.
    pub workers: usize,
    /// Jobs per batched call.
    pub batch: usize,
    /// Untimed jobs per enqueue step, enqueued and drained first.
    pub warmup: usize,
    /// What happens to finished jobs.
    pub retention: Retention,
}

/// Runs `peer` in a fresh database on the server of `url`, prints its tables, drops it.
#[cfg(feature = "peers")]
fn run_peer(
    peer: Peer,
    url: &str,
    w: &Workload,
    keep: bool,
    settle: Duration,
) -> Result<Vec<Figure>, BenchError> {
    let named = |e: BenchError| -> BenchError { format!("--peer {}: {e}", peer.as_str()).into() };
    use crate::scratch::Kind;
    if Kind::of(url) != Some(Kind::Postgres) {
        return Err(named(
            "the peers run on PostgreSQL: give a postgres:// URL (--peer-url)".into(),
        ));
    }
    let db = Scratch::create(url, peer.as_str(), keep).map_err(|e| named(e.into()))?;
    let ran = (|| -> Result<Vec<Figure>, BenchError> {
        let figures = match peer {
            Peer::River => crate::peers::river::run(&db, w, settle)?,
            Peer::Fang => crate::peers::fang::run(&db, w, settle)?,
            Peer::Apalis => crate::peers::apalis::run(&db, w, settle)?,
        };
        print_tables(peer.as_str(), "postgres", &db, w.retention)?;
        Ok(figures)
    })();
    let figures = ran.map_err(named)?;
    db.finish().map_err(|e| named(e.into()))?;
    Ok(figures)
}

#[cfg(not(feature = "peers"))]
fn run_peer(
    peer: Peer,
    _url: &str,
    _w: &Workload,
    _keep: bool,
    _settle: Duration,
) -> Result<Vec<Figure>, BenchError> {
    Err(format!(
        "--peer {} needs safejob-bench built with the `peers` feature (--features peers, or \
         --all-features)",
        peer.as_str()
    )
    .into())
}

/// Our queue's store for `url`, and the backend's name: the in-process [`MemoryQueue`] for
/// `memory://`, else a [`DieselQueue`] on a migrated [`DieselStore`] whose pool has a connection
/// for each worker, the claimer, the maintenance thread and the enqueuing client.
///
/// [`MemoryQueue`]: safejob_core::queue::MemoryQueue
pub fn open_ours(
    url: &str,
    workers: usize,
) -> Result<(Arc<dyn QueueStore>, &'static str), BenchError> {
    open_ledgered(url, workers).map(|(store, _, backend)| (store, backend))
}

/// Our queue, the same queue as a [`HistoryStore`] (its audit ledger's switch), and the
/// backend's name.
pub type Ledgered = (Arc<dyn QueueStore>, Arc<dyn HistoryStore>, &'static str);

/// [`open_ours`], with the same queue as a [`HistoryStore`] too.
pub fn open_ledgered(url: &str, workers: usize) -> Result<Ledgered, BenchError> {
    open_counted(url, workers, None)
}

/// [`open_ledgered`], with every pooled connection's statements counted by `counter`.
pub fn open_counted(
    url: &str,
    workers: usize,
    counter: Option<StatementCounter>,
) -> Result<Ledgered, BenchError> {
    if url.starts_with("memory:") {
        let queue = Arc::new(safejob_core::queue::MemoryQueue::new());
        return Ok((queue.clone(), queue, "memory"));
    }
    let pool_size = u32::try_from(workers + 3)?;
    let mut builder = DieselStore::builder(url)
        .max_size(pool_size)
        .min_idle(pool_size)
        .connection_timeout(Duration::from_secs(30));
    if let Some(counter) = counter {
        builder = builder.on_connect(move |conn| {
            use diesel::Connection;
            use safejob_diesel::ConnectionRef;
            match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => c.set_instrumentation(counter.clone()),
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => c.set_instrumentation(counter.clone()),
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => c.set_instrumentation(counter.clone()),
                // A backend added later: its statements go uncounted (`null`), never guessed.
                _ => {}
            }
            Ok(())
        });
    }
    let store = builder.build()?;
    store.migrate()?;
    let backend = store.backend().as_str();
    let queue = Arc::new(DieselQueue::new(Arc::new(store)));
    Ok((queue.clone(), queue, backend))
}

/// Jobs worked off by the current drain: the no-op jobs count themselves.
static DONE: AtomicUsize = AtomicUsize::new(0);

/// The unguarded no-op job.
#[derive(Serialize, Deserialize)]
struct Noop {
    n: u64,
}

impl QueueJob for Noop {
    const KIND: &'static str = "bench_noop";
    type Error = std::io::Error;

    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// The guarded no-op job: a fresh idempotency key each, so every one is granted and succeeds.
/// Its `on_succeeded_once` does nothing; with `--effects none` it declares no effects at all.
#[derive(Serialize, Deserialize)]
struct GuardedNoop {
    key: String,
    has_effects: bool,
}

impl SafeJob for GuardedNoop {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.as_str())
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        DONE.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::done())
    }

    fn has_effects(&self) -> bool {
        self.has_effects
    }
}

impl GuardedJob for GuardedNoop {
    const KIND: &'static str = "bench_guarded_noop";
}

/// Our queue, on one store.
struct Ours {
    store: Arc<dyn QueueStore>,
    ledger: Arc<dyn HistoryStore>,
    ledger_mode: LedgerMode,
    backend: &'static str,
    w: Workload,
    effects: Effects,
    allow_duplicates: bool,
    meter: RefCell<Meter>,
    batch_completions: Option<bool>,
}

impl Ours {
    /// The three steps unguarded, and with `guarded` also guarded, each pass in a queue of its
    /// own (so nothing else in the database is claimed, and nothing of ours is left for anyone
    /// else). With both modes: warm-up of each, then the timed passes unguarded, guarded, guarded,
    /// unguarded, so each mode runs once before and once after the other; each mode's figures are
    /// its two passes summed. Figures in step order, unguarded first.
    fn run(&self, guarded: bool) -> Result<Vec<Figure>, BenchError> {
        let on = self.ledger_mode != LedgerMode::Off;
        self.ledger.set_ledger(on)?;
        let (modes, order): (&[bool], &[bool]) = if guarded {
            (&[false, true], &BALANCED)
        } else {
            (&[false], &[false])
        };
        if self.w.warmup > 0 {
            for &mode in modes {
                self.steps(mode, self.w.warmup, false)?;
            }
        }
        let mut passes = Vec::with_capacity(3 * order.len());
        for &mode in order {
            passes.extend(self.steps(mode, self.w.jobs, true)?);
        }
        let mut figures = summed(passes, modes, |f| f.guarded);
        for f in &mut figures {
            f.ledger = Some(on);
        }
        Ok(figures)
    }

    /// The workload (guarded or not) with the ledger on and off: warm-up of each, then the timed
    /// passes on, off, off, on; each mode's figures are its two passes summed, on first. Leaves
    /// the ledger on.
    fn run_ledger_compare(&self, guarded: bool) -> Result<Vec<Figure>, BenchError> {
        let pass = |on: bool, jobs: usize, measured| -> Result<Vec<Figure>, BenchError> {
            self.ledger.set_ledger(on)?;
            let mut figures = self.steps(guarded, jobs, measured)?;
            for f in &mut figures {
                f.ledger = Some(on);
            }
            Ok(figures)
        };
        let ran = (|| {
            if self.w.warmup > 0 {
                pass(true, self.w.warmup, false)?;
                pass(false, self.w.warmup, false)?;
            }
            let mut passes = Vec::new();
            for on in [true, false, false, true] {
                passes.extend(pass(on, self.w.jobs, true)?);
            }
            Ok(summed(passes, &[true, false], |f| f.ledger == Some(true)))
        })();
        self.ledger.set_ledger(true)?;
        ran
    }

    /// Starts counting a step (`measured`), or notes unmeasured work (the warm-up).
    fn begin(&self, measured: bool) -> Result<Option<crate::counters::Mark>, BenchError> {
        let mut meter = self.meter.borrow_mut();
        if measured {
            Ok(Some(meter.begin()?))
        } else {
            meter.touch();
            Ok(None)
        }
    }

    /// The counts of the step begun at `mark` (none for an unmeasured one).
    fn end(&self, mark: Option<crate::counters::Mark>) -> Result<Counts, BenchError> {
        match mark {
            Some(mark) => Ok(self.meter.borrow_mut().end(mark)?),
            None => Ok(Counts::default()),
        }
    }

    /// Enqueues `jobs` one by one, `jobs` more in batches, and drains the `2 × jobs`; with
    /// `measured`, counts each step.
    fn steps(&self, guarded: bool, jobs: usize, measured: bool) -> Result<Vec<Figure>, BenchError> {
        let prefix = run_prefix();
        let queue_name = format!("{prefix}-{}", if guarded { "g" } else { "u" });
        let options = EnqueueOptions::new().queue(queue_name.clone());
        let options = if guarded && self.allow_duplicates {
            options.allow_duplicates()
        } else {
            options
        };
        let client = Queue::new(self.store.clone());
        let has_effects = self.effects != Effects::None;
        let figure = |op, jobs, batch, elapsed, counts| Figure {
            system: "safejob",
            backend: self.backend,
            op,
            guarded,
            effects: guarded.then(|| self.effects.as_str()),
            jobs,
            workers: self.w.workers,
            batch,
            elapsed,
            note: None,
            passes: 1,
            ledger: None,
            retention: self.w.retention.as_str(),
            counts,
        };
        let key = |i: usize| format!("{queue_name}-{i}");
        let mut figures = Vec::with_capacity(3);

        let mark = self.begin(measured)?;
        let start = Instant::now();
        for i in 0..jobs {
            if guarded {
                client.enqueue_guarded(
                    &GuardedNoop {
                        key: key(i),
                        has_effects,
                    },
                    &options,
                )?;
            } else {
                client.enqueue_with(&Noop { n: i as u64 }, &options)?;
            }
        }
        let elapsed = start.elapsed();
        figures.push(figure(
            Op::EnqueueSingle,
            jobs,
            None,
            elapsed,
            self.end(mark)?,
        ));

        let mark = self.begin(measured)?;
        let start = Instant::now();
        let mut i = jobs;
        while i < 2 * jobs {
            let end = (i + self.w.batch).min(2 * jobs);
            let rows = (i..end)
                .map(|i| {
                    if guarded {
                        NewJob::guarded(
                            &GuardedNoop {
                                key: key(i),
                                has_effects,
                            },
                            &options,
                        )
                    } else {
                        NewJob::of(&Noop { n: i as u64 }, &options)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.store.enqueue_many(&rows)?;
            i = end;
        }
        let elapsed = start.elapsed();
        figures.push(figure(
            Op::EnqueueBatched,
            jobs,
            Some(self.w.batch),
            elapsed,
            self.end(mark)?,
        ));

        let total = 2 * jobs;
        let mut registry = Registry::new();
        if guarded {
            registry.register_guarded::<GuardedNoop>();
        } else {
            registry.register::<Noop>();
        }
        let mut builder = Worker::builder(self.store.clone(), registry)
            .queues([queue_name.as_str()])
            .concurrency(u32::try_from(self.w.workers)?)
            .effects(self.effects.mode());
        if let Some(batch) = self.batch_completions {
            builder = builder.batch_completions(batch);
        }
        DONE.store(0, Ordering::SeqCst);
        let client = Queue::new(self.store.clone());
        let mark = self.begin(measured)?;
        let start = Instant::now();
        let pool = builder.start()?;
        let stop = AtomicBool::new(false);
        let (waited, pruned) = thread::scope(|s| {
            let pruner = (self.w.retention == Retention::Delete)
                .then(|| s.spawn(|| prune_until(&client, &stop)));
            let waited = wait_for(drain_timeout(total), || {
                DONE.load(Ordering::Acquire) >= total && pool.in_flight() == 0
            });
            stop.store(true, Ordering::Release);
            // With deletion, the drain ends once no finished job is left (as fang's).
            let pruned = pruner.map_or(Ok(()), |p| {
                p.join()
                    .unwrap_or_else(|_| Err("the pruner panicked".into()))
            });
            (waited, pruned)
        });
        let elapsed = start.elapsed();
        pool.shutdown(Duration::from_secs(5));
        let counts = self.end(mark)?;
        pruned?;
        let done = DONE.load(Ordering::SeqCst);
        if !waited {
            return Err(format!("drain timed out: {done} of {total} jobs worked").into());
        }
        if done != total {
            return Err(format!("{done} jobs worked for {total} enqueued").into());
        }
        figures.push(figure(Op::Drain, total, None, elapsed, counts));
        Ok(figures)
    }
}

/// `--retention delete` for our queue: prunes finished jobs (retention 0, 1,000 a call) beside
/// the workers until `stop`, then until none is left.
fn prune_until(client: &Queue, stop: &AtomicBool) -> Result<(), BenchError> {
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let pruned = client.prune(Duration::ZERO, 1_000)?;
        if pruned.jobs == 0 {
            if stopping {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The timed passes with `--guarded` (`true`: guarded): each mode once before and once after
/// the other, so both sit at the same mean position.
const BALANCED: [bool; 4] = [false, true, true, false];

/// Each `(mode, step)`'s passes as one figure (jobs and wall time summed), modes (`mode_of` a
/// figure) in the order given and steps in the order run.
fn summed(passes: Vec<Figure>, modes: &[bool], mode_of: impl Fn(&Figure) -> bool) -> Vec<Figure> {
    let mut out: Vec<Figure> = Vec::new();
    for &mode in modes {
        for f in passes.iter().filter(|f| mode_of(f) == mode) {
            match out.iter_mut().find(|o| mode_of(o) == mode && o.op == f.op) {
                Some(o) => {
                    o.jobs += f.jobs;
                    o.elapsed += f.elapsed;
                    o.passes += 1;
                    o.counts = o.counts.merged(&f.counts);
                }
                None => out.push(f.clone()),
            }
        }
    }
    out
}

/// Long enough for a slow machine (100 jobs/s), at least a minute.
pub fn drain_timeout(jobs: usize) -> Duration {
    Duration::from_secs(60).max(Duration::from_millis(10 * jobs as u64))
}

/// Polls `done` every half millisecond until it holds (`true`) or `timeout` passes (`false`).
pub fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        thread::sleep(Duration::from_micros(500));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use serde_json::Value;

    use super::*;
    use crate::{Cli, Command};

    fn figure(system: &'static str, op: Op, guarded: bool, jobs: usize, ms: u64) -> Figure {
        Figure {
            effects: guarded.then_some("none"),
            system,
            backend: "postgres",
            op,
            guarded,
            jobs,
            workers: 4,
            batch: None,
            elapsed: Duration::from_millis(ms),
            note: None,
            passes: 1,
            ledger: None,
            retention: "keep",
            counts: Counts::default(),
        }
    }

    #[test]
    fn figure_lines_are_one_json_object_in_the_documented_order() {
        let mut f = figure("safejob", Op::EnqueueBatched, false, 10_000, 400);
        f.batch = Some(1_000);
        let l = figure_line(&f, Some(1.5));
        assert_eq!(
            l,
            r#"{"bench":"queue","system":"safejob","backend":"postgres","op":"enqueue_batched","guarded":false,"effects":null,"jobs":10000,"workers":4,"batch":1000,"jobs_per_s":25000.0,"elapsed_s":0.4,"passes":1,"ledger":null,"load1":1.5,"retention":"keep","commits":null,"rollbacks":null,"statements":null,"wal_bytes":null,"commits_per_job":null,"statements_per_job":null,"wal_bytes_per_job":null,"counted_by":{"commits":null,"statements":null,"wal_bytes":null}}"#
        );
        let mut f = figure("fang", Op::Drain, false, 3, 0);
        f.note = Some("one row per call");
        let v: Value = serde_json::from_str(&figure_line(&f, None)).unwrap();
        assert_eq!(v["jobs_per_s"], 0.0);
        assert_eq!(v["load1"], Value::Null);
        assert_eq!(v["batch"], Value::Null);
        assert_eq!(v["note"], "one row per call");
        let f = figure("safejob", Op::Drain, true, 3, 1);
        let v: Value = serde_json::from_str(&figure_line(&f, None)).unwrap();
        assert_eq!(v["effects"], "none");
    }

    #[test]
    fn verdict_compares_guarded_drain_with_unguarded_and_the_faster_peer() {
        let figures = [
            figure("safejob", Op::EnqueueBatched, false, 10_000, 250), // 40,000/s
            figure("safejob", Op::Drain, false, 20_000, 10_000),       // 2,000/s
            figure("safejob", Op::Drain, true, 20_000, 8_000),         // 2,500/s
            figure("river", Op::Drain, false, 20_000, 20_000),         // 1,000/s
            figure("fang", Op::Drain, false, 20_000, 40_000),          // 500/s
        ];
        let v = Verdict::of(&figures);
        assert_eq!(v.guarded_over_unguarded, Some(1.25));
        assert_eq!(v.best_peer, Some(("river", 1_000.0)));
        assert_eq!(v.guarded_over_best_peer, Some(2.5));
        assert_eq!(v.enqueue_batched, Some(40_000.0));
        let l: Value = serde_json::from_str(&v.line("postgres", 4, None)).unwrap();
        assert_eq!(l["bench"], "queue_targets");
        assert_eq!(l["guard_free"], true);
        assert_eq!(l["beats_peers"], true);
        assert_eq!(l["enqueue_fast"], true);
    }

    #[test]
    fn our_memory_queue_is_not_judged_against_peers_on_postgres() {
        let mut ours = figure("safejob", Op::Drain, true, 100, 10);
        ours.backend = "memory";
        let v = Verdict::of(&[ours, figure("river", Op::Drain, false, 100, 1_000)]);
        assert_eq!(v.best_peer, Some(("river", 100.0)));
        assert_eq!(v.guarded_over_best_peer, None);
    }

    #[test]
    fn missing_figures_judge_nothing() {
        let v = Verdict::of(&[figure("safejob", Op::Drain, false, 10, 10)]);
        assert_eq!(v.guarded_over_unguarded, None);
        assert_eq!(v.best_peer, None);
        let l: Value = serde_json::from_str(&v.line("memory", 1, None)).unwrap();
        assert_eq!(l["guard_free"], Value::Null);
        assert_eq!(l["beats_peers"], Value::Null);
        assert_eq!(l["enqueue_fast"], Value::Null);
    }

    #[test]
    fn queue_arguments_parse() {
        let cli = Cli::try_parse_from([
            "safejob-bench",
            "queue",
            "--url",
            "postgres://root@127.0.0.1:5432/test",
            "--jobs",
            "20",
            "--workers",
            "4",
            "--guarded",
            "--peer",
            "river",
            "--peer",
            "fang",
        ])
        .unwrap();
        let Command::Queue(args) = cli.command else {
            panic!("not the queue subcommand");
        };
        assert_eq!(args.jobs, 20);
        assert_eq!(args.workers, 4);
        assert_eq!(args.batch, 1_000);
        assert!(args.guarded);
        assert_eq!(args.effects, Effects::Transactional);
        assert_eq!(args.peers, [Peer::River, Peer::Fang]);
        assert_eq!(
            dedup(&[Peer::Fang, Peer::River, Peer::Fang]),
            [Peer::Fang, Peer::River]
        );
    }

    #[test]
    fn the_memory_queue_drains_every_job_once() {
        let (store, ledger, backend) = open_ledgered("memory://", 2).unwrap();
        let ours = Ours {
            store,
            ledger,
            ledger_mode: LedgerMode::On,
            backend,
            w: Workload {
                jobs: 30,
                workers: 2,
                batch: 7,
                warmup: 5,
                retention: Retention::Keep,
            },
            effects: Effects::None,
            allow_duplicates: false,
            meter: RefCell::new(Meter::new(None, None, Duration::ZERO).unwrap()),
            batch_completions: None,
        };
        let unguarded = ours.run(false).unwrap();
        let seen = |fs: &[Figure]| -> Vec<_> {
            fs.iter()
                .map(|f| (f.guarded, f.op, f.jobs, f.passes))
                .collect()
        };
        assert_eq!(
            seen(&unguarded),
            [
                (false, Op::EnqueueSingle, 30, 1),
                (false, Op::EnqueueBatched, 30, 1),
                (false, Op::Drain, 60, 1)
            ]
        );
        // Both modes: two timed passes each (unguarded, guarded, guarded, unguarded), summed.
        let both = ours.run(true).unwrap();
        assert_eq!(
            seen(&both),
            [
                (false, Op::EnqueueSingle, 60, 2),
                (false, Op::EnqueueBatched, 60, 2),
                (false, Op::Drain, 120, 2),
                (true, Op::EnqueueSingle, 60, 2),
                (true, Op::EnqueueBatched, 60, 2),
                (true, Op::Drain, 120, 2)
            ]
        );
        // The ledger compared: on, off, off, on, each mode's two passes summed, on first; the
        // run leaves the ledger on.
        ours.ledger.set_ledger(false).unwrap();
        let compared = ours.run_ledger_compare(true).unwrap();
        let modes: Vec<_> = compared
            .iter()
            .map(|f| (f.ledger, f.guarded, f.op, f.jobs, f.passes))
            .collect();
        assert_eq!(
            modes,
            [
                (Some(true), true, Op::EnqueueSingle, 60, 2),
                (Some(true), true, Op::EnqueueBatched, 60, 2),
                (Some(true), true, Op::Drain, 120, 2),
                (Some(false), true, Op::EnqueueSingle, 60, 2),
                (Some(false), true, Op::EnqueueBatched, 60, 2),
                (Some(false), true, Op::Drain, 120, 2)
            ]
        );
        assert!(ours.ledger.ledger_enabled().unwrap());
    }

    #[test]
    fn both_modes_sit_at_the_same_mean_position() {
        let positions = |mode: bool| -> usize {
            BALANCED
                .iter()
                .enumerate()
                .filter(|&(_, &m)| m == mode)
                .map(|(i, _)| i)
                .sum()
        };
        assert_eq!(BALANCED.iter().filter(|&&m| m).count(), 2);
        assert_eq!(positions(false), positions(true));
    }

    #[test]
    fn passes_sum_jobs_and_time_per_mode_and_step() {
        let passes = vec![
            figure("safejob", Op::Drain, false, 100, 1_000),
            figure("safejob", Op::Drain, true, 100, 2_000),
            figure("safejob", Op::Drain, true, 100, 3_000),
            figure("safejob", Op::Drain, false, 100, 1_500),
        ];
        let summed = summed(passes, &[false, true], |f| f.guarded);
        let seen: Vec<_> = summed
            .iter()
            .map(|f| (f.guarded, f.jobs, f.elapsed.as_millis(), f.passes))
            .collect();
        assert_eq!(seen, [(false, 200, 2_500, 2), (true, 200, 5_000, 2)]);
        // 200 jobs in 2.5 s, not the mean of the two passes' rates (100 and 66.7 jobs/s).
        assert_eq!(summed[0].jobs_per_s(), 80.0);
        assert_eq!(summed[1].jobs_per_s(), 40.0);
    }

    #[test]
    fn ledger_cost_compares_each_step_on_over_off() {
        let with = |op, on: bool, ms| Figure {
            ledger: Some(on),
            ..figure("safejob", op, false, 100, ms)
        };
        let figures = [
            with(Op::Drain, true, 2_000),
            with(Op::Drain, false, 1_000),
            with(Op::EnqueueSingle, true, 1_000),
        ];
        let v: Value =
            serde_json::from_str(&ledger_cost_line(&figures, "sqlite", 4, None)).unwrap();
        assert_eq!(v["bench"], "ledger_cost");
        assert_eq!(v["drain"]["on"], 50.0);
        assert_eq!(v["drain"]["off"], 100.0);
        assert_eq!(v["drain"]["on_over_off"], 0.5);
        assert_eq!(v["enqueue_single"]["on_over_off"], Value::Null);
        assert_eq!(v["enqueue_batched"]["on"], Value::Null);
    }

    #[test]
    fn the_ledger_flag_parses() {
        let cli = Cli::try_parse_from([
            "safejob-bench",
            "queue",
            "--url",
            "memory://",
            "--ledger",
            "compare",
        ])
        .unwrap();
        let Command::Queue(args) = cli.command else {
            panic!("not the queue command");
        };
        assert_eq!(args.ledger, LedgerMode::Compare);
    }
}
