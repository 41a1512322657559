//! Adapting a queue we do not own: payments from a Redis Streams consumer group, exactly once.
//!
//! ```sh
//! cargo run --example redis_streams --features safejob-examples/redis
//! ```
//!
//! Needs a Redis at `SAFEJOB_REDIS_URL` (default `redis://127.0.0.1:6379`). The store is a
//! SQLite file under `target/`; `SAFEJOB_STORE_URL=postgres://…` (with
//! `--features safejob-examples/redis,safejob-examples/postgres`) puts it on PostgreSQL instead.
//!
//! Two producers `XADD` 40 payments, most of them several times (the same payment id, so the same
//! idempotency key), plus two poison entries. Five consumers in one group `XREADGROUP` and run
//! every entry through the guard. Two of them die: one right after reading its first batch, one
//! after running a payment but before its `XACK`. Their entries stay in their pending lists until
//! the survivors take them over with `XAUTOCLAIM`; the payment that had already succeeded is
//! replayed and acked, not paid twice. Each payment's ledger row is written by
//! `on_succeeded_once` inside the finalize transaction, and the final check reads the ledger and
//! the guard's rows back from the database. The stream is unique to the run and deleted at the
//! end.

use std::{collections::BTreeSet, path::PathBuf, sync::Arc, time::Duration};

use safejob_core::{EffectsMode, JobState, LeaseStore, Runner, SafeJob};
use safejob_diesel::DieselStore;
use safejob_examples::{
    redis_queue::{
        self, BoxError, ConsumeStats, ConsumerSpec, Crash, Payment, PaymentMsg, Settings, Streams,
    },
    shuffle,
};

/// Distinct payments.
const PAYMENTS: usize = 40;
/// Accounts credited.
const ACCOUNTS: [&str; 3] = ["acme", "globex", "initech"];

fn main() -> Result<(), BoxError> {
    let url = redis_queue::redis_url();
    let mut conn = redis_queue::connect(&url).map_err(|e| {
        format!(
            "Redis not reachable at {}: {e} (start one, or set SAFEJOB_REDIS_URL)",
            redis_queue::redact(&url)
        )
    })?;
    let streams = Streams::unique("safejob:example:payments");
    streams.create(&mut conn)?;
    println!(
        "redis: {}, stream {}",
        redis_queue::redact(&url),
        streams.stream
    );
    let outcome = run(&url, &streams, &mut conn);
    // Clean up whatever happened.
    let deleted = streams.delete(&mut conn)?;
    println!("cleaned up: {deleted} streams deleted");
    outcome
}

fn run(url: &str, streams: &Streams, conn: &mut redis::Connection) -> Result<(), BoxError> {
    let store_url = match std::env::var("SAFEJOB_STORE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => format!("sqlite://{}", database_path()?.display()),
    };
    let store = Arc::new(DieselStore::connect(&store_url)?);
    println!("store: {}", store.target());
    store.migrate()?;
    redis_queue::create_ledger(&store)?;

    // The payments, each sent 1 to 4 times, in a shuffled order, plus two poison entries: one
    // whose id is not a valid idempotency key, one with no amount.
    let payments: Vec<PaymentMsg> = (0..PAYMENTS)
        .map(|i| PaymentMsg {
            id: format!("pay_{i:04}"),
            account: ACCOUNTS[i % ACCOUNTS.len()].to_owned(),
            cents: 500 + 125 * (i as i64 % 9),
        })
        .collect();
    let mut entries: Vec<Vec<(&'static str, String)>> = payments
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n(p.fields(), 1 + i % 4))
        .collect();
    shuffle(&mut entries, 0x5afe_5eed);
    entries.push(
        PaymentMsg {
            id: "pay_\u{7}bell".into(),
            account: "acme".into(),
            cents: 100,
        }
        .fields(),
    );
    entries.push(vec![
        ("id", "pay_no_amount".into()),
        ("account", "acme".into()),
    ]);
    let produced = redis_queue::produce(url, streams, &entries, 2)?;
    println!(
        "messages produced: {produced} by 2 producers ({PAYMENTS} distinct keys, {} duplicates, 2 poison)",
        produced - PAYMENTS - 2
    );

    let consumers = [
        ConsumerSpec::crashing("crash-after-read", Crash::AfterRead, 0),
        ConsumerSpec::crashing("crash-before-ack", Crash::BeforeAck, 3),
        ConsumerSpec::survivor("survivor-1"),
        ConsumerSpec::survivor("survivor-2"),
        ConsumerSpec::survivor("survivor-3"),
    ];
    let settings = Settings {
        min_idle: Duration::from_millis(500),
        ..Settings::default()
    };
    let run = streams.stream.clone();
    let stats = redis_queue::consume(
        url,
        streams,
        &consumers,
        produced,
        &settings,
        |name| -> Result<Runner, BoxError> {
            Ok(Runner::builder(store.clone())
                .worker_id(name)
                .effects(EffectsMode::Transactional)
                .build()?)
        },
        |entry| {
            PaymentMsg::decode(entry).map(|msg| Payment {
                run: run.clone(),
                msg,
            })
        },
    )?;
    report(&stats, produced, &settings);
    println!(
        "left in any pending list: {}, in the dead-letter stream: {}",
        streams.pending(conn)?,
        streams.dead_letters(conn)?
    );
    let once = verify(&store, streams, &payments)?;
    println!(
        "redis: deliveries {}, duplicates injected {}, consumer kills {}, succeeded exactly once {once} of {PAYMENTS}",
        stats.deliveries,
        produced - PAYMENTS - 2,
        stats.crashes
    );
    Ok(())
}

