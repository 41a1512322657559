//! The guard's SQL: every `LeaseStore` primitive's statement, written once as a template in the
//! vocabulary of [`dialect`](crate::backend::dialect) and rendered per backend, and the rows
//! they read back.

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Nullable, Text},
};

use crate::backend::{BackendKind, Dialect, render};

/// Every statement of one store, rendered once at construction. Binds are listed after each.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) returning: bool,
    /// The backend and test clock offset these were rendered for (group statements are rendered
    /// per group size, on demand: [`Statements::group_insert`], [`Statements::group_succeed`]).
    pub(crate) kind: BackendKind,
    pub(crate) offset_us: i64,
    /// Database now. No binds.
    pub(crate) now: String,
    /// Fresh acquire: digest, fingerprint, owner, ttl_us. With `returning`, returns a `GrantRow`
    /// when it inserted and nothing on a duplicate; without, a duplicate is a unique violation.
    pub(crate) insert: String,
    /// The grant of the row just inserted or taken over (no-`RETURNING` backends): digest, fence.
    pub(crate) grant_of: String,
    /// The whole row and now: digest.
    pub(crate) select_row: String,
    /// Takeover CAS: owner, ttl_us, digest, fence, state. Returns a `GrantRow` with
    /// `returning`.
    pub(crate) takeover: String,
    /// Renew CAS: ttl_us, digest, fence. Returns the new expiry with `returning`.
    pub(crate) renew: String,
    /// The expiry after a renew (no-`RETURNING` backends): digest, fence.
    pub(crate) expiry_of: String,
    /// Finalize-succeeded CAS: result, effects, ttl_us, retain_us (NULL: kept forever), digest,
    /// fence.
    pub(crate) finalize_succeeded: String,
    /// Inside a finalize transaction, after the effects hook: one row (the fence, as `us`) only
    /// while the transaction is alive and holds our `succeeded`. Binds: digest, fence.
    pub(crate) confirm_succeeded: String,
    /// Finalize-failed CAS: failure, retain_us (NULL: kept forever), digest, fence.
    pub(crate) finalize_failed: String,
    /// Release CAS: last_error, digest, fence.
    pub(crate) release: String,
    /// Finish-effects CAS: effects, last_error (NULL keeps it), digest, fence.
    pub(crate) finish_effects: String,
    /// Claim-effects CAS: owner, ttl_us, digest, fence.
    pub(crate) claim_effects: String,
    /// Listings, by [`Listing`] × without/with a cursor (digest). Binds: the state (for
    /// [`Listing::OtherState`]), the cursor, the limit.
    pub(crate) list: [[String; 2]; 5],
    /// Deletes up to `limit` prunable rows ([`PRUNABLE`]), oldest retention first: limit.
    pub(crate) prune: String,
}

const COLS: &str = "digest, fingerprint, state, fence, attempts, owner, \
    {us:lease_expires_at} AS expires_us, result, failure, last_error, effects, \
    {us:created_at} AS created_us, {us:updated_at} AS updated_us, \
    {us:finalized_at} AS finalized_us, {us:retain_until} AS retain_us, {now_us} AS now_us";

/// A running row whose lease is no longer live (`JobRecord::lease_live` negated).
const LEASE_DEAD: &str = "(lease_expires_at IS NULL OR lease_expires_at <= {now})";

/// The predicate of the partial index `safe_jobs_state` (SQLite, PostgreSQL), written as the
/// migration writes it: a planner uses a partial index only for a query that names its predicate.
const NOT_SUCCEEDED: &str = "state <> 'succeeded'";

/// `JobRecord::effects_in_doubt`, in SQL. It opens with the predicate of the partial index
/// `safe_jobs_effects_open` (implied by the rest), so the listing reaches that index.
const IN_DOUBT: &str = "effects IN ('pending', 'in_doubt') AND state = 'succeeded' \
    AND (effects = 'in_doubt' OR (effects = 'pending' \
    AND (lease_expires_at IS NULL OR lease_expires_at <= {now})))";

