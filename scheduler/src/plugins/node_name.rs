//! NodeName: a pod that names its node runs only there.

use k8s_openapi::api::core::v1::Pod;

use super::{FilterPlugin, NodeInfo, Status};
use crate::resources::Resources;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The plugin.
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, pod: &Pod, _: &Resources, node: &NodeInfo) -> Status {
        match pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            Some(wanted) if wanted != node.name() => {
                Status::UnschedulableAndUnresolvable(vec![REASON.into()])
            }
            _ => Status::Success,
        }
    }
}
