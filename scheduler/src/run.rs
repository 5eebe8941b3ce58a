//! The scheduler's loop: informers on nodes and pods feed the queue; each cycle takes the
//! next pod, places it with the profile against the cache (bound pods plus pods assumed on
//! a node while their binding is in flight), and binds it in the background, so throughput
//! is not bounded by one bind round trip at a time. A pod that fits nowhere gets a
//! FailedScheduling Event saying why for every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_client::informer::{Change, pods_by_node};
use flotilla_client::{Client, Informer, LeaderConfig, LeaderElector, ListParams, Store};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;
use tokio::sync::watch;

use crate::plugins::NodeInfo;
use crate::plugins::node_resources_fit::Strategy;
use crate::profile::Profile;
use crate::queue::SchedulingQueue;

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose spec.schedulerName is this are ours.
    pub name: String,
    /// Spread (LeastAllocated) or pack (MostAllocated).
    pub strategy: Strategy,
    /// Elect a leader on the Lease `kube-system/<name>` with this identity and timing, so
    /// that of several schedulers only one acts; None schedules unconditionally.
    pub leader_election: Option<(String, LeaderConfig)>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: "default-scheduler".into(),
            strategy: Strategy::LeastAllocated,
            leader_election: None,
        }
    }
}

/// Runs until `shutdown` flips; with leader election, schedules only while leading and
/// returns when leadership is lost (as kube-scheduler exits), so a restart rejoins cleanly.
pub async fn run(client: Client, cfg: SchedulerConfig, shutdown: watch::Receiver<bool>) {
    let Some((identity, timing)) = cfg.leader_election.clone() else {
        return run_scheduling(client, cfg, shutdown).await;
    };
    let elector = LeaderElector::new(
        client.api::<Lease>("kube-system"),
        &cfg.name,
        &identity,
        timing,
    );
    let mut leading = elector.leading();
    let (stop, stop_rx) = watch::channel(false);
    let election = tokio::spawn(elector.run(stop_rx));
    let mut outer = shutdown.clone();
    let became_leader = tokio::select! {
        _ = outer.wait_for(|s| *s) => false,
        led = leading.wait_for(|l| *l) => led.is_ok(),
    };
    if became_leader {
        tracing::info!(identity = %identity, "leading: scheduling");
        let (inner_stop, inner_rx) = watch::channel(false);
        let work = tokio::spawn(run_scheduling(client, cfg, inner_rx));
        tokio::select! {
            _ = outer.wait_for(|s| *s) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!("lost leadership: stopping"),
        }
        inner_stop.send_replace(true);
        let _ = work.await;
    }
    stop.send_replace(true);
    let _ = election.await;
}

fn key(p: &Pod) -> String {
    flotilla_client::informer::key_of(&p.metadata)
}

fn wants_scheduling(p: &Pod, name: &str) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty)
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == name
        && p.metadata.deletion_timestamp.is_none()
}

