//! The scheduling framework's extension points, as Kubernetes defines them, and one module
//! per plugin.

pub mod balanced_allocation;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod taint_toleration;

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::resources::{Resources, node_allocatable};

/// A node with what is already placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Node,
    /// What it offers.
    pub allocatable: Resources,
    /// What the pods on it (and the assumed ones) request.
    pub requested: Resources,
    /// Host ports taken: (protocol, host IP, port).
    pub used_ports: HashSet<(String, String, i32)>,
}

impl NodeInfo {
    /// A node with nothing on it yet.
    pub fn new(node: Node) -> Self {
        NodeInfo {
            allocatable: node_allocatable(&node),
            requested: Resources::default(),
            used_ports: HashSet::new(),
            node,
        }
    }

    /// Counts a pod as placed here.
    pub fn add_pod(&mut self, pod: &Pod) {
        if let Some(spec) = &pod.spec {
            self.requested.add(&crate::resources::pod_requests(spec));
        }
        self.used_ports.extend(node_ports::host_ports(pod));
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }
}

/// The outcome of a filter, as Kubernetes' framework codes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The pod may run here.
    Success,
    /// Not here, for these reasons; a change in the cluster may help.
    Unschedulable(Vec<String>),
    /// Not here, and preempting other pods would not help.
    UnschedulableAndUnresolvable(Vec<String>),
}

impl Status {
    /// Did the node pass?
    pub fn is_success(&self) -> bool {
        matches!(self, Status::Success)
    }
}

/// Decides whether a pod can run on a node.
pub trait FilterPlugin: Send + Sync {
    /// The plugin's name (as in a scheduler configuration).
    fn name(&self) -> &'static str;
    /// Checks one node; `requests` is the pod's computed requests.
    fn filter(&self, pod: &Pod, requests: &Resources, node: &NodeInfo) -> Status;
}

/// Ranks the nodes that passed the filters.
pub trait ScorePlugin: Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// A score from 0 (worst) to 100 (best).
    fn score(&self, pod: &Pod, requests: &Resources, node: &NodeInfo) -> i64;
}

/// The highest score a plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod")
    }

    fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(serde_json::from_value(v).expect("node"))
    }

    #[test]
    fn a_named_node_is_the_only_one() {
        let p = pod(json!({"nodeName": "n1", "containers": []}));
        let r = Resources::default();
        assert!(
            node_name::NodeName
                .filter(&p, &r, &node(json!({"metadata": {"name": "n1"}})))
                .is_success()
        );
        assert_eq!(
            node_name::NodeName.filter(&p, &r, &node(json!({"metadata": {"name": "n2"}}))),
            Status::UnschedulableAndUnresolvable(vec![node_name::REASON.into()])
        );
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_that_tolerate_it() {
        let cordoned = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        let r = Resources::default();
        let plain = pod(json!({"containers": []}));
        assert!(
            !node_unschedulable::NodeUnschedulable
                .filter(&plain, &r, &cordoned)
                .is_success()
        );
        let tolerant = pod(
            json!({"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(
            node_unschedulable::NodeUnschedulable
                .filter(&tolerant, &r, &cordoned)
                .is_success()
        );
    }
}
