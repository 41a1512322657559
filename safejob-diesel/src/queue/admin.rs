//! The worker registry, the reaper, and the operator's actions: get, list, retry, cancel, purge,
//! prune.

use std::time::Duration;

use safejob_core::{
    queue::{
        ErrorKind, Heartbeat, JobFilter, JobId, JobQuery, OpResult, QueueState, QueuedJob, Reaped,
    },
    store::StoreError,
};

use super::{
    rows::job,
    sql::{FINISHED, FilterShape, IdRow, JobRow, ReapRow},
    tx::{Begin, End, QCtx, is_unique_violation},
};
use crate::backend::{BackendKind, Bind, DbConnection, Stmt, pool::PooledConn};

/// The longest retention pruning computes with (older cutoffs delete nothing anyway).
const MAX_RETENTION: Duration = Duration::from_secs(200 * 366 * 24 * 3600);

/// A filter's conditions as binds, in the order [`super::sql::QueueSql::filtered`] expects.
fn filter_binds(filter: &JobFilter) -> (FilterShape, Vec<Bind<'_>>) {
    let mut binds = Vec::new();
    binds.extend(filter.state.map(|s| Bind::Text(s.as_str())));
    binds.extend(filter.queue.as_deref().map(Bind::Text));
    binds.extend(filter.kind.as_deref().map(Bind::Text));
    let shape = FilterShape {
        state: filter.state.is_some(),
        queue: filter.queue.is_some(),
        kind: filter.kind.is_some(),
        after: false,
        extra: Vec::new(),
    };
    (shape, binds)
}

/// A filter without a state means dead jobs.
fn with_default_state(filter: &JobFilter) -> JobFilter {
    let mut filter = filter.clone();
    filter.state.get_or_insert(QueueState::Dead);
    filter
}

