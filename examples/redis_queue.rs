//! Adapting a queue we do not own: a Redis Streams consumer group with the guard in front of
//! every message. Shared by `cargo run --example redis_streams --features safejob-examples/redis`
//! and the `redis_streams` test.
//!
//! Redis Streams deliver at least once: an entry read with `XREADGROUP` sits in the reading
//! consumer's pending entries list (PEL) until it is `XACK`ed, and an entry whose consumer died
//! is handed to a survivor by `XAUTOCLAIM` once it has been idle for `min_idle`. Producers may
//! also add the same payment twice. Each entry is run through [`Runner::run`], and its
//! [`Disposition`] becomes a stream operation:
//!
//! | disposition | stream operation |
//! |---|---|
//! | `Ack` (succeeded, or a replayed duplicate) | `XACK` |
//! | `Retry { after }` (key busy, not ready, transient error) | nothing: the entry stays pending |
//! | `DeadLetter` (bad input, final failure) | `XADD` to the dead-letter stream, then `XACK` |
//!
//! Why `Retry` leaves the entry pending rather than `XACK` + a delayed re-`XADD`: a stream has no
//! delayed delivery, so a re-added entry would be read again at once by an idle consumer, and the
//! `XACK` + `XADD` pair is two writes that a crash can split (a lost job, or two copies). Leaving
//! the entry in the PEL keeps one entry with one id; `XAUTOCLAIM`'s `min_idle` is the retry delay
//! (a floor: a suggested `after` longer than that is honoured by the guard itself, because an early
//! redelivery of a busy key is answered `Busy` again and stays pending), and Redis counts the
//! deliveries. The dead-letter path is `XADD` then `XACK`, so a crash between the two leaves the
//! entry pending and it is dead-lettered again: at least once, with `source_id` to tell copies
//! apart.
//!
//! The job, [`Payment`], posts a ledger row in `on_succeeded_once` on the finalize transaction's
//! connection (`EffectsMode::Transactional`), so its effect commits with `succeeded`, once;
//! [`ledger_rows`] reads the effects back from the database.

use std::{
    collections::BTreeMap,
    error::Error,
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use redis::{
    Commands, Connection, RedisResult,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingReply,
        StreamReadOptions, StreamReadReply,
    },
};
use safejob_core::{
    Disposition, EffectsContext, Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome,
    PerformContext, Report, RunError, Runner, SafeJob, disposition,
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt};

/// Errors of the adapter's own plumbing (Redis, the ledger queries), boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// The Redis URL when `SAFEJOB_REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take; longer than any `BLOCK` the consumers use.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `SAFEJOB_REDIS_URL`, or [`DEFAULT_REDIS_URL`].
pub fn redis_url() -> String {
    std::env::var("SAFEJOB_REDIS_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
}

/// `url` without its user and password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A connection to `url` with connect and I/O timeouts, checked with `PING`.
pub fn connect(url: &str) -> RedisResult<Connection> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    redis::cmd("PING").query::<String>(&mut conn)?;
    Ok(conn)
}

/// The names one run uses: its own stream, dead-letter stream and consumer group, so that runs
/// (and tests running at the same time) never see each other's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streams {
    /// A name unique to this run; also part of every idempotency key.
    pub run: String,
    /// The jobs stream.
    pub stream: String,
    /// The dead-letter stream.
    pub dead: String,
    /// The consumer group.
    pub group: String,
}

impl Streams {
    /// Fresh names under `prefix`, unique by process id and clock.
    pub fn unique(prefix: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let run = format!("{}-{nanos:x}", std::process::id());
        let stream = format!("{prefix}:{run}");
        Self {
            dead: format!("{stream}:dead"),
            group: "payments".to_owned(),
            stream,
            run,
        }
    }

    /// Creates the stream and its consumer group (reading from the start).
    pub fn create(&self, conn: &mut Connection) -> RedisResult<()> {
        conn.xgroup_create_mkstream(&self.stream, &self.group, "0")
    }

    /// Deletes the stream (with its group) and the dead-letter stream.
    pub fn delete(&self, conn: &mut Connection) -> RedisResult<usize> {
        conn.del(&[&self.stream, &self.dead])
    }

    /// Entries read but not acknowledged, in any consumer's PEL.
    pub fn pending(&self, conn: &mut Connection) -> RedisResult<usize> {
        let reply: StreamPendingReply = conn.xpending(&self.stream, &self.group)?;
        Ok(reply.count())
    }

