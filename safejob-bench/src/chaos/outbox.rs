//! `--effects outbox`: the transactional effect row plus [`MESSAGES_PER_KEY`] outbox messages,
//! all in the finalize transaction; a relay in every worker process (so the nemesis kills and
//! freezes relays mid-batch too, and cuts their connections); a final drain in the parent after
//! recovery; and the checks.
//!
//! The receiver is the table `torture_received`: one row per delivery, no unique key, so a
//! redelivery shows up as a second row, and "a receiver deduplicating by message id" is
//! `COUNT(DISTINCT message_id)`.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use safejob_core::{EffectsContext, JobState, LeaseStore};
use safejob_diesel::{
    BackendKind, ConnectionRef, DieselStore,
    outbox::{
        self, MessageId, OutboxExt, OutboxMessage, Relay, RelayHandle, RelayStats, SinkError,
    },
};

use super::{
    db::{self, DbResult, on_conn},
    job::{JobError, key_of},
};

/// Messages each key's effects emit (two, so sequence numbers above 0 are exercised).
pub const MESSAGES_PER_KEY: u64 = 2;

/// Creates the receiver's table.
pub fn setup(store: &DieselStore) -> DbResult<()> {
    db::exec(
        store,
        "CREATE TABLE torture_received (message_id VARCHAR(96) NOT NULL, \
         receiver VARCHAR(64) NOT NULL)",
    )
    .map(drop)
}

/// Emits the key's messages on the finalize transaction.
pub fn emit(ctx: &mut EffectsContext<'_>, key_no: u64) -> Result<(), JobError> {
    for n in 0..MESSAGES_PER_KEY {
        ctx.outbox_emit("torture", &serde_json::json!({ "k": key_no, "n": n }))
            .map_err(|e| JobError(e.to_string()))?;
    }
    Ok(())
}

/// The receiver: records every delivery it is handed, then takes `reply` to answer (a network
/// round trip: the window in which a killed or frozen relay leaves a delivered message unmarked).
fn sink(
    receiver: Arc<DieselStore>,
    name: String,
    reply: Duration,
) -> impl Fn(&OutboxMessage) -> Result<(), SinkError> + Send + Sync + 'static {
    move |msg: &OutboxMessage| {
        db::exec(
            &receiver,
            &format!(
                "INSERT INTO torture_received (message_id, receiver) VALUES ('{}', '{name}')",
                msg.message_id
            ),
        )
        .map_err(SinkError::unavailable)?;
        thread::sleep(reply);
        Ok(())
    }
}

/// A relay with a claim as long as the lease TTL (so claims of killed or frozen workers expire
/// during the run), on its own store; the receiver writes through `receiver`.
fn relay(
    store: Arc<DieselStore>,
    receiver: Arc<DieselStore>,
    name: &str,
    ttl: Duration,
    reply: Duration,
) -> Relay {
    Relay::builder(store, sink(receiver, name.to_owned(), reply))
        .batch_size(16)
        .claim_ttl(ttl)
        .poll_interval(Duration::from_millis(50))
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()
        .expect("the chaos relay's settings are valid")
}

/// Starts the worker process's relay: a thread next to its runner, until the worker exits (the
/// handle stops it when dropped). `None` when the database cannot be reached.
pub fn start_relay(
    open: impl Fn() -> Result<DieselStore, String>,
    name: &str,
    ttl: Duration,
) -> Option<RelayHandle> {
    let store = Arc::new(open().ok()?);
    let receiver = Arc::new(open().ok()?);
    Some(relay(store, receiver, name, ttl, Duration::from_millis(20)).spawn())
}

