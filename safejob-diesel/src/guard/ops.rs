//! The `LeaseStore` primitives, written once over any [`DbConnection`].
//!
//! Each primitive is one statement on the common path: a fresh acquire tries its `INSERT`
//! first (no `SELECT` before it), and every fenced write is one conditional `UPDATE` whose
//! matched-row count must be exactly 0 (stale) or 1 (applied). Existing rows are judged by
//! `safejob_core::store::classify_existing`, so every backend answers exactly like the memory
//! store; a takeover or effects claim is then a CAS on the fence and state that were read, so a
//! row that changed in between is simply read again.

use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    time::Duration,
};

use chrono::{DateTime, Utc};
use diesel::{
    QueryResult,
    connection::{AnsiTransactionManager, TransactionManager},
    result::{DatabaseErrorKind, Error as DieselError},
};
use safejob_core::{
    FinalFailure, Fingerprint, KeyDigest, Retention,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobRecord, JobState, Lease, ListFilter, ListQuery, Renewed, StoreError,
        TxEffects,
    },
};
use serde_json::Value;

use super::sql::{GrantRow, Listing, MicrosRow, RawRow, Statements};
use crate::{
    backend::{Bind, DbConnection, Stmt, pool::PooledConn},
    error::{ErrorContext, is_connection_lost, is_retryable},
};

/// How many times a deadlock or lock-wait timeout is retried before it is reported.
pub(super) const MAX_RETRIES: u32 = 6;
/// How many times acquire / claim re-read a row that changed between read and CAS.
const MAX_ROUNDS: u32 = 64;

/// What every primitive needs besides its connection.
pub(crate) struct Ctx<'a> {
    pub(crate) sql: std::sync::Arc<Statements>,
    pub(crate) errors: &'a ErrorContext,
}

/// What a finalize does about the effects (see [`Ctx::finalize_succeeded`]).
pub(crate) enum FinalizeEffects<'h, 'a> {
    /// After-commit effects follow: effects `pending`, expiry now + the effects window.
    AfterCommit,
    /// The job has none: effects `done` in the same autocommit statement.
    None,
    /// The hook runs inside the finalize's transaction; effects `done` if it commits.
    Transactional(&'h mut TxEffects<'a>),
}

/// Runs `f`, retrying deadlocks and lock-wait timeouts with a short, growing backoff (they roll
/// the statement back entirely, so a retry is safe), and marking the connection broken when it
/// was lost. Inside a caller's transaction (the queue runs these primitives in its claim and
/// completion transactions) nothing is retried: a deadlock has rolled back the whole transaction
/// (MySQL goes on in autocommit, PostgreSQL refuses every statement), so only the transaction's
/// owner can start over.
pub(super) fn run<C: DbConnection, T>(
    c: &mut PooledConn<C>,
    mut f: impl FnMut(&mut C) -> QueryResult<T>,
) -> QueryResult<T> {
    let mut attempt = 0;
    loop {
        match f(&mut c.conn) {
            Err(e) if is_retryable(&e) && attempt < MAX_RETRIES && !in_transaction(&mut c.conn) => {
                tracing::debug!(error = %e, attempt, "safejob-diesel: retrying after a lock conflict");
                std::thread::sleep(backoff(attempt));
                attempt += 1;
            }
            Err(e) => {
                if is_connection_lost(&e) {
                    c.broken = true;
                }
                return Err(e);
            }
            ok => return ok,
        }
    }
}

/// Whether a transaction is open on `conn` (a broken transaction manager counts as open).
fn in_transaction<C: DbConnection>(conn: &mut C) -> bool {
    AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_or(true, |depth| depth.is_some())
}

/// 1, 2, 4 … ms plus up to 1 ms of jitter, so colliding workers do not collide again.
pub(super) fn backoff(attempt: u32) -> Duration {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1_000_000);
    Duration::from_millis(1 << attempt.min(6)) + Duration::from_nanos(u64::from(jitter))
}

pub(super) fn ttl_us(ttl: Duration) -> Result<i64, StoreError> {
    i64::try_from(ttl.as_micros())
        .ok()
        .filter(|us| *us <= 366 * 24 * 3600 * 1_000_000)
        .ok_or_else(|| StoreError::backend(format!("lease ttl {ttl:?} is out of range")))
}

