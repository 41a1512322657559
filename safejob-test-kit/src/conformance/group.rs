//! Groups: [`LeaseStore::acquire_many`] and [`LeaseStore::finalize_many`] answer each key on its
//! own, exactly as the single-key primitives do; racing groups keep at most one success per key;
//! and a crash between a group's commit and its answers is settled by fence, never into a second
//! success.

use std::{
    collections::HashMap,
    sync::{
        Barrier, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use safejob_core::{
    EffectsContext, IdempotencyKey, JobState, KeyError, Outcome, PerformContext, Report, Retention,
    Runner, SafeJob,
    store::{AcquireRequest, Acquired, EffectsState, FenceCheck, Finalized, FinishRequest, Lease},
};
use serde_json::json;

use super::{
    StoreHarness,
    fixtures::{Case, RACERS, TTL, failure, fingerprint, race},
};

/// A store whose group commit can be made to crash, for
/// [`crash_between_group_commit_and_answers`]: safejob-diesel's `TestDb` (feature `test-util`).
pub trait GroupCrashHarness: StoreHarness {
    /// Makes the store's next group of two or more finalizes panic in the thread writing it,
    /// right after the group committed and before its answers reach their threads.
    fn crash_after_next_group_commit(&self);
    /// How many groups that arming crashed so far.
    fn group_crashes(&self) -> u64;
}

/// One `acquire_many` answers a fresh key (granted), a held key (busy), a succeeded key (its
/// result replayed), a failed key (its failure replayed), a key with another fingerprint
/// (conflict), and the fresh key a second time (busy: the first request of the group holds it),
/// each in its request's place and each exactly as `acquire` answers it alone. Catches answers
/// handed to the wrong request (seen failing with safejob-diesel's answers left in the digest
/// order the group wrote them in), a key twice in a group granted twice (seen failing with
/// PostgreSQL's one-statement insert handing its grant to both requests), and a group that
/// changes the rows it only replays.
pub fn group_acquire_answers_each_key(harness: &dyn StoreHarness) {
    let case = Case::new("group_acquire_answers_each_key", harness);
    let (fresh, held, done, failed, other) = (
        case.key("fresh"),
        case.key("held"),
        case.key("done"),
        case.key("failed"),
        case.key("conflict"),
    );
    let holder = case.grant(held, fingerprint(1), "holder");
    let lease = case.grant(done, fingerprint(1), "w0");
    case.succeed(&lease);
    let lease = case.grant(failed, fingerprint(1), "w0");
    case.fail_row(&lease);
    case.grant(other, fingerprint(2), "w0");
    let before: Vec<_> = [held, done, failed, other]
        .into_iter()
        .map(|k| case.row(k))
        .collect();

    let req = |digest, owner| AcquireRequest {
        digest,
        fingerprint: fingerprint(1),
        owner,
        ttl: TTL,
    };
    let reqs = [
        req(done, "g-done"),
        req(fresh, "g-fresh"),
        req(held, "g-held"),
        req(other, "g-conflict"),
        req(failed, "g-failed"),
        req(fresh, "g-fresh-again"),
    ];
    let answers = case.store.acquire_many(&reqs);
    ensure!(
        case,
        answers.len() == reqs.len(),
        "acquire_many of {} requests gave {} answers",
        reqs.len(),
        answers.len()
    );
    let mut answers = answers.into_iter().map(|a| case.ok("acquire_many", a));
    let mut next = || {
        answers
            .next()
            .unwrap_or_else(|| case.fail(format_args!("missing answer")))
    };
    match next() {
        Acquired::AlreadySucceeded(row) => ensure!(
            case,
            row.digest == done && row.result == Some(json!({"ok": true})),
            "the succeeded key replayed another row: {row:?}"
        ),
        other => case.fail(format_args!(
            "succeeded key in a group: expected AlreadySucceeded, got {other:?}"
        )),
    }
    let granted = match next() {
        Acquired::Granted(lease) => lease,
        other => case.fail(format_args!(
            "fresh key in a group: expected Granted, got {other:?}"
        )),
    };
    ensure!(
        case,
        granted.digest == fresh
            && granted.fence == 1
            && granted.attempt == 1
            && granted.owner == "g-fresh",
        "fresh key's grant in a group: {granted:?}"
    );
    match next() {
        Acquired::Busy { owner, until } => ensure!(
            case,
            owner.as_deref() == Some("holder") && Some(until) == before[0].lease_expires_at,
            "held key's Busy names {owner:?} until {until}, expected holder until {}",
            holder.expires_at
        ),
        other => case.fail(format_args!(
            "held key in a group: expected Busy, got {other:?}"
        )),
    }
    match next() {
        Acquired::KeyConflict { stored, given } => ensure!(
            case,
            stored == fingerprint(2) && given == fingerprint(1),
            "conflict in a group: stored {stored:?}, given {given:?}"
        ),
        other => case.fail(format_args!(
            "key with another fingerprint in a group: expected KeyConflict, got {other:?}"
        )),
    }
    match next() {
        Acquired::AlreadyFailed(row) => ensure!(
            case,
            row.digest == failed && row.failure == Some(failure()),
            "the failed key replayed another row: {row:?}"
        ),
        other => case.fail(format_args!(
            "failed key in a group: expected AlreadyFailed, got {other:?}"
        )),
    }
    match next() {
        Acquired::Busy { owner, .. } => ensure!(
            case,
            owner.as_deref() == Some("g-fresh"),
            "the second request for one key in a group is busy under {owner:?}, expected g-fresh"
        ),
        other => case.fail(format_args!(
            "the same fresh key twice in a group: expected Busy for the second, got {other:?}"
        )),
    }
    let row = case.row(fresh);
    ensure!(
        case,
        row.state == JobState::Running && row.fence == 1 && row.owner.as_deref() == Some("g-fresh"),
        "fresh key's row after the group: {row:?}"
    );
    for row in &before {
        case.expect_unchanged("acquire_many on a held, finished or conflicting key", row);
    }
}

/// One `finalize_many` answers a stale fence (`Stale`, nothing changed), a succeeded finalize
/// with after-commit effects (`Applied`, effects pending), one without effects (`Applied`,
/// effects done), a failed finalize (`Applied`, its failure stored) and a release (`Applied`,
/// the next acquire takes the key at once), each in its request's place. Catches a stale fence
/// answered applied (the test kit's buggy store; and seen failing with PostgreSQL's
/// one-statement `UPDATE … FROM (VALUES …)` answering every key `Applied`), answers in the wrong
/// places (seen failing with safejob-diesel's answers left in digest order), and a group that
/// writes one kind of end for all.
pub fn group_finalize_answers_each_key(harness: &dyn StoreHarness) {
    let case = Case::new("group_finalize_answers_each_key", harness);
    let (stale, pending, done, failed, released) = (
        case.key("stale"),
        case.key("pending"),
        case.key("done"),
        case.key("failed"),
        case.key("released"),
    );
    let mut old = case.grant(stale, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&old, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    let current = case.grant(stale, fingerprint(1), "w2");
    old.fence = current.fence - 1;
    let stale_before = case.row(stale);
    let leases: Vec<Lease> = [pending, done, failed, released]
        .into_iter()
        .map(|k| case.grant(k, fingerprint(1), "w1"))
        .collect();
    let result = json!({"paid": 1});
    let the_failure = failure();
    let finishes = [
        FinishRequest::Release {
            lease: &leases[3],
            error: Some("try later"),
        },
        FinishRequest::Succeeded {
            lease: &old,
            result: Some(&result),
            effects_ttl: TTL,
            retention: Retention::Forever,
            effects_pending: false,
        },
        FinishRequest::Succeeded {
            lease: &leases[0],
            result: Some(&result),
            effects_ttl: TTL,
            retention: Retention::Forever,
            effects_pending: true,
        },
        FinishRequest::Failed {
            lease: &leases[2],
            failure: &the_failure,
            retention: Retention::Forever,
        },
        FinishRequest::Succeeded {
            lease: &leases[1],
            result: None,
            effects_ttl: TTL,
            retention: Retention::Forever,
            effects_pending: false,
        },
    ];
    let answers: Vec<FenceCheck> = case
        .store
        .finalize_many(&finishes)
        .into_iter()
        .map(|a| case.ok("finalize_many", a))
        .collect();
    use FenceCheck::{Applied, Stale};
    ensure!(
        case,
        answers == [Applied, Stale, Applied, Applied, Applied],
        "finalize_many answered {answers:?}, expected [Applied (release), Stale (old fence), \
         Applied (pending), Applied (failed), Applied (no effects)]"
    );
    case.expect_unchanged("a stale finalize in a group", &stale_before);
    let row = case.row(pending);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Pending
            && row.result == Some(result.clone()),
        "row after a grouped finalize with effects to follow: {row:?}"
    );
    let row = case.row(done);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.result.is_none(),
        "row after a grouped finalize without effects: {row:?}"
    );
    let row = case.row(failed);
    ensure!(
        case,
        row.state == JobState::Failed && row.failure == Some(the_failure.clone()),
        "row after a grouped failed finalize: {row:?}"
    );
    let row = case.row(released);
    ensure!(
        case,
        row.state == JobState::Released && row.last_error.as_deref() == Some("try later"),
        "row after a grouped release: {row:?}"
    );
    let next = case.grant(released, fingerprint(1), "w3");
    ensure!(
        case,
        next.fence == leases[3].fence + 1,
        "grant after a grouped release: {next:?}"
    );
    // A group of succeeded finalizes only (a store may write those as one statement): one
    // stale fence, one current.
    let (late, on_time) = (case.key("late"), case.key("on-time"));
    let mut late_old = case.grant(late, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&late_old, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    late_old.fence = case.grant(late, fingerprint(1), "w2").fence - 1;
    let late_before = case.row(late);
    let on_time_lease = case.grant(on_time, fingerprint(1), "w1");
    let succeed = |lease| FinishRequest::Succeeded {
        lease,
        result: Some(&result),
        effects_ttl: TTL,
        retention: Retention::Forever,
        effects_pending: false,
    };
    let answers: Vec<FenceCheck> = case
        .store
        .finalize_many(&[succeed(&on_time_lease), succeed(&late_old)])
        .into_iter()
        .map(|a| case.ok("finalize_many", a))
        .collect();
    ensure!(
        case,
        answers == [Applied, Stale],
        "finalize_many of succeeded finalizes answered {answers:?}, expected [Applied, Stale (old fence)]"
    );
    case.expect_unchanged("a stale finalize in a group of finalizes", &late_before);
    let row = case.row(on_time);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.fence == on_time_lease.fence,
        "row after a group of succeeded finalizes: {row:?}"
    );
    // The terminal rows now refuse every further end, grouped or not.
    let again: Vec<_> = case
        .store
        .finalize_many(&finishes[2..4])
        .into_iter()
        .map(|a| case.ok("finalize_many", a))
        .collect();
    ensure!(
        case,
        again == [Stale, Stale],
        "finalize_many of finished keys: {again:?}"
    );
}

/// Many threads race on the same keys, half through `acquire_many` / `finalize_many` (in
/// different orders) and half through the single-key `acquire` / `finalize_succeeded` (which a
/// store with group commit coalesces): every key is granted exactly once, finalized `Committed`
/// exactly once, and its row carries the winner's fence and owner. Catches a group that grants
/// a key twice (e.g. one that skips a row lock, or answers from a stale read), and answers
/// handed to the wrong request or thread (seen failing with safejob-diesel's answers left in
/// digest order: "asked for … and was granted" another key).
pub fn racing_group_commits_one_success_per_key(harness: &dyn StoreHarness) {
    const KEYS: usize = 12;
    let case = Case::new("racing_group_commits_one_success_per_key", harness);
    let keys: Vec<_> = (0..KEYS).map(|i| case.key(&format!("k{i}"))).collect();
    let owners: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    let answers = race(&case.store, |store, i| {
        // Each racer asks for the keys in its own order.
        let mut mine: Vec<_> = keys.clone();
        mine.rotate_left(i % KEYS);
        if i % 4 == 1 {
            mine.reverse();
        }
        let reqs: Vec<_> = mine
            .iter()
            .map(|&digest| AcquireRequest {
                digest,
                fingerprint: fingerprint(1),
                owner: &owners[i],
                ttl: TTL,
            })
            .collect();
        let acquired = if i % 2 == 0 {
            store.acquire_many(&reqs)
        } else {
            reqs.iter().map(|r| store.acquire(r)).collect()
        };
        let leases: Vec<Lease> = acquired
            .into_iter()
            .zip(&mine)
            .filter_map(|(answer, digest)| match answer {
                Ok(Acquired::Granted(lease)) if lease.digest != *digest => Some(Err(format!(
                    "{} asked for {digest} and was granted {lease:?}",
                    owners[i]
                ))),
                Ok(Acquired::Granted(lease)) => Some(Ok(lease)),
                Ok(Acquired::Busy { .. } | Acquired::AlreadySucceeded(_)) => None,
                Ok(other) => Some(Err(format!("racing acquire of {digest}: {other:?}"))),
                Err(e) => Some(Err(format!("racing acquire of {digest}: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        for lease in &leases {
            if lease.owner != owners[i] {
                return Err(format!(
                    "{} got a lease for {}: {lease:?}",
                    owners[i], lease.owner
                ));
            }
        }
        let finished: Vec<FenceCheck> = if i % 2 == 0 {
            let finishes: Vec<_> = leases
                .iter()
                .map(|lease| FinishRequest::Succeeded {
                    lease,
                    result: None,
                    effects_ttl: TTL,
                    retention: Retention::Forever,
                    effects_pending: false,
                })
                .collect();
            store
                .finalize_many(&finishes)
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(|e| format!("racing finalize_many: {e}"))?
        } else {
            leases
                .iter()
                .map(|lease| {
                    match store.finalize_succeeded(lease, None, TTL, Retention::Forever, None) {
                        Ok(Finalized::Committed) => Ok(FenceCheck::Applied),
                        Ok(Finalized::Stale) => Ok(FenceCheck::Stale),
                        other => Err(format!("racing finalize_succeeded: {other:?}")),
                    }
                })
                .collect::<Result<_, _>>()?
        };
        Ok(leases.into_iter().zip(finished).collect::<Vec<_>>())
    });
    let mut wins: HashMap<_, Vec<Lease>> = HashMap::new();
    for answer in answers {
        let ended = answer.unwrap_or_else(|e| case.fail(format_args!("{e}")));
        for (lease, check) in ended {
            ensure!(
                case,
                check == FenceCheck::Applied,
                "a granted lease nobody else could take was finalized {check:?}: {lease:?}"
            );
            wins.entry(lease.digest).or_default().push(lease);
        }
    }
    for key in &keys {
        let won = wins.get(key).map_or(&[][..], Vec::as_slice);
        ensure!(
            case,
            won.len() == 1,
            "key {key} was granted and finalized {} times by racing groups, expected exactly once: {won:?}",
            won.len()
        );
        let row = case.row(*key);
        ensure!(
            case,
            row.state == JobState::Succeeded
                && row.fence == won[0].fence
                && row.owner.as_deref() == Some(won[0].owner.as_str()),
            "row {row:?} does not match the one success {:?}",
            won[0]
        );
    }
}

/// A job whose `perform` waits for every other run of its round, so their finalizes reach the
/// store together, and whose after-commit effects count their calls.
struct Gathered<'a> {
    key: String,
    gate: &'a Barrier,
    effects: &'a Mutex<HashMap<String, usize>>,
}

impl SafeJob for Gathered<'_> {
    type Error = std::io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::new(self.key.as_str())
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.gate.wait();
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let mut effects = self.effects.lock().unwrap_or_else(|p| p.into_inner());
        *effects.entry(self.key.clone()).or_default() += 1;
        Ok(())
    }
}

/// A group of finalizes commits and then its writing thread crashes before the answers reach
/// their threads: the runs whose answers were lost get an ambiguous commit, settle it by fence
/// and report `Succeeded` (the rows say they did), their effects run once; the crashed run's own
/// thread panics; running every key again replays `AlreadySucceeded` — never a second success.
/// Catches a lost answer reported as a failure or retried into a second run (seen failing with
/// safejob-diesel's coalescer answering a crashed group `Stale` instead of `AmbiguousCommit`:
/// "reported Err(LeaseLost …), expected Succeeded").
pub fn crash_between_group_commit_and_answers<H: GroupCrashHarness>(harness: &H) {
    const RUNS: usize = 8;
    const ROUNDS: usize = 20;
    let case = Case::new("crash_between_group_commit_and_answers", harness);
    let runner = Runner::builder(case.store.clone())
        .worker_id("crash-case")
        .build()
        .unwrap_or_else(|e| case.fail(format_args!("runner: {e}")));
    let effects = Mutex::new(HashMap::new());
    let crashes_before = harness.group_crashes();
    for round in 0..ROUNDS {
        harness.crash_after_next_group_commit();
        let gate = Barrier::new(RUNS);
        let panicked = AtomicUsize::new(0);
        let keys: Vec<String> = (0..RUNS)
            .map(|i| format!("{}:r{round}:k{i}", case.prefix))
            .collect();
        let reports: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .map(|key| {
                    let job = Gathered {
                        key: key.clone(),
                        gate: &gate,
                        effects: &effects,
                    };
                    let runner = &runner;
                    s.spawn(move || runner.run(&job))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h.join() {
                    Ok(report) => Some(report),
                    Err(_) => {
                        panicked.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                })
                .collect()
        });
        let crashed = harness.group_crashes() > crashes_before;
        for (key, report) in keys.iter().zip(&reports) {
            let digest = IdempotencyKey::new(key.as_str())
                .map(|k| *k.digest())
                .unwrap_or_else(|e| case.fail(format_args!("key: {e}")));
            let row = case.row(digest);
            ensure!(
                case,
                row.state == JobState::Succeeded && row.fence == 1,
                "round {round}: a run's row after a crashed group: {row:?}"
            );
            match report {
                Some(Ok(Report::Succeeded { attempt: 1, .. })) => {}
                Some(other) => case.fail(format_args!(
                    "round {round}: a run whose group crashed after committing reported {other:?}, expected Succeeded"
                )),
                None => {}
            }
            let again = runner.run(&Gathered {
                key: key.clone(),
                gate: &Barrier::new(1),
                effects: &effects,
            });
            ensure!(
                case,
                matches!(again, Ok(Report::AlreadySucceeded { .. })),
                "round {round}: running a key of a crashed group again: {again:?}, expected AlreadySucceeded"
            );
        }
        let effects = effects.lock().unwrap_or_else(|p| p.into_inner());
        for (key, report) in keys.iter().zip(&reports) {
            let ran = effects.get(key).copied().unwrap_or(0);
            let expected = usize::from(report.is_some());
            ensure!(
                case,
                ran == expected,
                "round {round}: effects of {key} ran {ran} times, expected {expected}"
            );
        }
        if crashed {
            ensure!(
                case,
                panicked.load(Ordering::Relaxed) == 1,
                "round {round}: {} runs panicked, expected only the crashed group's writer",
                panicked.load(Ordering::Relaxed)
            );
            return;
        }
    }
    case.fail(format_args!(
        "no group of two or more finalizes formed in {ROUNDS} rounds of {RUNS} gathered runs"
    ));
}
