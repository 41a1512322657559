//! What a step cost the database, counted by the server (or read from SQLite's WAL file), beside
//! its wall time: commits, statements and WAL bytes. On a shared machine a throughput moves with
//! the load; these counts do not, and they are what batching changes.
//!
//! | backend | commits | statements | WAL bytes |
//! |---|---|---|---|
//! | PostgreSQL | `pg_stat_database.xact_commit` (and `xact_rollback`) of the system's own fresh database | `pg_stat_statements` calls in that database when the extension is loaded (`shared_preload_libraries`), else diesel's statements counted in the client (ours and fang), else none | `pg_current_wal_lsn()` delta: **server-wide**, other clients' writes included |
//! | MariaDB | `Handler_commit` (**server-wide**; every autocommit statement, reads included, and each `COMMIT`) | `Questions` (**server-wide**, the probe's own `SHOW` taken off) | `Innodb_os_log_written` (**server-wide**) |
//! | SQLite | WAL frames that end a transaction (commit frames), read from the WAL file | diesel's statements counted in the client | WAL frames × (page size + 24) + a 32-byte header per WAL cycle ([`crate::wal`]) |
//!
//! PostgreSQL publishes a backend's counts only when it has been idle for up to ten seconds
//! after a busy spell (PG 15+: a flush at most every second, the rest on a 10 s idle timer), so
//! [`Meter::end`] reads the WAL position at once and `pg_stat_database` after `settle` (11 s by
//! default). The probe runs on the admin connection, in another database, so its own queries
//! are not counted; the bench's own polls inside a system's database (River's and fang's
//! "are we done" counts) are counted by the caller ([`Meter::probes`]) and taken off.
//!
//! SQLite: a thread follows the WAL file every 2 ms ([`crate::wal::WalWatch`]), through the
//! restarts that SQLite's own checkpoints cause, so the store runs exactly as it would unmeasured
//! (its autocheckpoint included).

#![cfg_attr(
    not(all(feature = "postgres", feature = "mysql")),
    allow(
        dead_code,
        reason = "parts of the server backends left out of this build"
    )
)]

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use diesel::connection::{Instrumentation, InstrumentationEvent};
use serde_json::{Value, json};

use crate::scratch::{Kind, Scratch};

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CountError {
    /// The probe's connection could not be opened.
    #[error("opening the counters' connection")]
    Connect(#[source] diesel::ConnectionError),
    /// A probe query failed.
    #[error("reading the server's counters ({what})")]
    Query {
        /// Which counters.
        what: &'static str,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// The database does not appear in `pg_stat_database`.
    #[error("{0} is not in pg_stat_database")]
    NoSuchDatabase(String),
    /// A status value is not a number.
    #[error("status {name} = {value:?} is not a count")]
    NotACount {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
    /// A WAL position is not `X/Y` in hex.
    #[error("WAL position {0:?} is not X/Y in hexadecimal")]
    BadLsn(String),
    /// The SQLite WAL file could not be read.
    #[error("reading {path}")]
    Wal {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The backend's cargo feature is not compiled in.
    #[cfg_attr(
        all(feature = "postgres", feature = "mysql", feature = "sqlite"),
        allow(dead_code, reason = "built only when a backend's feature is off")
    )]
    #[error("{0} is not compiled in")]
    NotCompiled(&'static str),
}

/// Where each count came from (printed as `"counted_by"`), `None` where nothing counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    /// Source of `commits`.
    pub commits: Option<&'static str>,
    /// Source of `statements`.
    pub statements: Option<&'static str>,
    /// Source of `wal_bytes`.
    pub wal_bytes: Option<&'static str>,
}

/// One step's counts; `None` where the backend cannot count it (never a guess).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Transactions committed.
    pub commits: Option<u64>,
    /// Transactions rolled back (PostgreSQL only).
    pub rollbacks: Option<u64>,
    /// Statements executed.
    pub statements: Option<u64>,
    /// WAL (redo) bytes written.
    pub wal_bytes: Option<u64>,
    /// Where each came from.
    pub sources: Sources,
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a?.saturating_add(b?))
}

