//! Clients waiting for their proposals to be applied. The Ready loop registers a waiter when
//! it proposes; the applier completes it when it applies an entry that this member proposed.
//! An entry carries (proposer, id), so the match is exact, never FIFO guesswork.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::error::EtcdError;
use crate::mvcc::requests::WriteResponse;

/// What a proposer learns once its request is applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The response, before its header is filled in.
    pub response: WriteResponse,
    /// The store revision after the request.
    pub revision: i64,
    /// The raft term of the entry.
    pub term: u64,
}

/// Where the result of a proposal goes.
pub type Reply = oneshot::Sender<Result<Applied, EtcdError>>;

struct Waiter {
    reply: Reply,
    term: u64,
}

/// The proposals this member made that have not been applied yet.
pub struct Proposals {
    waiters: Mutex<HashMap<u64, Waiter>>,
    next_id: Mutex<u64>,
}

impl Default for Proposals {
    fn default() -> Self {
        // Ids start from the clock so that an entry proposed before a restart, and applied
        // after it, cannot be mistaken for a new proposal with the same id.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_micros() as u64) << 16)
            .unwrap_or(1);
        Proposals {
            waiters: Mutex::new(HashMap::new()),
            next_id: Mutex::new(start),
        }
    }
}

impl Proposals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        // A panic while holding the lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a waiter for a proposal made in `term`; returns its id.
    pub fn register(&self, reply: Reply, term: u64) -> u64 {
        let id = {
            let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        self.lock().insert(id, Waiter { reply, term });
        id
    }

    /// Hands a result to the waiter of `id`, if it is still waiting.
    pub fn complete(&self, id: u64, result: Result<Applied, EtcdError>) {
        if let Some(w) = self.lock().remove(&id) {
            let _ = w.reply.send(result);
        }
    }

    /// Fails every proposal made before `term`: after a leader change they may or may not
    /// be applied, and the client should know now rather than at its timeout.
    pub fn fail_before_term(&self, term: u64) {
        let mut map = self.lock();
        let stale: Vec<u64> = map
            .iter()
            .filter(|(_, w)| w.term < term)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(w) = map.remove(&id) {
                let _ = w.reply.send(Err(EtcdError::LeaderChanged));
            }
        }
    }

    /// Forgets waiters whose clients gave up.
    pub fn sweep_abandoned(&self) {
        self.lock().retain(|_, w| !w.reply.is_closed());
    }

    /// Number of proposals in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no proposal is in flight.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
