//! Crashes of a three-member etcd-lite cluster, each member a real process: SIGKILL the
//! leader, a follower, or everyone; restart from disk; replace a member's disk. Whatever
//! happens, nothing a client was told is saved may be lost, and the members must end up
//! holding identical data.

#[path = "support/cluster.rs"]
mod cluster;

use std::collections::BTreeMap;
use std::time::Duration;

use cluster::{ClusterOptions, Flavor, ProcessCluster};
use flotilla_proto::etcdserverpb::HashKvRequest;

const WAIT: Duration = Duration::from_secs(30);

fn lite() -> Flavor {
    Flavor::EtcdLite(env!("CARGO_BIN_EXE_flotilla").into())
}

async fn start(opts: ClusterOptions) -> ProcessCluster {
    ProcessCluster::start(opts)
        .await
        .expect("etcd-lite cluster starts")
}

/// Writes `n` keys `prefix/i`, each through whichever running member accepts it; returns
/// what was acknowledged.
async fn write_keys(c: &ProcessCluster, prefix: &str, n: usize) -> BTreeMap<String, String> {
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let key = format!("{prefix}/{i:04}");
        let value = format!("v{i}");
        c.wait_until(WAIT, &format!("a member to accept {key}"), async || {
            let mut last = String::new();
            for m in c.running() {
                match c.put(m, key.as_bytes(), value.as_bytes()).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        })
        .await
        .expect("write accepted");
        acked.insert(key, value);
    }
    acked
}

/// Every acknowledged key is readable on member `i` (locally, once it has caught up).
async fn assert_has_all(c: &ProcessCluster, i: usize, acked: &BTreeMap<String, String>) {
    let (last_key, last_value) = acked.iter().next_back().expect("some writes");
    c.wait_until(WAIT, &format!("m{i} to catch up"), async || {
        match c.get(i, last_key.as_bytes(), true).await {
            Ok(Some(v)) if v == last_value.as_bytes() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("member catches up");
    for (k, v) in acked {
        let got = c.get(i, k.as_bytes(), true).await.expect("read");
        assert_eq!(
            got.as_deref(),
            Some(v.as_bytes()),
            "m{i} lost acknowledged write {k}"
        );
    }
}

/// The members that run hold identical key-value history.
async fn assert_converged(c: &ProcessCluster) {
    c.wait_until(WAIT, "members to hold identical data", async || {
        let mut seen = Vec::new();
        for i in c.running() {
            let mut m = c.maintenance(i).await;
            let resp = m
                .hash_kv(HashKvRequest { revision: 0 })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            seen.push((resp.header.map_or(0, |h| h.revision), resp.hash));
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            Ok(())
        } else {
            Err(format!("(revision, hash) per member: {seen:?}"))
        }
    })
    .await
    .expect("members converge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut c = start(ClusterOptions::new(3, lite())).await;
    let mut acked = write_keys(&c, "before", 30).await;
    let old = c.leader().await.expect("a leader");
    c.kill(old);
    let new = c.wait_leader(WAIT).await.expect("a new leader");
    assert_ne!(new, old);
    acked.extend(write_keys(&c, "during", 30).await);
    c.restart(old).expect("restart");
    acked.extend(write_keys(&c, "after", 10).await);
    for i in 0..3 {
        assert_has_all(&c, i, &acked).await;
    }
    assert_converged(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_follower_does_not_stop_writes_and_it_catches_up_on_restart() {
    let mut c = start(ClusterOptions::new(3, lite())).await;
    let leader = c.leader().await.expect("a leader");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    c.kill(follower);
    let acked = write_keys(&c, "k", 50).await;
    c.restart(follower).expect("restart");
    assert_has_all(&c, follower, &acked).await;
    assert_converged(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_member_at_once_keeps_every_acknowledged_write() {
    let mut c = start(ClusterOptions::new(3, lite())).await;
    // Writes in flight while the whole cluster dies: only acknowledged ones must survive.
    let writer = {
        let urls = c.client_urls();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..100_000u32 {
                let url = &urls[n as usize % urls.len()];
                let Ok(channel) =
                    tonic::transport::Endpoint::from_shared(url.clone()).map(|e| e.connect_lazy())
                else {
                    break;
                };
                let mut kv = flotilla_proto::etcdserverpb::kv_client::KvClient::new(channel);
                let req = flotilla_proto::etcdserverpb::PutRequest {
                    key: format!("crash/{n:06}").into_bytes().into(),
                    value: b"x".to_vec().into(),
                    ..Default::default()
                };
                match tokio::time::timeout(Duration::from_secs(2), kv.put(req)).await {
                    Ok(Ok(_)) => acked.push(n),
                    _ => break,
                }
            }
            acked
        })
    };
    c.wait_until(WAIT, "some writes to be acknowledged", async || {
        match c.get(0, b"crash/000050", false).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("writes flow");
    for i in 0..3 {
        c.kill(i);
    }
    let acked = writer.await.expect("writer");
    assert!(acked.len() >= 50);
    for i in 0..3 {
        c.restart(i).expect("restart");
    }
    c.wait_leader(WAIT)
        .await
        .expect("a leader after the restart");
    let expected: BTreeMap<String, String> = acked
        .iter()
        .map(|n| (format!("crash/{n:06}"), "x".to_string()))
        .collect();
    for i in 0..3 {
        assert_has_all(&c, i, &expected).await;
    }
    assert_converged(&c).await;
}

/// Small snapshots and a short log tail, so catching up needs a snapshot.
fn snapshotting() -> ClusterOptions {
    let mut opts = ClusterOptions::new(3, lite());
    opts.snapshot_count = Some(50);
    opts.extra_args = vec!["--experimental-snapshot-catchup-entries=5".into()];
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_catches_up_from_a_snapshot() {
    let mut c = start(snapshotting()).await;
    let leader = c.leader().await.expect("a leader");
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    c.kill(follower);
    let acked = write_keys(&c, "far", 150).await;
    c.restart(follower).expect("restart");
    assert_has_all(&c, follower, &acked).await;
    assert!(
        c.log_tail(follower, 200)
            .contains("restoring from a leader's snapshot"),
        "the follower should have caught up from a snapshot:\n{}",
        c.log_tail(follower, 40)
    );
    assert_converged(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_was_wiped_rejoins_from_a_snapshot() {
    let mut c = start(snapshotting()).await;
    let acked = write_keys(&c, "wipe", 120).await;
    let leader = c.leader().await.expect("a leader");
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    c.kill(victim);
    c.wipe_and_rejoin(victim)
        .expect("rejoin with an empty disk");
    assert_has_all(&c, victim, &acked).await;
    assert!(
        c.log_tail(victim, 200)
            .contains("restoring from a leader's snapshot"),
        "the wiped member should have been sent a snapshot:\n{}",
        c.log_tail(victim, 40)
    );
    assert_converged(&c).await;
    // And it is a full member again: it survives its peers' restarts.
    let more = write_keys(&c, "later", 10).await;
    assert_has_all(&c, victim, &more).await;
}
