//! Workflows: batches of queued jobs with dependencies between them (DAGs), a failure policy and
//! a callback once the batch ends.
//!
//! * [`BatchBuilder`] — members and their dependencies, validated before anything is inserted
//!   (an empty batch, a duplicate or unknown member id, a cycle: [`WorkflowError`]); made with
//!   [`Queue::batch`](crate::queue::Queue::batch) and inserted by `dispatch` in one transaction.
//!   [`chain`] builds `a → b → c`.
//! * A member with no dependencies is runnable at once; one with dependencies waits `blocked` and
//!   becomes `pending` in the transaction that ends its last dependency with success: no polling,
//!   no lost wake-up.
//! * [`BatchPolicy`] — `Continue`, `FailFast`, `Threshold(n)`; what they do is decided in one
//!   place, [`settle::plan`], which every store applies inside the transaction that moves a member
//!   (a completion, the reaper's move to dead, an operator's cancel).
//! * [`BatchState`] — `running` until every member ended, then once `succeeded`, `failed` or
//!   `cancelled`; the callback job ([`BatchBuilder::on_finish`]) is released in that transaction
//!   and finds the [`BatchOutcome`] in its metadata.
//! * Fan-in: a member reads its dependencies' results with
//!   [`WorkContext::dependency_results`](crate::queue::WorkContext::dependency_results).
//!
//! The semantics, with diagrams, are in `docs/workflows.md`.

mod batch;
pub(crate) mod memory;
pub mod settle;

use std::collections::BTreeMap;

pub use batch::{
    BatchBuilder, BatchId, BatchInfo, BatchMember, BatchOutcome, BatchPolicy, BatchState,
    MemberCounts, NewBatch, NewMember, OUTCOME_KEY, WorkflowError,
};
use serde_json::Value;

use crate::{
    queue::{GuardedJob, JobId, QueueJob, QueueStore},
    store::StoreError,
};

/// A batch of `jobs` where each runs after the one before it succeeded (`a → b → c`), members
/// named `"1"`, `"2"`, …, under `policy`. Add more members or a callback to the builder as usual.
pub fn chain<J: QueueJob>(
    builder: BatchBuilder,
    jobs: impl IntoIterator<Item = J>,
) -> BatchBuilder {
    chain_with(builder, jobs, |b, name, job, deps| b.add(name, job, deps))
}

/// [`chain`] for [`GuardedJob`]s.
pub fn chain_guarded<J: GuardedJob>(
    builder: BatchBuilder,
    jobs: impl IntoIterator<Item = J>,
) -> BatchBuilder {
    chain_with(builder, jobs, |b, name, job, deps| {
        b.add_guarded(name, job, deps)
    })
}

/// Adds `jobs` to `builder` with `add`, each depending on the one before.
fn chain_with<J>(
    builder: BatchBuilder,
    jobs: impl IntoIterator<Item = J>,
    add: impl Fn(BatchBuilder, String, &J, &[&str]) -> BatchBuilder,
) -> BatchBuilder {
    let mut b = builder;
    let mut previous: Option<String> = None;
    for (i, job) in jobs.into_iter().enumerate() {
        let name = (i + 1).to_string();
        let deps: Vec<&str> = previous.as_deref().into_iter().collect();
        b = add(b, name.clone(), &job, &deps);
        previous = Some(name);
    }
    b
}

/// The results of `job`'s dependencies, by member id: what each stored with
/// [`WorkContext::set_result`](crate::queue::WorkContext::set_result), or for a guarded member
/// the result stored on its key (also when it was replayed from an earlier success). `None` for a
/// dependency that stored none. Empty for a job outside any batch.
pub fn dependency_results(
    store: &dyn QueueStore,
    job: JobId,
) -> Result<BTreeMap<String, Option<Value>>, StoreError> {
    let Some(row) = store.get(job)? else {
        return Ok(BTreeMap::new());
    };
    let Some(batch) = row.batch else {
        return Ok(BTreeMap::new());
    };
    let members = store.batch_members(batch)?;
    let Some(me) = members.iter().find(|m| m.job == job) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for dep in members.iter().filter(|m| me.depends_on.contains(&m.job)) {
        let mut result = dep.result.clone();
        if result.is_none()
            && let Some(guard) = store.get(dep.job)?.and_then(|j| j.guard)
        {
            result = store.guards().get(&guard.digest)?.and_then(|r| r.result);
        }
        out.insert(dep.name.clone(), result);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::queue::{WorkContext, WorkError};

    #[derive(Serialize, Deserialize)]
    struct Step(u32);

    impl QueueJob for Step {
        const KIND: &'static str = "step";
        type Error = std::io::Error;
        fn work(&self, _: &mut WorkContext<'_>) -> Result<(), WorkError<std::io::Error>> {
            Ok(())
        }
    }

    /// Catches: a chain whose members do not each depend on the one before (or get other ids).
    #[test]
    fn chain_links_each_member_to_the_one_before() {
        let batch = chain(
            BatchBuilder::new("abc", BatchPolicy::FailFast),
            [Step(1), Step(2), Step(3)],
        )
        .build()
        .expect("a valid chain");
        let links: Vec<(&str, Vec<usize>)> = batch
            .members()
            .iter()
            .map(|m| (m.name.as_str(), m.depends_on.clone()))
            .collect();
        assert_eq!(links, vec![("1", vec![]), ("2", vec![0]), ("3", vec![1])]);
        assert_eq!(batch.members()[2].job.payload, serde_json::json!(3));
    }
}
