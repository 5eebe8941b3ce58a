//! NodePorts: two pods cannot hold the same host port (and protocol, and host IP) on a node.

use std::collections::HashMap;

use super::{FilterPlugin, NodeInfo, PodInfo, Status};
use crate::pod_info::HostPort;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The plugin; `used` holds the ports already taken on each node (kept by the cache).
pub struct NodePorts;

fn conflicts(want: &HostPort, used: &HashMap<HostPort, u32>) -> bool {
    used.keys().any(|u| {
        u.0 == want.0 && u.2 == want.2 && (u.1 == want.1 || u.1 == "0.0.0.0" || want.1 == "0.0.0.0")
    })
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if pod
            .host_ports
            .iter()
            .any(|p| conflicts(p, &node.used_ports))
        {
            Status::Unschedulable(vec![REASON.into()])
        } else {
            Status::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_taken_host_port_keeps_the_pod_out() {
        let pod = PodInfo::new(std::sync::Arc::new(serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})).expect("pod")));
        let mut n = NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node"),
        );
        assert!(NodePorts.filter(&pod, &n).is_success());
        n.used_ports
            .insert(("TCP".into(), "10.0.0.1".into(), 8080), 1);
        assert!(
            !NodePorts.filter(&pod, &n).is_success(),
            "0.0.0.0 conflicts with any address"
        );
        n.used_ports.clear();
        n.used_ports
            .insert(("UDP".into(), "0.0.0.0".into(), 8080), 1);
        assert!(NodePorts.filter(&pod, &n).is_success(), "another protocol");
    }
}
