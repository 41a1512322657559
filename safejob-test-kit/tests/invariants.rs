//! One test per invariant of DESIGN.md that the memory store can show, then the runner's
//! behaviour on every path: failure policies, outcomes, panics, renewals, lost leases, key
//! conflicts, bad input, dispositions, transactional effects, recovery and ambiguous finalizes.

use std::{
    collections::HashMap,
    io,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::{
    ConfigError, Disposition, EffectsContext, EffectsMode, EffectsState, FinalFailure, Fingerprint,
    FingerprintError, IdempotencyKey, JobRecord, JobState, KeyDigest, KeyError, LeaseStore,
    ListFilter, ListQuery, Outcome, PerformContext, Recovery, RenewError, Report, RunError, Runner,
    SafeJob, StoreError, TtlError, disposition,
    memory::MemoryTx,
    policy::{FailOn, GiveUpAfter},
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        Renewed, TxEffects,
    },
};
use safejob_test_kit::{
    EffectProbe, MemoryHarness, StoreHarness, assert_effects_in_doubt, assert_exactly_once,
    assert_succeeded,
};
use serde_json::{Value, json};

const TTL: Duration = Duration::from_secs(30);
const PAST_TTL: Duration = Duration::from_secs(31);

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("card declined")]
    Declined,
    #[error(transparent)]
    Renew(#[from] RenewError),
}

type PerformFn<'a> =
    Box<dyn Fn(&mut PerformContext<'_>) -> Result<Outcome, JobError> + Send + Sync + 'a>;
type EffectsFn<'a> =
    Box<dyn Fn(&mut EffectsContext<'_>) -> Result<(), JobError> + Send + Sync + 'a>;

/// A job built from closures; its probe counts effects that returned `Ok`.
struct Job<'a> {
    key: String,
    fingerprint: Option<u8>,
    ttl: Option<Duration>,
    perform: PerformFn<'a>,
    effects: EffectsFn<'a>,
    has_effects: bool,
    probe: EffectProbe,
}

impl<'a> Job<'a> {
    fn new(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            fingerprint: Some(1),
            ttl: None,
            perform: Box::new(|_| Ok(Outcome::json(json!({"paid": 250})))),
            effects: Box::new(|_| Ok(())),
            has_effects: true,
            probe: EffectProbe::new(),
        }
    }

    fn perform(
        mut self,
        f: impl Fn(&mut PerformContext<'_>) -> Result<Outcome, JobError> + Send + Sync + 'a,
    ) -> Self {
        self.perform = Box::new(f);
        self
    }

    fn effects(
        mut self,
        f: impl Fn(&mut EffectsContext<'_>) -> Result<(), JobError> + Send + Sync + 'a,
    ) -> Self {
        self.effects = Box::new(f);
        self
    }

    fn without_effects(mut self) -> Self {
        self.has_effects = false;
        self
    }

    fn fingerprint(mut self, n: Option<u8>) -> Self {
        self.fingerprint = n;
        self
    }

    fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    fn idempotency_key(&self) -> IdempotencyKey {
        IdempotencyKey::new(self.key.clone()).unwrap()
    }

    fn digest(&self) -> KeyDigest {
        *self.idempotency_key().digest()
    }
}

impl SafeJob for Job<'_> {
    type Error = JobError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.clone())
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Ok(self.fingerprint.map(|n| Fingerprint::of_bytes(&[n])))
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        (self.perform)(ctx)
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        (self.effects)(ctx)?;
        self.probe.record(ctx.key());
        Ok(())
    }

    fn has_effects(&self) -> bool {
        self.has_effects
    }
}

fn runner_on(store: Arc<dyn LeaseStore>, worker: &str) -> Runner {
    Runner::builder(store)
        .worker_id(worker)
        .default_ttl(TTL)
        .build()
        .unwrap()
}

fn runner(harness: &MemoryHarness, worker: &str) -> Runner {
    runner_on(harness.store(), worker)
}

