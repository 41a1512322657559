//! Shared test helpers: one isolated, migrated database per test on each backend — the crate's
//! own `safejob_diesel::testing::TestDb` (a temporary SQLite file, a fresh PostgreSQL schema, a
//! fresh MySQL/MariaDB database), wrapped for this crate's tests: constructors that panic
//! instead of returning errors, the fields the tests read, and two SQL helpers only these tests
//! need.
//!
//! Without the URL a PostgreSQL or MySQL test prints one `skipped:` line and passes, unless
//! `SAFEJOB_REQUIRE_BACKENDS=1`, which turns a missing or unreachable database into a failure.

#![allow(dead_code)] // each test file uses a different part of this module

use std::{ops::Deref, sync::Arc, time::Duration};

use safejob_core::{
    LeaseStore,
    queue::{ClaimRequest, Claimed, NewJob, QueueStore, RunAt},
};
#[allow(unused_imports)] // only swallowed_errors.rs names its keys with it
pub use safejob_diesel::testing::unique_name;
use safejob_diesel::{BackendKind, DieselStore, DieselStoreBuilder, testing};
use safejob_test_kit::{StoreHarness, conformance::GroupCrashHarness};

/// One test's database and its store.
pub struct TestDb {
    pub store: Arc<DieselStore>,
    /// The URL the store was built from (for building more stores on the same database).
    pub url: String,
    /// The PostgreSQL schema to put on the `search_path` of any further store.
    pub schema: Option<String>,
    db: testing::TestDb,
}

impl From<testing::TestDb> for TestDb {
    fn from(db: testing::TestDb) -> Self {
        Self {
            store: db.store().clone(),
            url: db.url().to_owned(),
            schema: db.schema().map(str::to_owned),
            db,
        }
    }
}

/// `builder`, `builder_with` and `backend` come from the crate's `TestDb`.
impl Deref for TestDb {
    type Target = testing::TestDb;

    fn deref(&self) -> &testing::TestDb {
        &self.db
    }
}

impl GroupCrashHarness for TestDb {
    fn crash_after_next_group_commit(&self) {
        self.db.crash_after_next_group_commit();
    }

    fn group_crashes(&self) -> u64 {
        self.db.group_crashes()
    }
}

impl StoreHarness for TestDb {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn advance(&self, by: Duration) {
        self.db.advance(by);
    }
}

impl TestDb {
    /// Runs `sql` (its one column aliased `n`) on one of the store's connections and returns `n`.
    pub fn query_i64(&self, sql: &str) -> i64 {
        self.db.query_i64(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `sql` on one of the store's connections; the affected-row count the driver reports.
    pub fn execute(&self, sql: &str) -> usize {
        self.db.execute(sql).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The SQL spelling of a blob literal holding `bytes`.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self.backend() {
            BackendKind::Postgres => format!("decode('{hex}', 'hex')"),
            _ => format!("X'{hex}'"),
        }
    }

    /// A count of `safe_jobs` rows, cast to a 64-bit integer in every dialect.
    pub fn count(&self, predicate: &str) -> i64 {
        self.count_rows("safe_jobs", predicate)
    }

    /// A count of `table`'s rows matching `predicate`, cast to a 64-bit integer in every dialect.
    pub fn count_rows(&self, table: &str, predicate: &str) -> i64 {
        let cast = match self.backend() {
            BackendKind::Mysql => "SIGNED",
            _ => "BIGINT",
        };
        self.query_i64(&format!(
            "SELECT CAST(COUNT(*) AS {cast}) AS n FROM {table} WHERE {predicate}"
        ))
    }
}

/// A migrated SQLite store in a fresh temporary directory.
#[cfg(feature = "sqlite")]
pub fn sqlite(test: &str) -> TestDb {
    sqlite_with(test, |b| b)
}

/// Like [`sqlite`], with builder options.
#[cfg(feature = "sqlite")]
pub fn sqlite_with(
    test: &str,
    options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
) -> TestDb {
    testing::TestDb::sqlite_with(test, options)
        .unwrap_or_else(|e| panic!("sqlite test database: {e}"))
        .into()
}

/// A migrated PostgreSQL store in a fresh schema, or `None` (skipped).
#[cfg(feature = "postgres")]
pub fn postgres(test: &str) -> Option<TestDb> {
    postgres_with(test, |b| b)
}

/// Like [`postgres`], with builder options.
#[cfg(feature = "postgres")]
pub fn postgres_with(
    test: &str,
    options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
) -> Option<TestDb> {
    testing::TestDb::postgres_from_env_with(test, options)
        .unwrap_or_else(|e| panic!("postgres test database: {e}"))
        .map(TestDb::from)
}

/// A migrated MySQL/MariaDB store in a fresh database, or `None` (skipped).
#[cfg(feature = "mysql")]
pub fn mysql(test: &str) -> Option<TestDb> {
    mysql_with(test, |b| b)
}

/// Like [`mysql`], with builder options.
#[cfg(feature = "mysql")]
pub fn mysql_with(
    test: &str,
    options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
) -> Option<TestDb> {
    testing::TestDb::mysql_from_env_with(test, options)
        .unwrap_or_else(|e| panic!("mysql test database: {e}"))
        .map(TestDb::from)
}
/// Defines each test once per backend: `mod sqlite`, `mod postgres`, `mod mysql`, each with one
/// `#[test]` per body; PostgreSQL and MySQL ones skip (print a line) without their URL.
#[macro_export]
macro_rules! on_every_backend {
    ($($(#[$meta:meta])* fn $name:ident($db:ident: &TestDb) $body:block)*) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let $db = &$crate::common::sqlite(stringify!($name));
                    $body
                }
            )*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let Some(db) = $crate::common::postgres(stringify!($name)) else { return };
                    let $db = &db;
                    $body
                }
            )*
        }
        #[cfg(feature = "mysql")]
        mod mysql {
            #[allow(unused_imports)]
            use super::*;
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    let Some(db) = $crate::common::mysql(stringify!($name)) else { return };
                    let $db = &db;
                    $body
                }
            )*
        }
    };
}

