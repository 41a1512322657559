//! The test kit's fault proxy between a real store and its database: an ambiguous commit through
//! PostgreSQL and MariaDB (when `SAFEJOB_TEST_POSTGRES_URL` / `SAFEJOB_TEST_MYSQL_URL` are set;
//! `SAFEJOB_REQUIRE_BACKENDS=1` makes a missing database a failure). Built with both server
//! features (`--features postgres,mysql`, as CI's `--all-features`).

#![cfg(all(feature = "postgres", feature = "mysql"))]

/// A guarded run whose finalize connection is cut after the finalize reached the server
/// (PostgreSQL or MariaDB) and before its reply came back: the runner's settle path must find
/// the commit, run the effects once, and a later duplicate must not run them again. Checked from
/// the database.
pub(crate) mod ambiguous_commit {
    use std::sync::Arc;

    use diesel::{MysqlConnection, PgConnection, RunQueryDsl};
    use safejob_core::{
        EffectsContext, EffectsMode, IdempotencyKey, JobState, KeyError, LeaseStore, Outcome,
        PerformContext, Report, Runner, SafeJob,
    };
    use safejob_diesel::{BackendKind, ConnectionRef, DieselStore, TransactionExt};
    use safejob_test_kit::proxy::FaultProxy;

    /// Bound into the finalize statement with the result: the bytes the proxy matches. The
    /// store prepares its statements once per connection, so after the first use only the
    /// statement's name and its parameters go over the wire, never `UPDATE safe_jobs` again.
    pub(crate) const MARKER: &str = "proxy-test-finalize-marker";

    /// Runs `$body` with `$c` bound to the concrete connection of a server backend.
    macro_rules! on_conn {
        ($conn:expr, $c:ident => $body:expr) => {
            match $conn {
                ConnectionRef::Postgres($c) => $body,
                ConnectionRef::Mysql($c) => $body,
                #[allow(unreachable_patterns)]
                _ => unreachable!("a server backend"),
            }
        };
    }

    struct Charge {
        id: u32,
        backend: BackendKind,
        /// Where after-commit effects write (a connection that is not proxied).
        direct: Arc<DieselStore>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    pub(crate) struct JobError(String);

