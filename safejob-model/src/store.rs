//! The store primitives of `safejob_core::store::LeaseStore`, each one atomic step.
//!
//! Each method is the model of one primitive as its doc comment in `safejob-core`'s
//! `guard/store.rs` and `docs/state-machine.md` describe it: the whole read-decide-write happens
//! in one step, so no other action interleaves inside it. Time is the store clock, a small whole
//! number of seconds; a [`Mutation`] deliberately breaks one primitive.

use crate::Mutation;

/// A key's row state (`JobState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowState {
    /// A worker holds the lease until the row's expiry.
    Running,
    /// The last holder gave the lease back; the next acquire takes it at once.
    Released,
    /// Terminal success.
    Succeeded,
    /// Terminal failure.
    Failed,
}

/// A succeeded key's effects progress (`EffectsState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effects {
    /// No effects due.
    None,
    /// The finalize (or claim) winner runs them until the row's expiry.
    Pending,
    /// They returned.
    Done,
    /// They failed, or were marked so.
    InDoubt,
}

/// One key's row: the columns the protocol decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    /// The row state.
    pub state: RowState,
    /// The fence token: bumped by every grant and every effects claim.
    pub fence: u8,
    /// The lease expiry (or effects window of a succeeded row), by the store clock.
    pub expires: Option<u8>,
    /// The effects progress.
    pub effects: Effects,
}

/// What a primitive answered: the same vocabulary as the real store's answer enums, reduced to
/// what a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// `Acquired::Granted`: the caller holds the lease with this fence until `expires`.
    Granted {
        /// The new fence.
        fence: u8,
        /// The lease expiry.
        expires: u8,
    },
    /// `Acquired::AlreadySucceeded`: a replay.
    AlreadySucceeded,
    /// `Acquired::AlreadyFailed`: a replay.
    AlreadyFailed,
    /// `Acquired::Busy`: another worker holds a live lease.
    Busy,
    /// `Renewed::Extended`: the lease now ends at `until`.
    Extended {
        /// The new expiry.
        until: u8,
    },
    /// `Renewed::Stale`, `Finalized::Stale`, `FenceCheck::Stale`: nothing changed.
    Stale,
    /// `Finalized::Committed`: `running → succeeded` under the caller's fence.
    Committed,
    /// `FenceCheck::Applied`: the fenced write changed the row.
    Applied,
    /// `EffectsClaim::Claimed`: the caller owns the in-doubt effects with this fence.
    Claimed {
        /// The new fence.
        fence: u8,
        /// The end of the new effects window.
        until: u8,
    },
    /// `EffectsClaim::NotInDoubt`.
    NotInDoubt,
    /// `EffectsClaim::Missing`: no row for the key.
    Missing,
    /// `QueueStore::claim` of one job: its new fence and lease expiry, and the guard's answer.
    JobClaimed {
        /// The job's new fence.
        fence: u8,
        /// The job lease's expiry (the guard lease's too, when granted).
        expires: u8,
        /// The guard's acquire, in the same step.
        guard: crate::queue::GuardAnswer,
    },
    /// `Completed::GuardStale`: the job's fence matched, the guard's did not; nothing changed.
    GuardStale,
    /// `QueueStore::reap`: how many jobs it requeued.
    Reaped {
        /// Jobs requeued.
        jobs: u8,
    },
    /// A row read (`LeaseStore::get`) while settling an unknown finalize: whether the row is
    /// `succeeded` under the reader's fence.
    Read {
        /// `succeeded` with the reader's fence.
        ours: bool,
    },
}

/// The store: its clock and one optional row per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreModel {
    /// The store clock, in seconds since the start.
    pub now: u8,
    /// Row per key index; `None`: the key was never acquired.
    pub rows: Vec<Option<Row>>,
}

impl StoreModel {
    /// An empty store for `keys` keys at time 0.
    pub fn new(keys: usize) -> Self {
        Self {
            now: 0,
            rows: vec![None; keys],
        }
    }

    /// Whether a succeeded row's effects are in doubt now (`JobRecord::effects_in_doubt`).
    pub fn effects_in_doubt(&self, row: &Row) -> bool {
        row.state == RowState::Succeeded
            && match row.effects {
                Effects::InDoubt => true,
                Effects::Pending => row.expires.is_none_or(|t| t <= self.now),
                Effects::None | Effects::Done => false,
            }
    }

    /// `acquire`: insert (fence 1), replay a terminal row, refuse a live lease, or take over a
    /// released or expired one with fence + 1.
    pub fn acquire(&mut self, key: usize, ttl: u8, mutation: Option<Mutation>) -> Answer {
        let expires = self.now.saturating_add(ttl);
        let now = self.now;
        let Some(row) = self.rows[key] else {
            self.rows[key] = Some(Row {
                state: RowState::Running,
                fence: 1,
                expires: Some(expires),
                effects: Effects::None,
            });
            return Answer::Granted { fence: 1, expires };
        };
        let take_over = match row.state {
            RowState::Succeeded => return Answer::AlreadySucceeded,
            RowState::Failed => return Answer::AlreadyFailed,
            RowState::Released => true,
            RowState::Running if mutation == Some(Mutation::TakeoverLiveLease) => true,
            RowState::Running if mutation == Some(Mutation::NoTakeoverAfterExpiry) => false,
            RowState::Running => row.expires.is_none_or(|t| t <= now),
        };
        if !take_over {
            return Answer::Busy;
        }
        let fence = row.fence.saturating_add(1);
        self.rows[key] = Some(Row {
            state: RowState::Running,
            fence,
            expires: Some(expires),
            effects: row.effects,
        });
        Answer::Granted { fence, expires }
    }

