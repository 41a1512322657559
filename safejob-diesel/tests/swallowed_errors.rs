//! Transactional effects whose hook swallows a database error (issue #12).
//!
//! A hook that catches an error and returns `Ok` ("already there, fine") must not turn a
//! transaction the database has already rolled back into a reported success. What undoes the
//! whole transaction differs per database — PostgreSQL: any error; MySQL / MariaDB: a deadlock;
//! SQLite: `INSERT OR ROLLBACK` — so each backend is driven with the fault that does it there,
//! through the `Runner` and through the queue: the attempt reports a retryable error, the row is
//! not `succeeded`, no write of the hook is visible, and the next attempt succeeds exactly once.
//! A duplicate that undoes only its own statement (MySQL, SQLite) stays a success.
//!
//! What each caught when tried on the code before the fix (the store trusted diesel's `Ok` from
//! COMMIT, and MySQL ran the hook with autocommit on) — `confirm_succeeded` in `ops.rs` made to
//! answer `true`, or `SET autocommit = 0` left out of MySQL's `begin_effects`:
//! * PostgreSQL, both faults, both paths: attempt 1 reported `Ok(Succeeded { attempt: 1 })`
//!   with the row still `running` (COMMIT of an aborted transaction is a silent ROLLBACK);
//! * MariaDB deadlock, both paths: the hook's write after the deadlock committed on its own
//!   (`a hook write outlived the rollback`), and so did its later write without autocommit off;
//! * SQLite `OR ROLLBACK` through the queue: the completion failed at COMMIT with
//!   `NotInTransaction` instead of a retryable attempt (the Runner's settle already caught it).

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Barrier, Mutex},
    thread,
    time::Duration,
};

use common::TestDb;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, LeaseStore, Outcome, PerformContext,
    Report, RunError, Runner, SafeJob,
    queue::{EnqueueOptions, ErrorKind, GuardedJob, Queue, QueueState, Ran, Registry, Worker},
    store::JobState,
};
use safejob_diesel::{
    BackendKind, ConnectionRef, EffectsTxError, TransactionExt, queue::DieselQueue,
};
use serde::{Deserialize, Serialize};

/// What the hook does on its first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Fault {
    /// Inserts a ledger entry that exists, and swallows the unique violation.
    Duplicate,
    /// SQLite: the same insert `OR ROLLBACK`, which rolls the whole transaction back.
    DuplicateOrRollback,
    /// Deadlocks with another connection (and is chosen as the victim), swallowing the error.
    Deadlock,
}

/// The two meeting points of a deadlock between the hook and its partner connection.
struct Gates {
    partner_holds_2: Barrier,
    hook_holds_1: Barrier,
}

/// The gates of each test's deadlock, by job id (queued jobs are decoded from their payload,
/// so they find their gates here).
static GATES: Mutex<BTreeMap<String, Arc<Gates>>> = Mutex::new(BTreeMap::new());

fn gates(id: &str) -> Arc<Gates> {
    GATES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_insert_with(|| {
            Arc::new(Gates {
                partner_holds_2: Barrier::new(2),
                hook_holds_1: Barrier::new(2),
            })
        })
        .clone()
}

/// Runs `sql` on the finalize transaction's connection, whatever the backend, through the
/// backend-neutral [`EffectsTx`](safejob_diesel::EffectsTx): these faults hold through it.
fn tx_exec(ctx: &mut EffectsContext<'_>, sql: &str) -> Result<(), EffectsTxError> {
    let mut tx = ctx
        .effects_tx()
        .expect("on_succeeded_once runs inside a transactional finalize");
    tx.execute(sql, &[]).map(|_| ())
}

#[derive(Debug, thiserror::Error)]
#[error("posting failed: {0}")]
struct PostingError(String);

/// A posting whose effects write `ok-<id>` to the ledger, except on attempt 1, where they hit
/// `fault`, swallow the error, try one more write (`later`) and return `Ok`.
#[derive(Debug, Serialize, Deserialize)]
struct Posting {
    id: String,
    fault: Fault,
}

