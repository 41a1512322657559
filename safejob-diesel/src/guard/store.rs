//! [`DieselStore`]: one store type for every backend, chosen at run time from the URL.

use std::{
    fmt,
    num::NonZeroUsize,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use safejob_core::{
    FinalFailure, KeyDigest, Retention,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized,
        FinishRequest, JobRecord, Lease, LeaseStore, ListQuery, Renewed, StoreError, TxEffects,
    },
};
use serde_json::Value;

use super::{
    group::{DEFAULT_MAX_GROUP, GroupCommit, GroupCommitStats},
    ops::{Ctx, FinalizeEffects},
    sql::Statements,
};
use crate::{
    backend::{
        BackendKind, DbConnection,
        pool::{
            ConnectFailure, ConnectionRef, Manager, Pool, PoolOptions, Pools, SetupHook,
            SqliteSynchronous, TracingErrors, with_conn,
        },
        url::DatabaseUrl,
    },
    error::{ConnectError, ErrorContext},
};

/// A [`LeaseStore`] on SQLite, PostgreSQL or MySQL/MariaDB through diesel and an r2d2 pool.
///
/// Cheap to share: wrap it in an `Arc` and hand it to any number of runners and threads.
/// `Debug` shows the backend, host and database, never the password.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("jobs.db");
/// use std::time::Duration;
/// use safejob_diesel::DieselStore;
///
/// let store = DieselStore::builder(&format!("sqlite://{}", path.display()))
///     .max_size(4)
///     .connection_timeout(Duration::from_secs(2))
///     .build()?;
/// store.migrate()?;
/// # Ok(()) }
/// ```
pub struct DieselStore {
    pub(crate) pools: Pools,
    kind: BackendKind,
    /// The statements, and the test clock offset (µs) they were rendered with.
    sql: RwLock<(i64, Arc<Statements>)>,
    errors: ErrorContext,
    connection_timeout: Duration,
    /// The coalescers of group commit; `None` when the builder turned it off.
    group: Option<GroupCommit>,
}

