//! The durable queue on SQLite, PostgreSQL and MySQL/MariaDB: [`DieselQueue`], safejob-core's
//! [`QueueStore`] on the same database (and the same pool) as a [`DieselStore`], whose
//! `safe_jobs` rows hold the guards of guarded jobs.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
//! use std::{sync::Arc, time::Duration};
//! use safejob_core::queue::{
//!     ClaimRequest, CompleteAs, Completed, Completion, NewJob, QueueState, QueueStore, RunAt,
//! };
//! use safejob_diesel::{DieselStore, queue::DieselQueue};
//!
//! let store = Arc::new(DieselStore::connect(&url)?);
//! store.migrate()?; // creates safe_jobs, safe_queue_jobs and safe_queue_workers
//! let queue = DieselQueue::new(store);
//! let email = |to: &str| NewJob {
//!     kind: "email".into(),
//!     queue: "default".into(),
//!     payload: serde_json::json!({ "to": to }),
//!     metadata: serde_json::Value::Null,
//!     priority: 0,
//!     run_at: RunAt::Now,
//!     max_attempts: 3,
//!     idempotent: true,
//!     unique_key: None,
//!     guard: None,
//! };
//! // Two jobs, one INSERT.
//! queue.enqueue_many(&[email("a@example.com"), email("b@example.com")])?;
//! let queues = ["default".to_owned()];
//! let claimed = queue.claim(&ClaimRequest {
//!     worker: "worker-1",
//!     queues: &queues,
//!     limit: 10,
//!     ttl: Duration::from_secs(30),
//! })?;
//! assert_eq!(claimed.len(), 2);
//! let done = queue.complete(
//!     &Completion { lease: &claimed[0].lease, outcome: CompleteAs::Succeeded, progress: None, guard: None, batch: None },
//!     None,
//! )?;
//! assert_eq!(done, Completed::Applied);
//! assert_eq!(queue.get(claimed[0].job.id)?.unwrap().state, QueueState::Succeeded);
//! # Ok(()) }
//! ```
//!
//! ## What each operation costs
//!
//! | operation | PostgreSQL | SQLite | MySQL, MariaDB |
//! |---|---|---|---|
//! | enqueue one or a batch (≤ 2000 rows) | 1: `WITH ins AS (INSERT … ON CONFLICT DO NOTHING RETURNING) SELECT … pg_notify` | 1: `INSERT … ON CONFLICT DO NOTHING RETURNING` | `BEGIN`, `INSERT … ON DUPLICATE KEY UPDATE`, read back by token, `COMMIT` |
//! | + jobs with unique keys (a guarded enqueue has one by default) | one job: + 1 `SELECT` of the live holder when it is held, in autocommit; a batch: in `BEGIN` … `COMMIT`, + 1 `SELECT` of the live holders when some are held | same | + 1 `SELECT` of the live holders |
//! | claim up to N (MySQL: at most 16,384) | 1 `WITH … FOR UPDATE SKIP LOCKED … UPDATE … RETURNING` in autocommit | `BEGIN IMMEDIATE`, 1 `UPDATE … RETURNING`, `COMMIT` | `BEGIN`, `SELECT … FOR UPDATE SKIP LOCKED`, `UPDATE`, `SELECT`, `COMMIT` |
//! | + per guarded job claimed, key never seen | nothing: the claim statement inserts the guard row | + the guard's acquire (1 statement) in the same transaction | same (2) |
//! | + per guarded job claimed, key that exists | + the store's acquire after the claim, in autocommit (2–3 statements) | + the guard's acquire (2–3) in the same transaction | same (2–4) |
//! | renew, progress | 1 `UPDATE` (renew `RETURNING` the expiry) | same | 1 (renew: + read back) |
//! | renew with the guard's lease | `BEGIN`, the job's renew, the guard's renew, `COMMIT` | same | same |
//! | complete, unguarded | 1 fenced `UPDATE` in autocommit | same | same |
//! | complete succeeded, guarded, no hook | 1 statement in autocommit: the job's update and the guard's finalize | `BEGIN`, fenced `UPDATE`, the guard's fenced `UPDATE`, `COMMIT` | same |
//! | complete succeeded, guarded, transactional effects | `BEGIN`, that statement, the hook, 1 confirming `SELECT`, `COMMIT` | `BEGIN`, fenced `UPDATE`, the guard's fenced `UPDATE`, the hook, 1 confirming `SELECT`, `COMMIT` | same |
//! | complete otherwise, guarded | `BEGIN`, fenced `UPDATE`, the guard's fenced `UPDATE`, `COMMIT` | same | same |
//! | complete a group of k (`complete_many`, a pool with batched completions) | `BEGIN`, each member's statements as above but all inside (a guarded success: its one statement), a hooked member between `SAVEPOINT` and `RELEASE`, `COMMIT`: one commit for k jobs | `BEGIN IMMEDIATE`, each member's statements, `COMMIT` | `BEGIN`, each member's statements, `COMMIT` |
//! | after-commit effects, once they ran | + 1 fenced `UPDATE` of the guard row (`finish_effects`), its own commit | same | same |
//! | reap | 1 `SELECT`, then 1 conditional `UPDATE` per expired job | same | same |
//! | retry, cancel | 1 conditional `UPDATE` (+ `pg_notify`) | 1 | 1 |
//! | retry_matching | 1 `UPDATE` for jobs without unique key, then 1 per finished job with one | same | same |
//! | purge, prune (`QueueStore::prune`) | 1 `DELETE` | 1 | 1 |
//! | `Queue::prune` | the jobs' `DELETE`, then the guards' (`LeaseStore::prune`), each in autocommit | same | same |
//!
//! A guarded job's claim and acquire share one transaction (PostgreSQL: one statement, for a key
//! never seen), and so do its completion and the guard's finalize (PostgreSQL, success without a
//! hook: one statement). So a guarded job whose key is new costs the commits of an unguarded one
//! with transactional effects or none; after-commit effects add the effects mark, and on
//! PostgreSQL a key that exists adds the acquire after the claim. Every fenced write matches
//! `id, fence, state = 'running'` and must match exactly one row (applied) or none (stale).
//! Deadlocks and lock-wait timeouts (MySQL 1213 / 1205) are retried inside the store, a
//! transaction as a whole.
//!
//! ## Enqueue in your own transaction
//!
//! [`DieselQueue::enqueue_in`] runs the same insert on your connection: the jobs exist if and
//! only if your transaction commits (and on PostgreSQL the wake-up is delivered only then).
//!
//! ## Wake-ups
//!
//! On PostgreSQL, [`QueueStore::subscribe`] starts a thread that `LISTEN`s on one pooled
//! connection (held until the queue is dropped) and wakes idle workers at once when jobs are
//! enqueued or retried; see `listen.rs` for why it polls the socket. SQLite and MySQL have no
//! notifications: a pool is woken by enqueues and retries made through the same `DieselQueue`
//! (the same process) and finds other processes' jobs at its poll interval.