/// An unguarded job of `kind` in the `default` queue, due now, with `{"n": n}` as payload.
pub fn job(kind: &str, n: usize) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        queue: "default".to_owned(),
        payload: serde_json::json!({ "n": n }),
        metadata: serde_json::Value::Null,
        priority: 0,
        run_at: RunAt::Now,
        max_attempts: 3,
        idempotent: true,
        unique_key: None,
        guard: None,
    }
}

/// Claims one job of `queue_name` as worker `w` with a 60 s lease.
pub fn claim_one(queue: &dyn QueueStore, queue_name: &str) -> Claimed {
    let queues = [queue_name.to_owned()];
    queue
        .claim(&ClaimRequest {
            worker: "w",
            queues: &queues,
            limit: 1,
            ttl: Duration::from_secs(60),
        })
        .expect("claim")
        .pop()
        .expect("a claimed job")
}

/// A [`DieselQueue`](safejob_diesel::queue::DieselQueue) on a test's own database, as the
/// harness of the queue-side conformance suites (schedules, the action log): time moves through
/// the queue's test offset.
pub struct QueueDb {
    // Dropped first: the queue lets go of its connections before the database is dropped.
    pub queue: Arc<safejob_diesel::queue::DieselQueue>,
    // Held for its drop (which removes the test's database).
    pub db: TestDb,
}

impl QueueDb {
    /// A queue on `db`.
    pub fn new(db: TestDb) -> Self {
        Self {
            queue: Arc::new(safejob_diesel::queue::DieselQueue::new(db.store.clone())),
            db,
        }
    }
}

impl safejob_test_kit::QueueHarness for QueueDb {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    /// The database clock cannot move; the queue's (and its store's) view of it can.
    fn advance(&self, by: Duration) {
        self.queue.advance_clock_for_tests(by);
    }
}

impl safejob_test_kit::ScheduleHarness for QueueDb {
    fn schedules(&self) -> Arc<dyn safejob_core::schedule::ScheduleStore> {
        self.queue.clone()
    }
}

impl safejob_test_kit::ActionHarness for QueueDb {
    fn actions(&self) -> Arc<dyn safejob_core::action::ActionStore> {
        self.queue.clone()
    }
}

/// Runs `f` in a diesel transaction on whichever connection `conn` is.
pub fn transaction<T>(
    conn: &mut safejob_diesel::ConnectionRef<'_>,
    f: impl FnOnce(&mut safejob_diesel::ConnectionRef<'_>) -> Result<T, String>,
) -> Result<T, String> {
    use diesel::Connection;
    let mut out = None;
    let mut f = Some(f);
    let mut body =
        |c: &mut safejob_diesel::ConnectionRef<'_>| -> Result<(), diesel::result::Error> {
            let f = f.take().expect("once");
            match f(c) {
                Ok(v) => {
                    out = Some(Ok(v));
                    Ok(())
                }
                Err(e) => {
                    out = Some(Err(e));
                    Err(diesel::result::Error::RollbackTransaction)
                }
            }
        };
    let ran = match conn {
        #[cfg(feature = "sqlite")]
        safejob_diesel::ConnectionRef::Sqlite(c) => {
            c.transaction(|c| body(&mut safejob_diesel::ConnectionRef::Sqlite(c)))
        }
        #[cfg(feature = "postgres")]
        safejob_diesel::ConnectionRef::Postgres(c) => {
            c.transaction(|c| body(&mut safejob_diesel::ConnectionRef::Postgres(c)))
        }
        #[cfg(feature = "mysql")]
        safejob_diesel::ConnectionRef::Mysql(c) => {
            c.transaction(|c| body(&mut safejob_diesel::ConnectionRef::Mysql(c)))
        }
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    match (ran, out) {
        (_, Some(result)) => result,
        (Err(e), None) => Err(e.to_string()),
        (Ok(()), None) => Err("the body did not run".into()),
    }
}
