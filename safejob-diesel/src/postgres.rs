//! PostgreSQL: nothing to set per connection; statements use `now()`.

use diesel::{PgConnection, QueryResult};

use crate::pool::{ConnectionRef, PoolOptions, StoreConnection, run_statements};

impl StoreConnection for PgConnection {
    fn init(&mut self, _options: &PoolOptions) -> QueryResult<()> {
        Ok(())
    }

    fn as_ref(&mut self) -> ConnectionRef<'_> {
        ConnectionRef::Postgres(self)
    }

    run_statements!();
}