mod action;
mod admin;
mod batch;
mod complete;
mod enqueue;
mod history;
mod listen;
mod rows;
mod schedule;
mod snapshot;
mod sql;
mod tx;
mod work;

use std::{
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::{
    queue::{
        ClaimRequest, Claimed, Completed, Completion, Enqueued, FinishedMinute, GroupMember,
        Heartbeat, JobFilter, JobId, JobQuery, NewJob, OpResult, Progress, QueueLease, QueueStore,
        QueuedJob, Reaped, Snapshot, Waker,
    },
    store::{FenceCheck, Lease, LeaseStore, Renewed, StoreError, TxEffects},
    workflow::{BatchId, BatchInfo, BatchMember, BatchState, NewBatch},
};

pub use self::{enqueue::MAX_ROWS_PER_STATEMENT, snapshot::DURATION_SAMPLE};
use self::{
    listen::{Listener, Wakers},
    sql::QueueSql,
    tx::{Begin, Fail, QCtx},
};
use crate::{
    BackendKind, ConnectionRef, DieselStore,
    backend::{
        DbConnection,
        pool::{PooledConn, with_conn},
    },
};

/// The queue's [`QueueStore`] on a [`DieselStore`]'s database and pool.
///
/// Cheap to share: wrap it in an `Arc` for workers and producers. [`QueueStore::guards`] is the
/// `DieselStore` itself, so a guarded job's `safe_jobs` row is the same row a
/// [`Runner`](safejob_core::Runner) on that store uses for the same key.
pub struct DieselQueue {
    store: Arc<DieselStore>,
    sql: RwLock<Arc<QueueSql>>,
    wakers: Wakers,
    listener: Mutex<Option<Listener>>,
}

impl std::fmt::Debug for DieselQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DieselQueue")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl DieselQueue {
    /// The queue on `store`'s database. Run [`DieselStore::migrate`] once first: it creates the
    /// queue's tables with the store's.
    pub fn new(store: Arc<DieselStore>) -> Self {
        let sql = QueueSql::render(store.backend(), 0);
        Self {
            store,
            sql: RwLock::new(Arc::new(sql)),
            wakers: Arc::default(),
            listener: Mutex::new(None),
        }
    }

    /// The store holding the guards (and the pool).
    pub fn store(&self) -> &Arc<DieselStore> {
        &self.store
    }

    fn statements(&self) -> Arc<QueueSql> {
        self.sql
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn ctx(&self) -> QCtx<'_> {
        QCtx {
            sql: self.statements(),
            guard: self.store.ctx(),
        }
    }

    /// Makes `by` pass on this queue's clock and its store's (see
    /// [`DieselStore::advance_clock_for_tests`]): a testing aid, only with the `test-util`
    /// feature.
    /// Advance through the queue, not the store alone, so that the queue and its guards agree
    /// on the time.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn advance_clock_for_tests(&self, by: Duration) {
        let by_us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.store.advance_clock_for_tests(by);
        let mut sql = self.sql.write().unwrap_or_else(PoisonError::into_inner);
        let offset = sql.offset.saturating_add(by_us);
        *sql = Arc::new(QueueSql::render(self.store.backend(), offset));
    }

    /// Enqueues `jobs` on `conn`, inside whatever transaction is open on it: the jobs exist if and
    /// only if that transaction commits. The same statements as [`QueueStore::enqueue_many`]:
    /// one `INSERT` per [`MAX_ROWS_PER_STATEMENT`] rows (MySQL: each read back by a `SELECT`), and
    /// a `SELECT` of the live holders when some unique keys are held; nothing is retried here — a
    /// deadlock is the transaction owner's to handle.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    /// use std::sync::Arc;
    /// use diesel::{Connection, SqliteConnection};
    /// use safejob_core::queue::{NewJob, QueueStore, RunAt};
    /// use safejob_diesel::{DieselStore, queue::DieselQueue};
    ///
    /// let store = Arc::new(DieselStore::connect(&url)?);
    /// store.migrate()?;
    /// let queue = DieselQueue::new(store);
    /// let job = NewJob {
    ///     kind: "receipt".into(),
    ///     queue: "default".into(),
    ///     payload: serde_json::json!({"order": 7}),
    ///     metadata: serde_json::Value::Null,
    ///     priority: 0,
    ///     run_at: RunAt::Now,
    ///     max_attempts: 3,
    ///     idempotent: true,
    ///     unique_key: None,
    ///     guard: None,
    /// };
    /// let mut conn = SqliteConnection::establish(url.trim_start_matches("sqlite://"))?;
    /// let id = conn.transaction(|conn| {
    ///     // … the caller's own writes …
    ///     let enqueued = queue.enqueue_in(conn, &[job]).map_err(|_| diesel::result::Error::RollbackTransaction)?;
    ///     Ok::<_, diesel::result::Error>(enqueued[0].id())
    /// })?;
    /// assert!(queue.get(id)?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn enqueue_in<'c>(
        &self,
        conn: impl Into<ConnectionRef<'c>>,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.ctx();
        let mut conn = conn.into();
        q.check_backend(&conn, "enqueue_in")?;
        let answer = match &mut conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => enqueue::enqueue(&q.sql, &mut **c, jobs),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => enqueue::enqueue(&q.sql, &mut **c, jobs),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => enqueue::enqueue(&q.sql, &mut **c, jobs),
        };
        answer.map_err(|fail| q.fail_to_store(fail))
    }
}

