//! The multi-process chaos driver behind the `safejob-chaos` binary.
//!
//! * [`run`] — the parent: namespace, dispatch table, workers, nemesis, recovery, JSON line;
//! * [`worker`] — a worker process (the hidden `worker` subcommand);
//! * [`job`] — the job and the effects modes ([`job::EffectsKind`], the extension point for more);
//! * [`db`] — the run's namespace and the harness's own statements;
//! * [`events`] — what workers report, and the tracing layer that counts ambiguous commits;
//! * [`outbox`] — `--effects outbox`: relays in the workers, the final drain, its checks;
//! * [`check`] — the invariants, read from the database;
//! * [`failover`] — the `failover` subcommand: the run on a pg_auto_failover cluster whose
//!   primary is crashed and replaced several times, with the evidence kept outside the cluster;
//! * [`prove`] — single-fault proofs on real processes (zombie, skewed clock, panics).

pub mod check;
pub mod db;
pub mod events;
pub mod failover;
pub mod job;
pub mod outbox;
pub mod prove;
pub mod run;
pub mod worker;
