//! What the torture harness catches in a user's own job, on the memory store: effects made in
//! `perform` (the ledger row written before the success is recorded), and keys or fingerprints
//! that change between calls. The same jobs run on SQLite in safejob-diesel's
//! `tests/user_jobs.rs`.

use std::{
    io,
    sync::atomic::{AtomicUsize, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use safejob_core::{
    EffectsContext, Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome,
    PerformContext, SafeJob,
};
use safejob_test_kit::{
    CrashPoint, EffectProbe, MemoryHarness, Torture, TortureFailure, torture::Violation,
};

/// Where a charge posts its ledger row.
#[derive(Clone, Copy, PartialEq)]
enum Posting {
    /// In `on_succeeded_once`: the correct job.
    InEffects,
    /// In `perform`: the classic bug. perform runs again after a crash or a lost lease.
    InPerform,
}

/// A wallet charge. The ledger is a probe that counts postings per key, whichever half of the
/// job posts: the recipe for checking a job's own effects.
struct Charge {
    id: usize,
    ledger: EffectProbe,
    posting: Posting,
}

impl SafeJob for Charge {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.id.to_string()])
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        if self.posting == Posting::InPerform {
            self.ledger.record(ctx.key());
        }
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        if self.posting == Posting::InEffects {
            self.ledger.record(ctx.key());
        }
        Ok(())
    }
}

fn charges(
    harness: &MemoryHarness,
    posting: Posting,
    counted: bool,
    crash_rate: f64,
) -> (
    Result<safejob_test_kit::TortureReport, TortureFailure>,
    EffectProbe,
) {
    let ledger = EffectProbe::new();
    let torture = Torture::new(harness)
        .keys(100)
        .duplicates(4)
        .threads(4)
        .crash_rate(crash_rate)
        // No pauses: a perform that runs twice here is due to a crash, which the first test
        // wants, and the second must not see.
        .pause_rate(0.0)
        .seed(0xc0ffee);
    let torture = if counted {
        torture.count_effects(ledger.clone())
    } else {
        torture
    };
    let result = torture.run(|id| Charge {
        id,
        ledger: ledger.clone(),
        posting,
    });
    (result, ledger)
}

/// The ledger-in-perform job fails with its cause and fix named, and with the keys charged twice.
/// Catches: the counter not read after `perform` (`Tortured::perform` without
/// `Entry::after_perform`: no `EffectsInPerform`, no cause line), and a final check that does not
/// compare the counter with the rows (no `CountedMoreThanOnce`).
#[test]
fn a_ledger_written_in_perform_fails_with_its_cause_and_fix() {
    let harness = MemoryHarness::new();
    let (result, ledger) = charges(&harness, Posting::InPerform, true, 0.2);
    let failure = match result {
        Err(failure @ TortureFailure::Violations { .. }) => failure,
        other => panic!("the ledger-in-perform job passed: {other:?}"),
    };
    let text = failure.to_string();
    println!("{text}");
    let TortureFailure::Violations {
        violations, report, ..
    } = failure
    else {
        unreachable!()
    };
    // Every key was posted by perform, and crashes after perform posted some of them twice.
    let in_perform = violations
        .iter()
        .filter(|v| matches!(v, Violation::EffectsInPerform { .. }))
        .count();
    assert_eq!(in_perform, 100, "{text}");
    let twice: Vec<_> = violations
        .iter()
        .filter_map(|v| match v {
            Violation::CountedMoreThanOnce { digest, counted } => Some((*digest, *counted)),
            _ => None,
        })
        .collect();
    assert!(!twice.is_empty(), "no key charged twice: {text}");
    for (digest, counted) in &twice {
        assert_eq!(ledger.count_digest(digest), *counted);
        assert!(
            text.contains(&format!(
                "key {}: effect done {counted} times (your counter), once expected",
                digest.short()
            )),
            "{text}"
        );
    }
    assert!(
        text.contains(
            "\n  cause (100 keys): effects observed in perform: move them to on_succeeded_once. \
             perform runs again after a crash, a lost lease or a retryable error"
        ),
        "{text}"
    );
    // The facts about money come first in the list; the raw keys never appear.
    assert!(matches!(
        violations[0],
        Violation::CountedMoreThanOnce { .. }
    ));
    assert!(!text.contains("charge:"), "{text}");
    assert_eq!(report.effects_counted, Some(ledger.total()));
}

