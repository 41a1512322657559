//! Batches: the types a batch is built from, validated before anything is inserted.

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    queue::{
        EnqueueError, EnqueueOptions, GuardedJob, JobId, NewJob, QueueJob, QueueState, QueueStore,
    },
    store::{StoreError, UnknownValue},
};

/// A batch's row identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchId(pub i64);

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a member's failure does to the rest of its batch. A member *fails* when it ends `dead`:
/// its last attempt failed after its own retries, or it failed fatally. Whatever the policy, a
/// member whose dependency ended without success (dead or cancelled) is cancelled: it can never
/// run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BatchPolicy {
    /// Dependents of a failed member are cancelled; independent branches go on. The batch ends
    /// `failed` if any member failed.
    Continue,
    /// The first failure cancels every member not yet running (waiting, blocked or parked);
    /// running members finish. The batch ends `failed`.
    FailFast,
    /// Like [`Continue`](BatchPolicy::Continue) until `n` members have failed, then like
    /// [`FailFast`](BatchPolicy::FailFast). The batch ends `failed` if `n` or more members failed,
    /// else `succeeded` (fewer failures are tolerated). `n` is at least 1.
    Threshold(u32),
}

impl BatchPolicy {
    /// How many failed members fail the batch.
    pub fn failures_allowed(self) -> u32 {
        match self {
            Self::Continue | Self::FailFast => 0,
            Self::Threshold(n) => n.saturating_sub(1),
        }
    }

    /// Whether `failed` members trip the policy: from then on every member not yet running is
    /// cancelled ([`FailFast`](BatchPolicy::FailFast) and [`Threshold`](BatchPolicy::Threshold)).
    pub fn trips(self, failed: u32) -> bool {
        match self {
            Self::Continue => false,
            Self::FailFast | Self::Threshold(_) => failed > self.failures_allowed(),
        }
    }

    /// The stored text: `continue`, `fail_fast` or `threshold:<n>`.
    pub fn as_text(self) -> String {
        match self {
            Self::Continue => "continue".into(),
            Self::FailFast => "fail_fast".into(),
            Self::Threshold(n) => format!("threshold:{n}"),
        }
    }
}

impl FromStr for BatchPolicy {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownValue {
            column: "policy",
            found: s.chars().take(40).collect(),
        };
        match s {
            "continue" => Ok(Self::Continue),
            "fail_fast" => Ok(Self::FailFast),
            _ => match s.strip_prefix("threshold:").map(str::parse::<u32>) {
                Some(Ok(n)) if n >= 1 => Ok(Self::Threshold(n)),
                _ => Err(unknown()),
            },
        }
    }
}

/// A batch's state. `running` until every member has ended (succeeded, dead or cancelled); then
/// exactly once `succeeded`, `failed` or `cancelled`, in the transaction that ends its last
/// member (see `docs/workflows.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Some member has not ended.
    Running,
    /// Every member ended and the failures stayed within the policy.
    Succeeded,
    /// The policy's failure limit was reached.
    Failed,
    /// An operator cancelled it.
    Cancelled,
}

impl BatchState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BatchState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            _ => Err(UnknownValue {
                column: "state",
                found: s.chars().take(40).collect(),
            }),
        }
    }
}

/// A batch that could not be built. Nothing was inserted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// A batch needs at least one member.
    #[error("batch {batch:?} has no members")]
    EmptyBatch {
        /// The batch's name.
        batch: String,
    },
    /// Batch names and member ids are 1 to 255 bytes without control characters.
    #[error("invalid {what} {value:?}: 1 to 255 bytes, no control characters")]
    InvalidName {
        /// `batch name` or `member id`.
        what: &'static str,
        /// The text given.
        value: String,
    },
    /// Two members share an id.
    #[error("member id {member:?} is used twice")]
    DuplicateMember {
        /// The id.
        member: String,
    },
    /// A member depends on an id no member has.
    #[error("member {member:?} depends on {dependency:?}, which is not a member of the batch")]
    UnknownDependency {
        /// The dependent member.
        member: String,
        /// The missing id.
        dependency: String,
    },
    /// The dependencies form a cycle (a member depending on itself included).
    #[error("the dependencies form a cycle through {members:?}")]
    Cycle {
        /// The members on the cycle, in order.
        members: Vec<String>,
    },
    /// `threshold(0)`: the threshold is at least 1.
    #[error("a threshold policy needs at least 1 failure to trip")]
    ZeroThreshold,
    /// A member's job could not be turned into a row (its key, fingerprint or payload).
    #[error("member {member:?}: {source}")]
    Member {
        /// The member.
        member: String,
        /// Why.
        #[source]
        source: EnqueueError,
    },
    /// The callback job could not be turned into a row.
    #[error("the batch callback: {0}")]
    Callback(#[source] EnqueueError),
    /// [`BatchBuilder::dispatch`] on a builder made with [`BatchBuilder::new`]: it has no store
    /// (use [`Queue::batch`](crate::queue::Queue::batch), or `build` and insert the batch).
    #[error("this batch builder has no store to dispatch into: make it with Queue::batch")]
    NoStore,
    /// The store failed; the batch's transaction was rolled back.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One validated member of a [`NewBatch`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewMember {
    /// The member's id, unique in the batch.
    pub name: String,
    /// Its job. Inserted `blocked` when it has dependencies; its unique key is not used (a
    /// guarded member's guard still makes its work happen once per key).
    pub job: NewJob,
    /// Indexes of its dependencies in [`NewBatch::members`], all smaller than its own.
    pub depends_on: Vec<usize>,
}