fn report(stats: &ConsumeStats, produced: usize, settings: &Settings) {
    println!(
        "consumers: 5 in one group, {} crashed leaving {} entries unacknowledged",
        stats.crashes, stats.abandoned
    );
    println!(
        "deliveries: {} (including {} redeliveries)",
        stats.deliveries,
        stats.deliveries.saturating_sub(produced)
    );
    println!(
        "succeeded now: {}, duplicates absorbed: {}, left pending for a retry: {}",
        stats.succeeded, stats.absorbed, stats.left_pending
    );
    println!(
        "reclaimed via XAUTOCLAIM (min-idle {:?}): {}, of which already succeeded (replayed, acked): {}",
        settings.min_idle, stats.reclaimed, stats.replayed_after_reclaim
    );
    println!(
        "acked: {}, dead-lettered: {}",
        stats.acked, stats.dead_lettered
    );
}

/// Reads the truth back from the database: the guard's row of every key, and the ledger. Returns
/// how many keys succeeded and were posted exactly once (all of them, or an error).
fn verify(
    store: &DieselStore,
    streams: &Streams,
    payments: &[PaymentMsg],
) -> Result<usize, BoxError> {
    let rows = redis_queue::ledger_rows(store, &streams.stream)?;
    let postings = redis_queue::postings_per_payment(&rows);
    let mut exactly_once = 0;
    for payment in payments {
        let job = Payment {
            run: streams.stream.clone(),
            msg: payment.clone(),
        };
        let row = store.get(job.key()?.digest())?;
        let succeeded = row.is_some_and(|r| r.state == JobState::Succeeded);
        if succeeded && postings.get(payment.id.as_str()) == Some(&1) {
            exactly_once += 1;
        }
    }
    let distinct: BTreeSet<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let posted: i64 = rows.iter().map(|(_, cents)| cents).sum();
    let expected: i64 = payments.iter().map(|p| p.cents).sum();
    println!(
        "ledger rows: {} for {} distinct payments; posted {:.2}, expected {:.2}",
        rows.len(),
        distinct.len(),
        posted as f64 / 100.0,
        expected as f64 / 100.0
    );
    println!(
        "succeeded exactly once: {exactly_once} of {} keys",
        payments.len()
    );
    if exactly_once != payments.len() || rows.len() != payments.len() || posted != expected {
        return Err("a payment was lost or applied twice".into());
    }
    Ok(exactly_once)
}

/// `<dir of this binary>/../safejob-redis-streams.db`, i.e. under `target/<profile>/`.
fn database_path() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|examples| examples.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("safejob-redis-streams.db"))
}