impl Counts {
    /// The counts of two passes of the same step, summed (a count missing from either is
    /// missing).
    pub fn merged(&self, other: &Counts) -> Counts {
        Counts {
            commits: add(self.commits, other.commits),
            rollbacks: add(self.rollbacks, other.rollbacks),
            statements: add(self.statements, other.statements),
            wal_bytes: add(self.wal_bytes, other.wal_bytes),
            sources: self.sources,
        }
    }

    /// The JSON fields printed in a figure's line, in this order: totals, per job, sources.
    pub fn fields(&self, jobs: usize) -> Vec<(&'static str, Value)> {
        let per = |n: Option<u64>| per_job(n, jobs);
        vec![
            ("commits", json!(self.commits)),
            ("rollbacks", json!(self.rollbacks)),
            ("statements", json!(self.statements)),
            ("wal_bytes", json!(self.wal_bytes)),
            ("commits_per_job", json!(per(self.commits))),
            ("statements_per_job", json!(per(self.statements))),
            ("wal_bytes_per_job", json!(per(self.wal_bytes))),
            (
                "counted_by",
                json!({
                    "commits": self.sources.commits,
                    "statements": self.sources.statements,
                    "wal_bytes": self.sources.wal_bytes,
                }),
            ),
        ]
    }
}

/// `total / jobs` to three decimals; `None` without a total or jobs.
pub fn per_job(total: Option<u64>, jobs: usize) -> Option<f64> {
    let total = total?;
    (jobs > 0).then(|| (total as f64 / jobs as f64 * 1000.0).round() / 1000.0)
}

/// Counts the statements diesel sends on a connection (one per `StartQuery` event: a prepared
/// statement, or a `batch_execute` string such as `BEGIN`) into a counter shared by all the
/// connections of one system.
#[derive(Debug, Clone, Default)]
pub struct StatementCounter(Arc<AtomicU64>);

impl StatementCounter {
    /// Statements counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Instrumentation for StatementCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if matches!(event, InstrumentationEvent::StartQuery { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Raw counter readings; deltas of two of them are a step's [`Counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Commits so far.
    pub commits: Option<u64>,
    /// Rollbacks so far.
    pub rollbacks: Option<u64>,
    /// Statements so far.
    pub statements: Option<u64>,
    /// WAL bytes so far (a position, or the SQLite WAL's length).
    pub wal_bytes: Option<u64>,
    /// SQLite: WAL restarts whose frames could not all be read; a change voids the WAL counts
    /// (bytes and commits) of the step.
    pub wal_lost: Option<u64>,
}

/// `after − before`, less the bench's own `probe_statements` and `probe_commits` counted in
/// between; a count that went backwards (a restarted server, a restarted WAL) is `None`.
pub fn delta(
    before: &Reading,
    after: &Reading,
    probe_commits: u64,
    probe_statements: u64,
) -> Reading {
    let d = |a: Option<u64>, b: Option<u64>, less: u64| {
        let (a, b) = (a?, b?);
        b.checked_sub(a).map(|n| n.saturating_sub(less))
    };
    let wal_ok = before.wal_lost == after.wal_lost;
    Reading {
        commits: if wal_ok {
            d(before.commits, after.commits, probe_commits)
        } else {
            None
        },
        rollbacks: d(before.rollbacks, after.rollbacks, 0),
        statements: d(before.statements, after.statements, probe_statements),
        wal_bytes: if wal_ok {
            d(before.wal_bytes, after.wal_bytes, 0)
        } else {
            None
        },
        wal_lost: after.wal_lost,
    }
}

/// One reading from the two kinds of probe: what the server publishes late (`slow`: PostgreSQL's
/// commits, rollbacks, `pg_stat_statements` calls) wherever it has a value, the rest from what
/// is read the moment a step ends (`fast`: WAL position, MariaDB's status, the SQLite WAL).
pub fn combined(fast: Reading, slow: Reading) -> Reading {
    Reading {
        commits: slow.commits.or(fast.commits),
        rollbacks: slow.rollbacks.or(fast.rollbacks),
        statements: slow.statements.or(fast.statements),
        ..fast
    }
}

