//! Node failure and maintenance against a running API server: a node whose agent is
//! killed goes Unknown and is tainted, its pods are evicted after their toleration,
//! replaced on another node and removed from the API, and the node is cleared when its
//! agent returns; `flotctl cordon`, `uncordon` and `drain` behave as kubectl's do.

#[path = "support/api.rs"]
mod api;
#[path = "support/flotctl.rs"]
mod cli;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;

use cli::flotctl;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::run::AgentConfig;
use agent::runtime::fake::FakeRuntime;
use api::{ApiHarness, StoreSetup};
use apiserver::defaults::toleration_seconds::DefaultTolerationSeconds;
use controller::manager::ManagerConfig;
use controller::node_lifecycle::NodeLifecycleConfig;
use flotilla_client::{Client, DeleteParams, ListParams, Patch};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The grace period the controller is given: short, so the test is.
const GRACE: Duration = Duration::from_secs(3);
/// The default toleration of unreachable nodes the API server gives pods.
const TOLERATION: Duration = Duration::from_secs(2);

/// An agent over the fake runtime in this process (its pods "run" without running).
fn fake_agent(
    client: &Client,
    dir: &Path,
    node: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let data = dir.join(node);
    std::fs::create_dir_all(&data).expect("agent dir");
    let cfg = AgentConfig {
        node_name: node.into(),
        host_ip: "127.0.0.1".into(),
        data_dir: data,
        heartbeat_interval: Duration::from_secs(1),
        listen: "127.0.0.1:0".parse().expect("address"),
        ..Default::default()
    };
    let (stop, rx) = watch::channel(false);
    let client = client.clone();
    let task = tokio::spawn(async move {
        agent::run::run(client, Arc::new(FakeRuntime::new("127.0.0.1")), cfg, rx)
            .await
            .expect("the agent runs");
    });
    (stop, task)
}

/// `flotilla hollow-nodes` with one node: a real agent in its own process, to SIGKILL.
struct HollowNode(std::process::Child);

