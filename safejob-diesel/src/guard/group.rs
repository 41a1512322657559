//! Group commit for the guard: many keys' acquires (or finalizes) in one transaction, one commit.
//!
//! Two halves. [`Ctx::acquire_many`] and [`Ctx::finalize_many`] write a group on one connection:
//! today's single-key statements, unchanged, inside one write transaction, the keys in digest
//! order (so two groups, in this process or another, lock their rows in the same order and
//! cannot deadlock on each other). [`GroupCommit`] is what a [`DieselStore`](crate::DieselStore)
//! with group commit on holds: the core's leader-follower
//! [`Coalescer`](safejob_core::group::Coalescer), one for acquires and one for finalizes, so
//! concurrent `Runner::run` calls sharing the store share their commits.
//!
//! What can go wrong, and what each key is answered then:
//!
//! * a statement fails (a corrupt row, a lost connection, a bad bind): the transaction is rolled
//!   back and every request of the group is written again alone, as without group commit, so
//!   one key's error is its own and never its neighbours';
//! * a deadlock or lock-wait timeout: the whole group is retried, as a single statement is;
//! * the COMMIT fails: whether it applied is unknown, so every key of the group gets
//!   [`StoreError::AmbiguousCommit`], which the runner settles per key by fence exactly as it
//!   settles a single finalize whose COMMIT was lost;
//! * the leading thread panics while writing: the group's other threads get
//!   `AmbiguousCommit` too (the coalescer's [`GroupError`](safejob_core::group::GroupError)), settled the same way.
//!
//! A group of one is written as today's single autocommit statement: on an idle store group
//! commit costs nothing.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    time::Duration,
};

use diesel::{
    connection::{AnsiTransactionManager, TransactionManager},
    result::Error as DieselError,
};
use safejob_core::{
    FinalFailure, Fingerprint, KeyDigest, Retention,
    group::{Coalescer, GroupStats},
    store::{AcquireRequest, Acquired, EffectsState, FenceCheck, FinishRequest, Lease, StoreError},
};
use serde_json::Value;

use super::{
    ops::{Ctx, FinalizeEffects, MAX_RETRIES, backoff, fence, lease, retain_us, run, ttl_us},
    sql::{DigestRow, GrantRow, GroupGrantRow},
};
use crate::{
    backend::{Bind, DbConnection, Stmt, pool::PooledConn},
    error::{is_connection_lost, is_retryable},
};

/// The default [`max_group`](crate::DieselStoreBuilder::max_group): 64 keys per commit.
pub const DEFAULT_MAX_GROUP: NonZeroUsize = match NonZeroUsize::new(64) {
    Some(n) => n,
    None => unreachable!(),
};

/// How much grouping a store's group commit did, from
/// [`DieselStore::group_stats`](crate::DieselStore::group_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// The acquires' groups.
    pub acquires: GroupStats,
    /// The finalizes' and releases' groups.
    pub finishes: GroupStats,
}

/// The COMMIT of a group failed: it may or may not have applied. The source of each key's
/// [`StoreError::AmbiguousCommit`].
#[derive(Debug, thiserror::Error)]
#[error("the COMMIT of a group of {size} writes failed, so whether it applied is unknown: {cause}")]
pub struct GroupCommitLost {
    /// Keys in the group.
    pub size: usize,
    /// The database's error, scrubbed of secrets.
    pub cause: String,
}

/// An acquire waiting in a coalescer: [`AcquireRequest`] with its borrows owned, so another
/// thread can write it.
pub(crate) struct OwnedAcquire {
    digest: KeyDigest,
    fingerprint: Option<Fingerprint>,
    owner: String,
    ttl: Duration,
}

impl OwnedAcquire {
    pub(crate) fn new(req: &AcquireRequest<'_>) -> Self {
        Self {
            digest: req.digest,
            fingerprint: req.fingerprint,
            owner: req.owner.to_owned(),
            ttl: req.ttl,
        }
    }

    fn request(&self) -> AcquireRequest<'_> {
        AcquireRequest {
            digest: self.digest,
            fingerprint: self.fingerprint,
            owner: &self.owner,
            ttl: self.ttl,
        }
    }
}

