//! The scheduler against a running API server: pods are bound to nodes that fit them,
//! a node is never overcommitted, and a pod that fits nowhere gets a FailedScheduling
//! Event saying why, then is placed once a node that fits appears.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use std::collections::HashMap;
use std::time::Duration;

use api::{ApiHarness, Client as JsonClient, StoreSetup};
use flotilla_client::ListParams;
use k8s_openapi::api::core::v1::{Node, Pod};
use rand::Rng;
use scheduler::resources::{Resources, node_allocatable, pod_requests};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    node_with(name, cpu, "4Gi", "True")
}

fn node_with(name: &str, cpu: &str, memory: &str, ready: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": ready}]
        }
    })
}

fn pod(name: &str, cpu: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x:1", "resources": {"requests": {"cpu": cpu}}}]}})
}

async fn node_of(c: &JsonClient, name: &str) -> Option<String> {
    c.get("v1", "pods", "default", name).await.ok()?["spec"]["nodeName"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_where_they_fit_and_told_why_when_nowhere() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    for n in ["n1", "n2"] {
        c.create("v1", "nodes", "", &node(n, "2"))
            .await
            .expect("node");
    }
    // Roomy, but reporting not ready: nothing goes there.
    c.create("v1", "nodes", "", &node_with("sick", "16", "4Gi", "False"))
        .await
        .expect("node");
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(scheduler::run(
        client,
        scheduler::SchedulerConfig::default(),
        stop_rx,
    ));

    for i in 0..4 {
        c.create("v1", "pods", "default", &pod(&format!("p{i}"), "1"))
            .await
            .expect("pod");
    }
    let mut placed = Vec::new();
    for i in 0..4 {
        let name = format!("p{i}");
        let n = inproc::wait_until(Duration::from_secs(10), "the pod is bound", || {
            let (c, name) = (c.clone(), name.clone());
            async move { node_of(&c, &name).await }
        })
        .await;
        placed.push(n);
    }
    for n in ["n1", "n2"] {
        assert_eq!(
            placed.iter().filter(|p| *p == n).count(),
            2,
            "two 1-cpu pods on each 2-cpu node: {placed:?}"
        );
    }

    c.create("v1", "pods", "default", &pod("big", "3"))
        .await
        .expect("pod");
    let event = inproc::wait_until(Duration::from_secs(10), "a FailedScheduling event", || {
        let c = c.clone();
        async move {
            let events = c.list("v1", "events", "default").await.ok()?;
            events
                .items
                .into_iter()
                .find(|e| e["involvedObject"]["name"] == "big" && e["reason"] == "FailedScheduling")
        }
    })
    .await;
    let why = "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }.";
    assert_eq!(event["message"], why);
    assert_eq!(event["type"], "Warning");
    let big = c.get("v1", "pods", "default", "big").await.expect("pod");
    let scheduled = big["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(scheduled["status"], "False", "{big}");
    assert_eq!(scheduled["reason"], "Unschedulable");
    assert_eq!(scheduled["message"], why);
    assert!(node_of(&c, "big").await.is_none());

    // A node that fits appears: the waiting pod is placed there.
    c.create("v1", "nodes", "", &node("n3", "4"))
        .await
        .expect("node");
    let n = inproc::wait_until(Duration::from_secs(10), "the big pod is bound", || {
        let c = c.clone();
        async move { node_of(&c, "big").await }
    })
    .await;
    assert_eq!(n, "n3");
    let big = c.get("v1", "pods", "default", "big").await.expect("pod");
    assert!(
        big["status"]["conditions"].as_array().is_some_and(|cs| cs
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")),
        "{big}"
    );
    stop.send_replace(true);
    task.await.expect("the scheduler stops");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_schedulers_only_the_leader_acts() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    c.create("v1", "nodes", "", &node("n1", "4"))
        .await
        .expect("node");
    let timing = flotilla_client::LeaderConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(800),
        retry_period: Duration::from_millis(100),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for id in ["s1", "s2"] {
        let client = h.admin_client();
        let cfg = scheduler::SchedulerConfig {
            leader_election: Some((id.to_string(), timing.clone())),
            ..Default::default()
        };
        tasks.push(tokio::spawn(scheduler::run(client, cfg, stop_rx.clone())));
    }
    c.create("v1", "pods", "default", &pod("p", "1"))
        .await
        .expect("pod");
    inproc::wait_until(Duration::from_secs(10), "the pod is bound", || {
        let c = c.clone();
        async move { node_of(&c, "p").await }
    })
    .await;
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "kube-system",
            "default-scheduler",
        )
        .await
        .expect("the lease");
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(holder == "s1" || holder == "s2", "{lease}");
    stop.send_replace(true);
    for t in tasks {
        t.await.expect("a scheduler stops");
    }
    h.shutdown().await;
}

/// Creates `count` pods named `<prefix>-<i>` from `make`, 16 at a time.
async fn create_pods(c: &JsonClient, prefix: &str, count: usize, make: impl Fn(String) -> Value) {
    let pods: Vec<Value> = (0..count).map(|i| make(format!("{prefix}-{i}"))).collect();
    let mut chunks = pods.chunks(count.div_ceil(16)).map(<[Value]>::to_vec);
    let mut tasks = Vec::new();
    for chunk in chunks.by_ref() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for p in chunk {
                c.create("v1", "pods", "default", &p).await.expect("pod");
            }
        }));
    }
    for t in tasks {
        t.await.expect("creator");
    }
}

