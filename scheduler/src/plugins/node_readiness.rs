//! NodeReadiness: a node whose Ready condition is False or Unknown takes only pods that
//! tolerate `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable` (NoSchedule),
//! as if the node lifecycle controller had already tainted it: that taint lags the
//! condition by a monitor period, and a pod placed in between would sit on a dead node.

use k8s_openapi::api::core::v1::{Node, Taint};

use super::taint_toleration::{tolerates, untolerated_reason};
use super::{FilterPlugin, NodeInfo, PodInfo, Status};

/// The taint of a node reporting not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// The plugin.
pub struct NodeReadiness;

/// The taint a node's Ready condition implies, if it is not ready. A node with no Ready
/// condition yet counts as ready: nothing says otherwise.
pub fn implied_taint(node: &Node) -> Option<Taint> {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))?;
    let key = match ready.status.as_str() {
        "True" => return None,
        "False" => NOT_READY,
        _ => UNREACHABLE,
    };
    Some(Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    })
}

impl FilterPlugin for NodeReadiness {
    fn name(&self) -> &'static str {
        "NodeReadiness"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(taint) = &node.readiness_taint else {
            return Status::Success;
        };
        // Once the controller has tainted the node, TaintToleration reports it.
        if node.taints().iter().any(|t| t.key == taint.key) {
            return Status::Success;
        }
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if tolerations.iter().any(|t| tolerates(t, taint)) {
            Status::Success
        } else {
            Status::UnschedulableAndUnresolvable(vec![untolerated_reason(taint)])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn node(ready: &str) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}))
                .expect("node"),
        )
    }

    fn pod(tolerations: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(
            serde_json::from_value(json!({"spec": {"containers": [], "tolerations": tolerations}}))
                .expect("pod"),
        ))
    }

    #[test]
    fn only_ready_nodes_take_ordinary_pods() {
        let plain = pod(json!([]));
        assert!(NodeReadiness.filter(&plain, &node("True")).is_success());
        assert_eq!(
            NodeReadiness.filter(&plain, &node("False")),
            Status::UnschedulableAndUnresolvable(vec![
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into()
            ])
        );
        assert_eq!(
            NodeReadiness.filter(&plain, &node("Unknown")),
            Status::UnschedulableAndUnresolvable(vec![
                "node(s) had untolerated taint {node.kubernetes.io/unreachable: }".into()
            ])
        );
        let no_conditions = NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node"),
        );
        assert!(NodeReadiness.filter(&plain, &no_conditions).is_success());
    }

    #[test]
    fn a_pod_tolerating_the_taint_may_go_there() {
        let tolerant = pod(
            json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}]),
        );
        assert!(
            NodeReadiness
                .filter(&tolerant, &node("Unknown"))
                .is_success()
        );
        assert!(!NodeReadiness.filter(&tolerant, &node("False")).is_success());
    }
}
