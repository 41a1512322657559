//! The states of a queued job: a closed set, each saying who moves a job in and out.

use std::{fmt, str::FromStr};

use crate::store::UnknownValue;

/// The state of a queued job's row. Closed: a store that reads any other text reports a corrupt
/// row. Stored as the text of [`QueueState::as_str`] (never a database enum type).
///
/// "Due" is not a state: a `pending`, `scheduled` or `retrying` job is claimable once its `run_at`
/// has passed on the store clock, so no component has to promote scheduled jobs.
///
/// See `docs/queue.md` for the diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueState {
    /// Waiting to be claimed, due now. In: enqueue without a delay, an operator's retry, a
    /// worker's release at shutdown, the reaper's requeue of an idempotent job. Out: a claim
    /// (→ running), an operator's cancel (→ cancelled).
    Pending,
    /// Waiting for a future `run_at`. In: enqueue with a delay or a time, a snooze (a guarded job
    /// whose key is busy). Out: a claim once due (→ running), an operator's cancel.
    Scheduled,
    /// A batch member waiting for its dependencies (see `crate::workflow`). In: a batch's insert.
    /// Out: the transaction that ends its last dependency with success (→ pending), or its batch
    /// cancelling it (→ cancelled): a dependency ended without success, the batch's policy
    /// tripped, or an operator cancelled the batch or the job. Never claimed.
    Blocked,
    /// Claimed: a worker holds the lease (fence, attempt, expiry by the store clock). In: a claim.
    /// Out: the holder's fenced completion (→ succeeded, retrying, dead, cancelled, pending,
    /// scheduled), or the reaper once the lease has expired (→ retrying, parked, dead).
    Running,
    /// A failed attempt waits for its backoff to pass. In: a worker's retry completion, the
    /// reaper's requeue of an idempotent job. Out: a claim once due, an operator's cancel.
    Retrying,
    /// Terminal. In: the holder's fenced completion. Out: only pruning (deletion).
    Succeeded,
    /// Terminal unless an operator acts: the last attempt failed, the job failed fatally, its
    /// kind is unknown or its payload does not decode. Its error history is kept. In: the holder's
    /// completion, the reaper (expired lease on the last attempt). Out: an operator's retry
    /// (→ pending), purge or prune (deletion).
    Dead,
    /// Terminal unless an operator acts. In: an operator's cancel of a job not running, or the
    /// job itself. Out: an operator's retry (→ pending), prune (deletion).
    Cancelled,
    /// Set aside for an operator: a non-idempotent job whose worker vanished mid-attempt, so
    /// running it again could repeat a side effect. In: the reaper. Out: an operator's retry
    /// (→ pending, after checking) or cancel (→ cancelled).
    Parked,
}

impl QueueState {
    /// Every state, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::Pending,
        Self::Scheduled,
        Self::Blocked,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Dead,
        Self::Cancelled,
        Self::Parked,
    ];

    /// The text stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::Blocked => "blocked",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Parked => "parked",
        }
    }

    /// Whether the job waits to be claimed (pending, scheduled or retrying): a claim takes it once
    /// its `run_at` has passed.
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Pending | Self::Scheduled | Self::Retrying)
    }

    /// Whether the job is finished (succeeded, dead or cancelled): it holds no unique key, and
    /// pruning may delete it.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }

    /// Whether a job in this state still holds its unique key: every state but the finished ones.
    pub fn is_live(self) -> bool {
        !self.is_finished()
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueState {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownValue {
                column: "state",
                found: s.chars().take(40).collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_unknown_text_is_refused() {
        for state in QueueState::ALL {
            assert_eq!(state.as_str().parse::<QueueState>(), Ok(state));
        }
        assert!("queued".parse::<QueueState>().is_err());
        let live: Vec<_> = QueueState::ALL
            .into_iter()
            .filter(|s| s.is_live())
            .collect();
        assert_eq!(live.len(), 6);
    }
}
