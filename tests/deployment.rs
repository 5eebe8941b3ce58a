//! Deployments end to end, on real pods (scheduler, an agent with the process runtime and
//! the shim, the controller manager): a rolling update watched pod by pod stays within
//! maxSurge and maxUnavailable even when the leading controller manager is killed
//! mid-rollout and its standby takes over; rollback, pause and resume, restart, scaling, history through flotctl;
//! Recreate never runs both versions at once; a rollout that cannot progress reports
//! ProgressDeadlineExceeded.

#[path = "support/api.rs"]
mod api;
#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/inproc.rs"]
mod inproc;
#[path = "support/process_agent.rs"]
mod process_agent;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{ApiHarness, StoreSetup};
use flotilla_client::{Client, DeleteParams, LeaderConfig, ListParams, Patch, WatchEvent};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

struct Cluster {
    h: ApiHarness,
    client: Client,
    kubeconfig: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    managers: Vec<Option<JoinHandle<()>>>,
    _dir: tempfile::TempDir,
}

/// Short leases, so that a manager that replaces a killed one takes over in seconds.
fn quick_leader() -> LeaderConfig {
    LeaderConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(300),
    }
}

impl Cluster {
    async fn start() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_test_writer()
            .try_init();
        let h = ApiHarness::start(StoreSetup::Embedded, |_| {}).await;
        let client = h.admin_client();
        let kubeconfig = h.server.as_ref().expect("running").kubeconfig.clone();
        let dir = tempfile::tempdir().expect("tempdir");
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(scheduler::run(
                client.clone(),
                Default::default(),
                stop_rx.clone(),
            )),
            process_agent::spawn(&client, dir.path(), stop_rx.clone()),
        ];
        let mut c = Cluster {
            h,
            client,
            kubeconfig,
            stop,
            tasks,
            managers: Vec::new(),
            _dir: dir,
        };
        c.start_manager_with(
            "manager-1",
            controller::manager::ManagerConfig {
                leader_election: quick_leader(),
                // Autoscaling acts on rates between two readings: read every second.
                autoscaler: controller::autoscaler::AutoscalerConfig {
                    sync_period: Duration::from_secs(1),
                },
                ..Default::default()
            },
        );
        c
    }

    fn start_manager(&mut self, identity: &str) {
        self.start_manager_with(
            identity,
            controller::manager::ManagerConfig {
                leader_election: quick_leader(),
                ..Default::default()
            },
        );
    }

    fn start_manager_with(&mut self, identity: &str, config: controller::manager::ManagerConfig) {
        self.managers
            .push(Some(tokio::spawn(controller::manager::run(
                self.client.clone(),
                identity.into(),
                config,
                self.stop.subscribe(),
            ))));
    }

    /// Who holds the controller managers' Lease.
    async fn leader(&self) -> Option<String> {
        self.client
            .api::<k8s_openapi::api::coordination::v1::Lease>("kube-system")
            .get_opt(controller::manager::LEASE)
            .await
            .ok()??
            .spec?
            .holder_identity
    }

    /// Kills the controller manager as a crash would: mid-work, no cleanup, Lease held.
    async fn kill_manager(&mut self, i: usize) {
        if let Some(m) = self.managers[i].take() {
            m.abort();
            let _ = m.await;
        }
    }

    fn flotctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotctl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("flotctl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn flotctl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.flotctl(args);
        if !ok {
            let (_, state, _) =
                self.flotctl(&["get", "deployments,replicasets,pods", "-o", "yaml"]);
            panic!("flotctl {args:?}: {err}{out}\n{state}");
        }
        out
    }

    async fn create(&self, obj: &Value) {
        self.h
            .client()
            .await
            .create("apps/v1", "deployments", "default", obj)
            .await
            .expect("deployment");
    }

    async fn patch(&self, name: &str, patch: Value) {
        self.client
            .api::<Deployment>("default")
            .patch(name, &Patch::Merge(patch))
            .await
            .expect("patch");
    }

    async fn deployment(&self, name: &str) -> Deployment {
        self.client
            .api::<Deployment>("default")
            .get(name)
            .await
            .expect("deployment")
    }

    async fn replica_sets(&self) -> Vec<ReplicaSet> {
        self.client
            .api::<ReplicaSet>("default")
            .list(&ListParams::default())
            .await
            .expect("replicasets")
            .items
    }

    /// Deletes every Deployment and waits until their pods are stopped and gone.
    async fn shutdown(mut self) {
        let api = self.client.api::<Deployment>("default");
        for d in api.list(&ListParams::default()).await.expect("list").items {
            let name = d.metadata.name.unwrap_or_default();
            api.delete(&name, &DeleteParams::default())
                .await
                .expect("delete");
        }
        let pods = self.client.api::<Pod>("default");
        inproc::wait_until(Duration::from_secs(60), "every pod is gone", || {
            let pods = pods.clone();
            async move {
                let left = pods.list(&ListParams::default()).await.ok()?.items;
                left.is_empty().then_some(())
            }
        })
        .await;
        self.stop.send_replace(true);
        for m in self.managers.iter_mut().filter_map(Option::take) {
            let _ = m.await;
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.h.shutdown().await;
    }
}

