//! The Redis Streams consumer against a real Redis (`SAFEJOB_REDIS_URL`, e.g.
//! `redis://127.0.0.1:6379`): duplicate entries, one consumer that dies in the middle of
//! `perform` and one between the effect and the `XACK`, their entries reclaimed with
//! `XAUTOCLAIM`, poison entries — every credit succeeds once and is posted once, and the poison
//! reaches the dead-letter stream with its error. Without the URL the tests print a skip line,
//! unless `SAFEJOB_REQUIRE_BACKENDS=1`, when they fail.

mod common;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, atomic::AtomicBool},
    thread,
    time::{Duration, Instant},
};

use redis::{Commands, Connection, streams::StreamRangeReply};
use safejob_brokers::{
    DecodeError, Stats,
    redis::{self as broker, RedisConsumer, RedisSettings, RedisSink, Streams},
};
use safejob_diesel::testing::TestDb;

struct Fixture {
    url: String,
    conn: Connection,
    streams: Streams,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.streams.delete(&mut self.conn);
    }
}

impl Fixture {
    fn new(test: &str) -> Option<Self> {
        let url = safejob_test_kit::backend_url("SAFEJOB_REDIS_URL")?;
        let mut conn = match broker::connect(&url) {
            Ok(conn) => conn,
            Err(e) => {
                safejob_test_kit::skip_unless_required(format_args!(
                    "Redis not reachable at {}: {e}",
                    broker::redact(&url)
                ));
                return None;
            }
        };
        let streams = Streams::unique(&format!("safejob:brokers-test:{test}"));
        streams.create(&mut conn).expect("create the group");
        Some(Self { url, conn, streams })
    }

    fn add(&mut self, body: &[u8]) {
        let body = String::from_utf8_lossy(body).into_owned();
        let _id: String = self
            .conn
            .xadd(&self.streams.stream, "*", &[("body", body)])
            .expect("XADD");
    }

    fn consumer(
        &self,
        db: &TestDb,
        name: &str,
        stats: &Arc<Stats>,
        settings: RedisSettings,
    ) -> RedisConsumer {
        RedisConsumer::connect(
            &self.url,
            self.streams.clone(),
            name,
            common::runner(db, name),
            settings,
            stats.clone(),
        )
        .expect("consumer")
    }
}

fn settings() -> RedisSettings {
    RedisSettings {
        batch: 4,
        block: Duration::from_millis(50),
        min_idle: Duration::from_millis(300),
        renew_every: Duration::from_millis(100),
    }
}

fn decoder(
    run: &str,
    die: bool,
) -> impl Fn(&redis::streams::StreamId) -> Result<common::Credit, DecodeError> {
    let (run, started) = (run.to_owned(), Arc::new(AtomicBool::new(false)));
    move |entry| {
        let body: String = entry
            .get("body")
            .ok_or_else(|| DecodeError::new("no \"body\" field"))?;
        let mut credit = common::decode(&run, &started, body.as_bytes())?;
        credit.die = die;
        Ok(credit)
    }
}

/// Survivors poll until `published` entries are acknowledged (or 40 s pass).
fn drain(fx: &Fixture, db: &TestDb, stats: &Arc<Stats>, published: usize, settings: RedisSettings) {
    let run = fx.streams.stream.clone();
    let started = Instant::now();
    thread::scope(|scope| {
        for name in ["survivor-a", "survivor-b"] {
            let (run, stats) = (run.clone(), stats.clone());
            scope.spawn(move || {
                let mut consumer = fx.consumer(db, name, &stats, settings);
                let decode = decoder(&run, false);
                while stats.snapshot().acked < published
                    && started.elapsed() < Duration::from_secs(40)
                {
                    consumer.poll(&decode).expect("poll");
                }
            });
        }
    });
}

