//! The client library against a real API server: the admin kubeconfig the server writes,
//! typed calls for k8s-openapi types, errors as a typed enum, and watches.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use std::time::Duration;

use api::{ApiHarness, StoreSetup};
use flotilla_client::{
    Client, ClientError, DeleteParams, Kubeconfig, ListParams, Patch, WatchEvent,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use serde_json::json;

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}
        }
    }))
    .expect("a deployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_through_the_admin_kubeconfig() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let resolved = Kubeconfig::read(&kubeconfig)
        .expect("admin.yaml reads")
        .resolve(None)
        .expect("resolves");
    assert_eq!(resolved.namespace, "default");
    let client = Client::new(&resolved).expect("client");
    let deployments = client.api::<Deployment>("default");

    let created = deployments
        .create(&deployment("web"))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let strategy = created.spec.strategy.clone().expect("defaulted strategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));

    let mut stale = created.clone();
    let mut fresh = deployments.get("web").await.expect("get");
    fresh.spec.replicas = Some(3);
    deployments.update(&fresh).await.expect("update");
    stale.spec.replicas = Some(5);
    let err = deployments
        .update(&stale)
        .await
        .expect_err("a stale update");
    assert!(err.is_conflict(), "{err:?}");

    let patched = deployments
        .patch(
            "web",
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .expect("patch");
    assert_eq!(
        patched
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("a")
    );

    let list = deployments
        .list(&ListParams {
            label_selector: "team=a".into(),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(list.items.len(), 1);

    let missing = deployments.get("nope").await.expect_err("missing");
    assert!(missing.is_not_found());
    assert_eq!(missing.to_string(), "deployments.apps \"nope\" not found");
    assert!(
        deployments
            .get_opt("nope")
            .await
            .expect("get_opt")
            .is_none()
    );

    let pods = client.api::<Pod>("default");
    let invalid: Pod = serde_json::from_value(
        json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}}),
    )
    .expect("pod");
    match pods.create(&invalid).await {
        Err(ClientError::Invalid { causes, message }) => {
            assert_eq!(causes[0].field, "spec.containers[0].image", "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    // A watch from the list's revision sees a change and the deletion.
    let cms = client.api::<ConfigMap>("default");
    let rv = cms
        .list(&ListParams::default())
        .await
        .expect("list")
        .resource_version;
    let mut watch = cms.watch(&ListParams::default(), &rv).await.expect("watch");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"a": "1"}}))
            .expect("cm");
    cms.create(&cm).await.expect("create cm");
    cms.delete("cfg", &DeleteParams::default())
        .await
        .expect("delete cm");
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("an event")
            .expect("open")
            .expect("no error");
        match ev {
            WatchEvent::Added(c) => kinds.push(("ADDED", c.metadata.name)),
            WatchEvent::Deleted(c) => kinds.push(("DELETED", c.metadata.name)),
            WatchEvent::Modified(_) | WatchEvent::Bookmark(_) => {}
        }
    }
    assert_eq!(
        kinds,
        vec![
            ("ADDED", Some("cfg".to_string())),
            ("DELETED", Some("cfg".to_string()))
        ]
    );

    let discovered = client.discover().await.expect("discover");
    assert!(
        discovered
            .iter()
            .any(|r| r.resource == "deployments" && r.short_names.contains(&"deploy".to_string()))
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_server_and_the_kubeconfig() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let mut resolved = Kubeconfig::read(&kubeconfig)
        .expect("reads")
        .resolve(None)
        .expect("resolves");

    resolved.token = Some("wrong".into());
    let wrong = Client::new(&resolved).expect("client");
    let e = wrong
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .expect_err("a wrong token");
    assert!(matches!(e, ClientError::Unauthorized(_)), "{e:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    resolved.server = format!("http://{closed}");
    let down = Client::new(&resolved).expect("client");
    let e = down
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .expect_err("nothing listens");
    let msg = e.to_string();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
    assert!(
        msg.contains(&closed.to_string()) && msg.contains("admin.yaml"),
        "{msg}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_informer_follows_changes_and_survives_a_server_restart() {
    use flotilla_client::{Change, Informer};
    use std::sync::{Arc, Mutex};

    let mut h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let resolved = Kubeconfig::read(&kubeconfig)
        .expect("reads")
        .resolve(None)
        .expect("resolves");
    let client = Client::new(&resolved).expect("client");
    let pods = client.api::<Pod>("default");
    let pod = |name: &str, node: &str| -> Pod {
        let mut v = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}});
        if !node.is_empty() {
            v["spec"]["nodeName"] = json!(node);
        }
        serde_json::from_value(v).expect("pod")
    };
    for (n, node) in [("a", "n1"), ("b", "n1"), ("c", "")] {
        pods.create(&pod(n, node)).await.expect("create");
    }

    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    let informer = Informer::new(client.api::<Pod>(""), ListParams::default())
        .with_index("node", flotilla_client::informer::pods_by_node)
        .on_change(move |c| {
            let (what, p) = match c {
                Change::Added(p) => ("added", p),
                Change::Updated { new, .. } => ("updated", new),
                Change::Deleted(p) => ("deleted", p),
            };
            log.lock().expect("lock").push(format!(
                "{what} {}",
                p.metadata.name.clone().unwrap_or_default()
            ));
        });
    let store = informer.store();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(informer.run(stop_rx));
    assert!(store.wait_until_ready().await);
    assert_eq!(store.len(), 3);
    assert_eq!(store.by_index("node", "n1").len(), 2);
    assert_eq!(store.by_index("namespace", "default").len(), 3);

    pods.delete(
        "a",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("delete");
    pods.create(&pod("d", "n2")).await.expect("create");
    inproc::wait_until(Duration::from_secs(10), "the informer sees the delete and the create", || {
        let s = store.clone();
        async move { (s.get("default/a").is_none() && s.get("default/d").is_some()).then_some(()) }
    })
    .await;
    assert_eq!(
        store.by_index("node", "n1").len(),
        1,
        "indexes follow deletions"
    );

    // The watch breaks with the server; the informer resumes (or re-lists) on its own.
    h.restart().await;
    pods.create(&pod("e", "n2"))
        .await
        .expect("create after the restart");
    inproc::wait_until(
        Duration::from_secs(20),
        "the informer catches up after the restart",
        || {
            let s = store.clone();
            async move { s.get("default/e").is_some().then_some(()) }
        },
    )
    .await;
    assert_eq!(store.by_index("node", "n2").len(), 2);
    let log = seen.lock().expect("lock").clone();
    assert!(
        log.contains(&"deleted a".to_string()) && log.contains(&"added e".to_string()),
        "{log:?}"
    );
    stop.send_replace(true);
    task.await.expect("the informer stops");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_successor_when_it_goes() {
    use flotilla_client::{LeaderConfig, LeaderElector};
    use k8s_openapi::api::coordination::v1::Lease;

    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let resolved = Kubeconfig::read(&kubeconfig)
        .expect("reads")
        .resolve(None)
        .expect("resolves");
    let client = Client::new(&resolved).expect("client");
    let config = LeaderConfig {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(800),
        retry_period: Duration::from_millis(100),
    };
    let mut candidates = Vec::new();
    for id in ["a", "b", "c"] {
        let e = LeaderElector::new(
            client.api::<Lease>("kube-system"),
            "scheduler",
            id,
            config.clone(),
        );
        let leading = e.leading();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(e.run(stop_rx));
        candidates.push((id, leading, stop, task));
    }
    fn leaders<S, T>(
        c: &[(&'static str, tokio::sync::watch::Receiver<bool>, S, T)],
    ) -> Vec<&'static str> {
        c.iter()
            .filter(|(_, l, _, _)| *l.borrow())
            .map(|(id, ..)| *id)
            .collect()
    }
    let first = inproc::wait_until(Duration::from_secs(10), "a leader is elected", || {
        let l = leaders(&candidates).first().map(|s| s.to_string());
        async move { l }
    })
    .await;
    for _ in 0..20 {
        assert!(
            leaders(&candidates).len() <= 1,
            "two leaders at once: {:?}",
            leaders(&candidates)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A leader that stops releases the lease; a successor follows within a retry or two.
    let i = candidates
        .iter()
        .position(|c| c.0 == first)
        .expect("the leader");
    let (_, _, stop, task) = candidates.remove(i);
    stop.send_replace(true);
    task.await.expect("the leader stops");
    let second = inproc::wait_until(
        Duration::from_secs(5),
        "a successor after a release",
        || {
            let l = leaders(&candidates).first().map(|s| s.to_string());
            async move { l }
        },
    )
    .await;
    assert_ne!(second, first);

    // A leader that dies without releasing is replaced once its lease expires.
    let i = candidates
        .iter()
        .position(|c| c.0 == second)
        .expect("the leader");
    let (_, _, _stop, task) = candidates.remove(i);
    task.abort();
    let third = inproc::wait_until(
        Duration::from_secs(10),
        "a successor after the lease expires",
        || {
            let l = leaders(&candidates).first().map(|s| s.to_string());
            async move { l }
        },
    )
    .await;
    assert!(third != first && third != second);
    let lease = client
        .api::<Lease>("kube-system")
        .get("scheduler")
        .await
        .expect("the lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(third.as_str()));
    assert!(spec.lease_transitions.unwrap_or(0) >= 2, "{spec:?}");
    h.shutdown().await;
}
