//! The `QueueStore` conformance suite: one set of behaviours every queue backend must show.
//!
//! Each case is a `pub fn` taking the backend's [`QueueHarness`] and panicking with a message that
//! names the case and the broken rule. [`queue_store_conformance!`](crate::queue_store_conformance)
//! turns every case into its own `#[test]`; [`run_all`] runs them in sequence on one harness.
//!
//! Most cases speak only [`QueueStore`]; the last ones drive the core's
//! [`Worker`](safejob_core::queue::Worker) and [`WorkerPool`](safejob_core::queue::WorkerPool)
//! over the store, because retries, dead-lettering, guarded duplicates and shutdown are only
//! meaningful end to end. Accordingly:
//!
//! * time moves only through [`QueueHarness::advance`]; nothing sleeps to move time (the pool
//!   cases wait, bounded, for real threads to finish real work);
//! * instants are compared with [`TIME_SLACK`](crate::conformance::TIME_SLACK) against the
//!   store's own [`QueueStore::now`];
//! * every case uses its own queue, kinds and keys, so cases may share one store; the reaper and
//!   the clock are shared, though, so a harness whose `advance` moves a clock other cases see must
//!   not run cases in parallel.
//!
//! ```
//! use safejob_test_kit::queue_conformance::{self, MemoryQueueHarness};
//!
//! queue_conformance::run_all(&MemoryQueueHarness::new());
//! ```
//!
//! The cases live one file per area, as River splits its driver suite: `enqueue.rs`,
//! `claim.rs`, `complete.rs` (completion, retries, dead letters, the reaper), `operate.rs`,
//! `guarded.rs` (guarded jobs at the port), `group.rs` (completions written in groups), `worker.rs`, `retention.rs` (guard retention through
//! the queue), `workflow.rs` (batches) and `pool.rs` (end to end), with what they share in `fixtures.rs`. This file holds the harness, the one list of cases and the macros.

use std::{sync::Arc, time::Duration};

use safejob_core::queue::{MemoryQueue, QueueStore};

use crate::ManualClock;

/// A queue store under test, and a way to make time pass as that store sees it.
///
/// The memory backend's harness advances a `ManualClock`; a SQL backend's harness moves the
/// clock its statements read (an offset), which moves due times and lease expiries alike.
pub trait QueueHarness {
    /// The store under test. Each call returns the same store.
    fn store(&self) -> Arc<dyn QueueStore>;
    /// Makes `by` pass on the store's clock.
    fn advance(&self, by: Duration);
}

/// A fresh [`MemoryQueue`] on a [`ManualClock`].
#[derive(Debug, Clone)]
pub struct MemoryQueueHarness {
    queue: Arc<MemoryQueue>,
    clock: Arc<ManualClock>,
}

impl MemoryQueueHarness {
    /// An empty queue on a clock standing at [`ManualClock::default_start`].
    pub fn new() -> Self {
        let clock = Arc::new(ManualClock::default());
        Self {
            queue: Arc::new(MemoryQueue::with_clock(clock.clone())),
            clock,
        }
    }

    /// The queue, with its concrete type.
    pub fn memory_queue(&self) -> &Arc<MemoryQueue> {
        &self.queue
    }

    /// The clock the queue reads.
    pub fn clock(&self) -> &Arc<ManualClock> {
        &self.clock
    }
}

impl Default for MemoryQueueHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueHarness for MemoryQueueHarness {
    fn store(&self) -> Arc<dyn QueueStore> {
        self.queue.clone()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

/// Panics with the case's name unless `cond` holds.
macro_rules! ensure {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $case.fail(format_args!($($msg)+));
        }
    };
}

mod claim;
mod complete;
mod enqueue;
mod fixtures;
mod group;
mod guarded;
mod operate;
mod pool;
mod retention;
mod worker;
mod workflow;

pub use claim::{
    claim_is_a_fenced_lease, claim_orders_by_priority_then_due_time_then_age,
    claim_takes_only_due_jobs_from_its_queues, racing_claims_take_each_job_once,
};
pub use complete::{
    completion_is_fenced, dead_letter_keeps_bounded_error_history, reaper_fences_out_zombies,
    renew_extends_the_lease, retry_waits_for_its_delay, snooze_gives_the_attempt_back,
};
pub use enqueue::{
    enqueue_many_answers_in_order, enqueue_stores_jobs_pending_or_scheduled,
    unique_key_returns_the_live_job,
};
pub use group::{
    a_failing_hook_rolls_back_only_its_member, complete_many_answers_each_member,
    pool_group_lost_around_its_commit_leaves_each_outcome_single,
    pool_with_grouped_completions_completes_each_job_once,
};
pub use guarded::{
    guarded_claim_acquires_the_guard, guarded_claim_answers_each_job_for_its_key,
    guarded_completion_is_all_or_nothing, guarded_success_without_hook_is_all_or_nothing,
};
pub use operate::{
    finished_by_minute_counts_recent_finishes, list_and_retry_matching_filter_by_queue_and_kind,
    operator_cancel_retry_purge, progress_is_persisted_under_the_fence,
    prune_deletes_old_finished_jobs, retry_respects_unique_keys,
    snapshot_counts_kinds_workers_and_age,
};
pub use pool::{
    pool_runs_every_job_once, pool_shutdown_releases_claimed_work,
    pool_wakes_for_enqueues_and_short_snoozes,
};
pub use retention::guarded_completion_retains_the_guard;
pub use worker::{
    guarded_duplicates_succeed_once, guarded_enqueue_dedupes_by_key,
    guarded_job_of_a_dead_worker_runs_once, guarded_job_without_effects_is_done_at_once,
    worker_backoff_follows_the_exponential_policy, worker_catches_panics_as_retryable,
    worker_discards_unknown_kinds_and_bad_payloads, worker_retries_with_backoff_then_dead_letters,
    worker_times_out_cooperatively,
};
pub use workflow::{
    aborted_completion_unlocks_nothing, batch_validation_inserts_nothing,
    cancel_batch_waits_for_running_members, continue_cancels_only_dependents,
    diamond_unlocks_in_the_completing_step, fail_fast_cancels_members_not_running,
    fan_in_reads_dependency_results, racing_members_end_the_batch_once,
    reaped_member_settles_its_batch, threshold_tolerates_failures_below_n,
};

