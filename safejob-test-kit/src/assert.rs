//! Exactly-once assertions, over an [`EffectProbe`] or over the store's own rows.
//!
//! Each `check_*` function returns a `Result` whose error lists the offending keys by digest
//! prefix (never the raw key); each `assert_*` function panics with that same message.

use std::{borrow::Borrow, collections::HashSet, fmt};

use safejob_core::{EffectsState, IdempotencyKey, JobState, KeyDigest, LeaseStore, StoreError};

use crate::EffectProbe;

/// At most this many offenders are listed in a message; the rest are counted.
const MAX_LISTED: usize = 20;

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// Every key's effects ran exactly once.
    ExactlyOnce,
    /// No key's effects ran more than once.
    AtMostOnce,
    /// Every key's row is `succeeded`, with its effects done.
    Succeeded,
    /// Every key's row is terminal (`succeeded` or `failed`): none is stuck.
    Settled,
    /// Every key's row is `succeeded` with its effects in doubt (visible, not lost).
    EffectsInDoubt,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExactlyOnce => "exactly once",
            Self::AtMostOnce => "at most once",
            Self::Succeeded => "succeeded",
            Self::Settled => "settled",
            Self::EffectsInDoubt => "effects in doubt",
        })
    }
}

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The effects ran `count` times.
    EffectsRan {
        /// How many times.
        count: u64,
        /// Whether fewer than one was acceptable (at most once) or exactly one was expected.
        at_most: bool,
    },
    /// The store has no row for the key.
    NoRow,
    /// The row is in the wrong state.
    State {
        /// The state found.
        found: JobState,
        /// What was expected, in words.
        expected: &'static str,
    },
    /// The row succeeded, but its effects are not done.
    EffectsNotDone {
        /// The effects state found.
        found: EffectsState,
        /// Whether the store counts them in doubt now.
        in_doubt: bool,
    },
    /// The row's effects were expected in doubt but are not.
    EffectsNotInDoubt {
        /// The effects state found.
        found: EffectsState,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EffectsRan { count, at_most } => {
                let times = if *count == 1 { "time" } else { "times" };
                let expected = if *at_most { "at most 1" } else { "1" };
                write!(f, "effects ran {count} {times}, expected {expected}")
            }
            Self::NoRow => f.write_str("no row in the store"),
            Self::State { found, expected } => write!(f, "state is {found}, expected {expected}"),
            Self::EffectsNotDone { in_doubt: true, .. } => f.write_str("effects are in doubt"),
            Self::EffectsNotDone { found, .. } => {
                write!(f, "effects are {}, expected done", found.as_str())
            }
            Self::EffectsNotInDoubt { found } => {
                write!(f, "effects are {}, expected in doubt", found.as_str())
            }
        }
    }
}

/// One key that failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offender {
    /// The key's digest (messages print its 12-character prefix).
    pub digest: KeyDigest,
    /// What is wrong.
    pub problem: Problem,
}

/// A check found keys that broke the exactly-once contract (or was given no keys at all, which
/// would prove nothing).
///
/// Its message names the check, how many keys broke it, and each offender by digest prefix:
///
/// ```text
/// exactly once: 1 of 2 keys violated
///   key 3fc9b689459d: effects ran 2 times, expected 1
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ExactlyOnceViolation {
    /// The check that failed.
    pub check: Check,
    /// How many distinct keys were checked.
    pub checked: usize,
    /// The keys that failed it, in the order they were given.
    pub offenders: Vec<Offender>,
}

impl fmt::Display for ExactlyOnceViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.checked == 0 {
            return write!(f, "{}: no keys given, nothing was checked", self.check);
        }
        let noun = if self.checked == 1 { "key" } else { "keys" };
        write!(
            f,
            "{}: {} of {} {noun} violated",
            self.check,
            self.offenders.len(),
            self.checked
        )?;
        for offender in self.offenders.iter().take(MAX_LISTED) {
            write!(
                f,
                "\n  key {}: {}",
                offender.digest.short(),
                offender.problem
            )?;
        }
        if self.offenders.len() > MAX_LISTED {
            write!(f, "\n  ... and {} more", self.offenders.len() - MAX_LISTED)?;
        }
        Ok(())
    }
}

/// A check that reads the store could not finish, or found a violation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreCheckError {
    /// The rows break the contract.
    #[error(transparent)]
    Violation(#[from] ExactlyOnceViolation),
    /// The store could not be read.
    #[error("could not read the store to check it: {0}")]
    Store(#[from] StoreError),
}

/// The distinct digests of `keys`, in first-seen order.
fn digests<I>(keys: I) -> Vec<KeyDigest>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    let mut seen = HashSet::new();
    keys.into_iter()
        .map(|k| *k.borrow().digest())
        .filter(|d| seen.insert(*d))
        .collect()
}

