//! The torture harness on the memory store: thousands of duplicate dispatches with crashes at
//! every pipeline point, in both effects modes; and proof that it catches broken stores.

use std::{io, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::Retention;
use safejob_core::{
    EffectsContext, EffectsMode, FinalFailure, IdempotencyKey, JobRecord, KeyDigest, KeyError,
    LeaseStore, Outcome, PerformContext, SafeJob,
    policy::GiveUpAfter,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        ListFilter, ListQuery, Renewed, StoreError, TxEffects,
    },
};
use safejob_test_kit::{
    CrashPoint, EffectProbe, MemoryHarness, StoreHarness, Torture, TortureFailure, TortureReport,
    torture::Violation,
};
use serde_json::Value;

/// A plain job: perform computes a result, the effects check they were handed it.
struct Transfer {
    id: usize,
}

impl SafeJob for Transfer {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["transfer", &self.id.to_string()])
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::json(serde_json::json!({ "id": self.id })))
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        match ctx.result() {
            Some(result) if result["id"] == self.id => Ok(()),
            other => Err(io::Error::other(format!("wrong result {other:?}"))),
        }
    }
}

/// A job without effects: its whole work is `perform`. Its effects hook must never run.
struct Quote {
    id: usize,
}

impl SafeJob for Quote {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["quote", &self.id.to_string()])
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::json(serde_json::json!({ "id": self.id })))
    }

    fn has_effects(&self) -> bool {
        false
    }
}

fn torture(mode: EffectsMode, seed: u64) -> Result<TortureReport, TortureFailure> {
    let harness = MemoryHarness::new();
    Torture::new(&harness)
        .keys(1_250)
        .duplicates(8)
        .threads(4)
        .crash_rate(0.2)
        .pause_rate(0.05)
        .effects(mode)
        .seed(seed)
        .run(|id| Transfer { id })
}

fn check_figures(report: &TortureReport) {
    println!("{report}");
    assert_eq!(report.dispatches_planned, 10_000);
    assert!(report.dispatches >= 10_000);
    assert_eq!(report.succeeded, 1_250);
    assert_eq!(report.failed, 0);
    // With a 20 % crash rate over 10,000 dispatches every point is reached many times.
    for point in CrashPoint::ALL {
        assert!(report.crashes_at(point) > 0, "no crash {point}: {report}");
    }
    assert!(report.duplicates_absorbed() > 5_000, "{report}");
    assert!(report.regrants > 0 && report.pauses > 0, "{report}");
}

#[test]
fn ten_thousand_dispatches_after_commit() {
    let report = torture(EffectsMode::AfterCommit, 0x5afe).unwrap_or_else(|e| panic!("{e}"));
    check_figures(&report);
    // Crashes after the finalize leave keys in doubt; every crash at the end of the effects came
    // after the job's effect ran, once; every other key ran its effects exactly once.
    assert!(report.effects_in_doubt > 0, "{report}");
    assert_eq!(
        report.effects_run + report.effects_in_doubt as u64,
        1_250 + report.crashes_at(CrashPoint::EffectsEnd),
        "{report}"
    );
}

#[test]
fn ten_thousand_dispatches_transactional() {
    let report = torture(EffectsMode::Transactional, 0x7a11).unwrap_or_else(|e| panic!("{e}"));
    check_figures(&report);
    assert_eq!(report.effects_in_doubt, 0, "{report}");
    assert_eq!(report.effects_run, 1_250, "{report}");
}

/// A job that chooses transactional effects itself.
struct OwnTransactional(Transfer);

impl SafeJob for OwnTransactional {
    type Error = io::Error;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        self.0.key()
    }
    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.0.perform(ctx)
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        if !ctx.is_transactional() {
            return Err(io::Error::other("the job's own effects mode was ignored"));
        }
        self.0.on_succeeded_once(ctx)
    }
    fn effects_mode(&self) -> Option<EffectsMode> {
        Some(EffectsMode::Transactional)
    }
}

/// Torture honours a job's own effects mode over its setting, as the Runner does: under an
/// after-commit torture, a job that chooses transactional effects runs them in the finalize
/// transaction, none is left in doubt, and each key's effects count once. Catches the torture's
/// wrapper dropping `effects_mode` (the hook then runs after commit and errs: keys in doubt) and
/// the check judging by the torture's setting instead of the job's (transactional effects go
/// uncounted: 0 effects run).
#[test]
fn a_jobs_own_effects_mode_wins_over_the_tortures() {
    let harness = MemoryHarness::new();
    let report = Torture::new(&harness)
        .keys(300)
        .duplicates(4)
        .threads(4)
        .crash_rate(0.2)
        .effects(EffectsMode::AfterCommit)
        .seed(0x0e11)
        .run(|id| OwnTransactional(Transfer { id }))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 300, "{report}");
    assert_eq!(report.effects_in_doubt, 0, "{report}");
    assert_eq!(report.effects_run, 300, "{report}");
}

