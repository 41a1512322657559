//! Per-job effects modes and backend-neutral transactional writes ([`EffectsTx`]), on every
//! backend, through the `Runner` and through the queue.
//!
//! One job definition, [`Charge`], runs unchanged on SQLite, PostgreSQL and MySQL/MariaDB: it
//! chooses transactional effects itself and writes its ledger row, the wallet debit and the
//! settlement through `ctx.effects_tx()` with typed values. [`Hook`] chooses after-commit,
//! transactional or (by default) the runner's / worker's mode, and records which one it got.
//! Only the schema and the checks that read rows back are written per backend (that is what
//! stays backend-specific).

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use common::TestDb;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, LeaseStore, MemoryStore, Outcome,
    PerformContext, Report, RunError, Runner, SafeJob,
    queue::{
        EnqueueOptions, ErrorKind, GuardedJob, JobId, KindOptions, Queue, QueueState, Ran,
        Registry, RetryPolicy, Worker,
    },
    store::{EffectsState, JobRecord, JobState},
};
use safejob_diesel::{
    BackendKind, EffectsTxError, SqlValue, TransactionExt, TxError, queue::DieselQueue,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
enum ChargeError {
    #[error(transparent)]
    NoTransaction(#[from] TxError),
    #[error(transparent)]
    Write(#[from] EffectsTxError),
    #[error("wallet {0} has no row")]
    NoWallet(String),
    #[error("the hook was told to fail")]
    Refused,
}

/// The instant every charge records (milliseconds: SQLite keeps three digits).
fn charged_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap() + chrono::Duration::milliseconds(123)
}

/// Debits a wallet once per charge id, in the finalize transaction, whatever the backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Charge {
    id: String,
    wallet: String,
    cents: i64,
}

impl SafeJob for Charge {
    type Error = ChargeError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["effects-charge", &self.id])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }

    fn effects_mode(&self) -> Option<EffectsMode> {
        Some(EffectsMode::Transactional)
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let meta = json!({"source": "test", "attempt": ctx.attempt()});
        let mut tx = ctx.effects_tx()?;
        tx.insert(
            "ledger",
            &[
                ("charge_id", (&self.id).into()),
                ("wallet", (&self.wallet).into()),
                ("cents", (-self.cents).into()),
                ("settled", false.into()),
                ("meta", (&meta).into()),
                ("charged_at", charged_at().into()),
                ("note", SqlValue::Null),
                ("refunded_cents", None::<i64>.into()),
            ],
        )?;
        let debited = tx.execute(
            "UPDATE wallets SET balance_cents = balance_cents - ? WHERE id = ?",
            &[self.cents.into(), (&self.wallet).into()],
        )?;
        if debited != 1 {
            return Err(ChargeError::NoWallet(self.wallet.clone()));
        }
        let settled = tx.update(
            "ledger",
            &[("settled", true.into()), ("note", "settled".into())],
            &[("charge_id", (&self.id).into()), ("note", SqlValue::Null)],
        )?;
        assert_eq!(settled, 1, "the row just inserted matches");
        Ok(())
    }
}

impl GuardedJob for Charge {
    const KIND: &'static str = "effects_charge";
    fn options() -> KindOptions {
        KindOptions::new().retry(RetryPolicy::schedule([RETRY]))
    }
}

/// The retry delay of both kinds: long enough that a drain never runs an attempt twice.
const RETRY: Duration = Duration::from_secs(3600);

/// Where each [`Hook`] ran, by id: `true` when its effects got the finalize transaction.
static RAN: Mutex<BTreeMap<String, Vec<bool>>> = Mutex::new(BTreeMap::new());

fn ran_in_transaction(id: &str) -> Vec<bool> {
    RAN.lock().unwrap().get(id).cloned().unwrap_or_default()
}

