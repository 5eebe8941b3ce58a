//! Scheduler benchmark, in the shape of Kubernetes' scheduler_perf: simulated nodes are
//! plain Node objects (4 cpu, 32 GiB, 110 pods, Ready; no agent) and every pod asks for
//! 100m cpu and 500Mi memory (scheduler_perf's default pod).
//!
//! `cargo bench -p flotilla-cli --bench scheduler_bench`, tuned by environment variables:
//! - `PODS` (10000): pods scheduled in each run.
//! - `ALGO_NODES` (`500,1000,5000`): cluster sizes for the algorithm alone, in-process:
//!   the cache, snapshot, filters, scores and the assumption, pod after pod, no API.
//! - `E2E` (`embedded:500,embedded:1000,embedded:5000,lite3:5000`): runs end to end,
//!   `store:nodes`. `flotilla server` runs as its own process with the scheduler inside
//!   (embedded store, or a 3-member etcd-lite cluster of separate processes); the nodes are
//!   created first, then 64 clients create the pods flat out while a watch notes when each
//!   pod is first seen bound (a watch selecting `spec.nodeName!=`). A pod's latency is from its create being sent to its binding
//!   being observed; throughput is pods over the time from the first create to the last
//!   binding observed.
//!
//! The run ends with one `RESULT bench=scheduler …` line; it exits non-zero when a pod is
//! not bound within two minutes.

#[path = "../support/api.rs"]
mod api;
#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/inproc.rs"]
mod inproc;
#[path = "../support/server_process.rs"]
mod server_process;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::rref;
use cluster::{ClusterOptions, Flavor, ProcessCluster};
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Node, Pod};
use scheduler::cache::{Cache, Snapshot};
use scheduler::plugins::node_resources_fit::Strategy;
use scheduler::pod_info::PodInfo;
use scheduler::profile::Profile;
use serde_json::{Value, json};
use server_process::{ServerProcess, hist, knob, ms};

const CLIENTS: usize = 64;
const CLIENTS_PER_CHANNEL: usize = 8;
const SENT_AT: &str = "bench.flotilla.io/sent-at-us";

