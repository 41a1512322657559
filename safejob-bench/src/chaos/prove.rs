//! Single-fault proofs on real processes, each printing one JSON line with `"ok"`:
//!
//! * `zombie` — a worker frozen with SIGSTOP past its TTL while a second process takes its key
//!   over; when it wakes, its renew (first run) or its finalize (second run) is rejected by fence
//!   and it reports lease lost; the row keeps the usurper's success and one effect.
//! * `clock-skew` — worker processes whose own clock is wrong by ten minutes (run under
//!   `faketime` when it is installed): one whose clock says a live lease is long expired gets
//!   `Busy` and steals nothing; one whose clock says its expired lease is still good for ten
//!   minutes loses it to a takeover and cannot finalize. The database clock decides. Without
//!   `faketime` the offset is only injected into the worker's own view (what it would believe
//!   if it used its clock), and the JSON line says so. Not applicable to SQLite, whose clock is
//!   the clock of the process running each statement (workers on one file share one host).
//! * `panic` — a `perform` that panics inside a transaction it opened on a pooled connection, and
//!   transactional effects that panic inside the finalize transaction, on a pool of one
//!   connection: afterwards that pool's connection is not in a transaction (asked of the
//!   server), nothing the panicking code wrote is visible, and the key still succeeds once.

use std::{
    process::{Command, ExitCode, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use chrono::Utc;
use safejob_core::{
    JobState, LeaseStore, Report, RunError, Runner,
    store::{AcquireRequest, Acquired},
};
use safejob_diesel::{BackendKind, ConnectionRef, DieselStore};
use serde_json::{Value, json};

use super::{
    db::{self, Namespace, on_conn},
    job::{EffectsKind, Observed, Sabotage, TortureJob, key_of},
};

/// Which proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proof {
    /// A worker frozen past its TTL.
    Zombie,
    /// Workers whose own clock is wrong by minutes.
    ClockSkew,
    /// Panics inside transactions on pooled connections.
    Panic,
    /// All of them.
    All,
}

/// `safejob-chaos prove`.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// Which proof.
    #[arg(value_enum, default_value_t = Proof::All)]
    pub proof: Proof,
    /// Database URL (its own schema / database is created and dropped; SQLite: a fresh file).
    #[arg(long)]
    pub url: String,
    /// Lease TTL in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub ttl_ms: u64,
    /// The `faketime` program, if not on the PATH as `faketime`.
    #[arg(long, default_value = "faketime")]
    pub faketime: String,
    /// Internal: run one job once in this process and print its outcome (the worker side).
    #[arg(long, hide = true)]
    pub child_key: Option<u64>,
    /// Internal: the child's schema.
    #[arg(long, hide = true)]
    pub child_schema: Option<String>,
    /// Internal: how long the child's perform works.
    #[arg(long, hide = true, default_value_t = 0)]
    pub child_perform_ms: u64,
    /// Internal: whether the child's perform renews its lease.
    #[arg(long, hide = true)]
    pub child_renew: bool,
    /// Internal: the offset (seconds) the child adds to its own clock in its view, when it runs
    /// without faketime.
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub child_injected_offset_s: i64,
}

