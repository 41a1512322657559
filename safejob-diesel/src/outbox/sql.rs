//! The outbox's SQL, per backend, and the rows it reads back.
//!
//! Every statement is a template in the crate's one vocabulary ([`crate::backend::dialect`]):
//! every timestamp is the database's clock, written in the statement, and read back as integer
//! microseconds since the Unix epoch.

use std::sync::LazyLock;

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Nullable, Text},
};

use crate::backend::{BackendKind, render as render_sql};

/// The columns a relay hands to its sink.
const MESSAGE_COLS: &str =
    "id, message_id, digest, seq, topic, payload, attempts, {us:created_at} AS created_us";

/// The columns an operator listing shows.
const RECORD_COLS: &str = "id, message_id, digest, seq, topic, payload, attempts, \
    {us:created_at} AS created_us, {us:available_at} AS available_us, \
    {us:delivered_at} AS delivered_us, {us:dead_at} AS dead_us, last_error";

/// A pending row that is due and not held by a live claim.
const DUE: &str = "delivered_at IS NULL AND dead_at IS NULL AND available_at <= {now} \
    AND (claimed_until IS NULL OR claimed_until <= {now})";

/// The fence of every write a relay makes after its claim: its own token, and a claim that is
/// still live by the database clock.
const FENCE: &str = "id = ? AND claim_token = ? AND claimed_until > {now}";

/// Renders `template` for `kind` in the shared vocabulary ([`crate::backend::dialect`]), without
/// a test clock offset: outbox tests move time by shifting the rows' timestamps back instead.
fn render(kind: BackendKind, template: &str) -> String {
    let out = render_sql(kind, 0, template);
    debug_assert!(!out.contains('{'), "unrendered placeholder in {out}");
    out
}

/// What `outbox_emit` runs inside the finalize transaction.
#[derive(Debug)]
pub(crate) struct EmitSql {
    /// The next sequence number of a digest: digest. Returns a `CountRow`.
    pub(crate) next_seq: String,
    /// The new row: digest, seq, message_id, topic, payload.
    pub(crate) insert: String,
}

impl EmitSql {
    fn render(kind: BackendKind) -> Self {
        Self {
            // The finalize transaction holds the key's safe_jobs row (only the winning finalize
            // gets here), so no other transaction inserts for this digest meanwhile; the unique
            // (digest, seq) constraint would refuse it anyway.
            next_seq: render(
                kind,
                "SELECT CAST(COALESCE(MAX(seq) + 1, 0) AS {bigint}) AS n \
                 FROM safe_outbox WHERE digest = ?",
            ),
            insert: render(
                kind,
                "INSERT INTO safe_outbox (digest, seq, message_id, topic, payload, created_at, \
                 available_at, attempts) VALUES (?, ?, ?, ?, ?, {now}, {now}, 0)",
            ),
        }
    }

    /// The statements of backend `kind`, rendered once per process.
    pub(crate) fn of(kind: BackendKind) -> &'static Self {
        static SQLITE_SQL: LazyLock<EmitSql> =
            LazyLock::new(|| EmitSql::render(BackendKind::Sqlite));
        static POSTGRES_SQL: LazyLock<EmitSql> =
            LazyLock::new(|| EmitSql::render(BackendKind::Postgres));
        static MYSQL_SQL: LazyLock<EmitSql> = LazyLock::new(|| EmitSql::render(BackendKind::Mysql));
        match kind {
            BackendKind::Sqlite => &SQLITE_SQL,
            BackendKind::Postgres => &POSTGRES_SQL,
            BackendKind::Mysql => &MYSQL_SQL,
        }
    }
}

/// How a backend claims a batch.
#[derive(Debug)]
pub(crate) enum Claim {
    /// One `UPDATE … RETURNING` that picks the rows and claims them (PostgreSQL: in autocommit;
    /// SQLite: inside `BEGIN IMMEDIATE`): token, ttl_us, limit.
    Returning(String),
    /// MySQL / MariaDB (no `UPDATE … RETURNING`, no `LIMIT` in an `IN` subquery), in one
    /// transaction: `pick` locks due rows (limit) with `FOR UPDATE SKIP LOCKED`; `mark` claims
    /// them (token, ttl_us, then `batch` ids, padded by repeating the first); after the commit,
    /// `read` fetches them by token.
    PickMarkRead {
        pick: String,
        mark: String,
        read: String,
    },
}

