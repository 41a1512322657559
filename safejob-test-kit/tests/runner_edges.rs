//! The Runner's edges: a lease lost during `perform`, the accepted TTL and worker-id bounds.
//! Each test says which code change it catches.

use std::time::Duration;

use safejob_core::{
    ConfigError, IdempotencyKey, KeyError, Outcome, PerformContext, Report, RunError, Runner,
    SafeJob, TtlError,
    runner::{MAX_TTL, MIN_TTL, validate_ttl},
    store::AcquireRequest,
};
use safejob_test_kit::{MemoryHarness, StoreHarness};

const TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[error("gave up")]
struct GaveUp;

/// While `perform` runs, its lease expires and another worker takes the key over; `perform`
/// notices through `renew`, ignores it, and returns `then`.
struct Overrun {
    harness: MemoryHarness,
    then: fn() -> Result<Outcome, GaveUp>,
}

impl SafeJob for Overrun {
    type Error = GaveUp;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new("overrun:1")
    }
    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, GaveUp> {
        self.harness.advance(TTL + Duration::from_secs(1));
        let taken = self.harness.store().acquire(&AcquireRequest {
            digest: *ctx.key().digest(),
            fingerprint: None,
            owner: "rival",
            ttl: TTL,
        });
        assert!(matches!(
            taken,
            Ok(safejob_core::store::Acquired::Granted(_))
        ));
        assert!(ctx.renew().is_err());
        assert!(ctx.lease_lost());
        (self.then)()
    }
}

/// A perform that learned its lease was lost ends `LeaseLost`, whatever it returns: its error
/// is not handed back as the job's, its "retry later" is not reported as such.
///
/// Catches: the `lost` check after `perform` removed (`Ok(_) if lost` replaced by `false`): the
/// run then reports `Job` or `RetryLater` for an attempt that no longer owns the key.
#[test]
fn a_lease_lost_during_perform_is_reported_lost() {
    let thens: [fn() -> Result<Outcome, GaveUp>; 2] =
        [|| Err(GaveUp), || Ok(Outcome::retry_later())];
    for then in thens {
        let harness = MemoryHarness::new();
        let runner = Runner::builder(harness.store())
            .default_ttl(TTL)
            .build()
            .unwrap();
        let error = runner
            .run(&Overrun {
                harness: harness.clone(),
                then,
            })
            .unwrap_err();
        assert!(
            matches!(
                error,
                RunError::LeaseLost {
                    fence: 1,
                    attempt: 1
                }
            ),
            "{error:?}"
        );
    }
}

/// While `perform` runs, its lease expires and another worker takes the key over; `perform`
/// does not renew, and decides the job failed for good.
struct FailsTooLate {
    harness: MemoryHarness,
}

impl SafeJob for FailsTooLate {
    type Error = GaveUp;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new("fails-too-late:1")
    }
    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, GaveUp> {
        self.harness.advance(TTL + Duration::from_secs(1));
        let taken = self.harness.store().acquire(&AcquireRequest {
            digest: *ctx.key().digest(),
            fingerprint: None,
            owner: "rival",
            ttl: TTL,
        });
        assert!(matches!(
            taken,
            Ok(safejob_core::store::Acquired::Granted(_))
        ));
        Ok(Outcome::failed("declined", "card declined"))
    }
}

/// A permanent failure decided by an attempt whose lease was taken over finalizes nothing and
/// says so: `LeaseLost`, and the row stays the new holder's.
///
/// Catches: a stale `finalize_failed` reported as applied (`FenceCheck::Stale` answered
/// `Report::Failed` in `pipeline::fail`).
#[test]
fn a_failure_finalized_too_late_is_lease_lost() {
    let harness = MemoryHarness::new();
    let runner = Runner::builder(harness.store())
        .default_ttl(TTL)
        .build()
        .unwrap();
    let job = FailsTooLate {
        harness: harness.clone(),
    };
    let error = runner.run(&job).unwrap_err();
    assert!(
        matches!(
            error,
            RunError::LeaseLost {
                fence: 1,
                attempt: 1
            }
        ),
        "{error:?}"
    );
    let row = harness
        .store()
        .get(job.key().unwrap().digest())
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state, row.fence, row.owner.as_deref()),
        (safejob_core::JobState::Running, 2, Some("rival"))
    );
}

/// The bounds themselves are accepted; one step past them is refused.
///
/// Catches: `<` or `>` in `validate_ttl` turned into `<=` or `>=`.
#[test]
fn ttl_bounds_are_inclusive() {
    assert_eq!(validate_ttl(MIN_TTL), Ok(MIN_TTL));
    assert_eq!(validate_ttl(MAX_TTL), Ok(MAX_TTL));
    assert!(matches!(
        validate_ttl(MIN_TTL - Duration::from_nanos(1)),
        Err(TtlError::TooShort { .. })
    ));
    assert!(matches!(
        validate_ttl(MAX_TTL + Duration::from_nanos(1)),
        Err(TtlError::TooLong { .. })
    ));
}

/// A worker id of 128 bytes is accepted and written into leases; 129 bytes is refused.
///
/// Catches: `>` in the builder's length check turned into `==` or `>=`, and `Runner::worker_id`
/// answering another text.
#[test]
fn worker_ids_up_to_128_bytes_are_accepted() {
    let harness = MemoryHarness::new();
    let id = "w".repeat(128);
    let runner = Runner::builder(harness.store())
        .worker_id(id.clone())
        .build()
        .unwrap();
    assert_eq!(runner.worker_id(), id);
    struct Noop;
    impl SafeJob for Noop {
        type Error = GaveUp;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::new("noop:1")
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, GaveUp> {
            Ok(Outcome::done())
        }
    }
    assert!(matches!(
        runner.run(&Noop).unwrap(),
        Report::Succeeded { .. }
    ));
    let key = IdempotencyKey::new("noop:1").unwrap();
    let row = harness.store().get(key.digest()).unwrap().unwrap();
    assert_eq!(row.owner.as_deref(), Some(id.as_str()));
    assert!(matches!(
        Runner::builder(harness.store())
            .worker_id("w".repeat(129))
            .build(),
        Err(ConfigError::InvalidWorkerId { len: 129 })
    ));
}