impl QCtx<'_> {
    /// A caller's connection (`enqueue_in`, `publish_in`) must be of the queue's backend.
    fn check_backend(&self, conn: &ConnectionRef<'_>, what: &str) -> Result<(), StoreError> {
        let backend = match conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(_) => BackendKind::Sqlite,
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(_) => BackendKind::Postgres,
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(_) => BackendKind::Mysql,
        };
        if backend != self.sql.kind {
            return Err(StoreError::backend(format!(
                "{what} was given a {} connection for a queue on {}",
                backend.as_str(),
                self.sql.kind.as_str()
            )));
        }
        Ok(())
    }

    /// A failure on a caller's connection, as the caller sees it (a panic goes on unwinding).
    fn fail_to_store(&self, fail: Fail) -> StoreError {
        match fail {
            Fail::Db(e) => self.err(e),
            Fail::Store(e) => e,
            Fail::Panic(p) => std::panic::resume_unwind(p),
        }
    }
}

impl QCtx<'_> {
    fn enqueue_pooled<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Without unique keys, one chunk is exactly one statement: atomic in autocommit, and
        // safe to run again whole after a deadlock. So is one job with a unique key (a guarded
        // enqueue, deduplicated by default): of its statements at most one `INSERT` inserts, and
        // the lookups of a live holder only read. Anything more (a batch whose rows may insert in
        // different rounds, several chunks, MySQL's read-back) is one transaction.
        let single = jobs.len() <= enqueue::MAX_ROWS_PER_STATEMENT
            && C::KIND != BackendKind::Mysql
            && (jobs.len() == 1 || jobs.iter().all(|j| j.unique_key.is_none()));
        if single {
            let mut attempt = 0;
            loop {
                match enqueue::enqueue(&self.sql, &mut c.conn, jobs) {
                    Ok(answers) => return Ok(answers),
                    Err(Fail::Db(e)) if crate::error::is_retryable(&e) && attempt < 6 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(1 << attempt));
                    }
                    Err(Fail::Db(e)) => {
                        if crate::error::is_connection_lost(&e) {
                            c.broken = true;
                        }
                        return Err(self.err(e));
                    }
                    Err(Fail::Store(e)) => return Err(e),
                    Err(Fail::Panic(p)) => std::panic::resume_unwind(p),
                }
            }
        }
        self.transaction(c, Begin::Write, |c| {
            Ok(tx::End::Commit(enqueue::enqueue(
                &self.sql,
                &mut c.conn,
                jobs,
            )?))
        })
    }
}

