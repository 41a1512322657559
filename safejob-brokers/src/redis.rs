//! Redis Streams: a consumer-group consumer with the guard in front of every entry
//! (feature `redis`; a synchronous client, no async runtime).
//!
//! Redis Streams deliver at least once: an entry read with `XREADGROUP` sits in the reading
//! consumer's pending entries list (PEL) until it is `XACK`ed, and an entry whose consumer died
//! is handed to a survivor by `XAUTOCLAIM` once it has been idle for `min_idle`. Producers may
//! also add the same job twice. [`RedisConsumer::handle`] runs each entry through
//! [`Runner::run`] and turns its [`Settle`] into stream operations:
//!
//! | settle | stream operation |
//! |---|---|
//! | `Ack` (succeeded, or a replayed duplicate) | `XACK` |
//! | `Retry` (key busy, not ready, transient error) | nothing: the entry stays pending |
//! | `DeadLetter` (undecodable, bad input, final failure) | `XADD` to the dead-letter stream, then `XACK` |
//!
//! Why `Retry` leaves the entry pending rather than `XACK` + a delayed re-`XADD`: a stream has no
//! delayed delivery, so a re-added entry would be read again at once by an idle consumer, and the
//! `XACK` + `XADD` pair is two writes that a crash can split. Leaving the entry in the PEL keeps
//! one entry with one id; `XAUTOCLAIM`'s `min_idle` is the retry delay (a floor: an early
//! redelivery of a busy key is answered `Busy` again and stays pending), and Redis counts the
//! deliveries. The dead-letter path is `XADD` then `XACK`, so a crash between the two leaves the
//! entry pending and it is dead-lettered again: at least once, with `dead.source_id` to tell
//! copies apart.
//!
//! **Visibility.** While the guard runs an entry, a helper thread re-claims it for its own
//! consumer every [`RedisSettings::renew_every`] (`XCLAIM … 0 <id> JUSTID`, which resets the
//! entry's idle time), so a slow `perform` is not reclaimed by a survivor's `XAUTOCLAIM`. A
//! consumer that dies stops renewing, and its entries become claimable after `min_idle`.

use std::{
    sync::{Arc, mpsc},
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    Commands, Connection, RedisResult,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingReply,
        StreamReadOptions, StreamReadReply,
    },
};
use safejob_core::{Runner, SafeJob};

use crate::{DecodeError, RunKind, Settle, Stats};

/// The Redis URL when `SAFEJOB_REDIS_URL` is not set.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take; longer than any `BLOCK` the consumers use.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A Redis operation of the consumer or the sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis refused a command or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The renewal thread could not be started or panicked.
    #[error("the visibility renewal thread failed: {0}")]
    Renewal(String),
}

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

/// The names a consumer group uses: the jobs stream, its group, and the dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streams {
    /// The jobs stream.
    pub stream: String,
    /// The consumer group.
    pub group: String,
    /// The dead-letter stream.
    pub dead: String,
}

impl Streams {
    /// `stream` read by `group`, dead letters to `<stream>:dead`.
    pub fn new(stream: impl Into<String>, group: impl Into<String>) -> Self {
        let stream = stream.into();
        Self {
            dead: format!("{stream}:dead"),
            group: group.into(),
            stream,
        }
    }

    /// Fresh names under `prefix`, unique by process id and clock (`<prefix>:<pid>-<nanos>`),
    /// read by the group `jobs`: tests and runs that share a Redis never see each other's entries.
    pub fn unique(prefix: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self::new(format!("{prefix}:{}-{nanos:x}", std::process::id()), "jobs")
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

/// Consumer tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisSettings {
    /// Entries per `XREADGROUP` / `XAUTOCLAIM`. The entries of a batch wait in this consumer's
    /// PEL while the one before them runs, and only the running one is renewed: keep `batch` × a
    /// job's time under `min_idle`, or a survivor may reclaim the waiting ones (and they are
    /// replayed). Defaults to 8.
    pub batch: usize,
    /// `BLOCK` of `XREADGROUP` when the stream has nothing new. Defaults to 100 ms.
    pub block: Duration,
    /// `XAUTOCLAIM`'s min-idle-time: how long an entry sits unrenewed in a PEL before a survivor
    /// takes it; also the retry delay of an entry left pending. Defaults to 30 s.
    pub min_idle: Duration,
    /// How often a running entry is re-claimed to reset its idle time; keep it well under
    /// `min_idle`. Defaults to 10 s.
    pub renew_every: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            batch: 8,
            block: Duration::from_millis(100),
            min_idle: Duration::from_secs(30),
            renew_every: Duration::from_secs(10),
        }
    }
}

/// What [`RedisConsumer::handle`] did with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// What the guard answered.
    pub kind: RunKind,
    /// What was done with the entry.
    pub settle: Settle,
    /// Whether this call's `XACK` removed the entry from the PEL (false for `Retry`, and for an
    /// entry another consumer had already acknowledged).
    pub acked: bool,
}

