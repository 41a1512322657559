//! The parent: sets the run up, spawns the workers, plays the nemesis, recovers, checks, and
//! prints one JSON line.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use safejob_core::{
    JobState, LeaseStore, Runner,
    store::{ListFilter, ListQuery},
};
use safejob_diesel::{BackendKind, DieselStore};
use safejob_test_kit::proxy::FaultProxy;

use super::{
    check,
    db::{self, Namespace},
    events::{Ambiguity, EventLog, Events},
    job::{EffectsKind, Sabotage, TortureJob, key_of},
    worker,
};

/// `safejob-chaos`'s arguments for a run.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Database URL: `sqlite://fresh-file.db`, `postgres://…`, `mysql://…`. PostgreSQL and MySQL
    /// runs get a schema / database of their own, dropped at the end (see --keep).
    #[arg(long)]
    pub url: Option<String>,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 200)]
    pub keys: u64,
    /// Dispatches of each key.
    #[arg(long, default_value_t = 3)]
    pub duplicates: u64,
    /// Seconds the nemesis acts; the dispatches are paced to last about as long.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Seed of the dispatch order and the nemesis (default: from the time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Expected SIGKILLs per second (each killed worker is restarted).
    #[arg(long, default_value_t = 0.0)]
    pub kill_rate: f64,
    /// Expected SIGSTOP pauses per second, each longer than the lease TTL.
    #[arg(long, default_value_t = 0.0)]
    pub pause_rate: f64,
    /// Where the effects are written.
    #[arg(long, value_enum, default_value_t = EffectsKind::AfterCommit)]
    pub effects: EffectsKind,
    /// A shell command that restarts the database server; run by the nemesis at half time and
    /// then every --db-restart-every seconds.
    #[arg(long)]
    pub db_restart_cmd: Option<String>,
    /// Seconds between database restarts after the first.
    #[arg(long, default_value_t = 120.0)]
    pub db_restart_every: f64,
    /// Route workers through the fault proxy (PostgreSQL and MySQL on the loopback interface).
    #[arg(long)]
    pub proxy: bool,
    /// Expected ambiguous-commit cuts armed per second (with --proxy).
    #[arg(long, default_value_t = 1.0)]
    pub ambiguous_rate: f64,
    /// Expected cuts of every proxied connection per second (with --proxy).
    #[arg(long, default_value_t = 0.2)]
    pub cut_rate: f64,
    /// Expected refusal windows (new connections closed for 0.2–1 s) per second (with --proxy).
    #[arg(long, default_value_t = 0.1)]
    pub refuse_rate: f64,
    /// Lease TTL in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub ttl_ms: u64,
    /// How long each perform works, in milliseconds (renewing its lease as it goes). Defaults to
    /// what spreads the keys over the duration: most of a worker's time is then spent holding a
    /// lease, where kills and pauses hurt most.
    #[arg(long)]
    pub perform_ms: Option<u64>,
    /// Run a deliberately broken job in the workers (shows that the checker fails such a run).
    #[arg(long, value_enum, hide = true, default_value_t = Sabotage::None)]
    pub sabotage: Sabotage,
    /// Keep the schema / database and the run directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// SplitMix64: small, seedable, good enough for a fault plan.
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Shuffles in place.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The dispatch order: keys in a shuffled order, in groups of `group` keys whose D dispatches
/// are shuffled together. The duplicates of a key are close in the table, so several workers
/// claim them at the same time and race for the same lease, as duplicate deliveries do.
fn dispatch_plan(keys: u64, duplicates: u64, group: usize, rng: &mut Rng) -> Vec<u64> {
    let mut order: Vec<u64> = (0..keys).collect();
    rng.shuffle(&mut order);
    let mut plan = Vec::with_capacity((keys * duplicates) as usize);
    for chunk in order.chunks(group.max(1)) {
        let mut window: Vec<u64> = chunk
            .iter()
            .flat_map(|k| std::iter::repeat_n(*k, duplicates as usize))
            .collect();
        rng.shuffle(&mut window);
        plan.extend(window);
    }
    plan
}

/// When a fault comes next: `rate` per second on average, each gap uniform in 0.5–1.5 times the
/// mean, so a run of S seconds injects close to `rate × S` of them (a Poisson process would
/// make the counts of a short CI run swing too much to promise a minimum).
struct Schedule {
    mean: Option<Duration>,
    next: Duration,
}

