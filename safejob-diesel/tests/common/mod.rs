//! Shared test helpers: one isolated, migrated database per test on each backend, and the
//! `StoreHarness` the test kit's suites drive.
//!
//! * SQLite: a file in a fresh temporary directory.
//! * PostgreSQL: a fresh schema in `SAFEJOB_TEST_POSTGRES_URL`'s database, set as every pooled
//!   connection's `search_path`; dropped afterwards.
//! * MySQL/MariaDB: a fresh database on `SAFEJOB_TEST_MYSQL_URL`'s server; dropped afterwards.
//!
//! Without the URL a PostgreSQL or MySQL test prints one `skipped:` line and passes, unless
//! `SAFEJOB_REQUIRE_BACKENDS=1`, which turns a missing or unreachable database into a failure.

#![allow(dead_code)] // each test file uses a different part of this module

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use safejob_core::LeaseStore;
use safejob_diesel::{BackendKind, ConnectionRef, DieselStore, DieselStoreBuilder};
use safejob_test_kit::StoreHarness;

/// One test's database and its store.
pub struct TestDb {
    pub store: Arc<DieselStore>,
    /// The URL the store was built from (for building more stores on the same database).
    pub url: String,
    /// The PostgreSQL schema to put on the `search_path` of any further store.
    pub schema: Option<String>,
    cleanup: Option<Cleanup>,
    _dir: Option<tempfile::TempDir>,
}

enum Cleanup {
    #[cfg(feature = "postgres")]
    DropSchema { admin_url: String, schema: String },
    #[cfg(feature = "mysql")]
    DropDatabase { admin_url: String, database: String },
}

impl Drop for TestDb {
    fn drop(&mut self) {
        #[allow(unused_variables)]
        if let Some(cleanup) = self.cleanup.take() {
            #[allow(unreachable_code)]
            let _ = match cleanup {
                #[cfg(feature = "postgres")]
                Cleanup::DropSchema { admin_url, schema } => admin_execute::<diesel::PgConnection>(
                    &admin_url,
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ),
                #[cfg(feature = "mysql")]
                Cleanup::DropDatabase {
                    admin_url,
                    database,
                } => admin_execute::<diesel::MysqlConnection>(
                    &admin_url,
                    &format!("DROP DATABASE IF EXISTS {database}"),
                ),
            };
        }
    }
}

impl StoreHarness for TestDb {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    /// The database clock cannot move; the store's view of it can (rows stay untouched, as
    /// with the memory store's manual clock).
    fn advance(&self, by: Duration) {
        self.store.advance_clock_for_tests(by);
    }
}

impl TestDb {
    /// A builder on this test's database (same file / schema / database), for a second store
    /// with other pool options.
    pub fn builder(&self) -> DieselStoreBuilder {
        self.builder_with(|_| Ok(()))
    }

    /// Like [`TestDb::builder`], with `setup` run on every new connection after the schema is set.
    pub fn builder_with(
        &self,
        setup: impl Fn(&mut ConnectionRef<'_>) -> diesel::QueryResult<()> + Send + Sync + 'static,
    ) -> DieselStoreBuilder {
        let set = self
            .schema
            .as_ref()
            .map(|schema| format!("SET search_path TO {schema}"));
        DieselStore::builder(&self.url).on_connect(move |conn| {
            if let Some(set) = &set {
                conn.batch_execute(set)?;
            }
            setup(conn)
        })
    }

    pub fn backend(&self) -> BackendKind {
        self.store.backend()
    }

    /// Runs `sql` (its one column aliased `n`) on one of the store's connections and returns `n`.
    pub fn query_i64(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let rows: Vec<N> = self
            .store
            .with_connection(|conn| match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => diesel::RunQueryDsl::load(diesel::sql_query(sql), *c),
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => diesel::RunQueryDsl::load(diesel::sql_query(sql), *c),
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => diesel::RunQueryDsl::load(diesel::sql_query(sql), *c),
                #[allow(unreachable_patterns)]
                _ => unreachable!(),
            })
            .expect("a connection")
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows[0].n
    }

    /// Runs `sql` on one of the store's connections; the affected-row count the driver reports.
    pub fn execute(&self, sql: &str) -> usize {
        self.store
            .with_connection(|conn| match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => {
                    diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c)
                }
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => {
                    diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c)
                }
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c),
                #[allow(unreachable_patterns)]
                _ => unreachable!(),
            })
            .expect("a connection")
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
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

/// A name unique to this process and call, usable as a SQL identifier.
pub fn unique_name(test: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("sj_{test}_{}_{seq}", std::process::id())
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
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!(
        "sqlite://{}",
        dir.path()
            .join(format!("{}.db", unique_name(test)))
            .display()
    );
    let store = options(DieselStore::builder(&url))
        .build()
        .expect("sqlite store");
    store.migrate().expect("sqlite migrations");
    TestDb {
        store: Arc::new(store),
        url,
        schema: None,
        cleanup: None,
        _dir: Some(dir),
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn admin_execute<C: diesel::Connection>(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = C::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(sql).map_err(|e| e.to_string())
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
    let admin_url = safejob_test_kit::backend_url("SAFEJOB_TEST_POSTGRES_URL")?;
    let schema = unique_name(test);
    if let Err(error) =
        admin_execute::<diesel::PgConnection>(&admin_url, &format!("CREATE SCHEMA {schema}"))
    {
        return unreachable_db("SAFEJOB_TEST_POSTGRES_URL", &error);
    }
    let db = TestDb {
        store: Arc::new(
            options(search_path_builder(&admin_url, &schema))
                .build()
                .expect("postgres store"),
        ),
        url: admin_url.clone(),
        schema: Some(schema.clone()),
        cleanup: Some(Cleanup::DropSchema { admin_url, schema }),
        _dir: None,
    };
    db.store.migrate().expect("postgres migrations");
    Some(db)
}

#[cfg(feature = "postgres")]
fn search_path_builder(url: &str, schema: &str) -> DieselStoreBuilder {
    let set = format!("SET search_path TO {schema}");
    DieselStore::builder(url).on_connect(move |conn| conn.batch_execute(&set))
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
    let admin_url = safejob_test_kit::backend_url("SAFEJOB_TEST_MYSQL_URL")?;
    let database = unique_name(test);
    if let Err(error) =
        admin_execute::<diesel::MysqlConnection>(&admin_url, &format!("CREATE DATABASE {database}"))
    {
        return unreachable_db("SAFEJOB_TEST_MYSQL_URL", &error);
    }
    let mut url = url::Url::parse(&admin_url).expect("SAFEJOB_TEST_MYSQL_URL is a URL");
    url.set_path(&format!("/{database}"));
    let url = url.to_string();
    let db = TestDb {
        store: Arc::new(
            options(DieselStore::builder(&url))
                .build()
                .expect("mysql store"),
        ),
        url,
        schema: None,
        cleanup: Some(Cleanup::DropDatabase {
            admin_url,
            database,
        }),
        _dir: None,
    };
    db.store.migrate().expect("mysql migrations");
    Some(db)
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unreachable_db(var: &str, error: &str) -> Option<TestDb> {
    safejob_test_kit::skip_unless_required(format_args!(
        "the database at {var} is unreachable: {error}"
    ));
    None
}

/// Defines each test once per backend: `mod sqlite`, `mod postgres`, `mod mysql`, each with one
/// `#[test]` per body; PostgreSQL and MySQL ones skip (print a line) without their URL.
#[macro_export]
macro_rules! on_every_backend {
    ($(fn $name:ident($db:ident: &TestDb) $body:block)*) => {
        #[cfg(feature = "sqlite")]
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
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
