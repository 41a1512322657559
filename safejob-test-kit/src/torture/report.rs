//! What a torture run reports: the [`TortureReport`] of a passing run, the [`Violation`]s a check
//! finds, and the [`TortureFailure`] that carries them with the seed.

use std::{collections::BTreeMap, fmt};

use safejob_core::{FinalFailure, JobState, KeyDigest, KeyError, store::StoreError};

use super::{SEED_ENV, config::CrashPoint};

/// What a torture run did. Returned when every check passed, and carried by a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TortureReport {
    /// The seed of the fault plan.
    pub seed: u64,
    /// Distinct keys.
    pub keys: usize,
    /// Dispatches in the faulty phase: keys × duplicates.
    pub dispatches_planned: u64,
    /// All dispatches run, recovery rounds included.
    pub dispatches: u64,
    /// Recovery rounds needed until every key was terminal.
    pub recovery_rounds: usize,
    /// Crashes injected, by point.
    pub crashes: BTreeMap<CrashPoint, u64>,
    /// Pauses injected (time jumped past the TTL inside `perform`).
    pub pauses: u64,
    /// Duplicates answered from the stored outcome (already succeeded / already failed).
    pub replays: u64,
    /// Duplicates turned away while another worker held the key.
    pub busy: u64,
    /// Grants after the first on a key: takeovers of expired leases and re-acquires after a
    /// release.
    pub regrants: u64,
    /// Attempts that found their lease superseded and finalized nothing.
    pub leases_lost: u64,
    /// Errors from the job itself, handed back for a retry (or rolled back, transactionally).
    pub job_errors: u64,
    /// Runs where `perform` asked to retry later.
    pub retry_later: u64,
    /// Runs that ended in a store error (retried like any transient failure).
    pub store_errors: u64,
    /// Effects that returned an error (after-commit mode: their key is in doubt).
    pub effects_errors: u64,
    /// Keys whose row ended `succeeded`.
    pub succeeded: usize,
    /// Keys whose row ended `failed`.
    pub failed: usize,
    /// Keys listed effects-in-doubt at the end.
    pub effects_in_doubt: usize,
    /// Calls to `on_succeeded_once` the harness saw return (and, transactionally, commit).
    pub effects_run: u64,
    /// The job's own effects, summed over the keys as the user's counter reported them at the
    /// end; `None` when no counter was given ([`Torture::count_effects`]), and then the job's own
    /// writes were not checked at all.
    ///
    /// [`Torture::count_effects`]: super::Torture::count_effects
    pub effects_counted: Option<u64>,
}

impl TortureReport {
    /// Every crash injected.
    pub fn total_crashes(&self) -> u64 {
        self.crashes.values().sum()
    }

    /// Crashes injected at `point`.
    pub fn crashes_at(&self, point: CrashPoint) -> u64 {
        self.crashes.get(&point).copied().unwrap_or(0)
    }

    /// Duplicates the pipeline absorbed: replays plus busy answers.
    pub fn duplicates_absorbed(&self) -> u64 {
        self.replays + self.busy
    }

    /// What the run could check of the job's effects, in words: with an effect counter, the
    /// job's own effects; without one, only that `on_succeeded_once` returned once per key.
    pub fn effects_checked(&self) -> String {
        match self.effects_counted {
            Some(counted) => format!(
                "effects checked: on_succeeded_once calls, and the job's own effects through \
                 your counter ({counted} counted, read after every perform and at the end)"
            ),
            None => "effects checked: on_succeeded_once calls only; no effect counter was given \
                     (Torture::count_effects), so the job's own writes, in perform or anywhere \
                     else, were not checked"
                .to_owned(),
        }
    }
}

impl fmt::Display for TortureReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} keys, {} dispatches ({} planned, {} recovery rounds), {} crashes (",
            self.seed,
            self.keys,
            self.dispatches,
            self.dispatches_planned,
            self.recovery_rounds,
            self.total_crashes()
        )?;
        for (i, point) in CrashPoint::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{point}: {}", self.crashes_at(*point))?;
        }
        write!(
            f,
            "), {} pauses, {} replays, {} busy, {} regrants, {} leases lost, {} job errors, \
             {} store errors; {} succeeded, {} failed, {} effects run, {} in doubt; {}",
            self.pauses,
            self.replays,
            self.busy,
            self.regrants,
            self.leases_lost,
            self.job_errors,
            self.store_errors,
            self.succeeded,
            self.failed,
            self.effects_run,
            self.effects_in_doubt,
            self.effects_checked()
        )
    }
}

