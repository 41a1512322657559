//! The peers we measure our queue against, on the same PostgreSQL server, each in a database of
//! its own (created if missing) so that neither ever touches our tables nor the other's:
//!
//! * [`river`] — River for Rust (`riverqueue` 0.5: tokio + sqlx), database `bench_river`, schema
//!   `river_bench` dropped and re-created by River's own migrations at every run;
//! * [`fang`] — fang 0.11's blocking queue (diesel + r2d2) and worker pool, database
//!   `bench_fang`, table `fang_tasks` from fang's own embedded migrations, emptied at every run;
//! * [`apalis`] — apalis 1.0's PostgreSQL storage (`apalis-postgres`: tokio + sqlx), database
//!   `bench_apalis`, schema `apalis` from apalis' own migrations, `apalis.jobs` emptied at every
//!   run.

use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, sql_types::BigInt};

use crate::driver::BenchError;

pub mod apalis;
pub mod fang;
pub mod river;

/// `url` with its database replaced by `database`: the peer's own database on the same server.
pub fn database_url(url: &str, database: &str) -> Result<String, BenchError> {
    let mut parsed = url::Url::parse(url)?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "the peers run on PostgreSQL: give a postgres:// URL (--peer-url), not {}://",
            parsed.scheme()
        )
        .into());
    }
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.into())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Creates `database` on the server of `url` unless it exists; returns the URL of `database`.
/// `database` is one of our constants, never user input, so it is spliced into the statement.
pub fn ensure_database(url: &str, database: &str) -> Result<String, BenchError> {
    debug_assert!(
        database
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    );
    let target = database_url(url, database)?;
    let mut admin = PgConnection::establish(url)?;
    let found: Vec<Count> = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_database WHERE datname = '{database}'"
    ))
    .load(&mut admin)?;
    if found.first().is_none_or(|c| c.n == 0) {
        diesel::sql_query(format!("CREATE DATABASE {database}")).execute(&mut admin)?;
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_get_their_own_database_on_the_same_server() {
        assert_eq!(
            database_url("postgres://root@127.0.0.1:5432/test", "bench_river").unwrap(),
            "postgres://root@127.0.0.1:5432/bench_river"
        );
        assert_eq!(
            database_url(
                "postgresql://u:p@127.0.0.1/test?sslmode=disable",
                "bench_fang"
            )
            .unwrap(),
            "postgresql://u:p@127.0.0.1/bench_fang?sslmode=disable"
        );
        assert!(database_url("sqlite://x.db", "bench_fang").is_err());
    }
}
