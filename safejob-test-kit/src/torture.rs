//! An in-process torture harness for a user's own [`SafeJob`].
//!
//! [`Torture::run`] dispatches every one of K keys D times, shuffled, over W threads, through a
//! real [`Runner`] on the harness's store, and injects faults on the way:
//!
//! * **crashes** at each point of the pipeline ([`CrashPoint`]). A crash kills the dispatch like
//!   a killed process: from then on every store call of that dispatch — including the runner's
//!   clean-up, such as releasing the lease while the panic unwinds — is swallowed before it
//!   reaches the store, and the dispatch unwinds to its thread, which counts it and moves on;
//! * **pauses** inside `perform`: the store's time jumps past the lease TTL (through
//!   [`StoreHarness::advance`], never by sleeping), so leases expire while their holders work and
//!   duplicates take them over.
//!
//! Then it makes time pass beyond every lease and re-dispatches each key that is not terminal,
//! round after round (a bounded number), as a queue would redeliver. Finally it checks, from the
//! store's own rows (not from worker memory):
//!
//! * every key has exactly one row, terminal: none is stuck;
//! * no key was finalized `succeeded` more than once (finalizes that committed are counted where
//!   the store answers them), and a `succeeded` row has exactly one;
//! * effects ran exactly once per key, except where a crash or an effects error hit the window
//!   after the finalize: there they ran at most once **and** the key is listed effects-in-doubt
//!   (visible, not lost). With [`EffectsMode::Transactional`] no key may be in doubt at all;
//! * a job that declares no effects (`SafeJob::has_effects` is false) never has its effects hook
//!   called, and its row says effects `done` and is never in doubt, crash or not.
//!
//! The fault plan comes from a seed: the same seed gives the same crashes and pauses at the same
//! dispatches (thread interleaving still varies; with one thread the whole run repeats). Every
//! failure prints the seed. A run given no seed takes `SAFEJOB_TORTURE_SEED` when it is set, so
//! a failure of a randomly seeded run can be replayed without editing the test.
//!
//! ```
//! use safejob_core::*;
//! use safejob_test_kit::{MemoryHarness, Torture};
//!
//! struct Charge(usize);
//! impl SafeJob for Charge {
//!     type Error = std::io::Error;
//!     fn key(&self) -> Result<IdempotencyKey, KeyError> {
//!         IdempotencyKey::from_parts(["charge", &self.0.to_string()])
//!     }
//!     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
//!         Ok(Outcome::done())
//!     }
//! }
//!
//! let harness = MemoryHarness::new();
//! let report = Torture::new(&harness)
//!     .keys(50)
//!     .duplicates(4)
//!     .threads(4)
//!     .crash_rate(0.2)
//!     .seed(7)
//!     .run(Charge)?;
//! assert_eq!(report.succeeded, 50);
//! assert_eq!(report.dispatches_planned, 200);
//! # Ok::<(), safejob_test_kit::TortureFailure>(())
//! ```
//!
//! The memory store's transaction handle cannot roll back a job's own in-memory writes: under
//! [`EffectsMode::Transactional`], a crash at [`CrashPoint::EffectsEnd`] rolls back the store but
//! not such writes. The harness's own count of effects follows the transaction (it is counted
//! only when the finalize commits); a job's ledger that lives outside the store does not, so
//! check such a ledger in after-commit mode, or leave that crash point out.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    panic::{self, AssertUnwindSafe},
    sync::{
        Arc, Mutex, MutexGuard, Once,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Utc};
use safejob_core::{
    EffectsContext, EffectsMode, FailurePolicy, FinalFailure, Fingerprint, FingerprintError,
    IdempotencyKey, JobRecord, JobState, KeyDigest, KeyError, LeaseStore, NeverFinalize, Outcome,
    PerformContext, Report, RunError, Runner, SafeJob,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        ListFilter, ListQuery, Renewed, StoreError, TxEffects,
    },
};
use serde_json::Value;

