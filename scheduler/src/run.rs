//! The scheduler's loop: informers on nodes and pods feed the queue; each cycle takes the
//! next pod, places it with the profile against the cache (bound pods plus pods assumed on
//! a node while their binding is in flight), and binds it in the background, so throughput
//! is not bounded by one bind round trip at a time. A pod that fits nowhere gets a
//! FailedScheduling Event saying why for every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_client::events::Recorder;
use flotilla_client::informer::Change;
use flotilla_client::{Client, Informer, LeaderConfig, LeaderElector, ListParams, Patch};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use crate::cache::{Cache, Snapshot};
use crate::config::Configuration;
use crate::metrics::{Attempt, Metrics};
use crate::plugins::PodInfo;
use crate::profile::{FitError, Profile};
use crate::queue::SchedulingQueue;

/// How the scheduler signs its Events.
const SCHEDULER_EVENTS: Recorder<'static> = Recorder {
    component: "default-scheduler",
    host: None,
};

/// Bindings in flight at once: enough that throughput is not one round trip per pod,
/// bounded so a burst of pods cannot pile up unbounded requests.
pub const MAX_BINDS_IN_FLIGHT: usize = 256;

/// How the scheduler runs.
#[derive(Clone, Debug, Default)]
pub struct SchedulerConfig {
    /// Profiles (by scheduler name), plugins, weights, sampling.
    pub configuration: Configuration,
    /// Elect a leader on the Lease `kube-system/<first profile's scheduler name>` with
    /// this identity and timing, so that of several schedulers only one acts; None
    /// schedules unconditionally.
    pub leader_election: Option<(String, LeaderConfig)>,
    /// Where the scheduler counts what it does (shared with whoever serves `/metrics`).
    pub metrics: Arc<Metrics>,
}

impl SchedulerConfig {
    /// The scheduler name the leader-election Lease is named after.
    pub fn lease_name(&self) -> &str {
        self.configuration
            .profiles
            .first()
            .map_or("default-scheduler", |p| p.scheduler_name.as_str())
    }
}

/// Runs until `shutdown` flips; with leader election, schedules only while leading and
/// returns when leadership is lost (as kube-scheduler exits), so a restart rejoins cleanly.
pub async fn run(client: Client, cfg: SchedulerConfig, shutdown: watch::Receiver<bool>) {
    let Some((identity, timing)) = cfg.leader_election.clone() else {
        return run_scheduling(client, cfg, shutdown).await;
    };
    LeaderElector::new(
        client.api::<Lease>("kube-system"),
        cfg.lease_name(),
        &identity,
        timing,
    )
    .run_while_leading(shutdown, |stop| run_scheduling(client, cfg, stop))
    .await;
}

fn key(p: &Pod) -> String {
    flotilla_client::informer::key_of(&p.metadata)
}

