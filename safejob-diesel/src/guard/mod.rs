//! The exactly-once guard on diesel: [`DieselStore`], the core's `LeaseStore` port on SQLite,
//! PostgreSQL and MySQL/MariaDB.
//!
//! - `store.rs`: [`DieselStore`] and its builder; each `LeaseStore` method checks out a pooled
//!   connection and calls the primitive of the same name.
//! - `ops.rs`: the primitives, written once, generic over
//!   [`DbConnection`](crate::backend::DbConnection).
//! - `sql.rs`: their statements (one template each, rendered per backend) and rows.
//! - `group.rs`: group commit: many keys' acquires or finalizes in one transaction, and the
//!   coalescers that gather concurrent runs' requests into those groups.
//! - `tx.rs`: [`TransactionExt`], the finalize transaction's connection for transactional
//!   effects.
//! - `effects_tx.rs`: [`EffectsTx`], typed writes in that transaction that run unchanged on every
//!   backend.

mod effects_tx;
mod group;
pub(crate) mod ops;
#[cfg(test)]
mod plans_tests;
pub(crate) mod sql;
mod store;
mod tx;

pub(crate) use self::tx::effects_connection;
pub use self::{
    effects_tx::{EffectsTx, EffectsTxError, SqlValue},
    group::{DEFAULT_MAX_GROUP, GroupCommitLost, GroupCommitStats},
    store::{DieselStore, DieselStoreBuilder},
    tx::{TransactionExt, TxError},
};
