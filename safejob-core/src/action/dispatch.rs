//! Dispatching: claim due actions, check their rules, turn each into a job (or an outbox
//! message) through the processor registered for its type, and mark it, exactly once.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::Value;

use crate::{
    action::{ActionClaim, ActionLease, ActionOutcome, ActionRecord, ActionStore},
    periodic::Periodic,
    queue::{NewJob, RetryPolicy},
    store::{FenceCheck, StoreError},
};

/// What a processor turns an action into.
#[derive(Debug, Clone, PartialEq)]
pub enum Dispatch {
    /// A job in safejob's own queue, inserted in the same transaction as the action's mark:
    /// exactly once.
    Job(NewJob),
    /// A message through the transactional outbox (SQL stores), written in the same transaction
    /// as the mark and delivered by a relay at least once under a stable id
    /// (`<digest>-0`, see [`message_digest`](crate::action::message_digest)).
    Message {
        /// The outbox topic.
        topic: String,
        /// The message.
        payload: Value,
    },
}

/// Why a processor did not convert an action.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessorError {
    /// Try again later (with the dispatcher's backoff), parked after the last attempt.
    #[error("{0}")]
    Retryable(String),
    /// Never: parked at once.
    #[error("{0}")]
    Permanent(String),
}

/// Converts the actions of the types it supports into jobs or messages.
pub trait Processor: Send + Sync {
    /// Whether this processor handles `action_type`.
    fn supports(&self, action_type: &str) -> bool;
    /// The job (or message) for `action`.
    fn to_job(&self, action: &ActionRecord) -> Result<Dispatch, ProcessorError>;
}

/// What a dispatcher does with an action whose rules do not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleFailure {
    /// Mark it `skipped`, the failing rule recorded (the default: a rule states when the action
    /// is still wanted, as "the user is still active").
    #[default]
    Skip,
    /// Record the failing rule and try again after the backoff; park it after its last attempt
    /// (for rules waiting for a state that may still come).
    Retry,
}

/// What one [`Dispatcher::dispatch`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Actions claimed.
    pub claimed: usize,
    /// Turned into jobs.
    pub enqueued: usize,
    /// Turned into outbox messages.
    pub published: usize,
    /// Skipped by a rule.
    pub skipped: usize,
    /// Failed, due again later.
    pub retried: usize,
    /// Failed for good: parked.
    pub parked: usize,
    /// Whose claim was lost before the mark (another dispatcher took it over): nothing written.
    pub stale: usize,
}

/// Builds a [`Dispatcher`].
pub struct DispatcherBuilder {
    store: Arc<dyn ActionStore>,
    processors: Vec<Arc<dyn Processor>>,
    claim_ttl: Duration,
    retry: RetryPolicy,
    on_rule_failure: RuleFailure,
    id: String,
}

impl std::fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("processors", &self.processors.len())
            .field("claim_ttl", &self.claim_ttl)
            .finish_non_exhaustive()
    }
}

impl DispatcherBuilder {
    /// Registers `processor`; for each action the first registered one that supports its type
    /// converts it.
    pub fn processor(mut self, processor: impl Processor + 'static) -> Self {
        self.processors.push(Arc::new(processor));
        self
    }

    /// How long a claim lasts (default 30 s): a dispatcher that dies holding one delays its
    /// actions by at most this long.
    pub fn claim_ttl(mut self, ttl: Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    /// The backoff between failed attempts (default: the queue's exponential backoff).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// What a failing rule does (default [`RuleFailure::Skip`]).
    pub fn on_rule_failure(mut self, policy: RuleFailure) -> Self {
        self.on_rule_failure = policy;
        self
    }

    /// The dispatcher's name in its claim tokens (default `dispatcher-<pid>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The dispatcher.
    pub fn build(self) -> Dispatcher {
        Dispatcher {
            store: self.store,
            processors: self.processors,
            claim_ttl: self.claim_ttl,
            retry: self.retry,
            on_rule_failure: self.on_rule_failure,
            id: self.id,
            seq: AtomicU64::new(0),
        }
    }
}

/// Claims due actions and dispatches them: once with [`dispatch`](Dispatcher::dispatch)
/// (what a cron job calls every minute), or continuously with [`start`](Dispatcher::start).
///
/// For each claimed action, in order: its rules (all must hold, else [`RuleFailure`]); the first
/// processor that supports its type (none: recorded, retried, then parked — a processor may be
/// deployed later); the processor's [`Dispatch`]; the store's fenced mark, which inserts the job
/// or the outbox row in the same transaction. Any failure is recorded on the action (its
/// `last_error`) and retried after the backoff or, after its last attempt, parked: never lost.
pub struct Dispatcher {
    store: Arc<dyn ActionStore>,
    processors: Vec<Arc<dyn Processor>>,
    claim_ttl: Duration,
    retry: RetryPolicy,
    on_rule_failure: RuleFailure,
    id: String,
    seq: AtomicU64,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn ActionStore>) -> DispatcherBuilder {
        DispatcherBuilder {
            store,
            processors: Vec::new(),
            claim_ttl: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            on_rule_failure: RuleFailure::Skip,
            id: format!("dispatcher-{}", std::process::id()),
        }
    }