fn verdict(
    check: Check,
    keys: &[KeyDigest],
    mut problem: impl FnMut(&KeyDigest) -> Option<Problem>,
) -> Result<(), ExactlyOnceViolation> {
    let offenders: Vec<Offender> = keys
        .iter()
        .filter_map(|d| {
            problem(d).map(|problem| Offender {
                digest: *d,
                problem,
            })
        })
        .collect();
    if keys.is_empty() || !offenders.is_empty() {
        return Err(ExactlyOnceViolation {
            check,
            checked: keys.len(),
            offenders,
        });
    }
    Ok(())
}

/// Checks that the probe recorded exactly one effect for each of `keys`.
///
/// ```
/// use safejob_core::IdempotencyKey;
/// use safejob_test_kit::{EffectProbe, check_exactly_once};
///
/// let probe = EffectProbe::new();
/// let keys = [IdempotencyKey::new("a")?, IdempotencyKey::new("b")?];
/// probe.record(&keys[0]);
/// let err = check_exactly_once(&probe, &keys).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "exactly once: 1 of 2 keys violated\n  key 3e23e8160039: effects ran 0 times, expected 1"
/// );
/// probe.record(&keys[1]);
/// assert!(check_exactly_once(&probe, &keys).is_ok());
/// # Ok::<(), safejob_core::KeyError>(())
/// ```
pub fn check_exactly_once<I>(probe: &EffectProbe, keys: I) -> Result<(), ExactlyOnceViolation>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    verdict(Check::ExactlyOnce, &digests(keys), |d| {
        let count = probe.count_digest(d);
        (count != 1).then_some(Problem::EffectsRan {
            count,
            at_most: false,
        })
    })
}

/// Checks that the probe recorded at most one effect for each of `keys` (for keys whose effects
/// may be in doubt: not doubled, possibly not run).
pub fn check_at_most_once<I>(probe: &EffectProbe, keys: I) -> Result<(), ExactlyOnceViolation>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    verdict(Check::AtMostOnce, &digests(keys), |d| {
        let count = probe.count_digest(d);
        (count > 1).then_some(Problem::EffectsRan {
            count,
            at_most: true,
        })
    })
}

/// Reads each key's row: the store's own answer, not a worker's memory.
fn rows<I>(
    store: &dyn LeaseStore,
    keys: I,
) -> Result<Vec<(KeyDigest, Option<safejob_core::JobRecord>)>, StoreError>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    digests(keys)
        .into_iter()
        .map(|d| store.get(&d).map(|row| (d, row)))
        .collect()
}

fn verdict_on_rows(
    check: Check,
    rows: Vec<(KeyDigest, Option<safejob_core::JobRecord>)>,
    problem: impl Fn(&safejob_core::JobRecord) -> Option<Problem>,
) -> Result<(), StoreCheckError> {
    let keys: Vec<KeyDigest> = rows.iter().map(|(d, _)| *d).collect();
    let mut rows = rows.into_iter();
    verdict(check, &keys, |_| match rows.next() {
        Some((_, Some(row))) => problem(&row),
        _ => Some(Problem::NoRow),
    })
    .map_err(StoreCheckError::from)
}

/// Checks, from the store's rows, that every one of `keys` is `succeeded` with its effects done.
/// One row per key and a fenced finalize mean a `succeeded` row was finalized exactly once.
///
/// ```
/// use std::sync::Arc;
/// use safejob_core::{IdempotencyKey, MemoryStore};
/// use safejob_test_kit::check_succeeded;
///
/// let store = MemoryStore::new();
/// let key = IdempotencyKey::new("never-run")?;
/// let err = check_succeeded(&store, [&key]).unwrap_err();
/// assert_eq!(err.to_string(), "succeeded: 1 of 1 key violated\n  key 0824c8ea5117: no row in the store");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_succeeded<I>(store: &dyn LeaseStore, keys: I) -> Result<(), StoreCheckError>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    let now = store.now()?;
    verdict_on_rows(Check::Succeeded, rows(store, keys)?, |row| {
        if row.state != JobState::Succeeded {
            Some(Problem::State {
                found: row.state,
                expected: "succeeded",
            })
        } else if row.effects != EffectsState::Done {
            Some(Problem::EffectsNotDone {
                found: row.effects,
                in_doubt: row.effects_in_doubt(now),
            })
        } else {
            None
        }
    })
}

/// Checks, from the store's rows, that every one of `keys` is terminal (`succeeded` or
/// `failed`): no key is left running, released, or without a row.
pub fn check_settled<I>(store: &dyn LeaseStore, keys: I) -> Result<(), StoreCheckError>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    verdict_on_rows(Check::Settled, rows(store, keys)?, |row| {
        (!row.state.is_terminal()).then_some(Problem::State {
            found: row.state,
            expected: "succeeded or failed",
        })
    })
}

