//! The torture's configuration: the [`Torture`] builder and the pipeline points a dispatch can be
//! killed at ([`CrashPoint`]).

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use safejob_core::{EffectsMode, FailurePolicy, NeverFinalize};

use super::{
    SEED_ENV,
    observe::EffectCounter,
    report::TortureFailure,
    run::{SplitMix64, parse_seed},
};
use crate::StoreHarness;

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

/// Configures and runs a torture test. See the [module docs](super).
pub struct Torture<'h> {
    pub(super) harness: &'h dyn StoreHarness,
    pub(super) keys: usize,
    pub(super) duplicates: usize,
    pub(super) threads: usize,
    pub(super) crash_rate: f64,
    pub(super) pause_rate: f64,
    pub(super) points: Vec<CrashPoint>,
    pub(super) seed: Option<u64>,
    pub(super) ttl: Duration,
    pub(super) effects: EffectsMode,
    pub(super) policy: Arc<dyn FailurePolicy>,
    pub(super) allow_failures: bool,
    pub(super) max_rounds: usize,
    pub(super) counter: Option<Box<dyn EffectCounter + 'h>>,
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
            .field("counts_effects", &self.counter.is_some())
            .finish_non_exhaustive()
    }
}

impl<'h> Torture<'h> {
    /// A run on `harness`'s store, with the defaults: 100 keys, 4 duplicates, 4 threads, crash
    /// rate 0.1 at every [`CrashPoint`], pause rate 0.01, a 30 s TTL, after-commit effects,
    /// [`NeverFinalize`], no failed keys allowed, 16 recovery rounds at most, no seed (see
    /// [`seed`](Self::seed)) and no effect counter (see [`count_effects`](Self::count_effects)).
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
            counter: None,
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

    /// Where effects run for jobs that do not choose (their [`SafeJob::effects_mode`](safejob_core::SafeJob::effects_mode) is `None`).
    /// Defaults to [`EffectsMode::AfterCommit`].
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

    /// Checks the job's own side effects with `counter`, which says how many times the effect
    /// happened for a key (rows in your ledger, calls to your fake API). Without one, the
    /// harness counts only the calls to `on_succeeded_once` that returned, and cannot see what
    /// the job wrote anywhere else — in `perform`, say; the report says which it checked.
    ///
    /// With a counter, the run also fails when:
    ///
    /// * the counter shows effects for a key right after a `perform` returned, before any
    ///   `on_succeeded_once` of that key had started: the effects are made in `perform`, which
    ///   runs again after a crash, a lost lease or a retryable error
    ///   ([`Violation::EffectsInPerform`](super::Violation::EffectsInPerform); checked only for a
    ///   job whose `has_effects` is true: a job without effects does all its work in `perform`);
    /// * at the end, a succeeded key does not have exactly one effect (at most one when the
    ///   run left it effects-in-doubt), or a key that did not succeed has any.
    ///
    /// The counter is read from the dispatching threads after every `perform`, and once per key
    /// at the end. An [`EffectProbe`](crate::EffectProbe) is one; so is a closure
    /// `|key: &IdempotencyKey| -> Result<u64, E>` (see [`EffectCounter`]).
    ///
    /// ```
    /// use safejob_core::*;
    /// use safejob_test_kit::{CrashPoint, EffectProbe, MemoryHarness, Torture};
    ///
    /// /// The ledger a charge posts to: every posting is recorded in the probe, whichever half
    /// /// of the job makes it.
    /// struct Charge { id: usize, ledger: EffectProbe }
    ///
    /// impl SafeJob for Charge {
    ///     type Error = std::io::Error;
    ///     fn key(&self) -> Result<IdempotencyKey, KeyError> {
    ///         IdempotencyKey::from_parts(["charge", &self.id.to_string()])
    ///     }
    ///     fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
    ///         Ok(Outcome::done()) // a posting here would fail the run
    ///     }
    ///     fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
    ///         self.ledger.record(ctx.key()); // the posting
    ///         Ok(())
    ///     }
    /// }
    ///
    /// // Crashes before the finalize only, so that no key is left effects-in-doubt.
    /// let (harness, ledger) = (MemoryHarness::new(), EffectProbe::new());
    /// let report = Torture::new(&harness)
    ///     .crash_rate(0.3)
    ///     .crash_points([CrashPoint::BeforePerform, CrashPoint::AfterPerform])
    ///     .seed(3)
    ///     .count_effects(ledger.clone())
    ///     .run(|id| Charge { id, ledger: ledger.clone() })?;
    /// assert_eq!(report.effects_counted, Some(100)); // one posting per charge
    /// # Ok::<(), safejob_test_kit::TortureFailure>(())
    /// ```
    pub fn count_effects(mut self, counter: impl EffectCounter + 'h) -> Self {
        self.counter = Some(Box::new(counter));
        self
    }

    pub(super) fn validate(&self) -> Result<(), TortureFailure> {
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

    pub(super) fn choose_seed(&self) -> Result<u64, TortureFailure> {
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
}
