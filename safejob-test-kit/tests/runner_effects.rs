//! The runner's effects: panics in effects, transactional effects, jobs without effects, recovery
//! of effects in doubt, and ambiguous finalizes (through the fault-injecting store in `common`).

mod common;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::atomic::{AtomicBool, Ordering},
};

use safejob_core::{
    Disposition, EffectsMode, EffectsState, JobState, ListFilter, Recovery, Report, RunError,
    Runner, StoreError, memory::MemoryTx,
};
use safejob_test_kit::{MemoryHarness, StoreHarness, assert_exactly_once, assert_succeeded};
use serde_json::json;

use common::{Fault, Faulty, Job, JobError, PAST_TTL, TTL, listed, row, runner};

/// A panic in the effects marks them in doubt and propagates.
#[test]
fn panic_in_effects_leaves_them_in_doubt() {
    let harness = MemoryHarness::new();
    let job = Job::new("refund:5").effects(|_| panic!("ledger exploded"));
    let r = runner(&harness, "w");
    let panic = catch_unwind(AssertUnwindSafe(|| r.run(&job))).unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"ledger exploded"));
    let stored = row(&harness, &job.digest());
    assert_eq!(
        (stored.state, stored.effects),
        (JobState::Succeeded, EffectsState::InDoubt)
    );
    assert_eq!(
        stored.last_error.as_deref(),
        Some("on_succeeded_once panicked")
    );
    assert!(matches!(
        r.run(&job).unwrap(),
        Report::AlreadySucceeded { .. }
    ));
}

/// Transactional effects on the memory store: they see the `MemoryTx` handle; `Ok` commits with
/// effects done; `Err` rolls the finalize back and releases the lease, so a retry starts at once.
#[test]
fn transactional_effects_commit_or_roll_back() {
    let harness = MemoryHarness::new();
    let r = Runner::builder(harness.store())
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    let ok = Job::new("ledger:1").effects(|ctx| {
        assert!(ctx.is_transactional());
        assert!(ctx.transaction::<MemoryTx>().is_some());
        assert!(ctx.transaction::<String>().is_none());
        Ok(())
    });
    assert!(matches!(
        r.run(&ok).unwrap(),
        Report::Succeeded { attempt: 1, .. }
    ));
    let stored = row(&harness, &ok.digest());
    assert_eq!(
        (stored.state, stored.effects),
        (JobState::Succeeded, EffectsState::Done)
    );
    assert_exactly_once(&ok.probe, [ok.idempotency_key()]);

    let fails_once = Job::new("ledger:2").effects(|ctx| match ctx.attempt() {
        1 => Err(JobError::Transient("constraint violated".into())),
        _ => Ok(()),
    });
    let error = r.run(&fails_once).unwrap_err();
    assert!(
        matches!(error, RunError::EffectsRolledBack { attempt: 1, .. }),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::Retry { after: None });
    let stored = row(&harness, &fails_once.digest());
    assert_eq!(stored.state, JobState::Released);
    assert_eq!((stored.result, stored.effects), (None, EffectsState::None));
    assert!(stored.finalized_at.is_none());
    assert!(matches!(
        r.run(&fails_once).unwrap(),
        Report::Succeeded { attempt: 2, .. }
    ));
    assert_exactly_once(&fails_once.probe, [fails_once.idempotency_key()]);
    assert!(listed(&harness, ListFilter::EffectsInDoubt).is_empty());
}

