//! Operations: cancel, retry, purge, listing, pruning, progress and the snapshot.

use std::{collections::BTreeMap, time::Duration};

use safejob_core::queue::{
    CompleteAs, Completed, Completion, Heartbeat, JobFilter, JobId, JobQuery, OpResult, Progress,
    QueueState,
};

use super::{
    QueueHarness,
    fixtures::{Case, error},
};
use crate::conformance::TIME_SLACK;

/// Cancel takes waiting and parked jobs, not running ones; retry revives dead, cancelled and
/// parked jobs with a fresh attempt budget; purge deletes finished jobs matching its filter.
pub fn operator_cancel_retry_purge(harness: &dyn QueueHarness) {
    let c = Case::new("operator_cancel_retry_purge", harness);
    let waiting = c.enqueue(c.new_job("waiting"));
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(waiting)) == OpResult::Applied,
        "cancel a pending job"
    );
    let row = c.get(waiting);
    ensure!(
        c,
        row.state == QueueState::Cancelled && row.finished_at.is_some(),
        "cancelled and finished: {row:?}"
    );
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(JobId(i64::MAX))) == OpResult::NotFound,
        "cancel of a missing job"
    );

    let running = c.enqueue(c.new_job("running"));
    let claimed = c.claim_one();
    ensure!(
        c,
        c.ok("cancel", c.store.cancel(running)) == OpResult::WrongState(QueueState::Running),
        "a running job must not be cancelled by an operator"
    );
    let dead = CompleteAs::Dead {
        error: error("gave up"),
    };
    ensure!(
        c,
        c.complete(&claimed.lease, dead) == Completed::Applied,
        "dead completion"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(running)) == OpResult::Applied,
        "retry of a dead job"
    );
    let row = c.get(running);
    ensure!(
        c,
        row.state == QueueState::Pending
            && row.attempts == 0
            && row.finished_at.is_none()
            && row.errors.len() == 1,
        "a retried job is pending with attempts 0 and keeps its history: {row:?}"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(running)) == OpResult::WrongState(QueueState::Pending),
        "retry of a pending job"
    );
    ensure!(
        c,
        c.ok("retry", c.store.retry(waiting)) == OpResult::Applied,
        "retry of a cancelled job"
    );
    let again = c.claim(10);
    ensure!(
        c,
        again.len() == 2,
        "both revived jobs are claimable: {}",
        again.len()
    );
    for cl in &again {
        ensure!(
            c,
            cl.lease.attempt == 1,
            "a revived job starts at attempt 1: {:?}",
            cl.lease
        );
        c.complete(
            &cl.lease,
            CompleteAs::Dead {
                error: error("again"),
            },
        );
    }
    let purged = c.ok(
        "purge",
        c.store.purge(&JobFilter::dead().queue(c.queue.clone())),
    );
    ensure!(
        c,
        purged == 2,
        "purge of 2 dead jobs in the queue: {purged}"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(running)).is_none(),
        "a purged job is gone"
    );
}

/// Listing filters by state, queue and kind and pages by id; retry of all matching jobs revives
/// exactly those.
pub fn list_and_retry_matching_filter_by_queue_and_kind(harness: &dyn QueueHarness) {
    let c = Case::new("list_and_retry_matching_filter_by_queue_and_kind", harness);
    for kind in ["k1", "k1", "k1", "k2"] {
        c.enqueue(c.new_job(kind));
    }
    for cl in c.claim(10) {
        c.complete(&cl.lease, CompleteAs::Dead { error: error("x") });
    }
    let k1 = JobFilter::dead().queue(c.queue.clone()).kind(c.kind("k1"));
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c.ok(
            "list",
            c.store.list(&JobQuery {
                filter: k1.clone(),
                after,
                limit: 2,
            }),
        );
        ensure!(c, page.len() <= 2, "list returned more than its limit");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|j| j.id);
        seen.extend(page.into_iter().map(|j| (j.id, j.kind, j.state)));
    }
    ensure!(
        c,
        seen.len() == 3,
        "3 dead jobs of kind k1, listed {}",
        seen.len()
    );
    ensure!(
        c,
        seen.windows(2).all(|w| w[0].0 < w[1].0)
            && seen
                .iter()
                .all(|(_, kind, state)| *kind == c.kind("k1") && *state == QueueState::Dead),
        "paged listing must be by id and match the filter: {seen:?}"
    );
    let dead_client = c
        .queue_client()
        .dead(&JobFilter::default().queue(c.queue.clone()), 100);
    ensure!(
        c,
        c.ok("dead", dead_client).len() == 4,
        "the dead list of the queue"
    );
    let revived = c.ok("retry_matching", c.store.retry_matching(&k1));
    ensure!(c, revived == 3, "retry of all dead k1 jobs: {revived}");
    let left = c.ok(
        "list",
        c.store.list(&JobQuery {
            filter: JobFilter::dead().queue(c.queue.clone()),
            after: None,
            limit: 100,
        }),
    );
    ensure!(
        c,
        left.len() == 1 && left[0].kind == c.kind("k2"),
        "only the k2 job stays dead: {:?}",
        left.iter().map(|j| &j.kind).collect::<Vec<_>>()
    );
}

