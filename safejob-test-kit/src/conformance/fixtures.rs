//! What every lease case shares: the TTL and other constants, the per-case context [`Case`] (its
//! own key prefix, and how it reports a violation), and small helpers (failures, fingerprints,
//! listing filters, racing threads).

use std::{
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
    FinalFailure, Fingerprint, JobRecord, JobState, KeyDigest, LeaseStore, Retention,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, Lease, ListFilter, ListQuery, StoreError,
    },
};
use serde_json::json;

use super::{StoreHarness, TIME_SLACK};

/// The lease TTL every case asks for.
pub(super) const TTL: Duration = Duration::from_secs(30);
/// An advance that expires any lease taken with [`TTL`].
pub(super) const PAST_TTL: Duration = Duration::from_secs(31);
/// How many threads race in the concurrency cases.
pub(super) const RACERS: usize = 16;

/// One case's context: its store, its unique key prefix, and the way it reports a violation.
pub(super) struct Case<'h> {
    pub(super) name: &'static str,
    pub(super) harness: &'h dyn StoreHarness,
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) prefix: String,
}

impl<'h> Case<'h> {
    pub(super) fn new(name: &'static str, harness: &'h dyn StoreHarness) -> Self {
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
    pub(super) fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        panic!(
            "lease store conformance case `{}` failed: {what}",
            self.name
        )
    }

    #[track_caller]
    pub(super) fn ok<T>(&self, op: &str, result: Result<T, StoreError>) -> T {
        match result {
            Ok(value) => value,
            Err(error) => self.fail(format_args!("{op} returned a store error: {error}")),
        }
    }

    pub(super) fn key(&self, part: &str) -> KeyDigest {
        KeyDigest::of(&format!("{}:{part}", self.prefix))
    }

    pub(super) fn advance(&self, by: Duration) {
        self.harness.advance(by);
    }

    #[track_caller]
    pub(super) fn now(&self) -> DateTime<Utc> {
        self.ok("now", self.store.now())
    }

    #[track_caller]
    pub(super) fn acquire(
        &self,
        digest: KeyDigest,
        fp: Option<Fingerprint>,
        owner: &str,
    ) -> Acquired {
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
    pub(super) fn grant(&self, digest: KeyDigest, fp: Option<Fingerprint>, owner: &str) -> Lease {
        match self.acquire(digest, fp, owner) {
            Acquired::Granted(lease) => lease,
            other => self.fail(format_args!(
                "acquire by {owner} on a free key: expected Granted, got {other:?}"
            )),
        }
    }

    #[track_caller]
    pub(super) fn claim(
        &self,
        digest: KeyDigest,
        fp: Option<Fingerprint>,
        owner: &str,
    ) -> EffectsClaim {
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
    pub(super) fn row(&self, digest: KeyDigest) -> JobRecord {
        match self.ok("get", self.store.get(&digest)) {
            Some(row) => row,
            None => self.fail(format_args!("get({digest}) found no row")),
        }
    }

    #[track_caller]
    pub(super) fn finalize(&self, lease: &Lease, result: Option<&serde_json::Value>) -> Finalized {
        self.ok(
            "finalize_succeeded",
            self.store
                .finalize_succeeded(lease, result, TTL, Retention::Forever, None),
        )
    }

    #[track_caller]
    pub(super) fn succeed(&self, lease: &Lease) {
        let finalized = self.finalize(lease, Some(&json!({"ok": true})));
        ensure!(
            self,
            finalized == Finalized::Committed,
            "finalize_succeeded with the current fence: expected Committed, got {finalized:?}"
        );
    }

    #[track_caller]
    pub(super) fn fail_row(&self, lease: &Lease) {
        let check = self.ok(
            "finalize_failed",
            self.store
                .finalize_failed(lease, &failure(), Retention::Forever),
        );
        ensure!(
            self,
            check == FenceCheck::Applied,
            "finalize_failed with the current fence: expected Applied, got {check:?}"
        );
    }

    #[track_caller]
    pub(super) fn finish(&self, lease: &Lease, outcome: EffectsOutcome<'_>) -> FenceCheck {
        self.ok("finish_effects", self.store.finish_effects(lease, outcome))
    }

    #[track_caller]
    pub(super) fn expect_near(
        &self,
        what: &str,
        found: Option<DateTime<Utc>>,
        expected: DateTime<Utc>,
    ) {
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
    pub(super) fn expect_expiry(
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
    pub(super) fn expect_unchanged(&self, what: &str, before: &JobRecord) {
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
    pub(super) fn list_mine(
        &self,
        filter: ListFilter,
        mine: &BTreeSet<KeyDigest>,
    ) -> BTreeSet<KeyDigest> {
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

pub(super) fn slack() -> chrono::Duration {
    chrono::Duration::from_std(TIME_SLACK).unwrap_or_default()
}

pub(super) fn failure() -> FinalFailure {
    FinalFailure::new("card_declined", "the issuer declined the card")
}

pub(super) fn fingerprint(n: u8) -> Option<Fingerprint> {
    Some(Fingerprint::of_bytes(&[n; 8]))
}

/// The digest just before `d`, so that a listing `after` it starts at `d`.
pub(super) fn predecessor(d: &KeyDigest) -> Option<KeyDigest> {
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

pub(super) fn matches_filter(row: &JobRecord, filter: ListFilter, now: DateTime<Utc>) -> bool {
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
pub(super) fn race<T: Send>(
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
