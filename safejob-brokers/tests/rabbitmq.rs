//! The RabbitMQ consumer against a real broker (`SAFEJOB_AMQP_URL`, e.g.
//! `amqp://guest:guest@127.0.0.1:5672/%2f`): duplicates published, one consumer killed in the
//! middle of `perform` and one between the effect and the ack (their connections closed, so the
//! broker requeues their deliveries), a busy key retried through the wait queue, poison messages
//! — every credit succeeds once and is posted once, and the poison reaches the dead-letter queue
//! with its error. Without the URL the tests print a skip line, unless
//! `SAFEJOB_REQUIRE_BACKENDS=1`, when they fail.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use safejob_brokers::{
    DecodeError, Stats,
    rabbitmq::{self, AmqpConsumer, AmqpSettings, AmqpSink, AmqpTopology, ERROR_HEADER},
};
use safejob_core::IdempotencyKey;
use safejob_diesel::testing::TestDb;
use safejob_tokio::AsyncRunner;

/// A topology of its own, deleted when the test ends.
struct Fixture {
    url: String,
    conn: Connection,
    channel: Channel,
    topology: AmqpTopology,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        let url = safejob_test_kit::backend_url("SAFEJOB_AMQP_URL")?;
        let conn = match rabbitmq::connect(&url).await {
            Ok(conn) => conn,
            Err(e) => {
                safejob_test_kit::skip_unless_required(format_args!("RabbitMQ not reachable: {e}"));
                return None;
            }
        };
        let channel = conn.create_channel().await.expect("channel");
        let topology = AmqpTopology::new(common::unique(&format!("safejob.test.{test}")));
        topology.declare(&channel).await.expect("declare");
        Some(Self {
            url,
            conn,
            channel,
            topology,
        })
    }

    async fn consumer(
        &self,
        conn: &Connection,
        db: &TestDb,
        worker: &str,
        stats: &Arc<Stats>,
    ) -> AmqpConsumer {
        AmqpConsumer::new(
            conn.create_channel().await.expect("channel"),
            self.topology.clone(),
            AsyncRunner::new(common::runner(db, worker)),
            AmqpSettings {
                prefetch: 4,
                retry_delay: Duration::from_millis(200),
            },
            stats.clone(),
        )
        .await
        .expect("consumer")
    }

    async fn publish(&self, payload: &[u8]) {
        self.channel
            .basic_publish(
                "",
                &self.topology.queue,
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
    }

    async fn count(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }

    /// Every message of `queue` (acknowledged, so the queue ends empty).
    async fn drain(&self, queue: &str) -> Vec<Delivery> {
        let mut all = Vec::new();
        while let Some(got) = self
            .channel
            .basic_get(queue, BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            got.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            all.push(got.delivery);
        }
        all
    }

    async fn delete(&self) {
        let _ = self.topology.delete(&self.channel).await;
        let _ = self.conn.close(200, "done").await;
    }
}

fn header(delivery: &Delivery, name: &str) -> String {
    match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
    {
        Some(AMQPValue::LongString(text)) => text.to_string(),
        other => format!("{other:?}"),
    }
}

