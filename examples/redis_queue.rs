//! The `redis_streams` example's payments on a Redis Streams consumer group, and a driver that
//! kills consumers on purpose. Shared by `cargo run --example redis_streams --features
//! safejob-examples/redis` and the `redis_streams` test.
//!
//! The adapter itself — reading with `XREADGROUP`, reclaiming with `XAUTOCLAIM`, running each
//! entry through the guard and turning its disposition into `XACK`, a pending entry or a
//! dead-letter `XADD` — is [`safejob_brokers::redis`]; this module adds the example's job
//! ([`Payment`], which posts a ledger row in `on_succeeded_once` on the finalize transaction's
//! connection, so its effect commits with `succeeded`, once), a producer, and [`consume`], which
//! runs several consumers of the group and crashes some of them ([`Crash`]) to show that every
//! payment is still posted once.

use std::{
    collections::BTreeMap,
    error::Error,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use redis::{Commands, streams::StreamId};
pub use safejob_brokers::redis::{DEFAULT_REDIS_URL, Streams, connect, redact, redis_url};
use safejob_brokers::{
    DecodeError, RunKind, Settle, Stats,
    redis::{RedisConsumer, RedisSettings},
};
use safejob_core::{
    EffectsContext, Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome,
    PerformContext, Runner, SafeJob,
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt};

/// Errors of the adapter's own plumbing (Redis, the ledger queries), boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One payment as producers write it: the fields `id`, `account` and `cents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMsg {
    /// The payment id: with the run, the idempotency key.
    pub id: String,
    /// The account credited.
    pub account: String,
    /// The amount in cents.
    pub cents: i64,
}

impl PaymentMsg {
    /// The entry's fields.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("account", self.account.clone()),
            ("cents", self.cents.to_string()),
        ]
    }

    /// Reads a payment back from a stream entry. A missing or malformed field is an error: the
    /// entry cannot be run safely and is dead-lettered.
    pub fn decode(entry: &StreamId) -> Result<Self, DecodeError> {
        let text = |field: &str| {
            entry
                .get::<String>(field)
                .ok_or_else(|| DecodeError::new(format!("field {field:?} is missing or not text")))
        };
        let cents = text("cents")?;
        Ok(Self {
            id: text("id")?,
            account: text("account")?,
            cents: cents
                .parse()
                .map_err(|_| DecodeError::new("field \"cents\" is not an integer"))?,
        })
    }
}

/// The ledger `Payment` posts to. No unique constraint on purpose: a payment posted twice would
/// show as two rows instead of being hidden by a constraint error.
const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS redis_payments_ledger (
    run TEXT NOT NULL, payment_id TEXT NOT NULL, account TEXT NOT NULL, cents BIGINT NOT NULL)";

/// The guarded job: credits `msg.account` once per payment id (within one run).
#[derive(Debug, Clone)]
pub struct Payment {
    /// The run (its stream's name), so runs sharing a database never replay each other.
    pub run: String,
    /// The payment.
    pub msg: PaymentMsg,
}

/// Why a [`Payment`] attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The ledger write failed (the finalize transaction rolls back).
    #[error("ledger write failed: {0}")]
    Ledger(#[from] safejob_diesel::EffectsTxError),
    /// The runner is not in transactional mode, or the store is of another backend.
    #[error(transparent)]
    NoTransaction(#[from] safejob_diesel::TxError),
}

impl SafeJob for Payment {
    type Error = PaymentError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["redis-payment", &self.run, &self.msg.id])
    }

    // The same payment id with another account or amount is a key conflict: dead-lettered.
    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of(&(&self.msg.account, self.msg.cents)).map(Some)
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        // Retry-safe work: validate, call a gateway that deduplicates by payment id.
        Ok(Outcome::json(serde_json::json!({
            "account": self.msg.account,
            "cents": self.msg.cents,
        })))
    }

    // `EffectsTx`: one statement for SQLite and PostgreSQL alike (`?` on every backend).
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        ctx.effects_tx()?.insert(
            "redis_payments_ledger",
            &[
                ("run", (&self.run).into()),
                ("payment_id", (&self.msg.id).into()),
                ("account", (&self.msg.account).into()),
                ("cents", self.msg.cents.into()),
            ],
        )?;
        Ok(())
    }
}

