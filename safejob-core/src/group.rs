//! Group commit by leader and followers, with no timer: the one home of the batching that the
//! queue's completions and the guard's acquires and finalizes share.
//!
//! Threads [`submit`](Coalescer::submit) requests. A thread that finds no group being written
//! becomes the leader at once: it takes every request waiting (up to the group's maximum, its own
//! included), writes them with one call of its `write` function (one transaction, one commit),
//! and hands each thread its own answer. Threads that arrive while a group is being written wait;
//! when it is done, one of them leads the next group with everything that piled up meanwhile. So
//! a lone request on an idle store is written at once (no latency added), and under load the
//! group size grows with the number of threads waiting on the disk flush.
//!
//! ```text
//! t0  A: submit(a)  -> no group in flight: A leads, writes [a]
//! t1  B: submit(b)  -> a group is in flight: B waits
//! t2  C: submit(c)  -> B and C wait
//! t3  A: [a] committed; A returns a's answer, wakes B and C
//! t4  B: leads, writes [b, c] in one commit; C gets c's answer from B
//! ```
//!
//! The writer answers each request on its own (the answers are in the requests' order): one
//! request's failure is its own answer, never its neighbours'. A writer that panics answers
//! nothing: the other threads of its group get [`GroupError::WriterPanicked`] and the panic goes
//! on in the leader's thread.

use std::{
    collections::HashMap,
    num::NonZeroUsize,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
};

/// Why a submitted request got no answer from its group's writer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The thread leading the group panicked while writing it. Whether the group's statements
    /// committed is unknown to this thread: treat it as an ambiguous commit.
    #[error("the thread writing this request's group panicked; its outcome is unknown")]
    WriterPanicked,
    /// The writer returned fewer answers than it was given requests (a bug in the writer).
    #[error("the group's writer answered {answered} of {asked} requests")]
    Unanswered {
        /// Requests in the group.
        asked: usize,
        /// Answers the writer returned.
        answered: usize,
    },
}

/// How much grouping happened: `items / groups` is the mean group size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups written (calls of a `write` function).
    pub groups: u64,
    /// Requests written, over all groups.
    pub items: u64,
    /// The largest group written.
    pub largest: usize,
}

/// Coalesces concurrent requests into groups written by one thread at a time (see the
/// [module](self) documentation).
pub struct Coalescer<Req, Resp> {
    max_group: usize,
    state: Mutex<State<Req, Resp>>,
    turn: Condvar,
}

struct State<Req, Resp> {
    /// Requests not yet taken by a leader, oldest first, with their tickets.
    waiting: Vec<(u64, Req)>,
    /// Answers not yet collected by their threads, by ticket.
    answers: HashMap<u64, Result<Resp, GroupError>>,
    /// Whether a leader is writing a group now.
    writing: bool,
    next_ticket: u64,
    stats: GroupStats,
}

impl<Req, Resp> std::fmt::Debug for Coalescer<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("max_group", &self.max_group)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Coalescer<Req, Resp> {
    /// A coalescer whose groups hold at most `max_group` requests.
    pub fn new(max_group: NonZeroUsize) -> Self {
        Self {
            max_group: max_group.get(),
            state: Mutex::new(State {
                waiting: Vec::new(),
                answers: HashMap::new(),
                writing: false,
                next_ticket: 0,
                stats: GroupStats::default(),
            }),
            turn: Condvar::new(),
        }
    }

    /// The largest group this coalescer writes.
    pub fn max_group(&self) -> usize {
        self.max_group
    }

    /// Groups and requests written so far.
    pub fn stats(&self) -> GroupStats {
        self.lock().stats
    }

    fn lock(&self) -> MutexGuard<'_, State<Req, Resp>> {
        // Nothing panics while the lock is held (writers run unlocked), so a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `req` to the next group and returns its answer once its group is written. If no
    /// group is being written, this thread writes one now with `write`, which receives the
    /// group's requests (oldest first, at most [`max_group`](Self::max_group)) and must return
    /// one answer per request, in the same order. Requests of one coalescer may be written by any
    /// submitter's `write`: give every submitter of one coalescer the same writer.
    pub fn submit<F>(&self, req: Req, mut write: F) -> Result<Resp, GroupError>
    where
        F: FnMut(Vec<Req>) -> Vec<Resp>,
    {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push((ticket, req));
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.writing {
                state = self
                    .turn
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // No group in flight: lead one. This thread's own request is still waiting (its
            // answer is not in), so there is at least one request to take. With more than
            // `max_group` waiting, the group may not reach it: then this thread leads again.
            let take = state.waiting.len().min(self.max_group);
            let (tickets, requests): (Vec<u64>, Vec<Req>) = state.waiting.drain(..take).unzip();
            state.writing = true;
            drop(state);

            let written = catch_unwind(AssertUnwindSafe(|| write(requests)));

            state = self.lock();
            state.writing = false;
            state.stats.groups += 1;
            state.stats.items += tickets.len() as u64;
            state.stats.largest = state.stats.largest.max(tickets.len());
            let panicked = match written {
                Ok(answers) => {
                    let answered = answers.len();
                    let asked = tickets.len();
                    let mut answers = answers.into_iter();
                    for t in tickets {
                        let answer = answers
                            .next()
                            .ok_or(GroupError::Unanswered { asked, answered });
                        state.answers.insert(t, answer);
                    }
                    None
                }
                Err(panic) => {
                    for t in tickets {
                        state.answers.insert(t, Err(GroupError::WriterPanicked));
                    }
                    Some(panic)
                }
            };
            self.turn.notify_all();
            if let Some(panic) = panicked {
                // This thread's own answer is dropped with its panic.
                state.answers.remove(&ticket);
                drop(state);
                resume_unwind(panic);
            }
        }
    }
}

