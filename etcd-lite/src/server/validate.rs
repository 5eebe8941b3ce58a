//! The checks etcd's gRPC layer makes before a request reaches raft, with etcd's errors.

use std::collections::HashSet;

use bytes::Bytes;
use flotilla_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, range_request,
    request_op::Request,
};

use crate::error::EtcdError;
use crate::mvcc::key_range::KeyRange;

/// Checks a range request.
///
/// etcd 3.4 accepts any sort order (one it does not know leaves the keys unsorted), but an
/// unknown sort target crashes it (a nil sorter); etcd 3.5 refuses that with "invalid sort
/// option", which is what we answer.
pub fn range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if range_request::SortTarget::try_from(r.sort_target).is_err() {
        return Err(EtcdError::InvalidSortOption);
    }
    Ok(())
}

/// Checks a put request.
pub fn put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// Checks a delete request.
pub fn delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// Checks a transaction: operation count, every operation, and that no key is written twice.
pub fn txn(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    txn_ops(r, max_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn txn_ops(r: &TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(x)) => range(x)?,
            Some(Request::RequestPut(x)) => put(x)?,
            Some(Request::RequestDeleteRange(x)) => delete(x)?,
            Some(Request::RequestTxn(x)) => txn_ops(x, max_ops - opc)?,
            None => return Err(EtcdError::KeyNotFound),
        }
    }
    Ok(())
}

/// etcd refuses a transaction whose chosen branch could write one key twice: two puts of
/// the same key, or a put inside a deleted range, at any nesting depth. The two branches of
/// a nested transaction exclude each other, so a key may appear in both.
///
/// etcd builds its intervals from `key` and `range_end` literally, so a from-key deletion
/// (`range_end` "\0") is the empty interval `[key, "\0")` to this check, and a put after it
/// is allowed (and applied after the deletion); so it is here.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Bytes>, Vec<KeyRange>), EtcdError> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) if d.range_end.as_ref() != [0] => {
                Some(KeyRange::new(&d.key, &d.range_end))
            }
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &Bytes| dels.iter().any(|r| r.contains(k));
    let mut puts: HashSet<Bytes> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: Bytes::from_static(k.as_bytes()),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &'static str, end: &'static str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from_static(k.as_bytes()),
                range_end: Bytes::from_static(end.as_bytes()),
                prev_kv: false,
            })),
        }
    }

    fn t(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
        TxnRequest {
            compare: vec![],
            success,
            failure,
        }
    }

    #[test]
    fn two_puts_of_one_key_are_a_duplicate() {
        let r = t(vec![put_op("a"), put_op("a")], vec![]);
        assert_eq!(txn(&r, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn a_put_inside_a_deleted_range_is_a_duplicate() {
        let r = t(vec![del_op("a", "c"), put_op("b")], vec![]);
        assert_eq!(txn(&r, 128), Err(EtcdError::DuplicateKey));
    }

    #[test]
    fn a_put_after_a_from_key_deletion_is_not_a_duplicate_as_in_etcd() {
        let r = t(vec![del_op("a", "\0"), put_op("b")], vec![]);
        assert_eq!(txn(&r, 128), Ok(()));
        let nested = t(
            vec![
                RequestOp {
                    request: Some(Request::RequestTxn(t(vec![del_op("a", "\0")], vec![]))),
                },
                put_op("b"),
            ],
            vec![],
        );
        assert_eq!(txn(&nested, 128), Ok(()));
    }

    #[test]
    fn an_unknown_sort_order_is_accepted_but_an_unknown_target_is_not() {
        let r = |sort_order, sort_target| RangeRequest {
            key: Bytes::from_static(b"a"),
            sort_order,
            sort_target,
            ..Default::default()
        };
        assert_eq!(range(&r(7, 0)), Ok(()));
        assert_eq!(range(&r(-1, 1)), Ok(()));
        assert_eq!(range(&r(1, 5)), Err(EtcdError::InvalidSortOption));
        assert_eq!(range(&r(0, -1)), Err(EtcdError::InvalidSortOption));
    }

    #[test]
    fn the_two_branches_may_write_the_same_key() {
        let r = t(vec![put_op("a")], vec![put_op("a")]);
        assert_eq!(txn(&r, 128), Ok(()));
        let nested = t(
            vec![RequestOp {
                request: Some(Request::RequestTxn(t(vec![put_op("x")], vec![put_op("x")]))),
            }],
            vec![],
        );
        assert_eq!(txn(&nested, 128), Ok(()));
    }

    #[test]
    fn too_many_operations_are_refused() {
        let ops: Vec<RequestOp> = (0..3).map(|_| put_op("k")).collect();
        assert_eq!(txn(&t(ops, vec![]), 2), Err(EtcdError::TooManyOps));
    }

    #[test]
    fn an_empty_operation_is_key_not_found() {
        let r = t(vec![RequestOp { request: None }], vec![]);
        assert_eq!(txn(&r, 128), Err(EtcdError::KeyNotFound));
    }
}
