//! The queue's SQL, per backend, and the rows it reads back.
//!
//! Every statement is a template in the crate's one vocabulary ([`crate::backend::dialect`]:
//! `{now}`, `{plus}`, `{at}`, `{us:EXPR}`, `{now_us}`, `{bigint}`, `{append}`), rendered with the
//! same test clock offset as the store's, which
//! [`DieselQueue::advance_clock_for_tests`](super::DieselQueue::advance_clock_for_tests) moves
//! together with the store's. The queue's own placeholders are filled in here first: `{cols}`
//! (a whole job row, `{t}` its table qualifier), `{due}`, `{done}`, `{fenced}`, `{applied}`,
//! `{run_at}`, `{channel}`, and per call `{q}` / `{ids}` (bind lists).

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Nullable, Text},
};

use crate::backend::{BackendKind, Dialect, render as render_sql};

/// The channel enqueue and retry notify on PostgreSQL, and listeners listen on.
pub(crate) const CHANNEL: &str = "safejob_queue";

/// The columns of a whole job row (`{t}` is an optional table qualifier).
const JOB_COLS: &str = "{t}id AS id, {t}kind AS kind, {t}queue AS queue, {t}payload AS payload, \
    {t}metadata AS metadata, {t}priority AS priority, {t}state AS state, \
    {us:{t}run_at} AS run_at_us, {t}attempts AS attempts, {t}max_attempts AS max_attempts, \
    {t}fence AS fence, {t}owner AS owner, {us:{t}lease_expires_at} AS lease_us, \
    {us:{t}attempted_at} AS attempted_us, {t}idempotent AS idempotent, \
    {t}unique_key AS unique_key, {t}guard_digest AS guard_digest, \
    {t}guard_fingerprint AS guard_fingerprint, {t}progress AS progress, {t}errors AS errors, \
    {us:{t}created_at} AS created_us, {us:{t}updated_at} AS updated_us, \
    {us:{t}finished_at} AS finished_us, {t}batch_id AS batch_id";

/// A waiting job (pending, scheduled, retrying).
pub(crate) const WAITING: &str = "state IN ('pending', 'scheduled', 'retrying')";
/// A finished job (succeeded, dead, cancelled).
pub(crate) const FINISHED: &str = "state IN ('succeeded', 'dead', 'cancelled')";
/// The fence of every write by a worker: id, fence.
pub(crate) const FENCED: &str = "id = ? AND fence = ? AND state = 'running'";
/// A running job whose lease is no longer live.
const EXPIRED: &str =
    "state = 'running' AND (lease_expires_at IS NULL OR lease_expires_at <= {now})";

/// Renders `template` for `kind` with the clock offset `off` (µs): `{t}` (the table qualifier
/// of [`JOB_COLS`]) dropped, then the shared vocabulary ([`crate::backend::dialect`]).
pub(crate) fn render(kind: BackendKind, off: i64, template: &str) -> String {
    render_sql(kind, off, &template.replace("{t}", ""))
}

/// Like [`render`], qualifying the job columns of `{cols}` with `prefix`.
fn render_cols(kind: BackendKind, off: i64, template: &str, prefix: &str) -> String {
    let cols = JOB_COLS.replace("{t}", prefix);
    render(kind, off, &template.replace("{cols}", &cols))
}

/// `?, ?, …` for `n` binds.
pub(crate) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The size an `IN (…)` list is padded to (a power of two), so few distinct statements exist.
pub(crate) fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// How a backend claims.
#[derive(Debug)]
pub(crate) enum ClaimSql {
    /// PostgreSQL, in autocommit: one statement ([`GUARDED_CLAIM`]) that locks the due rows,
    /// claims them and inserts the fresh guard rows of the guarded ones (queues…, limit, owner,
    /// ttl, owner, ttl), reading back `ClaimedRow`s; `{q}` stands for the queue list.
    Cte(String),
    /// SQLite, inside `BEGIN IMMEDIATE`: `UPDATE … WHERE id IN (SELECT … LIMIT ?) RETURNING`
    /// (owner, ttl, queues…, limit).
    Returning(String),
    /// MySQL / MariaDB, in one transaction: `pick` (queues…, limit) locks due rows with
    /// `FOR UPDATE SKIP LOCKED`; `mark` (owner, ttl, ids…) claims them; `read` (ids…) reads them.
    PickMarkRead {
        pick: String,
        mark: String,
        read: String,
    },
}