impl From<GroupError> for crate::store::StoreError {
    /// A writer that panicked may have committed its group: an ambiguous commit. A short answer
    /// is a bug in the writer, reported as a backend error.
    fn from(error: GroupError) -> Self {
        match error {
            GroupError::WriterPanicked => Self::AmbiguousCommit {
                source: Box::new(error),
            },
            GroupError::Unanswered { .. } => Self::backend(error),
        }
    }
}

/// A store error that a whole group met (its commit failed, its connection was lost), once
/// per member: each copy has the original's variant, so each member's caller reads it exactly
/// as if its own write had failed that way (an [`AmbiguousCommit`] stays ambiguous).
///
/// [`AmbiguousCommit`]: crate::store::StoreError::AmbiguousCommit
pub fn each_member(
    error: crate::store::StoreError,
    members: usize,
) -> Vec<crate::store::StoreError> {
    use crate::store::StoreError as E;
    let shared = std::sync::Arc::new(error);
    (0..members)
        .map(|_| match &*shared {
            E::MissingTable { hint } => E::MissingTable { hint: hint.clone() },
            E::CorruptRow { digest, detail } => E::CorruptRow {
                digest: digest.clone(),
                detail: detail.clone(),
            },
            E::PoolExhausted { waited } => E::PoolExhausted { waited: *waited },
            E::Unreachable { target, .. } => E::Unreachable {
                target: target.clone(),
                source: Box::new(GroupFailed(shared.clone())),
            },
            E::AmbiguousCommit { .. } => E::AmbiguousCommit {
                source: Box::new(GroupFailed(shared.clone())),
            },
            _ => E::backend(GroupFailed(shared.clone())),
        })
        .collect()
}