/// A WAL position `X/Y` (two hex numbers: high and low 32 bits) as a byte offset.
pub fn parse_lsn(lsn: &str) -> Result<u64, CountError> {
    let bad = || CountError::BadLsn(lsn.to_owned());
    let (hi, lo) = lsn.trim().split_once('/').ok_or_else(bad)?;
    let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
    if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
        return Err(bad());
    }
    Ok(hi << 32 | lo)
}

/// The value of `name` among `SHOW GLOBAL STATUS` rows, as a count; `None` if absent.
pub fn status_value(rows: &[(String, String)], name: &str) -> Result<Option<u64>, CountError> {
    rows.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(n, v)| {
            v.trim().parse().map_err(|_| CountError::NotACount {
                name: n.clone(),
                value: v.clone(),
            })
        })
        .transpose()
}

/// Reads one system's counters before and after each step.
pub struct Meter {
    probe: Probe,
    /// Statements counted in the client, for backends whose server cannot count them.
    client: Option<StatementCounter>,
    /// The bench's own statements inside the measured database, to take off.
    probes: Arc<AtomicU64>,
    settle: Duration,
    /// Something ran since the last settled reading (the warm-up): settle before the next.
    dirty: bool,
}

enum Probe {
    /// No database (the memory queue).
    None,
    #[cfg(feature = "postgres")]
    Postgres {
        conn: diesel::PgConnection,
        database: String,
        statements: bool,
    },
    #[cfg(feature = "mysql")]
    Mysql { conn: diesel::MysqlConnection },
    #[cfg(feature = "sqlite")]
    Sqlite {
        /// Held open for the whole run: the last connection to close would checkpoint and
        /// delete the WAL.
        _conn: diesel::SqliteConnection,
        watch: crate::wal::WalWatch,
    },
}

/// A reading at the start of a step.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    reading: Reading,
    client: u64,
    probes: u64,
}

#[cfg(feature = "postgres")]
mod pg {
    use diesel::{
        QueryableByName,
        sql_types::{BigInt, Text},
    };

    #[derive(QueryableByName)]
    pub struct DbStat {
        #[diesel(sql_type = BigInt)]
        pub commits: i64,
        #[diesel(sql_type = BigInt)]
        pub rollbacks: i64,
    }

    #[derive(QueryableByName)]
    pub struct Lsn {
        #[diesel(sql_type = Text)]
        pub lsn: String,
    }

    #[derive(QueryableByName)]
    pub struct Setting {
        #[diesel(sql_type = Text)]
        pub value: String,
    }

    #[derive(QueryableByName)]
    pub struct Calls {
        #[diesel(sql_type = BigInt)]
        pub calls: i64,
    }
}

#[cfg(feature = "mysql")]
#[derive(diesel::QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Variable_name")]
    name: String,
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
    value: String,
}

