//! A job's state history, as the job-detail endpoint and page show it.
//!
//! For now it is rebuilt from the job's row: its enqueue, its recorded errors (the last
//! [`MAX_ERROR_HISTORY`](safejob_core::queue::store::MAX_ERROR_HISTORY)), its last claim and its
//! end. When the audit ledger lands, this one function reads the ledger instead; its callers
//! and the JSON shape stay.

use safejob_core::queue::QueuedJob;

use crate::dto::HistoryEntry;

/// The job's history, oldest first.
pub fn history(job: &QueuedJob) -> Vec<HistoryEntry> {
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
