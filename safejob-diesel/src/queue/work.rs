//! What workers do: claim (with the guard's acquire in the same transaction; PostgreSQL: fresh
//! keys in the claim's one statement, keys that exist right after it), renew, progress, and the
//! fenced completion (with the guard's finalize in the same transaction; PostgreSQL, a success
//! without a hook: one statement).
//!
//! Lock order, everywhere: job rows first, then guard rows (a claim's guard acquires sorted by
//! digest), so two transactions of the queue never wait on each other in a cycle.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use safejob_core::{
    Retention,
    queue::{
        ClaimRequest, Claimed, CompleteAs, Completed, Completion, ErrorKind, GuardFinish, Progress,
        QueueLease, QueuedJob,
    },
    store::{
        AcquireRequest, Acquired, EffectsState, FenceCheck, Finalized, Lease, Renewed, StoreError,
        TxEffects,
    },
};

use super::{
    rows::{clean, instant, job, micros},
    sql::{
        ClaimSql, ClaimedRow, GuardedDoneRow, GuardedSucceeded, IdRow, JobRow, QueueSql, padded,
    },
    tx::{Begin, End, Fail, QCtx},
};
use crate::{
    backend::{Bind, DbConnection, Dialect, Stmt, pool::PooledConn},
    guard::{
        ops::{FinalizeEffects, lease, retain_us},
        sql::{GrantRow, MicrosRow},
    },
};

/// The most jobs one MySQL claim takes.
const MAX_MYSQL_CLAIM: usize = 16_384;

fn fence(lease: &QueueLease) -> Result<i64, StoreError> {
    i64::try_from(lease.fence).map_err(|_| StoreError::backend("fence out of range"))
}