    impl SafeJob for Charge {
        type Error = JobError;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["proxy-test", &self.id.to_string()])
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, JobError> {
            Ok(Outcome::json(serde_json::json!({ "tag": MARKER })))
        }
        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), JobError> {
            record_effect(ctx, self.backend, &self.direct, self.id)
        }
    }

    /// The effect of a charge: a `proxy_effects` row under its fence, written inside the finalize
    /// transaction when there is one, else through `direct` (a connection that is not proxied).
    pub(crate) fn record_effect(
        ctx: &mut EffectsContext<'_>,
        backend: BackendKind,
        direct: &DieselStore,
        id: u32,
    ) -> Result<(), JobError> {
        let sql = format!(
            "INSERT INTO proxy_effects (id, fence) VALUES ({id}, {})",
            ctx.fence()
        );
        let e = |e: &dyn std::fmt::Display| JobError(e.to_string());
        if ctx.is_transactional() {
            match backend {
                BackendKind::Postgres => ctx
                    .diesel_connection::<PgConnection>()
                    .map_err(|x| e(&x))
                    .and_then(|c| diesel::sql_query(&sql).execute(c).map_err(|x| e(&x))),
                _ => ctx
                    .diesel_connection::<MysqlConnection>()
                    .map_err(|x| e(&x))
                    .and_then(|c| diesel::sql_query(&sql).execute(c).map_err(|x| e(&x))),
            }
            .map(drop)
        } else {
            direct
                .with_connection(|c| on_conn!(c, c => diesel::sql_query(&sql).execute(*c)))
                .map_err(|x| e(&x))?
                .map(drop)
                .map_err(|x| e(&x))
        }
    }

    /// How many effect rows the charge `id` wrote.
    pub(crate) fn effects_of(direct: &DieselStore, id: u32) -> i64 {
        let cast = match direct.backend() {
            BackendKind::Postgres => "BIGINT",
            _ => "SIGNED",
        };
        count(
            direct,
            &format!("SELECT CAST(COUNT(*) AS {cast}) AS n FROM proxy_effects WHERE id = {id}"),
        )
    }

    pub(crate) fn count(store: &DieselStore, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let rows: Vec<N> = store
            .with_connection(|c| on_conn!(c, c => diesel::sql_query(sql).load(*c)))
            .expect("connection")
            .expect("query");
        rows[0].n
    }

    /// The test's schema (PostgreSQL) or database (MariaDB), dropped at the end.
    pub(crate) struct Namespace {
        admin: DieselStore,
        drop: String,
    }

    impl Drop for Namespace {
        fn drop(&mut self) {
            let _ = self.admin.with_connection(|c| c.batch_execute(&self.drop));
        }
    }

    /// A test's namespace with its `proxy_effects` table, a store that reaches it directly, and
    /// one that reaches it through a fault proxy.
    pub(crate) struct Setup {
        pub(crate) _namespace: Namespace,
        pub(crate) backend: BackendKind,
        pub(crate) direct: Arc<DieselStore>,
        pub(crate) proxied: Arc<DieselStore>,
        pub(crate) proxy: FaultProxy,
    }

    pub(crate) fn setup(var: &str, tag: &str) -> Option<Setup> {
        let url = safejob_test_kit::backend_url(var)?;
        let admin = DieselStore::connect(&url).expect("connect");
        let backend = admin.backend();
        let mut parsed = url::Url::parse(&url).expect("a URL");
        let host = parsed.host_str().expect("a host").to_owned();
        let port = parsed.port().unwrap_or(match backend {
            BackendKind::Postgres => 5432,
            _ => 3306,
        });
        let target = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .expect("resolve")
            .find(|a| a.ip().is_loopback())
            .expect("the test database must be on the loopback interface");
        let name = format!("sj_proxy_{}_{tag}", std::process::id());

        // The namespace, and how every store of the test reaches it.
        let (create, drop, search_path) = match backend {
            BackendKind::Postgres => (
                format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
                format!("DROP SCHEMA IF EXISTS {name} CASCADE"),
                Some(format!("SET search_path TO {name}")),
            ),
            _ => {
                parsed.set_path(&format!("/{name}"));
                (
                    format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"),
                    format!("DROP DATABASE IF EXISTS {name}"),
                    None,
                )
            }
        };
        admin
            .with_connection(|c| c.batch_execute(&create))
            .expect("connection")
            .expect("create the namespace");
        let namespace = Namespace { admin, drop };
        let builder = |url: &str| {
            let set = search_path.clone();
            DieselStore::builder(url).on_connect(move |c| match &set {
                Some(set) => c.batch_execute(set),
                None => Ok(()),
            })
        };
        let direct = Arc::new(builder(parsed.as_str()).build().expect("direct store"));
        direct.migrate().expect("migrate");
        direct
            .with_connection(|c| {
                c.batch_execute(
                    "CREATE TABLE proxy_effects (id BIGINT NOT NULL, fence BIGINT NOT NULL)",
                )
            })
            .expect("connection")
            .expect("create proxy_effects");

        let proxy = FaultProxy::start(target).expect("proxy");
        let mut via = parsed.clone();
        via.set_host(Some("127.0.0.1")).expect("host");
        via.set_port(Some(proxy.local_addr().port())).expect("port");
        // In clear text, so the proxy can see what is sent (the clients prefer TLS when offered).
        match backend {
            BackendKind::Postgres => via.query_pairs_mut().append_pair("sslmode", "disable"),
            _ => via.query_pairs_mut().append_pair("ssl_mode", "disabled"),
        };
        let proxied = Arc::new(
            builder(via.as_str())
                .build()
                .expect("store through the proxy"),
        );
        Some(Setup {
            _namespace: namespace,
            backend,
            direct,
            proxied,
            proxy,
        })
    }

    fn run(var: &str, mode: EffectsMode) {
        let tx = mode == EffectsMode::Transactional;
        // The namespace is bound first so that it is dropped last, after the stores.
        let Some(Setup {
            _namespace,
            backend,
            direct,
            proxied,
            proxy,
        }) = setup(var, if tx { "tx" } else { "ac" })
        else {
            return;
        };
        let runner = Runner::builder(proxied.clone())
            .effects(mode)
            .build()
            .expect("runner");

        // Warm up: one job end to end, so the finalize statement is already prepared on the
        // connection and only its parameters go over the wire next time.
        let job = |id| Charge {
            id,
            backend,
            direct: direct.clone(),
        };
        assert!(matches!(
            runner.run(&job(1)).expect("warm-up run"),
            Report::Succeeded { .. }
        ));

        // What is sent: the autocommit UPDATE carries the marker among its parameters; the
        // transaction's COMMIT is a simple query, NUL-terminated on PostgreSQL and preceded by
        // the COM_QUERY byte on MySQL (so `READ COMMITTED` in the connection setup never matches).
        let pattern: Vec<u8> = match (tx, backend) {
            (false, _) => MARKER.as_bytes().to_vec(),
            (true, BackendKind::Postgres) => b"COMMIT\0".to_vec(),
            (true, _) => b"\x03COMMIT".to_vec(),
        };
        proxy.cut_after_match(pattern);
        let report = runner
            .run(&job(2))
            .expect("the ambiguous finalize is resolved");
        assert!(
            matches!(report, Report::Succeeded { .. }),
            "the commit happened, so this run won: {report:?}"
        );
        assert_eq!(
            proxy.stats().ambiguous_cuts,
            1,
            "the finalize connection was cut after the statement reached the server"
        );
        let row = direct
            .get(job(2).key().expect("key").digest())
            .expect("get")
            .expect("row");
        assert_eq!(row.state, JobState::Succeeded);
        assert_eq!(row.fence, 1, "one attempt, no takeover");
        assert_eq!(effects_of(&direct, 2), 1);

        // A duplicate replays; the effects stay at one.
        assert!(matches!(
            runner.run(&job(2)).expect("duplicate"),
            Report::AlreadySucceeded { .. }
        ));
        assert_eq!(effects_of(&direct, 2), 1);
        let done = match backend {
            BackendKind::Postgres => "BIGINT",
            _ => "SIGNED",
        };
        assert_eq!(
            count(
                &direct,
                &format!(
                    "SELECT CAST(COUNT(*) AS {done}) AS n FROM safe_jobs \
                     WHERE state = 'succeeded' AND effects = 'done'"
                )
            ),
            2
        );
    }

    #[test]
    fn postgres_after_commit_finalize_cut_after_the_update_was_sent() {
        run("SAFEJOB_TEST_POSTGRES_URL", EffectsMode::AfterCommit);
    }

    #[test]
    fn postgres_transactional_finalize_cut_after_commit_was_sent() {
        run("SAFEJOB_TEST_POSTGRES_URL", EffectsMode::Transactional);
    }

    #[test]
    fn mariadb_after_commit_finalize_cut_after_the_update_was_sent() {
        run("SAFEJOB_TEST_MYSQL_URL", EffectsMode::AfterCommit);
    }

    #[test]
    fn mariadb_transactional_finalize_cut_after_commit_was_sent() {
        run("SAFEJOB_TEST_MYSQL_URL", EffectsMode::Transactional);
    }
}

