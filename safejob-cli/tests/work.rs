//! The `work` entry point (`safejob_cli::work::run_work`): it runs the registered kinds until
//! `--max-jobs`, `--max-runtime` or SIGTERM, then shuts the pool down gracefully. One test
//! function, so the SIGTERM it raises meets the handler `run_work` installed and no other test.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use safejob_cli::work::{WorkArgs, run_work};
use safejob_core::queue::{
    JobFilter, JobQuery, Queue, QueueJob, QueueState, QueueStore, Registry, WorkContext, WorkError,
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Hello(u32);

impl QueueJob for Hello {
    const KIND: &'static str = "hello";
    type Error = std::convert::Infallible;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        Ok(())
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    work: WorkArgs,
}

fn args(extra: &[&str]) -> WorkArgs {
    let mut argv = vec!["work", "--poll-interval", "50ms", "--grace", "1s"];
    argv.extend_from_slice(extra);
    Args::parse_from(argv).work
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Hello>();
    r
}

#[test]
fn work_stops_at_its_limits_and_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("work.db").display());
    let store = Arc::new(DieselStore::connect(&url).expect("connect"));
    store.migrate().expect("migrate");
    let queue = Arc::new(DieselQueue::new(store));
    let client = Queue::new(queue.clone());
    for n in 0..5 {
        client.enqueue(&Hello(n)).expect("enqueue");
    }

    // --max-jobs: exactly the five jobs run, then it stops.
    let done = run_work(&args(&["--max-jobs", "5"]), queue.clone(), registry()).expect("work");
    assert_eq!(done.stopped_by, "max-jobs");
    assert_eq!(done.handled, 5);
    let succeeded = queue
        .list(&JobQuery {
            filter: JobFilter::state(QueueState::Succeeded),
            after: None,
            limit: 10,
        })
        .expect("list");
    assert_eq!(succeeded.len(), 5, "every job ran once");

    // --max-runtime on an empty queue.
    let timed = run_work(
        &args(&["--max-runtime", "300ms"]),
        queue.clone(),
        registry(),
    )
    .expect("work");
    assert_eq!(timed.stopped_by, "max-runtime");
    assert_eq!(timed.handled, 0);

    // SIGTERM: raised once run_work has installed its handler.
    let raiser = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).expect("raise");
    });
    let signalled = run_work(&args(&[]), queue.clone(), registry()).expect("work");
    raiser.join().expect("raiser");
    assert_eq!(signalled.stopped_by, "signal");
    assert_eq!(signalled.shutdown.released_running, 0);

    // Bad options are errors, not panics.
    assert!(Args::try_parse_from(["work", "--max-runtime", "soon"]).is_err());
}
