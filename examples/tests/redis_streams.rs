//! A Redis Streams consumer group behind the guard, against a real Redis: duplicate entries,
//! consumers killed after reading and before acknowledging, a busy key left pending and
//! reclaimed — and still every payment succeeds once and is posted to the ledger once, as the
//! database (not the consumers' memory) says.
//!
//! Redis comes from `SAFEJOB_REDIS_URL` (default `redis://127.0.0.1:6379`). Without one these
//! tests print a skip line, unless `SAFEJOB_REQUIRE_BACKENDS=1`, when they fail.

use std::{
    path::PathBuf,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use diesel::{
    RunQueryDsl,
    sql_types::{BigInt, Text},
};
use redis::{Commands, Connection, streams::StreamPendingCountReply};
use safejob_core::{
    EffectsMode, IdempotencyKey, LeaseStore, Runner, SafeJob,
    store::{AcquireRequest, Acquired, FenceCheck},
};
use safejob_diesel::{ConnectionRef, DieselStore};
use safejob_examples::{
    redis_queue::{
        self, BoxError, ConsumeStats, ConsumerSpec, Crash, Payment, PaymentMsg, Settings, Streams,
    },
    shuffle,
};
use safejob_test_kit::{EffectProbe, assert_exactly_once, assert_succeeded, check_exactly_once};

/// One test's Redis streams and SQLite file, removed when it ends, however it ends.
struct Fixture {
    url: String,
    conn: Connection,
    streams: Streams,
    store: Arc<DieselStore>,
    db: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.streams.delete(&mut self.conn);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.db.display()));
        }
    }
}

/// A fixture, or `None` (after a skip line) when Redis is not reachable and not required.
fn fixture(name: &str) -> Option<Fixture> {
    let url = redis_queue::redis_url();
    let mut conn = match redis_queue::connect(&url) {
        Ok(conn) => conn,
        Err(e) => {
            let shown = redis_queue::redact(&url);
            safejob_test_kit::skip_unless_required(format_args!(
                "Redis not reachable at {shown}: {e}"
            ));
            return None;
        }
    };
    let streams = Streams::unique(&format!("safejob:test:{name}"));
    streams
        .create(&mut conn)
        .expect("create the stream and group");
    let db = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "redis_streams-{name}-{}.db",
        streams.stream.replace(':', "_")
    ));
    let store = Arc::new(
        DieselStore::connect(&format!("sqlite://{}", db.display())).expect("open the SQLite store"),
    );
    store.migrate().expect("migrate");
    redis_queue::create_ledger(&store).expect("create the ledger");
    Some(Fixture {
        url,
        conn,
        streams,
        store,
        db,
    })
}

impl Fixture {
    fn payments(&self, n: usize) -> Vec<PaymentMsg> {
        (0..n)
            .map(|i| PaymentMsg {
                id: format!("p{i:03}"),
                account: ["north", "south"][i % 2].to_owned(),
                cents: 100 + i as i64,
            })
            .collect()
    }

    fn job(&self, msg: &PaymentMsg) -> Payment {
        Payment {
            run: self.streams.stream.clone(),
            msg: msg.clone(),
        }
    }

    fn keys(&self, payments: &[PaymentMsg]) -> Vec<IdempotencyKey> {
        payments
            .iter()
            .map(|p| self.job(p).key().expect("valid key"))
            .collect()
    }

    fn consume(
        &self,
        consumers: &[ConsumerSpec],
        expected: usize,
        settings: &Settings,
    ) -> ConsumeStats {
        let run = self.streams.stream.clone();
        redis_queue::consume(
            &self.url,
            &self.streams,
            consumers,
            expected,
            settings,
            |name| -> Result<Runner, BoxError> {
                Ok(Runner::builder(self.store.clone())
                    .worker_id(name)
                    .effects(EffectsMode::Transactional)
                    .build()?)
            },
            |entry| {
                PaymentMsg::decode(entry).map(|msg| Payment {
                    run: run.clone(),
                    msg,
                })
            },
        )
        .expect("the consumers finish")
    }

