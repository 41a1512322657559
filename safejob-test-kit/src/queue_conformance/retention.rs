//! Guard retention through the queue: the completion that finalizes a guarded job writes its
//! guard row's `retain_until`, from the job's own retention or the worker's, and
//! [`Queue::prune`](safejob_core::queue::Queue::prune) prunes guard rows with finished jobs.

use std::time::Duration;

use safejob_core::{
    EffectsContext, EffectsMode, FinalFailure, IdempotencyKey, KeyDigest, KeyError, Outcome,
    PerformContext, Retention, SafeJob,
    queue::{ErrorKind, GuardedJob, JobId, QueueState, Ran, Registry},
    store::{EffectsState, JobState},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    QueueHarness,
    fixtures::{Case, CaseError, bump, count},
};

/// The worker's retention in the case.
const POOL: Duration = Duration::from_secs(3600);
/// The jobs' own short retention in the case.
const SHORT: Duration = Duration::from_secs(60);

/// A guarded receipt whose retention, effects and outcome the case chooses per job.
#[derive(Serialize, Deserialize)]
pub(super) struct Receipt {
    tag: String,
    /// The job's own retention in seconds (`None`: the worker's; `Some(0)`: forever).
    keep_secs: Option<u64>,
    effects: bool,
    transactional: bool,
    fails: bool,
}

impl Receipt {
    fn new(tag: String, keep_secs: Option<u64>) -> Self {
        Self {
            tag,
            keep_secs,
            effects: true,
            transactional: false,
            fails: false,
        }
    }
}

impl SafeJob for Receipt {
    type Error = CaseError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["conformance-receipt", &self.tag])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, CaseError> {
        bump(&format!("{}:perform", self.tag));
        if self.fails {
            return Ok(Outcome::FailedPermanently(FinalFailure::new(
                "declined",
                "the receipt was declined",
            )));
        }
        Ok(Outcome::json(json!({"receipt": self.tag})))
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), CaseError> {
        bump(&format!("{}:effects", self.tag));
        Ok(())
    }
    fn has_effects(&self) -> bool {
        self.effects
    }
    fn effects_mode(&self) -> Option<EffectsMode> {
        self.transactional.then_some(EffectsMode::Transactional)
    }
    fn guard_retention(&self) -> Option<Retention> {
        self.keep_secs.map(|secs| match secs {
            0 => Retention::Forever,
            secs => Retention::For(Duration::from_secs(secs)),
        })
    }
}

impl GuardedJob for Receipt {
    const KIND: &'static str = "conformance.receipt";
}

