//! The relay: claim a batch, deliver each message, record how each delivery ended.
//!
//! One batch, on the database clock throughout:
//!
//! ```text
//! claim     due rows (pending, available_at <= now, no live claim), up to the batch size:
//!           claim_token = fresh random token, claimed_until = now + claim TTL, attempts + 1
//! deliver   each message to the sink, outside any transaction, no connection held
//! record    one fenced UPDATE per message (id, token, claimed_until > now):
//!             Ok            -> delivered_at = now
//!             Unavailable   -> available_at = now + backoff(attempts), last_error
//!             Rejected, or attempts used up -> dead_at = now, last_error
//!           0 rows matched: the claim expired (and may be someone else's now): nothing changes
//! release   messages not yet handed over when the claim is three quarters through its TTL or
//!           the relay is stopping: claim cleared, the attempt given back
//! ```
//!
//! A relay that dies anywhere in there leaves rows whose claim expires; the next claim after that
//! takes them again (and the receiver may see a message twice, under the same id).

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    ops::AddAssign,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use chrono::DateTime;
use diesel::{
    QueryResult,
    connection::{AnsiTransactionManager, TransactionManager},
    result::Error as DieselError,
};
use safejob_core::{KeyDigest, StoreError};
use tracing::{debug, warn};

use super::{
    OutboxMessage, Sink, SinkError, is_missing_outbox, migrate_hint,
    sql::{Claim, IdRow, MessageRow, RelaySql},
};
use crate::{
    BackendKind, DieselStore,
    backend::{
        Bind, DbConnection, Stmt,
        pool::{PooledConn, with_conn},
    },
    error::{is_connection_lost, is_retryable},
};

/// The most messages one claim takes.
pub const MAX_BATCH_SIZE: usize = 1000;
/// The most threads one relay runs.
pub const MAX_THREADS: usize = 64;
/// The longest claim, backoff or poll interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How much of `last_error` is kept.
const MAX_ERROR_CHARS: usize = 2000;
/// How many times a deadlock or lock-wait timeout is retried before it is reported.
const MAX_LOCK_RETRIES: u32 = 6;

/// A relay's settings are out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayConfigError {
    /// The batch size is 0 or above [`MAX_BATCH_SIZE`].
    #[error("batch size must be 1 to {MAX_BATCH_SIZE}, got {got}")]
    InvalidBatchSize {
        /// The size given.
        got: usize,
    },
    /// The thread count is 0 or above [`MAX_THREADS`].
    #[error("thread count must be 1 to {MAX_THREADS}, got {got}")]
    InvalidThreads {
        /// The count given.
        got: usize,
    },
    /// The claim TTL is under a millisecond or above [`MAX_INTERVAL`].
    #[error("claim ttl must be 1 ms to 7 days, got {got:?}")]
    InvalidClaimTtl {
        /// The TTL given.
        got: Duration,
    },
    /// The backoff base is zero, the cap is below the base, or either is above [`MAX_INTERVAL`].
    #[error("backoff needs 0 < base <= cap <= 7 days, got base {base:?} and cap {cap:?}")]
    InvalidBackoff {
        /// The base given.
        base: Duration,
        /// The cap given.
        cap: Duration,
    },
    /// The poll interval is zero or above [`MAX_INTERVAL`].
    #[error("poll interval must be above zero and at most 7 days, got {got:?}")]
    InvalidPollInterval {
        /// The interval given.
        got: Duration,
    },
    /// `max_attempts(0)`: no message could ever be delivered.
    #[error("max attempts must be at least 1")]
    ZeroMaxAttempts,
}