/// The error of a group that one of its members reports (see [`each_member`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the group this request was written in failed: {0}")]
pub struct GroupFailed(pub std::sync::Arc<crate::store::StoreError>);

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Barrier, mpsc},
        thread,
    };

    use super::*;

    fn coalescer(max: usize) -> Arc<Coalescer<u32, u32>> {
        Arc::new(Coalescer::new(NonZeroUsize::new(max).unwrap()))
    }

    /// A lone request is written at once, by its own thread, in a group of one. Catches a
    /// leader that waits for company (a timer) or never leads.
    #[test]
    fn a_lone_request_is_written_at_once() {
        let c = coalescer(8);
        let me = thread::current().id();
        let answer = c.submit(20, |reqs| {
            assert_eq!(thread::current().id(), me);
            reqs.into_iter().map(|r| r + 1).collect()
        });
        assert_eq!(answer, Ok(21));
        let stats = c.stats();
        assert_eq!((stats.groups, stats.items, stats.largest), (1, 1, 1));
    }

    /// Requests that arrive while a group is written are written together in the next group,
    /// each thread getting its own answer. The first group's writer blocks until the others
    /// are waiting, so the grouping is deterministic. Catches a leader that takes only its own
    /// request, or answers that reach the wrong thread.
    #[test]
    fn requests_arriving_during_a_write_form_the_next_group() {
        let c = coalescer(64);
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let first = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.submit(0, move |reqs| {
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    reqs.into_iter().map(|r| r * 10).collect()
                })
            })
        };
        entered_rx.recv().unwrap();
        let others: Vec<_> = (1..=5)
            .map(|i| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    c.submit(i, |reqs| {
                        // Only the second group's leader gets here, with all five.
                        assert_eq!(reqs.len(), 5, "the waiting requests form one group");
                        reqs.into_iter().map(|r| r * 10).collect()
                    })
                })
            })
            .collect();
        // Wait until all five are queued behind the first group.
        while c.lock().waiting.len() < 5 {
            thread::yield_now();
        }
        go_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), Ok(0));
        for (i, t) in others.into_iter().enumerate() {
            assert_eq!(t.join().unwrap(), Ok((i as u32 + 1) * 10));
        }
        let stats = c.stats();
        assert_eq!((stats.groups, stats.items, stats.largest), (2, 6, 5));
    }

    /// A group never exceeds its maximum; the requests left over are written by later groups.
    /// Catches a drain of every waiting request regardless of `max_group`.
    #[test]
    fn groups_respect_their_maximum() {
        let c = coalescer(3);
        let threads = 12;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads as u32)
            .map(|i| {
                let (c, barrier) = (Arc::clone(&c), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    c.submit(i, |reqs| {
                        assert!(reqs.len() <= 3, "group of {}", reqs.len());
                        reqs.into_iter().map(|r| r + 100).collect()
                    })
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(h.join().unwrap(), Ok(i as u32 + 100));
        }
        let stats = c.stats();
        assert_eq!(stats.items, threads as u64);
        assert!(stats.largest <= 3);
    }

    /// A writer that panics answers its group's other threads with `WriterPanicked` (they do
    /// not hang), the panic goes on in the leader, and the coalescer keeps working. Catches a
    /// `writing` flag left set by a panic (every later submit would hang).
    #[test]
    fn a_panicking_writer_fails_its_group_not_the_coalescer() {
        let c = coalescer(8);
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let leader = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.submit(1, move |_| -> Vec<u32> {
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    panic!("writer failed")
                })
            })
        };
        entered_rx.recv().unwrap();
        let follower = {
            let c = Arc::clone(&c);
            thread::spawn(move || c.submit(2, |_| -> Vec<u32> { panic!("second writer") }))
        };
        while c.lock().waiting.is_empty() {
            thread::yield_now();
        }
        // The follower's request is in the next group, led by the follower itself, whose
        // writer panics too: its own thread panics.
        go_tx.send(()).unwrap();
        assert!(leader.join().is_err(), "the leader's panic goes on");
        assert!(follower.join().is_err());
        assert_eq!(c.submit(3, |r| r), Ok(3), "later submits still work");
    }

    /// Followers of a panicking leader get `WriterPanicked`.
    #[test]
    fn followers_of_a_panicking_leader_are_told() {
        let c = coalescer(8);
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let leader = {
            let c = Arc::clone(&c);
            thread::spawn(move || {
                c.submit(1, move |reqs: Vec<u32>| -> Vec<u32> {
                    entered_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    if reqs.len() > 1 {
                        panic!("group of {} failed", reqs.len())
                    }
                    reqs
                })
            })
        };
        entered_rx.recv().unwrap();
        // Two followers queue; the first to lead writes both with a panicking writer, so the
        // other one is told, whichever leads.
        let followers: Vec<_> = [2u32, 3]
            .into_iter()
            .map(|i| {
                let c = Arc::clone(&c);
                thread::spawn(move || {
                    c.submit(i, |reqs| -> Vec<u32> { panic!("group of {}", reqs.len()) })
                })
            })
            .collect();
        while c.lock().waiting.len() < 2 {
            thread::yield_now();
        }
        go_tx.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), Ok(1));
        let results: Vec<_> = followers.into_iter().map(|t| t.join()).collect();
        let panicked = results.iter().filter(|r| r.is_err()).count();
        let told: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
        assert_eq!(panicked, 1, "the follower that led panics");
        assert_eq!(told, vec![Err(GroupError::WriterPanicked)]);
    }

    /// A group's error told to each member keeps its variant: an ambiguous commit stays
    /// ambiguous for every member. Catches a fan-out that turns it into a plain backend error
    /// (the guard's pipeline would then not know the finalize may have committed).
    #[test]
    fn a_group_error_reaches_each_member_with_its_variant() {
        use crate::store::StoreError;
        let copies = each_member(
            StoreError::AmbiguousCommit {
                source: "connection reset".into(),
            },
            3,
        );
        assert_eq!(copies.len(), 3);
        for copy in &copies {
            assert!(
                matches!(copy, StoreError::AmbiguousCommit { .. }),
                "{copy:?}"
            );
            assert!(copy.to_string().contains("commit outcome unknown"));
        }
        let pool = each_member(
            StoreError::PoolExhausted {
                waited: std::time::Duration::from_secs(1),
            },
            2,
        );
        assert!(
            pool.iter()
                .all(|e| matches!(e, StoreError::PoolExhausted { .. }))
        );
        assert!(matches!(
            StoreError::from(GroupError::WriterPanicked),
            StoreError::AmbiguousCommit { .. }
        ));
    }

    /// A writer that answers too few requests leaves the rest with a typed error. Catches
    /// a missing answer being turned into a hang or a panic.
    #[test]
    fn a_short_answer_is_a_typed_error() {
        let c = coalescer(8);
        assert_eq!(
            c.submit(1, |_| Vec::new()),
            Err(GroupError::Unanswered {
                asked: 1,
                answered: 0
            })
        );
    }
}
