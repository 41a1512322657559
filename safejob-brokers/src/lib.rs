//! Guarded consumers and relay sinks for the brokers teams already run: Redis Streams
//! (feature `redis`), RabbitMQ (feature `rabbitmq`) and NATS JetStream (feature `nats`).
//!
//! A broker delivers at least once: a message comes twice when a producer sends it twice, when a
//! consumer dies before its ack, or when its visibility runs out. Each consumer here wraps the
//! broker's own delivery loop with safejob's guard: every delivery is decoded into a
//! [`SafeJob`](safejob_core::SafeJob) and run by a [`Runner`](safejob_core::Runner), and the
//! run's [`Disposition`](safejob_core::Disposition) becomes the broker's verb, through one
//! broker-neutral [`Settle`]:
//!
//! | [`Settle`] | Redis Streams | RabbitMQ | NATS JetStream |
//! |---|---|---|---|
//! | `Ack` | `XACK` | `basic.ack` | `+ACK` |
//! | `Retry { after }` | left pending; `XAUTOCLAIM` after `min_idle` | copy to a wait queue with a per-message TTL that dead-letters back, then `basic.ack` (`basic.nack` with requeue when the delay is zero) | `-NAK` with the delay |
//! | `DeadLetter { reason }` | `XADD` to `<stream>:dead` with `dead.reason`, then `XACK` | publish (confirmed) to the dead-letter exchange with `x-safejob-error`, then `basic.ack` | publish (acknowledged) to the dead-letter subject with `Safejob-Error`, then `+TERM` |
//!
//! While the guard runs, each consumer keeps the delivery its own: Redis re-claims the entry
//! (resetting its idle time), NATS sends in-progress acks (`+WPI`), and RabbitMQ holds an
//! unacknowledged delivery for as long as the channel lives (lapin's heartbeats keep the
//! connection alive). Whatever the broker redelivers anyway — after a crash, a lost ack, a
//! producer's duplicate — the guard answers from the store: the job's effects run once per key.
//!
//! The guard is synchronous. The async consumers (RabbitMQ, NATS) run it on tokio's blocking pool
//! through [`safejob_tokio::AsyncRunner`] (`tokio::task::spawn_blocking`), never on the executor,
//! and renew the delivery from the async side meanwhile.
//!
//! With the feature `outbox`, each broker also has a relay [`Sink`](safejob_diesel::outbox::Sink)
//! for safejob-diesel's outbox that publishes every message under its stable message id, so the
//! broker (or the receiver) deduplicates the relay's at-least-once redeliveries. See
//! docs/brokers.md for the whole picture.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod settle;
mod stats;

#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;

pub use settle::{DEFAULT_RETRY_DELAY, DecodeError, RunKind, Settle};
pub use stats::{Stats, StatsSnapshot};