fn u(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Meter {
    /// A meter for `db` (None: the memory queue, which counts nothing). `client` counts the
    /// system's statements in the client where the server cannot; `settle` is the wait before
    /// PostgreSQL's counts are read.
    pub fn new(
        db: Option<&Scratch>,
        client: Option<StatementCounter>,
        settle: Duration,
    ) -> Result<Self, CountError> {
        let probe = match db {
            None => Probe::None,
            Some(db) => Self::probe(db)?,
        };
        let client = match &probe {
            #[cfg(feature = "postgres")]
            Probe::Postgres {
                statements: true, ..
            } => None,
            #[cfg(feature = "mysql")]
            Probe::Mysql { .. } => None,
            _ => client,
        };
        Ok(Self {
            probe,
            client,
            probes: Arc::default(),
            settle,
            dirty: true,
        })
    }

    #[allow(unused_variables)]
    fn probe(db: &Scratch) -> Result<Probe, CountError> {
        use diesel::Connection;
        match db.kind() {
            Kind::Postgres => {
                #[cfg(feature = "postgres")]
                {
                    use diesel::RunQueryDsl;
                    let mut conn = diesel::PgConnection::establish(db.admin_url())
                        .map_err(CountError::Connect)?;
                    // pg_stat_statements counts only when preloaded (shared_preload_libraries,
                    // a server restart); then its view needs the extension in the admin database
                    // (the bench's own), created if missing.
                    let preloaded = diesel::sql_query(
                        "SELECT current_setting('shared_preload_libraries') AS value",
                    )
                    .load::<pg::Setting>(&mut conn)
                    .map_err(|source| CountError::Query {
                        what: "shared_preload_libraries",
                        source,
                    })?
                    .first()
                    .is_some_and(|s| s.value.contains("pg_stat_statements"));
                    let statements = preloaded
                        && diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                            .execute(&mut conn)
                            .is_ok()
                        && diesel::sql_query(
                            "SELECT coalesce(sum(calls), 0)::bigint AS calls FROM pg_stat_statements",
                        )
                        .load::<pg::Calls>(&mut conn)
                        .is_ok();
                    Ok(Probe::Postgres {
                        conn,
                        database: db.name().to_owned(),
                        statements,
                    })
                }
                #[cfg(not(feature = "postgres"))]
                Err(CountError::NotCompiled("postgres"))
            }
            Kind::Mysql => {
                #[cfg(feature = "mysql")]
                {
                    let conn = diesel::MysqlConnection::establish(db.admin_url())
                        .map_err(CountError::Connect)?;
                    Ok(Probe::Mysql { conn })
                }
                #[cfg(not(feature = "mysql"))]
                Err(CountError::NotCompiled("mysql"))
            }
            Kind::Sqlite => {
                #[cfg(feature = "sqlite")]
                {
                    let conn = diesel::SqliteConnection::establish(db.name())
                        .map_err(CountError::Connect)?;
                    Ok(Probe::Sqlite {
                        _conn: conn,
                        watch: crate::wal::WalWatch::start(
                            &PathBuf::from(format!("{}-wal", db.name())),
                            Duration::from_millis(2),
                        ),
                    })
                }
                #[cfg(not(feature = "sqlite"))]
                Err(CountError::NotCompiled("sqlite"))
            }
        }
    }

    /// The counter of the bench's own statements inside the measured database (each is one
    /// autocommit statement, so one commit too): the caller adds one per poll.
    pub fn probes(&self) -> Arc<AtomicU64> {
        self.probes.clone()
    }

    /// Where this meter's counts come from.
    pub fn sources(&self) -> Sources {
        let client = self
            .client
            .as_ref()
            .map(|_| "client: statements sent by diesel (BEGIN/COMMIT included)");
        match &self.probe {
            Probe::None => Sources::default(),
            #[cfg(feature = "postgres")]
            Probe::Postgres { statements, .. } => Sources {
                commits: Some("pg_stat_database.xact_commit (this database)"),
                statements: if *statements {
                    Some("pg_stat_statements calls (this database)")
                } else {
                    client
                },
                wal_bytes: Some("pg_current_wal_lsn delta (server-wide)"),
            },
            #[cfg(feature = "mysql")]
            Probe::Mysql { .. } => Sources {
                commits: Some("Handler_commit (server-wide, autocommit reads included)"),
                statements: Some("Questions (server-wide)"),
                wal_bytes: Some("Innodb_os_log_written (server-wide)"),
            },
            #[cfg(feature = "sqlite")]
            Probe::Sqlite { .. } => Sources {
                commits: Some("WAL commit frames"),
                statements: client,
                wal_bytes: Some("WAL frames x (page size + 24) + 32"),
            },
        }
    }

    /// Notes that unmeasured work ran (a warm-up): the next [`Meter::begin`] settles first.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Marks the start of a step (after settling, if something ran since the last reading).
    pub fn begin(&mut self) -> Result<Mark, CountError> {
        if self.dirty {
            self.wait_settle(self.settle);
            self.dirty = false;
        }
        let fast = self.read_fast()?;
        let slow = self.read_slow()?;
        Ok(Mark {
            reading: combined(fast, slow),
            client: self.client.as_ref().map_or(0, StatementCounter::get),
            probes: self.probes.load(Ordering::SeqCst),
        })
    }

    /// The step's counts since `mark`: the WAL position at once, the per-database counts after
    /// the settle wait.
    pub fn end(&mut self, mark: Mark) -> Result<Counts, CountError> {
        self.end_after(mark, self.settle)
    }

    /// [`Meter::end`] with a settle wait of `settle` (zero: the caller made the server publish
    /// its counts, e.g. by ending the system's connections).
    pub fn end_after(&mut self, mark: Mark, settle: Duration) -> Result<Counts, CountError> {
        let client = self.client.as_ref().map(StatementCounter::get);
        let probes = self.probes.load(Ordering::SeqCst) - mark.probes;
        let fast = self.read_fast()?;
        self.wait_settle(settle);
        let slow = self.read_slow()?;
        let mut after = combined(fast, slow);
        let mut before = mark.reading;
        if let Some(c) = client {
            before.statements = Some(mark.client);
            after.statements = Some(c);
        }
        // MariaDB's Questions counts the probe's own SHOW of this reading.
        #[cfg(feature = "mysql")]
        let probes_statements = probes + u64::from(matches!(self.probe, Probe::Mysql { .. }));
        #[cfg(not(feature = "mysql"))]
        let probes_statements = probes;
        let d = delta(&before, &after, probes, probes_statements);
        Ok(Counts {
            commits: d.commits,
            rollbacks: d.rollbacks,
            statements: d.statements,
            wal_bytes: d.wal_bytes,
            sources: self.sources(),
        })
    }

    fn wait_settle(&self, settle: Duration) {
        #[cfg(feature = "postgres")]
        if matches!(self.probe, Probe::Postgres { .. }) {
            std::thread::sleep(settle);
        }
        #[cfg(not(feature = "postgres"))]
        let _ = settle;
    }

    /// What can be read the moment a step ends: the WAL position, MariaDB's status, the SQLite
    /// WAL file.
    fn read_fast(&mut self) -> Result<Reading, CountError> {
        match &mut self.probe {
            Probe::None => Ok(Reading::default()),
            #[cfg(feature = "postgres")]
            Probe::Postgres { conn, .. } => {
                use diesel::RunQueryDsl;
                let rows: Vec<pg::Lsn> =
                    diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
                        .load(conn)
                        .map_err(|source| CountError::Query {
                            what: "pg_current_wal_lsn",
                            source,
                        })?;
                let lsn = rows.first().map(|r| parse_lsn(&r.lsn)).transpose()?;
                Ok(Reading {
                    wal_bytes: lsn,
                    ..Reading::default()
                })
            }
            #[cfg(feature = "mysql")]
            Probe::Mysql { conn } => {
                use diesel::RunQueryDsl;
                let rows: Vec<StatusRow> = diesel::sql_query(
                    "SHOW GLOBAL STATUS WHERE Variable_name IN \
                     ('Handler_commit', 'Questions', 'Innodb_os_log_written')",
                )
                .load(conn)
                .map_err(|source| CountError::Query {
                    what: "SHOW GLOBAL STATUS",
                    source,
                })?;
                let rows: Vec<(String, String)> =
                    rows.into_iter().map(|r| (r.name, r.value)).collect();
                Ok(Reading {
                    commits: status_value(&rows, "Handler_commit")?,
                    rollbacks: None,
                    statements: status_value(&rows, "Questions")?,
                    wal_bytes: status_value(&rows, "Innodb_os_log_written")?,
                    wal_lost: None,
                })
            }
            #[cfg(feature = "sqlite")]
            Probe::Sqlite { watch, .. } => {
                let c = watch.counts().map_err(|source| CountError::Wal {
                    path: PathBuf::from("<db>-wal"),
                    source,
                })?;
                Ok(Reading {
                    commits: Some(c.commits),
                    rollbacks: None,
                    statements: None,
                    wal_bytes: Some(c.bytes),
                    wal_lost: Some(c.lost),
                })
            }
        }
    }

    /// What PostgreSQL publishes late: the database's commits, rollbacks and statements.
    fn read_slow(&mut self) -> Result<Reading, CountError> {
        match &mut self.probe {
            #[cfg(feature = "postgres")]
            Probe::Postgres {
                conn,
                database,
                statements,
            } => {
                use diesel::{RunQueryDsl, sql_types::Text};
                let rows: Vec<pg::DbStat> = diesel::sql_query(
                    "SELECT xact_commit AS commits, xact_rollback AS rollbacks \
                     FROM pg_stat_database WHERE datname = $1",
                )
                .bind::<Text, _>(database.as_str())
                .load(conn)
                .map_err(|source| CountError::Query {
                    what: "pg_stat_database",
                    source,
                })?;
                let row = rows
                    .first()
                    .ok_or_else(|| CountError::NoSuchDatabase(database.clone()))?;
                let calls = if *statements {
                    let rows: Vec<pg::Calls> = diesel::sql_query(
                        "SELECT coalesce(sum(s.calls), 0)::bigint AS calls \
                         FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
                         WHERE d.datname = $1",
                    )
                    .bind::<Text, _>(database.as_str())
                    .load(conn)
                    .map_err(|source| CountError::Query {
                        what: "pg_stat_statements",
                        source,
                    })?;
                    rows.first().map(|r| u(r.calls))
                } else {
                    None
                };
                Ok(Reading {
                    commits: Some(u(row.commits)),
                    rollbacks: Some(u(row.rollbacks)),
                    statements: calls,
                    wal_bytes: None,
                    wal_lost: None,
                })
            }
            _ => Ok(Reading::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: the two halves of an LSN joined as decimal or in the wrong order, and a malformed
    // position read as 0 instead of an error.
    #[test]
    fn lsns_parse_as_byte_offsets() {
        assert_eq!(parse_lsn("0/0").unwrap(), 0);
        assert_eq!(parse_lsn("16/B374D848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn(" 1/0 ").unwrap(), 1 << 32);
        for bad in ["", "12", "x/1", "1/", "1/100000000"] {
            assert!(
                matches!(parse_lsn(bad), Err(CountError::BadLsn(_))),
                "{bad}"
            );
        }
    }

    // Catches: the bench's own polls left in a system's counts (drop the `less` subtraction), a
    // counter that went backwards wrapping to a huge delta (`wrapping_sub`), and WAL bytes kept
    // across a WAL restart.
    #[test]
    fn deltas_subtract_the_benchs_own_probes_and_refuse_to_go_backwards() {
        let before = Reading {
            commits: Some(100),
            rollbacks: Some(1),
            statements: Some(1_000),
            wal_bytes: Some(5_000),
            wal_lost: None,
        };
        let after = Reading {
            commits: Some(160),
            rollbacks: Some(1),
            statements: Some(1_300),
            wal_bytes: Some(9_096),
            wal_lost: None,
        };
        let d = delta(&before, &after, 10, 11);
        assert_eq!(d.commits, Some(50));
        assert_eq!(d.rollbacks, Some(0));
        assert_eq!(d.statements, Some(289));
        assert_eq!(d.wal_bytes, Some(4_096));
        // A counter that went backwards (a server restart) counts nothing, rather than wrapping.
        let restarted = Reading {
            commits: Some(3),
            ..after
        };
        assert_eq!(delta(&before, &restarted, 0, 0).commits, None);
        // A missing reading on either side stays missing.
        let no_wal = Reading {
            wal_bytes: None,
            ..after
        };
        assert_eq!(delta(&before, &no_wal, 0, 0).wal_bytes, None);
        // Frames overwritten unseen during the step (SQLite): no WAL figure, and no commits
        // (they are read from the same frames).
        let watched = Reading {
            wal_lost: Some(0),
            ..before
        };
        let lost = Reading {
            wal_lost: Some(1),
            ..after
        };
        assert_eq!(delta(&watched, &lost, 0, 0).wal_bytes, None);
        assert_eq!(delta(&watched, &lost, 0, 0).commits, None);
        assert_eq!(delta(&watched, &lost, 0, 0).statements, Some(300));
    }

    // Catches: a status variable matched case-sensitively (MariaDB prints them capitalized) and
    // a non-numeric value read as 0.
    #[test]
    fn mariadb_status_rows_parse_by_name() {
        let rows = vec![
            ("Handler_commit".to_owned(), "12".to_owned()),
            ("Questions".to_owned(), " 30 ".to_owned()),
            ("Innodb_os_log_written".to_owned(), "x".to_owned()),
        ];
        assert_eq!(status_value(&rows, "handler_commit").unwrap(), Some(12));
        assert_eq!(status_value(&rows, "Questions").unwrap(), Some(30));
        assert_eq!(status_value(&rows, "Com_commit").unwrap(), None);
        assert!(matches!(
            status_value(&rows, "Innodb_os_log_written"),
            Err(CountError::NotACount { .. })
        ));
    }

    // Catches: a count of the late probe dropped when the two readings are combined (what left
    // pg_stat_statements' calls out of every line, found on a server with it preloaded).
    #[test]
    fn the_late_reading_fills_what_the_fast_one_lacks() {
        let fast = Reading {
            wal_bytes: Some(10),
            wal_lost: Some(0),
            ..Reading::default()
        };
        let slow = Reading {
            commits: Some(1),
            rollbacks: Some(2),
            statements: Some(3),
            ..Reading::default()
        };
        let c = combined(fast, slow);
        assert_eq!(
            (
                c.commits,
                c.rollbacks,
                c.statements,
                c.wal_bytes,
                c.wal_lost
            ),
            (Some(1), Some(2), Some(3), Some(10), Some(0))
        );
        let mariadb = Reading {
            commits: Some(5),
            statements: Some(6),
            ..fast
        };
        let c = combined(mariadb, Reading::default());
        assert_eq!((c.commits, c.statements), (Some(5), Some(6)));
    }

    // Catches: a missing count (`None`) summed as 0 into a made-up figure.
    #[test]
    fn merged_passes_add_up_and_a_missing_count_stays_missing() {
        let a = Counts {
            commits: Some(10),
            rollbacks: Some(0),
            statements: None,
            wal_bytes: Some(100),
            sources: Sources::default(),
        };
        let m = a.merged(&a);
        assert_eq!(m.commits, Some(20));
        assert_eq!(m.statements, None);
        assert_eq!(m.wal_bytes, Some(200));
        assert_eq!(per_job(Some(20), 3), Some(6.667));
        assert_eq!(per_job(Some(20), 0), None);
        assert_eq!(per_job(None, 3), None);
    }

    // Catches: a meter whose `begin` does not read the WAL first (the table's creation counted
    // as the step's), and a statement counter that counts other events (connection, BEGIN).
    #[cfg(feature = "sqlite")]
    #[test]
    fn a_sqlite_step_is_counted_from_its_wal() {
        use diesel::{Connection, connection::SimpleConnection};
        let dir = tempfile::tempdir().unwrap();
        let base = format!("sqlite://{}", dir.path().join("m.db").display());
        let db = Scratch::create(&base, "safejob", false).unwrap();
        let counter = StatementCounter::default();
        let mut conn = diesel::SqliteConnection::establish(db.name()).unwrap();
        conn.set_instrumentation(counter.clone());
        conn.batch_execute("PRAGMA journal_mode = WAL; CREATE TABLE t (a);")
            .unwrap();
        let mut meter = Meter::new(Some(&db), Some(counter), Duration::ZERO).unwrap();
        let mark = meter.begin().unwrap();
        for i in 0..5 {
            conn.batch_execute(&format!("INSERT INTO t VALUES ({i})"))
                .unwrap();
        }
        let counts = meter.end(mark).unwrap();
        // Five autocommit inserts: five commits, five statements, at least one page each.
        assert_eq!(counts.commits, Some(5));
        assert_eq!(counts.statements, Some(5));
        assert!(
            counts.wal_bytes.unwrap() >= 32 + 5 * (24 + 512),
            "{counts:?}"
        );
        drop(conn);
        drop(meter);
        db.finish().unwrap();
    }
}
