//! The overview's charts over time: snapshots sampled in memory by this process, seeded at
//! start from the jobs that finished in the last hour.
//!
//! The stores keep no time series, so the dashboard records one point per snapshot it reads (at
//! most one every [`MIN_GAP`]) and [`serve`](crate::serve) samples every 10 seconds as well. The
//! series hold the last [`CAPACITY`] points. So that a fresh process does not start with empty
//! charts, [`seed`] rebuilds the last [`SEED_WINDOW`] from the store's finished jobs per minute
//! ([`QueueStore::finished_by_minute`]), anchored on the current snapshot; [`serve`](crate::serve)
//! calls it before it answers, and [`WebState::seed_charts`](crate::WebState::seed_charts) does
//! it for a router you serve yourself.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    StoreError,
    queue::{FinishedMinute, QueueState, QueueStore, Snapshot},
};

/// Points kept (an hour at one point per 10 seconds).
pub const CAPACITY: usize = 360;

/// The least time between two points.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// How far back [`seed`] reaches: what [`CAPACITY`] points at one per 10 seconds cover.
pub const SEED_WINDOW: Duration = Duration::from_secs(3600);

/// One point: cumulative figures over the jobs still in the store, so that the charts read the
/// differences between consecutive points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The store clock when the snapshot was taken.
    pub at: DateTime<Utc>,
    /// Finished executions (succeeded + dead) still in the store.
    pub finished: u64,
    /// Succeeded jobs still in the store.
    pub succeeded: u64,
    /// Their total duration in seconds (each kind's mean duration × its succeeded jobs).
    pub succeeded_seconds: f64,
    /// Jobs waiting (pending, scheduled, retrying).
    pub waiting: u64,
}

impl Sample {
    /// The point a snapshot gives.
    pub fn of(snapshot: &Snapshot) -> Self {
        let by_state = snapshot.by_state();
        let count = |s: QueueState| by_state.get(&s).copied().unwrap_or(0);
        let succeeded_seconds = snapshot
            .kinds
            .iter()
            .map(|k| k.mean.as_secs_f64() * k.executions as f64 * k.success_rate)
            .sum();
        Self {
            at: snapshot.taken_at,
            finished: count(QueueState::Succeeded) + count(QueueState::Dead),
            succeeded: count(QueueState::Succeeded),
            succeeded_seconds,
            waiting: QueueState::ALL
                .iter()
                .filter(|s| s.is_waiting())
                .map(|s| count(*s))
                .sum(),
        }
    }

    /// This point less what finished in `minute`: the point before that minute's jobs.
    fn less(self, minute: &FinishedMinute) -> Self {
        Self {
            finished: self.finished.saturating_sub(minute.succeeded + minute.dead),
            succeeded: self.succeeded.saturating_sub(minute.succeeded),
            succeeded_seconds: (self.succeeded_seconds
                - minute.mean.as_secs_f64() * minute.succeeded as f64)
                .max(0.0),
            ..self
        }
    }
}

/// The points of the last minutes, oldest first, ending at `now` (the current snapshot's point):
/// for each minute with finished jobs, a point at its start (before them) and one at its end
/// (after them, at `now` for the current minute), so that a chart reads each minute's jobs in
/// that minute and nothing between active minutes.
pub fn history(now: Sample, minutes: &[FinishedMinute]) -> Vec<Sample> {
    let minute = chrono::Duration::minutes(1);
    let mut points = Vec::with_capacity(2 * minutes.len() + 1);
    let mut after = now;
    // Newest first: each minute's end point is the point after it; its start, that less it.
    for m in minutes.iter().rev().filter(|m| m.minute <= now.at) {
        let end = (m.minute + minute).min(now.at);
        if end < after.at {
            points.push(Sample { at: end, ..after });
        }
        after = Sample {
            at: m.minute,
            ..after.less(m)
        };
        points.push(after);
    }
    points.reverse();
    points.push(now);
    points.dedup_by(|b, a| a.at == b.at);
    points
}

/// Reads the last [`SEED_WINDOW`] of finished jobs from `store` and puts the points
/// ([`history`]) before those `samples` already holds; returns how many were added. The
/// current snapshot anchors them, so the first live sample continues the series.
pub fn seed(samples: &Samples, store: &dyn QueueStore) -> Result<usize, StoreError> {
    let snapshot = store.snapshot()?;
    let minutes = store.finished_by_minute(SEED_WINDOW)?;
    Ok(samples.prepend(history(Sample::of(&snapshot), &minutes)))
}

