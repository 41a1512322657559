//! The overview's charts over time: snapshots sampled in memory by this process.
//!
//! The stores keep no time series, so the dashboard records one point per snapshot it reads (at
//! most one every [`MIN_GAP`]) and [`serve`](crate::serve) samples every 10 seconds as well. The
//! series start when the process starts and hold the last [`CAPACITY`] points.

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::queue::{QueueState, Snapshot};

/// Points kept (an hour at one point per 10 seconds).
pub const CAPACITY: usize = 360;

/// The least time between two points.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// One point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The store clock when the snapshot was taken.
    pub at: DateTime<Utc>,
    /// Finished executions (succeeded + dead) still in the store.
    pub finished: u64,
    /// Jobs waiting (pending, scheduled, retrying).
    pub waiting: u64,
    /// Mean duration of succeeded jobs over all kinds, in seconds (weighted by executions).
    pub mean_seconds: f64,
}

impl Sample {
    /// The point a snapshot gives.
    pub fn of(snapshot: &Snapshot) -> Self {
        let by_state = snapshot.by_state();
        let count = |s: QueueState| by_state.get(&s).copied().unwrap_or(0);
        let (weighted, n) = snapshot.kinds.iter().fold((0.0, 0u64), |(w, n), k| {
            (
                w + k.mean.as_secs_f64() * k.executions as f64,
                n + k.executions,
            )
        });
        Self {
            at: snapshot.taken_at,
            finished: count(QueueState::Succeeded) + count(QueueState::Dead),
            waiting: QueueState::ALL
                .iter()
                .filter(|s| s.is_waiting())
                .map(|s| count(*s))
                .sum(),
            mean_seconds: if n == 0 { 0.0 } else { weighted / n as f64 },
        }
    }
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

/// Throughput between consecutive points: (time, finished jobs per minute). A drop (a prune or
/// purge) counts as zero.
pub fn throughput(points: &[Sample]) -> Vec<(DateTime<Utc>, f64)> {
    points
        .windows(2)
        .map(|w| {
            let secs = (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0;
            let done = w[1].finished.saturating_sub(w[0].finished) as f64;
            (w[1].at, if secs > 0.0 { done * 60.0 / secs } else { 0.0 })
        })
        .collect()
}
