//! NATS JetStream: a pull consumer with the guard in front of every message (feature `nats`;
//! async-nats on tokio, the guard on the blocking pool).
//!
//! | [`Settle`] | JetStream |
//! |---|---|
//! | `Ack` | `+ACK` |
//! | `Retry { after }` | `-NAK {"delay": after}`: redelivered after the delay |
//! | `DeadLetter { reason }` | publish to [`NatsSettings::dead_subject`] (headers `Safejob-Error`, `Safejob-Source-Subject`, `Safejob-Source-Sequence`, and `Nats-Msg-Id: dead-<stream>-<sequence>`), wait for JetStream's ack, then `+TERM` |
//!
//! **Visibility.** A JetStream consumer redelivers a message unacknowledged for its `ack_wait`.
//! While the guard runs, [`NatsConsumer::run`] sends an in-progress ack (`+WPI`) every
//! [`NatsSettings::progress_every`], each of which restarts the ack wait; a consumer that dies
//! stops sending them, and the message is redelivered one `ack_wait` later. Set `progress_every`
//! well under the consumer's `ack_wait`.
//!
//! A dead letter republished after a crash between its publish and its `+TERM` carries the same
//! `Nats-Msg-Id`, so the dead-letter stream keeps one copy within its duplicate window.
//!
//! The guard runs through [`AsyncRunner`] (`tokio::task::spawn_blocking`); the progress acks are
//! sent from the async side while it runs.

use std::{future::Future, sync::Arc, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, AckKind, consumer::PullConsumer},
};
use futures_util::StreamExt;
use safejob_core::SafeJob;
use safejob_tokio::AsyncRunner;

use crate::{DEFAULT_RETRY_DELAY, DecodeError, RunKind, Settle, Stats};

