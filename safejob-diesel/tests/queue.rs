//! The durable queue on every backend: the test kit's queue conformance suite, and what only SQL
//! shows — batches in one statement, enqueue inside the caller's transaction, SKIP LOCKED claims
//! under threads, LISTEN/NOTIFY wake-ups.

mod common;

use std::{
    collections::BTreeSet,
    sync::{Arc, Barrier},
    thread,
    time::Duration,
};

use common::{TestDb, claim_one, job, transaction};
use safejob_core::{
    KeyDigest,
    queue::{ClaimRequest, JobId, NewJob, QueueState, QueueStore},
};
use safejob_diesel::{ConnectionRef, queue::DieselQueue};
use safejob_test_kit::QueueHarness;

/// A test's database and the queue on it.
struct QueueDb {
    // Dropped first: the queue (and any listener) lets go of its connections before the
    // database is dropped.
    queue: Arc<DieselQueue>,
    // Held for its drop (which removes the test's database); read only by server-backend tests.
    #[allow(dead_code)]
    db: TestDb,
}

impl QueueHarness for QueueDb {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    /// The database clock cannot move; the queue's (and its store's) view of it can.
    fn advance(&self, by: Duration) {
        self.queue.advance_clock_for_tests(by);
    }
}

fn queue_db(db: TestDb) -> QueueDb {
    QueueDb {
        queue: Arc::new(DieselQueue::new(db.store.clone())),
        db,
    }
}

#[cfg(feature = "sqlite")]
fn sqlite(test: &str) -> QueueDb {
    queue_db(common::sqlite(test))
}

#[cfg(feature = "postgres")]
fn postgres(test: &str) -> Option<QueueDb> {
    common::postgres(test).map(queue_db)
}

#[cfg(feature = "mysql")]
fn mysql(test: &str) -> Option<QueueDb> {
    common::mysql(test).map(queue_db)
}

#[cfg(feature = "sqlite")]
mod sqlite_conformance {
    safejob_test_kit::queue_store_conformance!(|| crate::sqlite("qconf"));
}

#[cfg(feature = "postgres")]
mod postgres_conformance {
    // `None` (skipped) when SAFEJOB_TEST_POSTGRES_URL is not set, a failure when it is required.
    safejob_test_kit::queue_store_conformance!(optional || crate::postgres("qconf"));
}

#[cfg(feature = "mysql")]
mod mysql_conformance {
    safejob_test_kit::queue_store_conformance!(optional || crate::mysql("qconf"));
}

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour, each body on every backend.
// ---------------------------------------------------------------------------------------------

fn count_jobs(q: &QueueRef<'_>, predicate: &str) -> i64 {
    let cast = match q.db.backend() {
        safejob_diesel::BackendKind::Mysql => "SIGNED",
        _ => "BIGINT",
    };
    q.db.query_i64(&format!(
        "SELECT CAST(COUNT(*) AS {cast}) AS n FROM safe_queue_jobs WHERE {predicate}"
    ))
}

/// A batch's answers name their own jobs, in order, and its rows carry one statement's clock
/// (SQLite and MySQL read it per statement; `statements_per_operation` counts the statements).
fn batch_answers_follow_the_batch(q: &QueueRef<'_>) {
    let jobs: Vec<NewJob> = (0..500).map(|n| job("batch", n)).collect();
    let answers = q.queue.enqueue_many(&jobs).expect("enqueue_many");
    assert_eq!(answers.len(), 500);
    let ids: Vec<i64> = answers.iter().map(|a| a.id().0).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids follow the batch order"
    );
    for (answer, n) in answers.iter().zip(0..) {
        let row = q.queue.get(answer.id()).expect("get").expect("row");
        assert_eq!(row.payload["n"], n, "answer {n} names its own job");
    }
    let distinct_created = q.db.query_i64(&format!(
        "SELECT CAST(COUNT(DISTINCT created_at) AS {}) AS n FROM safe_queue_jobs WHERE kind = 'batch'",
        match q.db.backend() {
            safejob_diesel::BackendKind::Mysql => "SIGNED",
            _ => "BIGINT",
        }
    ));
    assert_eq!(
        distinct_created, 1,
        "all 500 rows carry one statement's clock: one INSERT"
    );
}

