//! Latency samples, percentiles and the one-line JSON results.
//!
//! Percentiles are read from the sorted samples themselves (nearest rank), not from a histogram:
//! a run keeps at most a few hundred thousand `u64`s, so sorting them is exact and cheap, and
//! needs no extra crate.

use std::time::Duration;

use serde_json::{Value, json};

/// What one benchmark measured: its wall time and every job's latency.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Wall time from the start barrier until the last thread finished.
    pub elapsed: Duration,
    /// One latency per job, in nanoseconds.
    pub samples_ns: Vec<u64>,
}

impl Measured {
    /// Adds another measurement of the same benchmark (a later round).
    pub fn merge(&mut self, other: Measured) {
        self.elapsed += other.elapsed;
        self.samples_ns.extend(other.samples_ns);
    }

    /// Jobs per second over the whole wall time.
    pub fn jobs_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.samples_ns.len() as f64 / secs
        } else {
            0.0
        }
    }

    /// The summary printed for this measurement.
    pub fn summary(mut self) -> Summary {
        self.samples_ns.sort_unstable();
        Summary {
            jobs: self.samples_ns.len(),
            jobs_per_s: self.jobs_per_s(),
            p50_us: percentile(&self.samples_ns, 50.0).map(us),
            p99_us: percentile(&self.samples_ns, 99.0).map(us),
        }
    }
}

/// Throughput and latency percentiles of one benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Jobs measured.
    pub jobs: usize,
    /// Jobs per second.
    pub jobs_per_s: f64,
    /// Median latency, microseconds.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, microseconds.
    pub p99_us: Option<f64>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

/// The nearest-rank `p`th percentile of `sorted` (ascending): the smallest sample with at least
/// `p`% of the samples at or below it. `None` when there are no samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Rounds to one decimal: enough for jobs/s and microseconds, and stable to read.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Round to three decimals, for ratios.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What every result line says about the run it belongs to.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// `sqlite`, `postgres` or `mysql`.
    pub backend: &'static str,
    /// `after-commit` or `transactional`.
    pub effects: &'static str,
    /// Worker threads.
    pub threads: usize,
    /// The 1-minute load average when the run started, if readable.
    pub load1: Option<f64>,
}

/// One result line: `{"bench":…,"backend":…,"effects":…,"jobs":…,"threads":…,"jobs_per_s":…,
/// "p50_us":…,"p99_us":…,"load1":…}`. The baseline has no effects: its `effects` is `"none"`.
pub fn bench_line(bench: &str, info: &RunInfo, summary: &Summary) -> String {
    let effects = if bench == "guard" {
        info.effects
    } else {
        "none"
    };
    line(&[
        ("bench", json!(bench)),
        ("backend", json!(info.backend)),
        ("effects", json!(effects)),
        ("jobs", json!(summary.jobs)),
        ("threads", json!(info.threads)),
        ("jobs_per_s", json!(round1(summary.jobs_per_s))),
        ("p50_us", json!(summary.p50_us.map(round1))),
        ("p99_us", json!(summary.p99_us.map(round1))),
        ("load1", json!(info.load1)),
    ])
}

/// The ratio line: `{"bench":"ratio",…,"guard_over_baseline":…}` (throughput of the guard over
/// the baseline's; 1.0 means the guard costs nothing).
pub fn ratio_line(info: &RunInfo, guard: &Summary, baseline: &Summary) -> String {
    let ratio = (baseline.jobs_per_s > 0.0).then(|| round3(guard.jobs_per_s / baseline.jobs_per_s));
    line(&[
        ("bench", json!("ratio")),
        ("backend", json!(info.backend)),
        ("effects", json!(info.effects)),
        ("threads", json!(info.threads)),
        ("guard_over_baseline", json!(ratio)),
    ])
}

/// One compact JSON object on one line, keys in the order given (serde_json's `Map` would sort
/// them without its `preserve_order` feature).
fn line(fields: &[(&str, Value)]) -> String {
    let fields: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The 1-minute load average from `/proc/loadavg`, if there is one.
pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50));
        assert_eq!(percentile(&sorted, 99.0), Some(99));
        assert_eq!(percentile(&sorted, 100.0), Some(100));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_converts_to_microseconds() {
        let m = Measured {
            elapsed: Duration::from_secs(2),
            samples_ns: vec![3_000, 1_000, 2_000, 100_000],
        };
        let s = m.summary();
        assert_eq!(s.jobs, 4);
        assert_eq!(s.jobs_per_s, 2.0);
        assert_eq!(s.p50_us, Some(2.0));
        assert_eq!(s.p99_us, Some(100.0));
    }

    #[test]
    fn merged_rounds_add_up() {
        let mut a = Measured {
            elapsed: Duration::from_millis(500),
            samples_ns: vec![1; 10],
        };
        a.merge(Measured {
            elapsed: Duration::from_millis(500),
            samples_ns: vec![1; 30],
        });
        assert_eq!(a.samples_ns.len(), 40);
        assert_eq!(a.jobs_per_s(), 40.0);
    }

    fn info() -> RunInfo {
        RunInfo {
            backend: "sqlite",
            effects: "after-commit",
            threads: 4,
            load1: Some(0.5),
        }
    }

    #[test]
    fn result_lines_are_one_json_object_in_the_documented_order() {
        let s = Summary {
            jobs: 1000,
            jobs_per_s: 1234.5678,
            p50_us: Some(700.04),
            p99_us: Some(2100.0),
        };
        let guard = bench_line("guard", &info(), &s);
        assert_eq!(
            guard,
            r#"{"bench":"guard","backend":"sqlite","effects":"after-commit","jobs":1000,"threads":4,"jobs_per_s":1234.6,"p50_us":700.0,"p99_us":2100.0,"load1":0.5}"#
        );
        assert!(!guard.contains('\n'));
        let parsed: Value = serde_json::from_str(&guard).unwrap();
        assert_eq!(parsed["jobs"], 1000);

        let baseline = bench_line("baseline", &info(), &s);
        assert!(
            baseline.starts_with(r#"{"bench":"baseline","backend":"sqlite","effects":"none","#)
        );

        let half = Summary {
            jobs_per_s: 617.2839,
            ..s
        };
        assert_eq!(
            ratio_line(&info(), &half, &s),
            r#"{"bench":"ratio","backend":"sqlite","effects":"after-commit","threads":4,"guard_over_baseline":0.5}"#
        );
    }

    #[test]
    fn empty_runs_print_nulls_not_nan() {
        let s = Measured::default().summary();
        let line = bench_line("guard", &info(), &s);
        assert!(line.contains(r#""p50_us":null"#), "{line}");
        assert!(line.contains(r#""jobs_per_s":0.0"#), "{line}");
        serde_json::from_str::<Value>(&line).unwrap();
    }
}
