//! [`AsyncWorkerPool`]: a [`WorkerPool`] started and stopped from async code.

use std::{convert::Infallible, time::Duration};

use safejob_core::queue::{ShutdownReport, Waker, WorkerBuilder, WorkerConfigError, WorkerPool};

use crate::{AsyncError, blocking};

/// A [`WorkerPool`] beside a tokio application.
///
/// The pool runs jobs on its own std threads (one claimer, `concurrency` runners, one
/// maintenance thread), never on the runtime's: a tokio service and its workers share the
/// process, not the executor. Only starting and stopping block, and this wrapper does both on
/// tokio's blocking pool: [`start`](AsyncWorkerPool::start) writes the first heartbeat to the
/// store, and [`shutdown`](AsyncWorkerPool::shutdown) waits up to its deadline for running jobs.
///
/// Stop it before the runtime ends, typically on a signal, after the HTTP server has drained:
///
/// ```no_run
/// # async fn serve(pool: safejob_tokio::AsyncWorkerPool) {
/// use std::time::Duration;
///
/// tokio::signal::ctrl_c().await.ok();            // or the server's graceful-shutdown future
/// let report = pool.shutdown(Duration::from_secs(30)).await;
/// println!("worker pool stopped: {report:?}");
/// # }
/// ```
///
/// Dropping it stops the pool with no grace period on the dropping thread, as dropping a
/// `WorkerPool` does (a few store writes, no wait for running jobs); prefer `shutdown`.
#[derive(Debug)]
pub struct AsyncWorkerPool {
    pool: WorkerPool,
}

impl AsyncWorkerPool {
    /// Validates `builder` and starts its pool ([`WorkerBuilder::start`]) on the blocking pool.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::{sync::Arc, time::Duration};
    /// use safejob_core::queue::{MemoryQueue, Registry, Worker};
    /// use safejob_tokio::AsyncWorkerPool;
    ///
    /// let store = Arc::new(MemoryQueue::new());
    /// let builder = Worker::builder(store, Registry::new()).queues(["default"]);
    /// let pool = AsyncWorkerPool::start(builder).await?;
    /// assert_eq!(pool.in_flight(), 0);
    /// let report = pool.shutdown(Duration::from_secs(5)).await?;
    /// assert_eq!(report.released_running, 0);
    /// # Ok(()) }
    /// ```
    pub async fn start(builder: WorkerBuilder) -> Result<Self, AsyncError<WorkerConfigError>> {
        let pool = blocking(move || builder.start()).await?;
        Ok(Self { pool })
    }

    /// The pool's worker id.
    pub fn id(&self) -> &str {
        self.pool.id()
    }

    /// Jobs claimed and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.pool.in_flight()
    }

    /// A handle that makes the idle claimer claim at once ([`WorkerPool::waker`]): call
    /// [`Waker::wake`] after an enqueue to skip the poll interval.
    pub fn waker(&self) -> Waker {
        self.pool.waker()
    }

    /// [`WorkerPool::shutdown`] on the blocking pool: stops claiming, gives back unstarted jobs,
    /// waits for running jobs until `deadline`, then asks the rest to stop and gives them back.
    /// The executor keeps serving meanwhile. It can only fail if the runtime is shutting down
    /// already ([`AsyncError::Cancelled`]: the pool is then dropped, which stops it with no
    /// grace period) or if stopping panicked.
    pub async fn shutdown(
        self,
        deadline: Duration,
    ) -> Result<ShutdownReport, AsyncError<Infallible>> {
        let pool = self.pool;
        blocking(move || Ok(pool.shutdown(deadline))).await
    }
}
