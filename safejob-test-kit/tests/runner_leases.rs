//! The runner's leases: renewals of a long job, a lost lease detected on renew, key conflicts on
//! every path.

mod common;

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use safejob_core::{Disposition, KeyDigest, Outcome, RenewError, Report, RunError};
use safejob_test_kit::{MemoryHarness, StoreHarness, assert_effects_in_doubt, assert_exactly_once};
use serde_json::json;

use common::{Job, JobError, PAST_TTL, row, runner};

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
