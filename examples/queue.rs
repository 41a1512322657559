//! The durable queue on SQLite, from enqueue to dead letter and back.
//!
//! Run it from the repository root: `cargo run --example queue`. Nothing to install: the queue
//! lives in a SQLite file under `target/`.
//!
//! 1. Enqueue five payouts, each **twice** (a producer that retried its own enqueue), and one
//!    webhook to a partner that is down.
//! 2. A worker drains the queue. Each payout runs through the guard: it is paid **once**, and its
//!    duplicate completes without running. The webhook fails twice and is dead-lettered.
//! 3. The partner comes back; an operator lists the dead letters and retries the webhook from
//!    there; the worker delivers it.
//!
//! With arguments it is a worker binary built on `safejob-cli` (what your own binary does):
//! every `safejob` operator command, plus `work`, which runs these kinds until SIGTERM / SIGINT
//! or a limit (the ledger table is created first), and `keys recover`, which can rebuild a payout:
//!
//! ```sh
//! export SAFEJOB_DATABASE_URL=sqlite://target/queue-worker.db
//! cargo run --example queue -- migrate
//! cargo run --example queue -- work --concurrency 4 --max-runtime 30s
//! cargo run --example queue -- status
//! ```

// `pub(crate)` items are read by tests/queue_worker.rs, which includes this file.

use std::{
    error::Error,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use clap::Parser;
use diesel::{QueryableByName, RunQueryDsl, sql_types::BigInt};
use safejob_cli::{App, AppCommand, CliError};
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    queue::{
        EnqueueOptions, GuardedJob, JobFilter, KindOptions, Queue, QueueJob, Registry, RetryPolicy,
        WorkContext, WorkError, Worker,
    },
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt, queue::DieselQueue};
use serde::{Deserialize, Serialize};

/// How many times a payout's `perform` ran (it may run more than once in general; here it
/// should not, since nothing crashes).
static PAYOUT_PERFORMS: AtomicUsize = AtomicUsize::new(0);
/// Whether the partner's webhook endpoint answers.
pub(crate) static PARTNER_UP: AtomicBool = AtomicBool::new(false);

/// A payout: a `SafeJob` enqueued directly, so the queue runs it through the guard.
#[derive(Serialize, Deserialize)]
pub(crate) struct Payout {
    pub(crate) id: String,
    pub(crate) cents: i64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PayoutError {
    #[error("ledger write failed: {0}")]
    Ledger(#[from] safejob_diesel::EffectsTxError),
    #[error(transparent)]
    NoTransaction(#[from] safejob_diesel::TxError),
}

impl SafeJob for Payout {
    type Error = PayoutError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["payout", &self.id])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        PAYOUT_PERFORMS.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::done())
    }

    // Its effects write to the database: whatever worker runs it, inside the finalize.
    fn effects_mode(&self) -> Option<EffectsMode> {
        Some(EffectsMode::Transactional)
    }

    // Runs inside the completion's transaction: the ledger row commits with `succeeded`.
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        // `EffectsTx`: the same code on SQLite, PostgreSQL and MySQL/MariaDB.
        ctx.effects_tx()?.insert(
            "payout_ledger",
            &[
                ("payout_id", (&self.id).into()),
                ("cents", self.cents.into()),
            ],
        )?;
        Ok(())
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "payout";
}

/// A webhook to a partner: a plain queue job that fails while the partner is down.
#[derive(Serialize, Deserialize)]
pub(crate) struct NotifyPartner {
    pub(crate) event: String,
}

#[derive(Debug, thiserror::Error)]
#[error("partner endpoint answered 503")]
pub(crate) struct PartnerDown;

impl QueueJob for NotifyPartner {
    const KIND: &'static str = "notify_partner";
    type Error = PartnerDown;

    fn work(&self, _ctx: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        if PARTNER_UP.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(WorkError::Retryable(PartnerDown))
        }
    }

    fn options() -> KindOptions {
        // Two attempts, the second at once: enough to show a dead letter without waiting.
        KindOptions::new()
            .max_attempts(2)
            .retry(RetryPolicy::schedule([Duration::ZERO]))
            .idempotent(true)
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The kinds this binary runs.
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register_guarded::<Payout>()
        .register::<NotifyPartner>();
    registry
}