/// The same cut under the queue: a guarded queued job whose completion (the job's `succeeded`
/// and the guard's finalize) reaches the server and loses its reply. The worker settles it as the
/// Runner does (fenced release, re-read under its fence): it finds the commit, runs after-commit
/// effects once (transactional ones committed with it), reports the job succeeded and leaves no
/// effects in doubt; a duplicate runs nothing. Before the pipeline was one, the queue did not
/// settle: the cut left the job to the reaper and the key effects-pending, in doubt for an
/// operator once its window passed, with the effects never run.
mod queue_completion_cut {
    use std::{
        collections::BTreeMap,
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
    };

    use safejob_core::{
        EffectsContext, EffectsMode, IdempotencyKey, JobState, KeyError, LeaseStore, Outcome,
        PerformContext, SafeJob,
        queue::{EnqueueOptions, GuardedJob, Queue, QueueState, Ran, Registry, Worker},
        store::EffectsState,
    };
    use safejob_diesel::{BackendKind, DieselStore, queue::DieselQueue};
    use safejob_test_kit::proxy::FaultProxy;
    use serde::{Deserialize, Serialize};

    use super::ambiguous_commit::{JobError, MARKER, Setup, effects_of, record_effect, setup};

    /// What a queued job reaches by its test's name: the direct store its after-commit effects
    /// write through, and the proxy its first `perform` arms.
    struct Scene {
        backend: BackendKind,
        direct: Arc<DieselStore>,
        proxy: Arc<FaultProxy>,
        pattern: Vec<u8>,
        armed: AtomicBool,
    }

    static SCENES: Mutex<BTreeMap<String, Arc<Scene>>> = Mutex::new(BTreeMap::new());

    fn scene(name: &str) -> Arc<Scene> {
        SCENES.lock().unwrap()[name].clone()
    }

    #[derive(Serialize, Deserialize)]
    struct QueuedCharge {
        scene: String,
        id: u32,
        /// Whether `perform` arms the proxy (the job under test, not the warm-up).
        cut: bool,
    }

