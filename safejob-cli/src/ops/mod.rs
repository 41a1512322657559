//! The operator commands, each a thin layer over the library's own operations: jobs, keys,
//! workers, cleanup and `serve` here; schedules, batches and actions in `flows.rs`.

use std::{
    io::{BufRead, IsTerminal, Write},
    sync::Arc,
    time::Duration,
};

use safejob_core::{
    JobRecord, KeyDigest, ListFilter, ListQuery, Recovery, confirm_effects_by_digest,
    history::{HistoryStore, Subject},
    queue::{
        JobFilter, JobId, JobQuery, OpResult, QueueState, QueueStore, QueuedJob, Snapshot,
        WorkerInfo,
    },
};
use safejob_diesel::{DieselStore, outbox, queue::DieselQueue};
use serde_json::{Value, json};

use crate::{
    CleanupArgs, CliError, Command, JobsCommand, KeysCommand, ListArgs, StatusArgs, WorkersCommand,
    out::{Out, human, table},
};

/// Opens the store and queue at `url` (or `SAFEJOB_DATABASE_URL`, read by clap).
pub fn connect(url: Option<&str>) -> Result<(Arc<DieselStore>, Arc<DieselQueue>), CliError> {
    let url = url.ok_or(CliError::NoDatabase)?;
    // A short-lived process: no idle minimum, so r2d2 starts no background connect that could
    // still be inside libpq's OpenSSL code when the process exits (docs/operations.md, the
    // libpq/OpenSSL exit race).
    let store = Arc::new(DieselStore::builder(url).min_idle(0).build()?);
    let queue = Arc::new(DieselQueue::new(store.clone()));
    Ok((store, queue))
}

/// Runs one operator command.
pub(crate) fn dispatch(url: Option<&str>, out: Out, command: Command) -> Result<(), CliError> {
    if let Command::Keys(KeysCommand::Recover { .. }) = command {
        // Before connecting: no database is needed to know the answer.
        return Err(CliError::NeedsJobTypes {
            command: "keys recover",
        });
    }
    let (store, queue) = connect(url)?;
    let q = Ops { store, queue, out };
    match command {
        Command::Migrate => q.migrate(),
        Command::Status(args) => q.status(&args),
        Command::Jobs(JobsCommand::List(args)) => q.jobs_list(&args),
        Command::Jobs(JobsCommand::Show { id }) => q.jobs_show(id),
        Command::Retry(args) => match args.id {
            Some(id) => q.op("retry", id, q.queue.retry(JobId(id))?),
            None => q.retry_many(&args),
        },
        Command::Cancel { id } => q.op("cancel", id, q.queue.cancel(JobId(id))?),
        Command::Purge(args) => q.purge(&args),
        Command::Clear(args) => q.clear(&args.queue, args.yes),
        Command::Failed { limit } => q.jobs_list(&ListArgs {
            state: Some("dead".into()),
            queue: None,
            kind: None,
            after: None,
            limit,
        }),
        Command::Cleanup(args) => q.cleanup(&args),
        Command::Keys(k) => q.keys(k),
        Command::Schedules(s) => q.schedules(s),
        Command::Batches(b) => q.batches(b),
        Command::Actions(a) => q.actions(a),
        Command::Workers(w) => q.workers(w),
        Command::Serve(args) => q.serve(&args),
    }
}

mod flows;
mod recover;

pub(crate) use recover::recover;

struct Ops {
    store: Arc<DieselStore>,
    queue: Arc<DieselQueue>,
    out: Out,
}

fn state_of(text: &str) -> Result<QueueState, CliError> {
    text.parse()
        .map_err(|_| CliError::BadInput(format!("unknown job state {text:?}")))
}

fn digest_of(text: &str) -> Result<KeyDigest, CliError> {
    KeyDigest::from_hex(text).map_err(|_| {
        CliError::BadInput(format!("{text:?} is not a key digest (64 hex characters)"))
    })
}

fn filter_of(
    state: Option<&str>,
    queue: Option<&str>,
    kind: Option<&str>,
) -> Result<JobFilter, CliError> {
    Ok(JobFilter {
        state: state.map(state_of).transpose()?,
        queue: queue.map(str::to_owned),
        kind: kind.map(str::to_owned),
    })
}

