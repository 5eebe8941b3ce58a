//! Linearizable reads through raft's ReadIndex, batched: every read that arrives while a
//! ReadIndex round is in flight joins the next round, so a thousand concurrent reads cost a
//! handful of heartbeat rounds, not a thousand.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::EtcdError;

/// Where a read learns the index it must wait for.
pub type ReadReply = oneshot::Sender<Result<u64, EtcdError>>;

/// Reads waiting for a ReadIndex answer.
#[derive(Default)]
pub struct ReadIndexQueue {
    waiting: Vec<ReadReply>,
    in_flight: HashMap<u64, (Instant, Vec<ReadReply>)>,
    next_ctx: u64,
}

impl ReadIndexQueue {
    /// Queues a read.
    pub fn push(&mut self, reply: ReadReply) {
        self.waiting.push(reply);
    }

    /// Starts a round for everything waiting, if anything is; returns its context.
    pub fn start_round(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.waiting.retain(|r| !r.is_closed());
        if self.waiting.is_empty() {
            return None;
        }
        self.next_ctx += 1;
        let batch = std::mem::take(&mut self.waiting);
        self.in_flight.insert(self.next_ctx, (now, batch));
        Some(self.next_ctx.to_be_bytes().to_vec())
    }

    /// Answers every read of the round `ctx` with the leader's commit index.
    pub fn complete(&mut self, ctx: &[u8], index: u64) {
        let Ok(arr) = <[u8; 8]>::try_from(ctx) else {
            return;
        };
        if let Some((_, replies)) = self.in_flight.remove(&u64::from_be_bytes(arr)) {
            for r in replies {
                let _ = r.send(Ok(index));
            }
        }
    }

    /// Raft drops ReadIndex requests silently (no leader, leader change); rounds older than
    /// `timeout` go back to the waiting list to be asked again.
    pub fn retry_stale(&mut self, now: Instant, timeout: Duration) {
        let stale: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= timeout)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in stale {
            if let Some((_, replies)) = self.in_flight.remove(&ctx) {
                self.waiting
                    .extend(replies.into_iter().filter(|r| !r.is_closed()));
            }
        }
    }

    /// Whether reads are waiting to start a round.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_arriving_together_share_one_round() {
        let mut q = ReadIndexQueue::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        q.push(tx1);
        q.push(tx2);
        let now = Instant::now();
        let ctx = q.start_round(now).expect("round");
        assert!(q.start_round(now).is_none());
        q.complete(&ctx, 42);
        assert_eq!(rx1.try_recv().expect("answered"), Ok(42));
        assert_eq!(rx2.try_recv().expect("answered"), Ok(42));
    }

    #[test]
    fn unanswered_rounds_are_retried() {
        let mut q = ReadIndexQueue::default();
        let (tx, _rx) = oneshot::channel();
        q.push(tx);
        let now = Instant::now();
        let old = q.start_round(now).expect("round");
        q.retry_stale(now + Duration::from_secs(2), Duration::from_secs(1));
        let new = q.start_round(now).expect("retried");
        assert_ne!(old, new);
    }
}
