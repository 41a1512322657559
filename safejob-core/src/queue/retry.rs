//! How long a failed job waits before its next attempt.

use std::time::Duration;

/// Delays between attempts. The default is [`RetryPolicy::exponential`] with its defaults.
///
/// A policy only says how long to wait; how many attempts a job gets is its `max_attempts`
/// (after the last attempt a job is dead, with its error history). [`RetryPolicy::None`] makes the
/// first failure final whatever `max_attempts` says.
///
/// ```
/// use std::time::Duration;
/// use safejob_core::queue::RetryPolicy;
///
/// // 1 s, 2 s, 4 s, ... capped at 1 h, each spread by ±10 %: the default.
/// let default = RetryPolicy::default();
/// let d = default.delay(3, 42).unwrap();
/// assert!(d >= Duration::from_millis(3600) && d <= Duration::from_millis(4400));
///
/// // A fixed schedule; its last delay repeats.
/// let fixed = RetryPolicy::schedule([Duration::from_secs(5), Duration::from_secs(60)]);
/// assert_eq!(fixed.delay(1, 0), Some(Duration::from_secs(5)));
/// assert_eq!(fixed.delay(9, 0), Some(Duration::from_secs(60)));
///
/// assert_eq!(RetryPolicy::none().delay(1, 0), None);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// `base × 2^(attempt − 1)`, at most `cap`, then spread by ± `jitter` (a fraction).
    Exponential {
        /// The first delay.
        base: Duration,
        /// The longest delay before jitter.
        cap: Duration,
        /// The spread, from 0.0 (none) to 1.0.
        jitter: f64,
    },
    /// The delay after attempt n is the n-th entry; the last entry repeats. An empty schedule
    /// retries at once.
    Schedule(Vec<Duration>),
    /// Never retry: the first failure is final.
    None,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        ExponentialBuilder::default().build()
    }
}

impl RetryPolicy {
    /// Exponential backoff. Defaults: base 1 second, cap 1 hour, jitter 0.1 (±10 %).
    ///
    /// ```
    /// use std::time::Duration;
    /// use safejob_core::queue::RetryPolicy;
    ///
    /// let policy = RetryPolicy::exponential()
    ///     .base(Duration::from_secs(10))
    ///     .cap(Duration::from_secs(60))
    ///     .jitter(0.0)
    ///     .build();
    /// assert_eq!(policy.delay(1, 7), Some(Duration::from_secs(10)));
    /// assert_eq!(policy.delay(2, 7), Some(Duration::from_secs(20)));
    /// assert_eq!(policy.delay(5, 7), Some(Duration::from_secs(60)));
    /// ```
    pub fn exponential() -> ExponentialBuilder {
        ExponentialBuilder::default()
    }

    /// A fixed schedule of delays (see [`RetryPolicy::Schedule`]).
    pub fn schedule(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self::Schedule(delays.into_iter().collect())
    }

    /// No retries.
    pub fn none() -> Self {
        Self::None
    }

    /// The delay after failed attempt `attempt` (from 1), or `None` when the policy never
    /// retries. `seed` picks the jitter: the worker passes the job id, so a given job and attempt
    /// always wait the same time (reproducible), while jobs failing together spread out.
    pub fn delay(&self, attempt: u32, seed: u64) -> Option<Duration> {
        match self {
            Self::None => None,
            Self::Schedule(delays) => Some(
                delays
                    .get(attempt.saturating_sub(1) as usize)
                    .or(delays.last())
                    .copied()
                    .unwrap_or_default(),
            ),
            Self::Exponential { base, cap, jitter } => {
                let shift = attempt.saturating_sub(1);
                let raw = match 1u32.checked_shl(shift) {
                    Some(factor) => base.checked_mul(factor).map_or(*cap, |d| d.min(*cap)),
                    None => *cap,
                };
                let spread = jitter.clamp(0.0, 1.0);
                // unit in [-1, 1), from the seed and attempt: no random source needed.
                let unit = (mix(seed ^ (u64::from(attempt) << 40)) >> 11) as f64
                    / (1u64 << 53) as f64
                    * 2.0
                    - 1.0;
                Some(raw.mul_f64((1.0 + spread * unit).max(0.0)))
            }
        }
    }
}

/// SplitMix64's finalizer: a well-spread 64-bit hash of `x`. The jitter source.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Builds [`RetryPolicy::Exponential`]. Defaults: base 1 second, cap 1 hour, jitter 0.1.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct ExponentialBuilder {
    base: Duration,
    cap: Duration,
    jitter: f64,
}

impl Default for ExponentialBuilder {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

impl ExponentialBuilder {
    /// The first delay. Defaults to 1 second.
    pub fn base(mut self, base: Duration) -> Self {
        self.base = base;
        self
    }

    /// The longest delay before jitter. Defaults to 1 hour.
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The spread as a fraction, clamped to 0.0..=1.0. Defaults to 0.1 (±10 %).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The policy.
    pub fn build(self) -> RetryPolicy {
        RetryPolicy::Exponential {
            base: self.base,
            cap: self.cap.max(self.base),
            jitter: self.jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_caps_and_jitters_within_bounds() {
        let p = RetryPolicy::exponential().jitter(0.0).build();
        let secs = |n| Duration::from_secs(n);
        assert_eq!(p.delay(1, 0), Some(secs(1)));
        assert_eq!(p.delay(4, 0), Some(secs(8)));
        assert_eq!(p.delay(13, 0), Some(secs(3600)));
        assert_eq!(p.delay(200, 0), Some(secs(3600)));
        let j = RetryPolicy::default();
        let mut distinct = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let d = j.delay(2, seed).unwrap();
            assert!(d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200));
            assert_eq!(j.delay(2, seed), Some(d), "same seed, same delay");
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter spreads: {}", distinct.len());
    }

    #[test]
    fn empty_schedule_retries_at_once() {
        assert_eq!(RetryPolicy::schedule([]).delay(3, 0), Some(Duration::ZERO));
    }
}
