//! Backend behaviour beyond the conformance suite, on every backend: migrations, statement
//! reuse, transactional effects, pool hygiene and the typed errors.

#[macro_use]
mod common;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::TestDb;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use safejob_core::Retention;
use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyDigest, KeyError, LeaseStore, Outcome,
    PerformContext, Report, RunError, Runner, SafeJob, StoreError,
    store::{AcquireRequest, Acquired, EffectsAborted, Finalized, JobState, Lease},
};
use safejob_diesel::{BackendKind, ConnectionRef, TransactionExt, TxError};

const TTL: Duration = Duration::from_secs(30);

fn grant(store: &dyn LeaseStore, key: &str) -> Lease {
    let req = AcquireRequest {
        digest: KeyDigest::of(key),
        fingerprint: None,
        owner: "w1",
        ttl: TTL,
    };
    match store.acquire(&req).expect("acquire") {
        Acquired::Granted(lease) => lease,
        other => panic!("expected a grant for {key}, got {other:?}"),
    }
}

fn create_ledger(db: &TestDb) {
    db.execute("CREATE TABLE ledger (entry VARCHAR(64) NOT NULL PRIMARY KEY)");
}

fn ledger_count(db: &TestDb) -> i64 {
    db.count_rows("ledger", "1 = 1")
}

/// Writes one ledger row through the finalize transaction's connection, whatever the backend.
fn write_ledger(ctx: &mut EffectsContext<'_>, entry: &str) -> Result<(), TxError> {
    ctx.effects_tx()?
        .insert("ledger", &[("entry", entry.into())])
        .expect("ledger insert");
    Ok(())
}

/// A job whose effects write a ledger row through the finalize transaction, then succeed or fail.
struct Posting {
    id: &'static str,
    effects_fail: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("posting failed: {0}")]
struct PostingError(String);

impl SafeJob for Posting {
    type Error = PostingError;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["posting", self.id])
    }
    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        write_ledger(ctx, self.id).map_err(|e| PostingError(e.to_string()))?;
        if self.effects_fail {
            return Err(PostingError("downstream refused".into()));
        }
        Ok(())
    }
}

/// Records the statements a connection prepares into its cache, and how many it starts.
#[derive(Default)]
struct Events {
    started: usize,
    cached: Vec<String>,
}

fn instrument(conn: &mut ConnectionRef<'_>, events: Arc<Mutex<Events>>) {
    let probe = move |event: InstrumentationEvent<'_>| {
        let mut events = events.lock().unwrap();
        match event {
            InstrumentationEvent::StartQuery { .. } => events.started += 1,
            InstrumentationEvent::CacheQuery { sql, .. } => events.cached.push(sql.to_owned()),
            _ => {}
        }
    };
    fn set(conn: &mut impl diesel::Connection, probe: impl Instrumentation) {
        conn.set_instrumentation(probe);
    }
    match conn {
        #[cfg(feature = "sqlite")]
        ConnectionRef::Sqlite(c) => set(*c, probe),
        #[cfg(feature = "postgres")]
        ConnectionRef::Postgres(c) => set(*c, probe),
        #[cfg(feature = "mysql")]
        ConnectionRef::Mysql(c) => set(*c, probe),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    }
}

