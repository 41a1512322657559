//! The conformance suite fails stores that break the contract, naming the case and the rule.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::Retention;
use safejob_core::{
    FinalFailure, JobRecord, KeyDigest, LeaseStore,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized,
        FinishRequest, Lease, ListFilter, ListQuery, Renewed, StoreError, TxEffects,
    },
};
use safejob_test_kit::{MemoryHarness, StoreHarness, conformance};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Bug {
    /// Renew ignores the fence (extends whatever is there).
    RenewIgnoresFence,
    /// The replay of a finished key skips the fingerprint check (the "fast path" bug).
    ReplaySkipsFingerprint,
    /// Acquire grants a held key too.
    GrantsHeldKeys,
    /// In-doubt effects are never listed.
    HidesInDoubt,
    /// A takeover does not count the attempt.
    ForgetsAttempts,
    /// A finalize without effects leaves them pending, like an after-commit finalize.
    LeavesNoEffectsPending,
    /// A failed finalize keeps its row forever, whatever retention it was given.
    FailedKeptForever,
    /// Prune deletes nothing (a stub that answers 0).
    PrunesNothing,
    /// `acquire_many` hands its answers back in another order than the requests'.
    GroupAnswersOutOfOrder,
    /// `finalize_many` answers a stale fence as applied.
    GroupCallsStaleApplied,
}

struct Buggy {
    inner: Arc<dyn LeaseStore>,
    bug: Bug,
}

impl LeaseStore for Buggy {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        if self.bug == Bug::ReplaySkipsFingerprint
            && let Some(row) = self.inner.get(&req.digest)?
        {
            match row.state {
                safejob_core::JobState::Succeeded => return Ok(Acquired::AlreadySucceeded(row)),
                safejob_core::JobState::Failed => return Ok(Acquired::AlreadyFailed(row)),
                _ => {}
            }
        }
        match self.inner.acquire(req)? {
            Acquired::Busy { until, .. } if self.bug == Bug::GrantsHeldKeys => {
                Ok(Acquired::Granted(Lease {
                    digest: req.digest,
                    fence: 1,
                    attempt: 1,
                    owner: req.owner.to_owned(),
                    expires_at: until,
                }))
            }
            Acquired::Granted(mut lease) if self.bug == Bug::ForgetsAttempts => {
                lease.attempt = 1;
                Ok(Acquired::Granted(lease))
            }
            other => Ok(other),
        }
    }

    fn acquire_many(&self, reqs: &[AcquireRequest<'_>]) -> Vec<Result<Acquired, StoreError>> {
        let mut answers: Vec<_> = reqs.iter().map(|r| self.acquire(r)).collect();
        if self.bug == Bug::GroupAnswersOutOfOrder {
            answers.reverse();
        }
        answers
    }

    fn finalize_many(&self, finishes: &[FinishRequest<'_>]) -> Vec<Result<FenceCheck, StoreError>> {
        let answers = self.inner.finalize_many(finishes);
        if self.bug != Bug::GroupCallsStaleApplied {
            return answers;
        }
        answers
            .into_iter()
            .map(|a| a.map(|_| FenceCheck::Applied))
            .collect()
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        match self.inner.renew(lease, ttl)? {
            Renewed::Stale if self.bug == Bug::RenewIgnoresFence => {
                Ok(Renewed::Extended(self.inner.now()?))
            }
            other => Ok(other),
        }
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        self.inner
            .finalize_succeeded(lease, result, effects_ttl, retention, hook)
    }

    fn finalize_succeeded_without_effects(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
    ) -> Result<Finalized, StoreError> {
        if self.bug == Bug::LeavesNoEffectsPending {
            return self
                .inner
                .finalize_succeeded(lease, result, effects_ttl, retention, None);
        }
        self.inner
            .finalize_succeeded_without_effects(lease, result, effects_ttl, retention)
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        let retention = match self.bug {
            Bug::FailedKeptForever => Retention::Forever,
            _ => retention,
        };
        self.inner.finalize_failed(lease, failure, retention)
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.inner.release(lease, error)
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        self.inner.finish_effects(lease, outcome)
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        self.inner.claim_effects(req)
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        self.inner.get(digest)
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        match query.filter {
            ListFilter::EffectsInDoubt if self.bug == Bug::HidesInDoubt => Ok(Vec::new()),
            _ => self.inner.list(query),
        }
    }

    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        match self.bug {
            Bug::PrunesNothing => Ok(0),
            _ => self.inner.prune(limit),
        }
    }
}

struct BuggyHarness {
    memory: MemoryHarness,
    store: Arc<dyn LeaseStore>,
}

impl StoreHarness for BuggyHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn advance(&self, by: Duration) {
        self.memory.advance(by);
    }
}

