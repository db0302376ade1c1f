//! When an output tries a chunk again, and when it gives up on it.
//!
//! Exponential back-off with full jitter (a random wait up to the doubled delay, so
//! outputs of many nodes do not retry a recovering sink in step), capped at a most
//! delay; after `max_attempts` tries the chunk is given up: it goes to the
//! secondary output or the dead-letter directory, never away (Fluentd drops it
//! after `retry_timeout`). An output's health follows its attempts: it is failing
//! from its first failure and recovered at its first success after that, and each
//! change is said once (an Event), not per attempt.

use std::time::Duration;

/// The retry policy of one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Tries per chunk, the first included.
    pub max_attempts: u32,
    /// The delay after the first failure, doubled after each.
    pub base: Duration,
    /// The delay never exceeds this.
    pub max_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 10,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// What to do with a chunk after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this long.
    RetryIn(Duration),
    /// Out of attempts: set it aside.
    GiveUp,
}

impl Policy {
    /// After the `attempts`th failed try of a chunk; `random` in [0, 1) picks the
    /// jittered wait.
    pub fn after_failure(&self, attempts: u32, random: f64) -> Next {
        if attempts >= self.max_attempts {
            return Next::GiveUp;
        }
        let exp = attempts.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.max_delay);
        // Never zero: a sink that fails at once is not hammered in a loop.
        let wait = ceiling.mul_f64(random.clamp(0.0, 1.0)).max(ceiling / 10);
        Next::RetryIn(wait)
    }
}

/// A random u64 from the standard library's per-map random keys: enough for jitter
/// and chunk ids, with no generator to seed.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A number in [0, 1), for jitter.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// An output's health as its attempts tell it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    failing: Option<String>,
}

/// A change of health worth saying once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Failing(String),
    Recovered,
}

impl Health {
    /// Records an attempt; the change it made, if any.
    pub fn record(&mut self, result: &Result<(), String>) -> Option<Change> {
        match (result, &self.failing) {
            (Err(why), None) => {
                self.failing = Some(why.clone());
                Some(Change::Failing(why.clone()))
            }
            (Ok(()), Some(_)) => {
                self.failing = None;
                Some(Change::Recovered)
            }
            _ => None,
        }
    }

    /// Why it is failing, while it is.
    pub fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_then_it_gives_up() {
        let p = Policy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(5),
        };
        let at = |n, r| p.after_failure(n, r);
        assert_eq!(
            at(1, 0.999_999),
            Next::RetryIn(Duration::from_secs(1).mul_f64(0.999_999))
        );
        assert_eq!(at(2, 0.5), Next::RetryIn(Duration::from_secs(1)));
        assert_eq!(at(3, 1.0), Next::RetryIn(Duration::from_secs(4)));
        assert_eq!(at(4, 1.0), Next::RetryIn(Duration::from_secs(5)), "capped");
        assert_eq!(
            at(2, 0.0),
            Next::RetryIn(Duration::from_millis(200)),
            "never zero"
        );
        assert_eq!(at(5, 0.5), Next::GiveUp);
        assert_eq!(
            Policy {
                max_attempts: 100,
                ..p
            }
            .after_failure(99, 1.0),
            Next::RetryIn(Duration::from_secs(5)),
            "no overflow far out"
        );
    }

    #[test]
    fn health_changes_are_said_once() {
        let mut h = Health::default();
        assert_eq!(h.record(&Ok(())), None);
        assert_eq!(
            h.record(&Err("connection refused".into())),
            Some(Change::Failing("connection refused".into()))
        );
        assert_eq!(h.record(&Err("connection refused".into())), None);
        assert_eq!(h.failing(), Some("connection refused"));
        assert_eq!(h.record(&Ok(())), Some(Change::Recovered));
        assert_eq!(h.record(&Ok(())), None);
    }
}