/// The PostgreSQL claim, one statement: lock the due rows (`due`), claim them (`j`), and insert a
/// `safe_jobs` row for each guarded job whose key is new (`g`: the guard's fresh acquire,
/// `ON CONFLICT DO NOTHING` as in the store's own insert, in digest order). Of several claimed
/// jobs with one key only the first in claim order asks (`want`), as if they were acquired one
/// after the other. A guarded job with no `g_fence` back has a key that exists: the worker's
/// store decides it right after ([`crate::guard::ops::Ctx::acquire`]), still under the job's lease.
const GUARDED_CLAIM: &str = "WITH due AS (SELECT id FROM safe_queue_jobs WHERE {due} \
    ORDER BY priority, run_at, id LIMIT ? FOR UPDATE SKIP LOCKED), \
    j AS (UPDATE safe_queue_jobs AS j SET state = 'running', fence = j.fence + 1, \
    attempts = j.attempts + 1, owner = ?, lease_expires_at = {plus}, attempted_at = {now}, \
    updated_at = {now} FROM due WHERE j.id = due.id RETURNING {cols}), \
    want AS (SELECT DISTINCT ON (guard_digest) id, guard_digest, guard_fingerprint FROM j \
    WHERE guard_digest IS NOT NULL ORDER BY guard_digest, priority, run_at_us, id), \
    g AS (INSERT INTO safe_jobs (digest, fingerprint, state, fence, attempts, owner, \
    lease_expires_at, effects, created_at, updated_at) \
    SELECT guard_digest, guard_fingerprint, 'running', 1, 1, ?, {plus}, 'none', {now}, {now} \
    FROM want ORDER BY guard_digest \
    ON CONFLICT (digest) DO NOTHING \
    RETURNING digest, fence, attempts, {us:lease_expires_at} AS expires_us) \
    SELECT j.*, g.fence AS g_fence, g.attempts AS g_attempts, g.expires_us AS g_expires_us \
    FROM j LEFT JOIN want ON want.id = j.id LEFT JOIN g ON g.digest = want.guard_digest";

/// The PostgreSQL completion of a guarded job as succeeded, one statement: the job's fenced update
/// (`j`) only where the guard is still `running` under its fence, the guard's finalize (`g`) only
/// where `j` applied. Lock order as everywhere: the job row, then the guard row. Binds: progress,
/// id, fence, digest, fence (guard), result, effects, ttl, retain (µs; NULL: kept forever),
/// digest, fence (guard), id, fence.
/// Reads back `GuardedDoneRow`: `applied` ({applied}), `guard_applied` (`g`'s count) and
/// `job_live` (the job was `running` under its fence: when nothing applied, the guard was stale
/// rather than the job).
///
/// A guard taken over between the statement's snapshot and `g`'s row lock leaves `j` applied and
/// `g` not. In autocommit ([`GUARDED_APPLIED_OR_FAIL`]) the statement then fails on purpose, so
/// nothing at all is applied and the transactional path decides; inside a transaction
/// ([`GUARDED_APPLIED`]) the caller reads the two counts and rolls back.
const GUARDED_SUCCEEDED: &str = "WITH j AS (UPDATE safe_queue_jobs SET {done}, \
    state = 'succeeded', finished_at = {now} WHERE {fenced} AND EXISTS (SELECT 1 FROM safe_jobs \
    WHERE digest = ? AND fence = ? AND state = 'running') RETURNING id), \
    g AS (UPDATE safe_jobs SET state = 'succeeded', result = ?, effects = ?, \
    lease_expires_at = {plus}, updated_at = {now}, finalized_at = {now}, \
    retain_until = {plus_or_null} \
    WHERE digest = ? AND fence = ? AND state = 'running' AND EXISTS (SELECT 1 FROM j) \
    RETURNING digest) \
    SELECT {applied} AS applied, (SELECT count(*) FROM g) AS guard_applied, \
    (SELECT count(*) FROM safe_queue_jobs WHERE {fenced}) AS job_live";

/// `applied` in autocommit: `j`'s count where it equals `g`'s, else an error (the `CAST` of a
/// message to an integer) that undoes the whole statement.
const GUARDED_APPLIED_OR_FAIL: &str = "CAST(CASE WHEN (SELECT count(*) FROM j) = \
    (SELECT count(*) FROM g) THEN CAST((SELECT count(*) FROM j) AS text) \
    ELSE 'safejob: the guard was taken over during the completion' END AS int8)";