/// A finalize or release waiting in a coalescer: [`FinishRequest`] with its borrows owned.
pub(crate) enum OwnedFinish {
    Succeeded {
        lease: Lease,
        result: Option<Value>,
        effects_ttl: Duration,
        retention: Retention,
        effects_pending: bool,
    },
    Failed {
        lease: Lease,
        failure: FinalFailure,
        retention: Retention,
    },
    Release {
        lease: Lease,
        error: Option<String>,
    },
}

impl OwnedFinish {
    pub(crate) fn new(finish: &FinishRequest<'_>) -> Self {
        match *finish {
            FinishRequest::Succeeded {
                lease,
                result,
                effects_ttl,
                retention,
                effects_pending,
            } => Self::Succeeded {
                lease: lease.clone(),
                result: result.cloned(),
                effects_ttl,
                retention,
                effects_pending,
            },
            FinishRequest::Failed {
                lease,
                failure,
                retention,
            } => Self::Failed {
                lease: lease.clone(),
                failure: failure.clone(),
                retention,
            },
            FinishRequest::Release { lease, error } => Self::Release {
                lease: lease.clone(),
                error: error.map(ToOwned::to_owned),
            },
        }
    }

    fn request(&self) -> FinishRequest<'_> {
        match self {
            Self::Succeeded {
                lease,
                result,
                effects_ttl,
                retention,
                effects_pending,
            } => FinishRequest::Succeeded {
                lease,
                result: result.as_ref(),
                effects_ttl: *effects_ttl,
                retention: *retention,
                effects_pending: *effects_pending,
            },
            Self::Failed {
                lease,
                failure,
                retention,
            } => FinishRequest::Failed {
                lease,
                failure,
                retention: *retention,
            },
            Self::Release { lease, error } => FinishRequest::Release {
                lease,
                error: error.as_deref(),
            },
        }
    }
}

/// The coalescers of a store with group commit on.
pub(crate) struct GroupCommit {
    acquires: Coalescer<OwnedAcquire, Result<Acquired, StoreError>>,
    finishes: Coalescer<OwnedFinish, Result<FenceCheck, StoreError>>,
    /// Test aid: the next finalize group of two or more panics right after it was written.
    #[cfg(feature = "test-util")]
    pub(crate) crash_armed: std::sync::atomic::AtomicBool,
    /// Test aid: how many groups that arming crashed.
    #[cfg(feature = "test-util")]
    pub(crate) crashes: std::sync::atomic::AtomicU64,
}

