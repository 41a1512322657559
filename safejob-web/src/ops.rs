//! The operations behind the API and the dashboard, one function each, over the library's own
//! store operations. Synchronous: callers run them on the blocking pool ([`run`]).

use std::str::FromStr;

use safejob_core::{
    KeyDigest, Recovery,
    action::{ActionFilter, ActionId, ActionState, RetryAction},
    confirm_effects_by_digest,
    queue::{JobFilter, JobId, JobQuery, OpResult, QueueState, QueuedJob, Snapshot},
    schedule::{Scheduler, SchedulerError},
    store::{ListFilter, ListQuery},
    workflow::{BatchId, BatchState},
};

use crate::{
    dto::{
        ActionView, BatchDetail, BatchView, Counted, Done, JobDetail, JobPage, JobSummary, KeyPage,
        KeyView, KindView, MemberView, Overview, ScheduleView, Stats, WorkerView,
    },
    error::ApiError,
    history::history,
    state::WebState,
};

/// The most items one page holds.
pub const MAX_LIMIT: usize = 500;
/// Items per page when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 50;
/// A worker is healthy when its last heartbeat is at most this many seconds old.
pub const HEALTHY_WITHIN_SECS: f64 = 60.0;
/// Next run times listed per schedule.
pub const NEXT_RUNS: usize = 5;
/// Owner written on a key's row when an operator confirms its effects here.
pub const OPERATOR: &str = "safejob-web";
/// The longest queue or kind name accepted in a filter.
const MAX_NAME: usize = 255;

/// Runs `f` on the blocking pool.
pub(crate) async fn run<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(safejob_tokio::blocking(f).await?)
}

/// A page size from an optional `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub(crate) fn limit(given: Option<u64>) -> Result<usize, ApiError> {
    match given {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::BadQuery("limit must be at least 1".into())),
        Some(n) if n > MAX_LIMIT as u64 => Err(ApiError::LimitTooLarge {
            given: n,
            max: MAX_LIMIT,
        }),
        Some(n) => Ok(n as usize),
    }
}

/// A queue or kind name from a filter: at most 255 bytes, no control characters.
pub(crate) fn name(field: &str, given: Option<String>) -> Result<Option<String>, ApiError> {
    match given {
        Some(n) if n.len() > MAX_NAME || n.chars().any(char::is_control) => Err(
            ApiError::BadQuery(format!("{field} must be at most {MAX_NAME} bytes of text")),
        ),
        Some(n) if n.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Text parsed as `T`, or `bad_query` naming the field.
pub(crate) fn parsed<T: FromStr>(
    field: &str,
    given: Option<String>,
) -> Result<Option<T>, ApiError> {
    match given.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            let shown: String = text.chars().take(40).collect();
            ApiError::BadQuery(format!("unknown {field} {shown:?}"))
        }),
    }
}

/// A job filter from query fields.
pub(crate) fn filter(
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
) -> Result<JobFilter, ApiError> {
    Ok(JobFilter {
        state: parsed::<QueueState>("state", state)?,
        queue: name("queue", queue)?,
        kind: name("kind", kind)?,
    })
}

/// A snapshot, recorded for the charts.
pub(crate) fn snapshot(state: &WebState) -> Result<Snapshot, ApiError> {
    let snapshot = state.queue().snapshot()?;
    state.samples().record(&snapshot);
    Ok(snapshot)
}

/// One page of jobs.
pub(crate) fn jobs(
    state: &WebState,
    filter: JobFilter,
    after: Option<i64>,
    limit: usize,
) -> Result<JobPage, ApiError> {
    let jobs = state.queue().list(&JobQuery {
        filter,
        after: after.map(JobId),
        limit,
    })?;
    let next_after = (jobs.len() == limit)
        .then(|| jobs.last().map(|j| j.id.0))
        .flatten();
    Ok(JobPage {
        jobs: jobs.iter().map(JobSummary::from).collect(),
        next_after,
    })
}

/// The job with its history.
pub(crate) fn job(state: &WebState, id: i64) -> Result<JobDetail, ApiError> {
    let job = state
        .queue()
        .get(JobId(id))?
        .ok_or_else(|| ApiError::not_found(format!("job {id}")))?;
    Ok(detail(&job, state.ledger().map(|l| &**l)))
}

