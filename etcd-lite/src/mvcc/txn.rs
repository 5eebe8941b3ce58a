//! Transactions as etcd runs them: every compare (nested ones included) is evaluated against
//! the state before the transaction, the chosen branches are checked as a whole, and only
//! then executed, so a transaction either applies completely or not at all.

use flotilla_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
    compare::CompareResult, compare::CompareTarget, compare::TargetUnion, request_op::Request,
    response_op::Response,
};
use flotilla_proto::mvccpb::KeyValue;

use super::MvccError;
use super::key_range::KeyRange;
use super::store::{MvccStore, WriteTxn};

/// Evaluates a transaction's compares (and those of nested transactions on the chosen
/// branches), returning which branch each transaction takes in depth-first order.
pub fn choose_paths(store: &MvccStore, req: &TxnRequest) -> Vec<bool> {
    let mut paths = Vec::new();
    walk_paths(store, req, &mut paths);
    paths
}

fn walk_paths(store: &MvccStore, req: &TxnRequest, paths: &mut Vec<bool>) {
    let ok = req.compare.iter().all(|c| compare_holds(store, c));
    paths.push(ok);
    for op in branch(req, ok) {
        if let Some(Request::RequestTxn(t)) = &op.request {
            walk_paths(store, t, paths);
        }
    }
}

fn branch(req: &TxnRequest, ok: bool) -> &[RequestOp] {
    if ok { &req.success } else { &req.failure }
}

/// Whether one compare holds now. A value compare on a missing key always fails (etcd cannot
/// tell a missing value from an empty one); other targets compare against zeroes.
pub fn compare_holds(store: &MvccStore, c: &Compare) -> bool {
    let range = KeyRange::new(&c.key, &c.range_end);
    let mut any = false;
    for (key, version) in store.visible(&range, store.revision()) {
        any = true;
        if !compare_kv(c, &version.to_kv(key)) {
            return false;
        }
    }
    if any {
        return true;
    }
    if c.target == CompareTarget::Value as i32 {
        return false;
    }
    compare_kv(c, &KeyValue::default())
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match (CompareTarget::try_from(c.target), &c.target_union) {
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(v))) => {
            kv.value.as_ref().cmp(v.as_ref())
        }
        (Ok(CompareTarget::Value), _) => kv.value.as_ref().cmp(&[][..]),
        (Ok(target), union) => {
            let want = match union {
                Some(TargetUnion::Version(v))
                | Some(TargetUnion::CreateRevision(v))
                | Some(TargetUnion::ModRevision(v))
                | Some(TargetUnion::Lease(v)) => *v,
                _ => 0,
            };
            let have = match target {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                CompareTarget::Lease => kv.lease,
                CompareTarget::Value => unreachable!("handled above"),
            };
            have.cmp(&want)
        }
        (Err(_), _) => return false,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord.is_eq(),
        Ok(CompareResult::NotEqual) => ord.is_ne(),
        Ok(CompareResult::Greater) => ord.is_gt(),
        Ok(CompareResult::Less) => ord.is_lt(),
        Err(_) => false,
    }
}

/// Checks every operation on the chosen branches against the state before the transaction,
/// in etcd's order, so that a transaction with several faults fails with etcd's error: every
/// put first (depth first), then every read.
pub fn check(store: &MvccStore, req: &TxnRequest, paths: &[bool]) -> Result<(), MvccError> {
    let mut idx = 0;
    walk_chosen(req, paths, &mut idx, &mut |op| match op {
        Request::RequestPut(p) => check_put(store, p),
        _ => Ok(()),
    })?;
    let mut idx = 0;
    walk_chosen(req, paths, &mut idx, &mut |op| match op {
        Request::RequestRange(r) => check_range(store, r),
        _ => Ok(()),
    })
}

/// Calls `f` on every operation of the chosen branches, depth first, in order.
fn walk_chosen(
    req: &TxnRequest,
    paths: &[bool],
    idx: &mut usize,
    f: &mut impl FnMut(&Request) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let ok = paths.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    for op in branch(req, ok) {
        match &op.request {
            Some(Request::RequestTxn(t)) => walk_chosen(t, paths, idx, f)?,
            Some(other) => f(other)?,
            None => {}
        }
    }
    Ok(())
}

/// A put inside a transaction: unlike a plain put (see [`MvccStore::check_put`]), etcd
/// looks for the key an ignore_value / ignore_lease put keeps before it looks up the lease.
fn check_put(store: &MvccStore, p: &PutRequest) -> Result<(), MvccError> {
    if (p.ignore_value || p.ignore_lease) && store.latest(&p.key).is_none() {
        return Err(MvccError::KeyNotFound);
    }
    if p.lease != 0 && store.lease(p.lease).is_none() {
        return Err(MvccError::LeaseNotFound);
    }
    Ok(())
}

