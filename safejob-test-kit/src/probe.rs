//! Counting effects per key, across threads.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use safejob_core::{IdempotencyKey, KeyDigest};

/// Counts how many times an effect happened for each key, from any number of threads.
///
/// Clones share one count (it is an `Arc` inside), so hand a clone to every job and keep one to
/// assert on. Keys are held by their [`KeyDigest`] only: a probe never holds raw keys.
///
/// Record where the effect happens — in the fake ledger, mailbox or payment API the job calls —
/// rather than at the top of `on_succeeded_once`. Then the probe sees the effect whichever half
/// of the job makes it: a posting that `perform` makes is counted too, and handing the probe to
/// [`Torture::count_effects`](crate::Torture::count_effects) fails the run with "effects
/// observed in perform: move them to on_succeeded_once". A probe recorded only inside
/// `on_succeeded_once` can never see that bug.
///
/// ```
/// use safejob_core::IdempotencyKey;
/// use safejob_test_kit::EffectProbe;
///
/// let probe = EffectProbe::new();
/// let key = IdempotencyKey::new("refund:9")?;
/// let in_job = probe.clone();
/// std::thread::spawn(move || in_job.record(&key)).join().unwrap();
/// assert_eq!(probe.count(&IdempotencyKey::new("refund:9")?), 1);
/// assert_eq!(probe.total(), 1);
/// # Ok::<(), safejob_core::KeyError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct EffectProbe {
    counts: Arc<Mutex<HashMap<KeyDigest, u64>>>,
}

impl EffectProbe {
    /// An empty probe.
    pub fn new() -> Self {
        Self::default()
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<KeyDigest, u64>> {
        // Counts are plain integers: a panic while the lock was held cannot corrupt them.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one effect for `key`; returns how many that key has now.
    pub fn record(&self, key: &IdempotencyKey) -> u64 {
        self.record_digest(key.digest())
    }

    /// Records one effect for the key with `digest`; returns how many it has now.
    pub fn record_digest(&self, digest: &KeyDigest) -> u64 {
        let mut counts = self.counts();
        let count = counts.entry(*digest).or_insert(0);
        *count += 1;
        *count
    }

    /// How many effects `key` has had.
    pub fn count(&self, key: &IdempotencyKey) -> u64 {
        self.count_digest(key.digest())
    }

    /// How many effects the key with `digest` has had.
    pub fn count_digest(&self, digest: &KeyDigest) -> u64 {
        self.counts().get(digest).copied().unwrap_or(0)
    }

    /// All effects, over all keys.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// How many keys had at least one effect.
    pub fn distinct_keys(&self) -> usize {
        self.counts().values().filter(|c| **c > 0).count()
    }

    /// The counts, ordered by digest.
    pub fn snapshot(&self) -> BTreeMap<KeyDigest, u64> {
        self.counts().iter().map(|(d, c)| (*d, *c)).collect()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.counts().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_across_threads() {
        let probe = EffectProbe::new();
        let keys: Vec<_> = (0..4)
            .map(|i| IdempotencyKey::new(format!("k{i}")).unwrap())
            .collect();
        std::thread::scope(|s| {
            for _ in 0..8 {
                let probe = probe.clone();
                let keys = &keys;
                s.spawn(move || {
                    for key in keys {
                        probe.record(key);
                    }
                });
            }
        });
        for key in &keys {
            assert_eq!(probe.count(key), 8);
        }
        assert_eq!(probe.total(), 32);
        assert_eq!(probe.distinct_keys(), 4);
        assert_eq!(probe.snapshot().len(), 4);
        assert_eq!(probe.count(&IdempotencyKey::new("other").unwrap()), 0);
        probe.reset();
        assert_eq!(probe.total(), 0);
    }
}
