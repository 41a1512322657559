//! Workflows on the SQL backends: a batch inserted in one write transaction, and the settle that
//! every transaction ending a member runs before it commits.
//!
//! The policy itself is the core's ([`settle::plan`]); this module reads what the plan needs
//! (the batch row under its row lock, the members' states, the edges) and writes what it says.
//! Member counts are never stored: they are counted from the members' rows.

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Nullable, Text},
};
use safejob_core::{
    queue::{ErrorKind, JobId, OpResult, QueueState},
    store::{FenceCheck, StoreError},
    workflow::{
        BatchId, BatchInfo, BatchMember, BatchOutcome, BatchPolicy, BatchState, MemberCounts,
        NewBatch,
        settle::{self, MemberView},
    },
};

use super::{
    enqueue,
    rows::{corrupt, instant, state},
    sql::{FENCED, render},
    tx::{Begin, End, Fail, QCtx},
};
use crate::backend::{BackendKind, Bind, DbConnection, Dialect, Stmt, pool::PooledConn};

const INSERT_BATCH: &str = "INSERT INTO safe_queue_batches (name, policy, state, \
    cancel_requested, created_at, updated_at) VALUES (?, ?, 'running', 0, {now}, {now})";
const MEMBERIZE: &str = "UPDATE safe_queue_jobs SET batch_id = ?, batch_member = ?, \
    state = CASE WHEN ? = 1 THEN 'blocked' ELSE state END WHERE id = ?";
const TAG_HISTORY: &str = "UPDATE safe_history SET batch_id = ? WHERE entity = 'job' \
    AND job_id = ? AND batch_id IS NULL";
const EDGE: &str = "INSERT INTO safe_queue_deps (batch_id, job_id, depends_on) VALUES (?, ?, ?)";
const BLOCK: &str = "UPDATE safe_queue_jobs SET state = 'blocked' WHERE id = ?";
const SET_CALLBACK: &str = "UPDATE safe_queue_batches SET callback_job_id = ? WHERE id = ?";
const BATCH_COLS: &str = "id, name, policy, state, CAST(cancel_requested AS {bigint}) AS \
    cancel_requested, callback_job_id, {us:created_at} AS created_us, \
    {us:finished_at} AS finished_us FROM safe_queue_batches";
const MEMBERS: &str = "SELECT id, batch_member, state, attempts, result FROM safe_queue_jobs \
    WHERE batch_id = ? ORDER BY id";
const EDGES: &str = "SELECT job_id, depends_on FROM safe_queue_deps WHERE batch_id = ?";
const UNLOCK: &str = "UPDATE safe_queue_jobs SET state = 'pending', run_at = {now}, \
    updated_at = {now} WHERE id = ? AND state = 'blocked'";
const CANCEL: &str = "UPDATE safe_queue_jobs SET state = 'cancelled', finished_at = {now}, \
    updated_at = {now}, errors = {append} WHERE id = ? AND state IN ('blocked', 'pending', \
    'scheduled', 'retrying', 'parked')";
const FINISH: &str = "UPDATE safe_queue_batches SET state = ?, finished_at = {now}, \
    updated_at = {now} WHERE id = ? AND state = 'running'";
const METADATA: &str = "SELECT metadata AS text FROM safe_queue_jobs WHERE id = ?";
const RELEASE: &str = "UPDATE safe_queue_jobs SET state = 'pending', run_at = {now}, \
    updated_at = {now}, metadata = ? WHERE id = ? AND state = 'blocked'";
const REQUEST_CANCEL: &str = "UPDATE safe_queue_batches SET cancel_requested = 1, \
    updated_at = {now} WHERE id = ? AND state = 'running'";
const UNMET: &str = "SELECT COUNT(*) AS n FROM safe_queue_deps d JOIN safe_queue_jobs p \
    ON p.id = d.depends_on WHERE d.job_id = ? AND p.state <> 'succeeded'";
