//! A keyed work queue, as client-go's workqueue: a key waiting is queued once, a key
//! being worked on is not handed out again but re-queued when its worker is done.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct Inner {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    /// Added while processing: queue again when done.
    dirty: HashSet<String>,
    /// Earliest pending delayed add per key.
    delayed: HashMap<String, Instant>,
    shut_down: bool,
}

#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl WorkQueue {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a worker panicked mid-update; the sets are still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, key: &str) {
        let mut q = self.lock();
        if q.shut_down {
            return;
        }
        if q.processing.contains(key) {
            q.dirty.insert(key.to_string());
        } else if q.queued.insert(key.to_string()) {
            q.queue.push_back(key.to_string());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`; an earlier pending delayed add wins.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        {
            let mut q = self.lock();
            match q.delayed.get(key) {
                Some(existing) if *existing <= at => return,
                _ => {
                    q.delayed.insert(key.to_string(), at);
                }
            }
        }
        let this = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let due = {
                let mut q = this.lock();
                if q.delayed.get(&key) == Some(&at) {
                    q.delayed.remove(&key);
                    true
                } else {
                    false
                }
            };
            if due {
                this.add(&key);
            }
        });
    }

    /// The next key to work on, or None once shut down and drained.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = self.lock();
                if let Some(key) = q.queue.pop_front() {
                    q.queued.remove(&key);
                    q.processing.insert(key.clone());
                    let more = !q.queue.is_empty();
                    drop(q);
                    if more {
                        // Wake another worker for the rest.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                if q.shut_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; re-queues it if it changed meanwhile.
    pub fn done(&self, key: &str) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.remove(key) && q.queued.insert(key.to_string()) {
            q.queue.push_back(key.to_string());
            drop(q);
            self.notify.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.notify.notify_waiters();
    }
}

/// Per-key exponential backoff: base, 2×base, 4×base, ... up to max.
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure and returns how long to wait before the next try.
    pub fn failed(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        let delay = self.base.saturating_mul(1u32 << (*n).min(20)).min(self.max);
        *n += 1;
        delay
    }

    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deduplicates_waiting_keys() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn never_hands_out_a_key_in_progress() {
        let q = WorkQueue::new();
        q.add("a");
        let key = q.next().await.expect("key");
        q.add("a"); // changed while being worked on
        assert!(q.is_empty(), "must not be handed out while in progress");
        let waiting = tokio::time::timeout(Duration::from_secs(1), q.next()).await;
        assert!(waiting.is_err(), "no other key is available");
        q.done(&key);
        assert_eq!(q.next().await.as_deref(), Some("a"), "re-queued after done");
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_adds_fire_once_at_the_earliest_time() {
        let q = WorkQueue::new();
        let start = Instant::now();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(3));
        q.add_after("a", Duration::from_secs(5));
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed().as_secs(), 3);
        q.done("a");
        let again = tokio::time::timeout(Duration::from_secs(30), q.next()).await;
        assert!(again.is_err(), "later delayed adds were superseded");
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_releases_workers() {
        let q = WorkQueue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await }
        });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(worker.await.expect("join"), None);
    }

    #[test]
    fn backoff_grows_and_resets() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<u128> = (0..6).map(|_| b.failed("k").as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded("k");
        assert_eq!(b.failed("k").as_millis(), 100);
    }
}