/// A webhook-like job that chooses its mode (`Some(true)` transactional, `Some(false)` after
/// commit, `None` the runner's / worker's), writes a `hooks` row when it has the transaction,
/// records where it ran, and fails when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hook {
    id: String,
    transactional: Option<bool>,
    fail: bool,
}

impl SafeJob for Hook {
    type Error = ChargeError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["effects-hook", &self.id])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }

    fn effects_mode(&self) -> Option<EffectsMode> {
        self.transactional.map(|tx| {
            if tx {
                EffectsMode::Transactional
            } else {
                EffectsMode::AfterCommit
            }
        })
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let in_tx = match ctx.effects_tx() {
            Ok(mut tx) => {
                tx.insert("hooks", &[("id", (&self.id).into())])?;
                true
            }
            Err(TxError::NotTransactional) => false,
            Err(other) => return Err(other.into()),
        };
        RAN.lock()
            .unwrap()
            .entry(self.id.clone())
            .or_default()
            .push(in_tx);
        if self.fail {
            return Err(ChargeError::Refused);
        }
        Ok(())
    }
}

impl GuardedJob for Hook {
    const KIND: &'static str = "effects_hook";
    fn options() -> KindOptions {
        KindOptions::new().retry(RetryPolicy::schedule([RETRY]))
    }
}

/// The application's schema: the one part written per backend.
fn tables(db: &TestDb) {
    let (json, instant) = match db.backend() {
        BackendKind::Postgres => ("JSONB", "TIMESTAMPTZ"),
        BackendKind::Mysql => ("JSON", "DATETIME(6)"),
        _ => ("TEXT", "TEXT"),
    };
    db.execute(&format!(
        "CREATE TABLE ledger (charge_id VARCHAR(64) NOT NULL PRIMARY KEY, \
         wallet VARCHAR(64) NOT NULL, cents BIGINT NOT NULL, settled BOOLEAN NOT NULL, \
         meta {json} NOT NULL, charged_at {instant} NOT NULL, note VARCHAR(64), \
         refunded_cents BIGINT)"
    ));
    db.execute(
        "CREATE TABLE wallets (id VARCHAR(64) NOT NULL PRIMARY KEY, balance_cents BIGINT NOT NULL)",
    );
    db.execute("INSERT INTO wallets (id, balance_cents) VALUES ('alice', 1000)");
    db.execute("CREATE TABLE hooks (id VARCHAR(64) NOT NULL PRIMARY KEY)");
}

fn charge(id: &str, wallet: &str) -> Charge {
    Charge {
        id: common::unique_name(id),
        wallet: wallet.to_owned(),
        cents: 250,
    }
}

/// Ledger rows of `id` holding exactly what [`Charge`] wrote, each value read back in the
/// backend's own SQL.
///
/// Catches (each tried in `effects_tx.rs`, failing the charge tests): an instant bound as bare
/// text instead of the dialect's `{at}` (SQLite, PostgreSQL; MySQL converts the text itself),
/// JSON bound without PostgreSQL's cast, `Null` bound as a value instead of written as `NULL`
/// (every backend), and a `Null` filter of `update` matched with `= ?` (every backend).
fn settled_rows(db: &TestDb, id: &str) -> i64 {
    let (instant, json) = match db.backend() {
        BackendKind::Postgres => (
            "charged_at = TIMESTAMPTZ '2024-05-06 07:08:09.123+00'",
            "meta->>'source' = 'test'",
        ),
        BackendKind::Mysql => (
            "charged_at = '2024-05-06 07:08:09.123000'",
            "JSON_VALUE(meta, '$.source') = 'test'",
        ),
        _ => (
            "charged_at = '2024-05-06 07:08:09.123'",
            "json_extract(meta, '$.source') = 'test'",
        ),
    };
    db.count_rows(
        "ledger",
        &format!(
            "charge_id = '{id}' AND wallet = 'alice' AND cents = -250 AND settled = TRUE \
             AND note = 'settled' AND refunded_cents IS NULL AND {instant} AND {json}"
        ),
    )
}

