//! Network partitions and leader changes in a three-member etcd-lite cluster: a member cut
//! off from its peers (raft traffic dropped both ways) as the leader (it ends up in the
//! minority) or as a follower (the leader keeps its majority), and watches that follow the
//! store across a leader change.

#[path = "support/inproc.rs"]
mod inproc;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::watch_client::WatchClient;
use flotilla_proto::etcdserverpb::{
    HashKvRequest, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest, watch_request,
};
use inproc::{InProcCluster, wait_until};
use tonic::transport::Channel;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &str) -> Result<i64, tonic::Status> {
    let resp = kv
        .put(PutRequest {
            key: b(k),
            value: b(v),
            ..Default::default()
        })
        .await?;
    Ok(resp.into_inner().header.map_or(0, |h| h.revision))
}

async fn get(
    kv: &mut KvClient<Channel>,
    k: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let resp = kv
        .range(RangeRequest {
            key: b(k),
            serializable,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// Puts through whichever member accepts it, retrying through an election.
async fn put_anywhere(c: &InProcCluster, members: &[usize], k: &str, v: &str) -> i64 {
    wait_until(
        Duration::from_secs(10),
        &format!("{k}={v} is acknowledged"),
        || async {
            for &i in members {
                if let Ok(rev) = put(&mut c.kv(i), k, v).await {
                    return Some(rev);
                }
            }
            None
        },
    )
    .await
}

/// Waits until every listed member has applied the same revision, then compares hashes.
async fn assert_converged(c: &InProcCluster, members: &[usize]) {
    let hashes = wait_until(Duration::from_secs(10), "members converge", || async {
        let mut seen = Vec::new();
        for &i in members {
            let resp = c
                .maintenance(i)
                .hash_kv(HashKvRequest { revision: 0 })
                .await
                .ok()?
                .into_inner();
            seen.push((resp.header.map_or(0, |h| h.revision), resp.hash));
        }
        seen.windows(2).all(|w| w[0] == w[1]).then_some(seen)
    })
    .await;
    assert!(!hashes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_into_the_minority_steps_down_and_no_acknowledged_write_is_lost() {
    let c = InProcCluster::start(3).await;
    let old = c.leader().expect("a leader");
    put(&mut c.kv(old), "k", "before")
        .await
        .expect("write before the cut");

    c.isolate(old);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = c
        .wait_for_leader(|l| l != old, Duration::from_secs(10))
        .await;
    put_anywhere(&c, &[new], "k", "after").await;

    // The old leader must not serve a linearizable read (it would be stale) nor acknowledge
    // a write while it is cut off.
    let stale_read =
        tokio::time::timeout(Duration::from_secs(2), get(&mut c.kv(old), "k", false)).await;
    assert!(
        !matches!(stale_read, Ok(Ok(_))),
        "an isolated member answered a linearizable read: {stale_read:?}"
    );
    let mut kv_old = c.kv(old);
    let isolated_write = tokio::spawn(async move { put(&mut kv_old, "iso", "x").await });
    let early = tokio::time::timeout(Duration::from_secs(2), isolated_write).await;
    assert!(
        !matches!(early, Ok(Ok(Ok(_)))),
        "an isolated member acknowledged a write"
    );

    c.heal();
    wait_until(
        Duration::from_secs(10),
        "the old leader catches up",
        || async {
            (get(&mut c.kv(old), "k", true).await.ok()? == Some("after".into())).then_some(())
        },
    )
    .await;
    for i in others {
        assert_eq!(
            get(&mut c.kv(i), "k", false).await.expect("read"),
            Some("after".into())
        );
    }
    assert_converged(&c, &[0, 1, 2]).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_falls_behind_then_catches_up_without_unseating_the_leader() {
    let c = InProcCluster::start(3).await;
    let leader = c.leader().expect("a leader");
    let term_before = c
        .maintenance(leader)
        .status(flotilla_proto::etcdserverpb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .raft_term;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");

    c.isolate(follower);
    for n in 0..20 {
        put(&mut c.kv(leader), &format!("key{n}"), "v")
            .await
            .expect("the majority keeps writing");
    }
    assert_eq!(
        get(&mut c.kv(follower), "key19", true)
            .await
            .expect("serializable read"),
        None,
        "the cut-off follower cannot have the new writes"
    );
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        get(&mut c.kv(follower), "key19", false),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "a cut-off follower answered a linearizable read: {read:?}"
    );

    c.heal();
    wait_until(
        Duration::from_secs(10),
        "the follower catches up",
        || async {
            (get(&mut c.kv(follower), "key19", true).await.ok()? == Some("v".into())).then_some(())
        },
    )
    .await;
    // Pre-vote kept the returning follower from forcing an election.
    assert_eq!(c.leader(), Some(leader));
    let term_after = c
        .maintenance(leader)
        .status(flotilla_proto::etcdserverpb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .raft_term;
    assert_eq!(
        term_before, term_after,
        "the returning follower disrupted the leader"
    );
    assert_converged(&c, &[0, 1, 2]).await;
    c.shutdown().await;
}

/// Collects watch events for prefix `w/` from `start_rev` on member `i` until `stop` keys
/// have been seen or the stream breaks; returns (revision, value) pairs.
async fn watch_events(
    mut client: WatchClient<Channel>,
    start_rev: i64,
    out: tokio::sync::mpsc::UnboundedSender<(i64, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b("w/"),
                range_end: b("w0"),
                start_revision: start_rev,
                ..Default::default()
            },
        )),
    };
    if tx.send(create).await.is_err() {
        return;
    }
    let Ok(resp) = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut stream = resp.into_inner();
    while let Ok(Some(msg)) = stream.message().await {
        for e in msg.events {
            let kv = e.kv.unwrap_or_default();
            if out
                .send((
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.value).into_owned(),
                ))
                .is_err()
            {
                return;
            }
        }
    }
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_write_once_and_in_order_across_a_leader_change() {
    let mut c = InProcCluster::start(3).await;
    let leader = c.leader().expect("a leader");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watcher = tokio::spawn(watch_events(WatchClient::new(c.channel(follower)), 1, tx));

    let mut acked = Vec::new();
    for n in 0..30 {
        acked.push(put_anywhere(&c, &[leader], &format!("w/{}", n % 5), &format!("v{n}")).await);
    }
    c.stop(leader).await;
    let alive: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for n in 30..60 {
        acked.push(put_anywhere(&c, &alive, &format!("w/{}", n % 5), &format!("v{n}")).await);
    }
    let last = *acked.last().expect("writes");
    let mut seen: Vec<(i64, String)> = Vec::new();
    wait_until(
        Duration::from_secs(10),
        "the watcher sees the last write",
        || {
            while let Ok(e) = rx.try_recv() {
                seen.push(e);
            }
            let done = seen.last().is_some_and(|(r, _)| *r >= last);
            async move { done.then_some(()) }
        },
    )
    .await;
    let revs: Vec<i64> = seen.iter().map(|(r, _)| *r).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "events out of order or duplicated: {revs:?}"
    );
    let values: HashSet<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
    for n in 0..60 {
        assert!(
            values.contains(format!("v{n}").as_str()),
            "acknowledged write v{n} never reached the watcher"
        );
    }
    for rev in &acked {
        assert!(
            revs.contains(rev),
            "no event at acknowledged revision {rev}"
        );
    }
    watcher.abort();
    c.restart(leader).await;
    assert_converged(&c, &[0, 1, 2]).await;
    c.shutdown().await;
}
