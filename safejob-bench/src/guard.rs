//! The guarded side: no-op jobs through `safejob_core::Runner` on a `DieselStore`.

use std::sync::Arc;

use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, Report, Runner,
    SafeJob,
};
use safejob_diesel::DieselStore;

use crate::{
    driver::{BenchError, run_timed},
    stats::Measured,
};

/// A job that does nothing: what is left is the guard's own cost (acquire, finalize, effects
/// bookkeeping).
struct Noop {
    key: String,
    has_effects: bool,
}

impl SafeJob for Noop {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.as_str())
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        Ok(())
    }

    fn has_effects(&self) -> bool {
        self.has_effects
    }
}

/// One runner shared by every thread (it is `Sync`; the pool is the store's).
pub struct Guard {
    runner: Runner,
    has_effects: bool,
}

impl Guard {
    /// A runner on `store` with effects in `mode`, for jobs that have effects or not.
    pub fn new(
        store: Arc<DieselStore>,
        mode: EffectsMode,
        has_effects: bool,
    ) -> Result<Self, BenchError> {
        let runner = Runner::builder(store)
            .worker_id(format!("safejob-bench-{}", std::process::id()))
            .effects(mode)
            .build()?;
        Ok(Self {
            runner,
            has_effects,
        })
    }

    /// Runs one fresh key to success; anything else is an error (the keys are unique).
    pub fn run_one(&self, key: String) -> Result<(), BenchError> {
        let job = Noop {
            key,
            has_effects: self.has_effects,
        };
        match self.runner.run(&job)? {
            Report::Succeeded { .. } => Ok(()),
            other => Err(format!("a fresh key did not succeed: {other:?}").into()),
        }
    }

    /// Runs `jobs` fresh keys `{prefix}-{i}` on `threads` threads.
    pub fn run(&self, prefix: &str, jobs: usize, threads: usize) -> Result<Measured, BenchError> {
        run_timed(jobs, threads, |i| self.run_one(format!("{prefix}-{i}")))
    }
}