/// `safejob-chaos prove`.
pub fn main(args: ProveArgs) -> ExitCode {
    super::worker::init_tracing(None);
    if let Some(key) = args.child_key {
        return child(&args, key);
    }
    let name = format!("safejob_prove_{}", std::process::id());
    let ns = match Namespace::create(&args.url, &name) {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("safejob-chaos prove: {e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| -> Result<bool, String> {
        // No idle minimum: r2d2 then never reconnects in the background after a connection is
        // discarded, so no libpq connect (with OpenSSL) is in flight on its worker threads when
        // this process exits. One CI run saw this process die of SIGSEGV at exit after printing
        // every proof: the libpq/OpenSSL exit race with r2d2 threads (diesel#3441).
        let direct = Arc::new(
            ns.builder(&ns.url)
                .max_size(4)
                .min_idle(0)
                .build()
                .map_err(|e| e.to_string())?,
        );
        ns.setup(&direct, &[])?;
        let mut ok = true;
        let proofs: &[Proof] = match args.proof {
            Proof::All => &[Proof::Zombie, Proof::ClockSkew, Proof::Panic],
            one => std::slice::from_ref(match one {
                Proof::Zombie => &Proof::Zombie,
                Proof::ClockSkew => &Proof::ClockSkew,
                _ => &Proof::Panic,
            }),
        };
        for proof in proofs {
            let line = match proof {
                Proof::Zombie => zombie(&args, &ns, &direct)?,
                Proof::ClockSkew => clock_skew(&args, &ns, &direct)?,
                _ => panics(&ns, &direct)?,
            };
            ok &= line["ok"] == json!(true);
            println!("{line}");
        }
        Ok(ok)
    })();
    let dropped = ns.drop_all();
    if let Err(e) = &dropped {
        eprintln!("safejob-chaos prove: could not drop its namespace {name}: {e}");
    }
    match (result, dropped) {
        (Ok(true), Ok(())) => ExitCode::SUCCESS,
        (Ok(false), _) => ExitCode::from(1),
        (Err(e), _) => {
            eprintln!("safejob-chaos prove: {e}");
            ExitCode::from(2)
        }
        // Every proof held, but the run left its schema or database behind.
        (Ok(true), Err(_)) => ExitCode::from(2),
    }
}

fn runner(store: Arc<DieselStore>, name: &str, ttl_ms: u64, effects: EffectsKind) -> Runner {
    Runner::builder(store)
        .worker_id(name)
        .default_ttl(Duration::from_millis(ttl_ms))
        .effects(effects.runner_mode())
        .build()
        .expect("a valid runner configuration")
}

fn job<'a>(key_no: u64, harness: &'a DieselStore, worker: &'a str) -> TortureJob<'a> {
    TortureJob {
        key_no,
        effects: EffectsKind::AfterCommit,
        harness,
        worker,
        perform_for: Duration::ZERO,
        renew: false,
        sabotage: Sabotage::None,
        observe: None,
    }
}

/// The child: runs key `key` once and prints what happened as JSON.
fn child(args: &ProveArgs, key: u64) -> ExitCode {
    let store = match db::builder(&args.url, args.child_schema.as_deref())
        .max_size(2)
        .build()
    {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("child: {e}");
            return ExitCode::from(2);
        }
    };
    let name = format!("child-{}", std::process::id());
    let runner = runner(store.clone(), &name, args.ttl_ms, EffectsKind::AfterCommit);
    let observed = Mutex::new(None::<Observed>);
    let mut job = job(key, &store, &name);
    job.perform_for = Duration::from_millis(args.child_perform_ms);
    job.renew = args.child_renew;
    job.observe = Some(&observed);
    let result = runner.run(&job);
    let offset = chrono::Duration::seconds(args.child_injected_offset_s);
    let local_now = Utc::now() + offset;
    let mut out = json!({ "local_now": local_now.to_rfc3339() });
    match &result {
        Ok(Report::Succeeded { .. }) => out["outcome"] = json!("succeeded"),
        Ok(Report::AlreadySucceeded { .. }) => out["outcome"] = json!("already_succeeded"),
        Ok(Report::Busy { until, .. }) => {
            out["outcome"] = json!("busy");
            // What this process would conclude from its own clock.
            out["local_clock_says_lease_expired"] = json!(local_now > *until);
        }
        Err(RunError::LeaseLost { fence, .. }) => {
            out["outcome"] = json!("lease_lost");
            out["fence"] = json!(fence);
        }
        Ok(other) => out["outcome"] = json!(format!("{other:?}")),
        Err(e) => out["outcome"] = json!(format!("error: {e}")),
    }
    if let Some(seen) = *observed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        let local_at_grant = seen.local_now + offset;
        out["local_clock_at_grant"] = json!(local_at_grant.to_rfc3339());
        out["lease_expires_at_db"] = json!(seen.lease_expires_at.to_rfc3339());
        // At the end of the run, by this process's own clock, the lease would still be live.
        out["local_clock_says_lease_live"] = json!(local_now < seen.lease_expires_at);
    }
    println!("{out}");
    ExitCode::SUCCESS
}

