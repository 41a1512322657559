//! The transactional outbox on every backend: messages exist if and only if the finalize
//! committed, and the relay delivers each at least once — once in the normal case, again after a
//! claim expired — under a stable message id. Time moves by shifting the rows' timestamps back,
//! never by sleeping.

#[macro_use]
mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Condvar, Mutex, mpsc},
    thread,
    time::Duration,
};

use common::TestDb;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyDigest, KeyError, MemoryStore, Outcome,
    PerformContext, Report, RunError, Runner, SafeJob,
};
use safejob_diesel::{
    BackendKind, DieselStore,
    outbox::{
        self, EmitError, MessageId, OutboxExt, OutboxMessage, Relay, RelayConfigError, RelayError,
        RelayStats, SinkError,
    },
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Emit(#[from] EmitError),
    #[error("the ledger refused the posting")]
    Refused,
}

/// A job whose effects emit one message per topic, then fail if told to.
struct Emitter {
    id: String,
    topics: Vec<&'static str>,
    then_fail: bool,
}

impl Emitter {
    fn new(id: impl Into<String>, topics: &[&'static str]) -> Self {
        Self {
            id: id.into(),
            topics: topics.to_vec(),
            then_fail: false,
        }
    }

    fn digest(&self) -> KeyDigest {
        *self.key().unwrap().digest()
    }
}

impl SafeJob for Emitter {
    type Error = JobError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["outbox-test", &self.id])
    }
    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        for (n, topic) in self.topics.iter().enumerate() {
            let id = ctx.outbox_emit(topic, &json!({"job": self.id, "n": n}))?;
            assert_eq!(id, MessageId::new(*ctx.key().digest(), n as u64));
        }
        if self.then_fail {
            return Err(JobError::Refused);
        }
        Ok(())
    }
}

fn transactional(store: Arc<DieselStore>) -> Runner {
    Runner::builder(store)
        .effects(EffectsMode::Transactional)
        .build()
        .expect("runner")
}

/// Emits `keys` × `per_key` messages through real transactional runs of keys `<prefix><n>`.
fn emit_many(db: &TestDb, prefix: &str, keys: usize, per_key: usize) -> Vec<String> {
    let runner = transactional(db.store.clone());
    let topics = vec!["t"; per_key];
    let mut ids = Vec::new();
    for k in 0..keys {
        let job = Emitter::new(format!("{prefix}{k}"), &topics);
        assert!(matches!(
            runner.run(&job).unwrap(),
            Report::Succeeded { .. }
        ));
        ids.extend((0..per_key).map(|seq| MessageId::new(job.digest(), seq as u64).to_string()));
    }
    ids
}

fn cast(db: &TestDb) -> &'static str {
    match db.backend() {
        BackendKind::Mysql => "SIGNED",
        _ => "BIGINT",
    }
}

/// Rows of `safe_outbox` matching `predicate`.
fn outbox_rows(db: &TestDb, predicate: &str) -> i64 {
    db.query_i64(&format!(
        "SELECT CAST(COUNT(*) AS {}) AS n FROM safe_outbox WHERE {predicate}",
        cast(db)
    ))
}

/// The database clock plus `secs` seconds, in SQL.
fn now_plus(db: &TestDb, secs: i64) -> String {
    match db.backend() {
        BackendKind::Sqlite => format!("strftime('%Y-%m-%d %H:%M:%f', 'now', '{secs:+} seconds')"),
        BackendKind::Postgres => format!("(now() + interval '{secs} seconds')"),
        _ => format!("(UTC_TIMESTAMP(6) + INTERVAL {secs} SECOND)"),
    }
}

/// Moves `column` of every row `secs` seconds into the past: how tests let time pass.
fn shift_back(db: &TestDb, column: &str, secs: i64) {
    let shifted = match db.backend() {
        BackendKind::Sqlite => {
            format!("strftime('%Y-%m-%d %H:%M:%f', {column}, '-{secs} seconds')")
        }
        BackendKind::Postgres => format!("{column} - interval '{secs} seconds'"),
        _ => format!("{column} - INTERVAL {secs} SECOND"),
    };
    db.execute(&format!(
        "UPDATE safe_outbox SET {column} = {shifted} WHERE {column} IS NOT NULL"
    ));
}

