//! `AsyncRunner` from both runtime flavours, on the memory store and on SQLite: guarded runs
//! whose `perform` blocks its thread do not block the executor, and every way a run can end
//! comes back as a report or a typed error.

mod common;

use std::sync::Arc;

use common::{Gate, NotReleased, TEST_TIMEOUT, gates, sqlite};
use safejob_core::{
    Disposition, IdempotencyKey, KeyError, LeaseStore, MemoryStore, Outcome, PerformContext,
    Report, RunError, Runner, SafeJob,
};
use safejob_tokio::{AsyncError, AsyncRunner};
use tokio::{task::JoinSet, time::timeout};

/// A job whose `perform` blocks on its gate.
struct Gated(Arc<Gate>, u32);

impl SafeJob for Gated {
    type Error = NotReleased;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["gated", &self.1.to_string()])
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.0.pass()?;
        Ok(Outcome::json(serde_json::json!({ "gate": self.1 })))
    }
}

fn runner_on(store: Arc<dyn LeaseStore>) -> AsyncRunner {
    AsyncRunner::from(Runner::builder(store).build().expect("a valid runner"))
}

/// Runs `n` gated jobs at once from spawned tasks; a task releases them only after all `n` have
/// started. They can only all start, and be released, if every run is off the executor: a run
/// that blocked an executor thread would keep the releaser (and, on one thread, the other runs)
/// from running, its gate would give up, and the run would come back as `NotReleased`.
async fn gated_runs_leave_the_executor_free(runner: AsyncRunner, n: u32) {
    let (gates, releaser) = gates(n);
    let mut runs = JoinSet::new();
    for (id, gate) in gates.into_iter().enumerate() {
        let runner = runner.clone();
        runs.spawn(async move { runner.run(Gated(gate, id as u32)).await });
    }
    let reports = timeout(TEST_TIMEOUT, runs.join_all())
        .await
        .expect("the runs finish");
    for report in reports {
        assert!(
            matches!(report, Ok(Report::Succeeded { attempt: 1, .. })),
            "every gated run succeeds once released, got {report:?}"
        );
    }
    releaser.await.expect("the releaser ran");
    // The stored results replay, through the same facade.
    let (gates, _releaser) = common::gates(1);
    let again = runner
        .run(Gated(gates[0].clone(), 0))
        .await
        .expect("a replay");
    assert_eq!(
        again,
        Report::AlreadySucceeded {
            result: Some(serde_json::json!({ "gate": 0 }))
        }
    );
}

// Catches: the facade calling `Runner::run` on the calling task instead of through
// `spawn_blocking` (checked by replacing `spawn_blocking(call).await` in `blocking` with
// `Ok(call())`: the first gated run holds the only executor thread, the releaser never runs, the
// gate gives up and the run reports `NotReleased`).
#[tokio::test(flavor = "current_thread")]
async fn current_thread_memory_store_is_not_blocked_by_a_running_job() {
    gated_runs_leave_the_executor_free(runner_on(Arc::new(MemoryStore::new())), 4).await;
}

// Same, with both of the runtime's worker threads: four blocking runs would hold both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_memory_store_is_not_blocked_by_a_running_job() {
    gated_runs_leave_the_executor_free(runner_on(Arc::new(MemoryStore::new())), 4).await;
}

#[tokio::test(flavor = "current_thread")]
async fn current_thread_sqlite_is_not_blocked_by_a_running_job() {
    let (store, _dir) = sqlite();
    gated_runs_leave_the_executor_free(runner_on(store), 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_thread_sqlite_is_not_blocked_by_a_running_job() {
    let (store, _dir) = sqlite();
    gated_runs_leave_the_executor_free(runner_on(store), 4).await;
}

/// A job that ends in a chosen way.
enum Ends {
    Panics,
    Errs,
    BadKey,
}

#[derive(Debug, thiserror::Error)]
#[error("the gateway refused")]
struct Refused;

impl SafeJob for Ends {
    type Error = Refused;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        match self {
            Self::BadKey => IdempotencyKey::new(""),
            Self::Panics => IdempotencyKey::new("ends:panics"),
            Self::Errs => IdempotencyKey::new("ends:errs"),
        }
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        match self {
            Self::Panics => panic!("perform panicked on purpose"),
            Self::Errs | Self::BadKey => Err(Refused),
        }
    }
}

// A panic in the job is `AsyncError::Panicked` with its message, not a panic in the caller; the
// job's error and a bad key are the runner's own `RunError`s in `Failed`; each has the
// disposition a queue consumer needs. Catches: a facade that resumes the panic, or that maps
// every JoinError to `Cancelled` (checked by making `from_join_error` answer `Cancelled`: the
// first assertion fails).
#[tokio::test(flavor = "current_thread")]
async fn errors_and_panics_map_to_typed_errors() {
    let (sqlite, _dir) = sqlite();
    for store in [Arc::new(MemoryStore::new()) as Arc<dyn LeaseStore>, sqlite] {
        let runner = runner_on(store.clone());
        let panicked = runner.run(Ends::Panics).await.expect_err("it panicked");
        assert!(
            matches!(&panicked, AsyncError::Panicked { message } if message == "perform panicked on purpose"),
            "{panicked:?}"
        );
        assert_eq!(panicked.disposition(), Disposition::Retry { after: None });
        // The runner released the lease before the panic left the blocking task: the key is
        // not stuck, the next run takes it at once.
        let record = store
            .get(IdempotencyKey::new("ends:panics").unwrap().digest())
            .expect("a readable store")
            .expect("a row for the key");
        assert_eq!(record.state, safejob_core::JobState::Released);

        let failed = runner.run(Ends::Errs).await.expect_err("it failed");
        assert!(
            matches!(
                &failed,
                AsyncError::Failed(RunError::Job {
                    source: Refused,
                    attempt: 1
                })
            ),
            "{failed:?}"
        );
        assert_eq!(failed.disposition(), Disposition::Retry { after: None });
        assert_eq!(failed.to_string(), "attempt 1 failed: the gateway refused");

        let invalid = runner.run(Ends::BadKey).await.expect_err("no key");
        assert!(
            matches!(&invalid, AsyncError::Failed(RunError::InvalidKey(_))),
            "{invalid:?}"
        );
        assert_eq!(invalid.disposition(), Disposition::DeadLetter);
    }
}

// `run_shared` runs a job the caller keeps: the caller reads it after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_job_runs_and_stays_with_the_caller() {
    let (gates, _releaser) = gates(1);
    let job = Arc::new(Gated(gates[0].clone(), 42));
    let runner = runner_on(Arc::new(MemoryStore::new()));
    let report = timeout(TEST_TIMEOUT, runner.run_shared(job.clone()))
        .await
        .expect("the run finishes")
        .expect("a report");
    assert!(matches!(report, Report::Succeeded { .. }), "{report:?}");
    assert_eq!(job.1, 42);
    assert_eq!(Arc::strong_count(&job), 1, "the blocking task let go of it");
}