impl HollowNode {
    fn start(kubeconfig: &Path, data: &Path, prefix: &str) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .arg("hollow-nodes")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--data-dir")
            .arg(data)
            .args(["--count", "1", "--name-prefix", prefix])
            .args(["--node-lease-renew-interval", "1s", "--log-level", "warn"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("flotilla hollow-nodes starts");
        HollowNode(child)
    }
}

impl Drop for HollowNode {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

fn condition<'a>(
    conditions: Option<&'a Vec<k8s_openapi::api::core::v1::NodeCondition>>,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::NodeCondition> {
    conditions?.iter().find(|c| c.type_ == type_)
}

fn node_ready(n: &Node) -> Option<String> {
    condition(n.status.as_ref()?.conditions.as_ref(), "Ready").map(|c| c.status.clone())
}

fn pod_ready(p: &Pod) -> Option<&str> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn node_of(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn pods(c: &Client) -> Vec<Pod> {
    c.api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

async fn node_until(c: &Client, name: &str, what: &str, ok: impl Fn(&Node) -> bool) -> Node {
    inproc::wait_until(Duration::from_secs(20), what, || {
        let api = c.api::<Node>("");
        let ok = &ok;
        async move { api.get_opt(name).await.ok().flatten().filter(|n| ok(n)) }
    })
    .await
}

fn web(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "busybox:1.36"}]
                }
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_pods_are_replaced_elsewhere_and_removed_from_the_api() {
    let h = ApiHarness::start(StoreSetup::Embedded, |c| {
        c.default_toleration_seconds = DefaultTolerationSeconds {
            not_ready: TOLERATION.as_secs() as i64,
            unreachable: TOLERATION.as_secs() as i64,
        };
    })
    .await;
    let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    let (stop, stop_rx) = watch::channel(false);
    let scheduler = tokio::spawn(scheduler::run(
        client.clone(),
        Default::default(),
        stop_rx.clone(),
    ));
    let config = ManagerConfig {
        node_lifecycle: NodeLifecycleConfig {
            node_monitor_period: Duration::from_millis(500),
            node_monitor_grace_period: GRACE,
            ..Default::default()
        },
        ..Default::default()
    };
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        config,
        stop_rx,
    ));

    // The doomed node takes both replicas (it is the only node), and a pod that tolerates
    // its loss for good.
    let hollow = HollowNode::start(&kubeconfig, &h.dir.path().join("hollow"), "doomed-");
    node_until(&client, "doomed-0", "the doomed node is ready", |n| {
        node_ready(n).as_deref() == Some("True")
    })
    .await;
    client
        .api::<ReplicaSet>("default")
        .dynamic()
        .create(&web(2), false)
        .await
        .expect("replicaset");
    client
        .api::<Pod>("default")
        .dynamic()
        .create(
            &json!({
                "metadata": {"name": "pinned", "namespace": "default"},
                "spec": {
                    "nodeName": "doomed-0",
                    "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}],
                    "containers": [{"name": "c", "image": "busybox:1.36"}]
                }
            }),
            false,
        )
        .await
        .expect("pinned pod");
    let doomed: Vec<String> = inproc::wait_until(
        Duration::from_secs(20),
        "both replicas and the pinned pod run on the doomed node",
        || {
            let c = client.clone();
            async move {
                let ps = pods(&c).await;
                let ready = ps
                    .iter()
                    .filter(|p| {
                        node_of(p) == "doomed-0" && is_running(p) && pod_ready(p) == Some("True")
                    })
                    .count();
                (ready == 3).then(|| {
                    ps.iter()
                        .filter(|p| p.metadata.name.as_deref() != Some("pinned"))
                        .filter_map(|p| p.metadata.name.clone())
                        .collect()
                })
            }
        },
    )
    .await;
    let (survivor_stop, survivor) = fake_agent(&client, h.dir.path(), "survivor");
    node_until(&client, "survivor", "the survivor is ready", |n| {
        node_ready(n).as_deref() == Some("True")
    })
    .await;

    // SIGKILL: the doomed node's Lease stops.
    drop(hollow);
    let killed = Instant::now();
    let within = GRACE + TOLERATION + Duration::from_secs(10);
    inproc::wait_until(within, "both replicas run again, on the survivor", || {
        let c = client.clone();
        async move {
            let ps = pods(&c).await;
            let replaced = ps
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && node_of(p) == "survivor"
                        && is_running(p)
                })
                .count();
            (replaced == 2).then_some(())
        }
    })
    .await;
    // The grace period runs from the last renewal the controller saw, up to one renewal
    // interval (1 s) before the kill.
    let replaced_after = killed.elapsed();
    assert!(
        replaced_after >= GRACE + TOLERATION - Duration::from_secs(1),
        "replaced after {replaced_after:?}: not before the grace period and the toleration"
    );
    inproc::wait_until(
        Duration::from_secs(10),
        "the evicted pods are deleted from the API",
        || {
            let (c, doomed) = (client.clone(), doomed.clone());
            async move {
                let ps = pods(&c).await;
                ps.iter()
                    .all(|p| !doomed.contains(p.metadata.name.as_ref().expect("name")))
                    .then_some(())
            }
        },
    )
    .await;

    // What the controller wrote on the way.
    let node = client.api::<Node>("").get("doomed-0").await.expect("node");
    let ready = condition(
        node.status.as_ref().and_then(|s| s.conditions.as_ref()),
        "Ready",
    )
    .expect("Ready");
    assert_eq!(ready.status, "Unknown");
    assert_eq!(ready.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        ready.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    let taints: Vec<String> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{taints:?}"
    );
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{taints:?}"
    );
    let pinned = client
        .api::<Pod>("default")
        .get("pinned")
        .await
        .expect("tolerating for good, it stays");
    assert_eq!(pinned.metadata.deletion_timestamp, None);
    assert_eq!(pod_ready(&pinned), Some("False"), "marked not ready");
    let events = client
        .api::<Event>("default")
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("TaintManagerEviction")
                && e.message.as_deref()
                    == Some(format!("Marking for deletion Pod default/{}", doomed[0]).as_str())),
        "an eviction Event for {}",
        doomed[0]
    );

    // The agent returns: the node is Ready again and its taints go.
    let back = HollowNode::start(&kubeconfig, &h.dir.path().join("hollow"), "doomed-");
    node_until(&client, "doomed-0", "the returning node is cleared", |n| {
        node_ready(n).as_deref() == Some("True")
            && n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(|t| t.iter().all(|t| !t.key.ends_with("/unreachable")))
    })
    .await;
    drop(back);

    let _ = client
        .api::<Pod>("default")
        .delete(
            "pinned",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await;
    survivor_stop.send_replace(true);
    survivor.await.expect("the survivor stops");
    stop.send_replace(true);
    manager.await.expect("the manager stops");
    scheduler.await.expect("the scheduler stops");
    h.shutdown().await;
}

