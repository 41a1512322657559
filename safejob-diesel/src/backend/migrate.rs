//! The `safe_jobs` migrations, embedded from `migrations/<backend>/` at the repository root
//! (the same folders the diesel CLI runs: `diesel migration run --migration-dir migrations/sqlite`).

use diesel::backend::Backend;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::{DbConnection, pool::with_conn};
use crate::{DieselStore, error::MigrateError};

#[cfg(feature = "sqlite")]
const SQLITE: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
#[cfg(feature = "postgres")]
const POSTGRES: EmbeddedMigrations = embed_migrations!("../migrations/postgres");
#[cfg(feature = "mysql")]
const MYSQL: EmbeddedMigrations = embed_migrations!("../migrations/mysql");

impl DieselStore {
    /// Applies the pending migrations for this store's backend and returns the versions it
    /// applied (empty when the schema is current, so it is safe to call at every start).
    ///
    /// On PostgreSQL and MySQL an advisory lock serializes concurrent callers, so many workers
    /// starting at once migrate once.
    pub fn migrate(&self) -> Result<Vec<String>, MigrateError> {
        let backend = self.backend().as_str();
        with_conn!(self, conn => run(&mut conn.conn, backend))
    }
}

/// The migrations and the advisory lock of each backend.
trait Migratable {
    const MIGRATIONS: EmbeddedMigrations;
    const LOCK: Option<&'static str>;
    const UNLOCK: Option<&'static str>;
}

#[cfg(feature = "sqlite")]
impl Migratable for diesel::SqliteConnection {
    const MIGRATIONS: EmbeddedMigrations = SQLITE;
    // One file, usually one process: diesel's migration transaction is enough.
    const LOCK: Option<&'static str> = None;
    const UNLOCK: Option<&'static str> = None;
}

#[cfg(feature = "postgres")]
impl Migratable for diesel::PgConnection {
    const MIGRATIONS: EmbeddedMigrations = POSTGRES;
    const LOCK: Option<&'static str> = Some("SELECT pg_advisory_lock(7317746585412907001)");
    const UNLOCK: Option<&'static str> = Some("SELECT pg_advisory_unlock(7317746585412907001)");
}

#[cfg(feature = "mysql")]
impl Migratable for diesel::MysqlConnection {
    const MIGRATIONS: EmbeddedMigrations = MYSQL;
    const LOCK: Option<&'static str> = Some("DO GET_LOCK('safejob_migrate', 300)");
    const UNLOCK: Option<&'static str> = Some("DO RELEASE_LOCK('safejob_migrate')");
}

fn run<C>(conn: &mut C, backend: &'static str) -> Result<Vec<String>, MigrateError>
where
    C: DbConnection + Migratable + MigrationHarness<<C as diesel::Connection>::Backend>,
    <C as diesel::Connection>::Backend: Backend,
{
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| MigrateError::Migration {
        backend,
        source,
    };
    if let Some(lock) = C::LOCK {
        conn.batch_execute(lock).map_err(|e| failed(Box::new(e)))?;
    }
    let applied = conn
        .run_pending_migrations(C::MIGRATIONS)
        .map(|versions| versions.iter().map(ToString::to_string).collect());
    if let Some(unlock) = C::UNLOCK {
        // Session locks also end with the connection; a failed unlock is not worth an error.
        let _ = conn.batch_execute(unlock);
    }
    applied.map_err(failed)
}