fn ledger_rows(db: &TestDb, id: &str) -> i64 {
    db.count_rows("ledger", &format!("charge_id = '{id}'"))
}

fn balance(db: &TestDb) -> i64 {
    db.query_i64("SELECT balance_cents AS n FROM wallets WHERE id = 'alice'")
}

fn hook_rows(db: &TestDb, id: &str) -> i64 {
    db.count_rows("hooks", &format!("id = '{id}'"))
}

fn guard(db: &TestDb, job: &impl SafeJob) -> JobRecord {
    db.store
        .get(job.key().unwrap().digest())
        .unwrap()
        .expect("a guard row")
}

/// The three hooks of one case: their own mode transactional, after commit, and none.
fn hooks(name: &str, fail: bool) -> [(Hook, bool); 3] {
    [Some(true), Some(false), None].map(|own| {
        let hook = Hook {
            id: common::unique_name(&format!("{name}-{own:?}-{fail}")),
            transactional: own,
            fail,
        };
        (hook, own.unwrap_or(false))
    })
}

/// What a hook of `mode` that ran once left: its row and guard, by its mode.
fn assert_hook(db: &TestDb, hook: &Hook, transactional: bool, case: &str) {
    assert_eq!(ran_in_transaction(&hook.id), vec![transactional], "{case}");
    let row = guard(db, hook);
    match (transactional, hook.fail) {
        (true, false) => {
            assert_eq!(hook_rows(db, &hook.id), 1, "{case}");
            assert_eq!(
                (row.state, row.effects),
                (JobState::Succeeded, EffectsState::Done),
                "{case}"
            );
        }
        // The hooks row rolled back with the finalize.
        (true, true) => {
            assert_eq!(hook_rows(db, &hook.id), 0, "{case}");
            assert_eq!(row.state, JobState::Released, "{case}");
        }
        (false, false) => {
            assert_eq!(hook_rows(db, &hook.id), 0, "{case}");
            assert_eq!(
                (row.state, row.effects),
                (JobState::Succeeded, EffectsState::Done),
                "{case}"
            );
        }
        (false, true) => assert_eq!(
            (row.state, row.effects),
            (JobState::Succeeded, EffectsState::InDoubt),
            "{case}"
        ),
    }
}

/// One Runner runs the transactional charge and after-commit hooks side by side; each job's own
/// mode wins over the runner's, and a job without one gets the runner's.
///
/// Catches (each tried): the pipeline ignoring the job's mode (`run.effects` only: under an
/// after-commit runner the charge gets `NotTransactional`; every test of this file fails), or
/// ignoring the runner's (`unwrap_or(EffectsMode::AfterCommit)`: the default hook under a
/// transactional runner runs after commit; this test and the worker's fail on every backend);
/// and `effects_tx` not finding the connection of a backend (the PostgreSQL arm of
/// `effects_connection` compiled out: `UnsupportedStore`, every PostgreSQL test fails).
fn one_runner_runs_every_mode(db: &TestDb) {
    tables(db);
    for runner_mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let runner = Runner::builder(db.store.clone())
            .effects(runner_mode)
            .build()
            .unwrap();
        let charge = charge("runner", "alice");
        let before = balance(db);
        let first = runner.run(&charge).expect("the charge");
        assert!(
            matches!(first, Report::Succeeded { attempt: 1, .. }),
            "{first:?}"
        );
        assert_eq!(settled_rows(db, &charge.id), 1, "{runner_mode:?}");
        assert_eq!(balance(db), before - 250);
        let again = runner.run(&charge).unwrap();
        assert!(
            matches!(again, Report::AlreadySucceeded { .. }),
            "{again:?}"
        );
        assert_eq!(balance(db), before - 250, "charged once");

        for fail in [false, true] {
            for (hook, own_tx) in hooks("runner", fail) {
                let transactional = own_tx
                    || (hook.transactional.is_none() && runner_mode == EffectsMode::Transactional);
                let case = format!(
                    "runner {runner_mode:?}, hook {:?}, fail {fail}",
                    hook.transactional
                );
                let ran = runner.run(&hook);
                match (transactional, fail) {
                    (_, false) => assert!(
                        matches!(ran, Ok(Report::Succeeded { .. })),
                        "{case}: {ran:?}"
                    ),
                    (true, true) => assert!(
                        matches!(ran, Err(RunError::EffectsRolledBack { attempt: 1, .. })),
                        "{case}: {ran:?}"
                    ),
                    (false, true) => {
                        assert!(
                            matches!(ran, Err(RunError::EffectsInDoubt { .. })),
                            "{case}: {ran:?}"
                        )
                    }
                }
                assert_hook(db, &hook, transactional, &case);
            }
        }
    }
}

