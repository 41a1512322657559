//! In-process torture per backend: threads × duplicates × injected crashes and pauses, through
//! the test kit's `Torture` harness, then the invariants checked again from the database's own
//! rows with SQL.

#[macro_use]
mod common;

use common::TestDb;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
};
use safejob_diesel::{BackendKind, TransactionExt};
use safejob_test_kit::{CrashPoint, Torture};

/// A payout whose effect, in transactional mode, is a ledger row written in the finalize
/// transaction (the ledger has no unique key, so a second posting would show as a second row).
struct Payout(usize);

#[derive(Debug, thiserror::Error)]
#[error("ledger: {0}")]
struct LedgerError(String);

impl SafeJob for Payout {
    type Error = LedgerError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["payout", &self.0.to_string()])
    }
    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::json(serde_json::json!({ "payout": self.0 })))
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        if !ctx.is_transactional() {
            return Ok(());
        }
        let sql = format!("INSERT INTO ledger (entry) VALUES ('payout-{}')", self.0);
        post(ctx, &sql).map_err(LedgerError)
    }
}

/// A transfer through an API that takes the idempotency key: no effects of its own. If the
/// runner ever called its effects hook, the harness would count it and fail the run.
struct Transfer(usize);

impl SafeJob for Transfer {
    type Error = LedgerError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["transfer", &self.0.to_string()])
    }
    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::json(serde_json::json!({ "transfer": self.0 })))
    }
    fn has_effects(&self) -> bool {
        false
    }
}

fn post(ctx: &mut EffectsContext<'_>, sql: &str) -> Result<(), String> {
    use diesel::connection::SimpleConnection;
    #[cfg(feature = "sqlite")]
    if let Ok(c) = ctx.diesel_connection::<diesel::SqliteConnection>() {
        return c.batch_execute(sql).map_err(|e| e.to_string());
    }
    #[cfg(feature = "postgres")]
    if let Ok(c) = ctx.diesel_connection::<diesel::PgConnection>() {
        return c.batch_execute(sql).map_err(|e| e.to_string());
    }
    #[cfg(feature = "mysql")]
    if let Ok(c) = ctx.diesel_connection::<diesel::MysqlConnection>() {
        return c.batch_execute(sql).map_err(|e| e.to_string());
    }
    Err("no diesel connection in the effects context".into())
}

const KEYS: usize = 60;

fn torture(db: &TestDb, mode: EffectsMode, seed: u64) -> safejob_test_kit::TortureReport {
    let report = Torture::new(db)
        .keys(KEYS)
        .duplicates(4)
        .threads(4)
        .crash_rate(0.25)
        .pause_rate(0.05)
        .effects(mode)
        .seed(seed)
        .run(Payout)
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("{:?} torture on {}: {report}", mode, db.backend().as_str());
    assert_eq!(report.succeeded, KEYS);
    assert!(
        report.total_crashes() > 0,
        "the run injected no crash: {report}"
    );
    report
}

fn int_count(db: &TestDb, table: &str, what: &str) -> i64 {
    let cast = match db.backend() {
        BackendKind::Mysql => "SIGNED",
        _ => "BIGINT",
    };
    db.query_i64(&format!("SELECT CAST({what} AS {cast}) AS n FROM {table}"))
}

on_every_backend! {
    fn after_commit_effects_survive_crashes_and_duplicates(db: &TestDb) {
        let report = torture(db, EffectsMode::AfterCommit, 0x5afe_0001);
        // From the database: one row per key, every one succeeded under a fence it was granted,
        // none left running; effects done unless the run saw them in doubt.
        assert_eq!(db.count("1 = 1"), KEYS as i64);
        assert_eq!(db.count("state = 'succeeded'"), KEYS as i64);
        assert_eq!(db.count("fence < 1 OR attempts < 1 OR finalized_at IS NULL OR result IS NULL"), 0);
        assert_eq!(
            db.count("effects = 'done'") + report.effects_in_doubt as i64,
            KEYS as i64,
            "{report}"
        );
    }

    fn transactional_effects_post_each_ledger_row_exactly_once(db: &TestDb) {
        db.execute("CREATE TABLE ledger (entry VARCHAR(64) NOT NULL)");
        let report = torture(db, EffectsMode::Transactional, 0x5afe_0002);
        assert_eq!(report.effects_in_doubt, 0, "{report}");
        // From the database: exactly one ledger row per key, and every key done.
        assert_eq!(int_count(db, "ledger", "COUNT(*)"), KEYS as i64);
        assert_eq!(int_count(db, "ledger", "COUNT(DISTINCT entry)"), KEYS as i64);
        assert_eq!(db.count("state = 'succeeded' AND effects = 'done'"), KEYS as i64);
    }

    fn jobs_without_effects_finish_done_in_one_step_under_crashes(db: &TestDb) {
        for (mode, seed) in [(EffectsMode::AfterCommit, 0x5afe_0004), (EffectsMode::Transactional, 0x5afe_0005)] {
            let report = Torture::new(db)
                .keys(KEYS)
                .duplicates(4)
                .threads(4)
                .crash_rate(0.3)
                .pause_rate(0.05)
                .effects(mode)
                .seed(seed)
                .run(|i| Transfer(i + KEYS * (seed as usize & 0xf)))
                .unwrap_or_else(|failure| panic!("{failure}"));
            assert_eq!(report.succeeded, KEYS, "{mode:?}: {report}");
            assert!(report.total_crashes() > 0, "{mode:?}: no crash injected: {report}");
            assert_eq!((report.effects_run, report.effects_in_doubt), (0, 0), "{mode:?}: {report}");
        }
        // From the database: every key succeeded with its effects done, none pending or in doubt.
        assert_eq!(db.count("state = 'succeeded' AND effects = 'done'"), 2 * KEYS as i64);
        assert_eq!(db.count("effects <> 'done'"), 0);
    }

    fn crashes_around_the_finalize_never_finalize_twice(db: &TestDb) {
        let report = Torture::new(db)
            .keys(KEYS)
            .duplicates(6)
            .threads(4)
            .crash_rate(0.5)
            .pause_rate(0.1)
            .crash_points([CrashPoint::BeforePerform, CrashPoint::AfterPerform, CrashPoint::AfterFinalize])
            .seed(0x5afe_0003)
            .run(Payout)
            .unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(report.succeeded, KEYS);
        assert_eq!(db.count("state = 'succeeded'"), KEYS as i64);
        assert_eq!(db.count("state <> 'succeeded'"), 0);
    }
}
