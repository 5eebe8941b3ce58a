//! The etcd v3 gRPC services a member serves to clients, and its HTTP endpoints.
//!
//! - [`kv`], [`watch`], [`lease`], [`cluster`], [`maintenance`]: one file per etcd service
//! - [`validate`]: the request checks etcd makes before anything reaches raft
//! - [`h2_authority`]: accepts the `:authority` etcd's Go clients send
//! - [`message_limit`]: oversized requests refused with etcd's code
//! - [`http`]: `/metrics`, `/health` and `/version` on the client URLs
//! - [`Shared`]: what every service needs (propose, linearizable read barrier, headers)

pub mod cluster;
pub mod h2_authority;
pub mod http;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod message_limit;
pub mod validate;
pub mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch as tokio_watch};
use tonic::transport::{Channel, Endpoint};

use flotilla_proto::etcdlite::internal_request::Request;
use flotilla_proto::etcdlite::raft_peer_client::RaftPeerClient;
use flotilla_proto::etcdserverpb::{Member, ResponseHeader};

use crate::error::EtcdError;
use crate::lease::Lessor;
use crate::metrics::Metrics;
use crate::mvcc::backend::AppliedIndex;
use crate::raft::node::{Command, RaftStatus};
use crate::raft::proposals::Applied;
use crate::raft::transport::MAX_PEER_MESSAGE;
use crate::state::StateMachine;

/// The version this member reports: the etcd API it speaks, and what it really is.
pub const VERSION: &str = concat!("3.4.0+etcd-lite.", env!("CARGO_PKG_VERSION"));

/// Handles shared by every client-facing service.
pub struct Shared {
    /// This member.
    pub member_id: u64,
    /// This member's name.
    pub name: String,
    /// The cluster.
    pub cluster_id: u64,
    /// The initial members (id, name, peer URLs).
    pub members: Vec<Member>,
    /// This member's advertised client URLs.
    pub client_urls: Vec<String>,
    /// The raft node's inbox.
    pub node: mpsc::Sender<Command>,
    /// The raft node's published status.
    pub status: tokio_watch::Receiver<RaftStatus>,
    /// The applier's published progress.
    pub applied: tokio_watch::Receiver<AppliedIndex>,
    /// The state machine.
    pub state: Arc<StateMachine>,
    /// Lease expiry (on the leader).
    pub lessor: Arc<Lessor>,
    /// Wakes the watch syncer.
    pub syncer: Arc<Notify>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `--max-request-bytes`.
    pub max_request_bytes: usize,
    /// `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Smallest lease TTL, seconds.
    pub min_lease_ttl: i64,
    /// How long a request may wait for raft.
    pub request_timeout: Duration,
    /// Interval of watch progress notifications.
    pub progress_interval: Duration,
    /// Peer clients by member ID, for forwarding to the leader (built on first use).
    pub peer_clients: Mutex<HashMap<u64, RaftPeerClient<Channel>>>,
}

impl Shared {
    /// A response header at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: self.status.borrow().term,
        }
    }

    /// Replicates a write and waits until it is applied here.
    pub async fn propose(&self, req: Request) -> Result<Applied, EtcdError> {
        if req.encoded_len() > self.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let (tx, rx) = oneshot::channel();
        self.node
            .send(Command::Propose(req, tx))
            .await
            .map_err(|_| EtcdError::Stopped)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// Waits until this member has applied everything the leader had committed when the
    /// call was made: after it, a local read is linearizable.
    pub async fn read_barrier(&self) -> Result<(), EtcdError> {
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let (tx, rx) = oneshot::channel();
        self.node
            .send(Command::ReadIndex(tx))
            .await
            .map_err(|_| EtcdError::Stopped)?;
        let index = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(EtcdError::Stopped),
            Err(_) => return Err(EtcdError::Timeout),
        };
        self.wait_applied(index, deadline).await
    }

    /// Waits until the applied index reaches `index`.
    pub async fn wait_applied(
        &self,
        index: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), EtcdError> {
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|a| a.index >= index);
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    /// A client for a peer's raft service (to forward lease calls to the leader).
    pub fn peer(&self, id: u64) -> Option<RaftPeerClient<Channel>> {
        let mut clients = self.peer_clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&id) {
            return Some(c.clone());
        }
        let url = self
            .members
            .iter()
            .find(|m| m.id == id)?
            .peer_ur_ls
            .first()?
            .clone();
        let channel = Endpoint::from_shared(url)
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .timeout(self.request_timeout)
            .connect_lazy();
        let client = RaftPeerClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE);
        clients.insert(id, client.clone());
        Some(client)
    }

    /// The leader's ID, waiting briefly through an election if there is none.
    pub async fn leader(&self) -> Result<u64, EtcdError> {
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| s.leader != 0);
        match tokio::time::timeout(self.request_timeout, wait).await {
            Ok(Ok(s)) => Ok(s.leader),
            Ok(Err(_)) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::NoLeader),
        }
    }
}
