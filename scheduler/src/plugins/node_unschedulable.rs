//! NodeUnschedulable: a cordoned node takes no new pods, unless they tolerate the
//! `node.kubernetes.io/unschedulable` taint.

use k8s_openapi::api::core::v1::Pod;

use super::{FilterPlugin, NodeInfo, PodInfo, Status};

/// Kubernetes' reason.
pub const REASON: &str = "node(s) were unschedulable";
/// The taint a cordoned node is treated as having.
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// The plugin.
pub struct NodeUnschedulable;

fn tolerates_cordon(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| {
            let key_matches = t
                .key
                .as_deref()
                .is_none_or(|k| k.is_empty() || k == TAINT_KEY);
            let op_ok =
                t.operator.as_deref() == Some("Exists") || t.key.as_deref() == Some(TAINT_KEY);
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoSchedule");
            key_matches && op_ok && effect_ok
        })
}

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node.cordoned && !tolerates_cordon(&pod.pod) {
            Status::UnschedulableAndUnresolvable(vec![REASON.into()])
        } else {
            Status::Success
        }
    }
}