fn job_json(j: &QueuedJob) -> Value {
    json!({
        "id": j.id.0,
        "kind": j.kind,
        "queue": j.queue,
        "state": j.state.as_str(),
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "run_at": j.run_at,
        "owner": j.owner,
        "batch": j.batch.map(|b| b.0),
        "last_error": j.errors.last().map(|e| e.message.clone()),
        "created_at": j.created_at,
        "finished_at": j.finished_at,
    })
}

fn key_json(r: &JobRecord, now: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "digest": r.digest.to_hex(),
        "state": r.state.as_str(),
        "fence": r.fence,
        "attempts": r.attempts,
        "owner": r.owner,
        "effects": r.effects.as_str(),
        "effects_in_doubt": r.effects_in_doubt(now),
        "last_error": r.last_error,
        "created_at": r.created_at,
        "finalized_at": r.finalized_at,
        "retain_until": r.retain_until,
    })
}

/// Asks on stdin unless `yes`; a non-terminal stdin without `--yes` is a no.
fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("{question} — pass --yes to confirm without a terminal");
        return Err(CliError::Declined);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr()
        .flush()
        .map_err(|e| CliError::Io(e.to_string()))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Io(e.to_string()))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::Declined)
    }
}

/// How long ago worker `w` sent its last heartbeat, by the snapshot's clock.
fn heartbeat_age(snap: &Snapshot, w: &WorkerInfo) -> Duration {
    (snap.taken_at - w.last_heartbeat)
        .to_std()
        .unwrap_or_default()
}

/// A worker's health from its heartbeat's age: `alive` within half `stale_after`, `late` within
/// it, `stale` beyond.
fn health(age: Duration, stale_after: Duration) -> &'static str {
    if age <= stale_after / 2 {
        "alive"
    } else if age <= stale_after {
        "late"
    } else {
        "stale"
    }
}

/// The workers of `snap` as JSON and as table rows (`status` and `workers list`).
fn workers_of(snap: &Snapshot, stale_after: Duration) -> (Value, Vec<Vec<String>>) {
    let json = snap
        .workers
        .iter()
        .map(|w| {
            let age = heartbeat_age(snap, w);
            json!({"id": w.id, "queues": w.queues, "concurrency": w.concurrency,
                "heartbeat_age_ms": age.as_millis() as u64, "health": health(age, stale_after),
                "in_flight": w.in_flight.iter().map(|j| j.0).collect::<Vec<_>>()})
        })
        .collect();
    let rows = snap
        .workers
        .iter()
        .map(|w| {
            let age = heartbeat_age(snap, w);
            vec![
                w.id.clone(),
                health(age, stale_after).to_owned(),
                human(age),
                w.queues.join(","),
                format!("{}/{}", w.in_flight.len(), w.concurrency),
            ]
        })
        .collect();
    (Value::Array(json), rows)
}

/// The header of [`workers_of`]'s rows.
const WORKER_HEADERS: [&str; 5] = ["worker", "health", "heartbeat", "queues", "running"];

impl Ops {
    fn migrate(&self) -> Result<(), CliError> {
        let spinner = self.out.progress(0, "migrating");
        spinner.enable_steady_tick(Duration::from_millis(100));
        let applied = self.store.migrate()?;
        spinner.finish_and_clear();
        self.out.emit(&json!({"applied": applied}), || {
            if applied.is_empty() {
                println!("up to date");
            }
            for m in &applied {
                println!("applied {m}");
            }
        });
        Ok(())
    }

