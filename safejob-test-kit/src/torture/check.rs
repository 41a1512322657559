//! The checks, read from the store's own rows (not from worker memory): one terminal row per key,
//! one committed success, effects exactly once or at most once and listed in doubt.

use std::collections::HashSet;

use safejob_core::{
    JobRecord, JobState, KeyDigest, LeaseStore, SafeJob,
    store::{ListFilter, ListQuery, StoreError},
};

use super::{
    config::Torture,
    report::{TortureFailure, TortureReport, Violation},
    run::{KeyTrack, World, lock},
};

impl<'h> Torture<'h> {
    pub(super) fn check<J: SafeJob + Sync>(
        &self,
        world: World<'_, J>,
        planned: u64,
        rounds: usize,
    ) -> Result<TortureReport, TortureFailure> {
        let seed = world.seed;
        let store_err = |source| TortureFailure::Store { seed, source };
        let ours: HashSet<KeyDigest> = world.jobs.iter().map(|e| *e.digest()).collect();
        let in_doubt = list_in_doubt(&*world.store, &ours).map_err(store_err)?;
        let tracks = lock(&world.tracks).clone();
        let mut violations = std::mem::take(&mut *lock(&world.problems));
        let mut report = world.stats.report(seed, self.keys, planned, rounds);
        report.effects_in_doubt = in_doubt.len();
        report.effects_run = world.probe.total();
        report.effects_counted = world.counter.map(|_| 0);

        for entry in world.jobs {
            let (job, digest) = (&entry.job, *entry.digest());
            let counted = world.counter.and_then(|c| entry.count(c));
            entry.violations(&mut violations);
            let track = tracks.get(&digest).copied().unwrap_or_default();
            let effects = world.probe.count_digest(&digest);
            let listed = in_doubt.contains(&digest);
            if track.commits > 1 {
                violations.push(Violation::FinalizedTwice {
                    digest,
                    commits: track.commits,
                });
            }
            let row = world.store.get(&digest).map_err(store_err)?;
            if let Some(counted) = counted {
                *report.effects_counted.get_or_insert(0) += counted;
                check_counted(&mut violations, digest, row.as_ref(), track, counted);
            }
            let Some(row) = row else {
                violations.push(Violation::NoRow { digest });
                continue;
            };
            match row.state {
                JobState::Succeeded => {
                    report.succeeded += 1;
                    if track.commits == 0 {
                        violations.push(Violation::SucceededWithoutFinalize { digest });
                    }
                    if job.has_effects() {
                        check_effects(&mut violations, &row, track, effects, listed);
                    } else if effects > 0
                        || listed
                        || row.effects != safejob_core::EffectsState::Done
                    {
                        // Nothing can be in doubt: the finalize itself recorded the effects done.
                        violations.push(Violation::NoEffectsNotDone {
                            digest,
                            calls: effects,
                            effects: row.effects,
                            listed,
                        });
                    }
                }
                JobState::Failed => {
                    report.failed += 1;
                    if track.commits > 0 {
                        violations.push(Violation::ChangedAfterSuccess {
                            digest,
                            state: row.state,
                        });
                    }
                    if effects > 0 {
                        violations.push(Violation::EffectsOnFailedKey {
                            digest,
                            count: effects,
                        });
                    }
                    if !self.allow_failures {
                        violations.push(Violation::UnexpectedFailure {
                            digest,
                            failure: row.failure.clone(),
                        });
                    }
                }
                state => {
                    violations.push(Violation::Stuck { digest, state });
                    if track.commits > 0 {
                        violations.push(Violation::ChangedAfterSuccess { digest, state });
                    }
                }
            }
        }
        // The costliest facts first (an effect done twice), then the ones that name a cause, so
        // that a long list cut short still shows them.
        violations.sort_by_key(Violation::rank);
        if violations.is_empty() {
            Ok(report)
        } else {
            Err(TortureFailure::Violations {
                seed,
                violations,
                report: Box::new(report),
            })
        }
    }
}

pub(super) fn check_effects(
    violations: &mut Vec<Violation>,
    row: &JobRecord,
    track: KeyTrack,
    effects: u64,
    listed: bool,
) {
    let digest = row.digest;
    if effects > 1 {
        violations.push(Violation::EffectsRepeated {
            digest,
            count: effects,
        });
    }
    match track.doubt {
        Some(reason) => {
            if !listed {
                violations.push(Violation::InDoubtNotListed { digest, reason });
            }
        }
        None => {
            if effects == 0 {
                violations.push(Violation::EffectsMissing { digest });
            }
            if listed {
                violations.push(Violation::UnexpectedInDoubt { digest });
            } else if effects == 1 && row.effects != safejob_core::EffectsState::Done {
                violations.push(Violation::EffectsNotDone {
                    digest,
                    effects: row.effects,
                });
            }
        }
    }
}

/// The user's count of a key's effects against its row: exactly one for a succeeded key (at
/// most one when the run left its effects in doubt), none for any other.
pub(super) fn check_counted(
    violations: &mut Vec<Violation>,
    digest: KeyDigest,
    row: Option<&JobRecord>,
    track: KeyTrack,
    counted: u64,
) {
    match row.map(|r| r.state) {
        Some(JobState::Succeeded) => {
            if counted > 1 {
                violations.push(Violation::CountedMoreThanOnce { digest, counted });
            } else if counted == 0 && track.doubt.is_none() {
                violations.push(Violation::CountedNone { digest });
            }
        }
        state if counted > 0 => violations.push(Violation::CountedWithoutSuccess {
            digest,
            state,
            counted,
        }),
        _ => {}
    }
}

/// Every key of `ours` the store lists effects-in-doubt, read page by page.
pub(super) fn list_in_doubt(
    store: &dyn LeaseStore,
    ours: &HashSet<KeyDigest>,
) -> Result<HashSet<KeyDigest>, StoreError> {
    const PAGE: usize = 500;
    let mut found = HashSet::new();
    let mut after = None;
    loop {
        let page = store.list(&ListQuery {
            filter: ListFilter::EffectsInDoubt,
            after,
            limit: PAGE,
        })?;
        found.extend(page.iter().map(|r| r.digest).filter(|d| ours.contains(d)));
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.digest),
            _ => return Ok(found),
        }
    }
}
