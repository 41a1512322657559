//! What the harness watches of the user's job itself, beside the store: that `key()` and
//! `fingerprint()` give the same answer every time they are called, and — through the user's
//! [`EffectCounter`] — what the job's own side effects did, and whether they happened in
//! `perform`.

use std::{
    error::Error,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use safejob_core::{Fingerprint, IdempotencyKey, KeyDigest};

use super::{
    report::{TortureFailure, Violation},
    run::lock,
};
use crate::EffectProbe;

/// The error an [`EffectCounter`] may return (a failed query on the user's ledger, say).
pub type CountError = Box<dyn Error + Send + Sync>;

/// Counts what a job's own side effects did for one key: rows in the user's ledger, calls to a
/// fake payment API, messages in a fake mailbox. Given to [`Torture::count_effects`], it is how
/// the harness checks the user's effects and not only the calls to `on_succeeded_once`.
///
/// The harness reads it after every `perform` (an effect counted there before
/// `on_succeeded_once` ever ran for the key was made by `perform`) and once per key at the end
/// (exactly one effect per succeeded key, none for a key that did not succeed).
///
/// Implemented by [`EffectProbe`] (record into it where the effect happens, whichever half of the
/// job calls that code) and by any `Fn(&IdempotencyKey) -> Result<u64, E>` closure, for a count
/// read from elsewhere — a `SELECT COUNT(*)` on the user's ledger table, for instance:
///
/// ```
/// use safejob_core::IdempotencyKey;
/// use safejob_test_kit::torture::{CountError, EffectCounter};
///
/// let ledger_rows = |key: &IdempotencyKey| -> Result<u64, CountError> {
///     Ok(u64::from(key.as_str().ends_with(":1"))) // your query here
/// };
/// assert_eq!(ledger_rows.count(&IdempotencyKey::new("charge:1")?)?, 1);
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
///
/// [`Torture::count_effects`]: super::Torture::count_effects
pub trait EffectCounter: Sync {
    /// How many times the job's own effect happened for `key`, so far.
    fn count(&self, key: &IdempotencyKey) -> Result<u64, CountError>;
}

impl EffectCounter for EffectProbe {
    fn count(&self, key: &IdempotencyKey) -> Result<u64, CountError> {
        Ok(EffectProbe::count(self, key))
    }
}

impl<F, E> EffectCounter for F
where
    F: Fn(&IdempotencyKey) -> Result<u64, E> + Sync,
    E: Into<CountError>,
{
    fn count(&self, key: &IdempotencyKey) -> Result<u64, CountError> {
        self(key).map_err(Into::into)
    }
}

/// One key index of the run: the job, what its first calls of `key()` and `fingerprint()`
/// answered, and what the harness saw of it while dispatching.
pub(super) struct Entry<J> {
    pub(super) index: usize,
    pub(super) job: J,
    /// The key of the first call; every dispatch runs under it.
    pub(super) key: IdempotencyKey,
    /// The fingerprint of the first call, or `None` when that call failed (the runner reports
    /// the failure itself).
    pub(super) fingerprint: Option<Option<Fingerprint>>,
    /// A different key returned by a later call, the first one seen.
    key_changed: Mutex<Option<KeyDigest>>,
    /// A different fingerprint returned by a later call, the first one seen.
    fingerprint_changed: Mutex<Option<Option<Fingerprint>>>,
    /// Whether any dispatch entered `on_succeeded_once` for this key.
    hook_entered: AtomicBool,
    /// The most effects the counter showed right after a `perform` returned, before any
    /// `on_succeeded_once` of the key had started: effects made by `perform`.
    in_perform: AtomicU64,
    /// The first error the counter returned after a `perform`.
    count_failed: Mutex<Option<String>>,
}

impl<J: safejob_core::SafeJob> Entry<J> {
    /// Builds the entry of key index `index`, calling `key()` and `fingerprint()` twice: a job
    /// whose answers differ between two calls in a row fails the run before it starts.
    pub(super) fn new(index: usize, job: J, seed: u64) -> Result<Self, TortureFailure> {
        let invalid = |source| TortureFailure::InvalidKey {
            seed,
            index,
            source,
        };
        let key = job.key().map_err(invalid)?;
        let again = job.key().map_err(invalid)?;
        if again.digest() != key.digest() {
            return Err(TortureFailure::UnstableKey {
                seed,
                index,
                job: std::any::type_name::<J>(),
                first: *key.digest(),
                second: *again.digest(),
            });
        }
        let fingerprint = job.fingerprint().ok();
        if let (Some(first), Ok(second)) = (fingerprint, job.fingerprint())
            && first != second
        {
            return Err(TortureFailure::UnstableFingerprint {
                seed,
                index,
                job: std::any::type_name::<J>(),
                digest: *key.digest(),
            });
        }
        Ok(Self {
            index,
            job,
            key,
            fingerprint,
            key_changed: Mutex::new(None),
            fingerprint_changed: Mutex::new(None),
            hook_entered: AtomicBool::new(false),
            in_perform: AtomicU64::new(0),
            count_failed: Mutex::new(None),
        })
    }

    pub(super) fn digest(&self) -> &KeyDigest {
        self.key.digest()
    }

    /// The key a dispatch runs under: the first one, whatever the job answers now. A different
    /// answer is remembered and reported as an unstable key, instead of running the dispatch
    /// under a key no other dispatch of the job uses.
    pub(super) fn stable_key(&self) -> Result<IdempotencyKey, safejob_core::KeyError> {
        let now = self.job.key()?;
        if now.digest() != self.key.digest() {
            lock(&self.key_changed).get_or_insert(*now.digest());
        }
        Ok(self.key.clone())
    }

    /// Like [`stable_key`](Self::stable_key), for the fingerprint.
    pub(super) fn stable_fingerprint(
        &self,
    ) -> Result<Option<Fingerprint>, safejob_core::FingerprintError> {
        let now = self.job.fingerprint()?;
        match self.fingerprint {
            Some(first) => {
                if now != first {
                    lock(&self.fingerprint_changed).get_or_insert(now);
                }
                Ok(first)
            }
            None => Ok(now),
        }
    }

    /// Called as a dispatch enters `on_succeeded_once`, before the job's own hook runs.
    pub(super) fn entering_effects(&self) {
        self.hook_entered.store(true, Ordering::SeqCst);
    }

    /// Called after the job's `perform` returned: reads the counter, then whether any effects
    /// hook of the key had started. Counted effects with no hook started yet were made by
    /// `perform` (reading the flag after the count keeps a hook that starts in between from
    /// being blamed on `perform`).
    pub(super) fn after_perform(&self, counter: &dyn EffectCounter) {
        if let Some(counted) = self.count(counter)
            && counted > 0
            && !self.hook_entered.load(Ordering::SeqCst)
        {
            self.in_perform.fetch_max(counted, Ordering::SeqCst);
        }
    }

    /// The counter's answer for this key, or `None` after remembering its error (the first one
    /// is reported).
    pub(super) fn count(&self, counter: &dyn EffectCounter) -> Option<u64> {
        match counter.count(&self.key) {
            Ok(counted) => Some(counted),
            Err(error) => {
                lock(&self.count_failed).get_or_insert(error.to_string());
                None
            }
        }
    }

    /// What the harness saw of the job itself, as violations.
    pub(super) fn violations(&self, out: &mut Vec<Violation>) {
        let digest = *self.digest();
        let job = std::any::type_name::<J>();
        if let Some(later) = *lock(&self.key_changed) {
            out.push(Violation::UnstableKey {
                digest,
                index: self.index,
                job,
                later,
            });
        }
        if lock(&self.fingerprint_changed).is_some() {
            out.push(Violation::UnstableFingerprint {
                digest,
                index: self.index,
                job,
            });
        }
        let counted = self.in_perform.load(Ordering::SeqCst);
        if counted > 0 {
            out.push(Violation::EffectsInPerform { digest, counted });
        }
        if let Some(error) = lock(&self.count_failed).take() {
            out.push(Violation::EffectCountFailed { digest, error });
        }
    }
}
