//! Connection pools: the builder's options, one pool per backend ([`Pools`]), and the r2d2 manager that sets every connection up
//! and throws away any connection that could carry an open transaction back into the pool.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use diesel::{
    QueryResult,
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
};

use super::{BackendKind, DbConnection, Row, Stmt};
use crate::error::{BoxError, Secrets};

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

    /// Which backend this connection speaks.
    pub fn backend(&self) -> BackendKind {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => <diesel::SqliteConnection as DbConnection>::KIND,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => <diesel::PgConnection as DbConnection>::KIND,
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => <diesel::MysqlConnection as DbConnection>::KIND,
        }
    }

    /// [`DbConnection::exec`] on whichever backend this is.
    pub(crate) fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(conn) => conn.exec(stmt),
            #[cfg(feature = "postgres")]
            Self::Postgres(conn) => conn.exec(stmt),
            #[cfg(feature = "mysql")]
            Self::Mysql(conn) => conn.exec(stmt),
        }
    }

    /// [`DbConnection::load`] on whichever backend this is.
    pub(crate) fn load<R: Row>(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<R>> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(conn) => conn.load(stmt),
            #[cfg(feature = "postgres")]
            Self::Postgres(conn) => conn.load(stmt),
            #[cfg(feature = "mysql")]
            Self::Mysql(conn) => conn.load(stmt),
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

/// A pooled connection and whether it must be thrown away instead of returned.
pub struct PooledConn<C> {
    pub(crate) conn: C,
    /// Set when the connection's state is unknown: a failed rollback, an ambiguous commit, a lost
    /// connection, a panic inside a transaction.
    pub(crate) broken: bool,
}

impl<C: DbConnection> PooledConn<C> {
    /// Rolls back an open transaction; marks the connection broken if that fails.
    pub(crate) fn rollback(&mut self) {
        if AnsiTransactionManager::rollback_transaction(&mut self.conn).is_err() {
            self.broken = true;
        }
    }

    /// [`DbConnection::end_effects`] after an effects transaction ended, unless the connection
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

impl<C: DbConnection> Manager<C> {
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

impl<C: DbConnection> r2d2::ManageConnection for Manager<C> {
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

/// An r2d2 pool of the crate's connections of type `C`.
pub(crate) type Pool<C> = r2d2::Pool<Manager<C>>;

/// A store's pool by backend, and the optional relaxed-durability pool for effects marks (not on
/// MySQL, which has no per-session durability setting).
pub(crate) enum Pools {
    #[cfg(feature = "sqlite")]
    Sqlite(
        Pool<diesel::SqliteConnection>,
        Option<Pool<diesel::SqliteConnection>>,
    ),
    #[cfg(feature = "postgres")]
    Postgres(
        Pool<diesel::PgConnection>,
        Option<Pool<diesel::PgConnection>>,
    ),
    #[cfg(feature = "mysql")]
    Mysql(Pool<diesel::MysqlConnection>),
}

/// Runs `$body` with `$conn` bound to a [`PooledConn`] of whichever backend the store has (the
/// one dispatch from the run-time backend to the generic code; a closure cannot be generic over
/// the connection type, so this is a macro). `marks` picks the relaxed effects-marks pool when
/// there is one. A connection that cannot be had returns the store's error from the caller.
macro_rules! with_conn {
    ($store:expr, $conn:ident => $body:expr) => {
        with_conn!($store, |main, _marks| main, $conn => $body)
    };
    ($store:expr, marks $conn:ident => $body:expr) => {
        with_conn!($store, |main, marks| marks.as_ref().unwrap_or(main), $conn => $body)
    };
    ($store:expr, |$main:ident, $marks:ident| $pick:expr, $conn:ident => $body:expr) => {
        match &$store.pools {
            #[cfg(feature = "sqlite")]
            $crate::backend::pool::Pools::Sqlite($main, $marks) => {
                let mut guard = $store.checkout($pick)?;
                let $conn = &mut *guard;
                $body
            }
            #[cfg(feature = "postgres")]
            $crate::backend::pool::Pools::Postgres($main, $marks) => {
                let mut guard = $store.checkout($pick)?;
                let $conn = &mut *guard;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::backend::pool::Pools::Mysql($main) => {
                let mut guard = $store.checkout($main)?;
                let $conn = &mut *guard;
                $body
            }
        }
    };
}
pub(crate) use with_conn;
