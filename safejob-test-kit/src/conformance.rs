//! The `LeaseStore` conformance suite: one set of behaviours every store must show.
//!
//! Each case is a `pub fn` taking the store's [`StoreHarness`] and panicking with a message that
//! names the case and the broken rule. [`lease_store_conformance!`](crate::lease_store_conformance)
//! turns every case into its own `#[test]`; [`run_all`] runs them in sequence on one harness.
//!
//! The suite speaks only [`LeaseStore`], so SQL stores run it unchanged. Accordingly:
//!
//! * time moves only through [`StoreHarness::advance`]; nothing sleeps;
//! * instants are compared with a small tolerance ([`TIME_SLACK`]) against the store's own
//!   [`LeaseStore::now`], because databases round timestamps (MySQL `DATETIME(6)` keeps
//!   microseconds, SQLite text milliseconds);
//! * every case uses keys under its own unique prefix, so cases may share one store (and one
//!   database) and run in parallel.
//!
//! ```
//! use safejob_test_kit::{MemoryHarness, conformance};
//!
//! conformance::run_all(&MemoryHarness::new());
//! ```

use std::{
    any::Any,
    collections::BTreeSet,
    fmt,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Utc};
use safejob_core::{
    FinalFailure, Fingerprint, JobRecord, JobState, KeyDigest, LeaseStore,
    store::{
        AcquireRequest, Acquired, EffectsAborted, EffectsClaim, EffectsOutcome, EffectsState,
        FenceCheck, Finalized, Lease, ListFilter, ListQuery, Renewed, StoreError,
    },
};
use serde_json::json;

/// A store under test, and a way to make time pass as that store sees it.
///
/// The memory store's harness advances a `ManualClock`. A `DieselStore`'s harness calls
/// `DieselStore::advance_clock_for_tests` (safejob-diesel's `test-util` feature, for
/// dev-dependencies), which moves the store's view of the database clock; the database clock
/// itself cannot be moved. Neither sleeps.
pub trait StoreHarness {
    /// The store under test. Each call returns the same store.
    fn store(&self) -> Arc<dyn LeaseStore>;
    /// Makes `by` pass on the store's clock, as far as leases are concerned.
    fn advance(&self, by: Duration);
}

/// How far apart two instants may be and still count as equal: a database's rounding plus the
/// real time that passes between two reads of its clock — which on a loaded 2-core CI machine
/// running many suites at once was seen to exceed 50 ms — and still far below the suite's TTL
/// (30 s) and the 2 s steps it moves time by, so a wrong expiry or duration cannot pass.
pub const TIME_SLACK: Duration = Duration::from_secs(1);

/// The lease TTL every case asks for.
const TTL: Duration = Duration::from_secs(30);
/// An advance that expires any lease taken with [`TTL`].
const PAST_TTL: Duration = Duration::from_secs(31);
/// How many threads race in the concurrency cases.
const RACERS: usize = 16;

/// One case's context: its store, its unique key prefix, and the way it reports a violation.
struct Case<'h> {
    name: &'static str,
    harness: &'h dyn StoreHarness,
    store: Arc<dyn LeaseStore>,
    prefix: String,
}

/// Panics with the case's name unless `cond` holds.
macro_rules! ensure {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $case.fail(format_args!($($msg)+));
        }
    };
}

