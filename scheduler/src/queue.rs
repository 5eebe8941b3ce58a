//! The scheduling queue, shaped like Kubernetes': an active heap ordered by priority then
//! age; a back-off area for pods whose attempt failed (1 s doubling to 10 s); and an
//! unschedulable set whose pods return when the cluster changes in a way that could help
//! them, and at least every 60 s.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Back-off after the first failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A pod waits at most this long in the unschedulable set.
pub const UNSCHEDULABLE_FLUSH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    key: String,
    priority: i32,
    /// Enqueue order: older first among equal priorities.
    seq: u64,
}

impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority.cmp(&o.priority).then(o.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Debug, Clone)]
struct Info {
    priority: i32,
    seq: u64,
    attempts: u32,
    where_: Place,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    Backoff(Instant),
    Unschedulable(Instant),
    InFlight,
}

#[derive(Default)]
struct Inner {
    active: BinaryHeap<Entry>,
    /// When waiting pods are due, earliest first. Entries are checked against `pods` when
    /// they come due: a pod that moved since is skipped.
    timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// The pods in the unschedulable set, for cluster changes to walk.
    unschedulable: HashSet<String>,
    pods: HashMap<String, Info>,
    next_seq: u64,
    closed: bool,
}

/// The queue.
#[derive(Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    wake: Notify,
}

