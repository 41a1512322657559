//! Rows as the core sees them, and the values the statements bind.

use std::time::Duration;

use chrono::{DateTime, Utc};
use safejob_core::{
    Fingerprint, KeyDigest,
    queue::{GuardSpec, JobId, Progress, QueueState, QueuedJob, RecordedError},
    store::StoreError,
    workflow::BatchId,
};
use serde_json::Value;

use super::sql::JobRow;

/// A job row that cannot be read.
pub(crate) fn corrupt(id: i64, detail: impl Into<String>) -> StoreError {
    StoreError::CorruptRow {
        // The port's CorruptRow names a key; a queue row is named by table and id instead.
        digest: format!("safe_queue_jobs #{id}"),
        detail: detail.into(),
    }
}

pub(crate) fn instant(id: i64, us: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(id, format!("timestamp {us}")))
}

pub(crate) fn state(id: i64, text: &str) -> Result<QueueState, StoreError> {
    text.parse().map_err(|e| corrupt(id, format!("{e}")))
}

fn digest(id: i64, column: &str, bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| corrupt(id, format!("{column} is {} bytes, not 32", bytes.len())))
}

/// A duration as bound microseconds (at most about a year, like a lease TTL).
pub(crate) fn micros(d: Duration) -> Result<i64, StoreError> {
    i64::try_from(d.as_micros())
        .ok()
        .filter(|us| *us <= 366 * 24 * 3600 * 1_000_000)
        .ok_or_else(|| StoreError::backend(format!("duration {d:?} is out of range")))
}

/// Text as stored: PostgreSQL text cannot hold NUL, so no backend gets one.
pub(crate) fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

/// One stored error, `{"attempt": n, "at_us": µs, "kind": "...", "message": "..."}` (the
/// instant is the database clock's, written by the statement that recorded it).
fn stored_error(id: i64, value: &Value) -> Result<RecordedError, StoreError> {
    let bad = || corrupt(id, "errors holds an entry that is not a recorded error");
    let int = |field: &str| value.get(field).and_then(Value::as_i64).ok_or_else(bad);
    let attempt = int("attempt")?;
    Ok(RecordedError {
        attempt: u32::try_from(attempt).map_err(|_| bad())?,
        at: instant(id, int("at_us")?)?,
        kind: serde_json::from_value(value.get("kind").cloned().unwrap_or(Value::Null))
            .map_err(|e| corrupt(id, format!("error kind: {e}")))?,
        message: value
            .get("message")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_owned(),
    })
}

pub(crate) fn job(row: JobRow) -> Result<QueuedJob, StoreError> {
    let id = row.id;
    let json = |column: &str, text: &str| -> Result<Value, StoreError> {
        serde_json::from_str(text).map_err(|e| corrupt(id, format!("{column} is not JSON: {e}")))
    };
    let count = |column: &str, n: i64| -> Result<u32, StoreError> {
        u32::try_from(n).map_err(|_| corrupt(id, format!("{column} {n}")))
    };
    let opt = |us: Option<i64>| us.map(|us| instant(id, us)).transpose();
    let guard = match (&row.guard_digest, &row.guard_fingerprint) {
        (None, None) => None,
        (Some(d), f) => Some(GuardSpec {
            digest: KeyDigest::from_bytes(digest(id, "guard_digest", d)?),
            fingerprint: f
                .as_deref()
                .map(|f| digest(id, "guard_fingerprint", f).map(Fingerprint::from_bytes))
                .transpose()?,
        }),
        (None, Some(_)) => return Err(corrupt(id, "guard_fingerprint without guard_digest")),
    };
    let errors = match json("errors", &row.errors)? {
        Value::Array(entries) => entries
            .iter()
            .map(|e| stored_error(id, e))
            .collect::<Result<Vec<_>, StoreError>>()?,
        _ => return Err(corrupt(id, "errors is not a JSON array")),
    };
    let progress = row
        .progress
        .as_deref()
        .map(|p| {
            serde_json::from_str::<Progress>(p)
                .map_err(|e| corrupt(id, format!("progress is not a Progress: {e}")))
        })
        .transpose()?;
    Ok(QueuedJob {
        id: JobId(id),
        kind: row.kind,
        queue: row.queue,
        payload: json("payload", &row.payload)?,
        metadata: json("metadata", &row.metadata)?,
        priority: i16::try_from(row.priority)
            .map_err(|_| corrupt(id, format!("priority {}", row.priority)))?,
        state: state(id, &row.state)?,
        run_at: instant(id, row.run_at_us)?,
        attempts: count("attempts", row.attempts)?,
        max_attempts: count("max_attempts", row.max_attempts)?,
        fence: u64::try_from(row.fence).map_err(|_| corrupt(id, format!("fence {}", row.fence)))?,
        owner: row.owner,
        lease_expires_at: opt(row.lease_us)?,
        attempted_at: opt(row.attempted_us)?,
        idempotent: row.idempotent != 0,
        unique_key: row
            .unique_key
            .as_deref()
            .map(|k| digest(id, "unique_key", k).map(KeyDigest::from_bytes))
            .transpose()?,
        guard,
        progress,
        errors,
        created_at: instant(id, row.created_us)?,
        updated_at: instant(id, row.updated_us)?,
        finished_at: opt(row.finished_us)?,
        batch: row.batch_id.map(BatchId),
    })
}
