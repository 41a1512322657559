//! `AsyncQueue` and `AsyncWorkerPool` from async code: enqueues that wait on a database lock and
//! a pool shutdown that waits for a running job leave the executor free.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use common::{Gate, NotReleased, TEST_TIMEOUT, sqlite, sqlite_path};
use diesel::{Connection, SqliteConnection, connection::SimpleConnection};
use safejob_core::{
    IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
    queue::{
        EnqueueError, EnqueueOptions, GuardedJob, MemoryQueue, Queue, QueueJob, QueueState,
        Registry, WorkContext, WorkError, Worker,
    },
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use safejob_tokio::{AsyncError, AsyncQueue, AsyncWorkerPool};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout};

#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
}

impl QueueJob for Email {
    const KIND: &'static str = "email";
    type Error = std::io::Error;

    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Payout {
    id: String,
}

impl SafeJob for Payout {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["payout", &self.id])
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "payout";
}

/// Every enqueue of the facade, then `get`, against `queue`.
async fn enqueue_everything(queue: &AsyncQueue) {
    let one = queue
        .enqueue(Email { to: "a".into() })
        .await
        .expect("enqueued");
    let unique = EnqueueOptions::new().unique_key("welcome:b");
    let first = queue
        .enqueue_with(Email { to: "b".into() }, unique.clone())
        .await
        .expect("enqueued");
    let again = queue
        .enqueue_with(Email { to: "b".into() }, unique)
        .await
        .expect("a duplicate, answered");
    assert!(
        again.is_duplicate(),
        "the Queue's unique-key semantics hold"
    );
    assert_eq!(again.id(), first.id());
    let guarded = queue
        .enqueue_guarded(Payout { id: "p1".into() }, EnqueueOptions::new())
        .await
        .expect("enqueued");
    let many = queue
        .enqueue_many(
            (0..3)
                .map(|i| Email {
                    to: format!("m{i}"),
                })
                .collect(),
            EnqueueOptions::new(),
        )
        .await
        .expect("enqueued");
    assert_eq!(many.len(), 3);
    for (id, kind) in [(one.id(), "email"), (guarded.id(), "payout")]
        .into_iter()
        .chain(many.iter().map(|e| (e.id(), "email")))
    {
        let job = queue.get(id).await.expect("readable").expect("stored");
        assert_eq!(job.kind, kind);
        assert_eq!(job.state, QueueState::Pending);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_enqueue_works_on_the_memory_queue() {
    let queue = AsyncQueue::from(Queue::new(Arc::new(MemoryQueue::new())));
    enqueue_everything(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_enqueue_works_on_sqlite() {
    let (store, _dir) = sqlite();
    let queue = AsyncQueue::from(Queue::new(Arc::new(DieselQueue::new(store))));
    enqueue_everything(&queue).await;
}

// An enqueue error is the Queue's own `EnqueueError`, in `Failed`.
#[tokio::test(flavor = "current_thread")]
async fn an_enqueue_error_is_the_queues_own() {
    let queue = AsyncQueue::from(Queue::new(Arc::new(MemoryQueue::new())));
    let error = queue
        .enqueue_guarded(Payout { id: "\n".into() }, EnqueueOptions::new())
        .await
        .expect_err("a control character in the key");
    assert!(
        matches!(error, AsyncError::Failed(EnqueueError::InvalidKey(_))),
        "{error:?}"
    );
}

// While another connection holds SQLite's write lock, three enqueues wait for it on the
// blocking pool; a task that sleeps on the executor then commits the other transaction, and the
// enqueues go through. Catches: enqueues made on the executor thread (checked by replacing
// `spawn_blocking(call).await` in `blocking` with `Ok(call())`: the first enqueue holds the only
// thread for the whole busy timeout, the committing task cannot run, and the enqueue fails with
// "database is locked").
#[tokio::test(flavor = "current_thread")]
async fn enqueues_waiting_on_a_sqlite_lock_leave_the_executor_free() {
    let (_store, dir) = sqlite();
    let path = sqlite_path(&dir);
    let store = DieselStore::builder(&format!("sqlite://{path}"))
        .sqlite_busy_timeout(Duration::from_secs(3))
        .build()
        .expect("SQLite opens");
    let queue = AsyncQueue::from(Queue::new(Arc::new(DieselQueue::new(Arc::new(store)))));

    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let (commit, commit_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let mut conn = SqliteConnection::establish(&path).expect("a second connection");
        conn.batch_execute("BEGIN IMMEDIATE")
            .expect("the write lock");
        let _ = locked_tx.send(());
        let _ = commit_rx.recv_timeout(Duration::from_secs(20));
        conn.batch_execute("COMMIT").expect("commit");
    });
    locked.await.expect("the lock is held");
    let committer = tokio::spawn(async move {
        sleep(Duration::from_millis(300)).await;
        let _ = commit.send(());
    });

    let (one, guarded, many) = timeout(TEST_TIMEOUT, async {
        tokio::join!(
            queue.enqueue(Email { to: "a".into() }),
            queue.enqueue_guarded(Payout { id: "p1".into() }, EnqueueOptions::new()),
            queue.enqueue_many(vec![Email { to: "b".into() }], EnqueueOptions::new()),
        )
    })
    .await
    .expect("the enqueues finish");
    committer.await.expect("the committer ran");
    holder.join().expect("the lock holder finished");
    let one = one.expect("enqueued once the lock was free");
    guarded.expect("enqueued once the lock was free");
    many.expect("enqueued once the lock was free");
    assert!(queue.get(one.id()).await.expect("readable").is_some());
}

/// The gates of the pool test's jobs, by id (a queued job's payload cannot carry a channel).
static GATES: Mutex<BTreeMap<u32, Arc<Gate>>> = Mutex::new(BTreeMap::new());

#[derive(Serialize, Deserialize)]
struct GatedWork {
    gate: u32,
}

impl QueueJob for GatedWork {
    const KIND: &'static str = "gated";
    type Error = NotReleased;

    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        let gate = GATES.lock().unwrap().get(&self.gate).cloned();
        match gate {
            Some(gate) => gate.pass().map_err(WorkError::Retryable),
            None => Err(WorkError::Fatal(NotReleased(self.gate))),
        }
    }
}

// A pool started from async code runs a job that blocks until an async task releases it; the
// release comes while `shutdown` waits for the job, so the job finishes within the deadline and
// nothing is given back. Catches: a shutdown that blocks the executor (checked by replacing
// `spawn_blocking(call).await` in `blocking` with `Ok(call())`: the releasing task cannot run
// during the shutdown's wait, the job's gate gives up, and the job ends retryable instead of
// succeeded).
#[tokio::test(flavor = "current_thread")]
async fn a_pool_shuts_down_from_async_code_while_its_job_finishes() {
    let (gate, mut started, release) = Gate::single(1);
    GATES.lock().unwrap().insert(1, gate);
    let store = Arc::new(MemoryQueue::new());
    let queue = AsyncQueue::from(Queue::new(store.clone()));
    let mut registry = Registry::new();
    registry.register::<GatedWork>();
    let pool = AsyncWorkerPool::start(
        Worker::builder(store, registry)
            .concurrency(1)
            .poll_interval(Duration::from_millis(10)),
    )
    .await
    .expect("the pool starts");
    let id = queue
        .enqueue(GatedWork { gate: 1 })
        .await
        .expect("enqueued")
        .id();
    pool.waker().wake();
    timeout(TEST_TIMEOUT, started.recv())
        .await
        .expect("the pool picks the job up")
        .expect("a start signal");
    assert_eq!(pool.in_flight(), 1);

    let releaser = tokio::spawn(async move {
        sleep(Duration::from_millis(300)).await;
        let _ = release.send(());
    });
    let report = timeout(TEST_TIMEOUT, pool.shutdown(Duration::from_secs(20)))
        .await
        .expect("the shutdown finishes")
        .expect("a shutdown report");
    releaser.await.expect("the releaser ran");
    assert_eq!(report.released_running, 0, "{report:?}");
    assert_eq!(report.released_unstarted, 0, "{report:?}");
    let job = queue.get(id).await.expect("readable").expect("stored");
    assert_eq!(job.state, QueueState::Succeeded, "{:?}", job.errors);
}