fn detail(job: &QueuedJob, ledger: Option<&dyn safejob_core::history::HistoryStore>) -> JobDetail {
    JobDetail {
        summary: JobSummary::from(job),
        payload: job.payload.clone(),
        metadata: job.metadata.clone(),
        fence: job.fence,
        idempotent: job.idempotent,
        lease_expires_at: job.lease_expires_at,
        attempted_at: job.attempted_at,
        guard_digest: job.guard.map(|g| g.digest.to_hex()),
        progress: job
            .progress
            .as_ref()
            .and_then(|p| serde_json::to_value(p).ok()),
        errors: job.errors.iter().map(Into::into).collect(),
        history: history(job, ledger),
    }
}

/// The `n` most recently enqueued jobs, newest first.
///
/// The store lists by ascending id after a cursor, so the newest id is found first: an
/// exponential then binary search over `after` with pages of one row (a few dozen indexed
/// lookups), then one page up to it.
pub(crate) fn newest(state: &WebState, n: usize) -> Result<Vec<JobSummary>, ApiError> {
    let store = state.queue();
    let any_after = |id: i64| -> Result<bool, ApiError> {
        Ok(!store
            .list(&JobQuery {
                filter: JobFilter::default(),
                after: Some(JobId(id)),
                limit: 1,
            })?
            .is_empty())
    };
    if !any_after(i64::MIN)? {
        return Ok(Vec::new());
    }
    // Invariant: some id > lo exists; none > hi (or hi is i64::MAX).
    let (mut lo, mut hi) = (i64::MIN, 0i64);
    while any_after(hi)? {
        lo = hi;
        if hi >= i64::MAX / 2 {
            hi = i64::MAX;
            break;
        }
        hi = hi.max(1) * 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if any_after(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    // `hi` is the newest id: list the last `n` ids up to it (gaps make it fewer).
    let from = hi.saturating_sub(n as i64);
    let mut jobs = store.list(&JobQuery {
        filter: JobFilter::default(),
        after: Some(JobId(from)),
        limit: n,
    })?;
    jobs.reverse();
    Ok(jobs.iter().map(JobSummary::from).collect())
}

/// `GET /jobs`.
pub(crate) fn overview(state: &WebState) -> Result<Overview, ApiError> {
    let snapshot = snapshot(state)?;
    let by_kind = snapshot.by_kind();
    let running = jobs(
        state,
        JobFilter::state(QueueState::Running),
        None,
        DEFAULT_LIMIT,
    )?
    .jobs;
    let mut definitions: Vec<KindView> = snapshot
        .kinds
        .iter()
        .map(|k| KindView::of(k, by_kind.get(&k.kind).copied().unwrap_or(0)))
        .collect();
    for (kind, count) in &by_kind {
        if !definitions.iter().any(|d| &d.kind == kind) {
            definitions.push(KindView {
                kind: kind.clone(),
                jobs: *count,
                executions: 0,
                success_rate: 0.0,
                mean_seconds: 0.0,
                p95_seconds: 0.0,
                p99_seconds: 0.0,
            });
        }
    }
    definitions.sort_by(|a, b| a.kind.cmp(&b.kind));
    Ok(Overview {
        taken_at: snapshot.taken_at,
        running,
        definitions,
        stats: Stats::of(&snapshot),
        recent: newest(state, 20)?,
        workers: snapshot
            .workers
            .iter()
            .map(|w| WorkerView::of(w, snapshot.taken_at))
            .collect(),
        oldest_due_age_seconds: snapshot.oldest_due_age.map(|d| d.as_secs_f64()),
    })
}

/// Workers with their health.
pub(crate) fn workers(state: &WebState) -> Result<Vec<WorkerView>, ApiError> {
    let snapshot = snapshot(state)?;
    Ok(snapshot
        .workers
        .iter()
        .map(|w| WorkerView::of(w, snapshot.taken_at))
        .collect())
}

fn op(result: OpResult, what: String, done: &str) -> Result<Done, ApiError> {
    match result {
        OpResult::Applied => Ok(Done {
            message: format!("{what} {done}"),
        }),
        OpResult::NotFound => Err(ApiError::not_found(what)),
        OpResult::WrongState(s) => Err(ApiError::Conflict(format!("{what} is {s}"))),
        OpResult::UniqueKeyHeld { by } => Err(ApiError::Conflict(format!(
            "live job {by} holds the unique key of {what}"
        ))),
        OpResult::BatchEnded(s) => Err(ApiError::Conflict(format!("{what} already ended {s}"))),
        OpResult::DependenciesUnmet => Err(ApiError::Conflict(format!(
            "{what} has dependencies that did not succeed"
        ))),
    }
}

/// An operator's retry of one job.
pub(crate) fn retry_job(state: &WebState, id: i64) -> Result<Done, ApiError> {
    op(
        state.queue().retry(JobId(id))?,
        format!("job {id}"),
        "is pending again",
    )
}

/// An operator's cancel of one job.
pub(crate) fn cancel_job(state: &WebState, id: i64) -> Result<Done, ApiError> {
    op(
        state.queue().cancel(JobId(id))?,
        format!("job {id}"),
        "is cancelled",
    )
}

/// Retries every dead (or matching) job.
pub(crate) fn retry_matching(state: &WebState, filter: JobFilter) -> Result<Counted, ApiError> {
    Ok(Counted {
        count: state.queue().retry_matching(&filter)?,
    })
}

/// Deletes finished jobs matching `filter` (dead ones when no state is given).
pub(crate) fn purge(state: &WebState, filter: JobFilter) -> Result<Counted, ApiError> {
    if let Some(s) = filter.state
        && !s.is_finished()
    {
        return Err(ApiError::BadQuery(format!(
            "only finished jobs are purged; {s} is not finished"
        )));
    }
    Ok(Counted {
        count: state.queue().purge(&filter)?,
    })
}

/// Which key rows a listing returns, from its text.
pub(crate) fn key_filter(text: Option<String>) -> Result<ListFilter, ApiError> {
    Ok(match text.as_deref().unwrap_or("in_doubt") {
        "in_doubt" => ListFilter::EffectsInDoubt,
        "expired" => ListFilter::ExpiredLeases,
        "all" => ListFilter::All,
        other => ListFilter::State(other.parse().map_err(|_| {
            let shown: String = other.chars().take(40).collect();
            ApiError::BadQuery(format!(
                "unknown key filter {shown:?} (in_doubt, expired, all, running, released, succeeded, failed)"
            ))
        })?),
    })
}

/// A digest from its hex text.
pub(crate) fn digest(text: &str) -> Result<KeyDigest, ApiError> {
    KeyDigest::from_hex(text)
        .map_err(|_| ApiError::BadPath("a key digest is 64 hexadecimal characters".into()))
}

/// One page of keys.
pub(crate) fn keys(
    state: &WebState,
    filter: ListFilter,
    after: Option<KeyDigest>,
    limit: usize,
) -> Result<KeyPage, ApiError> {
    let guards = state.queue().guards();
    let now = guards.now()?;
    let rows = guards.list(&ListQuery {
        filter,
        after,
        limit,
    })?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.digest.to_hex()))
        .flatten();
    Ok(KeyPage {
        keys: rows.iter().map(|r| KeyView::of(r, now)).collect(),
        next_after,
    })
}

