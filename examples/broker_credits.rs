//! What the `rabbitmq_consumer` and `nats_consumer` examples share: a guarded credit that posts a
//! ledger row in its finalize transaction, its JSON payload, a SQLite store under `target/`, and
//! the final check read back from the database.

use std::{
    error::Error,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use safejob_brokers::DecodeError;
use safejob_core::{
    EffectsContext, EffectsMode, Fingerprint, FingerprintError, IdempotencyKey, JobState, KeyError,
    LeaseStore, Outcome, PerformContext, Runner, SafeJob,
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt};

/// Errors of the examples' own plumbing, boxed.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A name unique to this run (process id and clock), for queues, streams and keys.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos:x}", std::process::id())
}

/// One credit as producers publish it: `{"id", "account", "cents", "slow_ms"}`. A credit to the
/// account `closed` fails for good (and is dead-lettered).
pub fn payload(id: &str, account: &str, cents: i64, slow_ms: u64) -> Vec<u8> {
    serde_json::json!({ "id": id, "account": account, "cents": cents, "slow_ms": slow_ms })
        .to_string()
        .into_bytes()
}

/// The guarded job: credits `account` once per `id` within `run`.
#[derive(Debug, Clone)]
pub struct Credit {
    /// The run, so runs sharing a database never replay each other.
    pub run: String,
    /// The credit id.
    pub id: String,
    /// The account credited.
    pub account: String,
    /// The amount in cents.
    pub cents: i64,
    /// How long perform takes (a slow gateway).
    pub slow_ms: u64,
}

impl Credit {
    /// Decodes a payload; bad JSON or a missing field is a [`DecodeError`] (dead-lettered).
    pub fn decode(run: &str, bytes: &[u8]) -> Result<Self, DecodeError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::new(e.to_string()))?;
        let text = |field: &str| {
            value[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| DecodeError::new(format!("no {field:?}")))
        };
        Ok(Self {
            run: run.to_owned(),
            id: text("id")?,
            account: text("account")?,
            cents: value["cents"]
                .as_i64()
                .ok_or_else(|| DecodeError::new("no \"cents\""))?,
            slow_ms: value["slow_ms"].as_u64().unwrap_or(0),
        })
    }
}

/// Why a credit attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    /// The ledger write failed (the finalize transaction rolls back).
    #[error("ledger write failed: {0}")]
    Ledger(#[from] safejob_diesel::EffectsTxError),
    /// Not inside a finalize transaction of a `DieselStore`.
    #[error(transparent)]
    NoTransaction(#[from] safejob_diesel::TxError),
}

impl SafeJob for Credit {
    type Error = CreditError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["broker-credit", &self.run, &self.id])
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of(&(&self.account, self.cents)).map(Some)
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        std::thread::sleep(Duration::from_millis(self.slow_ms));
        if self.account == "closed" {
            return Ok(Outcome::failed("account_closed", "the account is closed"));
        }
        Ok(Outcome::done())
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        ctx.effects_tx()?.insert(
            "broker_credits_ledger",
            &[
                ("run", (&self.run).into()),
                ("credit_id", (&self.id).into()),
                ("cents", self.cents.into()),
            ],
        )?;
        Ok(())
    }
}

/// A migrated SQLite store at `target/<profile>/<file>`, with the ledger table.
pub fn open_store(file: &str) -> Result<Arc<DieselStore>, BoxError> {
    let exe = std::env::current_exe()?;
    let dir: PathBuf = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot locate the target directory")?
        .to_owned();
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        dir.join(file).display()
    ))?);
    store.migrate()?;
    store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => diesel::sql_query(
            "CREATE TABLE IF NOT EXISTS broker_credits_ledger (
                run TEXT NOT NULL, credit_id TEXT NOT NULL, cents BIGINT NOT NULL)",
        )
        .execute(*conn),
        #[allow(unreachable_patterns)]
        _ => Err(diesel::result::Error::NotFound),
    })??;
    Ok(store)
}

/// A runner for `worker`: effects in the finalize transaction.
pub fn runner(store: &Arc<DieselStore>, worker: &str) -> Result<Arc<Runner>, BoxError> {
    Ok(Arc::new(
        Runner::builder(store.clone())
            .worker_id(worker)
            .effects(EffectsMode::Transactional)
            .build()?,
    ))
}

#[derive(QueryableByName)]
struct Posted {
    #[diesel(sql_type = Text)]
    credit_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// How many of `ids` succeeded (by the guard's rows) and were posted exactly once (by the
/// ledger), read from the database.
pub fn exactly_once(
    store: &Arc<DieselStore>,
    run: &str,
    ids: &[String],
) -> Result<usize, BoxError> {
    let rows: Vec<Posted> = store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => diesel::sql_query(
            "SELECT credit_id, COUNT(*) AS n FROM broker_credits_ledger WHERE run = ? \
             GROUP BY credit_id",
        )
        .bind::<Text, _>(run)
        .load(*conn),
        #[allow(unreachable_patterns)]
        _ => Err(diesel::result::Error::NotFound),
    })??;
    let mut once = 0;
    for id in ids {
        let credit = Credit {
            run: run.to_owned(),
            id: id.clone(),
            account: String::new(),
            cents: 0,
            slow_ms: 0,
        };
        let digest = *credit.key()?.digest();
        let succeeded = store
            .get(&digest)?
            .is_some_and(|row| row.state == JobState::Succeeded);
        let posted = rows.iter().find(|r| &r.credit_id == id).map_or(0, |r| r.n);
        once += usize::from(succeeded && posted == 1);
    }
    let total: i64 = rows.iter().map(|r| r.n).sum();
    if total as usize != ids.len() {
        return Err(format!("{total} ledger rows for {} credits", ids.len()).into());
    }
    Ok(once)
}