/// One consumer of a group: a connection, a consumer name, and the guard's [`Runner`].
pub struct RedisConsumer {
    conn: Connection,
    renew_conn: Connection,
    streams: Streams,
    name: String,
    runner: Arc<Runner>,
    settings: RedisSettings,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for RedisConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConsumer")
            .field("streams", &self.streams)
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisConsumer {
    /// Connects consumer `name` of `streams.group` (two connections: one reads and settles, one
    /// renews). The group must exist ([`Streams::create`]). `stats` may be shared by several
    /// consumers.
    pub fn connect(
        url: &str,
        streams: Streams,
        name: impl Into<String>,
        runner: Arc<Runner>,
        settings: RedisSettings,
        stats: Arc<Stats>,
    ) -> Result<Self, Error> {
        Ok(Self {
            conn: connect(url)?,
            renew_conn: connect(url)?,
            streams,
            name: name.into(),
            runner,
            settings,
            stats,
        })
    }

    /// The consumer's name in the group.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counters this consumer adds to.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// `XREADGROUP GROUP g c COUNT n BLOCK ms STREAMS s >`: entries never delivered before.
    pub fn read_new(&mut self) -> Result<Vec<StreamId>, Error> {
        let block_ms = usize::try_from(self.settings.block.as_millis()).unwrap_or(usize::MAX);
        let options = StreamReadOptions::default()
            .group(&self.streams.group, &self.name)
            .count(self.settings.batch)
            .block(block_ms.max(1));
        let reply: Option<StreamReadReply> =
            self.conn
                .xread_options(&[&self.streams.stream], &[">"], &options)?;
        let entries: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        entries.iter().for_each(|_| self.stats.delivered(false));
        Ok(entries)
    }

    /// `XAUTOCLAIM s g c min-idle 0-0 COUNT n`: entries idle in any PEL (a dead consumer's, or
    /// ones left pending for a retry) become this consumer's.
    pub fn reclaim(&mut self) -> Result<Vec<StreamId>, Error> {
        let min_idle = usize::try_from(self.settings.min_idle.as_millis()).unwrap_or(usize::MAX);
        let reply: StreamAutoClaimReply = self.conn.xautoclaim_options(
            self.streams.stream.as_str(),
            &self.streams.group,
            &self.name,
            min_idle,
            "0-0",
            StreamAutoClaimOptions::default().count(self.settings.batch),
        )?;
        reply
            .claimed
            .iter()
            .for_each(|_| self.stats.delivered(true));
        Ok(reply.claimed)
    }

    /// New entries, or when there are none, reclaimed ones; each handled with `decode`.
    /// Returns what was done with each.
    pub fn poll<J, D>(&mut self, decode: D) -> Result<Vec<Handled>, Error>
    where
        J: SafeJob,
        D: Fn(&StreamId) -> Result<J, DecodeError>,
    {
        let mut batch = self.read_new()?;
        if batch.is_empty() {
            batch = self.reclaim()?;
        }
        batch
            .iter()
            .map(|entry| self.handle(entry, &decode))
            .collect()
    }

    /// Runs `entry` through the guard and settles it: [`run`](Self::run), then
    /// [`settle`](Self::settle).
    pub fn handle<J, D>(&mut self, entry: &StreamId, decode: D) -> Result<Handled, Error>
    where
        J: SafeJob,
        D: Fn(&StreamId) -> Result<J, DecodeError>,
    {
        let (kind, settle) = self.run(entry, decode)?;
        let acked = self.settle(entry, &settle)?;
        Ok(Handled {
            kind,
            settle,
            acked,
        })
    }

    /// Decodes `entry` and runs the job through the guard, renewing the entry's claim while it
    /// runs; says what to do with it, without doing it. (A consumer that dies after `run` and
    /// before [`settle`](Self::settle) leaves the entry pending: its redelivery is replayed.)
    pub fn run<J, D>(&mut self, entry: &StreamId, decode: D) -> Result<(RunKind, Settle), Error>
    where
        J: SafeJob,
        D: Fn(&StreamId) -> Result<J, DecodeError>,
    {
        let job = match decode(entry) {
            Ok(job) => job,
            Err(error) => {
                let kind = RunKind::Undecodable;
                self.stats.ran(kind);
                return Ok((kind, Settle::undecodable(&error)));
            }
        };
        let (renew_conn, streams, name, every) = (
            &mut self.renew_conn,
            &self.streams,
            self.name.as_str(),
            self.settings.renew_every,
        );
        let runner = &self.runner;
        let (result, renewal) = thread::scope(|scope| {
            let (stop, stopped) = mpsc::channel::<()>();
            let renewer = scope.spawn(move || -> RedisResult<()> {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // XCLAIM by the owner with min-idle 0 resets the entry's idle time.
                    let _ids: Vec<String> = redis::cmd("XCLAIM")
                        .arg(&streams.stream)
                        .arg(&streams.group)
                        .arg(name)
                        .arg(0)
                        .arg(&entry.id)
                        .arg("JUSTID")
                        .query(renew_conn)?;
                }
                Ok(())
            });
            let result = runner.run(&job);
            drop(stop);
            let renewal = renewer
                .join()
                .map_err(|_| Error::Renewal("the renewal thread panicked".into()))
                .and_then(|r| r.map_err(Error::from));
            (result, renewal)
        });
        let kind = RunKind::of(&result);
        self.stats.ran(kind);
        // The guard has decided; a failed renewal only means a survivor may have reclaimed the
        // entry meanwhile, and its delivery is replayed. Say so, and settle.
        if let Err(error) = renewal {
            tracing::warn!(consumer = %self.name, entry = %entry.id, %error, "renewal failed");
        }
        Ok((kind, Settle::of(&result, self.settings.min_idle)))
    }

