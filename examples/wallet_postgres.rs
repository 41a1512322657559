//! Wallet charges, exactly once, on PostgreSQL, with transactional effects writing ledger rows.
//!
//! ```sh
//! SAFEJOB_POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!     cargo run --example wallet_postgres --features safejob-examples/postgres
//! ```
//!
//! The same charges as `cargo run --example wallet`, dispatched four times each from eight
//! threads; here any number of processes on any number of hosts could share the database. Each
//! charge's ledger row and balance update are written by `on_succeeded_once` on the finalize
//! transaction's `PgConnection`, so they commit with `succeeded`, once, or not at all.

use std::{error::Error, sync::Arc};

use diesel::{
    PgConnection, QueryableByName, RunQueryDsl,
    connection::SimpleConnection,
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
        IdempotencyKey::from_parts(["pg-example-charge", &self.0.id])
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of(&(self.0.wallet, self.0.cents)).map(Some)
    }

    fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        Ok(Outcome::json(
            serde_json::json!({ "wallet": self.0.wallet, "cents": self.0.cents }),
        ))
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        let fence = i64::try_from(ctx.fence()).unwrap_or(i64::MAX);
        let conn = ctx.diesel_connection::<PgConnection>()?;
        diesel::sql_query(
            "INSERT INTO safejob_example.wallet_ledger (charge_id, wallet, cents, fence) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind::<Text, _>(&self.0.id)
        .bind::<Text, _>(self.0.wallet)
        .bind::<BigInt, _>(-self.0.cents)
        .bind::<BigInt, _>(fence)
        .execute(conn)?;
        diesel::sql_query(
            "UPDATE safejob_example.wallets SET balance_cents = balance_cents - $1 WHERE id = $2",
        )
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
    let url = std::env::var("SAFEJOB_POSTGRES_URL").map_err(|_| {
        "set SAFEJOB_POSTGRES_URL, e.g. SAFEJOB_POSTGRES_URL=postgres://root@127.0.0.1:5432/test"
    })?;
    let store = Arc::new(
        DieselStore::builder(&url)
            .max_size(THREADS as u32)
            .build()?,
    );
    println!("database: {}", store.target()); // host and database, never the password
    store.migrate()?;
    with_pg(&store, create_wallet_tables)?;

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

    let observed = with_pg(&store, |conn| {
        let balances: Vec<Balance> =
            diesel::sql_query("SELECT id, balance_cents FROM safejob_example.wallets ORDER BY id")
                .load(conn)?;
        Ok(wallet::Observed {
            balances: balances
                .into_iter()
                .map(|b| (b.id, b.balance_cents))
                .collect(),
            ledger_rows: count(
                conn,
                "SELECT COUNT(*) AS n FROM safejob_example.wallet_ledger",
            )?,
            distinct_charges: count(
                conn,
                "SELECT COUNT(DISTINCT charge_id) AS n FROM safejob_example.wallet_ledger",
            )?,
        })
    })?;
    wallet::report(&stats, &observed)?;
    Ok(())
}

/// Runs `f` on one of the store's PostgreSQL connections.
fn with_pg<R>(
    store: &DieselStore,
    f: impl FnOnce(&mut PgConnection) -> diesel::QueryResult<R>,
) -> Result<R, Box<dyn Error>> {
    let result = store.with_connection(|conn| match conn {
        ConnectionRef::Postgres(conn) => f(conn),
        _ => Err(diesel::result::Error::NotFound),
    })??;
    Ok(result)
}

fn create_wallet_tables(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS safejob_example;
         CREATE TABLE IF NOT EXISTS safejob_example.wallets (
             id TEXT PRIMARY KEY, balance_cents BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS safejob_example.wallet_ledger (
             charge_id TEXT PRIMARY KEY, wallet TEXT NOT NULL, cents BIGINT NOT NULL,
             fence BIGINT NOT NULL);",
    )?;
    for wallet in WALLETS {
        diesel::sql_query(
            "INSERT INTO safejob_example.wallets (id, balance_cents) VALUES ($1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind::<Text, _>(wallet)
        .bind::<BigInt, _>(OPENING_BALANCE)
        .execute(conn)?;
    }
    Ok(())
}

fn count(conn: &mut PgConnection, sql: &str) -> diesel::QueryResult<i64> {
    let rows: Vec<Count> = diesel::sql_query(sql).load(conn)?;
    Ok(rows.first().map_or(0, |c| c.n))
}
