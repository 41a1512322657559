//! What only one backend has: SQLite pragmas, MySQL's affected-rows semantics, a connection lost
//! during COMMIT.

#[macro_use]
mod common;

use std::time::Duration;

use safejob_core::Retention;
use safejob_core::{
    KeyDigest, LeaseStore,
    store::{AcquireRequest, Acquired, Lease},
};
// What only the server backends' modules below use.
#[cfg(any(feature = "mysql", feature = "postgres"))]
use safejob_core::store::{EffectsAborted, FenceCheck, Finalized, JobState, Renewed};

const TTL: Duration = Duration::from_secs(30);

fn grant(store: &dyn LeaseStore, key: &str) -> Lease {
    let req = AcquireRequest {
        digest: KeyDigest::of(key),
        fingerprint: None,
        owner: "w1",
        ttl: TTL,
    };
    match store.acquire(&req).expect("acquire") {
        Acquired::Granted(lease) => lease,
        other => panic!("expected a grant, got {other:?}"),
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use safejob_diesel::SqliteSynchronous;

    use super::common;

    #[test]
    fn connections_use_wal_full_sync_and_a_busy_timeout() {
        let db = common::sqlite("pragmas");
        assert_eq!(
            db.query_i64(
                "SELECT COUNT(*) AS n FROM pragma_journal_mode WHERE journal_mode = 'wal'"
            ),
            1
        );
        assert_eq!(
            db.query_i64("SELECT synchronous AS n FROM pragma_synchronous"),
            2,
            "FULL"
        );
        assert_eq!(
            db.query_i64("SELECT timeout AS n FROM pragma_busy_timeout"),
            30_000,
            "the default busy timeout is 30 s"
        );
    }

    #[test]
    fn normal_sync_is_an_explicit_opt_in() {
        let db = common::sqlite_with("pragmas_normal", |b| {
            b.sqlite_synchronous(SqliteSynchronous::Normal)
                .sqlite_busy_timeout(std::time::Duration::from_millis(1500))
        });
        assert_eq!(
            db.query_i64("SELECT synchronous AS n FROM pragma_synchronous"),
            1,
            "NORMAL"
        );
        assert_eq!(
            db.query_i64("SELECT timeout AS n FROM pragma_busy_timeout"),
            1500
        );
    }

    #[test]
    fn timestamps_are_stored_as_sortable_utc_text() {
        let db = common::sqlite("timestamps");
        super::grant(&*db.store, "k");
        assert_eq!(
            db.count("lease_expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]' AND lease_expires_at > created_at"),
            1
        );
    }
}

/// diesel connects to MySQL with CLIENT_FOUND_ROWS: an UPDATE reports the rows it *matched*. A
/// fenced write that rewrites identical values (a renew landing in the same microsecond, an
/// identical re-finalize inside one transaction) therefore still reports 1 and cannot be
/// mistaken for a stale fence; without the flag it would report 0.
#[cfg(feature = "mysql")]
mod mysql {
    use super::*;

    #[test]
    fn updates_report_found_rows_not_changed_rows() {
        let Some(db) = common::mysql("found_rows") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        let same = format!(
            "UPDATE safe_jobs SET state = state, fence = fence WHERE digest = {}",
            db.blob(lease.digest.as_bytes())
        );
        assert_eq!(
            db.execute(&same),
            1,
            "an unchanged row still counts as matched"
        );
        let none = format!(
            "UPDATE safe_jobs SET state = state WHERE digest = {} AND fence = 99",
            db.blob(lease.digest.as_bytes())
        );
        assert_eq!(db.execute(&none), 0);
    }

    #[test]
    fn back_to_back_renews_and_a_re_finalize_answer_truthfully() {
        let Some(db) = common::mysql("renew_twice") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        for _ in 0..5 {
            assert!(matches!(
                db.store.renew(&lease, TTL).unwrap(),
                Renewed::Extended(_)
            ));
        }
        assert_eq!(
            db.store
                .finalize_succeeded(&lease, None, TTL, Retention::Forever, None)
                .unwrap(),
            Finalized::Committed
        );
        assert_eq!(
            db.store
                .finalize_succeeded(&lease, None, TTL, Retention::Forever, None)
                .unwrap(),
            Finalized::Stale
        );
        assert_eq!(db.store.renew(&lease, TTL).unwrap(), Renewed::Stale);
        assert_eq!(db.store.release(&lease, None).unwrap(), FenceCheck::Stale);
    }

    /// A lock-wait timeout (1205) on a store statement is retried inside the store, never
    /// surfaced: here another session holds the row lock past the store's 1 s lock wait once.
    #[test]
    fn lock_wait_timeouts_are_retried_inside_the_store() {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };

        use diesel::connection::{InstrumentationEvent, SimpleConnection};
        use safejob_diesel::ConnectionRef;

        let Some(db) = common::mysql("lock_wait") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        let renews = Arc::new(AtomicUsize::new(0));
        let counter = renews.clone();
        let store = db
            .builder_with(move |conn| {
                let ConnectionRef::Mysql(c) = conn else {
                    unreachable!()
                };
                c.batch_execute("SET SESSION innodb_lock_wait_timeout = 1")?;
                let counter = counter.clone();
                diesel::Connection::set_instrumentation(
                    &mut **c,
                    move |event: InstrumentationEvent<'_>| {
                        if let InstrumentationEvent::StartQuery { query, .. } = event
                            && query
                                .to_string()
                                .starts_with("UPDATE safe_jobs SET lease_expires_at")
                        {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                );
                Ok(())
            })
            .max_size(1)
            .build()
            .expect("store with a 1 s lock wait");
        // Another session locks the row, and lets go only after the store's first wait timed out.
        let mut holder =
            <diesel::MysqlConnection as diesel::Connection>::establish(&db.url).unwrap();
        holder
            .batch_execute(&format!(
                "BEGIN; SELECT fence FROM safe_jobs WHERE digest = {} FOR UPDATE",
                db.blob(lease.digest.as_bytes())
            ))
            .unwrap();
        let watched = renews.clone();
        let release = std::thread::spawn(move || {
            while watched.load(Ordering::SeqCst) < 2 {
                std::thread::yield_now();
            }
            holder.batch_execute("COMMIT").unwrap();
        });
        let renewed = store.renew(&lease, TTL);
        release.join().unwrap();
        assert!(matches!(renewed, Ok(Renewed::Extended(_))), "{renewed:?}");
        assert!(
            renews.load(Ordering::SeqCst) >= 2,
            "the renew was not retried"
        );
    }

    /// The connection dies under the hook. The store finds out at the confirm, before it sends
    /// COMMIT, so the finalize certainly did not commit: the effects are reported aborted (not
    /// an ambiguous commit, as when the store found out at COMMIT itself, before the confirm),
    /// and the broken connection is not pooled. A connection cut during COMMIT is proved
    /// ambiguous by the fault proxy (`tests/proxy.rs`).
    #[test]
    fn a_connection_lost_under_the_hook_aborts_the_effects() {
        let Some(db) = common::mysql("lost_under_hook") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        let mut hook = |tx: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
            use diesel::connection::SimpleConnection;
            let conn = tx
                .downcast_mut::<diesel::MysqlConnection>()
                .expect("a MySQL connection");
            // The server drops this very connection; the store only finds out at COMMIT.
            let _ = conn.batch_execute("KILL CONNECTION CONNECTION_ID()");
            Ok(())
        };
        let finalized = db
            .store
            .finalize_succeeded(&lease, None, TTL, Retention::Forever, Some(&mut hook))
            .unwrap();
        assert_eq!(finalized, Finalized::EffectsAborted);
        assert_eq!(
            db.store.get(&lease.digest).unwrap().unwrap().state,
            JobState::Running
        );
        assert_eq!(db.store.release(&lease, None).unwrap(), FenceCheck::Applied);
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    /// As on MySQL: the store finds the connection gone at the confirm, before COMMIT, so the
    /// effects are aborted for certain rather than an ambiguous commit.
    #[test]
    fn a_connection_lost_under_the_hook_aborts_the_effects() {
        let Some(db) = common::postgres("lost_under_hook") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        let mut hook = |tx: &mut dyn std::any::Any| -> Result<(), EffectsAborted> {
            use diesel::connection::SimpleConnection;
            let conn = tx
                .downcast_mut::<diesel::PgConnection>()
                .expect("a PostgreSQL connection");
            // The server terminates this very backend; the store only finds out at COMMIT.
            let _ = conn.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())");
            Ok(())
        };
        let finalized = db
            .store
            .finalize_succeeded(&lease, None, TTL, Retention::Forever, Some(&mut hook))
            .unwrap();
        assert_eq!(finalized, Finalized::EffectsAborted);
        // The broken connection was not pooled: the store keeps working.
        assert_eq!(
            db.store.get(&lease.digest).unwrap().unwrap().state,
            JobState::Running
        );
        assert_eq!(db.store.release(&lease, None).unwrap(), FenceCheck::Applied);
    }

    #[test]
    fn timestamps_come_from_the_database_clock() {
        let Some(db) = common::postgres("db_clock") else {
            return;
        };
        let lease = grant(&*db.store, "k");
        // The stored expiry is exactly the lease's and exactly the ttl after the row's creation,
        // both written by now() in one statement.
        let row = db.store.get(&lease.digest).unwrap().unwrap();
        assert_eq!(row.lease_expires_at, Some(lease.expires_at));
        assert_eq!(
            lease.expires_at - row.created_at,
            chrono::Duration::seconds(30)
        );
    }
}
