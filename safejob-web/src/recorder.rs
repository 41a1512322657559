//! Event counters the store cannot give: what runs returned, counted as they happen.
//!
//! [`metrics`](crate::metrics) derives its figures from the store's rows at scrape time. The
//! guard's outcomes (granted, replayed, busy, conflict, stale finalize), executions and failures
//! per kind and duration histograms are events, not rows: a [`Recorder`] counts them when you
//! hand it what a run returned, and [`WebState::with_recorder`](crate::WebState::with_recorder)
//! adds its families to `/metrics`. Nothing in the core calls it yet: call it where you run
//! jobs yourself, around [`Runner::run`](safejob_core::Runner::run) or
//! [`Worker::run_once`](safejob_core::queue::Worker::run_once).
//!
//! ```
//! # use std::{sync::Arc, time::Instant};
//! # use safejob_core::{MemoryStore, Runner};
//! let recorder = Arc::new(safejob_web::Recorder::new());
//! # let runner = Runner::builder(Arc::new(MemoryStore::new())).build()?;
//! # struct Job;
//! # impl safejob_core::SafeJob for Job {
//! #     type Error = std::io::Error;
//! #     fn key(&self) -> Result<safejob_core::IdempotencyKey, safejob_core::KeyError> { safejob_core::IdempotencyKey::new("k") }
//! #     fn perform(&self, _: &mut safejob_core::PerformContext<'_>) -> Result<safejob_core::Outcome, std::io::Error> { Ok(safejob_core::Outcome::done()) }
//! #     fn on_succeeded_once(&self, _: &mut safejob_core::EffectsContext<'_>) -> Result<(), std::io::Error> { Ok(()) }
//! # }
//! let started = Instant::now();
//! let result = runner.run(&Job);
//! recorder.observe_run("payout", &result, started.elapsed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use safejob_core::{
    Report, RunError,
    queue::{Ran, Worked},
};

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
    guard: Family<Labels, Counter>,
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

    fn guard_outcome(&self, outcome: &str) {
        self.guard
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc();
    }

    /// Records what a guarded run of a job of `kind` returned, and how long it took.
    ///
    /// Guard outcomes: `granted` (this run held the lease: succeeded, failed or not ready),
    /// `replayed` (already succeeded or failed), `busy`, `conflict` (same key, other
    /// parameters), `stale_finalize` (the lease was lost before the finalize), `error` (any
    /// other error). Executions count only granted runs, by how they ended.
    pub fn observe_run<E: std::error::Error>(
        &self,
        kind: &str,
        result: &Result<Report, RunError<E>>,
        elapsed: Duration,
    ) {
        let (guard, execution) = match result {
            Ok(Report::Succeeded { .. }) => ("granted", Some("succeeded")),
            Ok(Report::Failed { .. }) => ("granted", Some("failed")),
            Ok(Report::RetryLater { .. }) => ("granted", Some("retry_later")),
            Ok(Report::AlreadySucceeded { .. } | Report::AlreadyFailed { .. }) => {
                ("replayed", None)
            }
            Ok(Report::Busy { .. }) => ("busy", None),
            Err(RunError::KeyConflict { .. }) => ("conflict", None),
            Err(RunError::LeaseLost { .. }) => ("stale_finalize", Some("lease_lost")),
            Err(RunError::Job { .. }) => ("granted", Some("error")),
            Err(_) => ("error", None),
        };
        self.guard_outcome(guard);
        if let Some(outcome) = execution {
            self.count(kind, outcome, Some(elapsed));
        }
    }

    /// Records what a queue worker did with one job ([`Worker::run_once`]'s answers), and how
    /// long its run took (the duration is observed for executions that ran: not for snoozes or
    /// stale completions).
    ///
    /// [`Worker::run_once`]: safejob_core::queue::Worker::run_once
    pub fn observe_worked(&self, worked: &Worked, elapsed: Duration) {
        let (outcome, ran) = match &worked.ran {
            Ran::Succeeded => ("succeeded", true),
            Ran::Retrying { .. } => ("retrying", true),
            Ran::Dead { .. } => ("dead", true),
            Ran::Cancelled => ("cancelled", true),
            Ran::Snoozed { .. } => ("snoozed", false),
            Ran::Stale => ("stale", false),
            _ => ("other", false),
        };
        if matches!(worked.ran, Ran::Stale) {
            self.guard_outcome("stale_finalize");
        }
        self.count(&worked.kind, outcome, ran.then_some(elapsed));
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
            "Recorded guard outcomes: granted, replayed, busy, conflict, stale_finalize, error",
            self.guard.clone(),
        );
        registry.register(
            "safejob_job_duration_seconds",
            "Recorded run durations per kind",
            self.durations.clone(),
        );
    }
}
