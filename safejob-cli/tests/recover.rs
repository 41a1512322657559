//! `keys recover` in a user binary (`safejob_cli::run_app`, what `main_with` runs): a queued
//! guarded job whose effects failed is rebuilt by the binary's registry and its effects run once
//! more. SQLite always; MariaDB and PostgreSQL when their test URLs are set (required in CI).
//! The plain `safejob` binary's refusal is in tests/cli.rs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use clap::Parser;
use safejob_cli::{App, CliError, run_app};
use safejob_core::{
    EffectsContext, IdempotencyKey, KeyError, Outcome, PerformContext, Runner, SafeJob,
    queue::{EnqueueOptions, GuardedJob, Queue, QueueStore, RecoverError, Registry, Worker},
};
use safejob_diesel::{DieselStore, queue::DieselQueue, testing::TestDb};
use serde::{Deserialize, Serialize};

/// How many times each payout's effects ran, by payout id (the three backends' tests share the
/// process, each with its own ids).
static EFFECTS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn effects_of(id: &str) -> u32 {
    EFFECTS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(id).copied())
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
#[error("the bank did not answer")]
struct NoAnswer;

/// A guarded payout whose effects fail the first time they run, and succeed after.
#[derive(Serialize, Deserialize)]
struct Payout {
    id: String,
    cents: u64,
}

impl SafeJob for Payout {
    type Error = NoAnswer;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["payout", &self.id])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, NoAnswer> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, _: &mut EffectsContext<'_>) -> Result<(), NoAnswer> {
        let mut map = EFFECTS.lock().unwrap();
        let n = map
            .get_or_insert_with(HashMap::new)
            .entry(self.id.clone())
            .or_insert(0);
        *n += 1;
        if *n == 1 { Err(NoAnswer) } else { Ok(()) }
    }
}

impl GuardedJob for Payout {
    const KIND: &'static str = "payout";
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register_guarded::<Payout>();
    r
}

/// Runs `myapp --url <url> <args>` in process.
fn myapp(url: &str, args: &[&str]) -> Result<(), CliError> {
    let mut argv = vec!["myapp", "--url", url];
    argv.extend_from_slice(args);
    run_app(App::parse_from(argv), registry)
}

fn code(result: Result<(), CliError>) -> u8 {
    result.map_or_else(|e| e.exit_code(), |()| 0)
}

/// Break: `Registry::recover_effects` not finding the job (its search by guard digest), the
/// guarded handler's `recover` not rebuilding the job (the default `NoJob`), the rebuilt job
/// presenting its own fingerprint instead of the queue's (a key conflict), `run_app` routing
/// `keys recover` to the plain dispatch (exit 6), or the key's text not hashed to its digest.
fn exercise(db: &TestDb, tag: &str) {
    let url = url_of(db);
    let store: Arc<DieselStore> = db.store().clone();
    store.migrate().expect("migrate");
    let queue = Arc::new(DieselQueue::new(store.clone()));
    let client = Queue::new(queue.clone());
    let first = format!("{tag}-1");
    let second = format!("{tag}-2");
    for id in [&first, &second] {
        client
            .enqueue_guarded(
                &Payout {
                    id: id.clone(),
                    cents: 500,
                },
                &EnqueueOptions::new(),
            )
            .expect("enqueue");
    }
    let worker = Worker::builder(queue.clone(), registry())
        .build()
        .expect("worker");
    assert_eq!(worker.drain(10).expect("drain").len(), 2);
    let guards = queue.guards();
    let key = |id: &str| IdempotencyKey::from_parts(["payout", id]).expect("key");
    for id in [&first, &second] {
        assert_eq!(effects_of(id), 1);
        let row = guards.get(key(id).digest()).expect("get").expect("row");
        assert!(row.effects_in_doubt(guards.now().expect("now")), "{row:?}");
    }

    // By digest.
    let digest = key(&first).digest().to_hex();
    myapp(&url, &["keys", "recover", &digest, "--yes", "--json"]).expect("recover");
    assert_eq!(effects_of(&first), 2, "the effects ran once more");
    let row = guards.get(key(&first).digest()).expect("get").expect("row");
    assert!(!row.effects_in_doubt(guards.now().expect("now")), "{row:?}");
    assert_eq!(row.effects.as_str(), "done");
    // Not in doubt any more: refused, nothing runs.
    assert_eq!(code(myapp(&url, &["keys", "recover", &digest, "--yes"])), 4);
    assert_eq!(effects_of(&first), 2);

    // By the key's text.
    let text = key(&second).as_str().to_owned();
    myapp(&url, &["keys", "recover", &text, "--yes"]).expect("recover by key");
    assert_eq!(effects_of(&second), 2);

    // No row for the key.
    assert_eq!(
        code(myapp(&url, &["keys", "recover", "no-such-key", "--yes"])),
        3
    );
    assert_eq!(code(myapp(&url, &["keys", "recover", "", "--yes"])), 2);

    // In doubt, but run by a Runner: no queued job carries it, so the binary cannot rebuild it.
    let third = format!("{tag}-3");
    let runner = Runner::builder(store.clone()).build().expect("runner");
    let payout = Payout {
        id: third.clone(),
        cents: 1,
    };
    assert!(runner.run(&payout).is_err(), "the effects failed");
    let third_digest = key(&third).digest().to_hex();
    let result = myapp(&url, &["keys", "recover", &third_digest, "--yes"]);
    assert!(
        matches!(result, Err(CliError::Recover(RecoverError::NoJob { .. }))),
        "{result:?}"
    );
    assert_eq!(effects_of(&third), 1);
    // The plain operator commands still run in a user binary.
    myapp(&url, &["keys", "in-doubt", "--json"]).expect("in-doubt");
}

/// The URL the CLI reaches `db` by: on PostgreSQL, its schema through libpq's `options`.
fn url_of(db: &TestDb) -> String {
    match db.schema() {
        Some(schema) => {
            let sep = if db.url().contains('?') { '&' } else { '?' };
            format!("{}{sep}options=-csearch_path%3D{schema}", db.url())
        }
        None => db.url().to_owned(),
    }
}

#[test]
fn recover_on_sqlite() {
    let db = TestDb::sqlite().expect("sqlite");
    exercise(&db, "sqlite");
}

#[test]
fn recover_on_mysql() {
    let Some(db) = TestDb::mysql_from_env().expect("MySQL") else {
        return;
    };
    exercise(&db, "mysql");
}

#[test]
fn recover_on_postgres() {
    let Some(db) = TestDb::postgres_from_env().expect("PostgreSQL") else {
        return;
    };
    exercise(&db, "postgres");
}