/// Why a key's effects are allowed to be in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoubtReason {
    /// The winning dispatch crashed in the effects window.
    Crash(CrashPoint),
    /// `on_succeeded_once` returned an error or panicked.
    EffectsFailed,
    /// The store failed while recording how the effects ended.
    NotRecorded,
}

impl fmt::Display for DoubtReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crash(point) => write!(f, "crashed {point}"),
            Self::EffectsFailed => f.write_str("its effects failed"),
            Self::NotRecorded => f.write_str("the store failed to record its effects"),
        }
    }
}

/// One broken guarantee, for one key (named by digest prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The store has no row for a key that was dispatched.
    NoRow {
        /// The key.
        digest: KeyDigest,
    },
    /// The key is not terminal after every lease expired and the recovery rounds ran.
    Stuck {
        /// The key.
        digest: KeyDigest,
        /// Its state.
        state: JobState,
    },
    /// More than one finalize committed `succeeded` for the key.
    FinalizedTwice {
        /// The key.
        digest: KeyDigest,
        /// How many committed.
        commits: u32,
    },
    /// The row is `succeeded` though no finalize of this run committed.
    SucceededWithoutFinalize {
        /// The key.
        digest: KeyDigest,
    },
    /// A finalize committed `succeeded`, yet the row is now in another state.
    ChangedAfterSuccess {
        /// The key.
        digest: KeyDigest,
        /// The state found.
        state: JobState,
    },
    /// The key failed terminally, and failures were not allowed.
    UnexpectedFailure {
        /// The key.
        digest: KeyDigest,
        /// The stored failure.
        failure: Option<FinalFailure>,
    },
    /// The effects ran more than once.
    EffectsRepeated {
        /// The key.
        digest: KeyDigest,
        /// How many times.
        count: u64,
    },
    /// The key succeeded with no crash in its effects window, but its effects never ran.
    EffectsMissing {
        /// The key.
        digest: KeyDigest,
    },
    /// The effects ran on a key that failed.
    EffectsOnFailedKey {
        /// The key.
        digest: KeyDigest,
        /// How many times.
        count: u64,
    },
    /// The effects may not have happened, but the key is not listed in doubt: lost.
    InDoubtNotListed {
        /// The key.
        digest: KeyDigest,
        /// Why it should be.
        reason: DoubtReason,
    },
    /// The key is listed in doubt though its effects ran cleanly (or transactionally).
    UnexpectedInDoubt {
        /// The key.
        digest: KeyDigest,
    },
    /// The effects ran cleanly but the row does not say `done`.
    EffectsNotDone {
        /// The key.
        digest: KeyDigest,
        /// The stored effects state.
        effects: safejob_core::EffectsState,
    },
    /// The job declares no effects (`SafeJob::has_effects` is false), yet its effects hook ran,
    /// or its row is not `done`, or it is listed in doubt.
    NoEffectsNotDone {
        /// The key.
        digest: KeyDigest,
        /// How many times `on_succeeded_once` returned.
        calls: u64,
        /// The stored effects state.
        effects: safejob_core::EffectsState,
        /// Whether the key is listed effects-in-doubt.
        listed: bool,
    },
    /// The job panicked (a real panic, not an injected crash).
    JobPanicked {
        /// The key.
        digest: KeyDigest,
        /// The panic message.
        message: String,
    },
    /// The runner returned an error that a well-formed job never causes.
    UnexpectedError {
        /// The key.
        digest: KeyDigest,
        /// The error.
        error: String,
    },
    /// The job's `key()` returned another key on a later call than on its first ones. The
    /// harness ran every dispatch under the first key; a real queue would have run each
    /// delivery as a new job.
    UnstableKey {
        /// The key of the first calls.
        digest: KeyDigest,
        /// The key index the job was made for.
        index: usize,
        /// The job's type name.
        job: &'static str,
        /// The first different key seen.
        later: KeyDigest,
    },
    /// The job's `fingerprint()` returned another value on a later call than on its first ones.
    UnstableFingerprint {
        /// The key.
        digest: KeyDigest,
        /// The key index the job was made for.
        index: usize,
        /// The job's type name.
        job: &'static str,
    },
    /// The user's effect counter showed effects right after a `perform` returned, before any
    /// `on_succeeded_once` of the key had started: the job makes its effects in `perform`.
    EffectsInPerform {
        /// The key.
        digest: KeyDigest,
        /// The most effects counted at such a moment.
        counted: u64,
    },
    /// The user's effect counter counted more than one effect for a succeeded key.
    CountedMoreThanOnce {
        /// The key.
        digest: KeyDigest,
        /// How many.
        counted: u64,
    },
    /// The key succeeded with no crash in its effects window, but the user's effect counter
    /// counted no effect.
    CountedNone {
        /// The key.
        digest: KeyDigest,
    },
    /// The user's effect counter counted effects for a key that did not succeed.
    CountedWithoutSuccess {
        /// The key.
        digest: KeyDigest,
        /// The key's state, or `None` when it has no row.
        state: Option<JobState>,
        /// How many.
        counted: u64,
    },
    /// The user's effect counter returned an error.
    EffectCountFailed {
        /// The key.
        digest: KeyDigest,
        /// The error.
        error: String,
    },
}