/// Batches that ended and have no member left (their edges first, then the rows).
const GONE: &str = "SELECT b.id AS n FROM safe_queue_batches b WHERE b.state <> 'running' \
    AND NOT EXISTS (SELECT 1 FROM safe_queue_jobs j WHERE j.batch_id = b.id) ORDER BY b.id \
    LIMIT 1000";
const BATCH_OF: &str = "SELECT batch_id AS n FROM safe_queue_jobs WHERE id = ?";

#[derive(QueryableByName)]
struct BatchRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    policy: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    cancel_requested: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    callback_job_id: Option<i64>,
    #[diesel(sql_type = BigInt)]
    created_us: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    finished_us: Option<i64>,
}

#[derive(QueryableByName)]
struct MemberRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    batch_member: Option<String>,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    result: Option<String>,
}

#[derive(QueryableByName)]
struct EdgeRow {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = BigInt)]
    depends_on: i64,
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    text: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

/// A batch row that cannot be read.
fn corrupt_batch(id: i64, detail: impl Into<String>) -> StoreError {
    StoreError::CorruptRow {
        digest: format!("safe_queue_batches #{id}"),
        detail: detail.into(),
    }
}

struct Batch {
    row: BatchRow,
    policy: BatchPolicy,
    state: BatchState,
}

impl Batch {
    fn of(row: BatchRow) -> Result<Self, StoreError> {
        let id = row.id;
        Ok(Self {
            policy: row
                .policy
                .parse()
                .map_err(|e| corrupt_batch(id, format!("{e}")))?,
            state: row
                .state
                .parse()
                .map_err(|e| corrupt_batch(id, format!("{e}")))?,
            row,
        })
    }

    fn info(&self, members: &[(MemberRow, QueueState)]) -> Result<BatchInfo, StoreError> {
        let id = self.row.id;
        Ok(BatchInfo {
            id: BatchId(id),
            name: self.row.name.clone(),
            policy: self.policy,
            state: self.state,
            cancel_requested: self.row.cancel_requested != 0,
            counts: MemberCounts::of(members.iter().map(|(_, s)| *s)),
            callback: self.row.callback_job_id.map(JobId),
            created_at: instant(id, self.row.created_us)?,
            finished_at: self.row.finished_us.map(|us| instant(id, us)).transpose()?,
        })
    }
}

