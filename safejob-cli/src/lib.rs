//! # safejob-cli
//!
//! `safejob`, the operator's command over a safejob database: what is queued and running, dead
//! letters and retries, keys whose effects are in doubt, schedules, batches, actions, workers,
//! cleanup. The database comes from `--url` or `SAFEJOB_DATABASE_URL` (`sqlite://…`,
//! `postgres://…`, `mysql://…`); its password is never printed.
//!
//! Output is an aligned table by default and one JSON document with `--json`. Exit codes:
//! 0 done; 1 an error (the database, a corrupt row); 2 bad input (arguments, ids); 3 not found;
//! 4 refused (the state does not allow it: retrying a running job, confirming effects that are
//! not in doubt); 5 declined at the confirmation prompt; 6 the command needs the job types, which
//! only your own binary has (`keys recover` in the plain `safejob` binary).
//!
//! Running workers is your binary's job, because only it knows the job types:
//! [`main_with`] gives it every command here plus `work` ([`work::WorkArgs`]), and makes
//! `keys recover` (re-running a key's in-doubt effects, which needs the job rebuilt) work.
//!
//! The commands are documented in `safejob --help` and in docs/operations.md.

#![forbid(unsafe_code)]

pub mod duration;
mod ops;
pub mod out;
pub mod work;

use std::{process::ExitCode, sync::Arc};

use clap::{Args, Parser, Subcommand};
use safejob_core::queue::{RecoverError, Registry};

pub use ops::connect;

/// What went wrong; each variant has its exit code ([`CliError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No `--url` and no `SAFEJOB_DATABASE_URL`.
    #[error("no database: pass --url or set SAFEJOB_DATABASE_URL")]
    NoDatabase,
    /// The database could not be reached or opened (the message names no password).
    #[error("cannot connect: {0}")]
    Connect(#[from] safejob_diesel::ConnectError),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] safejob_diesel::MigrateError),
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] safejob_core::StoreError),
    /// The outbox failed.
    #[error("outbox: {0}")]
    Outbox(#[from] safejob_diesel::outbox::RelayError),
    /// A schedule operation failed.
    #[error(transparent)]
    Schedule(#[from] safejob_core::schedule::SchedulerError),
    /// The HTTP server could not start or failed.
    #[error("serve: {0}")]
    Web(#[from] safejob_web::WebError),
    /// An argument does not make sense (a digest that is not hex, a zero limit…).
    #[error("{0}")]
    BadInput(String),
    /// Nothing by that id or name.
    #[error("not found: {0}")]
    NotFound(String),
    /// The state does not allow the action; nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The operator answered no at the confirmation prompt.
    #[error("not confirmed; nothing changed")]
    Declined,
    /// Reading the prompt's answer, or installing a signal handler, failed.
    #[error("{0}")]
    Io(String),
    /// The command rebuilds jobs, which only a binary that registers their kinds can do.
    #[error(
        "`{command}` needs your binary: only a binary that registers the job kinds (built on \
         safejob_cli::main_with) can rebuild a job; run it as `<your-binary> {command} …`"
    )]
    NeedsJobTypes {
        /// The command.
        command: &'static str,
    },
    /// Recovering in-doubt effects failed.
    #[error(transparent)]
    Recover(#[from] safejob_core::queue::RecoverError),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::BadInput(_) | Self::NoDatabase => 2,
            Self::NotFound(_) | Self::Recover(RecoverError::NoJob { .. }) => 3,
            Self::Refused(_) => 4,
            Self::Declined => 5,
            Self::NeedsJobTypes { .. } => 6,
            _ => 1,
        }
    }
}