/// `JobRecord::prunable`, in SQL: retention passed, and failed or succeeded with effects done.
/// It names `retain_until IS NOT NULL`, the predicate of the partial index
/// `safe_jobs_retain_until` (SQLite, PostgreSQL), so pruning walks that index.
pub(crate) const PRUNABLE: &str = "retain_until IS NOT NULL AND retain_until <= {now} \
    AND (state = 'failed' OR (state = 'succeeded' AND effects = 'done'))";

/// Which listing statement a [`ListFilter`](safejob_core::ListFilter) runs: the index of
/// [`Statements::list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listing {
    /// Every row, through the primary key.
    All = 0,
    /// Succeeded rows, through the primary key (they are most rows, and absent from
    /// `safe_jobs_state`).
    Succeeded = 1,
    /// Rows of one other state (bound), through `safe_jobs_state`.
    OtherState = 2,
    /// Rows whose effects are in doubt, through `safe_jobs_effects_open`.
    EffectsInDoubt = 3,
    /// Running rows whose lease expired, through `safe_jobs_state`.
    ExpiredLeases = 4,
}

impl Listing {
    /// Every listing, in the order of [`Statements::list`].
    #[cfg(test)]
    pub(crate) const ALL: [Listing; 5] = [
        Listing::All,
        Listing::Succeeded,
        Listing::OtherState,
        Listing::EffectsInDoubt,
        Listing::ExpiredLeases,
    ];
}