/// A job that fails, retries and gives up like real ones do, with its own effect probe.
#[test]
fn jobs_without_effects_are_done_in_one_step_in_both_modes() {
    for (mode, seed) in [
        (EffectsMode::AfterCommit, 31),
        (EffectsMode::Transactional, 32),
    ] {
        let harness = MemoryHarness::new();
        let report = Torture::new(&harness)
            .keys(1_250)
            .duplicates(8)
            .threads(4)
            .crash_rate(0.2)
            .pause_rate(0.05)
            .effects(mode)
            .seed(seed)
            .run(|id| Quote { id })
            .unwrap_or_else(|failure| panic!("{mode:?}: {failure}"));
        assert_eq!(report.succeeded, 1_250, "{mode:?}: {report}");
        assert!(report.total_crashes() > 0, "{mode:?}: {report}");
        assert_eq!(
            (report.effects_run, report.effects_in_doubt),
            (0, 0),
            "{mode:?}: {report}"
        );
    }
}

struct Flaky {
    id: usize,
    probe: EffectProbe,
}

impl SafeJob for Flaky {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["flaky", &self.id.to_string()])
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        ctx.renew().map_err(io::Error::other)?;
        match self.id % 5 {
            0 if ctx.attempt() < 2 => Err(io::Error::other("gateway timeout")),
            1 if ctx.attempt() < 3 => Ok(Outcome::retry_after(Duration::from_secs(1))),
            2 if self.id.is_multiple_of(3) => Ok(Outcome::failed("declined", "card declined")),
            3 => Err(io::Error::other("always down")),
            _ => Ok(Outcome::done()),
        }
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        self.probe.record(ctx.key());
        Ok(())
    }
}

#[test]
fn retries_give_ups_and_failures_settle_every_key() {
    for mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let harness = MemoryHarness::new();
        let probe = EffectProbe::new();
        let report = Torture::new(&harness)
            .keys(300)
            .duplicates(4)
            .crash_rate(0.2)
            .pause_rate(0.05)
            .effects(mode)
            .failure_policy(GiveUpAfter::new(3))
            .allow_failures(true)
            .seed(11)
            .run(|id| Flaky {
                id,
                probe: probe.clone(),
            })
            .unwrap_or_else(|e| panic!("{e}"));
        println!("{report}");
        assert_eq!(report.succeeded + report.failed, 300, "{report}");
        // id % 5 == 3 always errs and gives up; id % 15 == 12 declines.
        assert_eq!(report.failed, 60 + 20, "{report}");
        assert!(report.job_errors > 0 && report.retry_later > 0, "{report}");
        assert!(report.recovery_rounds > 0, "{report}");
        if mode == EffectsMode::AfterCommit {
            // The job's own probe agrees with the harness's count.
            assert_eq!(probe.total(), report.effects_run, "{report}");
        }
    }
}

#[test]
fn same_seed_same_run_on_one_thread() {
    let run = || {
        let harness = MemoryHarness::new();
        Torture::new(&harness)
            .keys(200)
            .duplicates(3)
            .threads(1)
            .crash_rate(0.3)
            .pause_rate(0.05)
            .seed(1234)
            .run(|id| Transfer { id })
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_eq!(a.seed, 1234);
    assert!(a.total_crashes() > 0);
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let harness = MemoryHarness::new();
    let config = |t: Torture<'_>| match t.run(|id| Transfer { id }) {
        Err(TortureFailure::Config { reason }) => reason,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    assert_eq!(
        config(Torture::new(&harness).keys(0)),
        "keys (0), duplicates (4) and threads (4) must be at least 1"
    );
    assert_eq!(
        config(Torture::new(&harness).crash_rate(1.5)),
        "crash rate 1.5 is not within 0..=1"
    );
    assert_eq!(
        config(Torture::new(&harness).crash_points([])),
        "a crash rate above 0 needs at least one crash point"
    );
    assert!(config(Torture::new(&harness).ttl(Duration::ZERO)).contains("too short"));

    let same_key = Torture::new(&harness).seed(5).run(|_| Transfer { id: 1 });
    let Err(error @ TortureFailure::KeyReused { .. }) = same_key else {
        panic!("two indexes with one key: {same_key:?}");
    };
    assert_eq!(
        error.to_string(),
        format!(
            "torture seed 5 (rerun with SAFEJOB_TORTURE_SEED=5): key {} is made for two key \
             indexes; each index needs its own key",
            KeyDigest::of("transfer:1")
        )
    );
    Torture::new(&harness)
        .keys(3)
        .seed(5)
        .run(|id| Transfer { id })
        .unwrap_or_else(|e| panic!("{e}"));
    let reused = Torture::new(&harness)
        .keys(3)
        .seed(5)
        .run(|id| Transfer { id });
    assert!(
        matches!(reused, Err(TortureFailure::KeyReused { problem, .. }) if problem.contains("fresh keys")),
        "{reused:?}"
    );
}

/// Deliberately broken stores: the harness must catch each bug.
#[derive(Clone, Copy, PartialEq)]
enum Bug {
    /// Forgets terminal states: a succeeded key is granted again, and a finalize on it "commits".
    ForgetsSuccess,
    /// Never lists effects in doubt.
    HidesInDoubt,
    /// Finalizes a job without effects like one with after-commit effects: left pending.
    LeavesNoEffectsPending,
}

struct BrokenStore {
    inner: Arc<dyn LeaseStore>,
    bug: Bug,
}

impl LeaseStore for BrokenStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        match self.inner.acquire(req)? {
            Acquired::AlreadySucceeded(row) if self.bug == Bug::ForgetsSuccess => {
                Ok(Acquired::Granted(Lease {
                    digest: row.digest,
                    fence: row.fence,
                    attempt: row.attempts + 1,
                    owner: req.owner.to_owned(),
                    expires_at: self.inner.now()?,
                }))
            }
            other => Ok(other),
        }
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        self.inner.renew(lease, ttl)
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        match self
            .inner
            .finalize_succeeded(lease, result, effects_ttl, retention, hook)?
        {
            Finalized::Stale if self.bug == Bug::ForgetsSuccess => Ok(Finalized::Committed),
            other => Ok(other),
        }
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
        self.inner.prune(limit)
    }
}