fn enqueue_in_commits_with_the_caller(q: &QueueRef<'_>) {
    // Rolled back: no job.
    let result = q.db.store.with_connection(|conn| {
        let queue = &q.queue;
        transaction(conn, |conn| {
            let answers = queue
                .enqueue_in(conn, &[job("in_tx", 1)])
                .map_err(|e| e.to_string())?;
            assert_eq!(answers.len(), 1);
            assert!(answers[0].id().0 > 0);
            Err::<(), String>("roll back".into())
        })
    });
    assert_eq!(result.expect("a connection"), Err("roll back".to_owned()));
    assert_eq!(
        count_jobs(q, "kind = 'in_tx'"),
        0,
        "a rolled back enqueue leaves no job"
    );
    // Committed: the job exists, with the caller's own write.
    let id =
        q.db.store
            .with_connection(|conn| {
                let queue = &q.queue;
                transaction(conn, |conn| {
                    let answers = queue
                        .enqueue_in(conn, &[job("in_tx", 2), job("in_tx", 3)])
                        .map_err(|e| e.to_string())?;
                    Ok::<JobId, String>(answers[0].id())
                })
            })
            .expect("a connection")
            .expect("committed");
    assert_eq!(count_jobs(q, "kind = 'in_tx'"), 2);
    let row = q.queue.get(id).expect("get").expect("the committed job");
    assert_eq!(row.state, QueueState::Pending);
    assert_eq!(row.payload["n"], 2);
}

fn threads_claim_each_job_once(q: &QueueRef<'_>) {
    const JOBS: usize = 200;
    const THREADS: usize = 8;
    let jobs: Vec<NewJob> = (0..JOBS).map(|n| job("race", n)).collect();
    q.queue.enqueue_many(&jobs).expect("enqueue");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let queue = q.queue.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let worker = format!("w{t}");
                let queues = ["default".to_owned()];
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let claimed = queue
                        .claim(&ClaimRequest {
                            worker: &worker,
                            queues: &queues,
                            limit: 7,
                            ttl: Duration::from_secs(60),
                        })
                        .expect("claim");
                    if claimed.is_empty() {
                        return mine;
                    }
                    for c in claimed {
                        assert_eq!(c.lease.owner, worker);
                        mine.push(c.job.id);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("claimer"));
    }
    let distinct: BTreeSet<JobId> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        JOBS,
        "every job claimed exactly once, none twice"
    );
    assert_eq!(distinct.len(), JOBS);
    assert_eq!(
        count_jobs(q, "state = 'running' AND fence = 1 AND attempts = 1"),
        JOBS as i64
    );
}

fn unique_key_race_inserts_one(q: &QueueRef<'_>) {
    const THREADS: usize = 8;
    let key = KeyDigest::of("unique race");
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|n| {
            let queue = q.queue.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut j = job("unique", n);
                j.unique_key = Some(key);
                barrier.wait();
                queue.enqueue(&j).expect("enqueue")
            })
        })
        .collect();
    let answers: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("enqueuer"))
        .collect();
    assert_eq!(
        answers.iter().filter(|a| !a.is_duplicate()).count(),
        1,
        "{answers:?}"
    );
    let ids: BTreeSet<JobId> = answers.iter().map(|a| a.id()).collect();
    assert_eq!(ids.len(), 1, "every duplicate names the live job");
    assert_eq!(count_jobs(q, "kind = 'unique'"), 1);
}

on_every_backend! {
    fn queue_batch_answers_follow_the_batch(db: &TestDb) {
        batch_answers_follow_the_batch(&queue_db_of(db));
    }

    fn queue_enqueue_in_transaction_commit_and_rollback(db: &TestDb) {
        enqueue_in_commits_with_the_caller(&queue_db_of(db));
    }

    fn queue_threads_claim_each_job_once(db: &TestDb) {
        threads_claim_each_job_once(&queue_db_of(db));
    }

    fn queue_unique_key_race_inserts_one(db: &TestDb) {
        unique_key_race_inserts_one(&queue_db_of(db));
    }
}

/// A queue on an existing test database (the database stays owned by the test).
fn queue_db_of(db: &TestDb) -> QueueRef<'_> {
    QueueRef {
        db,
        queue: Arc::new(DieselQueue::new(db.store.clone())),
    }
}

/// Like [`QueueDb`], borrowing the database.
struct QueueRef<'a> {
    db: &'a TestDb,
    queue: Arc<DieselQueue>,
}