/// Even with no crash and no duplicate run of `perform`, a posting in perform is seen: the
/// counter shows it before any `on_succeeded_once` of the key started. Catches: the in-perform
/// check dropped (only the final counts compared, which are all one here).
#[test]
fn a_ledger_written_in_perform_fails_even_when_nothing_crashes() {
    let harness = MemoryHarness::new();
    let (result, ledger) = charges(&harness, Posting::InPerform, true, 0.0);
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("the ledger-in-perform job passed: {result:?}");
    };
    assert_eq!(ledger.total(), 100, "one posting per key: nothing crashed");
    assert_eq!(violations.len(), 100, "{violations:?}");
    assert!(
        violations
            .iter()
            .all(|v| matches!(v, Violation::EffectsInPerform { counted: 1, .. })),
        "{violations:?}"
    );
    assert!(
        violations[0].to_string().ends_with(
            ": effects observed in perform: your counter saw 1 before on_succeeded_once ever ran"
        ),
        "{}",
        violations[0]
    );
}

/// Without a counter the harness cannot see the bug, and its report says so in words.
/// Catches: a report that does not say what it checked.
#[test]
fn without_a_counter_the_report_says_the_jobs_own_writes_were_not_checked() {
    let harness = MemoryHarness::new();
    let (result, ledger) = charges(&harness, Posting::InPerform, false, 0.2);
    let report = result.unwrap_or_else(|failure| panic!("{failure}"));
    println!("{report}\n{} postings for 100 charges", ledger.total());
    assert!(ledger.total() > 100, "the bug charged some keys twice");
    assert_eq!(report.effects_counted, None);
    assert!(
        report.to_string().ends_with(
            "effects checked: on_succeeded_once calls only; no effect counter was given \
             (Torture::count_effects), so the job's own writes, in perform or anywhere else, \
             were not checked"
        ),
        "{report}"
    );
}

/// The correct job passes with its counter, with crashes and with pauses that let leases expire
/// under running performs (so a `perform` can return after another dispatch's effects
/// ran). Catches: `on_succeeded_once` not marking its key as started (`Entry::entering_effects`
/// dropped: a zombie's perform that returns after the winner's effects is blamed for them), and
/// a final check demanding one effect where a crash left the key in doubt.
#[test]
fn the_correct_job_passes_with_its_counter() {
    let harness = MemoryHarness::new();
    let ledger = EffectProbe::new();
    let report = Torture::new(&harness)
        .keys(400)
        .duplicates(6)
        .threads(4)
        .crash_rate(0.2)
        .pause_rate(0.3)
        .seed(0xc0ffee)
        .count_effects(ledger.clone())
        .run(|id| Charge {
            id,
            ledger: ledger.clone(),
            posting: Posting::InEffects,
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    println!("{report}");
    assert!(
        report.effects_in_doubt > 0 && report.leases_lost > 0,
        "{report}"
    );
    assert_eq!(report.effects_counted, Some(ledger.total()));
    // Exactly one posting per key, except in-doubt keys whose worker died before posting.
    assert!(ledger.total() <= 400 && ledger.total() + report.effects_in_doubt as u64 >= 400);
    assert!(
        report.to_string().ends_with(&format!(
            "effects checked: on_succeeded_once calls, and the job's own effects through your \
             counter ({} counted, read after every perform and at the end)",
            ledger.total()
        )),
        "{report}"
    );
}

/// A counter that counts too few or too many, or on keys that did not succeed, is reported key by
/// key. Catches: `check_counted` accepting zero for a succeeded key, or any count for a failed
/// one.
#[test]
fn counts_that_disagree_with_the_rows_are_violations() {
    // A hook that forgets to post: counted none.
    let harness = MemoryHarness::new();
    let forgotten = EffectProbe::new();
    let result = Torture::new(&harness)
        .keys(10)
        .crash_rate(0.0)
        .seed(1)
        .count_effects(forgotten.clone())
        .run(|id| Charge {
            id,
            ledger: EffectProbe::new(),
            posting: Posting::InEffects,
        });
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("a ledger with no postings passed: {result:?}");
    };
    assert_eq!(violations.len(), 10, "{violations:?}");
    assert!(
        violations
            .iter()
            .all(|v| matches!(v, Violation::CountedNone { .. })),
        "{violations:?}"
    );

    // A charge that posts, then is declined for good: a posting on a failed key.
    struct Declined(usize, EffectProbe);
    impl SafeJob for Declined {
        type Error = io::Error;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["declined", &self.0.to_string()])
        }
        fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            self.1.record(ctx.key());
            Ok(Outcome::failed("declined", "card declined"))
        }
    }
    let harness = MemoryHarness::new();
    let ledger = EffectProbe::new();
    let result = Torture::new(&harness)
        .keys(5)
        .duplicates(2)
        .crash_rate(0.0)
        .allow_failures(true)
        .seed(2)
        .count_effects(ledger.clone())
        .run(|id| Declined(id, ledger.clone()));
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("postings on declined charges passed: {result:?}");
    };
    let without_success: Vec<_> = violations
        .iter()
        .filter(|v| matches!(v, Violation::CountedWithoutSuccess { .. }))
        .collect();
    assert_eq!(without_success.len(), 5, "{violations:?}");
    assert!(
        without_success[0].to_string().ends_with(
            ": effect done 1 times (your counter) on a key that ended failed, none expected"
        ),
        "{}",
        without_success[0]
    );
}