/// A retry never makes two live jobs hold one unique key.
pub fn retry_respects_unique_keys(harness: &dyn QueueHarness) {
    let c = Case::new("retry_respects_unique_keys", harness);
    let mut job = c.new_job("u");
    job.unique_key = Some(c.unique("u"));
    let first = c.enqueue(job.clone());
    let claimed = c.claim_one();
    c.complete(&claimed.lease, CompleteAs::Dead { error: error("x") });
    let second = c.enqueue(job);
    let retried = c.ok("retry", c.store.retry(first));
    ensure!(
        c,
        retried == OpResult::UniqueKeyHeld { by: second },
        "retry while another live job holds the key: expected UniqueKeyHeld({second}), got {retried:?}"
    );
    ensure!(
        c,
        c.get(first).state == QueueState::Dead,
        "a refused retry changed the job"
    );
}

/// Pruning deletes finished jobs older than the retention, and nothing else.
pub fn prune_deletes_old_finished_jobs(harness: &dyn QueueHarness) {
    let c = Case::new("prune_deletes_old_finished_jobs", harness);
    let old = c.enqueue(c.new_job("old"));
    let cl = c.claim_one();
    c.complete(&cl.lease, CompleteAs::Succeeded);
    let waiting = c.enqueue(c.new_job("waiting"));
    c.advance(Duration::from_secs(7200));
    let recent = c.enqueue(c.new_job("recent"));
    let cl = c.claim_one();
    c.complete(&cl.lease, CompleteAs::Succeeded);
    let pruned = c.ok("prune", c.store.prune(Duration::from_secs(3600), 100_000));
    ensure!(c, pruned >= 1, "prune deleted nothing");
    ensure!(
        c,
        c.ok("get", c.store.get(old)).is_none(),
        "an old finished job survived pruning"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(recent)).is_some(),
        "a recent finished job was pruned"
    );
    ensure!(
        c,
        c.ok("get", c.store.get(waiting)).is_some(),
        "a live job was pruned"
    );
}

/// Progress is persisted under the fence, and a completion writes its last progress.
pub fn progress_is_persisted_under_the_fence(harness: &dyn QueueHarness) {
    let c = Case::new("progress_is_persisted_under_the_fence", harness);
    let id = c.enqueue(c.new_job("a"));
    let cl = c.claim_one();
    let p1 = Progress {
        current: 3,
        total: Some(10),
        message: Some("copying".into()),
    };
    ensure!(
        c,
        c.ok("progress", c.store.progress(&cl.lease, &p1))
            == safejob_core::store::FenceCheck::Applied,
        "the holder's progress must apply"
    );
    ensure!(
        c,
        c.get(id).progress.as_ref() == Some(&p1),
        "progress not stored"
    );
    let p2 = Progress {
        current: 10,
        total: Some(10),
        message: None,
    };
    let done = c.ok(
        "complete",
        c.store.complete(
            &Completion {
                lease: &cl.lease,
                outcome: CompleteAs::Succeeded,
                progress: Some(&p2),
                guard: None,
                batch: None,
            },
            None,
        ),
    );
    ensure!(c, done == Completed::Applied, "completion with progress");
    ensure!(
        c,
        c.get(id).progress.as_ref() == Some(&p2),
        "the completion's progress not stored"
    );
}

/// `finished_by_minute` counts the succeeded and dead jobs that finished within the window, per
/// whole minute, with the mean duration of the succeeded ones; older finishes fall out.
///
/// Catches: counting cancelled or running jobs, a window that is not bounded by the store clock,
/// minutes that do not start on a whole minute, a mean over the wrong durations.
pub fn finished_by_minute_counts_recent_finishes(harness: &dyn QueueHarness) {
    let c = Case::new("finished_by_minute_counts_recent_finishes", harness);
    // Whatever finished before (a store shared with other cases) falls out of the window.
    c.advance(Duration::from_secs(3 * 3600));
    for _ in 0..4 {
        c.enqueue(c.new_job("k"));
    }
    let claimed = c.claim_as(&format!("{}:w", c.prefix), 4);
    c.advance(Duration::from_secs(2));
    c.complete(&claimed[0].lease, CompleteAs::Succeeded);
    c.complete(&claimed[1].lease, CompleteAs::Dead { error: error("x") });
    c.complete(
        &claimed[2].lease,
        CompleteAs::Cancelled {
            reason: "not counted".into(),
        },
    );
    let hour = Duration::from_secs(3600);
    let minutes = c.ok("finished_by_minute", c.store.finished_by_minute(hour));
    let now = c.now();
    let succeeded: u64 = minutes.iter().map(|m| m.succeeded).sum();
    let dead: u64 = minutes.iter().map(|m| m.dead).sum();
    ensure!(
        c,
        succeeded == 1 && dead == 1,
        "one succeeded and one dead in the last hour (not the cancelled or running ones): \
         {minutes:?}"
    );
    ensure!(
        c,
        minutes
            .iter()
            .all(|m| m.minute.timestamp_micros() % 60_000_000 == 0
                && m.minute <= now
                && m.succeeded + m.dead > 0),
        "minutes start on a whole minute, are not in the future, and are not empty: {minutes:?}"
    );
    let Some(with_success) = minutes.iter().find(|m| m.succeeded == 1) else {
        c.fail(format_args!(
            "no minute holds the succeeded job: {minutes:?}"
        ));
    };
    ensure!(
        c,
        with_success.mean.abs_diff(Duration::from_secs(2)) <= TIME_SLACK,
        "the succeeded job took 2 s of store time: {with_success:?}"
    );
    c.advance(Duration::from_secs(2 * 3600));
    let later = c.ok("finished_by_minute", c.store.finished_by_minute(hour));
    ensure!(
        c,
        later.is_empty(),
        "two hours later nothing finished within the last hour: {later:?}"
    );
}

