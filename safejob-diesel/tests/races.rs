//! Races inside one store primitive, between two of its statements, on every backend.
//!
//! A store primitive that reads a row and then writes it conditionally must not trust what it
//! read once the write is done. These tests make another store act at exactly that moment: the
//! store under test has a diesel instrumentation probe that, after a chosen statement finishes,
//! runs one action of another store (its own pool, so its own connections) on the same database.

#[macro_use]
mod common;

use std::{
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use common::TestDb;
use diesel::connection::{Instrumentation, InstrumentationEvent};
use safejob_core::Retention;
use safejob_core::{
    KeyDigest, LeaseStore, StoreError,
    store::{
        AcquireRequest, Acquired, EffectsClaim, EffectsOutcome, FenceCheck, Finalized, Lease,
        Renewed,
    },
};
use safejob_diesel::{ConnectionRef, DieselStore};

const TTL: Duration = Duration::from_secs(30);

/// The prefix a trap waits for and its action.
type Armed = Option<(&'static str, Box<dyn FnOnce() + Send>)>;

/// One action, run once, after the first statement whose SQL starts with `prefix` finishes.
#[derive(Clone, Default)]
struct Trap {
    armed: Arc<Mutex<Armed>>,
}

impl Trap {
    fn arm(&self, prefix: &'static str, action: impl FnOnce() + Send + 'static) {
        *self.armed.lock().unwrap() = Some((prefix, Box::new(action)));
    }

    fn sprung(&self) -> bool {
        self.armed.lock().unwrap().is_none()
    }

    fn probe(&self) -> impl Instrumentation + Clone {
        let armed = self.armed.clone();
        move |event: InstrumentationEvent<'_>| {
            let InstrumentationEvent::FinishQuery { query, .. } = event else {
                return;
            };
            let sql = query.to_string();
            let mut slot = armed.lock().unwrap();
            if slot
                .as_ref()
                .is_some_and(|(prefix, _)| sql.starts_with(prefix))
            {
                let (_, action) = slot.take().unwrap();
                drop(slot);
                action();
            }
        }
    }
}

/// A second store on `db`'s database whose every connection carries `trap`'s probe.
fn trapped_store(db: &TestDb, trap: &Trap) -> DieselStore {
    let probe = trap.probe();
    db.builder_with(move |conn| {
        fn set(conn: &mut impl diesel::Connection, probe: impl Instrumentation) {
            conn.set_instrumentation(probe);
        }
        match conn {
            #[cfg(feature = "sqlite")]
            ConnectionRef::Sqlite(c) => set(*c, probe.clone()),
            #[cfg(feature = "postgres")]
            ConnectionRef::Postgres(c) => set(*c, probe.clone()),
            #[cfg(feature = "mysql")]
            ConnectionRef::Mysql(c) => set(*c, probe.clone()),
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        }
        Ok(())
    })
    .build()
    .expect("a second store")
}

fn request<'a>(key: &str, owner: &'a str, ttl: Duration) -> AcquireRequest<'a> {
    AcquireRequest {
        digest: KeyDigest::of(key),
        fingerprint: None,
        owner,
        ttl,
    }
}

