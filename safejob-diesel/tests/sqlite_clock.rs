//! The SQLite store's clock is SQLite's `'now'`, read by SQLite inside the calling process: the
//! OS clock of the host the workers run on. Lease expiry is judged by it, so it must follow real
//! time, with no offset.
//!
//! What this catches: the SQLite `now` of `safejob-diesel/src/backend/dialect.rs` replaced by a
//! constant (`strftime('%Y-%m-%d %H:%M:%f', '2026-01-01 00:00:00')` instead of `'now'`): the
//! store clock is then far from the system clock and does not advance, and a 1 ms lease never
//! expires; or a test clock offset (`advance_clock_for_tests`, feature `test-util`) rendered into
//! a store that never asked for one: the store clock is then off the system clock by the offset.
//!
//! This test sleeps 200 ms to measure the clock's progress, not to wait for a lease (the other
//! tests move the store clock instead of sleeping).

mod common;

use std::{thread, time::Duration};

use chrono::{DateTime, Utc};
use safejob_core::{
    KeyDigest, LeaseStore,
    store::{AcquireRequest, Acquired},
};

/// How far the store clock may be from the system clock (both read on the same host).
const TOLERANCE: Duration = Duration::from_secs(1);

fn apart(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (a - b).abs().to_std().expect("a non-negative duration")
}

#[test]
fn sqlite_store_clock_follows_the_system_clock() {
    let db = common::sqlite("sqlite_clock");
    let store: &dyn LeaseStore = &*db.store;
    let acquire = |owner: &str, ttl: Duration| {
        store
            .acquire(&AcquireRequest {
                digest: KeyDigest::of("sqlite clock"),
                fingerprint: None,
                owner,
                ttl,
            })
            .expect("acquire")
    };
    let first = match acquire("w1", Duration::from_millis(1)) {
        Acquired::Granted(lease) => lease,
        other => panic!("a fresh key is granted, got {other:?}"),
    };
    assert_eq!(first.fence, 1);

    let store_before = store.now().expect("store clock");
    let system_before = Utc::now();
    assert!(
        apart(store_before, system_before) <= TOLERANCE,
        "store clock {store_before} vs system clock {system_before}: more than {TOLERANCE:?} apart"
    );

    thread::sleep(Duration::from_millis(200));

    let store_after = store.now().expect("store clock");
    let system_after = Utc::now();
    assert!(
        apart(store_after, system_after) <= TOLERANCE,
        "store clock {store_after} vs system clock {system_after}: more than {TOLERANCE:?} apart"
    );
    let advanced = store_after - store_before;
    assert!(
        advanced >= chrono::Duration::milliseconds(150) && advanced <= chrono::Duration::seconds(5),
        "the store clock advanced {advanced} over a 200 ms sleep ({store_before} → {store_after})"
    );

    // The 1 ms lease expired by the store clock during the sleep: a second worker takes it over.
    match acquire("w2", Duration::from_secs(30)) {
        Acquired::Granted(lease) => {
            assert_eq!(lease.fence, 2, "a takeover bumps the fence");
            assert_eq!(lease.owner, "w2");
        }
        other => panic!("a 1 ms lease is taken over 200 ms later, got {other:?}"),
    }
}
