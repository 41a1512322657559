//! Ready-made test databases for your own jobs: [`TestDb`], a migrated [`DieselStore`] on a
//! database of its own, removed when it is dropped, and a [`StoreHarness`] for the test kit's
//! torture and conformance suites. Only with the `test-util` feature, which belongs in
//! `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! safejob-diesel = { version = "0.1", features = ["test-util"] }
//! safejob-test-kit = "0.1"
//! ```
//!
//! | constructor | database | without its variable |
//! |---|---|---|
//! | [`TestDb::sqlite`] | a file in a fresh temporary directory | — |
//! | [`TestDb::postgres_from_env`] | a fresh schema in `SAFEJOB_TEST_POSTGRES_URL`'s database, on every pooled connection's `search_path` | `Ok(None)`, after printing `skipped: SAFEJOB_TEST_POSTGRES_URL is not set` |
//! | [`TestDb::mysql_from_env`] | a fresh database on `SAFEJOB_TEST_MYSQL_URL`'s server | `Ok(None)`, after printing the same for `SAFEJOB_TEST_MYSQL_URL` |
//!
//! Each test gets its own database (or schema), so tests running in parallel never see each
//! other's rows. A missing variable or an unreachable server is a skip, printed where `cargo
//! test` shows it, unless `SAFEJOB_REQUIRE_BACKENDS=1` (set it in CI): then it is
//! [`TestDbError::Required`], and the test fails instead of passing untested.
//!
//! Time moves with [`StoreHarness::advance`], which calls [`DieselStore::advance_clock_for_tests`]:
//! leases expire without sleeping.
//!
//! ```
//! use safejob_core::*;
//! use safejob_diesel::testing::TestDb;
//! use safejob_test_kit::Torture;
//!
//! struct Charge(usize);
//!
//! impl SafeJob for Charge {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["charge", &self.0.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//! }
//!
//! let db = TestDb::sqlite()?;
//! let report = Torture::new(&db).keys(20).duplicates(3).seed(1).run(Charge)?;
//! assert_eq!(report.succeeded, 20);
//! assert_eq!(db.query_i64("SELECT COUNT(*) AS n FROM safe_jobs")?, 20);
//!
//! // The same test on PostgreSQL, when SAFEJOB_TEST_POSTGRES_URL is set.
//! # #[cfg(feature = "postgres")]
//! if let Some(db) = TestDb::postgres_from_env()? {
//!     Torture::new(&db).keys(20).seed(1).run(Charge)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use safejob_core::{LeaseStore, store::StoreError};
use safejob_test_kit::{BackendRequired, StoreHarness, conformance::GroupCrashHarness};

use crate::{
    BackendKind, ConnectError, ConnectionRef, DieselStore, DieselStoreBuilder, MigrateError,
};

/// A test database and the migrated [`DieselStore`] on it. Dropping it drops the database (or
/// schema, or temporary directory). See the [module docs](self).
pub struct TestDb {
    store: Arc<DieselStore>,
    url: String,
    schema: Option<String>,
    cleanup: Option<Cleanup>,
    // Removed on drop, after the cleanup (SQLite's file lives in it).
    _dir: Option<tempfile::TempDir>,
}

