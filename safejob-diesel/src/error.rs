//! What can go wrong building a store, migrating it, or reaching the transaction from effects;
//! and how diesel's errors become the core's [`StoreError`].

use std::{error::Error as StdError, fmt};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use safejob_core::StoreError;

/// A boxed error that may cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A [`DieselStore`](crate::DieselStore) could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL's scheme names no backend this crate knows.
    #[error(
        "unsupported database URL scheme {scheme:?}: expected sqlite://, postgres://, \
         postgresql://, mysql:// or mariadb://"
    )]
    UnsupportedScheme {
        /// The scheme found (the text before the first `:`).
        scheme: String,
    },
    /// The URL could not be parsed.
    #[error("malformed database URL: {reason}")]
    MalformedUrl {
        /// What is wrong with it (never the password).
        reason: String,
    },
    /// The URL names a backend whose cargo feature is not enabled.
    #[error(
        "{backend} support is not compiled in: enable the `{feature}` feature of safejob-diesel"
    )]
    BackendNotCompiled {
        /// The backend the URL names.
        backend: &'static str,
        /// The cargo feature that compiles it in.
        feature: &'static str,
    },
    /// `sqlite::memory:` (or another in-memory SQLite URL): every pooled connection would open its
    /// own empty database.
    #[error(
        "an in-memory SQLite database cannot back a connection pool (each connection would see \
         its own empty database): use a file, e.g. sqlite://target/safejob.db"
    )]
    InMemorySqlite,
    /// The pool settings are inconsistent.
    #[error("invalid pool configuration: {reason}")]
    InvalidPool {
        /// What is wrong.
        reason: String,
    },
    /// The database could not be reached, or refused the connection.
    #[error("database unreachable at {target}: {source}")]
    Unreachable {
        /// Backend, host, port and database (never the password).
        target: String,
        /// Why, with any password scrubbed.
        #[source]
        source: BoxError,
    },
    /// A connection opened but its setup (pragmas, the caller's setup hook) failed.
    #[error("connection setup failed for {target}: {source}")]
    Setup {
        /// Backend, host, port and database (never the password).
        target: String,
        /// Why, with any password scrubbed.
        #[source]
        source: BoxError,
    },
}

/// [`DieselStore::migrate`](crate::DieselStore::migrate) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// No connection could be had.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A migration failed to apply (or the migration table could not be read).
    #[error("running the {backend} migrations failed: {source}")]
    Migration {
        /// `sqlite`, `postgres` or `mysql`.
        backend: &'static str,
        /// The migration harness's error.
        #[source]
        source: BoxError,
    },
}

/// An error text with secrets scrubbed out, standing in for an error that may quote them.
#[derive(Debug)]
pub(crate) struct Scrubbed(pub(crate) String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Scrubbed {}

/// Words that must never appear in messages: the URL's password, raw and decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    pub(crate) fn new(words: impl IntoIterator<Item = String>) -> Self {
        let mut words: Vec<String> = words.into_iter().filter(|w| !w.is_empty()).collect();
        // Longest first, so a secret containing another is scrubbed whole.
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        words.dedup();
        Self(words)
    }

    pub(crate) fn scrub(&self, text: impl fmt::Display) -> Scrubbed {
        let mut text = text.to_string();
        for word in &self.0 {
            text = text.replace(word.as_str(), "***");
        }
        Scrubbed(text)
    }
}

/// The store's view of its database for error messages: where it is and how to migrate it.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    pub(crate) target: String,
    pub(crate) hint: &'static str,
    pub(crate) secrets: Secrets,
}

impl ErrorContext {
    /// Any diesel error as a store error: a missing table says how to migrate; a lost connection
    /// is `Unreachable` (its text scrubbed of secrets); the rest is `Backend`, with diesel's error
    /// as the source (query errors never quote the connection URL).
    pub(crate) fn store_error(&self, error: DieselError) -> StoreError {
        if is_missing_table(&error) {
            return StoreError::MissingTable {
                hint: self.hint.to_owned(),
            };
        }
        if is_connection_lost(&error) {
            return StoreError::Unreachable {
                target: self.target.clone(),
                source: Box::new(self.secrets.scrub(&error)),
            };
        }
        StoreError::backend(error)
    }

