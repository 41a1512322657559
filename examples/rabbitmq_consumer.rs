//! A RabbitMQ queue behind the guard: credits delivered twice, a consumer killed in the middle of
//! a credit, poison messages — and still every credit is posted once.
//!
//! ```sh
//! cargo run --example rabbitmq_consumer --features safejob-examples/rabbitmq
//! ```
//!
//! Needs RabbitMQ at `SAFEJOB_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`). The
//! store is a SQLite file under `target/`.
//!
//! A producer publishes 30 credits, most of them several times (the same credit id, so the same
//! idempotency key), plus an undecodable message and a credit to a closed account. A first
//! consumer takes the first (slow) credit and is killed while its perform runs: its connection
//! closes and RabbitMQ requeues what it held. Three survivors consume the queue through
//! `safejob_brokers::rabbitmq::AmqpConsumer`, each delivery run by the guard on tokio's blocking
//! pool: the slow credit, still held by the dead consumer's lease, is answered busy and waits in
//! the wait queue; duplicates are replayed and acked; the poison goes to the dead-letter exchange
//! with its error. The final check reads the guard's rows and the ledger back from the database.

use std::{sync::Arc, time::Duration};

use lapin::{BasicProperties, options::BasicPublishOptions};
use safejob_brokers::{
    Stats,
    rabbitmq::{self, AmqpConsumer, AmqpSettings, AmqpTopology},
};
use safejob_examples::broker_credits::{self, BoxError, Credit};
use safejob_tokio::AsyncRunner;

const CREDITS: usize = 30;
const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), BoxError> {
    let url = std::env::var("SAFEJOB_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let conn = rabbitmq::connect(&url)
        .await
        .map_err(|e| format!("RabbitMQ not reachable (SAFEJOB_AMQP_URL): {e}"))?;
    let channel = conn.create_channel().await?;
    let topology = AmqpTopology::new(broker_credits::unique("safejob.example.credits"));
    topology.declare(&channel).await?;
    let outcome = run(&url, &channel, &topology).await;
    topology.delete(&channel).await?;
    conn.close(200, "done").await?;
    outcome
}

async fn run(url: &str, channel: &lapin::Channel, topology: &AmqpTopology) -> Result<(), BoxError> {
    let store = broker_credits::open_store("safejob-rabbitmq-consumer.db")?;
    let run = topology.queue.clone();
    let ids: Vec<String> = (0..CREDITS).map(|i| format!("cr{i:03}")).collect();
    let mut published = 0;
    for (i, id) in ids.iter().enumerate() {
        let slow = if i == 0 { 1500 } else { 0 };
        for _ in 0..1 + i % 3 {
            let body = broker_credits::payload(id, "acme", 100 + i as i64, slow);
            publish(channel, &topology.queue, &body).await?;
            published += 1;
        }
    }
    let duplicates = published - CREDITS;
    publish(channel, &topology.queue, b"{not json").await?;
    publish(
        channel,
        &topology.queue,
        &broker_credits::payload("cr-closed", "closed", 1, 0),
    )
    .await?;
    published += 2;

    let stats = Arc::new(Stats::default());
    let settings = AmqpSettings {
        prefetch: 1,
        retry_delay: Duration::from_millis(300),
    };
    let consumer = |conn: lapin::Connection, worker: &'static str| {
        let (store, stats, topology, run) =
            (store.clone(), stats.clone(), topology.clone(), run.clone());
        async move {
            let runner = AsyncRunner::new(broker_credits::runner(&store, worker)?);
            let amqp = AmqpConsumer::new(
                conn.create_channel().await?,
                topology,
                runner,
                settings,
                stats,
            )
            .await?;
            let decode = move |d: &lapin::message::Delivery| Credit::decode(&run, &d.data);
            Ok::<_, BoxError>((conn, amqp, decode))
        }
    };

    // The consumer that dies: killed while the slow credit's perform runs.
    let (victim_conn, victim, decode) = consumer(rabbitmq::connect(url).await?, "victim").await?;
    let task = tokio::spawn(async move {
        victim
            .consume("victim", decode, std::future::pending())
            .await
    });
    while stats.snapshot().deliveries == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    victim_conn.close(320, "killed").await?;
    println!("killed a consumer in the middle of a credit: its deliveries were requeued");

    let stop = Arc::new(tokio::sync::Notify::new());
    let mut survivors = Vec::new();
    for worker in ["survivor-a", "survivor-b", "survivor-c"] {
        let (conn, amqp, decode) = consumer(rabbitmq::connect(url).await?, worker).await?;
        let stop = stop.clone();
        survivors.push(tokio::spawn(async move {
            let done = amqp
                .consume(worker, decode, async move { stop.notified().await })
                .await;
            let _ = conn.close(200, "done").await;
            done
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
        "deliveries: {} (redelivered by RabbitMQ: {}), succeeded now: {}, duplicates replayed: {}",
        seen.deliveries, seen.redeliveries, seen.succeeded, seen.replayed
    );
    println!(
        "retried through the wait queue: {}, dead-lettered to {}: {}, acked: {} of {published}",
        seen.retried, topology.dead_exchange, seen.dead_lettered, seen.acked
    );
    let once =
        tokio::task::spawn_blocking(move || broker_credits::exactly_once(&store, &run, &ids))
            .await??;
    println!(
        "rabbitmq: deliveries {}, duplicates injected {duplicates}, consumer kills 1, succeeded exactly once {once} of {CREDITS}",
        seen.deliveries
    );
    if once != CREDITS || seen.acked != published || seen.dead_lettered != 2 {
        return Err("a credit was lost or posted twice, or a message was left behind".into());
    }
    Ok(())
}

async fn publish(channel: &lapin::Channel, queue: &str, body: &[u8]) -> Result<(), BoxError> {
    channel
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await?;
    Ok(())
}
