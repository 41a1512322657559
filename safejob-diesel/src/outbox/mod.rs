//! The transactional outbox: effects written as rows inside the finalize transaction, and a relay
//! that delivers them at least once under a stable message id.
//!
//! With `EffectsMode::Transactional`, `on_succeeded_once` runs inside the transaction that moves
//! the key to `succeeded`. [`OutboxExt::outbox_emit`] inserts a `safe_outbox` row on that
//! transaction's connection, so the message exists **if and only if** the key succeeded: an error
//! from the effects rolls back the row together with `succeeded`, and a finalize that lost its
//! lease writes nothing.
//!
//! Each message is named `<key digest hex>-<seq>` ([`MessageId`]), `seq` counting 0, 1, 2 … in
//! emission order within the key's effects. Transactional effects commit exactly once per key, so
//! the id is stable: the same effect always has the same id, whichever worker or attempt won.
//!
//! A [`Relay`] (plain threads, no async runtime) claims due rows in batches, hands each to a
//! [`Sink`], and marks it delivered. Delivery is **at least once**: a relay that crashes after
//! delivering but before marking leaves a claim that expires, and another relay delivers again
//! with the same id. Receivers deduplicate by [`OutboxMessage::message_id`]. In the normal case
//! (no crash, no claim outliving its TTL) each message is delivered once, even with many relays in
//! many processes: a claim locks rows with `FOR UPDATE SKIP LOCKED` (PostgreSQL, MySQL 8 /
//! MariaDB ≥ 10.6) or inside a `BEGIN IMMEDIATE` transaction (SQLite) and writes a fresh claim
//! token and `claimed_until` in the same transaction; every later write of that relay is fenced by
//! the token *and* a live claim, so a relay whose claim expired can neither mark nor double-mark.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
//! use std::sync::{Arc, Mutex};
//! use safejob_core::{
//!     EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, Runner,
//!     SafeJob,
//! };
//! use safejob_diesel::{
//!     DieselStore,
//!     outbox::{EmitError, OutboxExt, OutboxMessage, Relay, SinkError},
//! };
//!
//! struct Charge { order: u64 }
//!
//! impl SafeJob for Charge {
//!     type Error = EmitError;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["charge", &self.order.to_string()])
//!     }
//!     fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//!     fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
//!         // Written in the finalize transaction: commits with `succeeded`, or not at all.
//!         ctx.outbox_emit("payments.charged", &serde_json::json!({"order": self.order}))?;
//!         ctx.outbox_emit("mail.receipt", &serde_json::json!({"order": self.order}))?;
//!         Ok(())
//!     }
//! }
//!
//! let store = Arc::new(DieselStore::connect(&url)?);
//! store.migrate()?; // creates safe_jobs and safe_outbox
//! let runner = Runner::builder(store.clone())
//!     .effects(EffectsMode::Transactional)
//!     .build()?;
//! runner.run(&Charge { order: 7 })?;
//! runner.run(&Charge { order: 7 })?; // a duplicate: replayed, emits nothing
//!
//! // The receiver: anything that can deduplicate by message id (here, a list).
//! let received = Arc::new(Mutex::new(Vec::new()));
//! let inbox = received.clone();
//! let relay = Relay::builder(store, move |msg: &OutboxMessage| -> Result<(), SinkError> {
//!     inbox.lock().unwrap().push((msg.message_id.clone(), msg.topic.clone()));
//!     Ok(())
//! })
//! .build()?;
//! let stats = relay.run_once()?; // or relay.spawn() for a background loop
//! assert_eq!(stats.delivered, 2);
//! let received = received.lock().unwrap();
//! assert_eq!(received[0].1, "payments.charged");
//! assert!(received[0].0.ends_with("-0") && received[1].0.ends_with("-1"));
//! # Ok(()) }
//! ```
//!
//! ## Retries and dead messages
//!
//! A [`SinkError::Unavailable`] (or a panicking sink) schedules the message again after an
//! exponential backoff with jitter (`available_at` = database now + delay). With
//! [`RelayBuilder::max_attempts`], a message that has used up its attempts — or that the sink
//! [`Rejected`](SinkError::Rejected) — is marked dead: never delivered again, listed by
//! [`dead_messages`] and put back by [`requeue`].
//!
//! ## What is not promised
//!
//! No order between messages (a retried message is overtaken by later ones), and no exactly-once
//! delivery: a receiver that must not act twice deduplicates by message id.

mod admin;
mod emit;
mod message;
mod relay;
mod sink;
mod sql;

pub use admin::{OutboxCounts, OutboxRecord, counts, dead_messages, prune_delivered, requeue};
pub(crate) use emit::emit_on;
pub use emit::{EmitError, MAX_TOPIC_LEN, OutboxExt};
pub use message::{MessageId, MessageIdError, OutboxMessage};
pub use relay::{
    MAX_BATCH_SIZE, MAX_INTERVAL, MAX_THREADS, Relay, RelayBuilder, RelayConfigError, RelayError,
    RelayHandle, RelayStats, StopSignal,
};
pub use sink::{Sink, SinkError};

/// The `safe_outbox` table does not exist: the text names the table and the database error.
fn is_missing_outbox(error: &diesel::result::Error) -> bool {
    match error {
        diesel::result::Error::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("safe_outbox")
                && (m.contains("no such table")
                    || m.contains("does not exist")
                    || m.contains("doesn't exist"))
        }
        _ => false,
    }
}

/// How to create the table, for a backend.
fn migrate_hint(backend: crate::BackendKind) -> String {
    format!(
        "call DieselStore::migrate() (it creates safe_outbox) or run \
         `diesel migration run --migration-dir migrations/{}`",
        backend.as_str()
    )
}