impl<'h> Case<'h> {
    fn new(name: &'static str, harness: &'h dyn StoreHarness) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        let nonce = nanos ^ (u64::from(std::process::id()) << 32);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        Self {
            name,
            harness,
            store: harness.store(),
            prefix: format!("conformance:{name}:{nonce:x}:{seq}"),
        }
    }

    #[track_caller]
    fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        panic!(
            "lease store conformance case `{}` failed: {what}",
            self.name
        )
    }

    #[track_caller]
    fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => self.fail(format_args!("{op} returned a store error: {error}")),
        }
    }

    fn key(&self, part: &str) -> KeyDigest {
        KeyDigest::of(&format!("{}:{part}", self.prefix))
    }

    fn advance(&self, by: Duration) {
        self.harness.advance(by);
    }

    #[track_caller]
    fn now(&self) -> DateTime<Utc> {
        self.ok("now", self.store.now())
    }

    #[track_caller]
    fn acquire(&self, digest: KeyDigest, fp: Option<Fingerprint>, owner: &str) -> Acquired {
        self.ok(
            "acquire",
            self.store.acquire(&AcquireRequest {
                digest,
                fingerprint: fp,
                owner,
                ttl: TTL,
            }),
        )
    }

    #[track_caller]
    fn grant(&self, digest: KeyDigest, fp: Option<Fingerprint>, owner: &str) -> Lease {
        match self.acquire(digest, fp, owner) {
            Acquired::Granted(lease) => lease,
            other => self.fail(format_args!(
                "acquire by {owner} on a free key: expected Granted, got {other:?}"
            )),
        }
    }

    #[track_caller]
    fn claim(&self, digest: KeyDigest, fp: Option<Fingerprint>, owner: &str) -> EffectsClaim {
        self.ok(
            "claim_effects",
            self.store.claim_effects(&AcquireRequest {
                digest,
                fingerprint: fp,
                owner,
                ttl: TTL,
            }),
        )
    }

    #[track_caller]
    fn row(&self, digest: KeyDigest) -> JobRecord {
        match self.ok("get", self.store.get(&digest)) {
            Some(row) => row,
            None => self.fail(format_args!("get({digest}) found no row")),
        }
    }

    #[track_caller]
    fn finalize(&self, lease: &Lease, result: Option<&serde_json::Value>) -> Finalized {
        self.ok(
            "finalize_succeeded",
            self.store.finalize_succeeded(lease, result, TTL, None),
        )
    }

    #[track_caller]
    fn succeed(&self, lease: &Lease) {
        let finalized = self.finalize(lease, Some(&json!({"ok": true})));
        ensure!(
            self,
            finalized == Finalized::Committed,
            "finalize_succeeded with the current fence: expected Committed, got {finalized:?}"
        );
    }

    #[track_caller]
    fn fail_row(&self, lease: &Lease) {
        let check = self.ok(
            "finalize_failed",
            self.store.finalize_failed(lease, &failure()),
        );
        ensure!(
            self,
            check == FenceCheck::Applied,
            "finalize_failed with the current fence: expected Applied, got {check:?}"
        );
    }

    #[track_caller]
    fn finish(&self, lease: &Lease, outcome: EffectsOutcome<'_>) -> FenceCheck {
        self.ok("finish_effects", self.store.finish_effects(lease, outcome))
    }

    #[track_caller]
    fn expect_near(&self, what: &str, found: Option<DateTime<Utc>>, expected: DateTime<Utc>) {
        let slack = slack();
        let near = found.is_some_and(|t| (t - expected).abs() <= slack);
        ensure!(
            self,
            near,
            "{what}: expected about {expected} (± {TIME_SLACK:?}), found {found:?}"
        );
    }

    /// Checks that `found` lies within `[lo + ttl, hi + ttl]`, give or take the slack.
    #[track_caller]
    fn expect_expiry(
        &self,
        what: &str,
        found: DateTime<Utc>,
        lo: DateTime<Utc>,
        hi: DateTime<Utc>,
    ) {
        let ttl = chrono::Duration::from_std(TTL).unwrap_or_default();
        let (lo, hi) = (lo + ttl - slack(), hi + ttl + slack());
        ensure!(
            self,
            lo <= found && found <= hi,
            "{what}: expected store now + {TTL:?} (between {lo} and {hi}), found {found}"
        );
    }

    #[track_caller]
    fn expect_unchanged(&self, what: &str, before: &JobRecord) {
        let after = self.row(before.digest);
        ensure!(
            self,
            &after == before,
            "{what} must change nothing, but the row went from {before:?} to {after:?}"
        );
    }

    /// The digests of this case's rows (`mine`) that `filter` lists, read page by page with a
    /// small limit so paging by `after` is exercised; checks order and page bounds on the way.
    #[track_caller]
    fn list_mine(&self, filter: ListFilter, mine: &BTreeSet<KeyDigest>) -> BTreeSet<KeyDigest> {
        const PAGE: usize = 2;
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
            return BTreeSet::new();
        };
        let mut after = predecessor(first);
        let mut found = BTreeSet::new();
        let now = self.now();
        loop {
            let page = self.ok(
                "list",
                self.store.list(&ListQuery {
                    filter,
                    after,
                    limit: PAGE,
                }),
            );
            ensure!(
                self,
                page.len() <= PAGE,
                "list with limit {PAGE} returned {} rows",
                page.len()
            );
            let Some(tail) = page.last() else { break };
            let tail = tail.digest;
            for row in &page {
                ensure!(
                    self,
                    after.is_none_or(|a| row.digest > a),
                    "list is not ordered by digest after the cursor: {} came after {after:?}",
                    row.digest
                );
                after = Some(row.digest);
                ensure!(
                    self,
                    matches_filter(row, filter, now),
                    "list({filter:?}) returned a row that does not match: {row:?}"
                );
                if mine.contains(&row.digest) {
                    found.insert(row.digest);
                }
            }
            if page.len() < PAGE || tail >= *last {
                break;
            }
        }
        found
    }
}

fn slack() -> chrono::Duration {
    chrono::Duration::from_std(TIME_SLACK).unwrap_or_default()
}

fn failure() -> FinalFailure {
    FinalFailure::new("card_declined", "the issuer declined the card")
}

fn fingerprint(n: u8) -> Option<Fingerprint> {
    Some(Fingerprint::of_bytes(&[n; 8]))
}

/// The digest just before `d`, so that a listing `after` it starts at `d`.
fn predecessor(d: &KeyDigest) -> Option<KeyDigest> {
    let mut bytes = *d.as_bytes();
    for b in bytes.iter_mut().rev() {
        if *b > 0 {
            *b -= 1;
            return Some(KeyDigest::from_bytes(bytes));
        }
        *b = u8::MAX;
    }
    None
}

fn matches_filter(row: &JobRecord, filter: ListFilter, now: DateTime<Utc>) -> bool {
    match filter {
        ListFilter::All => true,
        ListFilter::State(state) => row.state == state,
        // Judged by the store at list time, a few statements before `now`: in doubt then means
        // succeeded with effects marked in doubt or pending, give or take the slack.
        ListFilter::EffectsInDoubt => {
            row.state == JobState::Succeeded
                && matches!(row.effects, EffectsState::InDoubt | EffectsState::Pending)
        }
        ListFilter::ExpiredLeases => {
            row.state == JobState::Running
                && row.lease_expires_at.is_none_or(|t| t <= now + slack())
        }
    }
}