    /// The row of `key` if it is in `state` with `fence` (the compare of every fenced write).
    fn fenced(&mut self, key: usize, fence: u8, state: RowState) -> Option<&mut Row> {
        self.rows[key]
            .as_mut()
            .filter(|row| row.state == state && row.fence == fence)
    }

    /// `renew`: expiry = now + ttl where the row is `running` with `fence`.
    pub fn renew(&mut self, key: usize, fence: u8, ttl: u8) -> Answer {
        let until = self.now.saturating_add(ttl);
        match self.fenced(key, fence, RowState::Running) {
            Some(row) => {
                row.expires = Some(until);
                Answer::Extended { until }
            }
            None => Answer::Stale,
        }
    }

    /// `finalize_succeeded` without a hook (after-commit effects): `running → succeeded`,
    /// effects `pending` until now + `effects_ttl`, where the row is `running` with `fence`.
    pub fn finalize_succeeded(
        &mut self,
        key: usize,
        fence: u8,
        effects_ttl: u8,
        mutation: Option<Mutation>,
    ) -> Answer {
        let until = self.now.saturating_add(effects_ttl);
        let row = if mutation == Some(Mutation::FinalizeWithoutFence) {
            self.rows[key]
                .as_mut()
                .filter(|row| row.state == RowState::Running)
        } else {
            self.fenced(key, fence, RowState::Running)
        };
        match row {
            Some(row) => {
                row.state = RowState::Succeeded;
                row.effects = Effects::Pending;
                row.expires = Some(until);
                Answer::Committed
            }
            None => Answer::Stale,
        }
    }

    /// `finalize_failed`: `running → failed` where the row is `running` with `fence`.
    pub fn finalize_failed(&mut self, key: usize, fence: u8) -> Answer {
        match self.fenced(key, fence, RowState::Running) {
            Some(row) => {
                row.state = RowState::Failed;
                row.expires = None;
                Answer::Applied
            }
            None => Answer::Stale,
        }
    }

    /// `release`: `running → released` where the row is `running` with `fence`.
    pub fn release(&mut self, key: usize, fence: u8, mutation: Option<Mutation>) -> Answer {
        let row = if mutation == Some(Mutation::ReleaseIgnoringState) {
            self.rows[key].as_mut().filter(|row| row.fence == fence)
        } else {
            self.fenced(key, fence, RowState::Running)
        };
        match row {
            Some(row) => {
                row.state = RowState::Released;
                row.expires = None;
                Answer::Applied
            }
            None => Answer::Stale,
        }
    }

    /// `finish_effects`: effects `pending → done | in_doubt` where the row is `succeeded` with
    /// `fence`.
    pub fn finish_effects(&mut self, key: usize, fence: u8, done: bool) -> Answer {
        match self
            .fenced(key, fence, RowState::Succeeded)
            .filter(|row| row.effects == Effects::Pending)
        {
            Some(row) => {
                row.effects = if done {
                    Effects::Done
                } else {
                    Effects::InDoubt
                };
                Answer::Applied
            }
            None => Answer::Stale,
        }
    }

    /// `claim_effects`: a deliberate recovery of effects in doubt, fence + 1, effects `pending`
    /// until now + ttl.
    pub fn claim_effects(&mut self, key: usize, ttl: u8, mutation: Option<Mutation>) -> Answer {
        let until = self.now.saturating_add(ttl);
        let Some(row) = self.rows[key] else {
            return Answer::Missing;
        };
        let claimable = if mutation == Some(Mutation::ClaimLiveEffects) {
            row.state == RowState::Succeeded && row.effects != Effects::Done
        } else {
            self.effects_in_doubt(&row)
        };
        if !claimable {
            return Answer::NotInDoubt;
        }
        let fence = row.fence.saturating_add(1);
        self.rows[key] = Some(Row {
            fence,
            effects: Effects::Pending,
            expires: Some(until),
            ..row
        });
        Answer::Claimed { fence, until }
    }

    /// `get` while settling an unknown finalize: is the row `succeeded` under `fence`?
    pub fn read_settled(&self, key: usize, fence: u8, mutation: Option<Mutation>) -> Answer {
        let ours = self.rows[key].is_some_and(|row| {
            row.state == RowState::Succeeded
                && (row.fence == fence || mutation == Some(Mutation::SettleAcceptsAnySuccess))
        });
        Answer::Read { ours }
    }
}
