//! The API test suite: Kubernetes manifests created, read, updated with conflict
//! detection, patched, listed with selectors and pages, watched with resume, bound and
//! deleted over gRPC, and bad input refused with field paths. The same suite runs against
//! the embedded store, a 3-member etcd-lite cluster and the real etcd 3.4.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use std::collections::HashSet;
use std::time::Duration;

use api::{ApiHarness, Client, StoreSetup, reason, rref, status_of};
use flotilla_proto::api::patch_request::PatchType;
use flotilla_proto::api::{ListRequest, WatchRequest};
use serde_json::{Value, json};
use tonic::Code;

const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The Deployment from the Kubernetes documentation ("Creating a Deployment").
fn nginx_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx-deployment", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

/// The Pod from the Kubernetes documentation ("Pods").
fn nginx_pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "nginx"}},
        "spec": {"containers": [{"name": "nginx", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}
    })
}

/// The Service from the Kubernetes documentation ("Service").
fn my_service(name: &str, ty: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "type": ty,
            "selector": {"app.kubernetes.io/name": "MyApp"},
            "ports": [{"protocol": "TCP", "port": 80, "targetPort": 9376}]
        }
    })
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

async fn suite(setup: StoreSetup) {
    let h = ApiHarness::start(setup, |_| {}).await;
    let c = h.client().await;
    system_namespaces_exist(&c).await;
    documented_manifests_are_defaulted_and_stored(&c).await;
    updates_detect_conflicts_and_track_generation(&c).await;
    status_is_written_only_through_its_subresource(&c).await;
    patches_merge_and_json(&c).await;
    selectors_and_pages(&c, &h).await;
    watches_resume_and_follow_selectors(&c).await;
    binding_and_graceful_pod_deletion(&c).await;
    finalizers_hold_deletion(&c).await;
    scale_subresource(&c).await;
    dry_run_stores_nothing(&c).await;
    bad_input_is_refused_with_field_paths(&c).await;
    authentication_is_required(&h).await;
    concurrent_writers_lose_nothing(&c).await;
    services_get_unique_addresses(&c).await;
    namespaces_bound_their_content(&c).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_suite_on_the_embedded_store() {
    suite(StoreSetup::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_suite_on_three_etcd_lite_members() {
    suite(StoreSetup::EtcdLite3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_suite_on_the_real_etcd() {
    suite(StoreSetup::RealEtcd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_promptly_with_watches_open() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    let mut watch = c
        .watch(rref("v1", "pods", "", ""), WatchRequest::default())
        .await
        .expect("watch");
    // An informer re-opens its watch as soon as one ends, while the server is stopping.
    let client = h.admin_client();
    let informer = flotilla_client::Informer::new(
        client.api::<k8s_openapi::api::core::v1::Pod>(""),
        Default::default(),
    );
    let store = informer.store();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let informing = tokio::spawn(informer.run(stop_rx));
    store.wait_until_ready().await;
    // A graceful stop ends open streams instead of waiting for their clients.
    tokio::time::timeout(Duration::from_secs(10), h.shutdown())
        .await
        .expect("the server stops within 10 s with watches open");
    stop.send_replace(true);
    informing.await.expect("the informer stops");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match watch.next(Duration::from_secs(5)).await {
                Ok(Some(ev)) if ev.kind == "BOOKMARK" => continue,
                other => return other.map(|e| e.map(|e| e.kind)),
            }
        }
    })
    .await
    .expect("the watch ends");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

async fn system_namespaces_exist(c: &Client) {
    let page = c
        .list("v1", "namespaces", "")
        .await
        .expect("list namespaces");
    let ns = names(&page.items);
    for want in ["default", "kube-system"] {
        assert!(ns.contains(&want.to_string()), "{want} missing from {ns:?}");
    }
}

async fn documented_manifests_are_defaulted_and_stored(c: &Client) {
    let d = c
        .create("apps/v1", "deployments", "default", &nginx_deployment())
        .await
        .expect("create deployment");
    assert_eq!(d["metadata"]["namespace"], "default");
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(d["metadata"]["creationTimestamp"].is_string());
    assert!(
        d["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<i64>().is_ok())
    );
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let tmpl = &d["spec"]["template"]["spec"];
    assert_eq!(tmpl["restartPolicy"], "Always");
    assert_eq!(tmpl["terminationGracePeriodSeconds"], 30);
    assert_eq!(tmpl["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(tmpl["containers"][0]["ports"][0]["protocol"], "TCP");

    let got = c
        .get("apps/v1", "deployments", "default", "nginx-deployment")
        .await
        .expect("get");
    assert_eq!(got, d, "a get returns what the create returned");
    let cached = c
        .get_at(
            rref("apps/v1", "deployments", "default", "nginx-deployment"),
            "0",
        )
        .await;
    if let Ok(cached) = cached {
        assert_eq!(cached["metadata"]["uid"], d["metadata"]["uid"]);
    }

    let mut declared = nginx_pod("nginx");
    declared["status"] = json!({"phase": "Running", "podIP": "1.2.3.4"});
    let p = c
        .create("v1", "pods", "default", &declared)
        .await
        .expect("create pod");
    assert_eq!(
        p["status"]["phase"], "Pending",
        "a declared status is dropped"
    );
    assert!(p["status"]["podIP"].is_null());
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");

    let s = c
        .create(
            "v1",
            "services",
            "default",
            &my_service("my-service", "ClusterIP"),
        )
        .await
        .expect("create service");
    let ip = s["spec"]["clusterIP"]
        .as_str()
        .expect("a cluster IP")
        .to_string();
    assert!(ip.starts_with("10."), "{ip}");
    assert_eq!(s["spec"]["clusterIPs"], json!([ip]));
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 9376);
    assert_eq!(s["spec"]["sessionAffinity"], "None");

    let again = c
        .create("v1", "pods", "default", &nginx_pod("nginx"))
        .await
        .expect_err("a second create");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(again.message(), "pods \"nginx\" already exists");

    let generated = c
        .create(
            "v1",
            "configmaps",
            "default",
            &json!({"metadata": {"generateName": "cfg-"}, "data": {}}),
        )
        .await
        .expect("create with generateName");
    let name = generated["metadata"]["name"].as_str().expect("a name");
    assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
}

async fn updates_detect_conflicts_and_track_generation(c: &Client) {
    let r = || rref("apps/v1", "deployments", "default", "nginx-deployment");
    let d = c
        .get("apps/v1", "deployments", "default", "nginx-deployment")
        .await
        .expect("get");
    let mut scaled = d.clone();
    scaled["spec"]["replicas"] = json!(5);
    let updated = c
        .update(r(), &scaled)
        .await
        .expect("update with the current resourceVersion");
    assert_eq!(updated["spec"]["replicas"], 5);
    assert_eq!(
        updated["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        d["metadata"]["resourceVersion"]
    );

    let stale = c
        .update(r(), &scaled)
        .await
        .expect_err("an update with a stale resourceVersion");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "Conflict");
    assert!(
        stale.message().contains("the object has been modified"),
        "{}",
        stale.message()
    );

    let mut relabelled = updated.clone();
    relabelled["metadata"]["labels"]["tier"] = json!("web");
    let relabelled = c.update(r(), &relabelled).await.expect("a label change");
    assert_eq!(
        relabelled["metadata"]["generation"], 2,
        "metadata changes do not bump generation"
    );

    let same = c.update(r(), &relabelled).await.expect("a no-op update");
    assert_eq!(
        same["metadata"]["resourceVersion"], relabelled["metadata"]["resourceVersion"],
        "a no-op writes nothing"
    );

    let mut selector_change = same.clone();
    selector_change["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    selector_change["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let immutable = c
        .update(r(), &selector_change)
        .await
        .expect_err("a selector change");
    assert_eq!(immutable.code(), Code::InvalidArgument);
    assert!(
        immutable.message().contains("spec.selector"),
        "{}",
        immutable.message()
    );
}

async fn status_is_written_only_through_its_subresource(c: &Client) {
    let r = || rref("v1", "pods", "default", "nginx");
    let p = c
        .get("v1", "pods", "default", "nginx")
        .await
        .expect("get pod");
    let mut with_status = p.clone();
    with_status["status"]["phase"] = json!("Running");
    with_status["metadata"]["labels"]["seen"] = json!("yes");
    let updated = c.update(r(), &with_status).await.expect("update");
    assert_eq!(
        updated["status"]["phase"], "Pending",
        "Update ignores status"
    );
    assert_eq!(updated["metadata"]["labels"]["seen"], "yes");

    let mut status = updated.clone();
    status["status"]["phase"] = json!("Running");
    status["status"]["podIP"] = json!("10.1.0.7");
    status["metadata"]["labels"]["ignored"] = json!("yes");
    let st = c.update_status(r(), &status).await.expect("update status");
    assert_eq!(st["status"]["phase"], "Running");
    assert_eq!(st["status"]["podIP"], "10.1.0.7");
    assert!(
        st["metadata"]["labels"]["ignored"].is_null(),
        "UpdateStatus changes only status"
    );
}

async fn patches_merge_and_json(c: &Client) {
    let r = || rref("apps/v1", "deployments", "default", "nginx-deployment");
    let p = c
        .patch(
            r(),
            PatchType::Merge,
            &json!({"metadata": {"labels": {"tier": null, "team": "a"}}, "spec": {"replicas": 2}}),
        )
        .await
        .expect("merge patch");
    assert_eq!(p["spec"]["replicas"], 2);
    assert!(
        p["metadata"]["labels"]["tier"].is_null(),
        "null removes a field"
    );
    assert_eq!(p["metadata"]["labels"]["team"], "a");

    let j = c
        .patch(r(), PatchType::Json, &json!([{"op": "replace", "path": "/spec/replicas", "value": 4}, {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}]))
        .await
        .expect("JSON patch");
    assert_eq!(j["spec"]["replicas"], 4);
    assert_eq!(j["metadata"]["annotations"]["note"], "x");

    let stale = c
        .patch(
            r(),
            PatchType::Merge,
            &json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}}),
        )
        .await
        .expect_err("a patch with a stale resourceVersion");
    assert_eq!(stale.code(), Code::Aborted);

    let invalid = c
        .patch(r(), PatchType::Merge, &json!({"spec": {"replicas": -1}}))
        .await
        .expect_err("a patch making the object invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("spec.replicas"),
        "{}",
        invalid.message()
    );
}

async fn selectors_and_pages(c: &Client, h: &ApiHarness) {
    c.create(
        "v1",
        "namespaces",
        "",
        &json!({"metadata": {"name": "sel"}}),
    )
    .await
    .expect("namespace");
    let labels = [
        ("a", json!({"env": "prod", "tier": "web"})),
        ("b", json!({"env": "prod", "tier": "db"})),
        ("c", json!({"env": "dev"})),
        ("d", json!({"env": "qa", "legacy": "true"})),
        ("e", json!({})),
    ];
    for (n, l) in &labels {
        c.create("v1", "configmaps", "sel", &configmap(n, l.clone()))
            .await
            .expect("configmap");
    }
    let r = || rref("v1", "configmaps", "sel", "");
    let cases = [
        ("env=prod", vec!["a", "b"]),
        ("env==prod,tier=web", vec!["a"]),
        ("env!=prod", vec!["c", "d", "e"]),
        ("env in (dev, qa)", vec!["c", "d"]),
        ("env notin (prod)", vec!["c", "d", "e"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", "d", "e"]),
        ("legacy,env=qa", vec!["d"]),
    ];
    for (sel, want) in cases {
        for rv in ["", "0"] {
            let page = c
                .list_with(
                    r(),
                    ListRequest {
                        label_selector: sel.into(),
                        resource_version: rv.into(),
                        ..Default::default()
                    },
                )
                .await
                .expect("list with a label selector");
            assert_eq!(
                names(&page.items),
                want,
                "selector {sel:?} at resourceVersion {rv:?}"
            );
        }
    }
    let by_name = c
        .list_with(
            r(),
            ListRequest {
                field_selector: "metadata.name=c".into(),
                ..Default::default()
            },
        )
        .await
        .expect("field selector");
    assert_eq!(names(&by_name.items), vec!["c"]);
    let unsupported = c
        .list_with(
            r(),
            ListRequest {
                field_selector: "spec.nodeName=x".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("an unsupported field");
    assert_eq!(unsupported.code(), Code::InvalidArgument);
    let bad = c
        .list_with(
            r(),
            ListRequest {
                label_selector: "env in (".into(),
                ..Default::default()
            },
        )
        .await
        .expect_err("a malformed selector");
    assert_eq!(bad.code(), Code::InvalidArgument);

    for (name, node, phase) in [
        ("p1", "n1", "Running"),
        ("p2", "n2", "Running"),
        ("p3", "", "Pending"),
    ] {
        let mut pod = nginx_pod(name);
        if !node.is_empty() {
            pod["spec"]["nodeName"] = json!(node);
        }
        let created = c.create("v1", "pods", "sel", &pod).await.expect("pod");
        if phase == "Running" {
            let mut st = created.clone();
            st["status"]["phase"] = json!(phase);
            c.update_status(rref("v1", "pods", "sel", name), &st)
                .await
                .expect("status");
        }
    }
    let pods = || rref("v1", "pods", "sel", "");
    for (sel, want) in [
        ("spec.nodeName=n1", vec!["p1"]),
        ("spec.nodeName=", vec!["p3"]),
        ("status.phase=Running", vec!["p1", "p2"]),
        ("status.phase!=Running,metadata.namespace=sel", vec!["p3"]),
    ] {
        let page = c
            .list_with(
                pods(),
                ListRequest {
                    field_selector: sel.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("pod field selector");
        assert_eq!(names(&page.items), want, "field selector {sel:?}");
    }

    // Pages: a consistent snapshot even when objects are added between pages.
    let first = c
        .list_with(
            r(),
            ListRequest {
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .expect("page 1");
    assert_eq!(names(&first.items), vec!["a", "b"]);
    assert_eq!(first.remaining, Some(3));
    c.create("v1", "configmaps", "sel", &configmap("bb", json!({})))
        .await
        .expect("created between pages");
    let mut all = names(&first.items);
    let mut token = first.continue_token.clone();
    while !token.is_empty() {
        let page = c
            .list_with(
                r(),
                ListRequest {
                    limit: 2,
                    continue_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("next page");
        assert_eq!(
            page.resource_version, first.resource_version,
            "every page is read at one revision"
        );
        all.extend(names(&page.items));
        token = page.continue_token;
    }
    assert_eq!(
        all,
        vec!["a", "b", "c", "d", "e"],
        "the snapshot does not include later objects"
    );

    // A continue token whose revision was compacted away is Expired.
    let page = c
        .list_with(
            r(),
            ListRequest {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .expect("page");
    c.create("v1", "configmaps", "sel", &configmap("after", json!({})))
        .await
        .expect("a later write");
    h.compact_store().await;
    let expired = c
        .list_with(
            r(),
            ListRequest {
                limit: 1,
                continue_token: page.continue_token,
                ..Default::default()
            },
        )
        .await
        .expect_err("a compacted continue token");
    assert_eq!(expired.code(), Code::OutOfRange);
    assert_eq!(reason(&expired), "Expired");
}

async fn watches_resume_and_follow_selectors(c: &Client) {
    c.create("v1", "namespaces", "", &json!({"metadata": {"name": "w"}}))
        .await
        .expect("namespace");
    let r = || rref("v1", "configmaps", "w", "");
    let start = c
        .list("v1", "configmaps", "w")
        .await
        .expect("list")
        .resource_version;
    let mut all = c
        .watch(
            r(),
            WatchRequest {
                resource_version: start.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let mut selected = c
        .watch(
            r(),
            WatchRequest {
                resource_version: start.clone(),
                label_selector: "watched=yes".into(),
                ..Default::default()
            },
        )
        .await
        .expect("selector watch");

    let x = c
        .create(
            "v1",
            "configmaps",
            "w",
            &configmap("x", json!({"watched": "no"})),
        )
        .await
        .expect("create");
    let mut x2 = x.clone();
    x2["metadata"]["labels"]["watched"] = json!("yes");
    let x2 = c
        .update(rref("v1", "configmaps", "w", "x"), &x2)
        .await
        .expect("starts matching");
    let mut x3 = x2.clone();
    x3["data"]["k"] = json!("changed");
    let x3 = c
        .update(rref("v1", "configmaps", "w", "x"), &x3)
        .await
        .expect("changes");
    let mut x4 = x3.clone();
    x4["metadata"]["labels"]["watched"] = json!("no");
    c.update(rref("v1", "configmaps", "w", "x"), &x4)
        .await
        .expect("stops matching");
    c.delete(rref("v1", "configmaps", "w", "x"), None)
        .await
        .expect("delete");

    let mut seen = Vec::new();
    for _ in 0..5 {
        let ev = all.next_change(EVENT_WAIT).await;
        seen.push((ev.kind, ev.resource_version.parse::<i64>().expect("rv")));
    }
    let kinds: Vec<&str> = seen.iter().map(|s| s.0).collect();
    assert_eq!(
        kinds,
        vec!["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]
    );
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "events in revision order: {seen:?}"
    );

    let mut sel = Vec::new();
    for _ in 0..3 {
        let ev = selected.next_change(EVENT_WAIT).await;
        sel.push(ev.kind);
    }
    assert_eq!(
        sel,
        vec!["ADDED", "MODIFIED", "DELETED"],
        "transitions across the selector become ADDED and DELETED"
    );

    // Resuming from the middle replays exactly the rest.
    let mid = seen[1].1.to_string();
    let mut resumed = c
        .watch(
            r(),
            WatchRequest {
                resource_version: mid,
                ..Default::default()
            },
        )
        .await
        .expect("resume");
    for want in &seen[2..] {
        let ev = resumed.next_change(EVENT_WAIT).await;
        assert_eq!(
            (ev.kind, ev.resource_version.parse::<i64>().expect("rv")),
            *want
        );
    }

    // A watch from "" starts with the current state.
    c.create("v1", "configmaps", "w", &configmap("y", json!({})))
        .await
        .expect("create y");
    let mut fresh = c
        .watch(r(), WatchRequest::default())
        .await
        .expect("watch from now");
    let first = fresh.next_change(EVENT_WAIT).await;
    assert_eq!(
        (first.kind, first.object["metadata"]["name"].as_str()),
        ("ADDED", Some("y"))
    );
}

async fn binding_and_graceful_pod_deletion(c: &Client) {
    c.create("v1", "pods", "default", &nginx_pod("bindme"))
        .await
        .expect("pod");
    let bound = c.bind("default", "bindme", "node-1").await.expect("bind");
    assert_eq!(bound["spec"]["nodeName"], "node-1");
    assert!(bound["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True")
    }));
    let again = c
        .bind("default", "bindme", "node-2")
        .await
        .expect_err("a second bind");
    assert_eq!(again.code(), Code::Aborted);
    assert!(
        again
            .message()
            .contains("already assigned to node \"node-1\""),
        "{}",
        again.message()
    );

    let r = || rref("v1", "pods", "default", "bindme");
    let marked = c.delete(r(), None).await.expect("graceful delete");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    c.get("v1", "pods", "default", "bindme")
        .await
        .expect("still there during its grace period");
    let late_bind = c
        .delete(r(), Some(0))
        .await
        .expect("the agent's final delete");
    assert_eq!(late_bind["metadata"]["name"], "bindme");
    let gone = c
        .get("v1", "pods", "default", "bindme")
        .await
        .expect_err("gone");
    assert_eq!(gone.code(), Code::NotFound);

    c.create("v1", "pods", "default", &nginx_pod("unbound"))
        .await
        .expect("pod");
    c.delete(rref("v1", "pods", "default", "unbound"), None)
        .await
        .expect("delete");
    let gone = c
        .get("v1", "pods", "default", "unbound")
        .await
        .expect_err("an unbound pod goes at once");
    assert_eq!(gone.code(), Code::NotFound);
}

async fn finalizers_hold_deletion(c: &Client) {
    let mut cm = configmap("held", json!({}));
    cm["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    c.create("v1", "configmaps", "default", &cm)
        .await
        .expect("create");
    let r = || rref("v1", "configmaps", "default", "held");
    let marked = c.delete(r(), None).await.expect("delete");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let still = c
        .get("v1", "configmaps", "default", "held")
        .await
        .expect("held by its finalizer");
    assert!(still["metadata"]["deletionTimestamp"].is_string());
    c.patch(
        r(),
        PatchType::Merge,
        &json!({"metadata": {"finalizers": null}}),
    )
    .await
    .expect("removing the last finalizer");
    let gone = c
        .get("v1", "configmaps", "default", "held")
        .await
        .expect_err("deleted with its last finalizer");
    assert_eq!(gone.code(), Code::NotFound);
}

async fn scale_subresource(c: &Client) {
    let mut r = rref("apps/v1", "deployments", "default", "nginx-deployment");
    r.subresource = "scale".into();
    let scale = c.get_at(r.clone(), "").await.expect("get scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=nginx");
    let mut s = scale.clone();
    s["spec"]["replicas"] = json!(7);
    let updated = c.update(r.clone(), &s).await.expect("update scale");
    assert_eq!(updated["spec"]["replicas"], 7);
    let d = c
        .get("apps/v1", "deployments", "default", "nginx-deployment")
        .await
        .expect("get");
    assert_eq!(d["spec"]["replicas"], 7);
    let stale = c.update(r, &s).await.expect_err("a stale scale");
    assert_eq!(stale.code(), Code::Aborted);
}

async fn dry_run_stores_nothing(c: &Client) {
    let obj = configmap("dry", json!({}));
    let out = c
        .create_raw(
            rref("v1", "configmaps", "default", ""),
            obj.to_string().into_bytes(),
            true,
        )
        .await
        .expect("dry-run create");
    assert!(
        out["metadata"]["uid"].is_string(),
        "defaulted and filled in as if created"
    );
    let missing = c
        .get("v1", "configmaps", "default", "dry")
        .await
        .expect_err("nothing stored");
    assert_eq!(missing.code(), Code::NotFound);
    let invalid = c
        .create_raw(
            rref("v1", "pods", "default", ""),
            json!({"metadata": {"name": "x"}, "spec": {}})
                .to_string()
                .into_bytes(),
            true,
        )
        .await
        .expect_err("a dry run validates in full");
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

async fn bad_input_is_refused_with_field_paths(c: &Client) {
    let no_containers = c
        .create(
            "v1",
            "pods",
            "default",
            &json!({"metadata": {"name": "bad"}, "spec": {"containers": []}}),
        )
        .await
        .expect_err("a pod without containers");
    assert_eq!(no_containers.code(), Code::InvalidArgument);
    assert_eq!(reason(&no_containers), "Invalid");
    let st = status_of(&no_containers);
    assert_eq!(st["code"], 422);
    assert!(
        st["details"]["causes"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["field"] == "spec.containers")),
        "{st}"
    );

    let mut unknown = nginx_pod("typo");
    unknown["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
    let e = c
        .create("v1", "pods", "default", &unknown)
        .await
        .expect_err("an unknown field");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("spec.containers[0].imagePullPolice"),
        "{}",
        e.message()
    );

    let mut wrong_type = nginx_deployment();
    wrong_type["metadata"]["name"] = json!("wrong-type");
    wrong_type["spec"]["replicas"] = json!("three");
    let e = c
        .create("apps/v1", "deployments", "default", &wrong_type)
        .await
        .expect_err("a wrong type");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("spec.replicas"), "{}", e.message());

    let mut mismatch = nginx_deployment();
    mismatch["metadata"]["name"] = json!("mismatch");
    mismatch["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let e = c
        .create("apps/v1", "deployments", "default", &mismatch)
        .await
        .expect_err("selector does not match");
    assert!(
        e.message().contains("spec.template.metadata.labels"),
        "{}",
        e.message()
    );

    let bad_name = c
        .create(
            "v1",
            "configmaps",
            "default",
            &configmap("Bad_Name", json!({})),
        )
        .await
        .expect_err("bad name");
    assert!(
        bad_name.message().contains("metadata.name"),
        "{}",
        bad_name.message()
    );

    let missing_ns = c
        .create("v1", "configmaps", "nowhere", &configmap("x", json!({})))
        .await
        .expect_err("no such namespace");
    assert_eq!(missing_ns.code(), Code::NotFound);
    assert_eq!(missing_ns.message(), "namespaces \"nowhere\" not found");

    let not_json = c
        .create_raw(
            rref("v1", "configmaps", "default", ""),
            b"{not json".to_vec(),
            false,
        )
        .await
        .expect_err("malformed JSON");
    assert_eq!(not_json.code(), Code::InvalidArgument);
    assert_eq!(reason(&not_json), "BadRequest");

    let wrong_kind = c
        .create(
            "v1",
            "configmaps",
            "default",
            &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}),
        )
        .await
        .expect_err("a kind that does not match the resource");
    assert_eq!(wrong_kind.code(), Code::InvalidArgument);

    let mut huge = configmap("huge", json!({}));
    huge["data"]["blob"] = json!("x".repeat(3 * 1024 * 1024 + 10));
    let e = c
        .create("v1", "configmaps", "default", &huge)
        .await
        .expect_err("over 3 MiB");
    assert_eq!(e.code(), Code::ResourceExhausted);

    let unknown_resource = c
        .list("v1", "widgets", "")
        .await
        .expect_err("an unknown resource");
    assert_eq!(unknown_resource.code(), Code::NotFound);

    // None of it was stored.
    for name in ["bad", "typo", "wrong-type", "mismatch"] {
        assert!(c.get("v1", "pods", "default", name).await.is_err());
        assert!(
            c.get("apps/v1", "deployments", "default", name)
                .await
                .is_err()
        );
    }
}

async fn authentication_is_required(h: &ApiHarness) {
    let none = h.client_with(None).await;
    let e = none
        .list("v1", "pods", "default")
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let wrong = h.client_with(Some("not-the-token".into())).await;
    let e = wrong
        .create(
            "v1",
            "configmaps",
            "default",
            &configmap("intruder", json!({})),
        )
        .await
        .expect_err("a wrong token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let c = h.client().await;
    assert!(
        c.get("v1", "configmaps", "default", "intruder")
            .await
            .is_err(),
        "nothing changed"
    );
}

async fn concurrent_writers_lose_nothing(c: &Client) {
    c.create(
        "v1",
        "configmaps",
        "default",
        &json!({"metadata": {"name": "counter"}, "data": {"n": "0"}}),
    )
    .await
    .expect("counter");
    let writers = 8;
    let per_writer = 5;
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..per_writer {
                loop {
                    let cur = c
                        .get("v1", "configmaps", "default", "counter")
                        .await
                        .expect("get");
                    let n: i64 = cur["data"]["n"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .expect("a number");
                    let mut next = cur.clone();
                    next["data"]["n"] = json!((n + 1).to_string());
                    match c
                        .update(rref("v1", "configmaps", "default", "counter"), &next)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.code() == Code::Aborted => conflicts += 1,
                        Err(e) => panic!("update failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let end = c
        .get("v1", "configmaps", "default", "counter")
        .await
        .expect("get");
    assert_eq!(
        end["data"]["n"],
        (writers * per_writer).to_string(),
        "every increment survives"
    );
}

async fn services_get_unique_addresses(c: &Client) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.create(
                "v1",
                "services",
                "default",
                &my_service(&format!("np-{i}"), "NodePort"),
            )
            .await
            .expect("service")
        }));
    }
    let mut ips = HashSet::new();
    let mut ports = HashSet::new();
    for t in tasks {
        let s = t.await.expect("task");
        assert!(ips.insert(s["spec"]["clusterIP"].as_str().expect("ip").to_string()));
        let np = s["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .expect("node port");
        assert!((30000..=32767).contains(&np));
        assert!(ports.insert(np), "node port {np} given twice");
    }
    let s0 = c
        .get("v1", "services", "default", "np-0")
        .await
        .expect("get");
    let taken = s0["spec"]["ports"][0]["nodePort"].clone();
    let mut clash = my_service("clash", "NodePort");
    clash["spec"]["ports"][0]["nodePort"] = taken;
    let e = c
        .create("v1", "services", "default", &clash)
        .await
        .expect_err("a taken node port");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("already allocated"), "{}", e.message());

    // Deleting a Service frees its port for the next one.
    c.delete(rref("v1", "services", "default", "np-0"), None)
        .await
        .expect("delete");
    c.create("v1", "services", "default", &clash)
        .await
        .expect("the freed port is available");

    let mut changed = c
        .get("v1", "services", "default", "np-1")
        .await
        .expect("get");
    changed["spec"]["clusterIP"] = json!("10.96.0.250");
    changed["spec"]["clusterIPs"] = json!(["10.96.0.250"]);
    let e = c
        .update(rref("v1", "services", "default", "np-1"), &changed)
        .await
        .expect_err("clusterIP is immutable");
    assert_eq!(e.code(), Code::InvalidArgument);
}

async fn namespaces_bound_their_content(c: &Client) {
    c.create(
        "v1",
        "namespaces",
        "",
        &json!({"metadata": {"name": "doomed"}}),
    )
    .await
    .expect("namespace");
    c.create(
        "v1",
        "configmaps",
        "doomed",
        &configmap("inside", json!({})),
    )
    .await
    .expect("content");
    c.delete(rref("v1", "namespaces", "", "doomed"), None)
        .await
        .expect("delete namespace");
    let gone = c
        .get("v1", "configmaps", "doomed", "inside")
        .await
        .expect_err("content goes with it");
    assert_eq!(gone.code(), Code::NotFound);
    let ns = c
        .get("v1", "namespaces", "", "doomed")
        .await
        .expect_err("namespace gone");
    assert_eq!(ns.code(), Code::NotFound);
    let sys = c
        .delete(rref("v1", "namespaces", "", "kube-system"), None)
        .await
        .expect_err("kube-system stays");
    assert_eq!(sys.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_survive_a_restart_on_the_same_data_dir() {
    let mut h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    let d = c
        .create("apps/v1", "deployments", "default", &nginx_deployment())
        .await
        .expect("create");
    h.restart().await;
    let c = h.client().await;
    let after = c
        .get("apps/v1", "deployments", "default", "nginx-deployment")
        .await
        .expect("kept across a restart");
    assert_eq!(after["metadata"]["uid"], d["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["resourceVersion"],
        d["metadata"]["resourceVersion"]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_bookmarks_and_expired_errors() {
    let h = ApiHarness::start(StoreSetup::Embedded, |cfg| {
        cfg.cache.history = 20;
        cfg.cache.bookmark_interval = Duration::from_millis(200);
    })
    .await;
    let c = h.client().await;
    let start = c
        .list("v1", "configmaps", "default")
        .await
        .expect("list")
        .resource_version;
    let mut w = c
        .watch(
            rref("v1", "configmaps", "default", ""),
            WatchRequest {
                resource_version: start.clone(),
                allow_bookmarks: true,
                ..Default::default()
            },
        )
        .await
        .expect("watch");
    let bookmark = loop {
        let ev = w.next(EVENT_WAIT).await.expect("no error").expect("open");
        if ev.kind == "BOOKMARK" {
            break ev;
        }
    };
    assert_eq!(bookmark.object["kind"], "ConfigMap");
    assert!(
        bookmark.object["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<i64>().is_ok())
    );

    for i in 0..30 {
        c.create(
            "v1",
            "configmaps",
            "default",
            &configmap(&format!("m{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    let e = match c
        .watch(
            rref("v1", "configmaps", "default", ""),
            WatchRequest {
                resource_version: start,
                ..Default::default()
            },
        )
        .await
    {
        Err(e) => e,
        Ok(mut w) => w
            .next(EVENT_WAIT)
            .await
            .expect_err("an expired watch fails"),
    };
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(reason(&e), "Expired");
    assert!(
        e.message().contains("too old resource version"),
        "{}",
        e.message()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_share_the_api_port() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let c = h.client().await;
    c.list("v1", "pods", "").await.expect("a request to count");
    let addr = h.addr();
    for (path, want) in [
        ("/healthz", "ok"),
        ("/readyz", "ok"),
        ("/metrics", "apiserver_request_total"),
    ] {
        let body = http_get(addr, path).await;
        assert!(body.contains(want), "{path}: {body}");
    }
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.contains("verb=\"list\""), "{metrics}");
    assert!(
        metrics.contains("apiserver_storage_request_duration_seconds"),
        "{metrics}"
    );
    h.shutdown().await;
}

/// A minimal HTTP/1.1 GET (the endpoints are plain HTTP next to gRPC).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_cut_off_without_slowing_others() {
    let h = ApiHarness::start(StoreSetup::Embedded, |cfg| cfg.cache.watcher_buffer = 8).await;
    let c = h.client().await;
    let api = h.server.as_ref().expect("running").api.clone();
    let r = apiserver::api::ObjectRef {
        api_version: "v1".into(),
        resource: "configmaps".into(),
        namespace: "default".into(),
        ..Default::default()
    };
    let start = c
        .list("v1", "configmaps", "default")
        .await
        .expect("list")
        .resource_version;
    let opts = apiserver::api::watch::WatchOptions {
        resource_version: start,
        ..Default::default()
    };
    // The slow one is never read until the writes are done; the fast one reads as they come.
    let mut slow = api.watch(&r, &opts).await.expect("slow watch");
    let mut fast = api.watch(&r, &opts).await.expect("fast watch");
    let total = 40;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            match tokio::time::timeout(EVENT_WAIT, fast.next())
                .await
                .expect("an event in time")
            {
                Some(Ok(_)) => n += 1,
                other => panic!("the fast watcher was disturbed: {other:?}"),
            }
        }
        n
    });
    for i in 0..total {
        c.create(
            "v1",
            "configmaps",
            "default",
            &configmap(&format!("s{i}"), json!({})),
        )
        .await
        .expect("create");
    }
    assert_eq!(
        reader.await.expect("reader"),
        total,
        "the fast watcher got every event"
    );
    let mut delivered = 0;
    let err = loop {
        match slow.next().await {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => break e,
            None => panic!("the slow watcher ended without an error"),
        }
    };
    assert!(
        delivered <= 8,
        "at most its buffer was kept for the slow watcher ({delivered})"
    );
    assert_eq!(err.reason, apiserver::error::Reason::ServiceUnavailable);
    assert!(
        err.message.contains("resume from the last resourceVersion"),
        "{}",
        err.message
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_the_event_ttl() {
    let h = ApiHarness::start(StoreSetup::Embedded, |cfg| {
        cfg.event_ttl = Duration::from_secs(2)
    })
    .await;
    let c = h.client().await;
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "web.1"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "apiVersion": "v1"},
        "reason": "Scheduled",
        "message": "Successfully assigned default/web to n1",
        "type": "Normal",
        "count": 1
    });
    c.create("v1", "events", "default", &event)
        .await
        .expect("create event");
    c.get("v1", "events", "default", "web.1")
        .await
        .expect("kept until its TTL");
    inproc::wait_until(Duration::from_secs(15), "the event expires", || {
        let c = c.clone();
        async move {
            c.get("v1", "events", "default", "web.1")
                .await
                .err()
                .filter(|e| e.code() == Code::NotFound)
        }
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_history_is_compacted_periodically() {
    let h = ApiHarness::start(StoreSetup::Embedded, |cfg| {
        cfg.compaction_interval = Duration::from_millis(300)
    })
    .await;
    let c = h.client().await;
    let first = c
        .create("v1", "configmaps", "default", &configmap("old", json!({})))
        .await
        .expect("create")["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse::<i64>().ok())
        .expect("a revision");
    let store = h.server.as_ref().expect("running").api.store().clone();
    inproc::wait_until(
        Duration::from_secs(20),
        "the revision of the first write is compacted",
        || {
            let (c, store) = (c.clone(), store.clone());
            async move {
                // Keep writing so there is history to compact.
                let _ = c
                    .create(
                        "v1",
                        "configmaps",
                        "default",
                        &json!({"metadata": {"generateName": "tick-"}}),
                    )
                    .await;
                match store.get("/registry/configmaps/default/old", first).await {
                    Err(apiserver::storage::StoreError::Compacted { .. }) => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    h.shutdown().await;
}
