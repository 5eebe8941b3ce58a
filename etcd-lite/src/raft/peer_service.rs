//! The service a member serves on its peer URL: inbound raft traffic, lease calls forwarded
//! by followers, and identity. Traffic from another cluster is refused.

use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use flotilla_proto::etcdlite::raft_peer_server::RaftPeer;
use flotilla_proto::etcdlite::{RaftBatch, ResetProgressRequest, SendAck, WhoamiRequest};
use flotilla_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    Member,
};

use super::node::Command;
use super::transport::PeerFaults;
use crate::server::Shared;

/// The peer service of one member.
pub struct PeerService {
    shared: Arc<Shared>,
    node: mpsc::Sender<Command>,
    faults: Arc<PeerFaults>,
}

impl PeerService {
    /// Serves raft traffic into `node`.
    pub fn new(shared: Arc<Shared>, faults: Arc<PeerFaults>) -> Self {
        PeerService {
            node: shared.node.clone(),
            shared,
            faults,
        }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), Status> {
        if cluster_id != self.shared.cluster_id {
            return Err(Status::failed_precondition(format!(
                "etcdserver: cluster ID mismatch (this member belongs to {:x}, the sender to {cluster_id:x})",
                self.shared.cluster_id
            )));
        }
        Ok(())
    }

    fn decode(&self, batch: &RaftBatch) -> Result<Option<Vec<Message>>, Status> {
        self.check_cluster(batch.cluster_id)?;
        if self.faults.is_blocked(batch.from) {
            return Ok(None);
        }
        let msgs = batch
            .messages
            .iter()
            .map(|b| Message::parse_from_bytes(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
        Ok(Some(msgs))
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn send(
        &self,
        request: Request<Streaming<RaftBatch>>,
    ) -> Result<Response<SendAck>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            if let Some(msgs) = self.decode(&batch)? {
                self.node
                    .send(Command::Step(msgs))
                    .await
                    .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
            }
        }
        Ok(Response::new(SendAck {}))
    }

    async fn send_snapshot(
        &self,
        request: Request<RaftBatch>,
    ) -> Result<Response<SendAck>, Status> {
        let batch = request.into_inner();
        match self.decode(&batch)? {
            Some(msgs) => {
                self.node
                    .send(Command::Step(msgs))
                    .await
                    .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
                Ok(Response::new(SendAck {}))
            }
            None => Err(Status::unavailable("peer traffic is blocked")),
        }
    }

    async fn whoami(&self, request: Request<WhoamiRequest>) -> Result<Response<Member>, Status> {
        self.check_cluster(request.into_inner().cluster_id)?;
        let me = self
            .shared
            .members
            .iter()
            .find(|m| m.id == self.shared.member_id)
            .cloned()
            .unwrap_or_default();
        Ok(Response::new(Member {
            client_ur_ls: self.shared.client_urls.clone(),
            ..me
        }))
    }

    async fn reset_progress(
        &self,
        request: Request<ResetProgressRequest>,
    ) -> Result<Response<SendAck>, Status> {
        let r = request.into_inner();
        self.check_cluster(r.cluster_id)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.node
            .send(Command::ResetPeer(r.member_id, tx))
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        rx.await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))??;
        Ok(Response::new(SendAck {}))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let id = request.into_inner().id;
        let ttl = self.shared.lessor.keep_alive(id)?;
        Ok(Response::new(LeaseKeepAliveResponse {
            header: None,
            id,
            ttl,
        }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(
            self.shared.lessor.time_to_live(r.id, r.keys)?,
        ))
    }
}