impl Statements {
    /// The statements of backend `kind`, reading the database clock plus `offset_us` (0 except
    /// in tests that move time).
    pub(crate) fn render(kind: BackendKind, offset_us: i64) -> Self {
        let d = Dialect::of(kind);
        let r = |template: &str| render(kind, offset_us, template);
        let grant_returning = "RETURNING fence, attempts, {us:lease_expires_at} AS expires_us";
        let insert = {
            let base = "INSERT INTO safe_jobs (digest, fingerprint, state, fence, attempts, owner, \
                lease_expires_at, effects, created_at, updated_at) \
                VALUES (?, ?, 'running', 1, 1, ?, {plus}, 'none', {now}, {now})";
            if d.returning {
                // A duplicate is no error (and no server log line).
                r(&format!(
                    "{base} ON CONFLICT (digest) DO NOTHING {grant_returning}"
                ))
            } else {
                // MySQL: a duplicate is a unique violation; `grant_of` reads the expiry.
                r(base)
            }
        };
        let returning = |sql: &str, ret: &str| {
            if d.returning {
                r(&format!("{sql} {ret}"))
            } else {
                r(sql)
            }
        };
        let list = |filter: &str| {
            [
                r(&format!(
                    "SELECT {COLS} FROM safe_jobs WHERE {filter} ORDER BY digest LIMIT ?"
                )),
                r(&format!(
                    "SELECT {COLS} FROM safe_jobs WHERE {filter} AND digest > ? \
                     ORDER BY digest LIMIT ?"
                )),
            ]
        };
        Self {
            returning: d.returning,
            kind,
            offset_us,
            now: r("SELECT {now_us} AS us"),
            insert,
            grant_of: r(
                "SELECT fence, attempts, {us:lease_expires_at} AS expires_us \
                 FROM safe_jobs WHERE digest = ? AND fence = ? AND lease_expires_at IS NOT NULL",
            ),
            select_row: r(&format!("SELECT {COLS} FROM safe_jobs WHERE digest = ?")),
            takeover: returning(
                &format!(
                    "UPDATE safe_jobs SET state = 'running', fence = fence + 1, \
                     attempts = attempts + 1, owner = ?, lease_expires_at = {{plus}}, \
                     updated_at = {{now}} \
                     WHERE digest = ? AND fence = ? AND state = ? \
                     AND (state = 'released' OR {LEASE_DEAD})"
                ),
                grant_returning,
            ),
            renew: returning(
                "UPDATE safe_jobs SET lease_expires_at = {plus}, updated_at = {now} \
                 WHERE digest = ? AND fence = ? AND state = 'running'",
                "RETURNING {us:lease_expires_at} AS us",
            ),
            expiry_of: r("SELECT {us:lease_expires_at} AS us FROM safe_jobs \
                 WHERE digest = ? AND fence = ? AND state = 'running'"),
            finalize_succeeded: r("UPDATE safe_jobs SET state = 'succeeded', result = ?, \
                 effects = ?, lease_expires_at = {plus}, updated_at = {now}, \
                 finalized_at = {now}, retain_until = {plus_or_null} \
                 WHERE digest = ? AND fence = ? AND state = 'running'"),
            confirm_succeeded: r("SELECT fence AS us FROM safe_jobs \
                 WHERE digest = ? AND fence = ? AND state = 'succeeded'"),
            finalize_failed: r("UPDATE safe_jobs SET state = 'failed', failure = ?, \
                 lease_expires_at = NULL, updated_at = {now}, finalized_at = {now}, \
                 retain_until = {plus_or_null} \
                 WHERE digest = ? AND fence = ? AND state = 'running'"),
            release: r(
                "UPDATE safe_jobs SET state = 'released', lease_expires_at = NULL, \
                 last_error = ?, updated_at = {now} \
                 WHERE digest = ? AND fence = ? AND state = 'running'",
            ),
            finish_effects: r("UPDATE safe_jobs SET effects = ?, \
                 last_error = COALESCE(?, last_error), updated_at = {now} \
                 WHERE digest = ? AND fence = ? AND state = 'succeeded' \
                 AND effects = 'pending'"),
            claim_effects: r(&format!(
                "UPDATE safe_jobs SET fence = fence + 1, effects = 'pending', owner = ?, \
                 lease_expires_at = {{plus}}, updated_at = {{now}} \
                 WHERE digest = ? AND fence = ? AND {IN_DOUBT}"
            )),
            list: [
                list("1 = 1"),
                list("state = 'succeeded'"),
                list(&format!("{NOT_SUCCEEDED} AND state = ?")),
                list(IN_DOUBT),
                list(&format!(
                    "{NOT_SUCCEEDED} AND state = 'running' AND {LEASE_DEAD}"
                )),
            ],
            // The predicate again outside the subquery: a row is deleted only if it is still
            // prunable when the DELETE reaches it. MySQL deletes with ORDER BY … LIMIT itself
            // (and cannot delete from a table its own subquery reads).
            prune: if kind == BackendKind::Mysql {
                r(&format!(
                    "DELETE FROM safe_jobs WHERE {PRUNABLE} ORDER BY retain_until LIMIT ?"
                ))
            } else {
                r(&format!(
                    "DELETE FROM safe_jobs WHERE {PRUNABLE} AND digest IN (SELECT digest \
                     FROM safe_jobs WHERE {PRUNABLE} ORDER BY retain_until LIMIT ?)"
                ))
            },
        }
    }
}

/// A whole `safe_jobs` row, timestamps as microseconds since the Unix epoch, plus the database's
/// now read in the same statement.
#[derive(Debug, QueryableByName)]
pub(crate) struct RawRow {
    #[diesel(sql_type = Binary)]
    pub digest: Vec<u8>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub fingerprint: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub expires_us: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub result: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub failure: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Text)]
    pub effects: String,
    #[diesel(sql_type = BigInt)]
    pub created_us: i64,
    #[diesel(sql_type = BigInt)]
    pub updated_us: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub finalized_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub retain_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub now_us: i64,
}

impl Statements {
    /// Whether a group is written as multi-row statements (PostgreSQL) rather than the
    /// single-key statements in one transaction.
    pub(crate) fn multi_row(&self) -> bool {
        self.kind == BackendKind::Postgres
    }

