//! Guard retention through the Runner and the queue's worker: the default (forever), the
//! runner's and the pool's setting, a job's own setting winning both ways, every finalize writing
//! it, bad values refused as typed errors, and what pruning ends (the replay window). Each test
//! says which code change it catches.

mod common;

use std::{sync::Arc, time::Duration};

use safejob_core::{
    ConfigError, Disposition, EffectsMode, FinalFailure, IdempotencyKey, KeyError, LeaseStore,
    MAX_RETENTION, MIN_RETENTION, Outcome, PerformContext, Report, Retention, RetentionError,
    RunError, Runner, SafeJob,
    policy::GiveUpAfter,
    queue::{
        EnqueueOptions, ErrorKind, GuardedJob, MemoryQueue, Queue, QueueState, Ran, Registry,
        Worker, WorkerConfigError,
    },
    store::{EffectsState, JobState},
};
use safejob_test_kit::{ManualClock, MemoryHarness, StoreHarness};
use serde::{Deserialize, Serialize};

use common::{Job, JobError, row};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn runner_keeping(harness: &MemoryHarness, retention: Retention) -> Runner {
    Runner::builder(harness.store())
        .worker_id("w")
        .guard_retention(retention)
        .build()
        .unwrap()
}

/// `retain_until` of `job`'s row, as an offset from `since`.
fn kept_for(
    harness: &MemoryHarness,
    job: &Job<'_>,
    since: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    row(harness, &job.digest())
        .retain_until
        .map(|t| (t - since).to_std().unwrap())
}

/// By default nothing is ever pruned: no `retain_until`, and a prune a century later deletes
/// nothing. Catches: a default retention other than forever (`Retention::Forever` replaced in
/// `Runner::builder`).
#[test]
fn rows_are_kept_forever_by_default() {
    let harness = MemoryHarness::new();
    let runner = Runner::builder(harness.store()).build().unwrap();
    let job = Job::new("receipt:1");
    runner.run(&job).unwrap();
    assert_eq!(row(&harness, &job.digest()).retain_until, None);
    harness.advance(MAX_RETENTION);
    assert_eq!(runner.prune_guards(100).unwrap(), 0);
    assert!(matches!(
        runner.run(&job).unwrap(),
        Report::AlreadySucceeded { .. }
    ));
}

/// The runner's retention is written by every finalize the pipeline makes: after-commit effects,
/// transactional effects, no effects, a permanent failure from `perform` and one decided by the
/// failure policy. Catches: the retention dropped on any one finalize path (the pipeline's
/// `succeed`, `succeed_transactional` or `fail` passing `Retention::Forever`), or the runner's
/// setting ignored (`retention: Retention::Forever` in `Runner::run`).
#[test]
fn the_runners_retention_is_written_by_every_finalize() {
    let harness = MemoryHarness::new();
    let now = harness.store().now().unwrap();
    let runner = runner_keeping(&harness, Retention::For(HOUR));
    let policy_runner = Runner::builder(harness.store())
        .guard_retention(HOUR)
        .failure_policy(GiveUpAfter::new(1))
        .build()
        .unwrap();
    let after_commit = Job::new("r:after_commit");
    let transactional = Job::new("r:transactional").effects_mode(Some(EffectsMode::Transactional));
    let no_effects = Job::new("r:none").without_effects();
    let failed = Job::new("r:failed").perform(|_| {
        Ok(Outcome::FailedPermanently(FinalFailure::new(
            "declined", "no",
        )))
    });
    let by_policy = Job::new("r:policy").perform(|_| Err(JobError::Declined));
    for job in [&after_commit, &transactional, &no_effects, &failed] {
        runner.run(job).unwrap();
    }
    assert!(matches!(
        policy_runner.run(&by_policy).unwrap(),
        Report::Failed { .. }
    ));
    for job in [
        &after_commit,
        &transactional,
        &no_effects,
        &failed,
        &by_policy,
    ] {
        let stored = row(&harness, &job.digest());
        assert!(stored.state.is_terminal(), "{stored:?}");
        assert_eq!(kept_for(&harness, job, now), Some(HOUR), "{}", job.key);
    }
}