/// A job's own effects mode wins over the runner's, and a job that does not choose gets the
/// runner's: one runner runs a transactional charge and an after-commit webhook side by side.
/// What each mode means is read from the store, not only from `is_transactional`: a failing
/// transactional hook rolls the finalize back (the row is `released`, the run retryable), a
/// failing after-commit hook leaves `succeeded` with its effects in doubt.
///
/// Catches: the pipeline ignoring the job's mode (`job.effects_mode().unwrap_or(run.effects)`
/// replaced by `run.effects`: the `Some` rows fail under the other runner mode), and ignoring
/// the runner's (`unwrap_or(EffectsMode::AfterCommit)`: the `None` row fails under a
/// transactional runner). Both were tried and both failed here.
#[test]
fn a_jobs_own_effects_mode_wins_over_the_runners() {
    use EffectsMode::{AfterCommit, Transactional};
    for runner_mode in [AfterCommit, Transactional] {
        let harness = MemoryHarness::new();
        let r = Runner::builder(harness.store())
            .effects(runner_mode)
            .default_ttl(TTL)
            .build()
            .unwrap();
        for (own, expected) in [
            (Some(Transactional), Transactional),
            (Some(AfterCommit), AfterCommit),
            (None, runner_mode),
        ] {
            let case = format!("runner {runner_mode:?}, job {own:?}");
            let saw_tx = AtomicBool::new(false);
            let ok = Job::new(&format!("ok:{case}"))
                .effects_mode(own)
                .effects(|ctx| {
                    saw_tx.store(ctx.is_transactional(), Ordering::Relaxed);
                    assert_eq!(
                        ctx.transaction::<MemoryTx>().is_some(),
                        ctx.is_transactional()
                    );
                    Ok(())
                });
            assert!(
                matches!(r.run(&ok).unwrap(), Report::Succeeded { attempt: 1, .. }),
                "{case}"
            );
            assert_eq!(
                saw_tx.load(Ordering::Relaxed),
                expected == Transactional,
                "{case}: where the effects ran"
            );
            assert_exactly_once(&ok.probe, [ok.idempotency_key()]);

            let failing = Job::new(&format!("failing:{case}"))
                .effects_mode(own)
                .effects(|_| Err(JobError::Transient("ledger refused".into())));
            let error = r.run(&failing).unwrap_err();
            let stored = row(&harness, &failing.digest());
            match expected {
                Transactional => {
                    assert!(
                        matches!(error, RunError::EffectsRolledBack { attempt: 1, .. }),
                        "{case}: {error:?}"
                    );
                    assert_eq!(
                        (stored.state, stored.effects),
                        (JobState::Released, EffectsState::None),
                        "{case}"
                    );
                }
                AfterCommit => {
                    assert!(
                        matches!(error, RunError::EffectsInDoubt { .. }),
                        "{case}: {error:?}"
                    );
                    assert_eq!(
                        (stored.state, stored.effects),
                        (JobState::Succeeded, EffectsState::InDoubt),
                        "{case}"
                    );
                }
            }
        }
    }
}

/// A job that declares no effects is finalized with its effects `done` in one step, in both
/// effects modes: `on_succeeded_once` is never called, nothing is ever in doubt, and duplicates
/// replay the stored result.
#[test]
fn jobs_without_effects_finalize_done_in_one_step() {
    for mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let harness = MemoryHarness::new();
        let r = Runner::builder(harness.store())
            .effects(mode)
            .default_ttl(TTL)
            .build()
            .unwrap();
        let job = Job::new("payout:1").without_effects();
        assert!(
            matches!(r.run(&job).unwrap(), Report::Succeeded { attempt: 1, .. }),
            "{mode:?}"
        );
        let stored = row(&harness, &job.digest());
        assert_eq!(
            (stored.state, stored.effects, stored.result),
            (
                JobState::Succeeded,
                EffectsState::Done,
                Some(json!({"paid": 250}))
            ),
            "{mode:?}"
        );
        assert_eq!(job.probe.total(), 0, "{mode:?}: effects hook was called");
        harness.advance(PAST_TTL);
        assert!(listed(&harness, ListFilter::EffectsInDoubt).is_empty());
        match r.run(&job).unwrap() {
            Report::AlreadySucceeded { result } => {
                assert_eq!(result, Some(json!({"paid": 250})), "{mode:?}")
            }
            other => panic!("{mode:?}: a duplicate got {other:?}"),
        }
        assert_eq!(job.probe.total(), 0, "{mode:?}");
    }
}

