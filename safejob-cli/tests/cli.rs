//! The `safejob` binary against a real database: seeded through the library (a dead job, a
//! waiting queue, a batch, a schedule, an action, a key whose effects are in doubt), then every
//! command run as a process, its JSON output and exit code checked, and the effect read back
//! through the library. SQLite always; MariaDB and PostgreSQL when their test URLs are set
//! (required in CI).

use std::{process::Command, sync::Arc, time::Duration};

use safejob_core::{
    IdempotencyKey, Retention,
    action::{ActionState, ActionStore, Publisher},
    queue::{
        AttemptError, ClaimRequest, CompleteAs, Completion, ErrorKind, JobFilter, JobQuery, NewJob,
        QueueState, QueueStore, RunAt,
    },
    schedule::{Schedule, Scheduler},
    store::{AcquireRequest, Acquired, EffectsOutcome},
    workflow::{BatchBuilder, BatchPolicy, BatchState},
};
use safejob_diesel::{DieselStore, queue::DieselQueue};
use serde_json::{Value, json};

fn job(kind: &str, queue: &str) -> NewJob {
    NewJob {
        kind: kind.into(),
        queue: queue.into(),
        payload: json!({}),
        metadata: Value::Null,
        priority: 0,
        run_at: RunAt::Now,
        max_attempts: 3,
        idempotent: true,
        unique_key: None,
        guard: None,
    }
}

/// Runs `safejob <args>` against `url`; returns (exit code, stdout parsed as JSON when it is).
fn safejob(url: &str, args: &[&str]) -> (i32, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_safejob"))
        .args(args)
        .env("SAFEJOB_DATABASE_URL", url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        value,
        format!("{stdout}{stderr}"),
    )
}

struct Seeded {
    dead: i64,
    waiting: usize,
    batch: i64,
    action: i64,
    digest: String,
}

/// A dead job, three waiting jobs in queue `mail`, a batch with a blocked member, an hourly
/// schedule, a parked action, and a succeeded key with effects in doubt.
fn seed(queue: &Arc<DieselQueue>) -> Seeded {
    queue.enqueue(&job("report", "default")).expect("enqueue");
    let claimed = queue
        .claim(&ClaimRequest {
            worker: "seed",
            queues: &["default".to_owned()],
            limit: 1,
            ttl: Duration::from_secs(30),
        })
        .expect("claim");
    let dead = claimed[0].job.id;
    queue
        .complete(
            &Completion {
                lease: &claimed[0].lease,
                outcome: CompleteAs::Dead {
                    error: AttemptError::new(ErrorKind::Fatal, "the printer is on fire"),
                },
                progress: None,
                guard: None,
                batch: None,
            },
            None,
        )
        .expect("complete");
    for _ in 0..3 {
        queue.enqueue(&job("mail", "mail")).expect("enqueue");
    }
    let batch = BatchBuilder::new("etl", BatchPolicy::Continue)
        .add_job("extract", Ok(job("extract", "etl")), &[])
        .add_job("load", Ok(job("load", "etl")), &["extract"])
        .build()
        .expect("batch");
    let batch = queue.insert_batch(&batch).expect("insert batch").0;
    let scheduler = Scheduler::builder(queue.clone())
        .schedule(Schedule::cron("hourly", "@hourly", "UTC", job("tick", "default")).expect("cron"))
        .build()
        .expect("scheduler");
    scheduler.sync().expect("sync");
    let action = Publisher::new(queue.clone())
        .action("nobody.handles")
        .max_attempts(1)
        .publish()
        .expect("publish")
        .id()
        .expect("id");
    // Park it: one failed attempt of one allowed.
    let claimed = queue
        .claim_actions(&safejob_core::action::ActionClaim {
            token: "seed",
            limit: 10,
            ttl: Duration::from_secs(30),
        })
        .expect("claim actions");
    assert_eq!(claimed.len(), 1);
    queue
        .finish_action(
            &safejob_core::action::ActionLease {
                id: action,
                token: "seed".into(),
            },
            &safejob_core::action::ActionOutcome::Failed {
                error: "no processor",
                retry_in: None,
            },
        )
        .expect("park");
    // A key that succeeded with its effects marked in doubt.
    let key = IdempotencyKey::new("cli/payout/1").expect("key");
    let guards = queue.guards();
    let Acquired::Granted(lease) = guards
        .acquire(&AcquireRequest {
            digest: *key.digest(),
            fingerprint: None,
            owner: "seed",
            ttl: Duration::from_secs(30),
        })
        .expect("acquire")
    else {
        panic!("not granted")
    };
    guards
        .finalize_succeeded(
            &lease,
            None,
            Duration::from_secs(30),
            Retention::Forever,
            None,
        )
        .expect("finalize");
    guards
        .finish_effects(
            &lease,
            EffectsOutcome::InDoubt {
                error: "worker died",
            },
        )
        .expect("in doubt");
    Seeded {
        dead: dead.0,
        waiting: 3,
        batch,
        action: action.0,
        digest: key.digest().to_hex(),
    }
}

