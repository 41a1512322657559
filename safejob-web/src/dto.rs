//! The JSON the API answers: plain serializable views of the core's types, described in the
//! OpenAPI document. Raw idempotency keys never appear (the stores keep only digests).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use safejob_core::{
    action::ActionRecord,
    queue::{KindStats, QueuedJob, RecordedError, Snapshot, WorkerInfo},
    schedule::ScheduleInfo,
    store::JobRecord,
    workflow::{BatchInfo, BatchMember},
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A job as listings show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobSummary {
    /// Row identity.
    pub id: i64,
    /// Registered kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// State (`pending`, `scheduled`, `blocked`, `running`, `retrying`, `succeeded`, `dead`,
    /// `cancelled`, `parked`).
    pub state: String,
    /// Lower runs first.
    pub priority: i16,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it is (or was) due.
    pub run_at: DateTime<Utc>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Worker of the last claim.
    pub owner: Option<String>,
    /// Its batch.
    pub batch: Option<i64>,
    /// The last error's message.
    pub last_error: Option<String>,
}

impl From<&QueuedJob> for JobSummary {
    fn from(j: &QueuedJob) -> Self {
        Self {
            id: j.id.0,
            kind: j.kind.clone(),
            queue: j.queue.clone(),
            state: j.state.as_str().to_owned(),
            priority: j.priority,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            created_at: j.created_at,
            finished_at: j.finished_at,
            owner: j.owner.clone(),
            batch: j.batch.map(|b| b.0),
            last_error: j.errors.last().map(|e| e.message.clone()),
        }
    }
}

/// One page of jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPage {
    /// The jobs, by id.
    pub jobs: Vec<JobSummary>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

/// One entry of a job's history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// What: from the audit ledger, `<from>→<to>` (`enqueued→pending` for the insert); rebuilt
    /// from the row without one, `enqueued`, `error:<kind>`, `claimed`, `finished:<state>`.
    pub event: String,
    /// The attempt it belongs to, when known.
    pub attempt: Option<u32>,
    /// Details: the error or reason the transition recorded, else the worker (ledger); an
    /// error's message (rebuilt).
    pub message: Option<String>,
}

/// A recorded error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorEntry {
    /// The attempt that failed.
    pub attempt: u32,
    /// When.
    pub at: DateTime<Utc>,
    /// Kind (`retryable`, `fatal`, `panicked`, `timed_out`, `lease_expired`, ...).
    pub kind: String,
    /// Message.
    pub message: String,
}

impl From<&RecordedError> for ErrorEntry {
    fn from(e: &RecordedError) -> Self {
        Self {
            attempt: e.attempt,
            at: e.at,
            kind: e.kind.as_str().to_owned(),
            message: e.message.clone(),
        }
    }
}

/// A job with everything the store knows of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobDetail {
    /// The summary.
    #[serde(flatten)]
    pub summary: JobSummary,
    /// The serialized job.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Operator metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Fence token.
    pub fence: u64,
    /// Whether the reaper may requeue it.
    pub idempotent: bool,
    /// When the current lease ends.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the current or last attempt was claimed.
    pub attempted_at: Option<DateTime<Utc>>,
    /// Digest of its guard's key (hex), for a guarded job.
    pub guard_digest: Option<String>,
    /// Last persisted progress: current, total, message.
    #[schema(value_type = Object)]
    pub progress: Option<Value>,
    /// The last errors, oldest first.
    pub errors: Vec<ErrorEntry>,
    /// Its history, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// Figures of one kind.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KindView {
    /// The kind.
    pub kind: String,
    /// Jobs of this kind in the store, any state.
    pub jobs: u64,
    /// Finished succeeded or dead.
    pub executions: u64,
    /// Succeeded ÷ executions.
    pub success_rate: f64,
    /// Mean duration of succeeded jobs (seconds).
    pub mean_seconds: f64,
    /// 95th percentile (seconds).
    pub p95_seconds: f64,
    /// 99th percentile (seconds).
    pub p99_seconds: f64,
}

impl KindView {
    pub(crate) fn of(k: &KindStats, jobs: u64) -> Self {
        Self {
            kind: k.kind.clone(),
            jobs,
            executions: k.executions,
            success_rate: k.success_rate,
            mean_seconds: k.mean.as_secs_f64(),
            p95_seconds: k.p95.as_secs_f64(),
            p99_seconds: k.p99.as_secs_f64(),
        }
    }
}