/// Runs what is due on `worker` until nothing is; how each job ended, by id.
fn drain(worker: &Worker) -> BTreeMap<JobId, Ran> {
    worker
        .drain(20)
        .unwrap()
        .into_iter()
        .map(|w| (w.id, w.ran))
        .collect()
}

/// The same through one queue worker: the charge's writes commit in the queue's completion
/// transaction, each job's own mode wins over the worker's, the worker's is the default.
///
/// Catches the same changes as [`one_runner_runs_every_mode`], through `queue/guarded.rs`.
fn one_worker_runs_every_mode(db: &TestDb) {
    tables(db);
    let queue = Arc::new(DieselQueue::new(db.store.clone()));
    let client = Queue::new(queue.clone());
    for worker_mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let mut registry = Registry::new();
        registry
            .register_guarded::<Charge>()
            .register_guarded::<Hook>();
        let worker = Worker::builder(queue.clone(), registry)
            .effects(worker_mode)
            .build()
            .unwrap();
        let charge = charge("queue", "alice");
        let before = balance(db);
        let charge_id = client
            .enqueue_guarded(&charge, &EnqueueOptions::new())
            .unwrap()
            .id();
        let mut jobs = Vec::new();
        for fail in [false, true] {
            for (hook, own_tx) in hooks("queue", fail) {
                let id = client
                    .enqueue_guarded(&hook, &EnqueueOptions::new())
                    .unwrap()
                    .id();
                jobs.push((id, hook, own_tx));
            }
        }
        let ran = drain(&worker);
        assert_eq!(ran[&charge_id], Ran::Succeeded, "{worker_mode:?}");
        assert_eq!(settled_rows(db, &charge.id), 1, "{worker_mode:?}");
        assert_eq!(balance(db), before - 250);
        for (id, hook, own_tx) in jobs {
            let transactional = own_tx
                || (hook.transactional.is_none() && worker_mode == EffectsMode::Transactional);
            let case = format!(
                "worker {worker_mode:?}, hook {:?}, fail {}",
                hook.transactional, hook.fail
            );
            if transactional && hook.fail {
                assert!(
                    matches!(
                        ran[&id],
                        Ran::Retrying {
                            kind: ErrorKind::Retryable,
                            ..
                        }
                    ),
                    "{case}: {:?}",
                    ran[&id]
                );
                assert_eq!(client.get(id).unwrap().unwrap().state, QueueState::Retrying);
            } else {
                assert_eq!(ran[&id], Ran::Succeeded, "{case}");
            }
            assert_hook(db, &hook, transactional, &case);
        }
    }
}