impl DieselQueue {
    /// Wakes this process's pools subscribed to this queue after a commit that made jobs
    /// claimable, at once. On PostgreSQL the listener also wakes them (and every other
    /// process's) when the notification arrives, up to [`listen::POLL`] later: a pool in this
    /// process then claims without waiting for that. The other backends have no notifications,
    /// so this is how their pools hear of this process's jobs (other processes' jobs are found
    /// by polling).
    fn wake_in_process(&self) {
        listen::wake_all(&self.wakers);
    }
}

impl QueueStore for DieselQueue {
    /// SQLite: yes, each commit is its own fsync (batching measured ×2–2.5 on the drain).
    /// PostgreSQL and MariaDB: no, their servers already share one log flush among concurrent
    /// commits, and grouping measured 0.95× on a quiet machine (docs/BENCHMARKS.md).
    fn groups_completions(&self) -> bool {
        self.store.backend() == BackendKind::Sqlite
    }

    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        LeaseStore::now(&*self.store)
    }

    fn guards(&self) -> &dyn LeaseStore {
        &*self.store
    }

    fn enqueue_many(&self, jobs: &[NewJob]) -> Result<Vec<Enqueued>, StoreError> {
        let q = self.ctx();
        let answers = with_conn!(self.store, conn => q.enqueue_pooled(conn, jobs))?;
        if answers.iter().any(|a| !a.is_duplicate()) {
            self.wake_in_process();
        }
        Ok(answers)
    }

    fn claim(&self, req: &ClaimRequest<'_>) -> Result<Vec<Claimed>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.claim(conn, req))
    }

    fn renew(
        &self,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.renew(conn, lease, guard, ttl))
    }

    fn progress(&self, lease: &QueueLease, progress: &Progress) -> Result<FenceCheck, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.progress(conn, lease, progress))
    }

    fn complete(
        &self,
        c: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        let q = self.ctx();
        let done = with_conn!(self.store, conn => q.complete(conn, c, hook))?;
        // A member's completion may have unlocked others (PostgreSQL notified in the
        // transaction).
        if c.batch.is_some() && done == Completed::Applied {
            self.wake_in_process();
        }
        Ok(done)
    }

    fn complete_many(
        &self,
        group: &mut [GroupMember<'_, '_>],
    ) -> Vec<Result<Completed, StoreError>> {
        let q = self.ctx();
        let mut written = || -> Result<Vec<Result<Completed, StoreError>>, StoreError> {
            Ok(with_conn!(self.store, conn => q.complete_many(conn, group)))
        };
        let answers = match written() {
            Ok(answers) => answers,
            // No connection: every member's error, nothing written.
            Err(error) => safejob_core::group::each_member(error, group.len())
                .into_iter()
                .map(Err)
                .collect(),
        };
        // Members' completions may have unlocked others (PostgreSQL notified in the
        // transaction).
        if group
            .iter()
            .zip(&answers)
            .any(|(m, a)| m.completion.batch.is_some() && matches!(a, Ok(Completed::Applied)))
        {
            self.wake_in_process();
        }
        answers
    }

    fn heartbeat(&self, hb: &Heartbeat<'_>) -> Result<(), StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.heartbeat(conn, hb))
    }

    fn remove_worker(&self, worker: &str) -> Result<(), StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.remove_worker(conn, worker))
    }

    fn reap(&self, limit: usize) -> Result<Vec<Reaped>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.reap(conn, limit))
    }

    fn get(&self, id: JobId) -> Result<Option<QueuedJob>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.get(conn, id))
    }

    fn list(&self, query: &JobQuery) -> Result<Vec<QueuedJob>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.list(conn, query))
    }

    fn retry(&self, id: JobId) -> Result<OpResult, StoreError> {
        let q = self.ctx();
        let done = with_conn!(self.store, conn => q.retry(conn, id))?;
        if done == OpResult::Applied {
            self.wake_in_process();
        }
        Ok(done)
    }

    fn retry_matching(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        let q = self.ctx();
        let retried = with_conn!(self.store, conn => q.retry_matching(conn, filter))?;
        if retried > 0 {
            self.wake_in_process();
        }
        Ok(retried)
    }

    fn cancel(&self, id: JobId) -> Result<OpResult, StoreError> {
        let q = self.ctx();
        let done = with_conn!(self.store, conn => q.cancel(conn, id))?;
        if done == OpResult::Applied {
            self.wake_in_process();
        }
        Ok(done)
    }

    fn purge(&self, filter: &JobFilter) -> Result<u64, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.purge(conn, filter))
    }

    fn prune(&self, retention: Duration, limit: usize) -> Result<u64, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.prune(conn, retention, limit))
    }

    fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.snapshot(conn))
    }

    fn finished_by_minute(&self, window: Duration) -> Result<Vec<FinishedMinute>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.finished_by_minute(conn, window))
    }

    fn set_result(
        &self,
        lease: &QueueLease,
        result: &serde_json::Value,
    ) -> Result<FenceCheck, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.set_result(conn, lease, result))
    }

    fn insert_batch(&self, batch: &NewBatch) -> Result<BatchId, StoreError> {
        let q = self.ctx();
        let id = with_conn!(self.store, conn => q.insert_batch(conn, batch))?;
        self.wake_in_process();
        Ok(id)
    }

    fn batch(&self, id: BatchId) -> Result<Option<BatchInfo>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.batch(conn, id))
    }

    fn batch_members(&self, id: BatchId) -> Result<Vec<BatchMember>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.batch_members(conn, id))
    }

    fn list_batches(
        &self,
        state: Option<BatchState>,
        limit: usize,
    ) -> Result<Vec<BatchInfo>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.list_batches(conn, state, limit))
    }

    fn cancel_batch(&self, id: BatchId) -> Result<OpResult, StoreError> {
        let q = self.ctx();
        let (done, woke) = with_conn!(self.store, conn => q.cancel_batch(conn, id))?;
        if woke {
            self.wake_in_process();
        }
        Ok(done)
    }

    /// Registers `waker`, woken when jobs are enqueued or retried. On PostgreSQL, starts (once)
    /// the listener thread, which hears every process on this database schema; on SQLite and
    /// MySQL only this `DieselQueue`'s own enqueues and retries wake it, and jobs from other
    /// processes are found at the pool's next poll.
    fn subscribe(&self, waker: Waker) -> Result<(), StoreError> {
        self.wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waker);
        if self.store.backend() == BackendKind::Postgres {
            let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
            if listener.is_none() {
                *listener = Some(Listener::start(self.store.clone(), self.wakers.clone())?);
            }
        }
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
impl<'a> From<&'a mut diesel::SqliteConnection> for ConnectionRef<'a> {
    fn from(conn: &'a mut diesel::SqliteConnection) -> Self {
        Self::Sqlite(conn)
    }
}

