//! Enqueueing: one multi-row `INSERT` per [`MAX_ROWS_PER_STATEMENT`] (2,000) rows of a batch, on a
//! pooled connection or the caller's own. A pooled batch is one statement in autocommit only on
//! PostgreSQL and SQLite, up to 2,000 rows, with no unique keys; anything else runs in one
//! transaction (`enqueue_pooled` in `mod.rs`).
//! On PostgreSQL the batch is bound as one array per column and expanded by `unnest`, so the
//! statement text is the same for every batch size (prepared once per connection) and costs
//! twelve binds however many rows it carries; SQLite and MySQL bind a `VALUES` row per job.
//!
//! A job whose unique key a live job holds is skipped by the insert itself (`ON CONFLICT DO
//! NOTHING` against the partial unique index on PostgreSQL and SQLite; `ON DUPLICATE KEY UPDATE
//! id = id` against the unique index of the generated `live_unique_key` column on MySQL), so of
//! concurrent enqueues with one key exactly one inserts, and the others then read the live
//! holder. PostgreSQL and SQLite return the inserted rows; MySQL tags them with a fresh token and
//! reads them back by it. On PostgreSQL the same statement calls `pg_notify`, delivered when the
//! transaction commits.

use std::collections::{HashMap, HashSet};

use diesel::QueryResult;
use safejob_core::{
    KeyDigest,
    queue::{Enqueued, JobId, NewJob, QueueState, RunAt},
    store::StoreError,
};

use super::{
    rows::{clean, micros, state},
    sql::{CHANNEL, EnqRow, QueueSql, padded},
};
use crate::backend::{BackendKind, Bind, DbConnection, Dialect, Stmt};

/// The most rows one `INSERT` carries (15 binds each: below every backend's limit on binds).
pub const MAX_ROWS_PER_STATEMENT: usize = 2000;
/// How many times rows whose live holder finished in between are inserted again.
const MAX_ROUNDS: usize = 16;

/// A job's values as bound.
struct Row<'a> {
    job: &'a NewJob,
    payload: String,
    metadata: String,
    at: Option<String>,
    delay: i64,
}

fn row<'a>(kind: BackendKind, job: &'a NewJob) -> Result<Row<'a>, StoreError> {
    let (at, delay) = match job.run_at {
        RunAt::Now => (None, 0),
        RunAt::At(at) => (Some(Dialect::of(kind).at_text(at)), 0),
        RunAt::After(delay) => (None, micros(delay)?),
    };
    Ok(Row {
        job,
        payload: clean(&job.payload.to_string()).into_owned(),
        metadata: clean(&job.metadata.to_string()).into_owned(),
        at,
        delay,
    })
}