impl fmt::Debug for DieselStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselStore")
            .field("backend", &self.kind)
            .field("target", &self.errors.target)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DieselStore`] with pool and connection options.
///
/// Defaults: 10 connections at most, 1 kept idle, 10 s to wait for a free connection, idle
/// connections closed after 10 min and every connection after 30 min, no test query on check-out
/// (it would double the round trips of every primitive; a connection that failed is discarded
/// when it comes back instead), a 30 s lock timeout on PostgreSQL and MySQL, SQLite
/// `busy_timeout` 30 s and `synchronous=FULL`.
#[must_use]
pub struct DieselStoreBuilder {
    url: String,
    options: PoolOptions,
    /// `None`: the backend's default.
    group_commit: Option<bool>,
    max_group: NonZeroUsize,
}

impl fmt::Debug for DieselStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DieselStoreBuilder").finish_non_exhaustive()
    }
}

impl DieselStoreBuilder {
    /// Group commit for the guard: concurrent acquires through this store (every `Runner`
    /// sharing it, on any thread) are written together, one commit for the group, and so are
    /// their finalizes and releases. Defaults to on for SQLite and off for PostgreSQL and
    /// MySQL/MariaDB, as measured (docs/BENCHMARKS.md, "Runner group commit (issue #18)"):
    /// SQLite commits one writer at a time, so sharing a commit multiplied the throughput at 4
    /// threads; PostgreSQL and MariaDB already share one log flush among concurrent commits, and
    /// there a group written by one thread at a time was slower than the threads' own commits.
    ///
    /// Leader and follower, no timer: a call that finds no group being written writes at once,
    /// alone, as the single autocommit statement it is without group commit; calls that arrive
    /// while a group is being written wait for it and form the next one. So a lone job pays
    /// nothing, and under load a group grows with the threads waiting on the disk flush. Every
    /// key is answered on its own, with exactly the answer it gets alone (granted, busy,
    /// replayed, key conflict; committed or stale); a statement that fails rolls the group back
    /// and its keys are written one by one; a COMMIT whose outcome is lost is settled per key by
    /// fence, as for a single finalize. A finalize with transactional effects (its hook runs
    /// inside the finalize transaction) is never grouped.
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = Some(on);
        self
    }

    /// The most keys one group commit writes. Defaults to [`DEFAULT_MAX_GROUP`] (64).
    pub fn max_group(mut self, max: NonZeroUsize) -> Self {
        self.max_group = max;
        self
    }

    /// The most connections the pool opens. Defaults to 10.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.options.max_size = max_size;
        self
    }

    /// How many idle connections the pool keeps open. Defaults to 1.
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.options.min_idle = Some(min_idle);
        self
    }

    /// How long a primitive waits for a free connection before `StoreError::PoolExhausted`.
    /// Defaults to 10 seconds.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.options.connection_timeout = timeout;
        self
    }

    /// Close connections idle this long (`None`: never). Defaults to 10 minutes.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.idle_timeout = timeout;
        self
    }

    /// Close connections this old (`None`: never). Defaults to 30 minutes.
    pub fn max_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.options.max_lifetime = lifetime;
        self
    }

    /// Run a test query on every check-out. Defaults to `false`: it costs a round trip per
    /// primitive, and connections that failed are already discarded when they come back.
    pub fn test_on_check_out(mut self, test: bool) -> Self {
        self.options.test_on_check_out = test;
        self
    }

    /// SQLite: how long a writer waits for the write lock. Defaults to 30 seconds: SQLite's busy
    /// handler polls rather than queues, so with several writer threads one can be passed over
    /// for seconds (5 s was measured to fail 4 threads hammering one file).
    pub fn sqlite_busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.busy_timeout = timeout;
        self
    }

    /// PostgreSQL and MySQL / MariaDB: how long a statement waits for a row lock before it fails
    /// (PostgreSQL `lock_timeout`, MySQL `innodb_lock_wait_timeout`, in whole seconds there);
    /// `None` keeps the server's setting (PostgreSQL: wait forever; MySQL: 50 s). Defaults to
    /// 30 seconds. SQLite waits for its write lock as [`sqlite_busy_timeout`] says.
    ///
    /// Row locks are held for milliseconds in normal operation. The timeout is for the session
    /// that holds one and will never finish: a connection cut during COMMIT can stay half-open on
    /// the server until TCP keepalive notices (hours by default), and until then the runner's
    /// settling release and every acquire of that key would wait. With the timeout they fail and
    /// are retried later; the key's lease still expires as usual. It applies to the statements of
    /// a transactional effects hook too: a hook that waits longer for a lock fails its attempt.
    /// A MySQL lock-wait timeout is retried like a deadlock (up to 6 times), so a blocked
    /// statement there fails after about 7 × the timeout.
    ///
    /// [`sqlite_busy_timeout`]: DieselStoreBuilder::sqlite_busy_timeout
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.lock_timeout = timeout;
        self
    }

    /// SQLite: the `synchronous` pragma. Defaults to [`SqliteSynchronous::Full`]; see
    /// [`SqliteSynchronous::Normal`] for what opting out costs.
    pub fn sqlite_synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.options.synchronous = synchronous;
        self
    }

    /// Records "effects done" (`finish_effects`) without waiting for the disk. Defaults to
    /// `false`.
    ///
    /// With after-commit effects every job costs three durable commits: acquire, finalize and the
    /// effects mark. Opting in makes the third one cheap: it goes through a second pool whose
    /// connections commit asynchronously (PostgreSQL `synchronous_commit = off`, SQLite
    /// `synchronous = NORMAL` in WAL). The acquire and the finalize stay fully durable, so
    /// at-most-once success is untouched. What a crash of the database server (or, on SQLite,
    /// of the machine) can lose is only the last moments of effects marks: those keys read
    /// `pending` again, and once their effects window passes they are listed effects-in-doubt —
    /// a false alarm an operator resolves with `confirm_effects`, never an automatic re-run.
    /// MySQL and MariaDB have no per-session durability setting, so there it changes nothing.
    pub fn relaxed_effects_marks(mut self, relaxed: bool) -> Self {
        self.options.relaxed_effects_marks = relaxed;
        self
    }

    /// Runs `setup` on every new connection, after the store's own setup: set a PostgreSQL
    /// `search_path`, a MySQL session variable, a SQLite pragma.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    /// use safejob_diesel::DieselStore;
    ///
    /// let store = DieselStore::builder(&url)
    ///     .on_connect(|conn| conn.batch_execute("PRAGMA cache_size = -8000"))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn on_connect(
        mut self,
        setup: impl Fn(&mut ConnectionRef<'_>) -> diesel::QueryResult<()> + Send + Sync + 'static,
    ) -> Self {
        let hook: SetupHook = Arc::new(setup);
        self.options.setup = Some(hook);
        self
    }

    /// Parses the URL, opens one connection (so an unreachable database or a failing setup is
    /// reported now, with its cause) and builds the pool.
    pub fn build(self) -> Result<DieselStore, ConnectError> {
        let url = DatabaseUrl::parse(&self.url)?;
        let options = self.options;
        if options.max_size == 0 || options.min_idle.is_some_and(|m| m > options.max_size) {
            return Err(ConnectError::InvalidPool {
                reason: format!(
                    "max_size must be at least 1 and min_idle at most max_size (got {} and {:?})",
                    options.max_size, options.min_idle
                ),
            });
        }
        let errors = ErrorContext {
            target: url.display.clone(),
            hint: url.migrate_hint(),
            secrets: url.secrets.clone(),
        };
        let connection_timeout = options.connection_timeout;
        let pools = match url.kind {
            #[cfg(feature = "sqlite")]
            BackendKind::Sqlite => {
                let (main, _) = pool::<diesel::SqliteConnection>(&url, &options)?;
                let marks = relaxed_pool::<diesel::SqliteConnection>(&url, &options)?;
                Pools::Sqlite(main, marks)
            }
            #[cfg(feature = "postgres")]
            BackendKind::Postgres => {
                let (main, _) = pool::<diesel::PgConnection>(&url, &options)?;
                let marks = relaxed_pool::<diesel::PgConnection>(&url, &options)?;
                Pools::Postgres(main, marks)
            }
            #[cfg(feature = "mysql")]
            BackendKind::Mysql => {
                let (pool, _) = pool::<diesel::MysqlConnection>(&url, &options)?;
                Pools::Mysql(pool)
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(ConnectError::BackendNotCompiled {
                    backend: other.as_str(),
                    feature: other.as_str(),
                });
            }
        };
        Ok(DieselStore {
            pools,
            kind: url.kind,
            sql: RwLock::new((0, Arc::new(Statements::render(url.kind, 0)))),
            errors,
            connection_timeout,
            group: self
                .group_commit
                .unwrap_or(url.kind == BackendKind::Sqlite)
                .then(|| GroupCommit::new(self.max_group)),
        })
    }
}

/// The second pool for effects marks, if the builder opted in.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn relaxed_pool<C: DbConnection>(
    url: &DatabaseUrl,
    options: &PoolOptions,
) -> Result<Option<Pool<C>>, ConnectError> {
    if !options.relaxed_effects_marks {
        return Ok(None);
    }
    let relaxed = PoolOptions {
        relaxed_session: true,
        min_idle: Some(0),
        ..options.clone()
    };
    Ok(Some(pool::<C>(url, &relaxed)?.0))
}

/// Opens one connection directly (for a precise error), then builds the pool without waiting.
fn pool<C: DbConnection>(
    url: &DatabaseUrl,
    options: &PoolOptions,
) -> Result<(Pool<C>, C), ConnectError> {
    let manager = Manager::<C>::new(
        url.connect.clone(),
        url.display.clone(),
        url.secrets.clone(),
        options.clone(),
    );
    let first = manager.open().map_err(|e| match e {
        ConnectFailure::Connect(source) => ConnectError::Unreachable {
            target: manager.target().to_owned(),
            source,
        },
        ConnectFailure::Setup(source) => ConnectError::Setup {
            target: manager.target().to_owned(),
            source,
        },
    })?;
    let pool = r2d2::Pool::builder()
        .max_size(options.max_size)
        .min_idle(options.min_idle)
        .connection_timeout(options.connection_timeout)
        .idle_timeout(options.idle_timeout)
        .max_lifetime(options.max_lifetime)
        .test_on_check_out(options.test_on_check_out)
        .error_handler(Box::new(TracingErrors))
        .build_unchecked(manager);
    Ok((pool, first))
}

impl DieselStore {
    /// A store on `url` with the default pool options; see [`DieselStore::builder`].
    ///
    /// URLs: `sqlite://path/to/file.db` (`sqlite:///absolute/path.db`), `postgres://…` or
    /// `postgresql://…`, `mysql://…` or `mariadb://…`. In-memory SQLite is refused: each pooled
    /// connection would see its own empty database.
    pub fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::builder(url).build()
    }

    /// A builder for a store on `url`.
    pub fn builder(url: &str) -> DieselStoreBuilder {
        DieselStoreBuilder {
            url: url.to_owned(),
            options: PoolOptions::default(),
            group_commit: None,
            max_group: DEFAULT_MAX_GROUP,
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// The store's database as messages show it: backend, user, host, port and database,
    /// never the password.
    pub fn target(&self) -> &str {
        &self.errors.target
    }

    /// How much grouping group commit did so far; `None` when it is off.
    pub fn group_stats(&self) -> Option<GroupCommitStats> {
        self.group.as_ref().map(GroupCommit::stats)
    }

    /// Makes the next group of two or more finalizes panic in the thread writing it, right
    /// after it committed and before its answers reach their threads: a crash between group
    /// commit and acknowledgement. A testing aid (`test-util` feature) for the conformance case
    /// `safejob_test_kit::conformance::crash_between_group_commit_and_answers`. Returns `false`
    /// (and arms nothing) when group commit is off.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn crash_after_next_group_commit_for_tests(&self) -> bool {
        self.group.as_ref().is_some_and(|g| {
            g.crash_armed
                .store(true, std::sync::atomic::Ordering::SeqCst);
            true
        })
    }

    /// How many groups [`crash_after_next_group_commit_for_tests`] crashed so far.
    ///
    /// [`crash_after_next_group_commit_for_tests`]: DieselStore::crash_after_next_group_commit_for_tests
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn group_crashes_for_tests(&self) -> u64 {
        self.group
            .as_ref()
            .map_or(0, |g| g.crashes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// A group of acquires written now, on one connection (no coalescing). If no connection can
    /// be had, each request is tried alone, so each gets its own error.
    fn write_acquires(&self, reqs: &[AcquireRequest<'_>]) -> Vec<Result<Acquired, StoreError>> {
        let ctx = self.ctx();
        let grouped = || -> Result<_, StoreError> {
            with_conn!(self, conn => Ok(ctx.acquire_many(conn, reqs)))
        };
        grouped().unwrap_or_else(|_| reqs.iter().map(|r| self.acquire_alone(r)).collect())
    }

    /// A group of finalizes written now, on one connection (no coalescing).
    fn write_finishes(
        &self,
        finishes: &[FinishRequest<'_>],
    ) -> Vec<Result<FenceCheck, StoreError>> {
        let ctx = self.ctx();
        let grouped = || -> Result<_, StoreError> {
            with_conn!(self, conn => Ok(ctx.finalize_many(conn, finishes)))
        };
        grouped().unwrap_or_else(|_| finishes.iter().map(|f| self.finish_alone(f)).collect())
    }

    fn acquire_alone(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.acquire(conn, req))
    }

    fn finish_alone(&self, finish: &FinishRequest<'_>) -> Result<FenceCheck, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.finish_one(conn, finish))
    }

    /// `finish` through group commit when it is on, else alone.
    fn finish(&self, finish: &FinishRequest<'_>) -> Result<FenceCheck, StoreError> {
        match &self.group {
            Some(group) => group.finish(finish, |group| self.write_finishes(group)),
            None => self.finish_alone(finish),
        }
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        let sql = self
            .sql
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone();
        Ctx {
            sql,
            errors: &self.errors,
        }
    }

    pub(crate) fn checkout<C: DbConnection>(
        &self,
        pool: &Pool<C>,
    ) -> Result<r2d2::PooledConnection<Manager<C>>, StoreError> {
        pool.get().map_err(|e| {
            // r2d2 appends the last connection error, if there was one, after a colon.
            let text = e.to_string();
            match text.split_once(": ") {
                Some((_, cause)) => StoreError::Unreachable {
                    target: self.errors.target.clone(),
                    source: Box::new(self.errors.secrets.scrub(cause)),
                },
                None => StoreError::PoolExhausted {
                    waited: self.connection_timeout,
                },
            }
        })
    }

    /// Runs `f` on one of the store's pooled connections: for the statements of your own that
    /// belong next to the store (a baseline benchmark, an operator query). If `f` panics, or
    /// leaves a transaction begun through diesel (`Connection::transaction`) open, the connection
    /// is discarded rather than pooled. A transaction begun with raw SQL (`BEGIN`) is invisible
    /// to diesel: never leave one open.
    pub fn with_connection<R>(
        &self,
        f: impl FnOnce(&mut ConnectionRef<'_>) -> R,
    ) -> Result<R, StoreError> {
        with_conn!(self, conn => Ok(f(&mut conn.conn.as_ref())))
    }

    /// Makes `by` pass on this store's clock: from now on every statement of this store reads
    /// the database clock plus the total advanced so far. A testing aid (the database's own clock
    /// cannot be moved, and nothing should sleep to let a lease expire); it affects this
    /// `DieselStore` only, not other stores or processes on the same database. Only with the
    /// `test-util` feature, which production builds leave off: there the clock is the
    /// database's, unchanged. [`testing::TestDb`](crate::testing::TestDb) calls it when a test
    /// harness advances time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use safejob_core::LeaseStore;
    /// use safejob_diesel::testing::TestDb;
    ///
    /// let db = TestDb::sqlite()?;
    /// let before = db.store().now()?;
    /// db.store().advance_clock_for_tests(Duration::from_secs(3600));
    /// let moved = db.store().now()? - before;
    /// assert!(moved >= chrono::Duration::seconds(3600));
    /// assert!(moved < chrono::Duration::seconds(3660));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn advance_clock_for_tests(&self, by: Duration) {
        let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        let mut sql = self.sql.write().unwrap_or_else(PoisonError::into_inner);
        let offset = sql.0.saturating_add(by);
        *sql = (offset, Arc::new(Statements::render(self.kind, offset)));
    }
}

impl LeaseStore for DieselStore {
    fn now(&self) -> Result<DateTime<Utc>, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.now(conn))
    }

    fn acquire(&self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        match &self.group {
            Some(group) => group.acquire(req, |group| self.write_acquires(group)),
            None => self.acquire_alone(req),
        }
    }

    fn acquire_many(&self, reqs: &[AcquireRequest<'_>]) -> Vec<Result<Acquired, StoreError>> {
        self.write_acquires(reqs)
    }

    fn finalize_many(&self, finishes: &[FinishRequest<'_>]) -> Vec<Result<FenceCheck, StoreError>> {
        self.write_finishes(finishes)
    }

    fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Renewed, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.renew(conn, lease, ttl))
    }

    fn finalize_succeeded(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
        hook: Option<&mut TxEffects<'_>>,
    ) -> Result<Finalized, StoreError> {
        let Some(hook) = hook else {
            return self
                .finish(&FinishRequest::Succeeded {
                    lease,
                    result,
                    effects_ttl,
                    retention,
                    effects_pending: true,
                })
                .map(finalized);
        };
        let ctx = self.ctx();
        let effects = FinalizeEffects::Transactional(hook);
        with_conn!(self, conn => ctx.finalize_succeeded(conn, lease, result, effects_ttl, retention, effects))
    }

    fn finalize_succeeded_without_effects(
        &self,
        lease: &Lease,
        result: Option<&Value>,
        effects_ttl: Duration,
        retention: Retention,
    ) -> Result<Finalized, StoreError> {
        self.finish(&FinishRequest::Succeeded {
            lease,
            result,
            effects_ttl,
            retention,
            effects_pending: false,
        })
        .map(finalized)
    }

    fn finalize_failed(
        &self,
        lease: &Lease,
        failure: &FinalFailure,
        retention: Retention,
    ) -> Result<FenceCheck, StoreError> {
        self.finish(&FinishRequest::Failed {
            lease,
            failure,
            retention,
        })
    }

    fn release(&self, lease: &Lease, error: Option<&str>) -> Result<FenceCheck, StoreError> {
        self.finish(&FinishRequest::Release { lease, error })
    }

    fn finish_effects(
        &self,
        lease: &Lease,
        outcome: EffectsOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, marks conn => ctx.finish_effects(conn, lease, outcome))
    }

    fn claim_effects(&self, req: &AcquireRequest<'_>) -> Result<EffectsClaim, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.claim_effects(conn, req))
    }

    fn get(&self, digest: &KeyDigest) -> Result<Option<JobRecord>, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.get(conn, digest))
    }

    fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.list(conn, query))
    }

    fn prune(&self, limit: usize) -> Result<u64, StoreError> {
        let ctx = self.ctx();
        with_conn!(self, conn => ctx.prune(conn, limit))
    }
}

/// A grouped finalize's answer as the single-key primitive gives it.
fn finalized(check: FenceCheck) -> Finalized {
    match check {
        FenceCheck::Applied => Finalized::Committed,
        FenceCheck::Stale => Finalized::Stale,
    }
}