    /// Does what `settle` says with `entry`: `XACK`, nothing (it stays pending for a later
    /// `XAUTOCLAIM`), or `XADD` to the dead-letter stream (the original fields, plus
    /// `dead.source_id`, `dead.reason`, `dead.consumer`) then `XACK`. Returns whether an `XACK`
    /// of this call removed the entry from the PEL.
    pub fn settle(&mut self, entry: &StreamId, settle: &Settle) -> Result<bool, Error> {
        match settle {
            Settle::Ack => self.ack(entry, settle),
            Settle::Retry { .. } => {
                self.stats.settled(settle);
                Ok(false)
            }
            Settle::DeadLetter { reason } => {
                let mut fields: Vec<(String, String)> = entry
                    .map
                    .keys()
                    .filter_map(|k| entry.get::<String>(k).map(|v| (k.clone(), v)))
                    .collect();
                fields.sort();
                fields.push(("dead.source_id".into(), entry.id.clone()));
                fields.push(("dead.reason".into(), reason.clone()));
                fields.push(("dead.consumer".into(), self.name.clone()));
                let _id: String = self.conn.xadd(&self.streams.dead, "*", &fields)?;
                self.ack(entry, settle)
            }
        }
    }

    fn ack(&mut self, entry: &StreamId, settle: &Settle) -> Result<bool, Error> {
        let removed: usize =
            self.conn
                .xack(&self.streams.stream, &self.streams.group, &[&entry.id])?;
        if removed > 0 {
            self.stats.settled(settle);
        }
        Ok(removed > 0)
    }
}

#[cfg(feature = "outbox")]
pub use sink::RedisSink;

#[cfg(feature = "outbox")]
mod sink {
    use std::{sync::Mutex, time::Duration};

    use redis::Connection;
    use safejob_diesel::outbox::{OutboxMessage, Sink, SinkError};

    use super::connect;

    /// Adds a marker key for the message id (`SET NX PX`) and, only if it was new, the entry:
    /// one atomic step, so a redelivered message inside the window adds nothing.
    const DEDUP_XADD: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return redis.call('XADD', KEYS[1], '*', 'message_id', ARGV[2], 'topic', ARGV[3], 'payload', ARGV[4])
end
return false";

    /// An outbox [`Sink`] that adds each message to a stream with the fields `message_id`,
    /// `topic` and `payload`, deduplicated by message id within a window: a message the relay
    /// delivers again (after a crash before it marked the row) adds nothing while its marker key
    /// `<stream>:dedup:<message id>` lives.
    pub struct RedisSink {
        url: String,
        stream: String,
        window: Duration,
        conn: Mutex<Option<Connection>>,
    }

    impl std::fmt::Debug for RedisSink {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisSink")
                .field("url", &super::redact(&self.url))
                .field("stream", &self.stream)
                .field("window", &self.window)
                .finish_non_exhaustive()
        }
    }

    impl RedisSink {
        /// A sink adding to `stream` at `url`, deduplicating within `window` (at least 1 ms).
        /// Connects now, to fail early on a bad URL or an unreachable server.
        pub fn connect(
            url: &str,
            stream: impl Into<String>,
            window: Duration,
        ) -> Result<Self, super::Error> {
            let conn = connect(url)?;
            Ok(Self {
                url: url.to_owned(),
                stream: stream.into(),
                window: window.max(Duration::from_millis(1)),
                conn: Mutex::new(Some(conn)),
            })
        }
    }

    impl Sink for RedisSink {
        fn deliver(&self, msg: &OutboxMessage) -> Result<(), SinkError> {
            let mut slot = self
                .conn
                .lock()
                .map_err(|_| SinkError::unavailable("the sink's connection lock is poisoned"))?;
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(connect(&self.url).map_err(SinkError::unavailable)?),
            };
            let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
            let added: Result<Option<String>, redis::RedisError> = redis::cmd("EVAL")
                .arg(DEDUP_XADD)
                .arg(2)
                .arg(&self.stream)
                .arg(format!("{}:dedup:{}", self.stream, msg.message_id))
                .arg(window_ms)
                .arg(&msg.message_id)
                .arg(&msg.topic)
                .arg(&msg.payload)
                .query(conn);
            match added {
                Ok(_) => Ok(()),
                Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                    *slot = None;
                    Err(SinkError::unavailable(e))
                }
                Err(e) => Err(SinkError::rejected(e)),
            }
        }
    }
}
