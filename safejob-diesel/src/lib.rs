//! # safejob-diesel
//!
//! safejob's [`LeaseStore`](safejob_core::LeaseStore) on SQLite (the default, compiled in),
//! PostgreSQL and MySQL/MariaDB, through diesel and an r2d2 pool. One type, [`DieselStore`],
//! chosen at run time by the URL: `sqlite://path/to/file.db`, `postgres://…`, `mysql://…`.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
//! use std::sync::Arc;
//! use safejob_core::{IdempotencyKey, KeyError, Outcome, PerformContext, Report, Runner, SafeJob};
//! use safejob_diesel::DieselStore;
//!
//! struct Charge { order: u64 }
//!
//! impl SafeJob for Charge {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["charge", &self.order.to_string()])
//!     }
//!     fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::json(serde_json::json!({"charged": self.order})))
//!     }
//! }
//!
//! let store = DieselStore::connect(&url)?; // e.g. "sqlite://target/jobs.db"
//! store.migrate()?;                        // creates safe_jobs; a no-op once done
//! let runner = Runner::builder(Arc::new(store)).build()?;
//! assert!(matches!(runner.run(&Charge { order: 7 })?, Report::Succeeded { .. }));
//! assert!(matches!(runner.run(&Charge { order: 7 })?, Report::AlreadySucceeded { .. }));
//! # Ok(()) }
//! ```
//!
//! ## Backends
//!
//! | feature | URL | needs |
//! |---|---|---|
//! | `sqlite` (default) | `sqlite://file.db` | nothing: libsqlite3 is bundled |
//! | `postgres` | `postgres://user@host/db` | libpq (Debian: `libpq-dev`) |
//! | `mysql` | `mysql://user@host/db`, `mariadb://…` | libmysqlclient (Debian: `libmariadb-dev-compat`) |
//!
//! A URL for a backend that is compiled out is [`ConnectError::BackendNotCompiled`], naming the
//! feature to enable.
//!
//! ## What each primitive costs
//!
//! | primitive | PostgreSQL, SQLite | MySQL, MariaDB |
//! |---|---|---|
//! | acquire, fresh key | 1: `INSERT … ON CONFLICT DO NOTHING RETURNING` | 2: `INSERT`, then read the grant back |
//! | acquire, existing key (replay, busy, conflict) | 2: the no-op insert, `SELECT` | 2: the insert (duplicate key), `SELECT` |
//! | acquire, takeover | 3: + a fenced `UPDATE … RETURNING` | 4: + a fenced `UPDATE`, read back |
//! | renew | 1: `UPDATE … RETURNING` | 2: `UPDATE`, read back |
//! | finalize (succeeded or failed), release, finish effects | 1: a fenced `UPDATE` (a finalize also writes `retain_until`) | 1 |
//! | prune up to `limit` rows past their retention | 1: `DELETE … WHERE digest IN (SELECT … ORDER BY retain_until LIMIT ?)` | 1: `DELETE … ORDER BY retain_until LIMIT ?` |
//! | finalize with transactional effects | `BEGIN`, `UPDATE`, the effects, a confirming `SELECT`, `COMMIT` | the same between `SET autocommit = 0` and `SET autocommit = 1` |
//!
//! Every fenced write is one conditional `UPDATE` that must match exactly one row (applied) or
//! none (stale); MySQL reports matched rows, not changed rows, because diesel connects with
//! `CLIENT_FOUND_ROWS`. Lease expiry is computed and compared by the database clock inside the
//! statements. Statements are prepared once per connection and reused (diesel does not cache
//! `sql_query`, so the store uses its own cacheable statement type). MySQL has no `RETURNING`
//! (MariaDB's `INSERT … RETURNING` yields no result metadata to prepared statements), hence the
//! read-backs. Deadlocks and lock-wait timeouts are retried inside the store.
//!
//! ## Transactional effects
//!
//! With `EffectsMode::Transactional` (chosen by the job's own `SafeJob::effects_mode`, else by
//! the Runner or the worker), `on_succeeded_once` runs inside the finalize transaction. Write
//! through [`TransactionExt::effects_tx`]: an [`EffectsTx`] with `execute` (one placeholder, `?`,
//! on every backend), `insert` and `update` and typed [`SqlValue`]s, so one job runs unchanged
//! on SQLite, PostgreSQL and MySQL/MariaDB; [`EffectsTx`]'s docs list what stays
//! backend-specific. [`TransactionExt::diesel_connection`] gives the connection by its diesel
//! type instead. After the hook returns `Ok`
//! the store confirms, inside the transaction and before `COMMIT`, that the transaction is alive
//! and holds this attempt's `succeeded`; if not (the hook swallowed an error that aborted or
//! rolled back the transaction), it rolls back and reports the effects aborted, so the attempt
//! is retried. docs/guarantees.md says what a hook may do with errors on each database.

//!
//! ## Testing your jobs: the `test-util` feature
//!
//! Enable `test-util` in your `[dev-dependencies]` (never in a production build) for two things
//! tests need:
//!
//! * `testing::TestDb`: a migrated store on a database of its own per test — a temporary SQLite
//!   file, a fresh PostgreSQL schema or MySQL/MariaDB database from `SAFEJOB_TEST_POSTGRES_URL` /
//!   `SAFEJOB_TEST_MYSQL_URL` — removed on drop, and a `StoreHarness` for safejob-test-kit's
//!   torture and conformance suites;
//! * `DieselStore::advance_clock_for_tests` and `DieselQueue::advance_clock_for_tests`: make
//!   time pass as the store sees it, so leases expire without sleeping.
//!
//! ```toml
//! [dev-dependencies]
//! safejob-diesel = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! docs/testing.md in the repository shows a job proved exactly-once on each backend.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
compile_error!("safejob-diesel needs at least one backend feature: sqlite, postgres or mysql");

mod backend;
mod error;
mod guard;
pub mod outbox;
pub mod queue;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

pub use backend::{
    pool::{ConnectionRef, SetupHook, SqliteSynchronous},
    url::BackendKind,
};
pub use error::{BoxError, ConnectError, MigrateError};
pub use guard::{
    DEFAULT_MAX_GROUP, DieselStore, DieselStoreBuilder, EffectsTx, EffectsTxError, GroupCommitLost,
    GroupCommitStats, SqlValue, TransactionExt, TxError,
};
pub use queue::DieselQueue;
