//! The runner's failure policies, outcomes and dispositions.

mod common;

use std::{io, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    Disposition, FinalFailure, JobState, KeyDigest, KeyError, Outcome, Report, RunError, Runner,
    StoreError, TtlError, disposition,
    policy::{FailOn, GiveUpAfter},
};
use safejob_test_kit::{MemoryHarness, StoreHarness};

use common::{Job, JobError, row, runner};

/// The default policy hands the error back and releases the lease, so the retry starts at once.
#[test]
fn never_finalize_rethrows_and_releases() {
    let harness = MemoryHarness::new();
    let job = Job::new("refund:1").perform(|ctx| match ctx.attempt() {
        1 => Err(JobError::Transient("gateway timeout".into())),
        _ => Ok(Outcome::done()),
    });
    let r = runner(&harness, "w");
    let error = r.run(&job).unwrap_err();
    assert!(
        matches!(error, RunError::Job { attempt: 1, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "attempt 1 failed: transient: gateway timeout"
    );
    assert_eq!(error.disposition(), Disposition::Retry { after: None });
    let released = row(&harness, &job.digest());
    assert_eq!(released.state, JobState::Released);
    assert_eq!(
        released.last_error.as_deref(),
        Some("transient: gateway timeout")
    );
    // No clock movement needed.
    assert_eq!(
        r.run(&job).unwrap(),
        Report::Succeeded {
            result: None,
            attempt: 2
        }
    );
}

/// `GiveUpAfter(n)` finalizes the key failed at attempt n; duplicates then replay the failure.
#[test]
fn give_up_after_finalizes_failed() {
    let harness = MemoryHarness::new();
    let r = Runner::builder(harness.store())
        .failure_policy(GiveUpAfter::new(2))
        .build()
        .unwrap();
    let job = Job::new("refund:2").perform(|_| Err(JobError::Transient("down".into())));
    assert!(matches!(r.run(&job), Err(RunError::Job { attempt: 1, .. })));
    let failed = r.run(&job).unwrap();
    let failure = FinalFailure::new(
        "attempts_exhausted",
        "gave up after 2 attempts: transient: down",
    );
    assert_eq!(
        failed,
        Report::Failed {
            failure: failure.clone(),
            attempt: 2
        }
    );
    assert_eq!(failed.disposition(), Disposition::DeadLetter);
    let replay = r.run(&job).unwrap();
    assert_eq!(replay, Report::AlreadyFailed { failure });
    assert_eq!(replay.disposition(), Disposition::Ack);
    assert_eq!(row(&harness, &job.digest()).state, JobState::Failed);
}

/// `FailOn<T>` finalizes errors of type `T` at once and hands back the others.
#[test]
fn fail_on_finalizes_matching_errors_only() {
    let harness = MemoryHarness::new();
    let r = Runner::builder(harness.store())
        .failure_policy(FailOn::<JobError>::new("declined"))
        .build()
        .unwrap();
    let declined = Job::new("refund:3a").perform(|_| Err(JobError::Declined));
    assert_eq!(
        r.run(&declined).unwrap(),
        Report::Failed {
            failure: FinalFailure::new("declined", "card declined"),
            attempt: 1
        }
    );
    // An error of another type is handed back.
    let r = Runner::builder(harness.store())
        .failure_policy(FailOn::<io::Error>::new("io"))
        .build()
        .unwrap();
    let other = Job::new("refund:3b").perform(|_| Err(JobError::Declined));
    assert!(matches!(
        r.run(&other),
        Err(RunError::Job { attempt: 1, .. })
    ));
    assert_eq!(row(&harness, &other.digest()).state, JobState::Released);
}

/// `Outcome::FailedPermanently` finalizes failed; `Outcome::RetryLater` releases with a delay.
#[test]
fn outcomes_failed_permanently_and_retry_later() {
    let harness = MemoryHarness::new();
    let r = runner(&harness, "w");
    let fails = Job::new("refund:4a").perform(|_| Ok(Outcome::failed("closed", "account closed")));
    let report = r.run(&fails).unwrap();
    assert_eq!(
        report,
        Report::Failed {
            failure: FinalFailure::new("closed", "account closed"),
            attempt: 1
        }
    );
    assert!(matches!(
        r.run(&fails).unwrap(),
        Report::AlreadyFailed { .. }
    ));
    assert_eq!(fails.probe.total(), 0);

    let later = Job::new("refund:4b").perform(|ctx| match ctx.attempt() {
        1 => Ok(Outcome::retry_after(Duration::from_secs(5))),
        _ => Ok(Outcome::done()),
    });
    let report = r.run(&later).unwrap();
    assert_eq!(
        report,
        Report::RetryLater {
            after: Some(Duration::from_secs(5)),
            attempt: 1
        }
    );
    assert_eq!(
        report.disposition(),
        Disposition::Retry {
            after: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(row(&harness, &later.digest()).state, JobState::Released);
    assert!(matches!(
        r.run(&later).unwrap(),
        Report::Succeeded { attempt: 2, .. }
    ));
}

/// Every report and error maps to the documented queue disposition.
#[test]
fn dispositions_of_every_report_and_error() {
    let after = Some(Duration::from_secs(3));
    let failure = FinalFailure::new("c", "m");
    let reports = [
        (
            Report::Succeeded {
                result: None,
                attempt: 1,
            },
            Disposition::Ack,
        ),
        (Report::AlreadySucceeded { result: None }, Disposition::Ack),
        (
            Report::Failed {
                failure: failure.clone(),
                attempt: 1,
            },
            Disposition::DeadLetter,
        ),
        (Report::AlreadyFailed { failure }, Disposition::Ack),
        (
            Report::Busy {
                owner: None,
                until: DateTime::<Utc>::UNIX_EPOCH,
                retry_after: Duration::from_secs(7),
            },
            Disposition::Retry {
                after: Some(Duration::from_secs(7)),
            },
        ),
        (
            Report::RetryLater { after, attempt: 1 },
            Disposition::Retry { after },
        ),
    ];
    for (report, expected) in reports {
        assert_eq!(report.disposition(), expected, "{report:?}");
        assert_eq!(disposition::<JobError>(&Ok(report)), expected);
    }
    let digest = KeyDigest::of("k");
    let retry = Disposition::Retry { after: None };
    let errors: Vec<(RunError<JobError>, Disposition)> = vec![
        (
            RunError::InvalidKey(KeyError::Empty),
            Disposition::DeadLetter,
        ),
        (
            RunError::InvalidTtl(TtlError::TooShort {
                ttl: Duration::ZERO,
                min: Duration::from_millis(1),
            }),
            Disposition::DeadLetter,
        ),
        (
            RunError::KeyConflict {
                digest,
                stored: None,
                given: None,
            },
            Disposition::DeadLetter,
        ),
        (
            RunError::Job {
                source: JobError::Declined,
                attempt: 1,
            },
            retry,
        ),
        (
            RunError::LeaseLost {
                attempt: 1,
                fence: 1,
            },
            retry,
        ),
        (
            RunError::EffectsRolledBack {
                source: JobError::Declined,
                attempt: 1,
            },
            retry,
        ),
        (
            RunError::EffectsInDoubt {
                digest,
                source: JobError::Declined,
            },
            Disposition::DeadLetter,
        ),
        (
            RunError::Store(StoreError::PoolExhausted {
                waited: Duration::from_secs(1),
            }),
            retry,
        ),
    ];
    for (error, expected) in errors {
        assert_eq!(error.disposition(), expected, "{error:?}");
        assert_eq!(disposition(&Err(error)), expected);
    }
}
