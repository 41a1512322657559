//! RabbitMQ (AMQP 0-9-1): a consumer with manual acks and the guard in front of every delivery
//! (feature `rabbitmq`; lapin on tokio, the guard on the blocking pool).
//!
//! [`AmqpTopology`] names and declares what one queue needs: the queue, a wait queue for delayed
//! retries (per-message TTL, dead-lettering back to the queue through the default exchange) and a
//! dead-letter exchange with its queue. The consumer's channel is in confirm mode, so every copy
//! it publishes is confirmed by the broker before the original is acknowledged.
//!
//! | [`Settle`] | AMQP |
//! |---|---|
//! | `Ack` | `basic.ack` |
//! | `Retry { after }`, `after` > 0 | publish a copy to the wait queue with `expiration` = `after` (confirmed), then `basic.ack`: the copy dead-letters back to the queue when it expires |
//! | `Retry { after }`, `after` = 0 | `basic.nack` with `requeue` |
//! | `DeadLetter { reason }` | publish a copy to the dead-letter exchange with the headers `x-safejob-error` and `x-safejob-source-queue` (confirmed), then `basic.ack` |
//!
//! A crash between the confirmed copy and the ack leaves both the copy and the (requeued)
//! original: one more delivery, which the guard answers from the store. The wait queue's TTLs
//! expire at its head only, so a retry waits at least its own delay and at most the longest delay
//! queued before it.
//!
//! **Visibility.** AMQP 0-9-1 has no visibility timeout: a delivery stays with its consumer,
//! unacknowledged, until it is settled or the channel closes (or the broker's `consumer_timeout`
//! passes, 30 minutes by default), and lapin's heartbeats keep the connection alive while the
//! guard runs. A consumer that dies closes its connection, and the broker requeues its
//! unacknowledged deliveries at once, marked `redelivered`.

use std::{future::Future, sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
        QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use safejob_core::SafeJob;
use safejob_tokio::AsyncRunner;

use crate::{DEFAULT_RETRY_DELAY, DecodeError, RunKind, Settle, Stats};

/// The header a dead letter carries its reason in.
pub const ERROR_HEADER: &str = "x-safejob-error";
/// The header naming the queue a dead letter came from.
pub const SOURCE_QUEUE_HEADER: &str = "x-safejob-source-queue";
/// The header an outbox message carries its topic in.
pub const TOPIC_HEADER: &str = "x-safejob-topic";

/// An AMQP operation of the consumer or the sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker or the connection failed.
    #[error("amqp: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker refused a published copy (a `basic.nack` in confirm mode).
    #[error("amqp: the broker did not confirm the message published to {destination:?}")]
    NotConfirmed {
        /// The exchange or queue.
        destination: String,
    },
    /// The sink's runtime could not be built.
    #[error("amqp: cannot start the sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Connects to `url` (e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`) on the current tokio runtime.
pub async fn connect(url: &str) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio::current());
    Ok(Connection::connect(url, properties).await?)
}

/// The names one guarded queue uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpTopology {
    /// The jobs queue.
    pub queue: String,
    /// Where delayed retries wait: `<queue>.wait`.
    pub wait_queue: String,
    /// The dead-letter exchange (fanout): `<queue>.dead`.
    pub dead_exchange: String,
    /// The queue bound to it: `<queue>.dead`.
    pub dead_queue: String,
}

impl AmqpTopology {
    /// The topology of `queue`.
    pub fn new(queue: impl Into<String>) -> Self {
        let queue = queue.into();
        Self {
            wait_queue: format!("{queue}.wait"),
            dead_exchange: format!("{queue}.dead"),
            dead_queue: format!("{queue}.dead"),
            queue,
        }
    }