/// An error from `EffectsTx` (the database refusing an insert), or the job's own error after
/// `EffectsTx` wrote, rolls the whole finalize back through the Runner: no ledger row, no debit,
/// the guard released; the retry then charges once.
///
/// Catches: `execute` dropping the database's error (tried: `.map_err(EffectsTxError::Database)`
/// replaced by `.or(Ok(0))`: attempt 1 no longer ends in `EffectsRolledBack` with the insert's
/// error, on every backend).
fn an_error_rolls_the_finalize_back_through_the_runner(db: &TestDb) {
    tables(db);
    let runner = Runner::builder(db.store.clone()).build().unwrap();

    // The database refuses the ledger insert: a row with this charge id is already there.
    let duplicate = charge("dup", "alice");
    db.execute(&format!(
        "INSERT INTO ledger (charge_id, wallet, cents, settled, meta, charged_at) \
         VALUES ('{}', 'bob', 0, FALSE, '{{}}', '2024-01-01 00:00:00')",
        duplicate.id
    ));
    let first = runner.run(&duplicate);
    assert!(
        matches!(
            &first,
            Err(RunError::EffectsRolledBack {
                source: ChargeError::Write(EffectsTxError::Database(_)),
                attempt: 1
            })
        ),
        "{first:?}"
    );
    assert_eq!(balance(db), 1000, "no debit");
    assert_eq!(guard(db, &duplicate).state, JobState::Released);
    db.execute(&format!(
        "DELETE FROM ledger WHERE charge_id = '{}'",
        duplicate.id
    ));
    let second = runner.run(&duplicate).expect("the retry");
    assert!(
        matches!(second, Report::Succeeded { attempt: 2, .. }),
        "{second:?}"
    );
    assert_eq!(settled_rows(db, &duplicate.id), 1);
    assert_eq!(balance(db), 750);

    // The job's own error after EffectsTx inserted its ledger row: the row rolls back too.
    let no_wallet = charge("nowallet", "nobody");
    let failed = runner.run(&no_wallet);
    assert!(
        matches!(
            &failed,
            Err(RunError::EffectsRolledBack {
                source: ChargeError::NoWallet(_),
                attempt: 1
            })
        ),
        "{failed:?}"
    );
    assert_eq!(ledger_rows(db, &no_wallet.id), 0, "the insert rolled back");
    assert_eq!(guard(db, &no_wallet).state, JobState::Released);
}

/// The same through the queue's transactional completion: the attempt is retried, nothing of
/// the hook is visible, and the retry charges once.
fn an_error_rolls_the_finalize_back_through_the_queue(db: &TestDb) {
    tables(db);
    let queue = Arc::new(DieselQueue::new(db.store.clone()));
    let client = Queue::new(queue.clone());
    let mut registry = Registry::new();
    registry.register_guarded::<Charge>();
    let worker = Worker::builder(queue.clone(), registry).build().unwrap();
    let no_wallet = charge("queue-nowallet", "carol");
    let id = client
        .enqueue_guarded(&no_wallet, &EnqueueOptions::new())
        .unwrap()
        .id();
    let first = worker.run_once().unwrap();
    assert!(
        matches!(
            first[0].ran,
            Ran::Retrying {
                kind: ErrorKind::Retryable,
                ..
            }
        ),
        "{:?}",
        first[0].ran
    );
    let row = client.get(id).unwrap().unwrap();
    let error = &row.errors.last().expect("the attempt's error").message;
    assert!(error.contains("wallet carol has no row"), "{error}");
    assert_eq!(ledger_rows(db, &no_wallet.id), 0, "the insert rolled back");
    assert_eq!(guard(db, &no_wallet).state, JobState::Released);

    db.execute("INSERT INTO wallets (id, balance_cents) VALUES ('carol', 500)");
    queue.advance_clock_for_tests(RETRY * 2);
    let second = worker.run_once().unwrap();
    assert_eq!(second[0].ran, Ran::Succeeded);
    assert_eq!(ledger_rows(db, &no_wallet.id), 1);
    assert_eq!(
        db.query_i64("SELECT balance_cents AS n FROM wallets WHERE id = 'carol'"),
        250
    );
}