#[cfg(feature = "postgres")]
impl<'a> From<&'a mut diesel::PgConnection> for ConnectionRef<'a> {
    fn from(conn: &'a mut diesel::PgConnection) -> Self {
        Self::Postgres(conn)
    }
}

#[cfg(feature = "mysql")]
impl<'a> From<&'a mut diesel::MysqlConnection> for ConnectionRef<'a> {
    fn from(conn: &'a mut diesel::MysqlConnection) -> Self {
        Self::Mysql(conn)
    }
}

/// A reborrow, so that a `&mut ConnectionRef` (from [`DieselStore::with_connection`] or a setup
/// hook) can be handed to [`DieselQueue::enqueue_in`] too.
impl<'a, 'b: 'a> From<&'a mut ConnectionRef<'b>> for ConnectionRef<'a> {
    fn from(conn: &'a mut ConnectionRef<'b>) -> Self {
        match conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => Self::Sqlite(c),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => Self::Postgres(c),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => Self::Mysql(c),
        }
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    use super::*;

    /// A deadlock inside the guard's half of a queue transaction (MySQL: two claims locking guard
    /// rows) reaches the transaction as a store error; it is rolled back and run again like any
    /// deadlock, not returned. Catches the retry of `Fail::Store` removed from
    /// `QCtx::transaction` — tried: the body ran once and the claim failed with the deadlock.
    #[test]
    fn a_deadlock_in_the_guard_half_runs_the_transaction_again() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("q.db").display());
        let store = Arc::new(DieselStore::builder(&url).build().unwrap());
        store.migrate().unwrap();
        let queue = DieselQueue::new(store);
        let deadlock = || {
            let info = Box::new(
                "Deadlock found when trying to get lock; try restarting transaction".to_owned(),
            );
            StoreError::backend(DieselError::DatabaseError(
                DatabaseErrorKind::SerializationFailure,
                info,
            ))
        };
        let runs = (|| -> Result<u32, StoreError> {
            let q = queue.ctx();
            with_conn!(queue.store, conn => {
                let mut runs = 0;
                q.transaction(conn, Begin::Write, |_| {
                    runs += 1;
                    if runs == 1 {
                        return Err(Fail::Store(deadlock()));
                    }
                    Ok(tx::End::Commit(runs))
                })
            })
        })()
        .unwrap();
        assert_eq!(runs, 2);

        let other = (|| -> Result<u32, StoreError> {
            let q = queue.ctx();
            with_conn!(queue.store, conn => {
                q.transaction(conn, Begin::Write, |_| -> Result<tx::End<u32>, Fail> {
                    Err(Fail::Store(StoreError::backend("not a lock conflict")))
                })
            })
        })();
        assert!(
            other.is_err(),
            "other store errors are returned, not retried"
        );
    }
}