fn buggy(bug: Bug) -> BuggyHarness {
    let memory = MemoryHarness::new();
    let store = Arc::new(Buggy {
        inner: memory.store(),
        bug,
    });
    BuggyHarness { memory, store }
}

/// Runs `case` on a store with `bug`; returns the failure message.
fn failure(bug: Bug, case: fn(&dyn StoreHarness)) -> String {
    let harness = buggy(bug);
    let panic = catch_unwind(AssertUnwindSafe(|| case(&harness)))
        .expect_err("the suite passed a broken store");
    panic.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn a_renew_that_ignores_the_fence_fails() {
    let message = failure(
        Bug::RenewIgnoresFence,
        conformance::zombie_writes_rejected_after_takeover,
    );
    assert!(
        message.starts_with(
            "lease store conformance case `zombie_writes_rejected_after_takeover` failed: \
             zombie renew: Extended("
        ),
        "{message}"
    );
}

#[test]
fn a_replay_that_skips_the_fingerprint_fails() {
    let message = failure(
        Bug::ReplaySkipsFingerprint,
        conformance::fingerprint_conflict_on_every_path,
    );
    assert!(
        message.contains("on a succeeded row: expected KeyConflict, got AlreadySucceeded"),
        "{message}"
    );
}

#[test]
fn granting_held_keys_fails_busy_and_race_cases() {
    let message = failure(Bug::GrantsHeldKeys, conformance::busy_while_held);
    assert!(
        message.contains("acquire of a held key: expected Busy, got Granted"),
        "{message}"
    );
    let message = failure(
        Bug::GrantsHeldKeys,
        conformance::racing_acquires_grant_exactly_one,
    );
    assert!(
        message.contains("16 racing acquires on a fresh key: 16 granted, expected exactly 1"),
        "{message}"
    );
}

#[test]
fn hiding_in_doubt_effects_fails() {
    let message = failure(Bug::HidesInDoubt, conformance::effects_in_doubt_are_listed);
    assert!(
        message.ends_with("in-doubt effects not listed"),
        "{message}"
    );
}

#[test]
fn forgetting_attempts_fails() {
    let message = failure(
        Bug::ForgetsAttempts,
        conformance::takeover_after_expiry_bumps_fence,
    );
    assert!(
        message.contains("expected fence 2, attempt 2, owner w2"),
        "{message}"
    );
}

#[test]
fn effects_left_pending_by_a_finalize_without_effects_fail() {
    let message = failure(
        Bug::LeavesNoEffectsPending,
        conformance::finalize_without_effects_is_done_at_once,
    );
    assert!(
        message.contains("row after a finalize without effects"),
        "{message}"
    );
}

#[test]
fn a_failed_row_without_its_retention_fails() {
    let message = failure(
        Bug::FailedKeptForever,
        conformance::prune_deletes_settled_rows_past_their_retention,
    );
    assert!(
        message.contains("retain_until of `failed` (store now + 60s): expected about"),
        "{message}"
    );
}

#[test]
fn a_prune_that_deletes_nothing_fails() {
    let message = failure(
        Bug::PrunesNothing,
        conformance::prune_deletes_settled_rows_past_their_retention,
    );
    assert!(
        message.contains("prune(1) with 4 rows past their retention: returned 0, deleted 0"),
        "{message}"
    );
}

#[test]
fn group_answers_out_of_order_fail() {
    let message = failure(
        Bug::GroupAnswersOutOfOrder,
        conformance::group_acquire_answers_each_key,
    );
    assert!(
        message.contains("succeeded key in a group: expected AlreadySucceeded, got Busy"),
        "{message}"
    );
}

#[test]
fn a_group_that_applies_a_stale_fence_fails() {
    let message = failure(
        Bug::GroupCallsStaleApplied,
        conformance::group_finalize_answers_each_key,
    );
    assert!(
        message.contains("finalize_many answered [Applied, Applied, Applied, Applied, Applied]"),
        "{message}"
    );
}

#[test]
fn each_bug_fails_the_whole_suite_the_memory_store_passes_it() {
    // The memory store passes every case; each bug above fails at least one in run_all.
    conformance::run_all(&MemoryHarness::new());
    for bug in [
        Bug::RenewIgnoresFence,
        Bug::ReplaySkipsFingerprint,
        Bug::GrantsHeldKeys,
        Bug::HidesInDoubt,
        Bug::ForgetsAttempts,
        Bug::LeavesNoEffectsPending,
        Bug::FailedKeptForever,
        Bug::PrunesNothing,
        Bug::GroupAnswersOutOfOrder,
        Bug::GroupCallsStaleApplied,
    ] {
        let harness = buggy(bug);
        let failed = catch_unwind(AssertUnwindSafe(|| conformance::run_all(&harness)));
        assert!(failed.is_err(), "{bug:?} passed the whole suite");
    }
}
