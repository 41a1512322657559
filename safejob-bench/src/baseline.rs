//! The baseline: what a team would write by hand instead of the guard, through the same pool.
//!
//! Per job: insert-or-ignore a key row, then one conditional update
//! (`UPDATE … SET state = 'succeeded' WHERE job_key = ? AND state = 'running'`), each in
//! autocommit, each checked for its row count. The table is its own, `bench_baseline_jobs`.
//!
//! Statements are prepared once per connection and reused, as the store's are: `diesel::sql_query`
//! marks itself unsafe to cache, so [`Stmt`] is a tiny `QueryFragment` that does not, and diesel's
//! statement cache keys it by its SQL text.

use diesel::{
    QueryResult,
    query_builder::{AstPass, Query, QueryFragment, QueryId},
    query_dsl::{RunQueryDsl, methods::ExecuteDsl},
    sql_types::{Text, Untyped},
};
use safejob_diesel::{BackendKind, ConnectionRef, DieselStore};

use crate::{
    driver::{BenchError, run_timed},
    stats::Measured,
};

/// The baseline's SQL in one backend's dialect.
#[derive(Debug, Clone, Copy)]
pub struct BaselineSql {
    /// Creates the table if it is missing.
    pub create: &'static str,
    /// Insert-or-ignore of a fresh key in state `running`; one bind: the key.
    pub insert: &'static str,
    /// `running → succeeded` for the key; one bind: the key.
    pub update: &'static str,
}

const UPDATE: &str =
    "UPDATE bench_baseline_jobs SET state = 'succeeded' WHERE job_key = ? AND state = 'running'";

/// SQLite and PostgreSQL share the SQL (diesel renders `?` as `$1` on PostgreSQL).
const ANSI: BaselineSql = BaselineSql {
    create: "CREATE TABLE IF NOT EXISTS bench_baseline_jobs \
             (job_key TEXT NOT NULL PRIMARY KEY, state TEXT NOT NULL)",
    insert: "INSERT INTO bench_baseline_jobs (job_key, state) VALUES (?, 'running') \
             ON CONFLICT (job_key) DO NOTHING",
    update: UPDATE,
};

/// MySQL / MariaDB: no `ON CONFLICT`; `INSERT IGNORE` is the idiom.
const MYSQL: BaselineSql = BaselineSql {
    create: "CREATE TABLE IF NOT EXISTS bench_baseline_jobs \
             (job_key VARCHAR(255) NOT NULL PRIMARY KEY, state VARCHAR(16) NOT NULL) \
             ENGINE = InnoDB",
    insert: "INSERT IGNORE INTO bench_baseline_jobs (job_key, state) VALUES (?, 'running')",
    update: UPDATE,
};

impl BaselineSql {
    /// The SQL for `backend`.
    pub fn of(backend: BackendKind) -> Self {
        match backend {
            BackendKind::Mysql => MYSQL,
            _ => ANSI,
        }
    }
}

/// One statement with one text bind, cached by diesel per connection.
#[derive(Debug, Clone, Copy)]
pub struct Stmt<'a> {
    sql: &'static str,
    key: &'a str,
}

impl QueryId for Stmt<'_> {
    type QueryId = ();
    // No static id: the statement cache keys it by its SQL text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Stmt<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Stmt<'_> {}

macro_rules! stmt_fragment {
    ($backend:ty) => {
        impl QueryFragment<$backend> for Stmt<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $backend>) -> QueryResult<()> {
                match self.sql.split_once('?') {
                    Some((before, after)) => {
                        out.push_sql(before);
                        out.push_bind_param::<Text, str>(self.key)?;
                        out.push_sql(after);
                    }
                    None => out.push_sql(self.sql),
                }
                Ok(())
            }
        }
    };
}

#[cfg(feature = "sqlite")]
stmt_fragment!(diesel::sqlite::Sqlite);
#[cfg(feature = "postgres")]
stmt_fragment!(diesel::pg::Pg);
#[cfg(feature = "mysql")]
stmt_fragment!(diesel::mysql::Mysql);

/// The hand-written equivalent of a guarded job, on one connection.
fn one_job<C>(conn: &mut C, sql: &BaselineSql, key: &str) -> Result<(), BenchError>
where
    C: diesel::Connection,
    for<'k> Stmt<'k>: ExecuteDsl<C>,
{
    let inserted = Stmt {
        sql: sql.insert,
        key,
    }
    .execute(conn)?;
    if inserted != 1 {
        return Err(format!("baseline: key {key} already existed").into());
    }
    let updated = Stmt {
        sql: sql.update,
        key,
    }
    .execute(conn)?;
    if updated != 1 {
        return Err(format!("baseline: update of {key} matched {updated} rows").into());
    }
    Ok(())
}

/// The baseline, sharing the store's pool.
pub struct Baseline<'s> {
    store: &'s DieselStore,
    sql: BaselineSql,
}

impl<'s> Baseline<'s> {
    /// Creates `bench_baseline_jobs` if it is missing.
    pub fn prepare(store: &'s DieselStore) -> Result<Self, BenchError> {
        let sql = BaselineSql::of(store.backend());
        store.with_connection(|conn| conn.batch_execute(sql.create))??;
        Ok(Self { store, sql })
    }

    /// Runs one fresh key: a pooled connection, the insert, the update.
    pub fn run_one(&self, key: &str) -> Result<(), BenchError> {
        let sql = &self.sql;
        self.store.with_connection(|conn| match conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => one_job(*c, sql, key),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => one_job(*c, sql, key),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => one_job(*c, sql, key),
            #[allow(unreachable_patterns)]
            _ => Err("baseline: this backend is not compiled into safejob-bench".into()),
        })?
    }

    /// Runs `jobs` fresh keys `{prefix}-{i}` on `threads` threads.
    pub fn run(&self, prefix: &str, jobs: usize, threads: usize) -> Result<Measured, BenchError> {
        run_timed(jobs, threads, |i| self.run_one(&format!("{prefix}-{i}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_has_one_placeholder_and_names_the_table() {
        for sql in [ANSI, MYSQL] {
            assert_eq!(sql.insert.matches('?').count(), 1, "{}", sql.insert);
            assert_eq!(sql.update.matches('?').count(), 1, "{}", sql.update);
            assert!(!sql.create.contains('?'));
            for s in [sql.create, sql.insert, sql.update] {
                assert!(s.contains("bench_baseline_jobs"), "{s}");
            }
        }
        assert!(
            BaselineSql::of(BackendKind::Mysql)
                .insert
                .starts_with("INSERT IGNORE")
        );
        assert!(
            BaselineSql::of(BackendKind::Postgres)
                .insert
                .ends_with("DO NOTHING")
        );
    }
}