impl SafeJob for Posting {
    type Error = PostingError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["swallowed", &self.id])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        if ctx.attempt() > 1 {
            let sql = format!("INSERT INTO ledger (entry) VALUES ('ok-{}')", self.id);
            return tx_exec(ctx, &sql).map_err(|e| PostingError(e.to_string()));
        }
        let swallowed = match self.fault {
            Fault::Duplicate => tx_exec(ctx, "INSERT INTO ledger (entry) VALUES ('dup')"),
            Fault::DuplicateOrRollback => {
                tx_exec(ctx, "INSERT OR ROLLBACK INTO ledger (entry) VALUES ('dup')")
            }
            Fault::Deadlock => {
                let gates = gates(&self.id);
                gates.partner_holds_2.wait();
                tx_exec(ctx, "UPDATE locks SET v = v + 1 WHERE id = 1")
                    .expect("the hook locks row 1");
                gates.hook_holds_1.wait();
                tx_exec(ctx, "UPDATE locks SET v = v + 1 WHERE id = 2")
            }
        };
        assert!(swallowed.is_err(), "{:?} did not fail", self.fault);
        // "Already there, fine" — and one more write, which must not outlive the rollback.
        // Not on SQLite: it has no `autocommit = 0`, so after `OR ROLLBACK` a further write would
        // commit on its own (docs/guarantees.md says so); the store still reports the attempt
        // as failed, which is what its test checks.
        if self.fault != Fault::DuplicateOrRollback {
            let _ = tx_exec(ctx, "INSERT INTO ledger (entry) VALUES ('later')");
        }
        if self.fault == Fault::Duplicate {
            let sql = format!("INSERT INTO ledger (entry) VALUES ('ok-{}')", self.id);
            let _ = tx_exec(ctx, &sql);
        }
        Ok(())
    }
}

impl GuardedJob for Posting {
    const KIND: &'static str = "swallowed_posting";
}

fn tables(db: &TestDb) {
    db.execute("CREATE TABLE ledger (entry VARCHAR(64) NOT NULL PRIMARY KEY)");
    db.execute("INSERT INTO ledger (entry) VALUES ('dup')");
    db.execute("CREATE TABLE locks (id INT NOT NULL PRIMARY KEY, v INT NOT NULL)");
    db.execute("INSERT INTO locks (id, v) VALUES (1, 0), (2, 0)");
    db.execute("CREATE TABLE heavy (n INT NOT NULL)");
}

fn count(db: &TestDb, table: &str, predicate: &str) -> i64 {
    db.count_rows(table, predicate)
}

/// The other side of the deadlock, on its own connection: takes row 2 (after making its
/// transaction the heavier one, so MariaDB picks the hook as the victim; PostgreSQL's hook
/// detects the cycle first because this session waits 30 s before checking), then waits for
/// row 1, which it gets once the hook's transaction is gone, and commits.
fn deadlock_partner(db: &TestDb, id: &str) -> thread::JoinHandle<()> {
    let store = db.store.clone();
    let gates = gates(id);
    let postgres = db.backend() == BackendKind::Postgres;
    thread::spawn(move || {
        store
            .with_connection(|conn: &mut ConnectionRef<'_>| {
                if postgres {
                    conn.batch_execute("SET deadlock_timeout = '30s'").unwrap();
                }
                conn.batch_execute("BEGIN").unwrap();
                for n in 0..200 {
                    conn.batch_execute(&format!("INSERT INTO heavy (n) VALUES ({n})"))
                        .unwrap();
                }
                conn.batch_execute("UPDATE locks SET v = v + 1 WHERE id = 2")
                    .unwrap();
                gates.partner_holds_2.wait();
                gates.hook_holds_1.wait();
                // Let the hook block on row 2 first.
                thread::sleep(Duration::from_millis(300));
                conn.batch_execute("UPDATE locks SET v = v + 1 WHERE id = 1")
                    .expect("the partner survives the deadlock");
                conn.batch_execute("COMMIT").unwrap();
            })
            .expect("a connection for the partner");
    })
}

/// What the first attempt left: no `succeeded`, none of the hook's writes, and the partner's
/// updates only.
fn assert_rolled_back(db: &TestDb, job: &Posting) {
    let row = db
        .store
        .get(job.key().unwrap().digest())
        .unwrap()
        .expect("the guard row");
    assert_ne!(row.state, JobState::Succeeded, "{row:?}");
    assert_eq!(
        count(db, "ledger", "entry = 'later'"),
        0,
        "a hook write outlived the rollback"
    );
    assert_eq!(count(db, "ledger", "entry LIKE 'ok-%'"), 0);
    if job.fault == Fault::Deadlock {
        assert_eq!(count(db, "locks", "v = 1"), 2, "the partner's updates only");
    }
}

fn rolls_back_then_succeeds_once_through_the_runner(db: &TestDb, fault: Fault) {
    tables(db);
    let job = Posting {
        id: common::unique_name("runner"),
        fault,
    };
    let runner = Runner::builder(db.store.clone())
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    let partner = (fault == Fault::Deadlock).then(|| deadlock_partner(db, &job.id));
    let first = runner.run(&job);
    if let Some(partner) = partner {
        partner.join().unwrap();
    }
    assert!(
        matches!(first, Err(RunError::EffectsTransactionLost { attempt: 1 })),
        "attempt 1 must report its transaction lost, not success: {first:?}"
    );
    assert_rolled_back(db, &job);

    let second = runner.run(&job).expect("attempt 2");
    assert!(
        matches!(second, Report::Succeeded { attempt: 2, .. }),
        "{second:?}"
    );
    let third = runner.run(&job).expect("a duplicate");
    assert!(
        matches!(third, Report::AlreadySucceeded { .. }),
        "{third:?}"
    );
    assert_eq!(count(db, "ledger", "entry LIKE 'ok-%'"), 1);
    assert_eq!(count(db, "ledger", "entry = 'later'"), 0);
}