    /// Declares the queues and the exchange (durable; a no-op when they exist alike).
    pub async fn declare(&self, channel: &Channel) -> Result<(), Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(&self.queue, durable, FieldTable::default())
            .await?;
        let mut wait_args = FieldTable::default();
        wait_args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from("")),
        );
        wait_args.insert(
            ShortString::from("x-dead-letter-routing-key"),
            AMQPValue::LongString(LongString::from(self.queue.as_str())),
        );
        channel
            .queue_declare(&self.wait_queue, durable, wait_args)
            .await?;
        channel
            .exchange_declare(
                &self.dead_exchange,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(&self.dead_queue, durable, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                &self.dead_queue,
                &self.dead_exchange,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Deletes the queues and the exchange.
    pub async fn delete(&self, channel: &Channel) -> Result<(), Error> {
        for queue in [&self.queue, &self.wait_queue, &self.dead_queue] {
            channel
                .queue_delete(queue, QueueDeleteOptions::default())
                .await?;
        }
        channel
            .exchange_delete(&self.dead_exchange, ExchangeDeleteOptions::default())
            .await?;
        Ok(())
    }
}

/// Consumer tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpSettings {
    /// Unacknowledged deliveries the broker hands this channel at once (`basic.qos`).
    /// Defaults to 16.
    pub prefetch: u16,
    /// The delay of a retry that suggests none. Defaults to [`DEFAULT_RETRY_DELAY`]; zero makes
    /// such retries a `basic.nack` with requeue.
    pub retry_delay: Duration,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            prefetch: 16,
            retry_delay: DEFAULT_RETRY_DELAY,
        }
    }
}

/// What [`AmqpConsumer::handle`] did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What the guard answered.
    pub kind: RunKind,
    /// What was done with the delivery.
    pub settle: Settle,
}

/// Runs a queue's deliveries through the guard and settles them on one channel.
#[derive(Debug, Clone)]
pub struct AmqpConsumer {
    channel: Channel,
    topology: AmqpTopology,
    runner: AsyncRunner,
    settings: AmqpSettings,
    stats: Arc<Stats>,
}

impl AmqpConsumer {
    /// A consumer on `channel` (put in confirm mode, with `basic.qos` set here). The topology must
    /// be declared. `stats` may be shared.
    pub async fn new(
        channel: Channel,
        topology: AmqpTopology,
        runner: AsyncRunner,
        settings: AmqpSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, Error> {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(settings.prefetch, BasicQosOptions::default())
            .await?;
        Ok(Self {
            channel,
            topology,
            runner,
            settings,
            stats,
        })
    }

    /// The counters this consumer adds to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Consumes the queue as `tag`, handling deliveries one after another until `stop` completes
    /// or the consumer is cancelled. A failed settle is returned (the delivery stays unacked and
    /// is requeued when the channel closes).
    pub async fn consume<J, D>(
        &self,
        tag: &str,
        decode: D,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        J: SafeJob + Send + 'static,
        D: Fn(&Delivery) -> Result<J, DecodeError>,
    {
        let mut deliveries = self
            .channel
            .basic_consume(
                &self.topology.queue,
                tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                () = &mut stop => return Ok(()),
                next = deliveries.next() => next,
            };
            let Some(delivery) = next else {
                return Ok(());
            };
            self.handle(&delivery?, &decode).await?;
        }
    }

    /// Runs `delivery` through the guard and settles it: [`run`](Self::run), then
    /// [`settle`](Self::settle).
    pub async fn handle<J, D>(&self, delivery: &Delivery, decode: D) -> Result<Handled, Error>
    where
        J: SafeJob + Send + 'static,
        D: Fn(&Delivery) -> Result<J, DecodeError>,
    {
        let (kind, settle) = self.run(delivery, decode).await;
        self.settle(delivery, &settle).await?;
        Ok(Handled { kind, settle })
    }

    /// Decodes `delivery` and runs the job on the blocking pool; says what to do with it without
    /// doing it. (A consumer that dies after `run` and before [`settle`](Self::settle) leaves the
    /// delivery unacknowledged: the broker requeues it, and its redelivery is replayed.)
    pub async fn run<J, D>(&self, delivery: &Delivery, decode: D) -> (RunKind, Settle)
    where
        J: SafeJob + Send + 'static,
        D: Fn(&Delivery) -> Result<J, DecodeError>,
    {
        self.stats.delivered(delivery.redelivered);
        let job = match decode(delivery) {
            Ok(job) => job,
            Err(error) => {
                self.stats.ran(RunKind::Undecodable);
                return (RunKind::Undecodable, Settle::undecodable(&error));
            }
        };
        let result = self.runner.run(job).await;
        let kind = RunKind::of_async(&result);
        self.stats.ran(kind);
        (kind, Settle::of_async(&result, self.settings.retry_delay))
    }

    /// Does what `settle` says with `delivery` (see the module's table).
    pub async fn settle(&self, delivery: &Delivery, settle: &Settle) -> Result<(), Error> {
        match settle {
            Settle::Ack => {}
            Settle::Retry { after } if after.is_zero() => {
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await?;
                self.stats.settled(settle);
                return Ok(());
            }
            Settle::Retry { after } => {
                let millis = after.as_millis().max(1).to_string();
                let properties = delivery
                    .properties
                    .clone()
                    .with_expiration(ShortString::from(millis));
                publish(
                    &self.channel,
                    "",
                    &self.topology.wait_queue,
                    &delivery.data,
                    properties,
                )
                .await?;
            }
            Settle::DeadLetter { reason } => {
                let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                headers.insert(
                    ShortString::from(ERROR_HEADER),
                    AMQPValue::LongString(LongString::from(reason.as_str())),
                );
                headers.insert(
                    ShortString::from(SOURCE_QUEUE_HEADER),
                    AMQPValue::LongString(LongString::from(self.topology.queue.as_str())),
                );
                let properties = delivery.properties.clone().with_headers(headers);
                publish(
                    &self.channel,
                    &self.topology.dead_exchange,
                    "",
                    &delivery.data,
                    properties,
                )
                .await?;
            }
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        self.stats.settled(settle);
        Ok(())
    }
}

/// Publishes on a channel in confirm mode and waits for the broker's confirmation.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), Error> {
    let confirm = channel
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            payload,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(_) => Ok(()),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(Error::NotConfirmed {
            destination: if exchange.is_empty() {
                routing_key.to_owned()
            } else {
                exchange.to_owned()
            },
        }),
    }
}