/// A counter that cannot count fails the run instead of passing it unchecked.
#[test]
fn a_failing_counter_is_reported() {
    let harness = MemoryHarness::new();
    let result = Torture::new(&harness)
        .keys(3)
        .crash_rate(0.0)
        .seed(3)
        .count_effects(|_: &IdempotencyKey| Err::<u64, _>(io::Error::other("ledger offline")))
        .run(|id| Charge {
            id,
            ledger: EffectProbe::new(),
            posting: Posting::InEffects,
        });
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("a failing counter passed: {result:?}");
    };
    assert_eq!(violations.len(), 3, "{violations:?}");
    assert!(
        violations[0]
            .to_string()
            .ends_with(": your effect counter failed: ledger offline"),
        "{}",
        violations[0]
    );
}

/// A charge keyed by the time it was made: every call of `key()` gives a new key.
struct StampedCharge(usize);

impl SafeJob for StampedCharge {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        IdempotencyKey::from_parts(["charge", &self.0.to_string(), &nanos.to_string()])
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}

/// The timestamp in the key is reported as an unstable key, naming the job, before any dispatch:
/// not as "finalized succeeded 20 times" next to "no row in the store". Catches: `Entry::new`
/// calling `key()` only once.
#[test]
fn a_timestamp_in_the_key_is_reported_as_an_unstable_key() {
    let harness = MemoryHarness::new();
    let result = Torture::new(&harness).seed(4).run(StampedCharge);
    let Err(failure @ TortureFailure::UnstableKey { index: 0, .. }) = result else {
        panic!("an unstable key was not reported as such: {result:?}");
    };
    let text = failure.to_string();
    assert!(
        text.starts_with(
            "torture seed 4 (rerun with SAFEJOB_TORTURE_SEED=4): key() is unstable: the job made \
             for key index 0 (user_jobs::StampedCharge) returned two different keys from two \
             calls in a row (digests "
        ),
        "{text}"
    );
    assert!(
        text.ends_with("(no timestamps, random ids or counters)"),
        "{text}"
    );
    assert!(!text.contains("charge:"), "{text}");
}

/// A key that changes only from its third call on: the first two agree, so the run starts. The
/// harness runs every dispatch under the first key and reports the change, and nothing else.
struct DriftingKey {
    id: usize,
    calls: AtomicUsize,
}

impl SafeJob for DriftingKey {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        let era = self.calls.fetch_add(1, Ordering::Relaxed) / 2;
        IdempotencyKey::from_parts(["drift", &self.id.to_string(), &era.to_string()])
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}

