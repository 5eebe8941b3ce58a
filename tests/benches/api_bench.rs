//! API server benchmark: `flotilla server` as its own process, with its embedded store and
//! against a 3-member etcd-lite cluster, measured through the gRPC API.
//!
//! `cargo bench -p flotilla-cli --bench api_bench`, tuned by environment variables:
//! - `SETUPS` (`embedded,lite3`): which stores to run on.
//! - `BENCH_SECONDS` (10): length of the create phase; `CLIENTS` (64): concurrent creators.
//! - `PODS` (10000): pods that exist for the get/list phase and the memory figure.
//! - `WATCHERS` (1000), `WATCH_RATE` (50 writes/s), `WATCH_SECONDS` (5): the fan-out phase,
//!   where one writer creates pods while every watcher follows them; latency is from the
//!   writer sending a create to a watcher receiving its ADDED event.
//!
//! Memory is the server process's VmRSS from /proc. With the embedded store that includes
//! the store; with `lite3` the process holds the API server alone.

#[path = "../support/api.rs"]
mod api;
#[path = "../support/cluster.rs"]
mod cluster;
#[path = "../support/inproc.rs"]
mod inproc;
#[path = "../support/server_process.rs"]
mod server_process;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Client, rref};
use cluster::{ClusterOptions, Flavor, ProcessCluster};
use flotilla_proto::api::{ListRequest, WatchRequest};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use server_process::{ServerProcess, hist, knob, ms, rss_mib};

/// Clients sharing one gRPC connection, as a real client library multiplexes them.
const CLIENTS_PER_CHANNEL: usize = 8;
/// Watchers sharing one connection in the fan-out phase.
const WATCHERS_PER_CHANNEL: usize = 64;
/// The namespace of the get/list phase: exactly PODS pods, nothing else.
const LIST_NS: &str = "list";

fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
    })
}

/// Creates pods flat out from `clients` tasks until `until` says stop; returns latencies
/// and errors.
async fn create_phase(
    server: &ServerProcess,
    clients: usize,
    duration: Duration,
    prefix: &str,
) -> (Histogram<u64>, u64, Duration) {
    let channels = clients.div_ceil(CLIENTS_PER_CHANNEL);
    let mut conns = Vec::new();
    for _ in 0..channels {
        conns.push(server.client().await);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let c = conns[i % channels].clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut errors = 0u64;
            let mut n = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                match c
                    .create(
                        "v1",
                        "pods",
                        "default",
                        &pod("default", &format!("{prefix}-{i}-{n}")),
                    )
                    .await
                {
                    Ok(_) => {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    }
                    Err(_) => errors += 1,
                }
                n += 1;
            }
            (h, errors)
        }));
    }
    let mut all = hist();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.expect("creator task");
        all.add(h).expect("same bounds");
        errors += e;
    }
    (all, errors, start.elapsed())
}

async fn count_pods(c: &Client) -> usize {
    c.list_with(
        rref("v1", "pods", LIST_NS, ""),
        ListRequest {
            resource_version: "0".into(),
            ..Default::default()
        },
    )
    .await
    .expect("list pods")
    .items
    .len()
}

async fn timed<F, Fut>(reps: usize, mut f: F) -> Histogram<u64>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut h = hist();
    for i in 0..reps {
        let t = Instant::now();
        f(i).await;
        let _ = h.record(t.elapsed().as_micros() as u64);
    }
    h
}