use crate::{EffectProbe, StoreHarness};

/// The environment variable that overrides the seed of every torture run.
pub const SEED_ENV: &str = "SAFEJOB_TORTURE_SEED";

/// Where in the pipeline a dispatch is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrashPoint {
    /// The lease is granted; `perform` has not started. The row stays `running` until its lease
    /// expires.
    BeforePerform,
    /// `perform` returned; the finalize was never sent.
    AfterPerform,
    /// The finalize committed; the process dies before the effects start.
    AfterFinalize,
    /// Inside `on_succeeded_once`, before the job's own effect.
    EffectsStart,
    /// Inside `on_succeeded_once`, after the job's own effect returned, before the runner records
    /// it.
    EffectsEnd,
}

impl CrashPoint {
    /// Every crash point, in pipeline order.
    pub const ALL: [CrashPoint; 5] = [
        Self::BeforePerform,
        Self::AfterPerform,
        Self::AfterFinalize,
        Self::EffectsStart,
        Self::EffectsEnd,
    ];

    /// Whether a crash here, in the dispatch whose finalize committed, leaves after-commit
    /// effects in doubt.
    pub fn in_effects_window(self) -> bool {
        matches!(
            self,
            Self::AfterFinalize | Self::EffectsStart | Self::EffectsEnd
        )
    }
}

impl fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BeforePerform => "before perform",
            Self::AfterPerform => "after perform",
            Self::AfterFinalize => "after finalize",
            Self::EffectsStart => "at the start of effects",
            Self::EffectsEnd => "at the end of effects",
        })
    }
}

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
    /// Effects the harness saw run (and, transactionally, commit).
    pub effects_run: u64,
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
             {} store errors; {} succeeded, {} failed, {} effects run, {} in doubt",
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
            self.effects_in_doubt
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
    /// The runner returned an error that a well-formed job never causes (a key conflict from a
    /// fingerprint that changes between dispatches, for instance).
    UnexpectedError {
        /// The key.
        digest: KeyDigest,
        /// The error.
        error: String,
    },
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
            | Self::UnexpectedError { digest, .. } => digest,
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
            | Self::KeyReused { seed, .. }
            | Self::Store { seed, .. }
            | Self::Violations { seed, .. } => Some(*seed),
        }
    }
}

fn list_violations(violations: &[Violation]) -> String {
    const MAX: usize = 20;
    let mut out = String::new();
    for violation in violations.iter().take(MAX) {
        out.push_str("\n  ");
        out.push_str(&violation.to_string());
    }
    if violations.len() > MAX {
        out.push_str(&format!("\n  ... and {} more", violations.len() - MAX));
    }
    out
}

/// Configures and runs a torture test. See the [module docs](self).
pub struct Torture<'h> {
    harness: &'h dyn StoreHarness,
    keys: usize,
    duplicates: usize,
    threads: usize,
    crash_rate: f64,
    pause_rate: f64,
    points: Vec<CrashPoint>,
    seed: Option<u64>,
    ttl: Duration,
    effects: EffectsMode,
    policy: Arc<dyn FailurePolicy>,
    allow_failures: bool,
    max_rounds: usize,
}

impl fmt::Debug for Torture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Torture")
            .field("keys", &self.keys)
            .field("duplicates", &self.duplicates)
            .field("threads", &self.threads)
            .field("crash_rate", &self.crash_rate)
            .field("pause_rate", &self.pause_rate)
            .field("points", &self.points)
            .field("seed", &self.seed)
            .field("ttl", &self.ttl)
            .field("effects", &self.effects)
            .field("allow_failures", &self.allow_failures)
            .field("max_rounds", &self.max_rounds)
            .finish_non_exhaustive()
    }
}

