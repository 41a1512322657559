//! `safejob-chaos failover` (the issue's `safejob-torture failover`): the multi-process torture
//! of [`super::run`] — worker kills, pauses past the lease, duplicate dispatches — on a
//! pg_auto_failover cluster whose primary is crashed (SIGKILL of its keeper and every postgres
//! process) at random moments, several times per run; the standby is promoted and the old
//! primary rejoins as standby. Run once per effects mode; one JSON line each, with `failovers`.
//!
//! The evidence must survive the failover, or an asynchronous failover would hide what it lost:
//! the harness tables (dispatches, perform rows, after-commit effect rows) live on a database
//! outside the cluster (the *witness*, `--witness-url`), and each worker's reports (`succeeded`
//! per key) are local files. A finalize acknowledged by the old primary and lost with it shows
//! up as a key won twice, and, with after-commit effects, as two effect rows on the witness.
//! Transactional effects commit with the finalize, so they are on the cluster and lost with it:
//! what is left of them is exactly what the promoted database says happened.
//!
//! Before the first mode, a probe: one [`DieselStore`] on the multi-host URL, the primary
//! crashed, the store asked the time until it answers from the promoted node; the errors it gave
//! meanwhile are counted by kind (`reconnect` in the first JSON line).
//!
//! The cluster comes from `scripts/pgaf-cluster.sh up`; this driver only sets its replication
//! mode and crashes, waits for and restarts nodes through that script ([`Cluster`]).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, ExitCode},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use safejob_core::{LeaseStore, StoreError};
use safejob_diesel::DieselStore;

use super::{
    db::{self, Namespace},
    job::{EffectsKind, Sabotage},
    run::{self, Rng, RunArgs, Variant},
};

/// The cluster of `scripts/pgaf-cluster.sh`, through libpq's multi-host form.
pub const CLUSTER_URL: &str =
    "postgres://root@127.0.0.1:5441,127.0.0.1:5442/test?target_session_attrs=read-write";

/// How the primary replicates to the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Replication {
    /// The standby is in the write quorum: `synchronous_standby_names = 'ANY 1 (…)'`, so a
    /// commit is acknowledged only once the standby has it.
    Sync,
    /// No standby in the quorum: a commit is acknowledged before the standby has it.
    Async,
}

impl Replication {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

/// `safejob-chaos failover`'s arguments.
#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Replication between primary and standby.
    #[arg(long, value_enum)]
    pub replication: Replication,
    /// Seconds the nemesis acts, per effects mode.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Seed of the dispatch order and the nemesis (mode i runs with seed + i).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Effects modes to run, one after the other.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = [EffectsKind::AfterCommit, EffectsKind::Transactional, EffectsKind::Outbox])]
    pub effects: Vec<EffectsKind>,
    /// The cluster, as workers reach it.
    #[arg(long, default_value = CLUSTER_URL)]
    pub url: String,
    /// A PostgreSQL outside the cluster for the harness tables (the evidence).
    #[arg(long, default_value = "postgres://root@127.0.0.1:5432/test")]
    pub witness_url: String,
    /// The cluster script.
    #[arg(long, default_value = "scripts/pgaf-cluster.sh")]
    pub script: PathBuf,
    /// Mean seconds between a failover's end (old primary back as standby) and the next crash;
    /// each gap is uniform in 0.5–1.5 times this.
    #[arg(long, default_value_t = 8.0)]
    pub failover_every: f64,
    /// Fewer failovers than this in a mode's run is a violation.
    #[arg(long, default_value_t = 1)]
    pub min_failovers: usize,
    /// Before each crash, the primary's WAL sender is frozen this long while the primary goes
    /// on committing: a standby that is behind, as under load or over a slow link. 0: crash at
    /// once (on one machine the standby is then microseconds behind).
    #[arg(long, default_value_t = 500)]
    pub standby_lag_ms: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Distinct keys per mode.
    #[arg(long, default_value_t = 200)]
    pub keys: u64,
    /// Dispatches of each key.
    #[arg(long, default_value_t = 3)]
    pub duplicates: u64,
    /// Expected worker SIGKILLs per second.
    #[arg(long, default_value_t = 0.3)]
    pub kill_rate: f64,
    /// Expected worker pauses (past the lease) per second.
    #[arg(long, default_value_t = 0.1)]
    pub pause_rate: f64,
    /// Lease TTL in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub ttl_ms: u64,
    /// Run a deliberately broken job in the workers (shows that the judge fails such a run).
    #[arg(long, value_enum, hide = true, default_value_t = Sabotage::None)]
    pub sabotage: Sabotage,
    /// Skip the reconnect probe.
    #[arg(long)]
    pub no_probe: bool,
    /// Keep the namespaces and run directories.
    #[arg(long)]
    pub keep: bool,
}