fn grant(store: &dyn LeaseStore, req: &AcquireRequest<'_>) -> Lease {
    match store.acquire(req).expect("acquire") {
        Acquired::Granted(lease) => lease,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// `SELECT digest, fingerprint, …`: the row read of acquire and claim_effects.
const ROW_READ: &str = "SELECT digest, fingerprint";
/// The effects claim's conditional update.
const EFFECTS_CLAIM: &str = "UPDATE safe_jobs SET fence = fence + 1, effects = 'pending'";

on_every_backend! {
    // A takeover must find the lease still dead when it writes, not only when it read. Here the
    // holder renews between the taker's read (lease expired by the taker's clock) and its
    // takeover: the taker is told Busy and the holder keeps its fence. Catches a takeover
    // statement that no longer checks the lease at write time — tried with
    // `AND (state = 'released' OR 1 = 1)` in `sql.rs`'s takeover: the taker was granted fence 2
    // over a live lease.
    fn a_renew_between_read_and_takeover_wins(db: &TestDb) {
        let holder = db.store.clone();
        let req = request("race-renew", "holder", TTL);
        let held = grant(&*holder, &req);

        let trap = Trap::default();
        let taker = trapped_store(db, &trap);
        // By the taker's clock the holder's lease has expired.
        taker.advance_clock_for_tests(TTL + Duration::from_secs(60));
        let renewer = holder.clone();
        let lease = held.clone();
        trap.arm(ROW_READ, move || {
            // Live by the taker's clock too.
            let renewed = renewer.renew(&lease, Duration::from_secs(3600)).unwrap();
            assert!(matches!(renewed, Renewed::Extended(_)), "{renewed:?}");
        });

        let answer = taker.acquire(&request("race-renew", "taker", TTL)).unwrap();
        assert!(trap.sprung(), "the renew ran between read and takeover");
        assert!(matches!(answer, Acquired::Busy { .. }), "a live lease was taken over: {answer:?}");
        let row = holder.get(&held.digest).unwrap().unwrap();
        assert_eq!((row.fence, row.owner.as_deref()), (1, Some("holder")));
        assert_eq!(
            holder.finalize_succeeded(&held, None, TTL, Retention::Forever, None).unwrap(),
            Finalized::Committed
        );
    }

    // Two recoveries of one in-doubt key must never hold the same fence. Here another recovery
    // claims the key between our claim's conditional UPDATE (fence 1 → 2) and its read-back
    // (which finds fence 3): ours is lost, and we are told the effects are not in doubt (they
    // are the other recovery's now). Catches a claim_effects that builds its lease from the
    // fence it reads back — tried: both recoveries were Claimed with fence 3, and both would
    // have run on_succeeded_once.
    fn an_effects_claim_overtaken_before_its_read_back_is_lost(db: &TestDb) {
        let store = db.store.clone();
        let req = request("race-claim", "worker", TTL);
        let lease = grant(&*store, &req);
        assert_eq!(store.finalize_succeeded(&lease, None, TTL, Retention::Forever, None).unwrap(), Finalized::Committed);
        let doubt = EffectsOutcome::InDoubt { error: "worker died" };
        assert_eq!(store.finish_effects(&lease, doubt).unwrap(), FenceCheck::Applied);

        let trap = Trap::default();
        let ours = trapped_store(db, &trap);
        let theirs = store.clone();
        let won = Arc::new(Mutex::new(None));
        let record = won.clone();
        trap.arm(EFFECTS_CLAIM, move || {
            // Past our claim's window by the other recovery's clock: in doubt again for it.
            theirs.advance_clock_for_tests(TTL + Duration::from_secs(60));
            let claim = theirs.claim_effects(&request("race-claim", "theirs", TTL)).unwrap();
            *record.lock().unwrap() = Some(claim);
        });

        let answer = ours.claim_effects(&request("race-claim", "ours", TTL)).unwrap();
        assert!(trap.sprung(), "the other recovery ran between claim and read-back");
        let Some(EffectsClaim::Claimed(their_lease, _)) = won.lock().unwrap().take() else {
            panic!("the other recovery claimed the key");
        };
        assert_eq!(their_lease.fence, 3);
        match answer {
            EffectsClaim::NotInDoubt(row) => assert_eq!(row.fence, 3),
            EffectsClaim::Claimed(our_lease, _) => {
                panic!("both recoveries claimed: ours with fence {}, theirs with fence {}", our_lease.fence, their_lease.fence)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A session that holds a key's row lock and never finishes (a connection cut during COMMIT,
/// half-open on the server) must not block the settling release: with the store's lock timeout
/// the release fails in bounded time and works once the lock is gone. Catches the lock timeout
/// left out of the connection setup (`postgres.rs` / `mysql.rs` `init`) — tried on both: the
/// release waited behind the lock past the 20 s bound (PostgreSQL has no lock timeout at all).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn a_held_row_lock_cannot_block_the_release(db: &TestDb) {
    let lease = grant(&*db.store, &request("race-lock", "worker", TTL));
    let lock = format!(
        "UPDATE safe_jobs SET owner = owner WHERE digest = {}",
        db.blob(lease.digest.as_bytes())
    );
    let (locked, is_locked) = mpsc::channel();
    let (finish, finished) = mpsc::channel::<()>();
    let holder = db.store.clone();
    let blocker = thread::spawn(move || {
        holder
            .with_connection(|conn| {
                conn.batch_execute("BEGIN").unwrap();
                conn.batch_execute(&lock).unwrap();
                locked.send(()).unwrap();
                let _ = finished.recv_timeout(Duration::from_secs(60));
                conn.batch_execute("ROLLBACK").unwrap();
            })
            .unwrap();
    });
    is_locked.recv().unwrap();

    let settler = db
        .builder()
        .lock_timeout(Some(Duration::from_millis(500)))
        .build()
        .unwrap();
    let (answer, answered) = mpsc::channel();
    let to_release = lease.clone();
    thread::spawn(move || {
        let released = settler.release(&to_release, Some("finalize outcome unknown"));
        let _ = answer.send(released.map_err(|e: StoreError| e.to_string()));
    });
    let released = answered.recv_timeout(Duration::from_secs(20));
    finish.send(()).unwrap();
    blocker.join().unwrap();
    let released = released.expect("the release still waited behind the held row lock after 20 s");
    assert!(
        released.is_err(),
        "a blocked release cannot apply: {released:?}"
    );
    assert_eq!(
        db.store.release(&lease, None).unwrap(),
        FenceCheck::Applied,
        "once the lock is gone"
    );
}

#[cfg(feature = "postgres")]
#[test]
fn postgres_a_held_row_lock_cannot_block_the_release() {
    let Some(db) = common::postgres("held_lock") else {
        return;
    };
    a_held_row_lock_cannot_block_the_release(&db);
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_a_held_row_lock_cannot_block_the_release() {
    let Some(db) = common::mysql("held_lock") else {
        return;
    };
    a_held_row_lock_cannot_block_the_release(&db);
}
