//! What a batch does next, decided from its members' states alone: the one home of the policy
//! semantics, used by every store inside the transaction that moves a member.

use std::collections::BTreeMap;

use crate::{
    queue::{JobId, QueueState},
    workflow::{BatchPolicy, BatchState, MemberCounts},
};

/// A member as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its job.
    pub job: JobId,
    /// The job's state.
    pub state: QueueState,
    /// The jobs it depends on (members of the same batch).
    pub depends_on: Vec<JobId>,
}

/// Why the batch cancels a member (recorded as the member's `cancelled` error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// One of its dependencies ended without success (dead or cancelled).
    DependencyEnded,
    /// The batch's policy tripped ([`BatchPolicy::trips`]).
    PolicyTripped,
    /// An operator cancelled the batch.
    BatchCancelled,
}

impl CancelReason {
    /// The text recorded on the member.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DependencyEnded => "a dependency ended without success",
            Self::PolicyTripped => "the batch's failure policy tripped",
            Self::BatchCancelled => "the batch was cancelled",
        }
    }
}

/// The writes that bring a batch up to date, applied in the same transaction as the member's
/// move that prompted them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettlePlan {
    /// `blocked` members whose dependencies all succeeded: → `pending`, due now.
    pub unlock: Vec<JobId>,
    /// Members to cancel (→ `cancelled`), each still blocked, waiting or parked: dependents of a
    /// member that ended without success, or every member not running once the policy tripped
    /// or an operator cancelled the batch.
    pub cancel: Vec<(JobId, CancelReason)>,
    /// The batch's final state, when every member has ended once the plan is applied.
    pub finish: Option<BatchState>,
    /// The member counts after the plan.
    pub counts: MemberCounts,
}

impl SettlePlan {
    /// Whether the plan writes nothing.
    pub fn is_empty(&self) -> bool {
        self.unlock.is_empty() && self.cancel.is_empty() && self.finish.is_none()
    }
}

/// Whether a member in `state` may be cancelled by the batch: not running and not ended.
fn cancellable(state: QueueState) -> bool {
    state == QueueState::Blocked || state.is_waiting() || state == QueueState::Parked
}

