//! What the broker tests share: a guarded job that credits an account once per id, its ledger in
//! a SQLite store of its own (per test), payloads, unique names, and the exactly-once check read
//! from the database.

#![allow(dead_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use safejob_brokers::DecodeError;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, LeaseStore, Outcome, PerformContext,
    Runner, SafeJob,
};
use safejob_diesel::{TransactionExt, testing::TestDb};
use safejob_test_kit::{EffectProbe, assert_exactly_once, assert_succeeded};

/// A name unique to this process and moment, safe in queue, stream and subject names.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}

/// One credit as the producers publish it: JSON `{"id", "cents", "fail", "slow_ms"}`.
pub fn payload(id: &str, cents: i64, fail: bool, slow_ms: u64) -> Vec<u8> {
    serde_json::json!({ "id": id, "cents": cents, "fail": fail, "slow_ms": slow_ms })
        .to_string()
        .into_bytes()
}

/// The guarded job: credits `cents` once per `id` (within one run), writing a ledger row in the
/// finalize transaction. `fail` makes perform fail for good (dead-lettered); `slow_ms` makes it
/// take that long; `started` is raised when perform begins; `die` makes perform panic, the way a
/// thread's consumer dies in the middle of it.
#[derive(Debug)]
pub struct Credit {
    pub run: String,
    pub id: String,
    pub cents: i64,
    pub fail: bool,
    pub slow_ms: u64,
    pub started: Arc<AtomicBool>,
    pub die: bool,
    /// While above zero, perform answers "not ready, retry later" (without a delay) and counts
    /// it down.
    pub not_ready: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    #[error(transparent)]
    Tx(#[from] safejob_diesel::TxError),
    #[error(transparent)]
    Ledger(#[from] safejob_diesel::EffectsTxError),
}

impl SafeJob for Credit {
    type Error = CreditError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["credit", &self.run, &self.id])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.started.store(true, Ordering::SeqCst);
        if self.die {
            panic!("the consumer died in the middle of perform (on purpose)");
        }
        let not_ready = self
            .not_ready
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if not_ready.is_ok() {
            return Ok(Outcome::retry_later());
        }
        if self.slow_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.slow_ms));
        }
        if self.fail {
            return Ok(Outcome::failed(
                "declined",
                "the account refused the credit",
            ));
        }
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        ctx.effects_tx()?.insert(
            "broker_ledger",
            &[
                ("run", (&self.run).into()),
                ("id", (&self.id).into()),
                ("cents", self.cents.into()),
            ],
        )?;
        Ok(())
    }
}

/// Decodes a payload into a [`Credit`] of `run`; bad JSON or a missing field is a
/// [`DecodeError`].
pub fn decode(run: &str, started: &Arc<AtomicBool>, bytes: &[u8]) -> Result<Credit, DecodeError> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::new(e.to_string()))?;
    let id = value["id"]
        .as_str()
        .ok_or_else(|| DecodeError::new("no \"id\""))?;
    let cents = value["cents"]
        .as_i64()
        .ok_or_else(|| DecodeError::new("no \"cents\""))?;
    Ok(Credit {
        run: run.to_owned(),
        id: id.to_owned(),
        cents,
        fail: value["fail"].as_bool().unwrap_or(false),
        slow_ms: value["slow_ms"].as_u64().unwrap_or(0),
        started: started.clone(),
        die: false,
        not_ready: Arc::default(),
    })
}

/// A SQLite store of its own, migrated, with the ledger table. No unique constraint on the
/// ledger on purpose: a credit posted twice shows as two rows.
pub fn store() -> TestDb {
    let db = TestDb::sqlite().expect("a SQLite TestDb");
    db.execute(
        "CREATE TABLE broker_ledger (run TEXT NOT NULL, id TEXT NOT NULL, cents BIGINT NOT NULL)",
    )
    .expect("create the ledger");
    db
}