impl<'h> Torture<'h> {
    /// A run on `harness`'s store, with the defaults: 100 keys, 4 duplicates, 4 threads, crash
    /// rate 0.1 at every [`CrashPoint`], pause rate 0.01, a 30 s TTL, after-commit effects,
    /// [`NeverFinalize`], no failed keys allowed, 16 recovery rounds at most, and no seed (see
    /// [`seed`](Self::seed)).
    pub fn new(harness: &'h dyn StoreHarness) -> Self {
        Self {
            harness,
            keys: 100,
            duplicates: 4,
            threads: 4,
            crash_rate: 0.1,
            pause_rate: 0.01,
            points: CrashPoint::ALL.to_vec(),
            seed: None,
            ttl: Duration::from_secs(30),
            effects: EffectsMode::AfterCommit,
            policy: Arc::new(NeverFinalize),
            allow_failures: false,
            max_rounds: 16,
        }
    }

    /// How many distinct keys (the job factory is called with `0..n`). Defaults to 100.
    pub fn keys(mut self, n: usize) -> Self {
        self.keys = n;
        self
    }

    /// How many times each key is dispatched in the faulty phase. Defaults to 4.
    pub fn duplicates(mut self, n: usize) -> Self {
        self.duplicates = n;
        self
    }

    /// How many worker threads dispatch concurrently. Defaults to 4.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// The chance, per dispatch, that a crash is planned (at one of the enabled points, chosen
    /// uniformly; a dispatch that never reaches its point does not crash). Defaults to 0.1.
    pub fn crash_rate(mut self, rate: f64) -> Self {
        self.crash_rate = rate;
        self
    }

    /// The chance, per dispatch, that `perform` is paused past the lease TTL. Defaults to 0.01.
    pub fn pause_rate(mut self, rate: f64) -> Self {
        self.pause_rate = rate;
        self
    }

    /// Only crash at these points. Defaults to [`CrashPoint::ALL`].
    pub fn crash_points(mut self, points: impl IntoIterator<Item = CrashPoint>) -> Self {
        self.points = points.into_iter().collect();
        self.points.sort();
        self.points.dedup();
        self
    }

    /// The seed of the fault plan. Without one, the seed comes from `SAFEJOB_TORTURE_SEED` when
    /// it is set (to replay a failure), and from the time otherwise; either way, every failure
    /// prints it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The runner's default lease TTL. Defaults to 30 seconds (time only moves by `advance`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Where effects run. Defaults to [`EffectsMode::AfterCommit`].
    pub fn effects(mut self, mode: EffectsMode) -> Self {
        self.effects = mode;
        self
    }

    /// The runner's failure policy. Defaults to [`NeverFinalize`].
    pub fn failure_policy(mut self, policy: impl FailurePolicy + 'static) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Whether a key may end `failed` (by the job's decision or its failure policy) without that
    /// being a violation. Defaults to `false`.
    pub fn allow_failures(mut self, allow: bool) -> Self {
        self.allow_failures = allow;
        self
    }