/// A read inside a transaction: its revision must be retained and not in the future, as of
/// before the transaction (so not the revision the transaction's own writes make).
///
/// etcd compares any nonzero revision, negative ones included, with its first retained
/// revision, which is -1 until the first compaction; a plain read instead takes a negative
/// revision to mean the newest.
fn check_range(store: &MvccStore, r: &RangeRequest) -> Result<(), MvccError> {
    let first = match store.compacted_revision() {
        0 => -1,
        compacted => compacted,
    };
    match r.revision {
        0 => Ok(()),
        rev if rev > store.revision() => Err(MvccError::FutureRevision),
        rev if rev < first => Err(MvccError::Compacted),
        _ => Ok(()),
    }
}

/// Executes a checked transaction.
pub fn execute(
    store: &mut MvccStore,
    txn: &mut WriteTxn,
    req: &TxnRequest,
    paths: &[bool],
) -> TxnResponse {
    let mut idx = 0;
    execute_walk(store, txn, req, paths, &mut idx)
}

fn execute_walk(
    store: &mut MvccStore,
    txn: &mut WriteTxn,
    req: &TxnRequest,
    paths: &[bool],
    idx: &mut usize,
) -> TxnResponse {
    let ok = paths.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    let mut responses = Vec::new();
    for op in branch(req, ok) {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => {
                // Checked above, so the read cannot fail on revisions.
                Response::ResponseRange(store.txn_range(txn, r).unwrap_or_default())
            }
            Some(Request::RequestPut(p)) => Response::ResponsePut(store.put(txn, p)),
            Some(Request::RequestDeleteRange(d)) => {
                Response::ResponseDeleteRange(store.delete_range(txn, d))
            }
            Some(Request::RequestTxn(t)) => {
                Response::ResponseTxn(execute_walk(store, txn, t, paths, idx))
            }
            None => continue,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    }
}

/// Whether a transaction only reads (on both branches, recursively), so it can be served
/// without going through the log.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(t)) => is_read_only(t),
            _ => false,
        })
}

/// Whether every read in a read-only transaction asked for serializable consistency.
pub fn is_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(r)) => r.serializable,
            Some(Request::RequestTxn(t)) => is_serializable(t),
            _ => true,
        })
}

/// Runs a read-only transaction against the current state.
pub fn execute_read_only(store: &MvccStore, req: &TxnRequest) -> Result<TxnResponse, MvccError> {
    let paths = choose_paths(store, req);
    check(store, req, &paths)?;
    let mut idx = 0;
    read_only_walk(store, req, &paths, &mut idx)
}

fn read_only_walk(
    store: &MvccStore,
    req: &TxnRequest,
    paths: &[bool],
    idx: &mut usize,
) -> Result<TxnResponse, MvccError> {
    let ok = paths.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    let mut responses = Vec::new();
    for op in branch(req, ok) {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Response::ResponseRange(store.range(r)?),
            Some(Request::RequestTxn(t)) => {
                Response::ResponseTxn(read_only_walk(store, t, paths, idx)?)
            }
            _ => continue,
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn txn(success: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        }
    }

    fn op(request: Request) -> RequestOp {
        RequestOp {
            request: Some(request),
        }
    }

    fn put(key: &'static str, lease: i64, ignore_value: bool) -> Request {
        Request::RequestPut(PutRequest {
            key: Bytes::from_static(key.as_bytes()),
            lease,
            ignore_value,
            ..Default::default()
        })
    }

    fn read_at(revision: i64) -> Request {
        Request::RequestRange(RangeRequest {
            key: Bytes::from_static(b"a"),
            revision,
            ..Default::default()
        })
    }

    fn check_of(req: &TxnRequest) -> Result<(), MvccError> {
        let store = MvccStore::default();
        check(&store, req, &choose_paths(&store, req))
    }

    #[test]
    fn every_put_is_checked_before_any_read() {
        let req = txn(vec![op(read_at(100)), op(put("a", 9, false))]);
        assert_eq!(check_of(&req), Err(MvccError::LeaseNotFound));
        let nested = txn(vec![
            op(read_at(100)),
            op(Request::RequestTxn(txn(vec![op(put("a", 9, false))]))),
        ]);
        assert_eq!(check_of(&nested), Err(MvccError::LeaseNotFound));
        assert_eq!(
            check_of(&txn(vec![op(read_at(100))])),
            Err(MvccError::FutureRevision)
        );
    }

    #[test]
    fn a_put_in_a_transaction_looks_for_its_key_before_its_lease() {
        let req = txn(vec![op(put("missing", 9, true))]);
        assert_eq!(check_of(&req), Err(MvccError::KeyNotFound));
    }

    #[test]
    fn a_negative_read_revision_is_compacted_only_below_etcds_first_revision() {
        // Never compacted: etcd's first revision is -1.
        assert_eq!(check_of(&txn(vec![op(read_at(-1))])), Ok(()));
        assert_eq!(
            check_of(&txn(vec![op(read_at(-2))])),
            Err(MvccError::Compacted)
        );
    }
}