/// A batch could not be claimed or its outcome not recorded. Every message of the batch whose
/// outcome was not recorded is delivered again after its claim expires.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The `safe_outbox` table does not exist.
    #[error("the safe_outbox table is missing; run migrations: {hint}")]
    MissingTable {
        /// How to create it.
        hint: String,
    },
    /// The database could not be reached, the pool had no connection, or a statement failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one batch, or a whole run, did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Claims made (including ones that found nothing due).
    pub batches: u64,
    /// Messages claimed.
    pub claimed: u64,
    /// Messages the sink took and that were marked delivered.
    pub delivered: u64,
    /// Messages the sink failed, scheduled again after a backoff.
    pub retried: u64,
    /// Messages marked dead (rejected, attempts used up, or an unreadable row).
    pub dead: u64,
    /// Outcomes not recorded because the claim had expired by then: those messages will be
    /// delivered again (the receiver deduplicates them by id).
    pub stale: u64,
    /// Claimed messages given back undelivered (the relay was stopping, or the claim was about to
    /// expire).
    pub released: u64,
    /// Batches that failed with an error (run loops only; `run_once` returns the error).
    pub errors: u64,
}

impl AddAssign for RelayStats {
    fn add_assign(&mut self, other: Self) {
        self.batches += other.batches;
        self.claimed += other.claimed;
        self.delivered += other.delivered;
        self.retried += other.retried;
        self.dead += other.dead;
        self.stale += other.stale;
        self.released += other.released;
        self.errors += other.errors;
    }
}

/// Tells running relay threads to stop after the message in hand; wakes them from their poll wait.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<(Mutex<bool>, Condvar)>);

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every relay thread watching this signal to stop.
    pub fn stop(&self) {
        let (stopped, wake) = &*self.0;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
    }

    /// Whether [`StopSignal::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` for the signal; whether it was given.
    fn wait(&self, timeout: Duration) -> bool {
        let (stopped, wake) = &*self.0;
        let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = wake
            .wait_timeout_while(guard, timeout, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }
}

/// Builds a [`Relay`]. Every setting has a default.
#[must_use]
pub struct RelayBuilder {
    store: Arc<DieselStore>,
    sink: Arc<dyn Sink>,
    batch_size: usize,
    poll_interval: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
    claim_ttl: Duration,
    threads: usize,
    max_attempts: Option<u32>,
}

impl fmt::Debug for RelayBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayBuilder")
            .field("store", &self.store)
            .field("batch_size", &self.batch_size)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl RelayBuilder {
    /// How many messages one claim takes. Defaults to 100.
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size;
        self
    }

    /// How long a run loop waits after a claim that found less than a full batch. Defaults to
    /// 1 second.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The delay before retry `n` is `min(cap, base · 2^(n-1))`, of which the upper half is
    /// random (so failing messages do not come back in lockstep). Defaults to 1 second and
    /// 5 minutes.
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// How long a claim keeps other relays off the claimed messages. A relay stops handing over
    /// the messages of a batch once three quarters of it have passed, so make it comfortably
    /// longer than a batch takes to deliver. Defaults to 60 seconds.
    pub fn claim_ttl(mut self, ttl: Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    /// How many threads [`Relay::run`] and [`Relay::spawn`] use, each claiming its own batches.
    /// Defaults to 1.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Marks a message dead once this many deliveries have failed (or been claimed without an
    /// outcome, as when a relay crashes on it). Defaults to no limit: retried forever.
    pub fn max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(max);
        self
    }

    /// Validates the settings and builds the relay.
    pub fn build(self) -> Result<Relay, RelayConfigError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(RelayConfigError::InvalidBatchSize {
                got: self.batch_size,
            });
        }
        if self.threads == 0 || self.threads > MAX_THREADS {
            return Err(RelayConfigError::InvalidThreads { got: self.threads });
        }
        if self.claim_ttl < Duration::from_millis(1) || self.claim_ttl > MAX_INTERVAL {
            return Err(RelayConfigError::InvalidClaimTtl {
                got: self.claim_ttl,
            });
        }
        if self.backoff_base.is_zero()
            || self.backoff_cap < self.backoff_base
            || self.backoff_cap > MAX_INTERVAL
        {
            return Err(RelayConfigError::InvalidBackoff {
                base: self.backoff_base,
                cap: self.backoff_cap,
            });
        }
        if self.poll_interval.is_zero() || self.poll_interval > MAX_INTERVAL {
            return Err(RelayConfigError::InvalidPollInterval {
                got: self.poll_interval,
            });
        }
        if self.max_attempts == Some(0) {
            return Err(RelayConfigError::ZeroMaxAttempts);
        }
        let kind = self.store.backend();
        Ok(Relay {
            sql: RelaySql::render(kind, self.batch_size),
            kind,
            store: self.store,
            sink: self.sink,
            batch_size: self.batch_size,
            poll_interval: self.poll_interval,
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            claim_ttl: self.claim_ttl,
            threads: self.threads,
            max_attempts: self.max_attempts,
        })
    }
}

