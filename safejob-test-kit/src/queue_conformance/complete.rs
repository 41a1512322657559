//! Completion, retries, snoozes, dead letters, renewals and the reaper, all under the fence.

use std::{collections::BTreeMap, time::Duration};

use safejob_core::{
    queue::{
        AttemptError, CompleteAs, Completed, ErrorKind, JobId, MAX_ERROR_HISTORY, Progress,
        QueueState,
    },
    store::Renewed,
};

use super::{
    QueueHarness,
    fixtures::{Case, PAST_TTL, TTL, error},
};

/// Completions are compare-and-sets on the fence: a wrong fence or a second completion changes
/// nothing and says `Stale`.
pub fn completion_is_fenced(harness: &dyn QueueHarness) {
    let c = Case::new("completion_is_fenced", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    let mut wrong = claimed.lease.clone();
    wrong.fence += 7;
    ensure!(
        c,
        c.complete(&wrong, CompleteAs::Succeeded) == Completed::Stale,
        "a wrong fence completed the job"
    );
    let progress = Progress {
        current: 1,
        total: None,
        message: None,
    };
    ensure!(
        c,
        c.ok("progress", c.store.progress(&wrong, &progress))
            == safejob_core::store::FenceCheck::Stale,
        "a wrong fence wrote progress"
    );
    ensure!(
        c,
        c.get(id).state == QueueState::Running,
        "a stale completion changed the row"
    );
    let now = c.now();
    ensure!(
        c,
        c.complete(&claimed.lease, CompleteAs::Succeeded) == Completed::Applied,
        "the holder's completion must apply"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Succeeded && row.owner.is_none() && row.lease_expires_at.is_none(),
        "after success: {row:?}"
    );
    c.near("finished_at", row.finished_at, now);
    let again = c.complete(
        &claimed.lease,
        CompleteAs::Dead {
            error: error("late"),
        },
    );
    ensure!(
        c,
        again == Completed::Stale,
        "a second completion must be stale, got {again:?}"
    );
    ensure!(
        c,
        c.get(id).state == QueueState::Succeeded,
        "a terminal job changed"
    );
}

/// A retry waits for its delay on the store clock, records the error with its attempt, and the
/// next claim bumps fence and attempt again.
pub fn retry_waits_for_its_delay(harness: &dyn QueueHarness) {
    let c = Case::new("retry_waits_for_its_delay", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    let now = c.now();
    let retry = CompleteAs::Retry {
        delay: Duration::from_secs(60),
        error: error("boom"),
    };
    ensure!(
        c,
        c.complete(&claimed.lease, retry) == Completed::Applied,
        "retry completion"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Retrying,
        "expected retrying, got {}",
        row.state
    );
    c.near(
        "retry run_at",
        Some(row.run_at),
        now + chrono::Duration::seconds(60),
    );
    ensure!(
        c,
        row.errors.len() == 1
            && row.errors[0].attempt == 1
            && row.errors[0].kind == ErrorKind::Retryable
            && row.errors[0].message == "boom",
        "the error history must hold attempt 1's error: {:?}",
        row.errors
    );
    c.near("error time", Some(row.errors[0].at), now);
    c.advance(Duration::from_secs(55));
    ensure!(
        c,
        c.claim(1).is_empty(),
        "claimed before its backoff passed"
    );
    c.advance(Duration::from_secs(6));
    let next = c.claim_one();
    ensure!(
        c,
        next.lease.fence == 2 && next.lease.attempt == 2,
        "second claim: expected fence 2, attempt 2, got {:?}",
        next.lease
    );
}

/// A snooze gives the attempt back; with no delay the job is pending at once.
pub fn snooze_gives_the_attempt_back(harness: &dyn QueueHarness) {
    let c = Case::new("snooze_gives_the_attempt_back", harness);
    let id = c.enqueue(c.new_job("a"));
    let first = c.claim_one();
    let snooze = CompleteAs::Snooze {
        delay: Duration::from_secs(30),
        error: None,
    };
    ensure!(
        c,
        c.complete(&first.lease, snooze) == Completed::Applied,
        "snooze"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Scheduled && row.attempts == 0 && row.errors.is_empty(),
        "after a snooze: expected scheduled, attempts 0, no error, got {row:?}"
    );
    c.advance(PAST_TTL);
    let second = c.claim_one();
    ensure!(
        c,
        second.lease.attempt == 1 && second.lease.fence == 2,
        "after a snooze the attempt is 1 again and the fence still grows: {:?}",
        second.lease
    );
    let release = CompleteAs::Snooze {
        delay: Duration::ZERO,
        error: Some(AttemptError::new(ErrorKind::ShutDown, "bye")),
    };
    ensure!(
        c,
        c.complete(&second.lease, release) == Completed::Applied,
        "release"
    );
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Pending && row.attempts == 0 && row.errors.len() == 1,
        "a release without delay: pending, attempts 0, its error recorded: {row:?}"
    );
}

/// The error history keeps the last [`MAX_ERROR_HISTORY`] errors, oldest first; a dead job keeps
/// it and is finished.
pub fn dead_letter_keeps_bounded_error_history(harness: &dyn QueueHarness) {
    let c = Case::new("dead_letter_keeps_bounded_error_history", harness);
    let mut job = c.new_job("a");
    job.max_attempts = 40;
    let id = c.enqueue(job);
    let total = MAX_ERROR_HISTORY + 5;
    for n in 1..=total {
        let claimed = c.claim_one();
        let outcome = if n == total {
            CompleteAs::Dead {
                error: AttemptError::new(ErrorKind::Fatal, format!("error {n}")),
            }
        } else {
            CompleteAs::Retry {
                delay: Duration::ZERO,
                error: error(&format!("error {n}")),
            }
        };
        ensure!(
            c,
            c.complete(&claimed.lease, outcome) == Completed::Applied,
            "completion {n}"
        );
    }
    let row = c.get(id);
    ensure!(
        c,
        row.state == QueueState::Dead && row.finished_at.is_some(),
        "expected dead and finished: {row:?}"
    );
    let messages: Vec<&str> = row.errors.iter().map(|e| e.message.as_str()).collect();
    let attempts: Vec<u32> = row.errors.iter().map(|e| e.attempt).collect();
    ensure!(
        c,
        row.errors.len() == MAX_ERROR_HISTORY
            && messages.first() == Some(&"error 6")
            && messages.last() == Some(&format!("error {total}").as_str()),
        "expected the last {MAX_ERROR_HISTORY} errors, oldest first: {messages:?}"
    );
    ensure!(
        c,
        attempts.windows(2).all(|w| w[1] == w[0] + 1) && attempts.last() == Some(&(total as u32)),
        "each error carries its attempt: {attempts:?}"
    );
    ensure!(
        c,
        row.errors.last().map(|e| e.kind) == Some(ErrorKind::Fatal),
        "the last error's kind"
    );
}

/// Renewal extends the lease by the store clock, keeps it from the reaper, and is fenced.
pub fn renew_extends_the_lease(harness: &dyn QueueHarness) {
    let c = Case::new("renew_extends_the_lease", harness);
    let id = c.enqueue(c.new_job("a"));
    let claimed = c.claim_one();
    c.advance(Duration::from_secs(20));
    let now = c.now();
    match c.ok("renew", c.store.renew(&claimed.lease, None, TTL)) {
        Renewed::Extended(until) => c.near(
            "renewed expiry",
            Some(until),
            now + chrono::Duration::seconds(30),
        ),
        Renewed::Stale => c.fail(format_args!("the holder's renewal was stale")),
    }
    c.advance(Duration::from_secs(20));
    let reaped = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !reaped.iter().any(|r| r.id == id),
        "a renewed lease was reaped"
    );
    let mut wrong = claimed.lease.clone();
    wrong.fence += 1;
    ensure!(
        c,
        c.ok("renew", c.store.renew(&wrong, None, TTL)) == Renewed::Stale,
        "a wrong fence renewed the lease"
    );
}