impl Schedule {
    fn new(rate: f64, rng: &mut Rng) -> Self {
        let mean = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        let mut s = Self {
            mean,
            next: Duration::ZERO,
        };
        s.advance(Duration::ZERO, rng);
        s
    }

    fn advance(&mut self, from: Duration, rng: &mut Rng) {
        if let Some(mean) = self.mean {
            self.next = from + mean.mul_f64(0.5 + rng.unit());
        }
    }

    /// Whether the fault is due at `elapsed` (and if so, schedules the next one).
    fn due(&mut self, elapsed: Duration, rng: &mut Rng) -> bool {
        if self.mean.is_none() || elapsed < self.next {
            return false;
        }
        self.advance(elapsed, rng);
        true
    }
}

/// Faults injected so far.
#[derive(Debug, Default)]
struct Faults {
    kills: u64,
    pauses: u64,
    restarts: u64,
    db_restarts: u64,
    db_restart_failures: u64,
}

/// One worker slot: its current process.
struct Slot {
    child: Option<Child>,
    incarnation: u32,
    paused_until: Option<Instant>,
    drained: bool,
}

/// Everything a worker needs to be (re)started.
struct Spawner {
    exe: PathBuf,
    url: String,
    schema: Option<String>,
    dir: PathBuf,
    ttl_ms: u64,
    effects: EffectsKind,
    pace_ms: u64,
    perform_ms: u64,
    sabotage: Sabotage,
}