/// Creates the ledger table if it is missing.
pub fn create_ledger(store: &DieselStore) -> Result<(), BoxError> {
    store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => diesel::sql_query(CREATE_LEDGER).execute(*conn),
        #[cfg(feature = "postgres")]
        ConnectionRef::Postgres(conn) => diesel::sql_query(CREATE_LEDGER).execute(*conn),
        _ => Err(diesel::result::Error::QueryBuilderError(
            "the example's ledger supports SQLite and PostgreSQL".into(),
        )),
    })??;
    Ok(())
}

#[derive(QueryableByName)]
struct LedgerRow {
    #[diesel(sql_type = Text)]
    payment_id: String,
    #[diesel(sql_type = BigInt)]
    cents: i64,
}

/// The ledger's rows of `run`, read from the database: `(payment id, cents)`.
pub fn ledger_rows(store: &DieselStore, run: &str) -> Result<Vec<(String, i64)>, BoxError> {
    let rows: Vec<LedgerRow> = store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => diesel::sql_query(
            "SELECT payment_id, cents FROM redis_payments_ledger WHERE run = ? ORDER BY payment_id",
        )
        .bind::<Text, _>(run)
        .load(*conn),
        #[cfg(feature = "postgres")]
        ConnectionRef::Postgres(conn) => diesel::sql_query(
            "SELECT payment_id, cents FROM redis_payments_ledger WHERE run = $1 ORDER BY payment_id",
        )
        .bind::<Text, _>(run)
        .load(*conn),
        _ => Err(diesel::result::Error::QueryBuilderError(
            "the example's ledger supports SQLite and PostgreSQL".into(),
        )),
    })??;
    Ok(rows.into_iter().map(|r| (r.payment_id, r.cents)).collect())
}

/// Ledger rows per payment id.
pub fn postings_per_payment(rows: &[(String, i64)]) -> BTreeMap<&str, usize> {
    let mut postings = BTreeMap::new();
    for (id, _) in rows {
        *postings.entry(id.as_str()).or_default() += 1;
    }
    postings
}

/// Adds `entries` (field lists) to the stream from `producers` threads; returns how many were
/// added.
pub fn produce(
    url: &str,
    streams: &Streams,
    entries: &[Vec<(&'static str, String)>],
    producers: usize,
) -> Result<usize, BoxError> {
    let producers = producers.clamp(1, entries.len().max(1));
    let chunk = entries.len().div_ceil(producers).max(1);
    thread::scope(|scope| {
        let handles: Vec<_> = entries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> Result<usize, BoxError> {
                    let mut conn = connect(url)?;
                    for fields in part {
                        let _id: String = conn.xadd(&streams.stream, "*", fields)?;
                    }
                    Ok(part.len())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer panicked".into()))
            })
            .sum()
    })
}

/// How a consumer dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// It stops right after reading, before running or acknowledging the entry in hand (and the
    /// rest of its batch).
    AfterRead,
    /// It runs the entry in hand through the guard — the job succeeds and its effects commit —
    /// and dies before `XACK`: a redelivery of an entry whose job already succeeded.
    BeforeAck,
}

/// One consumer in the group: a thread with its own connection and runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Its consumer name in the group (also the runner's worker id).
    pub name: String,
    /// `Some((how, n))`: it handles `n` entries normally, then dies on the next one.
    pub crash: Option<(Crash, usize)>,
}

impl ConsumerSpec {
    /// A consumer that does not crash.
    pub fn survivor(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            crash: None,
        }
    }

    /// A consumer that handles `after` entries, then dies `how`.
    pub fn crashing(name: impl Into<String>, how: Crash, after: usize) -> Self {
        Self {
            name: name.into(),
            crash: Some((how, after)),
        }
    }
}

/// Consumer tuning. Every loop is bounded by `deadline` and `max_rounds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Entries per `XREADGROUP` / `XAUTOCLAIM`.
    pub batch: usize,
    /// `BLOCK` of `XREADGROUP` when the stream has nothing new.
    pub block: Duration,
    /// `XAUTOCLAIM`'s min-idle-time: how long an entry sits in a PEL before a survivor takes it.
    pub min_idle: Duration,
    /// The whole consumption must finish within this.
    pub deadline: Duration,
    /// At most this many read rounds per consumer.
    pub max_rounds: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            batch: 8,
            block: Duration::from_millis(100),
            min_idle: Duration::from_millis(300),
            deadline: Duration::from_secs(60),
            max_rounds: 5_000,
        }
    }
}

