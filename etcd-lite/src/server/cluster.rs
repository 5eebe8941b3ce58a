//! The Cluster service: the member list. Membership is fixed at bootstrap; a member's
//! client URLs are learned by asking it over the peer service.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use flotilla_proto::etcdlite::WhoamiRequest;
use flotilla_proto::etcdserverpb::cluster_server::Cluster;
use flotilla_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};

use super::Shared;
use crate::error::EtcdError;

/// The etcd Cluster service.
pub struct ClusterService {
    shared: Arc<Shared>,
}

impl ClusterService {
    /// A Cluster service over the member's shared handles.
    pub fn new(shared: Arc<Shared>) -> Self {
        ClusterService { shared }
    }

    /// Every member with its client URLs; a member that cannot be reached is listed as etcd
    /// lists an unstarted one: without name and client URLs.
    async fn members(&self) -> Vec<Member> {
        let lookups = self.shared.members.iter().map(|m| async move {
            if m.id == self.shared.member_id {
                let mut me = m.clone();
                me.client_ur_ls = self.shared.client_urls.clone();
                return me;
            }
            let found = match self.shared.peer(m.id) {
                Some(mut peer) => tokio::time::timeout(
                    Duration::from_millis(500),
                    peer.whoami(WhoamiRequest {
                        cluster_id: self.shared.cluster_id,
                    }),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|r| r.into_inner()),
                None => None,
            };
            found.unwrap_or_else(|| Member {
                id: m.id,
                peer_ur_ls: m.peer_ur_ls.clone(),
                ..Default::default()
            })
        });
        futures::future::join_all(lookups).await
    }
}

fn unsupported() -> Status {
    EtcdError::Unsupported("membership changes are not supported by etcd-lite yet").into()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _r: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(unsupported())
    }

    async fn member_remove(
        &self,
        _r: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(unsupported())
    }

    async fn member_update(
        &self,
        _r: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unsupported())
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.shared.read_barrier().await?;
        }
        let members = self.members().await;
        let rev = self.shared.state.read().store.revision();
        Ok(Response::new(MemberListResponse {
            header: Some(self.shared.header(rev)),
            members,
        }))
    }

    async fn member_promote(
        &self,
        _r: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unsupported())
    }
}