/// Delivers `safe_outbox` messages to a [`Sink`], at least once each; see the
/// [module docs](super) for the guarantees.
///
/// Run as many relays as you like, in as many processes: they claim disjoint batches.
pub struct Relay {
    store: Arc<DieselStore>,
    sink: Arc<dyn Sink>,
    sql: RelaySql,
    kind: BackendKind,
    batch_size: usize,
    poll_interval: Duration,
    backoff_base: Duration,
    backoff_cap: Duration,
    claim_ttl: Duration,
    threads: usize,
    max_attempts: Option<u32>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("store", &self.store)
            .field("batch_size", &self.batch_size)
            .field("claim_ttl", &self.claim_ttl)
            .field("threads", &self.threads)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// What happened to one claimed message.
enum Handled {
    Delivered,
    Retried,
    Dead,
    Stale,
}

impl Relay {
    /// A builder delivering `store`'s outbox to `sink`.
    pub fn builder(store: Arc<DieselStore>, sink: impl Sink + 'static) -> RelayBuilder {
        Self::builder_with_shared_sink(store, Arc::new(sink))
    }

    /// Like [`Relay::builder`], with a sink shared with other relays.
    pub fn builder_with_shared_sink(store: Arc<DieselStore>, sink: Arc<dyn Sink>) -> RelayBuilder {
        RelayBuilder {
            store,
            sink,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            claim_ttl: Duration::from_secs(60),
            threads: 1,
            max_attempts: None,
        }
    }

    /// Claims one batch, delivers it and records each outcome, on the calling thread.
    pub fn run_once(&self) -> Result<RelayStats, RelayError> {
        self.batch(None)
    }

    /// Runs the relay's threads until `stop` is given, then returns what they did. Each thread
    /// claims a batch, delivers it, and claims the next at once if the batch was full, or after
    /// the poll interval if not. On stop, each thread finishes the message in hand, gives the
    /// rest of its batch back, and returns. Errors are logged and retried with a backoff.
    pub fn run(&self, stop: &StopSignal) -> RelayStats {
        thread::scope(|scope| {
            let workers: Vec<_> = (0..self.threads)
                .map(|_| scope.spawn(|| self.work(stop)))
                .collect();
            let mut total = RelayStats::default();
            for worker in workers {
                match worker.join() {
                    Ok(stats) => total += stats,
                    Err(panic) => resume_unwind(panic),
                }
            }
            total
        })
    }

    /// Runs the relay on background threads; stop them with [`RelayHandle::shutdown`].
    pub fn spawn(self) -> RelayHandle {
        let relay = Arc::new(self);
        let stop = StopSignal::new();
        let threads = (0..relay.threads)
            .map(|i| {
                let relay = relay.clone();
                let stop = stop.clone();
                thread::Builder::new()
                    .name(format!("safejob-outbox-relay-{i}"))
                    .spawn(move || relay.work(&stop))
            })
            .collect::<Result<Vec<_>, _>>();
        let threads = match threads {
            Ok(threads) => threads,
            Err(error) => {
                // Could not start every thread: stop those that did start; they report nothing.
                stop.stop();
                warn!(%error, "outbox relay: could not start its threads");
                Vec::new()
            }
        };
        RelayHandle { stop, threads }
    }

