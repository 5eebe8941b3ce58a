//! The Maintenance service: status, alarms, hashes, leadership transfer and snapshots.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

use flotilla_proto::etcdserverpb::maintenance_server::Maintenance;
use flotilla_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};

use super::{Shared, VERSION};
use crate::error::EtcdError;
use crate::mvcc::snapshot;
use crate::mvcc::store::MvccStore;
use crate::raft::node::Command;

/// Bytes per snapshot chunk on the wire.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// The etcd Maintenance service.
pub struct MaintenanceService {
    shared: Arc<Shared>,
}

impl MaintenanceService {
    /// A Maintenance service over the member's shared handles.
    pub fn new(shared: Arc<Shared>) -> Self {
        MaintenanceService { shared }
    }
}

/// A CRC-32 over every key revision visible at `rev` or later and not compacted, in
/// revision order: members that applied the same log agree on it.
pub fn hash_kv(store: &MvccStore, rev: i64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut versions: Vec<_> = store
        .histories()
        .flat_map(|(k, hist)| hist.versions().iter().map(move |v| (v.rev, k, v)))
        .filter(|(r, _, _)| r.main <= rev)
        .collect();
    versions.sort_by_key(|(r, _, _)| *r);
    for (r, k, v) in versions {
        h.update(&r.to_bytes());
        h.update(k);
        h.update(&v.value);
        h.update(&[u8::from(v.tombstone)]);
        h.update(&v.lease.to_be_bytes());
    }
    h.finalize()
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, _r: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        // No quota or corruption alarms are raised by etcd-lite, so the list is empty.
        let rev = self.shared.state.read().store.revision();
        Ok(Response::new(AlarmResponse {
            header: Some(self.shared.header(rev)),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let status = self.shared.status.borrow().clone();
        let applied = *self.shared.applied.borrow();
        let rev = self.shared.state.read().store.revision();
        let db_size = self.shared.metrics.db_size_bytes.get();
        Ok(Response::new(StatusResponse {
            header: Some(self.shared.header(rev)),
            version: VERSION.to_string(),
            db_size,
            leader: status.leader,
            raft_index: status.commit,
            raft_term: status.term,
            raft_applied_index: applied.index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        _r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // sled reclaims space by itself as it rewrites segments; nothing to do on demand.
        let rev = self.shared.state.read().store.revision();
        Ok(Response::new(DefragmentResponse {
            header: Some(self.shared.header(rev)),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let r = request.into_inner();
        let sm = self.shared.state.read();
        let rev = if r.revision > 0 {
            r.revision
        } else {
            sm.store.revision()
        };
        if rev > sm.store.revision() {
            return Err(EtcdError::FutureRevision.into());
        }
        if rev < sm.store.compacted_revision() {
            return Err(EtcdError::Compacted.into());
        }
        Ok(Response::new(HashKvResponse {
            header: Some(self.shared.header(sm.store.revision())),
            hash: hash_kv(&sm.store, rev),
            compact_revision: sm.store.compacted_revision(),
        }))
    }

    async fn snapshot(
        &self,
        _r: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        // A copy of the state, encoded off the async runtime while applying carries on.
        let (store, applied) = {
            let sm = self.shared.state.read();
            (sm.store.clone(), sm.applied)
        };
        let rev = store.revision();
        let cluster_id = self.shared.cluster_id;
        let data =
            tokio::task::spawn_blocking(move || snapshot::encode(&store, cluster_id, applied))
                .await
                .map_err(|_| EtcdError::Stopped)?
                .map_err(|e| EtcdError::Internal(format!("making the snapshot: {e}")))?;
        let header = self.shared.header(rev);
        let total = data.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = data
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, chunk)| {
                let sent = (i * SNAPSHOT_CHUNK + chunk.len()) as u64;
                Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: total as u64 - sent,
                    blob: bytes::Bytes::copy_from_slice(chunk),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = request.into_inner().target_id;
        let (tx, rx) = oneshot::channel();
        self.shared
            .node
            .send(Command::TransferLeader(target, tx))
            .await
            .map_err(|_| EtcdError::Stopped)?;
        rx.await.map_err(|_| EtcdError::Stopped)??;
        let mut status = self.shared.status.clone();
        let wait = status.wait_for(|s| s.leader == target);
        tokio::time::timeout(self.shared.request_timeout, wait)
            .await
            .map_err(|_| EtcdError::Timeout)?
            .map_err(|_| EtcdError::Stopped)?;
        let rev = self.shared.state.read().store.revision();
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.shared.header(rev)),
        }))
    }
}
