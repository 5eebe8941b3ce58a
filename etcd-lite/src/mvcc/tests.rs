//! Unit tests of the state machine's etcd semantics.

use bytes::Bytes;
use flotilla_proto::etcdlite::internal_request::Request;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest, compare, range_request, request_op,
    response_op,
};

use super::MvccError;
use super::requests::{WriteResponse, apply};
use super::store::MvccStore;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(store: &mut MvccStore, k: &str, v: &str) -> i64 {
    put_req(
        store,
        PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        },
    )
    .expect("put")
}

fn put_req(store: &mut MvccStore, p: PutRequest) -> Result<i64, MvccError> {
    apply(store, &Request::Put(p)).map(|(_, rev)| rev)
}

fn get(store: &MvccStore, k: &str, rev: i64) -> Option<String> {
    let resp = store
        .range(&RangeRequest {
            key: b(k),
            revision: rev,
            ..Default::default()
        })
        .expect("range");
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

fn keys(resp: &flotilla_proto::etcdserverpb::RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

#[test]
fn each_write_advances_the_revision_and_versions_count_modifications() {
    let mut s = MvccStore::default();
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    let kv = s.get(b"a").expect("a exists");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(get(&s, "a", 2).as_deref(), Some("1"));
}

#[test]
fn deleting_a_missing_key_does_not_advance_the_revision() {
    let mut s = MvccStore::default();
    put(&mut s, "a", "1");
    let (resp, rev) = apply(
        &mut s,
        &Request::DeleteRange(DeleteRangeRequest {
            key: b("zz"),
            ..Default::default()
        }),
    )
    .expect("delete");
    assert_eq!(rev, 2);
    assert!(matches!(resp, WriteResponse::DeleteRange(d) if d.deleted == 0));
}

#[test]
fn recreating_a_deleted_key_starts_a_new_generation() {
    let mut s = MvccStore::default();
    put(&mut s, "a", "1");
    apply(
        &mut s,
        &Request::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        }),
    )
    .expect("delete");
    put(&mut s, "a", "2");
    let kv = s.get(b"a").expect("a exists");
    assert_eq!((kv.create_revision, kv.version), (4, 1));
    assert_eq!(get(&s, "a", 3), None);
}

#[test]
fn prefix_ranges_count_everything_but_return_only_the_limit() {
    let mut s = MvccStore::default();
    for k in ["p/a", "p/b", "p/c", "q"] {
        put(&mut s, k, "v");
    }
    let resp = s
        .range(&RangeRequest {
            key: b("p/"),
            range_end: b("p0"),
            limit: 2,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(keys(&resp), ["p/a", "p/b"]);
    assert_eq!(resp.count, 3);
    assert!(resp.more);
}

#[test]
fn sorting_by_a_target_without_an_order_means_ascending() {
    let mut s = MvccStore::default();
    put(&mut s, "b", "1");
    put(&mut s, "a", "2");
    let resp = s
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            sort_target: range_request::SortTarget::Mod as i32,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(keys(&resp), ["b", "a"]);
    let resp = s
        .range(&RangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            sort_order: range_request::SortOrder::Descend as i32,
            limit: 1,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(keys(&resp), ["b"]);
}

#[test]
fn reads_below_the_compacted_revision_fail_and_above_the_head_too() {
    let mut s = MvccStore::default();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    put(&mut s, "a", "3");
    apply(
        &mut s,
        &Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    )
    .expect("compact");
    assert_eq!(get(&s, "a", 3).as_deref(), Some("2"));
    let err = s.range(&RangeRequest {
        key: b("a"),
        revision: 2,
        ..Default::default()
    });
    assert_eq!(err.err(), Some(MvccError::Compacted));
    let err = s.range(&RangeRequest {
        key: b("a"),
        revision: 9,
        ..Default::default()
    });
    assert_eq!(err.err(), Some(MvccError::FutureRevision));
    let again = apply(
        &mut s,
        &Request::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }),
    );
    assert_eq!(again.err(), Some(MvccError::Compacted));
}

fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    u: compare::TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: b(key),
        target_union: Some(u),
        range_end: Bytes::new(),
    }
}

fn put_op(k: &str, v: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })),
    }
}

