//! The storage port: a few primitives, each with its atomicity contract.
//!
//! A store keeps one row per key digest (the `safe_jobs` row). Everything else — validation,
//! fingerprints, the pipeline, policies, tracing — lives in the core, once. A store must:
//!
//! * judge lease expiry by its own clock ([`LeaseStore::now`]), never by a worker's;
//! * make every fenced write a compare-and-set on the row's current fence, changing nothing and
//!   answering "stale" when the fence does not match;
//! * pass `safejob_test_kit`'s `LeaseStore` conformance suite.
//!
//! The timeline of one key, with worker A paused past its lease:
//!
//! ```text
//! t0  A: acquire            -> row running, fence 1, expires t0+ttl
//! t1  A: (paused, GC, network partition ...)
//! t2  clock passes t0+ttl     (the lease is expired; the row is unchanged)
//! t3  B: acquire            -> takeover: fence 2, attempts 2, expires t3+ttl
//! t4  A: finalize(fence 1)  -> Stale: nothing changes, A reports LeaseLost
//! t5  B: finalize(fence 2)  -> Committed: running -> succeeded, once
//! ```

use std::{any::Any, fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{FinalFailure, Fingerprint, KeyDigest, Retention};

/// The state of a key's row. Closed: a store that reads any other text reports a corrupt row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    /// A worker holds the lease. Entered by `acquire` (fresh insert or takeover); left by
    /// `finalize_*` or `release` from the holder, or by a takeover once the lease has expired.
    Running,
    /// The last holder gave the lease back after a retryable error; the next `acquire` takes it at
    /// once with fence + 1.
    Released,
    /// Terminal. Entered only by `finalize_succeeded` carrying the current fence.
    Succeeded,
    /// Terminal. Entered only by `finalize_failed` carrying the current fence.
    Failed,
}

impl JobState {
    /// The text stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Released => "released",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// Whether no further transition is allowed.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored text that is not one of the closed set of values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {column} value {found:?}")]
pub struct UnknownValue {
    /// The column that held it.
    pub column: &'static str,
    /// The text found (truncated to 40 characters).
    pub found: String,
}

impl FromStr for JobState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Self::Running,
            "released" => Self::Released,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            other => {
                return Err(UnknownValue {
                    column: "state",
                    found: other.chars().take(40).collect(),
                });
            }
        })
    }
}

/// Progress of a succeeded key's `on_succeeded_once`, tracked apart from the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EffectsState {
    /// Not succeeded (yet), so no effects are due.
    None,
    /// Finalized; the winning worker is running the effects until the row's lease expiry.
    /// Past that expiry a pending row counts as in doubt (its worker died).
    Pending,
    /// The effects returned (or committed with the finalize, in transactional mode).
    Done,
    /// The effects failed or their worker died: they may or may not have happened. Visible to
    /// operators, never re-run automatically; recovered by a deliberate call.
    InDoubt,
}

impl EffectsState {
    /// The text stored in the `effects` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Pending => "pending",
            Self::Done => "done",
            Self::InDoubt => "in_doubt",
        }
    }
}

impl FromStr for EffectsState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" => Self::None,
            "pending" => Self::Pending,
            "done" => Self::Done,
            "in_doubt" => Self::InDoubt,
            other => {
                return Err(UnknownValue {
                    column: "effects",
                    found: other.chars().take(40).collect(),
                });
            }
        })
    }
}