/// A fresh token naming one batch's rows (MySQL read-back).
fn token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Inserts `jobs` on `conn` (autocommit, or inside whatever transaction is open on it) and answers
/// per job, in order. Statement errors are returned as diesel errors so that the caller decides
/// about retries; rows that cannot be matched are store errors.
pub(crate) fn enqueue<C: DbConnection>(
    sql: &QueueSql,
    conn: &mut C,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>, super::tx::Fail> {
    let mut answers: Vec<Option<Enqueued>> = vec![None; jobs.len()];
    // A later job with a key used earlier in the batch answers like the first one.
    let mut first_with: HashMap<KeyDigest, usize> = HashMap::new();
    let mut alias: Vec<(usize, usize)> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match job.unique_key {
            Some(key) => match first_with.get(&key) {
                Some(first) => alias.push((i, *first)),
                None => {
                    first_with.insert(key, i);
                    pending.push(i);
                }
            },
            None => pending.push(i),
        }
    }
    let rows = jobs
        .iter()
        .map(|job| row(sql.kind, job))
        .collect::<Result<Vec<_>, _>>()?;
    for _ in 0..MAX_ROUNDS {
        if pending.is_empty() {
            break;
        }
        let mut skipped = Vec::new();
        for chunk in pending.chunks(MAX_ROWS_PER_STATEMENT) {
            let inserted = insert(sql, conn, &rows, chunk)?;
            let keys: HashSet<&[u8]> = inserted
                .iter()
                .filter_map(|r| r.unique_key.as_deref())
                .collect();
            let mut inserted = inserted.iter();
            for &i in chunk {
                let key = jobs[i].unique_key.as_ref().map(|k| k.as_bytes().as_slice());
                if key.is_some_and(|k| !keys.contains(k)) {
                    skipped.push(i);
                    continue;
                }
                let Some(r) = inserted.next() else {
                    return Err(
                        StoreError::backend("enqueue: fewer rows inserted than sent").into(),
                    );
                };
                if r.unique_key.as_deref() != key {
                    return Err(StoreError::backend(
                        "enqueue: inserted rows came back out of order",
                    )
                    .into());
                }
                answers[i] = Some(Enqueued::Inserted {
                    id: JobId(r.id),
                    state: state(r.id, &r.state)?,
                });
            }
            if inserted.next().is_some() {
                return Err(StoreError::backend("enqueue: more rows inserted than sent").into());
            }
        }
        // The skipped jobs' keys are held by live jobs: read them.
        pending = Vec::new();
        for chunk in skipped.chunks(256) {
            let holders = live_holders(sql, conn, jobs, chunk)?;
            for &i in chunk {
                let key = jobs[i].unique_key.as_ref().map(|k| k.as_bytes().as_slice());
                match holders.iter().find(|h| h.unique_key.as_deref() == key) {
                    Some(h) => {
                        answers[i] = Some(Enqueued::Duplicate {
                            id: JobId(h.id),
                            state: state(h.id, &h.state)?,
                        });
                    }
                    // The holder finished in between: insert again.
                    None => pending.push(i),
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(StoreError::backend(
            "enqueue: unique keys kept changing hands between insert and lookup; try again",
        )
        .into());
    }
    for (i, first) in alias {
        let answer = answers[first]
            .ok_or_else(|| StoreError::backend("enqueue: a batch row got no answer"))?;
        let (id, state): (JobId, QueueState) = match answer {
            Enqueued::Inserted { id, state } | Enqueued::Duplicate { id, state } => (id, state),
        };
        answers[i] = Some(Enqueued::Duplicate { id, state });
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| StoreError::backend("enqueue: a job got no answer").into()))
        .collect()
}

/// One multi-row `INSERT` of `rows[chunk]`: the rows it inserted, in id (= insertion) order.
fn insert<C: DbConnection>(
    sql: &QueueSql,
    conn: &mut C,
    rows: &[Row<'_>],
    chunk: &[usize],
) -> QueryResult<Vec<EnqRow>> {
    if let Some(text) = &sql.insert_unnest {
        return insert_unnest(text, conn, rows, chunk);
    }
    // MySQL has no `INSERT … RETURNING`: each batch is tagged with a token and read back by it.
    let mysql = sql.kind == BackendKind::Mysql;
    let token = if mysql { token() } else { String::new() };
    let values = vec![sql.insert_row.as_str(); chunk.len()].join(", ");
    let head = if mysql {
        format!("{}, enqueue_token) VALUES ", sql.insert_head)
    } else {
        format!("{}) VALUES ", sql.insert_head)
    };
    let mut text = format!("{head}{values}{}", sql.insert_tail);
    if sql.kind == BackendKind::Postgres {
        // NOTIFY in the same statement: delivered when (and only if) the transaction commits.
        text = format!(
            "WITH ins AS ({text}) SELECT ins.id, ins.state, ins.unique_key \
             FROM ins, (SELECT pg_notify('{CHANNEL}', current_schema())) AS n"
        );
    }
    let mut binds = Vec::with_capacity(chunk.len() * 15);
    for &i in chunk {
        let r = &rows[i];
        let job = r.job;
        binds.extend([
            Bind::Text(&job.kind),
            Bind::Text(&job.queue),
            Bind::Text(&r.payload),
            Bind::Text(&r.metadata),
            Bind::Int(i64::from(job.priority)),
            Bind::OptText(r.at.as_deref()),
            Bind::Int(r.delay),
            Bind::OptText(r.at.as_deref()),
            Bind::Int(r.delay),
            Bind::Int(i64::from(job.max_attempts.max(1))),
            Bind::Int(i64::from(job.idempotent || job.guard.is_some())),
            Bind::OptBytes(job.unique_key.as_ref().map(|k| k.as_bytes().as_slice())),
            Bind::OptBytes(job.guard.as_ref().map(|g| g.digest.as_bytes().as_slice())),
            Bind::OptBytes(
                job.guard
                    .as_ref()
                    .and_then(|g| g.fingerprint.as_ref())
                    .map(|f| f.as_bytes().as_slice()),
            ),
        ]);
        if mysql {
            binds.push(Bind::Text(&token));
        }
    }
    // One row: the same text every time, so it is prepared once per connection; batches vary.
    let stmt = if chunk.len() == 1 {
        Stmt::new(&text, binds)
    } else {
        Stmt::uncached(&text, binds)
    };
    let mut inserted: Vec<EnqRow> = if mysql {
        conn.exec(&stmt)?;
        conn.load(&Stmt::new(&sql.inserted_by_token, vec![Bind::Text(&token)]))?
    } else {
        conn.load(&stmt)?
    };
    inserted.sort_by_key(|r| r.id);
    Ok(inserted)
}

/// A PostgreSQL array literal being written: `{e1,e2,…}`.
struct ArrayLit(String);

impl ArrayLit {
    fn with_capacity(n: usize) -> Self {
        let mut s = String::with_capacity(n + 2);
        s.push('{');
        Self(s)
    }

    fn sep(&mut self) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
    }

    /// A text element, quoted (`"` and `\` escaped), or NULL.
    fn text(&mut self, v: Option<&str>) {
        self.sep();
        let Some(v) = v else {
            self.0.push_str("NULL");
            return;
        };
        self.0.push('"');
        if v.contains(['"', '\\']) {
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    self.0.push('\\');
                }
                self.0.push(c);
            }
        } else {
            self.0.push_str(v);
        }
        self.0.push('"');
    }

    fn int(&mut self, v: i64) {
        use std::fmt::Write;
        self.sep();
        let _ = write!(self.0, "{v}");
    }

    /// A bytea element in hex (`"\\x…"`: the array literal's escape of `\x…`), or NULL.
    fn bytes(&mut self, v: Option<&[u8]>) {
        use std::fmt::Write;
        self.sep();
        let Some(v) = v else {
            self.0.push_str("NULL");
            return;
        };
        self.0.push_str("\"\\\\x");
        for b in v {
            let _ = write!(self.0, "{b:02x}");
        }
        self.0.push('"');
    }

    fn done(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// The PostgreSQL insert of `rows[chunk]` (`text` is [`QueueSql::insert_unnest`]): the rows it
/// inserted, in id (= batch) order.
fn insert_unnest<C: DbConnection>(
    text: &str,
    conn: &mut C,
    rows: &[Row<'_>],
    chunk: &[usize],
) -> QueryResult<Vec<EnqRow>> {
    let n = chunk.len();
    let (mut kind, mut queue) = (
        ArrayLit::with_capacity(n * 16),
        ArrayLit::with_capacity(n * 16),
    );
    let mut payload =
        ArrayLit::with_capacity(chunk.iter().map(|&i| rows[i].payload.len() + 3).sum());
    let mut metadata =
        ArrayLit::with_capacity(chunk.iter().map(|&i| rows[i].metadata.len() + 3).sum());
    let (mut priority, mut at, mut delay) = (
        ArrayLit::with_capacity(n * 2),
        ArrayLit::with_capacity(n * 5),
        ArrayLit::with_capacity(n * 2),
    );
    let (mut max_attempts, mut idempotent) = (
        ArrayLit::with_capacity(n * 2),
        ArrayLit::with_capacity(n * 2),
    );
    let (mut unique_key, mut guard_digest, mut guard_fingerprint) = (
        ArrayLit::with_capacity(n * 5),
        ArrayLit::with_capacity(n * 5),
        ArrayLit::with_capacity(n * 5),
    );
    for &i in chunk {
        let r = &rows[i];
        let job = r.job;
        kind.text(Some(&job.kind));
        queue.text(Some(&job.queue));
        payload.text(Some(&r.payload));
        metadata.text(Some(&r.metadata));
        priority.int(i64::from(job.priority));
        at.text(r.at.as_deref());
        delay.int(r.delay);
        max_attempts.int(i64::from(job.max_attempts.max(1)));
        idempotent.int(i64::from(job.idempotent || job.guard.is_some()));
        unique_key.bytes(job.unique_key.as_ref().map(|k| k.as_bytes().as_slice()));
        guard_digest.bytes(job.guard.as_ref().map(|g| g.digest.as_bytes().as_slice()));
        guard_fingerprint.bytes(
            job.guard
                .as_ref()
                .and_then(|g| g.fingerprint.as_ref())
                .map(|f| f.as_bytes().as_slice()),
        );
    }
    let arrays = [
        kind.done(),
        queue.done(),
        payload.done(),
        metadata.done(),
        priority.done(),
        at.done(),
        delay.done(),
        max_attempts.done(),
        idempotent.done(),
        unique_key.done(),
        guard_digest.done(),
        guard_fingerprint.done(),
    ];
    let binds = arrays.iter().map(|a| Bind::Text(a)).collect();
    // The same text for every batch: prepared once per connection.
    let mut inserted: Vec<EnqRow> = conn.load(&Stmt::new(text, binds))?;
    inserted.sort_by_key(|r| r.id);
    Ok(inserted)
}

/// The live jobs holding the unique keys of `jobs[chunk]`.
fn live_holders<C: DbConnection>(
    sql: &QueueSql,
    conn: &mut C,
    jobs: &[NewJob],
    chunk: &[usize],
) -> QueryResult<Vec<EnqRow>> {
    let keys: Vec<&[u8]> = chunk
        .iter()
        .filter_map(|&i| jobs[i].unique_key.as_ref().map(|k| k.as_bytes().as_slice()))
        .collect();
    let Some(first) = keys.first().copied() else {
        return Ok(Vec::new());
    };
    let n = padded(keys.len());
    let text = QueueSql::with_list(&sql.live_holders, n);
    let binds = (0..n)
        .map(|i| Bind::Bytes(keys.get(i).copied().unwrap_or(first)))
        .collect();
    conn.load(&Stmt::new(&text, binds))
}