// The pool case that needs a real clock (not in the conformance list): an enqueue wakes a pool
// that polls once a minute (PostgreSQL: LISTEN/NOTIFY; SQLite and MySQL: the in-process wake of
// `DieselQueue`), and a snoozed guarded duplicate is claimed again when its snooze ends.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_pool_wakes_for_enqueues_and_short_snoozes() {
    safejob_test_kit::queue_conformance::pool_wakes_for_enqueues_and_short_snoozes(&sqlite(
        "pool_wakes",
    ));
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_pool_wakes_for_enqueues_and_short_snoozes() {
    if let Some(q) = postgres("pool_wakes") {
        safejob_test_kit::queue_conformance::pool_wakes_for_enqueues_and_short_snoozes(&q);
    }
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_pool_wakes_for_enqueues_and_short_snoozes() {
    if let Some(q) = mysql("pool_wakes") {
        safejob_test_kit::queue_conformance::pool_wakes_for_enqueues_and_short_snoozes(&q);
    }
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_listen_notify_wakes_a_subscriber() {
    use safejob_core::queue::Waker;
    let Some(q) = postgres("listen_notify") else {
        return;
    };
    let waker = Waker::new();
    q.queue.subscribe(waker.clone()).expect("subscribe");
    // The listener wakes everyone once when its LISTEN is in place (anything enqueued before it
    // could not be heard); wait for that, so the next wake-up can only be the notification.
    assert!(
        waker.wait(Duration::from_secs(30)),
        "the listener never started"
    );
    // Another store (other connections) enqueues: the notification crosses connections.
    let producer = DieselQueue::new(Arc::new(q.db.builder().build().expect("a second store")));
    producer.enqueue(&job("wake", 1)).expect("enqueue");
    assert!(
        waker.wait(Duration::from_secs(30)),
        "no wake-up after an enqueue on another connection"
    );
}

/// Grouped completions are the pools' default on SQLite only (each commit an fsync of its own);
/// PostgreSQL and MariaDB say no (their servers share log flushes; grouping measured 0.95× on
/// PostgreSQL). Catches a preference that stops depending on the backend.
#[test]
fn completion_grouping_is_preferred_on_sqlite_only() {
    #[cfg(feature = "sqlite")]
    assert!(sqlite("groups_completions").queue.groups_completions());
    #[cfg(feature = "postgres")]
    if let Some(q) = postgres("groups_completions") {
        assert!(!q.queue.groups_completions());
    }
    #[cfg(feature = "mysql")]
    if let Some(q) = mysql("groups_completions") {
        assert!(!q.queue.groups_completions());
    }
}

/// A queue on a database that was never migrated says how to migrate, as a typed error.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_missing_queue_table_is_a_typed_error() {
    use safejob_core::store::StoreError;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("empty.db").display());
    let store = safejob_diesel::DieselStore::connect(&url).expect("store");
    let queue = DieselQueue::new(Arc::new(store));
    match queue.enqueue(&job("nowhere", 1)) {
        Err(StoreError::MissingTable { hint }) => {
            assert!(hint.contains("migrate"), "{hint}");
            assert!(hint.contains("safe_queue_jobs"), "{hint}");
            // Said once (issue #14: "call DieselStore::migrate() or call DieselStore::migrate()
            // or run …").
            assert_eq!(hint.matches("DieselStore::migrate()").count(), 1, "{hint}");
        }
        other => panic!("expected MissingTable, got {other:?}"),
    }
    assert!(matches!(
        queue.snapshot(),
        Err(StoreError::MissingTable { .. })
    ));
}

/// A batch larger than one statement carries is inserted in chunks, atomically, answers in
/// order.
#[cfg(feature = "sqlite")]
#[test]
fn sqlite_batches_beyond_one_statement_are_chunked_in_order() {
    use safejob_core::queue::JobQuery;
    let q = sqlite("big_batch");
    let n = safejob_diesel::queue::MAX_ROWS_PER_STATEMENT + 500;
    let jobs: Vec<NewJob> = (0..n).map(|i| job("big", i)).collect();
    let answers = q.queue.enqueue_many(&jobs).expect("enqueue");
    assert_eq!(answers.len(), n);
    let listed = q
        .queue
        .list(&JobQuery {
            limit: n + 1,
            ..JobQuery::default()
        })
        .expect("list");
    assert_eq!(listed.len(), n);
    for (i, (answer, row)) in answers.iter().zip(&listed).enumerate() {
        assert_eq!(answer.id(), row.id, "answer {i}");
        assert_eq!(row.payload["n"], i);
    }
}