    /// How many recovery rounds (expire every lease, re-dispatch every unfinished key) may run
    /// before the keys still unfinished count as stuck. Defaults to 16.
    pub fn max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds;
        self
    }

    fn validate(&self) -> Result<(), TortureFailure> {
        let bad = |reason: String| Err(TortureFailure::Config { reason });
        if self.keys == 0 || self.duplicates == 0 || self.threads == 0 {
            return bad(format!(
                "keys ({}), duplicates ({}) and threads ({}) must be at least 1",
                self.keys, self.duplicates, self.threads
            ));
        }
        for (name, rate) in [("crash", self.crash_rate), ("pause", self.pause_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return bad(format!("{name} rate {rate} is not within 0..=1"));
            }
        }
        if self.crash_rate > 0.0 && self.points.is_empty() {
            return bad("a crash rate above 0 needs at least one crash point".into());
        }
        Ok(())
    }

    fn choose_seed(&self) -> Result<u64, TortureFailure> {
        if let Some(seed) = self.seed {
            return Ok(seed);
        }
        match std::env::var(SEED_ENV) {
            Ok(text) => parse_seed(&text).ok_or_else(|| TortureFailure::Config {
                reason: format!("{SEED_ENV}={text:?} is not a u64 (decimal or 0x-hex)"),
            }),
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or_default();
                Ok(SplitMix64(nanos ^ u64::from(std::process::id())).next())
            }
        }
    }

    /// Runs the torture: builds one job per key index with `make_job`, dispatches them with
    /// faults, recovers, and checks. Returns what happened, or every violation found.
    pub fn run<J, F>(&self, mut make_job: F) -> Result<TortureReport, TortureFailure>
    where
        J: SafeJob + Sync,
        F: FnMut(usize) -> J,
    {
        self.validate()?;
        let seed = self.choose_seed()?;
        let store = self.harness.store();
        let store_err = |source| TortureFailure::Store { seed, source };

        let mut jobs = Vec::with_capacity(self.keys);
        let mut seen = HashSet::new();
        let mut max_ttl = self.ttl;
        for index in 0..self.keys {
            let job = make_job(index);
            let key = job.key().map_err(|source| TortureFailure::InvalidKey {
                seed,
                index,
                source,
            })?;
            let digest = *key.digest();
            if !seen.insert(digest) {
                return Err(TortureFailure::KeyReused {
                    seed,
                    digest,
                    problem: "is made for two key indexes; each index needs its own key",
                });
            }
            if store.get(&digest).map_err(store_err)?.is_some() {
                return Err(TortureFailure::KeyReused {
                    seed,
                    digest,
                    problem: "already has a row in the store; give each run fresh keys",
                });
            }
            max_ttl = max_ttl.max(job.lease_ttl().unwrap_or(self.ttl));
            jobs.push((job, digest));
        }
        // Probe that the runner accepts this configuration before any thread starts.
        Runner::builder(store.clone())
            .default_ttl(self.ttl)
            .build()
            .map_err(|e| TortureFailure::Config {
                reason: e.to_string(),
            })?;
        silence_injected_crashes();

        let world = World {
            store,
            jobs: &jobs,
            seed,
            ttl: self.ttl,
            effects: self.effects,
            policy: self.policy.clone(),
            stats: Stats::default(),
            tracks: Mutex::new(HashMap::new()),
            problems: Mutex::new(Vec::new()),
            probe: EffectProbe::new(),
            next_dispatch: AtomicU64::new(0),
        };
        // Past every lease and effects window any job may hold.
        let expire_all = max_ttl + Duration::from_secs(1);

        // The faulty phase: every key `duplicates` times, shuffled.
        let mut rng = SplitMix64(seed);
        let mut tasks: Vec<Task> = (0..self.keys)
            .flat_map(|k| (0..self.duplicates).map(move |_| k))
            .map(|key_index| Task {
                key_index,
                crash: None,
                pause: false,
            })
            .collect();
        for i in (1..tasks.len()).rev() {
            tasks.swap(i, rng.below(i + 1));
        }
        for task in &mut tasks {
            if rng.unit() < self.crash_rate {
                task.crash = Some(self.points[rng.below(self.points.len())]);
            }
            task.pause = rng.unit() < self.pause_rate;
        }
        self.dispatch_all(&world, &tasks, expire_all);

        // Recovery: let every lease expire, redeliver what is unfinished, until all is terminal.
        let mut rounds = 0;
        loop {
            self.harness.advance(expire_all);
            let mut unfinished = Vec::new();
            for (index, (_, digest)) in jobs.iter().enumerate() {
                let row = world.store.get(digest).map_err(store_err)?;
                if !row.is_some_and(|r| r.state.is_terminal()) {
                    unfinished.push(Task {
                        key_index: index,
                        crash: None,
                        pause: false,
                    });
                }
            }
            if unfinished.is_empty() || rounds == self.max_rounds {
                break;
            }
            rounds += 1;
            self.dispatch_all(&world, &unfinished, expire_all);
        }

        let planned = tasks.len() as u64;
        self.check(world, planned, rounds)
    }

    /// Runs `tasks` over the worker threads; the calling thread serves pause requests (it alone
    /// touches the harness, which need not be shareable across threads).
    fn dispatch_all<J: SafeJob + Sync>(
        &self,
        world: &World<'_, J>,
        tasks: &[Task],
        expire_all: Duration,
    ) {
        let cursor = AtomicUsize::new(0);
        let (pause_tx, pause_rx) = mpsc::channel::<mpsc::SyncSender<()>>();
        std::thread::scope(|s| {
            for _ in 0..self.threads.min(tasks.len()) {
                let (cursor, pause_tx) = (&cursor, pause_tx.clone());
                s.spawn(move || {
                    let pause = || {
                        let (done_tx, done_rx) = mpsc::sync_channel(0);
                        if pause_tx.send(done_tx).is_ok() {
                            let _ = done_rx.recv();
                        }
                    };
                    while let Some(task) = tasks.get(cursor.fetch_add(1, Ordering::Relaxed)) {
                        world.dispatch(task, &pause);
                    }
                });
            }
            drop(pause_tx);
            for done in pause_rx {
                self.harness.advance(expire_all);
                let _ = done.send(());
            }
        });
    }

    fn check<J: SafeJob + Sync>(
        &self,
        world: World<'_, J>,
        planned: u64,
        rounds: usize,
    ) -> Result<TortureReport, TortureFailure> {
        let seed = world.seed;
        let store_err = |source| TortureFailure::Store { seed, source };
        let ours: HashSet<KeyDigest> = world.jobs.iter().map(|(_, d)| *d).collect();
        let in_doubt = list_in_doubt(&*world.store, &ours).map_err(store_err)?;
        let tracks = lock(&world.tracks).clone();
        let mut violations = std::mem::take(&mut *lock(&world.problems));
        let mut report = world.stats.report(seed, self.keys, planned, rounds);
        report.effects_in_doubt = in_doubt.len();
        report.effects_run = world.probe.total();

        for (job, digest) in world.jobs {
            let digest = *digest;
            let track = tracks.get(&digest).copied().unwrap_or_default();
            let effects = world.probe.count_digest(&digest);
            let listed = in_doubt.contains(&digest);
            if track.commits > 1 {
                violations.push(Violation::FinalizedTwice {
                    digest,
                    commits: track.commits,
                });
            }
            let Some(row) = world.store.get(&digest).map_err(store_err)? else {
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

fn check_effects(
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

/// Every key of `ours` the store lists effects-in-doubt, read page by page.
fn list_in_doubt(
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Tallies stay whole across a panic: each update is a single assignment.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The payload of an injected crash. Only the harness creates it, and only the harness's panic
/// hook filter and dispatch threads look for it.
#[derive(Debug)]
struct InjectedCrash;

/// Keeps injected crashes out of the test output. Installed once per process and never removed:
/// it forwards every other panic to the hook that was installed before it, so it is invisible
/// except for our own payload (restoring hooks per run would race between parallel tests).
fn silence_injected_crashes() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<InjectedCrash>() {
                previous(info);
            }
        }));
    });
}

