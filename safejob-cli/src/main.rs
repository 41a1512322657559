//! `safejob`: operate a safejob database from the shell (see the crate docs, or `--help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    safejob_cli::run(safejob_cli::Cli::parse())
}