// Duplicates, two kills, a busy key and two poison messages: every credit posted once, the
// poison in the dead-letter queue with its error, nothing left in any queue.
// Deliberate breaks it caught: the retry copy routed to a queue that does not exist (the busy
// credit's message is lost: the drain never completes); the dead letter published without its
// error header (the header check fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_kills_and_poison_still_credit_each_once() {
    let Some(fx) = Fixture::new("main").await else {
        return;
    };
    let db = common::store();
    let run = fx.topology.queue.clone();
    const N: usize = 24;
    let ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    let mut published = 0;
    for (i, id) in ids.iter().enumerate() {
        // c000 is slow: the first consumer dies inside its perform.
        let slow = if i == 0 { 1500 } else { 0 };
        for _ in 0..1 + i % 3 {
            fx.publish(&common::payload(id, 100 + i as i64, false, slow))
                .await;
            published += 1;
        }
    }
    let duplicates = published - N;
    fx.publish(b"not json").await;
    fx.publish(&common::payload("poison", 1, true, 0)).await;
    published += 2;

    let stats = Arc::new(Stats::default());
    let started = Arc::new(AtomicBool::new(false));
    let decoder = |run: String, started: Arc<AtomicBool>| {
        move |d: &Delivery| -> Result<common::Credit, DecodeError> {
            common::decode(&run, &started, &d.data)
        }
    };

    // Kill 1: a consumer dies in the middle of perform: its task is aborted and its connection
    // closed (the blocking run goes on, as a paused process would, holding the lease).
    let conn = rabbitmq::connect(&fx.url).await.expect("connect");
    let victim = fx.consumer(&conn, &db, "victim-perform", &stats).await;
    let decode = decoder(run.clone(), started.clone());
    let task = tokio::spawn(async move {
        victim
            .consume("victim-perform", decode, std::future::pending())
            .await
    });
    assert!(
        common::wait_until(Duration::from_secs(20), || started.load(Ordering::SeqCst)).await,
        "the slow credit's perform never started"
    );
    task.abort();
    let _ = task.await;
    conn.close(320, "killed").await.expect("close");

    // Kill 2: a consumer runs one delivery through the guard and dies before its ack.
    let conn = rabbitmq::connect(&fx.url).await.expect("connect");
    let victim = fx.consumer(&conn, &db, "victim-ack", &stats).await;
    let channel = conn.create_channel().await.expect("channel");
    let got = channel
        .basic_get(&fx.topology.queue, BasicGetOptions::default())
        .await
        .expect("basic.get")
        .expect("a message");
    let _ = victim
        .run(&got.delivery, decoder(run.clone(), started.clone()))
        .await;
    conn.close(320, "killed").await.expect("close");
    let kills = 2;

    // Two survivors drain the queue.
    let stop = Arc::new(tokio::sync::Notify::new());
    let conn = rabbitmq::connect(&fx.url).await.expect("connect");
    let mut survivors = Vec::new();
    for name in ["survivor-a", "survivor-b"] {
        let consumer = fx.consumer(&conn, &db, name, &stats).await;
        let (decode, stop) = (decoder(run.clone(), started.clone()), stop.clone());
        survivors.push(tokio::spawn(async move {
            consumer
                .consume(name, decode, async move { stop.notified().await })
                .await
        }));
    }
    let drained = common::wait_until(Duration::from_secs(40), || {
        stats.snapshot().acked >= published
    })
    .await;
    stop.notify_waiters();
    for survivor in survivors {
        survivor.await.expect("survivor task").expect("survivor");
    }
    let _ = conn.close(200, "done").await;
    let seen = stats.snapshot();
    assert!(
        drained,
        "not every message was settled: {seen:?} of {published}"
    );
    assert_eq!(seen.acked, published, "{seen:?}");
    assert!(
        seen.redeliveries >= 2,
        "the killed consumers' deliveries came back: {seen:?}"
    );
    assert!(
        seen.retried >= 1,
        "the busy key went through the wait queue: {seen:?}"
    );
    assert_eq!(seen.dead_lettered, 2, "{seen:?}");
    assert_eq!(fx.count(&fx.topology.queue).await, 0, "queue empty");
    assert_eq!(
        fx.count(&fx.topology.wait_queue).await,
        0,
        "wait queue empty"
    );

    let once = common::assert_each_once(&db, &run, &ids);
    let dead = fx.drain(&fx.topology.dead_queue).await;
    let mut errors: Vec<String> = dead.iter().map(|d| header(d, ERROR_HEADER)).collect();
    errors.sort();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0], "failed: declined", "{errors:?}");
    assert!(errors[1].starts_with("undecodable: "), "{errors:?}");
    common::report("rabbitmq", seen.deliveries, duplicates, kills, once, N);
    fx.delete().await;
}

