//! Linearizability of etcd-lite under crashes. Several clients run puts, linearizable gets
//! and compare-and-swap transactions on a handful of keys, spread over all members, while a
//! nemesis SIGKILLs the leader (and sometimes a follower) and restarts it. The recorded
//! history, ending with a final read of every key, is checked against a key-value register
//! model: any violation, including a lost acknowledged write, fails the test.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/linearizability.rs"]
mod linearizability;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{ClusterOptions, Flavor, ProcessCluster};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, compare, request_op,
};
use linearizability::{OpKind, OpResult, Operation, Verdict, check};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};

const KEYS: &[&str] = &["x", "y", "z"];
const CLIENTS: usize = 6;
const RUN: Duration = Duration::from_secs(6);
const OP_TIMEOUT: Duration = Duration::from_secs(2);

fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_string())
        .expect("endpoint")
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy()
}

fn value_of(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Runs one operation; any error or timeout means the outcome is unknown.
async fn perform(kv: &mut KvClient<Channel>, key: &str, kind: &OpKind) -> OpResult {
    let key_bytes = Bytes::copy_from_slice(key.as_bytes());
    let call = async {
        match kind {
            OpKind::Get => {
                let resp = kv
                    .range(RangeRequest {
                        key: key_bytes,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Ok::<_, tonic::Status>(OpResult::Get(
                    resp.kvs.first().and_then(|kv| value_of(&kv.value)),
                ))
            }
            OpKind::Put { value } => {
                kv.put(PutRequest {
                    key: key_bytes,
                    value: value.to_string().into(),
                    ..Default::default()
                })
                .await?;
                Ok(OpResult::Put)
            }
            OpKind::Cas { expected, new } => {
                let compare = match expected {
                    Some(v) => Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: key_bytes.clone(),
                        target_union: Some(compare::TargetUnion::Value(v.to_string().into())),
                        range_end: Bytes::new(),
                    },
                    None => Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Version as i32,
                        key: key_bytes.clone(),
                        target_union: Some(compare::TargetUnion::Version(0)),
                        range_end: Bytes::new(),
                    },
                };
                let resp = kv
                    .txn(TxnRequest {
                        compare: vec![compare],
                        success: vec![RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: key_bytes,
                                value: new.to_string().into(),
                                ..Default::default()
                            })),
                        }],
                        failure: vec![],
                    })
                    .await?
                    .into_inner();
                Ok(OpResult::Cas(resp.succeeded))
            }
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Ok(Ok(result)) => result,
        _ => OpResult::Unknown,
    }
}

/// One client: random operations on random keys until `stop`, moving to another member
/// whenever its current one fails.
async fn client(
    id: usize,
    seed: u64,
    urls: Vec<String>,
    start: Instant,
    stop: Instant,
) -> Vec<Operation> {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64 * 0x9e37_79b9));
    let mut member = id % urls.len();
    let mut kv = KvClient::new(channel(&urls[member]));
    let mut history = Vec::new();
    let mut counter = 0u64;
    let mut last_seen: Option<u64> = None;
    while Instant::now() < stop {
        let key = KEYS[rng.random_range(0..KEYS.len())];
        counter += 1;
        let unique = ((id as u64 + 1) << 32) | counter;
        let kind = match rng.random_range(0..10) {
            0..=3 => OpKind::Get,
            4..=6 => OpKind::Put { value: unique },
            _ => OpKind::Cas {
                expected: if rng.random_bool(0.2) {
                    None
                } else {
                    last_seen
                },
                new: unique,
            },
        };
        let call = start.elapsed().as_nanos() as u64;
        let result = perform(&mut kv, key, &kind).await;
        let ret = start.elapsed().as_nanos() as u64;
        if let OpResult::Get(v) = result {
            last_seen = v;
        }
        if result == OpResult::Unknown {
            member = (member + 1) % urls.len();
            kv = KvClient::new(channel(&urls[member]));
        }
        history.push(Operation {
            client: id,
            key: key.to_string(),
            kind,
            call,
            ret,
            result,
        });
    }
    history
}

async fn run_seed(seed: u64) {
    let lite = Flavor::EtcdLite(env!("CARGO_BIN_EXE_flotilla").into());
    let mut c = ProcessCluster::start(ClusterOptions::new(3, lite))
        .await
        .expect("cluster starts");
    let urls = c.client_urls();
    let start = Instant::now();
    let stop = start + RUN;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, urls.clone(), start, stop)))
        .collect();

    // The nemesis: crash the leader (or sometimes a follower) and restart it from disk, or
    // freeze the leader (SIGSTOP) while the others elect a new one and thaw it, so that for
    // a moment it still believes it leads: a stale read there is a violation.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut crashes = 0;
    let mut freezes = 0;
    while Instant::now() + Duration::from_millis(1500) < stop {
        let leader = c.leader().await;
        let pause = Duration::from_millis(rng.random_range(300..900));
        match (leader, rng.random_range(0..4)) {
            (Some(l), 0) => {
                c.pause(l).expect("freeze the leader");
                freezes += 1;
                tokio::time::sleep(pause + Duration::from_millis(600)).await;
                c.resume(l).expect("thaw the leader");
            }
            (Some(l), 1 | 2) => {
                c.kill(l);
                crashes += 1;
                tokio::time::sleep(pause).await;
                c.restart(l).expect("restart");
            }
            _ => {
                let victim = rng.random_range(0..3);
                c.kill(victim);
                crashes += 1;
                tokio::time::sleep(pause).await;
                c.restart(victim).expect("restart");
            }
        }
        c.wait_ready(Duration::from_secs(20))
            .await
            .expect("cluster recovers");
    }

    let mut history: Vec<Operation> = Vec::new();
    for h in clients {
        history.extend(h.await.expect("client"));
    }
    // Final linearizable reads, after every client finished: they pin down what survived.
    c.wait_ready(Duration::from_secs(20))
        .await
        .expect("cluster settles");
    let mut kv = KvClient::new(c.channel(0));
    for key in KEYS {
        let call = start.elapsed().as_nanos() as u64;
        let result = perform(&mut kv, key, &OpKind::Get).await;
        assert_ne!(result, OpResult::Unknown, "final read of {key} failed");
        history.push(Operation {
            client: CLIENTS,
            key: key.to_string(),
            kind: OpKind::Get,
            call,
            ret: start.elapsed().as_nanos() as u64,
            result,
        });
    }

    let acked_writes = history
        .iter()
        .filter(|o| matches!(o.result, OpResult::Put | OpResult::Cas(true)))
        .count();
    let unknown = history
        .iter()
        .filter(|o| o.result == OpResult::Unknown)
        .count();
    eprintln!(
        "seed {seed}: {} operations, {acked_writes} acknowledged writes, {unknown} unknown outcomes, {crashes} crashes, {freezes} freezes",
        history.len()
    );
    assert!(
        crashes + freezes >= 3,
        "the nemesis should have struck several times"
    );
    assert!(
        acked_writes >= 50,
        "too few writes got through to mean anything"
    );
    let verdict = check(&history);
    assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_leader_crashes_are_linearizable_seed_1() {
    run_seed(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_leader_crashes_are_linearizable_seed_2() {
    run_seed(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_leader_crashes_are_linearizable_seed_3() {
    run_seed(3).await;
}
