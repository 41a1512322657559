//! examples/queue.rs as a worker binary: its own `operate` (what its `main` runs when given
//! arguments) with `work` runs the example's kinds through safejob-cli, after creating the
//! ledger table its payouts write to.

#[allow(dead_code)]
#[path = "../queue.rs"]
mod queue;

use std::sync::atomic::Ordering;

use clap::Parser;
use safejob_cli::App;
use safejob_core::queue::{EnqueueOptions, JobFilter, JobQuery, Queue, QueueState, QueueStore};
use safejob_diesel::{DieselStore, queue::DieselQueue};

/// Break: `operate` not preparing the database before `work` (the payouts' effects fail on the
/// missing ledger table and stay unfinished), or `registry` missing a kind (its job goes dead).
#[test]
fn the_queue_example_works_its_jobs_through_the_work_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
    let store = std::sync::Arc::new(DieselStore::connect(&url).expect("connect"));
    store.migrate().expect("migrate");
    let backend = std::sync::Arc::new(DieselQueue::new(store.clone()));
    let queue = Queue::new(backend.clone());
    for i in 1..=3 {
        queue
            .enqueue_guarded(
                &queue::Payout {
                    id: format!("w{i}"),
                    cents: 100 * i,
                },
                &EnqueueOptions::new(),
            )
            .expect("enqueue");
    }
    queue::PARTNER_UP.store(true, Ordering::Relaxed);
    queue
        .enqueue(&queue::NotifyPartner {
            event: "payouts.settled".into(),
        })
        .expect("enqueue");

    let app = App::parse_from([
        "queue",
        "--url",
        &url,
        "work",
        "--max-jobs",
        "4",
        "--poll-interval",
        "50ms",
    ]);
    queue::operate(app).expect("work");

    let jobs = backend
        .list(&JobQuery {
            filter: JobFilter::default(),
            after: None,
            limit: 10,
        })
        .expect("list");
    assert_eq!(jobs.len(), 4);
    assert!(
        jobs.iter().all(|j| j.state == QueueState::Succeeded),
        "{jobs:?}"
    );
    assert_eq!(queue::count_ledger(&store).expect("ledger"), 3);
}
