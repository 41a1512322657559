//! Model-based tests of the queue: traces of the model's actions through the queue (each key
//! enqueued as guarded jobs that workers claim, complete and the reaper requeues), random and
//! model-generated, replayed against the real `safejob_core::queue::MemoryQueue` and its guard
//! `MemoryStore` on a `ManualClock`. At every step the real queue must give the model's answer
//! (the claim's job fence, lease expiry and guard answer; applied, stale or guard-stale
//! completions; how many jobs the reaper requeued) and hold the same job rows and guard rows
//! (see `common`).

mod common;

use safejob_model::{Bounds, LeaseModel};

/// Caught when checked: `MemoryQueue::complete` made to skip the guard's half (its `if let
/// Some(guard) = c.guard` block never entered) — the key's guard row stays `running` where the
/// model has it `succeeded`; and `MemoryQueue::reap` made to keep the job's fence (`job.fence
/// += 0`) — the reaped job's row carries the old fence, so its stale claimer could still
/// complete it.
#[test]
fn random_queue_traces_get_the_models_answers_from_the_memory_queue() {
    // Two keys, each enqueued twice; a clock that runs far enough for many reaps and takeovers.
    let model = LeaseModel::new(Bounds {
        workers: 3,
        keys: 2,
        ttl: 2,
        max_time: 120,
        max_fence: u8::MAX,
        copies: 2,
    });
    let answers = common::replay_random_traces(&model, 400, 80);
    // Every kind of answer the queue model gives was compared: the claim with each guard answer
    // it can meet (a replayed failure cannot arise: the queue model finalizes no failures),
    // completions applied, stale and guard-stale, the reaper, and the effects primitives the
    // workers use around it.
    let expected = [
        "Applied",
        "Claimed",
        "GuardStale",
        "JobClaimed(AlreadySucceeded)",
        "JobClaimed(Busy)",
        "JobClaimed(Granted)",
        "Missing",
        "NotInDoubt",
        "Reaped",
        "Stale",
    ];
    assert_eq!(
        answers.iter().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "kinds of answers seen"
    );
}

/// Caught when checked: the same two breaks as above (each fails within the first few hundred
/// paths).
#[test]
fn every_model_generated_queue_path_gets_the_models_answers_from_the_memory_queue() {
    // Every state the checker visits through the queue, reached by its path from the initial
    // state: three workers on one key enqueued twice with the clock to 2, and two workers on
    // two keys enqueued once each with the clock to 2.
    for bounds in [
        Bounds {
            workers: 3,
            keys: 1,
            ttl: 2,
            max_time: 2,
            max_fence: 3,
            copies: 2,
        },
        Bounds {
            workers: 2,
            keys: 2,
            ttl: 2,
            max_time: 2,
            max_fence: 2,
            copies: 1,
        },
    ] {
        let paths = common::replay_every_path(bounds);
        assert!(paths > 5_000, "{bounds:?}: {paths} paths");
    }
}