/// SplitMix64: a tiny, well-mixed generator; enough for a reproducible fault plan.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0; the tiny modulo bias does not matter here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses a seed written in decimal or as `0x`-prefixed hex.
fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One planned dispatch.
#[derive(Debug, Clone, Copy)]
struct Task {
    key_index: usize,
    crash: Option<CrashPoint>,
    pause: bool,
}

/// What the harness learned about a key while dispatching.
#[derive(Debug, Clone, Copy, Default)]
struct KeyTrack {
    /// Finalizes of `succeeded` that committed.
    commits: u32,
    /// Why its effects may be in doubt, if they may.
    doubt: Option<DoubtReason>,
}

#[derive(Default)]
struct Stats {
    dispatches: AtomicU64,
    crashes: [AtomicU64; 5],
    pauses: AtomicU64,
    replays: AtomicU64,
    busy: AtomicU64,
    regrants: AtomicU64,
    leases_lost: AtomicU64,
    job_errors: AtomicU64,
    retry_later: AtomicU64,
    store_errors: AtomicU64,
    effects_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    fn report(&self, seed: u64, keys: usize, planned: u64, rounds: usize) -> TortureReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TortureReport {
            seed,
            keys,
            dispatches_planned: planned,
            dispatches: get(&self.dispatches),
            recovery_rounds: rounds,
            crashes: CrashPoint::ALL
                .iter()
                .zip(&self.crashes)
                .map(|(p, c)| (*p, get(c)))
                .collect(),
            pauses: get(&self.pauses),
            replays: get(&self.replays),
            busy: get(&self.busy),
            regrants: get(&self.regrants),
            leases_lost: get(&self.leases_lost),
            job_errors: get(&self.job_errors),
            retry_later: get(&self.retry_later),
            store_errors: get(&self.store_errors),
            effects_errors: get(&self.effects_errors),
            ..TortureReport::default()
        }
    }
}