/// `applied` inside a transaction: `j`'s count.
const GUARDED_APPLIED: &str = "(SELECT count(*) FROM j)";

/// The two renderings of [`GUARDED_SUCCEEDED`].
#[derive(Debug)]
pub(crate) struct GuardedSucceeded {
    /// For autocommit: fails rather than apply the job's half alone.
    pub(crate) autocommit: String,
    /// For a transaction the caller rolls back when the counts differ.
    pub(crate) in_transaction: String,
}

/// The PostgreSQL insert of a batch: one array per column (PostgreSQL array literals bound as
/// text and cast), expanded by `unnest … WITH ORDINALITY` in batch order, so ids are assigned in
/// batch order as with a multi-row `VALUES`. Binds: kind, queue, payload, metadata, priority, at,
/// delay, max_attempts, idempotent, unique_key, guard_digest, guard_fingerprint (all arrays).
const UNNEST_INSERT: &str = "WITH ins AS (INSERT INTO safe_queue_jobs (kind, queue, payload, \
    metadata, priority, state, run_at, attempts, max_attempts, fence, idempotent, unique_key, \
    guard_digest, guard_fingerprint, errors, created_at, updated_at) \
    SELECT u.kind, u.queue, u.payload, u.metadata, u.priority, \
    CASE WHEN {run_at} > {now} THEN 'scheduled' ELSE 'pending' END, {run_at}, 0, \
    u.max_attempts, 0, u.idempotent, u.unique_key, u.guard_digest, u.guard_fingerprint, '[]', \
    {now}, {now} \
    FROM unnest(CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), \
    CAST(? AS int8[]), CAST(? AS text[]), CAST(? AS int8[]), CAST(? AS int8[]), \
    CAST(? AS int8[]), CAST(? AS bytea[]), CAST(? AS bytea[]), CAST(? AS bytea[])) \
    WITH ORDINALITY AS u(kind, queue, payload, metadata, priority, at, delay, max_attempts, \
    idempotent, unique_key, guard_digest, guard_fingerprint, ord) \
    ORDER BY u.ord \
    ON CONFLICT DO NOTHING RETURNING id, state, unique_key) \
    SELECT ins.id, ins.state, ins.unique_key \
    FROM ins, (SELECT pg_notify('{channel}', current_schema())) AS n";

/// [`UNNEST_INSERT`] rendered for the clock offset `off`.
fn unnest_insert(off: i64) -> String {
    // As `{at}` and `{plus}` of a VALUES row, reading the unnested columns instead of binds.
    let run_at = "COALESCE(CAST(u.at AS timestamptz), \
        ({now} + CAST(u.delay AS float8) * interval '1 microsecond'))";
    render(
        BackendKind::Postgres,
        off,
        &UNNEST_INSERT
            .replace("{run_at}", run_at)
            .replace("{channel}", CHANNEL),
    )
}