    /// The ledger's postings, read from the database, as an effect probe keyed like the jobs.
    fn ledger_probe(&self) -> (EffectProbe, usize, i64) {
        let rows =
            redis_queue::ledger_rows(&self.store, &self.streams.stream).expect("read ledger");
        let probe = EffectProbe::new();
        for (id, _) in &rows {
            probe.record(
                &IdempotencyKey::from_parts(["redis-payment", &self.streams.stream, id])
                    .expect("valid key"),
            );
        }
        let total = rows.iter().map(|(_, cents)| cents).sum();
        (probe, rows.len(), total)
    }

    /// Everything is acknowledged and nothing waits in any pending list.
    fn assert_drained(&mut self, stats: &ConsumeStats, produced: usize) {
        assert_eq!(stats.acked, produced, "every entry acknowledged once");
        assert_eq!(
            self.streams.pending(&mut self.conn).expect("XPENDING"),
            0,
            "no entry left pending"
        );
    }
}

fn fast_settings() -> Settings {
    Settings {
        batch: 6,
        min_idle: Duration::from_millis(200),
        ..Settings::default()
    }
}

#[test]
fn duplicates_and_crashed_consumers_still_succeed_exactly_once() {
    let Some(mut fx) = fixture("crashes") else {
        return;
    };
    const KEYS: usize = 30;
    let payments = fx.payments(KEYS);
    // Each payment 1 to 3 times, shuffled; then two poison entries.
    let mut entries: Vec<Vec<(&'static str, String)>> = payments
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(p.fields(), 1 + i % 3))
        .collect();
    let payment_entries = entries.len();
    shuffle(&mut entries, 0x00c0_ffee);
    entries.push(
        PaymentMsg {
            id: "bad\u{1b}id".into(),
            account: "north".into(),
            cents: 1,
        }
        .fields(),
    );
    entries.push(vec![("id", "no-amount".into())]);
    let produced = redis_queue::produce(&fx.url, &fx.streams, &entries, 3).expect("XADD");
    assert_eq!(produced, payment_entries + 2);

    let consumers = [
        ConsumerSpec::crashing("dies-after-reading", Crash::AfterRead, 0),
        ConsumerSpec::crashing("dies-mid-batch", Crash::AfterRead, 2),
        ConsumerSpec::crashing("dies-before-ack", Crash::BeforeAck, 1),
        ConsumerSpec::survivor("survivor-a"),
        ConsumerSpec::survivor("survivor-b"),
        ConsumerSpec::survivor("survivor-c"),
    ];
    let stats = fx.consume(&consumers, produced, &fast_settings());

    // The crashes happened and left entries behind, and the survivors reclaimed every one.
    assert_eq!(stats.crashes, 3, "{stats:?}");
    assert!(stats.abandoned >= 3, "{stats:?}");
    assert!(stats.reclaimed >= stats.abandoned, "{stats:?}");
    // The payment run before the crash, before its XACK, came back and was replayed.
    assert!(stats.replayed_after_reclaim >= 1, "{stats:?}");
    // One successful run per key; every other payment entry was absorbed as a duplicate.
    assert_eq!(stats.succeeded, KEYS, "{stats:?}");
    assert!(stats.absorbed >= payment_entries - KEYS, "{stats:?}");
    assert_eq!(stats.dead_lettered, 2, "{stats:?}");
    assert!(fx.streams.dead_letters(&mut fx.conn).expect("XLEN") >= 2);
    fx.assert_drained(&stats, produced);

    // The truth, from the database: every key succeeded, every payment posted once.
    let keys = fx.keys(&payments);
    assert_succeeded(&*fx.store, &keys);
    let (probe, rows, total) = fx.ledger_probe();
    assert_exactly_once(&probe, &keys);
    assert_eq!(rows, KEYS);
    assert_eq!(total, payments.iter().map(|p| p.cents).sum::<i64>());

    // And the check is live: a second posting of one payment is caught.
    fx.store
        .with_connection(|conn| match conn {
            ConnectionRef::Sqlite(conn) => diesel::sql_query(
                "INSERT INTO redis_payments_ledger (run, payment_id, account, cents) VALUES (?, ?, ?, ?)",
            )
            .bind::<Text, _>(&fx.streams.stream)
            .bind::<Text, _>(&payments[0].id)
            .bind::<Text, _>(&payments[0].account)
            .bind::<BigInt, _>(payments[0].cents)
            .execute(*conn),
            _ => unreachable!("the fixture's store is SQLite"),
        })
        .expect("connection")
        .expect("insert");
    let (doubled, _, _) = fx.ledger_probe();
    let violation = check_exactly_once(&doubled, &keys).expect_err("a double posting is caught");
    assert_eq!(violation.offenders.len(), 1, "{violation}");
}