/// `safejob`: the operator's command.
#[derive(Debug, Parser)]
#[command(name = "safejob", version, about = "Operate a safejob database", long_about = None)]
pub struct Cli {
    /// The database and the output format.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The options every command takes, in `safejob` and in a user's binary ([`App`]).
#[derive(Debug, Args)]
pub struct Global {
    /// Database URL (sqlite://path, postgres://…, mysql://…).
    #[arg(
        long,
        env = "SAFEJOB_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub url: Option<String>,
    /// Print one JSON document instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Every operator command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Creates or updates the tables (idempotent).
    Migrate,
    /// Counts by state, queue and kind; p95 / p99 per kind; workers with a health verdict; the
    /// oldest due job's age; the outbox.
    Status(StatusArgs),
    /// Lists or shows jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Retries one dead, cancelled or parked job, or many by filter.
    Retry(RetryArgs),
    /// Cancels a job that is not running.
    Cancel {
        /// The job id.
        id: i64,
    },
    /// Deletes finished jobs (dead ones unless `--state` says otherwise).
    Purge(PurgeArgs),
    /// Cancels every waiting job of a queue (asks first unless `--yes`).
    Clear(ClearArgs),
    /// Lists dead jobs with their last error.
    Failed {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Deletes old finished jobs, delivered outbox rows and stale worker rows; guard rows only
    /// with `--guards`.
    Cleanup(CleanupArgs),
    /// Guard keys: show one, list those whose effects are in doubt, confirm effects, recover
    /// them (in your own binary).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Stored schedules.
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Batches (workflows).
    #[command(subcommand)]
    Batches(BatchesCommand),
    /// The action log.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Workers that sent heartbeats.
    #[command(subcommand)]
    Workers(WorkersCommand),
    /// Serves the JSON API, `/metrics` and the dashboard (safejob-web) until SIGTERM or SIGINT.
    /// Loopback clients only, unless a bearer token is given (then other clients present it).
    Serve(ServeArgs),
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8087")]
    pub addr: std::net::SocketAddr,
    /// The name of an environment variable holding a bearer token: clients that are not
    /// loopback present it (`Authorization: Bearer …`). Read from the environment, never from
    /// the command line (which other users can see), and never printed.
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A worker whose last heartbeat is older than this is `stale` (half of it: `late`).
    #[arg(long, value_parser = duration::parse_duration, default_value = "60s")]
    pub stale_after: std::time::Duration,
}

/// `jobs` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Jobs by id, filtered, a page at a time.
    List(ListArgs),
    /// One job with its error history.
    Show {
        /// The job id.
        id: i64,
    },
}

/// Filters shared by listings.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this state (pending, scheduled, blocked, running, retrying, succeeded, dead,
    /// cancelled, parked).
    #[arg(long)]
    pub state: Option<String>,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only ids greater than this (the next page starts after the last id shown).
    #[arg(long)]
    pub after: Option<i64>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `retry` options.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// One job id; without it, every job matching the filters (dead ones by default).
    pub id: Option<i64>,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// dead (default), cancelled or parked.
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

/// `purge` options.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// succeeded, dead (default) or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// Do not ask.
    #[arg(long)]
    pub yes: bool,
}

/// `clear` options.
#[derive(Debug, Args)]
pub struct ClearArgs {
    /// The queue whose waiting jobs (pending, scheduled, retrying) are cancelled.
    #[arg(long)]
    pub queue: String,
    /// Do not ask.
    #[arg(long)]
    pub yes: bool,
}