/// A job's own retention wins over the runner's, in both directions: shorter on a runner that
/// keeps an hour, and forever on a runner that prunes. Catches: `SafeJob::guard_retention`
/// ignored (`Retention::of_run` returning the default), or consulted only when the runner keeps
/// rows forever.
#[test]
fn a_jobs_own_retention_wins_over_the_runners() {
    let harness = MemoryHarness::new();
    let now = harness.store().now().unwrap();
    let runner = runner_keeping(&harness, Retention::For(HOUR));
    let short = Job::new("own:short").retention(Some(Retention::For(MINUTE)));
    let forever = Job::new("own:forever").retention(Some(Retention::Forever));
    let default = Job::new("own:default");
    for job in [&short, &forever, &default] {
        runner.run(job).unwrap();
    }
    assert_eq!(kept_for(&harness, &short, now), Some(MINUTE));
    assert_eq!(kept_for(&harness, &forever, now), None);
    assert_eq!(kept_for(&harness, &default, now), Some(HOUR));

    harness.advance(HOUR + MINUTE);
    assert_eq!(runner.prune_guards(100).unwrap(), 2);
    assert!(harness.store().get(&forever.digest()).unwrap().is_some());
}

/// Out-of-range retentions are typed errors, never a panic: from the runner's and the worker's
/// builders, and from a job's own setting, refused before anything is stored (dead-lettered).
/// Catches: `validated()` skipped in `RunnerBuilder::build`, `WorkerBuilder::build` or
/// `Runner::run`.
#[test]
fn out_of_range_retentions_are_typed_errors() {
    let harness = MemoryHarness::new();
    let zero = Duration::ZERO;
    assert!(matches!(
        Runner::builder(harness.store()).guard_retention(zero).build(),
        Err(ConfigError::InvalidRetention(RetentionError::TooShort { retention, min }))
            if retention == zero && min == MIN_RETENTION
    ));
    let too_long = MAX_RETENTION + Duration::from_secs(1);
    let error = Runner::builder(harness.store())
        .guard_retention(too_long)
        .build()
        .err()
        .expect("a retention past the maximum is refused");
    assert!(
        error.to_string().contains("too long") && error.to_string().contains("Retention::Forever"),
        "{error}"
    );
    assert!(matches!(
        Worker::builder(Arc::new(MemoryQueue::new()), Registry::new())
            .queues(["q"])
            .guard_retention(zero)
            .build(),
        Err(WorkerConfigError::InvalidRetention(
            RetentionError::TooShort { .. }
        ))
    ));

    let runner = runner_keeping(&harness, Retention::For(HOUR));
    let job = Job::new("bad:retention").retention(Some(Retention::For(Duration::from_millis(10))));
    let error = runner.run(&job).unwrap_err();
    assert!(
        matches!(
            error,
            RunError::InvalidRetention(RetentionError::TooShort { .. })
        ),
        "{error:?}"
    );
    assert_eq!(error.disposition(), Disposition::DeadLetter);
    assert_eq!(harness.store().get(&job.digest()).unwrap(), None);
}

/// Past its retention a pruned key is unknown: the same key runs again, its effects run again,
/// and other parameters under it are no longer a conflict. Within the retention it replays and
/// conflicts as always. Catches: a prune that deletes nothing (or a pipeline that never writes
/// the retention: the row outlives it).
#[test]
fn after_its_retention_a_pruned_key_runs_again() {
    let harness = MemoryHarness::new();
    let runner = runner_keeping(&harness, Retention::For(MINUTE));
    let job = Job::new("replay:window");
    assert!(matches!(
        runner.run(&job).unwrap(),
        Report::Succeeded { .. }
    ));
    assert!(matches!(
        runner.run(&job).unwrap(),
        Report::AlreadySucceeded { .. }
    ));
    let other_params = Job::new("replay:window").fingerprint(Some(2));
    assert!(matches!(
        runner.run(&other_params),
        Err(RunError::KeyConflict { .. })
    ));
    harness.advance(MINUTE);
    assert_eq!(runner.prune_guards(100).unwrap(), 1);
    assert!(matches!(
        runner.run(&job).unwrap(),
        Report::Succeeded { attempt: 1, .. }
    ));
    assert_eq!(job.probe.count(&job.idempotency_key()), 2);
    harness.advance(MINUTE);
    assert_eq!(runner.prune_guards(100).unwrap(), 1);
    assert!(matches!(
        runner.run(&other_params).unwrap(),
        Report::Succeeded { attempt: 1, .. }
    ));
}