/// One key's row, as operators and replays see it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The key's SHA-256 (the row identity). Raw keys are never stored.
    pub digest: KeyDigest,
    /// Fingerprint of the parameters the key was first used with.
    pub fingerprint: Option<Fingerprint>,
    /// Current state.
    pub state: JobState,
    /// Fence token: bumped by every grant (and by an effects recovery claim).
    pub fence: u64,
    /// How many times `perform` was granted a lease.
    pub attempts: u32,
    /// Worker id of the last holder.
    pub owner: Option<String>,
    /// When the current lease (or the effects window of a succeeded row) ends, by the store clock.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The stored result of a succeeded key.
    pub result: Option<Value>,
    /// The stored failure of a failed key.
    pub failure: Option<FinalFailure>,
    /// The last retryable error message (from a release).
    pub last_error: Option<String>,
    /// Progress of the effects.
    pub effects: EffectsState,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
    /// When the row reached a terminal state.
    pub finalized_at: Option<DateTime<Utc>>,
    /// From when [`LeaseStore::prune`] may delete the row, by the store clock: the finalize's now
    /// plus the run's [`Retention`], written with the terminal state. `None`: kept forever (the
    /// default, and every row that is not terminal).
    pub retain_until: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// Whether the effects of this row are in doubt at `now`: explicitly marked so, or still
    /// pending after the effects window ended (their worker died or hung).
    pub fn effects_in_doubt(&self, now: DateTime<Utc>) -> bool {
        self.state == JobState::Succeeded
            && match self.effects {
                EffectsState::InDoubt => true,
                EffectsState::Pending => self.lease_expires_at.is_none_or(|t| t <= now),
                EffectsState::None | EffectsState::Done => false,
            }
    }

    /// Whether a lease on this row is live at `now` (held by someone, not yet expired).
    pub fn lease_live(&self, now: DateTime<Utc>) -> bool {
        self.state == JobState::Running && self.lease_expires_at.is_some_and(|t| t > now)
    }

    /// Whether [`LeaseStore::prune`] may delete this row at `now`: its retention has passed
    /// (`retain_until <= now`) and its outcome is settled — `failed`, or `succeeded` with its
    /// effects `done`. Never a row without a retention, never a `running` or `released` row,
    /// never one whose effects are pending or in doubt: operators need those.
    pub fn prunable(&self, now: DateTime<Utc>) -> bool {
        self.retain_until.is_some_and(|t| t <= now)
            && match self.state {
                JobState::Failed => true,
                JobState::Succeeded => self.effects == EffectsState::Done,
                JobState::Running | JobState::Released => false,
            }
    }
}

/// What `acquire` and `claim_effects` are asked for.
#[derive(Debug, Clone)]
pub struct AcquireRequest<'a> {
    /// Row identity.
    pub digest: KeyDigest,
    /// Fingerprint to insert, or to compare with the stored one.
    pub fingerprint: Option<Fingerprint>,
    /// The worker asking.
    pub owner: &'a str,
    /// Lease length; the store adds it to its own clock.
    pub ttl: Duration,
}

/// A granted lease: proof of ownership for fenced writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Row identity.
    pub digest: KeyDigest,
    /// The fence token this lease carries.
    pub fence: u64,
    /// Attempt number (1 for the first grant).
    pub attempt: u32,
    /// The holder.
    pub owner: String,
    /// When the lease ends, by the store clock.
    pub expires_at: DateTime<Utc>,
}

/// The answer of [`LeaseStore::acquire`].
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// The caller holds the lease.
    Granted(Lease),
    /// The key already succeeded; the row is returned for its result.
    AlreadySucceeded(JobRecord),
    /// The key already failed terminally; the row is returned for its failure.
    AlreadyFailed(JobRecord),
    /// Another worker holds a live lease.
    Busy {
        /// The holder.
        owner: Option<String>,
        /// When its lease ends, by the store clock.
        until: DateTime<Utc>,
    },
    /// The key exists with a different fingerprint.
    KeyConflict {
        /// Fingerprint stored with the key.
        stored: Option<Fingerprint>,
        /// Fingerprint given now.
        given: Option<Fingerprint>,
    },
}

/// How an existing row answers an acquire, before any write. Stores call [`classify_existing`]
/// so that every backend decides exactly alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Same key, different fingerprint.
    Conflict,
    /// Terminal success: replay.
    Succeeded,
    /// Terminal failure: replay.
    Failed,
    /// Live lease held by someone.
    Busy,
    /// Released, or running with an expired lease: take it over with fence + 1.
    TakeOver,
}

/// Decides how an existing row answers an acquire with `fingerprint` at store time `now`.
/// The fingerprint is checked first, so no path — replay included — skips it.
pub fn classify_existing(
    record: &JobRecord,
    fingerprint: Option<Fingerprint>,
    now: DateTime<Utc>,
) -> Existing {
    if record.fingerprint != fingerprint {
        return Existing::Conflict;
    }
    match record.state {
        JobState::Succeeded => Existing::Succeeded,
        JobState::Failed => Existing::Failed,
        JobState::Running if record.lease_live(now) => Existing::Busy,
        JobState::Running | JobState::Released => Existing::TakeOver,
    }
}

impl Acquired {
    /// The answer for an existing row that is not taken over (anything but
    /// [`Existing::TakeOver`]); `None` for a takeover, which the store must perform itself.
    pub fn from_existing(
        record: &JobRecord,
        fingerprint: Option<Fingerprint>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        Some(match classify_existing(record, fingerprint, now) {
            Existing::Conflict => Self::KeyConflict {
                stored: record.fingerprint,
                given: fingerprint,
            },
            Existing::Succeeded => Self::AlreadySucceeded(record.clone()),
            Existing::Failed => Self::AlreadyFailed(record.clone()),
            Existing::Busy => Self::Busy {
                owner: record.owner.clone(),
                until: record.lease_expires_at.unwrap_or(now),
            },
            Existing::TakeOver => return None,
        })
    }
}