/// MySQL lock-wait timeouts (1205) are retried inside the queue: an unguarded completion (one
/// statement) and a guarded one (a transaction, retried whole) both wait out another session's
/// row lock that outlives the store's 1 s lock wait once.
#[cfg(feature = "mysql")]
#[test]
fn mysql_lock_wait_timeouts_are_retried_inside_the_queue() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use diesel::connection::{InstrumentationEvent, SimpleConnection};
    use safejob_core::{
        Fingerprint,
        queue::{CompleteAs, Completed, Completion, GuardFinish, GuardSpec},
        store::Acquired,
    };

    let Some(q) = mysql("queue_lock_wait") else {
        return;
    };
    let completions = Arc::new(AtomicUsize::new(0));
    let counter = completions.clone();
    let slow =
        q.db.builder_with(move |conn| {
            let ConnectionRef::Mysql(c) = conn else {
                unreachable!()
            };
            c.batch_execute("SET SESSION innodb_lock_wait_timeout = 1")?;
            let counter = counter.clone();
            diesel::Connection::set_instrumentation(
                &mut **c,
                move |event: InstrumentationEvent<'_>| {
                    if let InstrumentationEvent::StartQuery { query, .. } = event
                        && query
                            .to_string()
                            .starts_with("UPDATE safe_queue_jobs SET owner = NULL")
                    {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                },
            );
            Ok(())
        })
        .max_size(1)
        .build()
        .expect("a store with a 1 s lock wait");
    let slow = DieselQueue::new(Arc::new(slow));
    for guarded in [false, true] {
        let mut new = job("lock_wait", usize::from(guarded));
        new.queue = format!("lock_wait_{guarded}");
        if guarded {
            new.guard = Some(GuardSpec {
                digest: KeyDigest::of("lock wait guard"),
                fingerprint: Some(Fingerprint::of_bytes(b"p")),
            });
        }
        q.queue.enqueue(&new).expect("enqueue");
        let claimed = claim_one(&*q.queue, &new.queue);
        let guard_lease = match &claimed.guard {
            Some(Acquired::Granted(lease)) => Some(lease.clone()),
            None => None,
            other => panic!("guard answer {other:?}"),
        };
        completions.store(0, Ordering::SeqCst);
        let mut holder =
            <diesel::MysqlConnection as diesel::Connection>::establish(&q.db.url).unwrap();
        holder
            .batch_execute(&format!(
                "BEGIN; SELECT fence FROM safe_queue_jobs WHERE id = {} FOR UPDATE",
                claimed.job.id
            ))
            .unwrap();
        let watched = completions.clone();
        let release = thread::spawn(move || {
            while watched.load(Ordering::SeqCst) < 2 {
                thread::yield_now();
            }
            holder.batch_execute("COMMIT").unwrap();
        });
        let done = slow.complete(
            &Completion {
                lease: &claimed.lease,
                outcome: CompleteAs::Succeeded,
                progress: None,
                guard: guard_lease.as_ref().map(|lease| GuardFinish::Succeeded {
                    lease,
                    result: None,
                    effects_ttl: Duration::from_secs(60),
                    has_effects: true,
                    retention: safejob_core::Retention::Forever,
                }),
                batch: None,
            },
            None,
        );
        release.join().unwrap();
        assert!(
            matches!(done, Ok(Completed::Applied)),
            "guarded {guarded}: {done:?}"
        );
        assert!(
            completions.load(Ordering::SeqCst) >= 2,
            "guarded {guarded}: the completion was not retried"
        );
        let row = q.queue.get(claimed.job.id).unwrap().unwrap();
        assert_eq!(row.state, QueueState::Succeeded);
    }
}