impl Settings {
    /// The adapter's settings: a running entry is re-claimed three times per `min_idle`.
    fn redis(&self) -> RedisSettings {
        RedisSettings {
            batch: self.batch,
            block: self.block,
            min_idle: self.min_idle,
            renew_every: self.min_idle / 3,
        }
    }
}

/// What the consumers did, summed over all of them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeStats {
    /// Entries handed to a consumer, by `XREADGROUP` or `XAUTOCLAIM` (redeliveries included).
    pub deliveries: usize,
    /// Of those, redeliveries taken over with `XAUTOCLAIM`.
    pub reclaimed: usize,
    /// Runs that performed the job and finalized it succeeded (at most one per key).
    pub succeeded: usize,
    /// Runs answered with the stored outcome: duplicates absorbed (then acked).
    pub absorbed: usize,
    /// Of those, entries reclaimed with `XAUTOCLAIM` whose job had already succeeded.
    pub replayed_after_reclaim: usize,
    /// `Retry` dispositions: the entry was left pending for a later `XAUTOCLAIM`.
    pub left_pending: usize,
    /// Entries moved to the dead-letter stream (and acked).
    pub dead_lettered: usize,
    /// Entries acknowledged (each counted once, by the `XACK` that removed it).
    pub acked: usize,
    /// Consumers that died.
    pub crashes: usize,
    /// Entries a dying consumer left unacknowledged in its PEL.
    pub abandoned: usize,
}

#[derive(Default)]
struct Counters([AtomicUsize; 10]);

#[derive(Clone, Copy)]
enum Stat {
    Deliveries,
    Reclaimed,
    Succeeded,
    Absorbed,
    ReplayedAfterReclaim,
    LeftPending,
    DeadLettered,
    Acked,
    Crashes,
    Abandoned,
}

impl Counters {
    fn add(&self, stat: Stat, n: usize) {
        self.0[stat as usize].fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self, stat: Stat) -> usize {
        self.0[stat as usize].load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> ConsumeStats {
        ConsumeStats {
            deliveries: self.get(Stat::Deliveries),
            reclaimed: self.get(Stat::Reclaimed),
            succeeded: self.get(Stat::Succeeded),
            absorbed: self.get(Stat::Absorbed),
            replayed_after_reclaim: self.get(Stat::ReplayedAfterReclaim),
            left_pending: self.get(Stat::LeftPending),
            dead_lettered: self.get(Stat::DeadLettered),
            acked: self.get(Stat::Acked),
            crashes: self.get(Stat::Crashes),
            abandoned: self.get(Stat::Abandoned),
        }
    }
}

/// Everything a consumer thread shares with the others.
struct Group<'a, R, D> {
    url: &'a str,
    streams: &'a Streams,
    settings: &'a Settings,
    expected: usize,
    started: Instant,
    runner_for: &'a R,
    decode: &'a D,
    counters: Counters,
    stats: Arc<Stats>,
}

/// Runs `consumers` on the group until `expected` entries are acknowledged. Consumers that crash
/// start first and read before the survivors start, so every crash really leaves entries behind;
/// the survivors then read new entries and, when there are none, reclaim idle ones with
/// `XAUTOCLAIM`. Each entry is decoded with `decode` (an error dead-letters it) and run with the
/// runner `runner_for` builds for the consumer's name.
///
/// Fails if a consumer cannot reach Redis, if the deadline or the round limit passes first, or if
/// no consumer survives.
pub fn consume<J, R, D>(
    url: &str,
    streams: &Streams,
    consumers: &[ConsumerSpec],
    expected: usize,
    settings: &Settings,
    runner_for: R,
    decode: D,
) -> Result<ConsumeStats, BoxError>
where
    J: SafeJob,
    R: Fn(&str) -> Result<Runner, BoxError> + Sync,
    D: Fn(&StreamId) -> Result<J, DecodeError> + Sync,
{
    if consumers.iter().all(|c| c.crash.is_some()) {
        return Err("at least one consumer must survive to reclaim the others' entries".into());
    }
    let group = Group {
        url,
        streams,
        settings,
        expected,
        started: Instant::now(),
        runner_for: &runner_for,
        decode: &decode,
        counters: Counters::default(),
        stats: Arc::default(),
    };
    let (crashing, surviving): (Vec<_>, Vec<_>) = consumers.iter().partition(|c| c.crash.is_some());
    thread::scope(|scope| {
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let group = &group;
        let mut handles = Vec::new();
        for spec in &crashing {
            let ready = ready_tx.clone();
            handles.push(scope.spawn(move || group.run_consumer(spec, Some(ready))));
        }
        drop(ready_tx);
        // Each crashing consumer reports once it has read (or ended); bounded by the deadline.
        for _ in 0..crashing.len() {
            let left = settings.deadline.saturating_sub(group.started.elapsed());
            if ready_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        for spec in &surviving {
            handles.push(scope.spawn(move || group.run_consumer(spec, None)));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a consumer thread panicked".into()))
            })
            .collect::<Result<Vec<()>, BoxError>>()
    })?;
    Ok(group.counters.snapshot())
}