/// The header a dead letter carries its reason in.
pub const ERROR_HEADER: &str = "Safejob-Error";
/// The header naming the subject a dead letter came from.
pub const SOURCE_SUBJECT_HEADER: &str = "Safejob-Source-Subject";
/// The header with the stream sequence a dead letter had.
pub const SOURCE_SEQUENCE_HEADER: &str = "Safejob-Source-Sequence";
/// JetStream's publisher-side deduplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A NATS operation of the consumer or the sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Connecting to the server failed.
    #[error("nats: cannot connect: {0}")]
    Connect(#[source] BoxError),
    /// Reading messages from the consumer failed.
    #[error("nats: cannot read from the consumer: {0}")]
    Consume(#[source] BoxError),
    /// Publishing (a dead letter, an outbox message) failed or JetStream did not acknowledge it.
    #[error("nats: publish to {subject} failed: {source}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// An ack, nak or term could not be sent.
    #[error("nats: cannot settle the message: {0}")]
    Settle(#[source] BoxError),
    /// The message has no JetStream metadata (it did not come from a JetStream consumer).
    #[error("nats: the message has no JetStream reply subject: {0}")]
    NotJetStream(#[source] BoxError),
    /// The sink's runtime could not be built.
    #[error("nats: cannot start the sink's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Consumer tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSettings {
    /// Where dead letters go: a subject that a stream captures.
    pub dead_subject: String,
    /// How often an in-progress ack is sent while the guard runs. Defaults to 5 s; keep it
    /// well under the consumer's `ack_wait`.
    pub progress_every: Duration,
    /// The delay of a retry that suggests none. Defaults to [`DEFAULT_RETRY_DELAY`].
    pub retry_delay: Duration,
    /// Messages [`NatsConsumer::consume`] pulls per request. Pulled messages wait in the client
    /// while the one before them runs, and their ack wait runs meanwhile (only the running one
    /// gets in-progress acks): keep `batch` × a job's time under `ack_wait`, or the waiting ones
    /// are redelivered (and replayed). Defaults to 1.
    pub batch: usize,
}

impl NatsSettings {
    /// Settings with dead letters to `dead_subject` and the other defaults.
    pub fn new(dead_subject: impl Into<String>) -> Self {
        Self {
            dead_subject: dead_subject.into(),
            progress_every: Duration::from_secs(5),
            retry_delay: DEFAULT_RETRY_DELAY,
            batch: 1,
        }
    }
}

/// What [`NatsConsumer::handle`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What the guard answered.
    pub kind: RunKind,
    /// What was done with the message.
    pub settle: Settle,
}

/// Runs JetStream messages through the guard and settles them.
#[derive(Debug, Clone)]
pub struct NatsConsumer {
    js: jetstream::Context,
    runner: AsyncRunner,
    settings: NatsSettings,
    stats: Arc<Stats>,
}

impl NatsConsumer {
    /// A consumer publishing its dead letters through `js`. `stats` may be shared.
    pub fn new(
        js: jetstream::Context,
        runner: AsyncRunner,
        settings: NatsSettings,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            js,
            runner,
            settings,
            stats,
        }
    }

    /// The counters this consumer adds to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Handles `consumer`'s messages one after another, pulling [`NatsSettings::batch`] at a
    /// time, until `stop` completes or the message stream ends. A failed ack or dead-letter publish is returned (the message is redelivered
    /// after its ack wait).
    pub async fn consume<J, D>(
        &self,
        consumer: &PullConsumer,
        decode: D,
        stop: impl Future<Output = ()>,
    ) -> Result<(), Error>
    where
        J: SafeJob + Send + 'static,
        D: Fn(&jetstream::Message) -> Result<J, DecodeError>,
    {
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch.max(1))
            .messages()
            .await
            .map_err(|e| Error::Consume(e.into()))?;
        tokio::pin!(stop);
        loop {
            let next = tokio::select! {
                () = &mut stop => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                return Ok(());
            };
            let message = message.map_err(|e| Error::Consume(e.into()))?;
            self.handle(&message, &decode).await?;
        }
    }

    /// Runs `message` through the guard and settles it: [`run`](Self::run), then
    /// [`settle`](Self::settle).
    pub async fn handle<J, D>(
        &self,
        message: &jetstream::Message,
        decode: D,
    ) -> Result<Handled, Error>
    where
        J: SafeJob + Send + 'static,
        D: Fn(&jetstream::Message) -> Result<J, DecodeError>,
    {
        let (kind, settle) = self.run(message, decode).await?;
        self.settle(message, &settle).await?;
        Ok(Handled { kind, settle })
    }

    /// Decodes `message` and runs the job on the blocking pool, sending an in-progress ack every
    /// [`NatsSettings::progress_every`] while it runs; says what to do with the message without
    /// doing it. (A consumer that dies after `run` and before [`settle`](Self::settle) leaves the
    /// message unacknowledged: its redelivery is replayed.)
    pub async fn run<J, D>(
        &self,
        message: &jetstream::Message,
        decode: D,
    ) -> Result<(RunKind, Settle), Error>
    where
        J: SafeJob + Send + 'static,
        D: Fn(&jetstream::Message) -> Result<J, DecodeError>,
    {
        let info = message.info().map_err(Error::NotJetStream)?;
        self.stats.delivered(info.delivered > 1);
        let job = match decode(message) {
            Ok(job) => job,
            Err(error) => {
                self.stats.ran(RunKind::Undecodable);
                return Ok((RunKind::Undecodable, Settle::undecodable(&error)));
            }
        };
        let run = self.runner.run(job);
        tokio::pin!(run);
        let mut progress = tokio::time::interval(self.settings.progress_every);
        progress.tick().await; // the first tick is immediate
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                _ = progress.tick() => {
                    // A lost progress ack is not fatal: at worst the message is redelivered and
                    // the guard answers that delivery.
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(%error, "in-progress ack failed");
                    }
                }
            }
        };
        let kind = RunKind::of_async(&result);
        self.stats.ran(kind);
        Ok((kind, Settle::of_async(&result, self.settings.retry_delay)))
    }

    /// Does what `settle` says with `message`: `+ACK`, `-NAK` with the delay, or a dead letter
    /// published and acknowledged by JetStream, then `+TERM`.
    pub async fn settle(&self, message: &jetstream::Message, settle: &Settle) -> Result<(), Error> {
        let kind = match settle {
            Settle::Ack => AckKind::Ack,
            Settle::Retry { after } => AckKind::Nak(Some(*after)),
            Settle::DeadLetter { reason } => {
                self.dead_letter(message, reason).await?;
                AckKind::Term
            }
        };
        message.ack_with(kind).await.map_err(Error::Settle)?;
        self.stats.settled(settle);
        Ok(())
    }

    async fn dead_letter(&self, message: &jetstream::Message, reason: &str) -> Result<(), Error> {
        let info = message.info().map_err(Error::NotJetStream)?;
        let mut headers = message.headers.clone().unwrap_or_default();
        headers.insert(ERROR_HEADER, header_text(reason).as_str());
        headers.insert(SOURCE_SUBJECT_HEADER, message.subject.as_str());
        headers.insert(
            SOURCE_SEQUENCE_HEADER,
            info.stream_sequence.to_string().as_str(),
        );
        let dead_id = format!("dead-{}-{}", info.stream, info.stream_sequence);
        headers.insert(MSG_ID_HEADER, dead_id.as_str());
        publish(
            &self.js,
            &self.settings.dead_subject,
            headers,
            message.payload.clone(),
        )
        .await
    }
}

