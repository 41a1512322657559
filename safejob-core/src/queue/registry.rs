//! The kinds a worker may run, and how each kind's jobs are run.

use std::{
    collections::BTreeMap,
    fmt,
    marker::PhantomData,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use serde::de::DeserializeOwned;
use tracing::warn;

use crate::{
    Recovery, Runner,
    guard::pipeline::{chain, panic_message},
    queue::{
        AttemptError, CompleteAs, ErrorKind, GuardedJob, KindOptions, QueueJob, QueuedJob,
        WorkError,
        exec::{Exec, Ran},
        guarded::Guarded,
        recover::RecoverError,
    },
    store::StoreError,
};

/// Runs the jobs of one kind.
pub(crate) trait Handler: Send + Sync {
    fn options(&self) -> &KindOptions;
    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError>;
    /// Whether the kind runs through the guard (only those have effects to recover).
    fn guarded(&self) -> bool {
        false
    }
    /// Rebuilds `job` and recovers its in-doubt effects ([`Registry::recover_effects`]).
    fn recover(&self, job: &QueuedJob, _runner: &Runner) -> Result<Recovery, RecoverError> {
        Err(RecoverError::NoJob {
            digest: job.guard.map(|g| g.digest.short()).unwrap_or_default(),
        })
    }
}

/// The kinds a worker may run. A claimed job of a kind not registered here, or whose payload
/// does not decode into the kind's type, is dead at once with the reason recorded: it is never
/// run.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use safejob_core::queue::{QueueJob, Registry, WorkContext, WorkError};
///
/// #[derive(Serialize, Deserialize)]
/// struct Ping;
/// impl QueueJob for Ping {
///     const KIND: &'static str = "ping";
///     type Error = std::io::Error;
///     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
///         Ok(())
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register::<Ping>();
/// assert!(registry.contains("ping"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// No kinds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a [`QueueJob`] kind (registering a kind name again replaces it).
    pub fn register<J: QueueJob>(&mut self) -> &mut Self {
        self.insert(
            J::KIND,
            Arc::new(Plain::<J> {
                options: J::options(),
                _job: PhantomData,
            }),
        )
    }

    /// Registers a [`GuardedJob`] kind, run through the exactly-once guard.
    pub fn register_guarded<J: GuardedJob>(&mut self) -> &mut Self {
        self.insert(J::KIND, Arc::new(Guarded::<J>::new(J::options())))
    }

    fn insert(&mut self, kind: &str, handler: Arc<dyn Handler>) -> &mut Self {
        if self.kinds.insert(kind.to_owned(), handler).is_some() {
            warn!(kind, "kind registered twice; the last registration wins");
        }
        self
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The registered kind names.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// The distinct queues the registered kinds default to.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .kinds
            .values()
            .map(|h| h.options().queue.clone())
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }

    /// The guarded kinds, with their handlers.
    pub(crate) fn guarded_kinds(&self) -> impl Iterator<Item = (&str, &dyn Handler)> {
        self.kinds
            .iter()
            .filter(|(_, h)| h.guarded())
            .map(|(k, h)| (k.as_str(), &**h))
    }

    /// Runs one claimed job.
    pub(crate) fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        let job = &exec.claimed.job;
        match self.kinds.get(&job.kind) {
            Some(handler) => handler.run(exec),
            None => {
                warn!(job = %job.id, kind = %job.kind, "unknown kind: dead, not run");
                let error = AttemptError::new(
                    ErrorKind::UnknownKind,
                    format!(
                        "no handler is registered for kind {:?} in this worker",
                        job.kind
                    ),
                );
                let release = exec.guard_release("unknown kind");
                Ok(exec
                    .finish(CompleteAs::Dead { error }, None, release, None)?
                    .1)
            }
        }
    }
}

pub(crate) fn decode<J: DeserializeOwned>(exec: &Exec<'_>, kind: &str) -> Result<J, AttemptError> {
    J::deserialize(&exec.claimed.job.payload).map_err(|e| {
        AttemptError::new(
            ErrorKind::UndecodablePayload,
            format!("payload does not decode as kind {kind:?}: {e}"),
        )
    })
}

struct Plain<J> {
    options: KindOptions,
    _job: PhantomData<fn() -> J>,
}

impl<J: QueueJob> Handler for Plain<J> {
    fn options(&self) -> &KindOptions {
        &self.options
    }

    fn run(&self, exec: &Exec<'_>) -> Result<Ran, StoreError> {
        // A plain kind never uses a guard; a granted one (the kind was re-registered) goes back.
        let release = exec.guard_release("kind runs without a guard");
        let job: J = match decode(exec, J::KIND) {
            Ok(job) => job,
            Err(error) => {
                warn!(job = %exec.claimed.job.id, kind = J::KIND, "undecodable payload: dead, not run");
                return Ok(exec
                    .finish(CompleteAs::Dead { error }, None, release, None)?
                    .1);
            }
        };
        let mut ctx = exec.context(self.options.timeout);
        let worked = catch_unwind(AssertUnwindSafe(|| job.work(&mut ctx)));
        let progress = ctx.unwritten_progress();
        let stop = ctx.stop_reason();
        drop(ctx);
        let retry = &self.options.retry;
        let outcome = match worked {
            Ok(Ok(())) => CompleteAs::Succeeded,
            Ok(Err(WorkError::Fatal(e))) => CompleteAs::Dead {
                error: AttemptError::new(ErrorKind::Fatal, chain(&e)),
            },
            Ok(Err(WorkError::Cancelled { reason })) => CompleteAs::Cancelled { reason },
            Ok(Err(WorkError::Stopped)) => exec.failure(
                AttemptError::new(Exec::stopped_kind(stop), "the job stopped on request"),
                retry,
            ),
            Ok(Err(WorkError::Retryable(e))) => {
                let kind = match stop {
                    Some(crate::queue::StopReason::TimedOut) => ErrorKind::TimedOut,
                    _ => ErrorKind::Retryable,
                };
                exec.failure(AttemptError::new(kind, chain(&e)), retry)
            }
            Err(panic) => exec.failure(
                AttemptError::new(ErrorKind::Panicked, panic_message(&*panic)),
                retry,
            ),
        };
        Ok(exec.finish(outcome, progress, release, None)?.1)
    }
}
