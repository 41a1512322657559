//! Publishing actions: a one-liner and a builder, validated before anything is written.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::{
    IdempotencyKey, KeyError,
    action::{ActionStore, NewAction, Published, Rule, RuleError},
    queue::RunAt,
    store::StoreError,
};

/// Attempts at dispatch an action gets unless its publisher says otherwise.
pub const DEFAULT_ACTION_ATTEMPTS: u32 = 10;

/// An action that could not be published. Nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The type is empty, longer than 255 bytes, or has control characters.
    #[error("invalid action type {0:?}: 1 to 255 bytes, no control characters")]
    InvalidType(String),
    /// The idempotency key is not a valid key.
    #[error("invalid idempotency key: {0}")]
    InvalidKey(#[from] KeyError),
    /// A rule does not parse.
    #[error(transparent)]
    InvalidRule(#[from] RuleError),
    /// The payload does not serialize to JSON.
    #[error("the payload is not serializable: {0}")]
    Payload(#[source] serde_json::Error),
    /// `max_attempts(0)`: at least one attempt.
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
    /// `publish` on a builder from [`ActionBuilder::detached`]: it has no store (`build` it
    /// and insert the action inside your own transaction).
    #[error("a detached ActionBuilder has no store: build() it and publish_in your transaction")]
    Detached,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Publishes actions into an [`ActionStore`] (a `MemoryQueue` or a `DieselQueue`).
///
/// ```
/// use std::{sync::Arc, time::Duration};
/// use safejob_core::{action::{Publisher, Published}, queue::{MemoryQueue, RunAt}};
/// use serde_json::json;
///
/// let publisher = Publisher::new(Arc::new(MemoryQueue::new()));
/// let first = publisher.quick("email.welcome", RunAt::After(Duration::from_secs(300)),
///     json!({"user": 42}), Some("welcome/42"))?;
/// let again = publisher.quick("email.welcome", RunAt::Now, json!({"user": 42}), Some("welcome/42"))?;
/// assert_eq!(again, Published::Existing(first.id().unwrap()));
///
/// let skipped = publisher
///     .action("email.promo")
///     .payload(&json!({"user": {"opted_out": true}}))?
///     .skip_if(|p| p["user"]["opted_out"] == true)
///     .publish()?;
/// assert_eq!(skipped, Published::Skipped { by: "skip_if" });
/// # Ok::<(), safejob_core::action::ActionError>(())
/// ```
#[derive(Clone)]
pub struct Publisher {
    store: Arc<dyn ActionStore>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher over `store`.
    pub fn new(store: Arc<dyn ActionStore>) -> Self {
        Self { store }
    }

    /// Publishes an action of `action_type` with `payload`, due at `eligible_at`, deduplicated
    /// by `idempotency` when given.
    pub fn quick(
        &self,
        action_type: &str,
        eligible_at: RunAt,
        payload: Value,
        idempotency: Option<&str>,
    ) -> Result<Published, ActionError> {
        let mut builder = self.action(action_type).payload_value(payload);
        builder.eligible_at = eligible_at;
        if let Some(key) = idempotency {
            builder = builder.idempotency(key);
        }
        builder.publish()
    }

    /// A builder for one action of `action_type`.
    pub fn action(&self, action_type: &str) -> ActionBuilder<'_> {
        ActionBuilder::new(Some(&*self.store), action_type)
    }
}

type Predicate = Box<dyn Fn(&Value) -> bool + Send + Sync>;

/// One action being built: see [`Publisher::action`] (or [`ActionBuilder::detached`] to publish
/// inside a transaction of your own, with a SQL store's `publish_in`).
pub struct ActionBuilder<'s> {
    store: Option<&'s dyn ActionStore>,
    action_type: String,
    payload: Value,
    eligible_at: RunAt,
    idempotency: Option<String>,
    rules: Vec<String>,
    when: Vec<Predicate>,
    skip_if: Vec<Predicate>,
    max_attempts: u32,
}

impl std::fmt::Debug for ActionBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionBuilder")
            .field("action_type", &self.action_type)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// What [`ActionBuilder::build`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Built {
    /// Insert this.
    Action(NewAction),
    /// A publish-time predicate said no.
    Skipped {
        /// `when` or `skip_if`.
        by: &'static str,
    },
}

