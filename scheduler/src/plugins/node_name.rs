//! NodeName: a pod that names its node runs only there.

use super::{FilterPlugin, NodeInfo, PodInfo, Status};

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The plugin.
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.node_name() {
            Some(wanted) if wanted != node.name() => {
                Status::UnschedulableAndUnresolvable(vec![REASON.into()])
            }
            _ => Status::Success,
        }
    }
}
