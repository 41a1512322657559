//! An executable model of safejob's lease protocol, checked exhaustively with [`stateright`].
//!
//! The model has keys, workers and one store whose primitives ([`store::StoreModel`]) are the
//! `LeaseStore` primitives of `safejob-core` with their real atomicity: each is one step. The
//! checker explores every interleaving of deliveries (first and duplicate), renewals, finalizes
//! whose answer may be lost, releases, effects, deliberate effects recoveries, crashes and the
//! store clock moving, within [`Bounds`], and checks the properties in [`model::properties`].
//! Each [`Mutation`] plants one bug; the checker must then find a counterexample.
//!
//! ```
//! use safejob_model::{Bounds, check};
//!
//! let bounds = Bounds { workers: 2, keys: 1, ttl: 2, max_time: 2, max_fence: 3, copies: 0 };
//! let outcome = check(bounds, None);
//! assert!(outcome.passed());
//! ```
//!
//! What is modelled and what is abstracted away: `docs/model.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{fmt, str::FromStr};

use stateright::{Checker, Model};

pub mod model;
pub mod queue;
pub mod store;

pub use model::{Action, Bounds, LeaseModel, State, Worker};

/// A deliberate bug planted in the model, each breaking one guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// `finalize_succeeded` checks the state but not the fence.
    FinalizeWithoutFence,
    /// `acquire` takes over a `running` row whose lease is still live.
    TakeoverLiveLease,
    /// `release` checks the fence but not that the row is `running`.
    ReleaseIgnoringState,
    /// Settling a lost finalize accepts a `succeeded` row under any fence as its own success.
    SettleAcceptsAnySuccess,
    /// `claim_effects` claims effects that are pending within their window.
    ClaimLiveEffects,
    /// `acquire` never takes over an expired lease (only a released row).
    NoTakeoverAfterExpiry,
    /// The queue's completion marks the job `succeeded` even when the guard's finalize was
    /// stale (checked with the queue: `Bounds::copies` ≥ 1).
    CompleteIgnoringGuard,
}

impl Mutation {
    /// Every mutation, in a fixed order.
    pub const ALL: [Self; 7] = [
        Self::FinalizeWithoutFence,
        Self::TakeoverLiveLease,
        Self::ReleaseIgnoringState,
        Self::SettleAcceptsAnySuccess,
        Self::ClaimLiveEffects,
        Self::NoTakeoverAfterExpiry,
        Self::CompleteIgnoringGuard,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::FinalizeWithoutFence => "finalize-without-fence",
            Self::TakeoverLiveLease => "takeover-live-lease",
            Self::ReleaseIgnoringState => "release-ignoring-state",
            Self::SettleAcceptsAnySuccess => "settle-accepts-any-success",
            Self::ClaimLiveEffects => "claim-live-effects",
            Self::NoTakeoverAfterExpiry => "no-takeover-after-expiry",
            Self::CompleteIgnoringGuard => "complete-ignoring-guard",
        }
    }

    /// The property the checker must find broken with this mutation planted.
    pub fn breaks(self) -> &'static str {
        use model::properties::*;
        match self {
            Self::FinalizeWithoutFence => NO_STALE_WRITE,
            Self::TakeoverLiveLease => ONE_LIVE_LEASE,
            Self::ReleaseIgnoringState => ONE_SUCCESS,
            Self::SettleAcceptsAnySuccess => EFFECTS_ONCE,
            Self::ClaimLiveEffects => EFFECTS_EXCLUSIVE,
            Self::NoTakeoverAfterExpiry => NO_KEY_STUCK,
            Self::CompleteIgnoringGuard => JOB_BACKED,
        }
    }
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A mutation name that is not one of [`Mutation::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown mutation {0:?}; known: finalize-without-fence, takeover-live-lease, release-ignoring-state, settle-accepts-any-success, claim-live-effects, no-takeover-after-expiry, complete-ignoring-guard"
)]
pub struct UnknownMutation(pub String);

impl FromStr for Mutation {
    type Err = UnknownMutation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMutation(s.chars().take(40).collect()))
    }
}

/// How one property fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An `always` property held in every explored state.
    Held,
    /// An `always` property failed: the actions from the initial state to a state breaking it.
    Counterexample(Vec<Action>),
    /// A `sometimes` property: an example was found (the actions reaching it).
    Example(Vec<Action>),
    /// A `sometimes` property: no explored state shows it.
    NoExample,
}

/// The result of an exhaustive check.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    /// States generated (with repeats).
    pub states: usize,
    /// Distinct states explored.
    pub unique_states: usize,
    /// The longest path explored.
    pub max_depth: usize,
    /// Each property by name, in the model's order.
    pub verdicts: Vec<(&'static str, Verdict)>,
}

impl CheckOutcome {
    /// Whether every `always` property held and every `sometimes` example was found.
    pub fn passed(&self) -> bool {
        self.verdicts
            .iter()
            .all(|(_, v)| matches!(v, Verdict::Held | Verdict::Example(_)))
    }

    /// The verdict on the property `name`, if the model has it.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// Explores every state of the model within `bounds` (breadth first, on two threads) with
/// `mutation` planted, and judges every property.
pub fn check(bounds: Bounds, mutation: Option<Mutation>) -> CheckOutcome {
    let model = LeaseModel { bounds, mutation };
    let properties = model.properties();
    let checker = model.checker().threads(2).spawn_bfs().join();
    let verdicts = properties
        .iter()
        .map(|property| {
            let path = checker.discovery(property.name).map(|p| p.into_actions());
            let sometimes = matches!(property.expectation, stateright::Expectation::Sometimes);
            let verdict = match (sometimes, path) {
                (true, Some(path)) => Verdict::Example(path),
                (true, None) => Verdict::NoExample,
                (_, Some(path)) => Verdict::Counterexample(path),
                (_, None) => Verdict::Held,
            };
            (property.name, verdict)
        })
        .collect();
    CheckOutcome {
        states: checker.state_count(),
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        verdicts,
    }
}
