//! The checker: reads the truth from the database after recovery and says whether every
//! invariant held.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use safejob_core::{
    EffectsMode, JobRecord, JobState, KeyDigest, LeaseStore,
    store::{EffectsState, ListFilter, ListQuery},
};
use safejob_diesel::DieselStore;

use super::{
    db,
    events::Events,
    job::{EffectsKind, key_of},
};

/// What the checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Keys in the run.
    pub keys: u64,
    /// Keys whose row is `succeeded`.
    pub succeeded: u64,
    /// Keys with more than one winner: more than one run reported `Succeeded`, or an effect row
    /// carries a fence other than the row's winning fence.
    pub duplicate_successes: u64,
    /// Keys not `succeeded` after recovery (missing, still running, released or failed).
    pub lost: u64,
    /// Keys with more than one effect row.
    pub effects_doubled: u64,
    /// Succeeded keys with no effect row that are not listed in doubt: an effect silently lost.
    pub effects_missing: u64,
    /// `--effects none`: succeeded keys with an effect row, or whose effects are not `done`.
    pub effects_unexpected: u64,
    /// Digest prefixes of the keys whose effects are in doubt.
    pub effects_in_doubt: Vec<String>,
    /// Of those, how many have their effect row anyway (the effect did happen).
    pub in_doubt_with_effect: u64,
    /// `perform` calls recorded.
    pub performs: u64,
    /// Rows in `safe_jobs` that are not keys of the run.
    pub stray_rows: u64,
    /// Human-readable reasons the run failed; empty when every invariant held.
    pub violations: Vec<String>,
}

/// Every row of the store, page by page (bounded).
fn all_rows(store: &DieselStore, filter: ListFilter) -> Result<Vec<JobRecord>, String> {
    let mut rows = Vec::new();
    let mut query = ListQuery::new(filter, 500);
    for _ in 0..10_000 {
        let page = store.list(&query).map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        query.after = Some(last.digest);
        let done = page.len() < query.limit;
        rows.extend(page);
        if done {
            break;
        }
    }
    Ok(rows)
}

/// Checks the run's `keys` keys on `store` (a direct connection, not through the proxy), with
/// the harness tables on `harness` (usually the same store): the perform rows, and the effect
/// rows unless the effects commit in the finalize transaction (then they are on `store`, with
/// the jobs). The failover torture keeps the harness tables on a database outside the cluster,
/// so an effect that happened is counted even when the failover lost the finalize before it.
pub fn check(
    store: &DieselStore,
    harness: &DieselStore,
    keys: u64,
    effects: EffectsKind,
    events: &Events,
) -> Result<Verdict, String> {
    let digest_of: HashMap<KeyDigest, u64> = (0..keys)
        .map(|k| key_of(k).map(|key| (*key.digest(), k)))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let rows = all_rows(store, ListFilter::All)?;
    let in_doubt: BTreeSet<KeyDigest> = all_rows(store, ListFilter::EffectsInDoubt)?
        .into_iter()
        .map(|r| r.digest)
        .collect();
    let effects_on = match effects.runner_mode() {
        EffectsMode::Transactional => store,
        _ => harness,
    };
    let effect_rows = db::pairs(
        effects_on,
        "SELECT key_no AS a, fence AS b FROM torture_effect",
    )?;
    let perform_rows = db::pairs(
        harness,
        "SELECT key_no AS a, fence AS b FROM torture_perform",
    )?;

    let mut effect_fences: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for p in &effect_rows {
        effect_fences
            .entry(u64::try_from(p.a).unwrap_or(u64::MAX))
            .or_default()
            .push(u64::try_from(p.b).unwrap_or(u64::MAX));
    }

    let mut v = Verdict {
        keys,
        performs: perform_rows.len() as u64,
        ..Verdict::default()
    };
    let mut seen = BTreeSet::new();
    for row in &rows {
        let Some(&k) = digest_of.get(&row.digest) else {
            v.stray_rows += 1;
            continue;
        };
        seen.insert(k);
        let fences = effect_fences.get(&k).map(Vec::as_slice).unwrap_or_default();
        let doubt = in_doubt.contains(&row.digest);
        if row.state != JobState::Succeeded {
            v.lost += 1;
            if !fences.is_empty() {
                v.violations.push(format!(
                    "key {} is {} but has {} effect row(s)",
                    row.digest.short(),
                    row.state,
                    fences.len()
                ));
            }
            continue;
        }
        v.succeeded += 1;
        let wins = events.wins.get(&k).copied().unwrap_or(0);
        if wins > 1 || fences.iter().any(|f| *f != row.fence) {
            v.duplicate_successes += 1;
        }
        if fences.len() > 1 {
            v.effects_doubled += 1;
        }
        if doubt {
            v.effects_in_doubt.push(row.digest.short());
            v.in_doubt_with_effect += u64::from(!fences.is_empty());
        } else if effects == EffectsKind::None {
            if !fences.is_empty() || row.effects != EffectsState::Done {
                v.effects_unexpected += 1;
            }
        } else if fences.is_empty() {
            v.effects_missing += 1;
        }
    }
    v.lost += keys - seen.len() as u64;

    if v.succeeded != keys {
        v.violations
            .push(format!("{} of {keys} keys succeeded", v.succeeded));
    }
    if v.duplicate_successes > 0 {
        v.violations.push(format!(
            "{} keys were won more than once",
            v.duplicate_successes
        ));
    }
    if v.effects_doubled > 0 {
        v.violations.push(format!(
            "{} keys ran their effects twice",
            v.effects_doubled
        ));
    }
    if v.effects_missing > 0 {
        v.violations.push(format!(
            "{} succeeded keys have no effect and are not in doubt",
            v.effects_missing
        ));
    }
    if v.effects_unexpected > 0 {
        v.violations.push(format!(
            "{} keys without effects have an effect row or effects not done",
            v.effects_unexpected
        ));
    }
    // EffectsKind: a mode whose effects commit with the finalize may never leave one in doubt.
    if !effects.may_be_in_doubt() && !v.effects_in_doubt.is_empty() {
        v.violations.push(format!(
            "{} keys in doubt under {} effects",
            v.effects_in_doubt.len(),
            effects.as_str()
        ));
    }
    if v.stray_rows > 0 {
        v.violations
            .push(format!("{} rows of unknown keys", v.stray_rows));
    }
    Ok(v)
}