/// One key.
pub(crate) fn key(state: &WebState, digest: KeyDigest) -> Result<KeyView, ApiError> {
    let guards = state.queue().guards();
    let now = guards.now()?;
    let row = guards
        .get(&digest)?
        .ok_or_else(|| ApiError::not_found(format!("key {}", digest.short())))?;
    Ok(KeyView::of(&row, now))
}

/// An operator confirms that the in-doubt effects of a key did happen: the library's
/// [`confirm_effects_by_digest`] (claimed with fence + 1, marked done, nothing run).
pub(crate) fn confirm_key(state: &WebState, digest: KeyDigest) -> Result<Done, ApiError> {
    let what = format!("key {}", digest.short());
    match confirm_effects_by_digest(state.queue().guards(), &digest, OPERATOR)? {
        Recovery::Resolved { .. } => {
            tracing::info!(key = %digest.short(), "in-doubt effects confirmed by an operator");
            Ok(Done {
                message: format!("effects of {what} confirmed done"),
            })
        }
        Recovery::NotInDoubt(_) => Err(ApiError::Conflict(format!(
            "the effects of {what} are not in doubt"
        ))),
        Recovery::Missing => Err(ApiError::not_found(what)),
    }
}

fn scheduler(state: &WebState) -> Result<Scheduler, ApiError> {
    Scheduler::builder(state.schedules()?)
        .build()
        .map_err(scheduler_error)
}

