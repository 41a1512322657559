//! The ledger suite's randomized case: a seeded run of every kind of transition, after which
//! each job's and key's history must replay to its row.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use safejob_core::{
    FinalFailure, KeyDigest, Retention,
    history::{HistoryEntry, Subject, check_job, check_key},
    queue::{
        AttemptError, Claimed, CompleteAs, Completion, ErrorKind, GuardFinish, GuardSpec, JobId,
    },
    store::{AcquireRequest, Acquired},
};

use super::{Ctx, LedgerHarness, SEED_ENV, TTL};
use crate::torture::SplitMix64;

/// What the randomized run applied, to compare with what was recorded.
#[derive(Default)]
struct Applied {
    /// Claims per job.
    claims: BTreeMap<JobId, usize>,
    /// Granted acquires per key (by claims and directly).
    grants: BTreeMap<KeyDigest, usize>,
}

/// A seeded random run of enqueues (half of them guarded, over a few shared keys), claims,
/// completions of every kind, crashes (claims never completed), renewals, clock moves, reaps,
/// operator retries and cancels, and direct guard acquires; then, for every job and key, the
/// history replays to the row's state and fence, chains (each entry starts where the previous
/// ended) and holds one `running` entry per claim or grant. The seed is [`SEED_ENV`] or fixed.
/// Deliberate breaks it catches: the memory store not recording a takeover, the memory queue not
/// recording a snooze (the `Snooze` arm's transition skipped by returning before `log_job`).
pub fn history_matches_state_after_a_torture_run(h: &dyn LedgerHarness) {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0x5AFE_1ED6);
    torture_run_with_seed(h, seed);
}

