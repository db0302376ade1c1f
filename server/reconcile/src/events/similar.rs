//! The similar events seen per (object, type, reason): how many distinct messages each
//! had since its window began, for the correlator. Bounded, with O(1) work per event:
//! past `limit` groups the oldest is forgotten, as client-go's aggregator keeps an LRU.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

pub(super) struct Similar {
    groups: HashMap<String, (Instant, HashSet<u64>)>,
    /// Keys in the order they were first seen, to forget the oldest first.
    order: VecDeque<String>,
    limit: usize,
    window: Duration,
}

impl Similar {
    pub(super) fn new(limit: usize, window: Duration) -> Self {
        Similar {
            groups: HashMap::new(),
            order: VecDeque::new(),
            limit: limit.max(1),
            window,
        }
    }

    /// Notes a message of group `key` at `now`; returns the distinct messages the group
    /// has had in its current window, this one included.
    pub(super) fn note(&mut self, key: &str, message: u64, now: Instant) -> usize {
        if !self.groups.contains_key(key) {
            while self.groups.len() >= self.limit {
                match self.order.pop_front() {
                    Some(oldest) => self.groups.remove(&oldest),
                    None => break,
                };
            }
            self.order.push_back(key.to_string());
        }
        let (since, seen) = self
            .groups
            .entry(key.to_string())
            .or_insert_with(|| (now, HashSet::new()));
        if now.saturating_duration_since(*since) >= self.window {
            *since = now;
            seen.clear();
        }
        seen.insert(message);
        seen.len()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn distinct_messages_count_within_a_window_and_reset_after_it() {
        let mut s = Similar::new(10, WINDOW);
        let t0 = Instant::now();
        assert_eq!(s.note("task/a/Warning/Failed", 1, t0), 1);
        assert_eq!(
            s.note("task/a/Warning/Failed", 1, t0),
            1,
            "the same message"
        );
        assert_eq!(s.note("task/a/Warning/Failed", 2, t0), 2);
        assert_eq!(s.note("task/b/Warning/Failed", 3, t0), 1, "another group");
        let later = t0 + WINDOW;
        assert_eq!(s.note("task/a/Warning/Failed", 3, later), 1, "a new window");
    }

    #[test]
    fn past_the_limit_the_oldest_group_is_forgotten() {
        let mut s = Similar::new(3, WINDOW);
        let t0 = Instant::now();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            s.note(key, i as u64, t0);
        }
        s.note("a", 9, t0);
        assert_eq!(s.note("d", 0, t0), 1);
        assert_eq!(s.len(), 3, "bounded");
        assert_eq!(s.note("b", 100, t0), 2, "b is still tracked");
        assert_eq!(s.note("a", 100, t0), 1, "a, the oldest, was forgotten");
        for i in 0..10_000 {
            s.note(&format!("k{i}"), 0, t0);
        }
        assert_eq!(s.len(), 3);
    }
}
