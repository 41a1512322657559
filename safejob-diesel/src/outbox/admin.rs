//! What operators need: how much is pending, which messages are dead, and putting one back.

use chrono::{DateTime, Utc};
use diesel::result::Error as DieselError;
use safejob_core::StoreError;

use super::{
    MessageId, OutboxMessage, RelayError, is_missing_outbox, migrate_hint,
    sql::{AdminSql, CountRow, RecordRow},
};
use crate::{
    DieselStore,
    backend::{Bind, DbConnection, Stmt, pool::with_conn},
};

/// How many messages are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxCounts {
    /// Not yet delivered and not dead (due, waiting for a retry, or claimed).
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dead: rejected or out of attempts; see [`dead_messages`].
    pub dead: u64,
}

/// A message with its delivery history, as operators see it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxRecord {
    /// The message (its `attempt` is the number of deliveries tried so far).
    pub message: OutboxMessage,
    /// When it is (or was) next due.
    pub available_at: DateTime<Utc>,
    /// When it was delivered, if it was.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was marked dead, if it was.
    pub dead_at: Option<DateTime<Utc>>,
    /// The last delivery error.
    pub last_error: Option<String>,
}

fn error(store: &DieselStore, e: DieselError) -> RelayError {
    if is_missing_outbox(&e) {
        RelayError::MissingTable {
            hint: migrate_hint(store.backend()),
        }
    } else {
        RelayError::Store(store.ctx().errors.store_error(e))
    }
}

fn sql(store: &DieselStore) -> AdminSql {
    AdminSql::render(store.backend())
}

/// Counts the messages in each state.
pub fn counts(store: &DieselStore) -> Result<OutboxCounts, RelayError> {
    let sql = sql(store);
    let stmt = Stmt::new(&sql.counts, vec![]);
    let rows = with_conn!(store, conn => conn.conn.load::<CountRow>(&stmt))
        .map_err(|e| error(store, e))?;
    let n = |i: usize| {
        rows.get(i)
            .map_or(0, |row| u64::try_from(row.n).unwrap_or(0))
    };
    Ok(OutboxCounts {
        pending: n(0),
        delivered: n(1),
        dead: n(2),
    })
}

/// Dead messages in id order: up to `limit` after row id `after` (0 for the first page).
pub fn dead_messages(
    store: &DieselStore,
    after: i64,
    limit: u32,
) -> Result<Vec<OutboxRecord>, RelayError> {
    let sql = sql(store);
    let stmt = Stmt::new(
        &sql.dead,
        vec![Bind::Int(after), Bind::Int(i64::from(limit))],
    );
    let rows = with_conn!(store, conn => conn.conn.load::<RecordRow>(&stmt))
        .map_err(|e| error(store, e))?;
    rows.into_iter().map(record).collect()
}

/// Puts a dead message back: pending, due now, attempts counted from zero again. Whether it was
/// dead (and so was put back).
pub fn requeue(store: &DieselStore, id: &MessageId) -> Result<bool, RelayError> {
    let sql = sql(store);
    let seq = i64::try_from(id.seq).unwrap_or(i64::MAX);
    let stmt = Stmt::new(
        &sql.requeue,
        vec![Bind::Bytes(id.digest.as_bytes()), Bind::Int(seq)],
    );
    let n = with_conn!(store, conn => conn.conn.exec(&stmt)).map_err(|e| error(store, e))?;
    Ok(n == 1)
}

/// Deletes the messages delivered more than `older_than` ago (by the database clock); returns
/// how many. Pending and dead messages are kept. A receiver that deduplicates by message id
/// forgets nothing by this: the ids of pruned messages are never emitted again (they name a
/// key's effects, which commit once).
pub fn prune_delivered(
    store: &DieselStore,
    older_than: std::time::Duration,
) -> Result<u64, RelayError> {
    let sql = sql(store);
    let back = i64::try_from(older_than.as_micros()).unwrap_or(i64::MAX);
    let stmt = Stmt::new(&sql.prune_delivered, vec![Bind::Int(-back)]);
    let n = with_conn!(store, conn => conn.conn.exec(&stmt)).map_err(|e| error(store, e))?;
    Ok(n as u64)
}

fn record(row: RecordRow) -> Result<OutboxRecord, RelayError> {
    let id = row.message.id;
    let corrupt = |detail: String| {
        RelayError::Store(StoreError::backend(format!(
            "corrupt safe_outbox row {id}: {detail}"
        )))
    };
    let instant = |us: i64| {
        DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("timestamp {us}")))
    };
    Ok(OutboxRecord {
        message: super::relay::message(row.message).map_err(corrupt)?,
        available_at: instant(row.available_us)?,
        delivered_at: row.delivered_us.map(instant).transpose()?,
        dead_at: row.dead_us.map(instant).transpose()?,
        last_error: row.last_error,
    })
}
