//! The dashboard and API over a demo SQLite queue, for trying them out and for CI's browser
//! test and API fuzzing.
//!
//! ```sh
//! cargo run -p safejob-web --example serve_demo -- target/demo.db 127.0.0.1:8087
//! ```
//!
//! The database file is recreated and seeded (a dead job, a batch, a schedule, an action, a key
//! in doubt); the server is open to loopback clients only, until ctrl-c.

use std::{error::Error, sync::Arc};

use safejob_diesel::{DieselStore, queue::DieselQueue};
use safejob_web::{Access, WebState};

#[path = "../tests/common/seed.rs"]
#[allow(dead_code)]
mod seed;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "target/safejob-web-demo.db".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8087".into());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let store = Arc::new(DieselStore::connect(&format!("sqlite://{path}"))?);
    store.migrate()?;
    let queue = Arc::new(DieselQueue::new(store));
    let seeded = seed::seed(&queue)?;
    println!("seeded {path}: {seeded:?}");
    println!("listening on http://{addr} (loopback clients only; ctrl-c to stop)");
    safejob_web::serve(
        addr.parse()?,
        WebState::from_store(queue)?,
        Access::LoopbackOnly,
    )
    .await?;
    Ok(())
}
