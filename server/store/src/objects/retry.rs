//! The one retry policy for read-modify-write: every loop that reads, changes and
//! writes at the revision it read goes through [`Tries`].

use std::time::Duration;

use super::{ObjectError, Result};
use crate::Revision;

/// How often a read-modify-write reads again after losing a race before it reports
/// contention. Each round of a burst lands one writer, so fifty writers on one object
/// (50 parallel `scale`s) can need dozens of rounds: sixteen was seen to run out on
/// etcd under CI load. Sixty-four, with pauses of at most ~0.1 s, bound a write that
/// keeps losing at about 4 s.
const RETRIES: u32 = 64;

/// The tries of one read-modify-write of `kind/name`:
///
/// ```ignore
/// let mut tries = Tries::new(kind, name);
/// loop {
///     tries.begin().await?;      // a pause after a lost race; Contended once spent
///     /* read, change, write */  // on a lost race: tries.lost(current)
/// }
/// ```
pub(crate) struct Tries {
    kind: String,
    name: String,
    attempt: u32,
    /// The key's revision when the last try lost.
    last_seen: Revision,
}

impl Tries {
    pub(crate) fn new(kind: &str, name: &str) -> Self {
        Tries {
            kind: kind.into(),
            name: name.into(),
            attempt: 0,
            last_seen: 0,
        }
    }

    /// Starts the next try: pauses after a lost race, and reports contention once the
    /// tries are spent.
    pub(crate) async fn begin(&mut self) -> Result<()> {
        if self.attempt >= RETRIES {
            return Err(ObjectError::Contended {
                kind: self.kind.clone(),
                name: self.name.clone(),
                tries: self.attempt,
                current: self.last_seen,
            });
        }
        if self.attempt > 0 {
            tokio::time::sleep(pause_before(self.attempt)).await;
        }
        self.attempt += 1;
        Ok(())
    }

    /// The try lost a race: the key was at `current`.
    pub(crate) fn lost(&mut self, current: Revision) {
        self.last_seen = current;
    }

    /// The try lost a race on `kind/name`, one of several objects written together:
    /// contention, if it comes to that, names the last that lost.
    pub(crate) fn lost_on(&mut self, kind: &str, name: &str, current: Revision) {
        self.kind = kind.into();
        self.name = name.into();
        self.last_seen = current;
    }
}

/// The pause before try `attempt + 1`: a few milliseconds, growing, jittered so that
/// writers who collided do not collide again in step.
fn pause_before(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = 2u64 << attempt.min(5);
    // A fresh RandomState is seeded differently each time: cheap randomness.
    let jitter = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % base;
    Duration::from_millis(base / 2 + jitter)
}

/// The one back-off of loops that follow the store (watchers): after `failures`
/// failures in a row, 200 ms doubling up to 6.4 s.
pub(crate) fn follow_backoff(failures: u32) -> Duration {
    Duration::from_millis(100 * (1u64 << failures.clamp(1, 6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tries_end_in_the_last_conflict_seen() {
        let mut tries = Tries::new("Service", "web");
        let mut n = 0;
        let err = loop {
            match tries.begin().await {
                Ok(()) => {
                    n += 1;
                    tries.lost(n + 1);
                }
                Err(e) => break e,
            }
        };
        assert_eq!(n, RETRIES as i64);
        match err {
            ObjectError::Contended { tries, current, .. } => {
                assert_eq!((tries, current), (RETRIES, n + 1))
            }
            other => panic!("expected contention, got {other}"),
        }
    }

    #[test]
    fn pauses_grow_and_stay_short() {
        assert!(pause_before(1) < Duration::from_millis(8));
        assert!(pause_before(20) < Duration::from_millis(128));
        assert_eq!(follow_backoff(0), Duration::from_millis(200));
        assert_eq!(follow_backoff(50), Duration::from_millis(6400));
    }
}