/// Catches: dispatches run under the job's latest key (`Entry::stable_key` returning `now`): the
/// old symptoms come back — finalized several times, no row — instead of one `UnstableKey` per
/// job.
#[test]
fn a_key_that_changes_later_is_reported_once_per_job_and_nothing_else() {
    let harness = MemoryHarness::new();
    let result = Torture::new(&harness)
        .keys(20)
        .duplicates(3)
        .crash_rate(0.0)
        .seed(5)
        .run(|id| DriftingKey {
            id,
            calls: AtomicUsize::new(0),
        });
    let Err(failure @ TortureFailure::Violations { .. }) = result else {
        panic!("a drifting key passed: {result:?}");
    };
    let text = failure.to_string();
    println!("{text}");
    let TortureFailure::Violations {
        violations, report, ..
    } = failure
    else {
        unreachable!()
    };
    assert_eq!(violations.len(), 20, "{text}");
    assert!(
        violations
            .iter()
            .all(|v| matches!(v, Violation::UnstableKey { .. })),
        "{text}"
    );
    assert_eq!(report.succeeded, 20, "{text}");
    assert!(
        text.contains(
            "\n  cause (20 jobs): key() is unstable: it returned different keys for the same job"
        ),
        "{text}"
    );
    assert!(
        text.contains(": key() is unstable: the job made for key index 0 (user_jobs::DriftingKey) returned another key, "),
        "{text}"
    );
}

/// A fingerprint with a timestamp in it: reported as an unstable fingerprint, not as key
/// conflicts. Catches: `Entry::new` not comparing two fingerprints.
#[test]
fn a_timestamp_in_the_fingerprint_is_reported_as_unstable() {
    struct StampedPrint(usize);
    impl SafeJob for StampedPrint {
        type Error = io::Error;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["print", &self.0.to_string()])
        }
        fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            Fingerprint::of(&(self.0, at.to_string())).map(Some)
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            Ok(Outcome::done())
        }
    }
    let harness = MemoryHarness::new();
    let result = Torture::new(&harness).seed(6).run(StampedPrint);
    let Err(failure @ TortureFailure::UnstableFingerprint { index: 0, .. }) = result else {
        panic!("an unstable fingerprint was not reported as such: {result:?}");
    };
    assert!(
        failure.to_string().contains(
            "fingerprint() is unstable: the job made for key index 0 \
             (user_jobs::a_timestamp_in_the_fingerprint_is_reported_as_unstable::StampedPrint, key "
        ),
        "{failure}"
    );
}

/// A fingerprint that changes only from its third call on: one `UnstableFingerprint` per job and
/// no key conflicts. Catches: `Entry::stable_fingerprint` passing the new value through (every
/// later dispatch is then a key conflict, reported as an unexpected error).
#[test]
fn a_fingerprint_that_changes_later_is_reported_instead_of_key_conflicts() {
    struct DriftingPrint(usize, AtomicUsize);
    impl SafeJob for DriftingPrint {
        type Error = io::Error;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["drift-print", &self.0.to_string()])
        }
        fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
            let era = self.1.fetch_add(1, Ordering::Relaxed) / 2;
            Fingerprint::of(&(self.0, era)).map(Some)
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            Ok(Outcome::done())
        }
    }
    let harness = MemoryHarness::new();
    let result = Torture::new(&harness)
        .keys(10)
        .duplicates(3)
        .crash_rate(0.0)
        .seed(7)
        .run(|id| DriftingPrint(id, AtomicUsize::new(0)));
    let Err(TortureFailure::Violations { violations, .. }) = result else {
        panic!("a drifting fingerprint passed: {result:?}");
    };
    assert_eq!(violations.len(), 10, "{violations:?}");
    assert!(
        violations
            .iter()
            .all(|v| matches!(v, Violation::UnstableFingerprint { .. })),
        "{violations:?}"
    );
}

/// The quick start's crash points outside the effects window leave nothing in doubt: the counter
/// must then show exactly one posting per key.
#[test]
fn without_crashes_in_the_effects_window_every_key_is_posted_exactly_once() {
    let harness = MemoryHarness::new();
    let ledger = EffectProbe::new();
    let report = Torture::new(&harness)
        .keys(200)
        .duplicates(5)
        .crash_rate(0.4)
        .crash_points([CrashPoint::BeforePerform, CrashPoint::AfterPerform])
        .seed(8)
        .count_effects(ledger.clone())
        .run(|id| Charge {
            id,
            ledger: ledger.clone(),
            posting: Posting::InEffects,
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.effects_counted, Some(200), "{report}");
    assert_eq!(ledger.distinct_keys(), 200);
}