    /// Entries in the dead-letter stream.
    pub fn dead_letters(&self, conn: &mut Connection) -> RedisResult<usize> {
        conn.xlen(&self.dead)
    }
}

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
    pub fn decode(entry: &StreamId) -> Result<Self, String> {
        let text = |field: &str| {
            entry
                .get::<String>(field)
                .ok_or_else(|| format!("field {field:?} is missing or not text"))
        };
        let cents = text("cents")?;
        Ok(Self {
            id: text("id")?,
            account: text("account")?,
            cents: cents
                .parse()
                .map_err(|_| "field \"cents\" is not an integer".to_owned())?,
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
    /// The run ([`Streams::run`]), so runs sharing a database never replay each other.
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
    D: Fn(&StreamId) -> Result<J, String> + Sync,
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
    D: Fn(&StreamId) -> Result<J, String> + Sync,
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
        let mut conn = connect(self.url)?;
        let runner = (self.runner_for)(&spec.name)?;
        let mut handled = 0;
        for _ in 0..self.settings.max_rounds {
            if self.counters.get(Stat::Acked) >= self.expected {
                return Ok(());
            }
            if self.started.elapsed() > self.settings.deadline {
                return Err(self.unfinished(format!("deadline of {:?}", self.settings.deadline)));
            }
            let mut batch = self.read_new(&mut conn, &spec.name)?;
            let mut reclaimed = false;
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
            if batch.is_empty() && spec.crash.is_none() {
                batch = self.reclaim(&mut conn, &spec.name)?;
                reclaimed = true;
                self.counters.add(Stat::Reclaimed, batch.len());
            }
            self.counters.add(Stat::Deliveries, batch.len());
            for (i, entry) in batch.iter().enumerate() {
                if let Some((how, after)) = spec.crash
                    && handled == after
                {
                    if how == Crash::BeforeAck {
                        self.run_only(&runner, entry);
                    }
                    // The process "dies": no XACK for this entry nor the rest of the batch.
                    self.counters.add(Stat::Crashes, 1);
                    self.counters.add(Stat::Abandoned, batch.len() - i);
                    return Ok(());
                }
                self.handle(&mut conn, &runner, &spec.name, entry, reclaimed)?;
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

    /// `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS s >`: entries never delivered before.
    fn read_new(&self, conn: &mut Connection, consumer: &str) -> RedisResult<Vec<StreamId>> {
        let block_ms = usize::try_from(self.settings.block.as_millis()).unwrap_or(usize::MAX);
        let options = StreamReadOptions::default()
            .group(&self.streams.group, consumer)
            .count(self.settings.batch)
            .block(block_ms.max(1));
        let reply: Option<StreamReadReply> =
            conn.xread_options(&[&self.streams.stream], &[">"], &options)?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// `XAUTOCLAIM s g c min-idle 0-0 COUNT n`: entries idle in any PEL (a dead consumer's, or
    /// ones left pending for a retry) become this consumer's.
    fn reclaim(&self, conn: &mut Connection, consumer: &str) -> RedisResult<Vec<StreamId>> {
        let min_idle = usize::try_from(self.settings.min_idle.as_millis()).unwrap_or(usize::MAX);
        let reply: StreamAutoClaimReply = conn.xautoclaim_options(
            self.streams.stream.as_str(),
            &self.streams.group,
            consumer,
            min_idle,
            "0-0",
            StreamAutoClaimOptions::default().count(self.settings.batch),
        )?;
        Ok(reply.claimed)
    }

    /// A crashing consumer's last act: the guarded run, without acting on its disposition.
    fn run_only(&self, runner: &Runner, entry: &StreamId) {
        if let Ok(job) = (self.decode)(entry) {
            let result = runner.run(&job);
            if matches!(result, Ok(Report::Succeeded { .. })) {
                self.counters.add(Stat::Succeeded, 1);
            }
        }
    }

    fn handle(
        &self,
        conn: &mut Connection,
        runner: &Runner,
        consumer: &str,
        entry: &StreamId,
        reclaimed: bool,
    ) -> Result<(), BoxError> {
        let job = match (self.decode)(entry) {
            Ok(job) => job,
            Err(reason) => {
                return self.dead_letter(conn, consumer, entry, &format!("undecodable: {reason}"));
            }
        };
        let result = runner.run(&job);
        match &result {
            Ok(Report::Succeeded { .. }) => self.counters.add(Stat::Succeeded, 1),
            Ok(Report::AlreadySucceeded { .. } | Report::AlreadyFailed { .. }) => {
                self.counters.add(Stat::Absorbed, 1);
                if reclaimed {
                    self.counters.add(Stat::ReplayedAfterReclaim, 1);
                }
            }
            _ => {}
        }
        match disposition(&result) {
            Disposition::Ack => {
                self.ack(conn, entry)?;
                Ok(())
            }
            Disposition::Retry { .. } => {
                // Stays in this consumer's PEL; XAUTOCLAIM hands it out again after min_idle.
                self.counters.add(Stat::LeftPending, 1);
                Ok(())
            }
            Disposition::DeadLetter => self.dead_letter(conn, consumer, entry, &reason(&result)),
        }
    }

    /// `XACK`; counts the entry if this call removed it from the PEL.
    fn ack(&self, conn: &mut Connection, entry: &StreamId) -> RedisResult<bool> {
        let removed: usize = conn.xack(&self.streams.stream, &self.streams.group, &[&entry.id])?;
        if removed > 0 {
            self.counters.add(Stat::Acked, removed);
        }
        Ok(removed > 0)
    }

    /// `XADD` to the dead-letter stream (the original fields, the source id, the reason), then
    /// `XACK`.
    fn dead_letter(
        &self,
        conn: &mut Connection,
        consumer: &str,
        entry: &StreamId,
        reason: &str,
    ) -> Result<(), BoxError> {
        let mut fields: Vec<(String, String)> = entry
            .map
            .keys()
            .filter_map(|k| entry.get::<String>(k).map(|v| (k.clone(), v)))
            .collect();
        fields.sort();
        fields.push(("dead.source_id".into(), entry.id.clone()));
        fields.push(("dead.reason".into(), reason.to_owned()));
        fields.push(("dead.consumer".into(), consumer.to_owned()));
        let _id: String = conn.xadd(&self.streams.dead, "*", &fields)?;
        if self.ack(conn, entry)? {
            self.counters.add(Stat::DeadLettered, 1);
        }
        Ok(())
    }
}

/// Why a run is dead-lettered, in words that name keys by digest only.
fn reason<E: Error + 'static>(result: &Result<Report, RunError<E>>) -> String {
    match result {
        Ok(Report::Failed { failure, .. }) => format!("failed: {}", failure.code),
        Ok(other) => format!("{other:?}"),
        Err(error) => error.to_string(),
    }
}
