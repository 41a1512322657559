//! Connection pools: the builder's options, and the r2d2 manager that sets every connection up
//! and throws away any connection that could carry an open transaction back into the pool.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use diesel::{
    Connection, QueryResult,
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
    r2d2::R2D2Connection,
};

use crate::{
    error::{BoxError, Secrets},
    stmt::{GrantRow, MicrosRow, RawRow, Stmt},
};

/// SQLite's `synchronous` setting. Defaults to [`SqliteSynchronous::Full`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// `synchronous=FULL`: a commit is on disk before it returns, even across a power loss.
    /// The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode a commit survives a crash of the process but may be
    /// lost (never corrupted) on power loss or an OS crash. Faster; opt in only if a lost
    /// `succeeded` row — and so a repeated job — is acceptable after a power cut.
    Normal,
}

/// A mutable borrow of one of the store's connections, by backend: what the per-connection setup
/// hook and [`DieselStore::with_connection`](crate::DieselStore::with_connection) receive.
#[non_exhaustive]
pub enum ConnectionRef<'a> {
    /// A SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(&'a mut diesel::SqliteConnection),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(&'a mut diesel::PgConnection),
    /// A MySQL / MariaDB connection.
    #[cfg(feature = "mysql")]
    Mysql(&'a mut diesel::MysqlConnection),
}

impl ConnectionRef<'_> {
    /// Runs SQL without binds or results (for example `SET search_path TO app`).
    pub fn batch_execute(&mut self, sql: &str) -> QueryResult<()> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(conn) => conn.batch_execute(sql),
            #[cfg(feature = "postgres")]
            Self::Postgres(conn) => conn.batch_execute(sql),
            #[cfg(feature = "mysql")]
            Self::Mysql(conn) => conn.batch_execute(sql),
        }
    }
}

/// A per-connection setup hook: runs once on every new connection, after the store's own setup.
pub type SetupHook = Arc<dyn Fn(&mut ConnectionRef<'_>) -> QueryResult<()> + Send + Sync>;

/// Pool options shared by every backend.
#[derive(Clone)]
pub(crate) struct PoolOptions {
    pub(crate) max_size: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) connection_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) test_on_check_out: bool,
    pub(crate) busy_timeout: Duration,
    /// PostgreSQL `lock_timeout` and MySQL `innodb_lock_wait_timeout` of every connection.
    pub(crate) lock_timeout: Option<Duration>,
    pub(crate) synchronous: SqliteSynchronous,
    pub(crate) setup: Option<SetupHook>,
    /// The builder's opt-in: record "effects done" through a second, relaxed-durability pool.
    pub(crate) relaxed_effects_marks: bool,
    /// This pool's connections commit without waiting for the disk (the second pool only).
    pub(crate) relaxed_session: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: Some(1),
            connection_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            test_on_check_out: false,
            busy_timeout: Duration::from_secs(30),
            lock_timeout: Some(Duration::from_secs(30)),
            synchronous: SqliteSynchronous::Full,
            setup: None,
            relaxed_effects_marks: false,
            relaxed_session: false,
        }
    }
}