/// Publishes and waits for JetStream's acknowledgement.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> Result<(), Error> {
    let failed = |source: BoxError| Error::Publish {
        subject: subject.to_owned(),
        source,
    };
    js.publish_with_headers(subject.to_owned(), headers, payload)
        .await
        .map_err(|e| failed(e.into()))?
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(())
}

/// A header value cannot hold line breaks or other control characters: they become spaces.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(feature = "outbox")]
pub use sink::NatsSink;

#[cfg(feature = "outbox")]
mod sink {
    use async_nats::{HeaderMap, jetstream};
    use safejob_diesel::outbox::{OutboxMessage, Sink, SinkError};
    use tokio::runtime::Runtime;

    use super::{Error, MSG_ID_HEADER, publish};

    /// The header an outbox message carries its topic in.
    pub const TOPIC_HEADER: &str = "Safejob-Topic";

    /// An outbox [`Sink`] that publishes each message to one subject with `Nats-Msg-Id` set to
    /// its stable message id (and its topic in `Safejob-Topic`), and waits for JetStream's
    /// acknowledgement: a message the relay delivers again within the stream's duplicate window
    /// is stored once.
    ///
    /// The relay calls sinks from plain threads; this one owns a small tokio runtime and blocks
    /// on it (never call it from inside another runtime's executor thread).
    pub struct NatsSink {
        runtime: Runtime,
        js: jetstream::Context,
        subject: String,
    }

    impl std::fmt::Debug for NatsSink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("NatsSink")
                .field("subject", &self.subject)
                .finish_non_exhaustive()
        }
    }

    impl NatsSink {
        /// Connects to `url` and publishes to `subject` (which a stream must capture).
        pub fn connect(url: &str, subject: impl Into<String>) -> Result<Self, Error> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("safejob-nats-sink")
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            let client = runtime
                .block_on(async_nats::connect(url))
                .map_err(|e| Error::Connect(e.into()))?;
            Ok(Self {
                runtime,
                js: jetstream::new(client),
                subject: subject.into(),
            })
        }
    }

    impl Sink for NatsSink {
        fn deliver(&self, msg: &OutboxMessage) -> Result<(), SinkError> {
            let mut headers = HeaderMap::new();
            headers.insert(MSG_ID_HEADER, msg.message_id.as_str());
            headers.insert(TOPIC_HEADER, super::header_text(&msg.topic).as_str());
            let payload = bytes::Bytes::from(msg.payload.clone().into_bytes());
            self.runtime
                .block_on(publish(&self.js, &self.subject, headers, payload))
                .map_err(SinkError::unavailable)
        }
    }
}
