//! PostgreSQL: `lock_timeout` per connection (and `synchronous_commit = off` on the relaxed
//! effects-marks pool); statements use `now()`.

use diesel::{PgConnection, QueryResult, connection::SimpleConnection};

use crate::pool::{ConnectionRef, PoolOptions, StoreConnection, run_statements};

impl StoreConnection for PgConnection {
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

    run_statements!();
}
