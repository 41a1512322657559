//! Batches on the [`MemoryQueue`](crate::queue::MemoryQueue): rows in the queue's map, written
//! under the queue's lock, so a member's move and its batch's settle are one step (the SQL
//! stores' counterpart is `safejob-diesel/src/queue/batch.rs`).

use chrono::{DateTime, Utc};

use crate::{
    history::Subject,
    queue::{
        AttemptError, ErrorKind, JobId, OpResult, QueueState, QueuedJob,
        memory::{Inner, due_times, record},
    },
    store::StoreError,
    workflow::{
        BatchId, BatchInfo, BatchMember, BatchOutcome, BatchPolicy, BatchState, MemberCounts,
        NewBatch,
        settle::{self, MemberView},
    },
};

/// A batch in the memory queue.
#[derive(Debug)]
pub(crate) struct BatchRow {
    pub(crate) name: String,
    pub(crate) policy: BatchPolicy,
    pub(crate) state: BatchState,
    pub(crate) cancel_requested: bool,
    /// (member id, job, dependencies), in insertion order.
    pub(crate) members: Vec<(String, JobId, Vec<JobId>)>,
    pub(crate) callback: Option<JobId>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
}

impl Inner {
    /// Inserts `batch` (members and callback), then settles it.
    pub(crate) fn insert_batch(
        &mut self,
        now: DateTime<Utc>,
        batch: &NewBatch,
    ) -> Result<BatchId, StoreError> {
        self.next_batch += 1;
        let id = BatchId(self.next_batch);
        let mut members: Vec<(String, JobId, Vec<JobId>)> = Vec::new();
        for m in batch.members() {
            let mut row = m.job.clone();
            row.unique_key = None;
            let due = due_times(now, std::slice::from_ref(&row))?;
            let job = self.insert(now, &due)[0].id();
            let state = NewBatch::initial_state(m, due[0].1 <= now);
            if let Some(j) = self.jobs.get_mut(&job) {
                let before = j.clone();
                j.batch = Some(id);
                j.state = state;
                self.log_job(Some(&before), job);
                self.history.tag_batch(job, id);
            }
            let deps = m.depends_on.iter().map(|&d| members[d].1).collect();
            members.push((m.name.clone(), job, deps));
        }
        let callback = match batch.callback() {
            Some(cb) => {
                let mut row = cb.clone();
                row.unique_key = None;
                let job = self.insert(now, &[(&row, now)])[0].id();
                if let Some(j) = self.jobs.get_mut(&job) {
                    let before = j.clone();
                    j.state = QueueState::Blocked;
                    self.log_job(Some(&before), job);
                }
                Some(job)
            }
            None => None,
        };
        self.batches.insert(
            id,
            BatchRow {
                name: batch.name().to_owned(),
                policy: batch.policy(),
                state: BatchState::Running,
                cancel_requested: false,
                members,
                callback,
                created_at: now,
                finished_at: None,
            },
        );
        self.history.batch(id, None, BatchState::Running, now);
        self.settle(id, now);
        Ok(id)
    }

    /// Applies [`settle::plan`] to `batch` (see [`QueueStore::insert_batch`]).
    pub(crate) fn settle(&mut self, batch: BatchId, now: DateTime<Utc>) {
        let Some(row) = self.batches.get(&batch) else {
            return;
        };
        let views: Vec<MemberView> = row
            .members
            .iter()
            .filter_map(|(_, job, deps)| {
                Some(MemberView {
                    job: *job,
                    state: self.jobs.get(job)?.state,
                    depends_on: deps.clone(),
                })
            })
            .collect();
        let plan = settle::plan(row.policy, row.state, row.cancel_requested, &views);
        for id in &plan.unlock {
            if let Some(j) = self
                .jobs
                .get_mut(id)
                .filter(|j| j.state == QueueState::Blocked)
            {
                let before = j.clone();
                j.state = QueueState::Pending;
                j.run_at = now;
                j.updated_at = now;
                self.log_job(Some(&before), *id);
            }
        }
        for (id, why) in &plan.cancel {
            if let Some(j) = self.jobs.get_mut(id) {
                let before = j.clone();
                let error = AttemptError::new(ErrorKind::Cancelled, why.as_str());
                record(j, &error, now);
                j.state = QueueState::Cancelled;
                j.finished_at = Some(now);
                j.updated_at = now;
                self.log_job(Some(&before), *id);
            }
        }
        let Some(end) = plan.finish else {
            return;
        };
        let Some(row) = self.batches.get_mut(&batch) else {
            return;
        };
        row.state = end;
        row.finished_at = Some(now);
        let callback = row.callback;
        let outcome = BatchOutcome {
            batch,
            name: row.name.clone(),
            state: end,
            counts: plan.counts,
        };
        self.history
            .batch(batch, Some(BatchState::Running), end, now);
        if let Some(cb) = callback
            && let Some(j) = self
                .jobs
                .get_mut(&cb)
                .filter(|j| j.state == QueueState::Blocked)
        {
            let before = j.clone();
            j.metadata = outcome.into_metadata(&j.metadata);
            j.state = QueueState::Pending;
            j.run_at = now;
            j.updated_at = now;
            self.log_job(Some(&before), cb);
        }
    }

