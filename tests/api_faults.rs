//! The API server on a 3-member etcd-lite cluster whose leader is SIGKILLed under load:
//! writes resume, nothing acknowledged is lost, and a watch that was open throughout
//! delivers every acknowledged change exactly once.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{ApiHarness, StoreSetup, rref};
use flotilla_proto::api::WatchRequest;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_store_leader_being_killed() {
    let mut h = ApiHarness::start(StoreSetup::EtcdLite3Processes, |_| {}).await;
    let c = h.client().await;
    let start = c
        .list("v1", "configmaps", "default")
        .await
        .expect("list")
        .resource_version;
    let mut watch = c
        .watch(
            rref("v1", "configmaps", "default", ""),
            WatchRequest {
                resource_version: start,
                ..Default::default()
            },
        )
        .await
        .expect("watch");

    let acked: Arc<Mutex<BTreeSet<String>>> = Default::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, acked, stop) = (c.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            loop {
                let name = format!("cm-{w}-{i}");
                i += 1;
                let obj = json!({"metadata": {"name": name}, "data": {"w": w.to_string()}});
                let create = c.create("v1", "configmaps", "default", &obj);
                tokio::select! {
                    _ = stop.notified() => return,
                    r = create => if r.is_ok() {
                        acked.lock().expect("lock").insert(name);
                    },
                }
            }
        }));
    }

    let count = |acked: &Arc<Mutex<BTreeSet<String>>>| acked.lock().expect("lock").len();
    inproc::wait_until(Duration::from_secs(20), "writes are acknowledged", || {
        let n = count(&acked);
        async move { (n >= 50).then_some(()) }
    })
    .await;
    let leader = h
        .processes()
        .wait_leader(Duration::from_secs(10))
        .await
        .expect("a leader");
    h.processes().kill(leader);
    let at_kill = count(&acked);
    let killed = Instant::now();
    inproc::wait_until(
        Duration::from_secs(30),
        "writes resume after the leader dies",
        || {
            let n = count(&acked);
            async move { (n >= at_kill + 50).then_some(()) }
        },
    )
    .await;
    let resumed_after = killed.elapsed();
    stop.notify_waiters();
    for w in writers {
        // A writer may be parked in a create; the notify above only wakes it in select.
        w.abort();
        let _ = w.await;
    }

    let acked = acked.lock().expect("lock").clone();
    let listed: BTreeSet<String> = c
        .list("v1", "configmaps", "default")
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let lost: Vec<&String> = acked.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged creates lost: {lost:?}");

    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acked.iter().all(|n| seen.contains_key(n)) {
        assert!(
            Instant::now() < deadline,
            "the watch missed acknowledged creates"
        );
        let ev = watch.next_change(Duration::from_secs(30)).await;
        if ev.kind == "ADDED" {
            let name = ev.object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *seen.entry(name).or_default() += 1;
        }
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "events delivered twice: {duplicated:?}"
    );
    eprintln!(
        "{} creates acknowledged; writes resumed {resumed_after:?} after the store leader was killed",
        acked.len()
    );
    h.shutdown().await;
}
