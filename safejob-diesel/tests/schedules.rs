//! The schedule conformance suite (`safejob_test_kit::schedule_conformance`) on SQLite,
//! PostgreSQL and MySQL/MariaDB: each case on a database of its own, the clock moved through the
//! queue's test offset (no sleeps).

mod common;

use std::{sync::Arc, time::Duration};

use common::TestDb;
use safejob_core::{queue::QueueStore, schedule::ScheduleStore};
use safejob_diesel::queue::DieselQueue;
use safejob_test_kit::{QueueHarness, ScheduleHarness, schedule_conformance};

struct ScheduleDb {
    // Dropped first: the queue lets go of its connections before the database is dropped.
    queue: Arc<DieselQueue>,
    // Held for its drop (which removes the test's database).
    #[allow(dead_code)]
    db: TestDb,
}

impl QueueHarness for ScheduleDb {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    /// The database clock cannot move; the queue's (and its store's) view of it can.
    fn advance(&self, by: Duration) {
        self.queue.advance_clock_for_tests(by);
    }
}

impl ScheduleHarness for ScheduleDb {
    fn schedules(&self) -> Arc<dyn ScheduleStore> {
        self.queue.clone()
    }
}

fn schedule_db(db: TestDb) -> ScheduleDb {
    ScheduleDb {
        queue: Arc::new(DieselQueue::new(db.store.clone())),
        db,
    }
}

/// Runs every case on a fresh database from `make` (`None`: the backend is not configured here,
/// and not required; the factory said why).
fn run(make: impl Fn() -> Option<ScheduleDb>) {
    for (name, case) in schedule_conformance::CASES {
        let Some(db) = make() else { return };
        eprintln!("schedule conformance: {name}");
        case(&db);
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn schedule_conformance_on_sqlite() {
    run(|| Some(schedule_db(common::sqlite("sched"))));
}

#[cfg(feature = "postgres")]
#[test]
fn schedule_conformance_on_postgres() {
    run(|| common::postgres("sched").map(schedule_db));
}

#[cfg(feature = "mysql")]
#[test]
fn schedule_conformance_on_mysql() {
    run(|| common::mysql("sched").map(schedule_db));
}
