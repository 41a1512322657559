//! Claim: order, due jobs of the asked queues only, fenced leases, racing claimers.

use std::{collections::BTreeSet, sync::Barrier, time::Duration};

use safejob_core::queue::{ClaimRequest, Enqueued, JobId, NewJob, QueueState, RunAt};

use super::{
    QueueHarness,
    fixtures::{Case, RACERS, TTL},
};

/// Claims take jobs by priority (lower first), then due time, then age, and return them in that
/// order.
pub fn claim_orders_by_priority_then_due_time_then_age(harness: &dyn QueueHarness) {
    let c = Case::new("claim_orders_by_priority_then_due_time_then_age", harness);
    let now = c.now();
    let mut low = c.new_job("low");
    low.priority = 1;
    let mut recent = c.new_job("recent");
    recent.run_at = RunAt::At(now - chrono::Duration::seconds(5));
    let mut old_a = c.new_job("old_a");
    old_a.run_at = RunAt::At(now - chrono::Duration::seconds(30));
    let mut old_b = old_a.clone();
    old_b.kind = c.kind("old_b");
    let mut urgent = c.new_job("urgent");
    urgent.priority = -1;
    let ids = [
        c.enqueue(low),
        c.enqueue(recent),
        c.enqueue(old_a),
        c.enqueue(old_b),
        c.enqueue(urgent),
    ];
    let expected = vec![ids[4], ids[2], ids[3], ids[1], ids[0]];
    let got: Vec<JobId> = c
        .claim(2)
        .iter()
        .chain(c.claim(10).iter())
        .map(|c| c.job.id)
        .collect();
    ensure!(
        c,
        got == expected,
        "claim order: expected {expected:?} (priority, then due time, then age), got {got:?}"
    );
}

/// A claim takes only due jobs, only from the worker's queues, at most `limit`; scheduled jobs
/// become claimable when the store clock reaches their time.
pub fn claim_takes_only_due_jobs_from_its_queues(harness: &dyn QueueHarness) {
    let c = Case::new("claim_takes_only_due_jobs_from_its_queues", harness);
    let mut elsewhere = c.new_job("elsewhere");
    elsewhere.queue = format!("{}:other", c.queue);
    let other = c.enqueue(elsewhere);
    let mut later = c.new_job("later");
    later.run_at = RunAt::After(Duration::from_secs(60));
    let scheduled = c.enqueue(later);
    let due: Vec<JobId> = (0..3)
        .map(|i| c.enqueue(c.new_job(&format!("due{i}"))))
        .collect();

    let first = c.claim(2);
    ensure!(
        c,
        first.len() == 2,
        "limit 2 with 3 due: got {}",
        first.len()
    );
    let rest = c.claim(10);
    let got: BTreeSet<JobId> = first.iter().chain(&rest).map(|c| c.job.id).collect();
    let want: BTreeSet<JobId> = due.iter().copied().collect();
    ensure!(
        c,
        got == want,
        "expected only the due jobs {want:?}, got {got:?}"
    );
    ensure!(
        c,
        c.get(other).state == QueueState::Pending,
        "a job of another queue was claimed"
    );

    c.advance(Duration::from_secs(55));
    ensure!(
        c,
        c.claim(10).is_empty(),
        "a job scheduled in 60 s was claimed after 55 s"
    );
    c.advance(Duration::from_secs(6));
    let late = c.claim(10);
    ensure!(
        c,
        late.len() == 1 && late[0].job.id == scheduled,
        "the scheduled job must be claimable once due: {:?}",
        late.iter().map(|c| c.job.id).collect::<Vec<_>>()
    );
}

/// A claim is a lease exactly like the guard's: running, fence + 1, attempt + 1, owner, expiry
/// now + ttl by the store clock; a running job is not claimed again.
pub fn claim_is_a_fenced_lease(harness: &dyn QueueHarness) {
    let c = Case::new("claim_is_a_fenced_lease", harness);
    let id = c.enqueue(c.new_job("a"));
    let now = c.now();
    let claimed = c.claim_as("worker-a", 1);
    let Some(first) = claimed.first() else {
        c.fail(format_args!("nothing claimed"));
    };
    let lease = &first.lease;
    ensure!(
        c,
        lease.id == id && lease.fence == 1 && lease.attempt == 1 && lease.owner == "worker-a",
        "first claim: expected fence 1, attempt 1, owner worker-a, got {lease:?}"
    );
    c.near(
        "lease expiry",
        Some(lease.expires_at),
        now + chrono::Duration::seconds(30),
    );
    ensure!(
        c,
        first.guard.is_none(),
        "an unguarded job has no guard answer"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Running
            && row.fence == 1
            && row.attempts == 1
            && row.owner.as_deref() == Some("worker-a"),
        "the row after a claim: {row:?}"
    );
    c.near("attempted_at", row.attempted_at, now);
    c.near("row lease expiry", row.lease_expires_at, lease.expires_at);
    ensure!(
        c,
        (
            first.job.id,
            first.job.state,
            first.job.fence,
            first.job.attempts,
            &first.job.owner
        ) == (row.id, row.state, row.fence, row.attempts, &row.owner)
            && first.job.payload == row.payload,
        "Claimed::job must be the row after the claim: {:?}",
        first.job
    );
    ensure!(
        c,
        c.claim(10).is_empty(),
        "a running job was claimed a second time"
    );
}

/// Of many threads claiming at once, each job goes to exactly one.
pub fn racing_claims_take_each_job_once(harness: &dyn QueueHarness) {
    let c = Case::new("racing_claims_take_each_job_once", harness);
    let jobs: Vec<NewJob> = (0..64).map(|i| c.new_job(&format!("j{i}"))).collect();
    let ids: BTreeSet<JobId> = c
        .ok("enqueue_many", c.store.enqueue_many(&jobs))
        .iter()
        .map(Enqueued::id)
        .collect();
    let barrier = Barrier::new(RACERS);
    let queues = [c.queue.clone()];
    let taken: Vec<Vec<JobId>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (store, barrier, queues) = (c.store.clone(), &barrier, &queues);
                s.spawn(move || {
                    let worker = format!("racer-{i}");
                    let mut mine = Vec::new();
                    barrier.wait();
                    loop {
                        let batch = store
                            .claim(&ClaimRequest {
                                worker: &worker,
                                queues,
                                limit: 3,
                                ttl: TTL,
                            })
                            .map_err(|e| e.to_string());
                        match batch {
                            Ok(batch) if batch.is_empty() => break Ok(mine),
                            Ok(batch) => mine.extend(batch.iter().map(|c| c.job.id)),
                            Err(e) => break Err(e),
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<Result<Vec<JobId>, String>>>()
    })
    .into_iter()
    .map(|r| r.unwrap_or_else(|e| c.fail(format_args!("a racing claim failed: {e}"))))
    .collect();
    let all: Vec<JobId> = taken.into_iter().flatten().collect();
    let distinct: BTreeSet<JobId> = all.iter().copied().collect();
    ensure!(
        c,
        all.len() == distinct.len(),
        "{} claims for {} distinct jobs: some job was claimed twice",
        all.len(),
        distinct.len()
    );
    ensure!(
        c,
        distinct == ids,
        "every job must be claimed once: {} of {}",
        distinct.len(),
        ids.len()
    );
}
