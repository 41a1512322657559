//! `safejob-chaos`: runs the same keyed jobs in several real worker processes while a nemesis
//! kills them, freezes them past their lease, cuts their database connections (including after a
//! commit was sent and before its reply arrived) and optionally restarts the database; then
//! checks from the database that every key succeeded exactly once and its effects ran at most
//! once, and prints one JSON line. Exit status 0 only when every invariant held.
//!
//! ```text
//! safejob-chaos --url postgres://root@127.0.0.1:5432/test --workers 4 --keys 200 \
//!     --duplicates 3 --duration 30 --seed 7 --kill-rate 1 --pause-rate 0.3 \
//!     --effects transactional --proxy
//! ```
//!
//! `safejob-chaos failover --replication sync|async --duration S --seed N` (the issue's
//! `safejob-torture failover`) runs the same torture on the pg_auto_failover cluster of
//! `scripts/pgaf-cluster.sh` while its primary is crashed and replaced several times.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[path = "../chaos/mod.rs"]
mod chaos;

use chaos::{failover::FailoverArgs, prove::ProveArgs, run::RunArgs, worker::WorkerArgs};

/// Multi-process chaos testing of safejob: kills, pauses past the lease, cut connections, ambiguous
/// commits, database restarts; checked from the database.
#[derive(Debug, Parser)]
#[command(
    name = "safejob-chaos",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One worker process (started by the driver itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Single-fault proofs on real processes: a zombie, a skewed clock, panics.
    Prove(ProveArgs),
    /// The torture on a pg_auto_failover cluster whose primary is crashed at random moments.
    Failover(FailoverArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Worker(args)) => chaos::worker::main(args),
        Some(Cmd::Prove(args)) => chaos::prove::main(args),
        Some(Cmd::Failover(args)) => chaos::failover::main(args),
        None => chaos::run::main(cli.run),
    }
}
