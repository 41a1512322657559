//! A job's state history, as the job-detail endpoint and page show it: read from the audit
//! ledger ([`safejob_core::history`]) — every transition, `<from>→<to>` with its attempt and its
//! worker or reason — or, without a ledger (or for a job it has nothing on: recorded while it was
//! off), rebuilt from the job's row: its enqueue, its recorded errors (the last
//! [`MAX_ERROR_HISTORY`](safejob_core::queue::store::MAX_ERROR_HISTORY)), its last claim and its
//! end.

use safejob_core::{
    history::{HistoryStore, Subject},
    queue::QueuedJob,
};

use crate::dto::HistoryEntry;

/// The job's history, oldest first: from `ledger` when it has entries, else from the row.
pub fn history(job: &QueuedJob, ledger: Option<&dyn HistoryStore>) -> Vec<HistoryEntry> {
    let recorded = ledger
        .and_then(|l| l.history(&Subject::Job(job.id)).ok())
        .unwrap_or_default();
    if !recorded.is_empty() {
        return recorded
            .into_iter()
            .map(|e| HistoryEntry {
                at: e.at,
                event: match &e.from_state {
                    Some(from) => format!("{from}→{}", e.to_state),
                    None => format!("enqueued→{}", e.to_state),
                },
                attempt: e.attempt,
                message: e.reason.or(e.worker),
            })
            .collect();
    }
    from_row(job)
}

/// The history rebuilt from the job's row alone.
fn from_row(job: &QueuedJob) -> Vec<HistoryEntry> {
    let mut out = vec![HistoryEntry {
        at: job.created_at,
        event: "enqueued".into(),
        attempt: None,
        message: None,
    }];
    out.extend(job.errors.iter().map(|e| HistoryEntry {
        at: e.at,
        event: format!("error:{}", e.kind.as_str()),
        attempt: Some(e.attempt),
        message: Some(e.message.clone()),
    }));
    if let Some(at) = job.attempted_at {
        out.push(HistoryEntry {
            at,
            event: "claimed".into(),
            attempt: Some(job.attempts),
            message: job.owner.clone(),
        });
    }
    if let Some(at) = job.finished_at {
        out.push(HistoryEntry {
            at,
            event: format!("finished:{}", job.state.as_str()),
            attempt: None,
            message: None,
        });
    }
    out.sort_by_key(|e| e.at);
    out
}