/// The profile that schedules the pod, if it is ours and waits for a node.
fn profile_for<'a>(p: &Pod, profiles: &'a HashMap<String, Profile>) -> Option<&'a Profile> {
    let spec = p.spec.as_ref()?;
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty())
        || p.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    profiles.get(
        spec.scheduler_name
            .as_deref()
            .unwrap_or("default-scheduler"),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn run_scheduling(client: Client, cfg: SchedulerConfig, shutdown: watch::Receiver<bool>) {
    let percentage = cfg.configuration.percentage_of_nodes_to_score;
    let profiles: Arc<HashMap<String, Profile>> = Arc::new(
        cfg.configuration
            .profiles
            .iter()
            .map(|p| (p.scheduler_name.clone(), Profile::new(p, percentage)))
            .collect(),
    );
    let queue = Arc::new(SchedulingQueue::default());
    let cache = Arc::new(Mutex::new(Cache::default()));
    let nodes_informer = {
        let (q, cache) = (queue.clone(), cache.clone());
        Informer::new(client.api::<Node>(""), ListParams::default()).on_change(move |c| {
            match c {
                Change::Added(n) | Change::Updated { new: n, .. } => {
                    lock(&cache).upsert_node(n.clone())
                }
                Change::Deleted(n) => {
                    lock(&cache).remove_node(n.metadata.name.as_deref().unwrap_or_default())
                }
            }
            q.cluster_changed();
        })
    };
    let pods_informer = {
        let (q, cache, profiles) = (queue.clone(), cache.clone(), profiles.clone());
        Informer::new(client.api::<Pod>(""), ListParams::default()).on_change(move |c| match c {
            Change::Added(p) | Change::Updated { new: p, .. } => {
                let k = key(p);
                lock(&cache).upsert_pod(&k, p.clone());
                if profile_for(p, &profiles).is_some() {
                    let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
                    q.add(&k, priority);
                } else {
                    q.delete(&k);
                }
            }
            Change::Deleted(p) => {
                let k = key(p);
                lock(&cache).remove_pod(&k);
                q.delete(&k);
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
    let binds = Arc::new(Semaphore::new(MAX_BINDS_IN_FLIGHT));
    let mut snapshot = Snapshot::default();
    while let Some(k) = queue.pop().await {
        let Some(pod) = pods.get(&k) else {
            queue.done(&k);
            continue;
        };
        let Some(profile) = profile_for(&pod, &profiles) else {
            queue.done(&k);
            continue;
        };
        if lock(&cache).is_assumed(&k) {
            // Chosen already; its binding is in flight.
            queue.done(&k);
            continue;
        }
        lock(&cache).update_snapshot(&mut snapshot);
        let info = PodInfo::new(pod.clone());
        let started = std::time::Instant::now();
        let decided = profile.schedule(&info, snapshot.nodes());
        let result = if decided.is_ok() {
            Attempt::Scheduled
        } else {
            Attempt::Unschedulable
        };
        cfg.metrics.attempt(result, started.elapsed());
        cfg.metrics.set_pending(queue.pending_by_place());
        match decided {
            Ok(node) => {
                // Reserve: the node counts the pod from now on.
                lock(&cache).assume(&k, info, &node);
                let Ok(permit) = binds.clone().acquire_owned().await else {
                    break;
                };
                let (client, queue, cache) = (client.clone(), queue.clone(), cache.clone());
                let metrics = cfg.metrics.clone();
                tokio::spawn(async move {
                    let bound = bind(client, queue, cache, k, pod, node).await;
                    metrics.bind(bound);
                    drop(permit);
                });
            }
            Err(fit) => {
                tracing::debug!(pod = %k, reason = %fit, "unschedulable");
                queue.unschedulable(&k);
                let client = client.clone();
                tokio::spawn(async move { record_failure(&client, &pod, &fit).await });
            }
        }
    }
    stop.abort();
    for t in tasks {
        let _ = t.await;
    }
}

async fn bind(
    client: Client,
    queue: Arc<SchedulingQueue>,
    cache: Arc<Mutex<Cache>>,
    key: String,
    pod: Arc<Pod>,
    node: String,
) -> bool {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    match client.bind(&ns, &name, &node, &uid).await {
        Ok(_) => {
            tracing::debug!(pod = %key, node = %node, "bound");
            // The assumption stays until the informer shows the pod bound, so the node is
            // never counted without it.
            queue.done(&key);
            true
        }
        Err(e) => {
            tracing::warn!(pod = %key, node = %node, error = %e, "binding failed; retrying after back-off");
            lock(&cache).forget(&key);
            if e.is_not_found() {
                queue.done(&key);
            } else {
                queue.backoff(&key);
            }
            false
        }
    }
}

/// Tells the pod's owner why it waits: the PodScheduled condition (False, Unschedulable)
/// and a FailedScheduling Event, as kube-scheduler records them. Written only when the
/// reason changes, so a pod retried for the same reason causes no writes.
async fn record_failure(client: &Client, pod: &Pod, fit: &FitError) {
    let message = fit.to_string();
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_deref());
    let current = conditions
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled");
    if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(&message)) {
        return;
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut list: Vec<PodCondition> = conditions
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "PodScheduled")
        .cloned()
        .collect();
    list.push(PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.clone()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..Default::default()
    });
    // A merge patch carries no resourceVersion: nothing but the scheduler writes an
    // unscheduled pod's conditions, so there is no one to conflict with.
    let patch = Patch::Merge(json!({"status": {"conditions": list}}));
    if let Err(e) = client.api::<Pod>(&ns).patch_status(&name, &patch).await {
        tracing::debug!(pod = %name, error = %e, "could not set PodScheduled");
    }
    SCHEDULER_EVENTS
        .record(client, pod, "Warning", "FailedScheduling", &message)
        .await;
}