fn exactly_one(n: usize, id: i64) -> Result<bool, StoreError> {
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

    /// Completes a claimed job as `completion` says, with its guard's half in the same
    /// transaction. Picks the path: no guard ([`QCtx::complete_unguarded`], or for a batch
    /// member's end [`QCtx::complete_member`]); PostgreSQL's guarded
    /// success in one statement ([`QCtx::complete_guarded_at_once`], unless a transactional hook
    /// must run after it); everything else in one transaction ([`QCtx::complete_in_transaction`]).
    pub(crate) fn complete<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        completion: &Completion<'_>,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        let lease = completion.lease;
        let progress = completion.progress.map(progress_text).transpose()?;
        let mut scratch = Vec::new();
        let job_update = self.job_update(completion, progress.as_deref(), &mut scratch)?;
        // A batch member's end settles its batch in the same transaction.
        let settle = completion.batch.filter(|_| {
            matches!(
                completion.outcome,
                CompleteAs::Succeeded | CompleteAs::Dead { .. } | CompleteAs::Cancelled { .. }
            )
        });
        let Some(guard) = completion.guard else {
            if let Some(batch) = settle {
                return self.complete_member(c, lease.id.0, &job_update, batch.0);
            }
            return self.complete_unguarded(c, lease.id.0, &job_update);
        };

        // PostgreSQL: a guarded success is one statement, in autocommit (no hook, or no effects)
        // or inside the transaction, before the hook (transactional effects).
        let mut in_transaction = None;
        if let (
            Some(sql),
            CompleteAs::Succeeded,
            GuardFinish::Succeeded {
                lease: g,
                result,
                effects_ttl,
                has_effects,
                retention,
            },
        ) = (&self.sql.guarded_succeeded, &completion.outcome, guard)
            && settle.is_none()
        {
            let progress = progress.as_deref();
            let finalize = Finalize {
                result,
                effects_ttl,
                retention,
            };
            if has_effects && hook.is_some() {
                let success =
                    GuardedSuccess::new(progress, lease, g, &finalize, EffectsState::Done)?;
                in_transaction = Some((sql.in_transaction.as_str(), success));
            } else {
                let effects = if has_effects {
                    EffectsState::Pending
                } else {
                    EffectsState::Done
                };
                let success = GuardedSuccess::new(progress, lease, g, &finalize, effects)?;
                if let Some(done) = self.complete_guarded_at_once(c, sql, &success)? {
                    return Ok(done);
                }
            }
        }
        let settle = settle.map(|b| b.0);
        self.complete_in_transaction(
            c,
            (lease.id.0, settle),
            &job_update,
            guard,
            in_transaction,
            hook,
        )
    }

    /// The job's fenced update for `completion` (binds: the outcome's, then id, fence). Text
    /// binds are stored without NUL (PostgreSQL refuses it in text): `scratch` holds the cleaned
    /// copies.
    fn job_update<'a>(
        &'a self,
        completion: &'a Completion<'_>,
        progress: Option<&'a str>,
        scratch: &'a mut Vec<String>,
    ) -> Result<Stmt<'a>, StoreError> {
        let lease = completion.lease;
        let attempt = i64::from(lease.attempt);
        let p = Bind::OptText(progress);
        let (text, binds): (&str, Vec<Bind<'_>>) = match &completion.outcome {
            CompleteAs::Succeeded => (&self.sql.succeeded, vec![p]),
            CompleteAs::Retry { delay, error } => (
                &self.sql.retry,
                vec![
                    p,
                    Bind::Int(micros(*delay)?),
                    Bind::Int(attempt),
                    Bind::Text(error.kind.as_str()),
                    Bind::Text(&error.message),
                ],
            ),
            CompleteAs::Snooze { delay, error: None } => {
                let d = Bind::Int(micros(*delay)?);
                (&self.sql.snooze, vec![p, d, d])
            }
            CompleteAs::Snooze {
                delay,
                error: Some(error),
            } => {
                let d = Bind::Int(micros(*delay)?);
                let kind = Bind::Text(error.kind.as_str());
                let message = Bind::Text(&error.message);
                let binds = vec![p, Bind::Int(attempt), kind, message, d, d];
                (&self.sql.snooze_error, binds)
            }
            CompleteAs::Dead { error } => {
                let (kind, message) = (error.kind.as_str(), error.message.as_str());
                (
                    &self.sql.finish,
                    finish_binds(p, "dead", attempt, kind, message),
                )
            }
            CompleteAs::Cancelled { reason } => {
                let kind = ErrorKind::Cancelled.as_str();
                (
                    &self.sql.finish,
                    finish_binds(p, "cancelled", attempt, kind, reason),
                )
            }
        };
        let mut binds = without_nul(binds, scratch);
        binds.extend([Bind::Int(lease.id.0), Bind::Int(fence(lease)?)]);
        Ok(Stmt::new(text, binds))
    }

    /// No guard: the job's update alone, one statement in autocommit. A connection lost while it
    /// ran leaves its outcome unknown, which is an ambiguous commit.
    fn complete_unguarded<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: i64,
        job_update: &Stmt<'_>,
    ) -> Result<Completed, StoreError> {
        let n = match c.conn.exec(job_update) {
            Ok(n) => n,
            Err(e) if crate::error::is_retryable(&e) => {
                self.run(c, |conn| conn.exec(job_update))?
            }
            Err(e) => {
                if crate::error::is_connection_lost(&e) {
                    c.broken = true;
                    return Err(self.guard.errors.write_error(e));
                }
                return Err(self.err(e));
            }
        };
        Ok(if exactly_one(n, id)? {
            Completed::Applied
        } else {
            Completed::Stale
        })
    }

    /// A guarded job in one transaction: the job's update (or, PostgreSQL with transactional
    /// effects, `in_transaction`: the job's update and the guard's finalize in one statement),
    /// then the guard's half, with the effects hook and the confirm when there is a hook. Begun
    /// with [`Begin::Effects`] when a hook is given; retried as a whole after a deadlock, but
    /// never once the hook ran. A batch member's end (the batch id beside the job's) settles
    /// the batch before the commit.
    fn complete_in_transaction<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        (id, settle): (i64, Option<i64>),
        job_update: &Stmt<'_>,
        guard: GuardFinish<'_>,
        in_transaction: Option<(&str, GuardedSuccess<'_>)>,
        mut hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Completed, StoreError> {
        let begin = if hook.is_some() {
            Begin::Effects
        } else {
            Begin::Write
        };
        let mut hook_ran = false;
        self.transaction(c, begin, |c| {
            if hook_ran {
                // Never run the effects twice: a failure after them is reported, not retried.
                return Err(StoreError::backend("completion failed after its effects ran").into());
            }
            if let Some((sql, success)) = &in_transaction {
                let rows: Vec<GuardedDoneRow> = c.conn.load(&success.stmt(sql))?;
                match success.answer(&rows)? {
                    Completed::Applied => {}
                    other => return Ok(End::Rollback(other)),
                }
            } else if !exactly_one(c.conn.exec(job_update)?, id)? {
                return Ok(End::Rollback(Completed::Stale));
            }
            let applied = match (guard, hook.as_deref_mut()) {
                (
                    GuardFinish::Succeeded {
                        lease: g,
                        result,
                        effects_ttl,
                        has_effects: true,
                        retention,
                    },
                    Some(hook),
                ) => {
                    let finalize = Finalize {
                        result,
                        effects_ttl,
                        retention,
                    };
                    if in_transaction.is_none() && !self.finalize_done(c, g, &finalize)? {
                        return Ok(End::Rollback(Completed::GuardStale));
                    }
                    hook_ran = true;
                    let end = self.effects_then_confirm(c, g, hook)?;
                    if let (End::Commit(Completed::Applied), Some(batch)) = (&end, settle) {
                        self.settle(&mut c.conn, batch)?;
                    }
                    return Ok(end);
                }
                (guard, _) => self.finish_guard(c, guard)?,
            };
            if !applied {
                return Ok(End::Rollback(Completed::GuardStale));
            }
            if let Some(batch) = settle {
                self.settle(&mut c.conn, batch)?;
            }
            Ok(End::Commit(Completed::Applied))
        })
    }

    /// An unguarded batch member's end: the job's update and its batch's settle in one write
    /// transaction.
    fn complete_member<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        id: i64,
        job_update: &Stmt<'_>,
        batch: i64,
    ) -> Result<Completed, StoreError> {
        self.transaction(c, Begin::Write, |c| {
            if !exactly_one(c.conn.exec(job_update)?, id)? {
                return Ok(End::Rollback(Completed::Stale));
            }
            self.settle(&mut c.conn, batch)?;
            Ok(End::Commit(Completed::Applied))
        })
    }

    /// Runs the transactional effects hook on this transaction's connection, then confirms that
    /// the transaction is alive and still holds the guard's `succeeded` (a hook that swallowed
    /// an error may have lost it): commit only then.
    fn effects_then_confirm<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        guard: &Lease,
        hook: &mut TxEffects<'_>,
    ) -> Result<End<Completed>, Fail> {
        let ran = catch_unwind(AssertUnwindSafe(|| hook(&mut c.conn as &mut dyn Any)));
        match ran {
            Err(panic) => Err(Fail::Panic(panic)),
            Ok(Err(_aborted)) => Ok(End::Rollback(Completed::EffectsAborted)),
            // The job's update and the guard's finalize share this transaction: the guard's
            // `succeeded` still standing proves both.
            Ok(Ok(())) if !self.guard.confirm_succeeded(&mut c.conn, guard) => {
                Ok(End::Rollback(Completed::EffectsAborted))
            }
            Ok(Ok(())) => Ok(End::Commit(Completed::Applied)),
        }
    }

    /// The guard's half when no effects run in this transaction: whether it applied.
    fn finish_guard<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        guard: GuardFinish<'_>,
    ) -> Result<bool, Fail> {
        Ok(match guard {
            GuardFinish::Succeeded {
                lease: g,
                result,
                effects_ttl,
                has_effects: false,
                retention,
            } => {
                let finalize = Finalize {
                    result,
                    effects_ttl,
                    retention,
                };
                self.finalize_done(c, g, &finalize)?
            }
            GuardFinish::Succeeded {
                lease: g,
                result,
                effects_ttl,
                has_effects: true,
                retention,
            } => {
                let effects = FinalizeEffects::AfterCommit;
                self.guard
                    .finalize_succeeded(c, g, result, effects_ttl, retention, effects)?
                    == Finalized::Committed
            }
            GuardFinish::Failed {
                lease: g,
                failure,
                retention,
            } => self.guard.finalize_failed(c, g, failure, retention)? == FenceCheck::Applied,
            GuardFinish::Release { lease: g, error } => {
                self.guard.release(c, g, error)? == FenceCheck::Applied
            }
        })
    }

    /// PostgreSQL: a guarded job's `succeeded` and its guard's finalize in one statement in
    /// autocommit ([`GuardedSucceeded::autocommit`]). `None` when the statement failed without
    /// applying anything (a guard taken over under it makes it fail on purpose): the caller's
    /// transaction then decides.
    fn complete_guarded_at_once<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        sql: &GuardedSucceeded,
        success: &GuardedSuccess<'_>,
    ) -> Result<Option<Completed>, StoreError> {
        let rows: Vec<GuardedDoneRow> = match c.conn.load(&success.stmt(&sql.autocommit)) {
            Ok(rows) => rows,
            Err(e) if crate::error::is_connection_lost(&e) => {
                // Its outcome is unknown: an ambiguous commit.
                c.broken = true;
                return Err(self.guard.errors.write_error(e));
            }
            Err(e) => {
                tracing::debug!(error = %e, job = success.id, "safejob-diesel queue: the one-statement guarded completion did not apply; completing in a transaction");
                return Ok(None);
            }
        };
        success.answer(&rows).map(Some)
    }

    /// The guard's `running → succeeded` with effects `done`, by the store's own statement (the
    /// effects then run in this transaction): whether it applied.
    fn finalize_done<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        finalize: &Finalize<'_>,
    ) -> Result<bool, Fail> {
        let result = finalize
            .result
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::backend)?;
        let fence = i64::try_from(lease.fence).map_err(|_| StoreError::backend("fence"))?;
        let stmt = Stmt::new(
            &self.guard.sql.finalize_succeeded,
            vec![
                Bind::OptText(result.as_deref()),
                Bind::Text(EffectsState::Done.as_str()),
                Bind::Int(micros(finalize.effects_ttl)?),
                Bind::OptInt(retain_us(finalize.retention)?),
                Bind::Bytes(lease.digest.as_bytes()),
                Bind::Int(fence),
            ],
        );
        match c.conn.exec(&stmt)? {
            0 => Ok(false),
            1 => Ok(true),
            n => Err(StoreError::backend(format!(
                "the guard's finalize matched {n} safe_jobs rows"
            ))
            .into()),
        }
    }
}