/// The plan for a batch in `state` under `policy`, from its members.
///
/// * A batch that is no longer running gets no plan (its end was decided once).
/// * A blocked member with a dependency that ended without success (dead or cancelled) is
///   cancelled, transitively, whatever the policy.
/// * Once the policy trips ([`BatchPolicy::trips`]) or `cancel_requested`, every member not
///   running is cancelled; running members finish on their own.
/// * A blocked member whose dependencies all succeeded is unlocked.
/// * When no member is left unended, the batch ends: `cancelled` if an operator asked, else
///   `failed` if the policy's failure limit was reached, else `succeeded`.
pub fn plan(
    policy: BatchPolicy,
    state: BatchState,
    cancel_requested: bool,
    members: &[MemberView],
) -> SettlePlan {
    let mut states: BTreeMap<JobId, QueueState> =
        members.iter().map(|m| (m.job, m.state)).collect();
    if state != BatchState::Running {
        return SettlePlan {
            counts: MemberCounts::of(states.values().copied()),
            ..SettlePlan::default()
        };
    }
    let mut cancel = Vec::new();
    let cancel_one = |states: &mut BTreeMap<JobId, QueueState>,
                      cancel: &mut Vec<(JobId, CancelReason)>,
                      job,
                      why| {
        states.insert(job, QueueState::Cancelled);
        cancel.push((job, why));
    };
    let failed = |states: &BTreeMap<JobId, QueueState>| {
        let n = states.values().filter(|s| **s == QueueState::Dead).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    if cancel_requested || policy.trips(failed(&states)) {
        let why = if cancel_requested {
            CancelReason::BatchCancelled
        } else {
            CancelReason::PolicyTripped
        };
        for m in members {
            if cancellable(m.state) {
                cancel_one(&mut states, &mut cancel, m.job, why);
            }
        }
    } else {
        // Cascade: cancelling one member may doom its own dependents.
        loop {
            let doomed: Vec<JobId> = members
                .iter()
                .filter(|m| states[&m.job] == QueueState::Blocked)
                .filter(|m| {
                    m.depends_on.iter().any(|d| {
                        matches!(
                            states.get(d),
                            Some(QueueState::Dead | QueueState::Cancelled)
                        )
                    })
                })
                .map(|m| m.job)
                .collect();
            if doomed.is_empty() {
                break;
            }
            for job in doomed {
                cancel_one(&mut states, &mut cancel, job, CancelReason::DependencyEnded);
            }
        }
    }
    let unlock: Vec<JobId> = members
        .iter()
        .filter(|m| states[&m.job] == QueueState::Blocked)
        .filter(|m| {
            m.depends_on
                .iter()
                .all(|d| states.get(d) == Some(&QueueState::Succeeded))
        })
        .map(|m| m.job)
        .collect();
    for job in &unlock {
        states.insert(*job, QueueState::Pending);
    }
    let all_ended = states.values().all(|s| s.is_finished());
    let finish = all_ended.then(|| {
        if cancel_requested {
            BatchState::Cancelled
        } else if failed(&states) > policy.failures_allowed() {
            BatchState::Failed
        } else {
            BatchState::Succeeded
        }
    });
    SettlePlan {
        unlock,
        cancel,
        finish,
        counts: MemberCounts::of(states.values().copied()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use QueueState::*;

    fn m(job: i64, state: QueueState, deps: &[i64]) -> MemberView {
        MemberView {
            job: JobId(job),
            state,
            depends_on: deps.iter().map(|d| JobId(*d)).collect(),
        }
    }

    fn ids(v: &[JobId]) -> Vec<i64> {
        v.iter().map(|j| j.0).collect()
    }

    fn cancelled(v: &[(JobId, CancelReason)]) -> Vec<i64> {
        v.iter().map(|(j, _)| j.0).collect()
    }

    // Diamond 1 -> {2, 3} -> 4.
    fn diamond(s1: QueueState, s2: QueueState, s3: QueueState) -> Vec<MemberView> {
        vec![
            m(1, s1, &[]),
            m(2, s2, &[1]),
            m(3, s3, &[1]),
            m(4, Blocked, &[2, 3]),
        ]
    }

    #[test]
    fn the_last_dependency_unlocks_and_not_before() {
        // Catches: unlocking when any (not all) dependency succeeded.
        let p = plan(
            BatchPolicy::Continue,
            BatchState::Running,
            false,
            &diamond(Succeeded, Succeeded, Running),
        );
        assert!(p.unlock.is_empty() && p.cancel.is_empty() && p.finish.is_none());
        let p = plan(
            BatchPolicy::Continue,
            BatchState::Running,
            false,
            &diamond(Succeeded, Succeeded, Succeeded),
        );
        assert_eq!(ids(&p.unlock), vec![4]);
        assert_eq!(p.finish, None);
    }

    #[test]
    fn continue_cancels_dependents_transitively_and_lets_other_branches_run() {
        // 1 dead; 2 depends on 1, 3 depends on 2; 4 independent and pending.
        let members = vec![
            m(1, Dead, &[]),
            m(2, Blocked, &[1]),
            m(3, Blocked, &[2]),
            m(4, Pending, &[]),
        ];
        let p = plan(BatchPolicy::Continue, BatchState::Running, false, &members);
        assert_eq!(cancelled(&p.cancel), vec![2, 3]);
        assert_eq!(p.finish, None, "member 4 still runs");
        let done = vec![
            m(1, Dead, &[]),
            m(2, Cancelled, &[1]),
            m(3, Cancelled, &[2]),
            m(4, Succeeded, &[]),
        ];
        let p = plan(BatchPolicy::Continue, BatchState::Running, false, &done);
        assert_eq!(p.finish, Some(BatchState::Failed));
        assert_eq!(p.counts.failed, 1);
        assert_eq!(p.counts.cancelled, 2);
    }

    #[test]
    fn fail_fast_cancels_everything_not_running() {
        let members = vec![
            m(1, Dead, &[]),
            m(2, Running, &[]),
            m(3, Retrying, &[]),
            m(4, Blocked, &[2]),
            m(5, Parked, &[]),
            m(6, Succeeded, &[]),
        ];
        let p = plan(BatchPolicy::FailFast, BatchState::Running, false, &members);
        assert_eq!(cancelled(&p.cancel), vec![3, 4, 5]);
        assert_eq!(p.finish, None, "member 2 is still running");
        // Member 2 ends: the batch ends, failed.
        let members = vec![
            m(1, Dead, &[]),
            m(2, Succeeded, &[]),
            m(3, Cancelled, &[]),
            m(4, Cancelled, &[2]),
        ];
        let p = plan(BatchPolicy::FailFast, BatchState::Running, false, &members);
        assert!(p.unlock.is_empty(), "a cancelled member is never unlocked");
        assert_eq!(p.finish, Some(BatchState::Failed));
    }

    #[test]
    fn threshold_tolerates_fewer_failures_and_trips_at_n() {
        let one = vec![m(1, Dead, &[]), m(2, Pending, &[]), m(3, Pending, &[])];
        let p = plan(BatchPolicy::Threshold(2), BatchState::Running, false, &one);
        assert!(p.cancel.is_empty(), "one failure of two allowed");
        let ended = vec![m(1, Dead, &[]), m(2, Succeeded, &[]), m(3, Succeeded, &[])];
        let p = plan(
            BatchPolicy::Threshold(2),
            BatchState::Running,
            false,
            &ended,
        );
        assert_eq!(p.finish, Some(BatchState::Succeeded));
        let two = vec![m(1, Dead, &[]), m(2, Dead, &[]), m(3, Pending, &[])];
        let p = plan(BatchPolicy::Threshold(2), BatchState::Running, false, &two);
        assert_eq!(cancelled(&p.cancel), vec![3]);
        assert_eq!(p.finish, Some(BatchState::Failed));
    }

    #[test]
    fn cancel_requested_ends_cancelled_and_an_ended_batch_gets_no_plan() {
        let members = vec![m(1, Succeeded, &[]), m(2, Blocked, &[1])];
        let p = plan(BatchPolicy::Continue, BatchState::Running, true, &members);
        assert_eq!(cancelled(&p.cancel), vec![2]);
        assert!(p.unlock.is_empty());
        assert_eq!(p.finish, Some(BatchState::Cancelled));
        let p = plan(BatchPolicy::Continue, BatchState::Failed, false, &members);
        assert!(p.is_empty(), "the end of a batch is decided once");
    }

    #[test]
    fn a_member_that_cancelled_itself_dooms_its_dependents_but_is_no_failure() {
        let members = vec![
            m(1, Cancelled, &[]),
            m(2, Blocked, &[1]),
            m(3, Succeeded, &[]),
        ];
        let p = plan(BatchPolicy::FailFast, BatchState::Running, false, &members);
        assert_eq!(cancelled(&p.cancel), vec![2]);
        assert_eq!(p.finish, Some(BatchState::Succeeded));
    }
}