/// Answers of racing threads, tallied.
fn race<T: Send>(
    store: &Arc<dyn LeaseStore>,
    op: impl Fn(&dyn LeaseStore, usize) -> T + Sync,
) -> Vec<T> {
    let barrier = Barrier::new(RACERS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let (barrier, op, store) = (&barrier, &op, store.clone());
                s.spawn(move || {
                    barrier.wait();
                    op(&*store, i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A fresh acquire inserts the row: fence 1, attempt 1, expiry now + ttl by the store clock.
pub fn fresh_acquire_grants_fence_one(harness: &dyn StoreHarness) {
    let case = Case::new("fresh_acquire_grants_fence_one", harness);
    let key = case.key("k");
    let before = case.now();
    let lease = case.grant(key, fingerprint(1), "w1");
    let after = case.now();
    ensure!(case, lease.digest == key, "lease digest {}", lease.digest);
    ensure!(
        case,
        lease.fence == 1,
        "fresh lease fence {} != 1",
        lease.fence
    );
    ensure!(
        case,
        lease.attempt == 1,
        "fresh lease attempt {} != 1",
        lease.attempt
    );
    ensure!(
        case,
        lease.owner == "w1",
        "fresh lease owner {:?}",
        lease.owner
    );
    case.expect_expiry("lease expiry", lease.expires_at, before, after);

    let row = case.row(key);
    ensure!(case, row.state == JobState::Running, "state {}", row.state);
    ensure!(
        case,
        row.fence == 1 && row.attempts == 1,
        "fence {} attempts {}",
        row.fence,
        row.attempts
    );
    ensure!(
        case,
        row.owner.as_deref() == Some("w1"),
        "owner {:?}",
        row.owner
    );
    ensure!(
        case,
        row.fingerprint == fingerprint(1),
        "fingerprint {:?}",
        row.fingerprint
    );
    case.expect_near("row expiry", row.lease_expires_at, lease.expires_at);
    ensure!(
        case,
        row.result.is_none() && row.failure.is_none() && row.finalized_at.is_none(),
        "a fresh row has no result, failure or finalized_at: {row:?}"
    );
    ensure!(
        case,
        row.effects == EffectsState::None,
        "effects {:?}",
        row.effects
    );
    ensure!(
        case,
        row.created_at >= before - slack() && row.created_at <= after + slack(),
        "created_at {} outside [{before}, {after}]",
        row.created_at
    );
}

/// A duplicate of a succeeded key is answered with the stored row and its result.
pub fn replay_of_succeeded_returns_result(harness: &dyn StoreHarness) {
    let case = Case::new("replay_of_succeeded_returns_result", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let result = json!({"receipt": "r-1", "cents": 250});
    let finalized = case.finalize(&lease, Some(&result));
    ensure!(
        case,
        finalized == Finalized::Committed,
        "finalize: {finalized:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded,
        "state {}",
        row.state
    );
    ensure!(
        case,
        row.result.as_ref() == Some(&result),
        "result {:?}",
        row.result
    );
    ensure!(case, row.finalized_at.is_some(), "finalized_at not set");
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::AlreadySucceeded(replayed) => ensure!(
            case,
            replayed.result.as_ref() == Some(&result) && replayed.state == JobState::Succeeded,
            "replayed row {replayed:?}"
        ),
        other => case.fail(format_args!(
            "duplicate acquire: expected AlreadySucceeded, got {other:?}"
        )),
    }
    case.expect_unchanged("a replayed acquire", &row);
}

/// A duplicate of a failed key is answered with the stored failure.
pub fn replay_of_failed_returns_failure(harness: &dyn StoreHarness) {
    let case = Case::new("replay_of_failed_returns_failure", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.fail_row(&lease);
    let row = case.row(key);
    ensure!(case, row.state == JobState::Failed, "state {}", row.state);
    ensure!(
        case,
        row.failure == Some(failure()),
        "failure {:?}",
        row.failure
    );
    ensure!(case, row.finalized_at.is_some(), "finalized_at not set");
    ensure!(
        case,
        row.result.is_none(),
        "a failed row has a result: {:?}",
        row.result
    );
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::AlreadyFailed(replayed) => ensure!(
            case,
            replayed.failure == Some(failure()),
            "replayed failure {:?}",
            replayed.failure
        ),
        other => case.fail(format_args!(
            "duplicate acquire: expected AlreadyFailed, got {other:?}"
        )),
    }
    case.expect_unchanged("a replayed acquire", &row);
}

/// While a lease is live, other acquires are told who holds it and until when.
pub fn busy_while_held(harness: &dyn StoreHarness) {
    let case = Case::new("busy_while_held", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let row = case.row(key);
    for step in 0..2 {
        match case.acquire(key, fingerprint(1), "w2") {
            Acquired::Busy { owner, until } => {
                ensure!(case, owner.as_deref() == Some("w1"), "busy owner {owner:?}");
                ensure!(
                    case,
                    (until - lease.expires_at).abs() <= slack() || step == 1,
                    "busy until {until}, lease expires {}",
                    lease.expires_at
                );
            }
            other => case.fail(format_args!(
                "acquire of a held key: expected Busy, got {other:?}"
            )),
        }
        if step == 0 {
            case.expect_unchanged("a busy acquire", &row);
            case.advance(TTL / 2);
        }
    }
}

/// Once a lease expires, the next acquire takes it over with fence + 1 and attempts + 1.
pub fn takeover_after_expiry_bumps_fence(harness: &dyn StoreHarness) {
    let case = Case::new("takeover_after_expiry_bumps_fence", harness);
    let key = case.key("k");
    case.grant(key, fingerprint(1), "w1");
    case.advance(PAST_TTL);
    let before = case.now();
    let lease = case.grant(key, fingerprint(1), "w2");
    let after = case.now();
    ensure!(
        case,
        lease.fence == 2 && lease.attempt == 2 && lease.owner == "w2",
        "takeover lease {lease:?}: expected fence 2, attempt 2, owner w2"
    );
    case.expect_expiry("takeover expiry", lease.expires_at, before, after);
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Running
            && row.fence == 2
            && row.attempts == 2
            && row.owner.as_deref() == Some("w2"),
        "row after takeover {row:?}"
    );
}

/// After a takeover, every fenced write of the old holder is refused and changes nothing; the
/// new holder is unaffected.
pub fn zombie_writes_rejected_after_takeover(harness: &dyn StoreHarness) {
    let case = Case::new("zombie_writes_rejected_after_takeover", harness);
    let key = case.key("k");
    let zombie = case.grant(key, fingerprint(1), "zombie");
    case.advance(PAST_TTL);
    let live = case.grant(key, fingerprint(1), "live");
    let row = case.row(key);

    let mut hook_ran = false;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        hook_ran = true;
        Ok(())
    };
    let f = case.ok(
        "finalize_succeeded",
        case.store
            .finalize_succeeded(&zombie, Some(&json!(1)), TTL, Some(&mut hook)),
    );
    ensure!(
        case,
        f == Finalized::Stale,
        "zombie finalize with hook: {f:?}"
    );
    ensure!(case, !hook_ran, "a stale finalize ran its effects hook");
    case.expect_unchanged("a zombie finalize_succeeded", &row);
    let f = case.finalize(&zombie, None);
    ensure!(case, f == Finalized::Stale, "zombie finalize: {f:?}");
    case.expect_unchanged("a zombie finalize_succeeded", &row);
    let f = case.ok(
        "finalize_failed",
        case.store.finalize_failed(&zombie, &failure()),
    );
    ensure!(
        case,
        f == FenceCheck::Stale,
        "zombie finalize_failed: {f:?}"
    );
    case.expect_unchanged("a zombie finalize_failed", &row);
    let r = case.ok("renew", case.store.renew(&zombie, TTL));
    ensure!(case, r == Renewed::Stale, "zombie renew: {r:?}");
    case.expect_unchanged("a zombie renew", &row);
    let r = case.ok("release", case.store.release(&zombie, Some("zombie")));
    ensure!(case, r == FenceCheck::Stale, "zombie release: {r:?}");
    case.expect_unchanged("a zombie release", &row);
    let r = case.finish(&zombie, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Stale, "zombie finish_effects: {r:?}");
    case.expect_unchanged("a zombie finish_effects", &row);

    case.succeed(&live);
}

/// After a recovery claim bumped the fence of a succeeded row, the original winner can no
/// longer record how its effects ended.
pub fn zombie_effects_rejected_after_claim(harness: &dyn StoreHarness) {
    let case = Case::new("zombie_effects_rejected_after_claim", harness);
    let key = case.key("k");
    let winner = case.grant(key, fingerprint(1), "winner");
    case.succeed(&winner);
    case.advance(PAST_TTL);
    let recovery = match case.claim(key, fingerprint(1), "recoverer") {
        EffectsClaim::Claimed(lease, _) => lease,
        other => case.fail(format_args!(
            "claim of pending effects past their window: {other:?}"
        )),
    };
    let row = case.row(key);
    let r = case.finish(&winner, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "superseded finish_effects: {r:?}"
    );
    case.expect_unchanged("a superseded finish_effects", &row);
    let r = case.finish(&recovery, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "recovery finish_effects: {r:?}"
    );
}

/// A release hands the key back at once (no waiting for expiry) and records the error.
pub fn release_lets_next_acquire_in(harness: &dyn StoreHarness) {
    let case = Case::new("release_lets_next_acquire_in", harness);
    let key = case.key("k");
    let first = case.grant(key, fingerprint(1), "w1");
    let r = case.ok(
        "release",
        case.store.release(&first, Some("gateway timeout")),
    );
    ensure!(
        case,
        r == FenceCheck::Applied,
        "release by the holder: {r:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Released,
        "state after release {}",
        row.state
    );
    ensure!(
        case,
        row.last_error.as_deref() == Some("gateway timeout"),
        "last_error {:?}",
        row.last_error
    );
    let r = case.ok("release", case.store.release(&first, None));
    ensure!(case, r == FenceCheck::Stale, "second release: {r:?}");
    case.expect_unchanged("a second release", &row);
    let next = case.grant(key, fingerprint(1), "w2");
    ensure!(
        case,
        next.fence == 2 && next.attempt == 2,
        "acquire after release: {next:?}"
    );
}

/// A renewal extends the lease to now + ttl, keeps others out past the original expiry, and
/// works on an expired lease that nobody took over (the fence decides, not the clock).
pub fn renew_extends_lease(harness: &dyn StoreHarness) {
    let case = Case::new("renew_extends_lease", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.advance(Duration::from_secs(10));
    let old = case.row(key).lease_expires_at;
    let before = case.now();
    let renewed = case.ok("renew", case.store.renew(&lease, TTL));
    let after = case.now();
    let Renewed::Extended(until) = renewed else {
        case.fail(format_args!("renew by the holder: {renewed:?}"));
    };
    case.expect_expiry("renewed expiry", until, before, after);
    ensure!(
        case,
        old.is_some_and(|old| until > old),
        "renewal did not extend: {old:?} -> {until}"
    );
    case.expect_near(
        "row expiry after renew",
        case.row(key).lease_expires_at,
        until,
    );
    case.advance(Duration::from_secs(25)); // past the original expiry, not the renewed one
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::Busy { .. } => {}
        other => case.fail(format_args!("acquire within a renewed lease: {other:?}")),
    }
    case.advance(PAST_TTL);
    let renewed = case.ok("renew", case.store.renew(&lease, TTL));
    ensure!(
        case,
        matches!(renewed, Renewed::Extended(_)),
        "renew of an expired lease nobody took over: {renewed:?}"
    );
    match case.acquire(key, fingerprint(1), "w2") {
        Acquired::Busy { .. } => {}
        other => case.fail(format_args!("acquire after a late renewal: {other:?}")),
    }
}

/// The same key with another fingerprint is a conflict on every path, and changes nothing.
pub fn fingerprint_conflict_on_every_path(harness: &dyn StoreHarness) {
    let case = Case::new("fingerprint_conflict_on_every_path", harness);
    let conflict = |key: KeyDigest, path: &str| {
        let row = case.row(key);
        for given in [fingerprint(2), None] {
            match case.acquire(key, given, "other") {
                Acquired::KeyConflict { stored, given: g } => ensure!(
                    case,
                    stored == row.fingerprint && g == given,
                    "conflict on {path} reported stored {stored:?} given {g:?}"
                ),
                other => case.fail(format_args!(
                    "acquire with fingerprint {given:?} on a {path} row: expected KeyConflict, got {other:?}"
                )),
            }
            case.expect_unchanged(&format!("a conflicting acquire on a {path} row"), &row);
        }
    };
    let held = case.key("held");
    let lease = case.grant(held, fingerprint(1), "w1");
    conflict(held, "held");
    case.advance(PAST_TTL);
    conflict(held, "running-expired");
    let lease2 = case.grant(held, fingerprint(1), "w1");
    ensure!(
        case,
        lease2.fence == lease.fence + 1,
        "takeover after conflicts {lease2:?}"
    );
    let r = case.ok("release", case.store.release(&lease2, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    conflict(held, "released");

    let succeeded = case.key("succeeded");
    let lease = case.grant(succeeded, fingerprint(1), "w1");
    case.succeed(&lease);
    conflict(succeeded, "succeeded");
    let failed = case.key("failed");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);
    conflict(failed, "failed");

    let unfingerprinted = case.key("none");
    case.grant(unfingerprinted, None, "w1");
    match case.acquire(unfingerprinted, fingerprint(1), "w2") {
        Acquired::KeyConflict { stored: None, .. } => {}
        other => case.fail(format_args!(
            "a fingerprint given for a row stored without one: expected KeyConflict, got {other:?}"
        )),
    }

    let doubt = case.key("in-doubt");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "smtp down" });
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects in doubt: {r:?}"
    );
    let row = case.row(doubt);
    for given in [fingerprint(2), None] {
        match case.claim(doubt, given, "recoverer") {
            EffectsClaim::KeyConflict { stored, .. } => {
                ensure!(
                    case,
                    stored == fingerprint(1),
                    "claim conflict stored {stored:?}"
                )
            }
            other => case.fail(format_args!(
                "claim_effects with fingerprint {given:?}: expected KeyConflict, got {other:?}"
            )),
        }
        case.expect_unchanged("a conflicting claim_effects", &row);
    }
    ensure!(
        case,
        matches!(
            case.claim(doubt, fingerprint(1), "recoverer"),
            EffectsClaim::Claimed(..)
        ),
        "claim_effects with the right fingerprint after conflicts was not granted"
    );
}

/// No primitive changes a `succeeded` or `failed` row, except the effects bookkeeping of a
/// succeeded row under its current fence.
pub fn terminal_states_are_immutable(harness: &dyn StoreHarness) {
    let case = Case::new("terminal_states_are_immutable", harness);
    let refuse_all = |lease: &Lease, what: &str| {
        let row = case.row(lease.digest);
        let mut hook_ran = false;
        let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
            hook_ran = true;
            Ok(())
        };
        let f = case.ok(
            "finalize_succeeded",
            case.store
                .finalize_succeeded(lease, None, TTL, Some(&mut hook)),
        );
        ensure!(
            case,
            f == Finalized::Stale && !hook_ran,
            "finalize_succeeded (hook) on a {what} row: {f:?}"
        );
        let f = case.finalize(lease, Some(&json!("again")));
        ensure!(
            case,
            f == Finalized::Stale,
            "finalize_succeeded on a {what} row: {f:?}"
        );
        let f = case.ok(
            "finalize_failed",
            case.store.finalize_failed(lease, &failure()),
        );
        ensure!(
            case,
            f == FenceCheck::Stale,
            "finalize_failed on a {what} row: {f:?}"
        );
        let r = case.ok("renew", case.store.renew(lease, TTL));
        ensure!(case, r == Renewed::Stale, "renew on a {what} row: {r:?}");
        let r = case.ok("release", case.store.release(lease, Some("x")));
        ensure!(
            case,
            r == FenceCheck::Stale,
            "release on a {what} row: {r:?}"
        );
        case.expect_unchanged(&format!("a fenced write on a {what} row"), &row);
        case.advance(PAST_TTL);
        let a = case.acquire(lease.digest, fingerprint(1), "late");
        let replayed = match what {
            "succeeded" => matches!(a, Acquired::AlreadySucceeded(_)),
            _ => matches!(a, Acquired::AlreadyFailed(_)),
        };
        ensure!(
            case,
            replayed,
            "acquire of a {what} row after its expiry: {a:?}"
        );
        case.expect_unchanged(&format!("an acquire of a {what} row"), &row);
    };

    let succeeded = case.key("succeeded");
    let lease = case.grant(succeeded, fingerprint(1), "w1");
    case.succeed(&lease);
    refuse_all(&lease, "succeeded");
    // The effects bookkeeping may still move, under the right fence, once.
    let before = case.row(succeeded);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects by the winner: {r:?}"
    );
    let after = case.row(succeeded);
    ensure!(
        case,
        after.effects == EffectsState::Done
            && JobRecord {
                effects: before.effects,
                updated_at: before.updated_at,
                ..after.clone()
            } == before,
        "finish_effects changed more than the effects: {before:?} -> {after:?}"
    );
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "late" });
    ensure!(case, r == FenceCheck::Stale, "second finish_effects: {r:?}");
    case.expect_unchanged("a second finish_effects", &after);

    let failed = case.key("failed");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);
    refuse_all(&lease, "failed");
    let row = case.row(failed);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects on a failed row: {r:?}"
    );
    let c = case.claim(failed, fingerprint(1), "recoverer");
    ensure!(
        case,
        matches!(c, EffectsClaim::NotInDoubt(_)),
        "claim_effects on a failed row: {c:?}"
    );
    case.expect_unchanged("effects calls on a failed row", &row);
}

