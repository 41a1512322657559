//! Event counters the store cannot give: how runs ended, counted as they happen.
//!
//! [`metrics`](crate::metrics) derives its figures from the store's rows at scrape time. The
//! guard's outcomes (granted, replayed, busy, conflict, stale finalize), executions per kind and
//! outcome (failures are `retrying`, dead letters `dead`) and duration histograms are events, not
//! rows: a [`Recorder`] is an [`Observer`] that counts them. Set it on the worker pool
//! ([`WorkerBuilder::observer`](safejob_core::queue::WorkerBuilder::observer)) or the runner
//! ([`RunnerBuilder::observer`](safejob_core::RunnerBuilder::observer)) that runs your jobs, and
//! hand the same `Arc` to [`WebState::with_recorder`](crate::WebState::with_recorder), which adds
//! its families to `/metrics`.
//!
//! ```
//! # use std::sync::Arc;
//! # use safejob_core::queue::{MemoryQueue, Registry, Worker};
//! let recorder = Arc::new(safejob_web::Recorder::new());
//! let store = Arc::new(MemoryQueue::new());
//! let worker = Worker::builder(store, Registry::new())
//!     .queues(["default"])
//!     .observer(recorder.clone())
//!     .build()?;
//! // … and `WebState::new(…).with_recorder(recorder)` for the router.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use safejob_core::observe::{Ending, GuardOutcome, Observer};

type Labels = Vec<(&'static str, String)>;

/// Duration buckets (seconds): 5 ms to 10 minutes.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0,
];

/// Counters and histograms of runs, shared (`Arc`) between the code that runs jobs and the web
/// state.
#[derive(Debug)]
pub struct Recorder {
    executions: Family<Labels, Counter>,
    /// Keyed by static labels: counting a guard answer allocates nothing.
    guard: Family<[(&'static str, &'static str); 1], Counter>,
    durations: Family<Labels, Histogram>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            executions: Family::default(),
            guard: Family::default(),
            durations: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }

    fn count(&self, kind: &str, outcome: &str, elapsed: Option<Duration>) {
        self.executions
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if let Some(d) = elapsed {
            self.durations
                .get_or_create(&vec![("kind", kind.to_owned())])
                .observe(d.as_secs_f64());
        }
    }

    fn guard_outcome(&self, outcome: &'static str) {
        self.guard.get_or_create(&[("outcome", outcome)]).inc();
    }
    /// Adds the families to a scrape's registry.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "safejob_executions",
            "Recorded runs per kind and outcome (since this process started)",
            self.executions.clone(),
        );
        registry.register(
            "safejob_guard_outcomes",
            "Recorded guard outcomes: granted, replayed, busy, conflict, stale_finalize",
            self.guard.clone(),
        );
        registry.register(
            "safejob_job_duration_seconds",
            "Recorded run durations per kind",
            self.durations.clone(),
        );
    }
}

/// Executions are counted per kind and [`Ending`] (`safejob_executions{kind, outcome}`), with the
/// duration observed for endings that ran ([`Ending::ran`]); guard answers per [`GuardOutcome`]
/// (`safejob_guard_outcomes{outcome}`).
impl Observer for Recorder {
    fn job_ended(&self, kind: &str, ending: Ending, elapsed: Duration) {
        self.count(kind, ending.as_str(), ending.ran().then_some(elapsed));
    }

    fn guard(&self, outcome: GuardOutcome) {
        self.guard_outcome(outcome.as_str());
    }
}