impl Spawner {
    fn spawn(&self, slot: usize, incarnation: u32) -> std::io::Result<Child> {
        let name = worker_name(slot, incarnation);
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("workers.stderr"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .arg("--url")
            .arg(&self.url)
            .arg("--name")
            .arg(&name)
            .arg("--ttl-ms")
            .arg(self.ttl_ms.to_string())
            .arg("--effects")
            .arg(self.effects.as_str())
            .arg("--events")
            .arg(self.dir.join(format!("{name}.events")))
            .arg("--pace-ms")
            .arg(self.pace_ms.to_string())
            .arg("--perform-ms")
            .arg(self.perform_ms.to_string())
            .arg("--sabotage")
            .arg(
                clap::ValueEnum::to_possible_value(&self.sabotage)
                    .map_or_else(|| "none".to_owned(), |v| v.get_name().to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(schema) = &self.schema {
            cmd.arg("--schema").arg(schema);
        }
        cmd.spawn()
    }
}

/// Sends a job-control signal to one of our own children.
fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The event-file name of slot `i`'s incarnation `incarnation` (the worker's `--name`).
fn worker_name(i: usize, incarnation: u32) -> String {
    format!("w{i}.{incarnation}")
}

/// Kills every worker still alive (on every way out of the run).
struct Reaper(Vec<Slot>);

impl Reaper {
    /// Kills every worker still alive; their names.
    fn kill_all(&mut self) -> Vec<String> {
        let mut killed = Vec::new();
        for (i, slot) in self.0.iter_mut().enumerate() {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                killed.push(worker_name(i, slot.incarnation));
            }
        }
        killed
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("safejob-chaos: {message}");
    ExitCode::from(2)
}

/// `safejob-chaos` with the run's arguments.
pub fn main(args: RunArgs) -> ExitCode {
    worker::init_tracing(None);
    let Some(url) = args.url.clone() else {
        return fail("--url is required");
    };
    if args.workers == 0 || args.keys == 0 || args.duplicates == 0 {
        return fail("--workers, --keys and --duplicates must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let name = format!(
        "safejob_torture_{}_{}",
        std::process::id(),
        seed % 1_000_000
    );
    let ns = match Namespace::create(&url, &name) {
        Ok(ns) => ns,
        Err(e) => return fail(format_args!("cannot create the run's namespace: {e}")),
    };
    let dir = std::env::temp_dir().join(&name);
    let (code, ok) = match std::fs::create_dir_all(&dir) {
        Ok(()) => run(&args, &ns, &dir, seed),
        Err(e) => (
            fail(format_args!("cannot create {}: {e}", dir.display())),
            false,
        ),
    };
    if args.keep {
        eprintln!("safejob-chaos: kept namespace {name} and {}", dir.display());
        return code;
    }
    if let Err(e) = ns.drop_all() {
        eprintln!("safejob-chaos: could not drop the run's namespace: {e}");
    }
    if ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        // The workers' events and logs, for whoever investigates (the JSON line has the seed).
        eprintln!(
            "safejob-chaos: the run failed; its worker logs and events are in {}",
            dir.display()
        );
    }
    code
}

/// The run itself; the exit code, and whether every invariant held.
fn run(args: &RunArgs, ns: &Namespace, dir: &Path, seed: u64) -> (ExitCode, bool) {
    let mut rng = Rng::new(seed);
    let ttl = Duration::from_millis(args.ttl_ms);
    let started = Instant::now();
    // The driver's own connections (setup, nemesis, recovery, checker) go straight to the
    // database and are tested on check-out: a database restart must not leave the checker a
    // dead connection.
    let direct = match ns
        .builder(&ns.url)
        .max_size(4)
        .test_on_check_out(true)
        .build()
    {
        Ok(store) => Arc::new(store),
        Err(e) => return (fail(e), false),
    };
    let plan = dispatch_plan(args.keys, args.duplicates, args.workers, &mut rng);
    if let Err(e) = ns.setup(&direct, &plan) {
        return (fail(format_args!("setup: {e}")), false);
    }
    if args.effects == EffectsKind::Outbox
        && let Err(e) = super::outbox::setup(&direct)
    {
        return (fail(format_args!("setup: {e}")), false);
    }

    let proxy = if args.proxy {
        if ns.kind == BackendKind::Sqlite {
            return (
                fail("--proxy needs a PostgreSQL or MySQL database (SQLite has no connection)"),
                false,
            );
        }
        match db::loopback_target(&ns.url)
            .and_then(|t| FaultProxy::start(t).map_err(|e| e.to_string()))
        {
            Ok(proxy) => Some(proxy),
            Err(e) => return (fail(format_args!("proxy: {e}")), false),
        }
    } else {
        None
    };
    let worker_url = match &proxy {
        Some(p) => match db::via_proxy(&ns.url, ns.kind, p.local_addr()) {
            Ok(url) => url,
            Err(e) => return (fail(e), false),
        },
        None => ns.url.clone(),
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return (fail(e), false),
    };
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let per_key = (duration.as_millis() as u64 * args.workers as u64) / args.keys.max(1);
    let perform_ms = args.perform_ms.unwrap_or((per_key * 4 / 5).clamp(5, 1000));
    let pace_ms = 0;
    let spawner = Spawner {
        exe,
        url: worker_url,
        schema: ns.schema.clone(),
        dir: dir.to_owned(),
        ttl_ms: args.ttl_ms,
        effects: args.effects,
        pace_ms,
        perform_ms,
        sabotage: args.sabotage,
    };
    let mut slots = Reaper(Vec::new());
    for i in 0..args.workers {
        match spawner.spawn(i, 0) {
            Ok(child) => slots.0.push(Slot {
                child: Some(child),
                incarnation: 0,
                paused_until: None,
                drained: false,
            }),
            Err(e) => return (fail(format_args!("cannot start a worker: {e}")), false),
        }
    }

    let mut faults = Faults::default();
    // The worker processes this run killed: only they may leave an ambiguous commit unresolved.
    let mut killed = std::collections::BTreeSet::new();
    let mut kill_at = Schedule::new(args.kill_rate, &mut rng);
    let mut pause_at = Schedule::new(args.pause_rate, &mut rng);
    let mut arm_at = Schedule::new(args.ambiguous_rate, &mut rng);
    let mut cut_at = Schedule::new(args.cut_rate, &mut rng);
    let mut refuse_at = Schedule::new(args.refuse_rate, &mut rng);
    let tick = Duration::from_millis(50);
    let hard_limit = duration * 3 + Duration::from_secs(120);
    let mut next_restart = duration / 2;
    let mut armed_at: Option<Instant> = None;
    let mut nemesis_on = true;
    // The main phase: the nemesis acts while the run lasts, then the workers drain the table.
    while started.elapsed() < hard_limit {
        let now = Instant::now();
        let elapsed = started.elapsed();
        if nemesis_on && elapsed >= duration {
            nemesis_on = false;
            for slot in &mut slots.0 {
                if slot.paused_until.take().is_some()
                    && let Some(child) = &slot.child
                {
                    signal(child, "CONT");
                }
            }
            if let Some(p) = &proxy {
                p.disarm();
                p.refuse_for(Duration::ZERO);
            }
        }
        // Reap, and restart workers that died on their own while the table is not drained.
        for (i, slot) in slots.0.iter_mut().enumerate() {
            let Some(child) = &mut slot.child else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                slot.child = None;
                if status.success() {
                    slot.drained = true;
                } else if slot.incarnation < 1000 {
                    slot.incarnation += 1;
                    slot.child = spawner.spawn(i, slot.incarnation).ok();
                    faults.restarts += 1;
                }
            }
        }
        if !nemesis_on && slots.0.iter().all(|s| s.child.is_none()) {
            break;
        }
        if nemesis_on {
            // Resume the workers whose pause is over: they wake up as zombies.
            for slot in &mut slots.0 {
                if slot.paused_until.is_some_and(|t| t <= now) {
                    slot.paused_until = None;
                    if let Some(child) = &slot.child {
                        signal(child, "CONT");
                    }
                }
            }
            let running: Vec<usize> = (0..slots.0.len())
                .filter(|i| slots.0[*i].child.is_some() && slots.0[*i].paused_until.is_none())
                .collect();
            if !running.is_empty() && kill_at.due(elapsed, &mut rng) {
                let i = running[rng.below(running.len() as u64) as usize];
                let slot = &mut slots.0[i];
                if let Some(mut child) = slot.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                    killed.insert(worker_name(i, slot.incarnation));
                    faults.kills += 1;
                    slot.incarnation += 1;
                    slot.child = spawner.spawn(i, slot.incarnation).ok();
                }
            }
            if !running.is_empty() && pause_at.due(elapsed, &mut rng) {
                // Freeze a worker that holds a lease when there is one: that makes a zombie.
                let holders = lease_holders(&direct, &slots.0, &running);
                let pool = if holders.is_empty() {
                    &running
                } else {
                    &holders
                };
                let i = pool[rng.below(pool.len() as u64) as usize];
                let slot = &mut slots.0[i];
                if let Some(child) = &slot.child {
                    signal(child, "STOP");
                    faults.pauses += 1;
                    let extra = Duration::from_millis(500 + rng.below(1000));
                    slot.paused_until = Some(now + ttl + extra);
                }
            }
            if let Some(p) = &proxy {
                if !p.is_armed() {
                    armed_at = None;
                    if arm_at.due(elapsed, &mut rng) {
                        p.cut_after_match(args.effects.ambiguous_pattern(ns.kind));
                        armed_at = Some(now);
                    }
                } else if armed_at.is_some_and(|t| now.duration_since(t) > Duration::from_secs(5)) {
                    p.disarm();
                    armed_at = None;
                }
                if cut_at.due(elapsed, &mut rng) {
                    p.cut_all();
                }
                if refuse_at.due(elapsed, &mut rng) {
                    p.refuse_for(Duration::from_millis(200 + rng.below(800)));
                }
            }
            if let Some(cmd) = &args.db_restart_cmd
                && elapsed >= next_restart
            {
                next_restart = elapsed + Duration::from_secs_f64(args.db_restart_every.max(1.0));
                match Command::new("sh").arg("-c").arg(cmd).status() {
                    Ok(s) if s.success() => faults.db_restarts += 1,
                    _ => faults.db_restart_failures += 1,
                }
            }
        }
        thread::sleep(tick);
    }
    let timed_out = slots.0.iter().any(|s| s.child.is_some());
    killed.extend(slots.kill_all()); // whatever is still running
    drop(slots);
    let main_phase = started.elapsed();