/// The snapshot counts jobs by queue, kind and state, figures per kind, lists workers with their
/// last heartbeat and in-flight jobs, and the oldest due job's age.
pub fn snapshot_counts_kinds_workers_and_age(harness: &dyn QueueHarness) {
    let c = Case::new("snapshot_counts_kinds_workers_and_age", harness);
    let worker = format!("{}:w", c.prefix);
    let queues = [c.queue.clone()];
    let hb = Heartbeat {
        worker: &worker,
        queues: &queues,
        concurrency: 2,
    };
    c.ok("heartbeat", c.store.heartbeat(&hb));
    let beat = c.now();
    for _ in 0..4 {
        c.enqueue(c.new_job("k"));
    }
    let claimed = c.claim_as(&worker, 3);
    c.advance(Duration::from_secs(2));
    c.complete(&claimed[0].lease, CompleteAs::Succeeded);
    c.complete(&claimed[1].lease, CompleteAs::Dead { error: error("x") });
    c.advance(Duration::from_secs(10));
    // A second queue whose job is due only now: its own age, not the first queue's.
    let other = format!("{}-b", c.queue);
    let mut late = c.new_job("k");
    late.queue = other.clone();
    c.enqueue(late);
    let snap = c.ok("snapshot", c.store.snapshot());
    let mine: BTreeMap<QueueState, u64> = snap
        .counts
        .iter()
        .filter(|s| s.queue == c.queue && s.kind == c.kind("k"))
        .map(|s| (s.state, s.count))
        .collect();
    let want = BTreeMap::from([
        (QueueState::Pending, 1),
        (QueueState::Running, 1),
        (QueueState::Succeeded, 1),
        (QueueState::Dead, 1),
    ]);
    ensure!(
        c,
        mine == want,
        "counts of the case's queue and kind: expected {want:?}, got {mine:?}"
    );
    ensure!(
        c,
        snap.by_queue().get(&c.queue) == Some(&4),
        "by_queue: {:?}",
        snap.by_queue().get(&c.queue)
    );
    let Some(stats) = snap.kinds.iter().find(|k| k.kind == c.kind("k")) else {
        c.fail(format_args!("no figures for the case's kind"));
    };
    ensure!(
        c,
        stats.executions == 2 && (stats.success_rate - 0.5).abs() < 1e-9,
        "1 succeeded + 1 dead: expected 2 executions at 50 %, got {stats:?}"
    );
    let took = Duration::from_secs(2);
    ensure!(
        c,
        stats.mean.abs_diff(took) <= TIME_SLACK && stats.p99.abs_diff(took) <= TIME_SLACK,
        "the succeeded job took 2 s of store time: {stats:?}"
    );
    let Some(me) = snap.workers.iter().find(|w| w.id == worker) else {
        c.fail(format_args!("the worker that sent a heartbeat is missing"));
    };
    ensure!(
        c,
        me.in_flight == vec![claimed[2].job.id] && me.queues == queues && me.concurrency == 2,
        "worker info: {me:?}"
    );
    c.near("last heartbeat", Some(me.last_heartbeat), beat);
    ensure!(
        c,
        snap.oldest_due_age
            .is_some_and(|age| age + TIME_SLACK >= Duration::from_secs(12)),
        "a job due 12 s ago: oldest_due_age {:?}",
        snap.oldest_due_age
    );
    let per_queue = (
        snap.oldest_due_by_queue.get(&c.queue),
        snap.oldest_due_by_queue.get(&other),
    );
    ensure!(
        c,
        per_queue
            .0
            .is_some_and(|age| *age + TIME_SLACK >= Duration::from_secs(12))
            && per_queue
                .1
                .is_some_and(|age| *age < Duration::from_secs(12)),
        "oldest_due_by_queue: the case's queue 12 s, the second queue's just due; got {per_queue:?}"
    );
    c.ok("remove_worker", c.store.remove_worker(&worker));
    let snap = c.ok("snapshot", c.store.snapshot());
    ensure!(
        c,
        !snap.workers.iter().any(|w| w.id == worker),
        "a removed worker is still listed"
    );
}