/// Every fixed statement of the queue, rendered once per clock offset. Binds are listed after
/// each; `{q}` and `{ids}` are lists filled in per call.
#[derive(Debug)]
pub(crate) struct QueueSql {
    pub(crate) kind: BackendKind,
    pub(crate) offset: i64,
    /// One VALUES row of an insert: kind, queue, payload, metadata, priority, at, delay, at,
    /// delay, max_attempts, idempotent, unique_key, guard_digest, guard_fingerprint
    /// (MySQL: + token).
    pub(crate) insert_row: String,
    /// The INSERT up to its VALUES.
    pub(crate) insert_head: &'static str,
    /// PostgreSQL: the whole batch insert, one array bind per column ([`UNNEST_INSERT`]);
    /// the other backends use `insert_head`, `insert_row` and `insert_tail`.
    pub(crate) insert_unnest: Option<String>,
    /// What follows the VALUES rows (PostgreSQL and SQLite: skip duplicates and return the
    /// inserted rows; MySQL: skip duplicates).
    pub(crate) insert_tail: &'static str,
    /// MySQL: the rows a batch inserted, by token (`EnqRow`).
    pub(crate) inserted_by_token: String,
    /// The live jobs holding unique keys (`EnqRow`): keys….
    pub(crate) live_holders: String,
    pub(crate) claim: ClaimSql,
    /// Renew (ttl, id, fence); `MicrosRow` with RETURNING.
    pub(crate) renew: String,
    /// The lease expiry after a renew, without RETURNING (id, fence).
    pub(crate) expiry_of: String,
    /// Progress (progress, id, fence).
    pub(crate) progress: String,
    /// Completions, each ending with `id, fence`; leading binds listed per statement.
    /// Succeeded: progress.
    pub(crate) succeeded: String,
    /// PostgreSQL: a guarded job succeeded with its guard's finalize, one statement
    /// ([`GUARDED_SUCCEEDED`], `GuardedDoneRow`); the other backends send two.
    pub(crate) guarded_succeeded: Option<GuardedSucceeded>,
    /// Retry: progress, delay, attempt, kind, message.
    pub(crate) retry: String,
    /// Snooze without an error: progress, delay, delay.
    pub(crate) snooze: String,
    /// Snooze with an error: progress, attempt, kind, message, delay, delay.
    pub(crate) snooze_error: String,
    /// Dead or cancelled: progress, state, attempt, kind, message.
    pub(crate) finish: String,
    /// Heartbeat upsert: id, queues, concurrency.
    pub(crate) heartbeat: String,
    /// Remove a worker: id.
    pub(crate) remove_worker: String,
    /// Expired leases (`ReapRow`): limit.
    pub(crate) expired: String,
    /// Reap one job to retrying / parked / dead: attempt, kind, message, id, fence.
    pub(crate) reap: [String; 3],
    /// One job (`JobRow`): id.
    pub(crate) get: String,
    /// An operator retry: id.
    pub(crate) retry_one: String,
    /// An operator cancel: id.
    pub(crate) cancel: String,
    /// The live holder of a job's unique key other than itself (`IdRow`): id, id.
    pub(crate) holder_of: String,
    /// PostgreSQL: wake listeners.
    pub(crate) notify: String,
    /// Prune (cutoff as negative µs, limit).
    pub(crate) prune: String,
    /// Snapshot: counts (`CountRow`).
    pub(crate) counts: String,
    /// Snapshot: per-kind figures (`KindRow`).
    pub(crate) kinds: String,
    /// Snapshot: the latest durations of succeeded jobs per kind (`DurationRow`): limit.
    pub(crate) durations: String,
    /// Snapshot: workers (`WorkerRow`).
    pub(crate) workers: String,
    /// Snapshot: running jobs with their owner (`InFlightRow`).
    pub(crate) in_flight: String,
    /// Snapshot: now and the oldest due time per queue (`OldestRow`s).
    pub(crate) oldest: String,
    /// Jobs finished per minute within a window (`MinuteRow`s): the window as negative µs.
    pub(crate) finished_by_minute: String,
}