#[test]
fn the_whole_stream_delivered_again_is_replayed_not_paid_again() {
    let Some(mut fx) = fixture("replay") else {
        return;
    };
    const KEYS: usize = 20;
    let payments = fx.payments(KEYS);
    let entries: Vec<_> = payments.iter().map(PaymentMsg::fields).collect();
    let survivors = [
        ConsumerSpec::survivor("first-a"),
        ConsumerSpec::survivor("first-b"),
    ];

    let produced = redis_queue::produce(&fx.url, &fx.streams, &entries, 1).expect("XADD");
    let first = fx.consume(&survivors, produced, &fast_settings());
    assert_eq!(first.succeeded, KEYS, "{first:?}");
    fx.assert_drained(&first, produced);

    // The producer replays its whole outbox: every entry again, with new stream ids.
    let again = redis_queue::produce(&fx.url, &fx.streams, &entries, 2).expect("XADD");
    let second = fx.consume(&survivors, again, &fast_settings());
    assert_eq!(second.succeeded, 0, "nothing runs twice: {second:?}");
    assert_eq!(second.absorbed, KEYS, "{second:?}");
    fx.assert_drained(&second, again);

    let keys = fx.keys(&payments);
    assert_succeeded(&*fx.store, &keys);
    let (probe, rows, _) = fx.ledger_probe();
    assert_exactly_once(&probe, &keys);
    assert_eq!(rows, KEYS);
}

#[test]
fn a_busy_key_stays_pending_and_is_reclaimed_until_it_can_run() {
    let Some(mut fx) = fixture("busy") else {
        return;
    };
    const KEYS: usize = 4;
    let payments = fx.payments(KEYS);
    let entries: Vec<_> = payments.iter().map(PaymentMsg::fields).collect();
    let produced = redis_queue::produce(&fx.url, &fx.streams, &entries, 1).expect("XADD");

    // Another worker holds the lease on the first payment: every delivery of it is `Busy`.
    let held = fx.job(&payments[0]);
    let request = AcquireRequest {
        digest: *held.key().expect("key").digest(),
        fingerprint: held.fingerprint().expect("fingerprint"),
        owner: "another-worker",
        ttl: Duration::from_secs(600),
    };
    let Acquired::Granted(lease) = fx.store.acquire(&request).expect("acquire") else {
        panic!("the first acquire of a fresh key is granted");
    };

    let settings = fast_settings();
    let stats = thread::scope(|scope| {
        // The holder lets go once Redis shows the busy entry delivered twice: left pending by
        // one delivery, reclaimed by XAUTOCLAIM for the next. Bounded by the deadline.
        let store = &fx.store;
        let (url, streams) = (&fx.url, &fx.streams);
        let holder = scope.spawn(move || -> Result<(), BoxError> {
            let mut conn = redis_queue::connect(url)?;
            let started = Instant::now();
            while started.elapsed() < settings.deadline {
                let pending: StreamPendingCountReply =
                    conn.xpending_count(&streams.stream, &streams.group, "-", "+", 10)?;
                if pending.ids.iter().any(|p| p.times_delivered >= 2) {
                    return match store.release(&lease, Some("the other worker gave up"))? {
                        FenceCheck::Applied => Ok(()),
                        FenceCheck::Stale => Err("the held lease was taken over".into()),
                    };
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err("the busy entry was never redelivered".into())
        });
        let stats = fx.consume(
            &[
                ConsumerSpec::survivor("busy-a"),
                ConsumerSpec::survivor("busy-b"),
            ],
            produced,
            &settings,
        );
        holder.join().expect("holder thread").expect("holder");
        stats
    });

    assert!(stats.left_pending >= 1, "{stats:?}");
    assert!(stats.reclaimed >= 1, "{stats:?}");
    assert_eq!(stats.succeeded, KEYS, "{stats:?}");
    fx.assert_drained(&stats, produced);
    let keys = fx.keys(&payments);
    assert_succeeded(&*fx.store, &keys);
    let (probe, rows, _) = fx.ledger_probe();
    assert_exactly_once(&probe, &keys);
    assert_eq!(rows, KEYS);
}
