//! The KV service: reads are served from local state (after a ReadIndex barrier unless the
//! client asked for a serializable read); writes go through raft.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use flotilla_proto::etcdlite::internal_request::Request as Internal;
use flotilla_proto::etcdserverpb::kv_server::Kv;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
    response_op::Response as OpResponse,
};

use super::{Shared, validate};
use crate::error::EtcdError;
use crate::mvcc::requests::WriteResponse;
use crate::mvcc::txn;

/// The etcd KV service.
pub struct KvService {
    shared: Arc<Shared>,
}

impl KvService {
    /// A KV service over the member's shared handles.
    pub fn new(shared: Arc<Shared>) -> Self {
        KvService { shared }
    }

    async fn write(&self, req: Internal) -> Result<(WriteResponse, ResponseHeader), EtcdError> {
        let applied = self.shared.propose(req).await?;
        let mut header = self.shared.header(applied.revision);
        header.raft_term = applied.term;
        Ok((applied.response, header))
    }
}

/// Gives every nested response of a transaction the same header as the transaction.
fn fill_txn_headers(t: &mut TxnResponse, header: &ResponseHeader) {
    t.header = Some(*header);
    for r in &mut t.responses {
        match &mut r.response {
            Some(OpResponse::ResponseRange(x)) => x.header = Some(*header),
            Some(OpResponse::ResponsePut(x)) => x.header = Some(*header),
            Some(OpResponse::ResponseDeleteRange(x)) => x.header = Some(*header),
            Some(OpResponse::ResponseTxn(x)) => fill_txn_headers(x, header),
            None => {}
        }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!(
        "etcdserver: unexpected response to a {what} request"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let r = request.into_inner();
        validate::range(&r)?;
        if !r.serializable {
            self.shared.read_barrier().await?;
        }
        let sm = self.shared.state.read();
        let mut resp = sm.store.range(&r).map_err(EtcdError::from)?;
        resp.header = Some(self.shared.header(sm.store.revision()));
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let r = request.into_inner();
        validate::put(&r)?;
        match self.write(Internal::Put(r)).await? {
            (WriteResponse::Put(mut p), header) => {
                p.header = Some(header);
                Ok(Response::new(p))
            }
            _ => Err(unexpected("put")),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let r = request.into_inner();
        validate::delete(&r)?;
        match self.write(Internal::DeleteRange(r)).await? {
            (WriteResponse::DeleteRange(mut d), header) => {
                d.header = Some(header);
                Ok(Response::new(d))
            }
            _ => Err(unexpected("delete")),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let r = request.into_inner();
        validate::txn(&r, self.shared.max_txn_ops)?;
        if txn::is_read_only(&r) {
            if !txn::is_serializable(&r) {
                self.shared.read_barrier().await?;
            }
            let sm = self.shared.state.read();
            let mut resp = txn::execute_read_only(&sm.store, &r).map_err(EtcdError::from)?;
            fill_txn_headers(&mut resp, &self.shared.header(sm.store.revision()));
            return Ok(Response::new(resp));
        }
        match self.write(Internal::Txn(r)).await? {
            (WriteResponse::Txn(mut t), header) => {
                fill_txn_headers(&mut t, &header);
                Ok(Response::new(t))
            }
            _ => Err(unexpected("txn")),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let r = request.into_inner();
        match self.write(Internal::Compaction(r)).await? {
            (WriteResponse::Compaction(mut c), header) => {
                c.header = Some(header);
                Ok(Response::new(c))
            }
            _ => Err(unexpected("compaction")),
        }
    }
}