/// Everything the dispatching threads share.
struct World<'j, J> {
    store: Arc<dyn LeaseStore>,
    jobs: &'j [(J, KeyDigest)],
    seed: u64,
    ttl: Duration,
    effects: EffectsMode,
    policy: Arc<dyn FailurePolicy>,
    stats: Stats,
    tracks: Mutex<HashMap<KeyDigest, KeyTrack>>,
    problems: Mutex<Vec<Violation>>,
    probe: EffectProbe,
    next_dispatch: AtomicU64,
}

impl<J: SafeJob + Sync> World<'_, J> {
    fn dispatch(&self, task: &Task, pause: &dyn Fn()) {
        let (job, digest) = &self.jobs[task.key_index];
        let n = self.next_dispatch.fetch_add(1, Ordering::Relaxed);
        bump(&self.stats.dispatches);
        let life = Arc::new(Life {
            crash: task.crash,
            ..Life::default()
        });
        let store = Arc::new(FaultStore {
            inner: self.store.clone(),
            life: life.clone(),
            regrants: AtomicU64::new(0),
        });
        let runner = Runner::builder(store.clone())
            .worker_id(format!("torture-{:x}-{n}", self.seed))
            .default_ttl(self.ttl)
            .effects(self.effects)
            .failure_policy(SharedPolicy(self.policy.clone()))
            .build();
        let Ok(runner) = runner else {
            // Validated before the run started; unreachable in practice.
            return;
        };
        let wrapped = Tortured {
            job,
            life: &life,
            pause: task.pause.then_some(pause),
            stats: &self.stats,
        };
        let ran = panic::catch_unwind(AssertUnwindSafe(|| runner.run(&wrapped)));
        self.stats
            .regrants
            .fetch_add(store.regrants.load(Ordering::Relaxed), Ordering::Relaxed);

        let mut doubt = None;
        match ran {
            Ok(Ok(report)) => match report {
                Report::AlreadySucceeded { .. } | Report::AlreadyFailed { .. } => {
                    bump(&self.stats.replays)
                }
                Report::Busy { .. } => bump(&self.stats.busy),
                Report::RetryLater { .. } => bump(&self.stats.retry_later),
                Report::Succeeded { .. } | Report::Failed { .. } => {}
            },
            Ok(Err(error)) => match error {
                RunError::Job { .. } | RunError::EffectsRolledBack { .. } => {
                    bump(&self.stats.job_errors)
                }
                RunError::LeaseLost { .. } => bump(&self.stats.leases_lost),
                RunError::Store(_) => bump(&self.stats.store_errors),
                RunError::EffectsInDoubt { .. } => {
                    bump(&self.stats.effects_errors);
                    doubt = Some(DoubtReason::EffectsFailed);
                }
                other => self.problem(Violation::UnexpectedError {
                    digest: *digest,
                    error: other.to_string(),
                }),
            },
            Err(payload) => {
                if payload.is::<InjectedCrash>() {
                    if let Some(point) = *lock(&life.crashed_at) {
                        bump(&self.stats.crashes[point as usize]);
                        if point.in_effects_window() {
                            doubt = Some(DoubtReason::Crash(point));
                        }
                    }
                } else {
                    doubt = Some(DoubtReason::EffectsFailed);
                    self.problem(Violation::JobPanicked {
                        digest: *digest,
                        message: panic_message(&*payload),
                    });
                }
            }
        }

        // Settle what the store alone knows: a finalize whose answer was lost to a store error.
        let mut committed = life.committed.load(Ordering::Relaxed);
        if let Some(fence) = *lock(&life.uncertain_fence)
            && let Ok(Some(row)) = self.store.get(digest)
        {
            committed |= row.state == JobState::Succeeded && row.fence == fence;
        }
        if committed && self.effects == EffectsMode::Transactional {
            for _ in 0..life.tx_effects.load(Ordering::Relaxed) {
                self.probe.record_digest(digest);
            }
        }
        if !committed {
            return;
        }
        if life.finish_failed.load(Ordering::Relaxed) && doubt.is_none() {
            doubt = Some(DoubtReason::NotRecorded);
        }
        if self.effects == EffectsMode::AfterCommit {
            for _ in 0..life.effects_ran.load(Ordering::Relaxed) {
                self.probe.record_digest(digest);
            }
        } else {
            doubt = None;
        }
        let mut tracks = lock(&self.tracks);
        let track = tracks.entry(*digest).or_default();
        track.commits += 1;
        if track.doubt.is_none() {
            track.doubt = doubt;
        }
    }

    fn problem(&self, violation: Violation) {
        lock(&self.problems).push(violation);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic payload)".to_owned())
}