/// The answer of a fenced write that either applies or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceCheck {
    /// The row carried our fence (and the expected state) and was changed.
    Applied,
    /// The row did not carry our fence or state: nothing changed.
    Stale,
}

/// The answer of [`LeaseStore::renew`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// The lease now ends at this instant (store clock).
    Extended(DateTime<Utc>),
    /// Our fence was superseded or the row is no longer running: nothing changed.
    Stale,
}

/// The answer of [`LeaseStore::finalize_succeeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finalized {
    /// The row went `running → succeeded` under our fence, and that committed.
    Committed,
    /// The fence did not match or the row was not running: nothing changed.
    Stale,
    /// Transactional effects returned an error: the whole finalize was rolled back and the row
    /// is still `running` under our fence.
    EffectsAborted,
}

/// Returned by a transactional effects hook to make the store roll the finalize back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("transactional effects failed; the finalize is rolled back")]
pub struct EffectsAborted;

/// Effects run inside the finalize transaction. The store passes its transaction handle as
/// `&mut dyn Any` (the memory store: [`crate::memory::MemoryTx`]; the diesel stores: their
/// connection), which the job reaches through
/// [`EffectsContext::transaction`](crate::EffectsContext::transaction).
pub type TxEffects<'a> = dyn FnMut(&mut dyn Any) -> Result<(), EffectsAborted> + 'a;

/// How the effects of a finalized key ended, for [`LeaseStore::finish_effects`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EffectsOutcome<'a> {
    /// `on_succeeded_once` returned `Ok`.
    Done,
    /// It failed (or panicked): the effects are in doubt.
    InDoubt {
        /// What went wrong.
        error: &'a str,
    },
}

/// The answer of [`LeaseStore::claim_effects`].
#[derive(Debug, Clone, PartialEq)]
pub enum EffectsClaim {
    /// The caller now owns the effects of a succeeded key whose effects were in doubt.
    Claimed(Lease, JobRecord),
    /// The key's effects are not in doubt (not succeeded, pending within their window, or done).
    NotInDoubt(JobRecord),
    /// No row for the key.
    Missing,
    /// The key exists with a different fingerprint.
    KeyConflict {
        /// Fingerprint stored with the key.
        stored: Option<Fingerprint>,
        /// Fingerprint given now.
        given: Option<Fingerprint>,
    },
}

/// One fenced end of a lease, for [`LeaseStore::finalize_many`]: each variant is one of the
/// single-key primitives, with exactly its semantics.
#[derive(Debug, Clone, Copy)]
pub enum FinishRequest<'a> {
    /// [`LeaseStore::finalize_succeeded`] with no hook when `effects_pending` (after-commit
    /// effects follow: effects `pending`, expiry now + `effects_ttl`), else
    /// [`LeaseStore::finalize_succeeded_without_effects`] (effects `done`). A transactional hook
    /// never joins a group: it runs in its own finalize transaction.
    Succeeded {
        /// The lease whose fence the row must carry.
        lease: &'a Lease,
        /// The result to store.
        result: Option<&'a Value>,
        /// The effects window.
        effects_ttl: Duration,
        /// How long the terminal row is kept.
        retention: Retention,
        /// Whether after-commit effects follow.
        effects_pending: bool,
    },
    /// [`LeaseStore::finalize_failed`].
    Failed {
        /// The lease whose fence the row must carry.
        lease: &'a Lease,
        /// The failure to store.
        failure: &'a FinalFailure,
        /// How long the terminal row is kept.
        retention: Retention,
    },
    /// [`LeaseStore::release`].
    Release {
        /// The lease whose fence the row must carry.
        lease: &'a Lease,
        /// The last error to record.
        error: Option<&'a str>,
    },
}

