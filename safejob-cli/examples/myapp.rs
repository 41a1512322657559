//! A user binary: its own job kinds, every `safejob` operator command, and `work`.
//!
//! ```sh
//! export SAFEJOB_DATABASE_URL=sqlite://target/myapp.db
//! cargo run -p safejob-cli --example myapp -- migrate
//! cargo run -p safejob-cli --example myapp -- work --queues default --concurrency 4 --max-runtime 10s
//! cargo run -p safejob-cli --example myapp -- status
//! ```

use std::process::ExitCode;

use safejob_core::queue::{QueueJob, Registry, WorkContext, WorkError};
use serde::{Deserialize, Serialize};

/// The application's one kind.
#[derive(Serialize, Deserialize)]
struct SendReceipt {
    order: u64,
}

impl QueueJob for SendReceipt {
    const KIND: &'static str = "receipt";
    type Error = std::convert::Infallible;
    fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<Self::Error>> {
        println!("receipt for order {}", self.order);
        Ok(())
    }
}

fn main() -> ExitCode {
    safejob_cli::main_with(|| {
        let mut registry = Registry::new();
        registry.register::<SendReceipt>();
        registry
    })
}