/// One dispatch's life: its planned crash, whether it is dead, and what it achieved.
#[derive(Debug, Default)]
struct Life {
    crash: Option<CrashPoint>,
    dead: AtomicBool,
    crashed_at: Mutex<Option<CrashPoint>>,
    committed: AtomicBool,
    uncertain_fence: Mutex<Option<u64>>,
    finish_failed: AtomicBool,
    /// Effects the job returned `Ok` from in this dispatch.
    effects_ran: AtomicU32,
    /// Of those, the ones that ran inside a finalize transaction (they count only if it commits).
    tx_effects: AtomicU32,
}

impl Life {
    /// Kills the dispatch at `point` if that is its plan.
    fn maybe_crash(&self, point: CrashPoint) {
        if self.crash == Some(point) {
            self.dead.store(true, Ordering::SeqCst);
            *lock(&self.crashed_at) = Some(point);
            panic::panic_any(InjectedCrash);
        }
    }

    fn dead(&self) -> Result<(), StoreError> {
        if self.dead.load(Ordering::SeqCst) {
            Err(StoreError::backend(
                "the worker was killed (torture: injected crash); this call never reached the store",
            ))
        } else {
            Ok(())
        }
    }
}

/// The store as one dispatch sees it: crashes at the store-side points, swallows every call once
/// the dispatch is dead, and counts what committed.
struct FaultStore {
    inner: Arc<dyn LeaseStore>,
    life: Arc<Life>,
    regrants: AtomicU64,
}

impl FaultStore {
    /// A finalize as the dispatch sees it: refused once dead, a crash before it reaches the store
    /// and another after it returns, and a record of whether it committed (or is in question).
    fn finalize(
        &self,
        lease: &Lease,
        call: impl FnOnce() -> Result<Finalized, StoreError>,
    ) -> Result<Finalized, StoreError> {
        self.life.dead()?;
        self.life.maybe_crash(CrashPoint::AfterPerform);
        let finalized = call();
        match &finalized {
            Ok(Finalized::Committed) => self.life.committed.store(true, Ordering::SeqCst),
            Ok(_) => {}
            Err(_) => *lock(&self.life.uncertain_fence) = Some(lease.fence),
        }
        if !matches!(finalized, Ok(Finalized::EffectsAborted)) {
            self.life.maybe_crash(CrashPoint::AfterFinalize);
        }
        finalized
    }
}