/// Job counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    /// Jobs per state.
    pub by_state: BTreeMap<String, u64>,
    /// Jobs per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Jobs per queue.
    pub by_queue: BTreeMap<String, u64>,
    /// Waiting jobs (pending, scheduled, retrying) per queue.
    pub depth_by_queue: BTreeMap<String, u64>,
    /// How long the oldest due waiting job of each queue has waited (seconds); queues with
    /// nothing due are absent.
    pub oldest_due_age_seconds_by_queue: BTreeMap<String, f64>,
}

impl Stats {
    pub(crate) fn of(s: &Snapshot) -> Self {
        let mut depth_by_queue = BTreeMap::new();
        for c in &s.counts {
            if c.state.is_waiting() {
                *depth_by_queue.entry(c.queue.clone()).or_insert(0) += c.count;
            }
        }
        Self {
            by_state: s
                .by_state()
                .into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect(),
            by_kind: s.by_kind(),
            by_queue: s.by_queue(),
            depth_by_queue,
            oldest_due_age_seconds_by_queue: s
                .oldest_due_by_queue
                .iter()
                .map(|(q, d)| (q.clone(), d.as_secs_f64()))
                .collect(),
        }
    }
}

/// A worker as the store last heard from it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerView {
    /// Worker id.
    pub id: String,
    /// Queues it serves.
    pub queues: Vec<String>,
    /// Concurrency.
    pub concurrency: u32,
    /// Last heartbeat (store clock).
    pub last_heartbeat: DateTime<Utc>,
    /// Seconds since the last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// Whether it sent a heartbeat in the last [`HEALTHY_WITHIN`](crate::api::HEALTHY_WITHIN_SECS)
    /// seconds.
    pub healthy: bool,
    /// Jobs running under it.
    pub in_flight: Vec<i64>,
}

impl WorkerView {
    pub(crate) fn of(w: &WorkerInfo, now: DateTime<Utc>) -> Self {
        let age = (now - w.last_heartbeat).num_milliseconds().max(0) as f64 / 1000.0;
        Self {
            id: w.id.clone(),
            queues: w.queues.clone(),
            concurrency: w.concurrency,
            last_heartbeat: w.last_heartbeat,
            heartbeat_age_seconds: age,
            healthy: age <= crate::api::HEALTHY_WITHIN_SECS,
            in_flight: w.in_flight.iter().map(|j| j.0).collect(),
        }
    }
}

/// `GET /jobs`: the queue at a glance.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    /// The store clock.
    pub taken_at: DateTime<Utc>,
    /// Running jobs (at most a page).
    pub running: Vec<JobSummary>,
    /// The kinds seen in the store, with their figures.
    pub definitions: Vec<KindView>,
    /// Counts by state, kind and queue.
    pub stats: Stats,
    /// The most recently enqueued jobs, newest first.
    pub recent: Vec<JobSummary>,
    /// Workers.
    pub workers: Vec<WorkerView>,
    /// How long the oldest due waiting job has waited (seconds), all queues; per queue in
    /// `stats.oldest_due_age_seconds_by_queue`.
    pub oldest_due_age_seconds: Option<f64>,
}

/// A guard key's row (by digest: raw keys are never stored).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    /// SHA-256 of the key, hex.
    pub digest: String,
    /// `running`, `released`, `succeeded`, `failed`.
    pub state: String,
    /// `none`, `pending`, `done`, `in_doubt`.
    pub effects: String,
    /// Whether the effects are in doubt now.
    pub effects_in_doubt: bool,
    /// Fence token.
    pub fence: u64,
    /// Attempts granted.
    pub attempts: u32,
    /// Last holder.
    pub owner: Option<String>,
    /// Lease (or effects window) end.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Last retryable error.
    pub last_error: Option<String>,
    /// Stored failure of a failed key.
    pub failure: Option<String>,
    /// Inserted.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Finalized.
    pub finalized_at: Option<DateTime<Utc>>,
}

impl KeyView {
    pub(crate) fn of(r: &JobRecord, now: DateTime<Utc>) -> Self {
        Self {
            digest: r.digest.to_hex(),
            state: r.state.as_str().to_owned(),
            effects: r.effects.as_str().to_owned(),
            effects_in_doubt: r.effects_in_doubt(now),
            fence: r.fence,
            attempts: r.attempts,
            owner: r.owner.clone(),
            lease_expires_at: r.lease_expires_at,
            last_error: r.last_error.clone(),
            failure: r.failure.as_ref().map(|f| format!("{f:?}")),
            created_at: r.created_at,
            updated_at: r.updated_at,
            finalized_at: r.finalized_at,
        }
    }
}