/// The ring of points.
#[derive(Debug, Default)]
pub struct Samples {
    points: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Records a snapshot's point unless the last one is younger than [`MIN_GAP`].
    pub fn record(&self, snapshot: &Snapshot) {
        let point = Sample::of(snapshot);
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let gap = chrono::Duration::from_std(MIN_GAP).unwrap_or(chrono::Duration::MAX);
        if points.back().is_some_and(|last| point.at - last.at < gap) {
            return;
        }
        if points.len() == CAPACITY {
            points.pop_front();
        }
        points.push_back(point);
    }

    /// Puts `older` (oldest first) before the points held, keeping those older than the first
    /// held point and at most [`CAPACITY`] in all (the newest); returns how many were added.
    fn prepend(&self, older: Vec<Sample>) -> usize {
        let mut points = self.points.lock().unwrap_or_else(|p| p.into_inner());
        let first = points.front().map(|p| p.at);
        let room = CAPACITY - points.len();
        let keep: Vec<Sample> = older
            .into_iter()
            .filter(|p| first.is_none_or(|f| p.at < f))
            .collect();
        let skip = keep.len().saturating_sub(room);
        let added = keep.len() - skip;
        for p in keep.into_iter().skip(skip).rev() {
            points.push_front(p);
        }
        added
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<Sample> {
        self.points
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Throughput between consecutive points, in finished jobs per minute, drawn as a step over
/// each interval (both its ends). A drop (a prune or purge) counts as zero.
pub fn throughput(points: &[Sample]) -> Vec<(DateTime<Utc>, f64)> {
    points
        .windows(2)
        .flat_map(|w| {
            let secs = (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0;
            let done = w[1].finished.saturating_sub(w[0].finished) as f64;
            let rate = if secs > 0.0 { done * 60.0 / secs } else { 0.0 };
            [(w[0].at, rate), (w[1].at, rate)]
        })
        .collect()
}

/// Mean latency of the jobs that succeeded between consecutive points, in seconds, drawn as a
/// step over each interval that had any (both its ends); intervals without one are left out.
pub fn latency(points: &[Sample]) -> Vec<(DateTime<Utc>, f64)> {
    points
        .windows(2)
        .filter_map(|w| {
            let n = w[1].succeeded.checked_sub(w[0].succeeded)?;
            if n == 0 {
                return None;
            }
            let mean = ((w[1].succeeded_seconds - w[0].succeeded_seconds) / n as f64).max(0.0);
            Some([(w[0].at, mean), (w[1].at, mean)])
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_040 + secs, 0).unwrap()
    }

    fn minute(start: i64, succeeded: u64, dead: u64, mean_ms: u64) -> FinishedMinute {
        FinishedMinute {
            minute: at(start),
            succeeded,
            dead,
            mean: Duration::from_millis(mean_ms),
        }
    }

    /// Break: `history` leaving out a minute's start point (a gap between active minutes would
    /// read as their average), or not anchoring on the current point.
    #[test]
    fn history_reads_each_minute_in_its_minute() {
        let now = Sample {
            at: at(600 + 30),
            finished: 100,
            succeeded: 90,
            succeeded_seconds: 90.0,
            waiting: 3,
        };
        // Minute 0: 6 jobs; minute 5: 3 jobs; minute 10 (the current one): 12 jobs so far.
        let minutes = [
            minute(0, 6, 0, 500),
            minute(300, 2, 1, 1000),
            minute(600, 12, 0, 2000),
        ];
        let points = history(now, &minutes);
        let times: Vec<_> = points.iter().map(|p| p.at).collect();
        assert_eq!(
            times,
            vec![at(0), at(60), at(300), at(360), at(600), at(630)]
        );
        assert_eq!(points.last(), Some(&now));
        let rates: Vec<f64> = throughput(&points).iter().step_by(2).map(|p| p.1).collect();
        assert_eq!(rates, vec![6.0, 0.0, 3.0, 0.0, 24.0]);
        let steps: Vec<f64> = latency(&points).iter().map(|p| p.1).collect();
        assert_eq!(steps, vec![0.5, 0.5, 1.0, 1.0, 2.0, 2.0]);
    }

    /// Break: `prepend` keeping points newer than the live ones, or more than [`CAPACITY`].
    #[test]
    fn seeded_points_go_before_live_ones_within_capacity() {
        let samples = Samples::default();
        let point = |secs| Sample {
            at: at(secs),
            finished: 0,
            succeeded: 0,
            succeeded_seconds: 0.0,
            waiting: 0,
        };
        samples.points.lock().unwrap().push_back(point(1000));
        let added = samples.prepend(
            (0..400)
                .map(|s| point(s * 2))
                .chain([point(2000)])
                .collect(),
        );
        assert_eq!(added, CAPACITY - 1);
        let points = samples.points();
        assert_eq!(points.len(), CAPACITY);
        assert_eq!(points.last().unwrap().at, at(1000));
        assert!(points.windows(2).all(|w| w[0].at < w[1].at));
    }
}
