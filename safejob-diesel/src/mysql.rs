//! MySQL and MariaDB. diesel connects with `CLIENT_FOUND_ROWS`, so an `UPDATE` reports the rows
//! it *matched*, not only those it changed: a renew within the same microsecond, or any CAS that
//! rewrites identical values, still counts 1 (pinned by `tests/backends.rs`).

use diesel::{MysqlConnection, QueryResult, connection::SimpleConnection};

use crate::pool::{ConnectionRef, PoolOptions, StoreConnection, run_statements};

impl StoreConnection for MysqlConnection {
    fn init(&mut self, _options: &PoolOptions) -> QueryResult<()> {
        // READ COMMITTED, as on PostgreSQL: no gap locks, so concurrent inserts of different keys
        // do not deadlock each other.
        self.batch_execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    }

    fn as_ref(&mut self) -> ConnectionRef<'_> {
        ConnectionRef::Mysql(self)
    }

    run_statements!();
}
