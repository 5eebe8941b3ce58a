//! The pods of unhealthy nodes, one at a time off a work queue (fed by pod changes and by
//! changes to their node's readiness or NoExecute taints): marked Ready=False when their
//! node is Unknown, evicted as the NoExecute taints and their tolerations decide, and
//! force-deleted when their deletion cannot finish because their node is unreachable.

use crate::pod_state::is_finished;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_client::events::Recorder;
use flotilla_client::{Client, ClientError, DeleteParams, Patch, Store, WorkQueue};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::eviction::{Verdict, force_delete_due, tolerations, verdict};
use super::taints::{condition_status, no_execute_taints};

/// How evictions are signed (Kubernetes' name).
const EVICTIONS: Recorder<'static> = Recorder {
    component: "taint-eviction-controller",
    host: None,
};
/// How pods marked not ready are signed.
const NODE_EVENTS: Recorder<'static> = Recorder {
    component: "node-controller",
    host: None,
};

pub(super) struct PodWorker {
    client: Client,
    nodes: Store<Node>,
    pods: Store<Pod>,
    queue: Arc<WorkQueue<String>>,
    /// When this controller first saw a NoExecute taint that carries no timeAdded, by
    /// (node, taint key): the start of its tolerationSeconds.
    first_seen: Mutex<HashMap<(String, String), jiff::Timestamp>>,
}

fn pod_ready(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// How long until `at`, from the wall clock now (at least a moment).
fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now))
        .unwrap_or_default()
        .max(Duration::from_millis(10))
}

impl PodWorker {
    pub fn new(
        client: Client,
        nodes: Store<Node>,
        pods: Store<Pod>,
        queue: Arc<WorkQueue<String>>,
    ) -> Self {
        PodWorker {
            client,
            nodes,
            pods,
            queue,
            first_seen: Mutex::default(),
        }
    }

    /// Works the queue until it shuts down.
    pub async fn run(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            match self.sync(&key).await {
                Ok(next) => {
                    self.queue.forget(&key);
                    if let Some(after) = next {
                        self.queue.add_after(key.clone(), after);
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "node lifecycle: pod sync failed; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    /// When the taint began, for tolerationSeconds: its timeAdded, else first sight.
    fn since(&self, node: &str, taint: &Taint, now: jiff::Timestamp) -> jiff::Timestamp {
        if let Some(t) = &taint.time_added {
            return t.0;
        }
        *self
            .first_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((node.to_string(), taint.key.clone()))
            .or_insert(now)
    }

    /// Acts on one pod; returns when to look at it again, if a deadline is pending.
    async fn sync(&self, key: &str) -> Result<Option<Duration>, ClientError> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(None);
        };
        let Some(node_name) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            return Ok(None);
        };
        let Some(node) = self.nodes.get(&node_name) else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now();
        let unreachable = condition_status(&node, "Ready") == Some("Unknown");
        if pod.metadata.deletion_timestamp.is_some() {
            if !unreachable {
                return Ok(None);
            }
            let Some(due) = force_delete_due(&pod) else {
                return Ok(None);
            };
            if due > now {
                return Ok(Some(until(due, now)));
            }
            tracing::warn!(pod = %key, node = %node_name, "force-deleting a pod whose grace period passed on an unreachable node");
            self.delete(&pod, Some(0)).await?;
            return Ok(None);
        }
        if unreachable && pod_ready(&pod) != Some("False") && !is_finished(&pod) {
            self.mark_not_ready(&pod, key, &node_name).await?;
        }
        let taints = no_execute_taints(&node);
        {
            // Forget first sightings of taints that are gone.
            let mut seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|(n, k), _| *n != node_name || taints.iter().any(|t| t.key == *k));
        }
        match verdict(
            tolerations(&pod),
            &taints,
            |t| self.since(&node_name, t, now),
            now,
        ) {
            Verdict::Stay => Ok(None),
            Verdict::EvictAt(at) => Ok(Some(until(at, now))),
            Verdict::EvictNow => {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                tracing::warn!(pod = %key, node = %node_name, "evicting: the pod does not tolerate its node's NoExecute taint");
                if self.delete(&pod, None).await? {
                    EVICTIONS
                        .record(
                            &self.client,
                            pod.as_ref(),
                            "Normal",
                            "TaintManagerEviction",
                            &format!("Marking for deletion Pod {ns}/{name}"),
                        )
                        .await;
                }
                Ok(None)
            }
        }
    }

    /// Deletes this pod (this uid only); false if it was already gone or replaced.
    async fn delete(&self, pod: &Pod, grace: Option<i64>) -> Result<bool, ClientError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: grace,
            precondition_uid: pod.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        match self.client.api::<Pod>(&ns).delete(&name, &params).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets the pod's Ready condition to False (Kubernetes' MarkPodsNotReady), so that
    /// Services and ReplicaSets stop counting a pod nobody can vouch for.
    async fn mark_not_ready(&self, pod: &Pod, key: &str, node: &str) -> Result<(), ClientError> {
        let mut conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        match conditions.iter_mut().find(|c| c.type_ == "Ready") {
            Some(c) => {
                c.status = "False".into();
                c.last_transition_time = Some(now);
            }
            // A pod never reported on has no Ready condition to lower.
            None => return Ok(()),
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"conditions": conditions},
        }));
        match self
            .client
            .api::<Pod>(&ns)
            .patch_status(&name, &patch)
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %key, node = %node, "marked not ready: its node is unreachable");
                NODE_EVENTS
                    .record(
                        &self.client,
                        pod,
                        "Warning",
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}
