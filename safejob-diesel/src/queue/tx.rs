//! Running the queue's statements: retries of deadlocks outside transactions, and transactions
//! retried as a whole.

use std::{any::Any, sync::Arc, time::Duration};

use diesel::{
    QueryResult,
    connection::{AnsiTransactionManager, TransactionManager},
    result::{DatabaseErrorKind, Error as DieselError},
};
use safejob_core::store::StoreError;

use super::sql::QueueSql;
use crate::{
    backend::{DbConnection, pool::PooledConn},
    error::{ErrorContext, is_connection_lost, is_retryable},
    guard::ops::Ctx,
};

/// How many times a deadlock or lock-wait timeout is retried before it is reported.
const MAX_RETRIES: u32 = 6;

/// What every queue primitive needs besides its connection: the queue's statements and the
/// store's (for the guard's half, run in the same transaction).
pub(crate) struct QCtx<'a> {
    pub(crate) sql: Arc<QueueSql>,
    pub(crate) guard: Ctx<'a>,
}

/// Why a transaction body stopped.
pub(crate) enum Fail {
    /// A statement failed (retried as a whole when it is a deadlock or lock-wait timeout).
    Db(DieselError),
    /// The guard's half, or reading a row, failed.
    Store(StoreError),
    /// The transactional effects hook panicked: roll back, discard the connection, re-panic.
    Panic(Box<dyn Any + Send>),
}

impl From<DieselError> for Fail {
    fn from(e: DieselError) -> Self {
        Self::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// How a transaction begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Begin {
    /// A plain transaction (reads).
    Read,
    /// A write transaction: SQLite `BEGIN IMMEDIATE`.
    Write,
    /// A write transaction that runs a transactional effects hook
    /// ([`DbConnection::begin_effects`](crate::backend::DbConnection::begin_effects)).
    Effects,
}

/// How a transaction body ends.
pub(crate) enum End<T> {
    Commit(T),
    Rollback(T),
}

/// The `safe_queue_jobs` (or workers) table does not exist.
fn is_missing_queue(error: &DieselError) -> bool {
    match error {
        DieselError::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("safe_queue")
                && (m.contains("no such table")
                    || m.contains("does not exist")
                    || m.contains("doesn't exist"))
        }
        _ => false,
    }
}

pub(crate) fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// A diesel error as a store error; a missing queue table says how to migrate.
pub(crate) fn store_error(errors: &ErrorContext, error: DieselError) -> StoreError {
    if is_missing_queue(&error) {
        return StoreError::MissingTable {
            // `errors.hint` already says to call DieselStore::migrate() or run the migrations.
            hint: format!(
                "the queue's tables (safe_queue_jobs) are missing: {}",
                errors.hint
            ),
        };
    }
    errors.store_error(error)
}

/// A store error that wraps a deadlock or lock-wait timeout: the guard's primitives, run inside
/// a queue transaction, report diesel's errors as [`StoreError::Backend`].
pub(crate) fn is_retryable_store_error(error: &StoreError) -> bool {
    match error {
        StoreError::Backend { source } => source
            .downcast_ref::<DieselError>()
            .is_some_and(is_retryable),
        _ => false,
    }
}

fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1_000_000);
    Duration::from_millis(1 << attempt.min(6)) + Duration::from_nanos(u64::from(jitter))
}

impl QCtx<'_> {
    pub(crate) fn err(&self, e: DieselError) -> StoreError {
        store_error(self.guard.errors, e)
    }

    /// Runs `f` in autocommit, retrying deadlocks and lock-wait timeouts, and marking the
    /// connection broken when it was lost.
    pub(crate) fn run<C: DbConnection, T>(
        &self,
        c: &mut PooledConn<C>,
        mut f: impl FnMut(&mut C) -> QueryResult<T>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            match f(&mut c.conn) {
                Err(e) if is_retryable(&e) && attempt < MAX_RETRIES => {
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => {
                    if is_connection_lost(&e) {
                        c.broken = true;
                    }
                    return Err(self.err(e));
                }
                Ok(v) => return Ok(v),
            }
        }
    }

    /// Runs `body` in one transaction begun as `begin` says, committing or rolling back as it
    /// says. A deadlock or lock-wait timeout rolls back and runs the whole body again.
    pub(crate) fn transaction<C: DbConnection, T>(
        &self,
        c: &mut PooledConn<C>,
        begin: Begin,
        body: impl FnMut(&mut PooledConn<C>) -> Result<End<T>, Fail>,
    ) -> Result<T, StoreError> {
        let ended = self.transaction_once_ended(c, begin, body);
        if begin == Begin::Effects {
            c.end_effects();
        }
        ended
    }

    fn transaction_once_ended<C: DbConnection, T>(
        &self,
        c: &mut PooledConn<C>,
        begin: Begin,
        mut body: impl FnMut(&mut PooledConn<C>) -> Result<End<T>, Fail>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            let begun = match begin {
                Begin::Read => AnsiTransactionManager::begin_transaction(&mut c.conn),
                Begin::Write => c.conn.begin_write(),
                Begin::Effects => c.conn.begin_effects(),
            };
            let outcome = match begun {
                Ok(()) => body(c),
                Err(e) => Err(Fail::Db(e)),
            };
            match outcome {
                Ok(End::Commit(value)) => {
                    return match AnsiTransactionManager::commit_transaction(&mut c.conn) {
                        Ok(()) => Ok(value),
                        Err(e) => {
                            // A failed COMMIT leaves the connection in an unknown state.
                            c.broken = true;
                            Err(self.guard.errors.write_error(e))
                        }
                    };
                }
                Ok(End::Rollback(value)) => {
                    c.rollback();
                    return Ok(value);
                }
                Err(Fail::Db(e)) => {
                    c.rollback();
                    if is_retryable(&e) && attempt < MAX_RETRIES {
                        tracing::debug!(error = %e, attempt, "safejob-diesel queue: retrying a transaction after a lock conflict");
                        std::thread::sleep(backoff(attempt));
                        attempt += 1;
                        continue;
                    }
                    if is_connection_lost(&e) {
                        c.broken = true;
                    }
                    return Err(self.err(e));
                }
                Err(Fail::Store(e)) => {
                    c.rollback();
                    // The guard's half reports a deadlock as a store error (MySQL deadlocks two
                    // claims on their guard rows): the transaction is rolled back, so run it again.
                    if is_retryable_store_error(&e) && attempt < MAX_RETRIES {
                        tracing::debug!(error = %e, attempt, "safejob-diesel queue: retrying a transaction after a lock conflict in its guard");
                        std::thread::sleep(backoff(attempt));
                        attempt += 1;
                        continue;
                    }
                    return Err(e);
                }
                Err(Fail::Panic(panic)) => {
                    c.rollback();
                    c.broken = true;
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
}
