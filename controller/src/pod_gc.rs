//! The pod garbage collector (Kubernetes' PodGC). Every period it force-deletes:
//! - pods bound to a node that no longer exists: no agent will ever run or stop them, so
//!   without this they would stay Running in the API forever (and keep their ReplicaSet
//!   from replacing them). A node must be missing for a quarantine and a live read must
//!   confirm it, so a node the informer has not caught up with is never mistaken for gone;
//! - the oldest finished pods (Succeeded or Failed) beyond `--terminated-pod-gc-threshold`,
//!   which would otherwise pile up in the store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_client::{Client, ClientError, DeleteParams, SharedInformers, Store};
use k8s_openapi::api::core::v1::{Node, Pod};
use tokio::sync::watch;

use crate::metrics;
use crate::pod_state::is_finished;

/// How the collector runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGcConfig {
    /// Finished pods kept before the oldest are deleted; 0 keeps them all.
    pub terminated_pod_gc_threshold: usize,
    /// How often it looks.
    pub period: Duration,
    /// How long a node must be missing before its pods are deleted.
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    /// Kubernetes' values.
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_gc_threshold: 12_500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

struct Collector {
    client: Client,
    config: PodGcConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Nodes that pods are bound to but the informer does not have, since when.
    missing_since: HashMap<String, Instant>,
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// The finished pods to delete so that at most `threshold` remain, oldest first.
fn terminated_surplus(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut finished: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| is_finished(p) && p.metadata.deletion_timestamp.is_none())
        .collect();
    let Some(surplus) = finished.len().checked_sub(threshold).filter(|n| *n > 0) else {
        return Vec::new();
    };
    finished.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
    finished.into_iter().take(surplus).cloned().collect()
}

impl Collector {
    /// One pass: orphans first (they hold resources nobody accounts for), then the
    /// surplus of finished pods. A pod that cannot be deleted is reported and the rest
    /// go on; the pass stops as soon as `shutdown` flips (the Lease may be another's).
    async fn sweep(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), ClientError> {
        let pods = self.pods.list();
        let gone = self.gone_nodes(&pods).await;
        let orphans = pods.iter().filter(|p| gone.contains(node_of(p))).cloned();
        let surplus = terminated_surplus(&pods, self.config.terminated_pod_gc_threshold);
        let mut failures = 0;
        for (pod, why) in orphans.map(|p| (p, "its node no longer exists")).chain(
            surplus
                .into_iter()
                .map(|p| (p, "finished, beyond the threshold")),
        ) {
            if *shutdown.borrow() {
                break;
            }
            tracing::info!(pod = %pod_key(&pod), node = node_of(&pod), why, "deleting a pod");
            if let Err(e) = self.force_delete(&pod).await {
                tracing::warn!(pod = %pod_key(&pod), error = %e, "deleting a pod failed");
                failures += 1;
            }
        }
        if failures > 0 {
            return Err(ClientError::Other(format!(
                "{failures} pods could not be deleted"
            )));
        }
        Ok(())
    }

    /// The nodes pods are bound to that have been missing from the informer for the
    /// quarantine and that a live read confirms are gone.
    async fn gone_nodes(&mut self, pods: &[Arc<Pod>]) -> HashSet<String> {
        let now = Instant::now();
        let missing: HashSet<&str> = pods
            .iter()
            .map(|p| node_of(p))
            .filter(|n| !n.is_empty() && self.nodes.get(n).is_none())
            .collect();
        self.missing_since
            .retain(|n, _| missing.contains(n.as_str()));
        let mut gone = HashSet::new();
        for node in missing {
            let since = *self.missing_since.entry(node.to_string()).or_insert(now);
            if now.duration_since(since) < self.config.quarantine {
                continue;
            }
            match self.client.api::<Node>("").get_opt(node).await {
                Ok(None) => {
                    gone.insert(node.to_string());
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(node, error = %e, "checking whether a node is gone"),
            }
        }
        gone
    }

    async fn force_delete(&self, pod: &Pod) -> Result<(), ClientError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            precondition_uid: pod.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        match self.client.api::<Pod>(&ns).delete(&name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by a pod of the same name: nothing of ours left.
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn pod_key(pod: &Pod) -> String {
    flotilla_client::informer::key_of(&pod.metadata)
}

/// Registers the collector on the shared informers; the future it returns runs it once
/// they have started, until `shutdown` flips.
pub fn start(
    client: Client,
    config: PodGcConfig,
    informers: &mut SharedInformers,
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + use<> {
    let pods = informers.informer::<Pod>().store();
    let nodes = informers.informer::<Node>().store();
    async move {
        let synced = tokio::select! {
            r = async { pods.wait_until_ready().await && nodes.wait_until_ready().await } => r,
            _ = shutdown.wait_for(|s| *s) => false,
        };
        if !synced {
            return;
        }
        let mut collector = Collector {
            client,
            config,
            pods,
            nodes,
            missing_since: HashMap::new(),
        };
        let mut tick = tokio::time::interval(collector.config.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let start = Instant::now();
            let result = collector.sweep(&shutdown).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "pod garbage collection failed; retrying next period");
            }
            metrics::sync(
                "pod-gc",
                if result.is_ok() { "success" } else { "error" },
                start.elapsed(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, phase: &str, created: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "status": {"phase": phase},
            }))
            .expect("pod"),
        )
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<&str> {
        pods.iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or_default())
            .collect()
    }

    #[test]
    fn the_oldest_finished_pods_beyond_the_threshold_go() {
        let pods = vec![
            pod("new-done", "Succeeded", "2026-01-03T00:00:00Z"),
            pod("running", "Running", "2026-01-01T00:00:00Z"),
            pod("old-failed", "Failed", "2026-01-01T00:00:00Z"),
            pod("mid-done", "Succeeded", "2026-01-02T00:00:00Z"),
        ];
        assert_eq!(
            names(&terminated_surplus(&pods, 1)),
            ["old-failed", "mid-done"]
        );
        assert!(terminated_surplus(&pods, 3).is_empty());
        assert!(terminated_surplus(&pods, 0).is_empty(), "0 turns it off");
    }
}
