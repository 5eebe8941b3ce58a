//! Outbound raft traffic: one long-lived gRPC stream per peer, fed by a queue. Messages that
//! pile up while a batch is in flight go out together in the next one, which is where
//! replication batching comes from. Snapshots go by a unary call so that delivery can be
//! reported back to raft.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::{mpsc, watch};
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

    async fn run(self, rx: mpsc::UnboundedReceiver<Message>, mut shutdown: watch::Receiver<bool>) {
        let Some(client) = self.client() else {
            return;
        };
        let me = Arc::new(self);
        let rx = Arc::new(Mutex::new(rx));
        let mut backoff = Duration::from_millis(50);
        loop {
            // The request stream pulls batches straight from the queue, so a message reaches
            // the HTTP/2 connection without passing through another task.
            let outbound = Batches {
                sender: me.clone(),
                client: client.clone(),
                rx: rx.clone(),
            };
            let started = tokio::time::Instant::now();
            let mut call = client.clone();
            let result = tokio::select! {
                r = call.send(outbound) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(status) = &result {
                tracing::debug!(peer = me.to, %status, "raft stream to peer ended");
            }
            if started.elapsed() > Duration::from_secs(5) {
                backoff = Duration::from_millis(50);
            }
            let _ = me.node.send(Command::Unreachable(me.to)).await;
            // Messages queued while the peer was unreachable are stale; raft resends. A
            // dropped snapshot must be reported, or raft would wait for it forever.
            let dropped_snapshot = {
                let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                let mut snapshot = false;
                while let Ok(m) = rx.try_recv() {
                    snapshot |= m.get_msg_type() == MessageType::MsgSnapshot;
                }
                snapshot
            };
            if dropped_snapshot {
                let _ = me
                    .node
                    .send(Command::SnapshotStatus {
                        to: me.to,
                        ok: false,
                    })
                    .await;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn batch(&self) -> RaftBatch {
        RaftBatch {
            cluster_id: self.cluster_id,
            from: self.me,
            to: self.to,
            messages: Vec::new(),
        }
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

/// The request stream of one connection to a peer: each item is every message queued at
/// the moment it is polled (snapshots excepted: they go by a separate call).
struct Batches {
    sender: Arc<PeerSender>,
    client: RaftPeerClient<Channel>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Message>>>,
}

impl Stream for Batches {
    type Item = RaftBatch;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RaftBatch>> {
        let this = self.get_mut();
        let mut rx = this.rx.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = this.sender.batch();
        loop {
            let msg = if batch.messages.is_empty() {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(m)) => m,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            } else {
                match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                this.sender.send_snapshot(msg, this.client.clone());
            } else if let Ok(bytes) = msg.write_to_bytes() {
                batch.messages.push(bytes.into());
                if batch.messages.len() >= MAX_BATCH_MESSAGES {
                    break;
                }
            }
        }
        Poll::Ready(Some(batch))
    }
}