/// The reaper takes expired leases only: it bumps the fence (the zombie's completion, renewal and
/// progress are then stale), requeues idempotent jobs, parks the others, and dead-letters an
/// idempotent job that was on its last attempt.
pub fn reaper_fences_out_zombies(harness: &dyn QueueHarness) {
    let c = Case::new("reaper_fences_out_zombies", harness);
    let requeued = c.enqueue(c.new_job("idempotent"));
    let mut risky = c.new_job("not_idempotent");
    risky.idempotent = false;
    let parked = c.enqueue(risky);
    let mut last = c.new_job("last_attempt");
    last.max_attempts = 1;
    let dead = c.enqueue(last);
    let claimed = c.claim(3);
    ensure!(c, claimed.len() == 3, "claim 3: got {}", claimed.len());
    c.advance(Duration::from_secs(10));
    let early = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !early
            .iter()
            .any(|r| [requeued, parked, dead].contains(&r.id)),
        "a live lease was reaped"
    );
    c.advance(PAST_TTL);
    let reaped: BTreeMap<JobId, QueueState> = c
        .ok("reap", c.store.reap(1000))
        .into_iter()
        .filter(|r| [requeued, parked, dead].contains(&r.id))
        .map(|r| (r.id, r.state))
        .collect();
    let want = BTreeMap::from([
        (requeued, QueueState::Retrying),
        (parked, QueueState::Parked),
        (dead, QueueState::Dead),
    ]);
    ensure!(
        c,
        reaped == want,
        "reaper: expected {want:?}, got {reaped:?}"
    );
    for cl in &claimed {
        let row = c.get(cl.job.id);
        ensure!(
            c,
            row.fence == cl.lease.fence + 1 && row.owner.is_none(),
            "the reaper must bump the fence and clear the owner: {row:?}"
        );
        ensure!(
            c,
            row.errors.last().map(|e| e.kind) == Some(ErrorKind::LeaseExpired),
            "the reaper records LeaseExpired: {:?}",
            row.errors
        );
        ensure!(
            c,
            c.complete(&cl.lease, CompleteAs::Succeeded) == Completed::Stale,
            "a zombie completed job {}",
            cl.job.id
        );
        ensure!(
            c,
            c.ok("renew", c.store.renew(&cl.lease, None, TTL)) == Renewed::Stale,
            "a zombie renewed job {}",
            cl.job.id
        );
    }
    let again = c.ok("reap", c.store.reap(1000));
    ensure!(
        c,
        !again.iter().any(|r| want.contains_key(&r.id)),
        "a job was reaped twice"
    );
    let next = c.claim(10);
    ensure!(
        c,
        next.len() == 1
            && next[0].job.id == requeued
            && next[0].lease.fence == 3
            && next[0].lease.attempt == 2,
        "only the requeued job is claimable, with fence 3 and attempt 2: {:?}",
        next.iter().map(|n| &n.lease).collect::<Vec<_>>()
    );
}
