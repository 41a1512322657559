//! Shared pieces of the examples: an at-least-once dispatcher that delivers every job several
//! times from several threads, the way a real queue does on a bad day.

use std::{
    collections::VecDeque,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use safejob_core::{Disposition, Report, Runner, SafeJob};

/// What a dispatch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchStats {
    /// Deliveries that ran the job to success (at most one per key).
    pub succeeded: usize,
    /// Deliveries answered with the stored result: duplicates absorbed.
    pub absorbed: usize,
    /// Deliveries that found the key busy and were redelivered later.
    pub busy: usize,
    /// Deliveries that failed with a retryable error and were redelivered later.
    pub retried: usize,
}

/// Delivers each of `jobs` `copies` times, shuffled by `seed`, from `threads` threads through
/// `runner`. A delivery that finds the key busy or fails retryably goes to the back of the queue,
/// as a queue's redelivery would. Returns an error on any other report.
pub fn dispatch<J: SafeJob + Sync>(
    runner: &Runner,
    jobs: &[J],
    copies: usize,
    threads: usize,
    seed: u64,
) -> Result<DispatchStats, String> {
    let mut deliveries: Vec<usize> = (0..jobs.len())
        .flat_map(|i| std::iter::repeat_n(i, copies))
        .collect();
    shuffle(&mut deliveries, seed);
    let queue = Mutex::new(VecDeque::from(deliveries));
    let counters: [AtomicUsize; 4] = Default::default();
    let [succeeded, absorbed, busy, retried] = &counters;
    let outcome = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), String> {
                    loop {
                        let Some(i) = queue.lock().map_err(|e| e.to_string())?.pop_front() else {
                            return Ok(());
                        };
                        let (counter, redeliver) = match runner.run(&jobs[i]) {
                            Ok(Report::Succeeded { .. }) => (succeeded, false),
                            Ok(Report::AlreadySucceeded { .. }) => (absorbed, false),
                            Ok(Report::Busy { .. }) => (busy, true),
                            Err(e) if e.disposition() != Disposition::DeadLetter => (retried, true),
                            Ok(other) => return Err(format!("unexpected report {other:?}")),
                            Err(e) => return Err(format!("job failed for good: {e}")),
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        if redeliver {
                            queue.lock().map_err(|e| e.to_string())?.push_back(i);
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a worker panicked".into())))
            .collect::<Result<Vec<()>, String>>()
    });
    outcome?;
    Ok(DispatchStats {
        succeeded: succeeded.load(Ordering::Relaxed),
        absorbed: absorbed.load(Ordering::Relaxed),
        busy: busy.load(Ordering::Relaxed),
        retried: retried.load(Ordering::Relaxed),
    })
}

/// A deterministic Fisher–Yates shuffle driven by a small LCG (the examples need no `rand`).
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_deterministic_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..100).collect::<Vec<_>>());
    }
}

pub mod wallet {
    //! The wallet examples, shared by the SQLite and PostgreSQL versions: the same jobs, the same
    //! driver, the same final check. Only how each binary connects differs.
    //!
    //! [`Charge`] debits a wallet in the finalize transaction (it chooses
    //! `EffectsMode::Transactional` itself) through the backend-neutral [`EffectsTx`]: no connection
    //! type, no bind syntax, so the one definition runs on SQLite and on PostgreSQL. [`Receipt`]
    //! sends the charge's receipt after commit, the runner's default: an e-mail cannot roll back
    //! with a transaction. Both run on one [`Runner`].

    use std::{collections::BTreeMap, error::Error, sync::Mutex};

    use diesel::{
        QueryableByName, RunQueryDsl,
        sql_types::{BigInt, Text},
    };
    use safejob_core::{
        EffectsContext, EffectsMode, Fingerprint, FingerprintError, IdempotencyKey, KeyError,
        LeaseStore, ListFilter, ListQuery, Outcome, PerformContext, Runner, SafeJob,
    };
    use safejob_diesel::{
        ConnectionRef, DieselStore, EffectsTx, EffectsTxError, TransactionExt, TxError,
    };

