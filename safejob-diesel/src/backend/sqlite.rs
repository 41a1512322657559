//! SQLite: WAL, a busy timeout, `synchronous=FULL` unless the builder opts into NORMAL, and write
//! transactions begun `IMMEDIATE`.

use diesel::{
    QueryResult, RunQueryDsl, SqliteConnection,
    connection::{AnsiTransactionManager, SimpleConnection},
};

use super::{
    BackendKind, ConnectionRef, DbConnection, PoolOptions, Row, Stmt, pool::SqliteSynchronous,
};

impl DbConnection for SqliteConnection {
    const KIND: BackendKind = BackendKind::Sqlite;

    fn init(&mut self, options: &PoolOptions) -> QueryResult<()> {
        let synchronous = match options.synchronous {
            // In WAL mode a NORMAL commit is not synced, but the next FULL commit of any
            // connection syncs the log with it; FULL commits of other connections stay durable.
            _ if options.relaxed_session => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Normal => "NORMAL",
        };
        // busy_timeout first: switching to WAL briefly needs an exclusive lock, and other pooled
        // connections may be opening at the same moment.
        self.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous};",
            options.busy_timeout.as_millis().min(i32::MAX as u128)
        ))
    }

    fn as_ref(&mut self) -> ConnectionRef<'_> {
        ConnectionRef::Sqlite(self)
    }

    fn begin_write(&mut self) -> QueryResult<()> {
        // What diesel's `immediate_transaction` does, without the closure: the write lock is taken
        // at BEGIN (waiting up to busy_timeout), so no statement inside can hit SQLITE_BUSY_SNAPSHOT.
        AnsiTransactionManager::begin_transaction_sql(self, "BEGIN IMMEDIATE")
    }

    fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize> {
        RunQueryDsl::execute(stmt.clone(), self)
    }

    fn load<R: Row>(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<R>> {
        RunQueryDsl::load(stmt.clone(), self)
    }
}