/// A cause the harness can name for some violations, with its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cause {
    UnstableKey,
    UnstableFingerprint,
    EffectsInPerform,
}

impl Cause {
    fn explain(self) -> &'static str {
        match self {
            Self::UnstableKey => {
                "key() is unstable: it returned different keys for the same job, so a queue would \
                 run each delivery as a new job. Build the key only from the job's parameters \
                 (no timestamps, random ids or counters)"
            }
            Self::UnstableFingerprint => {
                "fingerprint() is unstable: it returned different values for the same job, so \
                 duplicates would be refused as key conflicts. Fingerprint only the job's \
                 parameters"
            }
            Self::EffectsInPerform => {
                "effects observed in perform: move them to on_succeeded_once. perform runs again \
                 after a crash, a lost lease or a retryable error, so an effect made there can \
                 happen twice, or for a key that never succeeds"
            }
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::UnstableKey | Self::UnstableFingerprint => "job",
            Self::EffectsInPerform => "key",
        }
    }
}

impl Violation {
    /// The key the violation is about.
    pub fn digest(&self) -> &KeyDigest {
        match self {
            Self::NoRow { digest }
            | Self::Stuck { digest, .. }
            | Self::FinalizedTwice { digest, .. }
            | Self::SucceededWithoutFinalize { digest }
            | Self::ChangedAfterSuccess { digest, .. }
            | Self::UnexpectedFailure { digest, .. }
            | Self::EffectsRepeated { digest, .. }
            | Self::EffectsMissing { digest }
            | Self::EffectsOnFailedKey { digest, .. }
            | Self::InDoubtNotListed { digest, .. }
            | Self::UnexpectedInDoubt { digest }
            | Self::EffectsNotDone { digest, .. }
            | Self::NoEffectsNotDone { digest, .. }
            | Self::JobPanicked { digest, .. }
            | Self::UnexpectedError { digest, .. }
            | Self::UnstableKey { digest, .. }
            | Self::UnstableFingerprint { digest, .. }
            | Self::EffectsInPerform { digest, .. }
            | Self::CountedMoreThanOnce { digest, .. }
            | Self::CountedNone { digest }
            | Self::CountedWithoutSuccess { digest, .. }
            | Self::EffectCountFailed { digest, .. } => digest,
        }
    }

    fn cause(&self) -> Option<Cause> {
        match self {
            Self::UnstableKey { .. } => Some(Cause::UnstableKey),
            Self::UnstableFingerprint { .. } => Some(Cause::UnstableFingerprint),
            Self::EffectsInPerform { .. } => Some(Cause::EffectsInPerform),
            _ => None,
        }
    }

