//! PostgreSQL: `lock_timeout` per connection (and `synchronous_commit = off` on the relaxed
//! effects-marks pool); statements use `now()`.

use diesel::{PgConnection, QueryResult, RunQueryDsl, connection::SimpleConnection};

use super::{BackendKind, ConnectionRef, DbConnection, PoolOptions, Row, Stmt};

impl DbConnection for PgConnection {
    const KIND: BackendKind = BackendKind::Postgres;

    fn init(&mut self, options: &PoolOptions) -> QueryResult<()> {
        if let Some(timeout) = options.lock_timeout {
            // A row lock held by a session that will never commit (a half-open connection after
            // an ambiguous COMMIT) must not block the settling release, or every acquirer of the
            // key, until TCP keepalive notices: waiting statements fail after this long instead.
            self.batch_execute(&format!(
                "SET lock_timeout = '{}ms'",
                timeout.as_millis().max(1)
            ))?;
        }
        if options.relaxed_session {
            // Commits return before the WAL is flushed; a server crash may lose the last few
            // hundred milliseconds of them (never corrupt, never reorder).
            self.batch_execute("SET synchronous_commit = off")?;
        }
        Ok(())
    }

    fn as_ref(&mut self) -> ConnectionRef<'_> {
        ConnectionRef::Postgres(self)
    }

    fn exec(&mut self, stmt: &Stmt<'_>) -> QueryResult<usize> {
        RunQueryDsl::execute(stmt.clone(), self)
    }

    fn load<R: Row>(&mut self, stmt: &Stmt<'_>) -> QueryResult<Vec<R>> {
        RunQueryDsl::load(stmt.clone(), self)
    }

    /// `LISTEN`'s notifications: only PostgreSQL has them (the other backends' listeners poll).
    fn drain_notifications(&mut self) -> QueryResult<Vec<String>> {
        self.notifications_iter()
            .map(|n| n.map(|n| n.payload))
            .collect()
    }
}