/// A receiver: every delivery it was handed, in order.
#[derive(Default)]
struct Receiver {
    deliveries: Mutex<Vec<OutboxMessage>>,
    arrived: Condvar,
}

impl Receiver {
    fn record(&self, msg: &OutboxMessage) {
        self.deliveries.lock().unwrap().push(msg.clone());
        self.arrived.notify_all();
    }

    /// Deliveries per message id, duplicates included.
    fn raw(&self) -> HashMap<String, usize> {
        let mut raw = HashMap::new();
        for msg in self.deliveries.lock().unwrap().iter() {
            *raw.entry(msg.message_id.clone()).or_default() += 1;
        }
        raw
    }

    /// What a receiver deduplicating by message id keeps: each id once.
    fn deduplicated(&self) -> HashSet<String> {
        self.raw().into_keys().collect()
    }

    /// Blocks until `n` distinct ids arrived. The deadline only keeps a broken relay from hanging
    /// the suite; a passing run never gets near it.
    fn wait_for(&self, n: usize) {
        let guard = self.deliveries.lock().unwrap();
        let (guard, timeout) = self
            .arrived
            .wait_timeout_while(guard, Duration::from_secs(120), |d| {
                d.iter()
                    .map(|m| &m.message_id)
                    .collect::<HashSet<_>>()
                    .len()
                    < n
            })
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "only {} deliveries arrived",
            guard.len()
        );
    }

    fn sink(self: &Arc<Self>) -> impl Fn(&OutboxMessage) -> Result<(), SinkError> + use<> {
        let receiver = self.clone();
        move |msg: &OutboxMessage| {
            receiver.record(msg);
            Ok(())
        }
    }
}

fn drain(relay: &Relay) -> RelayStats {
    let mut total = RelayStats::default();
    loop {
        let stats = relay.run_once().expect("relay batch");
        total += stats;
        if stats.claimed == 0 {
            return total;
        }
    }
}

