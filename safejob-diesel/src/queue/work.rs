//! What workers do: claim (with the guard's acquire in the same transaction; PostgreSQL: fresh
//! keys in the claim's one statement, keys that exist right after it), renew and progress. The
//! fenced completion is in [`super::complete`].
//!
//! Lock order, everywhere: job rows first, then guard rows (a claim's guard acquires sorted by
//! digest), so two transactions of the queue never wait on each other in a cycle.

use std::time::Duration;

use safejob_core::{
    queue::{
        ClaimRequest, Claimed, CompleteAs, Completion, GuardFinish, Progress, QueueLease, QueuedJob,
    },
    store::{AcquireRequest, Acquired, FenceCheck, Lease, Renewed, StoreError},
};

use super::{
    rows::{clean, instant, job, micros},
    sql::{ClaimSql, ClaimedRow, IdRow, JobRow, QueueSql, padded},
    tx::{Begin, End, Fail, QCtx},
};
use crate::{
    backend::{Bind, DbConnection, Dialect, Stmt, pool::PooledConn},
    guard::{
        ops::lease,
        sql::{GrantRow, MicrosRow},
    },
};

/// The most jobs one MySQL claim takes.
const MAX_MYSQL_CLAIM: usize = 16_384;

pub(super) fn fence(lease: &QueueLease) -> Result<i64, StoreError> {
    i64::try_from(lease.fence).map_err(|_| StoreError::backend("fence out of range"))
}

pub(super) fn exactly_one(n: usize, id: i64) -> Result<bool, StoreError> {
    match n {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(super::rows::corrupt(
            id,
            format!("a fenced write matched {n} rows"),
        )),
    }
}