/// Calls `$callback!` with every case name; the one list the macro, [`CASES`] and [`run_all`]
/// are built from.
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            ($($args)*)
            enqueue_stores_jobs_pending_or_scheduled
            enqueue_many_answers_in_order
            unique_key_returns_the_live_job
            claim_orders_by_priority_then_due_time_then_age
            claim_takes_only_due_jobs_from_its_queues
            claim_is_a_fenced_lease
            racing_claims_take_each_job_once
            completion_is_fenced
            retry_waits_for_its_delay
            snooze_gives_the_attempt_back
            dead_letter_keeps_bounded_error_history
            renew_extends_the_lease
            reaper_fences_out_zombies
            operator_cancel_retry_purge
            list_and_retry_matching_filter_by_queue_and_kind
            retry_respects_unique_keys
            prune_deletes_old_finished_jobs
            progress_is_persisted_under_the_fence
            snapshot_counts_kinds_workers_and_age
            finished_by_minute_counts_recent_finishes
            guarded_claim_acquires_the_guard
            guarded_claim_answers_each_job_for_its_key
            guarded_completion_is_all_or_nothing
            guarded_success_without_hook_is_all_or_nothing
            worker_retries_with_backoff_then_dead_letters
            worker_discards_unknown_kinds_and_bad_payloads
            worker_catches_panics_as_retryable
            worker_times_out_cooperatively
            guarded_enqueue_dedupes_by_key
            guarded_duplicates_succeed_once
            guarded_job_without_effects_is_done_at_once
            worker_backoff_follows_the_exponential_policy
            guarded_job_of_a_dead_worker_runs_once
            guarded_completion_retains_the_guard
            batch_validation_inserts_nothing
            diamond_unlocks_in_the_completing_step
            continue_cancels_only_dependents
            fail_fast_cancels_members_not_running
            threshold_tolerates_failures_below_n
            cancel_batch_waits_for_running_members
            reaped_member_settles_its_batch
            aborted_completion_unlocks_nothing
            racing_members_end_the_batch_once
            fan_in_reads_dependency_results
            pool_runs_every_job_once
            pool_shutdown_releases_claimed_work
            complete_many_answers_each_member
            a_failing_hook_rolls_back_only_its_member
            pool_group_lost_around_its_commit_leaves_each_outcome_single
            pool_with_grouped_completions_completes_each_job_once
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                let harness = ($make_harness)();
                $crate::queue_conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_optional_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                // `None`: the backend is not configured here; the factory said why.
                let Some(harness) = ($make_harness)() else { return };
                $crate::queue_conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_store_conformance_table {
    (() $($case:ident)*) => {
        &[$((stringify!($case), $crate::queue_conformance::$case as fn(&dyn $crate::QueueHarness))),*]
    };
}

/// Expands to one `#[test]` per queue conformance case. `$make_harness` is called once per test
/// and must return a value whose type implements [`QueueHarness`]; each test gets a fresh one.
/// With `optional` first, the factory returns `Option<_>` and a `None` skips the case (a backend
/// not configured on this machine; the factory prints why).
///
/// ```
/// mod memory_queue {
///     safejob_test_kit::queue_store_conformance!(
///         safejob_test_kit::queue_conformance::MemoryQueueHarness::new
///     );
/// }
/// ```
#[macro_export]
macro_rules! queue_store_conformance {
    (optional $make_harness:expr $(,)?) => {
        $crate::__queue_store_conformance_cases!(__queue_store_conformance_optional_tests!(
            $make_harness
        ));
    };
    ($make_harness:expr $(,)?) => {
        $crate::__queue_store_conformance_cases!(__queue_store_conformance_tests!($make_harness));
    };
}

/// A conformance case and its name.
pub type NamedCase = (&'static str, fn(&dyn QueueHarness));

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[NamedCase] =
    crate::__queue_store_conformance_cases!(__queue_store_conformance_table!());

/// Runs every case in sequence on one harness (each case uses its own queue, kinds and keys, so
/// sharing a store is fine). Panics at the first violation, naming the case.
pub fn run_all(harness: &dyn QueueHarness) {
    for (_, case) in CASES {
        case(harness);
    }
}