/// The pods' one container: `image` is only a name to the process runtime; readiness
/// takes a moment, so that a rollout has steps to watch.
fn container(image: &str, ready: &str) -> Value {
    json!({
        "name": "web", "image": image,
        "command": ["sleep", "3600"],
        "readinessProbe": {"exec": {"command": [ready]},
                           "initialDelaySeconds": 1, "periodSeconds": 1}
    })
}

/// A merge patch setting the template's container (merge patches replace whole lists).
fn set_container(image: &str, ready: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [container(image, ready)]}}}})
}

fn web(name: &str, replicas: i32, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [container(image, "true")]
                }
            }
        }
    })
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn hash_of(p: &Pod) -> String {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .cloned()
        .unwrap_or_default()
}

/// What a watcher saw of a Deployment's pods, moment by moment.
#[derive(Default, Debug)]
struct Observed {
    /// Fewest ready, not terminating pods at any moment after `armed`.
    min_ready: Option<usize>,
    /// Most pods not terminating at any moment.
    max_live: usize,
    /// Most distinct template hashes among existing pods at any moment.
    max_versions: usize,
}

/// Watches the pods labelled app=`app` and records every moment's counts.
async fn watch_pods(
    client: Client,
    app: &str,
    seen: Arc<Mutex<Observed>>,
    mut stop: watch::Receiver<bool>,
) {
    let api = client.api::<Pod>("default");
    let params = ListParams {
        label_selector: format!("app={app}"),
        ..Default::default()
    };
    let list = api.list(&params).await.expect("pods");
    let mut pods: HashMap<String, Pod> = list
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect();
    let mut events = api
        .watch(&params, &list.resource_version)
        .await
        .expect("watch");
    loop {
        {
            let live: Vec<&Pod> = pods
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().filter(|p| is_ready(p)).count();
            let versions: std::collections::HashSet<String> = pods.values().map(hash_of).collect();
            let mut s = seen.lock().expect("lock");
            s.min_ready = Some(s.min_ready.map_or(ready, |m| m.min(ready)));
            s.max_live = s.max_live.max(live.len());
            s.max_versions = s.max_versions.max(versions.len());
        }
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ev {
            Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            Some(Ok(WatchEvent::Deleted(p))) => {
                pods.remove(&p.metadata.name.clone().unwrap_or_default());
            }
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("the pod watch ended: {other:?}"),
        }
    }
}