/// Starts a child running key `key`, under `faketime` when `skew` is given and it is usable.
fn spawn_child(
    args: &ProveArgs,
    ns: &Namespace,
    key: u64,
    perform_ms: u64,
    renew: bool,
    skew: Option<(&str, i64)>,
) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = match skew {
        Some((spec, _)) if faketime_works(&args.faketime) => {
            let mut c = Command::new(&args.faketime);
            c.arg("-f").arg(spec).arg(&exe);
            // Leave the monotonic clock alone: only the wall clock is wrong.
            c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            c
        }
        _ => Command::new(&exe),
    };
    cmd.arg("prove")
        .arg("--url")
        .arg(&ns.url)
        .arg("--ttl-ms")
        .arg(args.ttl_ms.to_string())
        .arg("--child-key")
        .arg(key.to_string())
        .arg("--child-perform-ms")
        .arg(perform_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if renew {
        cmd.arg("--child-renew");
    }
    if let Some(schema) = &ns.schema {
        cmd.arg("--child-schema").arg(schema);
    }
    if let Some((_, offset)) = skew
        && !faketime_works(&args.faketime)
    {
        cmd.arg("--child-injected-offset-s").arg(offset.to_string());
    }
    cmd.spawn().map_err(|e| e.to_string())
}

fn faketime_works(program: &str) -> bool {
    Command::new(program)
        .args(["-f", "+600s", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a child's answer could not be read. Its stderr is inherited, so whatever it said is
/// already on ours.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// Waiting for the child failed.
    #[error("waiting for the child failed: {0}")]
    Wait(#[from] std::io::Error),
    /// The child was killed by a signal (it printed `stdout` before).
    #[error("the child was killed by signal {signal}{}", printed(stdout))]
    Signaled {
        /// The signal number.
        signal: i32,
        /// What it printed before.
        stdout: String,
    },
    /// The child exited with a non-zero status.
    #[error("the child exited with status {code}{}", printed(stdout))]
    Failed {
        /// Its exit code.
        code: i32,
        /// What it printed.
        stdout: String,
    },
    /// The child exited 0 without printing its answer.
    #[error("the child exited 0 but printed nothing")]
    Silent,
    /// The child exited 0 but its answer is not JSON.
    #[error("the child exited 0 but printed {stdout:?}, not JSON: {source}")]
    NotJson {
        /// What it printed.
        stdout: String,
        /// The parse error.
        source: serde_json::Error,
    },
}

fn printed(stdout: &str) -> String {
    if stdout.trim().is_empty() {
        " before printing anything".to_owned()
    } else {
        format!(" after printing {stdout:?}")
    }
}

/// Waits for `child` and reads the one JSON line it prints, judging how it exited first.
pub fn child_output(child: std::process::Child) -> Result<Value, ChildError> {
    use std::os::unix::process::ExitStatusExt;

    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(signal) = out.status.signal() {
        return Err(ChildError::Signaled { signal, stdout });
    }
    if !out.status.success() {
        return Err(ChildError::Failed {
            code: out.status.code().unwrap_or(-1),
            stdout,
        });
    }
    if stdout.trim().is_empty() {
        return Err(ChildError::Silent);
    }
    serde_json::from_str(stdout.trim()).map_err(|source| ChildError::NotJson { stdout, source })
}

/// Waits (bounded) until `key`'s perform row appears: the child is inside `perform`.
fn wait_for_perform(direct: &DieselStore, key: u64) -> Result<(), String> {
    let sql = format!(
        "SELECT key_no AS a, fence AS b FROM torture_perform WHERE key_no = {}",
        db::key_no(key)
    );
    for _ in 0..2000 {
        if !db::pairs(direct, &sql)?.is_empty() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(5));
    }
    Err(format!("key {key}'s perform never started"))
}

/// Waits (bounded) until the database clock is past `key`'s lease expiry.
fn wait_for_expiry(direct: &DieselStore, key: u64) -> Result<(), String> {
    let digest = *key_of(key).map_err(|e| e.to_string())?.digest();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let row = direct.get(&digest).map_err(|e| e.to_string())?;
        let now = direct.now().map_err(|e| e.to_string())?;
        if row
            .and_then(|r| r.lease_expires_at)
            .is_some_and(|t| t <= now)
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "key {key}'s lease never expired by the database clock"
    ))
}