/// What a guard's `succeeded` stores besides its effects state, from [`GuardFinish::Succeeded`].
struct Finalize<'a> {
    result: Option<&'a serde_json::Value>,
    effects_ttl: Duration,
    retention: Retention,
}

/// The binds of a guarded success on PostgreSQL ([`GuardedSucceeded`]), and what its row means.
struct GuardedSuccess<'a> {
    progress: Option<&'a str>,
    id: i64,
    fence: i64,
    digest: &'a [u8],
    guard_fence: i64,
    result: Option<String>,
    effects: EffectsState,
    ttl_us: i64,
    retain_us: Option<i64>,
}

impl<'a> GuardedSuccess<'a> {
    fn new(
        progress: Option<&'a str>,
        lease: &QueueLease,
        guard: &'a Lease,
        finalize: &Finalize<'_>,
        effects: EffectsState,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            progress,
            id: lease.id.0,
            fence: fence(lease)?,
            digest: guard.digest.as_bytes().as_slice(),
            guard_fence: i64::try_from(guard.fence)
                .map_err(|_| StoreError::backend("fence out of range"))?,
            result: finalize
                .result
                .map(serde_json::to_string)
                .transpose()
                .map_err(StoreError::backend)?,
            effects,
            ttl_us: micros(finalize.effects_ttl)?,
            retain_us: retain_us(finalize.retention)?,
        })
    }

    fn stmt<'s>(&'s self, sql: &'s str) -> Stmt<'s> {
        Stmt::new(
            sql,
            vec![
                Bind::OptText(self.progress),
                Bind::Int(self.id),
                Bind::Int(self.fence),
                Bind::Bytes(self.digest),
                Bind::Int(self.guard_fence),
                Bind::OptText(self.result.as_deref()),
                Bind::Text(self.effects.as_str()),
                Bind::Int(self.ttl_us),
                Bind::OptInt(self.retain_us),
                Bind::Bytes(self.digest),
                Bind::Int(self.guard_fence),
                Bind::Int(self.id),
                Bind::Int(self.fence),
            ],
        )
    }

    /// Applied when both halves applied; the job's half alone (only inside a transaction, which
    /// the caller then rolls back) is a stale guard; neither is a stale job or a stale guard.
    fn answer(&self, rows: &[GuardedDoneRow]) -> Result<Completed, StoreError> {
        let Some(row) = rows.first() else {
            return Err(StoreError::backend(
                "the guarded completion returned no row",
            ));
        };
        Ok(match (row.applied, row.guard_applied, row.job_live) {
            (1, 1, _) => Completed::Applied,
            (1, 0, _) | (0, _, 1) => Completed::GuardStale,
            (0, _, 0) => Completed::Stale,
            (j, g, _) => {
                return Err(super::rows::corrupt(
                    self.id,
                    format!("a guarded completion matched {j} job and {g} guard rows"),
                ));
            }
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

/// The binds of a dead or cancelled job before its id and fence: progress, state, attempt, kind,
/// message.
fn finish_binds<'a>(
    progress: Bind<'a>,
    state: &'a str,
    attempt: i64,
    kind: &'a str,
    message: &'a str,
) -> Vec<Bind<'a>> {
    vec![
        progress,
        Bind::Text(state),
        Bind::Int(attempt),
        Bind::Text(kind),
        Bind::Text(message),
    ]
}

/// `binds` with every text holding a NUL replaced by its cleaned copy, kept in `scratch`.
fn without_nul<'a>(mut binds: Vec<Bind<'a>>, scratch: &'a mut Vec<String>) -> Vec<Bind<'a>> {
    scratch.extend(binds.iter().filter_map(|b| match b {
        Bind::Text(t) if t.contains('\0') => Some(clean(t).into_owned()),
        _ => None,
    }));
    let mut cleaned = scratch.iter();
    for b in &mut binds {
        if let Bind::Text(t) = b
            && t.contains('\0')
            && let Some(c) = cleaned.next()
        {
            *b = Bind::Text(c);
        }
    }
    binds
}

fn progress_text(progress: &Progress) -> Result<String, StoreError> {
    let mut progress = progress.clone();
    if let Some(m) = &progress.message {
        progress.message = Some(clean(m).into_owned());
    }
    serde_json::to_string(&progress).map_err(StoreError::backend)
}
