//! Transactions as etcd runs them: every compare (nested ones included) is evaluated against
//! the state before the transaction, the chosen branches are checked as a whole, and only
//! then executed, so a transaction either applies completely or not at all.

use flotilla_proto::etcdserverpb::{
    Compare, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare::CompareResult,
    compare::CompareTarget, compare::TargetUnion, request_op::Request, response_op::Response,
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

/// Checks every operation on the chosen branches against the state before the transaction.
pub fn check(store: &MvccStore, req: &TxnRequest, paths: &[bool]) -> Result<(), MvccError> {
    let mut idx = 0;
    check_walk(store, req, paths, &mut idx)
}

fn check_walk(
    store: &MvccStore,
    req: &TxnRequest,
    paths: &[bool],
    idx: &mut usize,
) -> Result<(), MvccError> {
    let ok = paths.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    for op in branch(req, ok) {
        match &op.request {
            Some(Request::RequestPut(p)) => store.check_put(p)?,
            Some(Request::RequestRange(r)) => {
                if r.revision > store.revision() {
                    return Err(MvccError::FutureRevision);
                }
                if r.revision > 0 && r.revision < store.compacted_revision() {
                    return Err(MvccError::Compacted);
                }
            }
            Some(Request::RequestTxn(t)) => check_walk(store, t, paths, idx)?,
            Some(Request::RequestDeleteRange(_)) | None => {}
        }
    }
    Ok(())
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