/// A claim skips a job another session holds locked instead of waiting for it (`FOR UPDATE SKIP
/// LOCKED`): with a short lock timeout on the claimer, waiting would fail the claim.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn claims_skip_locked_rows(q: &QueueDb, lock_timeout: &'static str) {
    let jobs: Vec<NewJob> = (0..5).map(|n| job("skip", n)).collect();
    let ids: Vec<JobId> = q
        .queue
        .enqueue_many(&jobs)
        .expect("enqueue")
        .iter()
        .map(|a| a.id())
        .collect();
    let claimer =
        q.db.builder_with(move |conn| conn.batch_execute(lock_timeout))
            .build()
            .expect("a claimer with a short lock timeout");
    let claimer = DieselQueue::new(Arc::new(claimer));
    // Another session locks the first (highest in claim order) job and keeps it locked.
    let lock = format!(
        "BEGIN; SELECT id FROM safe_queue_jobs WHERE id = {} FOR UPDATE",
        ids[0]
    );
    let claimed =
        q.db.store
            .with_connection(|conn| {
                conn.batch_execute(&lock).expect("lock the first job");
                let queues = ["default".to_owned()];
                let claimed = claimer.claim(&ClaimRequest {
                    worker: "w",
                    queues: &queues,
                    limit: 10,
                    ttl: Duration::from_secs(60),
                });
                conn.batch_execute("ROLLBACK").expect("unlock");
                claimed
            })
            .expect("a connection")
            .expect("the claim skipped the locked row instead of waiting for it");
    let got: Vec<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(
        got,
        ids[1..].to_vec(),
        "every job but the locked one, in order"
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_claims_skip_locked_rows() {
    let Some(q) = postgres("skip_locked") else {
        return;
    };
    claims_skip_locked_rows(&q, "SET lock_timeout = '2s'");
}

/// PostgreSQL completes a guarded success in one statement that updates the job only where the
/// guard is still held, then finalizes the guard. Here the guard is taken over by another session
/// after the statement's snapshot (its check passes) and before the statement locks the guard row
/// (it waits for that session, which then commits): the statement must fail rather than leave the
/// job succeeded with its guard not, and the completion must answer `GuardStale` having changed
/// nothing.
#[cfg(feature = "postgres")]
#[test]
fn postgres_guard_taken_over_under_the_one_statement_completion_changes_nothing() {
    guard_taken_over_under_the_one_statement_completion("guard_race", false);
}

/// The same race with transactional effects: the statement's in-transaction rendering applies
/// the job's half alone, answers `GuardStale`, and the transaction is rolled back before the hook
/// could run. Catches the answer's `(1, 0, _)` arm (job applied, guard not) read as `Applied` —
/// tried: the completion answered `EffectsAborted` after running the hook (the confirm caught
/// it) instead of `GuardStale` without running it; without the confirm it committed the job
/// `succeeded` with the guard still the outsider's.
#[cfg(feature = "postgres")]
#[test]
fn postgres_guard_taken_over_under_the_transactional_completion_runs_no_hook() {
    guard_taken_over_under_the_one_statement_completion("guard_race_hook", true);
}

#[cfg(feature = "postgres")]
fn guard_taken_over_under_the_one_statement_completion(test: &str, with_hook: bool) {
    use std::sync::atomic::{AtomicBool, Ordering};

    use safejob_core::{
        Fingerprint, JobState, LeaseStore,
        queue::{CompleteAs, Completed, Completion, GuardFinish, GuardSpec},
        store::{Acquired, EffectsAborted},
    };
    let Some(q) = postgres(test) else {
        return;
    };
    let hook_ran = AtomicBool::new(false);
    let digest = KeyDigest::of("a guard taken over mid-statement");
    let mut new = job("raced", 1);
    new.guard = Some(GuardSpec {
        digest,
        fingerprint: Some(Fingerprint::of_bytes(b"params")),
    });
    let id = q.queue.enqueue(&new).expect("enqueue").id();
    let claimed = claim_one(&*q.queue, "default");
    let Some(Acquired::Granted(glease)) = claimed.guard.clone() else {
        panic!("expected the guard granted, got {:?}", claimed.guard);
    };
    let app = format!(
        "outsider_{}",
        q.db.schema.as_deref().expect("a schema per test")
    );
    let take_over = format!(
        "SET application_name = '{app}'; BEGIN; \
         UPDATE safe_jobs SET fence = fence + 1, owner = 'outsider' WHERE digest = {}",
        q.db.blob(digest.as_bytes())
    );
    let completion_waits = format!(
        "SELECT CAST(count(*) AS BIGINT) AS n FROM pg_stat_activity w, pg_stat_activity o \
         WHERE o.application_name = '{app}' AND o.pid = ANY(pg_blocking_pids(w.pid))"
    );
    let outsider = q.db.builder().max_size(1).build().expect("an outsider");
    let done = outsider
        .with_connection(|conn| {
            conn.batch_execute(&take_over)
                .expect("take the guard over, uncommitted");
            thread::scope(|s| {
                let completing = s.spawn(|| {
                    let mut hook = |_: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
                        hook_ran.store(true, Ordering::SeqCst);
                        Ok(())
                    };
                    q.queue.complete(
                        &Completion {
                            lease: &claimed.lease,
                            outcome: CompleteAs::Succeeded,
                            progress: None,
                            guard: Some(GuardFinish::Succeeded {
                                lease: &glease,
                                result: None,
                                effects_ttl: Duration::from_secs(60),
                                has_effects: true,
                                retention: safejob_core::Retention::Forever,
                            }),
                            batch: None,
                        },
                        if with_hook { Some(&mut hook) } else { None },
                    )
                });
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while q.db.query_i64(&completion_waits) == 0 {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the completion never waited for the guard row"
                    );
                    thread::sleep(Duration::from_millis(5));
                }
                conn.batch_execute("COMMIT").expect("commit the takeover");
                completing.join().expect("the completion did not panic")
            })
        })
        .expect("a connection")
        .expect("complete");
    assert_eq!(done, Completed::GuardStale);
    assert!(
        !hook_ran.load(Ordering::SeqCst),
        "the hook ran for a stale guard"
    );
    let row = q.queue.get(id).expect("get").expect("the job");
    assert_eq!(
        (row.state, row.fence),
        (QueueState::Running, claimed.lease.fence),
        "the job must be untouched: {row:?}"
    );
    let guard = q.db.store.get(&digest).expect("get").expect("the guard");
    assert_eq!(
        (guard.state, guard.fence, guard.owner.as_deref()),
        (JobState::Running, glease.fence + 1, Some("outsider")),
        "the guard must be the outsider's: {guard:?}"
    );
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_claims_skip_locked_rows() {
    let Some(q) = mysql("skip_locked") else {
        return;
    };
    claims_skip_locked_rows(&q, "SET SESSION innodb_lock_wait_timeout = 1");
}

