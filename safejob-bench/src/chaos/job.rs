//! The job every worker runs, and the effects modes it can be checked in.

use std::{sync::Mutex, thread, time::Duration};

use chrono::{DateTime, Utc};

use safejob_core::{
    EffectsContext, EffectsMode, IdempotencyKey, KeyError, Outcome, PerformContext, SafeJob,
};
use safejob_diesel::{BackendKind, DieselStore, TransactionExt};

use super::db;

/// Bound into the finalize statement with the job's result, so the fault proxy can recognise
/// an after-commit finalize on the wire. The store prepares its statements once per connection:
/// after the first use only the statement's name and its parameters are sent, never the text
/// `UPDATE safe_jobs`, so the marker travels in the parameters.
pub const FINALIZE_MARKER: &str = "safejob-torture-finalize-marker";

/// How `on_succeeded_once` writes its effect row, and so what the checker may expect.
///
/// Extension point: a new mode (the outbox) adds a variant here, its write in
/// [`EffectsKind::write_effect`], its runner mode in [`EffectsKind::runner_mode`], the bytes the
/// proxy cuts on in [`EffectsKind::ambiguous_pattern`], and its checks in
/// `check::check` (search for `EffectsKind::`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EffectsKind {
    /// After the finalize committed, as a statement of its own on the harness connection. A
    /// crash in between leaves the key effects-in-doubt: listed, never silently lost.
    AfterCommit,
    /// Inside the finalize transaction, on its connection: commits with `succeeded` or not at all.
    Transactional,
    /// As `Transactional`, plus outbox messages emitted in the same transaction and delivered by
    /// relays running in the workers (see [`super::outbox`]).
    Outbox,
    /// None: the job declares no effects (`SafeJob::has_effects` is false), so the finalize
    /// records them `done` in its one autocommit statement and `on_succeeded_once` is never
    /// called. The checker requires no effect row, effects `done` and nothing in doubt.
    None,
}

impl EffectsKind {
    /// The name on the command line and in the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AfterCommit => "after-commit",
            Self::Transactional => "transactional",
            Self::Outbox => "outbox",
            Self::None => "none",
        }
    }

    /// The runner's mode.
    pub fn runner_mode(self) -> EffectsMode {
        match self {
            Self::AfterCommit | Self::None => EffectsMode::AfterCommit,
            Self::Transactional | Self::Outbox => EffectsMode::Transactional,
        }
    }

    /// Whether a crash may leave effects in doubt in this mode.
    pub fn may_be_in_doubt(self) -> bool {
        matches!(self, Self::AfterCommit)
    }

    /// What the proxy matches to cut a connection after the commit was sent: the finalize's own
    /// `UPDATE` in autocommit, recognised by the marker in its parameters (after-commit, none), or the
    /// `COMMIT` of the finalize transaction, the only transaction the store opens
    /// (transactional). `COMMIT` is matched with what frames it on the wire — PostgreSQL's simple
    /// query ends it with a NUL, MySQL's `COM_QUERY` starts it with the command byte 0x03 — so
    /// that `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`, which every new MySQL
    /// connection of the store sends, does not match.
    pub fn ambiguous_pattern(self, backend: BackendKind) -> Vec<u8> {
        match (self, backend) {
            (Self::AfterCommit | Self::None, _) => FINALIZE_MARKER.as_bytes().to_vec(),
            (Self::Transactional | Self::Outbox, BackendKind::Mysql) => b"\x03COMMIT".to_vec(),
            (Self::Transactional | Self::Outbox, _) => b"COMMIT\0".to_vec(),
        }
    }

    /// Writes the effect row for `key_no`, won by `ctx.fence()`.
    pub fn write_effect(
        self,
        ctx: &mut EffectsContext<'_>,
        harness: &DieselStore,
        key_no: u64,
        worker: &str,
    ) -> Result<(), JobError> {
        let sql = format!(
            "INSERT INTO torture_effect (key_no, fence, worker) VALUES ({}, {}, '{worker}')",
            db::key_no(key_no),
            ctx.fence()
        );
        match self {
            // None: only a job that wrongly declares effects gets here (`Sabotage::DeclareEffects`);
            // its row shows the checker an effect that should not exist.
            Self::AfterCommit | Self::None => db::exec(harness, &sql).map(drop).map_err(JobError),
            Self::Transactional => in_transaction(ctx, harness.backend(), &sql),
            Self::Outbox => {
                in_transaction(ctx, harness.backend(), &sql)?;
                super::outbox::emit(ctx, key_no)
            }
        }
    }
}

