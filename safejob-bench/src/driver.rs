//! Runs N jobs on T threads and times each one.

use std::{
    sync::{
        Barrier,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Instant,
};

use crate::stats::Measured;

/// A job failed: what and where.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `job(i)` for every `i` in `0..jobs`, on `threads` threads that take the next index from a
/// shared counter (so a slow thread does not leave the others idle at the end), and times each
/// call with [`Instant`]. The wall time runs from a barrier that all threads pass together until
/// the last one has finished. The first error stops every thread and is returned.
pub fn run_timed<F>(jobs: usize, threads: usize, job: F) -> Result<Measured, BenchError>
where
    F: Fn(usize) -> Result<(), BenchError> + Sync,
{
    let threads = threads.max(1);
    let next = AtomicUsize::new(0);
    let barrier = Barrier::new(threads + 1);
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<Vec<u64>, BenchError> {
                    let mut samples = Vec::with_capacity(jobs / threads + 1);
                    barrier.wait();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= jobs {
                            return Ok(samples);
                        }
                        let start = Instant::now();
                        if let Err(e) = job(i) {
                            // Stop the others at their next job.
                            next.store(jobs, Ordering::Relaxed);
                            return Err(e);
                        }
                        let ns = start.elapsed().as_nanos();
                        samples.push(u64::try_from(ns).unwrap_or(u64::MAX));
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut samples_ns = Vec::with_capacity(jobs);
        let mut first_error = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok(s)) => samples_ns.extend(s),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        let elapsed = start.elapsed();
        match first_error {
            Some(e) => Err(e),
            None => Ok(Measured {
                elapsed,
                samples_ns,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn every_index_runs_exactly_once() {
        let seen = Mutex::new(Vec::new());
        let m = run_timed(100, 4, |i| {
            seen.lock().unwrap().push(i);
            Ok(())
        })
        .unwrap();
        assert_eq!(m.samples_ns.len(), 100);
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_error_stops_the_run() {
        let err = run_timed(1_000, 2, |i| {
            if i == 10 {
                Err("job 10 failed".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "job 10 failed");
    }
}