/// Checks, from the store's rows, that every one of `keys` succeeded with its effects in doubt
/// (marked so, or pending past their window): visible to operators, not lost.
pub fn check_effects_in_doubt<I>(store: &dyn LeaseStore, keys: I) -> Result<(), StoreCheckError>
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    let now = store.now()?;
    verdict_on_rows(Check::EffectsInDoubt, rows(store, keys)?, |row| {
        if row.state != JobState::Succeeded {
            Some(Problem::State {
                found: row.state,
                expected: "succeeded",
            })
        } else if !row.effects_in_doubt(now) {
            Some(Problem::EffectsNotInDoubt { found: row.effects })
        } else {
            None
        }
    })
}

/// Panics unless the probe recorded exactly one effect for each of `keys`; see
/// [`check_exactly_once`].
///
/// ```
/// use safejob_core::IdempotencyKey;
/// use safejob_test_kit::{EffectProbe, assert_exactly_once};
///
/// let probe = EffectProbe::new();
/// let key = IdempotencyKey::new("a")?;
/// probe.record(&key);
/// assert_exactly_once(&probe, [&key]);
/// # Ok::<(), safejob_core::KeyError>(())
/// ```
#[track_caller]
pub fn assert_exactly_once<I>(probe: &EffectProbe, keys: I)
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    if let Err(violation) = check_exactly_once(probe, keys) {
        panic!("{violation}");
    }
}

/// Panics unless the probe recorded at most one effect for each of `keys`; see
/// [`check_at_most_once`].
#[track_caller]
pub fn assert_at_most_once<I>(probe: &EffectProbe, keys: I)
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    if let Err(violation) = check_at_most_once(probe, keys) {
        panic!("{violation}");
    }
}

/// Panics unless every one of `keys` succeeded with its effects done; see [`check_succeeded`].
#[track_caller]
pub fn assert_succeeded<I>(store: &dyn LeaseStore, keys: I)
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    if let Err(error) = check_succeeded(store, keys) {
        panic!("{error}");
    }
}

/// Panics unless every one of `keys` is terminal; see [`check_settled`].
#[track_caller]
pub fn assert_settled<I>(store: &dyn LeaseStore, keys: I)
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    if let Err(error) = check_settled(store, keys) {
        panic!("{error}");
    }
}

