//! Lease expiry. Which leases exist, and which keys hang off them, is replicated state
//! (see `mvcc::store`); *when* a lease expires is decided by the leader alone, from its own
//! clock. Keep-alives and TTL queries therefore go to the leader (followers forward them),
//! and an expired lease is revoked by proposing a revocation through the log, so every
//! member deletes the same keys at the same revision.
//!
//! A new leader does not know the old leader's clock: it gives every lease a full TTL, as
//! etcd does, which errs on the side of keeping keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use flotilla_proto::etcdlite::internal_request::Request;
use flotilla_proto::etcdserverpb::{LeaseRevokeRequest, LeaseTimeToLiveResponse};

use crate::error::EtcdError;
use crate::raft::node::{Command, RaftStatus};
use crate::state::StateMachine;

/// The largest TTL etcd accepts, seconds.
pub const MAX_TTL: i64 = 9_000_000_000;
/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);
/// How long a revocation may be in flight before it is proposed again.
const REVOKE_RETRY: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Clock {
    /// The leader term this clock belongs to; a new term starts a new clock.
    term: u64,
    expiry: HashMap<i64, Instant>,
    revoking: HashMap<i64, Instant>,
}

/// Tracks lease deadlines while this member leads.
pub struct Lessor {
    clock: Mutex<Clock>,
    status: watch::Receiver<RaftStatus>,
    state: Arc<StateMachine>,
}

fn remaining_secs(deadline: Instant, now: Instant) -> i64 {
    let left = deadline.saturating_duration_since(now);
    left.as_secs() as i64 + i64::from(left.subsec_nanos() > 0)
}

impl Lessor {
    /// A lessor for this member.
    pub fn new(status: watch::Receiver<RaftStatus>, state: Arc<StateMachine>) -> Self {
        Lessor {
            clock: Mutex::new(Clock::default()),
            status,
            state,
        }
    }

    /// The leader's clock, reset when leadership (term) changed; `None` on a follower.
    fn clock(&self) -> Option<std::sync::MutexGuard<'_, Clock>> {
        let status = self.status.borrow().clone();
        if !status.is_leader {
            return None;
        }
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        if clock.term != status.term {
            *clock = Clock {
                term: status.term,
                ..Default::default()
            };
        }
        Some(clock)
    }

    /// Renews a lease on the leader; returns its TTL, or 0 if it does not exist.
    pub fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let mut clock = self.clock().ok_or(EtcdError::NotLeader)?;
        let ttl = match self.state.read().store.lease(id) {
            Some(l) => l.ttl,
            None => return Ok(0),
        };
        if clock.revoking.contains_key(&id) {
            // Already expired and being revoked: too late to renew.
            return Ok(0);
        }
        clock
            .expiry
            .insert(id, Instant::now() + Duration::from_secs(ttl as u64));
        Ok(ttl)
    }

    /// A lease's remaining and granted TTL (and keys) as the leader sees it.
    pub fn time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, EtcdError> {
        let mut clock = self.clock().ok_or(EtcdError::NotLeader)?;
        let sm = self.state.read();
        let Some(lease) = sm.store.lease(id) else {
            return Ok(LeaseTimeToLiveResponse {
                id,
                ttl: -1,
                ..Default::default()
            });
        };
        let now = Instant::now();
        let deadline = *clock
            .expiry
            .entry(id)
            .or_insert_with(|| now + Duration::from_secs(lease.ttl as u64));
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id,
            ttl: remaining_secs(deadline, now),
            granted_ttl: lease.ttl,
            keys: if keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        })
    }

    /// Leases past their deadline, which the caller must revoke.
    fn expired(&self) -> Vec<i64> {
        let Some(mut clock) = self.clock() else {
            return Vec::new();
        };
        let now = Instant::now();
        let sm = self.state.read();
        let clock = &mut *clock;
        clock.expiry.retain(|id, _| sm.store.lease(*id).is_some());
        clock.revoking.retain(|id, at| {
            sm.store.lease(*id).is_some() && now.duration_since(*at) < REVOKE_RETRY
        });
        let mut out = Vec::new();
        for (id, lease) in sm.store.leases() {
            let deadline = *clock
                .expiry
                .entry(*id)
                .or_insert_with(|| now + Duration::from_secs(lease.ttl as u64));
            if deadline <= now && !clock.revoking.contains_key(id) {
                clock.revoking.insert(*id, now);
                out.push(*id);
            }
        }
        out
    }

    /// Revokes expired leases through the log while this member leads.
    pub async fn run_expiry(
        self: Arc<Self>,
        node: mpsc::Sender<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(EXPIRY_CHECK);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            for id in self.expired() {
                tracing::info!(lease = id, "lease expired; revoking");
                let (reply, _ignored) = oneshot::channel();
                let req = Request::LeaseRevoke(LeaseRevokeRequest { id });
                if node.send(Command::Propose(req, reply)).await.is_err() {
                    return;
                }
            }
        }
    }
}