/// [`history_matches_state_after_a_torture_run`] with the given seed.
pub fn torture_run_with_seed(h: &dyn LedgerHarness, seed: u64) {
    let c = Ctx::new("history_matches_state_after_a_torture_run", h);
    let mut rng = SplitMix64(seed);
    let keys: Vec<KeyDigest> = (0..4).map(|i| c.key(&format!("k{i}"))).collect();
    let mut jobs: Vec<JobId> = Vec::new();
    let mut held: Vec<Claimed> = Vec::new();
    let mut applied = Applied::default();
    let failure = FinalFailure::new("torture", "final failure");
    let guards = c.store.guards();
    for step in 0..300 {
        match rng.below(12) {
            0 | 1 => {
                let mut job = c.new_job(1 + rng.below(3) as u32, rng.below(4) != 0);
                if rng.below(2) == 0 {
                    job.guard = Some(GuardSpec {
                        digest: keys[rng.below(keys.len())],
                        fingerprint: None,
                    });
                }
                jobs.push(c.enqueue(&job));
            }
            2 | 3 => {
                let worker = format!("w{}", rng.below(3));
                for claim in c.claim(&worker, 1 + rng.below(3)) {
                    *applied.claims.entry(claim.job.id).or_default() += 1;
                    if let (Some(Acquired::Granted(lease)), Some(_)) =
                        (&claim.guard, &claim.job.guard)
                    {
                        *applied.grants.entry(lease.digest).or_default() += 1;
                    }
                    held.push(claim);
                }
            }
            4..=6 if !held.is_empty() => {
                let claim = held.swap_remove(rng.below(held.len()));
                let delay = Duration::from_secs(rng.below(5) as u64);
                let outcome = match rng.below(5) {
                    0 | 1 => CompleteAs::Succeeded,
                    2 => CompleteAs::Retry {
                        delay,
                        error: AttemptError::new(ErrorKind::Retryable, format!("step {step}")),
                    },
                    3 => CompleteAs::Snooze { delay, error: None },
                    _ if rng.below(2) == 0 => CompleteAs::Dead {
                        error: AttemptError::new(ErrorKind::Fatal, format!("step {step}")),
                    },
                    _ => CompleteAs::Cancelled {
                        reason: format!("step {step}"),
                    },
                };
                let guard = match &claim.guard {
                    Some(Acquired::Granted(lease)) => Some(match &outcome {
                        CompleteAs::Succeeded => GuardFinish::Succeeded {
                            lease,
                            result: None,
                            effects_ttl: TTL,
                            has_effects: false,
                            retention: Retention::Forever,
                        },
                        CompleteAs::Dead { .. } => GuardFinish::Failed {
                            lease,
                            failure: &failure,
                            retention: Retention::Forever,
                        },
                        _ => GuardFinish::Release { lease, error: None },
                    }),
                    _ => None,
                };
                c.ok(
                    "complete",
                    c.store.complete(
                        &Completion {
                            lease: &claim.lease,
                            outcome,
                            progress: None,
                            guard,
                            batch: claim.job.batch,
                        },
                        None,
                    ),
                );
            }
            7 if !held.is_empty() => {
                // A crash: the claim is forgotten, its lease left to expire.
                held.swap_remove(rng.below(held.len()));
            }
            8 if !held.is_empty() => {
                let claim = &held[rng.below(held.len())];
                let guard = match &claim.guard {
                    Some(Acquired::Granted(lease)) => Some(lease),
                    _ => None,
                };
                c.ok("renew", c.store.renew(&claim.lease, guard, TTL));
            }
            9 => {
                h.advance(Duration::from_secs(1 + rng.below(40) as u64));
                c.ok("reap", c.store.reap(100));
            }
            10 if !jobs.is_empty() => {
                let id = jobs[rng.below(jobs.len())];
                if rng.below(2) == 0 {
                    c.ok("retry", c.store.retry(id));
                } else {
                    c.ok("cancel", c.store.cancel(id));
                }
            }
            11 => {
                let digest = keys[rng.below(keys.len())];
                let answer = c.ok(
                    "acquire",
                    guards.acquire(&AcquireRequest {
                        digest,
                        fingerprint: None,
                        owner: "direct",
                        ttl: TTL,
                    }),
                );
                if let Acquired::Granted(lease) = answer {
                    *applied.grants.entry(digest).or_default() += 1;
                    match rng.below(3) {
                        0 => {
                            c.ok("release", guards.release(&lease, Some("direct")));
                        }
                        1 => {} // a crash: the lease expires
                        _ => {
                            c.ok(
                                "finalize",
                                guards.finalize_succeeded_without_effects(
                                    &lease,
                                    None,
                                    TTL,
                                    Retention::Forever,
                                ),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let running =
        |history: &[HistoryEntry]| history.iter().filter(|e| e.to_state == "running").count();
    let mut checked = BTreeSet::new();
    for id in &jobs {
        let job = c
            .ok("get", c.store.get(*id))
            .unwrap_or_else(|| c.fail(format_args!("seed {seed}: job {id} vanished")));
        let history = c.history(&Subject::Job(*id));
        if let Err(e) = check_job(&history, &job) {
            c.fail(format_args!(
                "seed {seed}: job {id}: {e}; history {history:?}"
            ));
        }
        let claims = applied.claims.get(id).copied().unwrap_or(0);
        if running(&history) != claims {
            c.fail(format_args!(
                "seed {seed}: job {id} was claimed {claims} times; its history records {} claims",
                running(&history)
            ));
        }
        checked.insert(*id);
    }
    for digest in &keys {
        let Some(row) = c.ok("get", guards.get(digest)) else {
            continue;
        };
        let history = c.history(&Subject::Key(*digest));
        if let Err(e) = check_key(&history, &row) {
            c.fail(format_args!(
                "seed {seed}: key {digest}: {e}; history {history:?}"
            ));
        }
        let grants = applied.grants.get(digest).copied().unwrap_or(0);
        if running(&history) != grants {
            c.fail(format_args!(
                "seed {seed}: key {digest} was granted {grants} times; its history records {}",
                running(&history)
            ));
        }
    }
    if checked.len() < 10 || applied.claims.values().sum::<usize>() < 20 {
        c.fail(format_args!(
            "seed {seed}: the run was too small to prove anything ({} jobs, {} claims)",
            checked.len(),
            applied.claims.values().sum::<usize>()
        ));
    }
}
