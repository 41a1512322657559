//! Wallet charges, exactly once, on SQLite.
//!
//! Run it from the repository root: `cargo run --example wallet`. It needs nothing installed:
//! the store is a SQLite file next to the example binary (under `target/`), and its migrations
//! run by themselves.
//!
//! Eight threads dispatch every charge four times, in a shuffled order, as an at-least-once
//! queue would. Each charge debits its wallet in `on_succeeded_once`, which runs inside the
//! finalize transaction (the job chooses `EffectsMode::Transactional` itself): the ledger row,
//! the balance update and `succeeded` commit together, once. Each receipt is then sent after
//! commit, on the same runner. Run it again and every charge is a replay: the balances do not
//! move.
//!
//! The jobs are `safejob_examples::wallet`'s, the very code `wallet_postgres` runs on
//! PostgreSQL: they write through the backend-neutral `EffectsTx`.

use std::{error::Error, path::PathBuf, sync::Arc};

use safejob_diesel::DieselStore;
use safejob_examples::wallet;

fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    println!("database: {}", path.display());
    let store = Arc::new(DieselStore::connect(&format!(
        "sqlite://{}",
        path.display()
    ))?);
    store.migrate()?;
    wallet::run(store)
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
