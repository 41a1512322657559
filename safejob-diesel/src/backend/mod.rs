//! The database side: what differs between SQLite, PostgreSQL and MySQL/MariaDB, and the one
//! connection trait the guard, the queue and the outbox are written against.
//!
//! - [`dialect`]: per backend one [`Dialect`] value (the clock, timestamps as µs, `RETURNING`,
//!   JSON) and the one template renderer.
//! - [`stmt`]: [`Stmt`], the one statement type (SQL, binds, cached or not).
//! - [`DbConnection`]: what the crate needs of a diesel connection; `sqlite.rs`, `postgres.rs`
//!   and `mysql.rs` implement it, each in a few lines.
//! - [`pool`]: the r2d2 pools, one per backend ([`pool::Pools`]), and the setup of every
//!   connection.
//! - [`url`]: the URL schemes and [`BackendKind`].
//! - `migrate`: the embedded migrations of each backend.

use diesel::{
    Connection, QueryResult,
    connection::{AnsiTransactionManager, TransactionManager},
    r2d2::R2D2Connection,
};

pub(crate) mod dialect;
mod migrate;
#[cfg(feature = "mysql")]
mod mysql;
pub(crate) mod pool;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
pub(crate) mod stmt;
pub(crate) mod url;

pub(crate) use self::{
    dialect::{Dialect, render},
    pool::{ConnectionRef, PoolOptions},
    stmt::{Bind, Stmt},
    url::BackendKind,
};

/// What the crate needs of a diesel connection; implemented by hand for `SqliteConnection`,
/// `PgConnection` and `MysqlConnection`. Every primitive of the guard, the queue and the outbox
/// is a generic function over it.
pub(crate) trait DbConnection:
    Connection<TransactionManager = AnsiTransactionManager> + R2D2Connection + Send + 'static
{
    /// Which backend this connection speaks.
    const KIND: BackendKind;
    /// The crate's own setup of a new connection (session settings, SQLite pragmas).
    fn init(&mut self, options: &PoolOptions) -> QueryResult<()>;
    /// This connection as the public enum.
    fn as_ref(&mut self) -> ConnectionRef<'_>;
    /// Runs a statement; the number of rows it matched.
    fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize>;
    /// Runs a query; its rows.
    fn load<R: Row>(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<R>>;
    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`, so a read inside it never fails
    /// later with a busy snapshot when it writes).
    fn begin_write(&mut self) -> QueryResult<()> {
        AnsiTransactionManager::begin_transaction(self)
    }
    /// Begins the write transaction a transactional effects hook runs in. Every backend but
    /// MySQL: [`begin_write`](DbConnection::begin_write). MySQL / MariaDB first turn
    /// `autocommit` off, so that when the server rolls the whole transaction back under the hook
    /// (a deadlock), the hook's later statements join a new transaction that the store rolls back,
    /// instead of committing one by one. Pair with [`end_effects`](DbConnection::end_effects).
    fn begin_effects(&mut self) -> QueryResult<()> {
        self.begin_write()
    }
    /// Undoes what [`begin_effects`](DbConnection::begin_effects) set, once the transaction is
    /// committed or rolled back (never with one open: MySQL's `SET autocommit = 1` would commit
    /// it). Nothing on every backend but MySQL.
    fn end_effects(&mut self) -> QueryResult<()> {
        Ok(())
    }
    /// Drains the notifications received on this connection (PostgreSQL `LISTEN`): their
    /// payloads. None elsewhere.
    fn drain_notifications(&mut self) -> QueryResult<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A row type the crate reads: `QueryableByName` for every backend compiled in.
///
/// Generic code cannot name "`QueryableByName` for this connection's backend" (a where-clause on
/// a trait is not implied where the trait is used), so the bound is spelled once per backend,
/// present only when its feature is on, and every `#[derive(QueryableByName)]` row gets it by
/// the blanket impl.
pub(crate) trait Row: SqliteRow + PgRow + MysqlRow + 'static {}

impl<T: SqliteRow + PgRow + MysqlRow + 'static> Row for T {}

/// `QueryableByName<Sqlite>` when the `sqlite` feature is on; nothing otherwise.
#[cfg(feature = "sqlite")]
pub(crate) trait SqliteRow: diesel::QueryableByName<diesel::sqlite::Sqlite> {}
#[cfg(feature = "sqlite")]
impl<T: diesel::QueryableByName<diesel::sqlite::Sqlite>> SqliteRow for T {}
#[cfg(not(feature = "sqlite"))]
pub(crate) trait SqliteRow {}
#[cfg(not(feature = "sqlite"))]
impl<T> SqliteRow for T {}

/// `QueryableByName<Pg>` when the `postgres` feature is on; nothing otherwise.
#[cfg(feature = "postgres")]
pub(crate) trait PgRow: diesel::QueryableByName<diesel::pg::Pg> {}
#[cfg(feature = "postgres")]
impl<T: diesel::QueryableByName<diesel::pg::Pg>> PgRow for T {}
#[cfg(not(feature = "postgres"))]
pub(crate) trait PgRow {}
#[cfg(not(feature = "postgres"))]
impl<T> PgRow for T {}

/// `QueryableByName<Mysql>` when the `mysql` feature is on; nothing otherwise.
#[cfg(feature = "mysql")]
pub(crate) trait MysqlRow: diesel::QueryableByName<diesel::mysql::Mysql> {}
#[cfg(feature = "mysql")]
impl<T: diesel::QueryableByName<diesel::mysql::Mysql>> MysqlRow for T {}
#[cfg(not(feature = "mysql"))]
pub(crate) trait MysqlRow {}
#[cfg(not(feature = "mysql"))]
impl<T> MysqlRow for T {}