impl GroupCommit {
    pub(crate) fn new(max_group: NonZeroUsize) -> Self {
        Self {
            acquires: Coalescer::new(max_group),
            finishes: Coalescer::new(max_group),
            #[cfg(feature = "test-util")]
            crash_armed: std::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "test-util")]
            crashes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            acquires: self.acquires.stats(),
            finishes: self.finishes.stats(),
        }
    }

    /// `req` written in the next group of acquires, by whichever thread leads it with `write`.
    pub(crate) fn acquire(
        &self,
        req: &AcquireRequest<'_>,
        write: impl Fn(&[AcquireRequest<'_>]) -> Vec<Result<Acquired, StoreError>>,
    ) -> Result<Acquired, StoreError> {
        self.acquires
            .submit(OwnedAcquire::new(req), |group| {
                let reqs: Vec<_> = group.iter().map(OwnedAcquire::request).collect();
                write(&reqs)
            })
            .unwrap_or_else(|e| Err(e.into()))
    }

    /// `finish` written in the next group of finalizes, by whichever thread leads it.
    pub(crate) fn finish(
        &self,
        finish: &FinishRequest<'_>,
        write: impl Fn(&[FinishRequest<'_>]) -> Vec<Result<FenceCheck, StoreError>>,
    ) -> Result<FenceCheck, StoreError> {
        self.finishes
            .submit(OwnedFinish::new(finish), |group| {
                let reqs: Vec<_> = group.iter().map(OwnedFinish::request).collect();
                let answers = write(&reqs);
                #[cfg(feature = "test-util")]
                if reqs.len() >= 2
                    && self
                        .crash_armed
                        .swap(false, std::sync::atomic::Ordering::SeqCst)
                {
                    self.crashes
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    panic!("safejob-diesel test aid: a group writer crashed after its commit");
                }
                answers
            })
            .unwrap_or_else(|e| Err(e.into()))
    }
}

/// How a group transaction ended.
enum Written<T> {
    /// Committed: every answer stands.
    Committed(Vec<T>),
    /// The COMMIT failed: nothing is known.
    Unknown(String),
    /// Rolled back before COMMIT: write the requests alone.
    RolledBack,
}

/// The positions of `digests` sorted by digest: the lock order every group follows.
fn digest_order<'a>(digests: impl Iterator<Item = &'a KeyDigest>) -> Vec<usize> {
    let mut order: Vec<(usize, &KeyDigest)> = digests.enumerate().collect();
    order.sort_by(|a, b| a.1.as_bytes().cmp(b.1.as_bytes()));
    order.into_iter().map(|(i, _)| i).collect()
}

/// Answers computed in `order` put back in the requests' order.
fn unsort<T>(order: &[usize], sorted: Vec<T>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(order.len()).collect();
    for (&i, answer) in order.iter().zip(sorted) {
        slots[i] = Some(answer);
    }
    slots.into_iter().flatten().collect()
}

/// A deadlock or lock-wait timeout under a store error: the group is worth retrying whole.
fn retryable(error: &StoreError) -> bool {
    match error {
        StoreError::Backend { source } => source
            .downcast_ref::<DieselError>()
            .is_some_and(is_retryable),
        _ => false,
    }
}

impl Ctx<'_> {
    /// One transaction of `body`'s statements, retried whole on a deadlock.
    fn in_group<C: DbConnection, T>(
        &self,
        c: &mut PooledConn<C>,
        mut body: impl FnMut(&mut PooledConn<C>) -> Result<Vec<T>, StoreError>,
    ) -> Written<T> {
        let mut attempt = 0;
        loop {
            if c.broken {
                return Written::RolledBack;
            }
            if let Err(error) = c.conn.begin_write() {
                if is_connection_lost(&error) {
                    c.broken = true;
                }
                tracing::debug!(%error, "safejob-diesel: a group could not begin; writing it key by key");
                return Written::RolledBack;
            }
            let error = match body(c) {
                Ok(answers) => {
                    return match AnsiTransactionManager::commit_transaction(&mut c.conn) {
                        Ok(()) => Written::Committed(answers),
                        Err(error) => {
                            // A failed COMMIT leaves the connection in an unknown state.
                            c.broken = true;
                            Written::Unknown(self.errors.secrets.scrub(&error).0)
                        }
                    };
                }
                Err(error) => error,
            };
            c.rollback();
            if retryable(&error) && attempt < MAX_RETRIES && !c.broken {
                tracing::debug!(%error, attempt, "safejob-diesel: retrying a group after a lock conflict");
                std::thread::sleep(backoff(attempt));
                attempt += 1;
                continue;
            }
            tracing::debug!(%error, "safejob-diesel: a group failed; writing it key by key");
            return Written::RolledBack;
        }
    }

    /// [`LeaseStore::acquire_many`](safejob_core::LeaseStore::acquire_many) on one connection:
    /// the group's acquires in one transaction, in digest order.
    pub(crate) fn acquire_many<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        reqs: &[AcquireRequest<'_>],
    ) -> Vec<Result<Acquired, StoreError>> {
        if reqs.len() < 2 {
            return reqs.iter().map(|req| self.acquire(c, req)).collect();
        }
        if self.sql.multi_row() {
            return self.acquire_many_in_one(c, reqs);
        }
        let order = digest_order(reqs.iter().map(|r| &r.digest));
        let written = self.in_group(c, |c| {
            order.iter().map(|&i| self.acquire(c, &reqs[i])).collect()
        });
        match written {
            Written::Committed(sorted) => unsort(&order, sorted).into_iter().map(Ok).collect(),
            Written::Unknown(cause) => lost_group(reqs.len(), &cause),
            Written::RolledBack => reqs.iter().map(|req| self.acquire(c, req)).collect(),
        }
    }

    /// [`LeaseStore::finalize_many`](safejob_core::LeaseStore::finalize_many) on one
    /// connection: the group's fenced writes in one transaction, in digest order.
    pub(crate) fn finalize_many<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        finishes: &[FinishRequest<'_>],
    ) -> Vec<Result<FenceCheck, StoreError>> {
        if finishes.len() < 2 {
            return finishes.iter().map(|f| self.finish_one(c, f)).collect();
        }
        if self.sql.multi_row()
            && let Some(answers) = self.succeed_many_in_one(c, finishes)
        {
            return answers;
        }
        let order = digest_order(finishes.iter().map(|f| &f.lease().digest));
        let written = self.in_group(c, |c| {
            order
                .iter()
                .map(|&i| self.finish_one(c, &finishes[i]))
                .collect()
        });
        match written {
            Written::Committed(sorted) => unsort(&order, sorted).into_iter().map(Ok).collect(),
            Written::Unknown(cause) => lost_group(finishes.len(), &cause),
            Written::RolledBack => finishes.iter().map(|f| self.finish_one(c, f)).collect(),
        }
    }

    /// PostgreSQL: the group's fresh keys inserted by one statement in autocommit (in digest
    /// order), and each key that exists (or appears twice) acquired alone after it, exactly as
    /// `acquire` does. A key the insert granted is answered as `acquire`'s own insert would be.
    fn acquire_many_in_one<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        reqs: &[AcquireRequest<'_>],
    ) -> Vec<Result<Acquired, StoreError>> {
        let mut seen = HashSet::new();
        let first: Vec<bool> = reqs.iter().map(|r| seen.insert(r.digest)).collect();
        let ttls: Result<Vec<i64>, StoreError> = reqs.iter().map(|r| ttl_us(r.ttl)).collect();
        let Ok(ttls) = ttls else {
            return reqs.iter().map(|req| self.acquire(c, req)).collect();
        };
        let mut binds = Vec::with_capacity(4 * reqs.len());
        let mut n = 0;
        for ((req, ttl), _) in reqs.iter().zip(&ttls).zip(&first).filter(|(_, f)| **f) {
            binds.push(Bind::Bytes(req.digest.as_bytes()));
            binds.push(Bind::OptBytes(
                req.fingerprint.as_ref().map(|f| f.as_bytes().as_slice()),
            ));
            binds.push(Bind::Text(req.owner));
            binds.push(Bind::Int(*ttl));
            n += 1;
        }
        let sql = self.sql.group_insert(n);
        let stmt = Stmt::new(&sql, binds);
        let grants = match run(c, |conn| conn.load::<GroupGrantRow>(&stmt)) {
            Ok(rows) => rows,
            // The insert may have committed: as for a single acquire, the outcome is unknown.
            Err(e) if is_connection_lost(&e) => {
                return lost_group(reqs.len(), &self.errors.secrets.scrub(&e).0);
            }
            Err(error) => {
                tracing::debug!(%error, "safejob-diesel: a group insert failed; acquiring key by key");
                return reqs.iter().map(|req| self.acquire(c, req)).collect();
            }
        };
        let mut granted: HashMap<Vec<u8>, GroupGrantRow> =
            grants.into_iter().map(|g| (g.digest.clone(), g)).collect();
        reqs.iter()
            .zip(first)
            .map(|(req, first)| {
                match first
                    .then(|| granted.remove(req.digest.as_bytes().as_slice()))
                    .flatten()
                {
                    Some(g) => {
                        let grant = GrantRow {
                            fence: g.fence,
                            attempts: g.attempts,
                            expires_us: g.expires_us,
                        };
                        lease(req.digest, req.owner, &grant).map(Acquired::Granted)
                    }
                    None => self.acquire(c, req),
                }
            })
            .collect()
    }

    /// PostgreSQL: a group made only of succeeded finalizes of distinct keys, as one
    /// `UPDATE … FROM (VALUES …)` in autocommit: each key `Applied` if the statement changed its
    /// row (its fence matched a running row), else `Stale`, exactly as the single-key CAS.
    /// `None` for any other group (written in one transaction instead), and when the statement
    /// fails without losing the connection.
    fn succeed_many_in_one<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        finishes: &[FinishRequest<'_>],
    ) -> Option<Vec<Result<FenceCheck, StoreError>>> {
        let mut seen = HashSet::new();
        let mut rows = Vec::with_capacity(finishes.len());
        for finish in finishes {
            let FinishRequest::Succeeded {
                lease,
                result,
                effects_ttl,
                retention,
                effects_pending,
            } = *finish
            else {
                return None;
            };
            if !seen.insert(lease.digest) {
                return None;
            }
            let result = result.map(serde_json::to_string).transpose().ok()?;
            let effects = if effects_pending {
                EffectsState::Pending
            } else {
                EffectsState::Done
            };
            let (fence, ttl, retain) = (
                fence(lease).ok()?,
                ttl_us(effects_ttl).ok()?,
                retain_us(retention).ok()?,
            );
            rows.push((lease.digest, fence, result, effects, ttl, retain));
        }
        let mut binds = Vec::with_capacity(6 * rows.len());
        for (digest, fence, result, effects, ttl, retain) in &rows {
            binds.extend([
                Bind::Bytes(digest.as_bytes()),
                Bind::Int(*fence),
                Bind::OptText(result.as_deref()),
                Bind::Text(effects.as_str()),
                Bind::Int(*ttl),
                Bind::OptInt(*retain),
            ]);
        }
        let sql = self.sql.group_succeed(rows.len());
        let stmt = Stmt::new(&sql, binds);
        let changed: HashSet<Vec<u8>> = match run(c, |conn| conn.load::<DigestRow>(&stmt)) {
            Ok(changed) => changed.into_iter().map(|r| r.digest).collect(),
            // The statement may have committed: every key is settled by fence.
            Err(e) if is_connection_lost(&e) => {
                return Some(lost_group(rows.len(), &self.errors.secrets.scrub(&e).0));
            }
            Err(error) => {
                tracing::debug!(%error, "safejob-diesel: a group finalize failed; writing it in a transaction");
                return None;
            }
        };
        Some(
            rows.iter()
                .map(|(digest, ..)| {
                    Ok(if changed.contains(digest.as_bytes().as_slice()) {
                        FenceCheck::Applied
                    } else {
                        FenceCheck::Stale
                    })
                })
                .collect(),
        )
    }

    /// One end written with the single-key primitive it stands for.
    pub(crate) fn finish_one<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        finish: &FinishRequest<'_>,
    ) -> Result<FenceCheck, StoreError> {
        match *finish {
            FinishRequest::Succeeded {
                lease,
                result,
                effects_ttl,
                retention,
                effects_pending,
            } => {
                let effects = if effects_pending {
                    FinalizeEffects::AfterCommit
                } else {
                    FinalizeEffects::None
                };
                self.finalize_succeeded(c, lease, result, effects_ttl, retention, effects)
                    .and_then(|f| f.fence_check())
            }
            FinishRequest::Failed {
                lease,
                failure,
                retention,
            } => self.finalize_failed(c, lease, failure, retention),
            FinishRequest::Release { lease, error } => self.release(c, lease, error),
        }
    }
}

/// Every key of a group whose COMMIT was lost: ambiguous, each on its own.
fn lost_group<T>(size: usize, cause: &str) -> Vec<Result<T, StoreError>> {
    let lost = StoreError::AmbiguousCommit {
        source: Box::new(GroupCommitLost {
            size,
            cause: cause.to_owned(),
        }),
    };
    safejob_core::group::each_member(lost, size)
        .into_iter()
        .map(Err)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers come back in the requests' order whatever order they were written in. Catches an
    /// answer handed to the wrong key's thread.
    #[test]
    fn answers_return_to_their_requests() {
        let digests: Vec<KeyDigest> = ["c", "a", "b", "a"]
            .iter()
            .map(|k| KeyDigest::of(k))
            .collect();
        let order = digest_order(digests.iter());
        let sorted: Vec<&KeyDigest> = order.iter().map(|&i| &digests[i]).collect();
        assert!(
            sorted
                .windows(2)
                .all(|w| w[0].as_bytes() <= w[1].as_bytes())
        );
        let answers = unsort(&order, order.iter().map(|&i| i * 10).collect());
        assert_eq!(answers, vec![0, 10, 20, 30]);
    }
}
