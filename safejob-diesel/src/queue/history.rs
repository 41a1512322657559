//! [`HistoryStore`] on the SQL backends: reading `safe_history`, which the triggers of the
//! `create_safe_history` migration append to in the transaction of every transition (so nothing
//! here writes entries), and the database-wide switch in `safe_history_settings`. Pruning needs
//! no code either: deleting a job, key or schedule row fires the trigger that deletes its
//! history, in the same statement.

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Nullable, Text},
};
use safejob_core::{
    KeyDigest,
    history::{HistoryEntry, HistoryStore, Subject},
    queue::JobId,
    store::StoreError,
};

use super::{DieselQueue, sql::render, tx::QCtx};
use crate::backend::{
    Bind, DbConnection, Stmt,
    pool::{PooledConn, with_conn},
};

/// The columns of an entry (`{where}` is the subject's predicate).
const READ: &str = "SELECT id, entity, job_id, key_digest, batch_id, schedule, from_state, \
    to_state, fence, attempt, worker, {us:at} AS at_us, reason FROM safe_history \
    WHERE {where} ORDER BY id";

const ENABLED: &str =
    "SELECT CAST(enabled AS {bigint}) AS enabled FROM safe_history_settings WHERE id = 1";

const SET_ENABLED: &str = "UPDATE safe_history_settings SET enabled = ? WHERE id = 1";

#[derive(QueryableByName)]
struct EntryRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    job_id: Option<i64>,
    #[diesel(sql_type = Nullable<Binary>)]
    key_digest: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    batch_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    schedule: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    from_state: Option<String>,
    #[diesel(sql_type = Text)]
    to_state: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    fence: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    attempt: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    worker: Option<String>,
    #[diesel(sql_type = BigInt)]
    at_us: i64,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
}

#[derive(QueryableByName)]
struct Enabled {
    #[diesel(sql_type = BigInt)]
    enabled: i64,
}

fn corrupt(id: i64, detail: impl Into<String>) -> StoreError {
    StoreError::CorruptRow {
        digest: format!("safe_history #{id}"),
        detail: detail.into(),
    }
}

impl EntryRow {
    fn into_entry(self) -> Result<HistoryEntry, StoreError> {
        let id = self.id;
        let unsigned = |v: Option<i64>, what: &str| {
            v.map(|v| u64::try_from(v).map_err(|_| corrupt(id, format!("{what} {v}"))))
                .transpose()
        };
        let key = self
            .key_digest
            .map(|bytes| {
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map(KeyDigest::from_bytes)
                    .map_err(|_| corrupt(id, format!("key_digest is {} bytes", bytes.len())))
            })
            .transpose()?;
        let attempt = unsigned(self.attempt, "attempt")?
            .map(|a| u32::try_from(a).map_err(|_| corrupt(id, format!("attempt {a}"))))
            .transpose()?;
        Ok(HistoryEntry {
            id,
            entity: self
                .entity
                .parse()
                .map_err(|e| corrupt(id, format!("{e}")))?,
            job_id: self.job_id.map(JobId),
            key,
            batch_id: self.batch_id.map(safejob_core::workflow::BatchId),
            schedule: self.schedule,
            from_state: self.from_state,
            to_state: self.to_state,
            fence: unsigned(self.fence, "fence")?,
            attempt,
            worker: self.worker,
            at: chrono::DateTime::from_timestamp_micros(self.at_us)
                .ok_or_else(|| corrupt(id, format!("timestamp {}", self.at_us)))?,
            reason: self.reason,
        })
    }
}

impl QCtx<'_> {
    fn history<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        of: &Subject,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (predicate, bind) = match of {
            Subject::Job(id) => ("job_id = ? AND entity = 'job'", Bind::Int(id.0)),
            Subject::Key(digest) => (
                "key_digest = ? AND entity = 'key'",
                Bind::Bytes(digest.as_bytes()),
            ),
            Subject::Batch(id) => ("batch_id = ?", Bind::Int(id.0)),
            Subject::Schedule(name) => ("schedule = ? AND entity = 'schedule'", Bind::Text(name)),
        };
        let text = render(
            self.sql.kind,
            self.sql.offset,
            &READ.replace("{where}", predicate),
        );
        let stmt = Stmt::new(&text, vec![bind]);
        let rows: Vec<EntryRow> = self.run(c, |conn| conn.load(&stmt))?;
        rows.into_iter().map(EntryRow::into_entry).collect()
    }

    fn ledger_enabled<C: DbConnection>(&self, c: &mut PooledConn<C>) -> Result<bool, StoreError> {
        let text = render(self.sql.kind, self.sql.offset, ENABLED);
        let stmt = Stmt::new(&text, vec![]);
        let rows: Vec<Enabled> = self.run(c, |conn| conn.load(&stmt))?;
        match rows.first() {
            Some(row) => Ok(row.enabled != 0),
            None => Err(StoreError::CorruptRow {
                digest: "safe_history_settings #1".into(),
                detail: "the settings row is missing".into(),
            }),
        }
    }

    fn set_ledger<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        on: bool,
    ) -> Result<(), StoreError> {
        let stmt = Stmt::new(SET_ENABLED, vec![Bind::Int(i64::from(on))]);
        match self.run(c, |conn| conn.exec(&stmt))? {
            1 => Ok(()),
            _ => Err(StoreError::CorruptRow {
                digest: "safe_history_settings #1".into(),
                detail: "the settings row is missing".into(),
            }),
        }
    }
}

impl HistoryStore for DieselQueue {
    fn history(&self, of: &Subject) -> Result<Vec<HistoryEntry>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.history(conn, of))
    }

    /// Writes the one row of `safe_history_settings` that every trigger reads: the switch is
    /// database-wide, for every process on this database, from the next transition on.
    fn set_ledger(&self, on: bool) -> Result<(), StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.set_ledger(conn, on))
    }

    fn ledger_enabled(&self) -> Result<bool, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.ledger_enabled(conn))
    }
}