/// Input `EffectsTx` refuses is a typed error returned before anything is sent, on every
/// backend, and it rolls the finalize back like any other: a backend's own bind syntax (`$1`),
/// a count mismatch, a name that is not a plain identifier, an update without a filter.
fn bad_input_is_a_typed_error(db: &TestDb) {
    tables(db);
    #[derive(Debug, thiserror::Error)]
    #[error("{0:?}")]
    struct Seen(Vec<String>);
    struct Probe(String);
    impl SafeJob for Probe {
        type Error = Seen;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["effects-probe", &self.0])
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Seen> {
            Ok(Outcome::done())
        }
        fn effects_mode(&self) -> Option<EffectsMode> {
            Some(EffectsMode::Transactional)
        }
        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Seen> {
            let mut tx = ctx.effects_tx().expect("a transaction");
            let errors = [
                tx.execute("INSERT INTO hooks (id) VALUES ($1)", &["x".into()]),
                tx.execute("INSERT INTO hooks (id) VALUES (?)", &[]),
                tx.insert("hooks; DROP TABLE hooks", &[("id", "x".into())]),
                tx.insert("hooks", &[("\"id\"", "x".into())]),
                tx.insert("hooks", &[]),
                tx.update("hooks", &[("id", "y".into())], &[]),
            ];
            Err(Seen(errors.into_iter().map(|e| format!("{e:?}")).collect()))
        }
    }
    let runner = Runner::builder(db.store.clone()).build().unwrap();
    let Err(RunError::EffectsRolledBack {
        source: Seen(seen), ..
    }) = runner.run(&Probe(common::unique_name("probe")))
    else {
        panic!("the probe's effects must roll back with its error");
    };
    let expected = [
        "Err(PlaceholderCount { placeholders: 0, values: 1 })",
        "Err(PlaceholderCount { placeholders: 1, values: 0 })",
        "Err(InvalidIdentifier { name: \"hooks; DROP TABLE hooks\" })",
        "Err(InvalidIdentifier { name: \"\\\"id\\\"\" })",
        "Err(NoColumns { operation: \"insert\" })",
        "Err(NoFilter { table: \"hooks\" })",
    ];
    assert_eq!(seen, expected);
    assert_eq!(db.count_rows("hooks", "1 = 1"), 0);
}

on_every_backend! {
    fn one_runner_runs_a_transactional_charge_and_after_commit_hooks(db: &TestDb) {
        one_runner_runs_every_mode(db);
    }
    fn one_worker_runs_a_transactional_charge_and_after_commit_hooks(db: &TestDb) {
        one_worker_runs_every_mode(db);
    }
    fn an_effects_error_rolls_back_through_the_runner(db: &TestDb) {
        an_error_rolls_the_finalize_back_through_the_runner(db);
    }
    fn an_effects_error_rolls_back_through_the_queue(db: &TestDb) {
        an_error_rolls_the_finalize_back_through_the_queue(db);
    }
    fn bad_input_to_effects_tx_is_a_typed_error(db: &TestDb) {
        bad_input_is_a_typed_error(db);
    }
}

/// On a store that is not a `DieselStore`, `effects_tx` says so instead of panicking (and the
/// hook's error rolls the memory store's finalize back); after commit it says there is no
/// transaction, which the hook takes as "write nothing here".
#[test]
fn effects_tx_names_what_is_missing() {
    let runner = Runner::builder(Arc::new(MemoryStore::new()))
        .build()
        .unwrap();
    let inside = Hook {
        id: common::unique_name("memory-tx"),
        transactional: Some(true),
        fail: false,
    };
    let ran = runner.run(&inside);
    assert!(
        matches!(
            ran,
            Err(RunError::EffectsRolledBack {
                source: ChargeError::NoTransaction(TxError::UnsupportedStore),
                ..
            })
        ),
        "{ran:?}"
    );
    let after = Hook {
        id: common::unique_name("memory-after"),
        transactional: Some(false),
        fail: false,
    };
    assert!(matches!(runner.run(&after), Ok(Report::Succeeded { .. })));
    assert_eq!(ran_in_transaction(&after.id), vec![false]);
}