    fn token(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}:{nanos:x}:{seq}", self.id)
    }

    /// The failure outcome for an action's attempt: retried after the backoff, or parked after
    /// its last attempt (or at once when `permanent`).
    fn failed<'a>(
        &self,
        action: &ActionRecord,
        error: &'a str,
        permanent: bool,
    ) -> ActionOutcome<'a> {
        let retry_in = if permanent || action.attempts >= action.max_attempts {
            None
        } else {
            Some(
                self.retry
                    .delay(action.attempts, action.id.0.unsigned_abs())
                    .unwrap_or(Duration::ZERO),
            )
        };
        ActionOutcome::Failed { error, retry_in }
    }

    /// Claims up to `limit` due actions and dispatches each; returns what happened.
    pub fn dispatch(&self, limit: usize) -> Result<DispatchReport, StoreError> {
        let token = self.token();
        let claimed = self.store.claim_actions(&ActionClaim {
            token: &token,
            limit,
            ttl: self.claim_ttl,
        })?;
        let mut report = DispatchReport {
            claimed: claimed.len(),
            ..DispatchReport::default()
        };
        for action in &claimed {
            let lease = ActionLease {
                id: action.id,
                token: token.clone(),
            };
            let failing = action
                .rules
                .iter()
                .find(|r| !r.holds(&action.action_type, &action.payload));
            let processor = self
                .processors
                .iter()
                .find(|p| p.supports(&action.action_type));
            let message;
            let converted;
            let outcome = if let Some(rule) = failing {
                message = format!("rule `{rule}` does not hold");
                match self.on_rule_failure {
                    RuleFailure::Skip => ActionOutcome::Skip { reason: &message },
                    RuleFailure::Retry => self.failed(action, &message, false),
                }
            } else if let Some(processor) = processor {
                converted = processor.to_job(action);
                match &converted {
                    Ok(Dispatch::Job(job)) => ActionOutcome::Enqueue(job),
                    Ok(Dispatch::Message { topic, payload }) => {
                        ActionOutcome::Publish { topic, payload }
                    }
                    Err(e) => {
                        message = format!("processor: {e}");
                        self.failed(action, &message, matches!(e, ProcessorError::Permanent(_)))
                    }
                }
            } else {
                message = format!("no processor supports type {:?}", action.action_type);
                self.failed(action, &message, false)
            };
            match self.store.finish_action(&lease, &outcome)? {
                FenceCheck::Stale => report.stale += 1,
                FenceCheck::Applied => match outcome {
                    ActionOutcome::Enqueue(_) => report.enqueued += 1,
                    ActionOutcome::Publish { .. } => report.published += 1,
                    ActionOutcome::Skip { .. } => report.skipped += 1,
                    ActionOutcome::Failed {
                        retry_in: Some(_), ..
                    } => report.retried += 1,
                    ActionOutcome::Failed { retry_in: None, .. } => report.parked += 1,
                },
            }
        }
        Ok(report)
    }

    /// Runs [`dispatch`](Dispatcher::dispatch)`(limit)` every `every` on a thread of its own
    /// (again at once while a round fills `limit`), until the handle is stopped or dropped.
    pub fn start(self: Arc<Self>, every: Duration, limit: usize) -> Periodic {
        Periodic::start("action dispatch", every, move || {
            while self.dispatch(limit)?.claimed >= limit.max(1) {}
            Ok::<(), StoreError>(())
        })
    }
}