fn backoff_for(attempts: u32) -> Duration {
    INITIAL_BACKOFF
        .checked_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or updates the priority of) a pod waiting to be scheduled.
    pub fn add(&self, key: &str, priority: i32) {
        let mut q = self.lock();
        let seq = q.next_seq;
        q.next_seq += 1;
        match q.pods.get_mut(key) {
            Some(info) => info.priority = priority,
            None => {
                q.pods.insert(
                    key.to_string(),
                    Info {
                        priority,
                        seq,
                        attempts: 0,
                        where_: Place::Active,
                    },
                );
                q.active.push(Entry {
                    key: key.to_string(),
                    priority,
                    seq,
                });
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn delete(&self, key: &str) {
        let mut q = self.lock();
        q.pods.remove(key);
        q.unschedulable.remove(key);
    }

    /// The attempt failed for a reason a retry may fix: back off.
    pub fn backoff(&self, key: &str) {
        let mut q = self.lock();
        if let Some(info) = q.pods.get_mut(key) {
            info.attempts += 1;
            let at = Instant::now() + backoff_for(info.attempts);
            info.where_ = Place::Backoff(at);
            q.timers.push(Reverse((at, key.to_string())));
        }
        drop(q);
        self.wake.notify_one();
    }

    /// No node fits: wait until the cluster changes (or the flush interval passes).
    pub fn unschedulable(&self, key: &str) {
        let mut q = self.lock();
        if let Some(info) = q.pods.get_mut(key) {
            info.attempts += 1;
            let now = Instant::now();
            info.where_ = Place::Unschedulable(now);
            q.timers
                .push(Reverse((now + UNSCHEDULABLE_FLUSH, key.to_string())));
            q.unschedulable.insert(key.to_string());
        }
    }

    /// The pod was scheduled: it leaves the queue.
    pub fn done(&self, key: &str) {
        self.delete(key);
    }

    /// The cluster changed in a way that may help unschedulable pods (a node added or
    /// changed, a pod deleted): they move on, to back-off if theirs has not run out.
    pub fn cluster_changed(&self) {
        let mut guard = self.lock();
        let q = &mut *guard;
        let now = Instant::now();
        for key in q.unschedulable.drain() {
            let Some(info) = q.pods.get_mut(&key) else {
                continue;
            };
            let Place::Unschedulable(since) = info.where_ else {
                continue;
            };
            let until = since + backoff_for(info.attempts);
            if until > now {
                info.where_ = Place::Backoff(until);
                q.timers.push(Reverse((until, key)));
            } else {
                info.where_ = Place::Active;
                q.active.push(Entry {
                    key,
                    priority: info.priority,
                    seq: info.seq,
                });
            }
        }
        drop(guard);
        self.wake.notify_one();
    }

    /// Stops the queue; `pop` returns None.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// Pods waiting in each part of the queue (active, backoff, unschedulable).
    pub fn pending_by_place(&self) -> [(&'static str, usize); 3] {
        let mut n = [0usize; 3];
        for (_, i) in self.lock().pods.iter() {
            match i.where_ {
                Place::Active => n[0] += 1,
                Place::Backoff(_) => n[1] += 1,
                Place::Unschedulable(_) => n[2] += 1,
                Place::InFlight => {}
            }
        }
        [("active", n[0]), ("backoff", n[1]), ("unschedulable", n[2])]
    }

    /// Pods waiting anywhere in the queue.
    pub fn len(&self) -> usize {
        self.lock()
            .pods
            .iter()
            .filter(|(_, i)| i.where_ != Place::InFlight)
            .count()
    }

    /// Is nothing waiting?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves pods whose back-off or unschedulable wait is over to the active heap; returns
    /// when the next one will be due.
    fn promote(q: &mut Inner, now: Instant) -> Option<Instant> {
        while let Some(Reverse((due, _))) = q.timers.peek() {
            if *due > now {
                return Some(*due);
            }
            let Some(Reverse((due, key))) = q.timers.pop() else {
                break;
            };
            let Some(info) = q.pods.get_mut(&key) else {
                continue;
            };
            let current = match info.where_ {
                Place::Backoff(at) => at == due,
                Place::Unschedulable(since) => since + UNSCHEDULABLE_FLUSH == due,
                _ => false,
            };
            if current {
                info.where_ = Place::Active;
                q.unschedulable.remove(&key);
                q.active.push(Entry {
                    key,
                    priority: info.priority,
                    seq: info.seq,
                });
            }
        }
        None
    }

    /// The next pod to schedule: highest priority, then oldest; waits for one.
    pub async fn pop(&self) -> Option<String> {
        loop {
            let notified = self.wake.notified();
            let next_due = {
                let mut q = self.lock();
                if q.closed {
                    return None;
                }
                let next = Self::promote(&mut q, Instant::now());
                while let Some(e) = q.active.pop() {
                    // Entries of pods deleted or moved since they were pushed are stale.
                    if let Some(info) = q.pods.get_mut(&e.key)
                        && info.where_ == Place::Active
                    {
                        info.where_ = Place::InFlight;
                        return Some(e.key);
                    }
                }
                next
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first_then_older() {
        let q = SchedulingQueue::default();
        q.add("low-old", 0);
        q.add("high", 10);
        q.add("low-new", 0);
        assert_eq!(q.pop().await.as_deref(), Some("high"));
        assert_eq!(q.pop().await.as_deref(), Some("low-old"));
        assert_eq!(q.pop().await.as_deref(), Some("low-new"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_from_one_second_doubling_to_ten() {
        let q = SchedulingQueue::default();
        q.add("p", 0);
        let start = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..5 {
            let k = q.pop().await.expect("p");
            waits.push(start.elapsed().as_secs());
            q.backoff(&k);
        }
        assert_eq!(waits, vec![0, 1, 3, 7, 15], "back-offs of 1, 2, 4, 8 s");
        q.pop().await;
        assert_eq!(start.elapsed().as_secs(), 25, "then capped at 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_return_on_a_cluster_change_or_after_a_minute() {
        let q = SchedulingQueue::default();
        q.add("p", 0);
        let k = q.pop().await.expect("p");
        q.unschedulable(&k);
        tokio::time::advance(Duration::from_secs(2)).await;
        q.cluster_changed();
        assert_eq!(q.pop().await.as_deref(), Some("p"), "a node was added");
        let start = Instant::now();
        q.unschedulable("p");
        assert_eq!(q.pop().await.as_deref(), Some("p"));
        assert_eq!(
            start.elapsed(),
            UNSCHEDULABLE_FLUSH,
            "flushed after a minute"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deleted_pods_are_not_handed_out() {
        let q = SchedulingQueue::default();
        q.add("gone", 0);
        q.add("kept", 0);
        q.delete("gone");
        assert_eq!(q.pop().await.as_deref(), Some("kept"));
        q.close();
        assert_eq!(q.pop().await, None);
    }
}