/// A pod bound to n1, owned by a controller of `owner` kind (None: unmanaged).
fn bound_pod(name: &str, owner: Option<&str>) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox:1.36"}]}
    });
    if let Some(kind) = owner {
        p["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": "owner",
            "uid": "00000000-0000-0000-0000-000000000001", "controller": true
        }]);
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_uncordon_and_drain_as_kubectl_does() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    let (agent_stop, agent) = fake_agent(&client, h.dir.path(), "n1");
    node_until(&client, "n1", "n1 is registered", |_| true).await;

    let out = flotctl(&kc, &["cordon", "n1"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "node/n1 cordoned\n"),
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["cordon", "n1"]).await;
    assert_eq!(out.stdout, "node/n1 already cordoned\n");
    let n = client.api::<Node>("").get("n1").await.expect("n1");
    assert_eq!(n.spec.and_then(|s| s.unschedulable), Some(true));
    let out = flotctl(&kc, &["uncordon", "n1"]).await;
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "node/n1 uncordoned\n"),
        "{}",
        out.stderr
    );
    let out = flotctl(&kc, &["uncordon", "n1"]).await;
    assert_eq!(out.stdout, "node/n1 already uncordoned\n");
    let out = flotctl(&kc, &["cordon", "nowhere"]).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Error from server (NotFound)"),
        "{}",
        out.stderr
    );

    let pods_api = client.api::<Pod>("default");
    let mut scratch = bound_pod("scratch", Some("ReplicaSet"));
    scratch["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    scratch["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "tmp", "mountPath": "/tmp"}]);
    let mut mirror = bound_pod("mirror", None);
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "static"});
    for p in [
        bound_pod("web-1", Some("ReplicaSet")),
        bound_pod("lonely", None),
        bound_pod("ds-pod", Some("DaemonSet")),
        mirror,
        scratch,
    ] {
        pods_api.dynamic().create(&p, false).await.expect("pod");
    }

    // Refused: nothing is removed, the node stays cordoned, the exit status says so.
    let out = flotctl(&kc, &["drain", "n1"]).await;
    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "node/n1 cordoned\n");
    let why = "[cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/ds-pod, \
               cannot delete Pods declare no controller (use --force to override): default/lonely, \
               cannot delete Pods with local storage (use --delete-emptydir-data to override): default/scratch]";
    assert_eq!(
        out.stderr,
        format!(
            "error: unable to drain node \"n1\" due to error: {why}, continuing command...\n\
             There are pending nodes to be drained:\n n1\nerror: {why}\n"
        )
    );
    assert_eq!(pods(&client).await.len(), 5, "nothing removed");

    let out = flotctl(
        &kc,
        &[
            "drain",
            "n1",
            "--ignore-daemonsets",
            "--force",
            "--delete-emptydir-data",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "node/n1 already cordoned",
            "evicting pod default/lonely",
            "evicting pod default/scratch",
            "evicting pod default/web-1"
        ]
    );
    let mut evicted = lines[4..7].to_vec();
    evicted.sort();
    assert_eq!(
        evicted,
        [
            "pod/lonely evicted",
            "pod/scratch evicted",
            "pod/web-1 evicted"
        ]
    );
    assert_eq!(lines[7..], ["node/n1 drained"]);
    assert_eq!(
        out.stderr,
        "Warning: ignoring DaemonSet-managed Pods: default/ds-pod; \
         deleting Pods that declare no controller: default/lonely; \
         deleting Pods with local storage: default/scratch\n"
    );
    let mut left: Vec<String> = pods(&client)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    left.sort();
    assert_eq!(left, ["ds-pod", "mirror"]);

    // A pod whose deletion cannot finish (a finalizer holds it): drain gives up after
    // --timeout and exits non-zero.
    let mut held = bound_pod("held", Some("ReplicaSet"));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    pods_api
        .dynamic()
        .create(&held, false)
        .await
        .expect("held pod");
    let out = flotctl(
        &kc,
        &["drain", "n1", "--ignore-daemonsets", "--timeout", "2s"],
    )
    .await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("evicting pod default/held\n"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("drained"), "{}", out.stdout);
    assert!(
        out.stderr.contains("error: unable to drain node \"n1\" due to error: drain did not complete within 2s, continuing command..."),
        "{}",
        out.stderr
    );

    pods_api
        .patch(
            "held",
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("release the finalizer");
    for name in ["ds-pod", "mirror"] {
        pods_api
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .expect("delete");
    }
    inproc::wait_until(Duration::from_secs(10), "every pod is gone", || {
        let c = client.clone();
        async move { pods(&c).await.is_empty().then_some(()) }
    })
    .await;
    agent_stop.send_replace(true);
    agent.await.expect("the agent stops");
    h.shutdown().await;
}

/// A web pod (app=web) bound to `node`. Unowned: the garbage collector would remove a
/// pod whose owner does not exist (drain takes --force for them).
fn web_pod(name: &str, node: &str) -> Value {
    let mut p = bound_pod(name, None);
    p["metadata"]["labels"] = json!({"app": "web"});
    p["spec"]["nodeName"] = json!(node);
    p
}

async fn budget_until(c: &Client, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    inproc::wait_until(Duration::from_secs(20), what, || {
        let api = c.dynamic("policy/v1", "poddisruptionbudgets", "default");
        let ok = &ok;
        async move { api.get("web", "").await.ok().filter(|b| ok(&b["status"])) }
    })
    .await
}