    impl SafeJob for QueuedCharge {
        type Error = JobError;
        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["proxy-queue-test", &self.id.to_string()])
        }
        fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, JobError> {
            let scene = scene(&self.scene);
            // Between the claim and the completion: the next match is the completion's.
            if self.cut && !scene.armed.swap(true, Ordering::SeqCst) {
                scene.proxy.cut_after_match(scene.pattern.clone());
            }
            Ok(Outcome::json(serde_json::json!({ "tag": MARKER })))
        }
        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), JobError> {
            let scene = scene(&self.scene);
            record_effect(ctx, scene.backend, &scene.direct, self.id)
        }
    }

    impl GuardedJob for QueuedCharge {
        const KIND: &'static str = "proxy_queued_charge";
    }

    fn run(var: &str, mode: EffectsMode) {
        let tx = mode == EffectsMode::Transactional;
        let tag = if tx { "qtx" } else { "qac" };
        let Some(Setup {
            _namespace,
            backend,
            direct,
            proxied,
            proxy,
        }) = setup(var, tag)
        else {
            return;
        };
        // What the completion sends last: PostgreSQL completes a guarded success without a
        // hook in one statement in autocommit, carrying the result (the marker) as a parameter;
        // with a hook, and on MariaDB always, it is a transaction ending in COMMIT.
        let pattern: Vec<u8> = match (tx, backend) {
            (false, BackendKind::Postgres) => MARKER.as_bytes().to_vec(),
            (_, BackendKind::Postgres) => b"COMMIT\0".to_vec(),
            (_, _) => b"\x03COMMIT".to_vec(),
        };
        let name = format!("{var}-{tag}");
        let proxy = Arc::new(proxy);
        SCENES.lock().unwrap().insert(
            name.clone(),
            Arc::new(Scene {
                backend,
                direct: direct.clone(),
                proxy: proxy.clone(),
                pattern,
                armed: AtomicBool::new(false),
            }),
        );
        let queue = Arc::new(DieselQueue::new(proxied));
        let client = Queue::new(queue.clone());
        let mut registry = Registry::new();
        registry.register_guarded::<QueuedCharge>();
        let worker = Worker::builder(queue.clone(), registry)
            .effects(mode)
            .build()
            .expect("worker");
        let job = |id, cut| QueuedCharge {
            scene: name.clone(),
            id,
            cut,
        };
        let run_one = |charge: &QueuedCharge| {
            client
                .enqueue_guarded(charge, &EnqueueOptions::new())
                .expect("enqueue");
            let worked = worker.run_once().expect("run");
            assert_eq!(worked.len(), 1);
            worked.into_iter().next().unwrap()
        };
        // Warm up: statements prepared on the proxied connections.
        assert!(matches!(run_one(&job(1, false)).ran, Ran::Succeeded));

        let worked = run_one(&job(2, true));
        assert_eq!(
            proxy.stats().ambiguous_cuts,
            1,
            "the completion was cut after it was sent"
        );
        assert!(matches!(worked.ran, Ran::Succeeded), "{:?}", worked.ran);
        let plain = Queue::new(Arc::new(DieselQueue::new(direct.clone())));
        let row = plain.get(worked.id).expect("get").expect("the job");
        assert_eq!(row.state, QueueState::Succeeded);
        let guard = direct
            .get(job(2, false).key().expect("key").digest())
            .expect("get")
            .expect("the guard row");
        assert_eq!(
            (guard.state, guard.fence, guard.effects),
            (JobState::Succeeded, 1, EffectsState::Done),
            "settled, effects done, nothing in doubt: {guard:?}"
        );
        assert_eq!(effects_of(&direct, 2), 1);

        // A duplicate (the same payload: its fingerprint must match) completes without running
        // anything; the proxy is armed once per test, so it is not cut again.
        assert!(matches!(run_one(&job(2, true)).ran, Ran::Succeeded));
        assert_eq!(effects_of(&direct, 2), 1);
        SCENES.lock().unwrap().remove(&name);
    }

    #[test]
    fn postgres_after_commit_completion_cut_after_it_was_sent() {
        run("SAFEJOB_TEST_POSTGRES_URL", EffectsMode::AfterCommit);
    }

    #[test]
    fn postgres_transactional_completion_cut_after_commit_was_sent() {
        run("SAFEJOB_TEST_POSTGRES_URL", EffectsMode::Transactional);
    }

    #[test]
    fn mariadb_after_commit_completion_cut_after_commit_was_sent() {
        run("SAFEJOB_TEST_MYSQL_URL", EffectsMode::AfterCommit);
    }

    #[test]
    fn mariadb_transactional_completion_cut_after_commit_was_sent() {
        run("SAFEJOB_TEST_MYSQL_URL", EffectsMode::Transactional);
    }
}