fn rolls_back_then_succeeds_once_through_the_queue(db: &TestDb, fault: Fault) {
    tables(db);
    let queue = Arc::new(DieselQueue::new(db.store.clone()));
    let client = Queue::new(queue.clone());
    let mut registry = Registry::new();
    registry.register_guarded::<Posting>();
    let worker = Worker::builder(queue.clone(), registry)
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    let job = Posting {
        id: common::unique_name("queue"),
        fault,
    };
    let id = client
        .enqueue_guarded(&job, &EnqueueOptions::new())
        .unwrap()
        .id();

    let partner = (fault == Fault::Deadlock).then(|| deadlock_partner(db, &job.id));
    let first = worker.run_once().unwrap();
    if let Some(partner) = partner {
        partner.join().unwrap();
    }
    assert_eq!(first.len(), 1);
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
    assert_eq!(row.state, QueueState::Retrying);
    let error = &row.errors.last().expect("the attempt's error").message;
    assert!(error.contains("aborted or rolled back"), "{error}");
    assert_rolled_back(db, &job);

    queue.advance_clock_for_tests(Duration::from_secs(3600));
    let second = worker.run_once().unwrap();
    assert!(
        matches!(second[0].ran, Ran::Succeeded),
        "{:?}",
        second[0].ran
    );
    let again = client
        .enqueue_guarded(&job, &EnqueueOptions::new())
        .unwrap()
        .id();
    let third = worker.run_once().unwrap();
    assert_eq!(third[0].id, again);
    assert!(matches!(third[0].ran, Ran::Succeeded), "{:?}", third[0].ran);
    assert_eq!(count(db, "ledger", "entry LIKE 'ok-%'"), 1);
    assert_eq!(count(db, "ledger", "entry = 'later'"), 0);
    let row = db.store.get(job.key().unwrap().digest()).unwrap().unwrap();
    assert_eq!((row.state, row.attempts), (JobState::Succeeded, 2));
}

/// On MySQL and SQLite a duplicate undoes only its own statement: the transaction lives, the
/// confirm finds our `succeeded`, and the hook's other writes commit with it, once.
fn a_statement_rollback_stays_a_success(db: &TestDb) {
    tables(db);
    let job = Posting {
        id: common::unique_name("statement"),
        fault: Fault::Duplicate,
    };
    let runner = Runner::builder(db.store.clone())
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    let first = runner.run(&job).expect("attempt 1");
    assert!(
        matches!(first, Report::Succeeded { attempt: 1, .. }),
        "{first:?}"
    );
    assert_eq!(count(db, "ledger", "entry LIKE 'ok-%'"), 1);
    assert_eq!(count(db, "ledger", "entry = 'later'"), 1);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    #[test]
    fn or_rollback_rolls_back_through_the_runner() {
        let db = common::sqlite("or_rollback_runner");
        rolls_back_then_succeeds_once_through_the_runner(&db, Fault::DuplicateOrRollback);
    }

    #[test]
    fn or_rollback_rolls_back_through_the_queue() {
        let db = common::sqlite("or_rollback_queue");
        rolls_back_then_succeeds_once_through_the_queue(&db, Fault::DuplicateOrRollback);
    }

    #[test]
    fn duplicate_is_a_statement_rollback() {
        a_statement_rollback_stays_a_success(&common::sqlite("statement_rollback"));
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    #[test]
    fn duplicate_rolls_back_through_the_runner() {
        let Some(db) = common::postgres("dup_runner") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_runner(&db, Fault::Duplicate);
    }

    #[test]
    fn duplicate_rolls_back_through_the_queue() {
        let Some(db) = common::postgres("dup_queue") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_queue(&db, Fault::Duplicate);
    }

    #[test]
    fn deadlock_rolls_back_through_the_runner() {
        let Some(db) = common::postgres("deadlock_runner") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_runner(&db, Fault::Deadlock);
    }

    #[test]
    fn deadlock_rolls_back_through_the_queue() {
        let Some(db) = common::postgres("deadlock_queue") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_queue(&db, Fault::Deadlock);
    }
}

#[cfg(feature = "mysql")]
mod mysql {
    use super::*;

    #[test]
    fn deadlock_rolls_back_through_the_runner() {
        let Some(db) = common::mysql("deadlock_runner") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_runner(&db, Fault::Deadlock);
    }

    #[test]
    fn deadlock_rolls_back_through_the_queue() {
        let Some(db) = common::mysql("deadlock_queue") else {
            return;
        };
        rolls_back_then_succeeds_once_through_the_queue(&db, Fault::Deadlock);
    }

    #[test]
    fn duplicate_is_a_statement_rollback() {
        let Some(db) = common::mysql("statement_rollback") else {
            return;
        };
        a_statement_rollback_stays_a_success(&db);
    }
}