    // Recovery: let every lease and effects window expire, then redeliver each key that is not
    // terminal, in this process, directly (no proxy), as a queue would after its workers died.
    thread::sleep(ttl + Duration::from_millis(500));
    let recovered = match recover(&direct, args, dir) {
        Ok(n) => n,
        Err(e) => return (fail(format_args!("recovery: {e}")), false),
    };
    thread::sleep(ttl + Duration::from_millis(200));

    let events = match Events::read_dir(dir) {
        Ok(events) => events,
        Err(e) => {
            return (
                fail(format_args!("reading the workers' events: {e}")),
                false,
            );
        }
    };
    let verdict = match check::check(&direct, args.keys, args.effects, &events) {
        Ok(v) => v,
        Err(e) => return (fail(format_args!("check: {e}")), false),
    };
    let stats = proxy.as_ref().map(FaultProxy::stats).unwrap_or_default();
    // --effects outbox: deliver what the workers' relays left, then check the deliveries.
    let outbox = if args.effects == EffectsKind::Outbox {
        match super::outbox::drain(&direct, ttl)
            .and_then(|drained| super::outbox::check(&direct, args.keys, drained.delivered))
        {
            Ok(v) => Some(v),
            Err(e) => return (fail(format_args!("outbox: {e}")), false),
        }
    } else {
        None
    };
    let mut violations = verdict.violations.clone();
    violations.extend(outbox.iter().flat_map(|o| o.violations.iter().cloned()));
    if timed_out {
        violations.push("workers were still running at the hard time limit".into());
    }
    let ambiguity = Ambiguity::of(&events, &killed);
    violations.extend(ambiguity.reconcile());
    let ok = violations.is_empty();
    let mut line = serde_json::json!({
        "seed": seed,
        "backend": ns.kind.as_str(),
        "effects": args.effects.as_str(),
        "workers": args.workers,
        "duplicates": args.duplicates,
        "ttl_ms": args.ttl_ms,
        "elapsed_s": (main_phase.as_secs_f64() * 10.0).round() / 10.0,
        "kills": faults.kills,
        "pauses": faults.pauses,
        "cuts": stats.cuts,
        "ambiguous_cuts": stats.ambiguous_cuts,
        "refused_connections": stats.refused,
        "db_restarts": faults.db_restarts,
        "db_restart_failures": faults.db_restart_failures,
        "worker_restarts": faults.restarts,
        "keys": verdict.keys,
        "succeeded": verdict.succeeded,
        "duplicate_successes": verdict.duplicate_successes,
        "lost": verdict.lost,
        "effects_doubled": verdict.effects_doubled,
        "effects_missing": verdict.effects_missing,
        "effects_unexpected": verdict.effects_unexpected,
        "effects_in_doubt": verdict.effects_in_doubt,
        "in_doubt_with_effect": verdict.in_doubt_with_effect,
        "zombie_finalizes_rejected": events.count("lease_lost"),
        "ambiguous_detected": ambiguity.detected,
        "ambiguous_commits_resolved": ambiguity.committed + ambiguity.not_committed,
        "ambiguous_resolved_committed": ambiguity.committed,
        "ambiguous_resolved_not_committed": ambiguity.not_committed,
        "ambiguous_settled_stale": ambiguity.settled_stale,
        "ambiguous_worker_killed": ambiguity.worker_killed,
        "ambiguous_release_failed": ambiguity.release_failed,
        "ambiguous_read_failed": ambiguity.read_failed,
        "performs": verdict.performs,
        "runs_succeeded": events.count("succeeded"),
        "runs_already_succeeded": events.count("already"),
        "runs_busy": events.count("busy"),
        "store_errors": events.count("store_error"),
        "recovered": recovered,
        "violations": violations,
        "ok": ok,
    });
    if let Some(o) = &outbox {
        line["outbox"] = o.to_json();
    }
    println!("{line}");
    if ok {
        (ExitCode::SUCCESS, true)
    } else {
        (ExitCode::from(1), false)
    }
}

