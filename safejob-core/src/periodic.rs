//! A background thread that runs one round of work every interval until it is stopped: the
//! scheduler's ticks and the action dispatcher's rounds.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread::JoinHandle,
    time::Duration,
};

/// A thread started by [`Periodic::start`]; stops it when dropped.
#[derive(Debug)]
pub struct Periodic {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    what: &'static str,
}

impl Periodic {
    /// Runs `round` at once and then every `every` on a thread of its own, until stopped. A round
    /// that fails is logged (as `what`) and the next one runs on time.
    pub fn start<E: std::fmt::Display>(
        what: &'static str,
        every: Duration,
        mut round: impl FnMut() -> Result<(), E> + Send + 'static,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            loop {
                if let Err(error) = round() {
                    tracing::warn!(%error, "{what} failed");
                }
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
            what,
        }
    }

    /// Stops the thread after its current round and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("{} thread panicked", self.what);
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.shutdown();
    }
}
