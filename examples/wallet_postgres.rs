//! Wallet charges, exactly once, on PostgreSQL: the same jobs as `cargo run --example wallet`.
//!
//! ```sh
//! SAFEJOB_POSTGRES_URL=postgres://root@127.0.0.1:5432/test \
//!     cargo run --example wallet_postgres --features safejob-examples/postgres
//! ```
//!
//! The charges are dispatched four times each from eight threads; here any number of processes
//! on any number of hosts could share the database. The job code is `safejob_examples::wallet`'s,
//! unchanged from the SQLite example: its ledger row and balance update go through the
//! backend-neutral `EffectsTx` on the finalize transaction's connection, so they commit with
//! `succeeded`, once, or not at all. What differs is only how the store connects: here its
//! tables, `safe_jobs` included, live in their own schema, `safejob_wallet`.

use std::{error::Error, sync::Arc};

use safejob_diesel::DieselStore;
use safejob_examples::wallet::{self, THREADS};

/// The schema the example's tables live in.
const SCHEMA: &str = "safejob_wallet";

fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("SAFEJOB_POSTGRES_URL").map_err(|_| {
        "set SAFEJOB_POSTGRES_URL, e.g. SAFEJOB_POSTGRES_URL=postgres://root@127.0.0.1:5432/test"
    })?;
    // Create the schema once, then put it first on every pooled connection's search path.
    DieselStore::connect(&url)?
        .with_connection(|c| c.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}")))??;
    let store = Arc::new(
        DieselStore::builder(&url)
            .max_size(THREADS as u32)
            .on_connect(|c| c.batch_execute(&format!("SET search_path TO {SCHEMA}")))
            .build()?,
    );
    println!("database: {} (schema {SCHEMA})", store.target()); // never the password
    store.migrate()?;
    wallet::run(store)
}