fn effect_fences(direct: &DieselStore, key: u64) -> Result<Vec<i64>, String> {
    Ok(db::pairs(
        direct,
        &format!(
            "SELECT key_no AS a, fence AS b FROM torture_effect WHERE key_no = {}",
            db::key_no(key)
        ),
    )?
    .into_iter()
    .map(|p| p.b)
    .collect())
}

/// Frozen past the TTL, taken over, woken: lease lost, nothing finalized by the zombie.
fn zombie(args: &ProveArgs, ns: &Namespace, direct: &Arc<DieselStore>) -> Result<Value, String> {
    let mut cases = Vec::new();
    let mut ok = true;
    for (key, renew) in [(100u64, true), (101u64, false)] {
        // The child's perform works for four TTLs: it is still working when it wakes up.
        let child = spawn_child(args, ns, key, args.ttl_ms * 4, renew, None)?;
        let pid = child.id().to_string();
        wait_for_perform(direct, key)?;
        let stop = Command::new("kill").args(["-STOP", &pid]).status();
        wait_for_expiry(direct, key)?;
        let usurper = runner(
            direct.clone(),
            "usurper",
            args.ttl_ms,
            EffectsKind::AfterCommit,
        );
        let took_over = usurper.run(&job(key, direct, "usurper"));
        let cont = Command::new("kill").args(["-CONT", &pid]).status();
        let out = child_output(child).map_err(|e| e.to_string())?;
        let digest = *key_of(key).map_err(|e| e.to_string())?.digest();
        let row = direct
            .get(&digest)
            .map_err(|e| e.to_string())?
            .ok_or("no row")?;
        let fences = effect_fences(direct, key)?;
        let case_ok = stop.is_ok_and(|s| s.success())
            && cont.is_ok_and(|s| s.success())
            && matches!(took_over, Ok(Report::Succeeded { .. }))
            && out["outcome"] == json!("lease_lost")
            && out["fence"] == json!(1)
            && row.state == JobState::Succeeded
            && row.fence == 2
            && row.owner.as_deref() == Some("usurper")
            && fences == [2];
        ok &= case_ok;
        cases.push(json!({
            "zombie_step_rejected": if renew { "renew" } else { "finalize" },
            "usurper": format!("{:?}", took_over.map(|r| r.disposition())),
            "zombie": out,
            "row_state": row.state.as_str(),
            "row_fence": row.fence,
            "effect_fences": fences,
            "ok": case_ok,
        }));
    }
    Ok(
        json!({ "proof": "zombie", "backend": ns.kind.as_str(), "ttl_ms": args.ttl_ms, "cases": cases, "ok": ok }),
    )
}

