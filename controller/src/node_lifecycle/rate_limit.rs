//! The rate limit on tainting nodes for eviction, per zone: a token bucket of burst one
//! (client-go's flowcontrol limiter as the node lifecycle controller uses it) in front of a
//! queue of nodes waiting to be tainted, in the order they went unhealthy.

use std::collections::VecDeque;

use tokio::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `burst`. A rate of zero
/// accepts nothing.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if there is one.
    pub fn try_accept(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Changes the rate. A bucket that was empty stays empty, so that changing rates never
    /// lets an extra node through (client-go's `SwapLimiter`).
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        if rate == self.rate {
            return;
        }
        self.refill(now);
        let was_empty = self.tokens < 1.0;
        *self = TokenBucket::new(rate, self.burst, now);
        if was_empty {
            self.tokens = 0.0;
        }
    }
}

/// One zone's nodes waiting to be tainted, and its limiter.
#[derive(Debug, Clone)]
pub struct ZoneTainter {
    limiter: TokenBucket,
    waiting: VecDeque<String>,
}

impl ZoneTainter {
    /// An empty queue tainting at most `rate` nodes a second.
    pub fn new(rate: f64, now: Instant) -> Self {
        ZoneTainter {
            limiter: TokenBucket::new(rate, 1.0, now),
            waiting: VecDeque::new(),
        }
    }

    /// Queues a node (once).
    pub fn add(&mut self, node: &str) {
        if !self.waiting.iter().any(|n| n == node) {
            self.waiting.push_back(node.to_string());
        }
    }

    /// Drops a node from the queue (it is healthy again, or gone).
    pub fn remove(&mut self, node: &str) {
        self.waiting.retain(|n| n != node);
    }

    /// Is the node queued?
    pub fn contains(&self, node: &str) -> bool {
        self.waiting.iter().any(|n| n == node)
    }

    /// The next node to taint, if one waits and the limiter allows it now.
    pub fn next(&mut self, now: Instant) -> Option<String> {
        if self.waiting.is_empty() || !self.limiter.try_accept(now) {
            return None;
        }
        self.waiting.pop_front()
    }

    /// Changes the zone's rate.
    pub fn set_rate(&mut self, rate: f64, now: Instant) {
        self.limiter.set_rate(rate, now);
    }

    /// The zone's rate.
    pub fn rate(&self) -> f64 {
        self.limiter.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_node_every_ten_seconds_at_the_default_rate() {
        let mut z = ZoneTainter::new(0.1, Instant::now());
        for n in ["a", "b", "a", "c"] {
            z.add(n);
        }
        assert_eq!(z.next(Instant::now()).as_deref(), Some("a"), "the burst");
        assert_eq!(z.next(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(z.next(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(z.next(Instant::now()).as_deref(), Some("b"));
        z.remove("c");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(z.next(Instant::now()), None, "c is healthy again");
        assert!(!z.contains("c"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_rate_stops_tainting_and_a_new_rate_does_not_refill_an_empty_bucket() {
        let mut z = ZoneTainter::new(0.1, Instant::now());
        z.add("a");
        z.add("b");
        assert!(z.next(Instant::now()).is_some());
        z.set_rate(0.0, Instant::now());
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(z.next(Instant::now()), None, "stopped");
        z.set_rate(1.0, Instant::now());
        assert_eq!(z.next(Instant::now()), None, "no free token from the swap");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(z.next(Instant::now()).as_deref(), Some("b"));
    }
}