    use crate::{DispatchStats, dispatch};

    /// The wallets charged.
    pub const WALLETS: [&str; 4] = ["alice", "bob", "carol", "dave"];
    /// Each wallet's balance before any charge, in cents.
    pub const OPENING_BALANCE: i64 = 100_000;
    /// How many charges there are.
    pub const CHARGES: usize = 60;
    /// How many times the queue delivers each charge.
    pub const DELIVERIES_PER_CHARGE: usize = 4;
    /// Dispatching threads.
    pub const THREADS: usize = 8;

    /// One charge: debit `cents` from `wallet`, once per `id`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ChargeSpec {
        /// The charge id (the idempotency key's second part).
        pub id: String,
        /// The wallet debited.
        pub wallet: &'static str,
        /// The amount in cents.
        pub cents: i64,
    }

    /// The same 60 charges on every run, so a second run can prove nothing is charged twice.
    pub fn charges() -> Vec<ChargeSpec> {
        (0..CHARGES)
            .map(|i| ChargeSpec {
                id: format!("ch_{i:04}"),
                wallet: WALLETS[i % WALLETS.len()],
                cents: 100 + 25 * (i as i64 % 7),
            })
            .collect()
    }

    /// A charge's effects could not be written.
    #[derive(Debug, thiserror::Error)]
    pub enum ChargeError {
        /// Not inside a finalize transaction of a `DieselStore`.
        #[error(transparent)]
        NoTransaction(#[from] TxError),
        /// The database refused a write (the finalize rolls back; the charge is retried).
        #[error("ledger write failed: {0}")]
        Ledger(#[from] EffectsTxError),
        /// The wallet has no row.
        #[error("unknown wallet {0}")]
        UnknownWallet(&'static str),
    }

    /// Debits a wallet once per charge id: the ledger row and the balance update commit with
    /// the charge's `succeeded`, or not at all. The same code on every backend.
    pub struct Charge(pub ChargeSpec);

    impl SafeJob for Charge {
        type Error = ChargeError;

        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["charge", &self.0.id])
        }

        // The same charge id with another wallet or amount is a key conflict, not a replay.
        fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
            Fingerprint::of(&(self.0.wallet, self.0.cents)).map(Some)
        }

        // Money moves in the finalize transaction, whatever the runner's default.
        fn effects_mode(&self) -> Option<EffectsMode> {
            Some(EffectsMode::Transactional)
        }

        fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            // Retry-safe work goes here: validate, price, call a gateway with an idempotency key.
            Ok(Outcome::json(
                serde_json::json!({ "wallet": self.0.wallet, "cents": self.0.cents }),
            ))
        }

        fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
            let fence = i64::try_from(ctx.fence()).unwrap_or(i64::MAX);
            let mut tx: EffectsTx<'_> = ctx.effects_tx()?;
            tx.insert(
                "wallet_ledger",
                &[
                    ("charge_id", (&self.0.id).into()),
                    ("wallet", self.0.wallet.into()),
                    ("cents", (-self.0.cents).into()),
                    ("fence", fence.into()),
                ],
            )?;
            let debited = tx.execute(
                "UPDATE wallets SET balance_cents = balance_cents - ? WHERE id = ?",
                &[self.0.cents.into(), self.0.wallet.into()],
            )?;
            if debited != 1 {
                return Err(ChargeError::UnknownWallet(self.0.wallet));
            }
            Ok(())
        }
    }

    /// The receipts "sent" (counted per charge id): the stand-in for an e-mail service.
    #[derive(Debug, Default)]
    pub struct Mailer {
        sent: Mutex<BTreeMap<String, u32>>,
    }

    impl Mailer {
        /// Receipts sent, and the most sent for one charge.
        pub fn sent(&self) -> (u32, u32) {
            let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            (
                sent.values().sum(),
                sent.values().copied().max().unwrap_or(0),
            )
        }
    }

    /// The receipt could not be sent.
    #[derive(Debug, thiserror::Error)]
    #[error("the receipt could not be sent")]
    pub struct ReceiptError;

    /// Sends a charge's receipt once, after commit (no `effects_mode` of its own: the runner's
    /// default, `AfterCommit`). A crash inside leaves the key in doubt for an operator, never
    /// sent twice.
    pub struct Receipt<'a> {
        /// The charge the receipt is for.
        pub charge: ChargeSpec,
        /// Where it is sent.
        pub mailer: &'a Mailer,
    }

    impl SafeJob for Receipt<'_> {
        type Error = ReceiptError;

        fn key(&self) -> Result<IdempotencyKey, KeyError> {
            IdempotencyKey::from_parts(["receipt", &self.charge.id])
        }

        fn perform(&self, _ctx: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
            Ok(Outcome::done())
        }

        fn on_succeeded_once(&self, _ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
            let mut sent = self.mailer.sent.lock().map_err(|_| ReceiptError)?;
            *sent.entry(self.charge.id.clone()).or_default() += 1;
            Ok(())
        }
    }

    /// The tables, written in the SQL that SQLite and PostgreSQL share; each run adds only what
    /// is missing.
    pub const SCHEMA: &str = "
        CREATE TABLE IF NOT EXISTS wallets (
            id VARCHAR(64) PRIMARY KEY, balance_cents BIGINT NOT NULL);
        CREATE TABLE IF NOT EXISTS wallet_ledger (
            charge_id VARCHAR(64) PRIMARY KEY, wallet VARCHAR(64) NOT NULL,
            cents BIGINT NOT NULL, fence BIGINT NOT NULL);";

    /// Creates the tables and the wallets (a no-op when they exist), dispatches every charge and
    /// every receipt [`DELIVERIES_PER_CHARGE`] times from [`THREADS`] threads through one
    /// runner, and checks that every charge was applied exactly once and no receipt was sent
    /// twice. `store` is migrated already.
    pub fn run(store: std::sync::Arc<DieselStore>) -> Result<(), Box<dyn Error>> {
        store.with_connection(|conn| -> diesel::QueryResult<()> {
            conn.batch_execute(SCHEMA)?;
            for wallet in WALLETS {
                conn.batch_execute(&format!(
                    "INSERT INTO wallets (id, balance_cents) VALUES ('{wallet}', {OPENING_BALANCE}) \
                     ON CONFLICT (id) DO NOTHING"
                ))?;
            }
            Ok(())
        })??;

        if !store.list(&ListQuery::new(ListFilter::All, 1))?.is_empty() {
            println!("(a previous run already guarded these keys: expect replays)");
        }
        // One runner, default effects after commit: the charge asks for its own transaction.
        let runner = Runner::builder(store.clone()).build()?;
        let charges: Vec<Charge> = charges().into_iter().map(Charge).collect();
        let stats = dispatch(
            &runner,
            &charges,
            DELIVERIES_PER_CHARGE,
            THREADS,
            0x5afe_0b5e,
        )?;
        let mailer = Mailer::default();
        let receipts: Vec<Receipt<'_>> = charges
            .iter()
            .map(|c| Receipt {
                charge: c.0.clone(),
                mailer: &mailer,
            })
            .collect();
        let receipt_stats = dispatch(&runner, &receipts, DELIVERIES_PER_CHARGE, THREADS, 0x0b5e)?;
        let observed = store.with_connection(observe)??;
        report(&stats, &observed)?;
        let (sent, most) = mailer.sent();
        println!("receipts sent now: {sent} (after commit), at most {most} per charge");
        if most > 1 || sent as usize != receipt_stats.succeeded {
            return Err("a receipt was sent twice or lost".into());
        }
        Ok(())
    }

    #[derive(QueryableByName)]
    struct Balance {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = BigInt)]
        balance_cents: i64,
    }

    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }

    /// Reads the balances and the ledger. Reads are diesel's, on the backend's own connection
    /// type: the one generic function serves both arms.
    fn observe(conn: &mut ConnectionRef<'_>) -> diesel::QueryResult<Observed> {
        match conn {
            ConnectionRef::Sqlite(conn) => observe_on(*conn),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(conn) => observe_on(*conn),
            #[allow(unreachable_patterns)]
            _ => Err(diesel::result::Error::NotFound),
        }
    }

    fn observe_on<C>(conn: &mut C) -> diesel::QueryResult<Observed>
    where
        C: diesel::Connection,
        diesel::query_builder::SqlQuery: for<'q> diesel::query_dsl::LoadQuery<'q, C, Balance>
            + for<'q> diesel::query_dsl::LoadQuery<'q, C, Count>,
    {
        let count = |conn: &mut C, sql: &str| -> diesel::QueryResult<i64> {
            let rows: Vec<Count> = diesel::sql_query(sql).load(conn)?;
            Ok(rows.first().map_or(0, |c| c.n))
        };
        let balances: Vec<Balance> =
            diesel::sql_query("SELECT id, balance_cents FROM wallets ORDER BY id").load(conn)?;
        Ok(Observed {
            balances: balances
                .into_iter()
                .map(|b| (b.id, b.balance_cents))
                .collect(),
            ledger_rows: count(conn, "SELECT COUNT(*) AS n FROM wallet_ledger")?,
            distinct_charges: count(
                conn,
                "SELECT COUNT(DISTINCT charge_id) AS n FROM wallet_ledger",
            )?,
        })
    }

    /// What the database says after the dispatch.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Observed {
        /// `(wallet, balance in cents)` for every wallet.
        pub balances: Vec<(String, i64)>,
        /// Rows in the ledger.
        pub ledger_rows: i64,
        /// Distinct charge ids in the ledger.
        pub distinct_charges: i64,
    }

    /// Prints the figures and checks that every charge was applied exactly once.
    pub fn report(stats: &DispatchStats, observed: &Observed) -> Result<(), String> {
        let specs = charges();
        let mut expected: BTreeMap<&str, i64> =
            WALLETS.iter().map(|w| (*w, OPENING_BALANCE)).collect();
        for charge in &specs {
            *expected.entry(charge.wallet).or_default() -= charge.cents;
        }
        println!(
            "deliveries: {} ({} charges x {DELIVERIES_PER_CHARGE}) on {THREADS} threads",
            specs.len() * DELIVERIES_PER_CHARGE,
            specs.len()
        );
        println!(
            "charged now: {}, duplicates absorbed: {}, redelivered while busy: {}, after a retryable error: {}",
            stats.succeeded, stats.absorbed, stats.busy, stats.retried
        );
        let mut all_match = observed.balances.len() == WALLETS.len();
        for (wallet, balance) in &observed.balances {
            let want = expected.get(wallet.as_str()).copied().unwrap_or_default();
            all_match &= want == *balance;
            println!(
                "  {wallet:<6} balance {:>8.2}  (expected {:>8.2}) {}",
                *balance as f64 / 100.0,
                want as f64 / 100.0,
                if want == *balance { "ok" } else { "WRONG" }
            );
        }
        println!(
            "ledger rows: {} for {} distinct charges; charged twice: {}",
            observed.ledger_rows,
            observed.distinct_charges,
            observed.ledger_rows - observed.distinct_charges
        );
        let n = specs.len() as i64;
        if !all_match || observed.ledger_rows != n || observed.distinct_charges != n {
            return Err("a charge was lost or applied twice".into());
        }
        println!("every charge applied exactly once. Run again: nothing is charged twice.");
        Ok(())
    }
}

// Adapting a queue we do not own: a Redis Streams consumer group behind the guard, shared by the
// `redis_streams` example and test (documented in the module itself).
#[cfg(feature = "redis")]
pub mod redis_queue;

// The RabbitMQ and NATS consumer examples' guarded credit, store and final check.
#[cfg(any(feature = "rabbitmq", feature = "nats"))]
pub mod broker_credits;

// Charging from async handlers: an axum service whose handlers run and enqueue guarded jobs
// through safejob-tokio, shared by the `axum_charge` example and test.
#[cfg(feature = "axum")]
pub mod charges_api;
