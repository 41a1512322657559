//! The NATS JetStream consumer against a real server (`SAFEJOB_NATS_URL`, e.g.
//! `nats://127.0.0.1:4222`, JetStream enabled): duplicates published, one consumer killed in the
//! middle of `perform`, one killed between the effect and the ack, redeliveries after the ack
//! wait, poison messages — every credit succeeds once and is posted once, and the poison reaches
//! the dead-letter stream with its error. Without the URL the tests print a skip line, unless
//! `SAFEJOB_REQUIRE_BACKENDS=1`, when they fail.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{PullConsumer, pull},
    stream,
};
use futures_util::StreamExt;
use safejob_brokers::{
    Stats,
    nats::{ERROR_HEADER, NatsConsumer, NatsSettings, NatsSink},
};
use safejob_tokio::AsyncRunner;

const ACK_WAIT: Duration = Duration::from_secs(1);

/// A stream `<name>` on `<name>.jobs`, a dead-letter stream on `<name>.dead`, and a durable pull
/// consumer with a 1 s ack wait; deleted when the test ends.
struct Fixture {
    js: jetstream::Context,
    name: String,
    consumer: PullConsumer,
}

impl Fixture {
    async fn new(test: &str) -> Option<Self> {
        let url = safejob_test_kit::backend_url("SAFEJOB_NATS_URL")?;
        let client = match async_nats::connect(&url).await {
            Ok(client) => client,
            Err(e) => {
                safejob_test_kit::skip_unless_required(format_args!("NATS not reachable: {e}"));
                return None;
            }
        };
        let js = jetstream::new(client);
        let name = common::unique(&format!("SJ_{test}"));
        let jobs = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.jobs")],
                ..Default::default()
            })
            .await
            .expect("create the jobs stream");
        js.create_stream(stream::Config {
            name: format!("{name}_DEAD"),
            subjects: vec![format!("{name}.dead")],
            ..Default::default()
        })
        .await
        .expect("create the dead-letter stream");
        let consumer = jobs
            .create_consumer(pull::Config {
                durable_name: Some("credits".into()),
                ack_wait: ACK_WAIT,
                ..Default::default()
            })
            .await
            .expect("create the consumer");
        Some(Self { js, name, consumer })
    }

    fn settings(&self) -> NatsSettings {
        NatsSettings {
            progress_every: Duration::from_millis(250),
            retry_delay: Duration::from_millis(200),
            ..NatsSettings::new(format!("{}.dead", self.name))
        }
    }

    async fn publish(&self, payload: Vec<u8>) {
        self.js
            .publish(format!("{}.jobs", self.name), payload.into())
            .await
            .expect("publish")
            .await
            .expect("JetStream ack");
    }

    /// `(pending, ack pending)` of the consumer.
    async fn outstanding(&mut self) -> (u64, usize) {
        let info = self.consumer.info().await.expect("consumer info");
        (info.num_pending, info.num_ack_pending)
    }

    /// The dead-letter stream's messages' `Safejob-Error` headers.
    async fn dead_errors(&self) -> Vec<String> {
        let dead = self
            .js
            .get_stream(format!("{}_DEAD", self.name))
            .await
            .expect("the dead stream");
        let reader = dead
            .create_consumer(pull::Config::default())
            .await
            .expect("a reader");
        let mut batch = reader
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .expect("fetch");
        let mut errors = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.expect("a dead letter");
            let error = message
                .headers
                .as_ref()
                .and_then(|h| h.get(ERROR_HEADER))
                .map(|v| v.to_string())
                .unwrap_or_default();
            errors.push(error);
            message.ack().await.expect("ack");
        }
        errors.sort();
        errors
    }

    async fn delete(&self) {
        let _ = self.js.delete_stream(&self.name).await;
        let _ = self.js.delete_stream(format!("{}_DEAD", self.name)).await;
    }
}

