//! A node with the aggregates of what is placed on it (requested resources, host ports,
//! pods per owner), updated pod by pod as pods come and go, never recomputed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::plugins::node_readiness::implied_taint;
use crate::pod_info::{HostPort, PodInfo};
use crate::resources::{Resources, node_allocatable};

/// The zone label, and the older one Kubernetes still reads.
pub const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];

/// A node with what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// What it offers.
    pub allocatable: Resources,
    /// What the pods on it (and the assumed ones) request.
    pub requested: Resources,
    /// Host ports taken, with how many pods hold each.
    pub used_ports: HashMap<HostPort, u32>,
    /// Pods on it per controlling owner uid.
    pub owners: HashMap<String, u32>,
    /// Its zone label, if any.
    pub zone: Option<String>,
    /// Whether it is cordoned (spec.unschedulable).
    pub cordoned: bool,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// The taint its Ready condition implies while it is not ready.
    pub readiness_taint: Option<Taint>,
}

impl NodeInfo {
    /// A node with nothing on it yet.
    pub fn new(node: Node) -> Self {
        Self::from_arc(Arc::new(node))
    }

    /// A node with nothing on it yet, sharing the informer's copy.
    pub fn from_arc(node: Arc<Node>) -> Self {
        let mut info = NodeInfo {
            allocatable: Resources::default(),
            requested: Resources::default(),
            used_ports: HashMap::new(),
            owners: HashMap::new(),
            zone: None,
            cordoned: false,
            taints: Vec::new(),
            readiness_taint: None,
            node: node.clone(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object (labels, taints, allocatable may change), keeping the pods.
    ///
    /// What the filters read of every node is copied here: a pass over thousands of
    /// nodes per pod would otherwise chase each Node object's pointers through cold
    /// memory, which cost more than all the filtering itself.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = node_allocatable(&node);
        self.cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        self.taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        self.readiness_taint = implied_taint(&node);
        self.zone = ZONE_LABELS
            .iter()
            .find_map(|l| labels(&node).get(*l))
            .cloned();
        self.node = node;
    }

    /// Counts a pod as placed here.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.requested.add(&pod.requests);
        for p in &pod.host_ports {
            *self.used_ports.entry(p.clone()).or_default() += 1;
        }
        if let Some(o) = &pod.owner {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
    }

    /// Stops counting a pod placed here.
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.requested.sub(&pod.requests);
        for p in &pod.host_ports {
            if let Some(n) = self.used_ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.used_ports.remove(p);
                }
            }
        }
        if let Some(o) = &pod.owner
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        labels(&self.node)
    }

    /// The node's taints.
    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }
}

impl AsRef<NodeInfo> for NodeInfo {
    fn as_ref(&self) -> &NodeInfo {
        self
    }
}

fn labels(node: &Node) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&EMPTY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value(v).expect("pod")))
    }

    #[test]
    fn removing_a_pod_undoes_adding_it() {
        let mut n = NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": "a"}}, "status": {"allocatable": {"cpu": "4"}}}))
                .expect("node"),
        );
        assert_eq!(n.zone.as_deref(), Some("a"));
        let p = pod(json!({
            "metadata": {"name": "p", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
        }));
        n.add_pod(&p);
        n.add_pod(&p);
        assert_eq!(n.requested.milli_cpu, 2000);
        assert_eq!(n.requested.pods, 2);
        assert_eq!(n.owners["u1"], 2);
        assert_eq!(n.used_ports.len(), 1);
        n.remove_pod(&p);
        assert_eq!(n.owners["u1"], 1);
        assert_eq!(n.used_ports.len(), 1, "still held by the other pod");
        n.remove_pod(&p);
        assert_eq!(n.requested.milli_cpu, 0);
        assert!(n.owners.is_empty() && n.used_ports.is_empty());
    }
}