// Duplicates, two kills and two poison entries: every credit posted once, the poison in the
// dead-letter stream with its error, nothing left pending. Deliberate breaks it caught: `settle`
// acking a dead letter without the `XADD` (the dead stream is empty), and `reclaim` never
// called by `poll` (the killed consumers' entries stay pending: not drained).
#[test]
fn duplicates_kills_and_poison_still_credit_each_once() {
    let Some(mut fx) = Fixture::new("main") else {
        return;
    };
    let db = common::store();
    let run = fx.streams.stream.clone();
    const N: usize = 24;
    let ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    let mut published = 0;
    for (i, id) in ids.iter().enumerate() {
        for _ in 0..1 + i % 3 {
            fx.add(&common::payload(id, 100 + i as i64, false, 0));
            published += 1;
        }
    }
    let duplicates = published - N;
    fx.add(b"not json");
    fx.add(&common::payload("poison", 1, true, 0));
    published += 2;
    let stats = Arc::new(Stats::default());

    // Kill 1: a consumer reads a batch and dies (a panic) in the middle of the first perform.
    let mut victim = fx.consumer(&db, "victim-perform", &stats, settings());
    let batch = victim.read_new().expect("XREADGROUP");
    let died = catch_unwind(AssertUnwindSafe(|| {
        victim.run(&batch[0], decoder(&run, true))
    }));
    assert!(died.is_err(), "the victim died");
    drop(victim);

    // Kill 2: a consumer runs one entry through the guard and dies before its XACK.
    let mut victim = fx.consumer(&db, "victim-ack", &stats, settings());
    let batch = victim.read_new().expect("XREADGROUP");
    victim.run(&batch[0], decoder(&run, false)).expect("run");
    drop(victim);
    let kills = 2;

    drain(&fx, &db, &stats, published, settings());
    let seen = stats.snapshot();
    assert_eq!(seen.acked, published, "{seen:?}");
    assert!(
        seen.redeliveries >= 2 * 4,
        "both victims' batches were reclaimed: {seen:?}"
    );
    assert_eq!(seen.dead_lettered, 2, "{seen:?}");
    assert_eq!(fx.streams.pending(&mut fx.conn).expect("XPENDING"), 0);

    let once = common::assert_each_once(&db, &run, &ids);
    let dead: StreamRangeReply = fx.conn.xrange_all(&fx.streams.dead).expect("XRANGE");
    let mut errors: Vec<String> = dead
        .ids
        .iter()
        .map(|e| e.get::<String>("dead.reason").unwrap_or_default())
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0], "failed: declined", "{errors:?}");
    assert!(errors[1].starts_with("undecodable: "), "{errors:?}");
    common::report("redis", seen.deliveries, duplicates, kills, once, N);
}

// A perform four times longer than `min_idle` is not reclaimed by the other consumer while it
// runs: its entry is re-claimed by its own consumer every `renew_every`. Deliberate break it
// caught: the renewal's `XCLAIM` given `IDLE 1000000` (the entry looks idle instead of fresh) —
// the other consumer reclaims it again and again (`redeliveries` 11).
#[test]
fn renewal_keeps_a_slow_entry_from_being_reclaimed() {
    let Some(mut fx) = Fixture::new("renew") else {
        return;
    };
    let db = common::store();
    let run = fx.streams.stream.clone();
    fx.add(&common::payload("slow", 5, false, 1200));
    let stats = Arc::new(Stats::default());
    drain(&fx, &db, &stats, 1, settings());
    // Long enough for a reclaim to happen if the entry had been left idle.
    thread::sleep(settings().min_idle * 2);
    let mut late = fx.consumer(&db, "late", &stats, settings());
    late.poll(decoder(&run, false)).expect("poll");
    let seen = stats.snapshot();
    assert_eq!((seen.deliveries, seen.redeliveries), (1, 0), "{seen:?}");
    assert_eq!(common::assert_each_once(&db, &run, &["slow".to_owned()]), 1);
}

// The relay's sink adds each message once per id within its window: the relay delivering every
// message twice leaves three entries, each with its stable `message_id`. Deliberate break it
// caught: the script's `SET NX` guard removed (six entries).
#[test]
fn the_sink_adds_each_outbox_message_once_per_id() {
    let Some(mut fx) = Fixture::new("sink") else {
        return;
    };
    let db = common::store();
    let run = fx.streams.stream.clone();
    common::emit_three(&db, &run);
    let sink = RedisSink::connect(&fx.url, fx.streams.stream.clone(), Duration::from_secs(60))
        .expect("sink");
    assert_eq!(common::relay_twice(&db, Arc::new(sink)), 6);
    let added: StreamRangeReply = fx.conn.xrange_all(&fx.streams.stream).expect("XRANGE");
    assert_eq!(added.ids.len(), 3, "one entry per message id");
    let mut seqs: Vec<String> = added
        .ids
        .iter()
        .filter_map(|e| e.get::<String>("message_id"))
        .filter_map(|id| id.rsplit_once('-').map(|(_, seq)| seq.to_owned()))
        .collect();
    seqs.sort();
    assert_eq!(seqs, ["0", "1", "2"]);
    let markers: Vec<String> = fx
        .conn
        .keys(format!("{}:dedup:*", fx.streams.stream))
        .expect("KEYS");
    let _: usize = fx.conn.del(&markers).expect("DEL");
}