#[cfg(feature = "outbox")]
pub use sink::AmqpSink;

#[cfg(feature = "outbox")]
mod sink {
    use lapin::{
        BasicProperties, Channel, Connection,
        options::ConfirmSelectOptions,
        types::{AMQPValue, FieldTable, LongString, ShortString},
    };
    use safejob_diesel::outbox::{OutboxMessage, Sink, SinkError};
    use tokio::runtime::Runtime;

    use super::{Error, TOPIC_HEADER, connect, publish};

    /// An outbox [`Sink`] that publishes each message, persistent, with its stable id in the
    /// `message_id` property and its topic in the `x-safejob-topic` header, and waits for the
    /// broker's publisher confirm. RabbitMQ keeps no deduplication window: a message the relay
    /// delivers again arrives again with the same `message_id`, and the receiver deduplicates by
    /// it (a guarded consumer keyed by `message_id` does).
    ///
    /// The relay calls sinks from plain threads; this one owns a small tokio runtime and blocks
    /// on it (never call it from inside another runtime's executor thread).
    pub struct AmqpSink {
        runtime: Runtime,
        // Kept so the channel's connection lives as long as the sink.
        _connection: Connection,
        channel: Channel,
        exchange: String,
        routing_key: String,
    }

    impl std::fmt::Debug for AmqpSink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("AmqpSink")
                .field("exchange", &self.exchange)
                .field("routing_key", &self.routing_key)
                .finish_non_exhaustive()
        }
    }

    impl AmqpSink {
        /// Connects to `url` and publishes to `exchange` with `routing_key` (`""` and a queue
        /// name: straight to that queue).
        pub fn connect(
            url: &str,
            exchange: impl Into<String>,
            routing_key: impl Into<String>,
        ) -> Result<Self, Error> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("safejob-amqp-sink")
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            let (connection, channel) = runtime.block_on(async {
                let connection = connect(url).await?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok::<_, Error>((connection, channel))
            })?;
            Ok(Self {
                runtime,
                _connection: connection,
                channel,
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            })
        }
    }

    impl Sink for AmqpSink {
        fn deliver(&self, msg: &OutboxMessage) -> Result<(), SinkError> {
            let mut headers = FieldTable::default();
            headers.insert(
                ShortString::from(TOPIC_HEADER),
                AMQPValue::LongString(LongString::from(msg.topic.as_str())),
            );
            let properties = BasicProperties::default()
                .with_message_id(ShortString::from(msg.message_id.as_str()))
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_headers(headers);
            self.runtime
                .block_on(publish(
                    &self.channel,
                    &self.exchange,
                    &self.routing_key,
                    msg.payload.as_bytes(),
                    properties,
                ))
                .map_err(SinkError::unavailable)
        }
    }
}