// Duplicates, two kills, a busy key and two poison messages: every credit posted once, the
// poison in the dead-letter stream with its error, nothing left pending. Deliberate breaks it
// caught: `settle` not publishing the dead letter (the dead stream is empty); `Retry` answered
// with `+ACK` instead of `-NAK` (the busy key's message is never settled as acked: not drained).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_kills_and_poison_still_credit_each_once() {
    let Some(mut fx) = Fixture::new("main").await else {
        return;
    };
    let db = common::store();
    let run = fx.name.clone();
    const N: usize = 24;
    let ids: Vec<String> = (0..N).map(|i| format!("c{i:03}")).collect();
    // Each credit 1 to 3 times; c000 is slow (the first consumer dies inside its perform, which
    // goes on long after the ack wait: its redeliveries find the key busy).
    let mut published = 0;
    for (i, id) in ids.iter().enumerate() {
        let slow = if i == 0 { 4000 } else { 0 };
        for _ in 0..1 + i % 3 {
            fx.publish(common::payload(id, 100 + i as i64, false, slow))
                .await;
            published += 1;
        }
    }
    let duplicates = published - N;
    fx.publish(b"not json".to_vec()).await;
    fx.publish(common::payload("poison", 1, true, 0)).await;
    published += 2;

    let stats = Arc::new(Stats::default());
    let started = Arc::new(AtomicBool::new(false));
    let consumer_for = |worker: &str| {
        NatsConsumer::new(
            fx.js.clone(),
            AsyncRunner::new(common::runner(&db, worker)),
            fx.settings(),
            stats.clone(),
        )
    };

    // Kill 1: a consumer dies in the middle of perform (its task is aborted; the blocking run
    // goes on, as a paused process would, holding the lease).
    let victim = consumer_for("victim-perform");
    let (pull, decode_run, decode_started) = (fx.consumer.clone(), run.clone(), started.clone());
    let task = tokio::spawn(async move {
        let decode =
            move |m: &jetstream::Message| common::decode(&decode_run, &decode_started, &m.payload);
        victim.consume(&pull, decode, std::future::pending()).await
    });
    assert!(
        common::wait_until(Duration::from_secs(20), || started.load(Ordering::SeqCst)).await,
        "the slow credit's perform never started"
    );
    task.abort();
    let _ = task.await;

    // Kill 2: a consumer runs one message through the guard and dies before its ack.
    let victim = consumer_for("victim-ack");
    let mut one = fx
        .consumer
        .fetch()
        .max_messages(1)
        // The first consumer pulled a batch before it died: wait for its ack wait to pass.
        .expires(ACK_WAIT * 5)
        .messages()
        .await
        .expect("fetch");
    let message = one.next().await.expect("a message").expect("a message");
    let (_kind, _settle) = victim
        .run(&message, |m: &jetstream::Message| {
            common::decode(&run, &started, &m.payload)
        })
        .await
        .expect("run");
    drop((message, one, victim));
    let kills = 2;

    // Two survivors drain the stream; the killed consumers' messages come back after the ack wait.
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut survivors = Vec::new();
    for name in ["survivor-a", "survivor-b"] {
        let consumer = consumer_for(name);
        let (pull, run, started, stop) = (
            fx.consumer.clone(),
            run.clone(),
            started.clone(),
            stop.clone(),
        );
        survivors.push(tokio::spawn(async move {
            let decode = move |m: &jetstream::Message| common::decode(&run, &started, &m.payload);
            consumer
                .consume(&pull, decode, async move { stop.notified().await })
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
    let seen = stats.snapshot();
    assert!(
        drained,
        "not every message was settled: {seen:?} of {published}"
    );
    assert_eq!(seen.acked, published, "{seen:?}");
    assert!(
        seen.redeliveries >= 2,
        "the killed consumers' messages came back: {seen:?}"
    );
    assert_eq!(seen.dead_lettered, 2, "{seen:?}");
    tokio::time::sleep(ACK_WAIT * 2).await;
    assert_eq!(fx.outstanding().await, (0, 0), "nothing left pending");

    let once = common::assert_each_once(&db, &run, &ids);
    let errors = fx.dead_errors().await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0], "failed: declined", "{errors:?}");
    assert!(errors[1].starts_with("undecodable: "), "{errors:?}");
    common::report("nats", seen.deliveries, duplicates, kills, once, N);
    fx.delete().await;
}

// A perform three times longer than the ack wait is not redelivered while it runs: the consumer
// sends in-progress acks. Deliberate break it caught: the `+WPI` not sent — the message is
// redelivered to both consumers while it runs (`redeliveries` 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_acks_keep_a_slow_job_from_being_redelivered() {
    let Some(fx) = Fixture::new("progress").await else {
        return;
    };
    let db = common::store();
    let run = fx.name.clone();
    fx.publish(common::payload("slow", 5, false, 3000)).await;
    let stats = Arc::new(Stats::default());
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for name in ["a", "b"] {
        let consumer = NatsConsumer::new(
            fx.js.clone(),
            AsyncRunner::new(common::runner(&db, name)),
            fx.settings(),
            stats.clone(),
        );
        let (pull, run, started, stop) = (
            fx.consumer.clone(),
            run.clone(),
            started.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let decode = move |m: &jetstream::Message| common::decode(&run, &started, &m.payload);
            consumer
                .consume(&pull, decode, async move { stop.notified().await })
                .await
        }));
    }
    assert!(common::wait_until(Duration::from_secs(20), || stats.snapshot().acked >= 1).await);
    // Long enough for a redelivery to arrive if there had been one.
    tokio::time::sleep(ACK_WAIT * 2).await;
    stop.notify_waiters();
    for task in tasks {
        task.await.expect("task").expect("consumer");
    }
    let seen = stats.snapshot();
    assert_eq!((seen.deliveries, seen.redeliveries), (1, 0), "{seen:?}");
    assert_eq!(common::assert_each_once(&db, &run, &["slow".to_owned()]), 1);
    fx.delete().await;
}

// The relay's sink publishes with `Nats-Msg-Id` = the stable message id: the relay delivering
// every message twice (a crash before it marked them) still leaves one copy per message in the
// stream. Deliberate break it caught: the sink without the `Nats-Msg-Id` header (6 messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_publishes_each_outbox_message_once_per_id() {
    let Some(fx) = Fixture::new("sink").await else {
        return;
    };
    let url = std::env::var("SAFEJOB_NATS_URL").expect("set, or the fixture skipped");
    let subject = format!("{}.jobs", fx.name);
    let name = fx.name.clone();
    let delivered = tokio::task::spawn_blocking(move || {
        let db = common::store();
        common::emit_three(&db, &name);
        common::relay_twice(
            &db,
            Arc::new(NatsSink::connect(&url, subject).expect("sink")),
        )
    })
    .await
    .expect("relay thread");
    assert_eq!(delivered, 6, "the relay delivered each message twice");
    let mut jobs = fx.js.get_stream(&fx.name).await.expect("stream");
    let info = jobs.info().await.expect("stream info");
    assert_eq!(info.state.messages, 3, "one copy per message id");
    fx.delete().await;
}