/// PostgreSQL claims in one statement in autocommit, then acquires the guards of keys that exist
/// already. When one of those acquires fails, the jobs the statement claimed and the guards it
/// granted are given back at once, not left `running` under the worker until their leases end.
/// Catches `claim_at_once` calling `guards_and_leases` instead of
/// `guards_and_leases_or_give_back` — tried: both jobs stayed `running` and the fresh key's
/// guard stayed `running`.
#[cfg(feature = "postgres")]
#[test]
fn postgres_a_claim_whose_guard_acquire_fails_gives_its_jobs_back() {
    use safejob_core::{
        LeaseStore,
        queue::GuardSpec,
        store::{AcquireRequest, Acquired, JobState, StoreError},
    };
    let Some(q) = postgres("give_back") else {
        return;
    };
    let store = q.db.store.clone();
    // A key that exists, released, with a stored result that is not JSON: the follow-up
    // acquire reads the row and reports it corrupt.
    let corrupt = KeyDigest::of("give-back-corrupt");
    let req = AcquireRequest {
        digest: corrupt,
        fingerprint: None,
        owner: "earlier",
        ttl: Duration::from_secs(60),
    };
    let Acquired::Granted(lease) = store.acquire(&req).unwrap() else {
        panic!("a fresh key is granted");
    };
    store.release(&lease, None).unwrap();
    q.db.execute(&format!(
        "UPDATE safe_jobs SET result = 'not json' WHERE digest = {}",
        q.db.blob(corrupt.as_bytes())
    ));
    let fresh = KeyDigest::of("give-back-fresh");
    for digest in [fresh, corrupt] {
        let mut new = job("give_back", 0);
        new.guard = Some(GuardSpec {
            digest,
            fingerprint: None,
        });
        q.queue.enqueue(&new).unwrap();
    }

    let queues = ["default".to_owned()];
    let claimed = q.queue.claim(&ClaimRequest {
        worker: "w",
        queues: &queues,
        limit: 2,
        ttl: Duration::from_secs(60),
    });
    assert!(
        matches!(claimed, Err(StoreError::CorruptRow { .. })),
        "{claimed:?}"
    );
    let q_ref = QueueRef {
        db: &q.db,
        queue: q.queue.clone(),
    };
    assert_eq!(
        count_jobs(&q_ref, "state = 'running'"),
        0,
        "claimed jobs left running"
    );
    assert_eq!(count_jobs(&q_ref, "state = 'pending'"), 2);
    let guard = store
        .get(&fresh)
        .unwrap()
        .expect("the fresh key's guard row");
    assert_eq!(guard.state, JobState::Released);
}
