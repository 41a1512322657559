//! How a user tests their own job with `safejob-test-kit`: a refund job whose ledger must be
//! credited exactly once per refund, however often the queue redelivers it and wherever the
//! workers die.

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use safejob_core::{
    EffectsContext, Fingerprint, FingerprintError, IdempotencyKey, KeyError, LeaseStore,
    ListFilter, ListQuery, Outcome, PerformContext, Recovery, Report, RunError, Runner, SafeJob,
};
use safejob_test_kit::{
    EffectProbe, MemoryHarness, StoreHarness, Torture, assert_exactly_once, assert_succeeded,
    check_at_most_once,
};
use serde_json::json;

/// The user's ledger: one posting per refund, and balances per customer.
#[derive(Default)]
struct Ledger {
    postings: Mutex<HashMap<u64, i64>>,
    balances: Mutex<HashMap<String, i64>>,
}

impl Ledger {
    fn credit(&self, refund_id: u64, customer: &str, cents: i64) {
        *self.postings.lock().unwrap().entry(refund_id).or_default() += 1;
        *self
            .balances
            .lock()
            .unwrap()
            .entry(customer.to_owned())
            .or_default() += cents;
    }

    fn postings_of(&self, refund_id: u64) -> i64 {
        self.postings
            .lock()
            .unwrap()
            .get(&refund_id)
            .copied()
            .unwrap_or(0)
    }

    /// The torture's effect counter: the postings of the refund a key names (`refund:<id>`).
    fn postings_of_key(&self, key: &IdempotencyKey) -> Result<u64, String> {
        let id = key
            .as_str()
            .strip_prefix("refund:")
            .and_then(|id| id.parse().ok())
            .ok_or("not a refund key")?;
        Ok(self.postings_of(id).unsigned_abs())
    }

    fn total(&self) -> i64 {
        self.balances.lock().unwrap().values().sum()
    }
}

/// The job under test: ask the gateway for the refund (retry-safe: the gateway deduplicates by
/// refund id), then credit the ledger once.
struct Refund<'a> {
    refund_id: u64,
    customer: String,
    cents: i64,
    ledger: &'a Ledger,
    gateway_calls: &'a AtomicU64,
    probe: EffectProbe,
}

impl SafeJob for Refund<'_> {
    type Error = io::Error;

    fn key(&self) -> Result<IdempotencyKey, KeyError> {
        IdempotencyKey::from_parts(["refund", &self.refund_id.to_string()])
    }

    fn fingerprint(&self) -> Result<Option<Fingerprint>, FingerprintError> {
        Fingerprint::of(&json!({"customer": self.customer, "cents": self.cents})).map(Some)
    }

    fn perform(&self, _: &mut PerformContext<'_>) -> Result<Outcome, Self::Error> {
        self.gateway_calls.fetch_add(1, Ordering::Relaxed);
        Ok(Outcome::json(
            json!({"gateway_ref": format!("re_{}", self.refund_id)}),
        ))
    }

    fn on_succeeded_once(&self, ctx: &mut EffectsContext<'_>) -> Result<(), Self::Error> {
        self.ledger
            .credit(self.refund_id, &self.customer, self.cents);
        self.probe.record(ctx.key());
        Ok(())
    }
}

const REFUNDS: u64 = 300;

fn refund<'a>(
    id: u64,
    ledger: &'a Ledger,
    calls: &'a AtomicU64,
    probe: &EffectProbe,
) -> Refund<'a> {
    Refund {
        refund_id: id,
        customer: format!("customer-{}", id % 17),
        cents: 100 + id as i64,
        ledger,
        gateway_calls: calls,
        probe: probe.clone(),
    }
}

#[test]
fn duplicates_and_crashes_credit_each_refund_once_after_reconciliation() {
    let harness = MemoryHarness::new();
    let ledger = Ledger::default();
    let calls = AtomicU64::new(0);
    let probe = EffectProbe::new();
    let report = Torture::new(&harness)
        .keys(REFUNDS as usize)
        .duplicates(6)
        .threads(4)
        .crash_rate(0.25)
        .seed(2026)
        // Check the ledger itself, not only the calls to on_succeeded_once: a posting made in
        // perform would fail the run.
        .count_effects(|key: &IdempotencyKey| ledger.postings_of_key(key))
        .run(|i| refund(i as u64, &ledger, &calls, &probe))
        .unwrap_or_else(|failure| panic!("{failure}"));
    println!("{report}");
    assert_eq!(report.succeeded, REFUNDS as usize);
    assert_eq!(report.effects_counted, Some(probe.total()));
    assert!(report.total_crashes() > 0 && report.duplicates_absorbed() > 0);
    assert!(
        report.effects_in_doubt > 0,
        "the seed should leave refunds to reconcile"
    );
    // perform may run more than once per refund (that is why it must be retry-safe) ...
    assert!(calls.load(Ordering::Relaxed) >= REFUNDS);

    let keys: Vec<IdempotencyKey> = (0..REFUNDS)
        .map(|id| refund(id, &ledger, &calls, &probe).key().unwrap())
        .collect();
    // ... but the ledger is never credited twice, even for refunds whose worker died mid-effects.
    check_at_most_once(&probe, &keys).unwrap();

    // The operator's reconciliation: every in-doubt refund is either confirmed (the posting is
    // there) or recovered (the posting is missing, so the effects run once more, deliberately).
    let store: Arc<dyn LeaseStore> = harness.store();
    let in_doubt: Vec<_> = store
        .list(&ListQuery::new(ListFilter::EffectsInDoubt, 1_000))
        .unwrap();
    assert_eq!(in_doubt.len(), report.effects_in_doubt);
    let operator = Runner::builder(store.clone())
        .worker_id("operator")
        .build()
        .unwrap();
    for id in 0..REFUNDS {
        let job = refund(id, &ledger, &calls, &probe);
        if !in_doubt
            .iter()
            .any(|row| row.digest == *job.key().unwrap().digest())
        {
            continue;
        }
        let resolved = if ledger.postings_of(id) == 1 {
            operator.confirm_effects(&job).unwrap()
        } else {
            operator.recover_effects(&job).unwrap()
        };
        assert!(
            matches!(resolved, Recovery::Resolved { .. }),
            "{resolved:?}"
        );
    }

    assert_succeeded(&*store, &keys);
    assert_exactly_once(&probe, &keys);
    let expected: i64 = (0..REFUNDS).map(|id| 100 + id as i64).sum();
    assert_eq!(ledger.total(), expected);
}

#[test]
fn a_redelivered_refund_replays_and_a_changed_amount_is_refused() {
    let harness = MemoryHarness::new();
    let ledger = Ledger::default();
    let calls = AtomicU64::new(0);
    let probe = EffectProbe::new();
    let runner = Runner::builder(harness.store()).build().unwrap();
    let job = refund(7, &ledger, &calls, &probe);
    assert!(matches!(
        runner.run(&job).unwrap(),
        Report::Succeeded { attempt: 1, .. }
    ));
    assert_eq!(
        runner.run(&job).unwrap(),
        Report::AlreadySucceeded {
            result: Some(json!({"gateway_ref": "re_7"}))
        }
    );
    let tampered = Refund {
        cents: 1_000_000,
        ..refund(7, &ledger, &calls, &probe)
    };
    assert!(matches!(
        runner.run(&tampered),
        Err(RunError::KeyConflict { .. })
    ));
    assert_exactly_once(&probe, [job.key().unwrap()]);
    assert_eq!(ledger.total(), 107);
}
