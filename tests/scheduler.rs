//! The scheduler against a running API server: pods are bound to nodes that fit them,
//! a node is never overcommitted, and a pod that fits nowhere gets a FailedScheduling
//! Event saying why, then is placed once a node that fits appears.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use std::time::Duration;

use api::{ApiHarness, Client as JsonClient, StoreSetup};
use serde_json::{Value, json};

fn node(name: &str, cpu: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]
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
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let resolved = flotilla_client::Kubeconfig::read(&kubeconfig)
        .expect("kubeconfig")
        .resolve(None)
        .expect("context");
    let client = flotilla_client::Client::new(&resolved).expect("client");
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
    assert_eq!(
        event["message"],
        "0/2 nodes are available: 2 Insufficient cpu."
    );
    assert_eq!(event["type"], "Warning");
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
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let resolved = flotilla_client::Kubeconfig::read(&kubeconfig)
        .expect("kubeconfig")
        .resolve(None)
        .expect("context");
    let timing = flotilla_client::LeaderConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(800),
        retry_period: Duration::from_millis(100),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for id in ["s1", "s2"] {
        let client = flotilla_client::Client::new(&resolved).expect("client");
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