fn row(harness: &MemoryHarness, digest: &KeyDigest) -> JobRecord {
    harness.store().get(digest).unwrap().expect("a row")
}

fn listed(harness: &MemoryHarness, filter: ListFilter) -> Vec<KeyDigest> {
    harness
        .store()
        .list(&ListQuery::new(filter, 1000))
        .unwrap()
        .into_iter()
        .map(|r| r.digest)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------------

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
    assert_eq!(
        busy,
        Report::Busy {
            owner: Some("dead-worker".into()),
            until: held.expires_at,
            retry_after: TTL,
        }
    );
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
        store.finalize_succeeded(&lease, None, TTL, None).unwrap(),
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
            "idempotency key is 256 bytes long; the limit is 255 bytes",
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

// ---------------------------------------------------------------------------------------------
// Runner behaviour
// ---------------------------------------------------------------------------------------------

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

/// A long job that renews from `ctx` keeps its lease far past the original TTL: duplicates stay
/// out, and it finalizes on its first attempt.
#[test]
fn renewing_keeps_a_long_job_lease() {
    let harness = MemoryHarness::new();
    let other = runner(&harness, "duplicate");
    let duplicate = Job::new("export:1");
    let job = Job::new("export:1").perform(|ctx| {
        for _ in 0..5 {
            harness.advance(Duration::from_secs(20));
            let until = ctx.renew()?;
            assert_eq!(until, harness.clock().now() + chrono::Duration::seconds(30));
            assert_eq!(ctx.lease_expires_at(), until);
            ctx.keep_alive()?;
            assert!(matches!(
                other.run(&duplicate).unwrap(),
                Report::Busy { .. }
            ));
        }
        Ok(Outcome::done())
    });
    let report = runner(&harness, "long").run(&job).unwrap();
    assert_eq!(
        report,
        Report::Succeeded {
            result: None,
            attempt: 1
        }
    );
    assert_exactly_once(&job.probe, [job.idempotency_key()]);
    assert_eq!(duplicate.probe.total(), 0);
}

/// A job that finds its lease lost on renewal stops; the runner reports the lost lease and
/// finalizes nothing, even when perform returned `Ok`.
#[test]
fn lease_lost_is_detected_on_renew() {
    let harness = MemoryHarness::new();
    let other = runner(&harness, "other");
    let duplicate = Job::new("export:2");
    let saw_lost = AtomicBool::new(false);
    let job = Job::new("export:2").perform(|ctx| {
        harness.advance(PAST_TTL);
        assert!(matches!(
            other.run(&duplicate).unwrap(),
            Report::Succeeded { .. }
        ));
        let renewed = ctx.renew();
        assert!(
            matches!(renewed, Err(RenewError::LeaseLost { fence: 1 })),
            "{renewed:?}"
        );
        assert!(ctx.lease_lost());
        assert!(matches!(
            ctx.keep_alive(),
            Err(RenewError::LeaseLost { .. })
        ));
        saw_lost.store(true, Ordering::SeqCst);
        Ok(Outcome::json(json!("ignored")))
    });
    let error = runner(&harness, "zombie").run(&job).unwrap_err();
    assert!(saw_lost.load(Ordering::SeqCst));
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
        row(&harness, &job.digest()).result,
        Some(json!({"paid": 250}))
    );
    assert_eq!(job.probe.total(), 0);
}