    fn work(&self, stop: &StopSignal) -> RelayStats {
        let mut total = RelayStats::default();
        let mut failures = 0;
        while !stop.is_stopped() {
            let wait = match self.batch(Some(stop)) {
                Ok(stats) => {
                    failures = 0;
                    total += stats;
                    if stats.claimed >= self.batch_size as u64 {
                        continue;
                    }
                    self.poll_interval
                }
                Err(error) => {
                    failures += 1;
                    total.errors += 1;
                    warn!(%error, failures, "outbox relay: batch failed; trying again");
                    backoff(
                        self.poll_interval,
                        self.backoff_cap.max(self.poll_interval),
                        failures,
                    )
                }
            };
            if stop.wait(wait) {
                break;
            }
        }
        total
    }

    fn batch(&self, stop: Option<&StopSignal>) -> Result<RelayStats, RelayError> {
        let token = random_token();
        let started = Instant::now();
        let rows = self.claim(&token)?;
        let mut stats = RelayStats {
            batches: 1,
            claimed: rows.len() as u64,
            ..RelayStats::default()
        };
        // Only decides when to stop handing messages over; the database decides whether the
        // claim is still ours.
        let hand_over_until = self.claim_ttl - self.claim_ttl / 4;
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            if stop.is_some_and(StopSignal::is_stopped) || started.elapsed() >= hand_over_until {
                for row in std::iter::once(row).chain(rows.by_ref()) {
                    if self.fenced(&self.sql.release, vec![], row.id, &token)? {
                        stats.released += 1;
                    }
                }
                break;
            }
            match self.handle(row, &token)? {
                Handled::Delivered => stats.delivered += 1,
                Handled::Retried => stats.retried += 1,
                Handled::Dead => stats.dead += 1,
                Handled::Stale => stats.stale += 1,
            }
        }
        if stats.claimed > 0 {
            debug!(?stats, "outbox relay: batch done");
        }
        Ok(stats)
    }

    fn handle(&self, row: MessageRow, token: &str) -> Result<Handled, RelayError> {
        let id = row.id;
        let msg = match message(row) {
            Ok(msg) => msg,
            Err(detail) => {
                warn!(id, %detail, "outbox relay: unreadable row marked dead");
                return self.bury(id, token, &format!("corrupt row: {detail}"));
            }
        };
        if let Some(max) = self.max_attempts
            && msg.attempt > max
        {
            // Claimed more often than allowed without a recorded failure: relays died on it.
            return self.bury(
                id,
                token,
                &format!(
                    "claimed {} times without an outcome; max attempts is {max}",
                    msg.attempt
                ),
            );
        }
        let delivered = catch_unwind(AssertUnwindSafe(|| self.sink.deliver(&msg)));
        let error = match delivered {
            Ok(Ok(())) => {
                return Ok(if self.fenced(&self.sql.delivered, vec![], id, token)? {
                    debug!(message_id = %msg.message_id, attempt = msg.attempt, "outbox message delivered");
                    Handled::Delivered
                } else {
                    warn!(message_id = %msg.message_id, "outbox relay: claim expired before the delivery was recorded; it will be delivered again");
                    Handled::Stale
                });
            }
            Ok(Err(SinkError::Rejected(error))) => {
                warn!(message_id = %msg.message_id, %error, "outbox message rejected: dead");
                return self.bury(id, token, &format!("rejected: {error}"));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "the sink panicked".to_owned(),
        };
        if self.max_attempts.is_some_and(|max| msg.attempt >= max) {
            warn!(message_id = %msg.message_id, attempt = msg.attempt, %error, "outbox message failed its last attempt: dead");
            return self.bury(id, token, &error);
        }
        let delay = backoff(self.backoff_base, self.backoff_cap, msg.attempt);
        let delay_us = i64::try_from(delay.as_micros()).unwrap_or(i64::MAX);
        let error = truncate(&error);
        debug!(message_id = %msg.message_id, attempt = msg.attempt, ?delay, %error, "outbox delivery failed; retrying later");
        Ok(
            if self.fenced(
                &self.sql.retry,
                vec![Bind::Int(delay_us), Bind::Text(&error)],
                id,
                token,
            )? {
                Handled::Retried
            } else {
                Handled::Stale
            },
        )
    }

    fn bury(&self, id: i64, token: &str, error: &str) -> Result<Handled, RelayError> {
        let error = truncate(error);
        Ok(
            if self.fenced(&self.sql.bury, vec![Bind::Text(&error)], id, token)? {
                Handled::Dead
            } else {
                Handled::Stale
            },
        )
    }

    /// Runs a write fenced by this batch's claim (`binds`, then id and token); whether it applied.
    fn fenced<'a>(
        &self,
        sql: &'a str,
        mut binds: Vec<Bind<'a>>,
        id: i64,
        token: &'a str,
    ) -> Result<bool, RelayError> {
        binds.push(Bind::Int(id));
        binds.push(Bind::Text(token));
        let stmt = Stmt::new(sql, binds);
        let n = with_conn!(self.store, conn => run(conn, |c| c.exec(&stmt)))
            .map_err(|e| self.error(e))?;
        Ok(n == 1)
    }

