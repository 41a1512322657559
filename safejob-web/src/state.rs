//! What the router serves from: the stores, the access rule, the CSRF token, the chart samples.

use std::sync::Arc;

use safejob_core::{
    action::ActionStore, history::HistoryStore, queue::QueueStore, schedule::ScheduleStore,
};

use crate::{access::Access, csrf::Csrf, error::ApiError, recorder::Recorder, samples::Samples};

/// The router's state: cheap to clone (a few `Arc`s).
///
/// ```
/// # use std::sync::Arc;
/// # use safejob_core::queue::MemoryQueue;
/// let queue = Arc::new(MemoryQueue::new());
/// // The queue, its schedules and its action log are one object here (as with DieselQueue).
/// let state = safejob_web::WebState::from_store(queue)?;
/// let app: axum::Router = safejob_web::router(state);
/// # Ok::<(), safejob_web::WebError>(())
/// ```
#[derive(Clone)]
pub struct WebState {
    queue: Arc<dyn QueueStore>,
    schedules: Option<Arc<dyn ScheduleStore>>,
    actions: Option<Arc<dyn ActionStore>>,
    history: Option<Arc<dyn HistoryStore>>,
    access: Access,
    csrf: Csrf,
    samples: Arc<Samples>,
    recorder: Option<Arc<Recorder>>,
}

impl std::fmt::Debug for WebState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebState")
            .field("schedules", &self.schedules.is_some())
            .field("actions", &self.actions.is_some())
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// The web state could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The operating system's random generator failed (the CSRF secret comes from it).
    #[error("no randomness for the CSRF secret: {0}")]
    Random(getrandom::Error),
    /// Binding or serving the listener failed.
    #[error("serving failed: {0}")]
    Io(#[from] std::io::Error),
}

impl WebState {
    /// State over a queue store alone: the schedule and action routes answer `not_configured`
    /// until [`with_schedules`](Self::with_schedules) / [`with_actions`](Self::with_actions).
    /// Access is [`Access::LoopbackOnly`].
    pub fn new(queue: Arc<dyn QueueStore>) -> Result<Self, WebError> {
        Ok(Self {
            queue,
            schedules: None,
            actions: None,
            history: None,
            access: Access::default(),
            csrf: Csrf::random().map_err(WebError::Random)?,
            samples: Arc::default(),
            recorder: None,
        })
    }

    /// State over one store that is the queue, its schedules, its action log and its audit
    /// ledger (`DieselQueue`, `MemoryQueue`).
    pub fn from_store<T>(store: Arc<T>) -> Result<Self, WebError>
    where
        T: QueueStore + ScheduleStore + ActionStore + HistoryStore + 'static,
    {
        Ok(Self::new(store.clone())?
            .with_schedules(store.clone())
            .with_actions(store.clone())
            .with_history(store))
    }

    /// Reads jobs' histories from `store`'s audit ledger (without it, or for a job the ledger
    /// has nothing on, a job's history is rebuilt from its row).
    pub fn with_history(mut self, store: Arc<dyn HistoryStore>) -> Self {
        self.history = Some(store);
        self
    }

    /// The audit ledger, if configured.
    pub(crate) fn ledger(&self) -> Option<&Arc<dyn HistoryStore>> {
        self.history.as_ref()
    }

    /// Serves the schedule routes from `store`.
    pub fn with_schedules(mut self, store: Arc<dyn ScheduleStore>) -> Self {
        self.schedules = Some(store);
        self
    }

    /// Serves the action-log routes from `store`.
    pub fn with_actions(mut self, store: Arc<dyn ActionStore>) -> Self {
        self.actions = Some(store);
        self
    }

    /// Adds `recorder`'s counters and histograms to `/metrics`.
    pub fn with_recorder(mut self, recorder: Arc<Recorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }

    pub(crate) fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    /// Who may use the router (default [`Access::LoopbackOnly`]).
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The queue store.
    pub fn queue(&self) -> &Arc<dyn QueueStore> {
        &self.queue
    }

    /// The schedule store, or `not_configured`.
    pub(crate) fn schedules(&self) -> Result<Arc<dyn ScheduleStore>, ApiError> {
        self.schedules
            .clone()
            .ok_or(ApiError::NotConfigured("schedules"))
    }

    /// The action store, or `not_configured`.
    pub(crate) fn actions(&self) -> Result<Arc<dyn ActionStore>, ApiError> {
        self.actions
            .clone()
            .ok_or(ApiError::NotConfigured("actions"))
    }

    /// The access rule.
    pub fn access(&self) -> &Access {
        &self.access
    }

    pub(crate) fn csrf(&self) -> &Csrf {
        &self.csrf
    }

    pub(crate) fn samples(&self) -> &Samples {
        &self.samples
    }

    /// Fills the overview's charts with the last hour, from the jobs that finished in it
    /// ([`samples::seed`](crate::samples::seed)); returns how many points were added.
    /// [`serve`](crate::serve) calls it before it answers; call it once (off the async
    /// runtime's threads: it reads the store) when you serve [`router`](crate::router)
    /// yourself. Without it the charts start when the process does.
    pub fn seed_charts(&self) -> Result<usize, safejob_core::StoreError> {
        crate::samples::seed(&self.samples, &*self.queue)
    }
}