/// Of many threads racing to acquire one free key — fresh, released or expired — exactly one
/// is granted.
pub fn racing_acquires_grant_exactly_one(harness: &dyn StoreHarness) {
    let case = Case::new("racing_acquires_grant_exactly_one", harness);
    let key = case.key("k");
    let owners: Vec<String> = (0..RACERS).map(|i| format!("racer-{i}")).collect();
    for (expected_fence, round) in (1..).zip(["fresh", "released", "expired"]) {
        let answers = race(&case.store, |store, i| {
            store.acquire(&AcquireRequest {
                digest: key,
                fingerprint: fingerprint(1),
                owner: &owners[i],
                ttl: TTL,
            })
        });
        let mut granted = Vec::new();
        for answer in answers {
            match case.ok("acquire", answer) {
                Acquired::Granted(lease) => granted.push(lease),
                Acquired::Busy { .. } => {}
                other => case.fail(format_args!("racing acquire ({round}): {other:?}")),
            }
        }
        ensure!(
            case,
            granted.len() == 1,
            "{RACERS} racing acquires on a {round} key: {} granted, expected exactly 1",
            granted.len()
        );
        let lease = &granted[0];
        ensure!(
            case,
            lease.fence == expected_fence,
            "{round} grant {lease:?}"
        );
        let row = case.row(key);
        ensure!(
            case,
            row.fence == lease.fence && row.owner.as_deref() == Some(lease.owner.as_str()),
            "row after the race {row:?} vs winner {lease:?}"
        );
        match round {
            "fresh" => {
                let r = case.ok("release", case.store.release(lease, None));
                ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
            }
            _ => case.advance(PAST_TTL),
        }
    }
}