fn expected(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

on_every_backend! {
    fn emitted_rows_commit_with_the_finalize(db: &TestDb) {
        let runner = transactional(db.store.clone());
        let job = Emitter::new("charge", &["payments.charged", "mail.receipt", "ledger.posted"]);
        assert!(matches!(runner.run(&job).unwrap(), Report::Succeeded { .. }));
        assert_eq!(outbox_rows(db, "1 = 1"), 3);
        // A duplicate replays the stored success and emits nothing.
        assert!(matches!(runner.run(&job).unwrap(), Report::AlreadySucceeded { .. }));
        assert_eq!(outbox_rows(db, "1 = 1"), 3);
        assert_eq!(outbox_rows(db, "seq IN (0, 1, 2) AND attempts = 0 AND delivered_at IS NULL"), 3);

        let receiver = Arc::new(Receiver::default());
        let relay = Relay::builder(db.store.clone(), receiver.sink()).build().unwrap();
        let stats = relay.run_once().unwrap();
        assert_eq!((stats.claimed, stats.delivered), (3, 3));
        let got = receiver.deliveries.lock().unwrap().clone();
        for (seq, (msg, topic)) in got.iter().zip(&job.topics).enumerate() {
            assert_eq!(msg.message_id, MessageId::new(job.digest(), seq as u64).to_string());
            assert_eq!(msg.id(), MessageId::new(job.digest(), seq as u64));
            assert_eq!(&msg.topic, topic);
            assert_eq!(msg.payload_json().unwrap(), json!({"job": "charge", "n": seq}));
            assert_eq!(msg.attempt, 1);
        }
        assert_eq!(outbox::counts(&db.store).unwrap().delivered, 3);
    }

    fn an_effects_error_rolls_back_the_messages_with_the_finalize(db: &TestDb) {
        let runner = transactional(db.store.clone());
        let mut job = Emitter::new("refund", &["payments.refunded", "mail.refund"]);
        job.then_fail = true;
        match runner.run(&job) {
            Err(RunError::EffectsRolledBack { source: JobError::Refused, .. }) => {}
            other => panic!("expected the finalize to roll back, got {other:?}"),
        }
        assert_eq!(outbox_rows(db, "1 = 1"), 0, "messages of a rolled-back finalize survived");
        assert_eq!(db.count("state = 'succeeded'"), 0);

        // The retry commits both, and the ids are the ones the first attempt would have had.
        job.then_fail = false;
        assert!(matches!(runner.run(&job).unwrap(), Report::Succeeded { attempt: 2, .. }));
        assert_eq!(db.count("state = 'succeeded'"), 1);
        assert_eq!(outbox_rows(db, "1 = 1"), 2);
        let first = MessageId::new(job.digest(), 0).to_string();
        assert_eq!(outbox_rows(db, &format!("seq = 0 AND message_id = '{first}'")), 1);
        assert_eq!(outbox_rows(db, "seq = 1 AND topic = 'mail.refund'"), 1);
    }

    fn emitting_outside_transactional_mode_is_a_typed_error(db: &TestDb) {
        let runner = Runner::builder(db.store.clone()).build().unwrap(); // after-commit
        match runner.run(&Emitter::new("late", &["t"])) {
            Err(RunError::EffectsInDoubt { source: JobError::Emit(EmitError::NotTransactional), .. }) => {}
            other => panic!("expected NotTransactional, got {other:?}"),
        }
        assert_eq!(outbox_rows(db, "1 = 1"), 0);
    }

    fn a_missing_table_is_a_typed_error(db: &TestDb) {
        db.execute("DROP TABLE safe_outbox");
        let runner = transactional(db.store.clone());
        match runner.run(&Emitter::new("nowhere", &["t"])) {
            Err(RunError::EffectsRolledBack { source: JobError::Emit(EmitError::MissingTable { hint }), .. }) => {
                assert!(hint.contains("migrate"), "{hint}");
            }
            other => panic!("expected MissingTable, got {other:?}"),
        }
        assert_eq!(db.count("state = 'succeeded'"), 0);
        let relay = Relay::builder(db.store.clone(), Receiver::default().sink_owned()).build().unwrap();
        assert!(matches!(relay.run_once(), Err(RelayError::MissingTable { .. })));
    }

    fn the_relay_delivers_each_message_once(db: &TestDb) {
        let ids = emit_many(db, "k", 10, 2);
        let receiver = Arc::new(Receiver::default());
        let relay = Relay::builder(db.store.clone(), receiver.sink()).batch_size(7).build().unwrap();
        let stats = drain(&relay);
        assert_eq!((stats.claimed, stats.delivered, stats.stale), (20, 20, 0));
        assert_eq!(receiver.deduplicated(), expected(&ids));
        assert!(receiver.raw().values().all(|n| *n == 1), "{:?}", receiver.raw());
        assert_eq!(relay.run_once().unwrap().claimed, 0);
        let counts = outbox::counts(&db.store).unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dead), (0, 20, 0));
        assert_eq!(outbox_rows(db, "attempts = 1 AND delivered_at IS NOT NULL AND claim_token IS NULL"), 20);
        // Cleanup (`safejob cleanup`): delivered rows older than the cutoff go, pending stay.
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(outbox::prune_delivered(&db.store, hour).unwrap(), 0, "none is an hour old");
        shift_back(db, "delivered_at", 7200);
        emit_many(db, "later", 1, 2);
        assert_eq!(outbox::prune_delivered(&db.store, hour).unwrap(), 20);
        let counts = outbox::counts(&db.store).unwrap();
        assert_eq!((counts.pending, counts.delivered), (2, 0), "pending messages are kept");
    }

    fn a_failing_sink_is_retried_with_backoff(db: &TestDb) {
        emit_many(db, "k", 1, 1);
        let receiver = Arc::new(Receiver::default());
        let inbox = receiver.clone();
        let relay = Relay::builder(db.store.clone(), move |msg: &OutboxMessage| {
            inbox.record(msg);
            if msg.attempt < 3 {
                return Err(SinkError::unavailable(format!("broker down (attempt {})", msg.attempt)));
            }
            Ok(())
        })
        .backoff(Duration::from_secs(3600), Duration::from_secs(4 * 3600))
        .build()
        .unwrap();

        // Attempt 1 fails: due again in [30 min, 1 h] by the database clock.
        assert_eq!(relay.run_once().unwrap().retried, 1);
        let later = |secs| outbox_rows(db, &format!("available_at > {}", now_plus(db, secs)));
        assert_eq!(later(1790), 1);
        assert_eq!(later(3610), 0);
        assert_eq!(outbox_rows(db, "attempts = 1 AND last_error LIKE '%broker down (attempt 1)%' AND claim_token IS NULL"), 1);
        assert_eq!(relay.run_once().unwrap().claimed, 0, "retried before its backoff");

        // An hour passes. Attempt 2 fails: the delay doubles to [1 h, 2 h].
        shift_back(db, "available_at", 3600);
        assert_eq!(relay.run_once().unwrap().retried, 1);
        assert_eq!(later(3590), 1);
        assert_eq!(later(7210), 0);
        assert_eq!(relay.run_once().unwrap().claimed, 0);

        // Two more hours. Attempt 3 goes through.
        shift_back(db, "available_at", 7200);
        assert_eq!(relay.run_once().unwrap().delivered, 1);
        let attempts: Vec<u32> = receiver.deliveries.lock().unwrap().iter().map(|m| m.attempt).collect();
        assert_eq!(attempts, [1, 2, 3]);
        assert_eq!(outbox_rows(db, "attempts = 3 AND delivered_at IS NOT NULL"), 1);
        assert_eq!(relay.run_once().unwrap().claimed, 0);
    }

    fn exhausted_and_rejected_messages_are_dead_until_requeued(db: &TestDb) {
        let runner = transactional(db.store.clone());
        let job = Emitter::new("poison", &["flaky", "malformed"]);
        runner.run(&job).unwrap();
        let healthy = Arc::new(Mutex::new(false));
        let healthy_sink = healthy.clone();
        let relay = Relay::builder(db.store.clone(), move |msg: &OutboxMessage| match msg.topic.as_str() {
            _ if *healthy_sink.lock().unwrap() => Ok(()),
            "malformed" => Err(SinkError::rejected("unknown schema")),
            _ => Err(SinkError::unavailable("timeout")),
        })
        .max_attempts(2)
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .build()
        .unwrap();

        let first = relay.run_once().unwrap();
        assert_eq!((first.dead, first.retried), (1, 1), "the rejected one dies at once");
        shift_back(db, "available_at", 120);
        assert_eq!(relay.run_once().unwrap().dead, 1, "the flaky one dies at its last attempt");
        assert_eq!(relay.run_once().unwrap().claimed, 0);

        let dead = outbox::dead_messages(&db.store, 0, 10).unwrap();
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|r| r.dead_at.is_some() && r.delivered_at.is_none()));
        assert!(dead[0].last_error.as_deref().unwrap().contains("timeout"));
        assert!(dead[1].last_error.as_deref().unwrap().contains("rejected: unknown schema"));
        assert_eq!(outbox::dead_messages(&db.store, dead[0].message.id, 10).unwrap().len(), 1);

        // An operator fixes the receiver and puts the flaky one back.
        *healthy.lock().unwrap() = true;
        assert!(outbox::requeue(&db.store, &dead[0].message.id()).unwrap());
        assert!(!outbox::requeue(&db.store, &dead[0].message.id()).unwrap(), "not dead any more");
        let stats = relay.run_once().unwrap();
        assert_eq!(stats.delivered, 1);
        let counts = outbox::counts(&db.store).unwrap();
        assert_eq!((counts.pending, counts.delivered, counts.dead), (0, 1, 1));
    }

    fn a_crashed_relays_claim_expires_and_another_relay_redelivers(db: &TestDb) {
        let ids = emit_many(db, "k", 1, 3);
        let receiver = Arc::new(Receiver::default());

        // Relay A hands the first message over and then freezes (a crash, as far as anyone can
        // tell) before recording anything.
        let (frozen_tx, frozen_rx) = mpsc::channel::<()>();
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let freeze = Mutex::new(Some((frozen_tx, wake_rx)));
        let inbox = receiver.clone();
        let relay_a = Relay::builder(db.store.clone(), move |msg: &OutboxMessage| {
            inbox.record(msg);
            let once = freeze.lock().unwrap().take();
            if let Some((frozen, wake)) = once {
                frozen.send(()).unwrap();
                let _ = wake.recv(); // Err: the test failed and let go of the other end
            }
            Ok(())
        })
        .claim_ttl(Duration::from_secs(3600))
        .build()
        .unwrap();
        let relay_b = Relay::builder(Arc::new(db.builder().build().unwrap()), receiver.sink())
            .build()
            .unwrap();

        thread::scope(|scope| {
            // Owned here, so a failing assertion drops it and unfreezes A instead of hanging.
            let wake_tx = wake_tx;
            let a = scope.spawn(|| relay_a.run_once().unwrap());
            frozen_rx.recv_timeout(Duration::from_secs(120)).expect("the relay never reached its sink");
            // A's claim is live: B takes nothing.
            assert_eq!(relay_b.run_once().unwrap().claimed, 0);
            // The claim expires (an hour and a minute pass for the claim).
            shift_back(db, "claimed_until", 3660);
            let b = relay_b.run_once().unwrap();
            assert_eq!((b.claimed, b.delivered), (3, 3));
            assert_eq!(outbox_rows(db, "attempts = 2 AND delivered_at IS NOT NULL"), 3);
            // A wakes up: it finishes its batch, but none of its outcomes is recorded.
            wake_tx.send(()).unwrap();
            let a = a.join().unwrap();
            assert_eq!((a.claimed, a.delivered, a.stale), (3, 0, 3));
        });
        assert_eq!(outbox_rows(db, "delivered_at IS NOT NULL AND claim_token IS NULL"), 3);
        // At least once: the receiver was handed the first message twice (A, then B) ...
        assert!(receiver.raw().values().all(|n| *n >= 1));
        assert_eq!(receiver.raw()[&ids[0]], 2);
        // ... and deduplicating by message id it saw each exactly once.
        assert_eq!(receiver.deduplicated(), expected(&ids));
        assert_eq!(relay_b.run_once().unwrap().claimed, 0);
    }

    fn an_expired_claim_cannot_record_outcomes(db: &TestDb) {
        let ids = emit_many(db, "k", 1, 2);
        let receiver = Arc::new(Receiver::default());
        let (frozen_tx, frozen_rx) = mpsc::channel::<()>();
        let (wake_tx, wake_rx) = mpsc::channel::<()>();
        let freeze = Mutex::new(Some((frozen_tx, wake_rx)));
        let inbox = receiver.clone();
        let slow = Relay::builder(db.store.clone(), move |msg: &OutboxMessage| {
            inbox.record(msg);
            let once = freeze.lock().unwrap().take();
            if let Some((frozen, wake)) = once {
                frozen.send(()).unwrap();
                let _ = wake.recv(); // Err: the test failed and let go of the other end
            }
            Ok(())
        })
        .claim_ttl(Duration::from_secs(600))
        .build()
        .unwrap();
        thread::scope(|scope| {
            let wake_tx = wake_tx; // dropped by a failing assertion: no hang
            let slow = scope.spawn(|| slow.run_once().unwrap());
            frozen_rx.recv_timeout(Duration::from_secs(120)).expect("the relay never reached its sink");
            // The claim runs out while the sink is busy; nobody has taken the messages yet.
            shift_back(db, "claimed_until", 660);
            wake_tx.send(()).unwrap();
            let stats = slow.join().unwrap();
            assert_eq!((stats.claimed, stats.delivered, stats.stale), (2, 0, 2));
        });
        // Its token still matches, but its claim is over: nothing was marked.
        assert_eq!(outbox_rows(db, "delivered_at IS NULL AND attempts = 1"), 2);
        let relay = Relay::builder(db.store.clone(), receiver.sink()).build().unwrap();
        assert_eq!(relay.run_once().unwrap().delivered, 2);
        assert_eq!(receiver.deduplicated(), expected(&ids));
        assert!(receiver.raw().values().all(|n| *n == 2), "{:?}", receiver.raw());
    }

    fn stopping_mid_batch_gives_the_rest_back(db: &TestDb) {
        let ids = emit_many(db, "k", 1, 5);
        let receiver = Arc::new(Receiver::default());
        let stop = outbox::StopSignal::new();
        let inbox = receiver.clone();
        let stopper = stop.clone();
        let relay = Relay::builder(db.store.clone(), move |msg: &OutboxMessage| {
            inbox.record(msg);
            stopper.stop(); // shutdown arrives while the first message is in hand
            Ok(())
        })
        .build()
        .unwrap();
        let stats = relay.run(&stop);
        assert_eq!((stats.claimed, stats.delivered, stats.released), (5, 1, 4));
        // Given back as they were: due now, not claimed, the attempt not counted.
        assert_eq!(outbox_rows(db, "delivered_at IS NULL AND claim_token IS NULL AND attempts = 0"), 4);
        let rest = Relay::builder(db.store.clone(), receiver.sink()).build().unwrap();
        assert_eq!(rest.run_once().unwrap().delivered, 4);
        assert_eq!(receiver.deduplicated(), expected(&ids));
        assert!(receiver.raw().values().all(|n| *n == 1));
    }

    fn concurrent_relays_deliver_everything_without_doubles(db: &TestDb) {
        let ids = emit_many(db, "k", 60, 2);
        let receiver = Arc::new(Receiver::default());
        let relays: Vec<Relay> = (0..4)
            .map(|_| {
                let store = Arc::new(db.builder().max_size(3).build().unwrap());
                Relay::builder(store, receiver.sink()).batch_size(5).build().unwrap()
            })
            .collect();
        let total = thread::scope(|scope| {
            let workers: Vec<_> = relays.iter().map(|r| scope.spawn(|| drain(r))).collect();
            let mut total = RelayStats::default();
            for w in workers {
                total += w.join().unwrap();
            }
            total
        });
        assert_eq!((total.delivered, total.stale, total.retried), (120, 0, 0));
        assert_eq!(receiver.deduplicated(), expected(&ids));
        let doubles: Vec<_> = receiver.raw().into_iter().filter(|(_, n)| *n > 1).collect();
        assert!(doubles.is_empty(), "delivered twice: {doubles:?}");
        assert_eq!(outbox::counts(&db.store).unwrap().delivered, 120);
    }

    fn a_spawned_relay_runs_until_shut_down(db: &TestDb) {
        let ids = emit_many(db, "k", 15, 2);
        let receiver = Arc::new(Receiver::default());
        let handle = Relay::builder(db.store.clone(), receiver.sink())
            .threads(3)
            .batch_size(4)
            .poll_interval(Duration::from_millis(20))
            .build()
            .unwrap()
            .spawn();
        receiver.wait_for(ids.len());
        // Emitted while the relay runs: picked up by a later poll.
        let more = emit_many(db, "late", 1, 1);
        receiver.wait_for(ids.len() + 1);
        let stats = handle.shutdown();
        assert_eq!(stats.delivered, 31);
        assert_eq!(stats.errors, 0);
        assert!(receiver.raw().values().all(|n| *n == 1));
        assert!(receiver.deduplicated().contains(&more[0]));
        assert_eq!(outbox::counts(&db.store).unwrap().pending, 0);
    }
}