/// A different fingerprint is a key conflict on every path: held, released, succeeded, failed,
/// and in recovery. Nothing changes.
#[test]
fn key_conflict_on_every_path() {
    let harness = MemoryHarness::new();
    let r = runner(&harness, "w");
    let conflict = |key: &str| {
        let before = row(&harness, &KeyDigest::of(key));
        let error = r.run(&Job::new(key).fingerprint(Some(9))).unwrap_err();
        assert!(
            matches!(&error, RunError::KeyConflict { digest, .. } if *digest == KeyDigest::of(key)),
            "{error:?}"
        );
        assert_eq!(error.disposition(), Disposition::DeadLetter);
        let error = r.run(&Job::new(key).fingerprint(None)).unwrap_err();
        assert!(matches!(error, RunError::KeyConflict { .. }), "{error:?}");
        assert_eq!(row(&harness, &KeyDigest::of(key)), before);
    };
    // Held by a live lease.
    let held = Job::new("conflict:held").perform(|_| {
        conflict("conflict:held");
        Ok(Outcome::done())
    });
    r.run(&held).unwrap();
    // Released.
    let released = Job::new("conflict:released").perform(|_| Err(JobError::Declined));
    assert!(r.run(&released).is_err());
    conflict("conflict:released");
    // Succeeded (the replay path) and failed.
    conflict("conflict:held");
    let failed = Job::new("conflict:failed").perform(|_| Ok(Outcome::failed("x", "y")));
    r.run(&failed).unwrap();
    conflict("conflict:failed");
    // Recovery of in-doubt effects.
    let doubt = Job::new("conflict:doubt").effects(|_| Err(JobError::Declined));
    assert!(r.run(&doubt).is_err());
    let error = r
        .recover_effects(&Job::new("conflict:doubt").fingerprint(Some(9)))
        .unwrap_err();
    assert!(matches!(error, RunError::KeyConflict { .. }), "{error:?}");
    assert_effects_in_doubt(&*harness.store(), [doubt.idempotency_key()]);
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

// ---------------------------------------------------------------------------------------------
// A store decorator that injects store faults
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// The first finalize applies, then reports `AmbiguousCommit`.
    AmbiguousAfterApplying,
    /// The first finalize reports `AmbiguousCommit` without applying.
    AmbiguousWithoutApplying,
    /// Acquire answers `AlreadyFailed` with a row that has no failure stored.
    CorruptFailedRow,
    /// Acquire cannot reach the database.
    Unreachable,
}

struct Faulty {
    inner: Arc<dyn LeaseStore>,
    fault: Fault,
    ambiguous: AtomicU32,
}

impl Faulty {
    fn new(harness: &MemoryHarness, fault: Fault) -> Arc<Self> {
        Arc::new(Self {
            inner: harness.store(),
            fault,
            ambiguous: AtomicU32::new(0),
        })
    }
}

fn ambiguous() -> StoreError {
    StoreError::AmbiguousCommit {
        source: "connection reset during COMMIT".into(),
    }
}

impl LeaseStore for Faulty {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        match self.fault {
            Fault::Unreachable => Err(StoreError::Unreachable {
                target: "db.internal/safejob".into(),
                source: "connection refused".into(),
            }),
            Fault::CorruptFailedRow => match self.inner.acquire(req)? {
                Acquired::Granted(lease) => {
                    let mut row = self.inner.get(&lease.digest)?.expect("row");
                    row.state = JobState::Failed;
                    Ok(Acquired::AlreadyFailed(row))
                }
                other => Ok(other),
            },
            _ => self.inner.acquire(req),
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
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        let first = self.ambiguous.load(Ordering::SeqCst) == 0;
        match self.fault {
            Fault::AmbiguousAfterApplying if first => {
                self.ambiguous.fetch_add(1, Ordering::SeqCst);
                let applied = self
                    .inner
                    .finalize_succeeded(lease, result, effects_ttl, hook)?;
                assert_eq!(applied, Finalized::Committed);
                Err(ambiguous())
            }
            Fault::AmbiguousWithoutApplying if first => {
                self.ambiguous.fetch_add(1, Ordering::SeqCst);
                Err(ambiguous())
            }
            _ => self
                .inner
                .finalize_succeeded(lease, result, effects_ttl, hook),
        }
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
    ) -> Result<FenceCheck, StoreError> {
        self.inner.finalize_failed(lease, failure)
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
        self.inner.list(query)
    }
}