/// Panics unless every one of `keys` succeeded with its effects in doubt; see
/// [`check_effects_in_doubt`].
#[track_caller]
pub fn assert_effects_in_doubt<I>(store: &dyn LeaseStore, keys: I)
where
    I: IntoIterator,
    I::Item: Borrow<IdempotencyKey>,
{
    if let Err(error) = check_effects_in_doubt(store, keys) {
        panic!("{error}");
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use safejob_core::{
        Fingerprint, MemoryStore, Retention,
        store::{AcquireRequest, Acquired, EffectsOutcome, Lease},
    };

    use super::*;
    use crate::ManualClock;

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::new(text).unwrap()
    }

    fn grant(store: &MemoryStore, k: &IdempotencyKey) -> Lease {
        let req = AcquireRequest {
            digest: *k.digest(),
            fingerprint: None::<Fingerprint>,
            owner: "w",
            ttl: Duration::from_secs(30),
        };
        match store.acquire(&req).unwrap() {
            Acquired::Granted(lease) => lease,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exactly_once_lists_offenders_by_digest_prefix_in_order() {
        let probe = EffectProbe::new();
        let (a, b, k1) = (key("a"), key("b"), key("k1"));
        probe.record(&a);
        probe.record(&b);
        probe.record(&b);
        let err = check_exactly_once(&probe, [&b, &a, &k1, &b]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exactly once: 2 of 3 keys violated\n  \
             key 3e23e8160039: effects ran 2 times, expected 1\n  \
             key 6ab9f1eb8f7d: effects ran 0 times, expected 1"
        );
        assert_eq!(err.checked, 3);
        assert_eq!(err.offenders[0].digest, *b.digest());
    }

    #[test]
    fn at_most_once_tolerates_zero_but_not_two() {
        let probe = EffectProbe::new();
        let (a, b) = (key("a"), key("b"));
        probe.record(&a);
        assert_eq!(check_at_most_once(&probe, [&a, &b]), Ok(()));
        probe.record(&a);
        assert_eq!(
            check_at_most_once(&probe, vec![a.clone(), b])
                .unwrap_err()
                .to_string(),
            "at most once: 1 of 2 keys violated\n  key ca978112ca1b: effects ran 2 times, expected at most 1"
        );
    }

    #[test]
    fn an_empty_key_list_proves_nothing_and_says_so() {
        let probe = EffectProbe::new();
        let none: [&IdempotencyKey; 0] = [];
        assert_eq!(
            check_exactly_once(&probe, none).unwrap_err().to_string(),
            "exactly once: no keys given, nothing was checked"
        );
    }

    #[test]
    fn long_lists_are_cut_after_twenty() {
        let probe = EffectProbe::new();
        let keys: Vec<_> = (0..25).map(|i| key(&format!("k{i}"))).collect();
        let text = check_exactly_once(&probe, &keys).unwrap_err().to_string();
        assert_eq!(text.lines().count(), 1 + 20 + 1);
        assert!(text.ends_with("\n  ... and 5 more"), "{text}");
        assert!(text.starts_with("exactly once: 25 of 25 keys violated\n"));
    }

    #[test]
    fn store_checks_read_the_rows() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryStore::with_clock(clock.clone());
        let (done, doubt, running, failed, missing) =
            (key("a"), key("b"), key("k1"), key("k2"), key("refund:1"));
        let lease = grant(&store, &done);
        store
            .finalize_succeeded(
                &lease,
                None,
                Duration::from_secs(30),
                Retention::Forever,
                None,
            )
            .unwrap();
        store.finish_effects(&lease, EffectsOutcome::Done).unwrap();
        let lease = grant(&store, &doubt);
        store
            .finalize_succeeded(
                &lease,
                None,
                Duration::from_secs(30),
                Retention::Forever,
                None,
            )
            .unwrap();
        grant(&store, &running);
        let lease = grant(&store, &failed);
        store
            .finalize_failed(
                &lease,
                &safejob_core::FinalFailure::new("x", "y"),
                Retention::Forever,
            )
            .unwrap();

        assert!(check_succeeded(&store, [&done]).is_ok());
        let all = [&done, &doubt, &running, &failed, &missing];
        assert_eq!(
            check_succeeded(&store, all).unwrap_err().to_string(),
            "succeeded: 4 of 5 keys violated\n  \
             key 3e23e8160039: effects are pending, expected done\n  \
             key 6ab9f1eb8f7d: state is running, expected succeeded\n  \
             key 015f7e6bc5ae: state is failed, expected succeeded\n  \
             key aa8e684c5fd9: no row in the store"
        );
        assert_eq!(
            check_settled(&store, all).unwrap_err().to_string(),
            "settled: 2 of 5 keys violated\n  \
             key 6ab9f1eb8f7d: state is running, expected succeeded or failed\n  \
             key aa8e684c5fd9: no row in the store"
        );
        assert_eq!(
            check_effects_in_doubt(&store, [&done, &doubt])
                .unwrap_err()
                .to_string(),
            "effects in doubt: 2 of 2 keys violated\n  \
             key ca978112ca1b: effects are done, expected in doubt\n  \
             key 3e23e8160039: effects are pending, expected in doubt"
        );
        // Past the effects window, pending effects are in doubt.
        clock.advance(Duration::from_secs(31));
        assert!(check_effects_in_doubt(&store, [&doubt]).is_ok());
        assert_eq!(
            check_succeeded(&store, [&doubt]).unwrap_err().to_string(),
            "succeeded: 1 of 1 key violated\n  key 3e23e8160039: effects are in doubt"
        );
    }

    #[test]
    #[should_panic(expected = "exactly once: 1 of 1 key violated\n  \
                               key ca978112ca1b: effects ran 0 times, expected 1")]
    fn assert_exactly_once_panics_with_the_message() {
        assert_exactly_once(&EffectProbe::new(), [key("a")]);
    }

    #[test]
    #[should_panic(expected = "at most once: 1 of 1 key violated")]
    fn assert_at_most_once_panics_with_the_message() {
        let probe = EffectProbe::new();
        probe.record(&key("a"));
        probe.record(&key("a"));
        assert_at_most_once(&probe, [key("a")]);
    }

    #[test]
    #[should_panic(
        expected = "settled: 1 of 1 key violated\n  key ca978112ca1b: no row in the store"
    )]
    fn assert_settled_panics_with_the_message() {
        assert_settled(&MemoryStore::new(), [key("a")]);
    }

    #[test]
    #[should_panic(expected = "succeeded: 1 of 1 key violated")]
    fn assert_succeeded_panics_with_the_message() {
        assert_succeeded(&MemoryStore::new(), [key("a")]);
    }

    #[test]
    #[should_panic(expected = "effects in doubt: 1 of 1 key violated")]
    fn assert_effects_in_doubt_panics_with_the_message() {
        assert_effects_in_doubt(&MemoryStore::new(), [key("a")]);
    }
}