    /// A failed write whose outcome is unknown when the connection was lost (the server may have
    /// committed it before the reply was lost).
    pub(crate) fn write_error(&self, error: DieselError) -> StoreError {
        if is_connection_lost(&error) {
            return StoreError::AmbiguousCommit {
                source: Box::new(self.secrets.scrub(&error)),
            };
        }
        self.store_error(error)
    }
}

fn database_message(error: &DieselError) -> Option<(&DatabaseErrorKind, &str)> {
    match error {
        DieselError::DatabaseError(kind, info) => Some((kind, info.message())),
        _ => None,
    }
}

/// The `safe_jobs` table does not exist (SQLite, PostgreSQL 42P01, MySQL 1146).
pub(crate) fn is_missing_table(error: &DieselError) -> bool {
    database_message(error).is_some_and(|(_, message)| {
        message.contains("safe_jobs")
            && (message.contains("no such table")
                || message.contains("does not exist")
                || message.contains("doesn't exist"))
    })
}

/// The connection is gone: the statement's outcome on the server is unknown.
pub(crate) fn is_connection_lost(error: &DieselError) -> bool {
    match error {
        DieselError::BrokenTransactionManager => true,
        // diesel tries a rollback after a failed COMMIT; it is the COMMIT's failure that counts.
        DieselError::RollbackErrorOnCommit { commit_error, .. } => is_connection_lost(commit_error),
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        DieselError::DatabaseError(_, info) => {
            let m = info.message();
            // MySQL 2006 / 2013 and their MariaDB client spellings.
            m.contains("server has gone away")
                || m.contains("Server has gone away")
                || m.contains("Lost connection to")
                || m.contains("server closed the connection unexpectedly")
                || m.contains("no connection to the server")
        }
        _ => false,
    }
}

/// A deadlock or lock-wait timeout: the statement (and its transaction) was rolled back entirely,
/// so running it again is safe. MySQL 1213 (diesel: `SerializationFailure`) and 1205, PostgreSQL
/// 40001 / 40P01.
pub(crate) fn is_retryable(error: &DieselError) -> bool {
    match database_message(error) {
        Some((DatabaseErrorKind::SerializationFailure, _)) => true,
        Some((_, m)) => {
            m.contains("Deadlock found")
                || m.contains("Lock wait timeout exceeded")
                || m.contains("deadlock detected")
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn deadlocks_and_lock_waits_are_retried() {
        // MySQL 1213 (diesel maps it) and 1205 (it does not), PostgreSQL 40P01.
        assert!(is_retryable(&db_error(
            DatabaseErrorKind::SerializationFailure,
            "Deadlock found when trying to get lock; try restarting transaction"
        )));
        assert!(is_retryable(&db_error(
            DatabaseErrorKind::Unknown,
            "Lock wait timeout exceeded; try restarting transaction"
        )));
        assert!(is_retryable(&db_error(
            DatabaseErrorKind::Unknown,
            "deadlock detected"
        )));
        assert!(!is_retryable(&db_error(
            DatabaseErrorKind::UniqueViolation,
            "Duplicate entry"
        )));
    }

    #[test]
    fn lost_connections_are_recognised_through_a_failed_rollback() {
        let lost = db_error(DatabaseErrorKind::Unknown, "Server has gone away");
        assert!(is_connection_lost(&lost));
        let on_commit = DieselError::RollbackErrorOnCommit {
            rollback_error: Box::new(db_error(DatabaseErrorKind::Unknown, "Server has gone away")),
            commit_error: Box::new(lost),
        };
        assert!(is_connection_lost(&on_commit));
        assert!(!is_connection_lost(&db_error(
            DatabaseErrorKind::Unknown,
            "syntax error"
        )));
    }

    #[test]
    fn missing_tables_are_recognised_on_each_backend() {
        for message in [
            "no such table: safe_jobs",
            "relation \"safe_jobs\" does not exist",
            "Table 'test.safe_jobs' doesn't exist",
        ] {
            assert!(
                is_missing_table(&db_error(DatabaseErrorKind::Unknown, message)),
                "{message}"
            );
        }
    }
}