impl QueueSql {
    pub(crate) fn render(kind: BackendKind, off: i64) -> Self {
        let r = |t: &str| render(kind, off, t);
        let rc = |t: &str| render_cols(kind, off, t, "");
        let returning = Dialect::of(kind).returning;
        let run_at = "COALESCE({at}, {plus})";
        let token = if kind == BackendKind::Mysql {
            ", ?"
        } else {
            ""
        };
        let insert_row = r(&format!(
            "(?, ?, ?, ?, ?, CASE WHEN {run_at} > {{now}} THEN 'scheduled' ELSE 'pending' END, \
             {run_at}, 0, ?, 0, ?, ?, ?, ?, '[]', {{now}}, {{now}}{token})"
        ));
        let claim_set = "state = 'running', fence = fence + 1, attempts = attempts + 1, \
            owner = ?, lease_expires_at = {plus}, attempted_at = {now}, updated_at = {now}";
        let due = format!("{WAITING} AND run_at <= {{now}} AND queue IN ({{q}})");
        let claim = match kind {
            BackendKind::Postgres => ClaimSql::Cte(render_cols(
                kind,
                off,
                &GUARDED_CLAIM.replace("{due}", &due),
                "j.",
            )),
            BackendKind::Sqlite => ClaimSql::Returning(rc(&format!(
                "UPDATE safe_queue_jobs SET {claim_set} WHERE id IN (SELECT id FROM \
                 safe_queue_jobs WHERE {due} ORDER BY priority, run_at, id LIMIT ?) \
                 RETURNING {{cols}}"
            ))),
            // `waiting = 1` (a generated column): the index walk is in claim order, so only
            // the rows taken are locked.
            BackendKind::Mysql => ClaimSql::PickMarkRead {
                pick: r(
                    "SELECT id FROM safe_queue_jobs WHERE waiting = 1 AND run_at <= {now} \
                     AND queue IN ({q}) ORDER BY priority, run_at, id \
                     LIMIT ? FOR UPDATE SKIP LOCKED",
                ),
                mark: r(&format!(
                    "UPDATE safe_queue_jobs SET {claim_set} WHERE {WAITING} AND id IN ({{ids}})"
                )),
                read: rc("SELECT {cols} FROM safe_queue_jobs WHERE id IN ({ids})"),
            },
        };
        let done = "owner = NULL, lease_expires_at = NULL, updated_at = {now}, \
            progress = COALESCE(?, progress)";
        Self {
            kind,
            offset: off,
            insert_row,
            insert_head: "INSERT INTO safe_queue_jobs (kind, queue, payload, metadata, priority, \
                state, run_at, attempts, max_attempts, fence, idempotent, unique_key, \
                guard_digest, guard_fingerprint, errors, created_at, updated_at",
            insert_tail: match kind {
                BackendKind::Mysql => " ON DUPLICATE KEY UPDATE id = id",
                _ => " ON CONFLICT DO NOTHING RETURNING id, state, unique_key",
            },
            insert_unnest: (kind == BackendKind::Postgres).then(|| unnest_insert(off)),
            inserted_by_token: r("SELECT id, state, unique_key FROM safe_queue_jobs \
                 WHERE enqueue_token = ? ORDER BY id"),
            live_holders: r(&format!(
                "SELECT id, state, unique_key FROM safe_queue_jobs \
                 WHERE unique_key IN ({{q}}) AND NOT ({FINISHED})"
            )),
            claim,
            renew: if returning {
                r(&format!(
                    "UPDATE safe_queue_jobs SET lease_expires_at = {{plus}}, \
                     updated_at = {{now}} WHERE {FENCED} \
                     RETURNING {{us:lease_expires_at}} AS us"
                ))
            } else {
                r(&format!(
                    "UPDATE safe_queue_jobs SET lease_expires_at = {{plus}}, \
                     updated_at = {{now}} WHERE {FENCED}"
                ))
            },
            expiry_of: r(&format!(
                "SELECT {{us:lease_expires_at}} AS us FROM safe_queue_jobs WHERE {FENCED}"
            )),
            progress: r(&format!(
                "UPDATE safe_queue_jobs SET progress = ?, updated_at = {{now}} WHERE {FENCED}"
            )),
            succeeded: r(&format!(
                "UPDATE safe_queue_jobs SET {done}, state = 'succeeded', finished_at = {{now}} \
                 WHERE {FENCED}"
            )),
            guarded_succeeded: (kind == BackendKind::Postgres).then(|| {
                let with = |applied: &str| {
                    r(&GUARDED_SUCCEEDED
                        .replace("{done}", done)
                        .replace("{fenced}", FENCED)
                        .replace("{applied}", applied))
                };
                GuardedSucceeded {
                    autocommit: with(GUARDED_APPLIED_OR_FAIL),
                    in_transaction: with(GUARDED_APPLIED),
                }
            }),
            retry: r(&format!(
                "UPDATE safe_queue_jobs SET {done}, state = 'retrying', run_at = {{plus}}, \
                 errors = {{append}} WHERE {FENCED}"
            )),
            // MySQL assigns left to right, so no assignment here reads a column assigned before
            // it (the attempt is bound, not read from `attempts`).
            snooze: r(&format!(
                "UPDATE safe_queue_jobs SET {done}, attempts = attempts - 1, \
                 run_at = {{plus}}, state = CASE WHEN {{plus}} > {{now}} THEN 'scheduled' \
                 ELSE 'pending' END WHERE {FENCED}"
            )),
            snooze_error: r(&format!(
                "UPDATE safe_queue_jobs SET {done}, errors = {{append}}, \
                 attempts = attempts - 1, run_at = {{plus}}, state = CASE WHEN {{plus}} > \
                 {{now}} THEN 'scheduled' ELSE 'pending' END WHERE {FENCED}"
            )),
            finish: r(&format!(
                "UPDATE safe_queue_jobs SET {done}, state = ?, finished_at = {{now}}, \
                 errors = {{append}} WHERE {FENCED}"
            )),
            heartbeat: match kind {
                BackendKind::Mysql => r("INSERT INTO safe_queue_workers \
                     (id, queues, concurrency, last_heartbeat) VALUES (?, ?, ?, {now}) \
                     ON DUPLICATE KEY UPDATE queues = VALUES(queues), \
                     concurrency = VALUES(concurrency), last_heartbeat = VALUES(last_heartbeat)"),
                _ => r(
                    "INSERT INTO safe_queue_workers (id, queues, concurrency, last_heartbeat) \
                     VALUES (?, ?, ?, {now}) ON CONFLICT (id) DO UPDATE SET \
                     queues = excluded.queues, concurrency = excluded.concurrency, \
                     last_heartbeat = excluded.last_heartbeat",
                ),
            },
            remove_worker: r("DELETE FROM safe_queue_workers WHERE id = ?"),
            expired: r(&format!(
                "SELECT id, kind, fence, attempts, max_attempts, idempotent, owner, batch_id \
                 FROM safe_queue_jobs WHERE {EXPIRED} ORDER BY id LIMIT ?"
            )),
            reap: [
                ("'retrying'", ", run_at = {now}"),
                ("'parked'", ""),
                ("'dead'", ", finished_at = {now}"),
            ]
            .map(|(state, extra)| {
                r(&format!(
                    "UPDATE safe_queue_jobs SET errors = {{append}}, fence = fence + 1, \
                     owner = NULL, lease_expires_at = NULL, updated_at = {{now}}, \
                     state = {state}{extra} WHERE id = ? AND fence = ? AND {EXPIRED}"
                ))
            }),
            get: rc("SELECT {cols} FROM safe_queue_jobs WHERE id = ?"),
            retry_one: r(
                "UPDATE safe_queue_jobs SET state = 'pending', run_at = {now}, \
                 attempts = 0, finished_at = NULL, updated_at = {now} \
                 WHERE id = ? AND state IN ('dead', 'cancelled', 'parked')",
            ),
            cancel: r(&format!(
                "UPDATE safe_queue_jobs SET state = 'cancelled', finished_at = {{now}}, \
                 updated_at = {{now}} WHERE id = ? AND ({WAITING} OR state IN ('parked', 'blocked'))"
            )),
            holder_of: r(
                "SELECT o.id AS id FROM safe_queue_jobs o JOIN safe_queue_jobs j \
                 ON o.unique_key = j.unique_key WHERE j.id = ? AND o.id <> ? \
                 AND o.state NOT IN ('succeeded', 'dead', 'cancelled')",
            ),
            notify: format!("SELECT pg_notify('{CHANNEL}', current_schema())"),
            prune: match kind {
                BackendKind::Mysql => r(&format!(
                    "DELETE FROM safe_queue_jobs WHERE {FINISHED} AND finished_at < {{plus}} \
                     ORDER BY id LIMIT ?"
                )),
                _ => r(&format!(
                    "DELETE FROM safe_queue_jobs WHERE id IN (SELECT id FROM safe_queue_jobs \
                     WHERE {FINISHED} AND finished_at < {{plus}} ORDER BY id LIMIT ?)"
                )),
            },
            counts: r(
                "SELECT queue, kind, state, CAST(COUNT(*) AS {bigint}) AS n \
                 FROM safe_queue_jobs GROUP BY queue, kind, state",
            ),
            kinds: r("SELECT kind, \
                 CAST(SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) AS {bigint}) AS ok, \
                 CAST(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS {bigint}) AS dead, \
                 CAST(SUM(CASE WHEN state = 'succeeded' AND attempted_at IS NOT NULL \
                 AND finished_at > attempted_at \
                 THEN {us:finished_at} - {us:attempted_at} ELSE 0 END) AS {bigint}) AS total_us \
                 FROM safe_queue_jobs WHERE state IN ('succeeded', 'dead') GROUP BY kind"),
            durations: r("SELECT kind, d FROM (SELECT kind, \
                 CASE WHEN attempted_at IS NOT NULL AND finished_at > attempted_at \
                 THEN {us:finished_at} - {us:attempted_at} ELSE 0 END AS d, \
                 ROW_NUMBER() OVER (PARTITION BY kind ORDER BY id DESC) AS rn \
                 FROM safe_queue_jobs WHERE state = 'succeeded') s WHERE rn <= ?"),
            workers: r(
                "SELECT id, queues, concurrency, {us:last_heartbeat} AS heartbeat_us \
                 FROM safe_queue_workers ORDER BY id",
            ),
            in_flight: r("SELECT id, owner FROM safe_queue_jobs \
                 WHERE state = 'running' AND owner IS NOT NULL ORDER BY id"),
            // The minute is the µs timestamp less its remainder: integer arithmetic on every
            // backend (MySQL's `/` would be decimal). The window's start is `{plus}` with a
            // negative bind, so the `finished_at` index bounds the read.
            finished_by_minute: r("SELECT CAST(m AS {bigint}) AS minute_us, \
                 CAST(SUM(CASE WHEN state = 'succeeded' THEN 1 ELSE 0 END) AS {bigint}) AS ok, \
                 CAST(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS {bigint}) AS dead, \
                 CAST(SUM(CASE WHEN state = 'succeeded' THEN d ELSE 0 END) AS {bigint}) AS total_us \
                 FROM (SELECT state, {us:finished_at} - {us:finished_at} % 60000000 AS m, \
                 CASE WHEN attempted_at IS NOT NULL AND finished_at > attempted_at \
                 THEN {us:finished_at} - {us:attempted_at} ELSE 0 END AS d \
                 FROM safe_queue_jobs WHERE state IN ('succeeded', 'dead') \
                 AND finished_at >= {plus}) f GROUP BY m ORDER BY m"),
            // One row per queue with a due job, or one row with no queue when none is: the
            // clock is read either way.
            oldest: r(&format!(
                "SELECT {{now_us}} AS now_us, o.queue AS queue, o.due_us AS due_us \
                 FROM (SELECT 1 AS one) t LEFT JOIN \
                 (SELECT queue, {{us:MIN(run_at)}} AS due_us FROM safe_queue_jobs \
                 WHERE {WAITING} AND run_at <= {{now}} GROUP BY queue) o ON 1 = 1"
            )),
        }
    }