/// A retention as the `{plus_or_null}` bind of a terminal write: µs, or NULL (kept forever).
pub(crate) fn retain_us(retention: Retention) -> Result<Option<i64>, StoreError> {
    retention
        .duration()
        .map(|d| {
            i64::try_from(d.as_micros())
                .map_err(|_| StoreError::backend(format!("retention {d:?} is out of range")))
        })
        .transpose()
}

fn instant(us: i64, digest: &[u8]) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(digest, format!("timestamp {us}")))
}

fn corrupt(digest: &[u8], detail: impl Into<String>) -> StoreError {
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    StoreError::CorruptRow {
        digest: hex,
        detail: detail.into(),
    }
}

/// Exactly one row, or none: anything else means the primary key is not what the store thinks.
fn one_or_none(n: usize, digest: &[u8]) -> Result<bool, StoreError> {
    match n {
        0 => Ok(false),
        1 => Ok(true),
        n => Err(corrupt(digest, format!("a fenced write matched {n} rows"))),
    }
}

/// A stored row as the core sees it, with the database's now from the same statement.
fn record(row: RawRow) -> Result<(JobRecord, DateTime<Utc>), StoreError> {
    let d = row.digest.as_slice();
    let digest: [u8; 32] = d
        .try_into()
        .map_err(|_| corrupt(d, format!("digest is {} bytes, not 32", d.len())))?;
    let fingerprint = match &row.fingerprint {
        None => None,
        Some(f) => Some(Fingerprint::from_bytes(f.as_slice().try_into().map_err(
            |_| corrupt(d, format!("fingerprint is {} bytes, not 32", f.len())),
        )?)),
    };
    let state: JobState = row.state.parse().map_err(|e| corrupt(d, format!("{e}")))?;
    let effects: EffectsState = row
        .effects
        .parse()
        .map_err(|e| corrupt(d, format!("{e}")))?;
    let fence = u64::try_from(row.fence).map_err(|_| corrupt(d, format!("fence {}", row.fence)))?;
    let attempts = u32::try_from(row.attempts)
        .map_err(|_| corrupt(d, format!("attempts {}", row.attempts)))?;
    let result = match &row.result {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| corrupt(d, format!("result is not JSON: {e}")))?,
        ),
    };
    let failure = match &row.failure {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<FinalFailure>(text)
                .map_err(|e| corrupt(d, format!("failure is not a FinalFailure: {e}")))?,
        ),
    };
    let opt_instant = |us: Option<i64>| us.map(|us| instant(us, d)).transpose();
    let record = JobRecord {
        digest: KeyDigest::from_bytes(digest),
        fingerprint,
        state,
        fence,
        attempts,
        owner: row.owner,
        lease_expires_at: opt_instant(row.expires_us)?,
        result,
        failure,
        last_error: row.last_error,
        effects,
        created_at: instant(row.created_us, d)?,
        updated_at: instant(row.updated_us, d)?,
        finalized_at: opt_instant(row.finalized_us)?,
        retain_until: opt_instant(row.retain_us)?,
    };
    Ok((record, instant(row.now_us, d)?))
}

pub(crate) fn lease(digest: KeyDigest, owner: &str, grant: &GrantRow) -> Result<Lease, StoreError> {
    let d = digest.as_bytes();
    Ok(Lease {
        digest,
        fence: u64::try_from(grant.fence).map_err(|_| corrupt(d, "negative fence"))?,
        attempt: u32::try_from(grant.attempts).map_err(|_| corrupt(d, "attempts out of range"))?,
        owner: owner.to_owned(),
        expires_at: instant(grant.expires_us, d)?,
    })
}

pub(super) fn fence(lease: &Lease) -> Result<i64, StoreError> {
    i64::try_from(lease.fence).map_err(|_| StoreError::backend("fence out of range"))
}

