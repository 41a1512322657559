//! A thread-safe in-memory [`LeaseStore`], for tests and single-process use.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::{
    Clock, FinalFailure, KeyDigest, Retention, SystemClock,
    history::{HistoryEntry, HistoryLog, HistoryStore, Subject},
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobRecord, JobState, Lease, LeaseStore, ListFilter, ListQuery, Renewed,
        StoreError, TxEffects,
    },
};

/// Keeps rows in a map behind one mutex; every primitive holds it for its whole duration, which
/// is what makes each one atomic. Time comes from an injectable [`Clock`].
///
/// Rows live as long as the store (or until [`LeaseStore::prune`] deletes them after their
/// retention): this is not a durable store. Use it in tests (with
/// `safejob_test_kit::ManualClock`) and for work that may be lost with the process.
///
/// ```
/// use std::sync::Arc;
/// use safejob_core::{MemoryStore, Runner};
///
/// let store = Arc::new(MemoryStore::new());
/// let runner = Runner::builder(store).worker_id("w1").build()?;
/// # Ok::<(), safejob_core::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    rows: Mutex<BTreeMap<KeyDigest, JobRecord>>,
    /// The keys' audit ledger: locked only while `rows` is held (rows first), so each entry is
    /// appended in the critical section of its transition.
    history: Mutex<HistoryLog>,
    clock: Arc<dyn Clock>,
}

/// The transaction handle the memory store passes to transactional effects. Its effects run
/// while the store's lock is held, so they must not call the same store.
#[derive(Debug, Default)]
pub struct MemoryTx {
    _private: (),
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A store on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            rows: Mutex::new(BTreeMap::new()),
            history: Mutex::new(HistoryLog::default()),
            clock,
        }
    }

    fn log(&self) -> MutexGuard<'_, HistoryLog> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the key's transition to the ledger; call with the rows' lock held.
    fn record(&self, before: Option<&JobRecord>, after: &JobRecord) {
        self.log().key(before, after);
    }

    fn rows(&self) -> MutexGuard<'_, BTreeMap<KeyDigest, JobRecord>> {
        // A panic while holding the lock cannot leave a row half-written: every primitive
        // computes first and writes last, so the map is consistent and usable.
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The row under `lease` if it is `state` and still carries the lease's fence.
    fn fenced<'m>(
        rows: &'m mut BTreeMap<KeyDigest, JobRecord>,
        lease: &Lease,
        state: JobState,
    ) -> Option<&'m mut JobRecord> {
        rows.get_mut(&lease.digest)
            .filter(|row| row.state == state && row.fence == lease.fence)
    }
}

fn expiry(now: DateTime<Utc>, ttl: Duration) -> Result<DateTime<Utc>, StoreError> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::backend(format!("lease ttl {ttl:?} is out of range")))
}

/// A terminal row's `retain_until`: now + the retention, or `None` (kept forever).
fn retain_until(
    now: DateTime<Utc>,
    retention: Retention,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    retention
        .duration()
        .map(|d| {
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| StoreError::backend(format!("retention {d:?} is out of range")))
        })
        .transpose()
}

fn lease_of(row: &JobRecord) -> Lease {
    Lease {
        digest: row.digest,
        fence: row.fence,
        attempt: row.attempts,
        owner: row.owner.clone().unwrap_or_default(),
        expires_at: row.lease_expires_at.unwrap_or(row.updated_at),
    }
}