/// A batch validated by [`BatchBuilder::build`]: members in dependency order (each after its
/// dependencies), no cycle, no unknown or duplicate id. Stores insert it in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBatch {
    name: String,
    policy: BatchPolicy,
    members: Vec<NewMember>,
    callback: Option<NewJob>,
}

impl NewBatch {
    /// The batch's name (for operators; not unique).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its failure policy.
    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    /// Its members, each after its dependencies.
    pub fn members(&self) -> &[NewMember] {
        &self.members
    }

    /// The job enqueued once when the batch ends: inserted `blocked` with the batch, made
    /// `pending` by the transaction that ends the batch, with the outcome in its metadata.
    pub fn callback(&self) -> Option<&NewJob> {
        self.callback.as_ref()
    }

    /// The state a member is inserted in: `blocked` with dependencies, else as its `run_at` says.
    pub fn initial_state(member: &NewMember, due_now: bool) -> QueueState {
        if !member.depends_on.is_empty() {
            QueueState::Blocked
        } else if due_now {
            QueueState::Pending
        } else {
            QueueState::Scheduled
        }
    }
}

fn valid_name(what: &'static str, value: &str) -> Result<(), WorkflowError> {
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err(WorkflowError::InvalidName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

struct Pending {
    name: String,
    job: Result<NewJob, EnqueueError>,
    depends_on: Vec<String>,
}

/// Builds a batch: `add` members with their dependencies, then [`dispatch`](BatchBuilder::dispatch)
/// (through [`Queue::batch`](crate::queue::Queue::batch)) or [`build`](BatchBuilder::build).
/// Errors (a job that cannot be serialized, an unknown dependency, a cycle...) are collected and
/// reported by `build` / `dispatch`, before anything is inserted.
///
/// ```
/// use safejob_core::workflow::{BatchBuilder, BatchPolicy, WorkflowError};
/// # use serde::{Deserialize, Serialize};
/// # use safejob_core::queue::{QueueJob, WorkContext, WorkError};
/// # #[derive(Serialize, Deserialize)] struct Step(u32);
/// # impl QueueJob for Step {
/// #     const KIND: &'static str = "step";
/// #     type Error = std::io::Error;
/// #     fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<std::io::Error>> { Ok(()) }
/// # }
/// let batch = BatchBuilder::new("etl", BatchPolicy::Continue)
///     .add("extract", &Step(1), &[])
///     .add("transform", &Step(2), &["extract"])
///     .add("load", &Step(3), &["transform", "extract"])
///     .build()?;
/// assert_eq!(batch.members()[2].depends_on, vec![1, 0]);
///
/// let cycle = BatchBuilder::new("bad", BatchPolicy::Continue)
///     .add("a", &Step(1), &["b"])
///     .add("b", &Step(2), &["a"])
///     .build();
/// assert!(matches!(cycle, Err(WorkflowError::Cycle { .. })));
/// # Ok::<(), WorkflowError>(())
/// ```
pub struct BatchBuilder {
    name: String,
    policy: BatchPolicy,
    members: Vec<Pending>,
    callback: Option<Result<NewJob, EnqueueError>>,
    store: Option<Arc<dyn QueueStore>>,
}

impl fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

impl BatchBuilder {
    /// An empty batch named `name` (for operators; not unique).
    pub fn new(name: impl Into<String>, policy: BatchPolicy) -> Self {
        Self {
            name: name.into(),
            policy,
            members: Vec::new(),
            callback: None,
            store: None,
        }
    }

    /// A builder that [`dispatch`](BatchBuilder::dispatch)es into `store`.
    pub(crate) fn on(mut self, store: Arc<dyn QueueStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Adds a [`QueueJob`] member `id`, runnable once every member in `depends_on` succeeded.
    pub fn add<J: QueueJob>(self, id: impl Into<String>, job: &J, depends_on: &[&str]) -> Self {
        let row = NewJob::of(job, &EnqueueOptions::new());
        self.add_job(id, row, depends_on)
    }

    /// Adds a [`QueueJob`] member with enqueue options (queue, priority, attempts, metadata; a
    /// delay applies to a member without dependencies).
    pub fn add_with<J: QueueJob>(
        self,
        id: impl Into<String>,
        job: &J,
        options: &EnqueueOptions,
        depends_on: &[&str],
    ) -> Self {
        let row = NewJob::of(job, options);
        self.add_job(id, row, depends_on)
    }

    /// Adds a [`GuardedJob`] member: it runs through the guard, once per idempotency key.
    pub fn add_guarded<J: GuardedJob>(
        self,
        id: impl Into<String>,
        job: &J,
        depends_on: &[&str],
    ) -> Self {
        let row = NewJob::guarded(job, &EnqueueOptions::new());
        self.add_job(id, row, depends_on)
    }

    /// Adds a member from a row built elsewhere (or an error to report at `build`).
    pub fn add_job(
        mut self,
        id: impl Into<String>,
        job: Result<NewJob, EnqueueError>,
        depends_on: &[&str],
    ) -> Self {
        self.members.push(Pending {
            name: id.into(),
            job,
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        });
        self
    }

    /// The job enqueued once when the batch ends, told the outcome: its metadata carries
    /// `{"safejob_batch": BatchOutcome}` (read it with
    /// [`WorkContext::batch_outcome`](crate::queue::WorkContext::batch_outcome)).
    pub fn on_finish<J: QueueJob>(mut self, job: &J) -> Self {
        self.callback = Some(NewJob::of(job, &EnqueueOptions::new()));
        self
    }

    /// [`on_finish`](BatchBuilder::on_finish) with a row built elsewhere (or an error to report
    /// at `build`).
    pub fn on_finish_job(mut self, job: Result<NewJob, EnqueueError>) -> Self {
        self.callback = Some(job);
        self
    }

    /// Validates the batch: its names, that it has members, that every dependency is a member,
    /// no member id is used twice, and the dependencies form no cycle.
    pub fn build(self) -> Result<NewBatch, WorkflowError> {
        valid_name("batch name", &self.name)?;
        if self.policy == BatchPolicy::Threshold(0) {
            return Err(WorkflowError::ZeroThreshold);
        }
        if self.members.is_empty() {
            return Err(WorkflowError::EmptyBatch { batch: self.name });
        }
        let mut index = BTreeMap::new();
        for (i, m) in self.members.iter().enumerate() {
            valid_name("member id", &m.name)?;
            if index.insert(m.name.clone(), i).is_some() {
                return Err(WorkflowError::DuplicateMember {
                    member: m.name.clone(),
                });
            }
        }
        let mut deps = Vec::with_capacity(self.members.len());
        for m in &self.members {
            let mut mine = Vec::with_capacity(m.depends_on.len());
            for d in &m.depends_on {
                let Some(&j) = index.get(d) else {
                    return Err(WorkflowError::UnknownDependency {
                        member: m.name.clone(),
                        dependency: d.clone(),
                    });
                };
                if !mine.contains(&j) {
                    mine.push(j);
                }
            }
            deps.push(mine);
        }
        let order = topological(&deps).map_err(|cycle| WorkflowError::Cycle {
            members: cycle
                .into_iter()
                .map(|i| self.members[i].name.clone())
                .collect(),
        })?;
        let callback = self.callback.transpose().map_err(WorkflowError::Callback)?;
        // Renumber: position in `order` is the new index.
        let mut new_index = vec![0; order.len()];
        for (pos, &old) in order.iter().enumerate() {
            new_index[old] = pos;
        }
        let mut slots: Vec<Option<Pending>> = self.members.into_iter().map(Some).collect();
        let mut members = Vec::with_capacity(order.len());
        for &old in &order {
            let Some(p) = slots[old].take() else {
                continue;
            };
            let job = p.job.map_err(|source| WorkflowError::Member {
                member: p.name.clone(),
                source,
            })?;
            members.push(NewMember {
                name: p.name,
                job,
                depends_on: deps[old].iter().map(|&d| new_index[d]).collect(),
            });
        }
        Ok(NewBatch {
            name: self.name,
            policy: self.policy,
            members,
            callback,
        })
    }

    /// Validates the batch and inserts it, every member and the callback, in one transaction of
    /// the queue's store. Only for a builder from [`Queue::batch`](crate::queue::Queue::batch).
    pub fn dispatch(self) -> Result<BatchId, WorkflowError> {
        let store = self.store.clone().ok_or(WorkflowError::NoStore)?;
        let batch = self.build()?;
        Ok(store.insert_batch(&batch)?)
    }
}

/// A topological order of `deps` (each node after its dependencies, otherwise in the given
/// order), or the nodes of one cycle.
fn topological(deps: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    let mut order = Vec::with_capacity(deps.len());
    for root in 0..deps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (node, next dependency to visit).
        let mut stack = vec![(root, 0usize)];
        mark[root] = Mark::Open;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::Done => {}
                    Mark::New => {
                        mark[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        return Err(stack[from..].iter().map(|&(n, _)| n).collect());
                    }
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// A batch's row with its member counts by state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInfo {
    /// Row identity.
    pub id: BatchId,
    /// Its name.
    pub name: String,
    /// Its failure policy.
    pub policy: BatchPolicy,
    /// Its state.
    pub state: BatchState,
    /// Whether an operator asked to cancel it (it ends `cancelled` once its running members end).
    pub cancel_requested: bool,
    /// Members by state.
    pub counts: MemberCounts,
    /// The callback job, if the batch has one.
    pub callback: Option<JobId>,
    /// When it was dispatched, by the store clock.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A batch's members counted by how far they got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Members in all.
    pub total: u32,
    /// Waiting for dependencies (`blocked`).
    pub blocked: u32,
    /// Waiting to run or running (pending, scheduled, retrying, running, parked).
    pub active: u32,
    /// Succeeded.
    pub succeeded: u32,
    /// Failed (`dead`).
    pub failed: u32,
    /// Cancelled.
    pub cancelled: u32,
}

impl MemberCounts {
    /// Counts `states`.
    pub fn of(states: impl IntoIterator<Item = QueueState>) -> Self {
        let mut c = Self::default();
        for s in states {
            c.total += 1;
            match s {
                QueueState::Blocked => c.blocked += 1,
                QueueState::Succeeded => c.succeeded += 1,
                QueueState::Dead => c.failed += 1,
                QueueState::Cancelled => c.cancelled += 1,
                _ => c.active += 1,
            }
        }
        c
    }
}

/// What the callback job is told: `{"safejob_batch": …}` in its metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// The batch.
    pub batch: BatchId,
    /// Its name.
    pub name: String,
    /// How it ended.
    pub state: BatchState,
    /// Its members by state when it ended.
    pub counts: MemberCounts,
}

/// The metadata key under which the callback job finds its [`BatchOutcome`].
pub const OUTCOME_KEY: &str = "safejob_batch";

impl BatchOutcome {
    /// `metadata` with the outcome added under [`OUTCOME_KEY`] (an object; any other metadata
    /// value is kept under `"metadata"`).
    pub fn into_metadata(&self, metadata: &Value) -> Value {
        let mut map = match metadata {
            Value::Object(map) => map.clone(),
            Value::Null => serde_json::Map::new(),
            other => {
                let mut m = serde_json::Map::new();
                m.insert("metadata".into(), other.clone());
                m
            }
        };
        map.insert(
            OUTCOME_KEY.into(),
            serde_json::to_value(self).unwrap_or(Value::Null),
        );
        Value::Object(map)
    }

    /// The outcome in a callback job's metadata.
    pub fn from_metadata(metadata: &Value) -> Option<Self> {
        serde_json::from_value(metadata.get(OUTCOME_KEY)?.clone()).ok()
    }
}

/// One member as stores report it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMember {
    /// The member's id in its batch.
    pub name: String,
    /// Its job.
    pub job: JobId,
    /// The job's state.
    pub state: QueueState,
    /// The jobs it depends on.
    pub depends_on: Vec<JobId>,
    /// The result its job stored with
    /// [`WorkContext::set_result`](crate::queue::WorkContext::set_result), if any.
    pub result: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_text_round_trips_and_rejects_garbage() {
        for p in [
            BatchPolicy::Continue,
            BatchPolicy::FailFast,
            BatchPolicy::Threshold(3),
        ] {
            assert_eq!(p.as_text().parse::<BatchPolicy>().ok(), Some(p));
        }
        for bad in ["threshold:0", "threshold:", "threshold:x", "Continue", ""] {
            assert!(bad.parse::<BatchPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn trips_counts_failures_against_the_policy() {
        assert!(!BatchPolicy::Continue.trips(5));
        assert!(!BatchPolicy::FailFast.trips(0));
        assert!(BatchPolicy::FailFast.trips(1));
        assert!(!BatchPolicy::Threshold(2).trips(1));
        assert!(BatchPolicy::Threshold(2).trips(2));
    }

    #[test]
    fn topological_orders_dependencies_first_and_finds_cycles() {
        // 0 <- 1 <- 2, 3 independent, given out of order.
        let deps = vec![vec![1], vec![2], vec![], vec![]];
        let order = topological(&deps).expect("acyclic");
        let pos = |n| order.iter().position(|&x| x == n).unwrap();
        assert!(pos(2) < pos(1) && pos(1) < pos(0));
        assert_eq!(order.len(), 4);
        let cycle = topological(&[vec![1], vec![2], vec![0]]).unwrap_err();
        assert_eq!(cycle.len(), 3);
        assert_eq!(topological(&[vec![0]]).unwrap_err(), vec![0]);
    }
}
