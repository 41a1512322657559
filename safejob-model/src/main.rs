//! `safejob-model check [--queue] [--mutation NAME] [--workers N] [--keys N] [--ttl S] [--max-time T]
//! [--max-fence F] [--copies N]`:
//! checks the lease protocol exhaustively and prints the states explored and each property's
//! verdict. Exits 1 when a property fails (expected with `--mutation`), 2 on bad arguments.

use std::process::ExitCode;

use safejob_model::{Bounds, Mutation, UnknownMutation, Verdict, check};

/// The command line was not understood.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("expected the command `check`")]
    MissingCommand,
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("{flag} {value:?} is not a number from 1 to 255")]
    BadNumber { flag: String, value: String },
    #[error(transparent)]
    Mutation(#[from] UnknownMutation),
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(Bounds, Option<Mutation>), UsageError> {
    if args.next().as_deref() != Some("check") {
        return Err(UsageError::MissingCommand);
    }
    let mut bounds = Bounds::CHECK;
    let mut mutation = None;
    while let Some(flag) = args.next() {
        if flag == "--queue" {
            // The queue's bounds; flags after it adjust them.
            bounds = Bounds::QUEUE;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| UsageError::MissingValue { flag: flag.clone() })?;
        if flag == "--mutation" {
            mutation = Some(value.parse()?);
            continue;
        }
        let number =
            value
                .parse::<u8>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| UsageError::BadNumber {
                    flag: flag.clone(),
                    value: value.chars().take(20).collect(),
                })?;
        match flag.as_str() {
            "--workers" => bounds.workers = number.into(),
            "--keys" => bounds.keys = number.into(),
            "--ttl" => bounds.ttl = number,
            "--max-time" => bounds.max_time = number,
            "--max-fence" => bounds.max_fence = number,
            "--copies" => bounds.copies = number,
            _ => return Err(UsageError::UnknownArgument(flag)),
        }
    }
    Ok((bounds, mutation))
}

fn main() -> ExitCode {
    let (bounds, mutation) = match parse(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(error) => {
            eprintln!("error: {error}");
            eprintln!(
                "usage: safejob-model check [--mutation NAME] [--workers N] [--keys N] [--ttl S] [--max-time T] [--max-fence F] [--queue] [--copies N]"
            );
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let outcome = check(bounds, mutation);
    println!(
        "bounds: {} workers, {} keys, ttl {}, clock up to {}, fences up to {}, {}; mutation: {}",
        bounds.workers,
        bounds.keys,
        bounds.ttl,
        bounds.max_time,
        bounds.max_fence,
        match bounds.copies {
            0 => "deliveries from outside".to_owned(),
            n => format!("through the queue, {n} jobs per key"),
        },
        mutation.map_or("none", Mutation::name)
    );
    println!(
        "explored {} states ({} unique, max depth {}) in {:.1} s",
        outcome.states,
        outcome.unique_states,
        outcome.max_depth,
        started.elapsed().as_secs_f64()
    );
    for (name, verdict) in &outcome.verdicts {
        match verdict {
            Verdict::Held => println!("held: {name}"),
            Verdict::Example(path) => println!("found: {name} ({} steps)", path.len()),
            Verdict::NoExample => println!("NOT FOUND: {name}"),
            Verdict::Counterexample(path) => {
                println!("COUNTEREXAMPLE: {name}");
                for (i, action) in path.iter().enumerate() {
                    println!("  {:>2}. {action:?}", i + 1);
                }
            }
        }
    }
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
