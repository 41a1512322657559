//! The queue's primitives on guarded jobs, each one atomic step over the job rows and the guard
//! rows together, as `safejob_core::queue::QueueStore` documents them (`docs/queue.md`): the
//! claim performs the guard's acquire, the completion performs the guard's finalize or release,
//! and the reaper requeues jobs whose lease expired.
//!
//! Abstracted: every job is guarded (so always idempotent for the reaper), due at once after a
//! retry, snooze or reap (backoff and the busy delay are shorter than a model second), and never
//! runs out of attempts.

use crate::{
    Mutation,
    store::{Answer, StoreModel},
};

/// A queued job's state, reduced to what the protocol decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobState {
    /// `pending`, `scheduled` or `retrying`, and due.
    Waiting,
    /// Claimed: a worker holds the job's lease.
    Running,
    /// Completed `succeeded`.
    Succeeded,
    /// Completed `dead`.
    Dead,
}

/// One queued job of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobRow {
    /// The key index its guard acquires.
    pub key: usize,
    /// Its state.
    pub state: JobState,
    /// The job's own fence: bumped by every claim and every reap.
    pub fence: u8,
    /// The job lease's expiry, by the store clock.
    pub expires: Option<u8>,
}

/// The guard's answer inside a claim (`Claimed::guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuardAnswer {
    /// The guard's lease, with this fence (its expiry is the job's).
    Granted {
        /// The guard fence.
        fence: u8,
    },
    /// The key already succeeded.
    AlreadySucceeded,
    /// The key already failed.
    AlreadyFailed,
    /// Another worker holds the key's live lease.
    Busy,
}

/// How a claim that wrote no guard completion is completed (`complete_unwritten`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Then {
    /// A replay of the key's success: the job completes `succeeded` without running.
    Succeeded,
    /// A replay of the key's failure: the job completes `dead`.
    Dead,
    /// The guard was busy: the job is snoozed (waiting again, the attempt given back).
    Snooze,
    /// The guard's lease was lost: the job is retried.
    Retry,
}

/// The job rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueModel {
    /// Every job, in the order they were enqueued.
    pub jobs: Vec<JobRow>,
}

impl QueueModel {
    /// `copies` waiting jobs for each of `keys` keys (1: deduplicated at enqueue; 2: enqueued
    /// twice with `allow_duplicates`); no jobs for 0.
    pub fn new(keys: usize, copies: u8) -> Self {
        Self {
            jobs: (0..keys)
                .flat_map(|key| {
                    (0..copies).map(move |_| JobRow {
                        key,
                        state: JobState::Waiting,
                        fence: 0,
                        expires: None,
                    })
                })
                .collect(),
        }
    }

    /// `claim` of one waiting job: `running`, fence + 1, lease now + ttl, and the guard's
    /// acquire in the same step. `None` if the job is not waiting.
    pub fn claim(
        &mut self,
        store: &mut StoreModel,
        job: usize,
        ttl: u8,
        mutation: Option<Mutation>,
    ) -> Option<Answer> {
        let row = self
            .jobs
            .get_mut(job)
            .filter(|j| j.state == JobState::Waiting)?;
        let guard = match store.acquire(row.key, ttl, mutation) {
            Answer::Granted { fence, .. } => GuardAnswer::Granted { fence },
            Answer::AlreadySucceeded => GuardAnswer::AlreadySucceeded,
            Answer::AlreadyFailed => GuardAnswer::AlreadyFailed,
            _ => GuardAnswer::Busy,
        };
        row.state = JobState::Running;
        row.fence = row.fence.saturating_add(1);
        let expires = store.now.saturating_add(ttl);
        row.expires = Some(expires);
        Some(Answer::JobClaimed {
            fence: row.fence,
            expires,
            guard,
        })
    }

    fn fenced(&mut self, job: usize, fence: u8) -> Option<&mut JobRow> {
        self.jobs
            .get_mut(job)
            .filter(|j| j.state == JobState::Running && j.fence == fence)
    }

    /// `complete` `succeeded` with the guard's `finalize_succeeded` (after-commit effects):
    /// `Stale` if the job's fence is superseded; `GuardStale` (nothing changed) if the guard's
    /// finalize was stale; else both committed: `Applied`.
    #[allow(clippy::too_many_arguments)]
    pub fn complete_succeeded(
        &mut self,
        store: &mut StoreModel,
        job: usize,
        job_fence: u8,
        key: usize,
        fence: u8,
        ttl: u8,
        mutation: Option<Mutation>,
    ) -> Answer {
        if self.fenced(job, job_fence).is_none() {
            return Answer::Stale;
        }
        if store.finalize_succeeded(key, fence, ttl, mutation) != Answer::Committed
            && mutation != Some(Mutation::CompleteIgnoringGuard)
        {
            return Answer::GuardStale;
        }
        self.finish(job, job_fence, JobState::Succeeded)
    }

    /// `complete` `retry` with the guard's `release` (a retryable error): `Stale`, `GuardStale`
    /// or `Applied` as for [`complete_succeeded`](Self::complete_succeeded).
    pub fn complete_retry(
        &mut self,
        store: &mut StoreModel,
        job: usize,
        job_fence: u8,
        key: usize,
        fence: u8,
        mutation: Option<Mutation>,
    ) -> Answer {
        if self.fenced(job, job_fence).is_none() {
            return Answer::Stale;
        }
        if store.release(key, fence, mutation) != Answer::Applied {
            return Answer::GuardStale;
        }
        self.finish(job, job_fence, JobState::Waiting)
    }

    /// `complete` without a guard half, for a claim whose guard was not granted or was lost.
    pub fn complete_unwritten(&mut self, job: usize, job_fence: u8, then: Then) -> Answer {
        let state = match then {
            Then::Succeeded => JobState::Succeeded,
            Then::Dead => JobState::Dead,
            Then::Snooze | Then::Retry => JobState::Waiting,
        };
        self.finish(job, job_fence, state)
    }

    fn finish(&mut self, job: usize, job_fence: u8, state: JobState) -> Answer {
        match self.fenced(job, job_fence) {
            Some(row) => {
                row.state = state;
                row.expires = None;
                Answer::Applied
            }
            None => Answer::Stale,
        }
    }

    /// Whether `reap` would requeue any job now.
    pub fn reapable(&self, now: u8) -> bool {
        self.jobs
            .iter()
            .any(|j| j.state == JobState::Running && j.expires.is_none_or(|t| t <= now))
    }

    /// `reap`: every running job whose lease expired gets fence + 1 and waits again (guarded
    /// jobs are idempotent). The guard rows are not touched: their leases expire on their own.
    pub fn reap(&mut self, now: u8) -> Answer {
        let mut jobs = 0;
        for row in &mut self.jobs {
            if row.state == JobState::Running && row.expires.is_none_or(|t| t <= now) {
                row.fence = row.fence.saturating_add(1);
                row.state = JobState::Waiting;
                row.expires = None;
                jobs += 1;
            }
        }
        Answer::Reaped { jobs }
    }
}
