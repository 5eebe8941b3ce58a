//! Outbound raft traffic: one long-lived gRPC stream per peer, fed by a queue. Messages that
//! pile up while a batch is in flight go out together in the next one, which is where
//! replication batching comes from. Snapshots go by a unary call so that delivery can be
//! reported back to raft.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use flotilla_proto::etcdlite::RaftBatch;
use flotilla_proto::etcdlite::raft_peer_client::RaftPeerClient;

use super::node::Command;

/// Most messages sent in one batch.
const MAX_BATCH_MESSAGES: usize = 1024;
/// Largest raft message (a snapshot can be large).
pub const MAX_PEER_MESSAGE: usize = 1024 * 1024 * 1024;

/// A switch that drops raft traffic to and from chosen peers, to cut a member off in tests
/// the way a network partition would.
#[derive(Default, Debug)]
pub struct PeerFaults {
    blocked: RwLock<HashSet<u64>>,
}

impl PeerFaults {
    /// Drops all traffic with these peers from now on.
    pub fn block(&self, peers: &[u64]) {
        let mut b = self.blocked.write().unwrap_or_else(|p| p.into_inner());
        b.extend(peers.iter().copied());
    }

    /// Restores traffic with every peer.
    pub fn heal(&self) {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Whether traffic with `peer` is dropped.
    pub fn is_blocked(&self, peer: u64) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }
}

/// Sends raft messages to peers.
pub struct Transport {
    queues: HashMap<u64, mpsc::UnboundedSender<Message>>,
    faults: Arc<PeerFaults>,
}

/// What a peer sender needs to know.
pub struct PeerTarget {
    /// The peer's member ID.
    pub id: u64,
    /// Its peer URLs; the first is used.
    pub urls: Vec<String>,
}

impl Transport {
    /// Starts one sender task per peer.
    pub fn start(
        me: u64,
        cluster_id: u64,
        peers: Vec<PeerTarget>,
        node: mpsc::Sender<Command>,
        faults: Arc<PeerFaults>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let mut queues = HashMap::new();
        for peer in peers {
            let (tx, rx) = mpsc::unbounded_channel();
            queues.insert(peer.id, tx);
            let sender = PeerSender {
                me,
                cluster_id,
                to: peer.id,
                url: peer.urls.first().cloned().unwrap_or_default(),
                node: node.clone(),
            };
            tokio::spawn(sender.run(rx, shutdown.clone()));
        }
        Transport { queues, faults }
    }

    /// Queues messages for their peers; never blocks. Raft retransmits what gets lost.
    pub fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            if self.faults.is_blocked(m.to) {
                continue;
            }
            if let Some(q) = self.queues.get(&m.to) {
                let _ = q.send(m);
            }
        }
    }
}

struct PeerSender {
    me: u64,
    cluster_id: u64,
    to: u64,
    url: String,
    node: mpsc::Sender<Command>,
}

impl PeerSender {
    fn client(&self) -> Option<RaftPeerClient<Channel>> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(
                |e| tracing::error!(peer = self.to, url = %self.url, error = %e, "bad peer URL"),
            )
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        Some(
            RaftPeerClient::new(endpoint.connect_lazy())
                .max_encoding_message_size(MAX_PEER_MESSAGE)
                .max_decoding_message_size(MAX_PEER_MESSAGE),
        )
    }

    async fn run(
        self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(client) = self.client() else {
            return;
        };
        let mut backoff = Duration::from_millis(50);
        loop {
            let first = tokio::select! {
                m = rx.recv() => m,
                _ = shutdown.changed() => return,
            };
            let Some(first) = first else { return };
            let (tx, stream_rx) = mpsc::channel::<RaftBatch>(32);
            let mut stream_client = client.clone();
            let mut call =
                tokio::spawn(
                    async move { stream_client.send(ReceiverStream::new(stream_rx)).await },
                );
            let mut next = Some(first);
            let broken = loop {
                if let Some(m) = next.take() {
                    let batch = self.gather(m, &mut rx, &client);
                    if !batch.messages.is_empty() && tx.send(batch).await.is_err() {
                        break true;
                    }
                    backoff = Duration::from_millis(50);
                }
                tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => next = Some(m),
                        None => return,
                    },
                    res = &mut call => {
                        if let Ok(Err(status)) = &res {
                            tracing::debug!(peer = self.to, %status, "raft stream to peer ended");
                        }
                        break true;
                    }
                    _ = shutdown.changed() => return,
                }
            };
            if broken {
                call.abort();
                let _ = self.node.send(Command::Unreachable(self.to)).await;
                // Messages queued while the peer was unreachable are stale; raft resends.
                while rx.try_recv().is_ok() {}
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Collects every queued message into one batch; snapshots are sent separately.
    fn gather(
        &self,
        first: Message,
        rx: &mut mpsc::UnboundedReceiver<Message>,
        client: &RaftPeerClient<Channel>,
    ) -> RaftBatch {
        let mut batch = RaftBatch {
            cluster_id: self.cluster_id,
            from: self.me,
            to: self.to,
            messages: Vec::new(),
        };
        let mut m = Some(first);
        while let Some(msg) = m.take() {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(msg, client.clone());
            } else if let Ok(bytes) = msg.write_to_bytes() {
                batch.messages.push(bytes.into());
            }
            if batch.messages.len() < MAX_BATCH_MESSAGES {
                m = rx.try_recv().ok();
            }
        }
        batch
    }

    fn send_snapshot(&self, msg: Message, mut client: RaftPeerClient<Channel>) {
        let node = self.node.clone();
        let to = self.to;
        let Ok(bytes) = msg.write_to_bytes() else {
            return;
        };
        let batch = RaftBatch {
            cluster_id: self.cluster_id,
            from: self.me,
            to,
            messages: vec![bytes.into()],
        };
        tokio::spawn(async move {
            let ok = client.send_snapshot(batch).await.is_ok();
            tracing::info!(peer = to, ok, "sent snapshot to peer");
            let _ = node.send(Command::SnapshotStatus { to, ok }).await;
        });
    }
}
