//! Transactional effects: reaching the finalize transaction's connection from
//! `on_succeeded_once`.
//!
//! With `EffectsMode::Transactional`, a [`DieselStore`](crate::DieselStore) runs
//! `on_succeeded_once` inside the finalize transaction, after the fenced `running → succeeded`
//! update, on the same connection. Whatever the job writes through that connection commits
//! atomically with `succeeded`; an `Err` from the job rolls everything back and the attempt is
//! retried later.

use std::any::type_name;

use diesel::Connection;
use safejob_core::EffectsContext;

/// The finalize transaction's connection is not available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// The effects are not running inside a finalize transaction (the runner is not in
    /// `EffectsMode::Transactional`, or the store has no transactions).
    #[error(
        "on_succeeded_once is not running inside a finalize transaction: build the Runner with EffectsMode::Transactional"
    )]
    NotTransactional,
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
pub trait TransactionExt {
    /// The diesel connection (`SqliteConnection`, `PgConnection` or `MysqlConnection`) that holds
    /// the finalize transaction.
    fn diesel_connection<C: Connection + 'static>(&mut self) -> Result<&mut C, TxError>;
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
}
