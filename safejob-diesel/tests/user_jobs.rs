//! What the test kit catches in a user's own job, on a real database: the ledger row written in
//! `perform` instead of `on_succeeded_once`, and a key with a timestamp in it — each fails the
//! torture with its cause named, and the correct job passes. The ledger is a table in the test's
//! own database, counted with SQL: the way a user checks their job with
//! `safejob_diesel::testing::TestDb` (the memory-store twins are in safejob-test-kit's
//! `tests/user_jobs.rs`).

#[macro_use]
mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use safejob_core::{EffectsContext, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob};
use safejob_diesel::testing;
use safejob_test_kit::{Torture, TortureFailure, TortureReport, torture::Violation};

const KEYS: usize = 60;

/// The user's ledger: one row per posting, in the test's database.
struct Ledger<'a>(&'a testing::TestDb);

impl<'a> Ledger<'a> {
    fn create(db: &'a testing::TestDb) -> Self {
        db.execute("CREATE TABLE ledger (entry VARCHAR(100) NOT NULL)")
            .unwrap_or_else(|e| panic!("{e}"));
        Self(db)
    }

    fn post(&self, key: &IdempotencyKey) -> Result<(), testing::TestDbError> {
        // Test keys are `charge:<n>`: safe to inline.
        self.0
            .execute(&format!(
                "INSERT INTO ledger (entry) VALUES ('{}')",
                key.as_str()
            ))
            .map(drop)
    }

    /// The effect counter handed to the torture: postings of one key, read with SQL.
    fn postings(&self, key: &IdempotencyKey) -> Result<u64, testing::TestDbError> {
        let n = self.0.query_i64(&format!(
            "SELECT COUNT(*) AS n FROM ledger WHERE entry = '{}'",
            key.as_str()
        ))?;
        Ok(n.unsigned_abs())
    }

    fn total(&self) -> i64 {
        self.0
            .query_i64("SELECT COUNT(*) AS n FROM ledger")
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A wallet charge that posts to the ledger, in `perform` (the bug) or in `on_succeeded_once`.
struct Charge<'a> {
    id: usize,
    ledger: &'a Ledger<'a>,
    in_perform: bool,
}

impl SafeJob for Charge<'_> {
    type Error = testing::TestDbError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.id.to_string()])
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        if self.in_perform {
            self.ledger.post(ctx.key())?;
        }
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        if !self.in_perform {
            self.ledger.post(ctx.key())?;
        }
        Ok(())
    }
}

fn torture(db: &testing::TestDb, in_perform: bool) -> Result<TortureReport, TortureFailure> {
    let ledger = Ledger::create(db);
    let result = Torture::new(db)
        .keys(KEYS)
        .duplicates(4)
        .threads(4)
        .crash_rate(0.25)
        .pause_rate(0.0)
        .seed(0x1ed6e7)
        .count_effects(|key: &IdempotencyKey| ledger.postings(key))
        .run(|id| Charge {
            id,
            ledger: &ledger,
            in_perform,
        });
    eprintln!(
        "{} ledger rows on {} for {KEYS} charges",
        ledger.total(),
        db.backend().as_str()
    );
    result
}

/// A charge keyed by the moment it was made.
struct StampedCharge(usize);

impl SafeJob for StampedCharge {
    type Error = std::io::Error;

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

on_every_backend! {
    /// Catches what tests/user_jobs.rs of safejob-test-kit catches, on the database: the counter
    /// not read after perform (no `EffectsInPerform`), the counts not checked at the end (no
    /// `CountedMoreThanOnce`).
    fn a_ledger_written_in_perform_fails_with_its_cause(db: &TestDb) {
        let failure = match torture(db, true) {
            Err(failure @ TortureFailure::Violations { .. }) => failure,
            other => panic!("the ledger-in-perform job passed: {other:?}"),
        };
        let text = failure.to_string();
        eprintln!("{text}");
        assert!(
            text.contains(&format!(
                "\n  cause ({KEYS} keys): effects observed in perform: move them to \
                 on_succeeded_once."
            )),
            "{text}"
        );
        let TortureFailure::Violations { violations, .. } = failure else { unreachable!() };
        assert!(
            violations.iter().any(|v| matches!(v, Violation::CountedMoreThanOnce { .. })),
            "no charge posted twice: {text}"
        );
        assert!(!text.contains("charge:"), "a raw key in the message: {text}");
        // The rows agree: more postings than charges.
        assert!(db.query_i64("SELECT COUNT(*) AS n FROM ledger") > KEYS as i64);
    }

    /// The correct job passes, and its ledger has one row per charge, except where a crash left
    /// the charge in doubt before it posted.
    fn the_correct_job_passes(db: &TestDb) {
        let report = torture(db, false).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.succeeded, KEYS, "{report}");
        assert!(report.total_crashes() > 0, "{report}");
        let rows = db.query_i64("SELECT COUNT(*) AS n FROM ledger");
        assert_eq!(report.effects_counted, Some(rows.unsigned_abs()), "{report}");
        let distinct = db.query_i64("SELECT COUNT(DISTINCT entry) AS n FROM ledger");
        assert_eq!(rows, distinct, "a charge posted twice: {report}");
        assert!(rows + report.effects_in_doubt as i64 >= KEYS as i64, "{report}");
    }

    /// The timestamp in the key fails the run before anything touches the database.
    fn a_timestamp_in_the_key_fails_as_an_unstable_key(db: &TestDb) {
        let result = Torture::new(&**db).seed(9).run(StampedCharge);
        let Err(failure @ TortureFailure::UnstableKey { .. }) = result else {
            panic!("an unstable key was not reported as such: {result:?}");
        };
        eprintln!("{failure}");
        assert!(
            failure.to_string().contains(
                "key() is unstable: the job made for key index 0 (user_jobs::StampedCharge) \
                 returned two different keys from two calls in a row"
            ),
            "{failure}"
        );
        assert_eq!(db.count("1 = 1"), 0, "the run should not have started");
    }
}