/// The fan-out phase: latency histogram of every delivery, deliveries seen and expected.
async fn fanout_phase(
    server: &ServerProcess,
    watchers: usize,
    rate: u64,
    seconds: u64,
) -> (Histogram<u64>, u64, u64, f64) {
    let admin = server.client().await;
    let _ = admin
        .create(
            "v1",
            "namespaces",
            "",
            &json!({"metadata": {"name": "fanout"}}),
        )
        .await;
    let start_rv = admin
        .list("v1", "pods", "fanout")
        .await
        .expect("list")
        .resource_version;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let mut conns = Vec::new();
    for _ in 0..watchers.div_ceil(WATCHERS_PER_CHANNEL) {
        conns.push(server.client().await);
    }
    let total = rate * seconds;
    let mut tasks = Vec::new();
    for i in 0..watchers {
        let c = conns[i / WATCHERS_PER_CHANNEL].clone();
        let mut w = c
            .watch(
                rref("v1", "pods", "fanout", ""),
                WatchRequest {
                    resource_version: start_rv.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("watch");
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = hist();
            let mut seen = 0u64;
            while seen < total {
                let Ok(Ok(Some(msg))) =
                    tokio::time::timeout(Duration::from_secs(30), w.stream.message()).await
                else {
                    break;
                };
                let at = Instant::now();
                let obj: Value = serde_json::from_slice(&msg.object).unwrap_or_default();
                let name = obj["metadata"]["name"].as_str().unwrap_or_default();
                if let Some(t0) = sent.lock().expect("lock").get(name) {
                    let _ = h.record(at.duration_since(*t0).as_micros() as u64);
                    seen += 1;
                }
            }
            (h, seen)
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let mut rss_peak: f64 = 0.0;
    for n in 0..total {
        tick.tick().await;
        let name = format!("f-{n}");
        sent.lock()
            .expect("lock")
            .insert(name.clone(), Instant::now());
        admin
            .create("v1", "pods", "fanout", &pod("fanout", &name))
            .await
            .expect("fan-out create");
        if n % rate.max(1) == 0 {
            rss_peak = rss_peak.max(rss_mib(server.pid()));
        }
    }
    let mut all = hist();
    let mut seen = 0;
    for t in tasks {
        let (h, s) = t.await.expect("watcher task");
        all.add(h).expect("same bounds");
        seen += s;
    }
    (
        all,
        seen,
        total * watchers as u64,
        rss_peak.max(rss_mib(server.pid())),
    )
}

async fn run_setup(name: &str, results: &mut Vec<(String, String)>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = None;
    let endpoints = match name {
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
        other => panic!("unknown setup {other:?} (embedded, lite3)"),
    };
    let server =
        ServerProcess::start(&dir.path().join("server"), &endpoints, &["--no-scheduler"]).await;
    let clients: usize = knob("CLIENTS", 64);
    let seconds: u64 = knob("BENCH_SECONDS", 10);
    let pods: usize = knob("PODS", 10_000);

    let c = server.client().await;
    c.create(
        "v1",
        "namespaces",
        "",
        &json!({"metadata": {"name": LIST_NS}}),
    )
    .await
    .expect("the list namespace");
    let mut have = count_pods(&c).await;
    while have < pods {
        let _ = create_phase_count(&server, clients, pods - have, &format!("fill{have}")).await;
        have = count_pods(&c).await;
    }
    let names: Vec<String> = c
        .list_with(
            rref("v1", "pods", LIST_NS, ""),
            ListRequest {
                resource_version: "0".into(),
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .expect("list")
        .items
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let rss_pods = rss_mib(server.pid());
    let get_store = timed(500, |i| {
        let (c, n) = (c.clone(), names[i % names.len()].clone());
        async move {
            c.get("v1", "pods", LIST_NS, &n).await.expect("get");
        }
    })
    .await;
    let get_cache = timed(500, |i| {
        let (c, n) = (c.clone(), names[i % names.len()].clone());
        async move {
            c.get_at(rref("v1", "pods", LIST_NS, &n), "0")
                .await
                .expect("get from the cache");
        }
    })
    .await;
    let list = |rv: &'static str, limit: i64| {
        let c = c.clone();
        move |_| {
            let c = c.clone();
            async move {
                let mut token = String::new();
                loop {
                    let page = c
                        .list_with(
                            rref("v1", "pods", LIST_NS, ""),
                            ListRequest {
                                resource_version: rv.into(),
                                limit,
                                continue_token: token,
                                ..Default::default()
                            },
                        )
                        .await
                        .expect("list");
                    token = page.continue_token;
                    if token.is_empty() {
                        break;
                    }
                }
            }
        }
    };
    let list_store = timed(5, list("", 0)).await;
    let list_cache = timed(5, list("0", 0)).await;
    let list_paged = timed(5, list("", 500)).await;
    println!(
        "{name:>9} get      store p50 {:6.2} ms p99 {:6.2} ms | cache p50 {:6.2} ms p99 {:6.2} ms",
        ms(&get_store, 0.5),
        ms(&get_store, 0.99),
        ms(&get_cache, 0.5),
        ms(&get_cache, 0.99)
    );
    println!(
        "{name:>9} list {have} pods: store p50 {:7.1} ms | cache p50 {:7.1} ms | 500-item pages p50 {:7.1} ms | server RSS {rss_pods:.0} MiB",
        ms(&list_store, 0.5),
        ms(&list_cache, 0.5),
        ms(&list_paged, 0.5)
    );

    let (h, errors, elapsed) =
        create_phase(&server, clients, Duration::from_secs(seconds), "c").await;
    let rate = h.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{name:>9} create   {clients} clients: {rate:8.0} pods/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  errors {errors}",
        ms(&h, 0.5),
        ms(&h, 0.99),
        h.max() as f64 / 1000.0
    );
    let watchers: usize = knob("WATCHERS", 1000);
    let wrate: u64 = knob("WATCH_RATE", 50);
    let wsecs: u64 = knob("WATCH_SECONDS", 5);
    let (fh, seen, expected, rss_fanout) = fanout_phase(&server, watchers, wrate, wsecs).await;
    println!(
        "{name:>9} fan-out  {watchers} watchers, {wrate} writes/s: p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  delivered {seen}/{expected}  server RSS {rss_fanout:.0} MiB",
        ms(&fh, 0.5),
        ms(&fh, 0.99),
        fh.max() as f64 / 1000.0
    );
    for (k, v) in [
        ("creates_per_s", format!("{rate:.0}")),
        ("create_p50_ms", format!("{:.2}", ms(&h, 0.5))),
        ("create_p99_ms", format!("{:.2}", ms(&h, 0.99))),
        ("create_errors", errors.to_string()),
        ("get_p99_ms", format!("{:.2}", ms(&get_store, 0.99))),
        (
            "list10k_store_p50_ms",
            format!("{:.1}", ms(&list_store, 0.5)),
        ),
        (
            "list10k_cache_p50_ms",
            format!("{:.1}", ms(&list_cache, 0.5)),
        ),
        ("fanout_p50_ms", format!("{:.2}", ms(&fh, 0.5))),
        ("fanout_p99_ms", format!("{:.2}", ms(&fh, 0.99))),
        ("fanout_lost", (expected - seen).to_string()),
        ("rss_10k_pods_mib", format!("{rss_pods:.0}")),
        ("rss_fanout_mib", format!("{rss_fanout:.0}")),
    ] {
        results.push((format!("{name}_{k}"), v));
    }
    server.stop();
    drop(cluster);
}

/// Creates `total` pods in the list namespace from `clients` tasks.
async fn create_phase_count(
    server: &ServerProcess,
    clients: usize,
    total: usize,
    prefix: &str,
) -> u64 {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let conns: Vec<Client> = {
        let mut v = Vec::new();
        for _ in 0..clients.div_ceil(CLIENTS_PER_CHANNEL) {
            v.push(server.client().await);
        }
        v
    };
    let mut tasks = Vec::new();
    for i in 0..clients {
        let c = conns[i % conns.len()].clone();
        let prefix = prefix.to_string();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= total {
                    break;
                }
                if c.create(
                    "v1",
                    "pods",
                    LIST_NS,
                    &pod(LIST_NS, &format!("{prefix}-{n}")),
                )
                .await
                .is_err()
                {
                    errors += 1;
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await.expect("creator");
    }
    errors
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let setups: String = knob("SETUPS", "embedded,lite3".to_string());
        let mut results = vec![("bench".to_string(), "apiserver".to_string())];
        for s in setups.split(',').filter(|s| !s.is_empty()) {
            run_setup(s, &mut results).await;
        }
        let line: Vec<String> = results.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("RESULT {}", line.join(" "));
    });
}