fn scheduler_error(e: SchedulerError) -> ApiError {
    match e {
        SchedulerError::NotStored { name } => ApiError::not_found(format!("schedule {name:?}")),
        SchedulerError::Contended { name } => {
            ApiError::Conflict(format!("schedule {name:?} kept changing; try again"))
        }
        SchedulerError::Store(e) => ApiError::Store(e),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Stored schedules with their next runs.
pub(crate) fn schedules(state: &WebState) -> Result<Vec<ScheduleView>, ApiError> {
    Ok(scheduler(state)?
        .list(NEXT_RUNS)
        .map_err(scheduler_error)?
        .iter()
        .map(ScheduleView::from)
        .collect())
}

/// Pauses or resumes a schedule.
pub(crate) fn pause_schedule(state: &WebState, name: &str, paused: bool) -> Result<Done, ApiError> {
    let s = scheduler(state)?;
    let changed = if paused {
        s.pause(name)
    } else {
        s.resume(name)
    }
    .map_err(scheduler_error)?;
    let now = if paused { "paused" } else { "resumed" };
    Ok(Done {
        message: if changed {
            format!("schedule {name:?} {now}")
        } else {
            format!("schedule {name:?} was already {now}")
        },
    })
}

/// Batches, newest first.
pub(crate) fn batches(
    state: &WebState,
    filter: Option<BatchState>,
    limit: usize,
) -> Result<Vec<BatchView>, ApiError> {
    Ok(state
        .queue()
        .list_batches(filter, limit)?
        .iter()
        .map(BatchView::from)
        .collect())
}

/// A batch with its members.
pub(crate) fn batch(state: &WebState, id: i64) -> Result<BatchDetail, ApiError> {
    let info = state
        .queue()
        .batch(BatchId(id))?
        .ok_or_else(|| ApiError::not_found(format!("batch {id}")))?;
    let members = state.queue().batch_members(BatchId(id))?;
    Ok(BatchDetail {
        batch: BatchView::from(&info),
        members: members.iter().map(MemberView::from).collect(),
    })
}

/// An operator's cancel of a batch.
pub(crate) fn cancel_batch(state: &WebState, id: i64) -> Result<Done, ApiError> {
    op(
        state.queue().cancel_batch(BatchId(id))?,
        format!("batch {id}"),
        "is cancelled (running members finish on their own)",
    )
}

/// Actions of the action log.
pub(crate) fn actions(
    state: &WebState,
    filter: ActionFilter,
    limit: usize,
) -> Result<Vec<ActionView>, ApiError> {
    Ok(state
        .actions()?
        .list_actions(&filter, limit)?
        .iter()
        .map(ActionView::from)
        .collect())
}

/// An action filter from query fields.
pub(crate) fn action_filter(
    state: Option<String>,
    action_type: Option<String>,
) -> Result<ActionFilter, ApiError> {
    Ok(ActionFilter {
        state: parsed::<ActionState>("state", state)?,
        action_type: name("type", action_type)?,
    })
}

/// An operator's retry of a parked action.
pub(crate) fn retry_action(state: &WebState, id: i64) -> Result<Done, ApiError> {
    match state.actions()?.retry_action(ActionId(id))? {
        RetryAction::Applied => Ok(Done {
            message: format!("action {id} is pending again"),
        }),
        RetryAction::NotFound => Err(ApiError::not_found(format!("action {id}"))),
        RetryAction::WrongState(s) => Err(ApiError::Conflict(format!(
            "action {id} is {}; only a parked action is retried",
            s.as_str()
        ))),
    }
}
