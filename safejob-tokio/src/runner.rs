//! [`AsyncRunner`]: a [`Runner`] called from async code.

use std::sync::Arc;

use safejob_core::{Recovery, Report, RunError, Runner, SafeJob};

use crate::{AsyncError, blocking};

/// A [`Runner`] for async code: each call runs the whole pipeline (acquire → perform → finalize
/// → on_succeeded_once) on tokio's blocking pool, so a slow `perform` or a database wait never
/// blocks the executor. Cheap to clone; every clone shares one `Runner`.
///
/// The job moves into the blocking task, so it is taken by value (or shared through an [`Arc`]
/// with [`run_shared`](AsyncRunner::run_shared)) and must be `Send + 'static`. Everything else is
/// the `Runner`'s: the same reports, the same [`RunError`]s (in [`AsyncError::Failed`]), the same
/// guarantees. A panic in the job comes back as [`AsyncError::Panicked`] instead of unwinding into
/// the caller.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use safejob_core::*;
/// use safejob_tokio::AsyncRunner;
///
/// struct Charge { id: u32, cents: u64 }
/// impl SafeJob for Charge {
///     type Error = std::io::Error;
///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
///         IdempotencyKey::from_parts(["charge", &self.id.to_string()])
///     }
///     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
///         Ok(Outcome::json(serde_json::json!({ "charged": self.cents })))
///     }
/// }
///
/// let runner = AsyncRunner::from(Runner::builder(Arc::new(MemoryStore::new())).build()?);
/// let first = runner.run(Charge { id: 7, cents: 500 }).await?;
/// assert!(matches!(first, Report::Succeeded { attempt: 1, .. }));
/// let again = runner.run(Charge { id: 7, cents: 500 }).await?;
/// assert!(matches!(again, Report::AlreadySucceeded { .. }));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AsyncRunner {
    runner: Arc<Runner>,
}

impl std::fmt::Debug for AsyncRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRunner")
            .field("worker_id", &self.runner.worker_id())
            .finish_non_exhaustive()
    }
}

impl From<Runner> for AsyncRunner {
    fn from(runner: Runner) -> Self {
        Self::new(Arc::new(runner))
    }
}

impl From<Arc<Runner>> for AsyncRunner {
    fn from(runner: Arc<Runner>) -> Self {
        Self::new(runner)
    }
}

impl AsyncRunner {
    /// Wraps a shared runner (the same one may serve synchronous callers too).
    pub fn new(runner: Arc<Runner>) -> Self {
        Self { runner }
    }

    /// The runner underneath.
    pub fn runner(&self) -> &Arc<Runner> {
        &self.runner
    }

    /// [`Runner::run`] on the blocking pool: runs the pipeline for `job` once and reports.
    pub async fn run<J>(&self, job: J) -> Result<Report, AsyncError<RunError<J::Error>>>
    where
        J: SafeJob + Send + 'static,
    {
        let runner = self.runner.clone();
        blocking(move || runner.run(&job)).await
    }

    /// [`run`](AsyncRunner::run) for a job the caller keeps a handle on.
    pub async fn run_shared<J>(&self, job: Arc<J>) -> Result<Report, AsyncError<RunError<J::Error>>>
    where
        J: SafeJob + Send + Sync + 'static,
    {
        let runner = self.runner.clone();
        blocking(move || runner.run(&*job)).await
    }

    /// [`Runner::recover_effects`] on the blocking pool: the deliberate re-run of a key's
    /// in-doubt effects. Read its warning first.
    pub async fn recover_effects<J>(
        &self,
        job: J,
    ) -> Result<Recovery, AsyncError<RunError<J::Error>>>
    where
        J: SafeJob + Send + 'static,
    {
        let runner = self.runner.clone();
        blocking(move || runner.recover_effects(&job)).await
    }

    /// [`Runner::confirm_effects`] on the blocking pool: records that an operator checked that a
    /// key's in-doubt effects did happen.
    pub async fn confirm_effects<J>(
        &self,
        job: J,
    ) -> Result<Recovery, AsyncError<RunError<J::Error>>>
    where
        J: SafeJob + Send + 'static,
    {
        let runner = self.runner.clone();
        blocking(move || runner.confirm_effects(&job)).await
    }
}
