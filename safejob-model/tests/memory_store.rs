//! Model-based tests of the guard: traces of the model's actions on the direct path (deliveries
//! from outside, `copies` 0), random and model-generated, replayed against the real
//! `safejob_core::MemoryStore` on a `ManualClock` (see `common` for what is compared).

mod common;

use safejob_model::{Bounds, LeaseModel};

/// Caught when checked: the same break as below (`MemoryStore` ignoring the fence), seen as a
/// `finish_effects` applied where the model answers stale.
#[test]
fn random_traces_get_the_models_answers_from_the_memory_store() {
    // A clock that runs far enough for many takeovers within 80 steps.
    let model = LeaseModel::new(Bounds {
        workers: 3,
        keys: 2,
        ttl: 2,
        max_time: 120,
        max_fence: u8::MAX,
        copies: 0,
    });
    let answers = common::replay_random_traces(&model, 400, 80);
    // The traces reached every kind of answer, so every primitive was compared.
    assert_eq!(answers.len(), 12, "kinds of answers seen: {answers:?}");
}

/// Caught when checked: `MemoryStore`'s fenced writes made to ignore the fence (its `fenced`
/// filter without `row.fence == lease.fence`) — a takeover's victim then commits here, while the
/// model says stale. The random traces above fail on the same break.
#[test]
fn every_model_generated_path_gets_the_models_answers_from_the_memory_store() {
    // Every state the checker visits, reached by its path from the initial state: three
    // workers on one key with the clock to 4, and two workers on two keys with the clock to 2.
    for bounds in [
        Bounds {
            workers: 3,
            keys: 1,
            ttl: 2,
            max_time: 4,
            max_fence: 3,
            copies: 0,
        },
        Bounds {
            workers: 2,
            keys: 2,
            ttl: 2,
            max_time: 2,
            max_fence: 2,
            copies: 0,
        },
    ] {
        let paths = common::replay_every_path(bounds);
        assert!(paths > 5_000, "{paths} paths");
    }
}
