//! An axum service that charges exactly once per `Idempotency-Key`, on SQLite, from async
//! handlers that never block the executor.
//!
//! Run it from the repository root:
//!
//! ```sh
//! cargo run --example axum_charge --features safejob-examples/axum
//! curl -si localhost:3000/charges -H 'Idempotency-Key: order-42' \
//!      -H 'content-type: application/json' -d '{"wallet":"alice","cents":1999}'
//! ```
//!
//! Send the same request again: the same `201` and body come back, marked
//! `Idempotent-Replayed: true`, and the ledger still has one row. The same key with another
//! amount answers `422`. `POST /payouts` enqueues a guarded payout (`202` and a job id) that the
//! worker pool beside the server runs once per key; `GET /jobs/{id}` shows its state. Ctrl-C
//! drains the server, then stops the worker pool from async code. The routes and jobs are in
//! `examples/charges_api.rs`; `SAFEJOB_ADDR` changes the address (default `127.0.0.1:3000`).

use std::{error::Error, path::PathBuf, sync::Arc, time::Duration};

use safejob_diesel::DieselStore;
use safejob_examples::charges_api::{App, create_tables, payout_workers, router};
use safejob_tokio::{AsyncWorkerPool, blocking};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = database_path()?;
    println!("database: {}", path.display());
    let url = format!("sqlite://{}", path.display());
    // Opening, migrating and creating tables are synchronous: off the executor too.
    let store = Arc::new(blocking(move || DieselStore::connect(&url)).await?);
    let setup = store.clone();
    blocking(move || setup.migrate()).await?;
    let setup = store.clone();
    blocking(move || create_tables(&setup)).await?;

    // The worker pool runs on its own threads beside the server.
    let pool = AsyncWorkerPool::start(payout_workers(store.clone())).await?;
    let app = App::new(store)?;

    let addr = std::env::var("SAFEJOB_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{addr} (ctrl-c to stop)");
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;

    // The server has drained: stop the pool, letting running payouts finish for up to 10 s.
    let report = pool.shutdown(Duration::from_secs(10)).await?;
    println!("worker pool stopped: {report:?}");
    Ok(())
}

/// `<dir of this binary>/../safejob-axum.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, Box<dyn Error>> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-axum.db"))
}