impl QCtx<'_> {
    pub(crate) fn heartbeat<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        hb: &Heartbeat<'_>,
    ) -> Result<(), StoreError> {
        let queues = serde_json::to_string(hb.queues).map_err(StoreError::backend)?;
        let stmt = Stmt::new(
            &self.sql.heartbeat,
            vec![
                Bind::Text(hb.worker),
                Bind::Text(&queues),
                Bind::Int(i64::from(hb.concurrency)),
            ],
        );
        self.run(c, |conn| conn.exec(&stmt)).map(drop)
    }

    pub(crate) fn remove_worker<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        worker: &str,
    ) -> Result<(), StoreError> {
        let stmt = Stmt::new(&self.sql.remove_worker, vec![Bind::Text(worker)]);
        self.run(c, |conn| conn.exec(&stmt)).map(drop)
    }

    pub(crate) fn reap<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        limit: usize,
    ) -> Result<Vec<Reaped>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let find = Stmt::new(
            &self.sql.expired,
            vec![Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
        );
        let expired: Vec<ReapRow> = self.run(c, |conn| conn.load(&find))?;
        let mut reaped = Vec::with_capacity(expired.len());
        for row in expired {
            let (index, state) = if row.idempotent == 0 {
                (1, QueueState::Parked)
            } else if row.attempts >= row.max_attempts {
                (2, QueueState::Dead)
            } else {
                (0, QueueState::Retrying)
            };
            let message = format!(
                "lease of worker {} expired",
                row.owner.as_deref().unwrap_or("?")
            );
            let stmt = Stmt::new(
                &self.sql.reap[index],
                vec![
                    Bind::Int(row.attempts),
                    Bind::Text(ErrorKind::LeaseExpired.as_str()),
                    Bind::Text(&message),
                    Bind::Int(row.id),
                    Bind::Int(row.fence),
                ],
            );
            // Still running, still expired, same fence: else someone got there first. A batch
            // member's end settles its batch in the same transaction.
            let applied = match row.batch_id.filter(|_| state.is_finished()) {
                Some(batch) => self.transaction(c, Begin::Write, |c| {
                    if c.conn.exec(&stmt)? != 1 {
                        return Ok(End::Rollback(false));
                    }
                    self.settle(&mut c.conn, batch)?;
                    Ok(End::Commit(true))
                })?,
                None => self.run(c, |conn| conn.exec(&stmt))? == 1,
            };
            if applied {
                reaped.push(Reaped {
                    id: JobId(row.id),
                    kind: row.kind,
                    fence: u64::try_from(row.fence + 1).unwrap_or_default(),
                    state,
                });
            }
        }
        Ok(reaped)
    }

    pub(crate) fn get<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: JobId,
    ) -> Result<Option<QueuedJob>, StoreError> {
        let stmt = Stmt::new(&self.sql.get, vec![Bind::Int(id.0)]);
        let rows: Vec<JobRow> = self.run(c, |conn| conn.load(&stmt))?;
        rows.into_iter().next().map(job).transpose()
    }

    pub(crate) fn list<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        query: &JobQuery,
    ) -> Result<Vec<QueuedJob>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let (mut shape, mut binds) = filter_binds(&query.filter);
        shape.after = query.after.is_some();
        binds.extend(query.after.map(|a| Bind::Int(a.0)));
        binds.push(Bind::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        let text = self.sql.filtered(
            "SELECT {cols} FROM safe_queue_jobs",
            &shape,
            "ORDER BY id LIMIT ?",
        );
        let stmt = Stmt::new(&text, binds);
        let rows: Vec<JobRow> = self.run(c, |conn| conn.load(&stmt))?;
        rows.into_iter().map(job).collect()
    }

    /// Wakes listening workers: only PostgreSQL has `LISTEN` / `NOTIFY`; elsewhere workers poll.
    fn notify<C: DbConnection>(&self, c: &mut PooledConn<C>) -> Result<(), StoreError> {
        if self.sql.kind == BackendKind::Postgres {
            let stmt = Stmt::new(&self.sql.notify, vec![]);
            self.run(c, |conn| conn.exec(&stmt))?;
        }
        Ok(())
    }

    /// The retry of one job, without the wake-up.
    fn retry_one<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: JobId,
    ) -> Result<OpResult, StoreError> {
        if self.dependencies_unmet(c, id)? {
            return Ok(OpResult::DependenciesUnmet);
        }
        let stmt = Stmt::new(&self.sql.retry_one, vec![Bind::Int(id.0)]);
        for _ in 0..8 {
            let n = match c.conn.exec(&stmt) {
                Ok(n) => n,
                // A finished job whose key another live job holds now.
                Err(e) if is_unique_violation(&e) => {
                    let holder =
                        Stmt::new(&self.sql.holder_of, vec![Bind::Int(id.0), Bind::Int(id.0)]);
                    let holders: Vec<IdRow> = self.run(c, |conn| conn.load(&holder))?;
                    match holders.first() {
                        Some(h) => return Ok(OpResult::UniqueKeyHeld { by: JobId(h.id) }),
                        None => continue, // it finished in between: try again
                    }
                }
                Err(_) => self.run(c, |conn| conn.exec(&stmt))?,
            };
            if n > 0 {
                return Ok(OpResult::Applied);
            }
            return Ok(match self.get(c, id)? {
                None => OpResult::NotFound,
                Some(job) => OpResult::WrongState(job.state),
            });
        }
        Err(StoreError::backend(
            "retry: the job's unique key kept changing hands; try again",
        ))
    }

    pub(crate) fn retry<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: JobId,
    ) -> Result<OpResult, StoreError> {
        let result = self.retry_one(c, id)?;
        if result == OpResult::Applied {
            self.notify(c)?;
        }
        Ok(result)
    }

    pub(crate) fn retry_matching<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        filter: &JobFilter,
    ) -> Result<u64, StoreError> {
        let filter = with_default_state(filter);
        if !matches!(
            filter.state,
            Some(QueueState::Dead | QueueState::Cancelled | QueueState::Parked)
        ) {
            return Ok(0);
        }
        // Jobs that hold no unique key (or still hold it: parked) in one statement.
        let (mut shape, binds) = filter_binds(&filter);
        // (Batch members one by one below: their dependencies must have succeeded.)
        shape.extra = vec![
            "(unique_key IS NULL OR state = 'parked')",
            "batch_id IS NULL",
        ];
        let text = self.sql.filtered(
            "UPDATE safe_queue_jobs SET state = 'pending', run_at = {now}, attempts = 0, \
             finished_at = NULL, updated_at = {now}",
            &shape,
            "",
        );
        let bulk = Stmt::new(&text, binds.clone());
        let mut applied = self.run(c, |conn| conn.exec(&bulk))? as u64;
        // Finished jobs with a unique key one by one, by id: each takes its key back only if no
        // other live job holds it (an earlier one of this very retry included).
        shape.extra = vec![
            "((unique_key IS NOT NULL AND state IN ('succeeded', 'dead', 'cancelled')) \
             OR batch_id IS NOT NULL)",
        ];
        let text = self
            .sql
            .filtered("SELECT id FROM safe_queue_jobs", &shape, "ORDER BY id");
        let keyed = Stmt::new(&text, binds);
        let ids: Vec<IdRow> = self.run(c, |conn| conn.load(&keyed))?;
        for row in ids {
            if self.retry_one(c, JobId(row.id))? == OpResult::Applied {
                applied += 1;
            }
        }
        if applied > 0 {
            self.notify(c)?;
        }
        Ok(applied)
    }

    pub(crate) fn cancel<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: JobId,
    ) -> Result<OpResult, StoreError> {
        let stmt = Stmt::new(&self.sql.cancel, vec![Bind::Int(id.0)]);
        // The cancel and its batch's settle in one transaction.
        let cancelled = self.transaction(c, Begin::Write, |c| {
            if c.conn.exec(&stmt)? == 0 {
                return Ok(End::Rollback(false));
            }
            self.settle_job(&mut c.conn, id.0)?;
            Ok(End::Commit(true))
        })?;
        if cancelled {
            return Ok(OpResult::Applied);
        }
        Ok(match self.get(c, id)? {
            None => OpResult::NotFound,
            Some(job) => OpResult::WrongState(job.state),
        })
    }

    pub(crate) fn purge<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        filter: &JobFilter,
    ) -> Result<u64, StoreError> {
        let filter = with_default_state(filter);
        if !filter.state.is_some_and(QueueState::is_finished) {
            return Ok(0);
        }
        let (mut shape, binds) = filter_binds(&filter);
        shape.extra = vec![FINISHED];
        let text = self.sql.filtered("DELETE FROM safe_queue_jobs", &shape, "");
        let stmt = Stmt::new(&text, binds);
        Ok(self.run(c, |conn| conn.exec(&stmt))? as u64)
    }

    pub(crate) fn prune<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        retention: Duration,
        limit: usize,
    ) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let back = i64::try_from(retention.min(MAX_RETENTION).as_micros()).unwrap_or(i64::MAX);
        let stmt = Stmt::new(
            &self.sql.prune,
            vec![
                Bind::Int(-back),
                Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)),
            ],
        );
        let pruned = self.run(c, |conn| conn.exec(&stmt))? as u64;
        self.prune_batches(c)?;
        Ok(pruned)
    }
}