/// A guarded job completed through the queue gets its guard row's `retain_until` in the
/// completion that finalizes it: the worker's retention for a job without its own, the job's own
/// otherwise (shorter, or forever), on every finalize the queue does — after-commit effects, a
/// transactional hook, no effects, a permanent failure. `Queue::prune` then prunes the guard rows
/// whose retention passed (with the finished jobs), and a pruned key enqueued again runs again,
/// while a key still retained replays.
///
/// Catches (each seen failing): the queue's run given `Retention::Forever` instead of the
/// resolved retention, the job's own setting ignored, `Queue::prune` without the guards' prune,
/// and a completion path that drops the retention — PostgreSQL's one-statement completion, the
/// SQLite / MariaDB `finalize_done` (transactional, no effects) and after-commit finalizes, a
/// failed finalize.
pub fn guarded_completion_retains_the_guard(harness: &dyn QueueHarness) {
    let c = Case::new("guarded_completion_retains_the_guard", harness);
    let queue = c.queue_client();
    let tag = |part: &str| format!("{}:{part}", c.prefix);
    let secs = SHORT.as_secs();
    let mut tx = Receipt::new(tag("transactional"), Some(secs));
    tx.transactional = true;
    let mut none = Receipt::new(tag("no_effects"), Some(secs));
    none.effects = false;
    let mut failed = Receipt::new(tag("failed"), Some(secs));
    failed.fails = true;
    let mut forever = Receipt::new(tag("forever"), Some(0));
    forever.effects = false;
    // (name, job, retention expected, pruned after SHORT)
    let jobs = [
        ("pool", Receipt::new(tag("pool"), None), Some(POOL), false),
        (
            "after_commit",
            Receipt::new(tag("after_commit"), Some(secs)),
            Some(SHORT),
            true,
        ),
        ("transactional", tx, Some(SHORT), true),
        ("no_effects", none, Some(SHORT), true),
        ("failed", failed, Some(SHORT), true),
        ("forever", forever, None, false),
    ];
    let ids: Vec<JobId> = jobs
        .iter()
        .map(|(_, job, _, _)| c.ok_enqueue(queue.enqueue_guarded(job, &c.options())).id())
        .collect();
    let mut registry = Registry::new();
    registry.register_guarded::<Receipt>();
    let worker = c.build_worker(
        c.worker_builder(registry)
            .concurrency(8)
            .guard_retention(POOL),
    );
    let at = c.now();
    let ran = c.run_once(&worker);
    ensure!(
        c,
        ran.len() == jobs.len(),
        "one claim runs every job: {ran:?}"
    );
    for ((name, job, retention, _), id) in jobs.iter().zip(&ids) {
        let (state, ran_as) = if job.fails {
            (
                QueueState::Dead,
                Ran::Dead {
                    kind: ErrorKind::Fatal,
                },
            )
        } else {
            (QueueState::Succeeded, Ran::Succeeded)
        };
        ensure!(
            c,
            ran.contains(&(*id, ran_as.clone())) && c.get(*id).state == state,
            "`{name}`: expected {ran_as:?} and {state:?}, ran {ran:?}, job {:?}",
            c.get(*id)
        );
        let row = guard_row(&c, job);
        let settled = if job.fails {
            row.state == JobState::Failed
        } else {
            row.state == JobState::Succeeded && row.effects == EffectsState::Done
        };
        ensure!(c, settled, "the guard of `{name}` is not settled: {row:?}");
        match retention {
            Some(d) => c.near(
                &format!("retain_until of `{name}`'s guard (store now + {d:?})"),
                row.retain_until,
                at + chrono::Duration::from_std(*d).unwrap_or_default(),
            ),
            None => ensure!(
                c,
                row.retain_until.is_none(),
                "`{name}` keeps its guard forever, but its retain_until is {:?}",
                row.retain_until
            ),
        }
    }

    // Within every retention: the guards stay (the jobs' own retention is long here).
    let year = Duration::from_secs(366 * 24 * 3600);
    c.ok("Queue::prune", queue.prune(year, 10_000));
    for (name, job, _, _) in &jobs {
        ensure!(
            c,
            present(&c, job),
            "`{name}`'s guard was pruned within its retention"
        );
    }

    // Past the short retention: the prune of finished jobs prunes those guards too.
    c.advance(SHORT + Duration::from_secs(1));
    let pruned = c.ok("Queue::prune", queue.prune(Duration::from_secs(1), 10_000));
    let short = jobs.iter().filter(|(_, _, _, gone)| *gone).count() as u64;
    ensure!(
        c,
        pruned.guards >= short && pruned.jobs >= jobs.len() as u64,
        "Queue::prune past the short retention: {pruned:?}, expected at least {short} guards \
         and {} jobs",
        jobs.len()
    );
    for (name, job, _, gone) in &jobs {
        ensure!(
            c,
            present(&c, job) != *gone,
            "`{name}`'s guard after its retention: present {}, expected {}",
            present(&c, job),
            !gone
        );
    }

    // The replay window: a pruned key runs again; a retained one replays.
    let again = |name: &str| {
        let Some((_, job, _, _)) = jobs.iter().find(|(n, _, _, _)| *n == name) else {
            c.fail(format_args!("no job `{name}` in the case"));
        };
        let id = c.ok_enqueue(queue.enqueue_guarded(job, &c.options())).id();
        let ran = c.run_once(&worker);
        ensure!(
            c,
            ran == vec![(id, Ran::Succeeded)],
            "`{name}` enqueued again: {ran:?}"
        );
        (
            count(&format!("{}:perform", job.tag)),
            count(&format!("{}:effects", job.tag)),
        )
    };
    let (performs, effects) = again("after_commit");
    ensure!(
        c,
        performs == 2 && effects == 2,
        "a pruned key enqueued again runs again: {performs} performs and {effects} effects, \
         expected 2 and 2"
    );
    let (performs, effects) = again("pool");
    ensure!(
        c,
        performs == 1 && effects == 1,
        "a retained key enqueued again replays: {performs} performs and {effects} effects, \
         expected 1 and 1"
    );
}

#[track_caller]
fn digest(c: &Case<'_>, job: &Receipt) -> KeyDigest {
    match job.key() {
        Ok(key) => *key.digest(),
        Err(e) => c.fail(format_args!("key: {e}")),
    }
}

#[track_caller]
fn present(c: &Case<'_>, job: &Receipt) -> bool {
    c.ok("guards().get", c.store.guards().get(&digest(c, job)))
        .is_some()
}

#[track_caller]
fn guard_row(c: &Case<'_>, job: &Receipt) -> safejob_core::JobRecord {
    match c.ok("guards().get", c.store.guards().get(&digest(c, job))) {
        Some(row) => row,
        None => c.fail(format_args!("no guard row for `{}`", job.tag)),
    }
}
