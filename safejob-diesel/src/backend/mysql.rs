//! MySQL and MariaDB. diesel connects with `CLIENT_FOUND_ROWS`, so an `UPDATE` reports the rows
//! it *matched*, not only those it changed: a renew within the same microsecond, or any CAS that
//! rewrites identical values, still counts 1 (pinned by `tests/backends.rs`).

use diesel::{
    MysqlConnection, QueryResult, RunQueryDsl,
    connection::{AnsiTransactionManager, SimpleConnection, TransactionManager},
};

use super::{BackendKind, ConnectionRef, DbConnection, PoolOptions, Row, Stmt};

impl DbConnection for MysqlConnection {
    const KIND: BackendKind = BackendKind::Mysql;

    fn init(&mut self, options: &PoolOptions) -> QueryResult<()> {
        // READ COMMITTED, as on PostgreSQL: no gap locks, so concurrent inserts of different keys
        // do not deadlock each other.
        self.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
        if let Some(timeout) = options.lock_timeout {
            // Whole seconds, at least 1: the server's granularity.
            let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            self.batch_execute(&format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                secs.max(1)
            ))?;
        }
        Ok(())
    }

    fn as_ref(&mut self) -> ConnectionRef<'_> {
        ConnectionRef::Mysql(self)
    }

    /// A deadlock (or a lock-wait timeout with `innodb_rollback_on_timeout`) rolls the whole
    /// transaction back and, with `autocommit` on, every later statement of a hook that swallowed
    /// the error would commit by itself, outside `succeeded`. With `autocommit` off they open a
    /// new transaction instead, which the store's confirm finds without our `succeeded` and rolls
    /// back.
    fn begin_effects(&mut self) -> QueryResult<()> {
        self.batch_execute("SET autocommit = 0")?;
        AnsiTransactionManager::begin_transaction(self)
    }

    fn end_effects(&mut self) -> QueryResult<()> {
        self.batch_execute("SET autocommit = 1")
    }

    fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize> {
        RunQueryDsl::execute(stmt.clone(), self)
    }

    fn load<R: Row>(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<R>> {
        RunQueryDsl::load(stmt.clone(), self)
    }
}