/// Every node's requests stay within its allocatable; returns what is left on each.
fn free_per_node(nodes: &[Node], pods: &[Pod]) -> HashMap<String, Resources> {
    let mut free: HashMap<String, Resources> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap_or_default(),
                node_allocatable(n),
            )
        })
        .collect();
    for p in pods {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let left = free.get_mut(&node).expect("bound to a known node");
        left.sub(&pod_requests(p.spec.as_ref().expect("spec")));
    }
    for (node, left) in &free {
        assert!(
            left.milli_cpu >= 0 && left.memory >= 0 && left.pods >= 0,
            "{node} is overcommitted: {left:?} left"
        );
    }
    free
}

fn fits(want: &Resources, free: &Resources) -> bool {
    want.milli_cpu <= free.milli_cpu && want.memory <= free.memory && want.pods <= free.pods
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_pods_on_five_hundred_nodes_never_overcommit() {
    const NODES: usize = 500;
    const PODS: usize = 10_000;
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    for i in 0..NODES {
        c.create(
            "v1",
            "nodes",
            "",
            &node_with(&format!("n{i:03}"), "4", "16Gi", "True"),
        )
        .await
        .expect("node");
    }
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(scheduler::run(
        client.clone(),
        scheduler::SchedulerConfig::default(),
        stop_rx,
    ));
    // On average the pods ask for 90 % of the cluster's cpu and 70 % of its memory, so
    // near the end some no longer fit anywhere.
    let requests: Vec<(i64, i64)> = {
        let mut rng = rand::rng();
        (0..PODS)
            .map(|_| {
                (
                    rng.random_range(10..=35) * 10,
                    rng.random_range(1..=20) * 64,
                )
            })
            .collect()
    };
    create_pods(&c, "r", PODS, |name| {
        let i: usize = name[2..].parse().expect("index");
        let (cpu, mem) = requests[i];
        json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x:1",
            "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{mem}Mi")}}}]}})
    })
    .await;

    // Settled: every pod is bound or has been told why it cannot be.
    let pods_api = client.api::<Pod>("default");
    let pods = inproc::wait_until(
        Duration::from_secs(120),
        "every pod is placed or explained",
        || {
            let api = pods_api.clone();
            async move {
                let pods = api.list(&ListParams::default()).await.ok()?.items;
                let settled = pods.iter().all(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                        || p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|cs| {
                                cs.iter()
                                    .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                            })
                });
                (pods.len() == PODS && settled).then_some(pods)
            }
        },
    )
    .await;
    let nodes = client
        .api::<Node>("")
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items;
    let free = free_per_node(&nodes, &pods);
    let unbound: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
        .collect();
    for p in &unbound {
        let want = pod_requests(p.spec.as_ref().expect("spec"));
        let room = free.iter().find(|(_, left)| fits(&want, left));
        assert!(
            room.is_none(),
            "{:?} fits on {:?} but was not bound",
            p.metadata.name,
            room.map(|(n, _)| n)
        );
    }
    assert!(
        unbound.len() < PODS / 4,
        "most pods fit: {} unbound",
        unbound.len()
    );
    stop.send_replace(true);
    task.await.expect("the scheduler stops");
    h.shutdown().await;
}

