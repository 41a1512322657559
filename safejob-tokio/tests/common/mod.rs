//! What the async tests share: a gate that holds a job inside its work until an async task lets
//! it go, and a SQLite store in a temporary directory.

#![allow(dead_code)] // each test file uses its own part

use std::{
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use safejob_diesel::DieselStore;
use tempfile::TempDir;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How long a gated job waits to be released before it gives up. A facade that blocked the
/// executor would keep the releasing task from running, so the job gives up and the test fails
/// (instead of hanging).
pub const RELEASE_WAIT: Duration = Duration::from_secs(3);

/// The outer bound on every test's wait, for a test that would otherwise hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A gated job waited [`RELEASE_WAIT`] and was not released.
#[derive(Debug, thiserror::Error)]
#[error("gate {0} was not released within {RELEASE_WAIT:?}: the releasing task never ran")]
pub struct NotReleased(pub u32);

/// One job's gate: it says it has started (through a tokio channel, which never blocks), then
/// blocks its thread on a std channel until released.
pub struct Gate {
    id: u32,
    started: UnboundedSender<u32>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Gate {
    /// Blocks the calling thread until the gate is released, or [`RELEASE_WAIT`] passes.
    pub fn pass(&self) -> Result<(), NotReleased> {
        let _ = self.started.send(self.id);
        let release = self.release.lock().unwrap_or_else(|p| p.into_inner());
        release
            .recv_timeout(RELEASE_WAIT)
            .map_err(|_| NotReleased(self.id))
    }
}

impl Gate {
    /// One gate, the receiver of its "started" signal, and the sender that releases it.
    pub fn single(id: u32) -> (Arc<Gate>, UnboundedReceiver<u32>, mpsc::Sender<()>) {
        let (started, started_rx) = unbounded_channel();
        let (release, rx) = mpsc::channel();
        let gate = Arc::new(Gate {
            id,
            started,
            release: Mutex::new(rx),
        });
        (gate, started_rx, release)
    }
}

/// `n` gates, and the async task that releases them all once all have started: it can only run
/// while the gated jobs block, so the jobs can only pass if the executor is free.
pub fn gates(n: u32) -> (Vec<Arc<Gate>>, tokio::task::JoinHandle<()>) {
    let (started, mut started_rx): (UnboundedSender<u32>, UnboundedReceiver<u32>) =
        unbounded_channel();
    let mut releases = Vec::new();
    let gates = (0..n)
        .map(|id| {
            let (tx, rx) = mpsc::channel();
            releases.push(tx);
            Arc::new(Gate {
                id,
                started: started.clone(),
                release: Mutex::new(rx),
            })
        })
        .collect();
    let releaser = tokio::spawn(async move {
        for _ in 0..n {
            if started_rx.recv().await.is_none() {
                return;
            }
        }
        for release in releases {
            let _ = release.send(());
        }
    });
    (gates, releaser)
}

/// A migrated SQLite store in a fresh temporary directory (kept alive by the returned guard).
pub fn sqlite() -> (Arc<DieselStore>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("async.db").display());
    let store = DieselStore::connect(&url).expect("SQLite opens");
    store.migrate().expect("migrations run");
    (Arc::new(store), dir)
}

/// The path of the SQLite file of [`sqlite`].
pub fn sqlite_path(dir: &TempDir) -> String {
    dir.path().join("async.db").display().to_string()
}