/// Deliberate recovery of in-doubt effects: confirm (no re-run) or recover (one re-run); and the
/// answers for keys that are not in doubt or do not exist.
#[test]
fn recover_and_confirm_in_doubt_effects() {
    let harness = MemoryHarness::new();
    let r = runner(&harness, "operator");
    let healthy = &AtomicBool::new(false);
    let make = |key: &str| {
        Job::new(key).effects(move |_| match healthy.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err(JobError::Transient("smtp down".into())),
        })
    };
    let confirmed = make("notify:1");
    let recovered = make("notify:2");
    assert!(r.run(&confirmed).is_err());
    assert!(r.run(&recovered).is_err());
    assert_eq!(listed(&harness, ListFilter::EffectsInDoubt).len(), 2);

    assert_eq!(
        r.confirm_effects(&confirmed).unwrap(),
        Recovery::Resolved { fence: 2 }
    );
    assert_eq!(
        confirmed.probe.total(),
        0,
        "confirm must not run the effects"
    );
    assert_eq!(
        row(&harness, &confirmed.digest()).effects,
        EffectsState::Done
    );

    healthy.store(true, Ordering::SeqCst);
    assert_eq!(
        r.recover_effects(&recovered).unwrap(),
        Recovery::Resolved { fence: 2 }
    );
    assert_exactly_once(&recovered.probe, [recovered.idempotency_key()]);
    assert_succeeded(
        &*harness.store(),
        [confirmed.idempotency_key(), recovered.idempotency_key()],
    );
    // Nothing left to recover: no second run.
    assert!(matches!(
        r.recover_effects(&recovered).unwrap(),
        Recovery::NotInDoubt(_)
    ));
    assert!(matches!(
        r.confirm_effects(&confirmed).unwrap(),
        Recovery::NotInDoubt(_)
    ));
    assert_eq!(recovered.probe.total(), 1);
    assert_eq!(
        r.recover_effects(&Job::new("notify:none")).unwrap(),
        Recovery::Missing
    );

    // A recovery whose effects fail again leaves the key in doubt, under the new fence.
    healthy.store(false, Ordering::SeqCst);
    let again = make("notify:3");
    assert!(r.run(&again).is_err());
    assert!(matches!(
        r.recover_effects(&again),
        Err(RunError::EffectsInDoubt { .. })
    ));
    let stored = row(&harness, &again.digest());
    assert_eq!((stored.effects, stored.fence), (EffectsState::InDoubt, 2));
}

/// The finalize reached the store, but its answer was lost (the connection dropped during
/// COMMIT). The runner settles it from the store: the effects run exactly once.
#[test]
fn ambiguous_finalize_that_committed_runs_effects_once() {
    for mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let harness = MemoryHarness::new();
        let store = Faulty::new(&harness, Fault::AmbiguousAfterApplying);
        let r = Runner::builder(store.clone())
            .effects(mode)
            .build()
            .unwrap();
        let job = Job::new("payout:1");
        let report = r.run(&job).unwrap();
        assert_eq!(
            report,
            Report::Succeeded {
                result: Some(json!({"paid": 250})),
                attempt: 1
            },
            "{mode:?}"
        );
        assert_exactly_once(&job.probe, [job.idempotency_key()]);
        assert_succeeded(&*harness.store(), [job.idempotency_key()]);
        assert!(matches!(
            r.run(&job).unwrap(),
            Report::AlreadySucceeded { .. }
        ));
        assert_eq!(store.ambiguous.load(Ordering::SeqCst), 1);
    }
}

/// The finalize failed before it applied. The runner's fenced release proves it did not commit:
/// nothing succeeded, the lease is released, and the next attempt starts at once.
#[test]
fn ambiguous_finalize_that_did_not_commit_releases() {
    for mode in [EffectsMode::AfterCommit, EffectsMode::Transactional] {
        let harness = MemoryHarness::new();
        let store = Faulty::new(&harness, Fault::AmbiguousWithoutApplying);
        let r = Runner::builder(store.clone())
            .effects(mode)
            .build()
            .unwrap();
        let job = Job::new("payout:2");
        let error = r.run(&job).unwrap_err();
        assert!(
            matches!(error, RunError::Store(StoreError::AmbiguousCommit { .. })),
            "{mode:?}: {error:?}"
        );
        assert_eq!(error.disposition(), Disposition::Retry { after: None });
        let stored = row(&harness, &job.digest());
        assert_eq!(stored.state, JobState::Released, "{mode:?}");
        assert_eq!(
            stored.last_error.as_deref(),
            Some("finalize outcome unknown")
        );
        assert_eq!(job.probe.total(), 0);
        assert!(matches!(
            r.run(&job).unwrap(),
            Report::Succeeded { attempt: 2, .. }
        ));
        assert_exactly_once(&job.probe, [job.idempotency_key()]);
    }
}