impl FinishRequest<'_> {
    /// The lease this end is for.
    pub fn lease(&self) -> &Lease {
        match self {
            Self::Succeeded { lease, .. }
            | Self::Failed { lease, .. }
            | Self::Release { lease, .. } => lease,
        }
    }

    /// Writes this end alone with the single-key primitive it stands for: `Applied` for a
    /// finalize that committed (or a release that applied), `Stale` for a fence that no longer
    /// matched. The default of [`LeaseStore::finalize_many`], and a group's fallback.
    pub fn write_alone<S: LeaseStore + ?Sized>(&self, store: &S) -> Result<FenceCheck, StoreError> {
        match *self {
            Self::Succeeded {
                lease,
                result,
                effects_ttl,
                retention,
                effects_pending,
            } => {
                let finalized = if effects_pending {
                    store.finalize_succeeded(lease, result, effects_ttl, retention, None)
                } else {
                    store.finalize_succeeded_without_effects(lease, result, effects_ttl, retention)
                };
                finalized.and_then(Finalized::fence_check)
            }
            Self::Failed {
                lease,
                failure,
                retention,
            } => store.finalize_failed(lease, failure, retention),
            Self::Release { lease, error } => store.release(lease, error),
        }
    }
}

impl Finalized {
    /// A finalize without a hook as a [`FenceCheck`]: `Committed` is `Applied`, `Stale` is
    /// `Stale`. `EffectsAborted` (only a hook can abort) is a store error.
    pub fn fence_check(self) -> Result<FenceCheck, StoreError> {
        match self {
            Self::Committed => Ok(FenceCheck::Applied),
            Self::Stale => Ok(FenceCheck::Stale),
            Self::EffectsAborted => Err(StoreError::backend(
                "the store aborted a finalize that ran no effects hook",
            )),
        }
    }
}

/// Which rows an operator listing returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFilter {
    /// Every row.
    All,
    /// Rows in one state.
    State(JobState),
    /// Succeeded rows whose effects are in doubt (see [`JobRecord::effects_in_doubt`]).
    EffectsInDoubt,
    /// Running rows whose lease has expired: work a dead or paused worker left behind.
    ExpiredLeases,
}

/// An operator listing: rows matching `filter`, ordered by digest, after the cursor `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// Which rows.
    pub filter: ListFilter,
    /// Return rows whose digest sorts after this one (for paging).
    pub after: Option<KeyDigest>,
    /// At most this many rows.
    pub limit: usize,
}

impl ListQuery {
    /// The first `limit` rows matching `filter`.
    pub fn new(filter: ListFilter, limit: usize) -> Self {
        Self {
            filter,
            after: None,
            limit,
        }
    }
}

/// A store failed to do what was asked. Says what went wrong, never with a password or raw key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A table of the store (`safe_jobs`, or the outbox's and queue's tables) does not exist.
    #[error("a safejob table is missing; run migrations: {hint}")]
    MissingTable {
        /// How to run them for this store.
        hint: String,
    },
    /// A row holds data the store cannot interpret. It is reported, never overwritten.
    #[error("corrupt stored row {digest}: {detail}")]
    CorruptRow {
        /// Which row: a key's digest prefix, or a table and id.
        digest: String,
        /// What is wrong.
        detail: String,
    },
    /// The database could not be reached.
    #[error("database unreachable at {target}: {source}")]
    Unreachable {
        /// Host and database, never credentials.
        target: String,
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No connection became free in time.
    #[error("connection pool exhausted: no connection free after {waited:?}")]
    PoolExhausted {
        /// How long the caller waited.
        waited: Duration,
    },
    /// The connection failed while a commit was in flight: it may or may not have applied.
    #[error("commit outcome unknown: the connection failed during COMMIT")]
    AmbiguousCommit {
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other backend error.
    #[error("store backend error: {source}")]
    Backend {
        /// Underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend {
            source: source.into(),
        }
    }
}

/// The storage port. Implemented by [`crate::MemoryStore`] and by `safejob_diesel::DieselStore`.
///
/// Every method is atomic as a whole: no other primitive on the same key observes a half-done
/// call. "Store clock" means the store's own notion of now (the database's, for SQL stores).
pub trait LeaseStore: Send + Sync {
    /// The store clock's current time.
    fn now(&self) -> Result<DateTime<Utc>, StoreError>;

    /// Takes the lease on `req.digest`, atomically:
    ///
    /// * no row: insert it `running`, fence 1, attempts 1, expiry now + ttl → `Granted`;
    /// * a row whose fingerprint differs from `req.fingerprint` (checked first, on every path)
    ///   → `KeyConflict`, nothing changed;
    /// * `succeeded` / `failed` → `AlreadySucceeded` / `AlreadyFailed`, nothing changed;
    /// * `running` with a live lease → `Busy`, nothing changed;
    /// * `released`, or `running` with an expired lease → takeover: fence + 1, attempts + 1,
    ///   owner and expiry replaced → `Granted`.
    ///
    /// Of N concurrent calls on one key that find it free, exactly one is granted.
    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError>;