/// Creates the tables at `url` (idempotent): safejob's, and the payouts' ledger.
fn prepare(url: &str) -> Result<Arc<DieselStore>, CliError> {
    let store = Arc::new(DieselStore::connect(url)?);
    store.migrate()?;
    store
        .with_connection(|conn| {
            conn.batch_execute(
                "CREATE TABLE IF NOT EXISTS payout_ledger \
                 (payout_id TEXT NOT NULL, cents INTEGER NOT NULL)",
            )
        })?
        .map_err(safejob_core::StoreError::backend)?;
    Ok(store)
}

/// The example as a user binary: `work` prepares the database first, then every command runs
/// as in `safejob`.
pub(crate) fn operate(app: App) -> Result<(), CliError> {
    if let (AppCommand::Work(_), Some(url)) = (&app.command, app.global.url.as_deref()) {
        prepare(url)?;
    }
    safejob_cli::run_app(app, registry)
}

fn main() -> ExitCode {
    if std::env::args_os().len() > 1 {
        return safejob_cli::finish(operate(App::parse()));
    }
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), Box<dyn Error>> {
    // A fresh database per run, so the figures below are this run's.
    let path = database_path()?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = prepare(&format!("sqlite://{}", path.display()))?;
    let backend = Arc::new(DieselQueue::new(store.clone()));
    let queue = Queue::new(backend.clone());

    // 1. Enqueue: every payout twice, one webhook.
    for i in 1..=5 {
        let payout = Payout {
            id: format!("po_{i}"),
            cents: 1_000 * i,
        };
        let first = queue.enqueue_guarded(&payout, &EnqueueOptions::new())?;
        // The producer's retry: deduplicated by the idempotency key, it inserts nothing and
        // answers the live job's id.
        let again = queue.enqueue_guarded(&payout, &EnqueueOptions::new())?;
        if !again.is_duplicate() || again.id() != first.id() {
            return Err("a guarded duplicate was inserted".into());
        }
    }
    let webhook = queue.enqueue(&NotifyPartner {
        event: "payouts.settled".into(),
    })?;
    println!("enqueued: 5 payout jobs (5 more enqueues were duplicates of them) and 1 webhook");

    // 2. A worker drains everything due.
    let worker = Worker::builder(backend.clone(), registry()).build()?;
    let handled = worker.drain(20)?;
    let ledger_rows = count_ledger(&store)?;
    println!(
        "worker handled {} claims: payouts performed {} times, ledger rows {ledger_rows}",
        handled.len(),
        PAYOUT_PERFORMS.load(Ordering::Relaxed)
    );

    // 3. The dead-letter list, then a retry from it once the partner is back.
    let dead = queue.dead(&JobFilter::dead(), 10)?;
    for job in &dead {
        let last = job.errors.last().map_or("", |e| e.message.as_str());
        println!(
            "dead letter: job {} ({}) after {} attempts: {last}",
            job.id, job.kind, job.attempts
        );
    }
    PARTNER_UP.store(true, Ordering::Relaxed);
    for job in &dead {
        queue.retry(job.id)?;
    }
    worker.drain(5)?;
    let state = queue
        .get(webhook.id())?
        .map(|job| job.state.to_string())
        .unwrap_or_default();
    println!(
        "retried {} dead letter(s); the webhook is now {state}",
        dead.len()
    );

    let performs = PAYOUT_PERFORMS.load(Ordering::Relaxed);
    if performs != 5 || ledger_rows != 5 || dead.len() != 1 || state != "succeeded" {
        return Err("the run did not go as described".into());
    }
    println!("every payout paid exactly once; the webhook went dead and was retried from the list");
    Ok(())
}

pub(crate) fn count_ledger(store: &DieselStore) -> Result<i64, Box<dyn Error>> {
    let rows: Vec<Count> = store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => {
            diesel::sql_query("SELECT COUNT(*) AS n FROM payout_ledger").load(*conn)
        }
        _ => Ok(Vec::new()),
    })??;
    Ok(rows.first().map_or(0, |c| c.n))
}

/// `<dir of this binary>/../safejob-queue-example.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-queue-example.db"))
}
