//! Transactional effects: reaching the finalize transaction's connection from
//! `on_succeeded_once`.
//!
//! With `EffectsMode::Transactional` (the job's own [`SafeJob::effects_mode`], else the Runner's
//! or the worker's), a [`DieselStore`](crate::DieselStore) runs `on_succeeded_once` inside the
//! finalize transaction, after the fenced `running → succeeded` update, on the same connection.
//! Whatever the job writes through that connection commits atomically with `succeeded`; an `Err`
//! from the job rolls everything back and the attempt is retried later.
//!
//! [`SafeJob::effects_mode`]: safejob_core::SafeJob::effects_mode

use std::any::type_name;

use diesel::Connection;
use safejob_core::EffectsContext;

use super::effects_tx::EffectsTx;
use crate::backend::ConnectionRef;

/// The finalize transaction's connection is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The effects are not running inside a finalize transaction (the job's effects mode is
    /// after commit: its own `SafeJob::effects_mode`, else the Runner's or the worker's).
    #[error(
        "on_succeeded_once is not running inside a finalize transaction: return \
         Some(EffectsMode::Transactional) from the job's effects_mode, or build the Runner or \
         the worker with EffectsMode::Transactional"
    )]
    NotTransactional,
    /// The finalize transaction is not a connection of a compiled-in diesel backend (the job
    /// runs on another store, such as the memory store).
    #[error(
        "the finalize transaction is not a safejob-diesel connection: run the job on a DieselStore \
         or DieselQueue"
    )]
    UnsupportedStore,
    /// The store's connection is of another backend than the one asked for.
    #[error("the finalize transaction runs on another connection type than {requested}")]
    WrongBackend {
        /// The connection type the job asked for.
        requested: &'static str,
    },
}

/// Typed access to the finalize transaction from [`EffectsContext`].
///
/// ```no_run
/// use diesel::{RunQueryDsl, SqliteConnection};
/// use safejob_core::EffectsContext;
/// use safejob_diesel::TransactionExt;
///
/// fn on_succeeded_once(ctx: &mut EffectsContext<'_>) -> Result<(), Box<dyn std::error::Error>> {
///     let fence = ctx.fence() as i64;
///     let conn = ctx.diesel_connection::<SqliteConnection>()?;
///     diesel::sql_query("INSERT INTO ledger (entry) VALUES (?)")
///         .bind::<diesel::sql_types::BigInt, _>(fence)
///         .execute(conn)?; // commits with `succeeded`, or not at all
///     Ok(())
/// }
/// ```
///
/// To write without naming the backend, so that one job runs unchanged on SQLite, PostgreSQL and
/// MySQL/MariaDB, use [`effects_tx`](TransactionExt::effects_tx) instead.
pub trait TransactionExt {
    /// The diesel connection (`SqliteConnection`, `PgConnection` or `MysqlConnection`) that holds
    /// the finalize transaction.
    fn diesel_connection<C: Connection + 'static>(&mut self) -> Result<&mut C, TxError>;

    /// The finalize transaction, whatever the backend: [`EffectsTx`]'s typed writes, with one
    /// placeholder syntax (`?`) on every backend.
    fn effects_tx(&mut self) -> Result<EffectsTx<'_>, TxError>;
}

impl TransactionExt for EffectsContext<'_> {
    fn diesel_connection<C: Connection + 'static>(&mut self) -> Result<&mut C, TxError> {
        if !self.is_transactional() {
            return Err(TxError::NotTransactional);
        }
        self.transaction::<C>().ok_or(TxError::WrongBackend {
            requested: type_name::<C>(),
        })
    }

    fn effects_tx(&mut self) -> Result<EffectsTx<'_>, TxError> {
        effects_connection(self).map(EffectsTx::new)
    }
}

/// The finalize transaction's connection, whichever compiled-in backend holds it: the one place
/// the `Any` handle a transactional hook gets is matched to a backend.
pub(crate) fn effects_connection<'c>(
    ctx: &'c mut EffectsContext<'_>,
) -> Result<ConnectionRef<'c>, TxError> {
    if !ctx.is_transactional() {
        return Err(TxError::NotTransactional);
    }
    // Asked twice per backend: a borrow returned from one branch cannot be retried in the next.
    #[cfg(feature = "sqlite")]
    if ctx.transaction::<diesel::SqliteConnection>().is_some() {
        return ctx
            .transaction::<diesel::SqliteConnection>()
            .map(ConnectionRef::Sqlite)
            .ok_or(TxError::UnsupportedStore);
    }
    #[cfg(feature = "postgres")]
    if ctx.transaction::<diesel::PgConnection>().is_some() {
        return ctx
            .transaction::<diesel::PgConnection>()
            .map(ConnectionRef::Postgres)
            .ok_or(TxError::UnsupportedStore);
    }
    #[cfg(feature = "mysql")]
    if ctx.transaction::<diesel::MysqlConnection>().is_some() {
        return ctx
            .transaction::<diesel::MysqlConnection>()
            .map(ConnectionRef::Mysql)
            .ok_or(TxError::UnsupportedStore);
    }
    Err(TxError::UnsupportedStore)
}