fn sim_node(i: usize) -> Value {
    let name = format!("node-{i:05}");
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

fn bench_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "pause:3.9",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    })
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The algorithm alone: returns (pods/s, p99 µs, mean µs per pod).
fn algorithm(nodes: usize, pods: usize) -> (f64, u64, f64) {
    let mut cache = Cache::default();
    for i in 0..nodes {
        let n: Node = serde_json::from_value(sim_node(i)).expect("node");
        cache.upsert_node(Arc::new(n));
    }
    let pods: Vec<Arc<Pod>> = (0..pods)
        .map(|i| Arc::new(serde_json::from_value(bench_pod(&format!("p-{i}"))).expect("pod")))
        .collect();
    let profile = Profile::default_with(Strategy::LeastAllocated);
    let mut snapshot = Snapshot::default();
    let mut h = hist();
    let start = Instant::now();
    for (i, pod) in pods.iter().enumerate() {
        let t = Instant::now();
        cache.update_snapshot(&mut snapshot);
        let info = PodInfo::new(pod.clone());
        let node = profile
            .schedule(&info, snapshot.nodes())
            .expect("the cluster has room");
        cache.assume(&format!("default/p-{i}"), info, &node);
        let _ = h.record(t.elapsed().as_nanos().max(1) as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = pods.len() as f64;
    (
        n / elapsed,
        h.value_at_quantile(0.99) / 1000,
        elapsed * 1e6 / n,
    )
}

struct E2e {
    pods_per_s: f64,
    create_per_s: f64,
    latency: Histogram<u64>,
    unbound: usize,
}

async fn end_to_end(store: &str, nodes: usize, pods: usize) -> E2e {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = None;
    let endpoints = match store {
        "embedded" => Vec::new(),
        "lite3" => {
            let lite = Flavor::EtcdLite(env!("CARGO_BIN_EXE_flotilla").into());
            let c = ProcessCluster::start(ClusterOptions {
                heartbeat_ms: 100,
                election_ms: 1000,
                ..ClusterOptions::new(3, lite)
            })
            .await
            .expect("etcd-lite cluster starts");
            let urls = c.client_urls();
            cluster = Some(c);
            urls
        }
        other => panic!("unknown store {other:?} (embedded, lite3)"),
    };
    let server = ServerProcess::start(&dir.path().join("server"), &endpoints, &[]).await;
    let mut conns = Vec::new();
    for _ in 0..CLIENTS.div_ceil(CLIENTS_PER_CHANNEL) {
        conns.push(server.client().await);
    }

    // The nodes, 64 creators at a time.
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let c = conns[w % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..nodes).step_by(CLIENTS) {
                c.create("v1", "nodes", "", &sim_node(i))
                    .await
                    .expect("node");
            }
        }));
    }
    for t in tasks {
        t.await.expect("node creator");
    }

    // A watch from now on notes each pod's first binding.
    let watcher = server.client().await;
    // Only bound pods: a pod enters the selection (ADDED) when it is bound.
    let mut watch = watcher
        .watch_from_now(rref("v1", "pods", "default", ""), "spec.nodeName!=")
        .await;
    let follower = tokio::spawn(async move {
        let mut bound: HashMap<String, ()> = HashMap::new();
        let mut latency = hist();
        let mut last = Instant::now();
        while bound.len() < pods {
            let Ok(Some(ev)) = watch.next(Duration::from_secs(120)).await else {
                break;
            };
            let obj = &ev.object;
            if obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
                continue;
            }
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if bound.insert(name.to_string(), ()).is_none() {
                last = Instant::now();
                let sent: u64 = obj["metadata"]["annotations"][SENT_AT]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let _ = latency.record(now_us().saturating_sub(sent).max(1));
            }
        }
        (bound.len(), latency, last)
    });

    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CLIENTS {
        let c = conns[w % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..pods).step_by(CLIENTS) {
                let mut p = bench_pod(&format!("p-{i}"));
                p["metadata"]["annotations"] = json!({SENT_AT: now_us().to_string()});
                c.create("v1", "pods", "default", &p).await.expect("pod");
            }
        }));
    }
    for t in tasks {
        t.await.expect("pod creator");
    }
    let created = start.elapsed().as_secs_f64();
    let (bound, latency, last) = follower.await.expect("watch follower");
    let elapsed = last.duration_since(start).as_secs_f64();
    server.stop();
    drop(cluster);
    E2e {
        pods_per_s: bound as f64 / elapsed,
        create_per_s: pods as f64 / created,
        latency,
        unbound: pods - bound,
    }
}

fn main() -> ExitCode {
    let pods: usize = knob("PODS", 10_000);
    let mut results = vec!["bench=scheduler".to_string(), format!("pods={pods}")];
    let algo: String = knob("ALGO_NODES", "500,1000,5000".to_string());
    for n in algo.split(',').filter(|s| !s.is_empty()) {
        let nodes: usize = n.parse().expect("ALGO_NODES holds numbers");
        let (rate, p99, mean) = algorithm(nodes, pods);
        println!("algorithm, {nodes} nodes: {rate:.0} pods/s, p99 {p99} µs, {mean:.1} µs per pod");
        results.push(format!("algo_{nodes}_pods_per_s={rate:.0}"));
        results.push(format!("algo_{nodes}_p99_us={p99}"));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ok = true;
    let e2e: String = knob(
        "E2E",
        "embedded:500,embedded:1000,embedded:5000,lite3:5000".to_string(),
    );
    for run in e2e.split(',').filter(|s| !s.is_empty()) {
        let (store, nodes) = run
            .split_once(':')
            .and_then(|(s, n)| Some((s.to_string(), n.parse::<usize>().ok()?)))
            .expect("E2E holds store:nodes");
        let r = runtime.block_on(end_to_end(&store, nodes, pods));
        println!(
            "end to end, {store}, {nodes} nodes: {:.0} pods/s bound (creates {:.0}/s), latency p50 {:.1} ms p99 {:.1} ms, {} unbound",
            r.pods_per_s,
            r.create_per_s,
            ms(&r.latency, 0.5),
            ms(&r.latency, 0.99),
            r.unbound
        );
        results.push(format!(
            "e2e_{store}_{nodes}_pods_per_s={:.0}",
            r.pods_per_s
        ));
        results.push(format!(
            "e2e_{store}_{nodes}_p99_ms={:.1}",
            ms(&r.latency, 0.99)
        ));
        ok &= r.unbound == 0;
    }
    println!("RESULT {}", results.join(" "));
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