async fn run_scheduling(client: Client, cfg: SchedulerConfig, shutdown: watch::Receiver<bool>) {
    let queue = Arc::new(SchedulingQueue::default());
    let nodes_informer = {
        let q = queue.clone();
        Informer::new(client.api::<Node>(""), ListParams::default())
            .on_change(move |_| q.cluster_changed())
    };
    let pods_informer = {
        let (q, name) = (queue.clone(), cfg.name.clone());
        Informer::new(client.api::<Pod>(""), ListParams::default())
            .with_index("node", pods_by_node)
            .on_change(move |c| match c {
                Change::Added(p) | Change::Updated { new: p, .. } => {
                    if wants_scheduling(p, &name) {
                        let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                        q.add(&key(p), priority);
                    } else {
                        q.delete(&key(p));
                    }
                }
                Change::Deleted(p) => {
                    q.delete(&key(p));
                    // Its resources are free again.
                    q.cluster_changed();
                }
            })
    };
    let nodes = nodes_informer.store();
    let pods = pods_informer.store();
    let tasks = [
        tokio::spawn(nodes_informer.run(shutdown.clone())),
        tokio::spawn(pods_informer.run(shutdown.clone())),
    ];
    let assumed: Arc<Mutex<HashMap<String, (String, Pod)>>> = Default::default();
    let profile = Profile::default_with(cfg.strategy);
    let stop = {
        let q = queue.clone();
        let mut s = shutdown.clone();
        tokio::spawn(async move {
            let _ = s.wait_for(|v| *v).await;
            q.close();
        })
    };
    nodes.wait_until_ready().await;
    pods.wait_until_ready().await;
    while let Some(k) = queue.pop().await {
        let Some(pod) = pods.get(&k) else {
            queue.done(&k);
            continue;
        };
        if !wants_scheduling(&pod, &cfg.name) {
            queue.done(&k);
            continue;
        }
        let infos = node_infos(&nodes, &pods, &assumed);
        match profile.schedule(&pod, &infos) {
            Ok(node) => {
                lock(&assumed).insert(k.clone(), (node.clone(), (*pod).clone()));
                let (client, queue, assumed) = (client.clone(), queue.clone(), assumed.clone());
                tokio::spawn(async move { bind(client, queue, assumed, k, pod, node).await });
            }
            Err(fit) => {
                tracing::debug!(pod = %k, reason = %fit, "unschedulable");
                queue.unschedulable(&k);
                record_failure(&client, &pod, &fit.to_string()).await;
            }
        }
    }
    stop.abort();
    for t in tasks {
        let _ = t.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every node with the pods bound to it and those assumed there.
fn node_infos(
    nodes: &Store<Node>,
    pods: &Store<Pod>,
    assumed: &Mutex<HashMap<String, (String, Pod)>>,
) -> Vec<NodeInfo> {
    let mut assumed = lock(assumed);
    // An assumption ends once the informer shows the pod bound (or gone): from then on the
    // pod is counted from the store.
    assumed.retain(|k, _| {
        pods.get(k).is_some_and(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_none_or(str::is_empty)
        })
    });
    let mut list: Vec<NodeInfo> = nodes
        .list()
        .into_iter()
        .map(|n| {
            let mut info = NodeInfo::new((*n).clone());
            for p in pods.by_index("node", info.name()) {
                // Finished pods hold nothing.
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                if !matches!(phase, Some("Succeeded" | "Failed")) && !assumed.contains_key(&key(&p))
                {
                    info.add_pod(&p);
                }
            }
            for (node, p) in assumed.values() {
                if node == info.name() {
                    info.add_pod(p);
                }
            }
            info
        })
        .collect();
    list.sort_by(|a, b| a.name().cmp(b.name()));
    list
}

async fn bind(
    client: Client,
    queue: Arc<SchedulingQueue>,
    assumed: Arc<Mutex<HashMap<String, (String, Pod)>>>,
    key: String,
    pod: Arc<Pod>,
    node: String,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match client.bind(&ns, &name, &node, &uid).await {
        Ok(_) => {
            tracing::debug!(pod = %key, node = %node, "bound");
            // The assumption stays until the informer shows the pod bound (see
            // node_infos), so the node is never counted without it.
            queue.done(&key);
        }
        Err(e) => {
            tracing::warn!(pod = %key, node = %node, error = %e, "binding failed; retrying after back-off");
            lock(&assumed).remove(&key);
            if e.is_not_found() {
                queue.done(&key);
            } else {
                queue.backoff(&key);
            }
        }
    }
}

/// A FailedScheduling Event on the pod, as kube-scheduler records it.
async fn record_failure(client: &Client, pod: &Pod, message: &str) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": pod.metadata.uid},
        "reason": "FailedScheduling",
        "message": message,
        "type": "Warning",
        "source": {"component": "default-scheduler"},
        "reportingComponent": "default-scheduler",
        "count": 1,
    });
    if let Err(e) = client
        .dynamic("v1", "events", &ns)
        .create(&event, false)
        .await
    {
        tracing::warn!(pod = %name, error = %e, "could not record the scheduling failure");
    }
}