    fn claim(&self, token: &str) -> Result<Vec<MessageRow>, RelayError> {
        let ttl_us = i64::try_from(self.claim_ttl.as_micros()).unwrap_or(i64::MAX);
        let limit = self.batch_size as i64;
        let mut rows = with_conn!(self.store, conn => self.claim_on(conn, token, ttl_us, limit))
            .map_err(|e| self.error(e))?;
        rows.sort_by_key(|row| row.id);
        Ok(rows)
    }

    fn claim_on<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        token: &str,
        ttl_us: i64,
        limit: i64,
    ) -> QueryResult<Vec<MessageRow>> {
        match &self.sql.claim {
            Claim::Returning(sql) => {
                let binds = if RelaySql::limit_first(self.kind) {
                    vec![Bind::Int(limit), Bind::Text(token), Bind::Int(ttl_us)]
                } else {
                    vec![Bind::Text(token), Bind::Int(ttl_us), Bind::Int(limit)]
                };
                let stmt = Stmt::new(sql, binds);
                if self.kind == BackendKind::Sqlite {
                    // BEGIN IMMEDIATE: the write lock is taken first, so the claim never meets a
                    // busy snapshot halfway.
                    run(c, |conn| {
                        in_write_transaction(conn, |conn| conn.load::<MessageRow>(&stmt))
                    })
                } else {
                    // One statement in autocommit: atomic on its own.
                    run(c, |conn| conn.load::<MessageRow>(&stmt))
                }
            }
            Claim::PickMarkRead { pick, mark, read } => {
                let pick = Stmt::new(pick, vec![Bind::Int(limit)]);
                let claimed = run(c, |conn| {
                    in_write_transaction(conn, |conn| {
                        let ids = conn.load::<IdRow>(&pick)?;
                        let Some(first) = ids.first().map(|row| row.id) else {
                            return Ok(false);
                        };
                        let mut binds = vec![Bind::Text(token), Bind::Int(ttl_us)];
                        binds.extend(
                            (0..self.batch_size)
                                .map(|i| Bind::Int(ids.get(i).map_or(first, |row| row.id))),
                        );
                        conn.exec(&Stmt::new(mark, binds))?;
                        Ok(true)
                    })
                })?;
                if !claimed {
                    return Ok(Vec::new());
                }
                let read = Stmt::new(read, vec![Bind::Text(token)]);
                run(c, |conn| conn.load::<MessageRow>(&read))
            }
        }
    }

    fn error(&self, error: DieselError) -> RelayError {
        if is_missing_outbox(&error) {
            RelayError::MissingTable {
                hint: migrate_hint(self.kind),
            }
        } else {
            RelayError::Store(self.store.ctx().errors.store_error(error))
        }
    }
}

/// Background relay threads started by [`Relay::spawn`]. Dropping the handle stops them too.
#[derive(Debug)]
pub struct RelayHandle {
    stop: StopSignal,
    threads: Vec<thread::JoinHandle<RelayStats>>,
}