impl QCtx<'_> {
    fn text(&self, template: &str) -> String {
        render(self.sql.kind, self.sql.offset, template)
    }

    /// The batch row, locked for this transaction on PostgreSQL and MySQL (SQLite's write
    /// transaction holds the whole database already).
    fn lock_batch<C: DbConnection>(&self, conn: &mut C, id: i64) -> Result<Option<Batch>, Fail> {
        let lock = match self.sql.kind {
            BackendKind::Sqlite => "",
            _ => " FOR UPDATE",
        };
        let text = self.text(&format!("SELECT {BATCH_COLS} WHERE id = ?{lock}"));
        let rows: Vec<BatchRow> = conn.load(&Stmt::new(&text, vec![Bind::Int(id)]))?;
        Ok(rows.into_iter().next().map(Batch::of).transpose()?)
    }

    fn member_rows<C: DbConnection>(
        &self,
        conn: &mut C,
        id: i64,
    ) -> Result<Vec<(MemberRow, QueueState)>, Fail> {
        let text = self.text(MEMBERS);
        let rows: Vec<MemberRow> = conn.load(&Stmt::new(&text, vec![Bind::Int(id)]))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let s = state(r.id, &r.state)?;
                Ok((r, s))
            })
            .collect::<Result<Vec<_>, StoreError>>()?)
    }

    fn edges<C: DbConnection>(&self, conn: &mut C, id: i64) -> Result<Vec<EdgeRow>, Fail> {
        let text = self.text(EDGES);
        Ok(conn.load(&Stmt::new(&text, vec![Bind::Int(id)]))?)
    }

    /// Applies [`settle::plan`] to batch `id` inside the caller's write transaction (see
    /// [`QueueStore::insert_batch`](safejob_core::queue::QueueStore::insert_batch)). Returns
    /// whether a job became pending (workers may want waking).
    pub(crate) fn settle<C: DbConnection>(&self, conn: &mut C, id: i64) -> Result<bool, Fail> {
        let Some(batch) = self.lock_batch(conn, id)? else {
            return Ok(false);
        };
        let members = self.member_rows(conn, id)?;
        let edges = self.edges(conn, id)?;
        let views: Vec<MemberView> = members
            .iter()
            .map(|(r, s)| MemberView {
                job: JobId(r.id),
                state: *s,
                depends_on: edges
                    .iter()
                    .filter(|e| e.job_id == r.id)
                    .map(|e| JobId(e.depends_on))
                    .collect(),
            })
            .collect();
        let plan = settle::plan(
            batch.policy,
            batch.state,
            batch.row.cancel_requested != 0,
            &views,
        );
        let unlock = self.text(UNLOCK);
        for job in &plan.unlock {
            conn.exec(&Stmt::new(&unlock, vec![Bind::Int(job.0)]))?;
        }
        let cancel = self.text(CANCEL);
        for (job, why) in &plan.cancel {
            let attempts = members
                .iter()
                .find(|(r, _)| r.id == job.0)
                .map_or(0, |(r, _)| r.attempts);
            let binds = vec![
                Bind::Int(attempts),
                Bind::Text(ErrorKind::Cancelled.as_str()),
                Bind::Text(why.as_str()),
                Bind::Int(job.0),
            ];
            conn.exec(&Stmt::new(&cancel, binds))?;
        }
        let mut woke = !plan.unlock.is_empty();
        if let Some(end) = plan.finish {
            let finish = self.text(FINISH);
            let binds = vec![Bind::Text(end.as_str()), Bind::Int(id)];
            if conn.exec(&Stmt::new(&finish, binds))? == 1
                && let Some(cb) = batch.row.callback_job_id
            {
                let outcome = BatchOutcome {
                    batch: BatchId(id),
                    name: batch.row.name.clone(),
                    state: end,
                    counts: plan.counts,
                };
                let read = self.text(METADATA);
                let rows: Vec<TextRow> = conn.load(&Stmt::new(&read, vec![Bind::Int(cb)]))?;
                let old = match rows.first() {
                    Some(r) => serde_json::from_str(&r.text)
                        .map_err(|e| corrupt(cb, format!("metadata is not JSON: {e}")))?,
                    None => serde_json::Value::Null,
                };
                let metadata = outcome.into_metadata(&old).to_string();
                let release = self.text(RELEASE);
                let binds = vec![Bind::Text(&metadata), Bind::Int(cb)];
                woke |= conn.exec(&Stmt::new(&release, binds))? == 1;
            }
        }
        if woke && self.sql.kind == BackendKind::Postgres {
            conn.exec(&Stmt::new(&self.sql.notify, vec![]))?;
        }
        Ok(woke)
    }

    /// Settles the batch of job `job`, if it has one, inside the caller's transaction.
    pub(crate) fn settle_job<C: DbConnection>(&self, conn: &mut C, job: i64) -> Result<bool, Fail> {
        let text = self.text(BATCH_OF);
        let rows: Vec<CountRow> = conn.load(&Stmt::new(&text, vec![Bind::Int(job)]))?;
        match rows.first().and_then(|r| r.n) {
            Some(batch) => self.settle(conn, batch),
            None => Ok(false),
        }
    }

    pub(crate) fn insert_batch<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        batch: &NewBatch,
    ) -> Result<BatchId, StoreError> {
        let policy = batch.policy().as_text();
        let kind = self.sql.kind;
        self.transaction(c, Begin::Write, |c| {
            let conn = &mut c.conn;
            let insert = self.text(INSERT_BATCH);
            let binds = vec![Bind::Text(batch.name()), Bind::Text(&policy)];
            let id = if Dialect::of(kind).returning {
                let rows: Vec<CountRow> =
                    conn.load(&Stmt::new(&format!("{insert} RETURNING id AS n"), binds))?;
                rows.first().and_then(|r| r.n)
            } else {
                conn.exec(&Stmt::new(&insert, binds))?;
                let rows: Vec<CountRow> =
                    conn.load(&Stmt::new("SELECT LAST_INSERT_ID() AS n", vec![]))?;
                rows.first().and_then(|r| r.n)
            }
            .ok_or_else(|| StoreError::backend("the batch insert returned no id"))?;
            let rows: Vec<_> = batch
                .members()
                .iter()
                .map(|m| {
                    let mut job = m.job.clone();
                    job.unique_key = None;
                    job
                })
                .collect();
            let answers = enqueue::enqueue(&self.sql, conn, &rows)?;
            let ids: Vec<i64> = answers.iter().map(|a| a.id().0).collect();
            let memberize = self.text(MEMBERIZE);
            let edge = self.text(EDGE);
            for (m, job) in batch.members().iter().zip(&ids) {
                let blocked = i64::from(!m.depends_on.is_empty());
                let binds = vec![
                    Bind::Int(id),
                    Bind::Text(&m.name),
                    Bind::Int(blocked),
                    Bind::Int(*job),
                ];
                conn.exec(&Stmt::new(&memberize, binds))?;
                // The job's insert was recorded before it joined the batch.
                let tag = Stmt::new(TAG_HISTORY, vec![Bind::Int(id), Bind::Int(*job)]);
                conn.exec(&tag)?;
                for &d in &m.depends_on {
                    let binds = vec![Bind::Int(id), Bind::Int(*job), Bind::Int(ids[d])];
                    conn.exec(&Stmt::new(&edge, binds))?;
                }
            }
            if let Some(cb) = batch.callback() {
                let mut row = cb.clone();
                row.unique_key = None;
                let job = enqueue::enqueue(&self.sql, conn, std::slice::from_ref(&row))?[0]
                    .id()
                    .0;
                conn.exec(&Stmt::new(BLOCK, vec![Bind::Int(job)]))?;
                let set = Stmt::new(SET_CALLBACK, vec![Bind::Int(job), Bind::Int(id)]);
                conn.exec(&set)?;
            }
            self.settle(conn, id)?;
            Ok(End::Commit(BatchId(id)))
        })
    }

    pub(crate) fn batch<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: BatchId,
    ) -> Result<Option<BatchInfo>, StoreError> {
        self.transaction(c, Begin::Read, |c| {
            let text = self.text(&format!("SELECT {BATCH_COLS} WHERE id = ?"));
            let rows: Vec<BatchRow> = c.conn.load(&Stmt::new(&text, vec![Bind::Int(id.0)]))?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(End::Commit(None));
            };
            let batch = Batch::of(row)?;
            let members = self.member_rows(&mut c.conn, id.0)?;
            Ok(End::Commit(Some(batch.info(&members)?)))
        })
    }

    pub(crate) fn list_batches<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.transaction(c, Begin::Read, |c| {
            let (filter, mut binds) = match state {
                Some(s) => ("WHERE state = ? ", vec![Bind::Text(s.as_str())]),
                None => ("", vec![]),
            };
            binds.push(Bind::Int(limit));
            let text = self.text(&format!(
                "SELECT {BATCH_COLS} {filter}ORDER BY id DESC LIMIT ?"
            ));
            let rows: Vec<BatchRow> = c.conn.load(&Stmt::new(&text, binds))?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                let batch = Batch::of(row)?;
                let members = self.member_rows(&mut c.conn, batch.row.id)?;
                out.push(batch.info(&members)?);
            }
            Ok(End::Commit(out))
        })
    }

    pub(crate) fn batch_members<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: BatchId,
    ) -> Result<Vec<BatchMember>, StoreError> {
        self.transaction(c, Begin::Read, |c| {
            let members = self.member_rows(&mut c.conn, id.0)?;
            let edges = self.edges(&mut c.conn, id.0)?;
            let mut out = Vec::with_capacity(members.len());
            for (r, s) in members {
                let result = r
                    .result
                    .as_deref()
                    .map(serde_json::from_str)
                    .transpose()
                    .map_err(|e| corrupt(r.id, format!("result is not JSON: {e}")))?;
                out.push(BatchMember {
                    name: r.batch_member.unwrap_or_default(),
                    job: JobId(r.id),
                    state: s,
                    depends_on: edges
                        .iter()
                        .filter(|e| e.job_id == r.id)
                        .map(|e| JobId(e.depends_on))
                        .collect(),
                    result,
                });
            }
            Ok(End::Commit(out))
        })
    }

    pub(crate) fn cancel_batch<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: BatchId,
    ) -> Result<(OpResult, bool), StoreError> {
        self.transaction(c, Begin::Write, |c| {
            let Some(batch) = self.lock_batch(&mut c.conn, id.0)? else {
                return Ok(End::Rollback((OpResult::NotFound, false)));
            };
            if batch.state != BatchState::Running {
                return Ok(End::Rollback((OpResult::BatchEnded(batch.state), false)));
            }
            let request = self.text(REQUEST_CANCEL);
            c.conn.exec(&Stmt::new(&request, vec![Bind::Int(id.0)]))?;
            let woke = self.settle(&mut c.conn, id.0)?;
            Ok(End::Commit((OpResult::Applied, woke)))
        })
    }

    pub(crate) fn set_result<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &safejob_core::queue::QueueLease,
        result: &serde_json::Value,
    ) -> Result<FenceCheck, StoreError> {
        let text = self.text(&format!(
            "UPDATE safe_queue_jobs SET result = ?, updated_at = {{now}} WHERE {FENCED}"
        ));
        let json = result.to_string();
        let fence = i64::try_from(lease.fence)
            .map_err(|_| StoreError::backend(format!("fence {} is out of range", lease.fence)))?;
        let stmt = Stmt::new(
            &text,
            vec![Bind::Text(&json), Bind::Int(lease.id.0), Bind::Int(fence)],
        );
        Ok(if self.run(c, |conn| conn.exec(&stmt))? == 1 {
            FenceCheck::Applied
        } else {
            FenceCheck::Stale
        })
    }

    /// Deletes the batches that ended and whose members are all gone (pruned or purged), with
    /// their edges, in one transaction.
    pub(crate) fn prune_batches<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
    ) -> Result<u64, StoreError> {
        self.transaction(c, Begin::Write, |c| {
            let rows: Vec<CountRow> = c.conn.load(&Stmt::new(GONE, vec![]))?;
            let ids: Vec<i64> = rows.iter().filter_map(|r| r.n).collect();
            for id in &ids {
                let edges = "DELETE FROM safe_queue_deps WHERE batch_id = ?";
                c.conn.exec(&Stmt::new(edges, vec![Bind::Int(*id)]))?;
                let row = "DELETE FROM safe_queue_batches WHERE id = ?";
                c.conn.exec(&Stmt::new(row, vec![Bind::Int(*id)]))?;
            }
            Ok(End::Commit(ids.len() as u64))
        })
    }

    /// Whether a batch member's dependencies did not all succeed (an operator's retry is then
    /// refused).
    pub(crate) fn dependencies_unmet<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        job: JobId,
    ) -> Result<bool, StoreError> {
        let stmt = Stmt::new(UNMET, vec![Bind::Int(job.0)]);
        let rows: Vec<CountRow> = self.run(c, |conn| conn.load(&stmt))?;
        Ok(rows.first().and_then(|r| r.n).unwrap_or(0) > 0)
    }
}
