//! PostgreSQL wake-ups: a background thread holding one pooled connection that `LISTEN`s on the
//! queue's channel and wakes the subscribed workers when a job may be claimable.
//!
//! diesel 2.3 has `PgConnection::notifications_iter`, but it only drains what libpq has already
//! read (`PQconsumeInput` + `PQnotifies`) and never blocks, and diesel does not expose the
//! socket to wait on. So the thread checks the connection every [`POLL`]: a read of the socket
//! buffer, no round trip to the server. Enqueue and retry notify with the schema as payload
//! (`current_schema()`), and the listener only counts its own schema's notifications, so stores
//! on other schemas of the same database do not wake it.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use safejob_core::{queue::Waker, store::StoreError};

use super::{
    sql::{CHANNEL, SchemaRow},
    tx::store_error,
};
use crate::{
    DieselStore,
    backend::{
        DbConnection, Stmt,
        pool::{PooledConn, with_conn},
    },
};

/// How often the listening connection is checked for notifications: the most a notification
/// from another process waits before the listener wakes the pools. A check is a non-blocking
/// read of the socket buffer (no round trip). Measured: a whole idle worker process (pool,
/// listener, heartbeats) used 0.57 s of CPU in 45 s, 1.3 % of a core. Was 25 ms, which alone
/// put the median enqueue-to-start latency at 16–20 ms (docs/BENCHMARKS.md, "Peers, latency
/// and memory").
pub(crate) const POLL: Duration = Duration::from_millis(2);
/// How long the listener waits before it reconnects after an error.
const RECONNECT: Duration = Duration::from_secs(1);

/// The subscribed wakers, shared with the listener thread.
pub(crate) type Wakers = Arc<Mutex<Vec<Waker>>>;

pub(crate) fn wake_all(wakers: &Wakers) {
    for waker in wakers.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        waker.wake();
    }
}

/// The running listener thread; stopped and joined on drop.
#[derive(Debug)]
pub(crate) struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Listener {
    pub(crate) fn start(store: Arc<DieselStore>, wakers: Wakers) -> Result<Self, StoreError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = thread::Builder::new()
            .name("safejob-queue-listen".into())
            .spawn(move || run(&store, &wakers, &flag))
            .map_err(StoreError::backend)?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(store: &Arc<DieselStore>, wakers: &Wakers, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let listened: Result<(), StoreError> =
            (|| with_conn!(store, conn => listen_on(store, conn, wakers, stop)))();
        if let Err(error) = listened {
            tracing::warn!(%error, "safejob-diesel queue: LISTEN connection failed; reconnecting");
            // Notifications may have been missed meanwhile: let the workers look.
            wake_all(wakers);
            let mut waited = Duration::ZERO;
            while waited < RECONNECT && !stop.load(Ordering::SeqCst) {
                thread::sleep(POLL);
                waited += POLL;
            }
        }
    }
}

fn listen_on<C: DbConnection>(
    store: &DieselStore,
    c: &mut PooledConn<C>,
    wakers: &Wakers,
    stop: &AtomicBool,
) -> Result<(), StoreError> {
    let errors = store.ctx().errors;
    let fail = |c: &mut PooledConn<C>, e: diesel::result::Error| {
        c.broken = true;
        store_error(errors, e)
    };
    let schema: Vec<SchemaRow> = c
        .conn
        .load(&Stmt::new("SELECT current_schema() AS schema", vec![]))
        .map_err(|e| fail(c, e))?;
    let schema = schema
        .into_iter()
        .next()
        .map(|r| r.schema)
        .unwrap_or_default();
    if let Err(e) = c.conn.batch_execute(&format!("LISTEN {CHANNEL}")) {
        return Err(fail(c, e));
    }
    // Jobs enqueued before the LISTEN took effect sent no notification we could see.
    wake_all(wakers);
    while !stop.load(Ordering::SeqCst) {
        match c.conn.drain_notifications() {
            Ok(payloads) if payloads.contains(&schema) => wake_all(wakers),
            Ok(_) => {}
            Err(e) => return Err(fail(c, e)),
        }
        thread::sleep(POLL);
    }
    // Back to the pool without a subscription (or discarded if that fails).
    if c.conn
        .batch_execute(&format!("UNLISTEN {CHANNEL}"))
        .is_err()
    {
        c.broken = true;
    }
    Ok(())
}
