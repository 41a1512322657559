//! Enqueue: pending or scheduled, batches, unique keys.

use std::{collections::BTreeSet, sync::Barrier, time::Duration};

use safejob_core::queue::{CompleteAs, Completed, Enqueued, JobId, NewJob, QueueState, RunAt};
use serde_json::json;

use super::{
    QueueHarness,
    fixtures::{Case, RACERS},
};

/// Enqueue stores every field; no delay is `pending`, a delay or future time is `scheduled` (due
/// by the store clock), a past time is `pending`.
pub fn enqueue_stores_jobs_pending_or_scheduled(harness: &dyn QueueHarness) {
    let c = Case::new("enqueue_stores_jobs_pending_or_scheduled", harness);
    let now = c.now();
    let mut job = c.new_job("a");
    job.priority = 3;
    job.max_attempts = 7;
    job.metadata = json!({"tenant": 9});
    job.unique_key = Some(c.unique("a"));
    let id = c.enqueue(job.clone());
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Pending,
        "no delay: expected pending, got {}",
        row.state
    );
    ensure!(
        c,
        row.kind == job.kind
            && row.queue == job.queue
            && row.payload == job.payload
            && row.metadata == job.metadata
            && row.priority == 3
            && row.max_attempts == 7
            && row.unique_key == job.unique_key
            && row.idempotent,
        "the row does not hold what was enqueued: {row:?}"
    );
    ensure!(
        c,
        row.attempts == 0 && row.fence == 0 && row.errors.is_empty() && row.owner.is_none(),
        "a new job has no attempts, fence 0, no errors, no owner: {row:?}"
    );
    c.near("run_at of an immediate job", Some(row.run_at), now);

    let mut later = c.new_job("b");
    later.run_at = RunAt::After(Duration::from_secs(60));
    let id = c.enqueue(later);
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Scheduled,
        "delay: expected scheduled, got {}",
        row.state
    );
    c.near(
        "run_at of a delayed job",
        Some(row.run_at),
        now + chrono::Duration::seconds(60),
    );

    let mut past = c.new_job("c");
    past.run_at = RunAt::At(now - chrono::Duration::seconds(10));
    let row = c.get(c.enqueue(past));
    ensure!(
        c,
        row.state == QueueState::Pending,
        "a past run_at: expected pending, got {}",
        row.state
    );

    let mut future = c.new_job("d");
    future.run_at = RunAt::At(now + chrono::Duration::seconds(3600));
    let row = c.get(c.enqueue(future));
    ensure!(
        c,
        row.state == QueueState::Scheduled,
        "a future run_at: expected scheduled, got {}",
        row.state
    );
}

/// A batch is answered in order with increasing ids; a unique key repeated inside the batch is a
/// duplicate of the earlier job.
pub fn enqueue_many_answers_in_order(harness: &dyn QueueHarness) {
    let c = Case::new("enqueue_many_answers_in_order", harness);
    let mut jobs: Vec<NewJob> = (0..4).map(|i| c.new_job(&format!("k{i}"))).collect();
    jobs[2].unique_key = Some(c.unique("batch"));
    jobs[3].unique_key = Some(c.unique("batch"));
    let answers = c.ok("enqueue_many", c.store.enqueue_many(&jobs));
    ensure!(c, answers.len() == 4, "4 jobs, {} answers", answers.len());
    let ids: Vec<JobId> = answers.iter().map(Enqueued::id).collect();
    ensure!(
        c,
        !answers[0].is_duplicate() && !answers[1].is_duplicate() && !answers[2].is_duplicate(),
        "distinct jobs must be inserted: {answers:?}"
    );
    ensure!(
        c,
        ids[0] < ids[1] && ids[1] < ids[2],
        "ids must increase in batch order: {ids:?}"
    );
    ensure!(
        c,
        answers[3].is_duplicate() && ids[3] == ids[2],
        "a unique key repeated in the batch is a duplicate of the first: {answers:?}"
    );
    for (i, id) in ids.iter().take(3).enumerate() {
        let row = c.get(*id);
        ensure!(
            c,
            row.kind == c.kind(&format!("k{i}")),
            "answer {i} names job {id} of kind {}",
            row.kind
        );
    }
}

/// While a job holding a unique key is live, enqueueing with that key returns it (also under
/// concurrent enqueues: exactly one inserts); once it is finished the key is free again.
pub fn unique_key_returns_the_live_job(harness: &dyn QueueHarness) {
    let c = Case::new("unique_key_returns_the_live_job", harness);
    let mut job = c.new_job("u");
    job.unique_key = Some(c.unique("u"));
    let first = c.enqueue(job.clone());
    let again = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        again
            == Enqueued::Duplicate {
                id: first,
                state: QueueState::Pending
            },
        "duplicate enqueue: expected Duplicate({first}, pending), got {again:?}"
    );
    // Still live while running.
    let claimed = c.claim_one();
    let during = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        during.id() == first && during.is_duplicate(),
        "a running job holds its key: {during:?}"
    );
    ensure!(
        c,
        c.complete(&claimed.lease, CompleteAs::Succeeded) == Completed::Applied,
        "completion"
    );
    let after = c.ok("enqueue", c.store.enqueue(&job));
    ensure!(
        c,
        !after.is_duplicate() && after.id() != first,
        "a finished job frees its unique key: {after:?}"
    );

    let mut raced = c.new_job("race");
    raced.unique_key = Some(c.unique("race"));
    let store = c.store.clone();
    let barrier = Barrier::new(RACERS);
    let answers: Vec<Result<Enqueued, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|_| {
                let (store, barrier, raced) = (store.clone(), &barrier, &raced);
                s.spawn(move || {
                    barrier.wait();
                    store.enqueue(raced).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let answers: Vec<Enqueued> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| c.fail(format_args!("racing enqueue failed: {e}"))))
        .collect();
    let inserted = answers.iter().filter(|a| !a.is_duplicate()).count();
    let ids: BTreeSet<JobId> = answers.iter().map(Enqueued::id).collect();
    ensure!(
        c,
        inserted == 1 && ids.len() == 1,
        "{RACERS} racing enqueues of one unique key: expected 1 insert and one id, got {inserted} inserts and ids {ids:?}"
    );
}