    /// Where the violation goes in a failure's list: effects done or finalizes committed more
    /// than once first, then the violations that name their cause, then the rest.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Self::FinalizedTwice { .. }
            | Self::EffectsRepeated { .. }
            | Self::CountedMoreThanOnce { .. } => 0,
            _ if self.cause().is_some() => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}: ", self.digest().short())?;
        match self {
            Self::NoRow { .. } => f.write_str("no row in the store"),
            Self::Stuck { state, .. } => {
                write!(f, "stuck in state {state} after every lease expired")
            }
            Self::FinalizedTwice { commits, .. } => {
                write!(f, "finalized succeeded {commits} times")
            }
            Self::SucceededWithoutFinalize { .. } => {
                f.write_str("row is succeeded but no finalize committed")
            }
            Self::ChangedAfterSuccess { state, .. } => {
                write!(f, "finalized succeeded, but the row is now {state}")
            }
            Self::UnexpectedFailure { failure, .. } => match failure {
                Some(failure) => write!(f, "failed terminally ({failure})"),
                None => f.write_str("failed terminally"),
            },
            Self::EffectsRepeated { count, .. } => write!(f, "effects ran {count} times"),
            Self::EffectsMissing { .. } => f.write_str(
                "succeeded without a crash in its effects window, but effects never ran",
            ),
            Self::EffectsOnFailedKey { count, .. } => {
                write!(f, "effects ran {count} times on a failed key")
            }
            Self::InDoubtNotListed { reason, .. } => write!(
                f,
                "{reason} after its finalize, but the key is not listed effects-in-doubt"
            ),
            Self::UnexpectedInDoubt { .. } => {
                f.write_str("listed effects-in-doubt though its effects ran cleanly")
            }
            Self::EffectsNotDone { effects, .. } => write!(
                f,
                "effects ran cleanly but the row says {}",
                effects.as_str()
            ),
            Self::NoEffectsNotDone {
                calls,
                effects,
                listed,
                ..
            } => write!(
                f,
                "declares no effects, but its effects hook returned {calls} times, the row says \
                 {}{}",
                effects.as_str(),
                if *listed {
                    " and it is listed in doubt"
                } else {
                    ""
                }
            ),
            Self::JobPanicked { message, .. } => {
                write!(f, "the job panicked (not an injected crash): {message}")
            }
            Self::UnexpectedError { error, .. } => write!(f, "unexpected run error: {error}"),
            Self::UnstableKey {
                index, job, later, ..
            } => write!(
                f,
                "key() is unstable: the job made for key index {index} ({job}) returned another \
                 key, {later}, on a later call"
            ),
            Self::UnstableFingerprint { index, job, .. } => write!(
                f,
                "fingerprint() is unstable: the job made for key index {index} ({job}) returned \
                 another fingerprint on a later call"
            ),
            Self::EffectsInPerform { counted, .. } => write!(
                f,
                "effects observed in perform: your counter saw {counted} before \
                 on_succeeded_once ever ran"
            ),
            Self::CountedMoreThanOnce { counted, .. } => write!(
                f,
                "effect done {counted} times (your counter), once expected for a succeeded key"
            ),
            Self::CountedNone { .. } => f.write_str(
                "succeeded without a crash in its effects window, but your counter saw no effect",
            ),
            Self::CountedWithoutSuccess { state, counted, .. } => match state {
                Some(state) => write!(
                    f,
                    "effect done {counted} times (your counter) on a key that ended {state}, none \
                     expected"
                ),
                None => write!(
                    f,
                    "effect done {counted} times (your counter) on a key with no row, none \
                     expected"
                ),
            },
            Self::EffectCountFailed { error, .. } => {
                write!(f, "your effect counter failed: {error}")
            }
        }
    }
}