#[test]
fn compare_and_swap_takes_the_matching_branch() {
    let mut s = MvccStore::default();
    put(&mut s, "a", "1");
    let txn = |expected: i64| TxnRequest {
        compare: vec![cmp(
            "a",
            compare::CompareTarget::Mod,
            compare::CompareResult::Equal,
            compare::TargetUnion::ModRevision(expected),
        )],
        success: vec![put_op("a", "swapped")],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: b("a"),
                ..Default::default()
            })),
        }],
    };
    let (resp, rev) = apply(&mut s, &Request::Txn(txn(2))).expect("txn");
    assert!(matches!(resp, WriteResponse::Txn(ref t) if t.succeeded));
    assert_eq!(rev, 3);
    let (resp, rev) = apply(&mut s, &Request::Txn(txn(2))).expect("txn");
    assert_eq!(
        rev, 3,
        "a failed compare with a read-only branch changes nothing"
    );
    let WriteResponse::Txn(t) = resp else {
        panic!("not a txn response")
    };
    assert!(!t.succeeded);
    assert!(matches!(
        &t.responses[0].response,
        Some(response_op::Response::ResponseRange(r)) if r.kvs[0].value == b("swapped")
    ));
}

#[test]
fn value_compares_on_missing_keys_fail_but_version_compares_see_zero() {
    let mut s = MvccStore::default();
    let txn = |c: Compare| TxnRequest {
        compare: vec![c],
        success: vec![put_op("x", "1")],
        failure: vec![],
    };
    let value = cmp(
        "missing",
        compare::CompareTarget::Value,
        compare::CompareResult::NotEqual,
        compare::TargetUnion::Value(b("anything")),
    );
    let (resp, _) = apply(&mut s, &Request::Txn(txn(value))).expect("txn");
    assert!(matches!(resp, WriteResponse::Txn(t) if !t.succeeded));
    let version = cmp(
        "missing",
        compare::CompareTarget::Version,
        compare::CompareResult::Equal,
        compare::TargetUnion::Version(0),
    );
    let (resp, _) = apply(&mut s, &Request::Txn(txn(version))).expect("txn");
    assert!(matches!(resp, WriteResponse::Txn(t) if t.succeeded));
}

#[test]
fn a_txn_with_an_unknown_lease_changes_nothing() {
    let mut s = MvccStore::default();
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: b("b"),
                    value: b("2"),
                    lease: 42,
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    assert_eq!(
        apply(&mut s, &Request::Txn(txn)).err(),
        Some(MvccError::LeaseNotFound)
    );
    assert_eq!(s.revision(), 1);
    assert!(s.get(b"a").is_none());
}

#[test]
fn reads_inside_a_txn_see_its_own_writes() {
    let mut s = MvccStore::default();
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            put_op("a", "1"),
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b("a"),
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
    };
    let (resp, _) = apply(&mut s, &Request::Txn(txn)).expect("txn");
    let WriteResponse::Txn(t) = resp else {
        panic!("not a txn response")
    };
    assert!(matches!(
        &t.responses[1].response,
        Some(response_op::Response::ResponseRange(r)) if r.kvs.len() == 1
    ));
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut s = MvccStore::default();
    apply(
        &mut s,
        &Request::LeaseGrant(LeaseGrantRequest { ttl: 10, id: 7 }),
    )
    .expect("grant");
    for k in ["a", "b"] {
        put_req(
            &mut s,
            PutRequest {
                key: b(k),
                value: b("v"),
                lease: 7,
                ..Default::default()
            },
        )
        .expect("put");
    }
    put(&mut s, "c", "v");
    assert_eq!(s.lease(7).map(|l| l.keys.len()), Some(2));
    let (_, rev) =
        apply(&mut s, &Request::LeaseRevoke(LeaseRevokeRequest { id: 7 })).expect("revoke");
    assert_eq!(rev, 5);
    assert!(s.get(b"a").is_none() && s.get(b"b").is_none() && s.get(b"c").is_some());
    let changes = s.changes_between(5, 5, 10);
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| c.version.tombstone && c.prev.is_some())
    );
}

#[test]
fn ignore_value_on_a_missing_key_is_key_not_found() {
    let mut s = MvccStore::default();
    let err = put_req(
        &mut s,
        PutRequest {
            key: b("a"),
            ignore_value: true,
            ..Default::default()
        },
    );
    assert_eq!(err.err(), Some(MvccError::KeyNotFound));
}

#[test]
fn change_log_replays_puts_and_deletes_with_previous_values() {
    let mut s = MvccStore::default();
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    apply(
        &mut s,
        &Request::DeleteRange(DeleteRangeRequest {
            key: b("a"),
            ..Default::default()
        }),
    )
    .expect("delete");
    let changes = s.changes_between(3, 10, 100);
    let events: Vec<_> = changes.iter().map(|c| c.to_event()).collect();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].prev_kv.as_ref().map(|kv| kv.value.clone()),
        Some(b("1"))
    );
    assert_eq!(events[1].kv.as_ref().map(|kv| kv.mod_revision), Some(4));
    assert_eq!(events[1].r#type, 1);
}