impl Ctx<'_> {
    fn err(&self, e: DieselError) -> StoreError {
        self.errors.store_error(e)
    }

    pub(crate) fn now<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let stmt = Stmt::new(&self.sql.now, vec![]);
        let rows = run(c, |conn| conn.load::<MicrosRow>(&stmt)).map_err(|e| self.err(e))?;
        let us = rows
            .first()
            .ok_or_else(|| StoreError::backend("SELECT of the database clock returned no row"))?
            .us;
        instant(us, &[])
    }

    fn select_row<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        digest: &[u8],
    ) -> Result<Option<(JobRecord, DateTime<Utc>)>, StoreError> {
        let stmt = Stmt::new(&self.sql.select_row, vec![Bind::Bytes(digest)]);
        let rows = run(c, |conn| conn.load::<RawRow>(&stmt)).map_err(|e| self.err(e))?;
        rows.into_iter().next().map(record).transpose()
    }

    /// The grant of a row just inserted or taken over, on backends without `UPDATE … RETURNING`.
    /// `None` if the fence moved on already (the lease was taken over in between).
    fn grant_of<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        digest: &[u8],
        fence: i64,
    ) -> Result<Option<GrantRow>, StoreError> {
        let stmt = Stmt::new(
            &self.sql.grant_of,
            vec![Bind::Bytes(digest), Bind::Int(fence)],
        );
        let rows = run(c, |conn| conn.load::<GrantRow>(&stmt)).map_err(|e| self.err(e))?;
        Ok(rows.into_iter().next())
    }

    /// A grant whose expiry could not be read back because the lease was already taken over:
    /// the lease is lost, and every fenced write with it will say so.
    fn lost_grant(&self, fence: i64, now: DateTime<Utc>) -> GrantRow {
        GrantRow {
            fence,
            attempts: 0,
            expires_us: now.timestamp_micros(),
        }
    }

    pub(crate) fn acquire<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &AcquireRequest<'_>,
    ) -> Result<Acquired, StoreError> {
        let digest = req.digest.as_bytes().as_slice();
        let fingerprint = req.fingerprint.as_ref().map(|f| f.as_bytes().as_slice());
        let ttl = ttl_us(req.ttl)?;
        for _ in 0..MAX_ROUNDS {
            // 1. Just try the insert: the common case (a fresh key) ends here, in one statement.
            let insert = Stmt::new(
                &self.sql.insert,
                vec![
                    Bind::Bytes(digest),
                    Bind::OptBytes(fingerprint),
                    Bind::Text(req.owner),
                    Bind::Int(ttl),
                ],
            );
            let inserted = if self.sql.returning {
                run(c, |conn| conn.load::<GrantRow>(&insert)).map(|rows| rows.into_iter().next())
            } else {
                match run(c, |conn| conn.exec(&insert)) {
                    Ok(n) if one_or_none(n, digest)? => match self.grant_of(c, digest, 1)? {
                        Some(grant) => Ok(Some(grant)),
                        None => Ok(Some(self.lost_grant(1, self.now(c)?))),
                    },
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            match inserted {
                Ok(Some(grant)) => {
                    return Ok(Acquired::Granted(lease(req.digest, req.owner, &grant)?));
                }
                Ok(None) => {}
                // MySQL / MariaDB (no ON CONFLICT): the key exists.
                Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {}
                Err(e) => return Err(self.err(e)),
            }

            // 2. The key exists: read it and let the core decide.
            let Some((row, now)) = self.select_row(c, digest)? else {
                continue; // deleted in between (an operator?): insert again
            };
            if let Some(answer) = Acquired::from_existing(&row, req.fingerprint, now) {
                return Ok(answer);
            }

            // 3. Take it over, only if it is still what we read (same fence, same state, lease
            //    still dead by the database clock).
            let row_fence = i64::try_from(row.fence).map_err(|_| corrupt(digest, "fence"))?;
            let takeover = Stmt::new(
                &self.sql.takeover,
                vec![
                    Bind::Text(req.owner),
                    Bind::Int(ttl),
                    Bind::Bytes(digest),
                    Bind::Int(row_fence),
                    Bind::Text(row.state.as_str()),
                ],
            );
            let granted = if self.sql.returning {
                run(c, |conn| conn.load::<GrantRow>(&takeover))
                    .map_err(|e| self.err(e))?
                    .into_iter()
                    .next()
            } else {
                let n = run(c, |conn| conn.exec(&takeover)).map_err(|e| self.err(e))?;
                if one_or_none(n, digest)? {
                    let new_fence = row_fence + 1;
                    Some(match self.grant_of(c, digest, new_fence)? {
                        Some(grant) => grant,
                        None => self.lost_grant(new_fence, now),
                    })
                } else {
                    None
                }
            };
            if let Some(grant) = granted {
                return Ok(Acquired::Granted(lease(req.digest, req.owner, &grant)?));
            }
            // Someone else changed the row first: read it again.
        }
        Err(StoreError::backend(
            "acquire: the row kept changing between read and takeover; try again",
        ))
    }

    pub(crate) fn renew<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        ttl: Duration,
    ) -> Result<Renewed, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        let fence = fence(lease)?;
        let stmt = Stmt::new(
            &self.sql.renew,
            vec![
                Bind::Int(ttl_us(ttl)?),
                Bind::Bytes(digest),
                Bind::Int(fence),
            ],
        );
        let expires_us = if self.sql.returning {
            let rows = run(c, |conn| conn.load::<MicrosRow>(&stmt)).map_err(|e| self.err(e))?;
            one_or_none(rows.len(), digest)?;
            rows.first().map(|r| r.us)
        } else {
            let n = run(c, |conn| conn.exec(&stmt)).map_err(|e| self.err(e))?;
            if !one_or_none(n, digest)? {
                return Ok(Renewed::Stale);
            }
            let read = Stmt::new(
                &self.sql.expiry_of,
                vec![Bind::Bytes(digest), Bind::Int(fence)],
            );
            let rows = run(c, |conn| conn.load::<MicrosRow>(&read)).map_err(|e| self.err(e))?;
            // Empty: taken over between the two statements; the lease is lost after all.
            rows.first().map(|r| r.us)
        };
        Ok(match expires_us {
            Some(us) => Renewed::Extended(instant(us, digest)?),
            None => Renewed::Stale,
        })
    }

    /// `running → succeeded` under the lease's fence, with the effects as `effects` says: left
    /// `pending` for after-commit effects, or `done` in the same autocommit statement (a job
    /// without effects), or `done` with the hook run inside the finalize's transaction. The
    /// row's `retain_until` is written by the same statement.
    pub(crate) fn finalize_succeeded<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        effects: FinalizeEffects<'_, '_>,
    ) -> Result<Finalized, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        let result = result
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::backend)?;
        let state = match effects {
            FinalizeEffects::AfterCommit => EffectsState::Pending,
            FinalizeEffects::None | FinalizeEffects::Transactional(_) => EffectsState::Done,
        };
        let stmt = Stmt::new(
            &self.sql.finalize_succeeded,
            vec![
                Bind::OptText(result.as_deref()),
                Bind::Text(state.as_str()),
                Bind::Int(ttl_us(effects_ttl)?),
                Bind::OptInt(retain_us(retention)?),
                Bind::Bytes(digest),
                Bind::Int(fence(lease)?),
            ],
        );
        let FinalizeEffects::Transactional(hook) = effects else {
            // One statement in autocommit. A connection lost while it ran leaves its outcome
            // unknown: that is an ambiguous commit, which the runner resolves by fence.
            let n = run(c, |conn| conn.exec(&stmt)).map_err(|e| self.errors.write_error(e))?;
            return Ok(if one_or_none(n, digest)? {
                Finalized::Committed
            } else {
                Finalized::Stale
            });
        };
        self.finalize_with_hook(c, &stmt, lease, hook)
    }

    /// The fenced state change, then the hook, then the confirm, in one transaction on one
    /// connection (see [`Ctx::confirm_succeeded`]).
    fn finalize_with_hook<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        stmt: &Stmt<'_>,
        lease: &Lease,
        hook: &mut TxEffects<'_>,
    ) -> Result<Finalized, StoreError> {
        let finalized = self.finalize_with_hook_in_tx(c, stmt, lease, hook);
        c.end_effects();
        finalized
    }

    fn finalize_with_hook_in_tx<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        stmt: &Stmt<'_>,
        lease: &Lease,
        hook: &mut TxEffects<'_>,
    ) -> Result<Finalized, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        // The transaction as a whole is retried on a deadlock before the hook runs; the hook's
        // own statements are its business (an error there aborts, and the runner retries).
        let begin_and_update = |conn: &mut C| -> QueryResult<usize> {
            conn.begin_effects()?;
            match conn.exec(stmt) {
                Ok(n) => Ok(n),
                Err(e) => {
                    let _ = AnsiTransactionManager::rollback_transaction(conn);
                    Err(e)
                }
            }
        };
        let n = run(c, begin_and_update).map_err(|e| self.err(e))?;
        if !one_or_none(n, digest).inspect_err(|_| c.rollback())? {
            c.rollback();
            return Ok(Finalized::Stale);
        }
        let ran = catch_unwind(AssertUnwindSafe(|| hook(&mut c.conn as &mut dyn Any)));
        match ran {
            Err(panic) => {
                // Roll back, and never pool this connection again whatever state it is in.
                c.rollback();
                c.broken = true;
                resume_unwind(panic);
            }
            Ok(Err(_aborted)) => {
                c.rollback();
                Ok(Finalized::EffectsAborted)
            }
            Ok(Ok(())) if !self.confirm_succeeded(&mut c.conn, lease) => {
                c.rollback();
                Ok(Finalized::EffectsAborted)
            }
            Ok(Ok(())) => match AnsiTransactionManager::commit_transaction(&mut c.conn) {
                Ok(()) => Ok(Finalized::Committed),
                Err(e) => {
                    // A failed COMMIT leaves the connection in an unknown state: discard it.
                    c.broken = true;
                    Err(self.errors.write_error(e))
                }
            },
        }
    }

    /// After a transactional effects hook returned `Ok`, before COMMIT: whether the transaction
    /// is still alive and still holds `running → succeeded` under `lease`'s fence.
    ///
    /// diesel's `Ok` from COMMIT proves neither. A hook may swallow a database error: PostgreSQL
    /// then has aborted the transaction and answers COMMIT with a silent ROLLBACK; MySQL and
    /// MariaDB roll the whole transaction back on a deadlock (the hook's later statements then
    /// run in a new transaction, see [`DbConnection::begin_effects`]); SQLite does so after
    /// `INSERT OR ROLLBACK` or `RAISE(ROLLBACK)`. One `SELECT` inside the transaction tells: it
    /// fails in an aborted PostgreSQL transaction, and finds no `succeeded` row under our fence
    /// where the finalize was rolled back. `false` means: roll back and report the effects
    /// aborted, so nothing is half-committed and the next attempt runs the job again.
    pub(crate) fn confirm_succeeded<C: DbConnection>(&self, conn: &mut C, lease: &Lease) -> bool {
        let Ok(fence) = fence(lease) else {
            return false;
        };
        let stmt = Stmt::new(
            &self.sql.confirm_succeeded,
            vec![Bind::Bytes(lease.digest.as_bytes()), Bind::Int(fence)],
        );
        match conn.load::<MicrosRow>(&stmt) {
            Ok(rows) if rows.len() == 1 => true,
            Ok(_) => {
                tracing::warn!(
                    key = %lease.digest,
                    fence = lease.fence,
                    "the finalize was rolled back under the effects hook (a swallowed error?): \
                     rolling back the hook's writes"
                );
                false
            }
            Err(error) => {
                tracing::warn!(
                    key = %lease.digest,
                    fence = lease.fence,
                    %error,
                    "the finalize transaction was aborted under the effects hook (a swallowed \
                     error?): rolling back"
                );
                false
            }
        }
    }

    fn fenced_write<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        stmt: &Stmt<'_>,
        digest: &[u8],
    ) -> Result<FenceCheck, StoreError> {
        let n = run(c, |conn| conn.exec(stmt)).map_err(|e| self.err(e))?;
        Ok(if one_or_none(n, digest)? {
            FenceCheck::Applied
        } else {
            FenceCheck::Stale
        })
    }

    pub(crate) fn finalize_failed<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        let failure = serde_json::to_string(failure).map_err(StoreError::backend)?;
        let stmt = Stmt::new(
            &self.sql.finalize_failed,
            vec![
                Bind::Text(&failure),
                Bind::OptInt(retain_us(retention)?),
                Bind::Bytes(digest),
                Bind::Int(fence(lease)?),
            ],
        );
        self.fenced_write(c, &stmt, digest)
    }

    pub(crate) fn release<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        error: Option<&str>,
    ) -> Result<FenceCheck, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        let stmt = Stmt::new(
            &self.sql.release,
            vec![
                Bind::OptText(error),
                Bind::Bytes(digest),
                Bind::Int(fence(lease)?),
            ],
        );
        self.fenced_write(c, &stmt, digest)
    }

    pub(crate) fn finish_effects<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let digest = lease.digest.as_bytes().as_slice();
        let (effects, error) = match outcome {
            EffectsOutcome::Done => (EffectsState::Done, None),
            EffectsOutcome::InDoubt { error } => (EffectsState::InDoubt, Some(error)),
        };
        let stmt = Stmt::new(
            &self.sql.finish_effects,
            vec![
                Bind::Text(effects.as_str()),
                Bind::OptText(error),
                Bind::Bytes(digest),
                Bind::Int(fence(lease)?),
            ],
        );
        self.fenced_write(c, &stmt, digest)
    }

    pub(crate) fn claim_effects<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        req: &AcquireRequest<'_>,
    ) -> Result<EffectsClaim, StoreError> {
        let digest = req.digest.as_bytes().as_slice();
        let ttl = ttl_us(req.ttl)?;
        for _ in 0..MAX_ROUNDS {
            let Some((row, now)) = self.select_row(c, digest)? else {
                return Ok(EffectsClaim::Missing);
            };
            if row.fingerprint != req.fingerprint {
                return Ok(EffectsClaim::KeyConflict {
                    stored: row.fingerprint,
                    given: req.fingerprint,
                });
            }
            if !row.effects_in_doubt(now) {
                return Ok(EffectsClaim::NotInDoubt(row));
            }
            let row_fence = i64::try_from(row.fence).map_err(|_| corrupt(digest, "fence"))?;
            let claim = Stmt::new(
                &self.sql.claim_effects,
                vec![
                    Bind::Text(req.owner),
                    Bind::Int(ttl),
                    Bind::Bytes(digest),
                    Bind::Int(row_fence),
                ],
            );
            let n = run(c, |conn| conn.exec(&claim)).map_err(|e| self.err(e))?;
            if one_or_none(n, digest)? {
                // Our lease carries the fence our UPDATE wrote, never one read afterwards: a
                // claim that committed in between holds the row now, and ours is lost.
                let claimed = row.fence + 1;
                let Some((row, _)) = self.select_row(c, digest)? else {
                    return Ok(EffectsClaim::Missing);
                };
                if row.fence != claimed {
                    return Ok(EffectsClaim::NotInDoubt(row));
                }
                let lease = Lease {
                    digest: req.digest,
                    fence: claimed,
                    attempt: row.attempts,
                    owner: req.owner.to_owned(),
                    expires_at: row.lease_expires_at.unwrap_or(now),
                };
                return Ok(EffectsClaim::Claimed(lease, row));
            }
        }
        Err(StoreError::backend(
            "claim_effects: the row kept changing between read and claim; try again",
        ))
    }

    pub(crate) fn get<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        digest: &KeyDigest,
    ) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.select_row(c, digest.as_bytes())?.map(|(row, _)| row))
    }

    pub(crate) fn list<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        query: &ListQuery,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let (listing, state) = match query.filter {
            ListFilter::All => (Listing::All, None),
            ListFilter::State(JobState::Succeeded) => (Listing::Succeeded, None),
            ListFilter::State(state) => (Listing::OtherState, Some(state.as_str())),
            ListFilter::EffectsInDoubt => (Listing::EffectsInDoubt, None),
            ListFilter::ExpiredLeases => (Listing::ExpiredLeases, None),
        };
        let after = query.after.as_ref().map(|d| d.as_bytes().as_slice());
        let sql = &self.sql.list[listing as usize][usize::from(after.is_some())];
        let mut binds = Vec::with_capacity(3);
        binds.extend(state.map(Bind::Text));
        binds.extend(after.map(Bind::Bytes));
        binds.push(Bind::Int(i64::try_from(query.limit).unwrap_or(i64::MAX)));
        let stmt = Stmt::new(sql, binds);
        let rows = run(c, |conn| conn.load::<RawRow>(&stmt)).map_err(|e| self.err(e))?;
        rows.into_iter()
            .map(|row| record(row).map(|(row, _)| row))
            .collect()
    }

    /// Deletes up to `limit` prunable rows in one statement: `JobRecord::prunable` in SQL
    /// ([`super::sql::PRUNABLE`]), by the database clock.
    pub(crate) fn prune<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        limit: usize,
    ) -> Result<u64, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let stmt = Stmt::new(
            &self.sql.prune,
            vec![Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX))],
        );
        let n = run(c, |conn| conn.exec(&stmt)).map_err(|e| self.err(e))?;
        Ok(n as u64)
    }
}
