//! The scheduling framework's extension points, as Kubernetes defines them, and one module
//! per plugin.

pub mod balanced_allocation;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_readiness;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod selector_spread;
pub mod taint_toleration;

pub use crate::node_info::NodeInfo;
pub use crate::pod_info::PodInfo;

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
    /// Checks one node.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Ranks the nodes that passed the filters.
pub trait ScorePlugin: Send + Sync {
    /// The plugin's name.
    fn name(&self) -> &'static str;
    /// A raw score for one node; after [`ScorePlugin::normalize`] it must lie in 0..=100.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// NormalizeScore: rescales the raw scores of all feasible nodes (in `nodes` order)
    /// into 0..=100. The default leaves scores that are already in range alone.
    fn normalize(&self, _pod: &PodInfo, _nodes: &[&NodeInfo], _scores: &mut [i64]) {}
}

/// Scales scores so the highest becomes 100 (Kubernetes' DefaultNormalizeScore); with
/// `reverse`, the highest raw score becomes 0.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        if max == 0 {
            if reverse {
                *s = MAX_NODE_SCORE;
            }
            continue;
        }
        *s = *s * MAX_NODE_SCORE / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// A pod asking for `requests` and nothing else (for plugin tests).
#[cfg(test)]
pub fn requesting(requests: crate::resources::Resources) -> PodInfo {
    let mut p = PodInfo::new(std::sync::Arc::new(Default::default()));
    p.requests = requests;
    p
}

/// The highest score a plugin gives.
pub const MAX_NODE_SCORE: i64 = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> PodInfo {
        PodInfo::new(std::sync::Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).expect("pod"),
        ))
    }

    fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(serde_json::from_value(v).expect("node"))
    }

    #[test]
    fn a_named_node_is_the_only_one() {
        let p = pod(json!({"nodeName": "n1", "containers": []}));
        assert!(
            node_name::NodeName
                .filter(&p, &node(json!({"metadata": {"name": "n1"}})))
                .is_success()
        );
        assert_eq!(
            node_name::NodeName.filter(&p, &node(json!({"metadata": {"name": "n2"}}))),
            Status::UnschedulableAndUnresolvable(vec![node_name::REASON.into()])
        );
    }

    #[test]
    fn a_cordoned_node_takes_only_pods_that_tolerate_it() {
        let cordoned = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        let plain = pod(json!({"containers": []}));
        assert!(
            !node_unschedulable::NodeUnschedulable
                .filter(&plain, &cordoned)
                .is_success()
        );
        let tolerant = pod(
            json!({"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
        );
        assert!(
            node_unschedulable::NodeUnschedulable
                .filter(&tolerant, &cordoned)
                .is_success()
        );
    }
}
