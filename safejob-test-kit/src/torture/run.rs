//! The run: one task per dispatch, shuffled over the threads by a seeded plan, pauses served by
//! the calling thread, rounds of recovery until every key is terminal.

use std::{
    collections::{HashMap, HashSet},
    panic::{self, AssertUnwindSafe},
    sync::{
        Arc, Mutex, MutexGuard, Once,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use safejob_core::{
    EffectsMode, FailurePolicy, JobState, KeyDigest, LeaseStore, Report, RunError, Runner, SafeJob,
    store::StoreError,
};

use super::{
    config::{CrashPoint, Torture},
    fault::{FaultStore, SharedPolicy, Tortured},
    observe::{EffectCounter, Entry},
    report::{DoubtReason, TortureFailure, TortureReport, Violation},
};
use crate::EffectProbe;

impl<'h> Torture<'h> {
    /// Runs the torture: builds one job per key index with `make_job` (calling its `key()` and
    /// `fingerprint()` twice, so an unstable one fails here), dispatches them with faults,
    /// recovers, and checks. Returns what happened, or every violation found.
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
            let entry = Entry::new(index, make_job(index), seed)?;
            let digest = *entry.digest();
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
            max_ttl = max_ttl.max(entry.job.lease_ttl().unwrap_or(self.ttl));
            jobs.push(entry);
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
            counter: self.counter.as_deref(),
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
            for (index, entry) in jobs.iter().enumerate() {
                let row = world.store.get(entry.digest()).map_err(store_err)?;
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
    pub(super) fn dispatch_all<J: SafeJob + Sync>(
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
}
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Tallies stay whole across a panic: each update is a single assignment.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The payload of an injected crash. Only the harness creates it, and only the harness's panic
/// hook filter and dispatch threads look for it.
#[derive(Debug)]
pub(super) struct InjectedCrash;

/// Keeps injected crashes out of the test output. Installed once per process and never removed:
/// it forwards every other panic to the hook that was installed before it, so it is invisible
/// except for our own payload (restoring hooks per run would race between parallel tests).
pub(super) fn silence_injected_crashes() {
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
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0; the tiny modulo bias does not matter here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Parses a seed written in decimal or as `0x`-prefixed hex.
pub(super) fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// One planned dispatch.
#[derive(Debug, Clone, Copy)]
pub(super) struct Task {
    pub(super) key_index: usize,
    pub(super) crash: Option<CrashPoint>,
    pub(super) pause: bool,
}

/// What the harness learned about a key while dispatching.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeyTrack {
    /// Finalizes of `succeeded` that committed.
    pub(super) commits: u32,
    /// Why its effects may be in doubt, if they may.
    pub(super) doubt: Option<DoubtReason>,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) dispatches: AtomicU64,
    pub(super) crashes: [AtomicU64; 5],
    pub(super) pauses: AtomicU64,
    pub(super) replays: AtomicU64,
    pub(super) busy: AtomicU64,
    pub(super) regrants: AtomicU64,
    pub(super) leases_lost: AtomicU64,
    pub(super) job_errors: AtomicU64,
    pub(super) retry_later: AtomicU64,
    pub(super) store_errors: AtomicU64,
    pub(super) effects_errors: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(super) fn report(
        &self,
        seed: u64,
        keys: usize,
        planned: u64,
        rounds: usize,
    ) -> TortureReport {
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
pub(super) struct World<'j, J> {
    pub(super) store: Arc<dyn LeaseStore>,
    pub(super) jobs: &'j [Entry<J>],
    pub(super) seed: u64,
    pub(super) ttl: Duration,
    pub(super) effects: EffectsMode,
    pub(super) policy: Arc<dyn FailurePolicy>,
    pub(super) stats: Stats,
    pub(super) tracks: Mutex<HashMap<KeyDigest, KeyTrack>>,
    pub(super) problems: Mutex<Vec<Violation>>,
    /// The calls to `on_succeeded_once` that returned (and, transactionally, committed).
    pub(super) probe: EffectProbe,
    /// The user's count of the job's own effects, if given.
    pub(super) counter: Option<&'j dyn EffectCounter>,
    pub(super) next_dispatch: AtomicU64,
}

impl<J: SafeJob + Sync> World<'_, J> {
    pub(super) fn dispatch(&self, task: &Task, pause: &dyn Fn()) {
        let entry = &self.jobs[task.key_index];
        let digest = entry.digest();
        // Where this job's effects run: its own choice, else the torture's setting (as the
        // pipeline decides it).
        let mode = entry.job.effects_mode().unwrap_or(self.effects);
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
            entry,
            counter: self.counter,
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
        if committed && mode == EffectsMode::Transactional {
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
        if mode == EffectsMode::AfterCommit {
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

    pub(super) fn problem(&self, violation: Violation) {
        lock(&self.problems).push(violation);
    }
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic payload)".to_owned())
}

/// One dispatch's life: its planned crash, whether it is dead, and what it achieved.
#[derive(Debug, Default)]
pub(super) struct Life {
    pub(super) crash: Option<CrashPoint>,
    pub(super) dead: AtomicBool,
    pub(super) crashed_at: Mutex<Option<CrashPoint>>,
    pub(super) committed: AtomicBool,
    pub(super) uncertain_fence: Mutex<Option<u64>>,
    pub(super) finish_failed: AtomicBool,
    /// Effects the job returned `Ok` from in this dispatch.
    pub(super) effects_ran: AtomicU32,
    /// Of those, the ones that ran inside a finalize transaction (they count only if it commits).
    pub(super) tx_effects: AtomicU32,
}

impl Life {
    /// Kills the dispatch at `point` if that is its plan.
    pub(super) fn maybe_crash(&self, point: CrashPoint) {
        if self.crash == Some(point) {
            self.dead.store(true, Ordering::SeqCst);
            *lock(&self.crashed_at) = Some(point);
            panic::panic_any(InjectedCrash);
        }
    }

    pub(super) fn dead(&self) -> Result<(), StoreError> {
        if self.dead.load(Ordering::SeqCst) {
            Err(StoreError::backend(
                "the worker was killed (torture: injected crash); this call never reached the store",
            ))
        } else {
            Ok(())
        }
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
}