/// Workers ten minutes off: the database clock decides.
fn clock_skew(
    args: &ProveArgs,
    ns: &Namespace,
    direct: &Arc<DieselStore>,
) -> Result<Value, String> {
    if ns.kind == BackendKind::Sqlite {
        // SQLite runs inside each worker: its `now` is the clock of the process running the
        // statement, so a skewed process skews its own "database clock" too. Workers sharing a
        // SQLite file share one host and so one clock; per-process skew does not exist there.
        return Ok(json!({
            "proof": "clock-skew",
            "backend": "sqlite",
            "applicable": false,
            "why": "SQLite's clock is the clock of the process running the statement; workers on one file share one host clock",
            "ok": true,
        }));
    }
    let faketime = faketime_works(&args.faketime);
    // A: a live 60 s lease held by "holder"; a worker whose clock runs ten minutes ahead.
    let key_a = 200u64;
    let digest_a = *key_of(key_a).map_err(|e| e.to_string())?.digest();
    let held = direct
        .acquire(&AcquireRequest {
            digest: digest_a,
            fingerprint: None,
            owner: "holder",
            ttl: Duration::from_secs(60),
        })
        .map_err(|e| e.to_string())?;
    let Acquired::Granted(lease) = held else {
        return Err(format!("holder did not get key A: {held:?}"));
    };
    let ahead = child_output(spawn_child(
        args,
        ns,
        key_a,
        0,
        false,
        Some(("+600s", 600)),
    )?)
    .map_err(|e| e.to_string())?;
    let row_a = direct
        .get(&digest_a)
        .map_err(|e| e.to_string())?
        .ok_or("no row A")?;
    let a_ok = ahead["outcome"] == json!("busy")
        && ahead["local_clock_says_lease_expired"] == json!(true)
        && row_a.state == JobState::Running
        && row_a.fence == lease.fence
        && row_a.owner.as_deref() == Some("holder");

    // B: a worker whose clock runs ten minutes behind holds a short lease; by its clock the lease
    // is good for ten more minutes, by the database's it expires and is taken over.
    let key_b = 201u64;
    let child = spawn_child(
        args,
        ns,
        key_b,
        args.ttl_ms * 4,
        false,
        Some(("-600s", -600)),
    )?;
    wait_for_perform(direct, key_b)?;
    wait_for_expiry(direct, key_b)?;
    let usurper = runner(
        direct.clone(),
        "usurper",
        args.ttl_ms,
        EffectsKind::AfterCommit,
    );
    let took_over = usurper.run(&job(key_b, direct, "usurper"));
    let behind = child_output(child).map_err(|e| e.to_string())?;
    let digest_b = *key_of(key_b).map_err(|e| e.to_string())?.digest();
    let row_b = direct
        .get(&digest_b)
        .map_err(|e| e.to_string())?
        .ok_or("no row B")?;
    let b_ok = matches!(took_over, Ok(Report::Succeeded { .. }))
        && behind["outcome"] == json!("lease_lost")
        && behind["local_clock_says_lease_live"] == json!(true)
        && row_b.state == JobState::Succeeded
        && row_b.fence == 2
        && effect_fences(direct, key_b)? == [2];
    let ok = a_ok && b_ok;
    Ok(json!({
        "proof": "clock-skew",
        "backend": ns.kind.as_str(),
        "skew": if faketime { "faketime (process wall clock off by 600 s)" } else { "injected into the worker's own view only (faketime not available)" },
        "ahead_worker_on_live_lease": ahead,
        "ahead_ok": a_ok,
        "behind_worker_on_expired_lease": behind,
        "behind_ok": b_ok,
        "ok": ok,
    }))
}

/// Whether `conn` is inside a transaction, asked of the server where it can say.
fn conn_in_transaction(
    kind: BackendKind,
    conn: &mut ConnectionRef<'_>,
) -> diesel::QueryResult<bool> {
    match kind {
        // VACUUM refuses to run inside a transaction block, and is harmless outside one.
        BackendKind::Postgres => match conn.batch_execute("VACUUM torture_dispatch") {
            Ok(()) => Ok(false),
            Err(e) if e.to_string().contains("transaction block") => Ok(true),
            Err(e) => Err(e),
        },
        BackendKind::Mysql => on_conn!(conn, c => diesel::RunQueryDsl::load::<db::Pair>(
            diesel::sql_query(
                "SELECT CAST(COUNT(*) AS SIGNED) AS a, CAST(0 AS SIGNED) AS b \
                 FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()"),
            *c,
        ))
        .map(|rows| rows.first().is_some_and(|r| r.a > 0)),
        // SQLite cannot be asked; BEGIN fails inside a transaction.
        _ => match conn.batch_execute("BEGIN") {
            Ok(()) => conn.batch_execute("ROLLBACK").map(|()| false),
            Err(_) => Ok(true),
        },
    }
}

