//! The controller manager against a running API server: the ReplicaSet controller creates,
//! adopts, releases and deletes pods to keep `replicas`, never overshooting, and reports
//! its status.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/http.rs"]
mod http;
#[path = "support/inproc.rs"]
mod inproc;

use std::time::Duration;

use api::{ApiHarness, StoreSetup};
use flotilla_client::{Client, ListParams, Patch};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

fn rs(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
            }
        }
    })
}

async fn owned_by(c: &Client, rs: &str) -> Vec<Pod> {
    let uid = c
        .api::<ReplicaSet>("default")
        .get(rs)
        .await
        .ok()
        .and_then(|r| r.metadata.uid)
        .unwrap_or_default();
    c.api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect()
}

async fn settles_at(c: &Client, rs: &str, n: usize) -> Vec<Pod> {
    inproc::wait_until(
        Duration::from_secs(20),
        &format!("{rs} has {n} pods"),
        || {
            let c = c.clone();
            let rs = rs.to_string();
            async move {
                let pods = owned_by(&c, &rs).await;
                let status = c.api::<ReplicaSet>("default").get(&rs).await.ok()?.status?;
                (pods.len() == n && status.replicas as usize == n).then_some(pods)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_sets_keep_their_replicas() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        Default::default(),
        stop_rx,
    ));
    let j = h.client().await;

    // A burst of 20: exactly 20 are created, never more.
    j.create("apps/v1", "replicasets", "default", &rs("web", 20))
        .await
        .expect("replicaset");
    settles_at(&client, "web", 20).await;
    let all = client
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items;
    assert_eq!(all.len(), 20, "no pod created twice");
    let generation = client
        .api::<ReplicaSet>("default")
        .get("web")
        .await
        .expect("rs")
        .metadata
        .generation;
    let status = inproc::wait_until(Duration::from_secs(10), "observedGeneration", || {
        let c = client.clone();
        async move {
            c.api::<ReplicaSet>("default")
                .get("web")
                .await
                .ok()?
                .status
                .filter(|s| s.observed_generation == generation)
        }
    })
    .await;
    assert_eq!(status.fully_labeled_replicas, Some(20));

    // Scale down: the surplus goes.
    client
        .api::<ReplicaSet>("default")
        .patch("web", &Patch::Merge(json!({"spec": {"replicas": 3}})))
        .await
        .expect("scale");
    settles_at(&client, "web", 3).await;

    // An orphan that matches is adopted (and, being one too many, one pod goes).
    j.create(
        "v1",
        "pods",
        "default",
        &json!({"metadata": {"name": "stray", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "x:1"}]}}),
    )
    .await
    .expect("orphan");
    // Adopted: it carries web's controller reference — or it is already gone, which only
    // web's controller does to a pod (as the surplus, being the newest).
    let web_uid = client
        .api::<ReplicaSet>("default")
        .get("web")
        .await
        .expect("web")
        .metadata
        .uid;
    inproc::wait_until(Duration::from_secs(20), "the orphan is adopted", || {
        let (c, web_uid) = (client.clone(), web_uid.clone());
        async move {
            match c.api::<Pod>("default").get_opt("stray").await.ok()? {
                None => Some(()),
                Some(p) => p
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .iter()
                    .any(|o| Some(&o.uid) == web_uid.as_ref() && o.controller == Some(true))
                    .then_some(()),
            }
        }
    })
    .await;
    let pods = settles_at(&client, "web", 3).await;

    // A pod relabeled out of the selector is released and replaced.
    let victim = pods[0].metadata.name.clone().expect("name");
    client
        .api::<Pod>("default")
        .patch(
            &victim,
            &Patch::Merge(json!({"metadata": {"labels": {"app": "debug"}}})),
        )
        .await
        .expect("relabel");
    inproc::wait_until(
        Duration::from_secs(20),
        "the relabeled pod is released and replaced",
        || {
            let (c, victim) = (client.clone(), victim.clone());
            async move {
                let pods = owned_by(&c, "web").await;
                (pods.len() == 3
                    && pods
                        .iter()
                        .all(|p| p.metadata.name.as_deref() != Some(victim.as_str())))
                .then_some(pods)
            }
        },
    )
    .await;
    let released = client
        .api::<Pod>("default")
        .get(&victim)
        .await
        .expect("still there");
    assert!(
        released
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "released, not deleted"
    );

    // flotctl scale, through the scale subresource.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["scale", "rs/web", "--replicas", "5"])
        .output()
        .expect("flotctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "replicaset.apps/web scaled\n"
    );
    settles_at(&client, "web", 5).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "scale",
            "replicaset",
            "web",
            "--replicas",
            "3",
            "--current-replicas",
            "4",
        ])
        .output()
        .expect("flotctl runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Expected replicas to be 4, was 5"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["scale", "rs", "web", "--replicas", "3"])
        .output()
        .expect("flotctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = settles_at(&client, "web", 3).await;

    // Deleted pods are replaced.
    let gone = pods[1].metadata.name.clone().expect("name");
    client
        .api::<Pod>("default")
        .delete(&gone, &Default::default())
        .await
        .expect("delete");
    settles_at(&client, "web", 3).await;

    stop.send_replace(true);
    manager.await.expect("the manager stops");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_deletes_its_dependents() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        Default::default(),
        stop_rx,
    ));
    let j = h.client().await;
    j.create("apps/v1", "replicasets", "default", &rs("doomed", 2))
        .await
        .expect("replicaset");
    j.create("apps/v1", "replicasets", "default", &rs("keeper", 0))
        .await
        .expect("replicaset");
    let pods = settles_at(&client, "doomed", 2).await;
    // One pod also belongs to `keeper` (not as its controller): when `doomed` goes, that
    // pod stays, and only its reference to `doomed` is dropped.
    let keeper_uid = client
        .api::<ReplicaSet>("default")
        .get("keeper")
        .await
        .expect("keeper")
        .metadata
        .uid
        .expect("uid");
    let shared = pods[0].metadata.name.clone().expect("name");
    let mut refs = pods[0]
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    refs.push(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "keeper".into(),
            uid: keeper_uid.clone(),
            controller: None,
            block_owner_deletion: None,
        },
    );
    client
        .api::<Pod>("default")
        .patch(
            &shared,
            &Patch::Merge(json!({"metadata": {"ownerReferences": refs}})),
        )
        .await
        .expect("second owner");

    client
        .api::<ReplicaSet>("default")
        .delete("doomed", &Default::default())
        .await
        .expect("delete the owner");
    let left = inproc::wait_until(
        Duration::from_secs(20),
        "the dependents are collected",
        || {
            let c = client.clone();
            async move {
                let pods = c
                    .api::<Pod>("default")
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items;
                (pods.len() == 1).then_some(pods)
            }
        },
    )
    .await;
    let survivor = &left[0];
    assert_eq!(survivor.metadata.name.as_deref(), Some(shared.as_str()));
    let owners: Vec<String> = inproc::wait_until(
        Duration::from_secs(20),
        "the dangling reference is dropped",
        || {
            let c = client.clone();
            let shared = shared.clone();
            async move {
                let p = c.api::<Pod>("default").get(&shared).await.ok()?;
                let owners: Vec<String> = p
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| o.uid)
                    .collect();
                (owners.len() == 1).then_some(owners)
            }
        },
    )
    .await;
    assert_eq!(owners, vec![keeper_uid]);

    stop.send_replace(true);
    manager.await.expect("the manager stops");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flotilla_controller_runs_the_controllers_as_its_own_process() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    // A port free a moment ago: the process binds it itself.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("controller")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
        .args(["--log-level", "warn"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("flotilla controller starts");
    h.client()
        .await
        .create("apps/v1", "replicasets", "default", &rs("solo", 2))
        .await
        .expect("replicaset");
    settles_at(&client, "solo", 2).await;
    let lease = h
        .client()
        .await
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "kube-system",
            controller::manager::LEASE,
        )
        .await
        .expect("the manager's lease");
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| h.ends_with(&format!("-{}", process.id()))),
        "{lease}"
    );
    // Its /metrics counts the ReplicaSet controller's syncs.
    let metrics = http::get("127.0.0.1", metrics_port, "/metrics")
        .await
        .expect("the controller manager's metrics");
    assert!(
        http::sample(
            &metrics,
            "controller_syncs_total",
            &["controller=\"replicaset\"", "result=\"success\""]
        )
        .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    let _ = process.kill();
    let _ = process.wait();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_goes_last_and_orphan_deletion_keeps_the_dependents() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        Default::default(),
        stop_rx,
    ));
    let j = h.client().await;
    for name in ["front", "keep"] {
        j.create("apps/v1", "replicasets", "default", &rs(name, 2))
            .await
            .expect("replicaset");
        settles_at(&client, name, 2).await;
    }
    let sets = client.api::<ReplicaSet>("default");

    // Foreground: the owner is held (finalizer) until its pods are gone, then goes.
    let marked = sets
        .delete(
            "front",
            &flotilla_client::DeleteParams {
                propagation_policy: "Foreground".into(),
                ..Default::default()
            },
        )
        .await
        .expect("delete");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(
        marked.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );
    inproc::wait_until(Duration::from_secs(20), "the owner goes last", || {
        let (c, sets) = (client.clone(), sets.clone());
        async move {
            let gone = sets.get_opt("front").await.ok()?.is_none();
            let pods = c
                .api::<Pod>("default")
                .list(&ListParams {
                    label_selector: "app=front".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .items;
            // While the owner exists, its pods may exist; once it is gone, none may.
            assert!(!gone || pods.is_empty(), "the owner went before its pods");
            gone.then_some(())
        }
    })
    .await;

    // Orphan, through flotctl: the ReplicaSet goes, its pods stay, unowned.
    let flotctl = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .output()
            .expect("flotctl runs")
    };
    let out = flotctl(&["delete", "rs", "keep", "--cascade=sideways"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid --cascade value"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = flotctl(&["delete", "rs", "keep", "--cascade=orphan", "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = client
        .api::<Pod>("default")
        .list(&ListParams {
            label_selector: "app=keep".into(),
            ..Default::default()
        })
        .await
        .expect("pods")
        .items;
    assert_eq!(pods.len(), 2, "orphaned pods are kept");
    assert!(
        pods.iter().all(|p| p
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty)),
        "and no longer name their owner"
    );

    stop.send_replace(true);
    manager.await.expect("the manager stops");
    h.shutdown().await;
}

fn pod_on(name: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox:1.36"}]}
    })
}