/// Attempts count every grant, across releases and takeovers, and stay on the finished row.
pub fn attempts_counted_across_takeovers(harness: &dyn StoreHarness) {
    let case = Case::new("attempts_counted_across_takeovers", harness);
    let key = case.key("k");
    let first = case.grant(key, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&first, Some("retry")));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    case.grant(key, fingerprint(1), "w2");
    case.advance(PAST_TTL);
    case.grant(key, fingerprint(1), "w3");
    case.advance(PAST_TTL);
    let last = case.grant(key, fingerprint(1), "w4");
    ensure!(
        case,
        last.attempt == 4 && last.fence == 4,
        "fourth grant {last:?}: expected attempt 4, fence 4"
    );
    case.succeed(&last);
    let row = case.row(key);
    ensure!(
        case,
        row.attempts == 4 && row.fence == 4 && row.owner.as_deref() == Some("w4"),
        "finished row {row:?}"
    );
}

/// Without a hook, a finalize leaves the effects pending for an effects window; the winner then
/// marks them done.
pub fn effects_pending_until_finished(harness: &dyn StoreHarness) {
    let case = Case::new("effects_pending_until_finished", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let before = case.now();
    case.succeed(&lease);
    let after = case.now();
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::Pending,
        "effects after finalize {:?}",
        row.effects
    );
    match row.lease_expires_at {
        Some(t) => case.expect_expiry("effects window", t, before, after),
        None => case.fail(format_args!("a pending row has no effects window: {row:?}")),
    }
    ensure!(
        case,
        row.finalized_at
            .is_some_and(|t| t >= before - slack() && t <= after + slack()),
        "finalized_at {:?}",
        row.finalized_at
    );
    let mine = BTreeSet::from([key]);
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &mine);
    ensure!(
        case,
        listed.is_empty(),
        "pending effects within their window listed in doubt"
    );
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::Done,
        "effects {:?}",
        row.effects
    );
    case.advance(PAST_TTL);
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &mine);
    ensure!(case, listed.is_empty(), "done effects listed in doubt");
}