on_every_backend! {
    fn migrations_are_idempotent(db: &TestDb) {
        // The harness migrated once already; a second run (and a second store) applies nothing.
        assert_eq!(db.store.migrate().expect("second migrate"), Vec::<String>::new());
        let other = db.builder().build().expect("second store");
        assert!(other.migrate().expect("migrate from another store").is_empty());
        assert_eq!(db.count("1 = 1"), 0);
    }

    fn the_diesel_cli_sees_the_same_migrations(db: &TestDb) {
        // `diesel migration run --migration-dir migrations/<backend>` reads the folder with
        // FileBasedMigrations; after store.migrate() it must find nothing pending.
        use diesel_migrations::{FileBasedMigrations, MigrationHarness};
        let dir = format!("{}/../migrations/{}", env!("CARGO_MANIFEST_DIR"), db.backend().as_str());
        let folder = || FileBasedMigrations::from_path(&dir).expect("migration folder");
        let pending = db
            .store
            .with_connection(|conn| match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => c.pending_migrations(folder()).map(|p| p.len()),
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => c.pending_migrations(folder()).map(|p| p.len()),
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => c.pending_migrations(folder()).map(|p| p.len()),
                #[allow(unreachable_patterns)]
                _ => unreachable!(),
            })
            .unwrap()
            .expect("pending migrations");
        assert_eq!(pending, 0);
    }

    fn prepared_statements_are_prepared_once_and_reused(db: &TestDb) {
        let events = Arc::new(Mutex::new(Events::default()));
        let probe = events.clone();
        let store = db
            .builder_with(move |conn| {
                instrument(conn, probe.clone());
                Ok(())
            })
            .max_size(1)
            .build()
            .expect("instrumented store");
        for i in 0..20 {
            let lease = grant(&store, &format!("prepared-{i}"));
            assert_eq!(
                store.finalize_succeeded(&lease, None, TTL, Retention::Forever, None).unwrap(),
                Finalized::Committed
            );
        }
        {
            let events = events.lock().unwrap();
            let cached = |needle: &str| events.cached.iter().filter(|sql| sql.contains(needle)).count();
            assert_eq!(cached("INSERT INTO safe_jobs"), 1, "the acquire INSERT is prepared once: {:?}", events.cached);
            assert_eq!(cached("SET state = 'succeeded'"), 1, "the finalize UPDATE is prepared once: {:?}", events.cached);
            assert!(events.started >= 40, "40 primitives ran, {} statements started", events.started);
        }

        // For contrast, what stmt.rs avoids: diesel never caches a `sql_query`.
        let cached_before = events.lock().unwrap().cached.len();
        for _ in 0..3 {
            store
                .with_connection(|conn| match conn {
                    #[cfg(feature = "sqlite")]
                    ConnectionRef::Sqlite(c) => diesel::RunQueryDsl::execute(diesel::sql_query(UNCACHED), *c),
                    #[cfg(feature = "postgres")]
                    ConnectionRef::Postgres(c) => diesel::RunQueryDsl::execute(diesel::sql_query(UNCACHED), *c),
                    #[cfg(feature = "mysql")]
                    ConnectionRef::Mysql(c) => diesel::RunQueryDsl::execute(diesel::sql_query(UNCACHED), *c),
                    #[allow(unreachable_patterns)]
                    _ => unreachable!(),
                })
                .unwrap()
                .unwrap();
        }
        assert_eq!(events.lock().unwrap().cached.len(), cached_before, "sql_query was cached after all");
    }

    fn transactional_effects_commit_with_the_finalize(db: &TestDb) {
        create_ledger(db);
        let runner = Runner::builder(db.store.clone())
            .effects(EffectsMode::Transactional)
            .build()
            .unwrap();
        let job = Posting { id: "tx-ok", effects_fail: false };
        assert!(matches!(runner.run(&job), Ok(Report::Succeeded { .. })));
        assert!(matches!(runner.run(&job), Ok(Report::AlreadySucceeded { .. })));
        assert_eq!(ledger_count(db), 1);
        assert_eq!(db.count("state = 'succeeded' AND effects = 'done'"), 1);
    }

    fn transactional_effects_error_rolls_everything_back(db: &TestDb) {
        create_ledger(db);
        let runner = Runner::builder(db.store.clone())
            .effects(EffectsMode::Transactional)
            .build()
            .unwrap();
        let failing = Posting { id: "tx-fail", effects_fail: true };
        assert!(matches!(runner.run(&failing), Err(RunError::EffectsRolledBack { .. })));
        // The ledger row written before the error is gone with the finalize; the key is free.
        assert_eq!(ledger_count(db), 0);
        assert_eq!(db.count("state = 'released'"), 1);
        // The retry commits both.
        let retry = Posting { id: "tx-fail", effects_fail: false };
        assert!(matches!(runner.run(&retry), Ok(Report::Succeeded { attempt: 2, .. })));
        assert_eq!(ledger_count(db), 1);
    }

    fn after_commit_effects_have_no_transaction(db: &TestDb) {
        create_ledger(db);
        let runner = Runner::builder(db.store.clone()).build().unwrap();
        let job = Posting { id: "not-tx", effects_fail: false };
        match runner.run(&job) {
            Err(RunError::EffectsInDoubt { source, .. }) => {
                assert!(source.0.contains("not running inside a finalize transaction"), "{source}");
            }
            other => panic!("expected the effects to fail without a transaction: {other:?}"),
        }
        assert_eq!(ledger_count(db), 0);
    }

    fn a_panicking_hook_never_returns_its_transaction_to_the_pool(db: &TestDb) {
        create_ledger(db);
        // One connection: if the panicked one came back with its transaction open, every later
        // statement would run inside it, invisible to anyone else (and on SQLite, hold the lock).
        let store = db.builder().max_size(1).build().expect("one-connection store");
        let lease = grant(&store, "panicky");
        let mut hook = |tx: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
            let _ = tx;
            panic!("effects blew up");
        };
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            store.finalize_succeeded(&lease, None, TTL, Retention::Forever, Some(&mut hook))
        }));
        assert!(panicked.is_err());
        // Same for a hook that wrote and then failed.
        let lease2 = grant(&store, "failing");
        let mut failing = |tx: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
            let mut ctx_write = |sql: &str| {
                use diesel::connection::SimpleConnection;
                #[cfg(feature = "sqlite")]
                if let Some(c) = tx.downcast_mut::<diesel::SqliteConnection>() { return c.batch_execute(sql) }
                #[cfg(feature = "postgres")]
                if let Some(c) = tx.downcast_mut::<diesel::PgConnection>() { return c.batch_execute(sql) }
                #[cfg(feature = "mysql")]
                if let Some(c) = tx.downcast_mut::<diesel::MysqlConnection>() { return c.batch_execute(sql) }
                panic!("unknown connection type");
            };
            ctx_write("INSERT INTO ledger (entry) VALUES ('failing')").unwrap();
            Err(EffectsAborted)
        };
        assert_eq!(
            store.finalize_succeeded(&lease2, None, TTL, Retention::Forever, Some(&mut failing)).unwrap(),
            Finalized::EffectsAborted
        );
        // Work on through the same one-connection pool, then look from a separate pool.
        let lease3 = grant(&store, "after");
        assert_eq!(store.finalize_succeeded(&lease3, None, TTL, Retention::Forever, None).unwrap(), Finalized::Committed);
        let observer = db.builder().build().expect("observer store");
        let row = |key: &str| observer.get(&KeyDigest::of(key)).unwrap().unwrap();
        assert_eq!(row("after").state, JobState::Succeeded, "later work is committed and visible");
        assert_eq!(row("panicky").state, JobState::Running, "the panicked finalize rolled back");
        assert_eq!(row("failing").state, JobState::Running, "the failed finalize rolled back");
        assert_eq!(ledger_count(db), 0);
    }

    fn a_transaction_left_open_is_discarded_with_its_connection(db: &TestDb) {
        use diesel::connection::{AnsiTransactionManager, TransactionManager};
        let store = db.builder().max_size(1).build().expect("one-connection store");
        // diesel's R2D2Connection::is_broken sees the open transaction when the connection comes
        // back; the manager then drops the connection instead of pooling it.
        store
            .with_connection(|conn| match conn {
                #[cfg(feature = "sqlite")]
                ConnectionRef::Sqlite(c) => AnsiTransactionManager::begin_transaction(*c),
                #[cfg(feature = "postgres")]
                ConnectionRef::Postgres(c) => AnsiTransactionManager::begin_transaction(*c),
                #[cfg(feature = "mysql")]
                ConnectionRef::Mysql(c) => AnsiTransactionManager::begin_transaction(*c),
                #[allow(unreachable_patterns)]
                _ => unreachable!(),
            })
            .unwrap()
            .unwrap();
        let lease = grant(&store, "after-open-tx");
        assert_eq!(store.finalize_succeeded(&lease, None, TTL, Retention::Forever, None).unwrap(), Finalized::Committed);
        let observer = db.builder().build().expect("observer store");
        let row = observer.get(&lease.digest).unwrap().expect("committed, visible elsewhere");
        assert_eq!(row.state, JobState::Succeeded);
    }

    fn relaxed_effects_marks_record_effects_done(db: &TestDb) {
        // Every new connection reports its durability setting to `seen`.
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let report = seen.clone();
        let store = db
            .builder_with(move |conn| {
                if let Some(setting) = durability(conn)? {
                    report.lock().unwrap().push(setting);
                }
                Ok(())
            })
            .relaxed_effects_marks(true)
            .build()
            .expect("relaxed store");
        let runner = Runner::builder(Arc::new(store)).build().unwrap();
        for i in 0..5 {
            assert!(matches!(runner.run(&Noop(i)), Ok(Report::Succeeded { .. })));
        }
        assert_eq!(db.count("state = 'succeeded' AND effects = 'done'"), 5);
        let seen = seen.lock().unwrap();
        match db.backend() {
            BackendKind::Sqlite => {
                assert!(seen.contains(&"2".to_owned()), "a FULL connection for the store: {seen:?}");
                assert!(seen.contains(&"1".to_owned()), "a NORMAL connection for the marks: {seen:?}");
            }
            BackendKind::Postgres => {
                assert!(seen.contains(&"on".to_owned()), "{seen:?}");
                assert!(seen.contains(&"off".to_owned()), "{seen:?}");
            }
            _ => assert!(seen.is_empty()),
        }
    }

    fn an_unknown_state_is_a_corrupt_row_not_a_panic(db: &TestDb) {
        let lease = grant(&*db.store, "corrupt");
        db.execute("UPDATE safe_jobs SET state = 'exploded'");
        let err = db.store.get(&lease.digest).unwrap_err();
        assert!(matches!(&err, StoreError::CorruptRow { digest, detail }
            if lease.digest.to_hex().starts_with(digest.as_str()) && detail.contains("exploded")), "{err}");
        let again = AcquireRequest { digest: lease.digest, fingerprint: None, owner: "w2", ttl: TTL };
        assert!(matches!(db.store.acquire(&again), Err(StoreError::CorruptRow { .. })));
        assert!(matches!(
            db.store.list(&safejob_core::ListQuery::new(safejob_core::ListFilter::All, 10)),
            Err(StoreError::CorruptRow { .. })
        ));
        // Reported, never overwritten.
        assert_eq!(db.count("state = 'exploded'"), 1);
        // A bad result column too.
        db.execute("UPDATE safe_jobs SET state = 'succeeded', result = 'not json'");
        assert!(matches!(db.store.get(&lease.digest), Err(StoreError::CorruptRow { detail, .. }) if detail.contains("JSON")));
    }

    fn a_missing_table_says_how_to_migrate(db: &TestDb) {
        db.execute("DROP TABLE safe_jobs");
        let err = db.store.acquire(&AcquireRequest {
            digest: KeyDigest::of("k"),
            fingerprint: None,
            owner: "w",
            ttl: TTL,
        }).unwrap_err();
        let backend = db.backend().as_str();
        match &err {
            StoreError::MissingTable { hint } => assert_eq!(
                hint,
                &format!("call DieselStore::migrate() or run `diesel migration run --migration-dir migrations/{backend}`")
            ),
            other => panic!("expected MissingTable, got {other:?}"),
        }
        assert!(err.to_string().starts_with("a safejob table is missing; run migrations"));
        assert!(matches!(db.store.get(&KeyDigest::of("k")), Err(StoreError::MissingTable { .. })));
    }

    fn an_exhausted_pool_is_a_typed_error(db: &TestDb) {
        let store = db
            .builder()
            .max_size(1)
            .connection_timeout(Duration::from_millis(200))
            .build()
            .expect("one-connection store");
        // Hold the only connection while asking for another.
        let inner = store.with_connection(|_| store.get(&KeyDigest::of("k"))).unwrap();
        match inner {
            Err(StoreError::PoolExhausted { waited }) => assert_eq!(waited, Duration::from_millis(200)),
            other => panic!("expected PoolExhausted, got {other:?}"),
        }
        // Free again afterwards.
        assert!(store.get(&KeyDigest::of("k")).unwrap().is_none());
    }

    fn debug_names_the_database_without_secrets(db: &TestDb) {
        let shown = format!("{:?}", db.store);
        assert!(shown.contains(db.backend().as_str()) || shown.contains("Sqlite") || shown.contains("Postgres") || shown.contains("Mysql"), "{shown}");
        assert!(shown.contains(db.store.target()), "{shown}");
    }
}

const UNCACHED: &str = "UPDATE safe_jobs SET state = state WHERE fence < 0";

struct Noop(u32);

impl SafeJob for Noop {
    type Error = std::io::Error;
    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["noop", &self.0.to_string()])
    }
    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::done())
    }
}

/// SQLite's `synchronous` or PostgreSQL's `synchronous_commit` on this connection.
fn durability(conn: &mut ConnectionRef<'_>) -> diesel::QueryResult<Option<String>> {
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    let rows: Vec<Setting> = match conn {
        #[cfg(feature = "sqlite")]
        ConnectionRef::Sqlite(c) => diesel::RunQueryDsl::load(
            diesel::sql_query("SELECT CAST(synchronous AS TEXT) AS value FROM pragma_synchronous"),
            *c,
        )?,
        #[cfg(feature = "postgres")]
        ConnectionRef::Postgres(c) => diesel::RunQueryDsl::load(
            diesel::sql_query("SELECT current_setting('synchronous_commit') AS value"),
            *c,
        )?,
        #[allow(unreachable_patterns)]
        _ => return Ok(None),
    };
    Ok(rows.into_iter().next().map(|s| s.value))
}
