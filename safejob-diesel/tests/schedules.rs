//! The schedule conformance suite (`safejob_test_kit::schedule_conformance`) on SQLite,
//! PostgreSQL and MySQL/MariaDB: each case on a database of its own, the clock moved through the
//! queue's test offset (no sleeps).

mod common;

use common::QueueDb;
use safejob_test_kit::schedule_conformance;

/// Runs every case on a fresh database from `make` (`None`: the backend is not configured here,
/// and not required; the factory said why).
fn run(make: impl Fn() -> Option<QueueDb>) {
    for (name, case) in schedule_conformance::CASES {
        let Some(db) = make() else { return };
        eprintln!("schedule conformance: {name}");
        case(&db);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn schedule_conformance_on_sqlite() {
    run(|| Some(QueueDb::new(common::sqlite("sched"))));
}

#[cfg(feature = "postgres")]
#[test]
fn schedule_conformance_on_postgres() {
    run(|| common::postgres("sched").map(QueueDb::new));
}

#[cfg(feature = "mysql")]
#[test]
fn schedule_conformance_on_mysql() {
    run(|| common::mysql("sched").map(QueueDb::new));
}