/// What the store needs of a diesel connection type; implemented for the three backends.
pub(crate) trait StoreConnection:
    Connection<TransactionManager = AnsiTransactionManager> + R2D2Connection + Send + 'static
{
    /// The store's own setup of a new connection (SQLite pragmas).
    fn init(&mut self, options: &PoolOptions) -> QueryResult<()>;
    /// This connection as the public enum.
    fn as_ref(&mut self) -> ConnectionRef<'_>;
    /// Begins a write transaction (SQLite: `BEGIN IMMEDIATE`, so a read inside it never fails
    /// later with a busy snapshot when it writes).
    fn begin_write(&mut self) -> QueryResult<()> {
        AnsiTransactionManager::begin_transaction(self)
    }
    /// Begins the write transaction a transactional effects hook runs in. Every backend but
    /// MySQL: [`begin_write`](StoreConnection::begin_write). MySQL / MariaDB first turn
    /// `autocommit` off, so that when the server rolls the whole transaction back under the hook
    /// (a deadlock), the hook's later statements join a new transaction that the store rolls back,
    /// instead of committing one by one. Pair with [`end_effects`](StoreConnection::end_effects).
    fn begin_effects(&mut self) -> QueryResult<()> {
        self.begin_write()
    }
    /// Undoes what [`begin_effects`](StoreConnection::begin_effects) set, once the transaction is
    /// committed or rolled back (never with one open: MySQL's `SET autocommit = 1` would commit
    /// it). Nothing on every backend but MySQL.
    fn end_effects(&mut self) -> QueryResult<()> {
        Ok(())
    }
    /// Runs a statement; the number of rows it matched.
    fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize>;
    /// Runs a query returning whole rows.
    fn rows(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<RawRow>>;
    /// Runs a query returning grants.
    fn grants(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<GrantRow>>;
    /// Runs a query returning one integer per row.
    fn micros(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<MicrosRow>>;
}

/// Implements the statement-running part of [`StoreConnection`] for a concrete connection.
macro_rules! run_statements {
    () => {
        fn exec(&mut self, stmt: &$crate::stmt::Stmt<'_>) -> diesel::QueryResult<usize> {
            diesel::RunQueryDsl::execute(stmt.clone(), self)
        }
        fn rows(
            &mut self,
            stmt: &$crate::stmt::Stmt<'_>,
        ) -> diesel::QueryResult<Vec<$crate::stmt::RawRow>> {
            diesel::RunQueryDsl::load(stmt.clone(), self)
        }
        fn grants(
            &mut self,
            stmt: &$crate::stmt::Stmt<'_>,
        ) -> diesel::QueryResult<Vec<$crate::stmt::GrantRow>> {
            diesel::RunQueryDsl::load(stmt.clone(), self)
        }
        fn micros(
            &mut self,
            stmt: &$crate::stmt::Stmt<'_>,
        ) -> diesel::QueryResult<Vec<$crate::stmt::MicrosRow>> {
            diesel::RunQueryDsl::load(stmt.clone(), self)
        }
    };
}
pub(crate) use run_statements;

/// A pooled connection and whether it must be thrown away instead of returned.
pub struct PooledConn<C> {
    pub(crate) conn: C,
    /// Set when the connection's state is unknown: a failed rollback, an ambiguous commit, a lost
    /// connection, a panic inside a transaction.
    pub(crate) broken: bool,
}

impl<C: StoreConnection> PooledConn<C> {
    /// Rolls back an open transaction; marks the connection broken if that fails.
    pub(crate) fn rollback(&mut self) {
        if AnsiTransactionManager::rollback_transaction(&mut self.conn).is_err() {
            self.broken = true;
        }
    }

    /// [`StoreConnection::end_effects`] after an effects transaction ended, unless the connection
    /// is broken (its transaction may still be open, and it is thrown away anyway); a failure
    /// marks it broken.
    pub(crate) fn end_effects(&mut self) {
        if !self.broken && self.conn.end_effects().is_err() {
            self.broken = true;
        }
    }
}

/// The r2d2 manager: connects, runs setup, and vets connections coming back.
pub(crate) struct Manager<C> {
    url: String,
    target: String,
    secrets: Secrets,
    options: PoolOptions,
    _conn: PhantomData<fn() -> C>,
}

impl<C> Manager<C> {
    pub(crate) fn new(url: String, target: String, secrets: Secrets, options: PoolOptions) -> Self {
        Self {
            url,
            target,
            secrets,
            options,
            _conn: PhantomData,
        }
    }
}

/// Why a connection could not be made; the text is already scrubbed of secrets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectFailure {
    #[error("{0}")]
    Connect(BoxError),
    #[error("{0}")]
    Setup(BoxError),
}

impl<C: StoreConnection> Manager<C> {
    pub(crate) fn open(&self) -> Result<C, ConnectFailure> {
        let mut conn = C::establish(&self.url)
            .map_err(|e| ConnectFailure::Connect(Box::new(self.secrets.scrub(e))))?;
        let setup = |conn: &mut C| -> QueryResult<()> {
            conn.init(&self.options)?;
            if let Some(hook) = &self.options.setup {
                hook(&mut conn.as_ref())?;
            }
            Ok(())
        };
        setup(&mut conn).map_err(|e| ConnectFailure::Setup(Box::new(self.secrets.scrub(e))))?;
        Ok(conn)
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }
}

impl<C: StoreConnection> r2d2::ManageConnection for Manager<C> {
    type Connection = PooledConn<C>;
    type Error = ConnectFailure;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        Ok(PooledConn {
            conn: self.open()?,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        conn.conn
            .ping()
            .map_err(|e| ConnectFailure::Connect(Box::new(self.secrets.scrub(e))))
    }

    /// diesel's own check (`R2D2Connection::is_broken`) says broken when a transaction is still
    /// open or the transaction manager is in error; r2d2 calls this when a connection is returned
    /// and drops it instead of pooling it. We add: panicking (as diesel's `ConnectionManager`
    /// does) and our own flag for connections whose state is unknown.
    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        std::thread::panicking() || conn.broken || conn.conn.is_broken()
    }
}

/// Logs pool connection errors through tracing (their text is already scrubbed).
#[derive(Debug)]
pub(crate) struct TracingErrors;

impl r2d2::HandleError<ConnectFailure> for TracingErrors {
    fn handle_error(&self, error: ConnectFailure) {
        tracing::warn!(%error, "safejob-diesel: could not open a pooled connection");
    }
}