    /// Settles the batch of `job` if it has one.
    pub(crate) fn settle_member(&mut self, job: JobId, now: DateTime<Utc>) {
        if let Some(batch) = self.jobs.get(&job).and_then(|j| j.batch) {
            self.settle(batch, now);
        }
    }

    pub(crate) fn batch_info(&self, id: BatchId) -> Option<BatchInfo> {
        let row = self.batches.get(&id)?;
        Some(BatchInfo {
            id,
            name: row.name.clone(),
            policy: row.policy,
            state: row.state,
            cancel_requested: row.cancel_requested,
            counts: MemberCounts::of(
                row.members
                    .iter()
                    .filter_map(|(_, job, _)| self.jobs.get(job).map(|j| j.state)),
            ),
            callback: row.callback,
            created_at: row.created_at,
            finished_at: row.finished_at,
        })
    }

    /// The batch's members with their states and results.
    pub(crate) fn batch_members(&self, id: BatchId) -> Vec<BatchMember> {
        let Some(row) = self.batches.get(&id) else {
            return Vec::new();
        };
        row.members
            .iter()
            .filter_map(|(name, job, deps)| {
                Some(BatchMember {
                    name: name.clone(),
                    job: *job,
                    state: self.jobs.get(job)?.state,
                    depends_on: deps.clone(),
                    result: self.results.get(job).cloned(),
                })
            })
            .collect()
    }

    /// Batches by id, newest first.
    pub(crate) fn list_batches(&self, state: Option<BatchState>, limit: usize) -> Vec<BatchInfo> {
        self.batches
            .iter()
            .rev()
            .filter(|(_, b)| state.is_none_or(|s| b.state == s))
            .take(limit)
            .filter_map(|(id, _)| self.batch_info(*id))
            .collect()
    }

    /// An operator's cancel of batch `id` (see `QueueStore::cancel_batch`).
    pub(crate) fn cancel_batch(&mut self, id: BatchId, now: DateTime<Utc>) -> OpResult {
        let Some(row) = self.batches.get_mut(&id) else {
            return OpResult::NotFound;
        };
        if row.state != BatchState::Running {
            return OpResult::BatchEnded(row.state);
        }
        row.cancel_requested = true;
        self.settle(id, now);
        OpResult::Applied
    }

    /// Whether `job` is a batch member whose dependencies did not all succeed.
    pub(crate) fn dependencies_unmet(&self, job: &QueuedJob) -> bool {
        let Some(row) = job.batch.and_then(|b| self.batches.get(&b)) else {
            return false;
        };
        row.members
            .iter()
            .find(|(_, j, _)| *j == job.id)
            .is_some_and(|(_, _, deps)| {
                deps.iter().any(|d| {
                    self.jobs
                        .get(d)
                        .is_none_or(|j| j.state != QueueState::Succeeded)
                })
            })
    }

    /// Deletes the batches that ended and have no member left, with their history (pruning).
    pub(crate) fn forget_ended_batches(&mut self) {
        let gone: Vec<Subject> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                b.state != BatchState::Running
                    && !b.members.iter().any(|(_, j, _)| self.jobs.contains_key(j))
            })
            .map(|(id, _)| Subject::Batch(*id))
            .collect();
        self.batches
            .retain(|id, _| !gone.contains(&Subject::Batch(*id)));
        self.history.forget(&gone);
    }
}