/// A torture run that could not start, could not check, or found violations. Every message
/// carries the seed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TortureFailure {
    /// The builder was given a value out of range.
    #[error("invalid torture configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// A job's key is invalid.
    #[error(
        "torture seed {seed} (rerun with {SEED_ENV}={seed}): the job for key index {index} has an invalid key: {source}"
    )]
    InvalidKey {
        /// The seed.
        seed: u64,
        /// The key index given to the job factory.
        index: usize,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// Two calls in a row of a job's `key()` returned different keys.
    #[error(
        "torture seed {seed} (rerun with {SEED_ENV}={seed}): key() is unstable: the job made for \
         key index {index} ({job}) returned two different keys from two calls in a row (digests \
         {first}, {second}), so a queue would run each delivery as a new job. Build the key only \
         from the job's parameters (no timestamps, random ids or counters)"
    )]
    UnstableKey {
        /// The seed.
        seed: u64,
        /// The key index given to the job factory.
        index: usize,
        /// The job's type name.
        job: &'static str,
        /// The first key's digest.
        first: KeyDigest,
        /// The second key's digest.
        second: KeyDigest,
    },
    /// Two calls in a row of a job's `fingerprint()` returned different values.
    #[error(
        "torture seed {seed} (rerun with {SEED_ENV}={seed}): fingerprint() is unstable: the job \
         made for key index {index} ({job}, key {digest}) returned two different fingerprints \
         from two calls in a row, so its duplicates would be refused as key conflicts. \
         Fingerprint only the job's parameters"
    )]
    UnstableFingerprint {
        /// The seed.
        seed: u64,
        /// The key index given to the job factory.
        index: usize,
        /// The job's type name.
        job: &'static str,
        /// The key's digest.
        digest: KeyDigest,
    },
    /// Two key indexes produced the same key, or a key already has a row.
    #[error("torture seed {seed} (rerun with {SEED_ENV}={seed}): key {digest} {problem}")]
    KeyReused {
        /// The seed.
        seed: u64,
        /// The key's digest.
        digest: KeyDigest,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The store failed while the harness read it.
    #[error("torture seed {seed} (rerun with {SEED_ENV}={seed}): the store failed: {source}")]
    Store {
        /// The seed.
        seed: u64,
        /// The error.
        #[source]
        source: StoreError,
    },
    /// The run broke exactly-once guarantees.
    #[error(
        "torture seed {seed} (rerun with {SEED_ENV}={seed}): {} violation(s){}\n{report}",
        violations.len(),
        list_violations(violations)
    )]
    Violations {
        /// The seed.
        seed: u64,
        /// What broke, key by key.
        violations: Vec<Violation>,
        /// What the run did.
        report: Box<TortureReport>,
    },
}

impl TortureFailure {
    /// The seed of the failed run, when one was chosen.
    pub fn seed(&self) -> Option<u64> {
        match self {
            Self::Config { .. } => None,
            Self::InvalidKey { seed, .. }
            | Self::UnstableKey { seed, .. }
            | Self::UnstableFingerprint { seed, .. }
            | Self::KeyReused { seed, .. }
            | Self::Store { seed, .. }
            | Self::Violations { seed, .. } => Some(*seed),
        }
    }
}

/// The causes the harness could name (one line each, with how many keys or jobs showed it),
/// then the violations, key by key, at most 20.
pub(super) fn list_violations(violations: &[Violation]) -> String {
    const MAX: usize = 20;
    let mut causes = BTreeMap::<Cause, usize>::new();
    for cause in violations.iter().filter_map(Violation::cause) {
        *causes.entry(cause).or_default() += 1;
    }
    let mut out = String::new();
    for (cause, n) in causes {
        let plural = if n == 1 { "" } else { "s" };
        out.push_str(&format!(
            "\n  cause ({n} {}{plural}): {}",
            cause.noun(),
            cause.explain()
        ));
    }
    for violation in violations.iter().take(MAX) {
        out.push_str("\n  ");
        out.push_str(&violation.to_string());
    }
    if violations.len() > MAX {
        out.push_str(&format!("\n  ... and {} more", violations.len() - MAX));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_messages_name_the_digest_prefix_only() {
        let digest = KeyDigest::of("refund:customer-jane");
        let v = Violation::InDoubtNotListed {
            digest,
            reason: DoubtReason::Crash(CrashPoint::EffectsStart),
        };
        assert_eq!(
            v.to_string(),
            format!(
                "key {}: crashed at the start of effects after its finalize, but the key is not listed effects-in-doubt",
                digest.short()
            )
        );
        let failure = TortureFailure::Violations {
            seed: 99,
            violations: vec![Violation::FinalizedTwice { digest, commits: 2 }],
            report: Box::new(TortureReport {
                seed: 99,
                ..TortureReport::default()
            }),
        };
        let text = failure.to_string();
        assert!(
            text.starts_with(&format!(
                "torture seed 99 (rerun with SAFEJOB_TORTURE_SEED=99): 1 violation(s)\n  key {}: finalized succeeded 2 times\nseed 99: 0 keys",
                digest.short()
            )),
            "{text}"
        );
        assert!(!text.contains("jane"));
        assert_eq!(failure.seed(), Some(99));
    }
}