impl<J, R, D> Group<'_, R, D>
where
    J: SafeJob,
    R: Fn(&str) -> Result<Runner, BoxError> + Sync,
    D: Fn(&StreamId) -> Result<J, DecodeError> + Sync,
{
    fn run_consumer(
        &self,
        spec: &ConsumerSpec,
        mut ready: Option<mpsc::Sender<()>>,
    ) -> Result<(), BoxError> {
        let result = self.consumer_loop(spec, &mut ready);
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        result.map_err(|e| format!("consumer {}: {e}", spec.name).into())
    }

    fn consumer_loop(
        &self,
        spec: &ConsumerSpec,
        ready: &mut Option<mpsc::Sender<()>>,
    ) -> Result<(), BoxError> {
        let runner = Arc::new((self.runner_for)(&spec.name)?);
        let mut consumer = RedisConsumer::connect(
            self.url,
            self.streams.clone(),
            spec.name.clone(),
            runner,
            self.settings.redis(),
            self.stats.clone(),
        )?;
        let mut handled = 0;
        for _ in 0..self.settings.max_rounds {
            if self.counters.get(Stat::Acked) >= self.expected {
                return Ok(());
            }
            if self.started.elapsed() > self.settings.deadline {
                return Err(self.unfinished(format!("deadline of {:?}", self.settings.deadline)));
            }
            let mut batch = consumer.read_new()?;
            let mut reclaimed = false;
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            if batch.is_empty() && spec.crash.is_none() {
                batch = consumer.reclaim()?;
                reclaimed = true;
                self.counters.add(Stat::Reclaimed, batch.len());
            }
            self.counters.add(Stat::Deliveries, batch.len());
            for (i, entry) in batch.iter().enumerate() {
                if let Some((how, after)) = spec.crash
                    && handled == after
                {
                    if how == Crash::BeforeAck {
                        // The guarded run, without acting on its outcome.
                        let (kind, _) = consumer.run(entry, self.decode)?;
                        if kind == RunKind::Succeeded {
                            self.counters.add(Stat::Succeeded, 1);
                        }
                    }
                    // The process "dies": no XACK for this entry nor the rest of the batch.
                    self.counters.add(Stat::Crashes, 1);
                    self.counters.add(Stat::Abandoned, batch.len() - i);
                    return Ok(());
                }
                let done = consumer.handle(entry, self.decode)?;
                match done.kind {
                    RunKind::Succeeded => self.counters.add(Stat::Succeeded, 1),
                    RunKind::Replayed => {
                        self.counters.add(Stat::Absorbed, 1);
                        if reclaimed {
                            self.counters.add(Stat::ReplayedAfterReclaim, 1);
                        }
                    }
                    _ => {}
                }
                match done.settle {
                    Settle::Retry { .. } => self.counters.add(Stat::LeftPending, 1),
                    Settle::Ack if done.acked => self.counters.add(Stat::Acked, 1),
                    Settle::DeadLetter { .. } if done.acked => {
                        self.counters.add(Stat::Acked, 1);
                        self.counters.add(Stat::DeadLettered, 1);
                    }
                    _ => {}
                }
                handled += 1;
            }
        }
        Err(self.unfinished(format!("{} rounds", self.settings.max_rounds)))
    }

    fn unfinished(&self, limit: String) -> BoxError {
        format!(
            "{limit} passed with {} of {} entries acknowledged",
            self.counters.get(Stat::Acked),
            self.expected
        )
        .into()
    }
}