struct BrokenHarness {
    memory: MemoryHarness,
    store: Arc<dyn LeaseStore>,
    frozen: bool,
}

impl BrokenHarness {
    fn new(bug: Option<Bug>, frozen: bool) -> Self {
        let memory = MemoryHarness::new();
        let store: Arc<dyn LeaseStore> = match bug {
            Some(bug) => Arc::new(BrokenStore {
                inner: memory.store(),
                bug,
            }),
            None => memory.store(),
        };
        Self {
            memory,
            store,
            frozen,
        }
    }
}

impl StoreHarness for BrokenHarness {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    fn advance(&self, by: Duration) {
        if !self.frozen {
            self.memory.advance(by);
        }
    }
}

fn violations(harness: &BrokenHarness, crash_rate: f64, points: &[CrashPoint]) -> Vec<Violation> {
    let result = Torture::new(harness)
        .keys(40)
        .duplicates(3)
        .crash_rate(crash_rate)
        .crash_points(points.iter().copied())
        .max_rounds(2)
        .seed(77)
        .run(|id| Transfer { id });
    match result {
        Err(failure @ TortureFailure::Violations { .. }) => {
            let text = failure.to_string();
            assert!(
                text.starts_with("torture seed 77 (rerun with SAFEJOB_TORTURE_SEED=77): "),
                "{text}"
            );
            let TortureFailure::Violations { violations, .. } = failure else {
                unreachable!()
            };
            violations
        }
        other => panic!("a broken store passed the torture: {other:?}"),
    }
}

#[test]
fn catches_a_store_that_finalizes_twice() {
    let found = violations(
        &BrokenHarness::new(Some(Bug::ForgetsSuccess), false),
        0.0,
        &[],
    );
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::FinalizedTwice { commits, .. } if *commits > 1)),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|v| matches!(v, Violation::EffectsRepeated { count, .. } if *count > 1)),
        "{found:?}"
    );
}

#[test]
fn catches_a_store_that_loses_in_doubt_keys() {
    let points = [CrashPoint::AfterFinalize, CrashPoint::EffectsStart];
    let found = violations(
        &BrokenHarness::new(Some(Bug::HidesInDoubt), false),
        0.5,
        &points,
    );
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|v| matches!(v, Violation::InDoubtNotListed { .. })),
        "{found:?}"
    );
}

#[test]
fn catches_keys_stuck_when_leases_never_expire() {
    let found = violations(
        &BrokenHarness::new(None, true),
        0.5,
        &[CrashPoint::BeforePerform],
    );
    assert!(!found.is_empty());
    assert!(
        found.iter().all(|v| matches!(
            v,
            Violation::Stuck {
                state: safejob_core::JobState::Running,
                ..
            }
        )),
        "{found:?}"
    );
}

#[test]
fn catches_a_store_that_leaves_no_effects_pending() {
    let harness = BrokenHarness::new(Some(Bug::LeavesNoEffectsPending), false);
    let result = Torture::new(&harness)
        .keys(40)
        .duplicates(3)
        .crash_rate(0.0)
        .seed(78)
        .run(|id| Quote { id });
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("a store that leaves no-effects keys pending passed: {result:?}");
    };
    assert_eq!(violations.len(), 40, "{violations:?}");
    assert!(
        violations.iter().all(|v| matches!(
            v,
            Violation::NoEffectsNotDone {
                calls: 0,
                effects: safejob_core::EffectsState::Pending,
                ..
            }
        )),
        "{violations:?}"
    );
    assert!(
        violations[0].to_string().contains(
            "declares no effects, but its effects hook returned 0 times, the row says pending"
        ),
        "{}",
        violations[0]
    );
}