/// Every statement of one relay.
#[derive(Debug)]
pub(crate) struct RelaySql {
    pub(crate) claim: Claim,
    /// Delivered: id, token.
    pub(crate) delivered: String,
    /// Failed, retry later: delay_us, last_error, id, token.
    pub(crate) retry: String,
    /// Dead: last_error, id, token.
    pub(crate) bury: String,
    /// Claimed but never handed to the sink (shutdown, or the claim was about to expire): id,
    /// token. Gives the attempt back.
    pub(crate) release: String,
}

impl RelaySql {
    pub(crate) fn render(kind: BackendKind, batch: usize) -> Self {
        let r = |t: &str| render(kind, t);
        let claim = match kind {
            // A locking CTE runs exactly once, so the LIMIT holds (an `IN (SELECT … LIMIT)` may
            // be re-evaluated by the planner and claim more). SKIP LOCKED: concurrent relays take
            // disjoint rows instead of queueing behind each other.
            BackendKind::Postgres => Claim::Returning(r(&format!(
                "WITH due AS (SELECT id FROM safe_outbox WHERE {DUE} \
                 ORDER BY available_at, id LIMIT ? FOR UPDATE SKIP LOCKED) \
                 UPDATE safe_outbox SET claim_token = ?, claimed_until = {{plus}}, \
                 attempts = attempts + 1 FROM due WHERE safe_outbox.id = due.id \
                 RETURNING {}",
                MESSAGE_COLS
                    .split(", ")
                    .map(|col| if col == "id" { "safe_outbox.id" } else { col })
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            // BEGIN IMMEDIATE holds the write lock for the whole statement: one claimer at a time.
            BackendKind::Sqlite => Claim::Returning(r(&format!(
                "UPDATE safe_outbox SET claim_token = ?, claimed_until = {{plus}}, \
                 attempts = attempts + 1 WHERE id IN (SELECT id FROM safe_outbox WHERE {DUE} \
                 ORDER BY available_at, id LIMIT ?) RETURNING {MESSAGE_COLS}"
            ))),
            BackendKind::Mysql => Claim::PickMarkRead {
                pick: r(&format!(
                    "SELECT id FROM safe_outbox WHERE {DUE} ORDER BY available_at, id LIMIT ? \
                     FOR UPDATE SKIP LOCKED"
                )),
                mark: r(&format!(
                    "UPDATE safe_outbox SET claim_token = ?, claimed_until = {{plus}}, \
                     attempts = attempts + 1 WHERE id IN ({})",
                    vec!["?"; batch].join(", ")
                )),
                read: r(&format!(
                    "SELECT {MESSAGE_COLS} FROM safe_outbox WHERE claim_token = ? ORDER BY id"
                )),
            },
        };
        Self {
            claim,
            delivered: r(&format!(
                "UPDATE safe_outbox SET delivered_at = {{now}}, claim_token = NULL, \
                 claimed_until = NULL WHERE {FENCE}"
            )),
            retry: r(&format!(
                "UPDATE safe_outbox SET available_at = {{plus}}, last_error = ?, \
                 claim_token = NULL, claimed_until = NULL WHERE {FENCE}"
            )),
            bury: r(&format!(
                "UPDATE safe_outbox SET dead_at = {{now}}, last_error = ?, claim_token = NULL, \
                 claimed_until = NULL WHERE {FENCE}"
            )),
            release: r(&format!(
                "UPDATE safe_outbox SET claim_token = NULL, claimed_until = NULL, \
                 attempts = attempts - 1 WHERE {FENCE}"
            )),
        }
    }

    /// Whether the claim's placeholders are `token, ttl, limit` (true) or `limit, token, ttl`.
    pub(crate) fn limit_first(kind: BackendKind) -> bool {
        kind == BackendKind::Postgres
    }
}

/// Operator statements.
#[derive(Debug)]
pub(crate) struct AdminSql {
    /// Dead rows after an id: after_id, limit.
    pub(crate) dead: String,
    /// Back to pending, due now, attempts from zero: digest, seq.
    pub(crate) requeue: String,
    /// Counts: pending, delivered, dead (three `CountRow`s in that order via UNION ALL).
    pub(crate) counts: String,
    /// Deletes delivered rows delivered before now + the bound (negative) µs.
    pub(crate) prune_delivered: String,
}

impl AdminSql {
    pub(crate) fn render(kind: BackendKind) -> Self {
        let r = |t: &str| render(kind, t);
        Self {
            dead: r(&format!(
                "SELECT {RECORD_COLS} FROM safe_outbox WHERE dead_at IS NOT NULL AND id > ? \
                 ORDER BY id LIMIT ?"
            )),
            requeue: r("UPDATE safe_outbox SET dead_at = NULL, attempts = 0, \
                 available_at = {now}, claim_token = NULL, claimed_until = NULL \
                 WHERE digest = ? AND seq = ? AND dead_at IS NOT NULL"),
            counts: r("SELECT CAST(COUNT(*) AS {bigint}) AS n FROM safe_outbox \
                 WHERE delivered_at IS NULL AND dead_at IS NULL \
                 UNION ALL SELECT CAST(COUNT(*) AS {bigint}) AS n FROM safe_outbox \
                 WHERE delivered_at IS NOT NULL \
                 UNION ALL SELECT CAST(COUNT(*) AS {bigint}) AS n FROM safe_outbox \
                 WHERE dead_at IS NOT NULL"),
            prune_delivered: r("DELETE FROM safe_outbox WHERE delivered_at IS NOT NULL \
                 AND delivered_at < {plus}"),
        }
    }
}

/// A claimed row, as the relay reads it.
#[derive(Debug, QueryableByName)]
pub(crate) struct MessageRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub message_id: String,
    #[diesel(sql_type = Binary)]
    pub digest: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    #[diesel(sql_type = Text)]
    pub topic: String,
    #[diesel(sql_type = Text)]
    pub payload: String,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub created_us: i64,
}

/// A row as an operator listing shows it.
#[derive(Debug, QueryableByName)]
pub(crate) struct RecordRow {
    #[diesel(embed)]
    pub message: MessageRow,
    #[diesel(sql_type = BigInt)]
    pub available_us: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub delivered_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub dead_us: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// One integer column named `n`.
#[derive(Debug, QueryableByName)]
pub(crate) struct CountRow {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// One id column.
#[derive(Debug, QueryableByName)]
pub(crate) struct IdRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_renders_completely() {
        for kind in [
            BackendKind::Sqlite,
            BackendKind::Postgres,
            BackendKind::Mysql,
        ] {
            let relay = RelaySql::render(kind, 3);
            let admin = AdminSql::render(kind);
            let emit = EmitSql::of(kind);
            for sql in [
                &relay.delivered,
                &relay.retry,
                &relay.bury,
                &relay.release,
                &admin.dead,
                &admin.requeue,
                &admin.counts,
                &emit.next_seq,
                &emit.insert,
            ] {
                assert!(!sql.contains('{'), "{sql}");
            }
            assert_eq!(relay.delivered.matches('?').count(), 2);
            assert_eq!(relay.retry.matches('?').count(), 4);
            assert_eq!(emit.insert.matches('?').count(), 5);
            match relay.claim {
                Claim::Returning(sql) => assert_eq!(sql.matches('?').count(), 3, "{sql}"),
                Claim::PickMarkRead { pick, mark, read } => {
                    assert!(pick.ends_with("FOR UPDATE SKIP LOCKED"));
                    assert_eq!(mark.matches('?').count(), 2 + 3);
                    assert_eq!(read.matches('?').count(), 1);
                }
            }
        }
    }
}