/// Effects that ended in doubt are recorded with their error and listed for operators.
pub fn effects_in_doubt_are_listed(harness: &dyn StoreHarness) {
    let case = Case::new("effects_in_doubt_are_listed", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "smtp down" });
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects in doubt: {r:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.effects == EffectsState::InDoubt && row.last_error.as_deref() == Some("smtp down"),
        "row {row:?}"
    );
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &BTreeSet::from([key]));
    ensure!(case, listed.contains(&key), "in-doubt effects not listed");
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects after in doubt: {r:?}"
    );
    case.expect_unchanged("a finish_effects on in-doubt effects", &row);
}

/// Pending effects whose window ended (their worker died) count as in doubt: visible, not lost.
pub fn pending_effects_past_window_are_in_doubt(harness: &dyn StoreHarness) {
    let case = Case::new("pending_effects_past_window_are_in_doubt", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    case.advance(PAST_TTL);
    let row = case.row(key);
    let now = case.now();
    ensure!(
        case,
        row.effects_in_doubt(now),
        "pending past the window: {row:?} at {now}"
    );
    let listed = case.list_mine(ListFilter::EffectsInDoubt, &BTreeSet::from([key]));
    ensure!(
        case,
        listed.contains(&key),
        "pending effects past their window not listed in doubt"
    );
}

/// `claim_effects` claims only succeeded rows whose effects are in doubt, with fence + 1.
pub fn claim_effects_only_in_doubt(harness: &dyn StoreHarness) {
    let case = Case::new("claim_effects_only_in_doubt", harness);
    let not_in_doubt = |key: KeyDigest, what: &str| {
        let row = case.row(key);
        match case.claim(key, fingerprint(1), "recoverer") {
            EffectsClaim::NotInDoubt(r) => ensure!(case, r.digest == key, "NotInDoubt row {r:?}"),
            other => case.fail(format_args!(
                "claim_effects on a {what} row: expected NotInDoubt, got {other:?}"
            )),
        }
        case.expect_unchanged(&format!("claim_effects on a {what} row"), &row);
    };
    let missing = case.key("missing");
    let c = case.claim(missing, fingerprint(1), "recoverer");
    ensure!(
        case,
        c == EffectsClaim::Missing,
        "claim_effects on a missing key: {c:?}"
    );

    let running = case.key("running");
    let lease = case.grant(running, fingerprint(1), "w1");
    not_in_doubt(running, "running");
    let r = case.ok("release", case.store.release(&lease, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    not_in_doubt(running, "released");

    let pending = case.key("pending");
    let lease = case.grant(pending, fingerprint(1), "w1");
    case.succeed(&lease);
    not_in_doubt(pending, "pending (within the window)");
    let done = case.key("done");
    let lease = case.grant(done, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    not_in_doubt(done, "done");

    let doubt = case.key("doubt");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let before_row = case.row(doubt);
    let before = case.now();
    let (claim, row) = match case.claim(doubt, fingerprint(1), "recoverer") {
        EffectsClaim::Claimed(claim, row) => (claim, row),
        other => case.fail(format_args!("claim_effects on in-doubt effects: {other:?}")),
    };
    let after = case.now();
    ensure!(
        case,
        claim.fence == lease.fence + 1 && claim.owner == "recoverer" && claim.digest == doubt,
        "claim lease {claim:?}"
    );
    case.expect_expiry("claim expiry", claim.expires_at, before, after);
    let stored = case.row(doubt);
    ensure!(
        case,
        stored.state == JobState::Succeeded
            && stored.effects == EffectsState::Pending
            && stored.fence == claim.fence
            && stored.result == before_row.result
            && stored.attempts == before_row.attempts,
        "row after claim {stored:?}"
    );
    ensure!(case, row.fence == claim.fence, "claimed row {row:?}");
    not_in_doubt(doubt, "claimed");
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Stale,
        "finish_effects by the superseded winner: {r:?}"
    );
    let r = case.finish(&claim, EffectsOutcome::Done);
    ensure!(
        case,
        r == FenceCheck::Applied,
        "finish_effects by the claim: {r:?}"
    );

    // The pending row turns claimable once its window ends.
    case.advance(PAST_TTL);
    let c = case.claim(pending, fingerprint(1), "recoverer");
    ensure!(
        case,
        matches!(c, EffectsClaim::Claimed(..)),
        "claim of pending effects past their window: {c:?}"
    );
}

/// Of many threads racing to claim one key's in-doubt effects, exactly one wins.
pub fn racing_effect_claims_one_wins(harness: &dyn StoreHarness) {
    let case = Case::new("racing_effect_claims_one_wins", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let owners: Vec<String> = (0..RACERS).map(|i| format!("recoverer-{i}")).collect();
    let answers = race(&case.store, |store, i| {
        store.claim_effects(&AcquireRequest {
            digest: key,
            fingerprint: fingerprint(1),
            owner: &owners[i],
            ttl: TTL,
        })
    });
    let mut claimed = 0;
    for answer in answers {
        match case.ok("claim_effects", answer) {
            EffectsClaim::Claimed(..) => claimed += 1,
            EffectsClaim::NotInDoubt(_) => {}
            other => case.fail(format_args!("racing claim_effects: {other:?}")),
        }
    }
    ensure!(
        case,
        claimed == 1,
        "{RACERS} racing claims: {claimed} won, expected exactly 1"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.fence == lease.fence + 1,
        "fence after the race {}",
        row.fence
    );
}

/// A transactional hook that returns `Ok` commits with the finalize: succeeded, effects done.
pub fn transactional_hook_commits(harness: &dyn StoreHarness) {
    let case = Case::new("transactional_hook_commits", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let mut calls = 0;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        calls += 1;
        Ok(())
    };
    let result = json!({"ledger": 1});
    let f = case.ok(
        "finalize_succeeded",
        case.store
            .finalize_succeeded(&lease, Some(&result), TTL, Some(&mut hook)),
    );
    ensure!(
        case,
        f == Finalized::Committed,
        "finalize with an Ok hook: {f:?}"
    );
    ensure!(
        case,
        calls == 1,
        "the hook ran {calls} times, expected once"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.result.as_ref() == Some(&result),
        "row after a transactional finalize {row:?}"
    );
}

/// A transactional hook that returns `Err` rolls the whole finalize back: the row is still
/// running under the same fence, no result stored, and the lease still usable.
pub fn transactional_hook_error_rolls_back(harness: &dyn StoreHarness) {
    let case = Case::new("transactional_hook_error_rolls_back", harness);
    let key = case.key("k");
    let lease = case.grant(key, fingerprint(1), "w1");
    let row = case.row(key);
    let mut calls = 0;
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> {
        calls += 1;
        Err(EffectsAborted)
    };
    let f = case.ok(
        "finalize_succeeded",
        case.store
            .finalize_succeeded(&lease, Some(&json!({"ledger": 1})), TTL, Some(&mut hook)),
    );
    ensure!(
        case,
        f == Finalized::EffectsAborted,
        "finalize with a failing hook: {f:?}"
    );
    ensure!(
        case,
        calls == 1,
        "the hook ran {calls} times, expected once"
    );
    case.expect_unchanged("a rolled-back transactional finalize", &row);
    case.succeed(&lease);
}

/// A finalize without effects commits `succeeded` with effects already `done` (never pending,
/// never in doubt, even past the effects window) and replays like any success; under a stale
/// fence it changes nothing.
pub fn finalize_without_effects_is_done_at_once(harness: &dyn StoreHarness) {
    let case = Case::new("finalize_without_effects_is_done_at_once", harness);
    let key = case.key("k");
    let zombie = case.grant(key, fingerprint(1), "w1");
    case.advance(TTL + TTL);
    let lease = case.grant(key, fingerprint(1), "w2");
    let before = case.row(key);
    let stale = case.ok(
        "finalize_succeeded_without_effects",
        case.store
            .finalize_succeeded_without_effects(&zombie, Some(&json!(0)), TTL),
    );
    ensure!(
        case,
        stale == Finalized::Stale,
        "a superseded fence finalized without effects: {stale:?}"
    );
    case.expect_unchanged("a stale finalize without effects", &before);
    let result = json!({"paid": 1});
    let f = case.ok(
        "finalize_succeeded_without_effects",
        case.store
            .finalize_succeeded_without_effects(&lease, Some(&result), TTL),
    );
    ensure!(
        case,
        f == Finalized::Committed,
        "finalize without effects: {f:?}"
    );
    let row = case.row(key);
    ensure!(
        case,
        row.state == JobState::Succeeded
            && row.effects == EffectsState::Done
            && row.fence == lease.fence
            && row.result.as_ref() == Some(&result),
        "row after a finalize without effects {row:?}"
    );
    case.advance(TTL + TTL);
    let row = case.row(key);
    ensure!(
        case,
        !row.effects_in_doubt(case.now()),
        "effects of a job without effects turned in doubt: {row:?}"
    );
    match case.acquire(key, fingerprint(1), "w3") {
        Acquired::AlreadySucceeded(replayed) => ensure!(
            case,
            replayed.result.as_ref() == Some(&result),
            "replay of a success without effects: {replayed:?}"
        ),
        other => case.fail(format_args!(
            "a duplicate of a success without effects got {other:?}"
        )),
    }
    ensure!(
        case,
        case.finalize(&lease, None) == Finalized::Stale,
        "a second finalize of a success without effects was not stale"
    );
}

/// Listing filters by state, in-doubt effects and expired leases, ordered by digest and paged
/// by `after`.
pub fn list_filters_and_paging(harness: &dyn StoreHarness) {
    let case = Case::new("list_filters_and_paging", harness);
    let expired = case.key("expired");
    let running = case.key("running");
    let released = case.key("released");
    let done = case.key("done");
    let doubt = case.key("doubt");
    let failed = case.key("failed");
    case.grant(expired, fingerprint(1), "w1");
    case.advance(PAST_TTL);
    case.grant(running, fingerprint(1), "w1");
    let lease = case.grant(released, fingerprint(1), "w1");
    let r = case.ok("release", case.store.release(&lease, None));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    let lease = case.grant(done, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::Done);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let lease = case.grant(doubt, fingerprint(1), "w1");
    case.succeed(&lease);
    let r = case.finish(&lease, EffectsOutcome::InDoubt { error: "boom" });
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
    let lease = case.grant(failed, fingerprint(1), "w1");
    case.fail_row(&lease);

    let mine = BTreeSet::from([expired, running, released, done, doubt, failed]);
    let expect = |filter: ListFilter, want: &[KeyDigest]| {
        let found = case.list_mine(filter, &mine);
        let want: BTreeSet<KeyDigest> = want.iter().copied().collect();
        ensure!(
            case,
            found == want,
            "list({filter:?}) returned {found:?}, expected {want:?}"
        );
    };
    expect(
        ListFilter::All,
        &[expired, running, released, done, doubt, failed],
    );
    expect(ListFilter::State(JobState::Running), &[expired, running]);
    expect(ListFilter::State(JobState::Released), &[released]);
    expect(ListFilter::State(JobState::Succeeded), &[done, doubt]);
    expect(ListFilter::State(JobState::Failed), &[failed]);
    expect(ListFilter::EffectsInDoubt, &[doubt]);
    expect(ListFilter::ExpiredLeases, &[expired]);

    let rows = case.ok("list", case.store.list(&ListQuery::new(ListFilter::All, 0)));
    ensure!(
        case,
        rows.is_empty(),
        "list with limit 0 returned {} rows",
        rows.len()
    );
}

/// `get` of a key that was never acquired is `None`, not an error.
pub fn get_missing_is_none(harness: &dyn StoreHarness) {
    let case = Case::new("get_missing_is_none", harness);
    let found = case.ok("get", case.store.get(&case.key("never")));
    ensure!(
        case,
        found.is_none(),
        "get of a missing key returned {found:?}"
    );
}

/// Calls `$callback!` with every case name; the one list the macro, [`CASES`] and [`run_all`]
/// are built from.
#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_cases {
    ($callback:ident ! ($($args:tt)*)) => {
        $crate::$callback! {
            ($($args)*)
            fresh_acquire_grants_fence_one
            replay_of_succeeded_returns_result
            replay_of_failed_returns_failure
            busy_while_held
            takeover_after_expiry_bumps_fence
            zombie_writes_rejected_after_takeover
            zombie_effects_rejected_after_claim
            release_lets_next_acquire_in
            renew_extends_lease
            fingerprint_conflict_on_every_path
            terminal_states_are_immutable
            racing_acquires_grant_exactly_one
            attempts_counted_across_takeovers
            effects_pending_until_finished
            effects_in_doubt_are_listed
            pending_effects_past_window_are_in_doubt
            claim_effects_only_in_doubt
            racing_effect_claims_one_wins
            transactional_hook_commits
            transactional_hook_error_rolls_back
            finalize_without_effects_is_done_at_once
            list_filters_and_paging
            get_missing_is_none
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                let harness = ($make_harness)();
                $crate::conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_optional_tests {
    (($make_harness:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                // `None`: the backend is not configured here; the factory said why.
                let Some(harness) = ($make_harness)() else { return };
                $crate::conformance::$case(&harness);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __lease_store_conformance_table {
    (() $($case:ident)*) => {
        &[$((stringify!($case), $crate::conformance::$case as fn(&dyn $crate::StoreHarness))),*]
    };
}

/// Expands to one `#[test]` per conformance case. `$make_harness` is called once per test (a
/// closure or a function path) and must return a value whose type implements [`StoreHarness`];
/// each test gets a fresh one.
///
/// With `optional` first, the factory returns `Option<_>` instead, and a `None` skips the case:
/// for a backend whose database is not configured on this machine (the factory prints why).
///
/// ```
/// mod memory_store {
///     safejob_test_kit::lease_store_conformance!(safejob_test_kit::MemoryHarness::new);
/// }
/// mod maybe_memory_store {
///     safejob_test_kit::lease_store_conformance!(optional || Some(safejob_test_kit::MemoryHarness::new()));
/// }
/// ```
#[macro_export]
macro_rules! lease_store_conformance {
    (optional $make_harness:expr $(,)?) => {
        $crate::__lease_store_conformance_cases!(__lease_store_conformance_optional_tests!(
            $make_harness
        ));
    };
    ($make_harness:expr $(,)?) => {
        $crate::__lease_store_conformance_cases!(__lease_store_conformance_tests!($make_harness));
    };
}

/// A conformance case and its name.
pub type NamedCase = (&'static str, fn(&dyn StoreHarness));

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[NamedCase] =
    crate::__lease_store_conformance_cases!(__lease_store_conformance_table!());

/// Runs every case in sequence on one harness (each case uses its own keys, so sharing a store
/// is fine). Panics at the first violation, naming the case.
pub fn run_all(harness: &dyn StoreHarness) {
    for (_, case) in CASES {
        case(harness);
    }
}
