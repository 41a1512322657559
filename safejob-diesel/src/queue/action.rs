//! [`ActionStore`] on the SQL backends: the `safe_actions` table. A claim picks due rows with
//! `FOR UPDATE SKIP LOCKED` (SQLite: inside `BEGIN IMMEDIATE`) and writes a fresh token and
//! expiry in the same transaction; a mark is fenced by that token and inserts the job (or the
//! outbox row) in its own transaction.

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Binary, Nullable, Text},
};
use safejob_core::{
    KeyDigest,
    action::{
        ActionClaim, ActionFilter, ActionId, ActionLease, ActionOutcome, ActionRecord, ActionState,
        ActionStore, NewAction, Published, RetryAction, Rule,
    },
    queue::{JobId, RunAt},
    store::{FenceCheck, StoreError},
};

use super::{
    DieselQueue, enqueue,
    rows::{clean, instant, micros},
    sql::render,
    tx::{Begin, End, Fail, QCtx},
};
use crate::{
    ConnectionRef,
    backend::{
        BackendKind, Bind, DbConnection, Dialect, Stmt,
        pool::{PooledConn, with_conn},
    },
    outbox,
};

const COLS: &str = "id, action_type, payload, {us:eligible_at} AS eligible_us, idem_digest, \
    rules, state, claim_token, {us:claim_expires_at} AS claim_us, attempts, max_attempts, \
    last_error, {us:processed_at} AS processed_us, job_id, message_id, \
    {us:created_at} AS created_us FROM safe_actions";
const INSERT: &str = "INSERT INTO safe_actions (action_type, payload, eligible_at, idem_digest, \
    rules, state, attempts, max_attempts, publish_token, created_at, updated_at) VALUES \
    (?, ?, COALESCE({at}, {plus}), ?, ?, 'pending', 0, ?, ?, {now}, {now})";
const BY_DIGEST: &str = "SELECT id AS n, publish_token AS token FROM safe_actions \
    WHERE idem_digest = ?";
const DUE: &str = "SELECT id AS n FROM safe_actions WHERE state = 'pending' \
    AND eligible_at <= {now} AND (claim_expires_at IS NULL OR claim_expires_at <= {now}) \
    ORDER BY eligible_at, id LIMIT ?";
/// The mark of a claim: only rows still due and unclaimed (the pick's lock already ensures it
/// on PostgreSQL and MySQL; this keeps it true without the lock too).
const CLAIM: &str = "UPDATE safe_actions SET claim_token = ?, claim_expires_at = {plus}, \
    attempts = attempts + 1, updated_at = {now} WHERE id IN ({ids}) AND state = 'pending' \
    AND (claim_expires_at IS NULL OR claim_expires_at <= {now})";
/// Every mark: fenced by the claim's token on a pending action (…, id, token).
const FENCE: &str = "WHERE id = ? AND claim_token = ? AND state = 'pending'";

#[derive(QueryableByName)]
struct ActionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    action_type: String,
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = BigInt)]
    eligible_us: i64,
    #[diesel(sql_type = Nullable<Binary>)]
    idem_digest: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    rules: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    claim_token: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    claim_us: Option<i64>,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    max_attempts: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    processed_us: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    job_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    message_id: Option<String>,
    #[diesel(sql_type = BigInt)]
    created_us: i64,
}

#[derive(QueryableByName)]
struct IdOnly {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    n: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    token: Option<String>,
}

fn corrupt(id: i64, detail: impl Into<String>) -> StoreError {
    StoreError::CorruptRow {
        digest: format!("safe_actions #{id}"),
        detail: detail.into(),
    }
}

impl ActionRow {
    fn record(self) -> Result<ActionRecord, StoreError> {
        let id = self.id;
        let count =
            |what: &str, n: i64| u32::try_from(n).map_err(|_| corrupt(id, format!("{what} {n}")));
        let opt = |us: Option<i64>| us.map(|us| instant(id, us)).transpose();
        let rule_texts: Vec<String> = serde_json::from_str(&self.rules)
            .map_err(|e| corrupt(id, format!("rules is not a JSON array of text: {e}")))?;
        Ok(ActionRecord {
            id: ActionId(id),
            payload: serde_json::from_str(&self.payload)
                .map_err(|e| corrupt(id, format!("payload is not JSON: {e}")))?,
            action_type: self.action_type,
            eligible_at: instant(id, self.eligible_us)?,
            idempotency: self
                .idem_digest
                .map(|d| {
                    <[u8; 32]>::try_from(d.as_slice())
                        .map(KeyDigest::from_bytes)
                        .map_err(|_| corrupt(id, "idem_digest is not 32 bytes"))
                })
                .transpose()?,
            rules: rule_texts
                .iter()
                .map(|r| r.parse::<Rule>().map_err(|e| corrupt(id, format!("{e}"))))
                .collect::<Result<_, _>>()?,
            state: self
                .state
                .parse::<ActionState>()
                .map_err(|e| corrupt(id, format!("{e}")))?,
            claim_token: self.claim_token,
            claim_expires_at: opt(self.claim_us)?,
            attempts: count("attempts", self.attempts)?,
            max_attempts: count("max_attempts", self.max_attempts)?,
            last_error: self.last_error,
            processed_at: opt(self.processed_us)?,
            job: self.job_id.map(JobId),
            message_id: self.message_id,
            created_at: instant(id, self.created_us)?,
        })
    }
}

