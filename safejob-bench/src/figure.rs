//! A benchmark step's figure and the JSON lines the benchmarks print: one per step, and the
//! audit ledger's on ÷ off line.

use std::time::Duration;

use serde_json::{Value, json};

use crate::counters::{Counts, per_job};

/// A step of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// N inserts, one call each.
    EnqueueSingle,
    /// N inserts in calls of `batch`.
    EnqueueBatched,
    /// Every waiting job worked off by T workers.
    Drain,
}

impl Op {
    /// The name printed in `"op"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EnqueueSingle => "enqueue_single",
            Self::EnqueueBatched => "enqueue_batched",
            Self::Drain => "drain",
        }
    }
}

/// One measured step of one system.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// `safejob`, `river` or `fang`.
    pub system: &'static str,
    /// `postgres`, `sqlite`, `mysql` or `memory`.
    pub backend: &'static str,
    /// The step.
    pub op: Op,
    /// Our queue with every job guarded.
    pub guarded: bool,
    /// For a guarded run: where its jobs' effects run (`--effects`; `none`: the jobs declare
    /// none).
    pub effects: Option<&'static str>,
    /// Jobs in the step.
    pub jobs: usize,
    /// Workers of the run (the enqueue steps run on one client thread whatever this says).
    pub workers: usize,
    /// Jobs per call, for the batched enqueue.
    pub batch: Option<usize>,
    /// Wall time of the step.
    pub elapsed: Duration,
    /// How this system does the step, where it differs from the others.
    pub note: Option<&'static str>,
    /// Timed passes summed into this figure (2 for our queue with `--guarded`, else 1).
    pub passes: usize,
    /// Whether our queue's audit ledger recorded (`None` for the peers).
    pub ledger: Option<bool>,
    /// What happens to finished jobs (`--retention`): `keep` or `delete`.
    pub retention: &'static str,
    /// Commits, statements and WAL bytes of the step, from the server (see
    /// [`crate::counters`]).
    pub counts: Counts,
}

impl Figure {
    /// Jobs per second.
    pub fn jobs_per_s(&self) -> f64 {
        rate(self.jobs, self.elapsed)
    }
}

/// `jobs` over `elapsed`, in jobs per second; 0 for an empty or instantaneous step (never NaN or
/// infinity, which JSON cannot carry).
pub fn rate(jobs: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if jobs == 0 || secs <= 0.0 {
        0.0
    } else {
        jobs as f64 / secs
    }
}

/// `x` to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `x` to three decimals.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// One compact JSON object, keys in the order given.
pub fn line(fields: &[(&str, Value)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The result line of one figure: `{"bench":"queue","system":…,"backend":…,"op":…,
/// "guarded":…,"effects":…,"jobs":…,"workers":…,"batch":…,"jobs_per_s":…,"elapsed_s":…,
/// "passes":…,"ledger":…,"load1":…,"retention":…,"commits":…,"rollbacks":…,"statements":…,
/// "wal_bytes":…,"commits_per_job":…,"statements_per_job":…,"wal_bytes_per_job":…,
/// "counted_by":{…}}`, with a `"note"` last when the system does the step its own way.
pub fn figure_line(f: &Figure, load1: Option<f64>) -> String {
    let mut fields = vec![
        ("bench", json!("queue")),
        ("system", json!(f.system)),
        ("backend", json!(f.backend)),
        ("op", json!(f.op.as_str())),
        ("guarded", json!(f.guarded)),
        ("effects", json!(f.effects)),
        ("jobs", json!(f.jobs)),
        ("workers", json!(f.workers)),
        ("batch", json!(f.batch)),
        ("jobs_per_s", json!(round1(f.jobs_per_s()))),
        ("elapsed_s", json!(round3(f.elapsed.as_secs_f64()))),
        ("passes", json!(f.passes)),
        ("ledger", json!(f.ledger)),
        ("load1", json!(load1)),
        ("retention", json!(f.retention)),
    ];
    fields.extend(f.counts.fields(f.jobs));
    if let Some(note) = f.note {
        fields.push(("note", json!(note)));
    }
    line(&fields)
}

/// The `ledger_cost` line of a `--ledger compare` run: each step's rate with the ledger on and
/// off, and on ÷ off (below 1: the ledger's cost).
pub fn ledger_cost_line(
    figures: &[Figure],
    backend: &str,
    workers: usize,
    load1: Option<f64>,
) -> String {
    let rate_of = |op: Op, on: bool| {
        figures
            .iter()
            .find(|f| f.system == "safejob" && f.op == op && f.ledger == Some(on))
            .map(Figure::jobs_per_s)
    };
    let mut fields = vec![
        ("bench", json!("ledger_cost")),
        ("backend", json!(backend)),
        ("workers", json!(workers)),
    ];
    for (op, name) in [
        (Op::EnqueueSingle, "enqueue_single"),
        (Op::EnqueueBatched, "enqueue_batched"),
        (Op::Drain, "drain"),
    ] {
        let (on, off) = (rate_of(op, true), rate_of(op, false));
        let ratio = match (on, off) {
            (Some(on), Some(off)) if off > 0.0 => Some(round3(on / off)),
            _ => None,
        };
        fields.push((
            name,
            json!({"on": on.map(round1), "off": off.map(round1), "on_over_off": ratio}),
        ));
    }
    fields.push(("load1", json!(load1)));
    line(&fields)
}

/// The figures as a table for people (the JSON lines are for programs): one row per step, the
/// rate beside its per-job counts; `n/a` where a count is not available.
pub fn summary_table(figures: &[Figure]) -> String {
    let na = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x}"));
    let mut out = format!(
        "{:<8} {:<8} {:<7} {:<15} {:>8} {:>10} {:>12} {:>11} {:>11}\n",
        "system",
        "backend",
        "mode",
        "step",
        "jobs",
        "jobs/s",
        "commits/job",
        "stmts/job",
        "WAL B/job"
    );
    for f in figures {
        let mode = match (f.system, f.guarded) {
            ("safejob", true) => "guarded",
            ("safejob", false) => "plain",
            _ => "-",
        };
        out.push_str(&format!(
            "{:<8} {:<8} {:<7} {:<15} {:>8} {:>10.1} {:>12} {:>11} {:>11}\n",
            f.system,
            f.backend,
            mode,
            f.op.as_str(),
            f.jobs,
            f.jobs_per_s(),
            na(per_job(f.counts.commits, f.jobs)),
            na(per_job(f.counts.statements, f.jobs)),
            na(per_job(f.counts.wal_bytes, f.jobs).map(round1)),
        ));
    }
    let mut seen: Vec<&str> = Vec::new();
    for f in figures {
        if seen.contains(&f.system) {
            continue;
        }
        seen.push(f.system);
        let s = f.counts.sources;
        out.push_str(&format!(
            "{} (retention {}): commits by {}; statements by {}; WAL by {}\n",
            f.system,
            f.retention,
            s.commits.unwrap_or("n/a"),
            s.statements.unwrap_or("n/a"),
            s.wal_bytes.unwrap_or("n/a"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_never_divide_by_zero() {
        assert_eq!(rate(1_000, Duration::from_millis(500)), 2_000.0);
        assert_eq!(rate(0, Duration::from_secs(1)), 0.0);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
    }
}