    /// Maps an operator action's answer to output and exit code.
    fn op(&self, what: &str, id: i64, result: OpResult) -> Result<(), CliError> {
        match result {
            OpResult::Applied => {
                self.out.emit(&json!({"id": id, "result": "applied"}), || {
                    println!("{what} {id}: done")
                });
                Ok(())
            }
            OpResult::NotFound => Err(CliError::NotFound(format!("job {id}"))),
            OpResult::WrongState(s) => Err(CliError::Refused(format!("job {id} is {s}"))),
            OpResult::UniqueKeyHeld { by } => Err(CliError::Refused(format!(
                "job {id}'s unique key is held by live job {by}"
            ))),
            OpResult::DependenciesUnmet => Err(CliError::Refused(format!(
                "job {id} is a batch member whose dependencies did not all succeed"
            ))),
            OpResult::BatchEnded(s) => {
                Err(CliError::Refused(format!("the batch already ended {s}")))
            }
        }
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CliError> {
        let snap = self.queue.snapshot()?;
        let outbox = outbox::counts(&self.store).ok();
        let by_state = snap.by_state();
        let (workers, worker_rows) = workers_of(&snap, args.stale_after);
        let value = json!({
            "taken_at": snap.taken_at,
            "by_state": by_state.iter().map(|(s, n)| (s.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "by_queue": snap.by_queue(),
            "by_kind": snap.by_kind(),
            "kinds": snap.kinds.iter().map(|k| json!({"kind": k.kind, "executions": k.executions,
                "success_rate": k.success_rate, "mean_ms": k.mean.as_millis() as u64,
                "p95_ms": k.p95.as_millis() as u64, "p99_ms": k.p99.as_millis() as u64})).collect::<Vec<_>>(),
            "workers": workers,
            "oldest_due_age_ms": snap.oldest_due_age.map(|d| d.as_millis() as u64),
            "oldest_due_age_ms_by_queue": snap.oldest_due_by_queue.iter()
                .map(|(q, d)| (q.clone(), json!(d.as_millis() as u64))).collect::<serde_json::Map<_, _>>(),
            "outbox": outbox.map(|o| json!({"pending": o.pending, "delivered": o.delivered, "dead": o.dead})),
        });
        self.out.emit(&value, || {
            let states: Vec<Vec<String>> = by_state
                .iter()
                .map(|(s, n)| vec![s.as_str().to_owned(), n.to_string()])
                .collect();
            table(&["state", "jobs"], &states);
            println!();
            let queues: Vec<Vec<String>> = snap
                .by_queue()
                .iter()
                .map(|(q, n)| {
                    vec![
                        q.clone(),
                        n.to_string(),
                        snap.oldest_due_by_queue
                            .get(q)
                            .map_or_else(|| "none due".into(), |d| human(*d)),
                    ]
                })
                .collect();
            table(&["queue", "jobs", "oldest due waiting"], &queues);
            println!();
            let kinds: Vec<Vec<String>> = snap
                .kinds
                .iter()
                .map(|k| {
                    vec![
                        k.kind.clone(),
                        k.executions.to_string(),
                        format!("{:.1}%", k.success_rate * 100.0),
                        human(k.mean),
                        human(k.p95),
                        human(k.p99),
                    ]
                })
                .collect();
            table(
                &["kind", "finished", "succeeded", "mean", "p95", "p99"],
                &kinds,
            );
            println!();
            table(&WORKER_HEADERS, &worker_rows);
            println!();
            match snap.oldest_due_age {
                Some(age) => println!("oldest due job (all queues): waiting {}", human(age)),
                None => println!("oldest due job: none due"),
            }
            if let Some(o) = outbox {
                println!(
                    "outbox: {} pending, {} delivered, {} dead",
                    o.pending, o.delivered, o.dead
                );
            }
        });
        Ok(())
    }

    fn jobs_list(&self, args: &ListArgs) -> Result<(), CliError> {
        if args.limit == 0 {
            return Err(CliError::BadInput("--limit must be at least 1".into()));
        }
        let jobs = self.queue.list(&JobQuery {
            filter: filter_of(
                args.state.as_deref(),
                args.queue.as_deref(),
                args.kind.as_deref(),
            )?,
            after: args.after.map(JobId),
            limit: args.limit,
        })?;
        let value = Value::Array(jobs.iter().map(job_json).collect());
        self.out.emit(&value, || {
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|j| {
                    vec![
                        j.id.to_string(),
                        j.queue.clone(),
                        j.kind.clone(),
                        j.state.as_str().to_owned(),
                        format!("{}/{}", j.attempts, j.max_attempts),
                        j.run_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        j.errors
                            .last()
                            .map(|e| e.message.chars().take(60).collect())
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &[
                    "id",
                    "queue",
                    "kind",
                    "state",
                    "attempts",
                    "run_at",
                    "last error",
                ],
                &rows,
            );
            if jobs.len() == args.limit
                && let Some(last) = jobs.last()
            {
                println!("next page: --after {}", last.id);
            }
        });
        Ok(())
    }

    fn jobs_show(&self, id: i64) -> Result<(), CliError> {
        let job = self
            .queue
            .get(JobId(id))?
            .ok_or_else(|| CliError::NotFound(format!("job {id}")))?;
        // The audit ledger's transitions (empty while the ledger is off), and the row's errors.
        let ledger = self.queue.history(&Subject::Job(JobId(id)))?;
        let history: Vec<Value> = ledger
            .iter()
            .map(|e| {
                json!({"at": e.at, "from": e.from_state, "to": e.to_state, "fence": e.fence,
                "attempt": e.attempt, "worker": e.worker, "reason": e.reason})
            })
            .collect();
        let errors: Vec<Value> = job
            .errors
            .iter()
            .map(|e| json!({"attempt": e.attempt, "at": e.at, "kind": e.kind.as_str(), "message": e.message}))
            .collect();
        let mut value = job_json(&job);
        value["payload"] = job.payload.clone();
        value["metadata"] = job.metadata.clone();
        value["guard"] = json!(job.guard.map(|g| g.digest.to_hex()));
        value["progress"] = json!(
            job.progress
                .as_ref()
                .map(|p| json!({"current": p.current, "total": p.total, "message": p.message}))
        );
        value["history"] = Value::Array(history);
        value["errors"] = Value::Array(errors);
        self.out.emit(&value, || {
            for field in [
                "id",
                "kind",
                "queue",
                "state",
                "attempts",
                "max_attempts",
                "run_at",
                "owner",
                "batch",
                "guard",
                "created_at",
                "finished_at",
                "payload",
                "metadata",
                "progress",
            ] {
                println!("{field:<13} {}", value[field]);
            }
            println!("history:");
            for e in &ledger {
                println!(
                    "  {} {} -> {} fence {} attempt {} {}",
                    e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    e.from_state.as_deref().unwrap_or("(enqueued)"),
                    e.to_state,
                    e.fence.map_or("-".into(), |f| f.to_string()),
                    e.attempt.map_or("-".into(), |a| a.to_string()),
                    e.reason.as_deref().or(e.worker.as_deref()).unwrap_or("")
                );
            }
            println!("errors:");
            for e in &job.errors {
                println!(
                    "  attempt {} at {} {}: {}",
                    e.attempt,
                    e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    e.kind.as_str(),
                    e.message
                );
            }
        });
        Ok(())
    }

    fn retry_many(&self, args: &crate::RetryArgs) -> Result<(), CliError> {
        let state = args.state.as_deref().unwrap_or("dead");
        let filter = filter_of(Some(state), args.queue.as_deref(), args.kind.as_deref())?;
        if !matches!(
            filter.state,
            Some(QueueState::Dead | QueueState::Cancelled | QueueState::Parked)
        ) {
            return Err(CliError::BadInput(format!(
                "only dead, cancelled or parked jobs are retried, not {state}"
            )));
        }
        let jobs = self.queue.list(&JobQuery {
            filter,
            after: None,
            limit: args.limit,
        })?;
        let bar = self.out.progress(jobs.len() as u64, "retrying");
        let (mut retried, mut refused) = (0u64, Vec::new());
        for j in &jobs {
            match self.queue.retry(j.id)? {
                OpResult::Applied => retried += 1,
                other => refused.push(json!({"id": j.id.0, "answer": format!("{other:?}")})),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let value = json!({"retried": retried, "refused": refused});
        self.out.emit(&value, || {
            println!("retried {retried} of {} jobs", jobs.len());
            for r in &refused {
                println!("  refused: job {} ({})", r["id"], r["answer"]);
            }
        });
        Ok(())
    }

    fn purge(&self, args: &crate::PurgeArgs) -> Result<(), CliError> {
        let state = args.state.as_deref().unwrap_or("dead");
        let filter = filter_of(Some(state), args.queue.as_deref(), args.kind.as_deref())?;
        if !filter.state.is_some_and(QueueState::is_finished) {
            return Err(CliError::BadInput(format!(
                "only finished jobs (succeeded, dead, cancelled) are purged, not {state}"
            )));
        }
        confirm(
            &format!("delete every {state} job matching the filters?"),
            args.yes,
        )?;
        let n = self.queue.purge(&filter)?;
        self.out
            .emit(&json!({"purged": n}), || println!("purged {n} jobs"));
        Ok(())
    }

    fn clear(&self, queue: &str, yes: bool) -> Result<(), CliError> {
        let mut waiting = Vec::new();
        for state in [
            QueueState::Pending,
            QueueState::Scheduled,
            QueueState::Retrying,
        ] {
            let mut after = None;
            loop {
                let page = self.queue.list(&JobQuery {
                    filter: JobFilter {
                        state: Some(state),
                        queue: Some(queue.to_owned()),
                        kind: None,
                    },
                    after,
                    limit: 1000,
                })?;
                after = page.last().map(|j| j.id);
                let full = page.len() == 1000;
                waiting.extend(page.into_iter().map(|j| j.id));
                if !full {
                    break;
                }
            }
        }
        confirm(
            &format!(
                "cancel the {} waiting jobs of queue {queue:?}?",
                waiting.len()
            ),
            yes,
        )?;
        let bar = self.out.progress(waiting.len() as u64, "cancelling");
        let mut cancelled = 0u64;
        for id in &waiting {
            // A job claimed meanwhile is running now: it belongs to its worker.
            if self.queue.cancel(*id)? == OpResult::Applied {
                cancelled += 1;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        self.out.emit(&json!({"cancelled": cancelled}), || {
            println!("cancelled {cancelled} waiting jobs of queue {queue:?}")
        });
        Ok(())
    }

    fn cleanup(&self, args: &CleanupArgs) -> Result<(), CliError> {
        if args.batch == 0 {
            return Err(CliError::BadInput("--batch must be at least 1".into()));
        }
        let bar = self.out.progress(0, "pruning finished jobs");
        let mut jobs = 0u64;
        loop {
            let n = self.queue.prune(args.older_than, args.batch)?;
            jobs += n;
            bar.set_position(jobs);
            if n < args.batch as u64 {
                break;
            }
        }
        bar.finish_and_clear();
        let delivered = match outbox::prune_delivered(&self.store, args.older_than) {
            Ok(n) => Some(n),
            // A database without the outbox table has nothing to prune there.
            Err(outbox::RelayError::MissingTable { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let workers = self.forget_stale(args.workers_older_than)?;
        let mut guards = None;
        if args.guards {
            let mut n = 0u64;
            loop {
                let pruned = self.queue.guards().prune(args.batch)?;
                n += pruned;
                if pruned < args.batch as u64 {
                    break;
                }
            }
            guards = Some(n);
        }
        let value = json!({"jobs": jobs, "outbox_delivered": delivered, "workers": workers, "guards": guards});
        self.out.emit(&value, || {
            println!("finished jobs deleted: {jobs}");
            match delivered {
                Some(n) => println!("delivered outbox rows deleted: {n}"),
                None => println!("delivered outbox rows deleted: none (no outbox table)"),
            }
            println!("stale worker rows deleted: {workers}");
            match guards {
                Some(n) => println!("guard rows past their retention deleted: {n}"),
                None => {
                    println!("guard rows: kept (pass --guards to prune those past their retention)")
                }
            }
        });
        Ok(())
    }

    fn forget_stale(&self, older_than: Duration) -> Result<u64, CliError> {
        let snap = self.queue.snapshot()?;
        let mut n = 0;
        for w in &snap.workers {
            if heartbeat_age(&snap, w) > older_than {
                self.queue.remove_worker(&w.id)?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn keys(&self, command: KeysCommand) -> Result<(), CliError> {
        let guards = self.queue.guards();
        let now = guards.now()?;
        match command {
            KeysCommand::Show { digest } => {
                let d = digest_of(&digest)?;
                let row = guards
                    .get(&d)?
                    .ok_or_else(|| CliError::NotFound(format!("key {}", d.short())))?;
                let value = key_json(&row, now);
                self.out.emit(&value, || {
                    if let Value::Object(map) = &value {
                        for (k, v) in map {
                            println!("{k:<17} {v}");
                        }
                    }
                });
            }
            KeysCommand::InDoubt { limit } => {
                let rows = guards.list(&ListQuery::new(ListFilter::EffectsInDoubt, limit))?;
                let value = Value::Array(rows.iter().map(|r| key_json(r, now)).collect());
                self.out.emit(&value, || {
                    let table_rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.digest.to_hex(),
                                r.effects.as_str().to_owned(),
                                r.owner.clone().unwrap_or_default(),
                                r.finalized_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                            ]
                        })
                        .collect();
                    table(
                        &["digest", "effects", "last owner", "succeeded at"],
                        &table_rows,
                    );
                });
            }
            // Answered before connecting (`dispatch`); a user binary routes it to `recover`.
            KeysCommand::Recover { .. } => {
                return Err(CliError::NeedsJobTypes {
                    command: "keys recover",
                });
            }
            KeysCommand::Confirm { digest, yes } => {
                let d = digest_of(&digest)?;
                confirm(
                    &format!(
                        "record that the effects of key {} DID happen (nothing will run)?",
                        d.short()
                    ),
                    yes,
                )?;
                let operator = format!("safejob-cli-{}", std::process::id());
                match confirm_effects_by_digest(guards, &d, &operator)? {
                    Recovery::Resolved { fence } => self.out.emit(
                        &json!({"digest": d.to_hex(), "confirmed": true, "fence": fence}),
                        || println!("key {}: effects recorded done (fence {fence})", d.short()),
                    ),
                    Recovery::NotInDoubt(row) => {
                        return Err(CliError::Refused(format!(
                            "key {}'s effects are not in doubt (state {}, effects {})",
                            d.short(),
                            row.state.as_str(),
                            row.effects.as_str()
                        )));
                    }
                    Recovery::Missing => {
                        return Err(CliError::NotFound(format!("key {}", d.short())));
                    }
                }
            }
        }
        Ok(())
    }

    fn serve(&self, args: &crate::ServeArgs) -> Result<(), CliError> {
        use safejob_web::{Access, BearerToken, WebState};
        let access = match &args.token_env {
            None => Access::LoopbackOnly,
            Some(var) => {
                let token = std::env::var(var).map_err(|_| {
                    CliError::BadInput(format!("--token-env {var}: the variable is not set"))
                })?;
                let token = BearerToken::new(token)
                    .map_err(|e| CliError::BadInput(format!("--token-env {var}: {e}")))?;
                Access::LoopbackOrBearer(token)
            }
        };
        let state = WebState::from_store(self.queue.clone())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::Io(format!("cannot start the runtime: {e}")))?;
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(args.addr)
                .await
                .map_err(|e| CliError::Io(format!("cannot listen on {}: {e}", args.addr)))?;
            let bound = listener
                .local_addr()
                .map_err(|e| CliError::Io(e.to_string()))?;
            eprintln!(
                "safejob: serving http://{bound}/ ({})",
                if args.token_env.is_some() {
                    "loopback, or a bearer token"
                } else {
                    "loopback clients only"
                }
            );
            let stop = async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async {
                        match term.as_mut() {
                            Some(t) => { t.recv().await; }
                            None => std::future::pending::<()>().await,
                        }
                    } => {}
                }
            };
            safejob_web::serve_on(listener, state, access, stop).await?;
            Ok(())
        })
    }

    fn workers(&self, command: WorkersCommand) -> Result<(), CliError> {
        match command {
            WorkersCommand::List(args) => {
                let snap = self.queue.snapshot()?;
                let (value, rows) = workers_of(&snap, args.stale_after);
                self.out.emit(&value, || table(&WORKER_HEADERS, &rows));
                Ok(())
            }
            WorkersCommand::ForgetStale { older_than } => {
                let n = self.forget_stale(older_than)?;
                self.out.emit(&json!({"forgotten": n}), || {
                    println!(
                        "forgot {n} workers silent for more than {}",
                        human(older_than)
                    )
                });
                Ok(())
            }
        }
    }
}
