//! Expectations, as Kubernetes' controllers keep them: after asking for N creations or
//! deletions, a controller waits until its informer has seen them (or a timeout passes)
//! before it counts pods again, so that the cache lagging its own writes never makes it
//! create or delete twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// After this long, expectations are given up on (a lost event must not wedge a
/// controller forever).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Pending {
    adds: i64,
    dels: i64,
    since: Instant,
}

/// Per-controller-key expectations.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Are all the creations and deletions asked for under `key` seen (or timed out)?
    pub fn satisfied(&self, key: &str) -> bool {
        self.lock().get(key).is_none_or(|p| {
            (p.adds <= 0 && p.dels <= 0) || p.since.elapsed() > EXPECTATIONS_TIMEOUT
        })
    }

    /// `adds` creations and `dels` deletions are about to be asked for.
    pub fn expect(&self, key: &str, adds: i64, dels: i64) {
        self.lock().insert(
            key.to_string(),
            Pending {
                adds,
                dels,
                since: Instant::now(),
            },
        );
    }

    /// One creation was seen (or failed and will not be).
    pub fn creation_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    /// One deletion was seen (or failed and will not be).
    pub fn deletion_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.dels -= 1;
        }
    }

    /// The controller object is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn satisfied_once_seen_or_timed_out() {
        let e = Expectations::default();
        assert!(e.satisfied("rs"));
        e.expect("rs", 2, 0);
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        assert!(!e.satisfied("rs"));
        e.creation_observed("rs");
        assert!(e.satisfied("rs"));
        e.expect("rs", 0, 1);
        assert!(!e.satisfied("rs"));
        tokio::time::advance(EXPECTATIONS_TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied("rs"), "given up on");
    }
}