/// A runner named `worker` on `db`, effects in the finalize transaction, short leases.
pub fn runner(db: &TestDb, worker: &str) -> Arc<Runner> {
    Arc::new(
        Runner::builder(db.store().clone())
            .worker_id(worker)
            .effects(EffectsMode::Transactional)
            .default_ttl(Duration::from_secs(5))
            .build()
            .expect("runner"),
    )
}

/// The keys of `ids` in `run`.
pub fn keys(run: &str, ids: &[String]) -> Vec<IdempotencyKey> {
    ids.iter()
        .map(|id| IdempotencyKey::from_parts(["credit", run, id]).expect("key"))
        .collect()
}

/// Checks, from the database, that every id of `ids` succeeded and was credited exactly once;
/// returns how many did.
pub fn assert_each_once(db: &TestDb, run: &str, ids: &[String]) -> usize {
    let keys = keys(run, ids);
    assert_succeeded(&**db.store() as &dyn LeaseStore, &keys);
    let probe = EffectProbe::new();
    let mut once = 0;
    for (id, key) in ids.iter().zip(&keys) {
        let rows = db
            .query_i64(&format!(
                "SELECT COUNT(*) AS n FROM broker_ledger WHERE run = '{run}' AND id = '{id}'"
            ))
            .expect("count the ledger");
        for _ in 0..rows {
            probe.record(key);
        }
        once += usize::from(rows == 1);
    }
    assert_exactly_once(&probe, &keys);
    let total = db
        .query_i64(&format!(
            "SELECT COUNT(*) AS n FROM broker_ledger WHERE run = '{run}'"
        ))
        .expect("count the ledger");
    assert_eq!(total as usize, ids.len(), "no ledger row for anything else");
    once
}

/// The line every broker test prints, on the standard error handle itself so that a plain
/// `cargo test` (which captures `println!` of passing tests) shows it.
pub fn report(
    broker: &str,
    deliveries: usize,
    duplicates: usize,
    kills: usize,
    once: usize,
    n: usize,
) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{broker}: deliveries {deliveries}, duplicates injected {duplicates}, consumer kills {kills}, succeeded exactly once {once} of {n}"
    );
}

/// Waits until `done` or `limit`, checking every 50 ms.
pub async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// A guarded job with no effects but a ledger row, for the sink tests: keyed by the message id
/// a receiver got.
pub fn credit_for_message(run: &str, message_id: &str) -> Credit {
    Credit {
        run: run.to_owned(),
        id: message_id.to_owned(),
        cents: 1,
        fail: false,
        slow_ms: 0,
        started: Arc::default(),
        die: false,
        not_ready: Arc::default(),
    }
}

/// Three outbox messages, emitted by one guarded job in its finalize transaction.
pub fn emit_three(db: &TestDb, run: &str) {
    struct Emit(String);
    impl SafeJob for Emit {
        type Error = safejob_diesel::outbox::EmitError;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["emit", &self.0])
        }
        fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            Ok(Outcome::done())
        }
        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
            use safejob_diesel::outbox::OutboxExt;
            for n in 0..3 {
                ctx.outbox_emit("credits.posted", &serde_json::json!({ "n": n }))?;
            }
            Ok(())
        }
    }
    runner(db, "emitter")
        .run(&Emit(run.to_owned()))
        .expect("emit");
}

/// Relays the store's outbox through `sink` twice, putting every message back in between as if
/// the relay had crashed before marking them delivered; returns how many deliveries were made.
pub fn relay_twice(db: &TestDb, sink: Arc<dyn safejob_diesel::outbox::Sink>) -> u64 {
    let mut total = 0;
    for _ in 0..2 {
        let relay = safejob_diesel::outbox::Relay::builder_with_shared_sink(
            db.store().clone(),
            sink.clone(),
        )
        .build()
        .expect("relay");
        total += relay.run_once().expect("relay").delivered;
        db.execute("UPDATE safe_outbox SET delivered_at = NULL")
            .expect("undeliver");
    }
    total
}
