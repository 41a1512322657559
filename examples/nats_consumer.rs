//! A NATS JetStream stream behind the guard: credits delivered twice, a consumer killed in the
//! middle of a credit, poison messages — and still every credit is posted once.
//!
//! ```sh
//! cargo run --example nats_consumer --features safejob-examples/nats
//! ```
//!
//! Needs a NATS server with JetStream at `SAFEJOB_NATS_URL` (default `nats://127.0.0.1:4222`).
//! The store is a SQLite file under `target/`.
//!
//! A producer publishes 30 credits, most of them several times (the same credit id, so the same
//! idempotency key), plus an undecodable message and a credit to a closed account. A first
//! consumer takes the first (slow) credit and is killed while its perform runs: it stops sending
//! in-progress acks, and JetStream redelivers what it held after the consumer's 2 s ack wait. Two
//! survivors consume through `safejob_brokers::nats::NatsConsumer`, each message run by the guard
//! on tokio's blocking pool while in-progress acks keep it theirs: the slow credit, still held by
//! the dead consumer's lease, is nak-ed with a delay; duplicates are replayed and acked; the
//! poison is published to the dead-letter subject with its error and terminated. The final check
//! reads the guard's rows and the ledger back from the database.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, consumer::pull, stream};
use safejob_brokers::{
    Stats,
    nats::{NatsConsumer, NatsSettings},
};
use safejob_examples::broker_credits::{self, BoxError, Credit};
use safejob_tokio::AsyncRunner;

const CREDITS: usize = 30;
const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("SAFEJOB_NATS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let client = async_nats::connect(&url)
        .await
        .map_err(|e| format!("NATS not reachable (SAFEJOB_NATS_URL): {e}"))?;
    let js = jetstream::new(client);
    let name = broker_credits::unique("SAFEJOB_EXAMPLE_CREDITS");
    let outcome = run(&url, &js, &name).await;
    let _ = js.delete_stream(&name).await;
    let _ = js.delete_stream(format!("{name}_DEAD")).await;
    outcome
}

async fn run(url: &str, js: &jetstream::Context, name: &str) -> Result<(), BoxError> {
    let jobs = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.jobs")],
            ..Default::default()
        })
        .await?;
    js.create_stream(stream::Config {
        name: format!("{name}_DEAD"),
        subjects: vec![format!("{name}.dead")],
        ..Default::default()
    })
    .await?;
    let pull = jobs
        .create_consumer(pull::Config {
            durable_name: Some("credits".into()),
            ack_wait: Duration::from_secs(2),
            ..Default::default()
        })
        .await?;

    let store = broker_credits::open_store("safejob-nats-consumer.db")?;
    let run = name.to_owned();
    let ids: Vec<String> = (0..CREDITS).map(|i| format!("cr{i:03}")).collect();
    let subject = format!("{name}.jobs");
    let mut published = 0;
    for (i, id) in ids.iter().enumerate() {
        let slow = if i == 0 { 3000 } else { 0 };
        for _ in 0..1 + i % 3 {
            let body = broker_credits::payload(id, "acme", 100 + i as i64, slow);
            js.publish(subject.clone(), body.into()).await?.await?;
            published += 1;
        }
    }
    let duplicates = published - CREDITS;
    js.publish(subject.clone(), "{not json".into())
        .await?
        .await?;
    let closed = broker_credits::payload("cr-closed", "closed", 1, 0);
    js.publish(subject.clone(), closed.into()).await?.await?;
    published += 2;

    let stats = Arc::new(Stats::default());
    let consumer = |js: jetstream::Context, worker: &str| -> Result<NatsConsumer, BoxError> {
        let settings = NatsSettings {
            progress_every: Duration::from_millis(500),
            retry_delay: Duration::from_millis(300),
            ..NatsSettings::new(format!("{name}.dead"))
        };
        let runner = AsyncRunner::new(broker_credits::runner(&store, worker)?);
        Ok(NatsConsumer::new(js, runner, settings, stats.clone()))
    };
    let decoder = |run: String| move |m: &jetstream::Message| Credit::decode(&run, &m.payload);

    // The consumer that dies: its own connection, killed while the slow credit's perform runs.
    let victim_js = jetstream::new(async_nats::connect(url).await?);
    let victim = consumer(victim_js.clone(), "victim")?;
    let (victim_pull, decode) = (pull.clone(), decoder(run.clone()));
    let task = tokio::spawn(async move {
        victim
            .consume(&victim_pull, decode, std::future::pending())
            .await
    });
    while stats.snapshot().deliveries == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    drop(victim_js);
    println!(
        "killed a consumer in the middle of a credit: JetStream redelivers after the ack wait"
    );

    let stop = Arc::new(tokio::sync::Notify::new());
    let mut survivors = Vec::new();
    for worker in ["survivor-a", "survivor-b"] {
        let nats = consumer(js.clone(), worker)?;
        let (pull, decode, stop) = (pull.clone(), decoder(run.clone()), stop.clone());
        survivors.push(tokio::spawn(async move {
            nats.consume(&pull, decode, async move { stop.notified().await })
                .await
        }));
    }
    let started = std::time::Instant::now();
    while stats.snapshot().acked < published && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.notify_waiters();
    for survivor in survivors {
        survivor.await??;
    }

    let seen = stats.snapshot();
    println!(
        "deliveries: {} (redelivered by JetStream: {}), succeeded now: {}, duplicates replayed: {}",
        seen.deliveries, seen.redeliveries, seen.succeeded, seen.replayed
    );
    println!(
        "nak-ed with a delay: {}, dead-lettered to {name}.dead: {}, acked or terminated: {} of {published}",
        seen.retried, seen.dead_lettered, seen.acked
    );
    let once =
        tokio::task::spawn_blocking(move || broker_credits::exactly_once(&store, &run, &ids))
            .await??;
    println!(
        "nats: deliveries {}, duplicates injected {duplicates}, consumer kills 1, succeeded exactly once {once} of {CREDITS}",
        seen.deliveries
    );
    if once != CREDITS || seen.acked != published || seen.dead_lettered != 2 {
        return Err("a credit was lost or posted twice, or a message was left behind".into());
    }
    Ok(())
}