fn fence_binds<'a>(mut binds: Vec<Bind<'a>>, lease: &'a ActionLease) -> Vec<Bind<'a>> {
    binds.extend([Bind::Int(lease.id.0), Bind::Text(&lease.token)]);
    binds
}

fn new_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl QCtx<'_> {
    fn action_sql(&self, template: &str) -> String {
        render(self.sql.kind, self.sql.offset, template)
    }

    /// Inserts `action` on `conn` (the store's own, or the caller's transaction): `INSERT` that
    /// does nothing on a duplicate digest, then the digest's row tells whether this insert won.
    pub(crate) fn publish_on<C: DbConnection>(
        &self,
        conn: &mut C,
        action: &NewAction,
    ) -> Result<Published, Fail> {
        let kind = self.sql.kind;
        let (at, delay) = match action.eligible_at {
            RunAt::Now => (None, 0),
            RunAt::At(at) => (Some(Dialect::of(kind).at_text(at)), 0),
            RunAt::After(d) => (None, micros(d)?),
        };
        let payload = clean(&action.payload.to_string()).into_owned();
        let rules: Vec<&str> = action.rules.iter().map(Rule::text).collect();
        let rules = serde_json::to_string(&rules)
            .map_err(|e| StoreError::backend(format!("rules: {e}")))?;
        let token = new_token();
        let digest = action.idempotency.map(|d| *d.as_bytes());
        let conflict = match kind {
            BackendKind::Mysql => " ON DUPLICATE KEY UPDATE id = id",
            _ => " ON CONFLICT DO NOTHING",
        };
        let text = self.action_sql(&format!("{INSERT}{conflict}"));
        let binds = vec![
            Bind::Text(&action.action_type),
            Bind::Text(&payload),
            Bind::OptText(at.as_deref()),
            Bind::Int(delay),
            Bind::OptBytes(digest.as_ref().map(<[u8; 32]>::as_slice)),
            Bind::Text(&rules),
            Bind::Int(i64::from(action.max_attempts.max(1))),
            Bind::Text(&token),
        ];
        conn.exec(&Stmt::new(&text, binds))?;
        let missing = || StoreError::backend("the published action is not there");
        let Some(d) = &digest else {
            let last = match kind {
                BackendKind::Postgres => "SELECT lastval() AS n",
                BackendKind::Sqlite => "SELECT last_insert_rowid() AS n",
                BackendKind::Mysql => "SELECT LAST_INSERT_ID() AS n",
            };
            let rows: Vec<IdOnly> = conn.load(&Stmt::new(last, vec![]))?;
            let id = rows.first().and_then(|r| r.n).ok_or_else(missing)?;
            return Ok(Published::Inserted(ActionId(id)));
        };
        // The digest's row: ours if it carries this publish's token.
        let rows: Vec<IdRow> = conn.load(&Stmt::new(BY_DIGEST, vec![Bind::Bytes(d)]))?;
        let row = rows.first().ok_or_else(missing)?;
        let id = ActionId(row.n.ok_or_else(missing)?);
        Ok(if row.token.as_deref() == Some(token.as_str()) {
            Published::Inserted(id)
        } else {
            Published::Existing(id)
        })
    }

    fn read_actions<C: DbConnection>(
        &self,
        conn: &mut C,
        filter: &str,
        binds: Vec<Bind<'_>>,
    ) -> Result<Vec<ActionRecord>, Fail> {
        let text = self.action_sql(&format!("SELECT {COLS} {filter}"));
        let rows: Vec<ActionRow> = conn.load(&Stmt::new(&text, binds))?;
        Ok(rows
            .into_iter()
            .map(ActionRow::record)
            .collect::<Result<_, _>>()?)
    }

    fn claim_actions<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        claim: &ActionClaim<'_>,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        if claim.limit == 0 {
            return Ok(Vec::new());
        }
        let lock = match self.sql.kind {
            BackendKind::Sqlite => "",
            _ => " FOR UPDATE SKIP LOCKED",
        };
        let pick = self.action_sql(&format!("{DUE}{lock}"));
        let limit = i64::try_from(claim.limit).unwrap_or(i64::MAX);
        let ttl = micros(claim.ttl)?;
        self.transaction(c, Begin::Write, |c| {
            let rows: Vec<IdOnly> = c.conn.load(&Stmt::new(&pick, vec![Bind::Int(limit)]))?;
            let ids: Vec<i64> = rows.iter().filter_map(|r| r.n).collect();
            if ids.is_empty() {
                return Ok(End::Commit(Vec::new()));
            }
            let list = vec!["?"; ids.len()].join(", ");
            let mark = self.action_sql(&CLAIM.replace("{ids}", &list));
            let mut binds = vec![Bind::Text(claim.token), Bind::Int(ttl)];
            binds.extend(ids.iter().map(|id| Bind::Int(*id)));
            c.conn.exec(&Stmt::new(&mark, binds))?;
            let read = format!("WHERE id IN ({list}) AND claim_token = ? ORDER BY eligible_at, id");
            let mut binds: Vec<Bind<'_>> = ids.iter().map(|id| Bind::Int(*id)).collect();
            binds.push(Bind::Text(claim.token));
            Ok(End::Commit(self.read_actions(&mut c.conn, &read, binds)?))
        })
    }

    fn finish_action<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        lease: &ActionLease,
        outcome: &ActionOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let done = "claim_expires_at = NULL, updated_at = {now}";
        self.transaction(c, Begin::Write, |c| {
            let conn = &mut c.conn;
            let applied = match outcome {
                ActionOutcome::Enqueue(job) => {
                    let mark = self.action_sql(&format!(
                        "UPDATE safe_actions SET state = 'processed', processed_at = {{now}}, \
                         {done} {FENCE}"
                    ));
                    if conn.exec(&Stmt::new(&mark, fence_binds(vec![], lease)))? != 1 {
                        return Ok(End::Rollback(FenceCheck::Stale));
                    }
                    let id = enqueue::enqueue(&self.sql, conn, std::slice::from_ref(*job))?[0].id();
                    let set = "UPDATE safe_actions SET job_id = ? WHERE id = ?";
                    conn.exec(&Stmt::new(
                        set,
                        vec![Bind::Int(id.0), Bind::Int(lease.id.0)],
                    ))?;
                    true
                }
                ActionOutcome::Publish { topic, payload } => {
                    let read =
                        self.read_actions(conn, "WHERE id = ?", vec![Bind::Int(lease.id.0)])?;
                    let Some(action) = read.first() else {
                        return Ok(End::Rollback(FenceCheck::Stale));
                    };
                    let mark = self.action_sql(&format!(
                        "UPDATE safe_actions SET state = 'processed', processed_at = {{now}}, \
                         {done} {FENCE}"
                    ));
                    if conn.exec(&Stmt::new(&mark, fence_binds(vec![], lease)))? != 1 {
                        return Ok(End::Rollback(FenceCheck::Stale));
                    }
                    let digest = safejob_core::action::message_digest(action);
                    let payload = serde_json::to_string(payload)
                        .map_err(|e| StoreError::backend(format!("message payload: {e}")))?;
                    let id = outbox::emit_on(&mut conn.as_ref(), &digest, topic, &payload)
                        .map_err(StoreError::backend)?;
                    let message_id = id.to_string();
                    let set = "UPDATE safe_actions SET message_id = ? WHERE id = ?";
                    let binds = vec![Bind::Text(&message_id), Bind::Int(lease.id.0)];
                    conn.exec(&Stmt::new(set, binds))?;
                    true
                }
                ActionOutcome::Skip { reason } => {
                    let text = self.action_sql(&format!(
                        "UPDATE safe_actions SET state = 'skipped', processed_at = {{now}}, \
                         last_error = ?, {done} {FENCE}"
                    ));
                    let binds = fence_binds(vec![Bind::Text(reason)], lease);
                    conn.exec(&Stmt::new(&text, binds))? == 1
                }
                ActionOutcome::Failed {
                    error,
                    retry_in: Some(delay),
                } => {
                    let text = self.action_sql(&format!(
                        "UPDATE safe_actions SET eligible_at = {{plus}}, last_error = ?, \
                         {done} {FENCE}"
                    ));
                    let binds =
                        fence_binds(vec![Bind::Int(micros(*delay)?), Bind::Text(error)], lease);
                    conn.exec(&Stmt::new(&text, binds))? == 1
                }
                ActionOutcome::Failed {
                    error,
                    retry_in: None,
                } => {
                    let text = self.action_sql(&format!(
                        "UPDATE safe_actions SET state = 'parked', last_error = ?, {done} {FENCE}"
                    ));
                    let binds = fence_binds(vec![Bind::Text(error)], lease);
                    conn.exec(&Stmt::new(&text, binds))? == 1
                }
            };
            Ok(if applied {
                End::Commit(FenceCheck::Applied)
            } else {
                End::Rollback(FenceCheck::Stale)
            })
        })
    }
}

