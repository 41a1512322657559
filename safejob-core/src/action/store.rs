//! The action log's storage port: [`ActionStore`], its requests and its answers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    KeyDigest,
    action::Rule,
    queue::{JobId, NewJob, RunAt},
    store::{FenceCheck, StoreError, UnknownValue},
};

/// An action's row identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActionId(pub i64);

impl std::fmt::Display for ActionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Waiting for its `eligible_at`, or to be claimed, or claimed by a dispatcher (a claim is a
    /// lease: its token and expiry are on the row).
    Pending,
    /// Turned into a job (or an outbox message): terminal.
    Processed,
    /// A rule did not hold at dispatch; the reason is in `last_error`: terminal.
    Skipped,
    /// Set aside after its last attempt failed (unknown type, processor error); an operator may
    /// retry it.
    Parked,
}

impl ActionState {
    /// Every state.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Processed, Self::Skipped, Self::Parked];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Skipped => "skipped",
            Self::Parked => "parked",
        }
    }
}

impl std::fmt::Display for ActionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ActionState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownValue {
                column: "state",
                found: s.chars().take(40).collect(),
            })
    }
}

/// An action to insert, validated by the [`Publisher`](crate::action::Publisher).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    /// The routing key processors are chosen by (`email.welcome`).
    pub action_type: String,
    /// Its payload.
    pub payload: Value,
    /// When it becomes due.
    pub eligible_at: RunAt,
    /// The digest of its idempotency key: publishing another action with it inserts nothing.
    pub idempotency: Option<KeyDigest>,
    /// Rules evaluated again at dispatch.
    pub rules: Vec<Rule>,
    /// Attempts at dispatch before it is parked.
    pub max_attempts: u32,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// A new action was inserted.
    Inserted(ActionId),
    /// An action with the same idempotency key exists: nothing was inserted.
    Existing(ActionId),
    /// A `when` / `skip_if` predicate said no at publish time: nothing was inserted.
    Skipped {
        /// Which predicate (`when` or `skip_if`).
        by: &'static str,
    },
}

impl Published {
    /// The inserted or existing action's id.
    pub fn id(&self) -> Option<ActionId> {
        match self {
            Self::Inserted(id) | Self::Existing(id) => Some(*id),
            Self::Skipped { .. } => None,
        }
    }
}

/// An action's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    /// Row identity.
    pub id: ActionId,
    /// Its routing key.
    pub action_type: String,
    /// Its payload.
    pub payload: Value,
    /// When it becomes (or became) due, by the store clock.
    pub eligible_at: DateTime<Utc>,
    /// Its idempotency key's digest.
    pub idempotency: Option<KeyDigest>,
    /// Its rules.
    pub rules: Vec<Rule>,
    /// Its state.
    pub state: ActionState,
    /// The current (or last) claim's token.
    pub claim_token: Option<String>,
    /// When that claim ends, by the store clock.
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// Claims so far.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Why the last attempt did not dispatch it (or why it was skipped).
    pub last_error: Option<String>,
    /// When it was processed or skipped.
    pub processed_at: Option<DateTime<Utc>>,
    /// The job it became.
    pub job: Option<JobId>,
    /// The outbox message it became (its stable id).
    pub message_id: Option<String>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
}

/// What a dispatcher asks a claim for.
#[derive(Debug, Clone)]
pub struct ActionClaim<'a> {
    /// A fresh token for this claim: every later write is fenced by it.
    pub token: &'a str,
    /// At most this many actions.
    pub limit: usize,
    /// Claim length; the store adds it to its own clock.
    pub ttl: Duration,
}

/// A claimed action's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionLease {
    /// The action.
    pub id: ActionId,
    /// The claim's token.
    pub token: String,
}

/// How a dispatcher ends its claim of an action.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome<'a> {
    /// Insert `job` into the queue and mark the action processed with its id, in one transaction.
    Enqueue(&'a NewJob),
    /// Write an outbox message (`topic`, `payload`) with a stable id derived from the action and
    /// mark the action processed with it, in one transaction (SQL stores only: the memory store
    /// answers an error).
    Publish {
        /// The outbox topic.
        topic: &'a str,
        /// The message.
        payload: &'a Value,
    },
    /// A rule did not hold: → `skipped`, `reason` recorded.
    Skip {
        /// Why.
        reason: &'a str,
    },
    /// The attempt failed: `error` recorded; due again after `retry_in`, or `parked` when `None`.
    Failed {
        /// Why.
        error: &'a str,
        /// When to try again; `None` parks it.
        retry_in: Option<Duration>,
    },
}

/// Which actions an operator lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionFilter {
    /// Only this state.
    pub state: Option<ActionState>,
    /// Only this type.
    pub action_type: Option<String>,
}

/// The action log's storage: a few primitives, each atomic.
///
/// * [`publish`](ActionStore::publish) inserts, unless an action with the same idempotency digest
///   exists (then it answers that one's id and inserts nothing);
/// * [`claim_actions`](ActionStore::claim_actions) takes due actions — `pending`,
///   `eligible_at` passed, no live claim — oldest first, writing the claim's token and expiry and
///   counting the attempt, so racing dispatchers never hold one action at once (`FOR UPDATE SKIP
///   LOCKED` / `BEGIN IMMEDIATE` on the SQL stores);
/// * [`finish_action`](ActionStore::finish_action) applies an [`ActionOutcome`] only where the
///   action is still `pending` under the claim's token, and for `Enqueue` / `Publish` inserts the
///   job or the outbox row in the same transaction as the mark, so an action becomes a job
///   exactly once: a dispatcher whose claim was taken over changes nothing (`Stale`).
pub trait ActionStore: Send + Sync {
    /// The store clock.
    fn action_now(&self) -> Result<DateTime<Utc>, StoreError>;
    /// Inserts `action` (see the trait docs).
    fn publish(&self, action: &NewAction) -> Result<Published, StoreError>;
    /// Claims due actions (see the trait docs).
    fn claim_actions(&self, claim: &ActionClaim<'_>) -> Result<Vec<ActionRecord>, StoreError>;
    /// Ends a claim (see the trait docs).
    fn finish_action(
        &self,
        lease: &ActionLease,
        outcome: &ActionOutcome<'_>,
    ) -> Result<FenceCheck, StoreError>;
    /// The action, if it exists.
    fn get_action(&self, id: ActionId) -> Result<Option<ActionRecord>, StoreError>;
    /// Actions matching `filter`, by id, at most `limit`.
    fn list_actions(
        &self,
        filter: &ActionFilter,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError>;
    /// An operator's retry: a `parked` action becomes `pending`, due now, with its attempts reset
    /// (its last error is kept).
    fn retry_action(&self, id: ActionId) -> Result<RetryAction, StoreError>;
}

/// What an operator's retry of an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// It is `pending` again, due now.
    Applied,
    /// No such action.
    NotFound,
    /// Only a parked action can be retried; it is in this state.
    WrongState(ActionState),
}

/// The digest an action's outbox message is named by (its stable id is `<digest>-0`): the
/// idempotency digest if it has one, else the digest of `safejob/action/<id>`.
pub fn message_digest(action: &ActionRecord) -> KeyDigest {
    action
        .idempotency
        .unwrap_or_else(|| KeyDigest::of(&format!("safejob/action/{}", action.id)))
}