/// A queued guarded job, as the queue's worker runs it.
#[derive(Serialize, Deserialize)]
struct Webhook {
    id: u64,
    /// The job's own retention in milliseconds (`None`: the pool's).
    keep_ms: Option<u64>,
}

impl SafeJob for Webhook {
    type Error = JobError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["webhook", &self.id.to_string()])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, JobError> {
        Ok(Outcome::done())
    }
    fn guard_retention(&self) -> Option<Retention> {
        self.keep_ms
            .map(|ms| Retention::For(Duration::from_millis(ms)))
    }
}

impl GuardedJob for Webhook {
    const KIND: &'static str = "retention.webhook";
}

/// A queued job's own retention out of range is refused before it runs: the job is dead
/// (`Fatal`, the error's message), and the guard the claim took is released at once, not held
/// until its lease expires. A valid one is written by the completion. Catches: the queue's
/// `Retention::of_run` check removed (the bad retention would reach the store), or its guard
/// left running.
#[test]
fn a_queued_jobs_bad_retention_kills_the_job_and_releases_its_guard() {
    let clock = Arc::new(ManualClock::default());
    let store = Arc::new(MemoryQueue::with_clock(clock.clone()));
    let queue = Queue::new(store.clone());
    let mut registry = Registry::new();
    registry.register_guarded::<Webhook>();
    let worker = Worker::builder(store.clone(), registry)
        .queues([safejob_core::queue::DEFAULT_QUEUE])
        .guard_retention(HOUR)
        .clock(clock.clone())
        .build()
        .unwrap();
    let bad = Webhook {
        id: 1,
        keep_ms: Some(5),
    };
    let good = Webhook {
        id: 2,
        keep_ms: Some(60_000),
    };
    let pooled = Webhook {
        id: 3,
        keep_ms: None,
    };
    let now = clock.now();
    let ids: Vec<_> = [&bad, &good, &pooled]
        .iter()
        .map(|job| {
            queue
                .enqueue_guarded(*job, &EnqueueOptions::new())
                .unwrap()
                .id()
        })
        .collect();
    let ran: Vec<_> = worker
        .run_once()
        .unwrap()
        .into_iter()
        .map(|w| w.ran)
        .collect();
    assert_eq!(
        ran,
        [
            Ran::Dead {
                kind: ErrorKind::Fatal
            },
            Ran::Succeeded,
            Ran::Succeeded
        ]
    );
    let dead = queue.get(ids[0]).unwrap().unwrap();
    assert_eq!(dead.state, QueueState::Dead);
    assert!(
        dead.errors[0]
            .message
            .contains("guard retention 5ms is too short"),
        "{:?}",
        dead.errors
    );
    let guards = store.guard_store();
    let guard = |job: &Webhook| guards.get(job.key().unwrap().digest()).unwrap().unwrap();
    assert_eq!(guard(&bad).state, JobState::Released);
    let kept = |job: &Webhook| guard(job).retain_until.map(|t| (t - now).to_std().unwrap());
    assert_eq!(
        (guard(&good).state, guard(&good).effects),
        (JobState::Succeeded, EffectsState::Done)
    );
    assert_eq!(kept(&good), Some(MINUTE));
    assert_eq!(kept(&pooled), Some(HOUR));
}