    /// The list of `n` placeholders substituted for `{q}` / `{ids}` in `sql`.
    pub(crate) fn with_list(sql: &str, n: usize) -> String {
        let list = placeholders(n);
        sql.replace("{q}", &list).replace("{ids}", &list)
    }

    /// A listing: `SELECT` of whole rows (`with_cols`) or `UPDATE`/`DELETE` (a `head` ending
    /// before `WHERE`) with the filter's conditions; binds: state, queue, kind (those given),
    /// then after and limit when asked.
    pub(crate) fn filtered(&self, head: &str, filter: &FilterShape, tail: &str) -> String {
        let mut conds = vec!["1 = 1".to_owned()];
        if filter.state {
            conds.push("state = ?".into());
        }
        if filter.queue {
            conds.push("queue = ?".into());
        }
        if filter.kind {
            conds.push("kind = ?".into());
        }
        if filter.after {
            conds.push("id > ?".into());
        }
        conds.extend(filter.extra.iter().map(|c| (*c).to_owned()));
        render_cols(
            self.kind,
            self.offset,
            &format!("{head} WHERE {} {tail}", conds.join(" AND ")),
            "",
        )
    }
}

/// Which conditions a filtered statement has.
#[derive(Debug, Default)]
pub(crate) struct FilterShape {
    pub(crate) state: bool,
    pub(crate) queue: bool,
    pub(crate) kind: bool,
    pub(crate) after: bool,
    pub(crate) extra: Vec<&'static str>,
}

