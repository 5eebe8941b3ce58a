//! Applies one replicated request to the state machine.

use flotilla_proto::etcdlite::internal_request::Request;
use flotilla_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse,
    TxnResponse,
};

use super::MvccError;
use super::store::MvccStore;
use super::txn;

/// The result of applying a write, before the response header is filled in.
#[derive(Debug, Clone)]
pub enum WriteResponse {
    /// A put.
    Put(PutResponse),
    /// A range deletion.
    DeleteRange(DeleteRangeResponse),
    /// A transaction.
    Txn(TxnResponse),
    /// A compaction.
    Compaction(CompactionResponse),
    /// A lease grant.
    LeaseGrant(LeaseGrantResponse),
    /// A lease revocation.
    LeaseRevoke(LeaseRevokeResponse),
}

/// Applies `req`; on error nothing changed. Returns the response and the store revision
/// after the request.
pub fn apply(store: &mut MvccStore, req: &Request) -> Result<(WriteResponse, i64), MvccError> {
    let mut w = store.begin();
    let response = match req {
        Request::Put(p) => {
            store.check_put(p)?;
            WriteResponse::Put(store.put(&mut w, p))
        }
        Request::DeleteRange(d) => WriteResponse::DeleteRange(store.delete_range(&mut w, d)),
        Request::Txn(t) => {
            let paths = txn::choose_paths(store, t);
            txn::check(store, t, &paths)?;
            WriteResponse::Txn(txn::execute(store, &mut w, t, &paths))
        }
        Request::Compaction(c) => {
            store.compact(c.revision)?;
            WriteResponse::Compaction(CompactionResponse::default())
        }
        Request::LeaseGrant(g) => {
            store.lease_grant(g.id, g.ttl)?;
            WriteResponse::LeaseGrant(LeaseGrantResponse {
                header: None,
                id: g.id,
                ttl: g.ttl,
                error: String::new(),
            })
        }
        Request::LeaseRevoke(r) => {
            store.lease_revoke(&mut w, r.id)?;
            WriteResponse::LeaseRevoke(LeaseRevokeResponse::default())
        }
    };
    let rev = store.end(w);
    Ok((response, rev))
}