/// The cluster script failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The script could not be started.
    #[error("cannot run {script}: {source}")]
    Spawn {
        /// The script.
        script: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The script exited with an error.
    #[error("`{script} {command}` failed ({status}): {stderr}")]
    Failed {
        /// The script.
        script: String,
        /// Its arguments.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// The cluster did not reach a state in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    TimedOut {
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited: Duration,
    },
    /// The script printed something that is not a port.
    #[error("the cluster script printed {output:?}, not a port")]
    NotAPort {
        /// What it printed.
        output: String,
    },
}

/// How long a failover took.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The primary that was crashed.
    pub old: u16,
    /// The node promoted in its place.
    pub new: u16,
    /// From the crash to the promoted node's report as primary.
    pub promoted: Duration,
    /// From the crash to the old primary's report as standby.
    pub rejoined: Duration,
}

/// A handle on the pg_auto_failover cluster of `scripts/pgaf-cluster.sh`.
#[derive(Debug, Clone)]
pub struct Cluster {
    script: PathBuf,
    standby_lag: Duration,
}

impl Cluster {
    /// The cluster run by `script`; each crash first holds the standby back for `standby_lag`.
    pub fn new(script: PathBuf, standby_lag: Duration) -> Self {
        Self {
            script,
            standby_lag,
        }
    }