impl RelayHandle {
    /// The signal the threads watch (for stopping them from elsewhere).
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Stops the threads gracefully (each finishes the message in hand and gives the rest of its
    /// batch back), waits for them and returns what they did.
    pub fn shutdown(mut self) -> RelayStats {
        self.stop.stop();
        let mut total = RelayStats::default();
        for thread in std::mem::take(&mut self.threads) {
            match thread.join() {
                Ok(stats) => total += stats,
                Err(panic) => resume_unwind(panic),
            }
        }
        total
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A claimed row as the sink sees it; `Err` says why the row cannot be read.
pub(super) fn message(row: MessageRow) -> Result<OutboxMessage, String> {
    let digest: [u8; 32] = row
        .digest
        .as_slice()
        .try_into()
        .map_err(|_| format!("digest is {} bytes, not 32", row.digest.len()))?;
    let seq = u64::try_from(row.seq).map_err(|_| format!("seq {}", row.seq))?;
    let attempt = u32::try_from(row.attempts).map_err(|_| format!("attempts {}", row.attempts))?;
    let created_at = DateTime::from_timestamp_micros(row.created_us)
        .ok_or_else(|| format!("created_at {}", row.created_us))?;
    Ok(OutboxMessage {
        id: row.id,
        message_id: row.message_id,
        digest: KeyDigest::from_bytes(digest),
        seq,
        topic: row.topic,
        payload: row.payload,
        attempt,
        created_at,
    })
}

/// Runs `f` in a write transaction (SQLite: `BEGIN IMMEDIATE`), committing on `Ok`.
fn in_write_transaction<C: DbConnection, T>(
    conn: &mut C,
    f: impl FnOnce(&mut C) -> QueryResult<T>,
) -> QueryResult<T> {
    conn.begin_write()?;
    match f(conn) {
        // A failed COMMIT leaves the transaction open or the manager broken: the pool discards
        // such a connection when it comes back.
        Ok(value) => AnsiTransactionManager::commit_transaction(conn).map(|()| value),
        Err(error) => {
            let _ = AnsiTransactionManager::rollback_transaction(conn);
            Err(error)
        }
    }
}

/// Runs `f`, retrying deadlocks and lock-wait timeouts (rolled back whole, so safe to repeat), and
/// marking the connection broken when it was lost.
fn run<C: DbConnection, T>(
    c: &mut PooledConn<C>,
    mut f: impl FnMut(&mut C) -> QueryResult<T>,
) -> QueryResult<T> {
    let mut attempt = 0;
    loop {
        match f(&mut c.conn) {
            Err(e) if is_retryable(&e) && attempt < MAX_LOCK_RETRIES => {
                attempt += 1;
                thread::sleep(backoff(
                    Duration::from_millis(1),
                    Duration::from_millis(64),
                    attempt,
                ));
            }
            Err(e) => {
                if is_connection_lost(&e) {
                    c.broken = true;
                }
                return Err(e);
            }
            ok => return ok,
        }
    }
}

/// The delay before retry `attempt` (from 1): `min(cap, base · 2^(attempt-1))`, its upper half
/// random ("equal jitter"): never shorter than half the exponential delay, never longer than it.
pub(crate) fn backoff(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let exponential = base
        .checked_mul(1u32 << doublings.min(31))
        .and_then(|d| d.checked_mul(1u32 << doublings.saturating_sub(31)))
        .unwrap_or(cap);
    let full = exponential.min(cap);
    let half = full / 2;
    let spread = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random_u64() % spread.saturating_add(1))
}

/// 64 random bits, from the standard library's randomly keyed SipHash (no extra dependency),
/// mixed with a counter and the time so that two calls never hash the same input.
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A fresh claim token: 128 random bits as 32 hex characters.
fn random_token() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

fn truncate(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_equal_jitter() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 1..=80 {
            let full = (base * 2u32.saturating_pow((attempt - 1).min(20))).min(cap);
            for _ in 0..20 {
                let d = backoff(base, cap, attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} outside {full:?}"
                );
            }
        }
        assert!(backoff(Duration::from_secs(3600), MAX_INTERVAL, u32::MAX) <= MAX_INTERVAL);
    }

    #[test]
    fn tokens_differ() {
        let tokens: std::collections::HashSet<_> = (0..1000).map(|_| random_token()).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(tokens.iter().all(|t| t.len() == 32));
    }
}