fn revision_list(history: &str) -> Vec<String> {
    history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_keep_their_bounds_and_roll_back() {
    let mut c = Cluster::start().await;
    let rolling =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    c.create(&web("web", 3, "web:1", rolling)).await;
    let out = c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert!(
        out.ends_with("deployment \"web\" successfully rolled out\n"),
        "{out}"
    );
    let d = c.deployment("web").await;
    let available = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_.as_deref() == Some("Available"))
                .cloned()
        });
    assert_eq!(available.and_then(|c| c.status).as_deref(), Some("True"));

    // A second manager stands by: only the leader acts.
    c.start_manager("manager-2");
    assert_eq!(c.leader().await.as_deref(), Some("manager-1"));

    // Roll to web:2 with a watcher on every pod, killing the leading controller manager
    // once the rollout is under way: the standby takes over and finishes it.
    let seen = Arc::new(Mutex::new(Observed::default()));
    let (stop_watch, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_pods(c.client.clone(), "web", seen.clone(), stop_rx));
    c.patch("web", {
        let mut p = set_container("web:2", "true");
        p["metadata"] = json!({"annotations": {"kubernetes.io/change-cause": "web:2"}});
        p
    })
    .await;
    inproc::wait_until(Duration::from_secs(30), "the rollout is under way", || {
        let c = &c;
        async move {
            let s = c.deployment("web").await.status?;
            (s.updated_replicas.unwrap_or(0) >= 1
                && s.replicas.unwrap_or(0) > s.updated_replicas.unwrap_or(0))
            .then_some(())
        }
    })
    .await;
    c.kill_manager(0).await;
    let out = c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    stop_watch.send_replace(true);
    watcher.await.expect("watcher");
    {
        let s = seen.lock().expect("lock");
        assert!(
            s.min_ready >= Some(3),
            "maxUnavailable 0 was violated: {s:?}"
        );
        assert!(s.max_live <= 4, "maxSurge 1 was violated: {s:?}");
    }
    assert_eq!(c.leader().await.as_deref(), Some("manager-2"));
    let sets = c.replica_sets().await;
    assert_eq!(sets.len(), 2, "one ReplicaSet per revision");
    assert!(
        sets.iter().any(|rs| rs.spec.replicas == Some(0)),
        "the old one is scaled to 0"
    );

    let history = c.flotctl_ok(&["rollout", "history", "deployment/web"]);
    assert!(
        history.starts_with("deployment.apps/web \nREVISION  CHANGE-CAUSE\n"),
        "{history}"
    );
    assert!(history.contains("2         web:2"), "{history}");
    assert_eq!(revision_list(&history), ["1", "2"]);

    // Undo: back to web:1's template, as revision 3.
    assert_eq!(
        c.flotctl_ok(&["rollout", "undo", "deployment/web"]),
        "deployment.apps/web rolled back\n"
    );
    c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    let d = c.deployment("web").await;
    assert_eq!(
        d.spec
            .template
            .spec
            .as_ref()
            .map(|s| s.containers[0].image.clone()),
        Some(Some("web:1".into()))
    );
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision"))
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        revision_list(&c.flotctl_ok(&["rollout", "history", "deployment/web"])),
        ["2", "3"]
    );
    let (ok, _, err) = c.flotctl(&["rollout", "undo", "deployment/web", "--to-revision", "7"]);
    assert!(
        !ok && err.contains("unable to find specified revision 7"),
        "{err}"
    );

    // Paused: a template change waits; resumed, it rolls out.
    assert_eq!(
        c.flotctl_ok(&["rollout", "pause", "deployment/web"]),
        "deployment.apps/web paused\n"
    );
    let (ok, _, err) = c.flotctl(&["rollout", "pause", "deployment/web"]);
    assert!(!ok && err.contains("is already paused"), "{err}");
    c.patch("web", set_container("web:3", "true")).await;
    let generation = c.deployment("web").await.metadata.generation;
    inproc::wait_until(
        Duration::from_secs(20),
        "the paused change is observed",
        || {
            let c = &c;
            async move {
                let d = c.deployment("web").await;
                let s = d.status?;
                let paused = s
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.reason.as_deref() == Some("DeploymentPaused"));
                (s.observed_generation == generation && paused).then_some(())
            }
        },
    )
    .await;
    assert_eq!(c.replica_sets().await.len(), 2, "no rollout while paused");
    assert_eq!(
        c.flotctl_ok(&["rollout", "resume", "deployment/web"]),
        "deployment.apps/web resumed\n"
    );
    c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert_eq!(c.replica_sets().await.len(), 3);

    // Scale through the scale subresource, then restart every pod.
    assert_eq!(
        c.flotctl_ok(&["scale", "deployment/web", "--replicas", "5"]),
        "deployment.apps/web scaled\n"
    );
    c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "60s"]);
    assert_eq!(
        c.deployment("web")
            .await
            .status
            .and_then(|s| s.available_replicas),
        Some(5)
    );
    let before: Vec<String> = c
        .client
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        c.flotctl_ok(&["rollout", "restart", "deployment/web"]),
        "deployment.apps/web restarted\n"
    );
    c.flotctl_ok(&["rollout", "status", "deployment/web", "--timeout", "90s"]);
    let after: Vec<String> = c
        .client
        .api::<Pod>("default")
        .list(&ListParams::default())
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(after.len(), 5);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every pod was replaced"
    );

    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_never_overlaps_and_a_stuck_rollout_times_out() {
    let c = Cluster::start().await;
    c.create(&web("batch", 2, "batch:1", json!({"type": "Recreate"})))
        .await;
    c.flotctl_ok(&["rollout", "status", "deployment/batch", "--timeout", "60s"]);
    let seen = Arc::new(Mutex::new(Observed::default()));
    let (stop_watch, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_pods(c.client.clone(), "batch", seen.clone(), stop_rx));
    c.patch("batch", set_container("batch:2", "true")).await;
    c.flotctl_ok(&["rollout", "status", "deployment/batch", "--timeout", "60s"]);
    stop_watch.send_replace(true);
    watcher.await.expect("watcher");
    assert_eq!(
        seen.lock().expect("lock").max_versions,
        1,
        "old and new pods existed at once"
    );

    // A template whose pods never become ready, with a 2 s deadline.
    c.patch("batch", {
        let mut p = set_container("batch:3", "false");
        p["spec"]["progressDeadlineSeconds"] = json!(2);
        p
    })
    .await;
    let (ok, _, err) = c.flotctl(&["rollout", "status", "deployment/batch", "--timeout", "60s"]);
    assert!(!ok, "a stuck rollout fails");
    assert!(
        err.contains("deployment \"batch\" exceeded its progress deadline"),
        "{err}"
    );
    let d = c.deployment("batch").await;
    let progressing = d
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| {
            cs.into_iter()
                .find(|c| c.type_.as_deref() == Some("Progressing"))
        })
        .expect("Progressing");
    assert_eq!(progressing.status.as_deref(), Some("False"));
    assert_eq!(
        progressing.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autoscaler_follows_the_pods_cpu_and_scales_down_only_after_its_window() {
    let c = Cluster::start().await;
    // A busy loop capped at its 100m request (where cgroups can cap it): 100 % of it.
    c.create(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "busy"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "busy"}},
            "template": {
                "metadata": {"labels": {"app": "busy"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "spin", "image": "busybox",
                    "command": ["sh", "-c", "while :; do :; done"],
                    "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}
                }]}
            }
        }
    }))
    .await;
    let out = c.flotctl_ok(&[
        "autoscale",
        "deployment/busy",
        "--min",
        "1",
        "--max",
        "3",
        "--cpu-percent",
        "50",
    ]);
    assert_eq!(out, "horizontalpodautoscaler.autoscaling/busy autoscaled\n");
    let (ok, _, err) = c.flotctl(&["autoscale", "deployment/nothing", "--max", "3"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // Twice the target: it grows, to its max.
    inproc::wait_until(Duration::from_secs(60), "busy is scaled to 3", || async {
        (c.deployment("busy").await.spec.replicas == Some(3)).then_some(())
    })
    .await;
    let hpas = c
        .client
        .dynamic("autoscaling/v2", "horizontalpodautoscalers", "default");
    // Three pods at twice the target would want six: the max holds, and says so.
    let limited = |h: &Value| {
        h["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "ScalingLimited")
            .is_some_and(|c| c["reason"] == "TooManyReplicas")
    };
    let hpa = inproc::wait_until(Duration::from_secs(30), "the status shows the max", || {
        let hpas = hpas.clone();
        async move {
            let h = hpas.get("busy", "").await.ok()?;
            (h["status"]["desiredReplicas"] == 3 && limited(&h)).then_some(h)
        }
    })
    .await;
    let used = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
        .as_i64()
        .unwrap_or(0);
    assert!(used > 55, "{hpa}");
    let table = c.flotctl_ok(&["get", "hpa"]);
    assert!(
        table.contains("Deployment/busy") && table.contains("/50%") && table.contains("busy"),
        "{table}"
    );
    let events = c.flotctl_ok(&["get", "events"]);
    assert!(events.contains("SuccessfulRescale"), "{events}");

    // The load stops; with a 3 s scale-down window it shrinks to its min.
    hpas.patch(
        "busy",
        "",
        &Patch::Merge(
            json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 3}}}}),
        ),
        false,
    )
    .await
    .expect("patch the window");
    c.patch(
        "busy",
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "spin", "image": "busybox", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}
        }]}}}}),
    )
    .await;
    inproc::wait_until(
        Duration::from_secs(90),
        "busy is scaled back to 1",
        || async { (c.deployment("busy").await.spec.replicas == Some(1)).then_some(()) },
    )
    .await;
    c.shutdown().await;
}