    fn call(&self, args: &[&str]) -> Result<String, ClusterError> {
        let out = Command::new(&self.script)
            .args(args)
            .output()
            .map_err(|source| ClusterError::Spawn {
                script: self.script.display().to_string(),
                source,
            })?;
        if !out.status.success() {
            return Err(ClusterError::Failed {
                script: self.script.display().to_string(),
                command: args.join(" "),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The current primary's port, if the monitor names one.
    pub fn primary(&self) -> Result<Option<u16>, ClusterError> {
        let out = self.call(&["primary"])?;
        if out.is_empty() {
            return Ok(None);
        }
        out.parse()
            .map(Some)
            .map_err(|_| ClusterError::NotAPort { output: out })
    }

    /// Whether one node is primary and the other standby.
    pub fn healthy(&self) -> bool {
        self.call(&["healthy"]).is_ok()
    }

    /// Sets the replication mode; what the primary's `synchronous_standby_names` became (the
    /// script prints it between single quotes).
    pub fn set_replication(&self, r: Replication) -> Result<String, ClusterError> {
        let out = self.call(&["replication", r.as_str()])?;
        Ok(match (out.find('\''), out.rfind('\'')) {
            (Some(a), Some(b)) if a < b => out[a + 1..b].to_owned(),
            _ => out,
        })
    }

    fn wait(
        &self,
        what: &'static str,
        limit: Duration,
        mut done: impl FnMut(&Self) -> Option<u16>,
    ) -> Result<u16, ClusterError> {
        let start = Instant::now();
        loop {
            if let Some(port) = done(self) {
                return Ok(port);
            }
            if start.elapsed() > limit {
                return Err(ClusterError::TimedOut {
                    what,
                    waited: limit,
                });
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for one primary and one standby.
    pub fn wait_healthy(&self, limit: Duration) -> Result<(), ClusterError> {
        self.wait("a primary and a standby", limit, |c| {
            c.healthy().then_some(0)
        })
        .map(drop)
    }

    /// Crashes the primary (SIGKILL of its keeper and postgres); its port.
    pub fn crash_primary(&self) -> Result<u16, ClusterError> {
        let old = self.primary()?.ok_or(ClusterError::TimedOut {
            what: "a primary to crash",
            waited: Duration::ZERO,
        })?;
        let lag_ms = self.standby_lag.as_millis().to_string();
        self.call(&["crash", &old.to_string(), &lag_ms])?;
        Ok(old)
    }

    /// Waits until a node other than `old` is primary; its port.
    pub fn wait_promotion(&self, old: u16, limit: Duration) -> Result<u16, ClusterError> {
        self.wait("the standby's promotion", limit, |c| {
            c.primary().ok().flatten().filter(|p| *p != old)
        })
    }

    /// Starts the crashed node's keeper again and waits until it is the standby.
    pub fn rejoin(&self, old: u16, limit: Duration) -> Result<(), ClusterError> {
        self.call(&["start", &old.to_string()])?;
        self.wait_healthy(limit)
    }

    /// One whole failover from a healthy cluster: crash, promotion, rejoin.
    pub fn failover(&self) -> Result<Timing, ClusterError> {
        self.wait_healthy(Duration::from_secs(120))?;
        let old = self.crash_primary()?;
        let crashed = Instant::now();
        let new = self.wait_promotion(old, Duration::from_secs(60))?;
        let promoted = crashed.elapsed();
        self.rejoin(old, Duration::from_secs(120))?;
        Ok(Timing {
            old,
            new,
            promoted,
            rejoined: crashed.elapsed(),
        })
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// What the failover nemesis did.
#[derive(Debug, Default)]
struct Log {
    timings: Vec<Timing>,
    errors: Vec<String>,
}

/// The failover side of one run: the witness namespace, the nemesis thread, the figures.
struct FailoverRun {
    cluster: Cluster,
    replication: Replication,
    standby_names: String,
    witness_url: String,
    witness: Option<(Namespace, DieselStore)>,
    every: f64,
    min_failovers: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    nemesis: Option<JoinHandle<Log>>,
    log: Log,
    reconnect: Option<serde_json::Value>,
}

impl Variant for FailoverRun {
    fn setup(&mut self, ns: &Namespace, plan: &[u64]) -> Result<(), String> {
        let name = ns
            .schema
            .as_deref()
            .ok_or("the cluster namespace has no schema")?;
        let witness = Namespace::create(&self.witness_url, name)?;
        let store = witness
            .builder(&witness.url)
            .max_size(4)
            .test_on_check_out(true)
            .build()
            .map_err(|e| e.to_string())?;
        // Namespace::setup also migrates `safe_jobs` on the witness, where no job uses it.
        witness.setup(&store, plan)?;
        self.witness = Some((witness, store));
        Ok(())
    }

    fn drop_all(&mut self) {
        if let Some((ns, _)) = &self.witness
            && let Err(e) = ns.drop_all()
        {
            eprintln!("safejob-chaos: could not drop the witness namespace: {e}");
        }
    }

    fn worker_args(&self) -> Vec<String> {
        let mut args = vec!["--harness-url".to_owned(), self.witness_url.clone()];
        if let Some(schema) = self.witness.as_ref().and_then(|(ns, _)| ns.schema.clone()) {
            args.extend(["--harness-schema".to_owned(), schema]);
        }
        args
    }

    fn harness(&self) -> Option<&DieselStore> {
        self.witness.as_ref().map(|(_, store)| store)
    }

    fn nemesis_started(&mut self, duration: Duration) {
        let cluster = self.cluster.clone();
        let stop = self.stop.clone();
        let mean = Duration::from_secs_f64(self.every.max(0.5));
        let mut rng = Rng::new(self.seed ^ 0xFA11_0FE2);
        let started = Instant::now();
        self.nemesis = Some(thread::spawn(move || {
            let mut log = Log::default();
            loop {
                let at = Instant::now() + mean.mul_f64(0.5 + rng.unit());
                while Instant::now() < at && !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                }
                if stop.load(Ordering::Relaxed) || started.elapsed() >= duration {
                    return log;
                }
                match cluster.failover() {
                    Ok(t) => log.timings.push(t),
                    Err(e) => {
                        log.errors.push(e.to_string());
                        // Leave the cluster whole for the drain: restart whatever is down.
                        let _ = cluster.call(&["up"]);
                        if cluster.wait_healthy(Duration::from_secs(120)).is_err() {
                            log.errors.push("the cluster did not recover".into());
                            return log;
                        }
                    }
                }
            }
        }));
    }

    fn nemesis_over(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.nemesis.take() {
            self.log = handle.join().unwrap_or_else(|_| Log {
                errors: vec!["the failover nemesis panicked".into()],
                ..Log::default()
            });
        }
    }

    fn report(&self, line: &mut serde_json::Value, violations: &mut Vec<String>) {
        line["replication"] = self.replication.as_str().into();
        line["standby_lag_ms"] = u64::try_from(self.cluster.standby_lag.as_millis())
            .unwrap_or(u64::MAX)
            .into();
        line["synchronous_standby_names"] = self.standby_names.clone().into();
        line["failovers"] = self.log.timings.len().into();
        line["failover_nodes"] = self
            .log
            .timings
            .iter()
            .map(|t| format!("{}->{}", t.old, t.new))
            .collect::<Vec<_>>()
            .into();
        line["promotion_s"] = self
            .log
            .timings
            .iter()
            .map(|t| secs(t.promoted))
            .collect::<Vec<_>>()
            .into();
        line["rejoin_s"] = self
            .log
            .timings
            .iter()
            .map(|t| secs(t.rejoined))
            .collect::<Vec<_>>()
            .into();
        line["failover_errors"] = self.log.errors.clone().into();
        violations.extend(
            self.log
                .errors
                .iter()
                .map(|e| format!("failover nemesis: {e}")),
        );
        if self.log.timings.len() < self.min_failovers {
            violations.push(format!(
                "{} failover(s) during the run, fewer than the {} asked for",
                self.log.timings.len(),
                self.min_failovers
            ));
        }
        if let Some(r) = &self.reconnect {
            line["reconnect"] = r.clone();
            if r["ok"] != serde_json::Value::Bool(true) {
                violations.push(format!("reconnect probe: {}", r["problem"]));
            }
        }
    }
}

/// A short name for a store error, for the probe's counts.
fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Unreachable { .. } => "unreachable",
        StoreError::PoolExhausted { .. } => "pool_exhausted",
        StoreError::AmbiguousCommit { .. } => "ambiguous_commit",
        StoreError::Backend { .. } => "backend",
        StoreError::MissingTable { .. } => "missing_table",
        StoreError::CorruptRow { .. } => "corrupt_row",
        _ => "other",
    }
}

/// The server port a store's connection reaches.
fn server_port(store: &DieselStore) -> Result<u16, String> {
    let rows = db::pairs(
        store,
        "SELECT CAST(inet_server_port() AS BIGINT) AS a, CAST(0 AS BIGINT) AS b",
    )?;
    rows.first()
        .and_then(|r| u16::try_from(r.a).ok())
        .ok_or_else(|| "no server port".to_owned())
}

/// The reconnect probe: a store with the default pool settings on the multi-host URL; the
/// primary crashed; the store asked the store clock every 100 ms until it answers from the
/// promoted node. Returns the JSON figures (with `ok` and, if not, `problem`).
fn probe(cluster: &Cluster, url: &str) -> serde_json::Value {
    let fail = |problem: String| serde_json::json!({ "ok": false, "problem": problem });
    if let Err(e) = cluster.wait_healthy(Duration::from_secs(120)) {
        return fail(e.to_string());
    }
    let store = match DieselStore::connect(url) {
        Ok(store) => store,
        Err(e) => return fail(format!("cannot connect: {e}")),
    };
    let before = match server_port(&store) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let old = match cluster.crash_primary() {
        Ok(old) => old,
        Err(e) => return fail(e.to_string()),
    };
    let crashed = Instant::now();
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut first_error = None;
    let mut answered = None;
    while crashed.elapsed() < Duration::from_secs(60) {
        match store.now() {
            Ok(_) => {
                if let Ok(port) = server_port(&store) {
                    answered = Some((port, crashed.elapsed()));
                    break;
                }
            }
            Err(e) => {
                *kinds.entry(kind(&e)).or_default() += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let new = cluster.primary().ok().flatten();
    let rejoin = cluster.rejoin(old, Duration::from_secs(120));
    let mut r = serde_json::json!({
        "connected_to": before,
        "crashed": old,
        "promoted": new,
        "errors_meanwhile": kinds,
        "first_error": first_error,
        "ok": true,
    });
    let problem = match (answered, rejoin) {
        (None, _) => Some("the store did not answer within 60 s of the crash".to_owned()),
        (Some((port, _)), _) if Some(port) != new || port == old => Some(format!(
            "the store answered from port {port}, not from the promoted node"
        )),
        (Some(_), Err(e)) => Some(format!("the old primary did not rejoin: {e}")),
        (Some((_, after)), Ok(())) => {
            r["answered_after_s"] = secs(after).into();
            None
        }
    };
    if let Some(p) = problem {
        r["ok"] = false.into();
        r["problem"] = p.into();
    }
    r
}

/// `safejob-chaos failover`.
pub fn main(args: FailoverArgs) -> ExitCode {
    super::worker::init_tracing(None);
    let cluster = Cluster::new(
        args.script.clone(),
        Duration::from_millis(args.standby_lag_ms),
    );
    let standby_names = match cluster
        .wait_healthy(Duration::from_secs(120))
        .and_then(|()| cluster.set_replication(args.replication))
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!(
                "safejob-chaos failover: the cluster is not ready ({e}); start it with \
                 `scripts/pgaf-cluster.sh up`"
            );
            return ExitCode::from(2);
        }
    };
    let mut reconnect = (!args.no_probe).then(|| probe(&cluster, &args.url));
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut code = ExitCode::SUCCESS;
    for (i, effects) in args.effects.iter().enumerate() {
        let seed = seed.wrapping_add(i as u64);
        let run_args = RunArgs {
            url: Some(args.url.clone()),
            workers: args.workers,
            keys: args.keys,
            duplicates: args.duplicates,
            duration: args.duration,
            seed: Some(seed),
            kill_rate: args.kill_rate,
            pause_rate: args.pause_rate,
            effects: *effects,
            db_restart_cmd: None,
            db_restart_every: 120.0,
            proxy: false,
            ambiguous_rate: 0.0,
            cut_rate: 0.0,
            refuse_rate: 0.0,
            ttl_ms: args.ttl_ms,
            perform_ms: None,
            sabotage: args.sabotage,
            keep: args.keep,
        };
        let mut variant = FailoverRun {
            cluster: cluster.clone(),
            replication: args.replication,
            standby_names: standby_names.clone(),
            witness_url: args.witness_url.clone(),
            witness: None,
            every: args.failover_every,
            min_failovers: args.min_failovers,
            seed,
            stop: Arc::new(AtomicBool::new(false)),
            nemesis: None,
            log: Log::default(),
            reconnect: reconnect.take(),
        };
        let c = run::execute(&run_args, &args.url, &mut variant);
        if c != ExitCode::SUCCESS {
            code = c;
        }
    }
    code
}