impl<'s> ActionBuilder<'s> {
    fn new(store: Option<&'s dyn ActionStore>, action_type: &str) -> Self {
        Self {
            store,
            action_type: action_type.to_owned(),
            payload: Value::Null,
            eligible_at: RunAt::Now,
            idempotency: None,
            rules: Vec::new(),
            when: Vec::new(),
            skip_if: Vec::new(),
            max_attempts: DEFAULT_ACTION_ATTEMPTS,
        }
    }

    /// A builder bound to no store: [`build`](ActionBuilder::build) it and insert the action
    /// yourself (`DieselQueue::publish_in` inside your own transaction).
    pub fn detached(action_type: &str) -> ActionBuilder<'static> {
        ActionBuilder::new(None, action_type)
    }

    /// Due at `at` (by the store clock: earlier than its now means due at once).
    pub fn eligible_at(mut self, at: DateTime<Utc>) -> Self {
        self.eligible_at = RunAt::At(at);
        self
    }

    /// Due after `delay` from the store's now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.eligible_at = RunAt::After(delay);
        self
    }

    /// The payload, serialized to JSON.
    pub fn payload<T: Serialize>(mut self, payload: &T) -> Result<Self, ActionError> {
        self.payload = serde_json::to_value(payload).map_err(ActionError::Payload)?;
        Ok(self)
    }

    /// The payload as JSON already.
    pub fn payload_value(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// An idempotency key: publishing another action with the same key inserts nothing and
    /// answers the existing action (its digest is stored, never the key).
    pub fn idempotency(mut self, key: &str) -> Self {
        self.idempotency = Some(key.to_owned());
        self
    }

    /// A rule stored with the action and evaluated when it is dispatched (see
    /// [`Rule`](crate::action::Rule)); checked now, a malformed rule is an error.
    pub fn rule(mut self, rule: &str) -> Self {
        self.rules.push(rule.to_owned());
        self
    }

    /// Publish only if `predicate` holds for the payload (evaluated now, not stored).
    pub fn when(mut self, predicate: impl Fn(&Value) -> bool + Send + Sync + 'static) -> Self {
        self.when.push(Box::new(predicate));
        self
    }

    /// Do not publish if `predicate` holds for the payload (evaluated now, not stored).
    pub fn skip_if(mut self, predicate: impl Fn(&Value) -> bool + Send + Sync + 'static) -> Self {
        self.skip_if.push(Box::new(predicate));
        self
    }

    /// Attempts at dispatch before the action is parked. Defaults to
    /// [`DEFAULT_ACTION_ATTEMPTS`].
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Validates everything, then evaluates `when` and `skip_if` (in that order).
    pub fn build(&self) -> Result<Built, ActionError> {
        let t = &self.action_type;
        if t.is_empty() || t.len() > 255 || t.chars().any(char::is_control) {
            return Err(ActionError::InvalidType(t.clone()));
        }
        if self.max_attempts == 0 {
            return Err(ActionError::ZeroAttempts);
        }
        let rules = self
            .rules
            .iter()
            .map(|r| r.parse::<Rule>())
            .collect::<Result<Vec<_>, _>>()?;
        let idempotency = self
            .idempotency
            .as_deref()
            .map(IdempotencyKey::new)
            .transpose()?
            .map(|k| *k.digest());
        if !self.when.iter().all(|p| p(&self.payload)) {
            return Ok(Built::Skipped { by: "when" });
        }
        if self.skip_if.iter().any(|p| p(&self.payload)) {
            return Ok(Built::Skipped { by: "skip_if" });
        }
        Ok(Built::Action(NewAction {
            action_type: t.clone(),
            payload: self.payload.clone(),
            eligible_at: self.eligible_at,
            idempotency,
            rules,
            max_attempts: self.max_attempts,
        }))
    }

    /// [`build`](ActionBuilder::build)s and publishes into the publisher's store.
    pub fn publish(self) -> Result<Published, ActionError> {
        match self.build()? {
            Built::Skipped { by } => Ok(Published::Skipped { by }),
            Built::Action(action) => match self.store {
                Some(store) => Ok(store.publish(&action)?),
                None => Err(ActionError::Detached),
            },
        }
    }
}
