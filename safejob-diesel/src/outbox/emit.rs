//! Emitting: one `safe_outbox` row per effect, on the finalize transaction's connection.

use safejob_core::{EffectsContext, KeyDigest};
use serde_json::Value;

use super::{
    MessageId, is_missing_outbox, migrate_hint,
    sql::{CountRow, EmitSql},
};
use crate::{
    TxError,
    backend::{Bind, ConnectionRef, Stmt},
    guard::effects_connection,
};

/// The longest topic accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// A message could not be emitted. Return it from `on_succeeded_once`: in transactional mode the
/// whole finalize, `succeeded` and every message emitted so far, rolls back and the attempt is
/// retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// `on_succeeded_once` is not running inside a finalize transaction: an outbox row written
    /// outside it could exist for a key that never succeeded, or be lost for one that did.
    #[error(
        "outbox_emit needs the finalize transaction: return Some(EffectsMode::Transactional) from \
         the job's effects_mode, or build the Runner or the worker with \
         EffectsMode::Transactional, on a DieselStore"
    )]
    NotTransactional,
    /// The finalize transaction is not a diesel connection of a compiled-in backend (for example
    /// the memory store's).
    #[error(
        "the finalize transaction is not a safejob-diesel connection; the outbox needs a DieselStore"
    )]
    UnsupportedStore,
    /// The topic is empty, longer than 255 bytes, or contains control characters.
    #[error("invalid outbox topic: {reason}")]
    InvalidTopic {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The `safe_outbox` table does not exist.
    #[error("the safe_outbox table is missing; run migrations: {hint}")]
    MissingTable {
        /// How to create it.
        hint: String,
    },
    /// The payload could not be written as JSON text.
    #[error("outbox payload is not serializable: {0}")]
    Payload(#[source] serde_json::Error),
    /// The database refused a statement (the transaction is then rolled back by the runner).
    #[error("writing the outbox row failed: {0}")]
    Database(#[source] diesel::result::Error),
}

/// Emitting outbox messages from `on_succeeded_once`.
///
/// ```no_run
/// use safejob_core::EffectsContext;
/// use safejob_diesel::outbox::{EmitError, OutboxExt};
///
/// fn on_succeeded_once(ctx: &mut EffectsContext<'_>) -> Result<(), EmitError> {
///     let id = ctx.outbox_emit("payments.refunded", &serde_json::json!({"cents": 250}))?;
///     assert_eq!(id.seq, 0); // the key's first message
///     Ok(())
/// }
/// ```
pub trait OutboxExt {
    /// Inserts one message on the finalize transaction's connection and returns its stable id:
    /// the key's digest and the next sequence number of that key (0 for its first message). The
    /// row commits with `succeeded`, or not at all.
    ///
    /// Outside `EffectsMode::Transactional` this is [`EmitError::NotTransactional`] and writes
    /// nothing.
    fn outbox_emit(&mut self, topic: &str, payload: &Value) -> Result<MessageId, EmitError>;
}

impl OutboxExt for EffectsContext<'_> {
    fn outbox_emit(&mut self, topic: &str, payload: &Value) -> Result<MessageId, EmitError> {
        if !self.is_transactional() {
            return Err(EmitError::NotTransactional);
        }
        validate_topic(topic)?;
        let payload = serde_json::to_string(payload).map_err(EmitError::Payload)?;
        let digest = *self.key().digest();
        let mut conn = effects_connection(self).map_err(|e| match e {
            TxError::NotTransactional => EmitError::NotTransactional,
            _ => EmitError::UnsupportedStore,
        })?;
        emit(&mut conn, &digest, topic, &payload)
    }
}

fn validate_topic(topic: &str) -> Result<(), EmitError> {
    let reason = if topic.is_empty() {
        "empty"
    } else if topic.len() > MAX_TOPIC_LEN {
        "longer than 255 bytes"
    } else if topic.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(EmitError::InvalidTopic { reason })
}

/// Validates `topic`, then inserts a message for `digest` on `conn` (the next sequence number of
/// that digest): the one insert of [`OutboxExt::outbox_emit`] and of an action dispatched to the
/// outbox.
pub(crate) fn emit_on(
    conn: &mut ConnectionRef<'_>,
    digest: &KeyDigest,
    topic: &str,
    payload: &str,
) -> Result<MessageId, EmitError> {
    validate_topic(topic)?;
    emit(conn, digest, topic, payload)
}

fn emit(
    conn: &mut ConnectionRef<'_>,
    digest: &KeyDigest,
    topic: &str,
    payload: &str,
) -> Result<MessageId, EmitError> {
    let kind = conn.backend();
    let sql = EmitSql::of(kind);
    let failed = |e: diesel::result::Error| {
        if is_missing_outbox(&e) {
            EmitError::MissingTable {
                hint: migrate_hint(kind),
            }
        } else {
            EmitError::Database(e)
        }
    };
    let bytes = digest.as_bytes().as_slice();
    let next = Stmt::new(&sql.next_seq, vec![Bind::Bytes(bytes)]);
    let seq = conn
        .load::<CountRow>(&next)
        .map_err(failed)?
        .first()
        .map_or(0, |row| row.n);
    let id = MessageId::new(*digest, u64::try_from(seq).unwrap_or_default());
    let message_id = id.to_string();
    let insert = Stmt::new(
        &sql.insert,
        vec![
            Bind::Bytes(bytes),
            Bind::Int(seq),
            Bind::Text(&message_id),
            Bind::Text(topic),
            Bind::Text(payload),
        ],
    );
    conn.exec(&insert).map_err(failed)?;
    tracing::debug!(message_id = %message_id, topic, "outbox message emitted");
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_validated() {
        assert!(validate_topic("payments.charged").is_ok());
        for bad in ["", "a\nb", &"x".repeat(256)] {
            assert!(matches!(
                validate_topic(bad),
                Err(EmitError::InvalidTopic { .. })
            ));
        }
    }
}