/// A whole job row.
#[derive(Debug, QueryableByName)]
pub(crate) struct JobRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub queue: String,
    #[diesel(sql_type = Text)]
    pub payload: String,
    #[diesel(sql_type = Text)]
    pub metadata: String,
    #[diesel(sql_type = BigInt)]
    pub priority: i64,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub run_at_us: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub max_attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub lease_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub attempted_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub idempotent: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    pub unique_key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub guard_digest: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Binary>)]
    pub guard_fingerprint: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub progress: Option<String>,
    #[diesel(sql_type = Text)]
    pub errors: String,
    #[diesel(sql_type = BigInt)]
    pub created_us: i64,
    #[diesel(sql_type = BigInt)]
    pub updated_us: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub finished_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub batch_id: Option<i64>,
}

/// A job row claimed on PostgreSQL, with the guard row its claim inserted (all three `None`
/// for an unguarded job, and for a guarded one whose key exists already).
#[derive(Debug, QueryableByName)]
pub(crate) struct ClaimedRow {
    #[diesel(embed)]
    pub job: JobRow,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub g_fence: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub g_attempts: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub g_expires_us: Option<i64>,
}

/// What [`GUARDED_SUCCEEDED`] reads back.
#[derive(Debug, QueryableByName)]
pub(crate) struct GuardedDoneRow {
    #[diesel(sql_type = BigInt)]
    pub applied: i64,
    #[diesel(sql_type = BigInt)]
    pub guard_applied: i64,
    #[diesel(sql_type = BigInt)]
    pub job_live: i64,
}