    /// PostgreSQL: the fresh acquires of `n` keys in one statement, inserted in digest order.
    /// Binds per key: digest, fingerprint, owner, ttl_us. Returns a [`GroupGrantRow`] for each
    /// key it inserted, nothing for a key that exists.
    pub(crate) fn group_insert(&self, n: usize) -> String {
        let values =
            vec!["(CAST(? AS bytea), CAST(? AS bytea), CAST(? AS text), CAST(? AS float8))"; n]
                .join(", ");
        render(
            self.kind,
            self.offset_us,
            &format!(
                "INSERT INTO safe_jobs (digest, fingerprint, state, fence, attempts, owner, \
                 lease_expires_at, effects, created_at, updated_at) \
                 SELECT v.digest, v.fingerprint, 'running', 1, 1, v.owner, \
                 {{now}} + v.ttl * interval '1 microsecond', 'none', {{now}}, {{now}} \
                 FROM (VALUES {values}) AS v (digest, fingerprint, owner, ttl) ORDER BY v.digest \
                 ON CONFLICT (digest) DO NOTHING \
                 RETURNING digest, fence, attempts, {{us:lease_expires_at}} AS expires_us"
            ),
        )
    }

    /// PostgreSQL: `n` finalize-succeeded CASes in one statement. Binds per key: digest, fence,
    /// result, effects, ttl_us, retain_us (NULL: kept forever). Returns the digest of each row it
    /// finalized.
    pub(crate) fn group_succeed(&self, n: usize) -> String {
        let values = vec![
            "(CAST(? AS bytea), CAST(? AS int8), CAST(? AS text), CAST(? AS text), \
             CAST(? AS float8), CAST(? AS float8))";
            n
        ]
        .join(", ");
        render(
            self.kind,
            self.offset_us,
            &format!(
                "UPDATE safe_jobs AS j SET state = 'succeeded', result = v.result, \
                 effects = v.effects, lease_expires_at = {{now}} + v.ttl * interval '1 microsecond', \
                 updated_at = {{now}}, finalized_at = {{now}}, \
                 retain_until = {{now}} + v.retain * interval '1 microsecond' \
                 FROM (VALUES {values}) AS v (digest, fence, result, effects, ttl, retain) \
                 WHERE j.digest = v.digest AND j.fence = v.fence AND j.state = 'running' \
                 RETURNING j.digest"
            ),
        )
    }
}

/// A grant of a group insert: the key, and its new fence, attempt and expiry.
#[derive(Debug, QueryableByName)]
pub(crate) struct GroupGrantRow {
    #[diesel(sql_type = Binary)]
    pub digest: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub expires_us: i64,
}

/// A key a group statement changed.
#[derive(Debug, QueryableByName)]
pub(crate) struct DigestRow {
    #[diesel(sql_type = Binary)]
    pub digest: Vec<u8>,
}

/// What a grant returns: the new fence, attempt and expiry.
#[derive(Debug, QueryableByName)]
pub(crate) struct GrantRow {
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub expires_us: i64,
}

/// One integer (the database's now, or a new expiry), in microseconds.
#[derive(Debug, QueryableByName)]
pub(crate) struct MicrosRow {
    #[diesel(sql_type = BigInt)]
    pub us: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_statements_render_completely() {
        let s = Statements::render(BackendKind::Sqlite, 0);
        assert!(
            s.insert
                .contains("ON CONFLICT (digest) DO NOTHING RETURNING")
        );
        assert_eq!(s.insert.matches('?').count(), 4);
        assert_eq!(s.takeover.matches('?').count(), 5);
        assert!(!s.select_row.contains('{'));
        let later = Statements::render(BackendKind::Sqlite, 31_000_000);
        assert!(
            later.now.contains("'now', '+31.000000 seconds'"),
            "{}",
            later.now
        );
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_has_no_returning() {
        let s = Statements::render(BackendKind::Mysql, 0);
        assert!(!s.insert.contains("RETURNING"));
        assert!(!s.renew.contains("RETURNING"));
    }
}
