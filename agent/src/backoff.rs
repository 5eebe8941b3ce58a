//! The kubelet's container back-off: 10 s doubling to 5 minutes. A pod's worker waits it
//! out before restarting a container that ended (CrashLoopBackOff) and before pulling an
//! image again after a pull failed (ImagePullBackOff).

use std::time::Duration;

use tokio::time::Instant;

/// The first wait.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest wait.
pub const MAX: Duration = Duration::from_secs(300);

/// One wait: how long, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    delay: Duration,
    since: Instant,
}

impl Backoff {
    /// The first wait, starting at `now`.
    pub fn new(now: Instant) -> Self {
        Backoff {
            delay: INITIAL,
            since: now,
        }
    }

    /// The wait after this one, starting at `now`: twice as long, at most [`MAX`].
    pub fn next(self, now: Instant) -> Self {
        Backoff {
            delay: (self.delay * 2).min(MAX),
            since: now,
        }
    }

    /// How long this wait is.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// When this wait began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// When this wait ends.
    pub fn until(&self) -> Instant {
        self.since + self.delay
    }

    /// Is `now` still within this wait?
    pub fn waiting(&self, now: Instant) -> bool {
        now < self.until()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_ten_seconds_to_five_minutes() {
        let t0 = Instant::now();
        let mut b = Backoff::new(t0);
        let mut delays = vec![b.delay().as_secs()];
        for _ in 0..6 {
            b = b.next(t0);
            delays.push(b.delay().as_secs());
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_wait_ends_after_its_delay() {
        let t0 = Instant::now();
        let b = Backoff::new(t0).next(t0 + Duration::from_secs(5));
        assert_eq!(b.since(), t0 + Duration::from_secs(5));
        assert_eq!(b.until(), t0 + Duration::from_secs(25));
        assert!(b.waiting(t0 + Duration::from_secs(24)));
        assert!(!b.waiting(t0 + Duration::from_secs(25)));
    }
}