async fn ready_pods(c: &Client, names: &[&str]) {
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    inproc::wait_until(Duration::from_secs(20), "the pods are ready", || {
        let (c, want) = (c.clone(), want.clone());
        async move {
            let ready: Vec<String> = pods(&c)
                .await
                .into_iter()
                .filter(|p| pod_ready(p) == Some("True"))
                .filter_map(|p| p.metadata.name)
                .collect();
            want.iter().all(|w| ready.contains(w)).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_evicts_within_the_pods_disruption_budget() {
    let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
    let kc = h.server.as_ref().expect("running").kubeconfig.clone();
    let client = h.admin_client();
    let (stop, stop_rx) = watch::channel(false);
    let manager = tokio::spawn(controller::manager::run(
        client.clone(),
        "test".into(),
        ManagerConfig::default(),
        stop_rx,
    ));
    let agents: Vec<_> = ["n1", "n2"]
        .iter()
        .map(|n| fake_agent(&client, h.dir.path(), n))
        .collect();
    let pods_api = client.api::<Pod>("default");
    for p in [web_pod("web-1", "n1"), web_pod("web-2", "n1")] {
        pods_api.dynamic().create(&p, false).await.expect("pod");
    }
    ready_pods(&client, &["web-1", "web-2"]).await;

    // Bad budgets are refused with the field named.
    let pdbs = client.dynamic("policy/v1", "poddisruptionbudgets", "default");
    let bad = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "bad"},
        "spec": {"minAvailable": 1, "maxUnavailable": "10%", "selector": {"matchLabels": {"app": "web"}}}});
    let err = pdbs.create(&bad, false).await.expect_err("both set");
    assert!(
        err.to_string()
            .contains("minAvailable and maxUnavailable cannot be both set"),
        "{err}"
    );
    let budget = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}});
    pdbs.create(&budget, false).await.expect("budget");
    budget_until(&client, "the budget allows nothing", |s| {
        s["currentHealthy"] == 2 && s["desiredHealthy"] == 2 && s["disruptionsAllowed"] == 0
    })
    .await;
    let out = flotctl(&kc, &["get", "pdb"]).await;
    assert_eq!(
        out.stdout
            .lines()
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        [
            vec!["NAME", "MIN", "AVAILABLE", "MAX"],
            vec!["web", "2", "N/A", "0"]
        ],
        "{}",
        out.stdout
    );

    // Two ready pods and a budget of two: nothing may go, so drain times out with the
    // budget's words and removes nothing.
    let out = flotctl(&kc, &["drain", "n1", "--force", "--timeout", "2s"]).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains(
            "error when evicting pods/\"web-1\" -n \"default\" (will retry after 5s): Cannot evict pod as it would violate the pod's disruption budget."
        ),
        "{}",
        out.stderr
    );
    assert_eq!(pods(&client).await.len(), 2, "nothing removed");

    // A third replica elsewhere allows one disruption: drain evicts one pod, and the
    // other waits until a replacement is ready (made here, as a ReplicaSet would).
    pods_api
        .dynamic()
        .create(&web_pod("web-3", "n2"), false)
        .await
        .expect("pod");
    budget_until(&client, "the budget allows one", |s| {
        s["disruptionsAllowed"] == 1
    })
    .await;
    let drain = tokio::spawn({
        let kc = kc.clone();
        async move { flotctl(&kc, &["drain", "n1", "--force", "--timeout", "60s"]).await }
    });
    inproc::wait_until(Duration::from_secs(20), "one pod of n1 is evicted", || {
        let c = client.clone();
        async move {
            let on_n1 = pods(&c)
                .await
                .into_iter()
                .filter(|p| node_of(p) == "n1")
                .count();
            (on_n1 == 1).then_some(())
        }
    })
    .await;
    let status = budget_until(&client, "the eviction is accounted", |s| {
        s["disruptionsAllowed"] == 0
    })
    .await;
    assert_eq!(status["status"]["currentHealthy"], 2, "{status}");
    pods_api
        .dynamic()
        .create(&web_pod("web-4", "n2"), false)
        .await
        .expect("pod");
    let out = drain.await.expect("drain");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("node/n1 drained\n"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("(will retry after 5s): Cannot evict pod"),
        "{}",
        out.stderr
    );
    let mut left: Vec<String> = pods(&client)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    left.sort();
    assert_eq!(left, ["web-3", "web-4"]);

    for (stop, task) in agents {
        stop.send_replace(true);
        task.await.expect("the agent stops");
    }
    stop.send_replace(true);
    manager.await.expect("the manager stops");
    h.shutdown().await;
}
