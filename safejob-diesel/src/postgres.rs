//! PostgreSQL: nothing to set per connection (but `synchronous_commit = off` on the relaxed
//! effects-marks pool); statements use `now()`.

use diesel::{PgConnection, QueryResult, connection::SimpleConnection};

use crate::pool::{ConnectionRef, PoolOptions, StoreConnection, run_statements};

impl StoreConnection for PgConnection {
    fn init(&mut self, options: &PoolOptions) -> QueryResult<()> {
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
