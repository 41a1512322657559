//! The snapshot: counts, per-kind figures, workers and the oldest due job, read in one
//! transaction (repeatable read on PostgreSQL and MySQL, one read snapshot on SQLite).
//!
//! Percentiles are computed in Rust by [`KindStats::from_finished`] from the durations of the
//! latest [`DURATION_SAMPLE`] succeeded jobs of each kind (a window function bounds them per
//! kind); executions, the success rate and the mean come from aggregates over all finished jobs.

use std::{collections::BTreeMap, time::Duration};

use safejob_core::{
    queue::{FinishedMinute, JobId, KindStats, QueueState, Snapshot, StateCount, WorkerInfo},
    store::StoreError,
};

use super::{
    rows::{corrupt, instant, state},
    sql::{CountRow, DurationRow, InFlightRow, KindRow, MinuteRow, OldestRow, WorkerRow},
    tx::{Begin, End, QCtx},
};
use crate::backend::{BackendKind, Bind, DbConnection, Stmt, pool::PooledConn};

/// How many of each kind's latest succeeded jobs the percentiles are computed from.
pub const DURATION_SAMPLE: usize = 10_000;

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl QCtx<'_> {
    pub(crate) fn snapshot<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
    ) -> Result<Snapshot, StoreError> {
        if self.sql.kind == BackendKind::Mysql {
            // Applies to the next transaction only (the session stays READ COMMITTED).
            self.run(c, |conn| {
                conn.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            })?;
        }
        self.transaction(c, Begin::Read, |c| {
            // One snapshot for every read, so the figures agree: PostgreSQL sets it as the
            // transaction's first statement (MySQL before BEGIN, above; SQLite reads are
            // snapshots already).
            if self.sql.kind == BackendKind::Postgres {
                c.conn
                    .batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
            }
            let counts: Vec<CountRow> = c.conn.load(&Stmt::new(&self.sql.counts, vec![]))?;
            let kinds: Vec<KindRow> = c.conn.load(&Stmt::new(&self.sql.kinds, vec![]))?;
            let sample = Bind::Int(DURATION_SAMPLE as i64);
            let durations: Vec<DurationRow> =
                c.conn.load(&Stmt::new(&self.sql.durations, vec![sample]))?;
            let workers: Vec<WorkerRow> = c.conn.load(&Stmt::new(&self.sql.workers, vec![]))?;
            let in_flight: Vec<InFlightRow> =
                c.conn.load(&Stmt::new(&self.sql.in_flight, vec![]))?;
            let oldest: Vec<OldestRow> = c.conn.load(&Stmt::new(&self.sql.oldest, vec![]))?;
            Ok(End::Commit(assemble(
                counts, kinds, durations, workers, in_flight, oldest,
            )?))
        })
    }
}

impl QCtx<'_> {
    pub(crate) fn finished_by_minute<C: DbConnection>(
        &self,
        c: &mut PooledConn<C>,
        window: Duration,
    ) -> Result<Vec<FinishedMinute>, StoreError> {
        let back = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let stmt = Stmt::new(&self.sql.finished_by_minute, vec![Bind::Int(-back)]);
        let rows: Vec<MinuteRow> = self.run(c, |conn| conn.load(&stmt))?;
        rows.into_iter()
            .map(|row| {
                let succeeded = u64::try_from(row.ok).unwrap_or(0);
                Ok(FinishedMinute {
                    minute: instant(0, row.minute_us)?,
                    succeeded,
                    dead: u64::try_from(row.dead).unwrap_or(0),
                    mean: u32::try_from(succeeded)
                        .ok()
                        .filter(|n| *n > 0)
                        .map_or(Duration::ZERO, |n| micros(row.total_us) / n),
                })
            })
            .collect()
    }
}

fn assemble(
    counts: Vec<CountRow>,
    kinds: Vec<KindRow>,
    durations: Vec<DurationRow>,
    workers: Vec<WorkerRow>,
    in_flight: Vec<InFlightRow>,
    oldest: Vec<OldestRow>,
) -> Result<Snapshot, StoreError> {
    let now_us = oldest
        .first()
        .ok_or_else(|| StoreError::backend("snapshot: the clock query returned no row"))?
        .now_us;
    let now = instant(0, now_us)?;
    let oldest_due_by_queue: BTreeMap<String, Duration> = oldest
        .into_iter()
        .filter_map(|row| Some((row.queue?, micros(now_us.saturating_sub(row.due_us?)))))
        .collect();
    let mut by_key: BTreeMap<(String, String, QueueState), u64> = BTreeMap::new();
    for row in counts {
        let state = state(0, &row.state)?;
        *by_key.entry((row.queue, row.kind, state)).or_insert(0) +=
            u64::try_from(row.n).unwrap_or(0);
    }
    let mut samples: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for row in durations {
        samples.entry(row.kind).or_default().push(micros(row.d));
    }
    let mut stats: BTreeMap<String, KindStats> = BTreeMap::new();
    for row in kinds {
        let sample = samples.remove(&row.kind).unwrap_or_default();
        let ok = u64::try_from(row.ok).unwrap_or(0);
        let dead = u64::try_from(row.dead).unwrap_or(0);
        let complete = sample.len() as u64 == ok;
        let mut figures = KindStats::from_finished(row.kind.clone(), dead, sample);
        if !complete {
            // More succeeded jobs than sampled: the exact figures from the aggregates.
            figures.executions = ok + dead;
            figures.success_rate = if ok + dead == 0 {
                0.0
            } else {
                ok as f64 / (ok + dead) as f64
            };
            figures.mean = u32::try_from(ok)
                .ok()
                .filter(|n| *n > 0)
                .map_or(Duration::ZERO, |n| micros(row.total_us) / n);
        }
        stats.insert(row.kind, figures);
    }
    let mut flying: BTreeMap<String, Vec<JobId>> = BTreeMap::new();
    for row in in_flight {
        flying.entry(row.owner).or_default().push(JobId(row.id));
    }
    let mut infos = workers
        .into_iter()
        .map(|w| {
            let queues: Vec<String> = serde_json::from_str(&w.queues).map_err(|e| {
                corrupt(
                    0,
                    format!("safe_queue_workers queues is not a JSON list: {e}"),
                )
            })?;
            Ok(WorkerInfo {
                in_flight: flying.remove(&w.id).unwrap_or_default(),
                queues,
                concurrency: u32::try_from(w.concurrency).unwrap_or(u32::MAX),
                last_heartbeat: instant(0, w.heartbeat_us)?,
                id: w.id,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    infos.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Snapshot {
        taken_at: now,
        counts: by_key
            .into_iter()
            .map(|((queue, kind, state), count)| StateCount {
                queue,
                kind,
                state,
                count,
            })
            .collect(),
        kinds: stats.into_values().collect(),
        workers: infos,
        oldest_due_age: oldest_due_by_queue.values().max().copied(),
        oldest_due_by_queue,
    })
}