/// Why a [`TestDb`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestDbError {
    /// The backend could not be tested and `SAFEJOB_REQUIRE_BACKENDS=1`.
    #[error(transparent)]
    Required(#[from] BackendRequired),
    /// No temporary directory could be made for a SQLite database.
    #[error("could not create a temporary directory for the test database: {0}")]
    TempDir(#[source] std::io::Error),
    /// The URL in the environment variable could not be parsed.
    #[error("{var} is not a database URL: {reason}")]
    BadUrl {
        /// The variable.
        var: &'static str,
        /// What is wrong with it (never the password).
        reason: String,
    },
    /// The store could not be built.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// No connection could be had from the store's pool.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A statement run with [`TestDb::execute`] or [`TestDb::query_i64`] failed.
    #[error("{sql}: {source}")]
    Statement {
        /// The statement.
        sql: String,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// [`TestDb::query_i64`]'s statement returned no row.
    #[error("{sql}: no row returned")]
    NoRow {
        /// The statement.
        sql: String,
    },
}

enum Cleanup {
    #[cfg(feature = "postgres")]
    DropSchema { admin_url: String, schema: String },
    #[cfg(feature = "mysql")]
    DropDatabase { admin_url: String, database: String },
}

impl Cleanup {
    /// Drops the schema or database. A failure leaves a uniquely named one behind; there is no
    /// one to report it to from a destructor.
    fn run(self) {
        #[allow(unreachable_code)]
        let _ = match self {
            #[cfg(feature = "postgres")]
            Self::DropSchema { admin_url, schema } => admin_execute::<diesel::PgConnection>(
                &admin_url,
                &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            ),
            #[cfg(feature = "mysql")]
            Self::DropDatabase {
                admin_url,
                database,
            } => admin_execute::<diesel::MysqlConnection>(
                &admin_url,
                &format!("DROP DATABASE IF EXISTS {database}"),
            ),
        };
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run();
        }
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("store", &self.store)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
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

/// The store's group commit crashes on demand (a store built with group commit off never
/// crashes, and the conformance case says so).
impl GroupCrashHarness for TestDb {
    fn crash_after_next_group_commit(&self) {
        self.store.crash_after_next_group_commit_for_tests();
    }

    fn group_crashes(&self) -> u64 {
        self.store.group_crashes_for_tests()
    }
}

impl TestDb {
    /// A migrated SQLite store on a file in a fresh temporary directory, removed on drop.
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Result<Self, TestDbError> {
        Self::sqlite_with("test", |b| b)
    }

    /// Like [`sqlite`](Self::sqlite): `name` goes into the file's name (made unique), `options`
    /// sets up the store's builder.
    #[cfg(feature = "sqlite")]
    pub fn sqlite_with(
        name: &str,
        options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
    ) -> Result<Self, TestDbError> {
        let dir = tempfile::tempdir().map_err(TestDbError::TempDir)?;
        let url = format!(
            "sqlite://{}",
            dir.path()
                .join(format!("{}.db", unique_name(name)))
                .display()
        );
        let store = options(DieselStore::builder(&url)).build()?;
        store.migrate()?;
        Ok(Self {
            store: Arc::new(store),
            url,
            schema: None,
            cleanup: None,
            _dir: Some(dir),
        })
    }

    /// A migrated PostgreSQL store in a fresh schema of `SAFEJOB_TEST_POSTGRES_URL`'s database,
    /// dropped on drop; `Ok(None)` (skipped, and said so) when the variable is unset or the
    /// server unreachable, [`TestDbError::Required`] then if `SAFEJOB_REQUIRE_BACKENDS=1`.
    #[cfg(feature = "postgres")]
    pub fn postgres_from_env() -> Result<Option<Self>, TestDbError> {
        Self::postgres_from_env_with("test", |b| b)
    }

    /// Like [`postgres_from_env`](Self::postgres_from_env): `name` goes into the schema's name
    /// (made unique), `options` sets up the store's builder.
    #[cfg(feature = "postgres")]
    pub fn postgres_from_env_with(
        name: &str,
        options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
    ) -> Result<Option<Self>, TestDbError> {
        const VAR: &str = "SAFEJOB_TEST_POSTGRES_URL";
        let Some(admin_url) = safejob_test_kit::try_backend_url(VAR)? else {
            return Ok(None);
        };
        let schema = unique_name(name);
        if let Err(error) =
            admin_execute::<diesel::PgConnection>(&admin_url, &format!("CREATE SCHEMA {schema}"))
        {
            return unreachable_db(VAR, &error);
        }
        let cleanup = Cleanup::DropSchema {
            admin_url: admin_url.clone(),
            schema: schema.clone(),
        };
        let built = options(builder_on(&admin_url, Some(&schema), |_| Ok(()))).build();
        Self::migrated(built, admin_url, Some(schema), cleanup).map(Some)
    }

    /// A migrated MySQL/MariaDB store in a fresh database on `SAFEJOB_TEST_MYSQL_URL`'s server,
    /// dropped on drop; `Ok(None)` (skipped, and said so) when the variable is unset or the
    /// server unreachable, [`TestDbError::Required`] then if `SAFEJOB_REQUIRE_BACKENDS=1`.
    #[cfg(feature = "mysql")]
    pub fn mysql_from_env() -> Result<Option<Self>, TestDbError> {
        Self::mysql_from_env_with("test", |b| b)
    }

    /// Like [`mysql_from_env`](Self::mysql_from_env): `name` goes into the database's name (made
    /// unique), `options` sets up the store's builder.
    #[cfg(feature = "mysql")]
    pub fn mysql_from_env_with(
        name: &str,
        options: impl FnOnce(DieselStoreBuilder) -> DieselStoreBuilder,
    ) -> Result<Option<Self>, TestDbError> {
        const VAR: &str = "SAFEJOB_TEST_MYSQL_URL";
        let Some(admin_url) = safejob_test_kit::try_backend_url(VAR)? else {
            return Ok(None);
        };
        let mut url = url::Url::parse(&admin_url).map_err(|e| TestDbError::BadUrl {
            var: VAR,
            reason: e.to_string(),
        })?;
        let database = unique_name(name);
        if let Err(error) = admin_execute::<diesel::MysqlConnection>(
            &admin_url,
            &format!("CREATE DATABASE {database}"),
        ) {
            return unreachable_db(VAR, &error);
        }
        url.set_path(&format!("/{database}"));
        let url = url.to_string();
        let cleanup = Cleanup::DropDatabase {
            admin_url,
            database,
        };
        let built = options(DieselStore::builder(&url)).build();
        Self::migrated(built, url, None, cleanup).map(Some)
    }

    /// The test database around a store just built on a schema or database made for it: the
    /// store migrated, and `cleanup` run whatever fails.
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    fn migrated(
        built: Result<DieselStore, ConnectError>,
        url: String,
        schema: Option<String>,
        cleanup: Cleanup,
    ) -> Result<Self, TestDbError> {
        let store = match built {
            Ok(store) => store,
            Err(error) => {
                cleanup.run();
                return Err(error.into());
            }
        };
        // From here on, the drop runs the cleanup.
        let db = Self {
            store: Arc::new(store),
            url,
            schema,
            cleanup: Some(cleanup),
            _dir: None,
        };
        db.store.migrate()?;
        Ok(db)
    }

    /// The store, migrated.
    pub fn store(&self) -> &Arc<DieselStore> {
        &self.store
    }

    /// The URL the store was built from. On PostgreSQL it names the server's database, not the
    /// test's schema: build further stores with [`builder`](Self::builder), which sets the
    /// `search_path`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL schema this test's tables live in; `None` on the other backends.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The backend.
    pub fn backend(&self) -> BackendKind {
        self.store.backend()
    }

    /// A builder on this test's database (same file, schema or database), for a second store
    /// with other pool options.
    pub fn builder(&self) -> DieselStoreBuilder {
        self.builder_with(|_| Ok(()))
    }

    /// Like [`builder`](Self::builder), with `setup` run on every new connection after the schema
    /// is set.
    pub fn builder_with(
        &self,
        setup: impl Fn(&mut ConnectionRef<'_>) -> diesel::QueryResult<()> + Send + Sync + 'static,
    ) -> DieselStoreBuilder {
        builder_on(&self.url, self.schema.as_deref(), setup)
    }

    /// Runs `sql` on one of the store's connections (your own tables: a ledger to write
    /// effects into, say); the affected-row count the driver reports.
    pub fn execute(&self, sql: &str) -> Result<usize, TestDbError> {
        let ran = self.store.with_connection(|conn| match conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => diesel::RunQueryDsl::execute(diesel::sql_query(sql), *c),
        })?;
        ran.map_err(|source| TestDbError::Statement {
            sql: sql.to_owned(),
            source,
        })
    }

    /// Runs `sql`, whose one column is a 64-bit integer named `n`, and returns `n` of its first
    /// row: `SELECT COUNT(*) AS n FROM ledger WHERE …` (`COUNT(*)` is 64-bit on every backend;
    /// cast narrower integers, `CAST(… AS BIGINT)`, or `AS SIGNED` on MySQL/MariaDB).
    pub fn query_i64(&self, sql: &str) -> Result<i64, TestDbError> {
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
            })?
            .map_err(|source| TestDbError::Statement {
                sql: sql.to_owned(),
                source,
            })?;
        rows.first()
            .map(|row| row.n)
            .ok_or_else(|| TestDbError::NoRow {
                sql: sql.to_owned(),
            })
    }
}

/// A builder on `url` whose connections first put `schema` (if any) on their `search_path`, then
/// run `setup`.
fn builder_on(
    url: &str,
    schema: Option<&str>,
    setup: impl Fn(&mut ConnectionRef<'_>) -> diesel::QueryResult<()> + Send + Sync + 'static,
) -> DieselStoreBuilder {
    let set = schema.map(|schema| format!("SET search_path TO {schema}"));
    DieselStore::builder(url).on_connect(move |conn| {
        if let Some(set) = &set {
            conn.batch_execute(set)?;
        }
        setup(conn)
    })
}

/// A name unique to this process and call, made from `test`, usable as a SQL identifier: what
/// [`TestDb`] names its schemas, databases and files.
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

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn admin_execute<C: diesel::Connection>(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = C::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(sql).map_err(|e| e.to_string())
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unreachable_db(var: &str, error: &str) -> Result<Option<TestDb>, TestDbError> {
    safejob_test_kit::skip_or_require(format_args!(
        "the database at {var} is unreachable: {error}"
    ))?;
    Ok(None)
}