/// What an insert (or a duplicate lookup) reads back.
#[derive(Debug, QueryableByName)]
pub(crate) struct EnqRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Nullable<Binary>)]
    pub unique_key: Option<Vec<u8>>,
}

/// One id.
#[derive(Debug, QueryableByName)]
pub(crate) struct IdRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
}

/// A running job whose lease expired.
#[derive(Debug, QueryableByName)]
pub(crate) struct ReapRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub fence: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub max_attempts: i64,
    #[diesel(sql_type = BigInt)]
    pub idempotent: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub owner: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub batch_id: Option<i64>,
}

/// Jobs in one (queue, kind, state).
#[derive(Debug, QueryableByName)]
pub(crate) struct CountRow {
    #[diesel(sql_type = Text)]
    pub queue: String,
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Finished jobs of one kind.
#[derive(Debug, QueryableByName)]
pub(crate) struct KindRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub ok: i64,
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    #[diesel(sql_type = BigInt)]
    pub total_us: i64,
}

/// One succeeded job's duration.
#[derive(Debug, QueryableByName)]
pub(crate) struct DurationRow {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub d: i64,
}

/// A worker's row.
#[derive(Debug, QueryableByName)]
pub(crate) struct WorkerRow {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub queues: String,
    #[diesel(sql_type = BigInt)]
    pub concurrency: i64,
    #[diesel(sql_type = BigInt)]
    pub heartbeat_us: i64,
}

/// A running job and its owner.
#[derive(Debug, QueryableByName)]
pub(crate) struct InFlightRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub owner: String,
}

/// The clock and the oldest due time of a queue (no queue: nothing is due).
#[derive(Debug, QueryableByName)]
pub(crate) struct OldestRow {
    #[diesel(sql_type = BigInt)]
    pub now_us: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub queue: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub due_us: Option<i64>,
}

/// The jobs finished in one minute.
#[derive(Debug, QueryableByName)]
pub(crate) struct MinuteRow {
    #[diesel(sql_type = BigInt)]
    pub minute_us: i64,
    #[diesel(sql_type = BigInt)]
    pub ok: i64,
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    #[diesel(sql_type = BigInt)]
    pub total_us: i64,
}

/// The current schema (PostgreSQL).
#[derive(Debug, QueryableByName)]
pub(crate) struct SchemaRow {
    #[diesel(sql_type = Text)]
    pub schema: String,
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
            for off in [0, 31_000_000] {
                let s = QueueSql::render(kind, off);
                for sql in [
                    &s.insert_row,
                    &s.renew,
                    &s.succeeded,
                    &s.retry,
                    &s.snooze,
                    &s.snooze_error,
                    &s.finish,
                    &s.reap[0],
                    &s.get,
                    &s.kinds,
                    &s.oldest,
                    &s.finished_by_minute,
                    &s.prune,
                ] {
                    assert!(!sql.contains('{'), "{sql}");
                }
                let row_binds = if kind == BackendKind::Mysql { 15 } else { 14 };
                assert_eq!(s.insert_row.matches('?').count(), row_binds, "{kind:?}");
                assert_eq!(s.retry.matches('?').count(), 7, "{}", s.retry);
                assert_eq!(s.snooze_error.matches('?').count(), 8, "{}", s.snooze_error);
                assert_eq!(s.finish.matches('?').count(), 7);
                assert_eq!(s.reap[2].matches('?').count(), 5);
                if let ClaimSql::Cte(claim) = &s.claim {
                    assert!(!claim.replace("{q}", "").contains('{'), "{claim}");
                    // queues ({q}), limit, owner, ttl, owner, ttl.
                    assert_eq!(claim.matches('?').count(), 5, "{claim}");
                }
                if let Some(done) = &s.guarded_succeeded {
                    for sql in [&done.autocommit, &done.in_transaction] {
                        assert!(!sql.contains('{'), "{sql}");
                        // GuardedSuccess::stmt's 13 binds, the retention among them.
                        assert_eq!(sql.matches('?').count(), 13, "{sql}");
                    }
                    assert!(done.autocommit.contains("taken over"));
                    assert!(!done.in_transaction.contains("taken over"));
                }
                assert_eq!(s.guarded_succeeded.is_some(), kind == BackendKind::Postgres);
            }
        }
    }
}