/// `cleanup` options.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Finished jobs and delivered outbox rows older than this go (e.g. `7d`).
    #[arg(long, value_parser = duration::parse_duration)]
    pub older_than: std::time::Duration,
    /// Worker rows whose last heartbeat is older than this go.
    #[arg(long, value_parser = duration::parse_duration, default_value = "1h")]
    pub workers_older_than: std::time::Duration,
    /// Also prune guard rows whose own retention has passed. A pruned row forgets that its key
    /// succeeded: the key runs again if it comes back. Rows kept forever (the default retention)
    /// are never pruned.
    #[arg(long)]
    pub guards: bool,
    /// Rows deleted per statement.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// One key's row, by its digest (64 hex characters).
    Show {
        /// The digest.
        digest: String,
    },
    /// Succeeded keys whose effects are in doubt.
    InDoubt {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Records that you checked that the key's in-doubt effects did happen: marks them done
    /// without running anything. (Re-running them is `keys recover`, in your binary.)
    Confirm {
        /// The digest.
        digest: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Runs the key's in-doubt effects (`on_succeeded_once`) once more, after you checked that
    /// they did not happen: rebuilds the job from a succeeded queued job that carries the key,
    /// by its guarded kind. Only in your own binary (`safejob_cli::main_with`), which knows the
    /// kinds; the plain `safejob` binary refuses (exit code 6).
    Recover {
        /// The key's digest (64 hex characters), or the key's text (never printed).
        key: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// `schedules` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// Stored schedules with their next run times.
    List {
        /// Next run times shown per schedule.
        #[arg(long, default_value_t = 3)]
        next: usize,
    },
    /// Pauses a schedule (its ticks do not run).
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resumes a paused schedule from the next run after now.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Makes a schedule due now: the next tick of a running scheduler enqueues it.
    Trigger {
        /// The schedule's name.
        name: String,
    },
}

/// `batches` subcommands.
#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Batches, newest first.
    List {
        /// Only running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One batch with its members.
    Show {
        /// The batch id.
        id: i64,
    },
    /// Cancels a running batch.
    Cancel {
        /// The batch id.
        id: i64,
    },
}

/// `actions` subcommands.
#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Actions by id.
    List {
        /// Only pending, processed, skipped or parked.
        #[arg(long)]
        state: Option<String>,
        /// Only this type.
        #[arg(long = "type")]
        action_type: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Makes a parked action pending again.
    Retry {
        /// The action id.
        id: i64,
    },
}

/// `workers` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkersCommand {
    /// Workers with their heartbeat age and jobs in flight.
    List(StatusArgs),
    /// Deletes the rows of workers silent for longer than `--older-than`.
    ForgetStale {
        /// Silence that makes a worker stale.
        #[arg(long, value_parser = duration::parse_duration, default_value = "1h")]
        older_than: std::time::Duration,
    },
}

/// Runs `cli` and returns the process's exit code, printing any error on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let out = out::Out {
        json: cli.global.json,
    };
    finish(ops::dispatch(cli.global.url.as_deref(), out, cli.command))
}

/// A command's end as the process's exit code: success, or the error printed on stderr and its
/// [`CliError::exit_code`]. For a `main` that calls [`run_app`] itself.
pub fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("safejob: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// A user binary's command line: every operator command, plus `work`.
#[derive(Debug, Parser)]
#[command(version, about = "Operate safejob and run its workers", long_about = None)]
pub struct App {
    /// The database and the output format.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: AppCommand,
}

/// `work` or an operator command.
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Runs workers for the kinds this binary registers, until SIGTERM / SIGINT or a limit.
    Work(work::WorkArgs),
    /// Every operator command.
    #[command(flatten)]
    Operate(Command),
}

/// The `main` of a user binary: parses [`App`] from the process's arguments and runs it with
/// [`run_app`]; prints any error on stderr and returns its exit code.
pub fn main_with(registry: impl FnOnce() -> Registry) -> ExitCode {
    finish(run_app(App::parse(), registry))
}

/// Runs a user binary's command: builds the registry with `registry` only for the commands that
/// need the job kinds (`work`, `keys recover`). Call it instead of [`main_with`] to do something
/// first, for instance to create your own tables before `work` (examples/queue.rs):
///
/// ```no_run
/// use clap::Parser;
/// use safejob_cli::{App, AppCommand};
/// use safejob_core::queue::Registry;
///
/// fn main() -> std::process::ExitCode {
///     let app = App::parse();
///     if let AppCommand::Work(_) = &app.command {
///         // create the application's tables at app.global.url
///     }
///     safejob_cli::finish(safejob_cli::run_app(app, Registry::new))
/// }
/// ```
pub fn run_app(app: App, registry: impl FnOnce() -> Registry) -> Result<(), CliError> {
    let out = out::Out {
        json: app.global.json,
    };
    let url = app.global.url.as_deref();
    match app.command {
        AppCommand::Operate(Command::Keys(KeysCommand::Recover { key, yes })) => {
            ops::recover(url, out, &registry(), &key, yes)
        }
        AppCommand::Operate(command) => ops::dispatch(url, out, command),
        AppCommand::Work(args) => ops::connect(url).and_then(|(_, queue)| {
            let summary = work::run_work(&args, queue as Arc<_>, registry())?;
            let value = serde_json::json!({
                "handled": summary.handled,
                "stopped_by": summary.stopped_by,
                "released_unstarted": summary.shutdown.released_unstarted,
                "released_running": summary.shutdown.released_running,
            });
            out.emit(&value, || {
                println!(
                    "stopped by {}: {} jobs run, {} given back unstarted, {} given back running",
                    summary.stopped_by,
                    summary.handled,
                    summary.shutdown.released_unstarted,
                    summary.shutdown.released_running
                );
            });
            Ok(())
        }),
    }
}