/// Runs `sql` on the finalize transaction's connection.
fn in_transaction(
    ctx: &mut EffectsContext<'_>,
    kind: BackendKind,
    sql: &str,
) -> Result<(), JobError> {
    fn on<C: diesel::Connection + 'static>(
        ctx: &mut EffectsContext<'_>,
        sql: &str,
    ) -> Result<(), JobError>
    where
        diesel::query_builder::SqlQuery: diesel::query_dsl::methods::ExecuteDsl<C>,
    {
        let conn = ctx
            .diesel_connection::<C>()
            .map_err(|e| JobError(e.to_string()))?;
        diesel::RunQueryDsl::execute(diesel::sql_query(sql), conn)
            .map(drop)
            .map_err(|e| JobError(e.to_string()))
    }
    match kind {
        #[cfg(feature = "sqlite")]
        BackendKind::Sqlite => on::<diesel::SqliteConnection>(ctx, sql),
        #[cfg(feature = "postgres")]
        BackendKind::Postgres => on::<diesel::PgConnection>(ctx, sql),
        #[cfg(feature = "mysql")]
        BackendKind::Mysql => on::<diesel::MysqlConnection>(ctx, sql),
        #[allow(unreachable_patterns)]
        other => Err(JobError(format!("backend {other:?} is not compiled in"))),
    }
}

/// A job step failed (a harness statement, usually because the nemesis cut the connection).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JobError(pub String);

/// What a job does wrong on purpose: the panic proofs, and broken jobs that show the checker
/// does fail a run that breaks an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sabotage {
    /// Nothing: an honest job.
    None,
    /// `perform` panics inside a transaction it opened.
    PanicInPerform,
    /// `on_succeeded_once` panics after writing its effect row.
    PanicInEffects,
    /// `on_succeeded_once` writes its effect row twice.
    DoubleEffect,
    /// `on_succeeded_once` writes nothing and says it is done.
    ForgetEffect,
    /// With `--effects none`: the job declares effects anyway and writes them after the commit.
    DeclareEffects,
}

/// Key number `key_no` of the run: records its perform calls and its effects in the database.
pub struct TortureJob<'a> {
    /// Which key.
    pub key_no: u64,
    /// Where the effects go.
    pub effects: EffectsKind,
    /// The harness's own store (perform rows, after-commit effect rows).
    pub harness: &'a DieselStore,
    /// The worker's name, written into the rows.
    pub worker: &'a str,
    /// How long `perform` works, renewing its lease as it goes.
    pub perform_for: Duration,
    /// Whether `perform` renews its lease while it works.
    pub renew: bool,
    /// What to break.
    pub sabotage: Sabotage,
    /// Where `perform` notes the lease expiry it was granted (store clock) and the process's own
    /// clock at that moment.
    pub observe: Option<&'a Mutex<Option<Observed>>>,
}

/// What `perform` saw of its lease.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// The lease's end, by the store (database) clock.
    pub lease_expires_at: DateTime<Utc>,
    /// This process's own clock when perform started.
    pub local_now: DateTime<Utc>,
}

/// The idempotency key of key number `key_no`.
pub fn key_of(key_no: u64) -> Result<IdempotencyKey, KeyError> {
    IdempotencyKey::from_parts(["torture", &key_no.to_string()])
}

impl SafeJob for TortureJob<'_> {
    type Error = JobError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        key_of(self.key_no)
    }

    fn perform(&self, ctx: &mut PerformContext<'_>) -> Result<Outcome, JobError> {
        if let Some(observe) = self.observe {
            *observe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Observed {
                lease_expires_at: ctx.lease_expires_at(),
                local_now: Utc::now(),
            });
        }
        db::exec(
            self.harness,
            &format!(
                "INSERT INTO torture_perform (key_no, fence, worker) VALUES ({}, {}, '{}')",
                db::key_no(self.key_no),
                ctx.fence(),
                self.worker
            ),
        )
        .map_err(JobError)?;
        if self.sabotage == Sabotage::PanicInPerform {
            // A perform that opened a transaction of its own on a pooled connection, wrote in it,
            // and panicked before committing.
            let sql = format!(
                "INSERT INTO torture_perform (key_no, fence, worker) VALUES ({}, {}, 'uncommitted')",
                db::key_no(self.key_no),
                ctx.fence()
            );
            let _ = self.harness.with_connection(|c| {
                let began = c.batch_execute("BEGIN");
                let wrote = c.batch_execute(&sql);
                panic!("sabotage: perform panics inside its transaction ({began:?}, {wrote:?})");
            });
        }
        let step = Duration::from_millis(5);
        let mut worked = Duration::ZERO;
        while worked < self.perform_for {
            thread::sleep(step);
            worked += step;
            if self.renew && ctx.keep_alive().is_err() {
                break; // the runner reports the lost lease
            }
        }
        Ok(Outcome::json(
            serde_json::json!({ "k": self.key_no, "tag": FINALIZE_MARKER }),
        ))
    }

    fn has_effects(&self) -> bool {
        self.effects != EffectsKind::None || self.sabotage == Sabotage::DeclareEffects
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), JobError> {
        if self.sabotage == Sabotage::ForgetEffect {
            return Ok(());
        }
        self.effects
            .write_effect(ctx, self.harness, self.key_no, self.worker)?;
        if self.sabotage == Sabotage::DoubleEffect {
            self.effects
                .write_effect(ctx, self.harness, self.key_no, self.worker)?;
        }
        if self.sabotage == Sabotage::PanicInEffects {
            panic!("sabotage: on_succeeded_once panics");
        }
        Ok(())
    }
}
