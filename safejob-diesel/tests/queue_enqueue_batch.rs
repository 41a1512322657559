//! Batched enqueue on every backend, beyond the conformance suite: empty batches, batches larger
//! than one statement, unique-key conflicts inside a batch (against live jobs and against earlier
//! jobs of the batch), and every column's value surviving the trip (quotes, backslashes, braces,
//! NULs, instants, guards) — the PostgreSQL path binds each column as one array literal.

#[macro_use]
mod common;

use std::{sync::Arc, time::Duration};

use common::{TestDb, job};
use safejob_core::{
    Fingerprint, KeyDigest,
    queue::{Enqueued, GuardSpec, JobId, JobQuery, NewJob, QueueState, QueueStore, RunAt},
};
use safejob_diesel::queue::DieselQueue;
use serde_json::json;

fn queue_of(db: &TestDb) -> Arc<DieselQueue> {
    Arc::new(DieselQueue::new(db.store.clone()))
}

fn count_jobs(db: &TestDb, predicate: &str) -> usize {
    let cast = match db.backend() {
        safejob_diesel::BackendKind::Mysql => "SIGNED",
        _ => "BIGINT",
    };
    let n = db.query_i64(&format!(
        "SELECT CAST(COUNT(*) AS {cast}) AS n FROM safe_queue_jobs WHERE {predicate}"
    ));
    usize::try_from(n).expect("a count")
}

fn list_all(queue: &DieselQueue, n: usize) -> Vec<safejob_core::queue::QueuedJob> {
    queue
        .list(&JobQuery {
            limit: n + 1,
            ..JobQuery::default()
        })
        .expect("list")
}

fn empty_batch(db: &TestDb) {
    let queue = queue_of(db);
    assert!(queue.enqueue_many(&[]).expect("empty batch").is_empty());
    assert_eq!(count_jobs(db, "1 = 1"), 0);
}

fn batch_of_5000(db: &TestDb) {
    let queue = queue_of(db);
    let n = 5000;
    let jobs: Vec<NewJob> = (0..n).map(|i| job("big", i)).collect();
    let answers = queue.enqueue_many(&jobs).expect("enqueue");
    assert_eq!(answers.len(), n);
    assert!(answers.iter().all(|a| !a.is_duplicate()));
    assert!(
        answers.windows(2).all(|w| w[0].id() < w[1].id()),
        "ids increase in batch order"
    );
    let listed = list_all(&queue, n);
    assert_eq!(listed.len(), n);
    for (i, (answer, row)) in answers.iter().zip(&listed).enumerate() {
        assert_eq!(answer.id(), row.id, "answer {i}");
        assert_eq!(row.payload["n"], i, "row {i}");
        assert_eq!(row.state, QueueState::Pending);
    }
}

/// 3,000 jobs, in chunks beyond one statement: every 7th reuses a key a live job already holds,
/// some repeat a key used earlier in the batch, the rest are new (keyed or not).
fn unique_conflicts_in_a_large_batch(db: &TestDb) {
    let queue = queue_of(db);
    let held: Vec<NewJob> = (0..20)
        .map(|i| {
            let mut j = job("held", i);
            j.unique_key = Some(KeyDigest::of(&format!("held {i}")));
            j
        })
        .collect();
    let held_ids: Vec<JobId> = queue
        .enqueue_many(&held)
        .expect("holders")
        .iter()
        .map(Enqueued::id)
        .collect();

    let n = 3000;
    let mut expect_holder: Vec<Option<JobId>> = vec![None; n];
    let mut expect_first: Vec<Option<usize>> = vec![None; n];
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            let mut j = job("mixed", i);
            if i % 7 == 3 {
                let h = i % held.len();
                j.unique_key = Some(KeyDigest::of(&format!("held {h}")));
                expect_holder[i] = Some(held_ids[h]);
            } else if i % 5 == 4 {
                // Repeats the key of the job before when that one is a new keyed job.
                let first = i - 1;
                if first % 7 != 3 && first % 2 == 0 {
                    j.unique_key = Some(KeyDigest::of(&format!("new {first}")));
                    expect_first[i] = Some(first);
                }
            } else if i % 2 == 0 {
                j.unique_key = Some(KeyDigest::of(&format!("new {i}")));
            }
            j
        })
        .collect();
    let answers = queue.enqueue_many(&jobs).expect("enqueue");
    assert_eq!(answers.len(), n);
    let mut last_inserted: Option<JobId> = None;
    let mut inserted = 0;
    for (i, answer) in answers.iter().enumerate() {
        if let Some(holder) = expect_holder[i] {
            assert!(answer.is_duplicate(), "job {i}: {answer:?}");
            assert_eq!(answer.id(), holder, "job {i} names the live holder");
        } else if let Some(first) = expect_first[i] {
            assert!(answer.is_duplicate(), "job {i}: {answer:?}");
            assert_eq!(
                answer.id(),
                answers[first].id(),
                "job {i} names job {first}"
            );
        } else {
            assert!(!answer.is_duplicate(), "job {i}: {answer:?}");
            if let Some(last) = last_inserted {
                assert!(answer.id() > last, "job {i}: ids increase in batch order");
            }
            last_inserted = Some(answer.id());
            inserted += 1;
            let row = queue.get(answer.id()).expect("get").expect("row");
            assert_eq!(row.payload["n"], i, "job {i}'s answer names its own row");
            assert_eq!(row.unique_key, jobs[i].unique_key, "job {i}");
        }
    }
    assert_eq!(count_jobs(db, "kind = 'mixed'"), inserted);
    assert_eq!(count_jobs(db, "kind = 'held'"), 20);
}