impl Receiver {
    /// A sink into a receiver nobody looks at.
    fn sink_owned(self) -> impl Fn(&OutboxMessage) -> Result<(), SinkError> + use<> {
        Arc::new(self).sink()
    }
}

#[test]
fn emitting_through_a_store_without_outbox_is_a_typed_error() {
    // The memory store has transactional effects, but no SQL connection to write rows with.
    let runner = Runner::builder(Arc::new(MemoryStore::new()))
        .effects(EffectsMode::Transactional)
        .build()
        .unwrap();
    match runner.run(&Emitter::new("memory", &["t"])) {
        Err(RunError::EffectsRolledBack {
            source: JobError::Emit(EmitError::UnsupportedStore),
            ..
        }) => {}
        other => panic!("expected UnsupportedStore, got {other:?}"),
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn relay_settings_are_validated() {
    let db = common::sqlite("relay_settings");
    let builder = || Relay::builder(db.store.clone(), |_: &OutboxMessage| Ok(()));
    let err = |b: safejob_diesel::outbox::RelayBuilder| b.build().unwrap_err();
    assert_eq!(
        err(builder().batch_size(0)),
        RelayConfigError::InvalidBatchSize { got: 0 }
    );
    assert_eq!(
        err(builder().threads(0)),
        RelayConfigError::InvalidThreads { got: 0 }
    );
    assert!(matches!(
        err(builder().claim_ttl(Duration::ZERO)),
        RelayConfigError::InvalidClaimTtl { .. }
    ));
    assert!(matches!(
        err(builder().backoff(Duration::from_secs(10), Duration::from_secs(1))),
        RelayConfigError::InvalidBackoff { .. }
    ));
    assert!(matches!(
        err(builder().poll_interval(Duration::ZERO)),
        RelayConfigError::InvalidPollInterval { .. }
    ));
    assert_eq!(
        err(builder().max_attempts(0)),
        RelayConfigError::ZeroMaxAttempts
    );
    assert!(builder().build().is_ok());
}
