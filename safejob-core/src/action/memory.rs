//! [`ActionStore`] on the [`MemoryQueue`]: the actions in the queue's map, under the queue's
//! lock, so that an action's mark and the job it becomes are one step.

use chrono::{DateTime, Utc};

use crate::{
    action::{
        ActionClaim, ActionFilter, ActionId, ActionLease, ActionOutcome, ActionRecord, ActionState,
        ActionStore, NewAction, Published, RetryAction,
    },
    queue::{
        MemoryQueue, QueueStore, RunAt,
        memory::{add, due_times},
    },
    store::{FenceCheck, StoreError},
};

impl ActionStore for MemoryQueue {
    fn action_now(&self) -> Result<DateTime<Utc>, StoreError> {
        self.now()
    }

    fn publish(&self, action: &NewAction) -> Result<Published, StoreError> {
        let now = self.now()?;
        let eligible_at = match action.eligible_at {
            RunAt::Now => now,
            RunAt::At(at) => at,
            RunAt::After(d) => add(now, d)?,
        };
        let mut inner = self.lock();
        if let Some(digest) = action.idempotency
            && let Some(existing) = inner
                .actions
                .values()
                .find(|a| a.idempotency == Some(digest))
        {
            return Ok(Published::Existing(existing.id));
        }
        inner.next_action += 1;
        let id = ActionId(inner.next_action);
        inner.actions.insert(
            id,
            ActionRecord {
                id,
                action_type: action.action_type.clone(),
                payload: action.payload.clone(),
                eligible_at,
                idempotency: action.idempotency,
                rules: action.rules.clone(),
                state: ActionState::Pending,
                claim_token: None,
                claim_expires_at: None,
                attempts: 0,
                max_attempts: action.max_attempts.max(1),
                last_error: None,
                processed_at: None,
                job: None,
                message_id: None,
                created_at: now,
            },
        );
        Ok(Published::Inserted(id))
    }

    fn claim_actions(&self, claim: &ActionClaim<'_>) -> Result<Vec<ActionRecord>, StoreError> {
        let now = self.now()?;
        let until = add(now, claim.ttl)?;
        let mut inner = self.lock();
        let mut due: Vec<(DateTime<Utc>, ActionId)> = inner
            .actions
            .values()
            .filter(|a| {
                a.state == ActionState::Pending
                    && a.eligible_at <= now
                    && a.claim_expires_at.is_none_or(|t| t <= now)
            })
            .map(|a| (a.eligible_at, a.id))
            .collect();
        due.sort_unstable();
        due.truncate(claim.limit);
        let mut claimed = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(a) = inner.actions.get_mut(&id) {
                a.claim_token = Some(claim.token.to_owned());
                a.claim_expires_at = Some(until);
                a.attempts += 1;
                claimed.push(a.clone());
            }
        }
        Ok(claimed)
    }

    fn finish_action(
        &self,
        lease: &ActionLease,
        outcome: &ActionOutcome<'_>,
    ) -> Result<FenceCheck, StoreError> {
        let now = self.now()?;
        let retry_at = match outcome {
            ActionOutcome::Failed {
                retry_in: Some(d), ..
            } => Some(add(now, *d)?),
            _ => None,
        };
        let job_rows = match outcome {
            ActionOutcome::Enqueue(job) => Some(due_times(now, std::slice::from_ref(*job))?),
            _ => None,
        };
        let mut inner = self.lock();
        let live = inner.actions.get(&lease.id).is_some_and(|a| {
            a.state == ActionState::Pending && a.claim_token.as_deref() == Some(&lease.token)
        });
        if !live {
            return Ok(FenceCheck::Stale);
        }
        let job = match (&job_rows, outcome) {
            (Some(rows), _) => Some(inner.insert(now, rows)[0].id()),
            (None, ActionOutcome::Publish { .. }) => {
                return Err(StoreError::backend(
                    "the memory action log has no outbox: dispatch to a job, or use a DieselQueue",
                ));
            }
            _ => None,
        };
        let Some(a) = inner.actions.get_mut(&lease.id) else {
            return Ok(FenceCheck::Stale);
        };
        a.claim_expires_at = None;
        match outcome {
            ActionOutcome::Enqueue(_) | ActionOutcome::Publish { .. } => {
                a.state = ActionState::Processed;
                a.processed_at = Some(now);
                a.job = job;
            }
            ActionOutcome::Skip { reason } => {
                a.state = ActionState::Skipped;
                a.processed_at = Some(now);
                a.last_error = Some((*reason).to_owned());
            }
            ActionOutcome::Failed { error, .. } => {
                a.last_error = Some((*error).to_owned());
                match retry_at {
                    Some(at) => a.eligible_at = at,
                    None => a.state = ActionState::Parked,
                }
            }
        }
        drop(inner);
        if job.is_some() {
            self.wake();
        }
        Ok(FenceCheck::Applied)
    }

    fn get_action(&self, id: ActionId) -> Result<Option<ActionRecord>, StoreError> {
        Ok(self.lock().actions.get(&id).cloned())
    }

    fn list_actions(
        &self,
        filter: &ActionFilter,
        limit: usize,
    ) -> Result<Vec<ActionRecord>, StoreError> {
        Ok(self
            .lock()
            .actions
            .values()
            .filter(|a| filter.state.is_none_or(|s| a.state == s))
            .filter(|a| {
                filter
                    .action_type
                    .as_deref()
                    .is_none_or(|t| a.action_type == t)
            })
            .take(limit)
            .cloned()
            .collect())
    }

    fn retry_action(&self, id: ActionId) -> Result<RetryAction, StoreError> {
        let now = self.now()?;
        let mut inner = self.lock();
        let Some(a) = inner.actions.get_mut(&id) else {
            return Ok(RetryAction::NotFound);
        };
        if a.state != ActionState::Parked {
            return Ok(RetryAction::WrongState(a.state));
        }
        a.state = ActionState::Pending;
        a.eligible_at = now;
        a.attempts = 0;
        a.claim_expires_at = None;
        Ok(RetryAction::Applied)
    }
}