async fn pod_names(c: &Client) -> Vec<String> {
    let mut names: Vec<String> = c
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_deleted_nodes_and_surplus_finished_pods_are_collected() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let client = h.admin_client();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let config = controller::manager::ManagerConfig {
        pod_gc: controller::pod_gc::PodGcConfig {
            terminated_pod_gc_threshold: 2,
            period: Duration::from_millis(200),
            quarantine: Duration::from_millis(500),
        },
        ..Default::default()
    };
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        config,
        stop_rx,
    ));
    let j = h.client().await;
    for node in ["stays", "goes"] {
        j.create(
            "v1",
            "nodes",
            "",
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}),
        )
        .await
        .expect("node");
    }
    for (pod, node) in [("on-stays", "stays"), ("on-goes", "goes")] {
        j.create("v1", "pods", "default", &pod_on(pod, node))
            .await
            .expect("pod");
    }
    // Three finished pods, oldest first, named so that age and name order differ
    // (creation timestamps have one-second resolution).
    let finished = [
        ("done-z", "Succeeded"),
        ("done-a", "Failed"),
        ("done-b", "Succeeded"),
    ];
    for (i, (name, phase)) in finished.into_iter().enumerate() {
        let created = j
            .create("v1", "pods", "default", &pod_on(name, "stays"))
            .await
            .expect("pod");
        let mut done = created.clone();
        done["status"]["phase"] = json!(phase);
        j.update_status(api::rref("v1", "pods", "default", name), &done)
            .await
            .expect("finished");
        if i == 0 {
            let first = created["metadata"]["creationTimestamp"].clone();
            inproc::wait_until(Duration::from_secs(3), "the clock moves on a second", || {
                let first = first.as_str().unwrap_or_default().to_string();
                async move { (jiff::Timestamp::now().to_string()[..19] > first[..19]).then_some(()) }
            })
            .await;
        }
    }

    // The oldest finished pod goes: two remain.
    inproc::wait_until(
        Duration::from_secs(20),
        "one finished pod collected",
        || {
            let c = client.clone();
            async move { (!pod_names(&c).await.contains(&"done-z".to_string())).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        pod_names(&client).await,
        ["done-a", "done-b", "on-goes", "on-stays"]
    );

    // A deleted node's pod goes after the quarantine; the other node's stays.
    client
        .api::<k8s_openapi::api::core::v1::Node>("")
        .delete("goes", &Default::default())
        .await
        .expect("node deleted");
    inproc::wait_until(
        Duration::from_secs(20),
        "the orphaned pod is deleted",
        || {
            let c = client.clone();
            async move { (!pod_names(&c).await.contains(&"on-goes".to_string())).then_some(()) }
        },
    )
    .await;
    assert_eq!(pod_names(&client).await, ["done-a", "done-b", "on-stays"]);

    stop.send_replace(true);
    manager.await.expect("manager stops");
    h.shutdown().await;
}