/// Whether the connection `store` hands out (a pool of one) is inside a transaction.
fn in_transaction(store: &DieselStore) -> Result<bool, String> {
    store
        .with_connection(|conn| conn_in_transaction(store.backend(), conn))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// The control: the check does see a transaction that is open (and written to).
fn check_sees_an_open_transaction(store: &DieselStore) -> Result<bool, String> {
    store
        .with_connection(|conn| {
            conn.batch_execute("BEGIN")?;
            conn.batch_execute(
                "INSERT INTO torture_perform (key_no, fence, worker) VALUES (0, 0, 'control')",
            )?;
            let seen = conn_in_transaction(store.backend(), conn);
            conn.batch_execute("ROLLBACK")?;
            seen
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Panics inside transactions leave the pooled connection clean.
fn panics(ns: &Namespace, direct: &Arc<DieselStore>) -> Result<Value, String> {
    let pool_of_one = Arc::new(
        ns.builder(&ns.url)
            .max_size(1)
            .min_idle(0)
            .build()
            .map_err(|e| e.to_string())?,
    );
    let control = check_sees_an_open_transaction(&pool_of_one)?;
    let mut cases = Vec::new();
    let mut ok = control;
    for (key, sabotage, effects) in [
        (300u64, Sabotage::PanicInPerform, EffectsKind::AfterCommit),
        (301u64, Sabotage::PanicInEffects, EffectsKind::Transactional),
    ] {
        let runner = runner(pool_of_one.clone(), "panicker", 30_000, effects);
        let mut j = job(key, &pool_of_one, "panicker");
        j.effects = effects;
        j.sabotage = sabotage;
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run(&j))).is_err();
        let open_after = in_transaction(&pool_of_one)?;
        let uncommitted = db::pairs(
            direct,
            &format!(
                "SELECT key_no AS a, fence AS b FROM torture_perform \
                 WHERE key_no = {key} AND worker = 'uncommitted'"
            ),
        )?
        .len();
        let effects_after_panic = effect_fences(direct, key)?.len();
        let digest = *key_of(key).map_err(|e| e.to_string())?.digest();
        let state_after_panic = direct
            .get(&digest)
            .map_err(|e| e.to_string())?
            .map(|r| r.state.as_str());
        // The same key, honest this time, on the same pool: succeeds at once (the lease was
        // released), with exactly one effect.
        j.sabotage = Sabotage::None;
        let again = runner.run(&j);
        let effects_final = effect_fences(direct, key)?.len();
        let case_ok = panicked
            && !open_after
            && uncommitted == 0
            && effects_after_panic == 0
            && state_after_panic == Some("released")
            && matches!(again, Ok(Report::Succeeded { .. }))
            && effects_final == 1;
        ok &= case_ok;
        cases.push(json!({
            "sabotage": format!("{sabotage:?}"),
            "effects": effects.as_str(),
            "panicked": panicked,
            "pooled_connection_in_transaction_after": open_after,
            "uncommitted_rows_visible": uncommitted,
            "effect_rows_after_panic": effects_after_panic,
            "state_after_panic": state_after_panic,
            "rerun": format!("{:?}", again.map(|r| r.disposition())),
            "effect_rows_final": effects_final,
            "ok": case_ok,
        }));
    }
    Ok(json!({
        "proof": "panic",
        "backend": ns.kind.as_str(),
        "control_check_sees_open_transaction": control,
        "cases": cases,
        "ok": ok,
    }))
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    fn sh(script: &str) -> std::process::Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn sh")
    }

    /// A child killed by a signal is reported as such, with what it printed first. Caught when
    /// checked: `child_output` without its `signal()` check (the error is then the JSON
    /// parse error `child printed "": EOF` of before, or `Failed` with code -1).
    #[test]
    fn a_child_killed_by_a_signal_is_reported_as_killed() {
        let error = child_output(sh("echo half; kill -9 $$")).expect_err("killed");
        assert!(
            matches!(&error, ChildError::Signaled { signal: 9, stdout } if stdout == "half\n"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the child was killed by signal 9 after printing \"half\\n\""
        );
        let error = child_output(sh("kill -SEGV $$")).expect_err("killed");
        assert_eq!(
            error.to_string(),
            "the child was killed by signal 11 before printing anything"
        );
    }

    /// A child that exits 0 without printing is `Silent`, not a JSON parse error; one that exits
    /// non-zero is `Failed` with its code; a good one gives its JSON. Caught when checked: the
    /// `Silent` check removed (then `NotJson` with an EOF error); the `success()` check removed
    /// (the exit-3 child's JSON is then accepted).
    #[test]
    fn a_silent_or_failing_child_is_reported_as_such() {
        assert!(matches!(
            child_output(sh("exit 0")),
            Err(ChildError::Silent)
        ));
        let error = child_output(sh("echo '{\"outcome\":\"x\"}'; exit 3")).expect_err("failed");
        assert!(
            matches!(error, ChildError::Failed { code: 3, .. }),
            "{error:?}"
        );
        assert!(matches!(
            child_output(sh("echo not-json")),
            Err(ChildError::NotJson { .. })
        ));
        let value = child_output(sh("echo '{\"outcome\":\"busy\"}'")).expect("json");
        assert_eq!(value["outcome"], "busy");
    }
}