fn exercise(url: &str) {
    let (code, _, text) = safejob(url, &["migrate", "--json"]);
    assert_eq!(code, 0, "migrate: {text}");
    let store = Arc::new(DieselStore::connect(url).expect("connect"));
    let queue = Arc::new(DieselQueue::new(store));
    let s = seed(&queue);

    // status
    let (code, status, text) = safejob(url, &["status", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(status["by_state"]["dead"], 1, "{status}");
    assert_eq!(status["by_queue"]["mail"], 3, "{status}");
    assert!(!text.contains("password"), "{text}");
    // Per queue: `mail`'s jobs are due; the overall figure is the oldest of the queues'.
    let by_queue = status["oldest_due_age_ms_by_queue"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(by_queue.contains_key("mail"), "{status}");
    assert!(!by_queue.contains_key("nowhere"), "{status}");
    assert_eq!(
        by_queue.values().filter_map(Value::as_u64).max(),
        status["oldest_due_age_ms"].as_u64(),
        "{status}"
    );
    let (code, _, text) = safejob(url, &["status"]);
    assert_eq!(code, 0);
    assert!(text.contains("oldest due job"), "{text}");

    // jobs, failed
    let (code, list, _) = safejob(url, &["jobs", "list", "--state", "dead", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(list[0]["id"], s.dead);
    assert_eq!(list[0]["last_error"], "the printer is on fire");
    let (_, failed, _) = safejob(url, &["failed", "--json"]);
    assert_eq!(failed.as_array().map(Vec::len), Some(1));
    let (code, shown, _) = safejob(url, &["jobs", "show", &s.dead.to_string(), "--json"]);
    assert_eq!(code, 0);
    assert_eq!(shown["errors"][0]["kind"], "fatal");
    // From the audit ledger: enqueued, claimed, dead.
    let moves: Vec<(Value, Value)> = shown["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| (e["from"].clone(), e["to"].clone()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        moves,
        vec![
            (Value::Null, json!("pending")),
            (json!("pending"), json!("running")),
            (json!("running"), json!("dead")),
        ],
        "{shown}"
    );
    assert_eq!(safejob(url, &["jobs", "show", "999999"]).0, 3, "not found");
    assert_eq!(
        safejob(url, &["jobs", "list", "--state", "bogus"]).0,
        2,
        "bad input"
    );

    // retry one: pending; again: refused
    assert_eq!(safejob(url, &["retry", &s.dead.to_string()]).0, 0);
    let row = queue
        .get(safejob_core::queue::JobId(s.dead))
        .expect("get")
        .expect("row");
    assert_eq!(row.state, QueueState::Pending);
    assert_eq!(
        safejob(url, &["retry", &s.dead.to_string()]).0,
        4,
        "a pending job is not retried"
    );
    // cancel it, retry many (cancelled), purge
    assert_eq!(safejob(url, &["cancel", &s.dead.to_string()]).0, 0);
    let (code, many, _) = safejob(url, &["retry", "--state", "cancelled", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(many["retried"], 1);
    assert_eq!(safejob(url, &["cancel", &s.dead.to_string()]).0, 0);
    assert_eq!(
        safejob(url, &["purge", "--state", "cancelled"]).0,
        5,
        "no --yes, no terminal: declined"
    );
    let (code, purged, _) = safejob(url, &["purge", "--state", "cancelled", "--yes", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(purged["purged"], 1);

    // clear: declined without --yes, then cancels the waiting jobs of the queue
    assert_eq!(safejob(url, &["clear", "--queue", "mail"]).0, 5);
    let (code, cleared, _) = safejob(url, &["clear", "--queue", "mail", "--yes", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(cleared["cancelled"], s.waiting as u64);
    let mail = queue
        .list(&JobQuery {
            filter: JobFilter::default().queue("mail"),
            after: None,
            limit: 10,
        })
        .expect("list");
    assert!(mail.iter().all(|j| j.state == QueueState::Cancelled));

    // keys
    let (code, doubt, _) = safejob(url, &["keys", "in-doubt", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(doubt[0]["digest"], s.digest);
    assert_eq!(safejob(url, &["keys", "show", "nothex"]).0, 2);
    // `keys recover` rebuilds the job: only a user binary can. Break: dispatch running it, or
    // mapping the error to another exit code.
    let (code, _, text) = safejob(url, &["keys", "recover", &s.digest, "--yes"]);
    assert_eq!(code, 6, "{text}");
    assert!(text.contains("needs your binary"), "{text}");
    let (_, key, _) = safejob(url, &["keys", "show", &s.digest, "--json"]);
    assert_eq!(key["effects_in_doubt"], true, "nothing changed: {key}");
    assert_eq!(
        safejob(url, &["keys", "confirm", &s.digest]).0,
        5,
        "asks first"
    );
    let (code, confirmed, text) = safejob(url, &["keys", "confirm", &s.digest, "--yes", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(confirmed["confirmed"], true);
    let (_, key, _) = safejob(url, &["keys", "show", &s.digest, "--json"]);
    assert_eq!(key["effects"], "done", "{key}");
    assert_eq!(
        safejob(url, &["keys", "confirm", &s.digest, "--yes"]).0,
        4,
        "not in doubt any more"
    );

    // schedules
    let (code, schedules, _) = safejob(url, &["schedules", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(schedules[0]["name"], "hourly");
    assert_eq!(schedules[0]["next_runs"].as_array().map(Vec::len), Some(3));
    assert_eq!(safejob(url, &["schedules", "trigger", "hourly"]).0, 0);
    let scheduler = Scheduler::builder(queue.clone())
        .schedule(Schedule::cron("hourly", "@hourly", "UTC", job("tick", "default")).expect("cron"))
        .build()
        .expect("scheduler");
    let fired = scheduler.tick().expect("tick");
    assert_eq!(fired.len(), 1, "triggered: the next tick fires");
    assert_eq!(
        fired[0].enqueued.len(),
        1,
        "and enqueues one job: {fired:?}"
    );
    assert_eq!(safejob(url, &["schedules", "pause", "hourly"]).0, 0);
    assert_eq!(
        safejob(url, &["schedules", "pause", "hourly"]).0,
        4,
        "already paused"
    );
    assert_eq!(safejob(url, &["schedules", "resume", "hourly"]).0, 0);
    assert_eq!(
        safejob(url, &["schedules", "pause", "nope"]).0,
        1,
        "not stored"
    );

    // batches
    let (code, batches, _) = safejob(url, &["batches", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(batches[0]["id"], s.batch);
    let (_, shown, _) = safejob(url, &["batches", "show", &s.batch.to_string(), "--json"]);
    assert_eq!(shown["members"][1]["depends_on"][0], "extract", "{shown}");
    assert_eq!(
        safejob(url, &["batches", "cancel", &s.batch.to_string()]).0,
        0
    );
    let info = queue
        .batch(safejob_core::workflow::BatchId(s.batch))
        .expect("batch")
        .expect("row");
    assert_eq!(info.state, BatchState::Cancelled);
    assert_eq!(
        safejob(url, &["batches", "cancel", &s.batch.to_string()]).0,
        4
    );

    // actions
    let (_, actions, _) = safejob(url, &["actions", "list", "--state", "parked", "--json"]);
    assert_eq!(actions[0]["id"], s.action);
    assert_eq!(
        safejob(url, &["actions", "retry", &s.action.to_string()]).0,
        0
    );
    let a = queue
        .get_action(safejob_core::action::ActionId(s.action))
        .expect("get")
        .expect("row");
    assert_eq!(a.state, ActionState::Pending);
    assert_eq!(
        safejob(url, &["actions", "retry", &s.action.to_string()]).0,
        4
    );

    // workers
    queue
        .heartbeat(&safejob_core::queue::Heartbeat {
            worker: "old-worker",
            queues: &["default".to_owned()],
            concurrency: 2,
        })
        .expect("heartbeat");
    let (_, workers, _) = safejob(url, &["workers", "list", "--json"]);
    assert_eq!(workers[0]["id"], "old-worker");
    let (_, kept, _) = safejob(
        url,
        &["workers", "forget-stale", "--older-than", "1h", "--json"],
    );
    assert_eq!(kept["forgotten"], 0);
    let (_, forgot, _) = safejob(
        url,
        &["workers", "forget-stale", "--older-than", "0s", "--json"],
    );
    assert_eq!(forgot["forgotten"], 1);

    // cleanup: the finished jobs (the cancelled mail jobs, the cancelled batch members) go;
    // guard rows stay without --guards.
    let (code, cleaned, text) = safejob(url, &["cleanup", "--older-than", "0s", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert!(cleaned["jobs"].as_u64().unwrap_or(0) >= 3, "{cleaned}");
    assert_eq!(cleaned["guards"], Value::Null);
    assert_eq!(
        safejob(url, &["cleanup", "--older-than", "7y"]).0,
        2,
        "bad duration"
    );
}

#[test]
fn every_command_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("cli.db").display());
    exercise(&url);
}

#[test]
fn no_database_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_safejob"))
        .args(["status"])
        .env_remove("SAFEJOB_DATABASE_URL")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SAFEJOB_DATABASE_URL"));
}

#[test]
fn a_password_in_the_url_is_never_printed() {
    let (code, _, text) = safejob(
        "postgres://root:hunter2secret@127.0.0.1:1/nowhere?connect_timeout=1",
        &["status"],
    );
    assert_eq!(code, 1, "{text}");
    assert!(!text.contains("hunter2secret"), "{text}");
}

#[test]
fn every_command_on_mysql() {
    // A fresh database on the server, dropped with `db`; the CLI gets that database's URL.
    let Some(db) = safejob_diesel::testing::TestDb::mysql_from_env().expect("MySQL") else {
        return;
    };
    exercise(db.url());
}

#[test]
fn every_command_on_postgres() {
    // A fresh schema, dropped with `db`; the CLI reaches it through libpq's `options`.
    let Some(db) = safejob_diesel::testing::TestDb::postgres_from_env().expect("PostgreSQL") else {
        return;
    };
    let schema = db.schema().expect("a schema");
    let sep = if db.url().contains('?') { '&' } else { '?' };
    exercise(&format!(
        "{}{sep}options=-csearch_path%3D{schema}",
        db.url()
    ));
}

/// One HTTP/1.0 request over a plain socket to `to`; returns the status line's code and the body.
/// Connecting to the host's own non-loopback address makes that address the peer the server
/// sees.
fn http(to: std::net::SocketAddr, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
    s.write_all(request.as_bytes()).expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// This host's own non-loopback address, if it has one (the route a UDP socket would take; no
/// packet is sent).
fn own_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `safejob serve`: loopback clients get `GET /jobs` and `/metrics`; a client reaching it by the
/// host's own non-loopback address is refused an action (403); SIGTERM stops it cleanly.
#[test]
fn serve_answers_loopback_and_refuses_other_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("serve.db").display());
    assert_eq!(safejob(&url, &["migrate"]).0, 0);
    let store = Arc::new(DieselStore::connect(&url).expect("connect"));
    let queue = Arc::new(DieselQueue::new(store));
    let s = seed(&queue);
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr").port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_safejob"))
        .args(["serve", "--addr", &format!("0.0.0.0:{port}")])
        .env("SAFEJOB_DATABASE_URL", &url)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("serve starts");
    let local: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(local).is_ok() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the server never listened");
    let (code, body) = http(local, "GET /jobs HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    let jobs: Value = serde_json::from_str(&body).expect("JSON");
    assert!(jobs.is_object(), "{jobs}");
    let (code, metrics) = http(local, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    assert_eq!(code, 200);
    assert!(metrics.contains("# TYPE"), "{metrics}");
    if let Some(ip) = own_address() {
        let remote = std::net::SocketAddr::new(ip, port);
        let (code, body) = http(
            remote,
            &format!(
                "POST /api/jobs/{}/retry HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                s.dead
            ),
        );
        assert_eq!(code, 403, "a non-loopback client's action: {body}");
        let row = queue
            .get(safejob_core::queue::JobId(s.dead))
            .expect("get")
            .expect("row");
        assert_eq!(
            row.state,
            QueueState::Dead,
            "the refused action changed nothing"
        );
    } else {
        eprintln!("skipped: the non-loopback refusal (this host has no non-loopback address)");
    }
    let pid = child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(
        status.success(),
        "serve stops cleanly on SIGTERM: {status:?}"
    );
}