/// The slots (among `running`) whose current process holds a `running` lease now.
fn lease_holders(store: &DieselStore, slots: &[Slot], running: &[usize]) -> Vec<usize> {
    let Ok(rows) = store.list(&ListQuery::new(ListFilter::State(JobState::Running), 64)) else {
        return Vec::new();
    };
    running
        .iter()
        .copied()
        .filter(|i| {
            let name = worker_name(*i, slots[*i].incarnation);
            rows.iter()
                .any(|r| r.owner.as_deref() == Some(name.as_str()))
        })
        .collect()
}

/// Redelivers every key whose row is not terminal; how many keys needed it.
fn recover(store: &Arc<DieselStore>, args: &RunArgs, dir: &Path) -> Result<u64, String> {
    let runner = Runner::builder(store.clone())
        .worker_id("recovery")
        .default_ttl(Duration::from_millis(args.ttl_ms))
        .effects(args.effects.runner_mode())
        .build()
        .map_err(|e| e.to_string())?;
    let log = EventLog::open(&dir.join("recovery.events")).map_err(|e| e.to_string())?;
    let mut recovered = 0;
    for k in 0..args.keys {
        let key = key_of(k).map_err(|e| e.to_string())?;
        let row = store.get(key.digest()).map_err(|e| e.to_string())?;
        if row.is_some_and(|r| r.state.is_terminal()) {
            continue;
        }
        recovered += 1;
        let job = TortureJob {
            key_no: k,
            effects: args.effects,
            harness: store,
            worker: "recovery",
            perform_for: Duration::ZERO,
            renew: true,
            sabotage: Sabotage::None,
            observe: None,
        };
        worker::dispatch(&runner, &job, &log);
    }
    Ok(recovered)
}