// A retry without a delay (perform says "not ready" with no delay, and the consumer's
// `retry_delay` is zero) is a `basic.nack` with requeue: the broker redelivers at once, marked
// redelivered, and the wait queue is never used. Deliberate break it caught: the nack without
// `requeue` (the broker drops the message: never acked, the key never succeeds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_without_delay_is_a_nack_with_requeue() {
    let Some(fx) = Fixture::new("requeue").await else {
        return;
    };
    let db = common::store();
    let run = fx.topology.queue.clone();
    fx.publish(&common::payload("later", 7, false, 0)).await;
    let stats = Arc::new(Stats::default());
    let conn = rabbitmq::connect(&fx.url).await.expect("connect");
    let consumer = AmqpConsumer::new(
        conn.create_channel().await.expect("channel"),
        fx.topology.clone(),
        AsyncRunner::new(common::runner(&db, "requeue")),
        AmqpSettings {
            prefetch: 1,
            retry_delay: Duration::ZERO,
        },
        stats.clone(),
    )
    .await
    .expect("consumer");
    let not_ready = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (run, stop, not_ready) = (run.clone(), stop.clone(), not_ready.clone());
        tokio::spawn(async move {
            let started = Arc::new(AtomicBool::new(false));
            let decode = move |d: &Delivery| -> Result<common::Credit, DecodeError> {
                let mut credit = common::decode(&run, &started, &d.data)?;
                credit.not_ready = not_ready.clone();
                Ok(credit)
            };
            consumer
                .consume("requeue", decode, async move { stop.notified().await })
                .await
        })
    };
    let acked = common::wait_until(Duration::from_secs(20), || stats.snapshot().acked >= 1).await;
    stop.notify_waiters();
    task.await.expect("task").expect("consumer");
    let seen = stats.snapshot();
    assert!(acked, "{seen:?}");
    assert_eq!(
        (seen.deliveries, seen.redeliveries, seen.retried, seen.acked),
        (3, 2, 2, 1),
        "{seen:?}"
    );
    assert_eq!(fx.count(&fx.topology.wait_queue).await, 0);
    assert_eq!(
        common::assert_each_once(&db, &run, &["later".to_owned()]),
        1
    );
    let _ = conn.close(200, "done").await;
    fx.delete().await;
}

// The relay's sink publishes with the stable message id in `message_id`: RabbitMQ keeps no
// deduplication window, so the relay delivering every message twice leaves six messages — and
// a guarded consumer keyed by `message_id` credits each of the three once. Deliberate break it
// caught: the sink without `with_message_id` (no delivery decodes: six dead letters, nothing
// credited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_publishes_stable_ids_that_a_guarded_consumer_dedups() {
    let Some(fx) = Fixture::new("sink").await else {
        return;
    };
    let db = common::store();
    let (url, queue, run) = (
        fx.url.clone(),
        fx.topology.queue.clone(),
        fx.topology.queue.clone(),
    );
    let (db, delivered) = tokio::task::spawn_blocking(move || {
        common::emit_three(&db, &run);
        let sink = AmqpSink::connect(&url, "", queue).expect("sink");
        let delivered = common::relay_twice(&db, Arc::new(sink));
        (db, delivered)
    })
    .await
    .expect("relay thread");
    assert_eq!(delivered, 6);
    assert_eq!(
        fx.count(&fx.topology.queue).await,
        6,
        "no dedup window in RabbitMQ"
    );

    let stats = Arc::new(Stats::default());
    let conn = rabbitmq::connect(&fx.url).await.expect("connect");
    let consumer = fx.consumer(&conn, &db, "receiver", &stats).await;
    let run = fx.topology.queue.clone();
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = {
        let (run, stop) = (run.clone(), stop.clone());
        tokio::spawn(async move {
            let decode = move |d: &Delivery| -> Result<common::Credit, DecodeError> {
                let id = d
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string())
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| DecodeError::new("no message_id"))?;
                Ok(common::credit_for_message(&run, &id))
            };
            consumer
                .consume("receiver", decode, async move { stop.notified().await })
                .await
        })
    };
    assert!(common::wait_until(Duration::from_secs(20), || stats.snapshot().acked >= 6).await);
    stop.notify_waiters();
    task.await.expect("task").expect("consumer");
    let seen = stats.snapshot();
    assert_eq!((seen.succeeded, seen.replayed), (3, 3), "{seen:?}");
    // The three message ids, each credited once.
    let digest = IdempotencyKey::from_parts(["emit", &run])
        .expect("key")
        .digest()
        .to_hex();
    let ids: Vec<String> = (0..3).map(|seq| format!("{digest}-{seq}")).collect();
    assert_eq!(common::assert_each_once(&db, &run, &ids), 3);
    let _ = conn.close(200, "done").await;
    fx.delete().await;
}