/// A `flotilla scheduler` process, killed when dropped.
struct SchedulerProcess(std::process::Child);

impl SchedulerProcess {
    fn start(kubeconfig: &std::path::Path) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(["scheduler", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--leader-elect-lease-duration=2s",
                "--leader-elect-renew-deadline=1500ms",
                "--leader-elect-retry-period=200ms",
                "--metrics-bind-address=127.0.0.1:0",
                "--log-level=warn",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("flotilla scheduler starts");
        SchedulerProcess(child)
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn lease_holder(c: &JsonClient) -> Option<String> {
    let lease = c
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "kube-system",
            "default-scheduler",
        )
        .await
        .ok()?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader_and_binds_nothing_twice() {
    use futures::StreamExt;
    const PODS: usize = 1500;
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    for i in 0..20 {
        c.create(
            "v1",
            "nodes",
            "",
            &node_with(&format!("n{i:02}"), "4", "16Gi", "True"),
        )
        .await
        .expect("node");
    }
    let client = h.admin_client();
    let pods_api = client.api::<Pod>("default");

    // Every binding the API server ever shows, pod by pod: a pod bound twice would show a
    // second node.
    let start_rv = pods_api
        .list(&ListParams::default())
        .await
        .expect("list")
        .resource_version;
    let mut events = pods_api
        .watch(&ListParams::default(), &start_rv)
        .await
        .expect("watch");
    let (bound_tx, mut bound_rx) = tokio::sync::watch::channel(0usize);
    let recorder = tokio::spawn(async move {
        let mut first_node: HashMap<String, String> = HashMap::new();
        let mut twice = Vec::new();
        while let Some(Ok(ev)) = events.next().await {
            let (flotilla_client::WatchEvent::Added(p) | flotilla_client::WatchEvent::Modified(p)) =
                ev
            else {
                continue;
            };
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let uid = p.metadata.uid.clone().unwrap_or_default();
            match first_node.get(&uid) {
                Some(first) if *first != node => twice.push((uid, first.clone(), node)),
                Some(_) => {}
                None => {
                    first_node.insert(uid, node);
                    bound_tx.send_replace(first_node.len());
                    if first_node.len() == PODS {
                        break;
                    }
                }
            }
        }
        twice
    });

    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let mut schedulers = vec![
        SchedulerProcess::start(&kubeconfig),
        SchedulerProcess::start(&kubeconfig),
    ];
    let creator = {
        let c = c.clone();
        tokio::spawn(async move {
            create_pods(&c, "f", PODS, |name| pod(&name, "50m")).await;
        })
    };

    // Kill the leader once it has bound some of the pods.
    tokio::time::timeout(Duration::from_secs(60), bound_rx.wait_for(|n| *n >= 200))
        .await
        .expect("the leader binds pods")
        .expect("recorder running");
    let holder = lease_holder(&c).await.expect("a leader");
    let pid: u32 = holder
        .rsplit('-')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("identity ends with the pid");
    let leader = schedulers
        .iter()
        .position(|s| s.0.id() == pid)
        .expect("the leader is one of ours");
    drop(schedulers.remove(leader));
    let standby = schedulers[0].0.id().to_string();
    let bound_at_kill = *bound_rx.borrow();
    assert!(bound_at_kill < PODS, "killed mid-run");

    // The standby takes the Lease and binds the rest.
    inproc::wait_until(Duration::from_secs(30), "the standby leads", || {
        let c = c.clone();
        let standby = standby.clone();
        async move {
            lease_holder(&c)
                .await
                .filter(|h| h.ends_with(&format!("-{standby}")))
        }
    })
    .await;
    creator.await.expect("pods created");
    let twice = tokio::time::timeout(Duration::from_secs(60), recorder)
        .await
        .expect("every pod is bound")
        .expect("recorder");
    assert!(twice.is_empty(), "pods bound twice: {twice:?}");

    let pods = pods_api
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    assert!(
        pods.iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
    );
    let nodes = client
        .api::<Node>("")
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items;
    free_per_node(&nodes, &pods);
    drop(schedulers);
    h.shutdown().await;
}