    /// Takes the leases of a group of keys: one answer per request, in the requests' order,
    /// each exactly what [`acquire`](LeaseStore::acquire) would answer for it (granted, busy,
    /// replayed success or failure, key conflict, or its own error). A key twice in one group
    /// is answered as two callers in sequence would be: the second finds the first's lease
    /// (`Busy`). The default calls `acquire` once per request; a SQL store writes the group in
    /// one transaction (one commit for k keys).
    fn acquire_many(&self, reqs: &[AcquireRequest<'_>]) -> Vec<Result<Acquired, StoreError>> {
        reqs.iter().map(|req| self.acquire(req)).collect()
    }

    /// Ends a group of leases: one answer per request, in the requests' order, each exactly what
    /// the single-key primitive it stands for would answer ([`FinishRequest::write_alone`]):
    /// `Applied` (committed), `Stale` (nothing changed), or its own error. An error that leaves
    /// the outcome unknown (`AmbiguousCommit`) is settled per key, as for a single finalize.
    /// The default writes each alone; a SQL store writes the group in one transaction.
    fn finalize_many(&self, finishes: &[FinishRequest<'_>]) -> Vec<Result<FenceCheck, StoreError>> {
        finishes.iter().map(|f| f.write_alone(self)).collect()
    }

    /// Extends the lease to now + ttl, only if the row is `running` with `lease.fence`.
    /// An expired lease that nobody took over yet may still be renewed: the fence, not the
    /// clock, decides ownership.
    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError>;

    /// Compare-and-set `running → succeeded` where the fence is `lease.fence`, storing `result`,
    /// `finalized_at` and `retain_until` (now + `retention`; `None` for [`Retention::Forever`]).
    /// With no hook, effects become `pending` and the row's expiry becomes now + `effects_ttl`
    /// (the effects window). With a hook, the hook runs inside the same transaction after the
    /// state change; `Ok` commits with effects `done`; `Err` rolls back everything
    /// (`EffectsAborted`). A stale fence changes nothing and runs no hook.
    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError>;

    /// Compare-and-set `running → succeeded` for a job that has no effects
    /// ([`SafeJob::has_effects`](crate::SafeJob::has_effects) is `false`): the row is finalized
    /// with effects `done` in one atomic step, with the same fence check, as
    /// [`finalize_succeeded`](LeaseStore::finalize_succeeded) with a hook that does nothing.
    /// That is the default implementation; a store may do it more cheaply (the SQL stores send
    /// one `UPDATE` in autocommit, no transaction). Never returns `EffectsAborted`.
    fn finalize_succeeded_without_effects(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
    ) -> Result<Finalized, StoreError> {
        let mut nothing = |_: &mut dyn Any| Ok(());
        self.finalize_succeeded(lease, result, effects_ttl, retention, Some(&mut nothing))
    }

    /// Compare-and-set `running → failed` where the fence is `lease.fence`, storing `failure`,
    /// `finalized_at` and `retain_until` (now + `retention`; `None` for [`Retention::Forever`]).
    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError>;

    /// Compare-and-set `running → released` where the fence is `lease.fence`, recording `error`
    /// as the last error. The next acquire takes the key at once.
    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError>;

    /// Records how the effects ended, only where the row is `succeeded` with `lease.fence` and
    /// effects `pending`.
    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError>;

    /// A deliberate recovery: where the row is `succeeded` with effects in doubt (marked so, or
    /// pending past the effects window) and the fingerprint matches, bump the fence, set effects
    /// `pending`, owner and expiry now + ttl, and return the new lease. Two concurrent claims:
    /// exactly one wins.
    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError>;

    /// The row for `digest`, if any.
    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError>;

    /// Rows for operators, ordered by digest.
    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError>;

    /// Deletes up to `limit` rows that [`JobRecord::prunable`] says may go at the store clock's
    /// now: retention passed, and `failed` or `succeeded` with effects `done`. Never a row
    /// without a retention, a `running` or `released` row, or a row whose effects are pending or
    /// in doubt. Returns how many rows it deleted. The check and the deletion are one atomic
    /// step (one `DELETE … WHERE` on the SQL stores); call it again while it returns `limit`.
    ///
    /// A pruned key is unknown to the store: its next acquire inserts a fresh row (fence 1) and
    /// the job runs again. See [`Retention`] for that trade-off.
    fn prune(&self, limit: usize) -> Result<u64, StoreError>;
}