/// After recovery, with every worker gone and their claims expired: delivers what is left,
/// waiting out retry backoffs, for at most a minute.
pub fn drain(direct: &Arc<DieselStore>, ttl: Duration) -> Result<RelayStats, String> {
    let claim = ttl.max(Duration::from_secs(5));
    let relay = relay(
        direct.clone(),
        direct.clone(),
        "drain",
        claim,
        Duration::ZERO,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = RelayStats::default();
    loop {
        match relay.run_once() {
            Ok(stats) => total += stats,
            Err(e) if Instant::now() < deadline => eprintln!("safejob-chaos: drain: {e}"),
            Err(e) => return Err(e.to_string()),
        }
        let pending = outbox::counts(direct).map_err(|e| e.to_string())?.pending;
        if pending == 0 || Instant::now() >= deadline {
            return Ok(total);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What the outbox checks found.
#[derive(Debug, Default)]
pub struct OutboxVerdict {
    /// Rows in `safe_outbox`.
    pub messages: u64,
    /// Messages the succeeded keys must have emitted.
    pub expected: u64,
    /// Expected messages with no row: lost at emission.
    pub missing: u64,
    /// Rows no succeeded key should have emitted (a rolled-back or lost finalize's messages).
    pub unexpected: u64,
    /// Rows not marked delivered after the drain (dead ones included).
    pub undelivered: u64,
    /// Messages the receiver never got.
    pub not_received: u64,
    /// Deliveries of ids that are not in the outbox.
    pub phantom: u64,
    /// Distinct ids the receiver got: what a receiver deduplicating by id keeps.
    pub received_unique: u64,
    /// Deliveries beyond the first of an id (allowed: at least once).
    pub redeliveries: u64,
    /// What the final drain delivered.
    pub drained: u64,
    /// Human-readable reasons the run failed.
    pub violations: Vec<String>,
}

impl OutboxVerdict {
    /// The figures for the JSON line.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "messages": self.messages,
            "expected": self.expected,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "undelivered": self.undelivered,
            "not_received": self.not_received,
            "phantom": self.phantom,
            "received_unique": self.received_unique,
            "redeliveries": self.redeliveries,
            "drained_at_end": self.drained,
        })
    }
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    message_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    delivered: i64,
}

/// Message ids with a flag, from a query selecting `message_id` and `delivered` (0 or 1).
fn ids(store: &DieselStore, sql: &str) -> DbResult<Vec<IdRow>> {
    store
        .with_connection(|conn| {
            on_conn!(conn, c => diesel::RunQueryDsl::load::<IdRow>(diesel::sql_query(sql), *c))
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Checks the outbox of a run of `keys` keys against `safe_jobs` and the receiver's table.
pub fn check(store: &DieselStore, keys: u64, drained: u64) -> Result<OutboxVerdict, String> {
    let mut expected = BTreeSet::new();
    for k in 0..keys {
        let key = key_of(k).map_err(|e| e.to_string())?;
        let row = store.get(key.digest()).map_err(|e| e.to_string())?;
        if row.is_some_and(|r| r.state == JobState::Succeeded) {
            expected.extend(
                (0..MESSAGES_PER_KEY).map(|seq| MessageId::new(*key.digest(), seq).to_string()),
            );
        }
    }
    let bigint = match store.backend() {
        BackendKind::Mysql => "SIGNED",
        _ => "BIGINT",
    };
    let rows = ids(
        store,
        &format!(
            "SELECT message_id, CAST(CASE WHEN delivered_at IS NULL THEN 0 ELSE 1 END AS {bigint}) \
             AS delivered FROM safe_outbox"
        ),
    )?;
    let received = ids(
        store,
        &format!("SELECT message_id, CAST(1 AS {bigint}) AS delivered FROM torture_received"),
    )?;
    let in_outbox: BTreeSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    let mut per_id: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &received {
        *per_id.entry(r.message_id.as_str()).or_default() += 1;
    }
    let mut v = OutboxVerdict {
        messages: rows.len() as u64,
        expected: expected.len() as u64,
        missing: expected
            .iter()
            .filter(|id| !in_outbox.contains(id.as_str()))
            .count() as u64,
        unexpected: in_outbox
            .iter()
            .filter(|id| !expected.contains(**id))
            .count() as u64,
        undelivered: rows.iter().filter(|r| r.delivered == 0).count() as u64,
        not_received: in_outbox
            .iter()
            .filter(|id| !per_id.contains_key(*id))
            .count() as u64,
        phantom: per_id.keys().filter(|id| !in_outbox.contains(*id)).count() as u64,
        received_unique: per_id.len() as u64,
        redeliveries: per_id.values().map(|n| n - 1).sum(),
        drained,
        violations: Vec::new(),
    };
    for (count, what) in [
        (
            v.missing,
            "messages of succeeded keys are missing from the outbox",
        ),
        (v.unexpected, "outbox messages belong to no succeeded key"),
        (v.undelivered, "outbox messages are not marked delivered"),
        (v.not_received, "outbox messages never reached the receiver"),
        (
            v.phantom,
            "deliveries carry an id that is not in the outbox",
        ),
    ] {
        if count > 0 {
            v.violations.push(format!("{count} {what}"));
        }
    }
    if v.received_unique != v.messages {
        v.violations.push(format!(
            "deduplicating by id, the receiver saw {} messages of {}",
            v.received_unique, v.messages
        ));
    }
    Ok(v)
}