impl DieselQueue {
    /// Publishes `action` on the caller's own connection, inside the caller's transaction: the
    /// action exists if and only if that transaction commits. Build it with
    /// [`ActionBuilder::detached`](safejob_core::action::ActionBuilder::detached) and
    /// [`build`](safejob_core::action::ActionBuilder::build). A duplicate idempotency key does
    /// not abort the caller's transaction (the insert is `ON CONFLICT DO NOTHING` / `ON
    /// DUPLICATE KEY UPDATE id = id`).
    pub fn publish_in<'c>(
        &self,
        conn: impl Into<ConnectionRef<'c>>,
        action: &NewAction,
    ) -> Result<Published, StoreError> {
        let q = self.ctx();
        let mut conn = conn.into();
        q.check_backend(&conn, "publish_in")?;
        let answer = match &mut conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => q.publish_on(&mut **c, action),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => q.publish_on(&mut **c, action),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => q.publish_on(&mut **c, action),
        };
        answer.map_err(|fail| q.fail_to_store(fail))
    }
}

impl ActionStore for DieselQueue {
    fn action_now(&self) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        safejob_core::queue::QueueStore::now(self)
    }

    fn publish(&self, action: &NewAction) -> Result<Published, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.transaction(conn, Begin::Write, |c| {
            Ok(End::Commit(q.publish_on(&mut c.conn, action)?))
        }))
    }

    fn claim_actions(&self, claim: &ActionClaim<'_>) -> Result<Vec<ActionRecord>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.claim_actions(conn, claim))
    }

    fn finish_action(
        &self,
        lease: &ActionLease,
        outcome: &ActionOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let q = self.ctx();
        let done = with_conn!(self.store, conn => q.finish_action(conn, lease, outcome))?;
        if done == FenceCheck::Applied && matches!(outcome, ActionOutcome::Enqueue(_)) {
            self.wake_in_process();
        }
        Ok(done)
    }

    fn get_action(&self, id: ActionId) -> Result<Option<ActionRecord>, StoreError> {
        let q = self.ctx();
        with_conn!(self.store, conn => q.transaction(conn, Begin::Read, |c| {
            let rows = q.read_actions(&mut c.conn, "WHERE id = ?", vec![Bind::Int(id.0)])?;
            Ok(End::Commit(rows.into_iter().next()))
        }))
    }

    fn list_actions(
        &self,
        filter: &ActionFilter,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        let q = self.ctx();
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        if let Some(state) = filter.state {
            conds.push("state = ?");
            binds.push(Bind::Text(state.as_str()));
        }
        if let Some(t) = &filter.action_type {
            conds.push("action_type = ?");
            binds.push(Bind::Text(t));
        }
        let mut text = String::new();
        if !conds.is_empty() {
            text = format!("WHERE {}", conds.join(" AND "));
        }
        text.push_str(" ORDER BY id LIMIT ?");
        binds.push(Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
        with_conn!(self.store, conn => q.transaction(conn, Begin::Read, |c| {
            Ok(End::Commit(q.read_actions(&mut c.conn, &text, binds.clone())?))
        }))
    }

    fn retry_action(&self, id: ActionId) -> Result<RetryAction, StoreError> {
        let q = self.ctx();
        let text = q.action_sql(
            "UPDATE safe_actions SET state = 'pending', eligible_at = {now}, attempts = 0, \
             claim_expires_at = NULL, updated_at = {now} WHERE id = ? AND state = 'parked'",
        );
        with_conn!(self.store, conn => q.transaction(conn, Begin::Write, |c| {
            if c.conn.exec(&Stmt::new(&text, vec![Bind::Int(id.0)]))? == 1 {
                return Ok(End::Commit(RetryAction::Applied));
            }
            let rows = q.read_actions(&mut c.conn, "WHERE id = ?", vec![Bind::Int(id.0)])?;
            Ok(End::Rollback(match rows.first() {
                Some(a) => RetryAction::WrongState(a.state),
                None => RetryAction::NotFound,
            }))
        }))
    }
}
