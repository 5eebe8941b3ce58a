//! NodePorts: two pods cannot hold the same host port (and protocol, and host IP) on a node.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;

use super::{FilterPlugin, NodeInfo, Status};
use crate::resources::Resources;

/// Kubernetes' reason.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// (protocol, host IP, port) of every hostPort a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
        })
        .collect()
}

/// The plugin; `used` holds the ports already taken on each node (kept by the cache).
pub struct NodePorts;

fn conflicts(want: &(String, String, i32), used: &HashSet<(String, String, i32)>) -> bool {
    used.iter().any(|u| {
        u.0 == want.0 && u.2 == want.2 && (u.1 == want.1 || u.1 == "0.0.0.0" || want.1 == "0.0.0.0")
    })
}

impl FilterPlugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, pod: &Pod, _: &Resources, node: &NodeInfo) -> Status {
        if host_ports(pod)
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
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})).expect("pod");
        let mut n = NodeInfo::new(
            serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node"),
        );
        let r = Resources::default();
        assert!(NodePorts.filter(&pod, &r, &n).is_success());
        n.used_ports.insert(("TCP".into(), "10.0.0.1".into(), 8080));
        assert!(
            !NodePorts.filter(&pod, &r, &n).is_success(),
            "0.0.0.0 conflicts with any address"
        );
        n.used_ports.clear();
        n.used_ports.insert(("UDP".into(), "0.0.0.0".into(), 8080));
        assert!(
            NodePorts.filter(&pod, &r, &n).is_success(),
            "another protocol"
        );
    }
}