/// One page of keys.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPage {
    /// The keys, by digest.
    pub keys: Vec<KeyView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Name.
    pub name: String,
    /// `cron` or `once`.
    pub trigger: String,
    /// Cron expression or instant.
    pub expression: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Missed-tick policy.
    pub missed: String,
    /// Kind each tick enqueues.
    pub kind: String,
    /// Paused by an operator.
    pub paused: bool,
    /// Next run times (empty when paused or done).
    pub next_runs: Vec<DateTime<Utc>>,
    /// Latest tick that enqueued.
    pub last_tick: Option<DateTime<Utc>>,
}

impl From<&ScheduleInfo> for ScheduleView {
    fn from(s: &ScheduleInfo) -> Self {
        let r = &s.row;
        Self {
            name: r.name.clone(),
            trigger: r.trigger.clone(),
            expression: r.expression.clone(),
            time_zone: r.time_zone.clone(),
            missed: r.missed.clone(),
            kind: r.kind.clone(),
            paused: r.paused,
            next_runs: s.next_runs.clone(),
            last_tick: r.last_tick,
        }
    }
}

/// A batch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `continue`, `fail_fast`, `threshold:N`.
    pub policy: String,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub state: String,
    /// An operator asked to cancel it.
    pub cancel_requested: bool,
    /// Members in all.
    pub total: u32,
    /// Members blocked.
    pub blocked: u32,
    /// Members waiting or running.
    pub active: u32,
    /// Members succeeded.
    pub succeeded: u32,
    /// Members dead.
    pub failed: u32,
    /// Members cancelled.
    pub cancelled: u32,
    /// Its callback job.
    pub callback: Option<i64>,
    /// Inserted.
    pub created_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&BatchInfo> for BatchView {
    fn from(b: &BatchInfo) -> Self {
        Self {
            id: b.id.0,
            name: b.name.clone(),
            policy: b.policy.as_text(),
            state: b.state.as_str().to_owned(),
            cancel_requested: b.cancel_requested,
            total: b.counts.total,
            blocked: b.counts.blocked,
            active: b.counts.active,
            succeeded: b.counts.succeeded,
            failed: b.counts.failed,
            cancelled: b.counts.cancelled,
            callback: b.callback.map(|j| j.0),
            created_at: b.created_at,
            finished_at: b.finished_at,
        }
    }
}

/// A batch member.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// Its name in the batch.
    pub name: String,
    /// Its job.
    pub job: i64,
    /// The job's state.
    pub state: String,
    /// Jobs it depends on.
    pub depends_on: Vec<i64>,
    /// Its stored result.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

impl From<&BatchMember> for MemberView {
    fn from(m: &BatchMember) -> Self {
        Self {
            name: m.name.clone(),
            job: m.job.0,
            state: m.state.as_str().to_owned(),
            depends_on: m.depends_on.iter().map(|j| j.0).collect(),
            result: m.result.clone(),
        }
    }
}

/// A batch with its members (the DAG).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchDetail {
    /// The batch.
    pub batch: BatchView,
    /// Its members, each after its dependencies.
    pub members: Vec<MemberView>,
}

/// An action of the action log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionView {
    /// Id.
    pub id: i64,
    /// Type.
    pub action_type: String,
    /// Payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// When it may be dispatched.
    pub eligible_at: DateTime<Utc>,
    /// `pending`, `processed`, `skipped`, `parked`.
    pub state: String,
    /// Dispatch attempts.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Last error.
    pub last_error: Option<String>,
    /// When it was processed.
    pub processed_at: Option<DateTime<Utc>>,
    /// The job it became.
    pub job: Option<i64>,
    /// Published.
    pub created_at: DateTime<Utc>,
}

impl From<&ActionRecord> for ActionView {
    fn from(a: &ActionRecord) -> Self {
        Self {
            id: a.id.0,
            action_type: a.action_type.clone(),
            payload: a.payload.clone(),
            eligible_at: a.eligible_at,
            state: a.state.as_str().to_owned(),
            attempts: a.attempts,
            max_attempts: a.max_attempts,
            last_error: a.last_error.clone(),
            processed_at: a.processed_at,
            job: a.job.map(|j| j.0),
            created_at: a.created_at,
        }
    }
}

/// The answer of an action on one thing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Done {
    /// What was done.
    pub message: String,
}

/// The answer of an action on many things.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counted {
    /// How many.
    pub count: u64,
}