impl QCtx<'_> {
    pub(crate) fn claim<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &ClaimRequest<'_>,
    ) -> Result<Vec<Claimed>, StoreError> {
        let Some(first_queue) = req.queues.first() else {
            return Ok(Vec::new());
        };
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        // MySQL binds the claimed ids back (at most 65,535 binds a statement); a claim may
        // always return fewer jobs than its limit.
        let limit = if self.sql.kind == crate::BackendKind::Mysql {
            req.limit.min(MAX_MYSQL_CLAIM)
        } else {
            req.limit
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ttl = micros(req.ttl)?;
        let n = padded(req.queues.len());
        let queues: Vec<Bind<'_>> = (0..n)
            .map(|i| Bind::Text(req.queues.get(i).unwrap_or(first_queue)))
            .collect();
        let (text, mark_read) = match &self.sql.claim {
            ClaimSql::Cte(sql) => {
                let text = QueueSql::with_list(sql, n);
                return self.claim_at_once(c, req, &text, queues, limit, ttl);
            }
            ClaimSql::Returning(sql) => (QueueSql::with_list(sql, n), None),
            ClaimSql::PickMarkRead { pick, mark, read } => {
                (QueueSql::with_list(pick, n), Some((mark, read)))
            }
        };
        self.transaction(c, Begin::Write, |c| {
            let rows: Vec<JobRow> = match mark_read {
                None => {
                    let mut binds = vec![Bind::Text(req.worker), Bind::Int(ttl)];
                    binds.extend(queues.iter().copied());
                    binds.push(Bind::Int(limit));
                    c.conn.load(&Stmt::new(&text, binds))?
                }
                Some((mark, read)) => {
                    let mut binds = queues.clone();
                    binds.push(Bind::Int(limit));
                    let ids: Vec<IdRow> = c.conn.load(&Stmt::new(&text, binds))?;
                    let Some(first) = ids.first().map(|r| r.id) else {
                        return Ok(End::Commit(Vec::new()));
                    };
                    let n = padded(ids.len());
                    let id_binds = (0..n).map(|i| Bind::Int(ids.get(i).map_or(first, |r| r.id)));
                    let mut binds = vec![Bind::Text(req.worker), Bind::Int(ttl)];
                    binds.extend(id_binds.clone());
                    c.conn
                        .exec(&Stmt::new(&QueueSql::with_list(mark, n), binds))?;
                    c.conn.load(&Stmt::new(
                        &QueueSql::with_list(read, n),
                        id_binds.collect(),
                    ))?
                }
            };
            let jobs = rows
                .into_iter()
                .map(|row| Ok((job(row)?, None)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            Ok(End::Commit(self.guards_and_leases(c, req, jobs)?))
        })
    }

    /// PostgreSQL's claim: one statement in autocommit ([`ClaimSql::Cte`]) claims the jobs and
    /// inserts the guard rows of fresh keys. A guarded job whose key exists already is decided
    /// right after by the store's acquire, under the job's lease: a crash in between leaves the
    /// job to the reaper and the key as it was.
    fn claim_at_once<'b, C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &ClaimRequest<'b>,
        text: &str,
        mut binds: Vec<Bind<'b>>,
        limit: i64,
        ttl: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        binds.extend([
            Bind::Int(limit),
            Bind::Text(req.worker),
            Bind::Int(ttl),
            Bind::Text(req.worker),
            Bind::Int(ttl),
        ]);
        let stmt = Stmt::new(text, binds);
        let rows: Vec<ClaimedRow> = self.run(c, |conn| conn.load(&stmt))?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let job = job(row.job)?;
            let granted = match (job.guard, row.g_fence, row.g_attempts, row.g_expires_us) {
                (Some(spec), Some(fence), Some(attempts), Some(expires_us)) => {
                    let grant = GrantRow {
                        fence,
                        attempts,
                        expires_us,
                    };
                    Some(Acquired::Granted(lease(spec.digest, req.worker, &grant)?))
                }
                _ => None,
            };
            jobs.push((job, granted));
        }
        self.guards_and_leases_or_give_back(c, req, jobs)
    }

    /// The claimed jobs in claim order with their leases, after acquiring (in digest order, so
    /// guard rows are locked in one order everywhere) the guard of each guarded job not granted
    /// yet.
    fn guards_and_leases<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &ClaimRequest<'_>,
        mut jobs: Vec<(QueuedJob, Option<Acquired>)>,
    ) -> Result<Vec<Claimed>, StoreError> {
        self.acquire_guards(c, req, &mut jobs)?;
        Ok(claimed(req, jobs))
    }

    /// [`QCtx::guards_and_leases`] after a claim that committed already (PostgreSQL's one
    /// statement): when an acquire fails, the jobs claimed and the guards granted are given back
    /// at once (best effort; whatever is not expires with its lease) rather than left running
    /// under this worker until their leases end.
    fn guards_and_leases_or_give_back<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &ClaimRequest<'_>,
        mut jobs: Vec<(QueuedJob, Option<Acquired>)>,
    ) -> Result<Vec<Claimed>, StoreError> {
        let acquired = self.acquire_guards(c, req, &mut jobs);
        let claimed = claimed(req, jobs);
        if let Err(error) = acquired {
            tracing::warn!(%error, jobs = claimed.len(), "safejob-diesel queue: a claim's guard acquire failed; giving its jobs back");
            for job in &claimed {
                self.give_back(c, job);
            }
            return Err(error);
        }
        Ok(claimed)
    }

    fn acquire_guards<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &ClaimRequest<'_>,
        jobs: &mut [(QueuedJob, Option<Acquired>)],
    ) -> Result<(), StoreError> {
        jobs.sort_by_key(|(j, _)| (j.priority, j.run_at, j.id));
        let mut pending: Vec<usize> = (0..jobs.len())
            .filter(|&i| jobs[i].0.guard.is_some() && jobs[i].1.is_none())
            .collect();
        pending.sort_by_key(|&i| jobs[i].0.guard.map(|g| g.digest));
        for i in pending {
            let Some(spec) = jobs[i].0.guard else {
                continue;
            };
            jobs[i].1 = Some(self.guard.acquire(
                c,
                &AcquireRequest {
                    digest: spec.digest,
                    fingerprint: spec.fingerprint,
                    owner: req.worker,
                    ttl: req.ttl,
                },
            )?);
        }
        Ok(())
    }

    /// Gives one claimed job back, due now and without counting the attempt, with its guard
    /// released if it was granted.
    fn give_back<C: DbConnection>(&self, c: &mut PooledConn<C>, job: &Claimed) {
        let guard = match &job.guard {
            Some(Acquired::Granted(lease)) => Some(GuardFinish::Release {
                lease,
                error: Some("the claim gave its jobs back"),
            }),
            _ => None,
        };
        let completion = Completion {
            lease: &job.lease,
            outcome: CompleteAs::Snooze {
                delay: Duration::ZERO,
                error: None,
            },
            progress: None,
            guard,
            batch: None,
        };
        if let Err(error) = self.complete(c, &completion, None) {
            tracing::warn!(%error, job = job.job.id.0, "safejob-diesel queue: could not give a claimed job back; its lease will expire");
        }
    }

    /// The job's renew statement: the new expiry, or `None` when stale.
    fn renew_job<C: DbConnection>(
        &self,
        conn: &mut C,
        lease: &QueueLease,
        ttl: i64,
    ) -> Result<Option<i64>, Fail> {
        let id = lease.id.0;
        let f = fence(lease)?;
        let stmt = Stmt::new(
            &self.sql.renew,
            vec![Bind::Int(ttl), Bind::Int(id), Bind::Int(f)],
        );
        // Where the backend has `UPDATE … RETURNING` the renew reads its expiry back itself;
        // MySQL reads it with a second statement.
        if Dialect::of(self.sql.kind).returning {
            let rows: Vec<MicrosRow> = conn.load(&stmt)?;
            exactly_one(rows.len(), id)?;
            return Ok(rows.first().map(|r| r.us));
        }
        let n = conn.exec(&stmt)?;
        if !exactly_one(n, id)? {
            return Ok(None);
        }
        let read = Stmt::new(&self.sql.expiry_of, vec![Bind::Int(id), Bind::Int(f)]);
        let rows: Vec<MicrosRow> = conn.load(&read)?;
        Ok(rows.first().map(|r| r.us))
    }

    pub(crate) fn renew<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &QueueLease,
        guard: Option<&Lease>,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        let ttl_us = micros(ttl)?;
        let answer = |us: Option<i64>| -> Result<Renewed, StoreError> {
            Ok(match us {
                Some(us) => Renewed::Extended(instant(lease.id.0, us)?),
                None => Renewed::Stale,
            })
        };
        let Some(guard) = guard else {
            let mut out = None;
            self.transaction_free(c, |conn| {
                out = self.renew_job(conn, lease, ttl_us)?;
                Ok(())
            })?;
            return answer(out);
        };
        self.transaction(c, Begin::Write, |c| {
            let Some(us) = self.renew_job(&mut c.conn, lease, ttl_us)? else {
                return Ok(End::Rollback(Renewed::Stale));
            };
            // The guard's answer does not change the job's: a stale guard shows at completion.
            self.guard.renew(c, guard, ttl)?;
            Ok(End::Commit(answer(Some(us))?))
        })
    }

    /// Runs `body` in autocommit with the deadlock retries of [`QCtx::run`], for bodies that
    /// return store errors as well as diesel ones.
    fn transaction_free<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        mut body: impl FnMut(&mut C) -> Result<(), Fail>,
    ) -> Result<(), StoreError> {
        let mut failure = None;
        let ran = self.run(c, |conn| match body(conn) {
            Ok(()) => Ok(()),
            Err(Fail::Db(e)) => Err(e),
            Err(other) => {
                failure = Some(other);
                Ok(())
            }
        });
        match failure {
            Some(Fail::Store(e)) => Err(e),
            Some(Fail::Panic(p)) => std::panic::resume_unwind(p),
            Some(Fail::Db(e)) => Err(self.err(e)),
            None => ran,
        }
    }

    pub(crate) fn progress<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &QueueLease,
        progress: &Progress,
    ) -> Result<FenceCheck, StoreError> {
        let text = progress_text(progress)?;
        let id = lease.id.0;
        let f = fence(lease)?;
        let stmt = Stmt::new(
            &self.sql.progress,
            vec![Bind::Text(&text), Bind::Int(id), Bind::Int(f)],
        );
        let n = self.run(c, |conn| conn.exec(&stmt))?;
        Ok(if exactly_one(n, id)? {
            FenceCheck::Applied
        } else {
            FenceCheck::Stale
        })
    }
}

/// The jobs of a claim as [`Claimed`], each with its lease.
fn claimed(req: &ClaimRequest<'_>, jobs: Vec<(QueuedJob, Option<Acquired>)>) -> Vec<Claimed> {
    jobs.into_iter()
        .map(|(job, guard)| {
            let lease = QueueLease {
                id: job.id,
                fence: job.fence,
                attempt: job.attempts,
                owner: req.worker.to_owned(),
                expires_at: job.lease_expires_at.unwrap_or(job.updated_at),
            };
            Claimed { job, lease, guard }
        })
        .collect()
}

pub(super) fn progress_text(progress: &Progress) -> Result<String, StoreError> {
    let mut progress = progress.clone();
    if let Some(m) = &progress.message {
        progress.message = Some(clean(m).into_owned());
    }
    serde_json::to_string(&progress).map_err(StoreError::backend)
}
