//! The fenced completion of a claimed job, with its guard's half in the same transaction
//! (PostgreSQL, a success without a hook: one statement), and a group of completions in one
//! transaction ([`QCtx::complete_many`]). Lock order as in [`super::work`]: job rows first, then
//! guard rows.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind},
    time::Duration,
};

use safejob_core::{
    Retention,
    queue::{CompleteAs, Completed, Completion, ErrorKind, GroupMember, GuardFinish, QueueLease},
    store::{EffectsState, FenceCheck, Finalized, Lease, StoreError, TxEffects},
};

use super::{
    rows::{clean, micros},
    sql::{GuardedDoneRow, GuardedSucceeded},
    tx::{Begin, End, Fail, QCtx, is_retryable_store_error},
};
use crate::{
    backend::{Bind, DbConnection, Stmt, pool::PooledConn},
    error::{is_connection_lost, is_retryable},
    guard::ops::{FinalizeEffects, retain_us},
};

use super::work::{exactly_one, fence, progress_text};

impl QCtx<'_> {
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
        let progress = completion.progress.map(progress_text).transpose()?;
        let mut scratch = Vec::new();
        // PostgreSQL's one statement runs inside the transaction only when a hook follows it;
        // otherwise it runs first, in autocommit.
        let hooked = hook.is_some();
        let step = self.step(
            completion,
            progress.as_deref(),
            &mut scratch,
            hooked,
            hooked,
        )?;
        let Some(guard) = step.guard else {
            if let Some(batch) = step.settle {
                return self.complete_member(c, step.id, &step.job_update, batch);
            }
            return self.complete_unguarded(c, step.id, &step.job_update);
        };
        // Without a hook to run after it and outside a batch: the one statement in autocommit.
        if !hooked
            && step.settle.is_none()
            && let Some(sql) = &self.sql.guarded_succeeded
            && let Some(success) = self.success_of(completion, progress.as_deref(), guard, false)?
            && let Some(done) = self.complete_guarded_at_once(c, sql, &success)?
        {
            return Ok(done);
        }
        self.complete_in_transaction(c, &step, hook)
    }

    /// The statements of one completion, ready to run: the job's fenced update, the guard's half,
    /// the batch to settle, and on PostgreSQL (with `one_statement`) a guarded success as one
    /// statement run inside a transaction instead of the update and the guard's finalize
    /// (`hooked`: a transactional hook runs after it).
    fn step<'a>(
        &'a self,
        completion: &'a Completion<'_>,
        progress: Option<&'a str>,
        scratch: &'a mut Vec<String>,
        one_statement: bool,
        hooked: bool,
    ) -> Result<Step<'a>, StoreError> {
        // A batch member's end settles its batch in the same transaction.
        let settle = completion
            .batch
            .filter(|_| {
                matches!(
                    completion.outcome,
                    CompleteAs::Succeeded | CompleteAs::Dead { .. } | CompleteAs::Cancelled { .. }
                )
            })
            .map(|b| b.0);
        let success = match (completion.guard, settle) {
            (Some(guard), None) if one_statement => {
                self.success_of(completion, progress, guard, hooked)?
            }
            _ => None,
        };
        Ok(Step {
            id: completion.lease.id.0,
            settle,
            job_update: self.job_update(completion, progress, scratch)?,
            guard: completion.guard,
            success,
        })
    }

    /// PostgreSQL: the binds of a guarded success's one statement, for a completion that is one
    /// (`None` otherwise). Its guard's effects are `done` for a job without effects, or when
    /// `hooked` (transactional effects run after it in its transaction), else `pending`.
    fn success_of<'a>(
        &self,
        completion: &'a Completion<'_>,
        progress: Option<&'a str>,
        guard: GuardFinish<'a>,
        hooked: bool,
    ) -> Result<Option<GuardedSuccess<'a>>, StoreError> {
        let (
            Some(_),
            CompleteAs::Succeeded,
            GuardFinish::Succeeded {
                lease: g,
                result,
                effects_ttl,
                has_effects,
                retention,
            },
        ) = (&self.sql.guarded_succeeded, &completion.outcome, guard)
        else {
            return Ok(None);
        };
        let finalize = Finalize {
            result,
            effects_ttl,
            retention,
        };
        let effects = if has_effects && !hooked {
            EffectsState::Pending
        } else {
            EffectsState::Done
        };
        GuardedSuccess::new(progress, completion.lease, g, &finalize, effects).map(Some)
    }

    /// Completes a group in one write transaction, one commit, answering each member on its own
    /// ([`QueueStore::complete_many`](safejob_core::queue::QueueStore::complete_many)). A group
    /// of one is [`QCtx::complete`].
    ///
    /// A member that changes nothing (a stale fence: its first statement matched no row) needs
    /// no undoing. A member with a hook runs in its own savepoint, so a hook that aborts (or a
    /// confirm that fails) rolls back only its member. Any other member that would have to be
    /// undone (its guard went stale between the job's update and the guard's, or a statement
    /// failed) rolls the group back instead, and every member is then completed on its own, as
    /// without grouping: that is rare, whereas a savepoint around every member costs every
    /// member two more statements (round trips). A hooked member whose hook ran in the rolled-back group is not
    /// run again: it is answered with an error, and its job's lease expires.
    pub(crate) fn complete_many<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        group: &mut [GroupMember<'_, '_>],
    ) -> Vec<Result<Completed, StoreError>> {
        if let [member] = group {
            return vec![self.complete(c, &member.completion, member.hook.as_deref_mut())];
        }
        let n = group.len();
        // The completions and the hooks apart: the steps borrow the first, the transaction
        // calls the second.
        let (completions, mut hooks): (Vec<&Completion<'_>>, Vec<Option<&mut TxEffects<'_>>>) =
            group
                .iter_mut()
                .map(|GroupMember { completion, hook }| (&*completion, hook.as_deref_mut()))
                .unzip();
        let mut answers: Vec<Option<Result<Completed, StoreError>>> =
            (0..n).map(|_| None).collect();
        let mut progress = Vec::with_capacity(n);
        for (m, answer) in completions.iter().zip(&mut answers) {
            match m.progress.map(progress_text).transpose() {
                Ok(text) => progress.push(text),
                Err(e) => {
                    progress.push(None);
                    *answer = Some(Err(e));
                }
            }
        }
        let mut scratch: Vec<Vec<String>> = (0..n).map(|_| Vec::new()).collect();
        let mut steps = Vec::with_capacity(n);
        for ((((m, p), sc), answer), hook) in completions
            .iter()
            .zip(&progress)
            .zip(&mut scratch)
            .zip(&mut answers)
            .zip(&hooks)
        {
            if answer.is_some() {
                steps.push(None);
                continue;
            }
            match self.step(m, p.as_deref(), sc, true, hook.is_some()) {
                Ok(step) => steps.push(Some(step)),
                Err(e) => {
                    steps.push(None);
                    *answer = Some(Err(e));
                }
            }
        }
        let hooked = hooks.iter().any(Option::is_some);
        let mut hooks_ran = vec![false; n];
        let written =
            self.transaction(c, if hooked { Begin::Effects } else { Begin::Write }, |c| {
                if hooks_ran.iter().any(|ran| *ran) {
                    // Never run effects twice: a deadlock after a hook ran fails the group.
                    return Err(
                        StoreError::backend("a completion group failed after effects ran").into(),
                    );
                }
                let mut got: Vec<Option<Result<Completed, StoreError>>> =
                    (0..n).map(|_| None).collect();
                for (i, (step, hook)) in steps.iter().zip(hooks.iter_mut()).enumerate() {
                    let Some(step) = step else { continue };
                    let Some(hook) = hook.as_deref_mut() else {
                        match self.apply(c, step, None, &mut hooks_ran[i]) {
                            Ok(Applied::Commit(done) | Applied::Unchanged(done)) => {
                                got[i] = Some(Ok(done));
                            }
                            // Undoing this member needs a savepoint it does not have: roll the group
                            // back and complete its members one by one.
                            Ok(Applied::Undo(_)) => return Ok(End::Rollback(None)),
                            Err(Fail::Store(e)) if !is_retryable_store_error(&e) => {
                                return Ok(End::Rollback(None));
                            }
                            Err(Fail::Db(e)) if !is_retryable(&e) && !is_connection_lost(&e) => {
                                return Ok(End::Rollback(None));
                            }
                            // A lost connection, a deadlock: the whole group.
                            Err(other) => return Err(other),
                        }
                        continue;
                    };
                    c.conn.batch_execute(SAVEPOINT)?;
                    let answer = match self.apply(c, step, Some(hook), &mut hooks_ran[i]) {
                        Ok(Applied::Commit(done)) => {
                            c.conn.batch_execute(RELEASE)?;
                            Ok(done)
                        }
                        Ok(Applied::Undo(done) | Applied::Unchanged(done)) => {
                            c.conn.batch_execute(ROLLBACK_TO)?;
                            c.conn.batch_execute(RELEASE)?;
                            Ok(done)
                        }
                        // The member's own failure: undone alone.
                        Err(Fail::Store(e)) if !is_retryable_store_error(&e) => {
                            c.conn.batch_execute(ROLLBACK_TO)?;
                            c.conn.batch_execute(RELEASE)?;
                            Err(e)
                        }
                        Err(Fail::Db(e)) if !is_retryable(&e) && !is_connection_lost(&e) => {
                            c.conn.batch_execute(ROLLBACK_TO)?;
                            c.conn.batch_execute(RELEASE)?;
                            Err(self.err(e))
                        }
                        // A lost connection, a deadlock, a panic: the whole group.
                        Err(other) => return Err(other),
                    };
                    got[i] = Some(answer);
                }
                Ok(End::Commit(Some(got)))
            });
        match written {
            Ok(Some(got)) => {
                for (answer, g) in answers.iter_mut().zip(got) {
                    if answer.is_none() {
                        *answer = g;
                    }
                }
            }
            Ok(None) => {
                tracing::debug!(
                    members = n,
                    "safejob-diesel queue: a completion group needed undoing; completing its members one by one"
                );
                for (i, ((m, hook), answer)) in completions
                    .iter()
                    .zip(hooks.iter_mut())
                    .zip(&mut answers)
                    .enumerate()
                {
                    if answer.is_some() {
                        continue;
                    }
                    *answer = Some(if hooks_ran[i] {
                        Err(StoreError::backend(
                            "the completion's group was rolled back after its effects ran; its lease will expire",
                        ))
                    } else {
                        self.complete(c, m, hook.as_deref_mut())
                    });
                }
            }
            Err(error) => {
                let mut each = safejob_core::group::each_member(error, n).into_iter();
                for answer in &mut answers {
                    if answer.is_none() {
                        *answer = each.next().map(Err);
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|| Err(StoreError::backend("a group member was not answered")))
            })
            .collect()
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

    /// A guarded job in one transaction: [`QCtx::apply`] of its step, begun with
    /// [`Begin::Effects`] when a hook is given; retried as a whole after a deadlock, but never
    /// once the hook ran.
    fn complete_in_transaction<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        step: &Step<'_>,
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
            Ok(
                match self.apply(c, step, hook.as_deref_mut(), &mut hook_ran)? {
                    Applied::Commit(done) => End::Commit(done),
                    Applied::Undo(done) | Applied::Unchanged(done) => End::Rollback(done),
                },
            )
        })
    }

    /// One completion's statements inside an open transaction: the job's update (or,
    /// PostgreSQL, the one statement of a guarded success), then the guard's half, with the
    /// effects hook and the confirm when there is a hook, then a batch member's settle.
    fn apply<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        step: &Step<'_>,
        hook: Option<&mut TxEffects<'_>>,
        hook_ran: &mut bool,
    ) -> Result<Applied, Fail> {
        if let Some(success) = &step.success {
            let sql = self
                .sql
                .guarded_succeeded
                .as_ref()
                .map(|s| s.in_transaction.as_str())
                .ok_or_else(|| StoreError::backend("no one-statement guarded success here"))?;
            let rows: Vec<GuardedDoneRow> = c.conn.load(&success.stmt(sql))?;
            match success.answer(&rows)? {
                Completed::Applied => {}
                // The job's half applied alone (the guard was taken over under the statement).
                other if rows.first().is_some_and(|r| r.applied > 0) => {
                    return Ok(Applied::Undo(other));
                }
                other => return Ok(Applied::Unchanged(other)),
            }
        } else if !exactly_one(c.conn.exec(&step.job_update)?, step.id)? {
            return Ok(Applied::Unchanged(Completed::Stale));
        }
        if let Some(guard) = step.guard {
            match (guard, hook) {
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
                    if step.success.is_none() && !self.finalize_done(c, g, &finalize)? {
                        return Ok(Applied::Undo(Completed::GuardStale));
                    }
                    *hook_ran = true;
                    if let End::Rollback(done) = self.effects_then_confirm(c, g, hook)? {
                        return Ok(Applied::Undo(done));
                    }
                }
                // The one statement finalized the guard already.
                _ if step.success.is_some() => {}
                (guard, _) => {
                    if !self.finish_guard(c, guard)? {
                        return Ok(Applied::Undo(Completed::GuardStale));
                    }
                }
            }
        }
        if let Some(batch) = step.settle {
            self.settle(&mut c.conn, batch)?;
        }
        Ok(Applied::Commit(Completed::Applied))
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

/// A group member's savepoint (one at a time: each is released before the next is taken).
const SAVEPOINT: &str = "SAVEPOINT safejob_member";
const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT safejob_member";
const RELEASE: &str = "RELEASE SAVEPOINT safejob_member";

/// One completion's statements, ready to run in a transaction (see [`QCtx::step`]).
struct Step<'a> {
    id: i64,
    /// The batch a member's end settles.
    settle: Option<i64>,
    job_update: Stmt<'a>,
    guard: Option<GuardFinish<'a>>,
    /// PostgreSQL: the guarded success as one statement, instead of `job_update` and the guard's
    /// finalize.
    success: Option<GuardedSuccess<'a>>,
}

/// How one completion's statements ended inside a transaction ([`QCtx::apply`]).
enum Applied {
    /// Everything applied: commit.
    Commit(Completed),
    /// Not applied, after something was written: roll back what it wrote.
    Undo(Completed),
    /// Not applied, and nothing was written (its first statement matched no row).
    Unchanged(Completed),
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
