//! A rate-limited work queue, as Kubernetes controllers use: a key waiting in the queue is
//! held once however often it is added; a key being processed is never handed out twice at
//! once (added meanwhile, it comes back after `done`); a key that keeps failing waits
//! exponentially longer each time, until `forget`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

struct Inner<T> {
    queue: VecDeque<T>,
    /// Keys waiting in `queue` or to be re-queued when their processing ends.
    dirty: HashSet<T>,
    processing: HashSet<T>,
    failures: HashMap<T, u32>,
    /// The earliest pending delayed add of each key: a later one is not scheduled again.
    waiting: HashMap<T, tokio::time::Instant>,
    shut_down: bool,
}

/// The queue.
pub struct WorkQueue<T> {
    inner: Mutex<Inner<T>>,
    ready: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

impl<T: Clone + Eq + Hash + Send + 'static> WorkQueue<T> {
    /// A queue whose retries wait `base_delay`, doubling per failure up to `max_delay`
    /// (client-go's defaults are 5 ms and 1000 s).
    pub fn new(base_delay: Duration, max_delay: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new(WorkQueue {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                waiting: HashMap::new(),
                shut_down: false,
            }),
            ready: Notify::new(),
            base_delay,
            max_delay,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // Every update leaves the sets consistent, so a panic elsewhere does not poison them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a key now.
    pub fn add(&self, key: T) {
        let mut q = self.lock();
        if q.shut_down || !q.dirty.insert(key.clone()) {
            return;
        }
        if !q.processing.contains(&key) {
            q.queue.push_back(key);
            drop(q);
            self.ready.notify_one();
        }
    }

    /// Adds a key after `delay`. A key already due sooner is not scheduled again: its
    /// sync then asks for the later time itself, so a key synced on every event does not
    /// pile up one sleeping task per sync.
    pub fn add_after(self: &std::sync::Arc<Self>, key: T, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let due = tokio::time::Instant::now() + delay;
        {
            let mut q = self.lock();
            if q.waiting.get(&key).is_some_and(|d| *d <= due) {
                return;
            }
            q.waiting.insert(key.clone(), due);
        }
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            {
                let mut q = me.lock();
                if q.waiting.get(&key) == Some(&due) {
                    q.waiting.remove(&key);
                }
            }
            me.add(key);
        });
    }

    /// Adds a key after its back-off: base × 2^failures, capped; counts one more failure.
    pub fn add_rate_limited(self: &std::sync::Arc<Self>, key: T) {
        let delay = {
            let mut q = self.lock();
            let n = q.failures.entry(key.clone()).or_insert(0);
            let delay = self
                .base_delay
                .checked_mul(2u32.saturating_pow(*n))
                .unwrap_or(self.max_delay)
                .min(self.max_delay);
            *n = n.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Clears a key's failures (after it succeeded).
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// How often a key has failed since it was last forgotten.
    pub fn failures(&self, key: &T) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to process, waiting for one; None once the queue is shut down and
    /// drained.
    pub async fn get(&self) -> Option<T> {
        loop {
            let notified = self.ready.notified();
            {
                let mut q = self.lock();
                if let Some(key) = q.queue.pop_front() {
                    q.dirty.remove(&key);
                    q.processing.insert(key.clone());
                    if !q.queue.is_empty() {
                        self.ready.notify_one();
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

    /// Marks a key's processing finished; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &T) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.contains(key) {
            q.queue.push_back(key.clone());
            drop(q);
            self.ready.notify_one();
        }
    }

    /// Keys waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Nothing waiting?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops accepting keys and drops those waiting; `get` returns None from now on. The
    /// keys in flight finish. Nothing queued is worth doing by a process that stops acting
    /// (a controller that lost its Lease must not go on syncing what it had queued; the
    /// next leader starts from the cluster's state).
    pub fn shut_down(&self) {
        let mut q = self.lock();
        q.shut_down = true;
        q.queue.clear();
        q.dirty.clear();
        drop(q);
        self.ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_added_twice_while_waiting_is_processed_once() {
        let q = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_is_never_handed_out_twice_at_once() {
        let q = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        q.add("a");
        let key = q.get().await.expect("a");
        q.add("a");
        assert!(q.is_empty(), "held back while being processed");
        q.done(&key);
        assert_eq!(q.get().await, Some("a"), "back after done");
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_up_to_the_cap() {
        let q = WorkQueue::new(Duration::from_millis(100), Duration::from_millis(350));
        let start = tokio::time::Instant::now();
        let mut waits = Vec::new();
        for _ in 0..4 {
            q.add_rate_limited("k");
            let k = q.get().await.expect("k");
            q.done(&k);
            waits.push(start.elapsed().as_millis());
        }
        assert_eq!(
            waits,
            vec![100, 300, 650, 1000],
            "100, 200, 350 (capped), 350"
        );
        assert_eq!(q.failures(&"k"), 4);
        q.forget(&"k");
        assert_eq!(q.failures(&"k"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_due_sooner_is_not_scheduled_again_for_later() {
        let q = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        for _ in 0..100 {
            q.add_after("k", Duration::from_secs(120));
        }
        assert_eq!(q.lock().waiting.len(), 1);
        // A sooner time still counts.
        q.add_after("k", Duration::from_secs(10));
        let k = q.get().await.expect("k");
        assert_eq!(start.elapsed().as_secs(), 10);
        q.done(&k);
        assert!(
            q.lock().waiting.is_empty(),
            "the sooner wake cleared its entry"
        );
    }

    #[tokio::test]
    async fn shutting_down_drops_what_waits_and_ends_get() {
        let q = WorkQueue::new(Duration::from_millis(5), Duration::from_secs(1));
        q.add(1);
        q.add(2);
        assert_eq!(q.get().await, Some(1));
        q.shut_down();
        q.add(3);
        assert_eq!(q.get().await, None, "2 was dropped, 3 refused");
        // The key in flight finishes without coming back.
        q.add(1);
        q.done(&1);
        assert_eq!(q.get().await, None);
    }
}
