//! Wallet charges, exactly once, on SQLite.
//!
//! Run it from the repository root: `cargo run --example wallet`. It needs nothing installed:
//! the store is a SQLite file next to the example binary (under `target/`), and its migrations
//! run by themselves.
//!
//! Eight threads dispatch every charge four times, in a shuffled order, as an at-least-once
//! queue would. Each charge debits its wallet in `on_succeeded_once`, which runs inside the
//! finalize transaction (`EffectsMode::Transactional`): the ledger row, the balance update and
//! `succeeded` commit together, once. Run it again and every charge is a replay: the balances do
//! not move.

use std::{error::Error, path::PathBuf, sync::Arc};

use diesel::{
    QueryableByName, RunQueryDsl, SqliteConnection,
    sql_types::{BigInt, Text},
};
use safejob_core::{
    EffectsContext, EffectsMode, Fingerprint, FingerprintError, IdempotencyKey, KeyError, Outcome,
    PerformContext, Runner, SafeJob,
};
use safejob_diesel::{ConnectionRef, DieselStore, TransactionExt};
use safejob_examples::{
    dispatch,
    wallet::{self, ChargeSpec, DELIVERIES_PER_CHARGE, OPENING_BALANCE, THREADS, WALLETS},
};

/// Debits a wallet once per charge id.
struct Charge(ChargeSpec);

#[derive(Debug, thiserror::Error)]
enum ChargeError {
    #[error("ledger write failed: {0}")]
    Ledger(#[from] diesel::result::Error),
    #[error(transparent)]
    NoTransaction(#[from] safejob_diesel::TxError),
}

impl SafeJob for Charge {
    type Error = ChargeError;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["charge", &self.0.id])
    }

    // The same charge id with another wallet or amount is a key conflict, not a replay.
    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of(&(self.0.wallet, self.0.cents)).map(Some)
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        // Retry-safe work goes here: validate, price, call a gateway with an idempotency key.
        Ok(Outcome::json(
            serde_json::json!({ "wallet": self.0.wallet, "cents": self.0.cents }),
        ))
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let conn = ctx.diesel_connection::<SqliteConnection>()?;
        diesel::sql_query("INSERT INTO wallet_ledger (charge_id, wallet, cents) VALUES (?, ?, ?)")
            .bind::<Text, _>(&self.0.id)
            .bind::<Text, _>(self.0.wallet)
            .bind::<BigInt, _>(-self.0.cents)
            .execute(conn)?;
        diesel::sql_query("UPDATE wallets SET balance_cents = balance_cents - ? WHERE id = ?")
            .bind::<BigInt, _>(self.0.cents)
            .bind::<Text, _>(self.0.wallet)
            .execute(conn)?;
        Ok(())
    }
}

#[derive(QueryableByName)]
struct Balance {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = BigInt)]
    balance_cents: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    println!("database: {}", path.display());
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        path.display()
    ))?);
    store.migrate()?;
    with_sqlite(&store, create_wallet_tables)?;
    let already = with_sqlite(&store, |c| count(c, "SELECT COUNT(*) AS n FROM safe_jobs"))?;
    if already > 0 {
        println!("(a previous run already guarded {already} keys)");
    }

    let runner = Runner::builder(store.clone())
        .effects(EffectsMode::Transactional)
        .build()?;
    let charges: Vec<Charge> = wallet::charges().into_iter().map(Charge).collect();
    let stats = dispatch(
        &runner,
        &charges,
        DELIVERIES_PER_CHARGE,
        THREADS,
        0x5afe_0b5e,
    )?;

    let observed = with_sqlite(&store, |conn| {
        let balances: Vec<Balance> =
            diesel::sql_query("SELECT id, balance_cents FROM wallets ORDER BY id").load(conn)?;
        Ok(wallet::Observed {
            balances: balances
                .into_iter()
                .map(|b| (b.id, b.balance_cents))
                .collect(),
            ledger_rows: count(conn, "SELECT COUNT(*) AS n FROM wallet_ledger")?,
            distinct_charges: count(
                conn,
                "SELECT COUNT(DISTINCT charge_id) AS n FROM wallet_ledger",
            )?,
        })
    })?;
    wallet::report(&stats, &observed)?;
    Ok(())
}

/// `<dir of this binary>/../safejob-wallet.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-wallet.db"))
}

/// Runs `f` on one of the store's SQLite connections.
fn with_sqlite<R>(
    store: &DieselStore,
    f: impl FnOnce(&mut SqliteConnection) -> diesel::QueryResult<R>,
) -> Result<R, Box<dyn Error>> {
    let result = store.with_connection(|conn| match conn {
        ConnectionRef::Sqlite(conn) => f(conn),
        _ => Err(diesel::result::Error::NotFound),
    })??;
    Ok(result)
}

fn create_wallet_tables(conn: &mut SqliteConnection) -> diesel::QueryResult<()> {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(
        "CREATE TABLE IF NOT EXISTS wallets (id TEXT PRIMARY KEY, balance_cents INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS wallet_ledger (
             charge_id TEXT PRIMARY KEY, wallet TEXT NOT NULL, cents INTEGER NOT NULL);",
    )?;
    for wallet in WALLETS {
        diesel::sql_query("INSERT OR IGNORE INTO wallets (id, balance_cents) VALUES (?, ?)")
            .bind::<Text, _>(wallet)
            .bind::<BigInt, _>(OPENING_BALANCE)
            .execute(conn)?;
    }
    Ok(())
}

fn count(conn: &mut SqliteConnection, sql: &str) -> diesel::QueryResult<i64> {
    let rows: Vec<Count> = diesel::sql_query(sql).load(conn)?;
    Ok(rows.first().map_or(0, |c| c.n))
}
