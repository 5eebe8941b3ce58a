//! The Lease service. Grants and revocations are replicated; keep-alives and TTL queries
//! are answered by the leader, so followers forward them over the peer service.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use flotilla_proto::etcdlite::internal_request::Request as Internal;
use flotilla_proto::etcdserverpb::lease_server::Lease;
use flotilla_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};

use super::Shared;
use crate::error::EtcdError;
use crate::lease::MAX_TTL;
use crate::mvcc::requests::WriteResponse;

/// The etcd Lease service.
pub struct LeaseService {
    shared: Arc<Shared>,
}

impl LeaseService {
    /// A Lease service over the member's shared handles.
    pub fn new(shared: Arc<Shared>) -> Self {
        LeaseService { shared }
    }
}

/// Renews a lease on the leader, here or by forwarding.
pub async fn keep_alive(shared: &Shared, id: i64) -> Result<LeaseKeepAliveResponse, EtcdError> {
    let ttl = if shared.status.borrow().is_leader {
        shared.lessor.keep_alive(id)?
    } else {
        let leader = shared.leader().await?;
        let mut peer = shared.peer(leader).ok_or(EtcdError::NoLeader)?;
        peer.lease_keep_alive(LeaseKeepAliveRequest { id })
            .await
            .map_err(forward_error)?
            .into_inner()
            .ttl
    };
    let rev = shared.state.read().store.revision();
    Ok(LeaseKeepAliveResponse {
        header: Some(shared.header(rev)),
        id,
        ttl,
    })
}

/// Reads a lease's TTL on the leader, here or by forwarding.
pub async fn time_to_live(
    shared: &Shared,
    req: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, EtcdError> {
    let mut resp = if shared.status.borrow().is_leader {
        shared.lessor.time_to_live(req.id, req.keys)?
    } else {
        let leader = shared.leader().await?;
        let mut peer = shared.peer(leader).ok_or(EtcdError::NoLeader)?;
        peer.lease_time_to_live(req)
            .await
            .map_err(forward_error)?
            .into_inner()
    };
    let rev = shared.state.read().store.revision();
    resp.header = Some(shared.header(rev));
    Ok(resp)
}

/// A failed forward: the leader moved or is unreachable, which the client can retry.
fn forward_error(status: Status) -> EtcdError {
    tracing::debug!(%status, "forwarding a lease request to the leader failed");
    if status.message().contains("not leader") {
        EtcdError::NotLeader
    } else {
        EtcdError::NoLeader
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let mut r = request.into_inner();
        if r.ttl > MAX_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        r.ttl = r.ttl.max(self.shared.min_lease_ttl);
        if r.id == 0 {
            // Chosen here and carried in the log, so every member agrees on it.
            r.id = rand::rng().random_range(1..i64::MAX);
        }
        let applied = self.shared.propose(Internal::LeaseGrant(r)).await?;
        match applied.response {
            WriteResponse::LeaseGrant(mut g) => {
                g.header = Some(self.shared.header(applied.revision));
                Ok(Response::new(g))
            }
            _ => Err(Status::internal(
                "etcdserver: unexpected response to a lease grant",
            )),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let r = request.into_inner();
        let applied = self.shared.propose(Internal::LeaseRevoke(r)).await?;
        Ok(Response::new(LeaseRevokeResponse {
            header: Some(self.shared.header(applied.revision)),
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                let resp = keep_alive(&shared, req.id).await.map_err(Status::from);
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(
            time_to_live(&self.shared, request.into_inner()).await?,
        ))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.shared.read_barrier().await?;
        let sm = self.shared.state.read();
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.shared.header(sm.store.revision())),
            leases: sm
                .store
                .leases()
                .keys()
                .map(|id| LeaseStatus { id: *id })
                .collect(),
        }))
    }
}
