//! The ledger conformance suite (`safejob_test_kit::ledger_conformance`) on SQLite, PostgreSQL
//! and MySQL/MariaDB: the `create_safe_history` migration's triggers record what the memory
//! stores record. Each case on a database of its own (the ledger switch is database-wide), the
//! clock moved through the queue's test offset (no sleeps).

mod common;

use std::{sync::Arc, time::Duration};

use common::TestDb;
use safejob_core::{history::HistoryStore, queue::QueueStore, schedule::ScheduleStore};
use safejob_diesel::queue::DieselQueue;
use safejob_test_kit::{LedgerHarness, QueueHarness, ScheduleHarness, ledger_conformance};

struct LedgerDb {
    // Dropped first: the queue lets go of its connections before the database is dropped.
    queue: Arc<DieselQueue>,
    // Held for its drop (which removes the test's database).
    #[allow(dead_code)]
    db: TestDb,
}

impl QueueHarness for LedgerDb {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    /// The database clock cannot move; the queue's (and its store's) view of it can.
    fn advance(&self, by: Duration) {
        self.queue.advance_clock_for_tests(by);
    }
}

impl ScheduleHarness for LedgerDb {
    fn schedules(&self) -> Arc<dyn ScheduleStore> {
        self.queue.clone()
    }
}

impl LedgerHarness for LedgerDb {
    fn history(&self) -> Arc<dyn HistoryStore> {
        self.queue.clone()
    }
}

fn ledger_db(db: TestDb) -> LedgerDb {
    LedgerDb {
        queue: Arc::new(DieselQueue::new(db.store.clone())),
        db,
    }
}

/// Runs every case on a fresh database from `make` (`None`: the backend is not configured here,
/// and not required; the factory said why).
fn run(make: impl Fn() -> Option<LedgerDb>) {
    for (name, case) in ledger_conformance::CASES {
        let Some(db) = make() else { return };
        eprintln!("ledger conformance: {name}");
        case(&db);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn ledger_conformance_on_sqlite() {
    run(|| Some(ledger_db(common::sqlite("ledger"))));
}

#[cfg(feature = "postgres")]
#[test]
fn ledger_conformance_on_postgres() {
    run(|| common::postgres("ledger").map(ledger_db));
}

#[cfg(feature = "mysql")]
#[test]
fn ledger_conformance_on_mysql() {
    run(|| common::mysql("ledger").map(ledger_db));
}