/// Every column of a batch, with text that array literals must escape.
fn values_survive_the_batch(db: &TestDb) {
    let queue = queue_of(db);
    let awkward = [
        "",
        "NULL",
        "null",
        "plain",
        "quote \" inside",
        "back\\slash \\\\ and \\\"",
        "{braces}, commas, (parens)",
        "trailing backslash \\",
        "ünïcødé ✓ 😀",
        "new\nline\ttab\r",
        "nul \0 byte",
        "  spaced  ",
    ];
    let mut jobs = Vec::new();
    for (i, text) in awkward.iter().enumerate() {
        // Kind and queue are bound as given (PostgreSQL text refuses a NUL, batched or not).
        let name = text.replace('\0', "");
        let mut j = job(&format!("kind {name}"), i);
        j.queue = format!("queue {name}");
        j.payload = json!({ "n": i, "text": text, "nested": [text, { "k": text }] });
        j.metadata = json!({ "m": text });
        j.priority = i16::try_from(i).expect("small") - 6;
        j.max_attempts = u32::try_from(i).expect("small");
        j.idempotent = i % 2 == 0;
        if i % 3 == 0 {
            j.unique_key = Some(KeyDigest::of(&format!("value {i}")));
        }
        if i % 4 == 1 {
            j.guard = Some(GuardSpec {
                digest: KeyDigest::of(&format!("guard {i}")),
                fingerprint: (i % 8 == 1).then(|| Fingerprint::of_bytes(text.as_bytes())),
            });
        }
        jobs.push(j);
    }
    let probe = queue.enqueue(&job("probe", 0)).expect("probe").id();
    let now = queue
        .get(probe)
        .expect("get")
        .expect("probe row")
        .created_at;
    let at = now + Duration::from_secs(3600);
    let mut later = job("at", 100);
    later.run_at = RunAt::At(at);
    jobs.push(later);
    let mut past = job("past", 101);
    past.run_at = RunAt::At(now - Duration::from_secs(3600));
    jobs.push(past);
    let mut after = job("after", 102);
    after.run_at = RunAt::After(Duration::from_secs(90));
    jobs.push(after);

    let answers = queue.enqueue_many(&jobs).expect("enqueue");
    assert_eq!(answers.len(), jobs.len());
    for (i, (new, answer)) in jobs.iter().zip(&answers).enumerate() {
        assert!(!answer.is_duplicate(), "job {i}");
        let row = queue.get(answer.id()).expect("get").expect("row");
        // JSON escapes a NUL (`\u0000`): payloads keep it on every backend.
        let (expected, metadata) = (new.payload.clone(), new.metadata.clone());
        assert_eq!(row.payload, expected, "job {i} payload");
        assert_eq!(row.metadata, metadata, "job {i} metadata");
        assert_eq!(row.kind, new.kind, "job {i} kind");
        assert_eq!(row.queue, new.queue, "job {i} queue");
        assert_eq!(row.priority, new.priority, "job {i} priority");
        assert_eq!(
            row.max_attempts,
            new.max_attempts.max(1),
            "job {i} max_attempts"
        );
        assert_eq!(
            row.idempotent,
            new.idempotent || new.guard.is_some(),
            "job {i} idempotent"
        );
        assert_eq!(row.unique_key, new.unique_key, "job {i} unique_key");
        assert_eq!(row.guard, new.guard, "job {i} guard");
        assert_eq!(row.attempts, 0);
        assert_eq!(row.fence, 0);
        assert!(row.errors.is_empty());
        match new.run_at {
            RunAt::Now => {
                assert_eq!(row.state, QueueState::Pending, "job {i}");
                assert_eq!(row.run_at, row.created_at, "job {i}");
            }
            RunAt::At(at) => {
                let expected = if at > row.created_at {
                    QueueState::Scheduled
                } else {
                    QueueState::Pending
                };
                assert_eq!(row.state, expected, "job {i}");
                let diff = (row.run_at - at).num_microseconds().expect("small");
                assert_eq!(diff, 0, "job {i}: run_at {} for {at}", row.run_at);
            }
            RunAt::After(d) => {
                assert_eq!(row.state, QueueState::Scheduled, "job {i}");
                let diff = (row.run_at - row.created_at).num_microseconds();
                assert_eq!(diff, Some(i64::try_from(d.as_micros()).expect("small")));
            }
        }
    }
}

on_every_backend! {
    fn enqueue_empty_batch(db: &TestDb) {
        empty_batch(db);
    }

    fn enqueue_batch_of_5000(db: &TestDb) {
        batch_of_5000(db);
    }

    fn enqueue_batch_unique_conflicts(db: &TestDb) {
        unique_conflicts_in_a_large_batch(db);
    }

    fn enqueue_batch_values(db: &TestDb) {
        values_survive_the_batch(db);
    }
}