impl LeaseStore for MemoryStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        Ok(self.clock.now())
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        let now = self.clock.now();
        let until = expiry(now, req.ttl)?;
        let mut rows = self.rows();
        match rows.entry(req.digest) {
            Entry::Vacant(slot) => {
                let row = slot.insert(JobRecord {
                    digest: req.digest,
                    fingerprint: req.fingerprint,
                    state: JobState::Running,
                    fence: 1,
                    attempts: 1,
                    owner: Some(req.owner.to_owned()),
                    lease_expires_at: Some(until),
                    result: None,
                    failure: None,
                    last_error: None,
                    effects: EffectsState::None,
                    created_at: now,
                    updated_at: now,
                    finalized_at: None,
                    retain_until: None,
                });
                self.record(None, row);
                Ok(Acquired::Granted(lease_of(row)))
            }
            Entry::Occupied(mut slot) => {
                let row = slot.get_mut();
                if let Some(answer) = Acquired::from_existing(row, req.fingerprint, now) {
                    return Ok(answer);
                }
                let before = row.clone();
                row.state = JobState::Running;
                row.fence += 1;
                row.attempts += 1;
                row.owner = Some(req.owner.to_owned());
                row.lease_expires_at = Some(until);
                row.updated_at = now;
                self.record(Some(&before), row);
                Ok(Acquired::Granted(lease_of(row)))
            }
        }
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        let now = self.clock.now();
        let until = expiry(now, ttl)?;
        let mut rows = self.rows();
        Ok(match Self::fenced(&mut rows, lease, JobState::Running) {
            Some(row) => {
                row.lease_expires_at = Some(until);
                row.updated_at = now;
                Renewed::Extended(until)
            }
            None => Renewed::Stale,
        })
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        let now = self.clock.now();
        let until = expiry(now, effects_ttl)?;
        let retain_until = retain_until(now, retention)?;
        let mut rows = self.rows();
        let Some(row) = Self::fenced(&mut rows, lease, JobState::Running) else {
            return Ok(Finalized::Stale);
        };
        // The hook runs before anything is written, so an abort leaves the row untouched:
        // the memory store's "rollback" is simply not writing.
        let effects = match hook {
            Some(hook) => match hook(&mut MemoryTx::default()) {
                Ok(()) => EffectsState::Done,
                Err(_) => return Ok(Finalized::EffectsAborted),
            },
            None => EffectsState::Pending,
        };
        let before = row.clone();
        row.state = JobState::Succeeded;
        row.result = result.cloned();
        row.effects = effects;
        row.lease_expires_at = Some(until);
        row.updated_at = now;
        row.finalized_at = Some(now);
        row.retain_until = retain_until;
        self.record(Some(&before), row);
        Ok(Finalized::Committed)
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        let now = self.clock.now();
        let retain_until = retain_until(now, retention)?;
        let mut rows = self.rows();
        Ok(match Self::fenced(&mut rows, lease, JobState::Running) {
            Some(row) => {
                let before = row.clone();
                row.state = JobState::Failed;
                row.failure = Some(failure.clone());
                row.lease_expires_at = None;
                row.updated_at = now;
                row.finalized_at = Some(now);
                row.retain_until = retain_until;
                self.record(Some(&before), row);
                FenceCheck::Applied
            }
            None => FenceCheck::Stale,
        })
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        Ok(match Self::fenced(&mut rows, lease, JobState::Running) {
            Some(row) => {
                let before = row.clone();
                row.state = JobState::Released;
                row.lease_expires_at = None;
                row.last_error = error.map(str::to_owned);
                row.updated_at = now;
                self.record(Some(&before), row);
                FenceCheck::Applied
            }
            None => FenceCheck::Stale,
        })
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        Ok(
            match Self::fenced(&mut rows, lease, JobState::Succeeded)
                .filter(|row| row.effects == EffectsState::Pending)
            {
                Some(row) => {
                    match outcome {
                        EffectsOutcome::Done => row.effects = EffectsState::Done,
                        EffectsOutcome::InDoubt { error } => {
                            row.effects = EffectsState::InDoubt;
                            row.last_error = Some(error.to_owned());
                        }
                    }
                    row.updated_at = now;
                    FenceCheck::Applied
                }
                None => FenceCheck::Stale,
            },
        )
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        let now = self.clock.now();
        let until = expiry(now, req.ttl)?;
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&req.digest) else {
            return Ok(EffectsClaim::Missing);
        };
        if row.fingerprint != req.fingerprint {
            return Ok(EffectsClaim::KeyConflict {
                stored: row.fingerprint,
                given: req.fingerprint,
            });
        }
        if !row.effects_in_doubt(now) {
            return Ok(EffectsClaim::NotInDoubt(row.clone()));
        }
        let before = row.clone();
        row.fence += 1;
        row.effects = EffectsState::Pending;
        row.owner = Some(req.owner.to_owned());
        row.lease_expires_at = Some(until);
        row.updated_at = now;
        self.record(Some(&before), row);
        Ok(EffectsClaim::Claimed(lease_of(row), row.clone()))
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.rows().get(digest).cloned())
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        let now = self.clock.now();
        let rows = self.rows();
        let start = match query.after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Unbounded,
        };
        Ok(rows
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, row)| row)
            .filter(|row| match query.filter {
                ListFilter::All => true,
                ListFilter::State(state) => row.state == state,
                ListFilter::EffectsInDoubt => row.effects_in_doubt(now),
                ListFilter::ExpiredLeases => row.state == JobState::Running && !row.lease_live(now),
            })
            .take(query.limit)
            .cloned()
            .collect())
    }

    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let due: Vec<KeyDigest> = rows
            .values()
            .filter(|row| row.prunable(now))
            .map(|row| row.digest)
            .take(limit)
            .collect();
        for digest in &due {
            rows.remove(digest);
        }
        // The pruned keys' history goes with them, under the same lock.
        self.log()
            .forget(&due.iter().copied().map(Subject::Key).collect::<Vec<_>>());
        Ok(due.len() as u64)
    }
}

impl HistoryStore for MemoryStore {
    /// The history of a key; nothing for jobs, batches and schedules (they live in a
    /// [`MemoryQueue`](crate::queue::MemoryQueue)).
    fn history(&self, of: &Subject) -> Result<Vec<HistoryEntry>, StoreError> {
        let _rows = self.rows();
        Ok(self.log().read(of))
    }

    fn set_ledger(&self, on: bool) -> Result<(), StoreError> {
        let _rows = self.rows();
        self.log().set_enabled(on);
        Ok(())
    }

    fn ledger_enabled(&self) -> Result<bool, StoreError> {
        Ok(self.log().enabled())
    }
}
