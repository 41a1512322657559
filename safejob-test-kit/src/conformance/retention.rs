//! Retention: the `retain_until` every terminal write stores, and pruning, which deletes only
//! settled rows past it — after which the key is unknown and runs again.

use std::{any::Any, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    JobRecord, KeyDigest, Retention,
    store::{
        Acquired, EffectsAborted, EffectsClaim, EffectsOutcome, EffectsState, FenceCheck,
        Finalized, JobState, Lease,
    },
};

use super::{
    StoreHarness,
    fixtures::{Case, TTL, failure, fingerprint},
};

/// The short retention of the case.
const SHORT: Duration = Duration::from_secs(60);
/// The long retention of the case.
const LONG: Duration = Duration::from_secs(3600);

/// How one of the case's rows was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// Settled, retention [`SHORT`]: pruned once it passes.
    Short,
    /// Settled, retention [`LONG`].
    Long,
    /// Settled, kept forever.
    Forever,
    /// Never pruned, whatever the time: running, released, effects pending or in doubt.
    Unsettled,
}

/// Every terminal write stores `retain_until` (now + the retention, `None` for forever) — the
/// after-commit finalize, the transactional one, the one without effects, and the failed one —
/// and `prune(limit)` deletes at most `limit` rows, only those whose retention has passed and
/// whose outcome is settled: never a row kept forever, a running or released row, or a row whose
/// effects are pending or in doubt, until those effects are settled. A pruned key is unknown:
/// its next acquire is a fresh grant (fence 1), with any fingerprint — the replay window ended.
///
/// Catches (each seen failing on memory, SQLite, PostgreSQL and MariaDB): a prune without the
/// effects filter (`pending` deleted), a prune without the time check (a row pruned within its
/// retention), a finalize that drops its retention (`failed` with no `retain_until`), a prune that
/// deletes nothing, and, on SQLite, a NULL retention written as now (`forever` with a
/// `retain_until`).
pub fn prune_deletes_settled_rows_past_their_retention(harness: &dyn StoreHarness) {
    let case = Case::new("prune_deletes_settled_rows_past_their_retention", harness);
    let short = Retention::For(SHORT);
    let mut rows: Vec<(&str, KeyDigest, Kept)> = Vec::new();
    // Checks the row's retain_until (`retention` after `since`, or none) and records the row.
    let mut expect_retained =
        |name: &'static str, retention: Option<Duration>, kept: Kept, since: DateTime<Utc>| {
            let key = case.key(name);
            let row = case.row(key);
            match retention {
                Some(d) => case.expect_near(
                    &format!("retain_until of `{name}` (store now + {d:?})"),
                    row.retain_until,
                    since + chrono::Duration::from_std(d).unwrap_or_default(),
                ),
                None => ensure!(
                    case,
                    row.retain_until.is_none(),
                    "`{name}` must have no retain_until (kept forever): {row:?}"
                ),
            }
            rows.push((name, key, kept));
        };

    // Settled, short retention: after-commit effects done, transactional, none, failed.
    let lease = grant(&case, "after_commit");
    let at = case.now();
    let f = case.ok(
        "finalize_succeeded",
        case.store
            .finalize_succeeded(&lease, None, TTL, short, None),
    );
    committed(&case, f, "after_commit");
    finish(&case, &lease, EffectsOutcome::Done);
    expect_retained("after_commit", Some(SHORT), Kept::Short, at);

    let lease = grant(&case, "transactional");
    let mut hook = |_: &mut dyn Any| -> Result<(), EffectsAborted> { Ok(()) };
    let at = case.now();
    let f = case.ok(
        "finalize_succeeded (hook)",
        case.store
            .finalize_succeeded(&lease, None, TTL, short, Some(&mut hook)),
    );
    committed(&case, f, "transactional");
    expect_retained("transactional", Some(SHORT), Kept::Short, at);

    let lease = grant(&case, "no_effects");
    let at = case.now();
    let f = case.ok(
        "finalize_succeeded_without_effects",
        case.store
            .finalize_succeeded_without_effects(&lease, None, TTL, short),
    );
    committed(&case, f, "no_effects");
    expect_retained("no_effects", Some(SHORT), Kept::Short, at);

    let lease = grant(&case, "failed");
    let at = case.now();
    let f = case.ok(
        "finalize_failed",
        case.store.finalize_failed(&lease, &failure(), short),
    );
    ensure!(case, f == FenceCheck::Applied, "finalize_failed: {f:?}");
    expect_retained("failed", Some(SHORT), Kept::Short, at);

    // Settled, long retention and forever.
    let lease = grant(&case, "long");
    let at = case.now();
    let f = case.ok(
        "finalize_succeeded_without_effects",
        case.store
            .finalize_succeeded_without_effects(&lease, None, TTL, Retention::For(LONG)),
    );
    committed(&case, f, "long");
    expect_retained("long", Some(LONG), Kept::Long, at);

    let lease = grant(&case, "forever");
    let f = case.ok(
        "finalize_succeeded_without_effects",
        case.store
            .finalize_succeeded_without_effects(&lease, None, TTL, Retention::Forever),
    );
    committed(&case, f, "forever");
    expect_retained("forever", None, Kept::Forever, at);

    // Unsettled: effects pending (their worker died), effects in doubt, running, released. The
    // first two carry a short retention that must not be enough.
    for (name, outcome) in [
        ("pending", None),
        (
            "in_doubt",
            Some(EffectsOutcome::InDoubt { error: "smtp down" }),
        ),
    ] {
        let lease = grant(&case, name);
        let at = case.now();
        let f = case.ok(
            "finalize_succeeded",
            case.store
                .finalize_succeeded(&lease, None, TTL, short, None),
        );
        committed(&case, f, name);
        if let Some(outcome) = outcome {
            finish(&case, &lease, outcome);
        }
        expect_retained(name, Some(SHORT), Kept::Unsettled, at);
    }
    grant(&case, "running");
    expect_retained("running", None, Kept::Unsettled, at);
    let lease = grant(&case, "released");
    let r = case.ok("release", case.store.release(&lease, Some("retry")));
    ensure!(case, r == FenceCheck::Applied, "release: {r:?}");
    expect_retained("released", None, Kept::Unsettled, at);

    // Within every retention: nothing of ours goes.
    prune_all(&case);
    let present = |key: &KeyDigest| case.ok("get", case.store.get(key)).is_some();
    for (name, key, kept) in &rows {
        ensure!(
            case,
            present(key),
            "`{name}` ({kept:?}) was pruned within its retention"
        );
    }
    let before: Vec<JobRecord> = rows.iter().map(|(_, key, _)| case.row(*key)).collect();

    // Past the short retention (and past every lease and effects window).
    case.advance(SHORT + Duration::from_secs(1));
    let n = case.ok("prune(0)", case.store.prune(0));
    ensure!(case, n == 0, "prune(0) deleted {n} rows");
    let short_keys: Vec<KeyDigest> = rows
        .iter()
        .filter(|(_, _, kept)| *kept == Kept::Short)
        .map(|(_, key, _)| *key)
        .collect();
    let n = case.ok("prune(1)", case.store.prune(1));
    let gone = short_keys.iter().filter(|key| !present(key)).count();
    ensure!(
        case,
        n == 1 && gone == 1,
        "prune(1) with {} rows past their retention: returned {n}, deleted {gone} of them",
        short_keys.len()
    );
    prune_all(&case);
    for ((name, key, kept), before) in rows.iter().zip(&before) {
        match kept {
            Kept::Short => ensure!(
                case,
                !present(key),
                "`{name}` is past its retention and settled, but prune kept it"
            ),
            _ => {
                ensure!(
                    case,
                    present(key),
                    "`{name}` ({kept:?}) must be kept, but prune deleted it"
                );
                case.expect_unchanged(&format!("pruning (`{name}`, {kept:?})"), before);
            }
        }
    }

    // The replay window has ended: a pruned key is granted afresh, even with other parameters.
    for name in ["after_commit", "failed"] {
        let key = case.key(name);
        match case.acquire(key, fingerprint(2), "w2") {
            Acquired::Granted(lease) if lease.fence == 1 && lease.attempt == 1 => {}
            other => case.fail(format_args!(
                "acquire of the pruned key `{name}` (other parameters): expected a fresh Granted \
                 (fence 1, attempt 1), got {other:?}"
            )),
        }
    }

    // In-doubt effects settled by a deliberate recovery: the row is prunable from then on.
    let key = case.key("in_doubt");
    let lease = match case.claim(key, fingerprint(1), "recoverer") {
        EffectsClaim::Claimed(lease, _) => lease,
        other => case.fail(format_args!(
            "claim_effects of `in_doubt`: expected Claimed, got {other:?}"
        )),
    };
    prune_all(&case);
    ensure!(
        case,
        present(&key),
        "`in_doubt` was pruned while its effects were claimed for recovery (pending)"
    );
    finish(&case, &lease, EffectsOutcome::Done);
    prune_all(&case);
    ensure!(
        case,
        !present(&key),
        "`in_doubt` kept after its effects were settled done, past its retention"
    );

    // Past the long retention: `long` goes; forever and the unsettled rows stay.
    case.advance(LONG);
    prune_all(&case);
    for (name, key, kept) in &rows {
        let kept_now = present(key);
        let want = match (*name, kept) {
            ("in_doubt", _) | (_, Kept::Short | Kept::Long) => false,
            (_, Kept::Forever | Kept::Unsettled) => true,
        };
        // The short ones were acquired again above: those rows are fresh and running.
        if matches!(*name, "after_commit" | "failed") {
            continue;
        }
        ensure!(
            case,
            kept_now == want,
            "`{name}` ({kept:?}) after its retention of {LONG:?}: present {kept_now}, expected \
             {want}"
        );
    }
    let row = case.row(case.key("pending"));
    ensure!(
        case,
        row.state == JobState::Succeeded && row.effects == EffectsState::Pending,
        "`pending` must stay pending (in doubt) for operators: {row:?}"
    );
}

#[track_caller]
fn grant(case: &Case<'_>, name: &str) -> Lease {
    case.grant(case.key(name), fingerprint(1), "w1")
}

#[track_caller]
fn committed(case: &Case<'_>, f: Finalized, name: &str) {
    ensure!(
        case,
        f == Finalized::Committed,
        "finalize of `{name}`: expected Committed, got {f:?}"
    );
}

#[track_caller]
fn finish(case: &Case<'_>, lease: &Lease, outcome: EffectsOutcome<'_>) {
    let r = case.finish(lease, outcome);
    ensure!(case, r == FenceCheck::Applied, "finish_effects: {r:?}");
}

/// Prunes until a call deletes fewer than its limit (bounded: a store that keeps answering its
/// limit fails the case).
#[track_caller]
fn prune_all(case: &Case<'_>) {
    const LIMIT: usize = 100;
    for _ in 0..10_000 {
        let n = case.ok("prune", case.store.prune(LIMIT));
        ensure!(
            case,
            n <= LIMIT as u64,
            "prune({LIMIT}) says it deleted {n} rows"
        );
        if n < LIMIT as u64 {
            return;
        }
    }
    case.fail(format_args!("prune kept deleting {LIMIT} rows a call"));
}
