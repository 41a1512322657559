//! One test per invariant of DESIGN.md that the memory store can show, and bad input as a typed
//! error. The runner's behaviour on the other paths is in `runner_policies.rs`, `runner_leases.rs`
//! and `runner_effects.rs`; what they share is in `common/mod.rs`.

mod common;

use std::{
    collections::HashMap,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Barrier,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use safejob_core::Retention;
use safejob_core::{
    BUSY_RETRY_MAX, ConfigError, Disposition, Fingerprint, FingerprintError, IdempotencyKey,
    JobState, KeyDigest, KeyError, ListFilter, Outcome, PerformContext, Report, RunError, Runner,
    SafeJob, StoreError, TtlError,
    store::{AcquireRequest, Acquired, Finalized},
};
use safejob_test_kit::{
    MemoryHarness, StoreHarness, assert_effects_in_doubt, assert_exactly_once, assert_succeeded,
};
use serde_json::json;

use common::{Fault, Faulty, Job, JobError, PAST_TTL, TTL, listed, row, runner, runner_on};

/// Invariant 1: at most one `succeeded` finalization per key, ever — even with many workers
/// racing on the same job.
#[test]
fn invariant_1_one_success_per_key_under_racing_workers() {
    let harness = MemoryHarness::new();
    let job = Job::new("charge:1");
    let runners: Vec<Runner> = (0..16)
        .map(|i| runner(&harness, &format!("w{i}")))
        .collect();
    let barrier = Barrier::new(runners.len());
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = runners
            .iter()
            .map(|r| {
                let (job, barrier) = (&job, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    r.run(job).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let succeeded = reports
        .iter()
        .filter(|r| matches!(r, Report::Succeeded { .. }))
        .count();
    assert_eq!(succeeded, 1, "{reports:?}");
    assert!(
        reports.iter().all(|r| matches!(
            r,
            Report::Succeeded { .. } | Report::AlreadySucceeded { .. } | Report::Busy { .. }
        )),
        "{reports:?}"
    );
    // Later duplicates replay the stored result.
    for r in &runners {
        assert_eq!(
            r.run(&job).unwrap(),
            Report::AlreadySucceeded {
                result: Some(json!({"paid": 250}))
            }
        );
    }
    assert_exactly_once(&job.probe, [job.idempotency_key()]);
    assert_succeeded(&*harness.store(), [job.idempotency_key()]);
    assert_eq!(row(&harness, &job.digest()).attempts, 1);
}

/// Invariant 2: a worker paused past its lease, whose key was taken over and finished, cannot
/// finalize: its stale finalize changes nothing and it reports the lost lease.
#[test]
fn invariant_2_stale_fence_changes_nothing() {
    let harness = MemoryHarness::new();
    let other = runner(&harness, "other");
    let duplicate = Job::new("charge:2");
    let paused = Job::new("charge:2").perform(|ctx| {
        // Paused (GC, network partition...) past the lease; meanwhile a duplicate takes over.
        harness.advance(PAST_TTL);
        assert!(matches!(
            other.run(&duplicate).unwrap(),
            Report::Succeeded { attempt: 2, .. }
        ));
        let _ = ctx;
        Ok(Outcome::json(json!("zombie")))
    });
    let error = runner(&harness, "zombie").run(&paused).unwrap_err();
    assert!(
        matches!(
            error,
            RunError::LeaseLost {
                attempt: 1,
                fence: 1
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "lease lost: fence 1 of attempt 1 was superseded; nothing finalized"
    );
    assert_eq!(error.disposition(), Disposition::Retry { after: None });
    let stored = row(&harness, &paused.digest());
    assert_eq!(stored.state, JobState::Succeeded);
    assert_eq!(
        stored.result,
        Some(json!({"paid": 250})),
        "the winner's result stays"
    );
    assert_eq!((stored.fence, stored.owner.as_deref()), (2, Some("other")));
    assert_eq!(paused.probe.total(), 0);
    assert_exactly_once(&duplicate.probe, [duplicate.idempotency_key()]);
}

/// Invariant 3: lease expiry is judged by the store's clock. The worker's own clock (here the
/// system clock, months ahead of the store's) plays no part: the lease stays held until the
/// store's time passes it, even after the store's clock steps backwards.
#[test]
fn invariant_3_expiry_is_judged_by_the_store_clock() {
    let harness = MemoryHarness::new();
    let store = harness.store();
    let start = harness.clock().now();
    assert!(
        Utc::now() > start + chrono::Duration::days(1),
        "the worker clock is far ahead"
    );
    let job = Job::new("charge:3");
    let held = match store
        .acquire(&AcquireRequest {
            digest: job.digest(),
            fingerprint: Some(Fingerprint::of_bytes(&[1])),
            owner: "dead-worker",
            ttl: TTL,
        })
        .unwrap()
    {
        Acquired::Granted(lease) => lease,
        other => panic!("{other:?}"),
    };
    assert_eq!(held.expires_at, start + chrono::Duration::seconds(30));
    let busy = runner(&harness, "w2").run(&job).unwrap();
    // A duplicate is told to ask again soon (BUSY_RETRY_MAX), not a whole lease later.
    assert_eq!(
        busy,
        Report::Busy {
            owner: Some("dead-worker".into()),
            until: held.expires_at,
            retry_after: BUSY_RETRY_MAX,
        }
    );
    // Near the lease's end, the wait is what is left of it by the store's clock.
    harness
        .clock()
        .set(held.expires_at - chrono::Duration::milliseconds(100));
    assert!(matches!(
        runner(&harness, "w2").run(&job).unwrap(),
        Report::Busy { retry_after, .. } if retry_after == Duration::from_millis(100)
    ));
    // An NTP step backwards on the store's clock keeps the lease longer, never shorter.
    harness.clock().set(start - chrono::Duration::seconds(60));
    assert!(matches!(
        runner(&harness, "w2").run(&job).unwrap(),
        Report::Busy { .. }
    ));
    harness.clock().set(start + chrono::Duration::seconds(31));
    assert!(matches!(
        runner(&harness, "w2").run(&job).unwrap(),
        Report::Succeeded { attempt: 2, .. }
    ));
}

/// Invariant 4: a crashed worker never leaves its key stuck — a panic releases the lease at
/// once; a killed worker's lease expires and the next attempt takes it over.
#[test]
fn invariant_4_crashed_workers_never_leave_a_key_stuck() {
    let harness = MemoryHarness::new();
    // Killed: it acquired and vanished without a word.
    let killed = Job::new("charge:4a");
    let store = harness.store();
    let acquired = store
        .acquire(&AcquireRequest {
            digest: killed.digest(),
            fingerprint: Some(Fingerprint::of_bytes(&[1])),
            owner: "killed",
            ttl: TTL,
        })
        .unwrap();
    assert!(matches!(acquired, Acquired::Granted(_)));
    assert!(matches!(
        runner(&harness, "w").run(&killed).unwrap(),
        Report::Busy { .. }
    ));
    assert!(listed(&harness, ListFilter::ExpiredLeases).is_empty());
    harness.advance(PAST_TTL);
    assert_eq!(
        listed(&harness, ListFilter::ExpiredLeases),
        vec![killed.digest()]
    );
    assert!(matches!(
        runner(&harness, "w").run(&killed).unwrap(),
        Report::Succeeded { attempt: 2, .. }
    ));

    // Panicked: the runner releases the lease while the panic unwinds.
    let calls = AtomicU32::new(0);
    let panicky = Job::new("charge:4b").perform(|_| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("perform blew up");
        }
        Ok(Outcome::done())
    });
    let r = runner(&harness, "w");
    let panic = catch_unwind(AssertUnwindSafe(|| r.run(&panicky))).unwrap_err();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"perform blew up"));
    let released = row(&harness, &panicky.digest());
    assert_eq!(released.state, JobState::Released);
    assert_eq!(released.last_error.as_deref(), Some("perform panicked"));
    assert!(matches!(
        r.run(&panicky).unwrap(),
        Report::Succeeded { attempt: 2, .. }
    ));
}

/// Invariant 5: effects never run automatically a second time. Failed effects leave the key
/// in doubt — listed, recoverable only by a deliberate call — and duplicates only replay.
#[test]
fn invariant_5_effects_in_doubt_are_visible_and_never_rerun() {
    let harness = MemoryHarness::new();
    let attempts = AtomicU32::new(0);
    let job = Job::new("charge:5").effects(|_| {
        attempts.fetch_add(1, Ordering::SeqCst);
        Err(JobError::Transient("smtp down".into()))
    });
    let r = runner(&harness, "w");
    let error = r.run(&job).unwrap_err();
    assert!(
        matches!(error, RunError::EffectsInDoubt { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "key {} succeeded but its effects failed and are in doubt: transient: smtp down",
            job.digest().short()
        )
    );
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_effects_in_doubt(&*harness.store(), [job.idempotency_key()]);
    assert_eq!(
        listed(&harness, ListFilter::EffectsInDoubt),
        vec![job.digest()]
    );
    assert_eq!(
        row(&harness, &job.digest()).last_error.as_deref(),
        Some("transient: smtp down")
    );
    for _ in 0..3 {
        harness.advance(PAST_TTL);
        assert!(matches!(
            r.run(&job).unwrap(),
            Report::AlreadySucceeded { .. }
        ));
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "effects re-ran automatically"
    );

    // A worker that died inside its effects (pending past the window) is in doubt as well.
    let died = Job::new("charge:5b");
    let store = harness.store();
    let Acquired::Granted(lease) = store
        .acquire(&AcquireRequest {
            digest: died.digest(),
            fingerprint: Some(Fingerprint::of_bytes(&[1])),
            owner: "died",
            ttl: TTL,
        })
        .unwrap()
    else {
        panic!("not granted")
    };
    assert_eq!(
        store
            .finalize_succeeded(&lease, None, TTL, Retention::Forever, None)
            .unwrap(),
        Finalized::Committed
    );
    harness.advance(PAST_TTL);
    assert_effects_in_doubt(&*store, [died.idempotency_key()]);
    assert!(matches!(
        r.run(&died).unwrap(),
        Report::AlreadySucceeded { .. }
    ));
    assert_eq!(died.probe.total(), 0);
}

/// Invariant 6: bad input is a typed error with a clear message — never a panic, never stored.
#[test]
fn invariant_6_bad_input_is_a_typed_error() {
    let harness = MemoryHarness::new();
    let r = runner(&harness, "w");
    let long = "k".repeat(256);
    for (key, message) in [
        ("", "idempotency key is empty"),
        (
            long.as_str(),
            "idempotency key is 256 bytes long; the limit is 255 bytes (for a long natural \
             key, use a hash of it, e.g. a hex SHA-256, as the key or as one of its parts)",
        ),
        ("a\nb", "idempotency key has a control character at byte 1"),
    ] {
        let error = r.run(&Job::new(key)).unwrap_err();
        assert!(matches!(error, RunError::InvalidKey(_)), "{error:?}");
        assert_eq!(error.to_string(), message);
        assert_eq!(error.disposition(), Disposition::DeadLetter);
    }
    for (ttl, message) in [
        (
            Duration::ZERO,
            "lease ttl 0ns is too short; the minimum is 1ms",
        ),
        (
            Duration::from_secs(8 * 24 * 3600),
            "lease ttl 691200s is too long; the maximum is 604800s",
        ),
    ] {
        let error = r.run(&Job::new("charge:6").ttl(ttl)).unwrap_err();
        assert!(matches!(error, RunError::InvalidTtl(_)), "{error:?}");
        assert_eq!(error.to_string(), message);
        assert_eq!(error.disposition(), Disposition::DeadLetter);
    }
    let error = r.run(&Unfingerprintable).unwrap_err();
    assert!(matches!(error, RunError::Fingerprint(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("cannot fingerprint job parameters")
    );
    assert!(
        listed(&harness, ListFilter::All).is_empty(),
        "bad input was stored"
    );

    // A fingerprint conflict names the digest, never the raw key.
    let job = Job::new("customer-jane@example.com");
    r.run(&job).unwrap();
    let error = r
        .run(&Job::new("customer-jane@example.com").fingerprint(Some(2)))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "key {} was already used with different parameters",
            job.digest().short()
        )
    );
    assert!(!format!("{error} {error:?}").contains("jane"));

    // A corrupt row and an unreachable database are typed store errors.
    let corrupt = Faulty::new(&harness, Fault::CorruptFailedRow);
    let error = runner_on(corrupt.clone(), "w")
        .run(&Job::new("charge:6c"))
        .unwrap_err();
    assert!(
        matches!(error, RunError::Store(StoreError::CorruptRow { .. })),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "corrupt stored row {}: state is failed but no failure is stored",
            KeyDigest::of("charge:6c").short()
        )
    );
    let down = Faulty::new(&harness, Fault::Unreachable);
    let error = runner_on(down, "w")
        .run(&Job::new("charge:6d"))
        .unwrap_err();
    assert!(
        matches!(error, RunError::Store(StoreError::Unreachable { .. })),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "database unreachable at db.internal/safejob: connection refused"
    );
    assert_eq!(error.disposition(), Disposition::Retry { after: None });

    // Bad runner configuration is typed too.
    let bad_ttl = Runner::builder(harness.store())
        .default_ttl(Duration::ZERO)
        .build();
    assert!(matches!(
        bad_ttl,
        Err(ConfigError::InvalidTtl(TtlError::TooShort { .. }))
    ));
    let bad_id = Runner::builder(harness.store()).worker_id("").build();
    assert!(matches!(
        bad_id,
        Err(ConfigError::InvalidWorkerId { len: 0 })
    ));
}

/// A job whose parameters cannot be fingerprinted.
struct Unfingerprintable;

impl SafeJob for Unfingerprintable {
    type Error = JobError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new("unfingerprintable")
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        // JSON object keys must be strings: a map keyed by byte vectors cannot be fingerprinted.
        let mut params = HashMap::new();
        params.insert(vec![1u8], 1);
        Fingerprint::of(&params).map(Some)
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}