impl LeaseStore for FaultStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.life.dead()?;
        self.inner.now()
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        self.life.dead()?;
        let acquired = self.inner.acquire(req)?;
        if matches!(&acquired, Acquired::Granted(lease) if lease.attempt > 1) {
            self.regrants.fetch_add(1, Ordering::Relaxed);
        }
        Ok(acquired)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        self.life.dead()?;
        self.inner.renew(lease, ttl)
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        self.finalize(lease, || {
            self.inner
                .finalize_succeeded(lease, result, effects_ttl, hook)
        })
    }

    fn finalize_succeeded_without_effects(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
    ) -> Result<Finalized, StoreError> {
        // Forwarded, not left to the default: the inner store's own one-statement path is what
        // must survive the crashes.
        self.finalize(lease, || {
            self.inner
                .finalize_succeeded_without_effects(lease, result, effects_ttl)
        })
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
    ) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        self.life.maybe_crash(CrashPoint::AfterPerform);
        self.inner.finalize_failed(lease, failure)
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        self.inner.release(lease, error)
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        self.life.dead()?;
        let finished = self.inner.finish_effects(lease, outcome);
        if finished.is_err() {
            self.life.finish_failed.store(true, Ordering::SeqCst);
        }
        finished
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        self.life.dead()?;
        self.inner.claim_effects(req)
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        self.life.dead()?;
        self.inner.get(digest)
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        self.life.dead()?;
        self.inner.list(query)
    }
}

/// The user's job as one dispatch runs it: crashes and pauses at the job-side points, and
/// counts the effects that returned.
struct Tortured<'a, J> {
    job: &'a J,
    life: &'a Life,
    pause: Option<&'a dyn Fn()>,
    stats: &'a Stats,
}

impl<J: SafeJob> SafeJob for Tortured<'_, J> {
    type Error = J::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        self.job.key()
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        self.job.fingerprint()
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.job.lease_ttl()
    }

    fn has_effects(&self) -> bool {
        self.job.has_effects()
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.life.maybe_crash(CrashPoint::BeforePerform);
        if let Some(pause) = self.pause {
            bump(&self.stats.pauses);
            pause();
        }
        self.job.perform(ctx)
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        self.life.maybe_crash(CrashPoint::EffectsStart);
        let ran = self.job.on_succeeded_once(ctx);
        if ran.is_ok() {
            let counter = if ctx.is_transactional() {
                &self.life.tx_effects
            } else {
                &self.life.effects_ran
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        self.life.maybe_crash(CrashPoint::EffectsEnd);
        ran
    }
}

/// Shares one failure policy between the runners of every dispatch.
struct SharedPolicy(Arc<dyn FailurePolicy>);

impl FailurePolicy for SharedPolicy {
    fn decide(
        &self,
        error: &(dyn std::error::Error + 'static),
        attempt: u32,
    ) -> Option<FinalFailure> {
        self.0.decide(error, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x5afe\n"), Some(0x5afe));
        assert_eq!(parse_seed("0xzz"), None);
        assert_eq!(parse_seed("-1"), None);
        assert_eq!(parse_seed(""), None);
    }

    #[test]
    fn splitmix_is_reproducible_and_spread() {
        let mut a = SplitMix64(42);
        let mut b = SplitMix64(42);
        let xs: Vec<u64> = (0..4).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        let mut c = SplitMix64(1);
        let mean = (0..10_000).map(|_| c.unit()).sum::<f64>() / 10_000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        assert!((0..1000).all(|_| c.below(5) < 5));
    }

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
